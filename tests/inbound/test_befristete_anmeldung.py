"""A befristete Anmeldung (55001 STS+7 #3 E01/E03) asks for supply until its DTM+93 (Muss then,
AHB UTILMD 55001/55002 FV2504 [10]). It was taken as open-ended: the 55002 lacked DTM+93 and
#3, and the supplier stayed assigned after the end, so the next Anmeldung asked it by 55010.

Bytes in through ``InboundPipeline`` on LMDB; the journal and rendered answers read back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from mako_actors import StreamId
from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.gpke.supply import SupplyView, supply_key
from mako_actors.inbound import Suppliers
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.conftest import outbound_problems
from tests.inbound.edi import (
    LFA,
    LFN,
    LFN2,
    MALO,
    START,
    THU_1430,
    abmeldung,
    anmeldung,
    aperak_errors,
    berlin,
    kind,
    outbox,
    pipeline,
    store,
    tx,
)
from tests.inbound.test_answers_by_own_rules import fire_nine
from tests.inbound.test_supply_assignments import TENANT

__all__ = ["store"]
MAR_1 = berlin(2026, 3, 1)  # the end of the befristete supply (START is 2025-12-01)


async def test_the_supply_ends_at_dtm_93_and_the_55002_repeats_it(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))  # nobody supplies the MaLo: decided at once
    [started] = (await p.ingest(anmeldung(fixed_term="E03", end=MAR_1), THU_1430)).messages
    [confirmation] = [m for m in await outbox(store) if kind(m) == "55002"]
    rendered = render_outbound("UTILMD", confirmation.payload)
    assert not outbound_problems(rendered)
    [parsed] = parse_interchange(rendered).messages[0].transactions
    assert (parsed.start, parsed.end) == (START, MAR_1)
    assert parsed.transaction_reasons == ("E01", "ZW7", "E03")  # #1 and #3 as sent, #2 ZW6/ZW7
    assert b"STS+7++E01+ZW7+E03'" in rendered
    events = await store.load(StreamId.for_process(TENANT, started.process_id))  # type: ignore[arg-type]
    [fixed] = [e.payload for e in events if e.event_type == "gpke.fixed_term_requested"]
    assert fixed["reason"] == "E03"
    view = SupplyView.fold(await store.journal(TENANT, supply_key(MALO)))
    assert view.supplier_at(START) == LFN and view.supplier_at(MAR_1 - timedelta(seconds=1)) == LFN
    assert view.supplier_at(MAR_1) is None
    # The next Anmeldung from the end on asks nobody: the LFN's supply has ended by then.
    later = THU_1430 + timedelta(minutes=10)
    await p.ingest(anmeldung(LFN2, ref="NEXT1", ide="NEXTTX", start=MAR_1, sent_at=later), later)
    assert [m.recipient for m in await outbox(store) if kind(m) == "55010"] == []
    decided = [kind(m) for m in await outbox(store) if m.recipient == LFN2 and kind(m).startswith("55")]
    assert decided == ["55002"]


@pytest.mark.parametrize(("lfz_start", "cancelled"), [(MAR_1, False), (berlin(2026, 2, 1), True)])
async def test_an_lfz_starting_within_the_term_is_cancelled_one_starting_after_it_is_kept(
    store: LmdbStore, lfz_start: datetime, cancelled: bool
) -> None:
    clock = VirtualClock(THU_1430)
    master = Suppliers(current=LFA, future=LFN2, future_start=lfz_start)
    p = pipeline(store, clock, **{MALO: master})
    await p.ingest(anmeldung(fixed_term="E03", end=MAR_1), THU_1430)
    assert [m.recipient for m in await outbox(store) if kind(m) == "55010"] == [LFA]
    await fire_nine(store, clock)  # the LFA is deemed to agree: 55002, 55037 (and 55038?)
    assert [kind(m) for m in await outbox(store) if m.recipient == LFN2] == (["55038"] if cancelled else [])
    view = SupplyView.fold(await store.journal(TENANT, supply_key(MALO)), master)
    assert view.supplier_at(START) == LFN
    assert view.supplier_at(MAR_1) == (None if cancelled else LFN2)


async def test_a_befristete_anmeldung_without_dtm_93_gets_aperak_z29(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    await p.ingest(anmeldung(fixed_term="E03"), THU_1430)
    assert await aperak_errors(store) == [("Z29", "PID 55001: DTM+93 missing")]


async def test_an_end_not_after_the_start_gets_aperak_z41(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    await p.ingest(anmeldung(fixed_term="E01", end=START), THU_1430)
    [(code, text)] = await aperak_errors(store)
    assert code == "Z41" and "is not after Zuordnungsbeginn" in text


async def test_a_third_reason_outside_e01_e03_gets_aperak_z39(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    await p.ingest(anmeldung(fixed_term="Z99", end=MAR_1), THU_1430)
    [(code, text)] = await aperak_errors(store)
    assert code == "Z39" and "befristete Anmeldung" in text


async def test_a_dtm_93_without_a_third_reason_is_ignored_with_a_warning(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    [started] = (await p.ingest(anmeldung(end=MAR_1), THU_1430)).messages
    [confirmation] = [m for m in await outbox(store) if kind(m) == "55002"]
    assert "end" not in tx(confirmation)
    events = await store.load(StreamId.for_process(TENANT, started.process_id))  # type: ignore[arg-type]
    [received] = [e.payload for e in events if e.event_type == "gpke.anmeldung_received"]
    assert any("DTM+93 without STS+7 #3" in w for w in received["warnings"])
    assert SupplyView.fold(await store.journal(TENANT, supply_key(MALO))).supplier_at(MAR_1) == LFN


async def test_a_third_reason_in_a_55077_is_no_befristung(store: LmdbStore) -> None:
    """Only the 55001 has a "Transaktionsgrund befristete Anmeldung" (AHB 55077 FV2504 has no
    #3): the generating MaLo's supply stays open-ended, with a warning."""
    p = pipeline(store, VirtualClock(THU_1430))
    raw = anmeldung(pid="55077", start=berlin(2026, 2, 1), fixed_term="E03", end=MAR_1)
    [started] = (await p.ingest(raw, THU_1430)).messages
    events = await store.load(StreamId.for_process(TENANT, started.process_id))  # type: ignore[arg-type]
    assert "gpke.fixed_term_requested" not in [e.event_type for e in events]
    [received] = [e.payload for e in events if e.event_type == "gpke.anmeldung_received"]
    assert any("no STS+7 #3" in w for w in received["warnings"])
    [confirmation] = [m for m in await outbox(store) if kind(m) == "55078"]
    assert "end" not in tx(confirmation)
    assert SupplyView.fold(await store.journal(TENANT, supply_key(MALO))).supplier_at(MAR_1) == LFN


async def test_an_abmeldung_at_the_end_of_the_term_is_confirmed_not_already_ended(store: LmdbStore) -> None:
    """E_0607 step 100 asks whether the supply was already ended at that date by a confirmed
    Abmeldung, an LFA's answer or its silence; the term of a befristete Anmeldung is none of
    these: A11 (it was A10 "already ended for the same reason"). A second Abmeldung at that date
    then finds the first one's end, for the same reason (Z33, a move-out: A10, steps 120/130)."""
    p = pipeline(store, VirtualClock(THU_1430))
    await p.ingest(anmeldung(fixed_term="E03", end=MAR_1), THU_1430)
    answers = []
    for n in (1, 2):
        at = THU_1430 + timedelta(days=n)
        await p.ingest(abmeldung(LFN, ref=f"ABM{n}", ide=f"ABMTX{n}", end=MAR_1, sent_at=at), at)
        [answer] = [m for m in await outbox(store) if kind(m) in ("55005", "55006") and m not in answers]
        answers.append(answer)
    assert [(kind(m), tx(m)["answer_code"]) for m in answers] == [("55005", "A11"), ("55006", "A10")]
