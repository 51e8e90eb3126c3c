"""Dead letters: what could not be delivered or routed, kept with its audit context.

Nothing is dropped: an outbox message that exhausted its attempts, an inbound message for an
unknown PID, an unroutable answer: each becomes a ``DeadLetter`` a person can inspect and
replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mako_actors.envelope import utc


class DeadLetter(BaseModel):
    """One message given up on: what it was (``kind``), why, and its content as plain data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    reason: str
    payload: dict[str, Any] = Field(default_factory=dict)
    recorded_at: datetime
    position: int = 0

    @field_validator("recorded_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return utc(value)

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> DeadLetter:
        return cls.model_validate(data)
