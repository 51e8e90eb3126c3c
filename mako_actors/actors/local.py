"""``LocalActorSystem``: process actors on one asyncio loop, over one store.

One actor per live process, created on its first message (activation from the latest snapshot
plus the tail), dropped after ``idle_timeout`` seconds without messages or when more than
``max_live`` actors would be live (least recently used idle actor first). There is no global
lock: one loop-level ``Runner`` decides every ready actor's commands per loop turn, and the
commits of all actors that are busy at the same moment share one write transaction and one
fsync (group commit).

Use one system per store and loop, as ``async with LocalActorSystem(store, workflows=[...])``.
Two systems (in two OS processes) on one LMDB directory stay correct through optimistic
concurrency, but the point of actors is that one process has one live actor.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mako_actors.actors._actor import (
    _WRITES,
    EVENT_COUNT,
    STATE_AT,
    ActorConfig,
    ActorStats,
    Op,
    ProcessActor,
    Runner,
    check_actor_settings,
    fast_clock,
)
from mako_actors.actors._handles import HandleFactory, WorkflowsArg, workflow_registry
from mako_actors.actors.ref import ProcessRef
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument, register_error
from mako_actors.ids import StreamId, TenantId
from mako_actors.process import load_state, system_clock
from mako_actors.store import Store
from mako_actors.version import WorkflowId
from mako_actors.workflow import Workflow


@register_error
class ActorSystemClosed(EngineError):
    """The actor system was closed; no new operations are accepted."""

    operational = True


async def read_op(workflow: Workflow[Any, Any], store: Store, identity: ProcessIdentity, op: Op) -> Any:
    """Answer a read that needs no live actor (``event_count``, ``state_at``) from the store."""
    if op.kind == EVENT_COUNT:
        return await store.stream_version(identity.stream_id)
    count = await store.stream_version(identity.stream_id)
    if op.sequence < 0 or op.sequence > count:
        raise InvalidArgument(f"state_at({op.sequence}): stream {identity.stream_id} has {count} events")
    state, _ = await load_state(workflow, store, identity.stream_id, upto=op.sequence)
    return state


class LocalActorSystem(HandleFactory):
    """Process actors in this OS process and asyncio loop, over ``store``.

    ``workflows``: workflow instances or classes (a list, or a mapping name → workflow).
    ``snapshot_interval``: a snapshot is written with the commit whenever a stream's version
    crosses a multiple of it (0: never). ``idle_timeout`` (seconds, None: never) and
    ``max_live`` (None: unbounded) bound the live actors. ``max_attempts``: how often an actor
    retries a command on ``VersionConflict`` with another writer. ``close_store``: ``aclose``
    also closes the store.

    ``gc_freeze_every`` (opt-in, default 0: off) is a process-wide garbage-collector policy
    for systems with many live actors: after every that many activations, the loop turn ends
    with ``gc.freeze()``, which moves every object the cyclic collector tracks at that moment
    (the live actors' state, and whatever else is alive) out of its generations, so the full
    collections that in-flight commands keep triggering no longer traverse them all (measured
    in ``benchmarks/bench_actors.py``, row ``(b) frozen``). The price: cyclic garbage that
    exists at such a moment is not reclaimed until ``gc.unfreeze()``, which ``aclose`` calls
    if this system froze anything (so do not combine it with your own ``gc.freeze()``).
    Objects without reference cycles, e.g. a passivated actor's state, are freed as always.
    """

    def __init__(
        self,
        store: Store,
        workflows: WorkflowsArg,
        *,
        snapshot_interval: int = 100,
        idle_timeout: float | None = 300.0,
        max_live: int | None = 100_000,
        max_attempts: int = 8,
        max_batch: int = 512,
        clock: Callable[[], datetime] = system_clock,
        close_store: bool = False,
        gc_freeze_every: int = 0,
    ) -> None:
        if max_live is not None and max_live < 1:
            raise InvalidArgument(f"max_live must be at least 1, got {max_live}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise InvalidArgument(f"idle_timeout must be positive, got {idle_timeout}")
        check_actor_settings(snapshot_interval, max_attempts, max_batch)
        if gc_freeze_every < 0:
            raise InvalidArgument(f"gc_freeze_every must be 0 (off) or positive, got {gc_freeze_every}")
        self.store = store
        self.workflows = workflow_registry(workflows)
        self.idle_timeout = idle_timeout
        self.max_live = max_live
        self._config = ActorConfig(
            snapshot_interval=snapshot_interval,
            max_attempts=max_attempts,
            max_batch=max_batch,
            clock=fast_clock(clock),
        )
        self._stats = ActorStats()
        self._live: OrderedDict[StreamId, ProcessActor] = OrderedDict()
        # Streams whose first op waits for room under ``max_live``: later ops of the stream
        # wait for that activation and queue behind the first (arrival order).
        self._activating: dict[StreamId, asyncio.Future[ProcessActor]] = {}
        # Operations accepted while their process was not live (waiting for room under
        # ``max_live``, or behind its activation): ``aclose`` lets them finish too.
        self._waiting_ops = 0
        self._no_waiting_ops = asyncio.Event()
        self._shut = False  # ``aclose`` finished: nothing activates any more
        self._runner = Runner(store, self._stats, gc_freeze_every)
        self._tenants: dict[TenantId, TenantId] = {}
        self._workflow_ids: dict[WorkflowId, WorkflowId] = {}
        self._canonical: dict[int, object] = {}  # id(o) -> o of every object in the two above
        self._reaper: asyncio.Task[None] | None = None
        self._close_store = close_store
        self._closed = False

    async def __aenter__(self) -> LocalActorSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def stats(self) -> ActorStats:
        """A copy of the counters: activations, reloads, passivations, live actors, commands, ..."""
        stats = self._stats.copy()
        stats.live = len(self._live)
        return stats

    @property
    def live_count(self) -> int:
        return len(self._live)

    def is_live(self, stream_id: StreamId) -> bool:
        """Whether the process of ``stream_id`` has a live actor right now."""
        return stream_id in self._live

    # -- handles ---------------------------------------------------------------------------

    def _ref(
        self, workflow: Workflow[Any, Any], identity: ProcessIdentity, new: bool = False
    ) -> ProcessRef[Any, Any]:
        return ProcessRef(workflow, identity, self, self.store, new)

    async def _lookup_identity(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        return await self.store.lookup(tenant_id, key)

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, identity: ProcessIdentity, op: Op) -> Awaitable[Any]:
        """Run ``op`` on the process's actor (activating it, if needed, under the live cap).

        Returns what to await for the result: the op's mailbox future when it could be queued
        right away (the actor is live, or there is room for it), else a coroutine (it waits
        for room under ``max_live``, or reads the store). Raises ``ActorSystemClosed`` after
        ``aclose``. No coroutine frame per command on the common path: it would live, and be
        traversed by the garbage collector, until the command's commit is durable.
        """
        if self._closed:
            raise ActorSystemClosed("actor system is closed")
        if op.kind in (EVENT_COUNT, STATE_AT):
            return read_op(self.workflow(identity.workflow_id.name), self.store, identity, op)
        # (Read once: an attribute of a pydantic model goes through its slow lookup hook.)
        stream_id = identity.stream_id
        actor = self._live.get(stream_id)
        if actor is None:
            cap = self.max_live
            if (
                (cap is not None and len(self._live) >= cap)
                or (self._reaper is None and self.idle_timeout is not None)
                or stream_id in self._activating
            ):
                return self._activate_and_submit(identity, op)
            # Room under the cap: no waiting.
            actor = self._new_actor(identity)
        else:
            self._live.move_to_end(stream_id)
        return actor.submit(op)

    def dispatch_new(self, identity: ProcessIdentity, op: Op) -> Awaitable[Any]:
        """``dispatch`` of the first operation of a handle ``spawn`` made with a random id.

        Nothing can be stored under a process id drawn a moment ago, so when its actor starts
        right away (room under ``max_live``) it starts from the workflow's initial state
        without reading the store (no activation read per new process). Its commits still
        expect version 0: a stream written meanwhile through another handle on this identity
        fails with a conflict, and the actor reloads from the store as usual. Anything else
        (a read such as ``state()``, a live actor, no room) is plain ``dispatch``.
        """
        if (
            self._closed
            or op.kind not in _WRITES  # a read always reads the store (see ``spawn``)
            or identity.stream_id in self._live
            or identity.stream_id in self._activating
            or (self.max_live is not None and len(self._live) >= self.max_live)
        ):
            return self.dispatch(identity, op)
        if self._reaper is None and self.idle_timeout is not None:
            self._start_reaper()
        actor = self._new_actor(identity)
        actor.start_new()
        return actor.submit(op)

    async def _activate_and_submit(self, identity: ProcessIdentity, op: Op) -> Any:
        self._waiting_ops += 1
        self._no_waiting_ops.clear()
        try:
            return await self._activate_then_submit(identity, op)
        finally:
            self._waiting_ops -= 1
            if not self._waiting_ops:
                self._no_waiting_ops.set()

    async def _activate_then_submit(self, identity: ProcessIdentity, op: Op) -> Any:
        # Looked up again when the coroutine runs, not when it was made: several ops for one
        # new process may each get a coroutine before the first runs (a Ray host's batch);
        # the first activates the actor, the others must find it, in their order.
        stream_id = identity.stream_id
        while True:
            actor = self._live.get(stream_id)
            if actor is not None:
                self._live.move_to_end(stream_id)
                return await actor.submit(op)
            pending = self._activating.get(stream_id)
            if pending is None:
                break
            try:  # an earlier op of the stream activates it: this one queues behind that one
                actor = await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and not (task is not None and task.cancelling()):
                    continue  # that caller gave up waiting, not this one: activate it here
                raise
            if actor.closed:
                # The activator's op finished within its turn and the idle actor made room
                # under ``max_live`` for another stream before this caller woke: activate again.
                continue
            return await actor.submit(op)
        activated: asyncio.Future[ProcessActor] = asyncio.get_running_loop().create_future()
        self._activating[stream_id] = activated
        try:
            actor = await self._activate(identity)
        except asyncio.CancelledError:
            activated.cancel()
            raise
        except BaseException as exc:
            activated.set_exception(exc)
            activated.exception()  # (retrieved: no "never retrieved" warning without waiters)
            raise
        finally:
            del self._activating[stream_id]
        submitted = actor.submit(op)  # the first op first, then the waiters wake in their order
        activated.set_result(actor)
        return await submitted

    def submit_live(self, identity: ProcessIdentity, op: Op) -> asyncio.Future[Any] | None:
        """``dispatch`` without a coroutine when the process's actor is live: its mailbox future.

        None when the actor is not live or ``op`` does not run in its mailbox: then call
        ``dispatch`` (an actor system running many operations per call, e.g. a Ray host,
        saves a task per operation). Raises ``ActorSystemClosed`` after ``aclose``.
        """
        if self._closed:
            raise ActorSystemClosed("actor system is closed")
        if op.kind in (EVENT_COUNT, STATE_AT):
            return None
        actor = self._live_actor(identity)
        return None if actor is None else actor.submit(op)

    def submit_enqueue(
        self, identity: ProcessIdentity, command: BaseModel, ctx: CommandContext | None
    ) -> asyncio.Future[tuple[EventEnvelope, ...]] | None:
        """An enqueuing command (``execute_and_enqueue``) for a live actor: its mailbox future,
        which resolves with the events alone; None when the actor is not live (use ``dispatch``).

        What ``dispatch`` of ``Op(COMMAND, command, ctx, enqueue=True)`` does for a live actor,
        without the ``Op`` and the ``Outcome``. Raises ``ActorSystemClosed`` after ``aclose``.
        """
        if self._closed:
            raise ActorSystemClosed("actor system is closed")
        actor = self._live_actor(identity)
        return None if actor is None else actor.submit_enqueue(command, ctx)

    def _live_actor(self, identity: ProcessIdentity) -> ProcessActor | None:
        """The process's actor if it is live, marked as used last (for the ``max_live`` order)."""
        stream_id = identity.stream_id  # (once: a model attribute goes through a slow hook)
        actor = self._live.get(stream_id)
        if actor is not None:
            self._live.move_to_end(stream_id)
        return actor

    async def _activate(self, identity: ProcessIdentity) -> ProcessActor:
        """A new actor for ``identity``, after making room under ``max_live``.

        Only idle actors are passivated; when every live actor is busy, this waits until one
        finishes its mailbox, so the cap holds even under load and a stream never gets a
        second actor while its first is still draining.
        """
        if self._reaper is None and self.idle_timeout is not None:
            self._start_reaper()
        while self.max_live is not None and len(self._live) >= self.max_live:
            victim = next((a for a in self._live.values() if a.idle), None)
            if victim is not None:
                self._passivate(victim)
                continue
            freed = self._runner.slot_freed
            if freed is None:
                freed = self._runner.slot_freed = asyncio.Event()
            freed.clear()
            await freed.wait()
            existing = self._live.get(identity.stream_id)
            if existing is not None:  # another caller activated it while we waited
                self._live.move_to_end(identity.stream_id)
                return existing
        if self._shut:
            raise ActorSystemClosed("actor system is closed")
        return self._new_actor(identity)

    def _new_actor(self, identity: ProcessIdentity) -> ProcessActor:
        """The live actor of ``identity``, registered (the caller made room under ``max_live``)."""
        # (Fields read from ``__dict__``: a model attribute goes through pydantic's lookup
        # hook; once per activation.)
        fields = identity.__dict__
        workflow = self.workflow(fields["workflow_id"].name)
        identity = self._shared_ids(identity)
        actor = ProcessActor(
            workflow, self.store, identity, self._config, self._stats, self._runner
        )
        live = self._live
        live[fields["stream_id"]] = actor
        stats = self._stats
        if len(live) > stats.max_live_seen:
            stats.max_live_seen = len(live)
        return actor

    def _shared_ids(self, identity: ProcessIdentity) -> ProcessIdentity:
        """``identity`` holding this system's one copy of its tenant and workflow ids.

        A live actor keeps its identity for as long as it lives; identities decoded from a
        message or a Ray call carry their own copies of ids that thousands of processes share
        (about a third of an idle actor's memory). Equal values, same identity.
        """
        fields = identity.__dict__
        tenant, workflow_id = fields["tenant_id"], fields["workflow_id"]
        # The shared objects themselves (every spawn of one tenant and workflow passes them):
        # known by their ``id``, as hashing and comparing an id or a ``WorkflowId`` runs
        # Python code. The table holds each object, so its ``id`` is not reused meanwhile.
        canonical = self._canonical
        if canonical.get(id(tenant)) is tenant and canonical.get(id(workflow_id)) is workflow_id:
            return identity
        tenant = self._tenants.setdefault(tenant, tenant)
        workflow_id = self._workflow_ids.setdefault(workflow_id, workflow_id)
        canonical[id(tenant)] = tenant
        canonical[id(workflow_id)] = workflow_id
        if tenant is identity.tenant_id and workflow_id is identity.workflow_id:
            return identity
        # Typed ids: built without re-validation, with one fields-set shared by all identities.
        return ProcessIdentity.of_process(tenant, identity.process_id, workflow_id)

    def _passivate(self, actor: ProcessActor) -> None:
        # Only idle actors get here: nothing queued, nothing running, state already durable.
        if self._live.get(actor.identity.stream_id) is actor:
            del self._live[actor.identity.stream_id]
            actor.closed = True
            self._stats.passivations += 1

    async def passivate_idle(self, older_than: float = 0.0) -> int:
        """Passivate every idle actor unused for ``older_than`` seconds; returns how many."""
        now = time.monotonic()
        victims = [a for a in self._live.values() if a.idle and now - a.last_used >= older_than]
        for actor in victims:
            self._passivate(actor)
        return len(victims)

    def _start_reaper(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        assert self.idle_timeout is not None
        period = min(max(self.idle_timeout / 2, 0.01), 30.0)
        while not self._closed:
            await asyncio.sleep(period)
            await self.passivate_idle(self.idle_timeout)

    # -- lifecycle -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until every actor's mailbox is empty (new messages may still arrive meanwhile)."""
        while True:
            busy = [a for a in self._live.values() if not a.idle]
            if not busy:
                return
            await asyncio.gather(*(a.drain() for a in busy), return_exceptions=True)

    async def aclose(self) -> None:
        """Refuse new operations, finish every queued one, passivate all actors.

        Every operation accepted before ``aclose`` completes (and, for commands, is durable)
        before this returns; with ``close_store=True`` the store is closed too (its writer
        flushed).
        """
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await self.drain()
        while self._waiting_ops:  # accepted, waiting for room under ``max_live``: they run too
            if self._runner.slot_freed is not None:
                self._runner.slot_freed.set()
            await self._no_waiting_ops.wait()
            await self.drain()
        self._shut = True
        for actor in list(self._live.values()):
            self._passivate(actor)
        if self._runner.slot_freed is not None:
            self._runner.slot_freed.set()
        if self._runner.freezes:
            gc.unfreeze()  # frozen garbage becomes collectable again (see ``gc_freeze_every``)
        if self._close_store:
            await self.store.aclose()
