"""Geschäftsvorfall 3 (a 55077 with STS+7 #2 ZW2: a new Tranche of a generating MaLo), E_0623
steps 500-600 of the machine-readable trees (EBD 4.1-4.3): the supplier asked objecting is A53;
otherwise no message can confirm it before the NB has formed the Tranche (its ID, its share),
so the process awaits an operator: ``FormTranche`` gives the 55078 with A56 (A55 with shares
missing) naming the MaLo, the new Tranche and its share; ``RejectTrancheRequest`` the 55080 with
A54. Never A58, which E_0623 gives Geschäftsvorfall 1 and 2 only, and never a 55037: the LFA
keeps the rest of the MaLo."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from gpke_support import LFA, LFN, MALO, anmeldung, lfa_answer, run, sent, utilmd

from mako_actors.edifact import render_outbound
from mako_actors.edifact.structure import check_structure
from mako_actors.errors import WorkflowError
from mako_actors.gpke import (
    DECISION_DEADLINE,
    DeemLfaAgreement,
    FormTranche,
    GpkeNbWorkflow,
    GpkeState,
    RejectAnmeldung,
    RejectTrancheRequest,
    Status,
    parse_command,
)
from mako_actors.gpke import events as ev

WF = GpkeNbWorkflow()
TRANCHE = "41234567896"  # the ID the NB forms (a MaLo-ID's format)
DECIDED = datetime.fromisoformat("2025-06-06T10:00:00+02:00")


def gv3(**overrides: Any) -> Any:
    """A GV3 Anmeldung received 05.06.2025 for 15.07. (not the 1st of a month: lead time kept)."""
    values = {"pid": "55077", "transaction_detail": "ZW2", "zuordnungsbeginn": "2025-07-15T00:00:00+02:00"}
    return anmeldung(**(values | overrides))


def awaiting(**overrides: Any) -> tuple[GpkeState, Any]:
    """A GV3 that passed E_0622 without an LFA: it waits for the Tranche."""
    state, out = run(WF, WF.initial_state(), gv3(**overrides))
    assert state.status is Status.AWAITING_OPERATOR
    return state, out


def asked_and_agreed() -> GpkeState:
    """A GV3 whose supplier of the MaLo was asked (55010) and agreed: it waits for the Tranche,
    past E_0623 step 510, so steps 520-540 (A54, A55) may follow."""
    state, out = run(WF, WF.initial_state(), gv3(current_supplier=LFA))
    request = utilmd(out, "55010")["ide_ref"]
    state, _ = run(WF, state, lfa_answer(request, received_at="2025-06-06T08:00:00+02:00"))
    assert state.status is Status.AWAITING_OPERATOR
    return state


def form(**overrides: Any) -> FormTranche:
    values: dict[str, Any] = {"decided_at": DECIDED, "tranche": TRANCHE, "percent": "30", "reason": "PV"}
    return FormTranche(**(values | overrides))


def test_a_gv3_that_passes_e_0622_sends_nothing_but_awaits_its_tranche() -> None:
    _, out = awaiting()
    assert sent(out) == [("APERAK", "312", LFN)]  # no 55078 A58
    assert [type(e) for e in out.events][-1] is ev.TrancheFormationAwaited
    # The NB's own 11:00 Frist runs as a timer while the operator decides; the MaLo stays claimed.
    assert [d.label for d in out.deadlines] == [DECISION_DEADLINE]
    assert [entry["kind"] for _, entry in out.journal] == ["claimed"]


@pytest.mark.parametrize(("shares_missing", "code"), [(False, "A56"), (True, "A55")])
def test_forming_the_tranche_confirms_with_the_malo_the_tranche_and_its_share(
    shares_missing: bool, code: str
) -> None:
    state = asked_and_agreed() if shares_missing else awaiting()[0]
    state, out = run(WF, state, form(shares_missing=shares_missing))
    assert sent(out) == [("UTILMD", "55078", LFN)]
    tx = utilmd(out, "55078")
    assert (tx["answer_code"], tx["answer_ebd"]) == (code, "E_0623")
    assert (tx["malo"], tx["tranche"]) == (MALO, TRANCHE)
    assert (tx["tranche_basis"], tx["tranche_percent"]) == ("ZD1", "30")
    raw = render_outbound("UTILMD", out.outbox[0].payload)
    assert f"LOC+Z16+{MALO}'LOC+Z21+{TRANCHE}'".encode() in raw
    assert b"SEQ+Z15'QTY+11:30:P1'CCI+Z37++ZD1'" in raw and check_structure(raw) == []
    assert state.status is Status.CONFIRMED and state.answer_code == code
    # The claim on the MaLo ends; the Tranche's supplier is master data from now on.
    assert [entry["kind"] for _, entry in out.journal] == ["released"]
    assert out.cancel_deadlines == (DECISION_DEADLINE,)


def test_with_an_lfa_that_agrees_the_tranche_is_awaited_and_no_55037_goes_out() -> None:
    state, out = run(WF, WF.initial_state(), gv3(current_supplier=LFA))
    request = utilmd(out, "55010")["ide_ref"]
    state, out = run(WF, state, lfa_answer(request, received_at="2025-06-06T08:00:00+02:00"))
    assert sent(out) == [("APERAK", "312", LFA)] and state.status is Status.AWAITING_OPERATOR
    state, out = run(WF, state, form())
    assert sent(out) == [("UTILMD", "55078", LFN)]  # the LFA keeps the rest of the MaLo


@pytest.mark.parametrize("code", ["A39", "A41"])
def test_an_lfa_objecting_rejects_with_a53_without_its_code(code: str) -> None:
    """Step 510 asks whether a request was agreed to: every Ablehnung is none, A41 too (its
    exception is step 440's, in GV1/GV2). Before, a GV3's A41 counted as agreement."""
    state, out = run(WF, WF.initial_state(), gv3(current_supplier=LFA))
    request = utilmd(out, "55010")["ide_ref"]
    objection = lfa_answer(
        request, pid="55012", answer_code=code, received_at="2025-06-06T08:00:00+02:00"
    )
    state, out = run(WF, state, objection)
    tx = utilmd(out, "55080")
    assert (tx["answer_code"], tx["answer_ebd"]) == ("A53", "E_0623")
    assert "lfa_answer_code" not in tx and "other_party_id" not in tx  # STS+Z35 only with A57 ([84])
    assert state.status is Status.REJECTED


def test_a_share_not_free_rejects_with_a54() -> None:
    state = asked_and_agreed()
    state, out = run(WF, state, RejectTrancheRequest(decided_at=DECIDED, reason="nur 20 % frei"))
    assert (utilmd(out, "55080")["answer_code"], state.status) == ("A54", Status.REJECTED)
    assert [entry["kind"] for _, entry in out.journal] == ["released"]


def test_a_gv3_of_the_supplier_holding_the_malo_asks_it_by_55010_and_may_then_reach_a54_or_a55() -> None:
    """E_0622 step 830: the share is not free where a supplier holds the MaLo, and the Anfrage
    goes "an alle LFA und an den Anmeldenden". The sender holding the whole MaLo was asked
    nothing (the LFA was taken as another supplier only), so E_0623 step 500 said no and
    neither A54 nor A55 could follow (found by an EBD oracle review). No 55036: it informs of
    another supplier."""
    state, out = run(WF, WF.initial_state(), gv3(current_supplier=LFN))
    assert sent(out) == [("APERAK", "312", LFN), ("UTILMD", "55010", LFN)]
    request = utilmd(out, "55010")["ide_ref"]
    answer = lfa_answer(request, sender=LFN, received_at="2025-06-06T08:00:00+02:00")
    agreed, out = run(WF, state, answer)
    assert sent(out) == [("APERAK", "312", LFN)] and agreed.status is Status.AWAITING_OPERATOR
    rejected, out = run(WF, agreed, RejectTrancheRequest(decided_at=DECIDED, reason="nur 20 % frei"))
    assert (utilmd(out, "55080")["answer_code"], rejected.status) == ("A54", Status.REJECTED)
    _, out = run(WF, agreed, form(shares_missing=True))
    assert sent(out) == [("UTILMD", "55078", LFN)] and utilmd(out, "55078")["answer_code"] == "A55"
    at = answer.received_at
    objection = lfa_answer(request, sender=LFN, pid="55012", answer_code="A39", received_at=at)
    _, out = run(WF, state, objection)
    assert utilmd(out, "55080")["answer_code"] == "A53"  # step 510: no request was agreed to


def test_a_gv1_of_the_supplier_holding_the_malo_asks_nobody() -> None:
    """Outside a Geschäftsvorfall 3 the sender's own supply needs no Anfrage (E_0621)."""
    state, out = run(WF, WF.initial_state(), gv3(current_supplier=LFN, transaction_detail="ZW0"))
    assert [pid for _, pid, _ in sent(out)] == ["312", "55078"] and state.status is Status.CONFIRMED


def test_without_a_supplier_asked_only_a56_or_a99_can_follow() -> None:
    """E_0623 step 500: no request sent goes to step 600 (A56 or A99); A54 (step 520) and A55
    (steps 530/540) need a request agreed to. Before, the operator could send either."""
    state, _ = awaiting()
    with pytest.raises(WorkflowError, match="step 500"):
        run(WF, state, RejectTrancheRequest(decided_at=DECIDED, reason="share taken"))
    with pytest.raises(WorkflowError, match="step 500"):
        run(WF, state, form(shares_missing=True))


def test_the_operator_may_reject_a_gv3_with_a99_but_not_deem_it_agreed() -> None:
    state, _ = awaiting()
    with pytest.raises(WorkflowError, match="a Geschäftsvorfall 3 goes on by its Tranche"):
        run(WF, state, DeemLfaAgreement(decided_at=DECIDED, reason="x"))
    _, out = run(WF, state, RejectAnmeldung(decided_at=DECIDED, text="Anlage stillgelegt"))
    assert utilmd(out, "55080")["answer_code"] == "A99"


def test_tranche_decisions_are_only_for_a_gv3_awaiting_its_tranche() -> None:
    state, _ = run(WF, WF.initial_state(), anmeldung(pid="55077", current_supplier=LFA))  # GV1
    with pytest.raises(WorkflowError, match="awaiting an operator; this one is awaiting_lfa"):
        run(WF, state, form())
    state, _ = awaiting()
    done, _ = run(WF, state, form())
    with pytest.raises(WorkflowError, match="this one is confirmed"):
        run(WF, done, RejectTrancheRequest(decided_at=DECIDED, reason="x"))


def test_form_tranche_checks_the_tranche_id_and_share() -> None:
    assert parse_command({"kind": "form_tranche", "decided_at": DECIDED.isoformat(), "tranche": TRANCHE,
                          "percent": 12.5, "reason": "x"}) == form(percent="12.5", reason="x")  # fmt: skip
    with pytest.raises(ValueError, match="no Tranche-ID"):
        form(tranche="41234567890")  # its check digit is wrong
    with pytest.raises(ValueError, match="'tranche_percent' is '100'"):
        form(percent="100")


def test_an_unanswered_gv3_is_overdue_at_11_00_and_can_still_be_formed() -> None:
    state, out = awaiting()
    [deadline] = out.deadlines
    command = WF.on_deadline(_as_deadline(deadline), state)
    assert command is not None
    state, out = run(WF, state, command)
    assert [type(e) for e in out.events] == [ev.DecisionOverdue] and state.status is Status.AWAITING_OPERATOR
    state, out = run(WF, state, form(decided_at=DECIDED + timedelta(hours=3)))
    assert utilmd(out, "55078")["answer_code"] == "A56"


def _as_deadline(pending: Any) -> Any:
    from mako_actors.deadlines import Deadline
    from mako_actors.ids import DeadlineId, ProcessId, StreamId, TenantId
    from mako_actors.version import WorkflowId

    process = ProcessId.new()
    tenant = TenantId.from_party_id("9900000002009")
    return Deadline(
        deadline_id=DeadlineId.new(), stream_id=StreamId.for_process(tenant, process), process_id=process,
        tenant_id=tenant, workflow_id=WorkflowId.new("gpke-nb", "FV2504"), label=pending.label,
        due_at=pending.due_at, payload=pending.payload,
    )  # fmt: skip


def test_forming_without_a_percentage_takes_the_share_the_anmeldung_asked_for() -> None:
    state, out = awaiting(requested_share="25")
    assert [type(e) for e in out.events][1] is ev.TrancheRequested and state.requested_share == "25"
    _, out = run(WF, state, form(percent=None))
    assert utilmd(out, "55078")["tranche_percent"] == "25"
    state, _ = awaiting()  # it asked for none: the operator must say what was formed
    with pytest.raises(WorkflowError, match="named no share"):
        run(WF, state, form(percent=None))
