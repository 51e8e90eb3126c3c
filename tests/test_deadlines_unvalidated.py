"""``Deadline.of_pending`` (the engine's path from a workflow's deadline to its row) builds what
the validating constructor builds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from mako_actors.deadlines import Deadline, PendingDeadline
from mako_actors.envelope import ProcessIdentity
from mako_actors.ids import DeadlineId, EventId, ProcessId, TenantId
from mako_actors.version import WorkflowId

BERLIN_WINTER = timezone(timedelta(hours=1))


def _same(fast: PendingDeadline | Deadline, validated: PendingDeadline | Deadline) -> None:
    assert fast == validated
    assert fast.model_fields_set == validated.model_fields_set
    assert fast.to_plain() == validated.to_plain()
    assert fast.due_at.tzinfo is UTC


def test_deadline_of_pending_equals_the_constructor() -> None:
    tenant = TenantId.from_party_id("9900000002009")
    identity = ProcessIdentity.of_process(tenant, ProcessId.new(), WorkflowId.new("gpke-nb", "FV2504"))
    cause = EventId.new()
    pending = PendingDeadline(
        label="lfa-answer", due_at=datetime(2025, 11, 4, 0, 0, tzinfo=BERLIN_WINTER), payload={"pid": "55010"}
    )
    for event in (cause, None):
        deadline_id = DeadlineId.for_event(cause, 1)
        fast = Deadline.of_pending(pending, deadline_id, identity, event)
        validated = Deadline(
            deadline_id=deadline_id,
            stream_id=identity.stream_id,
            process_id=identity.process_id,
            tenant_id=identity.tenant_id,
            workflow_id=identity.workflow_id,
            label=pending.label,
            due_at=pending.due_at,
            payload=pending.payload,
            causation_event_id=event,
        )
        _same(fast, validated)
        assert fast.payload is not pending.payload
