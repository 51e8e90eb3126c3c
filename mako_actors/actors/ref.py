"""``ProcessRef``: an actor-backed handle with the methods of ``Process``.

Code written against ``Process`` runs unchanged on a ``ProcessRef``: same method names,
signatures and return types. What differs is underneath: the process's state lives in its
actor, commands are serialized by the actor's mailbox (concurrent callers never see each
other's ``VersionConflict``), and retries on conflicts with other writers happen inside the
actor. The ``*_with_retry`` and ``*_snapshot`` variants are kept for parity: retries bound the
actor's internal attempts from below, and snapshots are always taken by the system's interval.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel

from mako_actors._command import require_command
from mako_actors._handle import ProcessHandle, note_dropped
from mako_actors.actors._actor import (
    COMMAND,
    EVENT_COUNT,
    STATE,
    STATE_AT,
    TAKE_SNAPSHOT,
    TIMEOUT,
    Op,
    Outcome,
)
from mako_actors.deadlines import Deadline
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import InvalidArgument
from mako_actors.outbox import OutboxMessage
from mako_actors.store import SnapshotStore
from mako_actors.workflow import Workflow

C = TypeVar("C", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)


class Dispatcher(Protocol):
    """What a ``ProcessRef`` sends its operations through (a local or a Ray actor system).

    ``dispatch`` returns what to await for the result: a coroutine (``async def``), or a
    future when the operation was queued right away (no coroutine frame per operation).
    """

    def dispatch(self, identity: ProcessIdentity, op: Op) -> Awaitable[Any]: ...

    def submit_enqueue(
        self, identity: ProcessIdentity, command: BaseModel, ctx: CommandContext | None
    ) -> Awaitable[tuple[EventEnvelope, ...]] | None:
        """``dispatch`` of ``Op(COMMAND, command, ctx, enqueue=True)``, answered with the events
        alone, when the dispatcher can queue it right away (no ``Op``, no ``Outcome``); else None."""
        ...


class NewProcessDispatcher(Dispatcher, Protocol):
    """A ``Dispatcher`` that can start a process it knows to be new without reading the store."""

    def dispatch_new(self, identity: ProcessIdentity, op: Op) -> Awaitable[Any]:
        """``dispatch``, where ``identity`` was spawned with a fresh random process id."""
        ...


class ProcessRef(ProcessHandle[C, S]):
    """A handle on one process's actor; cheap, and any number may exist for one process.

    Obtain it from an actor system (``spawn``, ``resume``, ``lookup``), never construct it.
    Every method may raise what ``Process``'s does (``WorkflowError``, ``StoreError``, ...);
    ``VersionConflict`` only when another writer kept winning for all internal attempts.
    """

    __slots__ = ("_dispatcher", "_identity", "_new", "_store", "_workflow")

    def __init__(
        self,
        workflow: Workflow[C, S],
        identity: ProcessIdentity,
        dispatcher: Dispatcher,
        store: object | None = None,
        new: bool = False,
    ) -> None:
        """``new`` (only with a ``NewProcessDispatcher``): the process id was just drawn at
        random by ``spawn``; the first operation tells the dispatcher so."""
        if identity.workflow_id.name != workflow.name:
            raise InvalidArgument(
                f"workflow id {identity.workflow_id} does not name workflow {workflow.name!r}"
            )
        self._workflow = workflow
        self._identity = identity
        self._dispatcher = dispatcher
        self._store = store
        self._new = new

    def __repr__(self) -> str:
        return f"ProcessRef({self._identity.stream_id}, {self._identity.workflow_id})"

    # -- plumbing --------------------------------------------------------------------------

    async def _send(self, op: Op) -> Any:
        return await (self._first(op) if self._new else self._dispatcher.dispatch(self._identity, op))

    def _first(self, op: Op) -> Awaitable[Any]:
        """Dispatch the first operation of a handle on a new process (``new``), only once.

        Every operation method checks ``_new`` inline (one attribute read per operation, not a
        call): this handle's first operation starts the process without a store read.
        """
        self._new = False
        return cast(NewProcessDispatcher, self._dispatcher).dispatch_new(self._identity, op)

    async def _outcome(
        self,
        command: C,
        ctx: CommandContext | None = None,
        *,
        enqueue: bool = False,
        max_attempts: int = 0,
        snapshot_interval: int | None = None,
    ) -> Outcome:
        require_command(command)
        if ctx is not None:
            ctx.require_process(self._identity)
        # Without a caller's context the actor makes a fresh one when it decides the command
        # (one object less per command here, and none to pickle across a Ray boundary).
        op = Op(
            COMMAND,
            command=command,
            ctx=ctx,
            enqueue=enqueue,
            max_attempts=max_attempts,
            snapshot_interval=snapshot_interval,
        )
        outcome: Outcome = await (
            self._first(op) if self._new else self._dispatcher.dispatch(self._identity, op)
        )
        return outcome

    async def _events(
        self, command: C, ctx: CommandContext | None = None, enqueue: bool = False, max_attempts: int = 0
    ) -> list[EventEnvelope]:
        # ``_outcome`` inlined: the command path of every ``execute*`` is one coroutine here.
        require_command(command)
        if ctx is not None:
            ctx.require_process(self._identity)
        if enqueue and not max_attempts and not self._new:
            queued = self._dispatcher.submit_enqueue(self._identity, command, ctx)
            if queued is not None:
                return list(await queued)
        op = Op(COMMAND, command, ctx, enqueue, max_attempts)
        outcome: Outcome = await (
            self._first(op) if self._new else self._dispatcher.dispatch(self._identity, op)
        )
        if outcome.outbox and not enqueue:
            note_dropped(self._workflow.name, command, len(outcome.outbox), 0)
        return list(outcome.events)

    def _check_snap_store(self, snap_store: SnapshotStore | None) -> None:
        if snap_store is not None and snap_store is not self._store:
            raise InvalidArgument(
                "actor-backed processes snapshot into their actor system's store; pass None"
            )

    # -- reads -----------------------------------------------------------------------------

    async def event_count(self) -> int:
        """How many events the stream holds (O(1) store read; does not activate the actor)."""
        count: int = await self._send(Op(EVENT_COUNT))
        return count

    async def state(self) -> S:
        """The current state, from the actor's memory (activating it if needed).

        It equals a full replay of the stream and reflects every command sent before. The
        actor is its stream's one writer: events another writer appends meanwhile (a
        ``Process`` on the same stream, a CLI decision beside a running node) show from the
        actor's next command on, which reloads it (``state_at`` and ``event_count`` read the
        store).
        """
        state: S = await self._send(Op(STATE))
        return state

    async def state_with_snapshot(self, snap_store: SnapshotStore | None = None) -> S:
        """``state``: an actor's activation already starts from the latest snapshot."""
        self._check_snap_store(snap_store)
        return await self.state()

    async def state_at(self, sequence: int) -> S:
        """The state right after event ``sequence`` (0: initial); ``InvalidArgument`` if too far."""
        state: S = await self._send(Op(STATE_AT, sequence=sequence))
        return state

    async def take_snapshot(self, snap_store: SnapshotStore | None = None, interval: int = 100) -> bool:
        """Save a snapshot of the actor's state if ``interval`` events accumulated since the last."""
        self._check_snap_store(snap_store)
        taken: bool = await self._send(Op(TAKE_SNAPSHOT, snapshot_interval=interval))
        return taken

    # -- commands --------------------------------------------------------------------------

    async def execute(self, command: C) -> list[EventEnvelope]:
        """Handle ``command`` and append its events once durable; outbox and deadlines are dropped.

        Raises ``WorkflowError`` when the workflow refuses (nothing written, the actor stays
        usable with its state unchanged).
        """
        # ``_events`` inlined (also in ``execute_and_enqueue``): one coroutine less per
        # command, which would stay alive (and be traversed by the garbage collector) until
        # the command's commit is durable.
        require_command(command)
        op = Op(COMMAND, command)
        outcome: Outcome = await (
            self._first(op) if self._new else self._dispatcher.dispatch(self._identity, op)
        )
        if outcome.outbox:
            note_dropped(self._workflow.name, command, len(outcome.outbox), 0)
        return list(outcome.events)

    async def execute_with(self, command: C, ctx: CommandContext) -> list[EventEnvelope]:
        """``execute`` with a caller-supplied context (correlation, conversation, causation)."""
        return await self._events(command, ctx)

    async def execute_and_collect(self, command: C) -> tuple[list[EventEnvelope], list[OutboxMessage]]:
        """``execute``, and also return the outbox messages as ``execute_and_enqueue`` would stamp them.

        The messages are not persisted.
        """
        outcome = await self._outcome(command)
        return list(outcome.events), list(outcome.outbox)

    async def execute_snapshot(
        self, command: C, snap_store: SnapshotStore | None = None
    ) -> list[EventEnvelope]:
        """``execute`` (the actor's state already came from the latest snapshot)."""
        self._check_snap_store(snap_store)
        return await self._events(command)

    async def execute_with_retry(self, command: C, max_attempts: int) -> list[EventEnvelope]:
        """``execute`` with at least ``max_attempts`` internal attempts on ``VersionConflict``.

        ``max_attempts == 0`` raises ``InvalidArgument`` (as ``Process`` does).
        """
        return await self._events(command, max_attempts=_attempts(max_attempts))

    async def execute_with_retry_ctx(
        self, command: C, ctx: CommandContext, max_attempts: int
    ) -> list[EventEnvelope]:
        """``execute_with_retry`` with a caller-supplied context."""
        return await self._events(command, ctx, max_attempts=_attempts(max_attempts))

    async def execute_and_enqueue(self, command: C) -> list[EventEnvelope]:
        """Handle ``command`` and persist events, outbox messages and deadlines in one transaction."""
        # (The first command of a handle ``spawn`` made is ``_first``'s; ``_events`` does the same.)
        require_command(command)
        if not self._new:
            queued = self._dispatcher.submit_enqueue(self._identity, command, None)
            if queued is not None:
                return list(await queued)
        op = Op(COMMAND, command, None, True)
        outcome: Outcome = await (
            self._first(op) if self._new else self._dispatcher.dispatch(self._identity, op)
        )
        return list(outcome.events)

    async def execute_and_enqueue_with(self, command: C, ctx: CommandContext) -> list[EventEnvelope]:
        """``execute_and_enqueue`` with a caller-supplied context, like ``Process``."""
        return await self._events(command, ctx, enqueue=True)

    async def execute_and_enqueue_snapshot(
        self, command: C, snap_store: SnapshotStore | None = None
    ) -> list[EventEnvelope]:
        """``execute_and_enqueue`` (the actor's state already came from the latest snapshot)."""
        self._check_snap_store(snap_store)
        return await self._events(command, enqueue=True)

    async def execute_and_enqueue_with_retry(self, command: C, max_attempts: int) -> list[EventEnvelope]:
        """``execute_and_enqueue`` with at least ``max_attempts`` internal attempts."""
        return await self._events(command, enqueue=True, max_attempts=_attempts(max_attempts))

    async def execute_and_enqueue_with_snapshot(
        self, command: C, snap_store: SnapshotStore | None = None, snapshot_interval: int = 100
    ) -> tuple[list[EventEnvelope], bool]:
        """``execute_and_enqueue``, snapshotting in the same transaction when the version crosses
        a multiple of ``snapshot_interval``; returns the events and whether a snapshot was taken."""
        return await self.execute_and_enqueue_with_snapshot_and_retry(
            command, 1, snap_store, snapshot_interval
        )

    async def execute_and_enqueue_with_snapshot_and_retry(
        self,
        command: C,
        max_attempts: int,
        snap_store: SnapshotStore | None = None,
        snapshot_interval: int = 100,
    ) -> tuple[list[EventEnvelope], bool]:
        """``execute_and_enqueue_with_snapshot`` with at least ``max_attempts`` internal attempts."""
        self._check_snap_store(snap_store)
        outcome = await self._outcome(
            command,
            enqueue=True,
            max_attempts=_attempts(max_attempts),
            snapshot_interval=snapshot_interval,
        )
        return list(outcome.events), outcome.snapshot_taken

    async def execute_timeout(self, deadline: Deadline) -> list[EventEnvelope] | None:
        """Fire a due deadline through ``Workflow.on_deadline``, like ``Process.execute_timeout``.

        Returns the compensation's events, or ``None`` when ``on_deadline`` returned ``None``;
        the deadline is removed either way (with the events, in one transaction).
        """
        return await self.execute_timeout_with_retry(deadline, 1)

    async def execute_timeout_with_retry(
        self, deadline: Deadline, max_attempts: int
    ) -> list[EventEnvelope] | None:
        """``execute_timeout`` with at least ``max_attempts`` internal attempts."""
        if deadline.stream_id != self.stream_id:
            raise InvalidArgument(f"deadline {deadline.deadline_id} belongs to {deadline.stream_id}")
        outcome: Outcome = await self._send(
            Op(TIMEOUT, deadline=deadline, enqueue=True, max_attempts=_attempts(max_attempts))
        )
        return None if outcome.no_command else list(outcome.events)


def _attempts(max_attempts: int) -> int:
    if max_attempts < 1:
        raise InvalidArgument(f"max_attempts must be at least 1, got {max_attempts}")
    return max_attempts
