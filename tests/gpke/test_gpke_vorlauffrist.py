"""The Vorlauffrist counts Werktage, not calendar days: receipts before weekends and holidays.

Every other boundary test starts on a Wednesday, where the last Werktag before the
Zuordnungsbeginn is also the previous calendar day; these do not (DOMAIN §3.1, §3.3).
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from gpke_support import LFA, LFN, anmeldung, berlin, run, sent, utilmd

from mako_actors.gpke import GpkeNbWorkflow, Status
from mako_actors.gpke.calendar import last_werktag_before, latest_uet_for, vorlauffrist_met

# (Zuordnungsbeginn, last Werktag before it, latest ÜT)
MONDAY = (berlin(2025, 6, 23, 0, 0), date(2025, 6, 20), date(2025, 6, 19))
AFTER_UNITY_DAY = (berlin(2025, 10, 6, 0, 0), date(2025, 10, 2), date(2025, 10, 1))  # Fri 3.10. is a holiday
AFTER_CHRISTMAS = (berlin(2025, 12, 29, 0, 0), date(2025, 12, 23), date(2025, 12, 22))  # 24.12. is no WT


@pytest.mark.parametrize("case", [MONDAY, AFTER_UNITY_DAY, AFTER_CHRISTMAS])
def test_latest_uet_skips_weekends_and_holidays(case: tuple[datetime, date, date]) -> None:
    start, last_wt, latest = case
    assert last_werktag_before(start.date()) == last_wt
    assert latest_uet_for(start) == latest
    assert vorlauffrist_met(berlin(latest.year, latest.month, latest.day, 23, 59), start)
    assert not vorlauffrist_met(berlin(last_wt.year, last_wt.month, last_wt.day, 0, 1), start)
    assert not vorlauffrist_met(berlin(last_wt.year, last_wt.month, last_wt.day, 8, 0), start)


def test_friday_receipt_for_monday_start_is_too_late() -> None:
    # Friday 20.6. is itself the last WT before Monday 23.6.: one calendar day short of the Frist.
    start = MONDAY[0]
    assert not vorlauffrist_met(berlin(2025, 6, 20, 8, 0), start)
    assert not vorlauffrist_met(berlin(2025, 6, 21, 10, 0), start)  # Saturday
    assert vorlauffrist_met(berlin(2025, 6, 19, 16, 0), start)  # Thursday


def test_friday_anmeldung_for_monday_is_rejected_a07_by_the_workflow() -> None:
    wf = GpkeNbWorkflow()
    late = anmeldung(received_at="2025-06-20T08:00:00+02:00", zuordnungsbeginn="2025-06-23T00:00:00+02:00",
                     current_supplier=LFA)
    state, out = run(wf, wf.initial_state(), late)
    assert sent(out) == [("APERAK", "312", LFN), ("UTILMD", "55003", LFN)]
    tx = utilmd(out, "55003")
    assert (tx["answer_code"], tx["answer_ebd"]) == ("A07", "E_0622")
    assert state.status is Status.REJECTED


def test_anmeldung_before_a_holiday_weekend_needs_the_wednesday() -> None:
    # Start Monday 6.10.2025; Friday 3.10. is a holiday, so Thursday 2.10. is the last WT.
    wf = GpkeNbWorkflow()
    start = "2025-10-06T00:00:00+02:00"
    thursday = anmeldung(received_at="2025-10-02T09:00:00+02:00", zuordnungsbeginn=start)
    _, out = run(wf, wf.initial_state(), thursday)
    assert utilmd(out, "55003")["answer_code"] == "A07"
    wednesday = anmeldung(received_at="2025-10-01T18:00:00+02:00", zuordnungsbeginn=start)
    _, out = run(wf, wf.initial_state(), wednesday)
    assert sent(out)[-1] == ("UTILMD", "55002", LFN)
