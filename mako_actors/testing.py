"""Test kit: the store contract suite every backend must pass (needs pytest).

Subclass ``StoreContract`` once per backend and implement ``open_store`` (and ``reopen`` if
the backend is durable); pytest collects every contract test for it::

    class TestMyStore(StoreContract):
        durable = True

        async def open_store(self, path: Path) -> Store:
            return MyStore(path)

The same test class runs against ``InMemoryStore`` and ``LmdbStore`` in this repository.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline
from mako_actors.envelope import EventEnvelope, ProcessIdentity
from mako_actors.errors import (
    InboxConflict,
    InvalidArgument,
    NotFound,
    RegistryConflict,
    VersionConflict,
)
from mako_actors.ids import (
    ConversationId,
    CorrelationId,
    DeadlineId,
    EventId,
    OutboxMessageId,
    StreamId,
    TenantId,
)
from mako_actors.outbox import OutboxMessage
from mako_actors.snapshot import Snapshot
from mako_actors.store import Commit, Store
from mako_actors.version import ExpectedVersion, WorkflowId

T0 = datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
WORKFLOW = WorkflowId.new("contract", "FV2510")
TENANT = TenantId.from_party_id("9900000002009")
OTHER_TENANT = TenantId.from_party_id("9900000001001")


def identity(tenant: TenantId = TENANT) -> ProcessIdentity:
    """A fresh process identity for contract tests."""
    return ProcessIdentity.new(tenant, WORKFLOW)


def envelope(ident: ProcessIdentity, n: int = 1, **payload: Any) -> EventEnvelope:
    """An event envelope with a placeholder sequence; the store assigns the real one."""
    return EventEnvelope(
        event_id=EventId.new(),
        stream_id=ident.stream_id,
        process_id=ident.process_id,
        tenant_id=ident.tenant_id,
        workflow_id=ident.workflow_id,
        sequence=n,
        event_type="contract.happened",
        schema_version=1,
        recorded_at=T0,
        correlation_id=CorrelationId.new(),
        conversation_id=ConversationId.new(),
        payload={"n": n, **payload},
    )


def outbox_row(ident: ProcessIdentity, cause: EventId, due: datetime, index: int = 0) -> OutboxMessage:
    """An outbox message due at ``due``, caused by ``cause``."""
    message_id = OutboxMessageId.for_event(cause, index)
    return OutboxMessage(
        message_id=message_id,
        idempotency_key=str(message_id),
        stream_id=ident.stream_id,
        process_id=ident.process_id,
        tenant_id=ident.tenant_id,
        causation_event_id=cause,
        correlation_id=CorrelationId.new(),
        conversation_id=ConversationId.new(),
        message_type="APERAK",
        recipient="9900000001001",
        payload={"i": index},
        created_at=T0,
        next_attempt_at=due,
    )


def deadline(ident: ProcessIdentity, label: str, due: datetime) -> Deadline:
    """A deadline of ``ident`` labelled ``label``, due at ``due``."""
    return Deadline(
        deadline_id=DeadlineId.new(),
        stream_id=ident.stream_id,
        process_id=ident.process_id,
        tenant_id=ident.tenant_id,
        workflow_id=ident.workflow_id,
        label=label,
        due_at=due,
    )


class StoreContract:
    """Behaviour every ``Store`` must show; subclass and implement ``open_store``."""

    durable: bool = False

    async def open_store(self, path: Path) -> Store:
        """A new (or, for durable backends, reopened) store rooted at ``path``."""
        raise NotImplementedError

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = await self.open_store(tmp_path / "store")
        yield store
        await store.aclose()

    # -- events ----------------------------------------------------------------------------

    async def test_append_assigns_sequences_in_order(self, store: Store) -> None:
        ident = identity()
        stored = await store.append(ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident, 7)])
        stored += await store.append(
            ident.stream_id, ExpectedVersion.exact(1), [envelope(ident, 8), envelope(ident, 9)]
        )
        loaded = await store.load(ident.stream_id)
        assert [e.sequence for e in loaded] == [1, 2, 3]
        assert [e.payload["n"] for e in loaded] == [7, 8, 9]
        assert [e.event_id for e in loaded] == [e.event_id for e in stored]

    async def test_conflict_writes_nothing_not_even_outbox_rows(self, store: Store) -> None:
        ident = identity()
        await store.append(ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident)])
        event = envelope(ident)
        commit = Commit(
            stream_id=ident.stream_id,
            expected=ExpectedVersion.NO_STREAM,
            events=[event, envelope(ident)],
            outbox=[outbox_row(ident, event.event_id, T0)],
            deadlines=[deadline(ident, "frist", T0)],
            registry=[("malo:51900000012", ident)],
        )
        with pytest.raises(VersionConflict) as info:
            await store.commit(commit)
        assert info.value.actual == 1
        assert await store.stream_version(ident.stream_id) == 1
        assert len(await store.load(ident.stream_id)) == 1
        assert await store.outbox_count() == 0
        assert await store.deadlines_for_stream(ident.stream_id) == []
        assert await store.lookup(TENANT, "malo:51900000012") is None

    async def test_expected_version_variants(self, store: Store) -> None:
        ident = identity()
        with pytest.raises(VersionConflict):
            await store.append(ident.stream_id, ExpectedVersion.exact(1), [envelope(ident)])
        await store.append(ident.stream_id, ExpectedVersion.ANY, [envelope(ident)])
        await store.append(ident.stream_id, ExpectedVersion.ANY, [envelope(ident)])
        with pytest.raises(VersionConflict):
            await store.append(ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident)])
        assert await store.stream_version(ident.stream_id) == 2

    async def test_atomic_multi_event_commit_with_everything(self, store: Store) -> None:
        ident = identity()
        first, second = envelope(ident, 1), envelope(ident, 2)
        snap = Snapshot(
            stream_id=ident.stream_id,
            sequence=2,
            state_schema_version=1,
            workflow_name="contract",
            state={"n": 2},
            taken_at=T0,
        )
        result = await store.commit(
            Commit(
                stream_id=ident.stream_id,
                expected=ExpectedVersion.NO_STREAM,
                events=[first, second],
                outbox=[outbox_row(ident, first.event_id, T0)],
                deadlines=[deadline(ident, "frist", T0 + timedelta(hours=1))],
                snapshot=snap,
                registry=[("tx:LFNTX1", ident)],
            )
        )
        assert result.version == 2
        assert [e.sequence for e in result.events] == [1, 2]
        assert await store.outbox_count() == 1
        assert [d.label for d in await store.deadlines_for_stream(ident.stream_id)] == ["frist"]
        assert await store.load_snapshot(ident.stream_id) == snap
        assert await store.lookup(TENANT, "tx:LFNTX1") == ident

    async def test_snapshot_must_match_the_version_after_the_commit(self, store: Store) -> None:
        ident = identity()
        snap = Snapshot(
            stream_id=ident.stream_id,
            sequence=5,
            state_schema_version=1,
            workflow_name="contract",
            state={},
            taken_at=T0,
        )
        with pytest.raises(InvalidArgument):
            await store.commit(
                Commit(
                    stream_id=ident.stream_id,
                    expected=ExpectedVersion.NO_STREAM,
                    events=[envelope(ident)],
                    snapshot=snap,
                )
            )
        assert await store.stream_version(ident.stream_id) == 0

    async def test_commit_many_fails_each_commit_alone(self, store: Store) -> None:
        good, bad = identity(), identity()
        await store.append(bad.stream_id, ExpectedVersion.NO_STREAM, [envelope(bad)])
        results = await store.commit_many(
            [
                Commit(stream_id=good.stream_id, expected=ExpectedVersion.NO_STREAM, events=[envelope(good)]),
                Commit(stream_id=bad.stream_id, expected=ExpectedVersion.NO_STREAM, events=[envelope(bad)]),
                Commit(stream_id=good.stream_id, expected=ExpectedVersion.exact(1), events=[envelope(good)]),
            ]
        )
        assert isinstance(results[1], VersionConflict)
        assert not isinstance(results[0], Exception) and results[0].version == 1
        assert not isinstance(results[2], Exception) and results[2].version == 2
        assert await store.stream_version(good.stream_id) == 2
        assert await store.stream_version(bad.stream_id) == 1

    async def test_commit_refuses_rows_of_another_stream_or_tenant(self, store: Store) -> None:
        mine, theirs = identity(), identity(OTHER_TENANT)
        their_deadline = deadline(theirs, "frist", T0)
        await store.register_deadline(their_deadline)
        forged = envelope(mine).model_copy(update={"tenant_id": OTHER_TENANT})
        foreign_process = envelope(mine).model_copy(update={"process_id": theirs.process_id})
        event = envelope(mine)
        snap = Snapshot(
            stream_id=theirs.stream_id, sequence=1, state_schema_version=1,
            workflow_name="contract", state={}, taken_at=T0,
        )
        bad_commits = {
            "event of another tenant": Commit(
                stream_id=mine.stream_id, expected=ExpectedVersion.ANY, events=[forged]
            ),
            "event of another process": Commit(
                stream_id=mine.stream_id, expected=ExpectedVersion.ANY, events=[event, foreign_process]
            ),
            "outbox row of another tenant": Commit(
                stream_id=mine.stream_id, expected=ExpectedVersion.ANY, events=[event],
                outbox=[outbox_row(theirs, event.event_id, T0)],
            ),
            "deadline of another tenant": Commit(
                stream_id=mine.stream_id, expected=ExpectedVersion.ANY, events=[event],
                deadlines=[deadline(theirs, "frist", T0)],
            ),
            "cancelling another stream's deadline": Commit(
                stream_id=mine.stream_id, expected=ExpectedVersion.ANY, events=[event],
                cancel_deadline_ids=[their_deadline.deadline_id],
            ),
            "snapshot of another stream": Commit(
                stream_id=mine.stream_id, expected=ExpectedVersion.ANY, events=[event], snapshot=snap,
            ),
            "registry entry for another stream": Commit(
                stream_id=mine.stream_id, expected=ExpectedVersion.ANY, events=[event],
                registry=[("malo:51900000012", theirs)],
            ),
            "another tenant's stream with no events": Commit(
                stream_id=theirs.stream_id, expected=ExpectedVersion.ANY,
                deadlines=[deadline(mine, "frist", T0)],
            ),
        }
        for what, commit in bad_commits.items():
            with pytest.raises(InvalidArgument):
                await store.commit(commit)
            assert await store.stream_version(mine.stream_id) == 0, what
        assert await store.stream_version(theirs.stream_id) == 0
        assert await store.outbox_count() == 0
        assert await store.deadlines_for_stream(mine.stream_id) == []
        assert [d.deadline_id for d in await store.deadlines_for_stream(theirs.stream_id)] == [
            their_deadline.deadline_id
        ]
        assert await store.load_snapshot(theirs.stream_id) is None
        assert await store.lookup(TENANT, "malo:51900000012") is None
        assert await store.lookup(OTHER_TENANT, "malo:51900000012") is None

    async def test_a_forged_identity_cannot_be_built(self, store: Store) -> None:
        mine, theirs = identity(), identity(OTHER_TENANT)
        with pytest.raises(InvalidArgument, match="is not the stream of process"):
            ProcessIdentity(
                stream_id=mine.stream_id, process_id=mine.process_id,
                tenant_id=OTHER_TENANT, workflow_id=WORKFLOW,
            )
        with pytest.raises(ValueError):  # pydantic's ValidationError, as for any bad field
            ProcessIdentity.model_validate({**theirs.to_plain(), "stream_id": str(mine.stream_id)})
        assert await store.lookup(OTHER_TENANT, "x") is None

    async def test_load_from_is_exclusive_and_upto_inclusive(self, store: Store) -> None:
        ident = identity()
        await store.append(
            ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident, n) for n in range(1, 6)]
        )
        assert [e.sequence for e in await store.load_from(ident.stream_id, 2)] == [3, 4, 5]
        assert [e.sequence for e in await store.load_from(ident.stream_id, 1, upto=3)] == [2, 3]
        assert await store.load_from(ident.stream_id, 5) == []
        with pytest.raises(InvalidArgument):
            await store.load_from(ident.stream_id, -1)

    async def test_stream_version_reads_no_events(self, store: Store) -> None:
        ident = identity()
        await store.append(
            ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident, n) for n in range(50)]
        )
        before = store.stats.events_read
        assert await store.stream_version(ident.stream_id) == 50
        assert store.stats.events_read == before
        assert await store.stream_version(identity().stream_id) == 0

    async def test_streams_do_not_bleed_into_each_other(self, store: Store) -> None:
        a, b = identity(), identity()
        await store.append(a.stream_id, ExpectedVersion.NO_STREAM, [envelope(a, 1)])
        await store.append(b.stream_id, ExpectedVersion.NO_STREAM, [envelope(b, 2), envelope(b, 3)])
        assert [e.payload["n"] for e in await store.load(a.stream_id)] == [1]
        assert [e.payload["n"] for e in await store.load(b.stream_id)] == [2, 3]

    async def test_list_streams_by_tenant_prefix(self, store: Store) -> None:
        mine = [identity() for _ in range(3)]
        theirs = identity(OTHER_TENANT)
        for ident in [*mine, theirs]:
            await store.append(ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident)])
        listed = await store.list_streams(StreamId.tenant_prefix(TENANT))
        assert listed == sorted(i.stream_id for i in mine)
        assert len(await store.list_streams()) == 4

    async def test_read_all_in_global_commit_order(self, store: Store) -> None:
        a, b = identity(), identity()
        await store.append(a.stream_id, ExpectedVersion.NO_STREAM, [envelope(a, 1)])
        await store.append(b.stream_id, ExpectedVersion.NO_STREAM, [envelope(b, 2)])
        await store.append(a.stream_id, ExpectedVersion.exact(1), [envelope(a, 3), envelope(a, 4)])
        everything = await store.read_all()
        assert [e.payload["n"] for e in everything] == [1, 2, 3, 4]
        assert [e.global_position for e in everything] == [1, 2, 3, 4]
        page = await store.read_all(after_position=1, limit=2)
        assert [e.payload["n"] for e in page] == [2, 3]

    # -- outbox ----------------------------------------------------------------------------

    async def test_outbox_due_order_acknowledge_and_reschedule(self, store: Store) -> None:
        ident = identity()
        cause = EventId.new()
        late = outbox_row(ident, cause, T0 + timedelta(minutes=30), 0)
        early = outbox_row(ident, cause, T0 + timedelta(minutes=5), 1)
        future = outbox_row(ident, cause, T0 + timedelta(days=1), 2)
        await store.enqueue([late, early, future])
        due = await store.pending(10, T0 + timedelta(hours=1))
        assert [m.message_id for m in due] == [early.message_id, late.message_id]
        assert [m.message_id for m in await store.pending(1, T0 + timedelta(hours=1))] == [early.message_id]
        moved = await store.reschedule(early.message_id, T0 + timedelta(hours=2), "timeout")
        assert moved.attempts == 1 and moved.last_error == "timeout"
        assert [m.message_id for m in await store.pending(10, T0 + timedelta(hours=1))] == [late.message_id]
        assert await store.acknowledge(late.message_id)
        assert not await store.acknowledge(late.message_id)
        assert await store.outbox_count() == 2
        with pytest.raises(NotFound):
            await store.reschedule(late.message_id, T0)

    async def test_enqueue_is_idempotent_per_message_id(self, store: Store) -> None:
        row = outbox_row(identity(), EventId.new(), T0)
        await store.enqueue([row])
        await store.enqueue([row])
        assert await store.outbox_count() == 1
        assert len(await store.pending(10, T0)) == 1

    async def test_equal_due_times_come_back_in_enqueue_order(self, store: Store) -> None:
        ident = identity()
        event = envelope(ident)
        rows = [outbox_row(ident, event.event_id, T0, index) for index in range(12)]
        await store.commit(
            Commit(stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM, events=[event], outbox=rows)
        )
        later = [outbox_row(ident, EventId.new(), T0, index) for index in range(5)]
        await store.enqueue(later)
        due = await store.pending(100, T0)
        assert [m.payload["i"] for m in due] == list(range(12)) + list(range(5))
        assert [m.message_id for m in due] == [m.message_id for m in rows + later]
        assert [m.message_id for m in await store.pending(3, T0)] == [m.message_id for m in rows[:3]]
        # A rescheduled message keeps its place among those due at its new time.
        await store.reschedule(rows[0].message_id, T0 + timedelta(minutes=1))
        await store.reschedule(rows[5].message_id, T0 + timedelta(minutes=1))
        due = await store.pending(100, T0 + timedelta(minutes=1))
        assert [m.message_id for m in due[-2:]] == [rows[0].message_id, rows[5].message_id]

    async def test_re_enqueueing_a_message_keeps_its_attempts_and_schedule(self, store: Store) -> None:
        row = outbox_row(identity(), EventId.new(), T0)
        await store.enqueue([row])
        moved = await store.reschedule(row.message_id, T0 + timedelta(hours=1), "timeout")
        await store.enqueue([row])  # the same message again, as first stamped (attempts 0, due T0)
        assert await store.outbox_count() == 1
        assert await store.pending(10, T0) == []
        [again] = await store.pending(10, T0 + timedelta(hours=1))
        assert (again.attempts, again.last_error) == (1, "timeout")
        assert again.next_attempt_at == moved.next_attempt_at
        assert await store.acknowledge(row.message_id)
        assert await store.pending(10, T0 + timedelta(days=1)) == []

    async def test_naive_datetimes_are_refused(self, store: Store) -> None:
        row = outbox_row(identity(), EventId.new(), T0)
        await store.enqueue([row])
        naive = datetime(2025, 6, 5, 14, 30)
        with pytest.raises(InvalidArgument, match="naive"):
            await store.pending(10, naive)
        with pytest.raises(InvalidArgument, match="naive"):
            await store.reschedule(row.message_id, naive)
        with pytest.raises(InvalidArgument, match="naive"):
            await store.due_deadlines(naive, 10)
        [unchanged] = await store.pending(10, T0)
        assert unchanged.attempts == 0 and unchanged.next_attempt_at == T0

    # -- deadlines -------------------------------------------------------------------------

    async def test_deadlines_due_in_time_order_and_cancel(self, store: Store) -> None:
        a, b = identity(), identity()
        d1 = deadline(a, "09:00", T0 + timedelta(hours=2))
        d2 = deadline(b, "07:00", T0 + timedelta(hours=1))
        d3 = deadline(a, "11:00", T0 + timedelta(hours=4))
        for d in (d1, d2, d3):
            await store.register_deadline(d)
        due = await store.due_deadlines(T0 + timedelta(hours=3), 10)
        assert [d.deadline_id for d in due] == [d2.deadline_id, d1.deadline_id]
        assert [d.label for d in await store.deadlines_for_stream(a.stream_id)] == ["09:00", "11:00"]
        assert await store.cancel_deadline(d1.deadline_id)
        assert not await store.cancel_deadline(d1.deadline_id)
        assert [d.deadline_id for d in await store.due_deadlines(T0 + timedelta(hours=5), 10)] == [
            d2.deadline_id,
            d3.deadline_id,
        ]

    async def test_dead_lettering_a_deadline_moves_it_whole(self, store: Store) -> None:
        ident = identity()
        given_up, other = deadline(ident, "lfa-answer", T0), deadline(ident, "aperak", T0)
        for d in (given_up, other):
            await store.register_deadline(d)
        letter = await store.dead_letter_deadline(given_up.deadline_id, "compensation refused", T0)
        assert (letter.kind, letter.reason, letter.position) == ("deadline", "compensation refused", 1)
        assert Deadline.from_plain(letter.payload) == given_up  # the row as stored
        assert await store.dead_letters() == [letter]
        assert await store.deadlines_for_stream(ident.stream_id) == [other]
        assert [d.deadline_id for d in await store.due_deadlines(T0, 10)] == [other.deadline_id]
        with pytest.raises(NotFound):  # gone (fired or cancelled meanwhile): nothing written
            await store.dead_letter_deadline(given_up.deadline_id, "again", T0)
        assert await store.dead_letters() == [letter]

    async def test_commit_cancels_deadlines_by_label_before_setting_new_ones(self, store: Store) -> None:
        ident = identity()
        await store.register_deadline(deadline(ident, "lfa-answer", T0))
        await store.register_deadline(deadline(ident, "aperak", T0))
        await store.commit(
            Commit(
                stream_id=ident.stream_id,
                expected=ExpectedVersion.NO_STREAM,
                events=[envelope(ident)],
                cancel_deadline_labels=["lfa-answer"],
                deadlines=[deadline(ident, "lfa-answer", T0 + timedelta(days=1))],
            )
        )
        left = await store.deadlines_for_stream(ident.stream_id)
        assert sorted((d.label, d.due_at) for d in left) == [
            ("aperak", T0),
            ("lfa-answer", T0 + timedelta(days=1)),
        ]

    # -- snapshots, registry, inbox, dead letters, checkpoints -----------------------------

    async def test_snapshot_replaces_previous(self, store: Store) -> None:
        ident = identity()
        assert await store.load_snapshot(ident.stream_id) is None
        for seq in (10, 20):
            await store.save_snapshot(
                Snapshot(
                    stream_id=ident.stream_id,
                    sequence=seq,
                    state_schema_version=1,
                    workflow_name="contract",
                    state={"seq": seq},
                    taken_at=T0,
                )
            )
        snap = await store.load_snapshot(ident.stream_id)
        assert snap is not None and snap.sequence == 20 and snap.state == {"seq": 20}

    async def test_registry_is_tenant_scoped_and_refuses_rebinding(self, store: Store) -> None:
        mine, theirs = identity(), identity(OTHER_TENANT)
        await store.register(TENANT, "malo:51900000012", mine)
        await store.register(OTHER_TENANT, "malo:51900000012", theirs)
        assert await store.lookup(TENANT, "malo:51900000012") == mine
        assert await store.lookup(OTHER_TENANT, "malo:51900000012") == theirs
        await store.register(TENANT, "malo:51900000012", mine)  # same binding: a no-op
        with pytest.raises(RegistryConflict):
            await store.register(TENANT, "malo:51900000012", identity())
        with pytest.raises(InvalidArgument):
            await store.register(TENANT, "x", theirs)
        assert await store.lookup(TENANT, "unknown") is None

    async def test_inbox_accepts_a_key_once_and_flags_changed_content(self, store: Store) -> None:
        key = f"{TENANT}:9900000001001:LFN0605143001"
        assert await store.accept(key, "sha256:aa")
        assert not await store.accept(key, "sha256:aa")
        with pytest.raises(InboxConflict):
            await store.accept(key, "sha256:bb")

    async def test_dead_letters_keep_order(self, store: Store) -> None:
        for reason in ("unknown PID 12345", "max attempts"):
            await store.add_dead_letter(DeadLetter(kind="inbound", reason=reason, recorded_at=T0))
        letters = await store.dead_letters()
        assert [(d.position, d.reason) for d in letters] == [(1, "unknown PID 12345"), (2, "max attempts")]
        assert [d.reason for d in await store.dead_letters(after_position=1)] == ["max attempts"]

    async def test_dead_lettering_an_outbox_message_moves_it_whole(self, store: Store) -> None:
        ident = identity()
        row, other = (outbox_row(ident, EventId.new(), T0, index) for index in range(2))
        await store.enqueue([row, other])
        moved = await store.reschedule(row.message_id, T0 + timedelta(minutes=1), "timeout")
        letter = await store.dead_letter_outbox(row.message_id, "8 attempts", T0)
        assert (letter.kind, letter.reason, letter.position) == ("outbox", "8 attempts", 1)
        assert OutboxMessage.from_plain(letter.payload) == moved  # the row as stored
        assert await store.dead_letters() == [letter]
        assert [m.message_id for m in await store.pending(10, T0 + timedelta(days=1))] == [other.message_id]
        with pytest.raises(NotFound):  # gone (another worker took it): nothing written
            await store.dead_letter_outbox(row.message_id, "again", T0)
        assert await store.dead_letters() == [letter] and await store.outbox_count() == 1

    async def test_checkpoints(self, store: Store) -> None:
        assert await store.load_checkpoint("malo-index") == 0
        await store.save_checkpoint("malo-index", 42)
        assert await store.load_checkpoint("malo-index") == 42

    async def test_a_checkpoint_keeps_the_state_saved_with_it_and_no_older_one(self, store: Store) -> None:
        assert await store.load_checkpoint_state("queue") == (0, None)
        await store.save_checkpoint("queue", 7, {"waiting": ["a", "b"], "n": 2})
        assert await store.load_checkpoint_state("queue") == (7, {"waiting": ["a", "b"], "n": 2})
        assert await store.load_checkpoint("queue") == 7
        await store.save_checkpoint("queue", 9)  # without a state: the older one is gone
        assert await store.load_checkpoint_state("queue") == (9, None)
        for name, state in (("", None), ("a\x00b", None), ("queue", {"bad": object()})):
            with pytest.raises(InvalidArgument):
                await store.save_checkpoint(name, 10, state)
        assert await store.load_checkpoint_state("queue") == (9, None)  # nothing written

    # -- durability ------------------------------------------------------------------------

    async def test_reopen_after_close_keeps_everything(self, tmp_path: Path) -> None:
        if not self.durable:
            pytest.skip("backend keeps nothing across close")
        path = tmp_path / "durable"
        store = await self.open_store(path)
        ident = identity()
        first = envelope(ident)
        await store.commit(
            Commit(
                stream_id=ident.stream_id,
                expected=ExpectedVersion.NO_STREAM,
                events=[first, envelope(ident)],
                outbox=[outbox_row(ident, first.event_id, T0)],
                deadlines=[deadline(ident, "frist", T0)],
                registry=[("conv:" + uuid.uuid4().hex, ident)],
            )
        )
        await store.accept("inbox-key", "d")
        await store.save_checkpoint("p", 2, ["waiting"])
        await store.aclose()
        reopened = await self.open_store(path)
        try:
            assert [e.sequence for e in await reopened.load(ident.stream_id)] == [1, 2]
            assert await reopened.stream_version(ident.stream_id) == 2
            assert await reopened.outbox_count() == 1
            assert len(await reopened.due_deadlines(T0, 10)) == 1
            assert not await reopened.accept("inbox-key", "d")
            assert await reopened.load_checkpoint_state("p") == (2, ["waiting"])
            assert [e.global_position for e in await reopened.read_all()] == [1, 2]
        finally:
            await reopened.aclose()
