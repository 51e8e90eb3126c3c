"""Dead letters: what could not be delivered or routed, kept with its audit context.

Nothing is dropped: an outbox message that exhausted its attempts, an inbound message for an
unknown PID, an unroutable answer: each becomes a ``DeadLetter`` a person can inspect and
replay: ``mako-actors dead-letters list`` shows them, ``mako-actors dead-letters requeue N`` puts
an outbox message back in the outbox or a deadline back in the schedule, in one transaction
that also stamps the letter's ``requeued_at`` (so it is requeued once).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field, PrivateAttr

from mako_actors.envelope import AwareUtc, PlainModel


class DeadLetter(PlainModel):
    """One message given up on: what it was (``kind``), why, and its content as plain data.

    With a ``key``, the store keeps one dead letter per key: adding it again returns the stored
    one and writes nothing (a re-processed archive adds no dead letter twice).

    ``requeued_at`` is set when a person put it back (``Store.requeue_dead_letter``).
    """

    kind: str
    reason: str
    payload: dict[str, Any] = Field(default_factory=dict)
    recorded_at: AwareUtc
    position: int = 0
    key: str | None = None
    requeued_at: AwareUtc | None = None
    # Set by the store on what ``add_dead_letter`` returns; never stored.
    _stored_before: bool = PrivateAttr(default=False)

    @property
    def stored_before(self) -> bool:
        """True on what ``Store.add_dead_letter`` returned when the store held a letter with this
        ``key`` already and wrote nothing (a file received again): count it as given up once."""
        return self._stored_before

    def keyed(self) -> DeadLetter:
        """This letter with a key derived from its kind, reason and payload (not its time)."""
        content = json.dumps([self.kind, self.reason, self.payload], sort_keys=True, default=str)
        return self.model_copy(update={"key": hashlib.sha256(content.encode()).hexdigest()})
