"""What travels with a command and what is stored around an event.

``ProcessIdentity`` (the four ids of a process, for routing tables), ``CommandContext`` (the
ids one command carries into its events) and ``EventEnvelope`` (a persisted event). All are
frozen, keyword-only pydantic models that serialize to plain values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from mako_actors.ids import (
    CausationId,
    ConversationId,
    CorrelationId,
    EventId,
    ProcessId,
    StreamId,
    TenantId,
)
from mako_actors.version import WorkflowId


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=False)


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; naive datetimes are rejected (ambiguous in Berlin)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no time zone; pass an aware one")
    return value.astimezone(UTC)


class ProcessIdentity(_Frozen):
    """The stream, process, tenant and workflow ids of one process, as one serializable value.

    Persist it in a routing table and pass it to ``Process.from_identity`` to re-attach.
    """

    stream_id: StreamId
    process_id: ProcessId
    tenant_id: TenantId
    workflow_id: WorkflowId

    @classmethod
    def new(cls, tenant_id: TenantId, workflow_id: WorkflowId) -> ProcessIdentity:
        """The identity of a brand-new process (random process id)."""
        process_id = ProcessId.new()
        return cls(
            stream_id=StreamId.for_process(tenant_id, process_id),
            process_id=process_id,
            tenant_id=tenant_id,
            workflow_id=workflow_id,
        )

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class CommandContext(_Frozen):
    """The ids one command carries into every event it produces.

    ``correlation_id`` is the root of the chain (shared by retransmissions of one interchange),
    ``conversation_id`` groups a business conversation, ``causation_id`` names the event or
    message that caused this command, if any.
    """

    tenant_id: TenantId
    process_id: ProcessId
    workflow_id: WorkflowId
    correlation_id: CorrelationId
    conversation_id: ConversationId
    causation_id: CausationId | None = None

    @classmethod
    def new(
        cls, tenant_id: TenantId, process_id: ProcessId, workflow_id: WorkflowId
    ) -> CommandContext:
        """A context with fresh random correlation and conversation ids."""
        return cls(
            tenant_id=tenant_id,
            process_id=process_id,
            workflow_id=workflow_id,
            correlation_id=CorrelationId.new(),
            conversation_id=ConversationId.new(),
        )

    def with_causation(self, causation: CausationId | EventId) -> CommandContext:
        """A copy caused by ``causation`` (an event id converts)."""
        return self.model_copy(update={"causation_id": CausationId(causation)})

    def with_conversation(self, conversation_id: ConversationId) -> CommandContext:
        """A copy in the business conversation ``conversation_id``."""
        return self.model_copy(update={"conversation_id": conversation_id})

    def with_correlation(self, correlation_id: CorrelationId) -> CommandContext:
        """A copy with the correlation root ``correlation_id``."""
        return self.model_copy(update={"correlation_id": correlation_id})


class EventEnvelope(_Frozen):
    """A persisted event with everything needed to route, audit and replay it.

    ``sequence`` counts from 1 within the stream; ``global_position`` counts from 1 across the
    whole store, in commit order (projections read by it). ``payload`` is the event model as
    plain data at ``schema_version``; ``Workflow.decode_event`` turns it back into the model.
    """

    event_id: EventId
    stream_id: StreamId
    process_id: ProcessId
    tenant_id: TenantId
    workflow_id: WorkflowId
    sequence: int
    global_position: int = 0
    event_type: str
    schema_version: int
    recorded_at: datetime
    correlation_id: CorrelationId
    conversation_id: ConversationId
    causation_id: CausationId | None = None
    payload: dict[str, Any]

    @field_validator("recorded_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return utc(value)

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> EventEnvelope:
        return cls.model_validate(data)
