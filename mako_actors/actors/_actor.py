"""The process actor: one live process's state in memory, and a mailbox that serializes its commands.

A ``ProcessActor`` holds a process's state and version between commands. Its mailbox runs
operations one at a time in arrival order. Consecutive commands waiting in the mailbox are
decided one after the other, each on the state the previous one would leave, and written with
one ``store.commit_many`` call: one write transaction (LMDB: one fsync), each command's
``Commit`` in its own nested transaction with its own expected version. Memory changes only
for commits the store confirmed; after any failed commit the actor reloads from the store
before it decides anything else, so it never keeps a state the store lacks.

A ``VersionConflict`` means another writer for this stream exists (a second actor system, a
failover): the actor reloads and decides the command again, up to ``max_attempts`` times.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mako_actors._command import CommandOptions, Prepared, decide, prepare
from mako_actors.deadlines import Deadline
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument, VersionConflict
from mako_actors.outbox import OutboxMessage
from mako_actors.process import load_state, system_clock
from mako_actors.store import Commit, CommitResult, Store
from mako_actors.workflow import Workflow

# Operation kinds. Commands and timeouts go through the batching write path; the rest are reads.
COMMAND = "command"
TIMEOUT = "timeout"
STATE = "state"
STATE_AT = "state_at"
EVENT_COUNT = "event_count"
TAKE_SNAPSHOT = "take_snapshot"
_WRITES = frozenset({COMMAND, TIMEOUT})


@dataclass(frozen=True, slots=True)
class Op:
    """One request to a process actor; plain data, so it can cross a Ray boundary (pickled).

    ``max_attempts`` 0 and ``snapshot_interval`` None mean the actor system's defaults.
    """

    kind: str
    command: BaseModel | None = None
    ctx: CommandContext | None = None
    enqueue: bool = False
    max_attempts: int = 0
    snapshot_interval: int | None = None
    deadline: Deadline | None = None
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command or timeout produced, once its commit is durable.

    ``no_command``: a timeout whose ``on_deadline`` returned ``None`` (the deadline was removed).
    """

    events: tuple[EventEnvelope, ...] = ()
    outbox: tuple[OutboxMessage, ...] = ()
    snapshot_taken: bool = False
    no_command: bool = False


@dataclass(frozen=True, slots=True)
class ActorConfig:
    """Settings every actor of one system shares."""

    snapshot_interval: int = 100
    max_attempts: int = 8
    max_batch: int = 512
    clock: Callable[[], datetime] = system_clock


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


_Slot = tuple[Op, "asyncio.Future[Any]"]


class CommitCoalescer:
    """Merges the ``commit_many`` calls of all actors in one loop iteration into one store call.

    The store group-commits whatever is queued anyway; coalescing here also saves a queue
    entry, a thread-safe future and a loop wake-up per actor, which were a tenth of the CPU
    time with many busy actors. Each caller gets back exactly its own results, in order; its
    commits stay adjacent, so the store runs them one after the other.
    """

    __slots__ = ("_pending", "_store")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[list[Commit], asyncio.Future[list[CommitResult | EngineError]]]] = []

    def commit_many(self, commits: list[Commit]) -> asyncio.Future[list[CommitResult | EngineError]]:
        """Queue ``commits`` for this iteration's store call; the future holds their results."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[CommitResult | EngineError]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((commits, future))
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(
        self, batch: list[tuple[list[Commit], asyncio.Future[list[CommitResult | EngineError]]]]
    ) -> None:
        try:
            results = await self._store.commit_many([c for commits, _ in batch for c in commits])
        except BaseException as exc:
            for _, future in batch:
                _fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for commits, future in batch:
            _resolve(future, results[at : at + len(commits)])
            at += len(commits)


class ProcessActor:
    """The live actor of one process; created and passivated by its actor system only.

    ``submit`` never blocks: it queues the op and returns a future. The actor's runner task
    exists only while the mailbox is non-empty, so an idle actor costs its state and a few
    attributes, no task.
    """

    __slots__ = (
        "_committer",
        "_config",
        "_loaded",
        "_mailbox",
        "_on_idle",
        "_runner",
        "_state",
        "_stats",
        "_store",
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
        on_idle: Callable[[ProcessActor], None],
        committer: CommitCoalescer | None = None,
    ) -> None:
        self._workflow = workflow
        self._committer = committer or CommitCoalescer(store)
        self._store = store
        self.identity = identity
        self._config = config
        self._stats = stats
        self._on_idle = on_idle
        self._mailbox: deque[_Slot] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._state: Any = None
        self._version = 0
        self._loaded = False
        self.closed = False
        self.last_used = time.monotonic()

    @property
    def idle(self) -> bool:
        """No queued op and nothing running: the actor may be passivated right now."""
        return self._runner is None and not self._mailbox

    @property
    def version(self) -> int:
        return self._version

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op``; the future resolves with its result once it ran (writes: once durable)."""
        if self.closed:
            raise InvalidArgument(f"actor of {self.identity.stream_id} was passivated")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._mailbox.append((op, future))
        self.last_used = time.monotonic()
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        return future

    async def drain(self) -> None:
        """Wait until every queued op has run."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    # -- the runner ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._mailbox:
                if not self._loaded:
                    try:
                        await self._activate()
                    except BaseException as exc:
                        # Activation failed (store down, undecodable stream): fail the op at the
                        # head only; the next one tries again.
                        _fail(self._mailbox.popleft()[1], exc)
                        if not isinstance(exc, Exception):
                            raise
                        continue
                if self._mailbox[0][0].kind in _WRITES:
                    batch: list[_Slot] = []
                    while (
                        self._mailbox
                        and self._mailbox[0][0].kind in _WRITES
                        and len(batch) < self._config.max_batch
                    ):
                        batch.append(self._mailbox.popleft())
                    await self._write(batch)
                else:
                    op, future = self._mailbox.popleft()
                    try:
                        result = await self._read(op)
                    except Exception as exc:
                        _fail(future, exc)
                    else:
                        _resolve(future, result)
        except BaseException as exc:
            # Cancelled or worse: no caller may wait forever.
            while self._mailbox:
                _fail(self._mailbox.popleft()[1], exc)
            raise
        finally:
            self._runner = None
            self.last_used = time.monotonic()
            self._on_idle(self)

    async def _activate(self) -> None:
        """Load state from the latest snapshot plus the tail (O(tail), not O(history))."""
        first = self._state is None
        state, version = await load_state(
            self._workflow, self._store, self.identity.stream_id, snapshots=self._store
        )
        self._state, self._version, self._loaded = state, version, True
        if first:
            self._stats.activations += 1
        else:
            self._stats.reloads += 1

    async def _read(self, op: Op) -> Any:
        if op.kind == STATE:
            return self._state
        if op.kind == TAKE_SNAPSHOT:
            return await self._take_snapshot(op.snapshot_interval or 0)
        raise InvalidArgument(f"unknown actor operation {op.kind!r}")

    async def _take_snapshot(self, interval: int) -> bool:
        if interval <= 0:
            return False
        last = await self._store.load_snapshot(self.identity.stream_id)
        # Same rule as Process.take_snapshot: a snapshot of another state schema version does not count.
        since = last.sequence if last is not None and self._workflow.accepts_snapshot(last) else 0
        if self._version - since < interval:
            return False
        await self._store.save_snapshot(
            self._workflow.snapshot_of(
                self.identity.stream_id, self._version, self._state, self._config.clock()
            )
        )
        return True

    # -- the write path --------------------------------------------------------------------

    async def _write(self, batch: list[_Slot]) -> None:
        """Decide ``batch`` in order on chained state, commit all at once, retry conflicts."""
        attempts: dict[int, int] = {}  # conflicts per op so far (id of its slot), filled lazily
        pending = batch
        while pending:
            if not self._loaded:
                try:
                    await self._activate()
                except Exception as exc:
                    for _, future in pending:
                        _fail(future, exc)
                    return
            decided = await self._decide_all(pending)
            if not decided:
                return
            try:
                commits = [p.commit for _, p in decided if p.commit is not None]  # all are: see _decide_all
                results = await self._committer.commit_many(commits)
            except Exception as exc:
                # The whole transaction failed: nothing of it is known to be stored.
                self._loaded = False
                for (_, future), _ in decided:
                    self._stats.failed_commands += 1
                    _fail(future, exc)
                return
            self._stats.batches += 1
            pending = self._settle(decided, results, attempts)

    async def _decide_all(self, slots: list[_Slot]) -> list[tuple[_Slot, Prepared[Any]]]:
        """Run the pure handler for each op on the state the previous ones would leave."""
        state, version = self._state, self._version
        decided: list[tuple[_Slot, Prepared[Any]]] = []
        for slot in slots:
            op, future = slot
            if future.cancelled():
                continue  # the caller gave up before the command started: do not run it
            try:
                command = op.command
                if op.kind == TIMEOUT:
                    assert op.deadline is not None
                    command = self._workflow.on_deadline(op.deadline, state)
                if command is None:
                    await self._discharge(op, future)
                    continue
                options = _options(
                    op.enqueue or op.kind == TIMEOUT,
                    self._config.snapshot_interval if op.snapshot_interval is None else op.snapshot_interval,
                    op.deadline,
                )
                ctx = op.ctx or CommandContext.new(
                    self.identity.tenant_id, self.identity.process_id, self.identity.workflow_id
                )
                output = decide(self._workflow, state, command)
                prepared = prepare(
                    self._workflow,
                    self.identity,
                    state,
                    version,
                    output,
                    ctx,
                    self._config.clock(),
                    options,
                )
            except Exception as exc:
                # A refused or broken command fails alone; the state it saw is untouched.
                self._stats.failed_commands += 1
                _fail(future, exc)
                continue
            if prepared.commit is None:
                if op.kind == TIMEOUT:
                    await self._discharge(op, future, Outcome())
                else:
                    self._stats.commands += 1
                    _resolve(future, Outcome())
                continue
            decided.append((slot, prepared))
            state, version = prepared.state, version + len(prepared.events)
        return decided

    async def _discharge(self, op: Op, future: asyncio.Future[Any], outcome: Outcome | None = None) -> None:
        """A timeout without compensation events: remove the deadline on its own."""
        assert op.deadline is not None
        try:
            await self._store.cancel_deadline(op.deadline.deadline_id)
        except Exception as exc:
            _fail(future, exc)
            return
        self._stats.commands += 1
        _resolve(future, outcome or Outcome(no_command=True))

    def _settle(
        self,
        decided: list[tuple[_Slot, Prepared[Any]]],
        results: list[CommitResult | EngineError],
        attempts: dict[int, int],
    ) -> list[_Slot]:
        """Acknowledge committed ops, fail or re-queue the rest; returns the ops to retry.

        After the first failed commit every later one in the batch conflicts by construction
        (it expected the failed one's version); those conflicts are self-inflicted and cost no
        attempt. Only the first conflict of a batch counts against its op's ``max_attempts``.
        """
        retry: list[_Slot] = []
        broken = False
        for (slot, prepared), result in zip(decided, results, strict=True):
            op, future = slot
            if isinstance(result, CommitResult):
                self._stats.commands += 1
                if not broken:
                    self._state, self._version = prepared.state, result.version
                _resolve(future, Outcome(result.events, prepared.outbox, prepared.snapshot is not None))
                continue
            self._loaded = False  # never keep a state the store lacks: reload before the next op
            if isinstance(result, VersionConflict):
                if not broken:
                    self._stats.conflicts += 1
                    attempts[id(slot)] = attempts.get(id(slot), 0) + 1
                limit = max(op.max_attempts, self._config.max_attempts)
                if attempts.get(id(slot), 0) < limit:
                    retry.append(slot)
                    broken = True
                    continue
            self._stats.failed_commands += 1
            _fail(future, result)
            broken = True
        return retry


@functools.lru_cache(maxsize=64)
def _cached_options(enqueue: bool, snapshot_interval: int) -> CommandOptions:
    return CommandOptions(enqueue=enqueue, snapshot_interval=snapshot_interval)


def _options(enqueue: bool, snapshot_interval: int, deadline: Deadline | None) -> CommandOptions:
    """The options of one op; the few deadline-free combinations are shared (immutable)."""
    if deadline is None:
        return _cached_options(enqueue, snapshot_interval)
    return CommandOptions(enqueue=enqueue, snapshot_interval=snapshot_interval, deadline=deadline)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
