"""``PendingDeadline.of`` and ``Deadline.of_pending`` build what the validating constructors build."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

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


@pytest.mark.parametrize(
    ("due_at", "payload"),
    [
        (datetime(2025, 11, 3, 23, 0, tzinfo=UTC), {"pid": "55010", "lfa": "9900000000003"}),
        (datetime(2025, 11, 4, 0, 0, tzinfo=BERLIN_WINTER), {}),
        (datetime(2025, 11, 4, 0, 0, tzinfo=BERLIN_WINTER), None),
    ],
)
def test_pending_deadline_of_equals_the_constructor(due_at: datetime, payload: dict[str, str] | None) -> None:
    extra = {} if payload is None else {"payload": payload}
    fast = PendingDeadline.of("lfa-answer", due_at, payload)
    _same(fast, PendingDeadline(label="lfa-answer", due_at=due_at, **extra))
    if payload is not None:
        payload["later"] = "change"  # the caller's dict is not the model's
        assert "later" not in fast.payload


def test_pending_deadline_of_refuses_what_the_constructor_refuses() -> None:
    with pytest.raises(ValidationError):
        PendingDeadline.of("lfa-answer", datetime(2025, 11, 3, 23, 0))  # naive: ambiguous
    coerced = PendingDeadline.of("lfa-answer", "2025-11-03T23:00:00+00:00")  # type: ignore[arg-type]
    assert coerced == PendingDeadline(label="lfa-answer", due_at="2025-11-03T23:00:00+00:00")  # type: ignore[arg-type]


def test_deadline_of_pending_equals_the_constructor() -> None:
    tenant = TenantId.from_party_id("9900000002009")
    identity = ProcessIdentity.of_process(tenant, ProcessId.new(), WorkflowId.new("gpke-nb", "FV2504"))
    cause = EventId.new()
    pending = PendingDeadline.of(
        "lfa-answer", datetime(2025, 11, 4, 0, 0, tzinfo=BERLIN_WINTER), {"pid": "55010"}
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
