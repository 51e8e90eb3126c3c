"""Deadlines (Fristen): timers persisted with the events that set them.

A workflow returns ``PendingDeadline`` entries (a label and an aware due time computed from
event data, never from a clock); the engine stores them as ``Deadline`` rows atomically with
the events. When one is due, ``Process.execute_timeout`` asks ``Workflow.on_deadline`` for a
compensation command. Deadlines are cancelled by label when the workflow says the awaited
answer arrived (``WorkflowOutput.cancel_deadlines``), and survive restarts because they are
stored, not scheduled in memory.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mako_actors.envelope import AwareUtc, PlainModel, ProcessIdentity, trusted
from mako_actors.ids import DeadlineId, EventId, ProcessId, StreamId, TenantId
from mako_actors.version import WorkflowId


class PendingDeadline(PlainModel):
    """A timer the workflow wants set: ``label`` is due at ``due_at`` (aware datetime)."""

    label: str
    due_at: AwareUtc
    payload: dict[str, Any] = Field(default_factory=dict)


class Deadline(PlainModel):
    """A persisted timer of one process."""

    deadline_id: DeadlineId
    stream_id: StreamId
    process_id: ProcessId
    tenant_id: TenantId
    workflow_id: WorkflowId
    label: str
    due_at: AwareUtc
    payload: dict[str, Any] = Field(default_factory=dict)
    causation_event_id: EventId | None = None

    @classmethod
    def of_pending(
        cls,
        pending: PendingDeadline,
        deadline_id: DeadlineId,
        identity: ProcessIdentity,
        cause: EventId | None,
    ) -> Deadline:
        """The row of ``pending`` for the process ``identity``, set by the event ``cause``.

        Equal to ``Deadline(...)`` of those values (every field given), built without
        validating them again: the ids come typed from ``identity`` and ``pending`` was checked
        when it was made. An id of another type is validated as the constructor does.
        """
        fields = {
            "deadline_id": deadline_id,
            "stream_id": identity.stream_id,
            "process_id": identity.process_id,
            "tenant_id": identity.tenant_id,
            "workflow_id": identity.workflow_id,
            "label": pending.label,
            "due_at": pending.due_at,
            "payload": pending.payload,
            "causation_event_id": cause,
        }
        if (
            type(deadline_id) is DeadlineId
            and (cause is None or type(cause) is EventId)
            and type(pending) is PendingDeadline
        ):
            fields["payload"] = dict(pending.payload)  # validation copies it too
            return trusted(cls, fields, _DEADLINE_SET)
        return cls(**fields)


_DEADLINE_SET = set(Deadline.model_fields)
