"""The store writer's row helpers give what the models' own methods give.

``envelope.stamped_plain`` (stamp an event and dump it in one pass) and ``outbox.outbox_plain``
(an outbox row from the model's ``__dict__``) save the writer trips through pydantic's
``__getattr__`` hook; their results must be exactly ``stamped``/``to_plain``'s, and both equal
``model_dump(mode="json")``, key order included (the stored msgpack bytes depend on it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mako_actors import (
    CommandContext,
    EventEnvelope,
    OutboxMessage,
    PendingOutbox,
    ProcessIdentity,
    TenantId,
    WorkflowId,
    WorkflowOutput,
)
from mako_actors._command import CommandOptions, prepare
from mako_actors.envelope import stamped_plain
from mako_actors.outbox import outbox_plain
from tests.workflows import Ledger, LedgerState, Recorded

TENANT = TenantId.from_party_id("9900000002009")
IDENTITY = ProcessIdentity.new(TENANT, WorkflowId.new("ledger", "FV2510"))
NOW = datetime(2025, 6, 5, 12, 30, 0, 250_000, tzinfo=UTC)


def _prepared(*pending: PendingOutbox) -> tuple[tuple[EventEnvelope, ...], tuple[OutboxMessage, ...]]:
    ctx = CommandContext.new(IDENTITY.tenant_id, IDENTITY.process_id, IDENTITY.workflow_id)
    output = WorkflowOutput.of(Recorded(amount=1, unit="kWh"), Recorded(amount=2, unit="kWh"))
    prepared = prepare(
        Ledger(), IDENTITY, LedgerState(), 0, output.with_outbox(*pending), ctx, NOW,
        CommandOptions(enqueue=True),
    )
    return prepared.events, prepared.outbox


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json")
    return dumped


def test_a_placeholder_is_stamped_in_place_and_dumps_as_stamped_would() -> None:
    for envelope in _prepared()[0]:
        expected = envelope.model_copy(update={"sequence": 7, "global_position": 41})
        stamped, plain = stamped_plain(envelope, envelope.__dict__, 7, 41)
        assert stamped is envelope and stamped == expected
        assert stamped.model_fields_set == set(EventEnvelope.model_fields)
        assert plain == _dump(expected) and list(plain) == list(_dump(expected))
        assert plain == stamped.to_plain()
        # Stamped again (a batch re-run after an abort): a copy with the new values.
        again, plain_again = stamped_plain(stamped, stamped.__dict__, 8, 42)
        assert again is not stamped and (again.sequence, again.global_position) == (8, 42)
        assert (stamped.sequence, stamped.global_position) == (7, 41)
        assert plain_again == _dump(again) == again.to_plain()


def test_an_envelope_built_outside_the_engine_is_copied_and_its_payload_dumped() -> None:
    built = EventEnvelope.model_validate(_prepared()[0][0].model_dump())
    with_datetime = built.model_copy(update={"payload": {"at": NOW}})
    stamped, plain = stamped_plain(with_datetime, with_datetime.__dict__, 3, 9)
    assert stamped is not with_datetime and with_datetime.global_position == 0
    assert (stamped.sequence, stamped.global_position) == (3, 9)
    assert plain == _dump(stamped) and plain["payload"] == {"at": "2025-06-05T12:30:00.250000Z"}


def test_outbox_plain_is_to_plain_for_marked_checked_and_copied_rows() -> None:
    payload = {"a": [1, "x", {"b": None}], "when": "2025-06-05"}
    marked = PendingOutbox.of_plain("APERAK", "9900000000010", payload)
    checked = PendingOutbox(message_type="UTILMD", recipient="9900000000010", payload={"n": 1.5})
    rows = _prepared(marked, checked)[1]
    copied = rows[0].model_copy(update={"attempts": 2, "last_error": "boom", "position": 4})
    for row in (*rows, copied):
        plain = outbox_plain(row.__dict__, row.__pydantic_fields_set__)
        assert plain == row.to_plain() == _dump(row) and list(plain) == list(_dump(row))
