"""The command path's unvalidated builders produce exactly what validation would.

``_command.prepare`` builds outbox rows and ``CommandContext.new`` builds contexts without
pydantic validation, and ``OutboxMessage.to_plain`` is written out by hand; each must equal
the validated / ``model_dump`` result, or stored data would drift from the declared models.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mako_actors import (
    CommandContext,
    CorrelationId,
    DeadlineId,
    EventEnvelope,
    EventId,
    InvalidArgument,
    OutboxMessage,
    OutboxMessageId,
    PendingOutbox,
    Process,
    ProcessId,
    ProcessIdentity,
    TenantId,
    WorkflowError,
    WorkflowId,
    WorkflowOutput,
    ids,
)
from mako_actors._command import CommandOptions, prepare
from stores.lmdb import LmdbStore
from tests.workflows import Ledger, LedgerState, Record, Recorded

TENANT = TenantId.from_party_id("9900000002009")
IDENTITY = ProcessIdentity.new(TENANT, WorkflowId.new("ledger", "FV2510"))
NOW = datetime(2025, 6, 5, 12, 30, 0, 250_000, tzinfo=UTC)


def _stamp(*pending: PendingOutbox, now: datetime = NOW) -> tuple[OutboxMessage, ...]:
    output = WorkflowOutput.of(Recorded(amount=1, unit="kWh")).with_outbox(*pending)
    ctx = CommandContext.new(IDENTITY.tenant_id, IDENTITY.process_id, IDENTITY.workflow_id)
    prepared = prepare(
        Ledger(), IDENTITY, LedgerState(), 0, output, ctx, now, CommandOptions(enqueue=True)
    )
    assert prepared.commit is not None and tuple(prepared.commit.outbox) == prepared.outbox
    return prepared.outbox


def test_derived_ids_keep_their_events_time_stamp_and_hash_the_rest() -> None:
    for _ in range(50):
        cause = EventId.new()
        for index in (0, 1, 7, 12345):
            pairs = ((OutboxMessageId, ids._OUTBOX_NAMESPACE), (DeadlineId, ids._DEADLINE_NAMESPACE))
            for cls, namespace in pairs:
                fast = cls.for_event(cause, index)
                v5 = uuid.uuid5(namespace, f"{cause}:{index}")
                # The event's 48-bit time stamp, then the uuid5's bits but for version 8.
                expected = uuid.UUID(int=(cause.int >> 80 << 80) | (v5.int & ((1 << 80) - 1)))
                expected = uuid.UUID(int=(expected.int & ~(0xF << 76)) | (8 << 76))
                assert fast == expected and str(fast) == str(expected)
                assert type(fast) is cls and fast.version == 8 and fast.variant == uuid.RFC_4122
                assert cls.for_event(EventId(str(cause)), index) == fast  # the same everywhere


def test_ids_made_later_sort_after_earlier_ones_and_so_do_their_rows() -> None:
    """Fresh ids begin with their millisecond; stores rely on it for append-mostly B-trees."""
    ids._forget_pool()
    pool = [EventId.new() for _ in range(ids._POOL_IDS)]  # one whole pool, made now
    assert pool == sorted(pool) and len(set(pool)) == len(pool)
    time.sleep(0.002)
    ids._forget_pool()  # the next id comes from a pool made a millisecond later
    later = EventId.new()
    assert all(each < later for each in pool)
    for cls in (OutboxMessageId, DeadlineId):
        assert all(cls.for_event(each, 3) < cls.for_event(later, 0) for each in pool)


def test_stamped_outbox_rows_equal_validated_ones() -> None:
    berlin = timezone(timedelta(hours=2))
    rows = _stamp(
        PendingOutbox(message_type="APERAK", recipient="9900000000010", payload={"a": [1, "x"]}),
        PendingOutbox(
            message_type="UTILMD",
            recipient="9900000000011",
            payload={},
            not_before=datetime(2025, 6, 6, 9, 0, tzinfo=berlin),
        ),
        now=NOW.astimezone(berlin),  # a non-UTC clock: stored as UTC all the same
    )
    assert [r.message_id for r in rows] == [
        OutboxMessageId.for_event(rows[0].causation_event_id, i) for i in range(2)
    ]
    for row in rows:
        validated = OutboxMessage.model_validate(row.model_dump())
        assert validated == row
        assert row.created_at.tzinfo is UTC and row.next_attempt_at.tzinfo is UTC
        assert row.model_fields_set == validated.model_fields_set
    assert rows[0].next_attempt_at == NOW
    assert rows[1].next_attempt_at == datetime(2025, 6, 6, 7, 0, tzinfo=UTC)
    # Kept, so its age counts from then (a delayed message is not "too old" at its first try).
    assert rows[1].not_before == rows[1].due_since == datetime(2025, 6, 6, 7, 0, tzinfo=UTC)
    assert rows[0].not_before is None and rows[0].due_since == rows[0].created_at


def test_outbox_to_plain_equals_model_dump() -> None:
    (row,) = _stamp(PendingOutbox(message_type="APERAK", recipient="x", payload={"n": 1.5, "k": None}))
    assert row.to_plain() == row.model_dump(mode="json")
    assert list(row.to_plain()) == list(row.model_dump(mode="json"))
    later = row.model_copy(update={"attempts": 3, "last_error": "timeout"})
    assert later.to_plain() == later.model_dump(mode="json")
    whole_seconds = row.model_copy(update={"created_at": datetime(2025, 1, 1, tzinfo=UTC)})
    assert whole_seconds.to_plain() == whole_seconds.model_dump(mode="json")
    assert OutboxMessage.from_plain(row.to_plain()) == row
    delayed = row.model_copy(update={"not_before": datetime(2025, 6, 6, 9, 0, 0, 250, tzinfo=UTC)})
    assert list(delayed.to_plain().items()) == list(delayed.model_dump(mode="json").items())
    assert OutboxMessage.from_plain(delayed.to_plain()) == delayed
    old_row = {k: v for k, v in row.to_plain().items() if k != "not_before"}  # stored before it was kept
    assert OutboxMessage.from_plain(old_row).due_since == row.created_at


def test_command_context_new_equals_a_validated_context() -> None:
    ctx = CommandContext.new(IDENTITY.tenant_id, IDENTITY.process_id, IDENTITY.workflow_id)
    validated = CommandContext.model_validate(ctx.model_dump())
    assert validated == ctx and validated.model_fields_set == ctx.model_fields_set
    assert ctx.with_causation(EventId.new()).causation_id is not None


@pytest.mark.parametrize("made", ["new", "validated", "without_causation"])
def test_command_context_copies_equal_validated_contexts_and_model_copy(made: str) -> None:
    ctx = CommandContext.new(IDENTITY.tenant_id, IDENTITY.process_id, IDENTITY.workflow_id)
    if made == "validated":
        ctx = CommandContext.model_validate(ctx.model_dump())
    elif made == "without_causation":  # fields-set without ``causation_id`` (its default)
        ctx = CommandContext(**ctx.model_dump(exclude={"causation_id"}))
    before = ctx.model_dump()
    cause = EventId.new()
    correlation, conversation = ids.CorrelationId.new(), ids.ConversationId.new()
    copies = {
        "causation_id": (ctx.with_causation(cause), ids.CausationId(cause)),
        "correlation_id": (ctx.with_correlation(correlation), correlation),
        "conversation_id": (ctx.with_conversation(conversation), conversation),
    }
    for name, (copy, value) in copies.items():
        validated = CommandContext.model_validate({**before, name: value})
        assert copy == validated and copy.model_dump() == validated.model_dump()
        assert type(getattr(copy, name)) is type(getattr(validated, name))
        assert copy.model_dump(mode="json") == validated.model_dump(mode="json")
        reference = ctx.model_copy(update={name: value})
        assert copy == reference and copy.model_fields_set == reference.model_fields_set
        assert name in copy.model_fields_set
    assert ctx.model_dump() == before  # the original is unchanged
    chained = ctx.with_causation(cause).with_correlation(correlation).with_conversation(conversation)
    assert chained == CommandContext.model_validate(
        {**before, "causation_id": cause, "correlation_id": correlation, "conversation_id": conversation}
    )


def _placeholders() -> tuple[EventEnvelope, ...]:
    ctx = CommandContext.new(IDENTITY.tenant_id, IDENTITY.process_id, IDENTITY.workflow_id)
    output = WorkflowOutput.of(Recorded(amount=1, unit="kWh"), Recorded(amount=2, unit="kWh"))
    prepared = prepare(Ledger(), IDENTITY, LedgerState(), 0, output, ctx, NOW, CommandOptions())
    return prepared.events


def test_placeholder_envelopes_equal_validated_ones_before_and_after_stamping() -> None:
    for envelope in _placeholders():
        validated = EventEnvelope.model_validate(envelope.model_dump())
        assert validated == envelope and envelope.to_plain() == envelope.model_dump(mode="json")
        stamped = envelope.stamped(envelope.sequence, 41)
        assert (stamped.sequence, stamped.global_position) == (envelope.sequence, 41)
        assert stamped.to_plain() == stamped.model_dump(mode="json")
        assert stamped.model_fields_set == set(EventEnvelope.model_fields)
        # A second stamping (a batch re-run after an abort) takes the new values.
        again = stamped.stamped(envelope.sequence, 42)
        assert again.global_position == 42 and again.to_plain() == again.model_dump(mode="json")


def test_stamping_never_changes_an_envelope_built_outside_the_engine() -> None:
    built = EventEnvelope.model_validate(_placeholders()[0].model_dump())
    stamped = built.stamped(7, 99)
    assert (built.sequence, built.global_position) == (1, 0)
    assert (stamped.sequence, stamped.global_position) == (7, 99) and stamped is not built
    with_datetime = built.model_copy(update={"payload": {"at": NOW}})
    assert with_datetime.stamped(1, 1).to_plain()["payload"] == {"at": "2025-06-05T12:30:00.250000Z"}


async def test_stored_events_of_the_command_path_equal_their_reload(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "store") as store:
        process = Process(Ledger(), store, TENANT, IDENTITY.workflow_id)
        first = await process.execute(Record(amount=1))
        second = await process.execute(Record(amount=2))
        loaded = await store.load(process.stream_id)
        assert [e.global_position for e in first + second] == [1, 2]
        assert loaded == first + second


def test_an_identity_of_typed_ids_equals_a_validated_one() -> None:
    process_id = ProcessId.new()
    fast = ProcessIdentity.of_process(TENANT, process_id, IDENTITY.workflow_id)
    validated = ProcessIdentity.model_validate(fast.model_dump())
    assert fast == validated and fast.model_fields_set == validated.model_fields_set
    assert type(fast.stream_id) is type(validated.stream_id) and fast.to_plain() == validated.to_plain()
    # Untyped arguments still go through validation (and its errors).
    with pytest.raises(InvalidArgument):
        ProcessIdentity.of_process(TENANT, "not-a-uuid", IDENTITY.workflow_id)  # type: ignore[arg-type]


def test_identity_to_plain_equals_model_dump() -> None:
    decoded = ProcessIdentity.model_validate(IDENTITY.to_plain())  # its own WorkflowId object
    for identity in (IDENTITY, decoded, ProcessIdentity.new(TENANT, WorkflowId.new("ledger", "FV2604"))):
        assert identity.to_plain() == identity.model_dump(mode="json")
        assert list(identity.to_plain()) == list(identity.model_dump(mode="json"))
        assert all(type(value) is str for value in identity.to_plain().values())
    assert decoded.to_plain()["workflow_id"] == "ledger@FV2025-10-01"


def test_random_and_derived_ids_are_what_uuid_makes() -> None:
    made = [EventId.new() for _ in range(600)]  # more than one pool of ready ids
    assert len({event_id.int for event_id in made}) == len(made)
    for event_id in made:
        reference = uuid.UUID(int=event_id.int)
        assert reference.version == 7 and reference.variant == uuid.RFC_4122
        assert str(event_id) == str(reference) and repr(event_id) == f"EventId('{reference}')"
        assert EventId(str(event_id)) == event_id and EventId(str(event_id).upper()) == event_id
    assert TenantId.from_party_id("9900000002009") == uuid.uuid5(ids._TENANT_NAMESPACE, "9900000002009")
    ref = "9900000001001:LFN0605143001"
    correlation = CorrelationId.from_interchange_ref(ref)
    assert str(correlation) == str(uuid.uuid5(ids._CORRELATION_NAMESPACE, ref))
    assert type(correlation) is CorrelationId


def test_iso_utc_writes_what_pydantic_writes() -> None:
    from pydantic import TypeAdapter

    from mako_actors.envelope import iso_utc

    json_of = TypeAdapter(datetime).dump_python
    start = datetime(2025, 10, 25, 23, 59, 58, tzinfo=UTC)
    instants = [start + timedelta(microseconds=137_713 * k) for k in range(40)]
    instants += [start.replace(year=1, microsecond=0), start.replace(year=999)]
    instants += [start.astimezone(timezone(timedelta(hours=2)))]  # not UTC: isoformat with its offset
    instants += [datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)]
    for instant in instants + instants[::-1]:  # repeated seconds and instants hit the caches
        assert iso_utc(instant) == json_of(instant, mode="json")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_an_outbox_payload_with_a_non_finite_number_is_refused_by_its_path(bad: float) -> None:
    with pytest.raises(ValueError, match=r"payload\['rows'\]\[1\]\['amount'\] is .*finite numbers only"):
        PendingOutbox(message_type="X", recipient="r", payload={"rows": [{"amount": 1.0}, {"amount": bad}]})


def test_a_non_finite_number_inside_a_set_or_a_nested_model_is_refused_too() -> None:
    """The check walked dicts, lists and tuples only: a NaN in a set or in a nested model was
    stored. It now checks the payload's JSON form."""
    from pydantic import BaseModel

    class Reading(BaseModel):
        value: float

    for payload in ({"s": frozenset({math.inf})}, {"m": Reading(value=math.nan)}):
        with pytest.raises(ValueError, match="finite numbers only"):
            PendingOutbox(message_type="X", recipient="r", payload=payload)


async def test_a_command_whose_outbox_payload_holds_nan_writes_nothing(tmp_path: Path) -> None:
    class NanLedger(Ledger):
        def handle(self, state: LedgerState, command: Any) -> WorkflowOutput:
            out = WorkflowOutput.of(Recorded(amount=command.amount, unit="kWh"))
            return out.with_outbox(PendingOutbox(message_type="X", recipient="r", payload={"v": math.nan}))

    async with LmdbStore(tmp_path / "store") as store:
        process = Process(NanLedger(), store, TENANT, IDENTITY.workflow_id)
        before = await store.table_counts()  # a new store's only row: its format
        with pytest.raises(WorkflowError, match=r"payload\['v'\] is nan: .*finite numbers only"):
            await process.execute(Record(amount=1))
        assert await store.table_counts() == before and sum(before.values()) == 1


def test_plain_payload_rows_store_what_validated_rows_store() -> None:
    payload = {"a": [1, "x", {"b": None, "c": True}], "d": {}}
    marked = PendingOutbox.of_plain("APERAK", "9900000000010", payload)
    assert marked == PendingOutbox(message_type="APERAK", recipient="9900000000010", payload=payload)
    assert marked.model_fields_set == PendingOutbox.model_validate(marked.model_dump()).model_fields_set
    (row,) = _stamp(marked)
    (checked,) = _stamp(PendingOutbox(message_type="APERAK", recipient="9900000000010", payload=payload))
    assert row.payload is payload and row.model_fields_set == checked.model_fields_set
    plain = row.to_plain()
    assert plain == row.model_dump(mode="json") and list(plain) == list(row.model_dump(mode="json"))
    assert plain["payload"] == checked.to_plain()["payload"] and list(plain) == list(checked.to_plain())
    later = row.model_copy(update={"attempts": 2})  # a copy loses the mark: checked again
    assert later.to_plain() == later.model_dump(mode="json")


def test_prepare_builds_plain_commits() -> None:
    """``prepare``'s commit builder (slots filled, then ``__class__``) makes ordinary ``Commit``s."""
    import pickle

    from mako_actors.store import Commit

    identity = ProcessIdentity.new(
        TenantId.from_party_id("9900000000003"), WorkflowId.new("ledger", "FV2025-10-01")
    )
    output = WorkflowOutput.of(Recorded(amount=1, unit="kWh")).with_outbox(
        PendingOutbox(message_type="NOTICE", recipient="9900000000010", payload={"total": 1})
    )
    now = datetime(2025, 10, 1, 12, tzinfo=UTC)
    prepared = prepare(
        Ledger(), identity, LedgerState(), 0, output, None, now, CommandOptions(enqueue=True)
    )
    commit = prepared.commit
    assert type(commit) is Commit
    assert commit == Commit(
        stream_id=identity.stream_id,
        expected=commit.expected,
        events=prepared.events,
        outbox=prepared.outbox,
    )
    assert pickle.loads(pickle.dumps(commit)) == commit
    with pytest.raises(AttributeError):  # still frozen
        commit.stream_id = identity.stream_id  # type: ignore[misc]


class _CountingLedger(Ledger):
    """``Ledger`` counting its ``apply`` calls."""

    def __init__(self) -> None:
        self.applied = 0

    def apply(self, state: LedgerState, event: Any) -> LedgerState:
        self.applied += 1
        return super().apply(state, event)


def test_a_command_without_fold_stores_the_same_and_applies_nothing() -> None:
    output = WorkflowOutput.of(Recorded(amount=1, unit="kWh"), Recorded(amount=2, unit="kWh")).with_outbox(
        PendingOutbox(message_type="X", recipient="9900000000003", payload={"a": 1})
    )
    ctx = CommandContext.new(IDENTITY.tenant_id, IDENTITY.process_id, IDENTITY.workflow_id)
    results = []
    for fold in (True, False):
        ledger = _CountingLedger()
        options = CommandOptions(enqueue=True, fold=fold)
        prepared = prepare(ledger, IDENTITY, LedgerState(), 3, output, ctx, NOW, options)
        assert ledger.applied == (2 if fold else 0)
        results.append(prepared)
    folded, unfolded = results
    assert folded.state == LedgerState(total=3, entries=2) and unfolded.state == LedgerState()
    assert folded.commit is not None and unfolded.commit is not None
    # Everything stored is alike but the fresh event ids (and the outbox ids derived from them).
    plain = [[e.to_plain() | {"event_id": None} for e in p.events] for p in results]
    assert plain[0] == plain[1]
    assert [m.payload for m in folded.outbox] == [m.payload for m in unfolded.outbox]
    assert unfolded.commit.expected == folded.commit.expected and unfolded.commit.snapshot is None


def test_a_snapshot_is_folded_even_without_fold() -> None:
    ledger = _CountingLedger()
    output = WorkflowOutput.of(Recorded(amount=5, unit="kWh"))
    options = CommandOptions(enqueue=True, snapshot_interval=1, fold=False)
    prepared = prepare(ledger, IDENTITY, LedgerState(), 0, output, None, NOW, options)
    assert ledger.applied == 1 and prepared.state == LedgerState(total=5, entries=1)
    assert prepared.snapshot is not None and prepared.snapshot.state == prepared.state.model_dump(mode="json")
