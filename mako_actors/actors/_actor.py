"""The process actor: one live process's state in memory, and a mailbox that serializes its commands.

A ``ProcessActor`` holds a process's state and version between commands. Its mailbox runs
operations one at a time in arrival order. Actors do not run themselves: one ``Runner`` per
actor system (and event loop) keeps the list of actors with work and, once per loop turn,
decides every ready actor's waiting commands synchronously, on one call stack, with no asyncio
task per actor or burst. Consecutive commands of one actor are decided one after the other,
each on the state the previous one would leave; the commits of all actors of the turn go to the
store in one ``commit_many`` call (one write transaction, one fsync), where each commit
succeeds or fails on its own with its own expected version. Memory changes only for commits
the store confirmed; after any failed commit the actor reloads from the store before it
decides anything else, so it never keeps a state the store lacks. With a store that reads
without waiting (``load_activation_now``: LMDB, memory-mapped), an actor activates inside the
turn that brought its first message, in one read transaction. Activation on other stores and
the rare operations that must wait on the store (``take_snapshot``) run in one task per turn
for all actors that need them.

A ``VersionConflict`` means another writer for this stream exists (a second actor system, a
failover): the actor reloads and decides the command again, up to ``max_attempts`` times.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from mako_actors._command import CommandOptions, Prepared, decide, prepare
from mako_actors.actors import _gc_pause
from mako_actors.deadlines import Deadline
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument, VersionConflict
from mako_actors.outbox import OutboxMessage
from mako_actors.process import load_state, snapshot_due, state_from, system_clock
from mako_actors.store import Commit, CommitResult, Store
from mako_actors.version import ExpectedVersion
from mako_actors.workflow import Workflow

# Operation kinds. Commands and timeouts go through the batching write path; the rest are reads.
COMMAND = "command"
TIMEOUT = "timeout"
STATE = "state"
STATE_AT = "state_at"
EVENT_COUNT = "event_count"
TAKE_SNAPSHOT = "take_snapshot"
_WRITES = frozenset({COMMAND, TIMEOUT})
_get_ident = threading.get_ident


# ``Op`` and ``Outcome`` are made once per command: plain slotted dataclasses, treated as
# immutable but not ``frozen``: a frozen dataclass sets each field through
# ``object.__setattr__``, which makes building one three times as expensive (~5 µs vs ~1.7 µs
# for five fields, measured here).
@dataclass(slots=True)
class Op:
    """One request to a process actor; plain data, so it can cross a Ray boundary (pickled).

    Never changed once made (not ``frozen`` only because that is slow to build).
    ``max_attempts`` 0 and ``snapshot_interval`` None mean the actor system's defaults.
    ``new``: the first op of ``spawn``'s handle on a process with a random id (see
    ``LocalActorSystem.dispatch_new``), so a Ray host can start it without a store read.
    """

    kind: str
    command: BaseModel | None = None
    ctx: CommandContext | None = None
    enqueue: bool = False
    max_attempts: int = 0
    snapshot_interval: int | None = None
    deadline: Deadline | None = None
    sequence: int = 0
    new: bool = False

    def as_new(self) -> Op:
        """This op with ``new`` set (built directly: ``dataclasses.replace`` costs ~6× as much)."""
        return Op(
            self.kind, self.command, self.ctx, self.enqueue, self.max_attempts, self.snapshot_interval,
            self.deadline, self.sequence, True,
        )  # fmt: skip


@dataclass(slots=True)
class Outcome:
    """What a command or timeout produced, once its commit is durable (never changed once made).

    ``no_command``: a timeout whose ``on_deadline`` returned ``None`` (the deadline was removed).
    """

    events: tuple[EventEnvelope, ...] = ()
    outbox: tuple[OutboxMessage, ...] = ()
    snapshot_taken: bool = False
    no_command: bool = False


# ``system_clock`` as one C-level call (a partial of ``datetime.now``): the clock is read once
# per command, and its Python frame costs more than the reading.
_SYSTEM_NOW: Callable[[], datetime] = functools.partial(datetime.now, UTC)


def fast_clock(clock: Callable[[], datetime]) -> Callable[[], datetime]:
    """``clock``, or the same reading without a Python frame when it is ``system_clock``."""
    return _SYSTEM_NOW if clock is system_clock else clock


@dataclass(frozen=True, slots=True)
class ActorConfig:
    """Settings every actor of one system shares."""

    snapshot_interval: int = 100
    max_attempts: int = 8
    max_batch: int = 512
    clock: Callable[[], datetime] = system_clock


def check_actor_settings(snapshot_interval: int, max_attempts: int, max_batch: int) -> None:
    """``InvalidArgument`` for settings an actor system cannot run with (a ``max_batch`` of 0
    took no command from a mailbox and spun the event loop forever)."""
    if snapshot_interval < 0:
        raise InvalidArgument(f"snapshot_interval must be 0 (never) or positive, got {snapshot_interval}")
    if max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {max_attempts}")
    if max_batch < 1:
        raise InvalidArgument(f"max_batch must be at least 1, got {max_batch}")


@dataclass(slots=True)
class ActorStats:
    """Counters of one actor system (``live`` is filled in by the system when read)."""

    activations: int = 0
    reloads: int = 0
    passivations: int = 0
    commands: int = 0
    failed_commands: int = 0
    conflicts: int = 0
    batches: int = 0
    live: int = 0
    max_live_seen: int = 0

    def copy(self) -> ActorStats:
        return ActorStats(
            self.activations,
            self.reloads,
            self.passivations,
            self.commands,
            self.failed_commands,
            self.conflicts,
            self.batches,
            self.live,
            self.max_live_seen,
        )


class _Slot(asyncio.Future[Any]):
    """One queued op: the caller's future itself, the op's fields, and its way through the actor.

    The future *is* the mailbox entry (one object per command, not a future plus a record):
    ``next`` links it into its actor's mailbox, then into the actor's batch in flight.
    ``attempts``: how often it lost to another writer so far. Once decided it also holds the
    commit to write and what to answer once it is written (``prepared``; ``no_command``: a
    timeout whose ``on_deadline`` gave nothing to run). Every object per command in flight
    lives through a write transaction, so the garbage collector traverses it several times
    (about 1.5 µs per object and command with 10,000 live actors): what a decided op needs
    once written is kept in the slot itself (``new_state``, ``outbox``, ``snapshot_taken``),
    not in the ``Prepared`` that ``prepare`` returned, and so are the fields of its ``Op``
    (``kind`` ... ``deadline``, the same names), so the ``Op`` dies when it is submitted.
    ``events_only``: answer with the events alone (``submit_enqueue``), not an ``Outcome``.
    Only ``next`` and ``attempts`` are set when queued: ``new_state`` ... ``no_command`` are
    set when the op is decided, before anything reads them.
    """

    __slots__ = (
        "attempts",
        "command",
        "ctx",
        "deadline",
        "enqueue",
        "events_only",
        "kind",
        "max_attempts",
        "new_state",
        "next",
        "no_command",
        "outbox",
        "snapshot_interval",
        "snapshot_taken",
    )

    kind: str
    command: BaseModel | None
    ctx: CommandContext | None
    enqueue: bool
    max_attempts: int
    snapshot_interval: int | None
    deadline: Deadline | None
    events_only: bool
    next: _Slot | None
    attempts: int
    new_state: Any
    outbox: tuple[OutboxMessage, ...]
    snapshot_taken: bool
    no_command: bool


class RunningLoop:
    """Call it for the running event loop (``asyncio.get_running_loop()``) without a system call.

    On Python 3.11 ``get_running_loop`` calls ``getpid()`` every time (a real system call since
    glibc 2.25: ~1-2 µs here), and every command asks for the loop of its future. The loop
    found last is reused while it is running on this thread: an ``asyncio`` loop records its
    thread while it runs (``_thread_id``), and a thread runs one loop at a time. Another loop,
    or one that does not record its thread, is asked for as before.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or getattr(loop, "_thread_id", None) != _get_ident():
            loop = self._loop = asyncio.get_running_loop()
        return loop


class Runner:
    """Runs the actors of one actor system on one event loop, a turn at a time.

    ``wake(actor)`` puts an actor with work on the ready list and schedules one turn (a plain
    ``call_soon`` callback, no task). A turn activates the ready actors that are not live yet
    (with ``load_activations_now``, in one read transaction), takes every ready actor in wake
    order, decides each one's waiting commands (up to ``max_batch`` per actor, so a busy
    actor cannot starve the others: it is back at the end of the list after its commit), and
    sends all commits of the turn in one ``store.commit_many`` call, answered in one task. An
    actor is on the ready list, in a flight or in the slow path, never in two of them, so its
    ops run in order.
    """

    __slots__ = (
        "_frozen_at",
        "_load_many",
        "_ready",
        "_scheduled",
        "_stats",
        "_store",
        "_tasks",
        "freeze_every",
        "freezes",
        "loop",
        "slot_freed",
        "turns",
    )

    _load_many: bool

    def __init__(self, store: Store, stats: ActorStats | None = None, freeze_every: int = 0) -> None:
        self._store = store
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: list[ProcessActor] = []
        self._scheduled = False
        self.turns = 0
        # Opt-in (``LocalActorSystem(gc_freeze_every=...)``): the first turn, and then the
        # first after every ``freeze_every`` activations counted in ``stats``, end with
        # ``gc.freeze()``.
        self._stats = stats
        self.freeze_every = freeze_every
        self._frozen_at = -freeze_every
        self.freezes = 0
        # Asked of the store's class, as ``load_activation_now`` is: a wrapper store that
        # answers activations itself (from a cache) must not be bypassed.
        self._load_many = getattr(type(store), "load_activations_now", None) is not None
        # ``self.loop()``: the running event loop (every command asks for it).
        self.loop = RunningLoop()
        # Set by an actor system that waits for room under its live cap: every actor that
        # becomes idle sets it (a check per command, not a callback).
        self.slot_freed: asyncio.Event | None = None

    def wake(self, actor: ProcessActor) -> None:
        """Schedule ``actor`` (which has work and is not scheduled yet) for the next turn."""
        self._ready.append(actor)
        if not self._scheduled:
            self._scheduled = True
            self.loop().call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        ready, self._ready = self._ready, []
        self.turns += 1
        commits: list[Commit] = []
        flights: list[ProcessActor] = []
        slow: list[ProcessActor] = []
        # What the turn decides stays alive until its commit is answered: collections during
        # the turn would only promote it (``_gc_pause``).
        _gc_pause.pause()
        escaped: BaseException | None = None
        try:
            if self._load_many:
                self._activate_all(ready)
            for actor in ready:
                try:
                    actor._step(commits, flights, slow)
                except BaseException as exc:  # (its own callers are failed): the others go on
                    escaped = escaped or exc
        finally:
            _gc_pause.resume()
        loop = self.loop()
        if commits:
            self._keep(loop.create_task(self._commit(commits, flights)))
        if slow:
            self._keep(loop.create_task(self._slow(slow)))
        if self.freeze_every and self._stats is not None:
            activations = self._stats.activations
            if activations - self._frozen_at >= self.freeze_every:
                # Every object the collector tracks now (the actors activated so far, whatever
                # else is alive) leaves its generations: later collections skip it.
                gc.freeze()
                self._frozen_at = activations
                self.freezes += 1
        if escaped is not None:
            # A BaseException (SystemExit, a test's failure) leaves the turn only once every
            # other actor stepped and the turn's commits are on their way: none waits forever.
            raise escaped

    def _activate_all(self, ready: list[ProcessActor]) -> None:
        """Activate every ready actor that is not live yet, in one read transaction.

        A stream that does not read or decode fails its own head op only (the next op tries
        again). If the read transaction itself fails, each actor activates alone in ``_step``.
        """
        new = [actor for actor in ready if not actor._loaded and actor._head is not None]
        if not new:
            return
        try:
            activations = self._store.load_activations_now(  # type: ignore[attr-defined]
                [(a.identity.stream_id, a._workflow.name, a._workflow.state_schema_version) for a in new]
            )
        except Exception:
            return
        for actor, activation in zip(new, activations, strict=True):
            if isinstance(activation, Exception):
                actor._activation_failed(activation)
            elif activation is not None:
                actor._activated(activation)

    def _keep(self, task: asyncio.Task[None]) -> None:
        # The loop holds tasks weakly: keep each until it is done.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit(self, commits: list[Commit], flights: list[ProcessActor]) -> None:
        try:
            results = await self._store.commit_many(commits)
        except BaseException as exc:
            # The whole transaction failed: nothing of it is known to be stored.
            for actor in flights:
                actor._failed(exc)
            for actor in flights:
                self.wake(actor)
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for actor in flights:
            at = actor._settle(results, at)
        # Wake only after every caller is answered: the turn is then scheduled behind all of
        # their wake-ups, so whatever they send next joins the same turn (one store call).
        # An actor with nothing queued (most, under request/response load) becomes idle here
        # rather than in a turn of its own: a caller's next op wakes it, and joins that turn.
        for actor in flights:
            if actor._head is None:
                actor._become_idle()
            else:
                self.wake(actor)

    async def _slow(self, actors: list[ProcessActor]) -> None:
        """Activation and store-bound reads, one actor after the other, then back to the turns.

        With the embedded stores a read completes without suspending, so this is one task per
        turn, not per actor.
        """
        for index, actor in enumerate(actors):
            try:
                await actor._slow_step()
            except BaseException as exc:
                # Cancelled (loop shutting down): no caller may wait forever.
                for rest in actors[index:]:
                    rest._fail_all(exc)
                raise
            self.wake(actor)


class ProcessActor:
    """The live actor of one process; created and passivated by its actor system only.

    ``submit`` never blocks: it queues the op, wakes the actor on its system's ``Runner`` and
    returns a future. An idle actor costs its state and a few attributes: no task, and no
    mailbox object (queued ops are linked through their own futures, ``_head`` to ``_tail``).
    """

    __slots__ = (
        "_busy",
        "_config",
        "_flight",
        "_head",
        "_idle_waiter",
        "_loaded",
        "_runner",
        "_state",
        "_stats",
        "_store",
        "_tail",
        "_unconfirmed",
        "_version",
        "_workflow",
        "closed",
        "identity",
        "last_used",
    )

    def __init__(
        self,
        workflow: Workflow[Any, Any],
        store: Store,
        identity: ProcessIdentity,
        config: ActorConfig,
        stats: ActorStats,
        runner: Runner | None = None,
    ) -> None:
        self._workflow = workflow
        self._runner = runner or Runner(store)
        self._store = store
        self.identity = identity
        self._config = config
        self._stats = stats
        # The mailbox: ops linked through ``_Slot.next``, oldest first.
        self._head: _Slot | None = None
        self._tail: _Slot | None = None
        # The batch whose commits are being written (linked likewise), or None.
        self._flight: _Slot | None = None
        self._busy = False
        self._idle_waiter: asyncio.Future[None] | None = None
        self._state: Any = None
        self._version = 0
        self._loaded = False
        # Started by ``start_new`` and nothing committed since: the state is assumed, not read.
        self._unconfirmed = False
        self.closed = False
        self.last_used = time.monotonic()

    @property
    def idle(self) -> bool:
        """No queued op and nothing running: the actor may be passivated right now."""
        return not self._busy

    @property
    def version(self) -> int:
        return self._version

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op``; the future resolves with its result once it ran (writes: once durable)."""
        return self._queue(
            op.kind, op.command, op.ctx, op.enqueue, op.max_attempts, op.snapshot_interval, op.deadline, False
        )

    def submit_enqueue(
        self, command: BaseModel, ctx: CommandContext | None
    ) -> asyncio.Future[tuple[EventEnvelope, ...]]:
        """``submit(Op(COMMAND, command, ctx, enqueue=True))``, answered with the events alone.

        No ``Op`` and no ``Outcome`` per command: what ``execute_and_enqueue`` needs.
        """
        return self._queue(COMMAND, command, ctx, True, 0, None, None, True)

    def _queue(
        self,
        kind: str,
        command: BaseModel | None,
        ctx: CommandContext | None,
        enqueue: bool,
        max_attempts: int,
        snapshot_interval: int | None,
        deadline: Deadline | None,
        events_only: bool,
    ) -> asyncio.Future[Any]:
        if self.closed:
            raise InvalidArgument(f"actor of {self.identity.stream_id} was passivated")
        slot = _Slot(loop=self._runner.loop())
        slot.kind = kind
        slot.command = command
        slot.ctx = ctx
        slot.enqueue = enqueue
        slot.max_attempts = max_attempts
        slot.snapshot_interval = snapshot_interval
        slot.deadline = deadline
        slot.events_only = events_only
        slot.next = None
        slot.attempts = 0
        tail = self._tail
        if tail is None:
            self._head = slot
        else:
            tail.next = slot
        self._tail = slot
        if not self._busy:
            self._busy = True
            self._runner.wake(self)
        return slot

    async def drain(self) -> None:
        """Wait until every queued op has run."""
        while self._busy:
            if self._idle_waiter is None:
                self._idle_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle_waiter)

    # -- the mailbox -----------------------------------------------------------------------

    def _pop(self) -> _Slot:
        """The oldest queued op, unlinked (the mailbox must not be empty)."""
        slot = self._head
        assert slot is not None
        self._head = slot.next
        if self._head is None:
            self._tail = None
        slot.next = None
        return slot

    # -- scheduling (called by the Runner) -------------------------------------------------

    def _step(self, commits: list[Commit], flights: list[ProcessActor], slow: list[ProcessActor]) -> None:
        """Run what can run now: reads from memory, and decide the next burst of writes.

        Leaves the actor in exactly one place: in ``flights`` (its commits appended to
        ``commits``, its batch in ``_flight``), in ``slow`` (it needs the store first), or idle.
        """
        try:
            while self._head is not None:
                if not self._loaded:
                    if not self._activate_now():
                        slow.append(self)
                        return
                    continue  # loaded, or the head op failed: look at the mailbox again
                kind = self._head.kind
                if kind in _WRITES:
                    if self._decide_all(commits):
                        flights.append(self)
                        return
                elif kind == STATE:
                    if self._unconfirmed:  # answer only a state the store has confirmed
                        self._reload()
                        continue
                    _resolve(self._pop(), self._state)
                else:
                    slow.append(self)
                    return
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            slot, self._flight = self._flight, None
            while slot is not None:  # decided in this step, not sent: nothing of it is written
                following, slot.next, slot.new_state, slot.outbox = slot.next, None, None, ()
                _fail(slot, exc)
                slot = following
            self._fail_all(exc)
            if not isinstance(exc, Exception):
                raise
        self._become_idle()

    async def _slow_step(self) -> None:
        """Activate, or run the head op if it must wait on the store; the Runner wakes us after."""
        if self._head is None:
            return
        if not self._loaded:
            try:
                await self._activate()
            except Exception as exc:
                # Activation failed (store down, undecodable stream): fail the op at the head
                # only; the next one tries again.
                self._stats.failed_commands += self._head.kind in _WRITES
                _fail(self._pop(), exc)
            return
        slot = self._pop()
        try:
            result = await self._read(slot)
        except Exception as exc:
            _fail(slot, exc)
        else:
            _resolve(slot, result)

    def _become_idle(self) -> None:
        self._busy = False
        self.last_used = time.monotonic()
        waiter, self._idle_waiter = self._idle_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        freed = self._runner.slot_freed
        if freed is not None:
            freed.set()

    def _fail_all(self, exc: BaseException) -> None:
        while self._head is not None:
            _fail(self._pop(), exc)
        self._become_idle()

    async def _activate(self) -> None:
        """Load state from the latest snapshot plus the tail (O(tail), not O(history))."""
        state, version = await load_state(
            self._workflow, self._store, self.identity.stream_id, snapshots=self._store
        )
        self._loaded_as(state, version)

    def _activate_now(self) -> bool:
        """Activate within this loop turn if the store reads without waiting (the embedded ones).

        False when it cannot (the actor then activates in the slow path). A failed read fails
        the op at the head only, as in the slow path; the next one tries again.
        """
        # Asked of the store's class: a wrapper that forwards unknown attributes to a store
        # (and answers reads itself, from a cache) must keep answering them.
        if getattr(type(self._store), "load_activation_now", None) is None:
            return False
        load_now = self._store.load_activation_now  # type: ignore[attr-defined]
        workflow = self._workflow
        try:
            activation = load_now(self.identity.stream_id, workflow.name, workflow.state_schema_version)
        except Exception as exc:
            self._activation_failed(exc)
            return True  # nothing loaded; ``_step`` looks at the next op (and tries again)
        if activation is None:
            return False
        self._activated(activation)
        return True

    def start_new(self) -> None:
        """Start from the workflow's initial state at version 0, without reading the store.

        Only for a process that cannot have anything stored (its id was drawn at random just
        now), though another handle on its identity may write first. If ``initial_state``
        fails, the actor stays unloaded and activates as usual (where the same failure fails
        its first op).

        Until its first commit succeeds (which expects version 0, so it proves the stream was
        empty), the state is unconfirmed: a command that would commit nothing, or is refused,
        is not answered from it; the actor reads the store and decides again (``_decide_all``).
        """
        try:
            state = self._workflow.initial_state()
        except Exception:
            return
        self._loaded_as(state, 0)
        self._unconfirmed = True

    def _reload(self) -> None:
        """Drop the in-memory state: the actor reads the store before its next op."""
        self._loaded = self._unconfirmed = False

    def _activated(self, activation: Any) -> None:
        """Take the state an ``Activation`` read from the store gives (a bad one fails the head op)."""
        try:
            state, version = state_from(self._workflow, self._store, self.identity.stream_id, activation)
        except Exception as exc:
            self._activation_failed(exc)
            return
        self._loaded_as(state, version)

    def _activation_failed(self, exc: Exception) -> None:
        assert self._head is not None
        self._stats.failed_commands += self._head.kind in _WRITES
        _fail(self._pop(), exc)

    def _loaded_as(self, state: Any, version: int) -> None:
        first = self._state is None
        self._state, self._version, self._loaded = state, version, True
        self._unconfirmed = False
        if first:
            self._stats.activations += 1
        else:
            self._stats.reloads += 1

    async def _read(self, op: Op | _Slot) -> Any:
        if op.kind == STATE:
            return self._state
        if op.kind == TAKE_SNAPSHOT:
            return await self._take_snapshot(op.snapshot_interval or 0)
        raise InvalidArgument(f"unknown actor operation {op.kind!r}")

    async def _take_snapshot(self, interval: int) -> bool:
        if interval <= 0:
            return False
        stream_id, version = self.identity.stream_id, self._version
        last = await self._store.load_snapshot(stream_id)
        # Same rule as Process.take_snapshot: a snapshot of another state schema version, or
        # one the stream does not hold, does not count.
        if not await snapshot_due(self._workflow, self._store, stream_id, last, version, interval):
            return False
        # The id of the event the state ends with: read here, so commits need not keep it.
        at = await self._store.load_from(stream_id, version - 1, upto=version)
        if not at:  # the stream lost it (truncated by hand): the state is not the stream's
            return False
        await self._store.save_snapshot(
            self._workflow.snapshot_of(
                stream_id, version, self._state, self._config.clock(), event_id=at[0].event_id
            )
        )
        return True

    # -- the write path --------------------------------------------------------------------

    def _decide_all(self, commits: list[Commit]) -> bool:
        """Decide the writes at the head of the mailbox (up to ``max_batch``), in order.

        Each op runs the pure handler on the state the previous ones would leave. Refused or
        broken commands fail here, alone; the rest become the actor's batch in flight
        (``_flight``), their commits appended to ``commits``. A timeout whose ``on_deadline``
        returns nothing (or nothing to store) still removes its deadline: as a commit of its
        own, at the actor's version, so it is ordered with the process's other writes and
        never runs on a state the store has moved past. True if anything is to be written.
        """
        state, version = self._state, self._version
        limit = self._config.max_batch
        first: _Slot | None = None
        last: _Slot | None = None
        taken = 0
        while taken < limit:
            slot = self._head
            if slot is None or slot.kind not in _WRITES:
                break
            # ``_pop``, inline (once per command).
            self._head = slot.next
            if self._head is None:
                self._tail = None
            slot.next = None
            taken += 1
            if slot.cancelled():
                continue  # the caller gave up before the command started: do not run it
            try:
                prepared, no_command = self._decide(slot, state, version)
            except Exception as exc:
                if self._unconfirmed:
                    self._confirm_before(slot, first is None)
                    break
                # A refused or broken command fails alone; the state it saw is untouched.
                self._stats.failed_commands += 1
                _fail(slot, exc)
                continue
            except BaseException as exc:  # no caller may wait forever
                _fail(slot, exc)
                self._flight = first
                raise
            if prepared is None:
                if self._unconfirmed:
                    self._confirm_before(slot, first is None)
                    break
                self._stats.commands += 1
                _resolve(slot, () if slot.events_only else _EMPTY)
                continue
            # (A discharged deadline's commit has no events and keeps the state.)
            state, version = prepared.state, version + len(prepared.events)
            slot.new_state, slot.outbox = state, prepared.outbox
            slot.snapshot_taken, slot.no_command = prepared.snapshot is not None, no_command
            commits.append(prepared.commit)  # type: ignore[arg-type]
            if last is None:
                first = slot
            else:
                last.next = slot
            last = slot
        self._flight = first
        return first is not None

    def _confirm_before(self, slot: _Slot, alone: bool) -> None:
        """Put ``slot`` back at the head: its answer needs a state the store has confirmed.

        Its decision (a refusal, or nothing to commit) came from an unconfirmed state, and
        nothing written would reveal another writer. ``alone`` (nothing of this burst is in
        flight): read the store now and decide it again. Otherwise the burst's first commit
        confirms the state (or conflicts, which reloads it) before the slot is decided again.
        """
        slot.next = self._head
        if self._head is None:
            self._tail = slot
        self._head = slot
        if alone:
            self._reload()

    def _decide(self, op: Op | _Slot, state: Any, version: int) -> tuple[Prepared[Any] | None, bool]:
        """One write op on ``state`` at ``version``: what to commit (None: nothing), and whether
        it is a timeout that runs no command (its deadline is removed all the same)."""
        workflow = self._workflow
        command = op.command
        if op.kind == TIMEOUT:
            assert op.deadline is not None
            command = workflow.on_deadline(op.deadline, state)
            if command is None:
                return _discharge(self.identity, state, version, op), True
        config = self._config
        enqueue = op.enqueue or op.kind == TIMEOUT
        interval = config.snapshot_interval if op.snapshot_interval is None else op.snapshot_interval
        deadline = op.deadline
        # The few deadline-free combinations are shared (immutable); looked up here, not in a
        # helper: once per command.
        options = (
            _cached_options(enqueue, interval)
            if deadline is None
            else CommandOptions(enqueue=enqueue, snapshot_interval=interval, deadline=deadline)
        )
        assert command is not None
        output = decide(workflow, state, command)
        # Without a caller's context, ``prepare`` draws fresh correlation ids itself.
        prepared = prepare(workflow, self.identity, state, version, output, op.ctx, config.clock(), options)
        if prepared.commit is None:
            if op.kind == TIMEOUT:
                return _discharge(self.identity, state, version, op), False
            return None, False
        return prepared, False

    def _failed(self, exc: BaseException) -> None:
        """The store call of a whole batch failed: nothing of it is known to be stored."""
        self._loaded = False
        slot, self._flight = self._flight, None
        while slot is not None:
            following, slot.next = slot.next, None
            self._stats.failed_commands += 1
            slot.new_state, slot.outbox = None, ()
            _fail(slot, exc)
            slot = following

    def _settle(self, results: list[CommitResult | EngineError], at: int) -> int:
        """Acknowledge committed ops, fail or re-queue the rest (at the mailbox's head, in order).

        ``results[at:]`` starts with this actor's batch; returns the index after it. After the
        first failed commit every later one in the batch conflicts by construction (it
        expected the failed one's version); those conflicts are self-inflicted and cost no
        attempt. Only the first conflict of a batch counts against its op's ``max_attempts``.
        """
        stats = self._stats
        stats.batches += 1
        retry_first: _Slot | None = None
        retry_last: _Slot | None = None
        broken = False
        slot, self._flight = self._flight, None
        while slot is not None:
            following, slot.next = slot.next, None
            result = results[at]
            at += 1
            new_state, outbox = slot.new_state, slot.outbox
            slot.new_state, slot.outbox = None, ()  # a retried op is decided afresh
            if isinstance(result, CommitResult):
                stats.commands += 1
                if not broken:
                    self._state, self._version = new_state, result.version
                    self._unconfirmed = False  # committed at its expected version: the state is the store's
                if slot.done():  # the caller gave up (cancelled) while it was written
                    pass
                elif slot.events_only:
                    slot.set_result(result.events)
                elif slot.no_command:
                    slot.set_result(_NO_COMMAND)
                else:
                    slot.set_result(Outcome(result.events, outbox, slot.snapshot_taken))
                slot = following
                continue
            self._loaded = False  # never keep a state the store lacks: reload before the next op
            if isinstance(result, VersionConflict):
                if not broken:
                    stats.conflicts += 1
                    slot.attempts += 1
                if slot.attempts < max(slot.max_attempts, self._config.max_attempts):
                    slot.no_command = False
                    if retry_last is None:
                        retry_first = slot
                    else:
                        retry_last.next = slot
                    retry_last = slot
                    broken = True
                    slot = following
                    continue
            stats.failed_commands += 1
            _fail(slot, result)
            broken = True
            slot = following
        if retry_first is not None:
            assert retry_last is not None
            retry_last.next = self._head
            if self._head is None:
                self._tail = retry_last
            self._head = retry_first
        return at


_EMPTY = Outcome()
_NO_COMMAND = Outcome(no_command=True)


def _discharge(identity: ProcessIdentity, state: Any, version: int, op: Op | _Slot) -> Prepared[Any]:
    """The commit of a timeout without compensation events: remove the deadline, nothing else."""
    assert op.deadline is not None
    commit = Commit(
        stream_id=identity.stream_id,
        expected=ExpectedVersion.exact(version),
        fired_deadline_id=op.deadline.deadline_id,
    )
    return Prepared(commit, (), (), state, None)


@functools.lru_cache(maxsize=64)
def _cached_options(enqueue: bool, snapshot_interval: int) -> CommandOptions:
    """The options of a deadline-free op (one shared object per combination: immutable)."""
    return CommandOptions(enqueue=enqueue, snapshot_interval=snapshot_interval)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
