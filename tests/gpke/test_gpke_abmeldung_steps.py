"""E_0607 for an Abmeldung at a date the sender's supply already ends at (EBD 4.1, steps
100-140 consuming, 580-620 generating): decided by the new reason, the reason of the end
confirmed before, and whether the sender holds the MaLo after the date all the same."""

from __future__ import annotations

import pytest
from gpke_support import LFA, abmeldung, run, sent, utilmd

from mako_actors.gpke import GpkeNbWorkflow

WF = GpkeNbWorkflow()
FEB_1 = "2026-02-01T00:00:00+01:00"  # a generating MaLo's end: the 1st of a month, > 1 month ahead


def answer(**overrides: object) -> tuple[str, str]:
    _, out = run(WF, WF.initial_state(), abmeldung(already_ended=True, **overrides))
    [(_, pid, recipient)] = [s for s in sent(out) if s[0] == "UTILMD"]
    assert recipient == LFA and pid is not None
    return pid, utilmd(out, pid)["answer_code"]


@pytest.mark.parametrize(
    ("reason", "ended_reason", "still_assigned", "expected"),
    [
        ("ZT4", "ZT4", True, ("55005", "A11")),  # step 110: assigned again → 140
        ("ZT4", "Z33", False, ("55006", "A09")),  # step 120: no move-out now
        ("E01", "ZT4", False, ("55005", "A11")),  # step 130 → 140: a Kündigung before
        ("E01", "Z41", False, ("55005", "A11")),
        ("Z33", "E01", False, ("55006", "A10")),  # step 130: a move-out before as well
        ("Z33", None, False, ("55006", "A10")),  # ended by another's start: no such reason
    ],
)
def test_consuming(
    reason: str, ended_reason: str | None, still_assigned: bool, expected: tuple[str, str]
) -> None:
    current = LFA if still_assigned else None
    assert answer(
        transaction_reason=reason, ended_reason=ended_reason, still_assigned=still_assigned,
        current_supplier=current,
    ) == expected  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "ended_reason", "still_assigned", "expected"),
    [
        ("ZT4", "ZT4", True, ("55006", "A25")),  # step 590 → 600: not Z33
        ("Z33", "ZT4", True, ("55005", "A27")),  # 600 → 610: a Kündigung before → 620
        ("Z33", "E01", True, ("55006", "A26")),
        ("ZT4", "ZH2", False, ("55005", "A27")),  # 590 → 610
        ("ZT4", "Z41", False, ("55006", "A26")),  # Z41 is no reason of the generating list
    ],
)
def test_generating(reason: str, ended_reason: str, still_assigned: bool, expected: tuple[str, str]) -> None:
    current = LFA if still_assigned else None
    assert answer(
        transaction_reason=reason, ended_reason=ended_reason, still_assigned=still_assigned,
        current_supplier=current, transaction_detail="ZW3", zuordnungsende=FEB_1,
    ) == expected  # fmt: skip


@pytest.mark.parametrize(
    ("esv_from", "expected"),
    [
        ("2025-09-01T00:00:00+02:00", ("55005", "A11")),  # 3 months before the end, to the day
        ("2025-08-31T00:00:00+02:00", ("55006", "A05")),  # a day more
        ("2025-11-15T00:00:00+01:00", ("55005", "A11")),
        ("2025-12-15T00:00:00+01:00", ("55006", "A05")),  # begins after the supply it would end
        (None, ("55005", "A11")),  # not known from the master data: not checked
    ],
)
def test_ende_der_esv_needs_an_ersatzversorgung_begun_within_3_months(
    esv_from: str | None, expected: tuple[str, str]
) -> None:
    """E_0607 steps 70/80: an Abmeldung "Ende der ESV ohne Folgelieferung" (Z41) ends an
    Ersatz-/Grundversorgung the NB registered within the 3 months before its end (else A05)."""
    _, out = run(WF, WF.initial_state(), abmeldung(
        transaction_reason="Z41", zuordnungsende="2025-12-01T00:00:00+01:00", malo_esv_from=esv_from,
    ))  # fmt: skip
    [(_, pid, _)] = [s for s in sent(out) if s[0] == "UTILMD"]
    assert (pid, utilmd(out, pid)["answer_code"]) == expected


@pytest.mark.parametrize("reason", ["ZT4", "E01"])
def test_only_the_end_of_an_esv_asks_when_it_began(reason: str) -> None:
    _, out = run(WF, WF.initial_state(), abmeldung(
        transaction_reason=reason, zuordnungsende="2025-12-01T00:00:00+01:00",
        malo_esv_from="2024-01-01T00:00:00+01:00",
    ))  # fmt: skip
    assert utilmd(out, "55005")["answer_code"] == "A11"


@pytest.mark.parametrize(
    ("resting", "expected"),
    [
        (False, ("55006", "A01")),  # step 30: its supply was not started for a ruhende MaLo
        (True, ("55005", "A11")),
        (None, ("55005", "A11")),  # not known (an imported assignment): not checked
    ],
)
def test_a_zap_abmeldung_must_end_the_supply_of_a_ruhende_malo(
    resting: bool | None, expected: tuple[str, str]
) -> None:
    _, out = run(WF, WF.initial_state(), abmeldung(transaction_detail="ZAP", malo_resting=resting))
    [(_, pid, _)] = [s for s in sent(out) if s[0] == "UTILMD"]
    assert (pid, utilmd(out, pid)["answer_code"]) == expected


def test_step_30_comes_before_the_vorlauffrist() -> None:
    late = abmeldung(
        transaction_detail="ZAP", malo_resting=False, received_at="2025-12-01T08:00:00+01:00",
        zuordnungsende="2025-12-01T00:00:00+01:00",
    )  # fmt: skip
    _, out = run(WF, WF.initial_state(), late)
    assert utilmd(out, "55006")["answer_code"] == "A01"


def test_only_a_zap_abmeldung_is_asked_step_30() -> None:
    _, out = run(WF, WF.initial_state(), abmeldung(transaction_detail="ZW4", malo_resting=False))
    assert utilmd(out, "55005")["answer_code"] == "A11"
