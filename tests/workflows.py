"""Small workflows the engine tests run: a metering ledger with outbox, deadlines and upcasting."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mako_actors import (
    Deadline,
    Event,
    PendingDeadline,
    PendingOutbox,
    Workflow,
    WorkflowError,
    WorkflowOutput,
)


class Record(BaseModel):
    """Add ``amount`` to the ledger; negative amounts are refused."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["record"] = "record"
    amount: int
    notify: str | None = None
    remind_at: datetime | None = None
    register_key: str | None = None


class Close(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["close"] = "close"
    reason: str = "closed"


class Recorded(Event, type="ledger.recorded", version=2):
    amount: int
    unit: str  # added in version 2; version 1 payloads lack it


class Closed(Event, type="ledger.closed"):
    reason: str


class LedgerState(BaseModel):
    model_config = ConfigDict(frozen=True)
    total: int = 0
    entries: int = 0
    closed: bool = False
    reason: str | None = None


Command = Record | Close


class Ledger(Workflow[Any, LedgerState]):
    name = "ledger"
    state_schema_version = 1
    events = (Recorded, Closed)

    def initial_state(self) -> LedgerState:
        return LedgerState()

    def handle(self, state: LedgerState, command: Any) -> WorkflowOutput:
        if state.closed:
            raise WorkflowError.invalid_state("ledger is closed")
        if isinstance(command, Close):
            return WorkflowOutput.of(Closed(reason=command.reason)).model_copy(
                update={"cancel_deadlines": ("reminder",)}
            )
        if command.amount < 0:
            raise WorkflowError.rejected(f"negative amount {command.amount}")
        out = WorkflowOutput.of(Recorded(amount=command.amount, unit="kWh"))
        if command.notify:
            out = out.with_outbox(
                PendingOutbox(
                    message_type="NOTICE",
                    recipient=command.notify,
                    payload={"total": state.total + command.amount},
                )
            )
        if command.remind_at:
            out = out.with_deadlines(PendingDeadline(label="reminder", due_at=command.remind_at))
        if command.register_key:
            out = out.model_copy(update={"register_keys": (command.register_key,)})
        return out

    def apply(self, state: LedgerState, event: Event) -> LedgerState:
        if isinstance(event, Recorded):
            return state.model_copy(
                update={"total": state.total + event.amount, "entries": state.entries + 1}
            )
        if isinstance(event, Closed):
            return state.model_copy(update={"closed": True, "reason": event.reason})
        return state

    def on_deadline(self, deadline: Deadline, state: LedgerState) -> Any:
        if state.closed:
            return None
        return Close(reason=f"timeout:{deadline.label}")

    def upcast(self, event_type: str, from_version: int, payload: dict[str, Any]) -> dict[str, Any]:
        if event_type == "ledger.recorded" and from_version == 1:
            return {**payload, "unit": "kWh"}
        return super().upcast(event_type, from_version, payload)


def later(now: datetime, minutes: int) -> datetime:
    return now + timedelta(minutes=minutes)
