"""Snapshots: a process's state at a sequence number, to shorten activation and replay.

Snapshots are never the source of truth: the events are. A snapshot whose
``state_schema_version`` differs from the workflow's current one is ignored (full replay), so
changing the state model only needs a version bump, never a migration of snapshots. Nor
does one the stream does not hold: past its end, or over other events than it was taken
after (``event_id``), as when the snapshots were restored from another copy of the store.
"""

from __future__ import annotations

from typing import Any

from mako_actors.envelope import AwareUtc, PlainModel
from mako_actors.ids import EventId, StreamId


class Snapshot(PlainModel):
    """The state of ``stream_id`` after event ``sequence``, as plain data.

    ``event_id``: the id of that event; the snapshot counts only on a stream whose event at
    ``sequence`` has it. None at sequence 0, and in snapshots written before it was recorded
    (these count whenever the stream holds their sequence, as they always did).
    """

    stream_id: StreamId
    sequence: int
    state_schema_version: int
    workflow_name: str
    state: dict[str, Any]
    taken_at: AwareUtc
    event_id: EventId | None = None

    @staticmethod
    def due(before: int, after: int, interval: int) -> bool:
        """Whether a command taking a stream from ``before`` to ``after`` events needs a snapshot.

        True when it crosses a multiple of ``interval`` (0: never), also when it appends
        several events and jumps over the multiple (2 -> 4 with interval 3): the engine's rule.
        """
        return interval > 0 and before // interval != after // interval

    @staticmethod
    def should_take(event_count: int, interval: int) -> bool:
        """Whether ``event_count`` is a multiple of ``interval``: right only for one-event commands.

        Kept for compatibility; use ``due(before, after, interval)``, which a command appending
        several events cannot jump over.
        """
        return Snapshot.due(event_count - 1, event_count, interval) if event_count > 0 else False
