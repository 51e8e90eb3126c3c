"""Snapshots: a process's state at a sequence number, to shorten activation and replay.

Snapshots are never the source of truth: the events are. A snapshot whose
``state_schema_version`` differs from the workflow's current one is ignored (full replay), so
changing the state model only needs a version bump, never a migration of snapshots.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from mako_actors.envelope import utc
from mako_actors.ids import StreamId


class Snapshot(BaseModel):
    """The state of ``stream_id`` after event ``sequence``, as plain data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream_id: StreamId
    sequence: int
    state_schema_version: int
    workflow_name: str
    state: dict[str, Any]
    taken_at: datetime

    @field_validator("taken_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return utc(value)

    @staticmethod
    def should_take(event_count: int, interval: int) -> bool:
        """Whether a snapshot is due at ``event_count`` for a threshold of ``interval``."""
        return interval > 0 and event_count > 0 and event_count % interval == 0

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> Snapshot:
        return cls.model_validate(data)
