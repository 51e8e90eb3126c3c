"""Snapshots: a process's state at a sequence number, to shorten activation and replay.

Snapshots are never the source of truth: the events are. A snapshot whose
``state_schema_version`` differs from the workflow's current one is ignored (full replay), so
changing the state model only needs a version bump, never a migration of snapshots.
"""

from __future__ import annotations

from typing import Any

from mako_actors.envelope import AwareUtc, PlainModel
from mako_actors.ids import StreamId


class Snapshot(PlainModel):
    """The state of ``stream_id`` after event ``sequence``, as plain data."""

    stream_id: StreamId
    sequence: int
    state_schema_version: int
    workflow_name: str
    state: dict[str, Any]
    taken_at: AwareUtc

    @staticmethod
    def should_take(event_count: int, interval: int) -> bool:
        """Whether a snapshot is due at ``event_count`` for a threshold of ``interval``."""
        return interval > 0 and event_count > 0 and event_count % interval == 0
