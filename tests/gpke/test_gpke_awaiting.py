"""``gpke.awaiting`` tells the processes waiting for an operator from their events' types alone
(what serve's gauge and the replay report count): it must agree with the workflow's own status
after every command of each way into and out of the wait."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from gpke_support import LFA, LFN, anmeldung, berlin, lfa_answer, run
from test_gpke_gv3 import form, gv3
from test_gpke_lfa_not_reached import ELEVEN, NINE, ack, operator

from mako_actors.errors import InvalidArgument
from mako_actors.gpke import (
    DecisionDeadlinePassed,
    GpkeNbWorkflow,
    GpkeState,
    LfaAnswerDeadlinePassed,
    RejectAnmeldung,
    RejectTrancheRequest,
    Status,
)
from mako_actors.gpke.awaiting import OperatorQueue, awaits_operator
from mako_actors.ids import ProcessId, StreamId, TenantId

WF = GpkeNbWorkflow()
DECIDED = datetime.fromisoformat("2025-06-06T10:00:00+02:00")


def follow(state: GpkeState, steps: list[Any]) -> list[tuple[bool, bool]]:
    """After each command: (the workflow says awaiting_operator, its events' types say so)."""
    types: list[str] = []
    seen = []
    for step in steps:
        command = step(state) if callable(step) else step
        state, out = run(WF, state, command)
        types += [e.event_type for e in out.events]
        seen.append((state.status is Status.AWAITING_OPERATOR, awaits_operator(types)))
    return seen


def not_reached(*then: Any) -> list[Any]:
    """An Anmeldung whose 55010 the LFA rejected, 09:00 passing, then ``then``."""
    rejected = [anmeldung(current_supplier=LFA), lambda s: ack(s, "55010")]
    return [*rejected, LfaAnswerDeadlinePassed(due_at=NINE), *then]


@pytest.mark.parametrize(
    "steps",
    [
        not_reached(operator()),
        # the LFN's CONTRL for our 55036 during the wait does not end it
        not_reached(lambda s: ack(s, "55036", positive=True, sender=LFN, kind="CONTRL"), operator()),
        not_reached(DecisionDeadlinePassed(due_at=ELEVEN), operator()),  # overdue: still waiting
        not_reached(RejectAnmeldung(decided_at=berlin(2025, 6, 10, 9, 30), text="Kunde unbekannt")),
        [gv3(), DecisionDeadlinePassed(due_at=ELEVEN), form()],
        [
            gv3(current_supplier=LFA),
            lambda s: lfa_answer(s.lfa_request_ide, received_at="2025-06-06T08:00:00+02:00"),
            RejectTrancheRequest(decided_at=DECIDED, reason="share taken"),
        ],
        [anmeldung(current_supplier=LFA)],  # never waits
    ],
)
def test_the_event_types_say_what_the_status_says(steps: list[Any]) -> None:
    seen = follow(WF.initial_state(), steps)
    assert all(status == by_types for status, by_types in seen), seen
    assert any(status for status, _ in seen) is (len(steps) > 1)


def test_the_queue_follows_many_processes_in_commit_order() -> None:
    tenant = TenantId.from_party_id("9900000002009")
    processes = [ProcessId.new() for _ in range(4)]

    def stream(n: int) -> StreamId:
        return StreamId.for_process(tenant, processes[n])

    class E:  # only what the queue reads of an envelope
        def __init__(self, n: int, event_type: str) -> None:
            self.__dict__.update(stream_id=stream(n), event_type=event_type)

    queue = OperatorQueue()
    log = [
        E(1, "gpke.lfa_not_reached"), E(2, "gpke.tranche_formation_awaited"), E(1, "gpke.decision_overdue"),
        E(2, "gpke.anmeldung_decided"), E(3, "gpke.lfa_not_reached"),
    ]  # fmt: skip
    for event in log:
        queue.handle(event)  # type: ignore[arg-type]
    assert len(queue) == 2 and queue.waiting == {stream(1), stream(3)}
    # Saved as plain data with its checkpoint, a queue goes on from it: the later decision of a
    # restored waiting process ends its wait.
    again = OperatorQueue(queue.state())
    assert again.state() == sorted([stream(1), stream(3)])
    again.handle(E(3, "gpke.anmeldung_decided"))  # type: ignore[arg-type]
    assert again.state() == [stream(1)]
    for bad in ("process/x", [1, 2], {"waiting": []}):
        with pytest.raises(InvalidArgument, match="list of stream ids"):
            OperatorQueue(bad)
