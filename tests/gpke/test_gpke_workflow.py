"""The NB workflow, by pure ``handle``/``apply`` calls: every PID path of DOMAIN §2."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from gpke_support import (
    LFA,
    LFN,
    LFZ,
    MALO,
    NB,
    START,
    THU_1430,
    TRANCHE_OF,
    abmeldung,
    anmeldung,
    berlin,
    lfa_answer,
    run,
    sent,
    utilmd,
)

from mako_actors.deadlines import Deadline
from mako_actors.edifact import render_outbound
from mako_actors.edifact.structure import check_structure
from mako_actors.errors import InvalidArgument, WorkflowError
from mako_actors.gpke import (
    GpkeConfig,
    GpkeNbWorkflow,
    GpkeState,
    LfaAnswerDeadlinePassed,
    MpIdCheck,
    Status,
    UnsupportedFormatVersion,
    ide_key,
    malo_key,
    transaction_key,
)
from mako_actors.gpke import events as ev
from mako_actors.gpke.calendar import month_vorlauffrist_met
from mako_actors.gpke.commands import ReceiveAcknowledgement
from mako_actors.ids import DeadlineId, ProcessId, StreamId, TenantId
from mako_actors.version import WorkflowId

WF = GpkeNbWorkflow()


def start(command: Any, wf: GpkeNbWorkflow = WF) -> tuple[GpkeState, Any]:
    return run(wf, wf.initial_state(), command)


def with_lfa(**overrides: Any) -> tuple[GpkeState, Any]:
    return start(anmeldung(current_supplier=LFA, **overrides))


def rendered(out: Any, pid: str) -> bytes:
    """The interchange of the outbox UTILMD with ``pid``, as it would be sent."""
    [message] = [
        m for m in out.outbox if m.message_type == "UTILMD" and m.payload["transactions"][0]["pid"] == pid
    ]
    return render_outbound(message.message_type, message.payload).replace(b"\r", b"").replace(b"\n", b"")


def deadline_of(state: GpkeState, label: str, due_at: datetime) -> Deadline:
    tenant, process = TenantId.from_party_id(NB), ProcessId.new()
    return Deadline(
        deadline_id=DeadlineId.new(), stream_id=StreamId.for_process(tenant, process),
        process_id=process, tenant_id=tenant, workflow_id=WorkflowId.new("gpke-nb", "FV2504"),
        label=label, due_at=due_at,
    )


# -- 55001 -----------------------------------------------------------------------------------


def test_anmeldung_without_lfa_is_confirmed_at_once() -> None:
    state, out = start(anmeldung())
    assert [type(e) for e in out.events] == [ev.AnmeldungReceived, ev.AnmeldungDecided]
    assert out.events[0].product_package == "1"  # type: ignore[attr-defined]
    assert sent(out) == [("APERAK", "312", LFN), ("UTILMD", "55002", LFN)]
    tx = utilmd(out, "55002")
    assert (tx["answer_code"], tx["answer_ebd"]) == ("A51", "E_0623")
    assert tx["product_package"] == "1"  # RFF+Z60: the one package the LFN asked for
    assert tx["request_ref"] == "LFNTX000001" and tx["malo"] == MALO
    assert datetime.fromisoformat(tx["start"]) == datetime.fromisoformat(START)
    assert not out.deadlines
    assert state.status is Status.CONFIRMED
    assert transaction_key(LFN, "LFNTX000001") in out.register_keys
    assert malo_key(MALO, 0) in out.register_keys


def test_positive_aperak_references_the_request() -> None:
    _, out = start(anmeldung())
    aperak = out.outbox[0].payload
    assert aperak["positive"] is True and aperak.get("errors", []) == []
    assert aperak["referenced_interchange_ref"] == "LFN0605143001"
    assert aperak["referenced_document_number"] == "LFNDOC000001"
    assert aperak["referenced_transaction_ref"] == "LFNTX000001"
    assert aperak["sender_id"] == NB and aperak["recipient_id"] == LFN
    received = out.events[0]
    assert isinstance(received, ev.AnmeldungReceived)
    assert received.aperak_due == berlin(2025, 6, 5, 15, 15)  # 45 min † from configuration


def test_anmeldung_with_lfa_informs_lfn_and_asks_lfa() -> None:
    state, out = with_lfa()
    assert sent(out) == [("APERAK", "312", LFN), ("UTILMD", "55036", LFN), ("UTILMD", "55010", LFA)]
    info = utilmd(out, "55036")
    assert info["other_party_id"] == LFA and info["other_party_code_list"] == "293"
    request = utilmd(out, "55010")
    assert datetime.fromisoformat(request["end"]) == datetime.fromisoformat(START)
    (deadline,) = out.deadlines
    assert deadline.label == "lfa_answer"
    assert deadline.due_at == berlin(2025, 6, 10, 9, 0)
    assert state.status is Status.AWAITING_LFA
    assert ide_key(request["ide_ref"]) in out.register_keys
    received = out.events[0]
    assert isinstance(received, ev.AnmeldungReceived)
    assert received.fristen.due["info_existing_assignment"] == berlin(2025, 6, 10, 7, 0)
    assert received.fristen.due["decision"] == berlin(2025, 6, 10, 11, 0)
    assert received.fristen.calendar_version.startswith("bdew-datetimes==")


def test_lfa_confirms_then_nb_confirms_and_ends_lfa_assignment() -> None:
    state, out = with_lfa()
    request_ide = utilmd(out, "55010")["ide_ref"]
    state, out = run(WF, state, lfa_answer(request_ide))
    assert [type(e) for e in out.events] == [ev.LfaAnswered, ev.AnmeldungDecided]
    assert sent(out) == [("APERAK", "312", LFA), ("UTILMD", "55002", LFN), ("UTILMD", "55037", LFA)]
    assert out.cancel_deadlines == ("lfa_answer",)
    termination = utilmd(out, "55037")
    assert datetime.fromisoformat(termination["end"]) == datetime.fromisoformat(START)
    assert state.status is Status.CONFIRMED and state.lfa_confirmed is True


def test_lfa_objects_then_55003_repeats_its_code_in_z35() -> None:
    state, out = with_lfa()
    request_ide = utilmd(out, "55010")["ide_ref"]
    state, out = run(WF, state, lfa_answer(request_ide, pid="55012", answer_code="A35"))
    assert sent(out) == [("APERAK", "312", LFA), ("UTILMD", "55003", LFN)]
    tx = utilmd(out, "55003")
    assert (tx["answer_code"], tx["answer_ebd"]) == ("A50", "E_0623")
    assert (tx["lfa_answer_code"], tx["lfa_answer_ebd"]) == ("A35", "E_0624")
    assert state.status is Status.REJECTED
    # The objecting LFA is named in SG12 NAD+VY (S1 FV2504 55003: Muss [363] with A50, [566]).
    raw = rendered(out, "55003")
    assert f"NAD+VY+{LFA}::293'".encode() in raw and check_structure(raw) == []


def test_lfa_silence_until_nine_counts_as_agreement() -> None:
    state, out = with_lfa(future_supplier=LFZ, future_supplier_start="2025-08-01T00:00:00+02:00")
    due = out.deadlines[0].due_at
    command = WF.on_deadline(deadline_of(state, "lfa_answer", due), state)
    assert command == LfaAnswerDeadlinePassed(due_at=due)
    state, out = run(WF, state, command)
    assert [type(e) for e in out.events] == [ev.LfaDeemedToAgree, ev.AnmeldungDecided]
    assert sent(out) == [("UTILMD", "55002", LFN), ("UTILMD", "55037", LFA), ("UTILMD", "55038", LFZ)]
    cancellation = utilmd(out, "55038")
    assert datetime.fromisoformat(cancellation["start"]) == berlin(2025, 8, 1, 0, 0)
    assert state.lfa_deemed and state.status is Status.CONFIRMED
    # The answer went out at the deadline instant, which is the decision's document date.
    assert datetime.fromisoformat(out.outbox[0].payload["document_date"]) == berlin(2025, 6, 10, 9, 0)


def test_every_55038_of_a_decision_takes_its_own_references() -> None:
    """A confirmation superseding two later suppliers sends a 55038 to each. Before, the fold
    counted only the first: the next message (here the APERAK on a retransmitted answer) reused
    the second 55038's 0020, and that LFZ's APERAK on its 55038 was refused as not ours."""
    second_lfz = "9900000005003"
    state, out = with_lfa(later_suppliers=(
        (LFZ, "2025-08-01T00:00:00+02:00"), (second_lfz, "2025-09-01T00:00:00+02:00"),
    ))  # fmt: skip
    request_ide = utilmd(out, "55010")["ide_ref"]
    refs = [m.payload["envelope"]["control_ref"] for m in out.outbox]
    state, out = run(WF, state, lfa_answer(request_ide))
    assert [r for _, pid, r in sent(out) if pid == "55038"] == [LFZ, second_lfz]
    refs += [m.payload["envelope"]["control_ref"] for m in out.outbox]
    assert state.sent == len(refs) == len(state.outbound)
    again = lfa_answer(request_ide, interchange_ref="LFA0606080002", ide_ref="LFATX000002")
    state, out = run(WF, state, again)
    [aperak] = [m.payload["envelope"]["control_ref"] for m in out.outbox]
    assert aperak not in refs
    [to_second] = [r.interchange_ref for r in state.outbound if r.recipient == second_lfz]
    rejected = ReceiveAcknowledgement(
        message_type="APERAK", sender=second_lfz, referenced_interchange_ref=to_second, positive=False,
        codes=("Z29",), interchange_ref="ACK0001", message_ref="1", received_at=berlin(2025, 6, 6, 8, 0),
    )
    run(WF, state, rejected)  # recorded, not refused as another party's interchange


def test_late_lfa_answer_is_acknowledged_and_ignored() -> None:
    state, out = with_lfa()
    request_ide = utilmd(out, "55010")["ide_ref"]
    state, _ = run(WF, state, LfaAnswerDeadlinePassed(due_at=berlin(2025, 6, 10, 9, 0)))
    late = lfa_answer(request_ide, pid="55012", answer_code="A35",
                      received_at="2025-06-10T09:05:00+02:00")
    after, out = run(WF, state, late)
    assert [type(e) for e in out.events] == [ev.LateLfaAnswerIgnored]
    assert sent(out) == [("APERAK", "312", LFA)]
    assert after.status is Status.CONFIRMED


def test_answer_received_after_nine_counts_as_silence_even_before_the_timer_fired() -> None:
    """Decided as the Frist would have, first and at 09:00, then ignored as a late answer: the
    same messages, stamps and references as when the timer fired first (a replay, or a node
    running at 09:00). Before, the 55002/55037 carried the answer's receipt instant and came
    after its APERAK, so their DTM+137 and every reference differed."""
    state, out = with_lfa()
    request_ide = utilmd(out, "55010")["ide_ref"]
    late = lfa_answer(request_ide, pid="55012", answer_code="A35",
                      received_at="2025-06-10T09:00:01+02:00")
    after, out = run(WF, state, late)
    assert [type(e) for e in out.events] == [ev.LfaDeemedToAgree, ev.AnmeldungDecided,
                                             ev.LateLfaAnswerIgnored]
    assert sent(out) == [("UTILMD", "55002", LFN), ("UTILMD", "55037", LFA), ("APERAK", "312", LFA)]
    assert out.cancel_deadlines == ("lfa_answer",)
    assert after.status is Status.CONFIRMED and after.lfa_deemed
    fired, first = run(WF, state, LfaAnswerDeadlinePassed(due_at=berlin(2025, 6, 10, 9, 0)))
    _, then = run(WF, fired, late)
    assert [m.payload for m in out.outbox] == [m.payload for m in first.outbox + then.outbox]


def test_answer_at_exactly_nine_is_in_time() -> None:
    state, out = with_lfa()
    request_ide = utilmd(out, "55010")["ide_ref"]
    _, out = run(WF, state, lfa_answer(request_ide, pid="55012", answer_code="A35",
                                       received_at="2025-06-10T09:00:00+02:00"))
    assert sent(out)[-1] == ("UTILMD", "55003", LFN)


def test_deadline_after_answer_needs_no_compensation() -> None:
    state, out = with_lfa()
    state, _ = run(WF, state, lfa_answer(utilmd(out, "55010")["ide_ref"]))
    assert WF.on_deadline(deadline_of(state, "lfa_answer", berlin(2025, 6, 10, 9, 0)), state) is None
    assert not WF.handle(state, LfaAnswerDeadlinePassed(due_at=berlin(2025, 6, 10, 9, 0))).events


def test_lfa_answer_from_another_party_is_rejected_by_aperak_and_changes_nothing() -> None:
    state, out = with_lfa()
    request_ide = utilmd(out, "55010")["ide_ref"]
    after, out = run(WF, state, lfa_answer(request_ide, sender=LFZ))
    assert [type(e) for e in out.events] == [ev.InboundRejected]
    assert sent(out) == [("APERAK", "313", LFZ)]
    assert [e["code"] for e in out.outbox[0].payload["errors"]] == ["Z17"]
    assert not out.cancel_deadlines
    assert after.status is Status.AWAITING_LFA


def test_lfa_answer_to_unknown_request_and_55012_without_code() -> None:
    state, out = with_lfa()
    _, out = run(WF, state, lfa_answer("NOTOURS", pid="55012", answer_code=None))
    codes = [e["code"] for e in out.outbox[0].payload["errors"]]
    assert codes == ["Z29", "Z10"]


# -- E_0622 ------------------------------------------------------------------------------------


def test_vorlauffrist_missed_rejects_with_55003_e0622_a07() -> None:
    late = anmeldung(received_at="2025-06-17T08:00:00+02:00", zuordnungsbeginn="2025-06-18T00:00:00+02:00",
                     current_supplier=LFA)
    state, out = start(late)
    assert sent(out) == [("APERAK", "312", LFN), ("UTILMD", "55003", LFN)]
    tx = utilmd(out, "55003")
    assert (tx["answer_code"], tx["answer_ebd"]) == ("A07", "E_0622")
    assert not out.deadlines
    assert state.status is Status.REJECTED
    assert not any(k.startswith("malo:") for k in out.register_keys)


def test_vorlauffrist_met_on_the_last_possible_day() -> None:
    _, out = start(anmeldung(received_at="2025-06-16T23:59:00+02:00",
                             zuordnungsbeginn="2025-06-18T00:00:00+02:00"))
    assert sent(out)[-1] == ("UTILMD", "55002", LFN)


def test_back_dated_anmeldung_is_rejected() -> None:
    _, out = start(anmeldung(zuordnungsbeginn="2025-06-01T00:00:00+02:00"))
    assert utilmd(out, "55003")["answer_code"] == "A07"


def test_competing_process_rejects_with_a06_and_retry_dates() -> None:
    state, out = start(anmeldung(
        competing_process=True, competing_start=START, competing_next_date="2025-06-20T00:00:00+02:00"
    ))
    tx = utilmd(out, "55003")
    assert (tx["answer_code"], tx["answer_ebd"]) == ("A06", "E_0622")
    assert datetime.fromisoformat(tx["next_processing_date"]) == berlin(2025, 6, 20, 0, 0)
    assert state.status is Status.REJECTED
    assert not any(k.startswith("malo:") for k in out.register_keys)


def test_a06_never_names_a_past_instant_to_try_again() -> None:
    """E_0622 A06/A45: DTM+Z08 is when the NB takes Anmeldungen for the MaLo again. A competing
    claim past its Frist (waiting for an operator) gave its Frist: days before the answer was
    sent. It is the receipt then (Anmeldungen are taken from now on)."""
    _, out = start(anmeldung(
        competing_process=True, competing_start=START, competing_next_date="2025-06-01T00:00:00+02:00"
    ))
    tx = utilmd(out, "55003")
    assert tx["answer_code"] == "A06"
    assert datetime.fromisoformat(tx["next_processing_date"]) == datetime.fromisoformat(THU_1430)


# -- 55077 ------------------------------------------------------------------------------------


def test_generating_malo_confirmed_with_55078_a58() -> None:
    _, out = start(anmeldung(pid="55077"))
    assert sent(out) == [("APERAK", "312", LFN), ("UTILMD", "55078", LFN)]
    assert utilmd(out, "55078")["answer_code"] == "A58"


def test_generating_malo_objection_gives_55080_a57() -> None:
    state, out = start(anmeldung(pid="55077", current_supplier=LFA))
    request_ide = utilmd(out, "55010")["ide_ref"]
    _, out = run(WF, state, lfa_answer(request_ide, pid="55012", answer_code="A39"))
    tx = utilmd(out, "55080")
    assert (tx["answer_code"], tx["lfa_answer_code"]) == ("A57", "A39")
    # S1 FV2504 55080 [84] with A57: SG12 NAD+VY (the LFA, [566]) and its RFF+Z18 (the MaLo).
    raw = rendered(out, "55080")
    assert f"NAD+VY+{LFA}::293'RFF+Z18:{MALO}'".encode() in raw and check_structure(raw) == []


@pytest.mark.parametrize(
    ("detail", "received_at", "start_at", "code"),
    [
        ("ZW0", "2025-06-30T10:00:00+02:00", START, "A34"),
        ("ZW1", "2025-06-30T10:00:00+02:00", START, "A30"),
        ("ZW2", "2025-07-01T10:00:00+02:00", "2025-07-02T00:00:00+02:00", "A35"),
        ("ZW2", "2025-06-30T10:00:00+02:00", START, "A44"),
    ],
)
def test_generating_malo_vorlauffrist_gives_55080_by_geschaeftsvorfall(
    detail: str | None, received_at: str, start_at: str, code: str
) -> None:
    # E_0622 erz. branch (no A07 there): the lead time of the Geschäftsvorfall, non-EEG/KWKG †;
    # a GV3 start on the 1st of a month needs one month (step 810, A44)
    late = anmeldung(
        pid="55077", received_at=received_at, transaction_detail=detail, zuordnungsbeginn=start_at,
        tranche_malo=TRANCHE_OF if detail == "ZW1" else None,  # GV2: ``malo`` is a Tranche of it
    )
    _, out = start(late)
    tx = utilmd(out, "55080")
    assert (tx["answer_code"], tx["answer_ebd"]) == (code, "E_0622")


@pytest.mark.parametrize("detail", [None, "ZW4"])
def test_a_generating_anmeldung_without_its_geschaeftsvorfall_is_not_received(detail: str | None) -> None:
    """AHB-FACTS §3: a 55077's STS+7 #2 is its GV (ZW0|ZW1|ZW2), which E_0622 decides by and the
    55078 repeats: missing, APERAK Z29; another code, Z39 (not guessed as GV1)."""
    _, out = start(anmeldung(pid="55077", transaction_detail=detail))
    assert sent(out) == [("APERAK", "313", LFN)]
    (error,) = out.outbox[0].payload["errors"]
    assert error["code"] == ("Z29" if detail is None else "Z39")


@pytest.mark.parametrize(
    ("received_at", "start_at", "answer"),
    [
        # E_0622 step 800 -> 810: GV3 on the 1st of a month needs one month of lead time
        ("2025-06-05T14:30:00+02:00", "2025-07-01T00:00:00+02:00", ("55080", "A44")),
        ("2025-06-02T08:00:00+02:00", "2025-07-01T00:00:00+02:00", ("55080", "A44")),
        # lead time kept: E_0623 waits for the NB to form the Tranche (steps 520-600), no answer yet
        ("2025-06-01T23:00:00+02:00", "2025-07-01T00:00:00+02:00", None),
        ("2025-05-31T22:30:00+00:00", "2025-07-01T00:00:00+02:00", None),  # 1 June in Berlin
        ("2025-02-28T09:00:00+01:00", "2025-03-31T00:00:00+02:00", None),  # not the 1st: step 806
        ("2025-06-05T14:30:00+02:00", "2025-07-15T00:00:00+02:00", None),  # mid-month
    ],
)
def test_a_gv3_anmeldung_for_the_first_of_a_month_needs_one_month_of_lead_time(
    received_at: str, start_at: str, answer: tuple[str, str] | None
) -> None:
    gv3 = anmeldung(pid="55077", transaction_detail="ZW2", received_at=received_at, zuordnungsbeginn=start_at)
    state, out = start(gv3)
    if answer is None:
        assert sent(out) == [("APERAK", "312", LFN)] and state.status is Status.AWAITING_OPERATOR
        return
    pid, code = answer
    assert utilmd(out, pid)["answer_code"] == code


@pytest.mark.parametrize(
    ("received_at", "start_at", "met"),
    [
        ("2025-06-01T12:00:00+02:00", "2025-07-01T00:00:00+02:00", True),
        ("2025-06-02T00:00:00+02:00", "2025-07-01T00:00:00+02:00", False),
        ("2024-12-01T09:00:00+01:00", "2025-01-01T00:00:00+01:00", True),  # across the year
        ("2025-02-28T09:00:00+01:00", "2025-03-31T00:00:00+02:00", True),  # 31 Mar -> 28 Feb
        ("2025-03-01T09:00:00+01:00", "2025-03-31T00:00:00+02:00", False),
    ],
)
def test_one_month_of_lead_time_counts_calendar_months(received_at: str, start_at: str, met: bool) -> None:
    received, begins = datetime.fromisoformat(received_at), datetime.fromisoformat(start_at)
    assert month_vorlauffrist_met(received, begins) is met


def test_only_gv3_takes_the_month_rule() -> None:
    # GV1 (ZW0) on the 1st with 26 days of lead time: the non-EEG/KWKG lead time (step 406) is met
    _, out = start(anmeldung(pid="55077", transaction_detail="ZW0", received_at=THU_1430))
    assert utilmd(out, "55078")["answer_code"] == "A58"


def test_generating_malo_competes_before_its_lead_time_is_checked() -> None:
    late = anmeldung(
        pid="55077", received_at="2025-06-30T10:00:00+02:00", competing_process=True,
        competing_start=START, competing_next_date="2025-07-01T00:00:00+02:00",
    )
    _, out = start(late)
    tx = utilmd(out, "55080")
    assert tx["answer_code"] == "A45"
    # §3 Muss [355] with A45: the competing start (Z07) and when to try again (Z08)
    assert datetime.fromisoformat(tx["processing_start"]) == datetime.fromisoformat(START)
    assert datetime.fromisoformat(tx["next_processing_date"]) == berlin(2025, 7, 1, 0, 0)


def test_a_competing_process_without_its_dates_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgument, match="competing_start and competing_next_date"):
        anmeldung(competing_process=True)


# -- 55004 ------------------------------------------------------------------------------------


def test_abmeldung_confirmed_with_55005() -> None:
    state, out = start(abmeldung())
    assert sent(out) == [("APERAK", "312", LFA), ("UTILMD", "55005", LFA)]
    tx = utilmd(out, "55005")
    assert tx["answer_ebd"] == "E_0607" and tx["request_ref"] == "LFATX000009"
    assert datetime.fromisoformat(tx["end"]) == datetime.fromisoformat(START)
    received = out.events[0]
    assert isinstance(received, ev.AbmeldungReceived)
    assert received.fristen.due["decision"] == berlin(2025, 6, 10, 6, 0)
    assert state.status is Status.CONFIRMED


def test_abmeldung_not_after_the_uet_is_rejected_with_55006_a02() -> None:
    state, out = start(abmeldung(zuordnungsende="2025-06-05T00:00:00+02:00"))
    assert utilmd(out, "55006")["answer_code"] == "A02"  # E_0607: Vorlauffrist nicht eingehalten
    assert state.status is Status.REJECTED


def test_abmeldung_by_a_supplier_not_assigned_gets_aperak_z17() -> None:
    # Not an E_0607 case (it has no such code): the sender is not assigned at that date.
    state, out = start(abmeldung(current_supplier=LFN))
    assert sent(out) == [("APERAK", "313", LFA)]
    assert [e["code"] for e in out.outbox[0].payload["errors"]] == ["Z17"]
    assert state.status is Status.NOT_RECEIVED


# -- APERAK 313: counts as not received -------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"malo": "51900000013"}, "Z14"),  # bad check digit
        ({"malo": None}, "Z29"),
        ({"sender": "990000000100"}, "Z35"),  # 12 digits
        ({"zuordnungsbeginn": "2025-07-01T06:00:00+02:00"}, "Z35"),  # not a day boundary
    ],
)
def test_bad_message_gets_negative_aperak_and_starts_nothing(overrides: dict[str, Any], code: str) -> None:
    state, out = start(anmeldung(current_supplier=LFA, **overrides))
    assert [type(e) for e in out.events] == [ev.InboundRejected]
    assert [(m, k) for m, k, _ in sent(out)] == [("APERAK", "313")]
    payload = out.outbox[0].payload
    assert [e["code"] for e in payload["errors"]] == [code]
    assert payload["errors"][0]["text"]
    assert not out.deadlines
    assert all(k.startswith("ic:") for k in out.register_keys)
    assert state.status is Status.NOT_RECEIVED


def test_abmeldung_with_bad_malo_gets_negative_aperak() -> None:
    _, out = start(abmeldung(malo="12345678901"))
    assert sent(out) == [("APERAK", "313", LFA)]


def test_mp_id_check_digit_is_a_setting() -> None:
    bad_check = "9900000001002"
    _, out = start(anmeldung(sender=bad_check))
    assert sent(out)[-1][1] == "55002"  # default: warn
    received = out.events[0]
    assert isinstance(received, ev.AnmeldungReceived) and received.warnings
    strict = GpkeNbWorkflow(GpkeConfig(mp_id_check=MpIdCheck.STRICT))
    _, out = start(anmeldung(sender=bad_check), strict)
    assert sent(out) == [("APERAK", "313", bad_check)]


# -- references, versions, misuse -------------------------------------------------------------


def test_outbound_references_are_deterministic_and_fit_edifact_limits() -> None:
    _, first = with_lfa()
    _, again = with_lfa()
    assert [m.payload for m in first.outbox] == [m.payload for m in again.outbox]
    refs = {m.payload["envelope"]["control_ref"] for m in first.outbox}
    assert len(refs) == 3 and all(len(r) <= 14 for r in refs)
    [consulted] = [e for e in first.events if isinstance(e, ev.LfaConsulted)]
    assert consulted.request.interchange_ref == first.outbox[2].payload["envelope"]["control_ref"]
    assert consulted.request.ide_ref == utilmd(first, "55010")["ide_ref"]


def test_fv2510_and_fv2604_are_accepted_unknown_fv_is_a_typed_error() -> None:
    for fv in ("FV2510", "FV2604", "FV2025-06-06", "FV2025-10-01"):
        _, out = start(anmeldung(format_version=fv))
        assert sent(out)[-1][1] == "55002"
    with pytest.raises(UnsupportedFormatVersion):
        start(anmeldung(format_version="FV2310"))


def test_second_trigger_to_a_running_process_is_refused() -> None:
    state, _ = with_lfa()
    with pytest.raises(WorkflowError):
        WF.handle(state, anmeldung())


def test_events_round_trip_through_plain_data() -> None:
    _, out = with_lfa()
    for event in out.events:
        model = WF.event_model(event.event_type)
        assert model.model_validate(event.model_dump(mode="json")) == event


def test_receipt_instant_in_utc_gives_the_berlin_uet() -> None:
    _, out = with_lfa(received_at=datetime(2025, 6, 5, 23, 30, tzinfo=UTC))
    assert out.deadlines[0].due_at == berlin(2025, 6, 10, 9, 0)
