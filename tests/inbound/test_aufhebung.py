"""A 55004 that cancels a future assignment (STS+7 ZG9/ZH1/ZH2, "Aufhebung einer zukünftigen
Zuordnung") carries DTM+92, the start the NB confirmed, and no DTM+93 (AHB UTILMD 55004 FV2504
[7], [11], [577]). E_0607 confirms it with a 55005 repeating DTM+92, and the assignment never
begins; ZH2 must name exactly the confirmed start (step 90: else 55006 A06).

Bytes in through ``InboundPipeline`` on LMDB; the supply journal and rendered answers read back.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.gpke.supply import SupplyView, supply_key
from mako_actors.inbound import InboundPipeline, Suppliers
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
    lfa_answer,
    outbox,
    pipeline,
    store,
    tx,
)
from tests.inbound.test_supply_assignments import TENANT

__all__ = ["store"]
JAN_1 = berlin(2026, 1, 1)
MASTER = Suppliers(current=LFA, future=LFN2, future_start=JAN_1)  # LFN2 confirmed from Jan 1


async def answers(store: LmdbStore) -> list[tuple[str, str | None]]:
    return [(kind(m), tx(m)["answer_code"]) for m in await outbox(store) if kind(m) in ("55005", "55006")]


@pytest.mark.parametrize("reason", ["ZG9", "ZH1", "ZH2"])
async def test_an_aufhebung_at_the_confirmed_start_is_confirmed_and_the_start_is_gone(
    store: LmdbStore, reason: str
) -> None:
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: MASTER})
    raw = abmeldung(LFN2, ref="AUF1", ide="AUFTX", end=JAN_1, sent_at=THU_1430, reason=reason, qualifier="92")
    [outcome] = (await p.ingest(raw, THU_1430)).messages
    assert outcome.outcome == "started"
    assert await answers(store) == [("55005", "A11")]
    [confirmation] = [m for m in await outbox(store) if kind(m) == "55005"]
    rendered = render_outbound("UTILMD", confirmation.payload)
    assert not outbound_problems(rendered)  # the AHB shape of a 55005 of an Aufhebung
    [parsed] = parse_interchange(rendered).messages[0].transactions
    assert (parsed.start, parsed.end, parsed.transaction_reason) == (JAN_1, None, reason)  # DTM+92
    journal = SupplyView.fold(await store.journal(TENANT, supply_key(MALO)), MASTER)
    assert journal.suppliers(START) == Suppliers(current=LFA)  # LFN2's assignment never begins
    # An Anmeldung for Jan 1 asks nobody: LFN2 holds nothing then (it would have got a 55010),
    # and the LFA's supply still ends there (the Aufhebung reinstates nobody).
    later = THU_1430 + timedelta(minutes=10)
    await p.ingest(anmeldung(LFN, ref="NEXT1", ide="NEXTTX", start=JAN_1, sent_at=later), later)
    decided = [m for m in await outbox(store) if m.recipient == LFN and m.message_type == "UTILMD"]
    assert [(kind(m), tx(m)["answer_code"]) for m in decided] == [("55002", "A51")]
    assert [kind(m) for m in await outbox(store) if kind(m) == "55010"] == []


async def test_zh2_at_another_date_than_the_confirmed_start_gets_55006_a06(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: MASTER})
    feb_1 = berlin(2026, 2, 1)  # inside LFN2's assignment, not its start
    raw = abmeldung(LFN2, ref="AUF1", ide="AUFTX", end=feb_1, sent_at=THU_1430, reason="ZH2", qualifier="92")
    await p.ingest(raw, THU_1430)
    assert await answers(store) == [("55006", "A06")]
    [rejection] = [m for m in await outbox(store) if kind(m) == "55006"]
    assert not outbound_problems(render_outbound("UTILMD", rejection.payload))  # no SG4 date
    journal = SupplyView.fold(await store.journal(TENANT, supply_key(MALO)), MASTER)
    assert journal.supplier_at(feb_1) == LFN2  # nothing changed


async def test_an_aufhebung_with_dtm_93_instead_of_92_gets_aperak_z29(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: MASTER})
    raw = abmeldung(LFN2, ref="AUF1", ide="AUFTX", end=JAN_1, sent_at=THU_1430, reason="ZG9")
    await p.ingest(raw, THU_1430)
    assert await aperak_errors(store) == [("Z29", "PID 55004: DTM+92 missing")]
    assert await answers(store) == []


async def test_a_plain_abmeldung_still_needs_dtm_93(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: MASTER})
    raw = abmeldung(LFA, ref="ABM1", ide="ABMTX", end=START, sent_at=THU_1430, reason="ZT4", qualifier="92")
    await p.ingest(raw, THU_1430)
    [(code, text)] = await aperak_errors(store)
    assert code == "Z29" and "DTM+93 missing" in text


async def test_an_aufhebung_of_a_start_the_sender_does_not_hold_gets_aperak_z17(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: MASTER})
    raw = abmeldung(LFN, ref="AUF1", ide="AUFTX", end=JAN_1, sent_at=THU_1430, reason="ZG9", qualifier="92")
    await p.ingest(raw, THU_1430)
    [(code, text)] = await aperak_errors(store)
    assert code == "Z17" and f"does not supply MaLo {MALO} from" in text


async def test_an_aufhebung_sent_again_is_answered_55006_a09(store: LmdbStore) -> None:
    """E_0607 step 100: the assignment was ended (cancelled) at that date already; not APERAK
    Z17 ("not assigned"), which would say the LF never held it."""
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: MASTER})
    for ref, at in (("AUF1", THU_1430), ("AUF2", THU_1430 + timedelta(minutes=5))):
        raw = abmeldung(LFN2, ref=ref, ide=f"{ref}TX", end=JAN_1, sent_at=at, reason="ZH2", qualifier="92")
        await p.ingest(raw, at)
    assert await answers(store) == [("55005", "A11"), ("55006", "A09")]
    assert [m for m in await outbox(store) if kind(m) == "APERAK-"] == []


async def _cancelled_by_another_start(store: LmdbStore, pid: str) -> InboundPipeline:
    """LFN's Anmeldung from START confirmed (the LFA agrees): LFN2's confirmed start on Jan 1
    is cancelled by a 55038. The pipeline, for what follows."""
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: MASTER})
    await p.ingest(anmeldung(LFN, pid=pid, gv="ZW0"), THU_1430)
    [request] = [m for m in await outbox(store) if kind(m) == "55010"]
    at = THU_1430 + timedelta(hours=1)
    code = "A40" if pid == "55077" else "A36"
    await p.ingest(lfa_answer(tx(request)["ide_ref"], code=code, sent_at=at), at)
    assert [m.recipient for m in await outbox(store) if kind(m) == "55038"] == [LFN2]
    return p


@pytest.mark.parametrize(("reason", "qualifier"), [("ZG9", "92"), ("E01", "93")])
async def test_a_start_a_55038_cancelled_is_not_ended_for_e_0607_step_100(
    store: LmdbStore, reason: str, qualifier: str
) -> None:
    """E_0607 step 100 counts an end confirmed by an Abmeldung, an LFA's answer or its
    silence; a 55038 is none of them. Before, LFN2's Abmeldung of the start another's
    Anmeldung cancelled got 55006 A09/A10 ("already ended ... confirmed"): it holds nothing
    there, which is APERAK Z17."""
    p = await _cancelled_by_another_start(store, "55001")
    at = THU_1430 + timedelta(days=1)
    raw = abmeldung(LFN2, ref="AUF1", ide="AUFTX", end=JAN_1, sent_at=at, reason=reason, qualifier=qualifier)
    await p.ingest(raw, at)
    assert await answers(store) == []
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK" and m.recipient == LFN2]
    assert [error["code"] for error in aperak.payload["errors"]] == ["Z17"]


async def test_a_supplier_whose_start_a_55038_cancelled_can_start_again_and_end_it(store: LmdbStore) -> None:
    """Generating MaLo: LFN2's start is cancelled by a 55038, LFN2 registers again for the same
    start (confirmed, 55078 A58) and then cancels its contract (55004 ZH2 ZW3). Before, the empty
    assignment the 55038 left counted as "already ended" (step 580): 55006 A25, and LFN2 kept
    supplying from Jan 1 without a contract. E_0607 step 620: 55005 A27."""
    p = await _cancelled_by_another_start(store, "55077")
    again = THU_1430 + timedelta(days=1)
    anmeldung_again = anmeldung(
        LFN2, pid="55077", gv="ZW0", ref="LFZ0001", ide="LFZTX1", start=JAN_1, sent_at=again
    )
    await p.ingest(anmeldung_again, again)
    [request] = [m for m in await outbox(store) if kind(m) == "55010" and m.recipient == LFN]
    at = again + timedelta(hours=1)
    answer = lfa_answer(
        tx(request)["ide_ref"], code="A40", lfa=LFN, ref="LFN0009", ide="LFNTX9", end=JAN_1, sent_at=at
    )
    await p.ingest(answer, at)
    sent = await outbox(store)
    decided = [tx(m)["answer_code"] for m in sent if kind(m) == "55078" and m.recipient == LFN2]
    assert decided == ["A58"]
    later = THU_1430 + timedelta(days=4)
    raw = abmeldung(
        LFN2, ref="LFZ0002", ide="LFZTX2", end=JAN_1, sent_at=later, reason="ZH2", qualifier="92",
        detail="ZW3",
    )  # fmt: skip
    await p.ingest(raw, later)
    assert await answers(store) == [("55005", "A27")]
    journal = SupplyView.fold(await store.journal(TENANT, supply_key(MALO)), MASTER)
    assert journal.supplier_at(berlin(2026, 1, 15)) is None
