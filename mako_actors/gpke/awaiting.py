"""Which GPKE processes wait for an operator's decision (status ``awaiting_operator``), from
the types of their events alone: cheap enough to follow a store's whole event log.

A process waits from its ``LfaNotReached`` (our 55010 did not reach the LFA, 09:00 passed) or
``TrancheFormationAwaited`` (a Geschäftsvorfall 3) until the ``AnmeldungDecided`` its operator's
decision records; nothing else leaves that status (``workflow._APPLY``). While it waits, the
answer its LFN waits for is not sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mako_actors.envelope import EventEnvelope
from mako_actors.errors import InvalidArgument
from mako_actors.gpke.events import AnmeldungDecided, LfaNotReached, TrancheFormationAwaited

__all__ = ["DECIDED_EVENTS", "QUEUE_CHECKPOINT", "WAIT_EVENTS", "OperatorQueue", "awaits_operator"]

#: The events after which a process waits for an operator.
WAIT_EVENTS = frozenset({LfaNotReached.event_type, TrancheFormationAwaited.event_type})
#: The event that ends the wait (and every other way of deciding an Anmeldung).
DECIDED_EVENTS = frozenset({AnmeldungDecided.event_type})
#: The checkpoint ``serve`` saves its queue under (position and ``OperatorQueue.state()``).
QUEUE_CHECKPOINT = "mako.gpke.operator-queue"


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

    Keeps the waiting streams only; ``len()`` is how many there are. ``state()`` is that as plain
    data, to save with the position it was read up to; ``OperatorQueue(state)`` goes on from it.
    """

    def __init__(self, state: Any = None) -> None:
        if state is not None and not (isinstance(state, list) and all(isinstance(s, str) for s in state)):
            raise InvalidArgument(f"OperatorQueue: a saved state is a list of stream ids, got {state!r:.80}")
        self.waiting: set[str] = set(state or ())

    def state(self) -> list[str]:
        """The waiting streams, sorted (plain data for ``save_checkpoint``)."""
        return sorted(self.waiting)

    def handle(self, event: EventEnvelope) -> None:
        fields = event.__dict__  # (per event of a whole log: not through pydantic's attribute hook)
        event_type = fields["event_type"]
        if event_type in WAIT_EVENTS:
            self.waiting.add(fields["stream_id"])
        elif event_type in DECIDED_EVENTS:
            self.waiting.discard(fields["stream_id"])

    def __len__(self) -> int:
        return len(self.waiting)
