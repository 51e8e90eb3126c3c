"""Dead letters: what could not be delivered or routed, kept with its audit context.

Nothing is dropped: an outbox message that exhausted its attempts, an inbound message for an
unknown PID, an unroutable answer: each becomes a ``DeadLetter`` a person can inspect and
replay: ``mako-actors dead-letters list`` shows them, ``mako-actors dead-letters requeue N`` puts
an outbox message back in the outbox or a deadline back in the schedule, in one transaction
that also stamps the letter's ``requeued_at`` (so it is requeued once).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mako_actors.envelope import AwareUtc, PlainModel


class DeadLetter(PlainModel):
    """One message given up on: what it was (``kind``), why, and its content as plain data.

    ``requeued_at`` is set when a person put it back (``Store.requeue_dead_letter``).
    """

    kind: str
    reason: str
    payload: dict[str, Any] = Field(default_factory=dict)
    recorded_at: AwareUtc
    position: int = 0
    requeued_at: AwareUtc | None = None
