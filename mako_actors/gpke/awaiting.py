"""Which GPKE processes wait for an operator's decision (status ``awaiting_operator``), from
the types of their events alone: cheap enough to follow a store's whole event log.

A process waits from its ``LfaNotReached`` (our 55010 did not reach the LFA, 09:00 passed) or
``TrancheFormationAwaited`` (a Geschäftsvorfall 3) until the ``AnmeldungDecided`` its operator's
decision records; nothing else leaves that status (``workflow._APPLY``). While it waits, the
answer its LFN waits for is not sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from mako_actors.envelope import EventEnvelope
from mako_actors.gpke.events import AnmeldungDecided, LfaNotReached, TrancheFormationAwaited
from mako_actors.ids import StreamId

__all__ = ["DECIDED_EVENTS", "WAIT_EVENTS", "OperatorQueue", "awaits_operator"]

#: The events after which a process waits for an operator.
WAIT_EVENTS = frozenset({LfaNotReached.event_type, TrancheFormationAwaited.event_type})
#: The event that ends the wait (and every other way of deciding an Anmeldung).
DECIDED_EVENTS = frozenset({AnmeldungDecided.event_type})


def awaits_operator(event_types: Iterable[str]) -> bool:
    """Whether a process whose events have these types, in order, waits for an operator."""
    waiting = False
    for event_type in event_types:
        if event_type in WAIT_EVENTS:
            waiting = True
        elif event_type in DECIDED_EVENTS:
            waiting = False
    return waiting


class OperatorQueue:
    """The processes waiting for an operator, fed a store's events in commit order (``handle``).

    Keeps the waiting streams only; ``len()`` is how many there are.
    """

    def __init__(self) -> None:
        self.waiting: set[StreamId] = set()

    def handle(self, event: EventEnvelope) -> None:
        fields = event.__dict__  # (per event of a whole log: not through pydantic's attribute hook)
        event_type = fields["event_type"]
        if event_type in WAIT_EVENTS:
            self.waiting.add(fields["stream_id"])
        elif event_type in DECIDED_EVENTS:
            self.waiting.discard(fields["stream_id"])

    def __len__(self) -> int:
        return len(self.waiting)
