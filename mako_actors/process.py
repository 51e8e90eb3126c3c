"""``Process``: a typed handle on one process instance, with the reference API of ``mako-engine``.

Every method of the reference page is here, async, with its meaning and error contract. Each
one is a short composition over one internal path, ``_run``: load state (full replay or
snapshot + tail) → ``Workflow.handle`` → stamp → one atomic ``Commit``, with options for the
context, the outbox, snapshots and retries. No variant copies another's body.

A ``Process`` holds no state between calls: each command replays from the store and appends
under optimistic concurrency (``VersionConflict`` when another writer won). To keep state in
memory and serialize commands instead, use an actor system (``LocalActorSystem``), whose
handles offer the same methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from mako_actors._command import CommandOptions, Prepared, decide, prepare, require_command
from mako_actors._handle import ProcessHandle, note_dropped
from mako_actors.deadlines import Deadline
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import DeadlineGone, InvalidArgument, VersionConflict
from mako_actors.ids import ProcessId, StreamId, TenantId
from mako_actors.outbox import OutboxMessage
from mako_actors.snapshot import Snapshot
from mako_actors.store import Activation, SnapshotStore, Store
from mako_actors.version import WorkflowId
from mako_actors.workflow import Workflow

log = logging.getLogger(__name__)

C = TypeVar("C", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


async def load_state(
    workflow: Workflow[Any, S],
    store: Store,
    stream_id: StreamId,
    *,
    snapshots: SnapshotStore | None = None,
    upto: int | None = None,
) -> tuple[S, int]:
    """Rebuild a process's state: from ``snapshots`` plus the tail if given, else full replay.

    A snapshot of another workflow or state schema version, or past ``upto``, is ignored; so
    is one the stream does not hold (a snapshot restored from elsewhere, a stream truncated
    by hand): past its end, or whose event at its sequence is not the one it was taken after
    (``Snapshot.event_id``; one written before that was recorded is taken at its sequence),
    which is logged and counted in ``store.stats.extra["snapshots_ignored"]``. Returns the
    state and the sequence number of the last event applied. A store whose class has
    ``load_activation`` (the embedded ones) reads snapshot and tail in one transaction.
    """
    # Asked of the class: a wrapper that forwards unknown attributes to a store (and answers
    # reads itself, from a cache) keeps answering them.
    load_activation = getattr(type(store), "load_activation", None) if snapshots is store else None
    if load_activation is not None:
        activation: Activation = await load_activation(
            store, stream_id, workflow.name, workflow.state_schema_version, upto
        )
        return state_from(workflow, store, stream_id, activation)
    if snapshots is not None:
        snap = await snapshots.load_snapshot(stream_id)
        if snap is not None and workflow.accepts_snapshot(snap) and (upto is None or snap.sequence <= upto):
            version = snap.sequence
            if snap.event_id is None:
                # Sequences have no gaps: a non-empty tail proves the snapshot's event exists.
                tail = await store.load_from(stream_id, version, upto=upto)
                held = bool(tail) or await store.stream_version(stream_id) >= version
            else:  # read from the snapshot's own event, to compare its id
                tail = await store.load_from(stream_id, max(version - 1, 0), upto=upto)
                held = bool(tail) and tail[0].sequence == version and tail[0].event_id == snap.event_id
                tail = tail[1:]
            if held:
                state = workflow.fold(workflow.decode_state(snap.state), tail)
                return state, tail[-1].sequence if tail else version
            _snapshot_ignored(store, stream_id, version)
    tail = await store.load_from(stream_id, 0, upto=upto)
    return workflow.fold(workflow.initial_state(), tail), tail[-1].sequence if tail else 0


def state_from(
    workflow: Workflow[Any, S], store: Store, stream_id: StreamId, activation: Activation
) -> tuple[S, int]:
    """The state and version an ``Activation`` read from ``store`` gives (see ``load_state``)."""
    if activation.ignored_snapshot_at is not None:
        _snapshot_ignored(store, stream_id, activation.ignored_snapshot_at)
    snapshot, tail = activation.snapshot, activation.events
    if snapshot is None:
        state, version = workflow.initial_state(), 0
    else:
        state, version = workflow.decode_state(snapshot.state), snapshot.sequence
    return workflow.fold(state, tail), tail[-1].sequence if tail else version


async def snapshot_due(
    workflow: Workflow[Any, Any],
    store: Store,
    stream_id: StreamId,
    last: Snapshot | None,
    version: int,
    interval: int,
) -> bool:
    """Whether ``take_snapshot`` at ``version`` writes one: ``interval`` events after ``last``.

    ``last`` counts only if this workflow took it at its state schema version and the stream
    holds it (see ``load_state``); one it does not hold is no snapshot, and is replaced. Its
    event is read only when ``last`` would otherwise hold a new snapshot back.
    """
    if interval <= 0:
        return False
    if last is None or not workflow.accepts_snapshot(last) or last.sequence > version:
        return version >= interval
    if version - last.sequence >= interval:
        return True
    if last.event_id is None or version < interval:
        return False
    at = await store.load_from(stream_id, last.sequence - 1, upto=last.sequence)
    return not at or at[0].event_id != last.event_id


def _snapshot_ignored(store: Store, stream_id: StreamId, sequence: int) -> None:
    log.warning(
        "snapshot of %s at sequence %d is not the stream's (past its end, or taken after "
        "another event); ignored (full replay)",
        stream_id,
        sequence,
    )
    extra = store.stats.extra
    extra["snapshots_ignored"] = extra.get("snapshots_ignored", 0) + 1


# The options of the reference API's fixed variants: frozen, so shared by every call.
_PLAIN = CommandOptions()
_ENQUEUE = CommandOptions(enqueue=True)
_SNAPSHOT = CommandOptions(use_snapshot=True)
_ENQUEUE_SNAPSHOT = CommandOptions(enqueue=True, use_snapshot=True)
# ``_execute_and_enqueue_new``'s: it returns the events only, so the new state is not folded.
_ENQUEUE_NEW = CommandOptions(enqueue=True, fold=False)


class Process(ProcessHandle[C, S]):
    """A handle binding a workflow, a store and one process's ids.

    ``Process(workflow, store, tenant_id, workflow_id)`` starts a new process (random process
    id); ``from_stream``/``from_identity`` attach to an existing one. Handles are cheap; all
    handles on one stream share its storage.
    """

    def __init__(
        self,
        workflow: Workflow[C, S],
        store: Store,
        tenant_id: TenantId,
        workflow_id: WorkflowId,
        *,
        process_id: ProcessId | None = None,
        clock: Clock = system_clock,
    ) -> None:
        identity = ProcessIdentity.of_process(tenant_id, process_id or ProcessId.new(), workflow_id)
        self._init(workflow, store, identity, clock)

    def _init(self, workflow: Workflow[C, S], store: Store, identity: ProcessIdentity, clock: Clock) -> None:
        if identity.workflow_id.name != workflow.check_name():
            raise InvalidArgument(
                f"workflow id {identity.workflow_id} does not name workflow {workflow.name!r}"
            )
        self._workflow = workflow
        self._store = store
        self._identity = identity
        self._clock = clock

    @classmethod
    def new(
        cls,
        workflow: Workflow[C, S],
        store: Store,
        tenant_id: TenantId,
        workflow_id: WorkflowId,
        *,
        process_id: ProcessId | None = None,
        clock: Clock = system_clock,
    ) -> Process[C, S]:
        """A new process (the reference's ``Process::new``): the same as ``Process(...)``."""
        return cls(workflow, store, tenant_id, workflow_id, process_id=process_id, clock=clock)

    @classmethod
    def from_stream(
        cls,
        workflow: Workflow[C, S],
        store: Store,
        stream_id: StreamId,
        process_id: ProcessId,
        tenant_id: TenantId,
        workflow_id: WorkflowId,
        *,
        clock: Clock = system_clock,
    ) -> Process[C, S]:
        """Attach to an existing process stream (after a restart, or to route a message)."""
        if StreamId.for_process(tenant_id, process_id) != stream_id:
            raise InvalidArgument(
                f"stream {stream_id} is not the stream of process {process_id} of tenant {tenant_id}"
            )
        identity = ProcessIdentity.of_process(tenant_id, process_id, workflow_id)
        return cls.from_identity(workflow, store, identity, clock=clock)

    @classmethod
    def from_identity(
        cls,
        workflow: Workflow[C, S],
        store: Store,
        identity: ProcessIdentity,
        *,
        clock: Clock = system_clock,
    ) -> Process[C, S]:
        """Attach to the process a stored ``ProcessIdentity`` names."""
        process = cls.__new__(cls)
        process._init(workflow, store, identity, clock)
        return process

    # -- reads -----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self._store

    async def event_count(self) -> int:
        """How many events the stream holds (O(1))."""
        return await self._store.stream_version(self.stream_id)

    async def state(self) -> S:
        """The current state by full replay; read-only."""
        state, _ = await load_state(self._workflow, self._store, self.stream_id)
        return state

    async def state_with_snapshot(self, snap_store: SnapshotStore | None = None) -> S:
        """The current state from the latest usable snapshot plus the tail (O(tail))."""
        state, _ = await load_state(
            self._workflow, self._store, self.stream_id, snapshots=snap_store or self._store
        )
        return state

    async def state_at(self, sequence: int) -> S:
        """The state as it was right after event ``sequence`` (0: the initial state).

        Raises ``InvalidArgument`` when the stream has fewer events.
        """
        count = await self.event_count()
        if sequence < 0 or sequence > count:
            raise InvalidArgument(f"state_at({sequence}): stream {self.stream_id} has {count} events")
        state, _ = await load_state(self._workflow, self._store, self.stream_id, upto=sequence)
        return state

    async def take_snapshot(self, snap_store: SnapshotStore | None = None, interval: int = 100) -> bool:
        """Save a snapshot if ``interval`` events accumulated since the last one.

        Returns whether one was taken; ``interval == 0`` never takes one. A snapshot the
        stream does not hold (``load_state``) is no snapshot: it is replaced.
        """
        if interval <= 0:
            return False
        snapshots = snap_store or self._store
        last = await snapshots.load_snapshot(self.stream_id)
        count = await self.event_count()
        if not await snapshot_due(self._workflow, self._store, self.stream_id, last, count, interval):
            return False
        # From the last snapshot and its tail (one the stream does not hold is skipped), not a full fold.
        state, version = await load_state(self._workflow, self._store, self.stream_id, snapshots=snapshots)
        at = await self._store.load_from(self.stream_id, version - 1, upto=version)
        if not at:  # (the stream lost that event meanwhile: truncated by hand)
            return False
        await snapshots.save_snapshot(
            self._workflow.snapshot_of(self.stream_id, version, state, self._clock(), event_id=at[0].event_id)
        )
        return True

    # -- the one command path --------------------------------------------------------------

    async def _run(
        self,
        command_for: Callable[[S], C | None],
        ctx: CommandContext | None,
        options: CommandOptions,
        snap_store: SnapshotStore | None = None,
        *,
        collect: bool = False,
        empty: bool = False,
    ) -> Prepared[S] | None:
        """Load → decide → commit, retrying on ``VersionConflict`` up to ``max_attempts``.

        Every attempt reloads state from the store. Returns ``None`` when ``command_for``
        yields no command (a deadline that needs no compensation). Without ``enqueue`` the
        outbox, deadlines and deadline cancellations are dropped and counted (``note_dropped``);
        ``collect``: the outbox is returned to the caller, so only the deadline changes are.
        ``empty``: the caller read the stream's version as 0 just now, so the first attempt
        starts from the initial state without a read (its commit still expects version 0).
        """
        if options.max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be at least 1, got {options.max_attempts}")
        if ctx is None:
            ctx = self.new_context()
        else:
            ctx.require_process(self._identity)
        separate_snapshots = snap_store is not None and snap_store is not self._store
        snapshots = (snap_store or self._store) if options.use_snapshot else None
        for attempt in range(1, options.max_attempts + 1):
            if empty and attempt == 1:
                state, version = self._workflow.initial_state(), 0
            else:
                state, version = await load_state(
                    self._workflow, self._store, self.stream_id, snapshots=snapshots
                )
            command = command_for(state)
            if command is None:
                return None
            output = decide(self._workflow, state, command)
            prepared = prepare(
                self._workflow, self._identity, state, version, output, ctx, self._clock(), options
            )
            if prepared.commit is None:
                return prepared
            commit = prepared.commit
            if separate_snapshots and commit.snapshot is not None:
                commit = replace(commit, snapshot=None)
            try:
                result = await self._store.commit(commit)
            except VersionConflict:
                if attempt == options.max_attempts:
                    raise
                continue
            snapshot = prepared.snapshot
            if separate_snapshots and snapshot is not None:
                assert snap_store is not None
                try:
                    await snap_store.save_snapshot(snapshot)
                except Exception as exc:
                    # The command is committed: raising now would invite a retry that applies it
                    # twice. A snapshot is a cache; the next interval writes one again.
                    log.warning("snapshot of %s at %d not saved: %r", self.stream_id, snapshot.sequence, exc)
                    snapshot = None
            if not options.enqueue:  # counted once, for the attempt that committed
                # (``collect`` returns the messages to its caller: only the deadline changes go.)
                note_dropped(
                    self._workflow.name,
                    command,
                    0 if collect else len(output.outbox),
                    len(output.deadlines),
                    len(output.cancel_deadlines),
                    method="execute_and_collect" if collect else "execute",
                )
            same = commit is prepared.commit and result.events is prepared.events
            if same and snapshot is prepared.snapshot:
                return prepared  # the store stamped the events in place (the usual case): no copy
            return Prepared(commit, result.events, prepared.outbox, prepared.state, snapshot)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _events(
        self,
        command: C,
        ctx: CommandContext | None = None,
        snap_store: SnapshotStore | None = None,
        options: CommandOptions = _PLAIN,
        *,
        empty: bool = False,
    ) -> list[EventEnvelope]:
        require_command(command)
        prepared = await self._run(lambda _: command, ctx, options, snap_store, empty=empty)
        return list(prepared.events) if prepared else []

    # -- the reference API -----------------------------------------------------------------

    async def execute(self, command: C) -> list[EventEnvelope]:
        """Handle ``command`` with a fresh context and append its events.

        Persists events, registry keys and journal entries only: outbox messages, deadlines and
        deadline cancellations the workflow returns are dropped (use ``execute_and_enqueue``);
        each drop is counted in ``DROPPED_OUTPUT`` and warned about once per workflow and
        command type. Raises ``VersionConflict`` when a concurrent writer won, ``WorkflowError``
        when the workflow refuses; nothing is written.
        """
        return await self._events(command)

    async def execute_with(self, command: C, ctx: CommandContext) -> list[EventEnvelope]:
        """``execute`` with a caller-supplied context (correlation, conversation, causation)."""
        return await self._events(command, ctx)

    async def execute_and_collect(self, command: C) -> tuple[list[EventEnvelope], list[OutboxMessage]]:
        """``execute``, and also return the outbox messages, stamped as ``execute_and_enqueue`` would.

        The messages are not persisted; their ``causation_event_id`` is the first event's id.
        Deadlines and deadline cancellations are dropped, counted and warned about as by ``execute``.
        """
        require_command(command)
        prepared = await self._run(lambda _: command, None, _PLAIN, collect=True)
        if prepared is None:
            return [], []
        return list(prepared.events), list(prepared.outbox)

    async def execute_snapshot(
        self, command: C, snap_store: SnapshotStore | None = None
    ) -> list[EventEnvelope]:
        """``execute``, rebuilding state from the latest snapshot plus the tail."""
        return await self._events(command, snap_store=snap_store, options=_SNAPSHOT)

    async def execute_with_retry(self, command: C, max_attempts: int) -> list[EventEnvelope]:
        """``execute``, retrying on ``VersionConflict``; one context pinned for all attempts.

        ``max_attempts == 0`` raises ``InvalidArgument``; other errors are raised at once.
        """
        return await self._events(
            command, self.new_context(), options=CommandOptions(max_attempts=max_attempts)
        )

    async def execute_with_retry_ctx(
        self, command: C, ctx: CommandContext, max_attempts: int
    ) -> list[EventEnvelope]:
        """``execute_with_retry`` with a caller-supplied context."""
        return await self._events(command, ctx, options=CommandOptions(max_attempts=max_attempts))

    async def execute_and_enqueue(self, command: C) -> list[EventEnvelope]:
        """Handle ``command`` and persist events, outbox messages and deadlines atomically.

        Outbox messages are stamped with the first event's id as ``causation_event_id``.
        """
        return await self._events(command, options=_ENQUEUE)

    async def execute_and_enqueue_with(self, command: C, ctx: CommandContext) -> list[EventEnvelope]:
        """``execute_and_enqueue`` with a caller-supplied context (not on the reference page).

        The combination inbound EDIFACT needs: the interchange's correlation root on the events
        and the answers (APERAK, UTILMD) in the outbox, in one transaction.
        """
        return await self._events(command, ctx, options=_ENQUEUE)

    async def _execute_and_enqueue_new(self, command: C, ctx: CommandContext) -> list[EventEnvelope]:
        """``execute_and_enqueue_with`` on a stream the caller just read as empty (version 0).

        Not part of the reference API (``ProcessRef`` has no such method): for the inbound
        pipeline's receipt streams, which run on plain processes. Starts from the workflow's
        initial state without reading the store (a receipt stream of an interchange never
        seen). The commit still expects version 0, so a stream written meanwhile raises
        ``VersionConflict`` and nothing is written. The events are not applied to a new state
        (nothing here reads it; ``apply`` must accept them anyway, by the workflow's contract).
        """
        return await self._events(command, ctx, options=_ENQUEUE_NEW, empty=True)

    async def execute_and_enqueue_snapshot(
        self, command: C, snap_store: SnapshotStore | None = None
    ) -> list[EventEnvelope]:
        """``execute_and_enqueue``, rebuilding state from the latest snapshot plus the tail."""
        return await self._events(command, snap_store=snap_store, options=_ENQUEUE_SNAPSHOT)

    async def execute_and_enqueue_with_retry(self, command: C, max_attempts: int) -> list[EventEnvelope]:
        """``execute_and_enqueue``, retrying on ``VersionConflict``."""
        return await self._events(command, options=CommandOptions(enqueue=True, max_attempts=max_attempts))

    async def execute_and_enqueue_with_snapshot(
        self, command: C, snap_store: SnapshotStore | None = None, snapshot_interval: int = 100
    ) -> tuple[list[EventEnvelope], bool]:
        """``execute_and_enqueue``, snapshotting when the version crosses a multiple of the interval.

        The snapshot is written in the same transaction when ``snap_store`` is this store.
        Returns the events and whether a snapshot was taken; interval 0 never snapshots.
        """
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
        """``execute_and_enqueue_with_snapshot``, retrying on ``VersionConflict``."""
        options = CommandOptions(
            enqueue=True,
            use_snapshot=True,
            snapshot_interval=snapshot_interval,
            max_attempts=max_attempts,
        )
        require_command(command)
        prepared = await self._run(lambda _: command, None, options, snap_store)
        if prepared is None:
            return [], False
        return list(prepared.events), prepared.snapshot is not None

    async def execute_timeout(self, deadline: Deadline) -> list[EventEnvelope] | None:
        """Fire a due deadline: run ``Workflow.on_deadline``'s compensation command, if any.

        The compensation is executed like ``execute_and_enqueue`` and the deadline is removed
        in the same transaction. Returns its events, or ``None`` when ``on_deadline`` returned
        ``None`` (the deadline is then removed on its own). ``DeadlineGone`` (nothing written)
        when the deadline was fired or cancelled meanwhile.
        """
        return await self.execute_timeout_with_retry(deadline, 1)

    async def execute_timeout_with_retry(
        self, deadline: Deadline, max_attempts: int
    ) -> list[EventEnvelope] | None:
        """``execute_timeout``, retrying on ``VersionConflict`` (``on_deadline`` sees fresh state)."""
        if deadline.stream_id != self.stream_id:
            raise InvalidArgument(f"deadline {deadline.deadline_id} belongs to {deadline.stream_id}")
        options = CommandOptions(enqueue=True, max_attempts=max_attempts, deadline=deadline)
        prepared = await self._run(lambda state: self._workflow.on_deadline(deadline, state), None, options)
        if prepared is None or prepared.commit is None:
            # No compensation, or one without events: nothing else removes the deadline. One
            # gone meanwhile (fired, cancelled) is ``DeadlineGone``, as a compensation's commit
            # and an actor's ``execute_timeout`` say it.
            if not await self._store.cancel_deadline(deadline.deadline_id):
                raise DeadlineGone(f"deadline {deadline.deadline_id} of {self.stream_id}: fired or cancelled")
            return None if prepared is None else []
        return list(prepared.events)
