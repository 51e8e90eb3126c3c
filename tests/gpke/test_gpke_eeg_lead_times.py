"""E_0622's lead times of an EEG/KWKG MaLo (machine-readable trees FV2504-FV2610).

Steps 405/605/805 ask whether the generating MaLo is "Nicht-EEG/KWKG"; when it is not (master
data ``eeg_kwkg``), Geschäftsvorfall 1 must start on the 1st of a month (410, A27) with one
month of lead time (430, A28), or 5 WT in a verkürzter Wechsel out of the Ausfallvergütung
(420/440, A29); Geschäftsvorfall 2 likewise without the verkürzte one (620/630, A31/A32); and
Geschäftsvorfall 3 takes one month whatever its start (805 -> 810, A44). A Nicht-EEG/KWKG MaLo
(or one the master data say nothing about) keeps the short lead time (A34/A30/A35).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest
from gpke_support import LFN, TRANCHE_OF, anmeldung, run, sent, utilmd

from mako_actors.gpke import GpkeNbWorkflow, GpkeState, Status
from mako_actors.gpke.calendar import BERLIN, werktage_vorlauffrist_met

WF = GpkeNbWorkflow()
JULY = "2025-07-01T00:00:00+02:00"  # a Tuesday; its 5th Werktag before is Tuesday 24 June
MID_JULY = "2025-07-15T00:00:00+02:00"


def start(**values: Any) -> tuple[GpkeState, list[tuple[str, str, str]], str | None]:
    """A 55077 from LFN (no LFA): its state, what was sent and the 55080's answer code, if any."""
    if values.get("transaction_detail") == "ZW1":  # GV2: the MaLo is a Tranche of TRANCHE_OF
        values = {"tranche_malo": TRANCHE_OF, "tranche_percent": "50", **values}
    state, out = run(WF, WF.initial_state(), anmeldung(pid="55077", **values))
    code = utilmd(out, "55080")["answer_code"] if ("UTILMD", "55080", LFN) in sent(out) else None
    return state, sent(out), code


@pytest.mark.parametrize(
    ("detail", "received_at", "start_at", "eeg", "code"),
    [
        # GV1: the 1st of a month (410), one month of lead time (430)
        ("ZW0", "2025-06-05T14:30:00+02:00", MID_JULY, True, "A27"),
        ("ZW0", "2025-06-05T14:30:00+02:00", JULY, True, "A28"),
        ("ZW0", "2025-06-01T23:00:00+02:00", JULY, True, None),
        # the same Anmeldungen of a Nicht-EEG/KWKG MaLo, or one not known to be EEG/KWKG (406)
        ("ZW0", "2025-06-05T14:30:00+02:00", MID_JULY, False, None),
        ("ZW0", "2025-06-05T14:30:00+02:00", JULY, None, None),
        ("ZW0", "2025-06-30T09:00:00+02:00", JULY, None, "A34"),
        # GV2: the 1st of a month (620), one month (630); Nicht-EEG/KWKG: 610
        ("ZW1", "2025-06-05T14:30:00+02:00", MID_JULY, True, "A31"),
        ("ZW1", "2025-06-05T14:30:00+02:00", JULY, True, "A32"),
        ("ZW1", "2025-05-30T10:00:00+02:00", JULY, True, None),
        ("ZW1", "2025-06-05T14:30:00+02:00", MID_JULY, False, None),
        ("ZW1", "2025-06-30T09:00:00+02:00", JULY, False, "A30"),
        # GV3 of an EEG/KWKG MaLo: one month even mid-month (805 -> 810); else 806 (A35)
        ("ZW2", "2025-06-20T10:00:00+02:00", MID_JULY, True, "A44"),
        ("ZW2", "2025-06-20T10:00:00+02:00", MID_JULY, False, None),
        ("ZW2", "2025-07-14T10:00:00+02:00", MID_JULY, False, "A35"),
    ],
)
def test_a_generating_malo_gets_the_lead_time_of_its_kind_and_geschaeftsvorfall(
    detail: str, received_at: str, start_at: str, eeg: bool | None, code: str | None
) -> None:
    state, _, answer = start(
        transaction_detail=detail, received_at=received_at, zuordnungsbeginn=start_at, malo_eeg_kwkg=eeg
    )
    assert answer == code
    if code is not None:
        assert state.status is Status.REJECTED
    else:  # taken: GV1/GV2 confirmed (no LFA), GV3 waits for the NB to form the Tranche
        expected = Status.AWAITING_OPERATOR if detail == "ZW2" else Status.CONFIRMED
        assert state.status is expected


@pytest.mark.parametrize(
    ("received_at", "code"),
    [
        ("2025-06-05T14:30:00+02:00", None),  # more than a month ahead: the 5 WT are kept too
        ("2025-06-24T23:59:00+02:00", None),  # the 5th Werktag before Tuesday 1 July
        ("2025-06-25T08:00:00+02:00", "A29"),
    ],
)
def test_leaving_the_ausfallverguetung_is_a_verkuerzter_wechsel_of_5_werktage(
    received_at: str, code: str | None
) -> None:
    _, _, answer = start(
        transaction_detail="ZW0", received_at=received_at, zuordnungsbeginn=JULY,
        malo_eeg_kwkg=True, malo_ausfallverguetung=True,
    )
    assert answer == code


def test_the_verkuerzte_wechsel_still_starts_on_the_first_of_a_month() -> None:
    _, _, answer = start(
        transaction_detail="ZW0", received_at="2025-06-05T14:30:00+02:00", zuordnungsbeginn=MID_JULY,
        malo_eeg_kwkg=True, malo_ausfallverguetung=True,
    )
    assert answer == "A27"


def test_geschaeftsvorfall_2_knows_no_verkuerzten_wechsel() -> None:
    _, _, answer = start(
        transaction_detail="ZW1", received_at="2025-06-20T10:00:00+02:00", zuordnungsbeginn=JULY,
        malo_eeg_kwkg=True, malo_ausfallverguetung=True,
    )
    assert answer == "A32"


def test_an_eeg_rejection_is_a_55080_of_e_0622_and_sends_nothing_else() -> None:
    _, out = run(WF, WF.initial_state(), anmeldung(
        pid="55077", transaction_detail="ZW0", zuordnungsbeginn=MID_JULY, malo_eeg_kwkg=True,
    ))  # fmt: skip
    assert sent(out) == [("APERAK", "312", LFN), ("UTILMD", "55080", LFN)]
    tx = utilmd(out, "55080")
    assert (tx["answer_code"], tx["answer_ebd"]) == ("A27", "E_0622")


@pytest.mark.parametrize(
    ("start_day", "latest"),
    [
        (date(2025, 7, 1), date(2025, 6, 24)),
        (date(2026, 1, 1), date(2025, 12, 19)),  # 24, 25, 26 and 31 December are no Werktage
        (date(2025, 6, 2), date(2025, 5, 23)),  # a Monday start; Thursday 29 May is Ascension Day
    ],
)
def test_five_werktage_count_back_over_weekends_and_holidays(start_day: date, latest: date) -> None:
    def at(day: date, hour: int, minute: int) -> datetime:
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)

    begins = at(start_day, 0, 0)
    assert werktage_vorlauffrist_met(at(latest, 23, 59), begins, 5)
    assert not werktage_vorlauffrist_met(at(date.fromordinal(latest.toordinal() + 1), 0, 1), begins, 5)
