"""SupplyView: a MaLo's assignments folded from its journal (pure, no store)."""

from __future__ import annotations

import pytest
from gpke_support import LFA, LFN, LFZ, berlin
from pydantic import ValidationError

from mako_actors.gpke.supply import Suppliers, SupplyFact, SupplyView, _baseline_facts

DEC_1, JAN_1, FEB_1 = berlin(2025, 12, 1, 0, 0), berlin(2026, 1, 1, 0, 0), berlin(2026, 2, 1, 0, 0)


def fold(*facts: SupplyFact, baseline: Suppliers | None = None) -> SupplyView:
    return SupplyView.fold([f.to_entry() for f in facts], baseline)


def test_a_confirmed_start_ends_the_current_supplier_and_cancels_a_later_one() -> None:
    view = fold(
        SupplyFact(kind="assigned", supplier=LFA, until=FEB_1),
        SupplyFact(kind="assigned", supplier=LFZ, at=FEB_1),
        SupplyFact(kind="claimed", supplier=LFN, at=JAN_1, process="p1"),
        SupplyFact(kind="started", supplier=LFN, at=JAN_1, process="p1"),
    )
    assert view.suppliers(DEC_1) == Suppliers(current=LFA, future=LFN, future_start=JAN_1)
    assert view.supplier_at(JAN_1) == LFN and view.supplier_at(FEB_1) == LFN  # LFZ's start is gone
    assert view.open_claim() is None and view.claim_count == 1
    assert view.confirmed_start(JAN_1) is not None and view.confirmed_start(DEC_1) is None


def test_a_cancelled_future_assignment_supplies_nothing_and_is_ended_only_by_its_aufhebung() -> None:
    view = fold(
        SupplyFact(kind="assigned", supplier=LFA, until=FEB_1),
        SupplyFact(kind="claimed", supplier=LFZ, at=FEB_1, process="p2"),
        SupplyFact(kind="started", supplier=LFZ, at=FEB_1, process="p2"),
        SupplyFact(kind="ended", supplier=LFZ, at=FEB_1, reason="ZH2"),  # LFZ's Aufhebung
    )
    assert view.suppliers(DEC_1) == Suppliers(current=LFA)  # no future supplier any more
    assert view.supplier_at(FEB_1) is None and not view.can_end(LFZ, FEB_1)
    assert view.confirmed_start(FEB_1) is None  # blocks no Anmeldung for that date
    assert view.ended_at(LFZ, FEB_1) and view.end_reason(LFZ, FEB_1) == "ZH2"
    assert view.starts_at(LFZ, FEB_1)  # the start a repeated Aufhebung names
    # A start cancelled by another supplier's earlier one (a 55038) supplies nothing, but is not
    # ended for E_0607 step 100: a 55038 is none of the confirmations it names.
    later = fold(
        SupplyFact(kind="assigned", supplier=LFA),
        SupplyFact(kind="assigned", supplier=LFZ, at=FEB_1),
        SupplyFact(kind="started", supplier=LFN, at=JAN_1, process="p1"),
    )
    assert later.supplier_at(FEB_1) == LFN and not later.can_end(LFZ, FEB_1)
    assert not later.ended_at(LFZ, FEB_1) and later.end_reason(LFZ, FEB_1) is None
    assert later.suppliers(DEC_1) == Suppliers(current=LFA, future=LFN, future_start=JAN_1)
    # A supplier's own confirmed start replaces its earlier-known one: nothing of it ended.
    again = fold(
        SupplyFact(kind="assigned", supplier=LFA, until=FEB_1),
        SupplyFact(kind="assigned", supplier=LFZ, at=FEB_1),
        SupplyFact(kind="started", supplier=LFZ, at=FEB_1, process="p3"),
    )
    assert not again.ended_at(LFZ, FEB_1) and again.can_end(LFZ, FEB_1)
    assert [a.supplier for a in again.assignments] == [LFA, LFZ]


@pytest.mark.parametrize("ended", ["abmeldung", "aufhebung"])
def test_an_abmeldung_ends_one_assignment_not_its_senders_later_one(ended: str) -> None:
    """An Abmeldung ends the Zuordnung running at its date, an Aufhebung (ZH2) the one starting
    then (E_0607 step 90); a later, separately confirmed one of the same supplier stays. Before,
    it was cancelled too: the next Anmeldung was confirmed without asking (no 55010, no 55037)."""
    march = berlin(2026, 3, 1, 0, 0)
    facts = [
        SupplyFact(kind="assigned", supplier=LFA, until=FEB_1),
        SupplyFact(kind="claimed", supplier=LFN, at=DEC_1, process="p1"),
        SupplyFact(kind="started", supplier=LFN, at=DEC_1, process="p1", until=JAN_1),
        SupplyFact(kind="claimed", supplier=LFN, at=FEB_1, process="p2"),
        SupplyFact(kind="started", supplier=LFN, at=FEB_1, process="p2"),
    ]
    if ended == "abmeldung":
        facts.append(SupplyFact(kind="ended", supplier=LFN, at=berlin(2025, 12, 15, 0, 0), reason="E01"))
        assert fold(*facts).supplier_at(berlin(2025, 12, 20, 0, 0)) is None
    else:
        facts.append(SupplyFact(kind="ended", supplier=LFN, at=DEC_1, reason="ZH2"))
        assert fold(*facts).supplier_at(DEC_1) is None
    view = fold(*facts)
    assert view.supplier_at(march) == LFN
    assert view.suppliers(JAN_1).future == LFN


def test_an_imported_future_assignment_blocks_its_start_like_a_confirmed_one() -> None:
    """A migrated future assignment was confirmed by the system before us: its start is a
    confirmed start as a journal-confirmed one's is (a second Anmeldung for that date asks its
    supplier as the LFA at that date; with ``confirmed_assignment_blocks`` it gets A06)."""
    view = fold(
        SupplyFact(kind="assigned", supplier=LFA, until=JAN_1),
        SupplyFact(kind="assigned", supplier=LFZ, at=JAN_1),
    )
    confirmed = view.confirmed_start(JAN_1)
    assert confirmed is not None and confirmed.supplier == LFZ
    assert view.confirmed_start(DEC_1) is None  # the current one's (open) start blocks nothing


def test_a_released_claim_changes_nothing_and_an_open_one_is_seen() -> None:
    view = fold(
        SupplyFact(kind="claimed", supplier=LFN, at=JAN_1, process="p1", due=DEC_1),
        SupplyFact(kind="released", process="p1"),
        SupplyFact(kind="claimed", supplier=LFZ, at=FEB_1, process="p2", due=JAN_1),
        baseline=Suppliers(current=LFA),
    )
    assert view.supplier_at(FEB_1) == LFA
    claim = view.open_claim()
    assert claim is not None and (claim.supplier, claim.at, claim.due) == (LFZ, FEB_1, JAN_1)
    assert view.claim_count == 2


def test_an_ended_supply_leaves_nobody_and_cannot_be_ended_again() -> None:
    view = fold(SupplyFact(kind="ended", supplier=LFA, at=JAN_1), baseline=Suppliers(current=LFA))
    assert view.supplier_at(berlin(2025, 12, 31, 23, 59)) == LFA
    assert view.supplier_at(JAN_1) is None
    assert not view.can_end(LFA, FEB_1) and view.ended_at(LFA, JAN_1)


def test_the_baseline_stands_in_only_without_an_import() -> None:
    imported = SupplyFact(kind="assigned", supplier=LFZ)
    assert fold(imported, baseline=Suppliers(current=LFA)).supplier_at(JAN_1) == LFZ
    assert fold(baseline=Suppliers(current=LFA)).supplier_at(JAN_1) == LFA


def test_an_unknown_entry_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        SupplyView.fold([{"kind": "teleported", "supplier": LFA}])


def test_master_data_baseline_facts_equal_validated_ones_and_mistyped_data_still_fails() -> None:
    baseline = Suppliers(current=LFA, future=LFZ, future_start=FEB_1)
    assert _baseline_facts(baseline) == [
        SupplyFact(kind="assigned", supplier=LFA, until=FEB_1),
        SupplyFact(kind="assigned", supplier=LFZ, at=FEB_1),
    ]
    assert [f.to_entry() for f in _baseline_facts(baseline)] == [
        f.model_dump(mode="json", exclude_none=True) for f in _baseline_facts(baseline)
    ]
    # Master data read from JSON is not typed: a number where an MP-ID belongs is refused.
    with pytest.raises(ValidationError):
        _baseline_facts(Suppliers(current=9900000000001))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        _baseline_facts(Suppliers(current=LFA, future=LFZ, future_start="soon"))  # type: ignore[arg-type]
