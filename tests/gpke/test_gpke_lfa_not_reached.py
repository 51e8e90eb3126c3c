"""A 55010 the LFA rejected (CONTRL 4 / APERAK 313) counts as not received (DOMAIN §2): the
LFA's silence until 09:00 is then no agreement, and only an operator moves the process on."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from gpke_support import LFA, LFN, anmeldung, berlin, lfa_answer, run, sent, utilmd

from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.edifact.structure import check_structure
from mako_actors.errors import WorkflowError
from mako_actors.gpke import (
    DECISION_DEADLINE,
    DEFAULT_CODES,
    DecisionDeadlinePassed,
    DeemLfaAgreement,
    GpkeConfig,
    GpkeNbWorkflow,
    GpkeState,
    LfaAnswerDeadlinePassed,
    ReceiveAcknowledgement,
    RejectAnmeldung,
    Status,
    parse_command,
)
from mako_actors.gpke import events as ev

WF = GpkeNbWorkflow()
NINE = berlin(2025, 6, 10, 9, 0)
ELEVEN = berlin(2025, 6, 10, 11, 0)  # the NB's Frist for 55002/55003 (WT1 after the ÜT 05.06)


def consulting() -> GpkeState:
    state, _ = run(WF, WF.initial_state(), anmeldung(current_supplier=LFA))
    assert state.status is Status.AWAITING_LFA
    return state


def interchange_of(state: GpkeState, pid: str) -> str:
    [ref] = [r for r in state.outbound if r.pid == pid]
    return ref.interchange_ref


def ack(
    state: GpkeState, pid: str, *, positive: bool = False, sender: str = LFA, kind: str = "APERAK"
) -> ReceiveAcknowledgement:
    return ReceiveAcknowledgement(
        message_type=kind,  # type: ignore[arg-type]
        sender=sender,
        referenced_interchange_ref=interchange_of(state, pid),
        positive=positive,
        codes=() if positive else ("Z29",),
        interchange_ref="ACK0001",
        message_ref="1",
        received_at=berlin(2025, 6, 6, 8, 0),
    )


def operator(reason: str = "LFA agreed by phone") -> DeemLfaAgreement:
    return DeemLfaAgreement(decided_at=berlin(2025, 6, 10, 9, 30), reason=reason)


@pytest.mark.parametrize("kind", ["APERAK", "CONTRL"])
def test_nine_oclock_after_a_rejected_55010_sends_nothing_and_waits_for_an_operator(kind: str) -> None:
    state, out = run(WF, consulting(), ack(consulting(), "55010", kind=kind))
    assert [type(e) for e in out.events] == [ev.AcknowledgementReceived] and not out.outbox
    state, out = run(WF, state, LfaAnswerDeadlinePassed(due_at=NINE))
    assert [type(e) for e in out.events] == [ev.LfaNotReached]
    assert out.events[0].interchange_ref == interchange_of(state, "55010")
    assert not out.outbox and not state.lfa_deemed
    assert state.status is Status.AWAITING_OPERATOR and not state.status.finished
    # While the operator decides, the NB's own 11:00 Frist is a timer (``deadlines list``).
    [decision] = out.deadlines
    assert (decision.label, decision.due_at) == (DECISION_DEADLINE, ELEVEN)
    assert decision.payload["pid"] == "55002/55003" and decision.payload["lfn"] == LFN


def test_eleven_oclock_without_an_operator_records_the_missed_frist_and_still_waits() -> None:
    state, _ = run(WF, consulting(), ack(consulting(), "55010"))
    state, stalled = run(WF, state, LfaAnswerDeadlinePassed(due_at=NINE))
    [decision] = stalled.deadlines
    command = WF.on_deadline(decision, state)
    assert command == DecisionDeadlinePassed(due_at=ELEVEN)
    state, out = run(WF, state, command)
    assert [type(e) for e in out.events] == [ev.DecisionOverdue] and not out.outbox
    assert out.events[0].due_at == ELEVEN
    assert state.status is Status.AWAITING_OPERATOR
    # The operator can still decide, late: the answers go out then.
    state, out = run(WF, state, operator())
    assert sent(out) == [("UTILMD", "55002", LFN), ("UTILMD", "55037", LFA)]
    assert state.status is Status.CONFIRMED
    assert WF.on_deadline(decision, state) is None  # a timer firing after the decision: nothing
    assert WF.handle(state, DecisionDeadlinePassed(due_at=ELEVEN)).events == ()


def test_the_operator_deciding_before_eleven_cancels_the_timer() -> None:
    state, _ = run(WF, consulting(), ack(consulting(), "55010"))
    state, _ = run(WF, state, LfaAnswerDeadlinePassed(due_at=NINE))
    _, out = run(WF, state, operator())
    assert out.cancel_deadlines == (DECISION_DEADLINE,)


def test_the_operator_deems_agreement_and_the_answers_go_out_at_that_instant() -> None:
    state, _ = run(WF, consulting(), ack(consulting(), "55010"))
    state, _ = run(WF, state, LfaAnswerDeadlinePassed(due_at=NINE))
    state, out = run(WF, state, operator())
    assert [type(e) for e in out.events] == [ev.LfaAgreementDeemedByOperator, ev.AnmeldungDecided]
    assert out.events[0].reason == "LFA agreed by phone"
    assert sent(out) == [("UTILMD", "55002", LFN), ("UTILMD", "55037", LFA)]
    assert utilmd(out, "55002")["answer_code"] == "A51"
    assert datetime.fromisoformat(out.outbox[0].payload["document_date"]) == berlin(2025, 6, 10, 9, 30)
    assert state.status is Status.CONFIRMED and state.lfa_deemed
    with pytest.raises(WorkflowError, match="confirmed"):
        WF.handle(state, operator())


def test_the_operator_command_is_refused_while_the_lfa_may_still_answer() -> None:
    with pytest.raises(WorkflowError, match="awaiting_lfa"):
        WF.handle(consulting(), operator())


def test_the_operator_command_needs_a_reason_and_arrives_as_plain_data() -> None:
    with pytest.raises(ValueError):
        DeemLfaAgreement(decided_at=NINE, reason="")
    command = parse_command({"kind": "deem_lfa_agreement", "decided_at": NINE.isoformat(), "reason": "ok"})
    assert command == DeemLfaAgreement(decided_at=NINE, reason="ok")
    timer = parse_command({"kind": "decision_deadline", "due_at": ELEVEN.isoformat()})
    assert timer == DecisionDeadlinePassed(due_at=ELEVEN)


def test_a_rejected_55036_or_a_positive_ack_of_the_55010_leaves_the_silence_rule_alone() -> None:
    consulted = consulting()
    for acknowledgement in (ack(consulted, "55036", sender=LFN), ack(consulted, "55010", positive=True)):
        state, _ = run(WF, consulted, acknowledgement)
        state, out = run(WF, state, LfaAnswerDeadlinePassed(due_at=NINE))
        assert [type(e) for e in out.events] == [ev.LfaDeemedToAgree, ev.AnmeldungDecided]
        assert state.status is Status.CONFIRMED


def test_an_answer_in_time_decides_even_after_a_rejection_of_the_55010() -> None:
    state = consulting()
    request_ide = next(r.ide_ref for r in state.outbound if r.pid == "55010")
    state, _ = run(WF, state, ack(state, "55010"))
    state, out = run(WF, state, lfa_answer(request_ide, pid="55012", answer_code="A35"))
    assert sent(out)[-1] == ("UTILMD", "55003", LFN) and state.status is Status.REJECTED


def test_an_answer_after_nine_handled_before_the_timer_is_silence_and_waits_too() -> None:
    state = consulting()
    request_ide = next(r.ide_ref for r in state.outbound if r.pid == "55010")
    state, _ = run(WF, state, ack(state, "55010"))
    late = lfa_answer(request_ide, pid="55011", received_at="2025-06-10T09:00:01+02:00")
    state, out = run(WF, state, late)
    assert [type(e) for e in out.events] == [ev.LfaNotReached, ev.LateLfaAnswerIgnored]  # the Frist first
    assert sent(out) == [("APERAK", "312", LFA)] and out.cancel_deadlines == ("lfa_answer",)
    assert state.status is Status.AWAITING_OPERATOR
    assert [(d.label, d.due_at) for d in out.deadlines] == [(DECISION_DEADLINE, ELEVEN)]


def test_only_the_recipient_of_an_interchange_acknowledges_it() -> None:
    state = consulting()
    with pytest.raises(WorkflowError, match=f"went to {LFA}"):
        WF.handle(state, ack(state, "55010", sender=LFN))


def test_the_new_events_round_trip_through_plain_data() -> None:
    state, _ = run(WF, consulting(), ack(consulting(), "55010"))
    state, stalled = run(WF, state, LfaAnswerDeadlinePassed(due_at=NINE))
    state, overdue = run(WF, state, DecisionDeadlinePassed(due_at=ELEVEN))
    _, decided = run(WF, state, operator())
    for event in (*stalled.events, *overdue.events, *decided.events):
        model = WF.event_model(event.event_type)
        assert model.model_validate(event.model_dump(mode="json")) == event


# -- the other way on: the operator rejects (E_0623 A99 "Sonstiges", AHB-FACTS §4) --------------

REASON = "Kunde hat die Anmeldung telefonisch widerrufen: Rückruf 0800"


def stalled(pid: str = "55001") -> GpkeState:
    state, _ = run(WF, WF.initial_state(), anmeldung(pid=pid, current_supplier=LFA))
    state, _ = run(WF, state, ack(state, "55010"))
    state, _ = run(WF, state, LfaAnswerDeadlinePassed(due_at=NINE))
    assert state.status is Status.AWAITING_OPERATOR
    return state


QUARTER_TO_TEN = berlin(2025, 6, 10, 9, 45)


def rejection(text: str = REASON, at: datetime = QUARTER_TO_TEN) -> RejectAnmeldung:
    return RejectAnmeldung(decided_at=at, text=text)


@pytest.mark.parametrize(("pid", "answer"), [("55001", "55003"), ("55077", "55080")])
def test_the_operator_rejects_with_a99_and_the_reason_in_ftx_acb(pid: str, answer: str) -> None:
    state, out = run(WF, stalled(pid), rejection())
    assert [type(e) for e in out.events] == [ev.AnmeldungRejectedByOperator, ev.AnmeldungDecided]
    assert out.events[0].text == REASON
    decided = out.events[1]
    assert (decided.confirmed, decided.code, decided.lfa_code) == (False, "A99", None)
    assert sent(out) == [("UTILMD", answer, LFN)]  # no 55037: the LFA keeps the MaLo
    assert out.cancel_deadlines == (DECISION_DEADLINE,)
    assert [entry["kind"] for _, entry in out.journal] == ["released"]
    assert state.status is Status.REJECTED
    # What the LFN receives: STS+E01++A99:E_0623, the text in FTX+ACB, no STS+Z35; conformant.
    [message] = out.outbox
    raw = render_outbound(message.message_type, message.payload)
    assert check_structure(raw) == []
    [tx] = parse_interchange(raw).messages[0].transactions
    assert (tx.pid, tx.answer_code, tx.answer_ebd) == (answer, "A99", "E_0623")
    ftx = "FTX+ACB+++Kunde hat die Anmeldung telefonisch widerrufen?: Rückruf 0800'"  # ':' escaped
    assert b"STS+Z35" not in raw and ftx.encode("latin-1") in raw
    with pytest.raises(WorkflowError, match="this one is rejected"):
        WF.handle(state, rejection())


def test_a_long_reason_fills_the_five_ftx_parts() -> None:
    text = "".join(str(i % 10) for i in range(2560))
    _, out = run(WF, stalled(), rejection(text))
    raw = render_outbound(out.outbox[0].message_type, out.outbox[0].payload).decode("latin-1")
    [ftx] = [s for s in raw.split("'") if s.startswith("FTX+ACB")]
    parts = ftx.removeprefix("FTX+ACB+++").split(":")
    assert [len(p) for p in parts] == [512] * 5 and "".join(parts) == text


def test_the_rejection_is_refused_unless_an_operator_is_awaited() -> None:
    with pytest.raises(WorkflowError, match="awaiting_lfa"):
        WF.handle(consulting(), rejection())
    state, _ = run(WF, stalled(), operator())
    with pytest.raises(WorkflowError, match="this one is confirmed"):
        WF.handle(state, rejection())


def test_a99_is_refused_once_its_ebd_version_no_longer_offers_it() -> None:
    # EBD 4.3 (FV2610) ends A99's use on 01.04.2027; the answer is sent under the FV in force.
    with pytest.raises(WorkflowError, match=r"A99 may be sent before 01\.04\.2027 under FV2610"):
        WF.handle(stalled(), rejection(at=berlin(2027, 4, 1, 0, 0)))
    assert WF.handle(stalled(), rejection(at=berlin(2027, 3, 31, 23, 59))).events
    # A table that ends it earlier for FV2604 (in force 01.04.–30.09.2026) is obeyed to the day.
    codes = DEFAULT_CODES.model_copy(update={"usable_until": {"FV2604": {"E_0623:A99": date(2026, 6, 1)}}})
    strict = GpkeNbWorkflow(GpkeConfig(codes=codes))
    assert strict.handle(stalled(), rejection(at=berlin(2026, 5, 31, 23, 59))).events
    with pytest.raises(WorkflowError, match=r"A99 may be sent before 01\.06\.2026 under FV2604"):
        strict.handle(stalled(), rejection(at=berlin(2026, 6, 1, 0, 0)))


@pytest.mark.parametrize(
    ("text", "problem"),
    [("  ", "text is empty"), ("Preis 5 €", "'€' at 8 cannot be sent"), ("x" * 2561, "at most 2560")],
)
def test_the_reason_must_be_sendable(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        rejection(text)


def test_the_rejection_arrives_as_plain_data_and_its_event_round_trips() -> None:
    command = parse_command({"kind": "reject_anmeldung", "decided_at": NINE.isoformat(), "text": " x "})
    assert command == RejectAnmeldung(decided_at=NINE, text="x")
    _, out = run(WF, stalled(), rejection())
    for event in out.events:
        assert WF.event_model(event.event_type).model_validate(event.model_dump(mode="json")) == event
