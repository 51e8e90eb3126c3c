"""Dead letters: what could not be delivered or routed, kept with its audit context.

Nothing is dropped: an outbox message that exhausted its attempts, an inbound message for an
unknown PID, an unroutable answer: each becomes a ``DeadLetter`` a person can inspect and
replay.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mako_actors.envelope import AwareUtc, PlainModel


class DeadLetter(PlainModel):
    """One message given up on: what it was (``kind``), why, and its content as plain data."""

    kind: str
    reason: str
    payload: dict[str, Any] = Field(default_factory=dict)
    recorded_at: AwareUtc
    position: int = 0
