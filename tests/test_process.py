"""Process: every method of the reference API, on LMDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors import (
    CorrelationId,
    Deadline,
    DeadlineId,
    ExpectedVersion,
    InvalidArgument,
    Process,
    ProcessId,
    Snapshot,
    StreamId,
    TenantId,
    VersionConflict,
    WorkflowError,
    WorkflowErrorKind,
    WorkflowId,
    WorkflowOutput,
)
from stores.lmdb import LmdbStore
from stores.memory import InMemoryStore
from tests.workflows import Close, Ledger, LedgerState, Record

TENANT = TenantId.from_party_id("9900000002009")
WF = WorkflowId.new("ledger", "FV2510")
NOW = datetime(2025, 6, 5, 12, 30, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def new(store: LmdbStore) -> Process[Record | Close, LedgerState]:
    return Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)


async def test_identity_round_trip_and_from_stream(store: LmdbStore) -> None:
    p = new(store)
    await p.execute(Record(amount=3))
    ident = p.identity()
    assert ident.stream_id == StreamId.for_process(TENANT, p.process_id)
    assert p.workflow_id == WF
    again = Process.from_identity(Ledger(), store, ident)
    assert (await again.state()).total == 3
    attached = Process.from_stream(Ledger(), store, ident.stream_id, p.process_id, TENANT, WF)
    assert await attached.event_count() == 1
    with pytest.raises(InvalidArgument):
        Process.from_stream(Ledger(), store, ident.stream_id, ProcessId.new(), TENANT, WF)
    with pytest.raises(InvalidArgument, match="does not name workflow"):
        Process(Ledger(), store, TENANT, WorkflowId.new("other", "FV2510"))


async def test_process_new_is_the_references_constructor(store: LmdbStore) -> None:
    """Code ported from the reference calls ``Process::new(store, tenant_id, workflow_id)``."""
    fixed = ProcessId.new()
    p = Process.new(Ledger(), store, TENANT, WF, process_id=fixed, clock=lambda: NOW)
    await p.execute(Record(amount=2))
    assert (p.process_id, p.workflow_id) == (fixed, WF)
    assert (await Process.from_identity(Ledger(), store, p.identity()).state()).total == 2
    with pytest.raises(InvalidArgument, match="does not name workflow"):
        Process.new(Ledger(), store, TENANT, WorkflowId.new("other", "FV2510"))


async def test_context_for_inbound_is_deterministic(store: LmdbStore) -> None:
    p = new(store)
    a = p.context_for_inbound("9900000001001:LFN0605143001")
    b = p.context_for_inbound("9900000001001:LFN0605143001")
    assert (
        a.correlation_id
        == b.correlation_id
        == CorrelationId.from_interchange_ref("9900000001001:LFN0605143001")
    )
    assert a.conversation_id != b.conversation_id
    events = await p.execute_with(Record(amount=1), a)
    assert events[0].correlation_id == a.correlation_id
    assert events[0].process_id == p.process_id


async def test_execute_returns_stored_envelopes_and_state_replays(store: LmdbStore) -> None:
    p = new(store)
    first = await p.execute(Record(amount=5))
    second = await p.execute(Record(amount=7))
    assert [e.sequence for e in first + second] == [1, 2]
    assert second[0].global_position > first[0].global_position
    assert second[0].recorded_at == NOW
    assert await p.event_count() == 2
    state = await p.state()
    assert (state.total, state.entries) == (12, 2)


async def test_execute_with_shares_the_context(store: LmdbStore) -> None:
    p = new(store)
    ctx = p.new_context()
    cause = (await p.execute_with(Record(amount=1), ctx))[0].event_id
    events = await p.execute_with(Record(amount=2), ctx.with_causation(cause))
    assert events[0].causation_id == cause
    assert events[0].conversation_id == ctx.conversation_id


async def test_rejected_command_raises_workflow_error_and_writes_nothing(store: LmdbStore) -> None:
    p = new(store)
    await p.execute(Record(amount=1))
    with pytest.raises(WorkflowError) as info:
        await p.execute_and_enqueue(Record(amount=-1, notify="9900000001001"))
    assert info.value.kind is WorkflowErrorKind.REJECTED
    assert await p.event_count() == 1
    assert await store.outbox_count() == 0
    await p.execute(Close())
    with pytest.raises(WorkflowError) as closed:
        await p.execute(Record(amount=1))
    assert closed.value.kind is WorkflowErrorKind.INVALID_STATE


class _EventlessLedger(Ledger):
    """A ledger whose ``Close`` returns only ``output`` (no event), whatever it holds."""

    output = WorkflowOutput()

    def handle(self, state: LedgerState, command: Record | Close) -> WorkflowOutput:
        return self.output if isinstance(command, Close) else super().handle(state, command)


@pytest.mark.parametrize(
    ("output", "named"),
    [
        (WorkflowOutput(cancel_deadlines=("reminder",)), "deadline cancellations"),
        (WorkflowOutput(register_keys=("malo:51900000012",)), "registry keys"),
        (WorkflowOutput(journal=(("supply:51900000012", {"kind": "claimed"}),)), "journal entries"),
    ],
)
async def test_output_without_an_event_is_refused_not_lost(
    store: LmdbStore, output: WorkflowOutput, named: str
) -> None:
    workflow = _EventlessLedger()
    workflow.output = output
    p = Process(workflow, store, TENANT, WF, clock=lambda: NOW)
    await p.execute_and_enqueue(Record(amount=1, remind_at=NOW + timedelta(hours=1)))
    for execute in (p.execute_and_enqueue, p.execute):
        with pytest.raises(WorkflowError, match=rf"returned {named} but no event") as info:
            await execute(Close())
        assert info.value.kind is WorkflowErrorKind.INVALID_STATE
    # Nothing was applied either: the reminder stands, the key and the journal are unwritten.
    assert [d.label for d in await store.deadlines_for_stream(p.stream_id)] == ["reminder"]
    assert await store.lookup(TENANT, "malo:51900000012") is None
    assert await store.journal(TENANT, "supply:51900000012") == []
    assert await p.event_count() == 1


async def test_execute_drops_outbox_and_execute_and_enqueue_persists_it(store: LmdbStore) -> None:
    p = new(store)
    await p.execute(Record(amount=1, notify="9900000001001", remind_at=NOW))
    assert await store.outbox_count() == 0
    assert await store.deadlines_for_stream(p.stream_id) == []
    events = await p.execute_and_enqueue(Record(amount=2, notify="9900000001001", remind_at=NOW))
    [message] = await store.pending(10, NOW)
    assert message.causation_event_id == events[0].event_id
    assert message.payload == {"total": 3}
    assert message.idempotency_key == str(message.message_id)
    [deadline] = await store.deadlines_for_stream(p.stream_id)
    assert deadline.label == "reminder" and deadline.causation_event_id == events[0].event_id


async def test_a_new_stream_is_written_from_the_initial_state_without_a_read(store: LmdbStore) -> None:
    p = new(store)
    ctx = p.context_for_inbound("9900000001001:REF1")
    events = await p._execute_and_enqueue_new(Record(amount=2, notify="9900000001001"), ctx)
    assert [e.sequence for e in events] == [1]
    assert events[0].correlation_id == ctx.correlation_id
    [message] = await store.pending(10, NOW)
    assert message.causation_event_id == events[0].event_id and message.payload == {"total": 2}
    # A stream that holds events meanwhile: the commit (expecting version 0) is refused whole.
    with pytest.raises(VersionConflict):
        await p._execute_and_enqueue_new(Record(amount=5, notify="9900000001001"), ctx)
    assert (await p.state()).total == 2
    assert await store.outbox_count() == 1


async def test_execute_and_collect_stamps_without_persisting(store: LmdbStore) -> None:
    p = new(store)
    events, outbox = await p.execute_and_collect(Record(amount=4, notify="9900000001001"))
    assert len(events) == 1 and len(outbox) == 1
    assert outbox[0].causation_event_id == events[0].event_id
    assert outbox[0].correlation_id == events[0].correlation_id
    assert await store.outbox_count() == 0
    assert await p.event_count() == 1


class _CommitHook(LmdbStore):
    """An LMDB store that runs ``before_commit`` (once) when a commit arrives."""

    before_commit = None

    async def commit(self, commit):  # type: ignore[no-untyped-def]
        hook, self.before_commit = self.before_commit, None
        if hook is not None:
            await hook()
        return await super().commit(commit)


async def test_conflict_between_two_handles(tmp_path: Path) -> None:
    async with _CommitHook(tmp_path / "db") as hooked:
        p = Process(Ledger(), hooked, TENANT, WF, clock=lambda: NOW)
        await p.execute(Record(amount=1))
        other = Process.from_identity(Ledger(), hooked, p.identity())

        async def other_commits_first() -> None:
            await other.execute(Record(amount=10))

        # p has loaded version 1 and decided; the other handle commits version 2 in between.
        hooked.before_commit = other_commits_first
        with pytest.raises(VersionConflict) as info:
            await p.execute_and_enqueue(Record(amount=5, notify="9900000001001"))
        assert (info.value.expected, info.value.actual) == (ExpectedVersion.exact(1), 2)
        assert [e.payload["amount"] for e in await hooked.load(p.stream_id)] == [1, 10]
        assert await hooked.outbox_count() == 0  # the loser wrote nothing, not even its outbox
        # With a retry the loser reloads (sees the other's event) and wins the second time.
        hooked.before_commit = other_commits_first
        events = await p.execute_with_retry(Record(amount=5), 2)
        assert events[0].sequence == 4
        assert (await p.state()).total == 1 + 10 + 10 + 5


class _ConflictOnce(LmdbStore):
    """An LMDB store whose next N commits lose a race to a concurrent writer first."""

    races = 0
    workflow_process: Process[Record | Close, LedgerState] | None = None

    async def commit(self, commit):  # type: ignore[no-untyped-def]
        if self.races > 0 and self.workflow_process is not None:
            self.races -= 1
            # A real concurrent writer appends between our load and our commit.
            await super().commit(
                type(commit)(
                    stream_id=commit.stream_id,
                    expected=commit.expected,
                    events=[commit.events[0].model_copy(update={"payload": {"amount": 100, "unit": "kWh"}})],
                )
            )
        return await super().commit(commit)


async def test_retry_rebuilds_state_every_attempt_and_succeeds(tmp_path: Path) -> None:
    async with _ConflictOnce(tmp_path) as racy:
        p = Process(Ledger(), racy, TENANT, WF)
        racy.workflow_process = p
        await p.execute(Record(amount=1))
        racy.races = 2
        events = await p.execute_with_retry(Record(amount=5, notify="x"), 3)
        assert events[0].sequence == 4
        assert (await p.state()).total == 1 + 100 + 100 + 5
        racy.races = 1
        with pytest.raises(VersionConflict):
            await p.execute_with_retry(Record(amount=1), 1)
        racy.races = 1
        ctx = p.context_for_inbound("9900000001001:REF1")
        events = await p.execute_with_retry_ctx(Record(amount=1), ctx, 2)
        assert events[0].correlation_id == ctx.correlation_id
        racy.races = 1
        enq = await p.execute_and_enqueue_with_retry(Record(amount=1, notify="9900000001001"), 2)
        [msg] = await racy.pending(10, datetime.now(UTC) + timedelta(seconds=5))
        assert msg.causation_event_id == enq[0].event_id


async def test_max_attempts_zero_fails(store: LmdbStore) -> None:
    p = new(store)
    with pytest.raises(InvalidArgument, match="max_attempts"):
        await p.execute_with_retry(Record(amount=1), 0)
    with pytest.raises(InvalidArgument):
        await p.execute_and_enqueue_with_snapshot_and_retry(Record(amount=1), 0)
    assert await p.event_count() == 0


class _CountingLedger(Ledger):
    handled = 0

    def handle(self, state: LedgerState, command: Record | Close) -> WorkflowOutput:
        self.handled += 1
        return super().handle(state, command)


async def test_retry_does_not_retry_workflow_errors(store: LmdbStore) -> None:
    workflow = _CountingLedger()
    p = Process(workflow, store, TENANT, WF, clock=lambda: NOW)
    await p.execute(Record(amount=1))
    handled, transactions = workflow.handled, store.stats.transactions
    with pytest.raises(WorkflowError) as info:
        await p.execute_with_retry(Record(amount=-5), 5)
    assert info.value.kind is WorkflowErrorKind.REJECTED
    assert workflow.handled - handled == 1  # decided once: a refusal is final, not retried
    assert store.stats.transactions == transactions
    assert await p.event_count() == 1


async def test_snapshots_take_use_and_ignore_other_schema_versions(store: LmdbStore) -> None:
    p = new(store)
    for n in range(10):
        await p.execute(Record(amount=n))
    assert not await p.take_snapshot(store, 0)
    assert await p.take_snapshot(store, 10)
    assert not await p.take_snapshot(store, 10)  # nothing new since
    snap = await store.load_snapshot(p.stream_id)
    assert snap is not None and snap.sequence == 10
    await p.execute(Record(amount=100))
    read_before = store.stats.events_read
    assert (await p.state_with_snapshot()).total == 145
    assert store.stats.events_read - read_before == 1  # only the tail
    # A snapshot of another state schema version is ignored: full replay.
    await store.save_snapshot(snap.model_copy(update={"state_schema_version": 99, "state": {"total": -1}}))
    read_before = store.stats.events_read
    assert (await p.state_with_snapshot()).total == 145
    assert store.stats.events_read - read_before == 11


async def test_take_snapshot_reads_from_the_last_snapshot_on(store: LmdbStore, tmp_path: Path) -> None:
    """Taking one reads the last snapshot and its tail, not the whole stream: before, every
    snapshot of a long stream folded it from its first event (quadratic over its life)."""
    async with LmdbStore(tmp_path / "snaps") as snaps:
        p = new(store)
        for n in range(20):
            await p.execute(Record(amount=n))
        for where in (store, snaps):
            assert await p.take_snapshot(where, 20)
        for n in range(5):
            await p.execute(Record(amount=n))
        for where in (store, snaps):
            read_before = store.stats.events_read
            assert await p.take_snapshot(where, 5)
            # the tail, the snapshot's own event (its id checked) and the last event (its id)
            assert store.stats.events_read - read_before <= 5 + 2
            snap = await where.load_snapshot(p.stream_id)
            assert snap is not None and snap.sequence == 25 and snap.state["total"] == sum(range(20)) + 10


async def test_execute_snapshot_variants(store: LmdbStore) -> None:
    p = new(store)
    for _ in range(3):
        events, taken = await p.execute_and_enqueue_with_snapshot(Record(amount=1), snapshot_interval=2)
    assert events[0].sequence == 3
    snap = await store.load_snapshot(p.stream_id)
    assert snap is not None and snap.sequence == 2 and snap.state["total"] == 2
    events, taken = await p.execute_and_enqueue_with_snapshot(Record(amount=1), snapshot_interval=2)
    assert taken
    read_before = store.stats.events_read
    await p.execute_snapshot(Record(amount=1))
    assert store.stats.events_read - read_before == 0  # snapshot at 4 is the whole state
    await p.execute_and_enqueue_snapshot(Record(amount=1, notify="9900000001001"))
    assert await store.outbox_count() == 1
    _, taken = await p.execute_and_enqueue_with_snapshot_and_retry(Record(amount=1), 2, snapshot_interval=0)
    assert not taken
    assert (await p.state()).total == 7


async def test_snapshot_in_a_separate_store(store: LmdbStore, tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "snaps") as snaps:
        p = new(store)
        _, taken = await p.execute_and_enqueue_with_snapshot(Record(amount=2), snaps, 1)
        assert taken
        assert await store.load_snapshot(p.stream_id) is None
        snap = await snaps.load_snapshot(p.stream_id)
        assert isinstance(snap, Snapshot) and snap.state["total"] == 2
        assert (await p.state_with_snapshot(snaps)).total == 2


async def test_a_snapshot_store_failing_after_the_commit_fails_no_command(store: LmdbStore) -> None:
    """The snapshot is written after the command's commit when it lives in another store. Its
    failure was raised (transient): the command was stored, and the retry the error invited
    applied it twice. A snapshot is a cache: the command returns, reporting none taken."""
    from mako_actors import StoreError

    class Failing(InMemoryStore):
        def __init__(self, error: Exception) -> None:
            super().__init__()
            self.error = error

        async def save_snapshot(self, snapshot: Snapshot) -> None:
            raise self.error

    p = new(store)
    for error in (StoreError("snapshot store: disk full", transient=True), OSError(28, "No space left")):
        snaps = Failing(error)
        _, taken = await p.execute_and_enqueue_with_snapshot(Record(amount=2), snaps, 1)
        assert not taken and await snaps.load_snapshot(p.stream_id) is None
    assert (await p.event_count(), (await p.state()).total) == (2, 4)


async def test_upcasting_an_old_event_version_on_load(store: LmdbStore) -> None:
    p = new(store)
    [event] = await p.execute(Record(amount=9))
    # Write a version-1 event as an old release of the code would have stored it.
    old = event.model_copy(update={"schema_version": 1, "payload": {"amount": 4}})
    await store.append(p.stream_id, ExpectedVersion.exact(1), [old])
    assert (await p.state()).total == 13


async def test_state_at(store: LmdbStore) -> None:
    p = new(store)
    for n in (1, 2, 3):
        await p.execute(Record(amount=n))
    assert (await p.state_at(0)).total == 0
    assert (await p.state_at(2)).total == 3
    assert (await p.state_at(3)).total == 6
    with pytest.raises(InvalidArgument, match="has 3 events"):
        await p.state_at(4)


async def test_execute_timeout_fires_compensation_atomically(store: LmdbStore) -> None:
    p = new(store)
    await p.execute_and_enqueue(Record(amount=1, remind_at=NOW))
    [deadline] = await store.due_deadlines(NOW, 10)
    events = await p.execute_timeout(deadline)
    assert events is not None and events[0].event_type == "ledger.closed"
    assert events[0].payload == {"reason": "timeout:reminder"}
    assert await store.due_deadlines(NOW, 10) == []
    # Closed now: on_deadline returns None, the deadline is just removed.
    stray = deadline.model_copy(update={"deadline_id": DeadlineId.new()})
    await store.register_deadline(stray)
    assert await p.execute_timeout_with_retry(stray, 2) is None
    assert await store.due_deadlines(NOW, 10) == []
    foreign = Deadline.model_validate({**stray.model_dump(), "stream_id": new(store).stream_id})
    with pytest.raises(InvalidArgument):
        await p.execute_timeout(foreign)


async def test_closing_cancels_deadlines_by_label(store: LmdbStore) -> None:
    p = new(store)
    await p.execute_and_enqueue(Record(amount=1, remind_at=NOW + timedelta(hours=1)))
    assert len(await store.deadlines_for_stream(p.stream_id)) == 1
    await p.execute_and_enqueue(Close())
    assert await store.deadlines_for_stream(p.stream_id) == []


async def test_register_keys_route_to_the_process(store: LmdbStore) -> None:
    p = new(store)
    await p.execute(Record(amount=1, register_key="malo:51900000012"))
    assert await store.lookup(TENANT, "malo:51900000012") == p.identity()
    rival = new(store)
    from mako_actors import RegistryConflict

    with pytest.raises(RegistryConflict):
        await rival.execute(Record(amount=1, register_key="malo:51900000012"))
    assert await rival.event_count() == 0


@pytest.mark.parametrize("kind", ["lmdb", "memory"])
async def test_two_concurrent_executes_on_one_stream_conflict_on_every_store(
    tmp_path: Path, kind: str
) -> None:
    async with LmdbStore(tmp_path / "db") if kind == "lmdb" else InMemoryStore() as any_store:
        p = Process(Ledger(), any_store, TENANT, WF, clock=lambda: NOW)
        q = Process.from_identity(Ledger(), any_store, p.identity())
        # Both load the empty stream before either commits: the second commit is stale.
        results = await asyncio.gather(
            p.execute(Record(amount=1)), q.execute(Record(amount=2)), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["VersionConflict", "list"]
        assert await p.event_count() == 1


async def test_concurrent_handles_with_retry_lose_nothing(store: LmdbStore) -> None:
    p = new(store)
    await p.execute(Record(amount=0))
    handles = [Process.from_identity(Ledger(), store, p.identity()) for _ in range(10)]
    await asyncio.gather(*(h.execute_with_retry(Record(amount=1), 50) for h in handles))
    events = await store.load(p.stream_id)
    assert [e.sequence for e in events] == list(range(1, 12))
    assert (await p.state()).total == 10


def test_a_workflow_defined_wrongly_is_refused_by_name() -> None:
    """A workflow without ``name``, with a name no ``WorkflowId`` takes, or with ``events`` that
    are no Event classes raised bare ``AttributeError``/``TypeError`` (or was taken, to fail at
    the first spawn)."""
    from pydantic import BaseModel

    from mako_actors import Event, LocalActorSystem, Workflow

    class Done(Event, type="test.done"):
        pass

    class Nameless(Workflow[BaseModel, BaseModel]):
        events = (Done,)

    class Spaced(Workflow[BaseModel, BaseModel]):
        name = "Bad Name"
        events = (Done,)

    store = InMemoryStore()
    with pytest.raises(InvalidArgument, match="workflow Nameless has no name"):
        Process(Nameless(), store, TenantId.from_party_id("9900000002009"), WorkflowId.new("x", "FV2510"))
    with pytest.raises(InvalidArgument, match="workflow Nameless has no name"):
        LocalActorSystem(store, [Nameless])
    with pytest.raises(InvalidArgument, match="workflow Spaced: name 'Bad Name' must be lower-case"):
        LocalActorSystem(store, [Spaced])
    with pytest.raises(InvalidArgument, match=r"events holds .*BaseModel.*, which is no Event class"):

        class NotEvents(Workflow[BaseModel, BaseModel]):
            name = "w"
            events = (BaseModel,)  # type: ignore[assignment]

    with pytest.raises(InvalidArgument, match="events must be a tuple of Event classes"):

        class OneEvent(Workflow[BaseModel, BaseModel]):
            name = "w"
            events = Done  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"map_size": -1}, "map_size must be a positive whole number"),
        ({"durability": "fsync-always"}, "durability 'fsync-always' is none of"),
    ],
)
def test_store_settings_it_cannot_open_with_are_refused(
    tmp_path: Path, setting: dict[str, Any], said: str
) -> None:
    """``map_size=-1`` raised ``OverflowError`` and an unknown durability ``ValueError``, neither
    one of the library's errors; nothing is created."""
    with pytest.raises(InvalidArgument, match=said):
        LmdbStore(tmp_path / "db", **setting)
    assert not (tmp_path / "db").exists()


async def test_collected_messages_are_what_enqueue_stores_and_unstorable_payloads_are_refused(
    store: LmdbStore,
) -> None:
    """``execute_and_collect`` returned the payload as the workflow built it (a set, a tuple,
    bytes, a datetime), the store keeps its JSON form; and a value with no JSON form was taken
    while deciding and failed only at the commit, as the store's own (operational) error."""
    from pydantic import BaseModel

    from mako_actors import Event, PendingOutbox, Workflow, WorkflowOutput

    class Sent(Event, type="test.sent"):
        pass

    class Send(BaseModel):
        payload: dict[str, Any]

    class Nothing(BaseModel):
        pass

    class Sender(Workflow[Send, Nothing]):
        name = "sender"
        events = (Sent,)

        def initial_state(self) -> Nothing:
            return Nothing()

        def handle(self, state: Nothing, command: Send) -> WorkflowOutput:
            message = PendingOutbox(message_type="NOTE", recipient="9900000001001", payload=command.payload)
            return WorkflowOutput(events=(Sent(),), outbox=(message,))

        def apply(self, state: Nothing, event: Event) -> Nothing:
            return state

    tenant = TenantId.from_party_id("9900000002009")
    p = Process(Sender(), store, tenant, WorkflowId.new("sender", "FV2510"))
    at = datetime(2025, 1, 1, tzinfo=UTC)
    payload = {"codes": {"Z01"}, "pair": (1, 2), "raw": b"ab", "at": at}
    _, [collected] = await p.execute_and_collect(Send(payload=payload))
    await p.execute_and_enqueue(Send(payload=payload))
    [stored] = await store.pending(10, datetime(2030, 1, 1, tzinfo=UTC))
    assert collected.payload == stored.payload == {
        "codes": ["Z01"], "pair": [1, 2], "raw": "ab", "at": "2025-01-01T00:00:00Z"
    }
    with pytest.raises(WorkflowError, match="no JSON form"):
        await p.execute_and_enqueue(Send(payload={"x": object()}))
    assert (await p.event_count(), await store.outbox_count()) == (2, 1)  # (collect stores its event)
