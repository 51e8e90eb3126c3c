"""End to end on LMDB: a 55001 or 55004 with STS+7 #2 ZAP is for a ruhende MaLo, which it names
by LOC+Z22 (S1 FV2504 55001/55004 [96]); the 55001 also names the MaLo of the Kundenanlage the
ruhende MaLo lies in, by LOC+Z16 ([67]). The process is the ruhende MaLo's: its claim and supply
journal, the 55010's LOC+Z22; the 55002 names both ([2061], [2003] ∧ [96])."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mako_actors import TenantId
from mako_actors._partition import Partitioner
from mako_actors.edifact import parse_interchange
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.family import trigger_object
from mako_actors.gpke.supply import SupplyView, supply_key
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.inbound import Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    KUNDENANLAGE,
    LFA,
    LFN,
    MALO,
    NB,
    START,
    THU_1430,
    abmeldung,
    anmeldung,
    aperak_errors,
    interchange,
    kind,
    locations,
    outbox,
    package_segments,
    pipeline,
    store,
    utilmd_by_pid,
)

__all__ = ["store"]

TENANT = TenantId.from_party_id(NB)
WT1_0900 = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)
TRANCHE = "51000000912"


async def test_an_anmeldung_of_a_ruhende_malo_is_the_ruhende_malos_process(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    result = await p.ingest(anmeldung(detail="ZAP"), THU_1430)
    assert [m.outcome for m in result.messages] == ["started"]
    first = await outbox(store)
    # The LFA of the ruhende MaLo is asked, about the ruhende MaLo (not the Kundenanlage's).
    assert locations(utilmd_by_pid(first)["55010"]) == [("Z22", MALO)]
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, WT1_0900) == 1  # the LFA silent: deemed to agree
    seen = {m.message_id for m in first}
    confirmation = utilmd_by_pid([m for m in await outbox(store) if m.message_id not in seen])["55002"]
    assert locations(confirmation) == [("Z16", KUNDENANLAGE), ("Z22", MALO)]
    assert SupplyView.fold(await store.journal(TENANT, supply_key(MALO))).supplier_at(START) == LFN
    assert await store.journal(TENANT, supply_key(KUNDENANLAGE)) == []


async def test_an_abmeldung_of_a_ruhende_malo_named_by_loc_z22_is_confirmed(store: LmdbStore) -> None:
    """It was refused (APERAK Z29 "MaLo-ID missing"): we looked for a LOC+Z16 only."""
    at = datetime(2025, 11, 10, 9, 0, tzinfo=UTC)
    p = pipeline(store, VirtualClock(at), **{MALO: Suppliers(current=LFA)})
    await p.ingest(abmeldung(LFA, ref="LFAABM1", ide="ABMTX1", end=START, sent_at=at, detail="ZAP"), at)
    answers = [m for m in await outbox(store) if m.message_type == "UTILMD"]
    assert [(kind(m), m.payload["transactions"][0]["answer_code"]) for m in answers] == [("55005", "A11")]


async def test_a_ruhende_malo_must_be_named_by_loc_z22(store: LmdbStore) -> None:
    start = "DTM+92:202511302300?+00:303"
    tx = [
        "IDE+24+LFNTX1",
        start,
        "STS+7++E01+ZAP",
        f"LOC+Z16+{KUNDENANLAGE}",
        "RFF+Z13:55001",
        *package_segments((("1", bilanzkreis_of(LFN)),)),
        "NAD+Z09+++A:B",
    ]
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(interchange(LFN, NB, "LFN0001", THU_1430, tx), THU_1430)
    assert await aperak_errors(store) == [("Z29", "PID 55001: ID der ruhenden MaLo (SG5 LOC+Z22) missing")]


async def test_a_kundenanlage_malo_id_failing_its_check_digit_is_refused(store: LmdbStore) -> None:
    bad = KUNDENANLAGE[:10] + str((int(KUNDENANLAGE[10]) + 1) % 10)
    raw = anmeldung(detail="ZAP").replace(f"LOC+Z16+{KUNDENANLAGE}".encode(), f"LOC+Z16+{bad}".encode())
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(raw, THU_1430)
    assert await aperak_errors(store) == [
        ("Z14", f"MaLo-ID {bad} of the Kundenanlage (LOC+Z16) fails its check digit or format")
    ]


async def test_a_ruhende_malo_outside_a_new_kundenanlage_needs_the_kundenanlages_malo(
    store: LmdbStore,
) -> None:
    """55001 LOC+Z16 is Muss [2061] ∧ [67]: only an Anmeldung that forms the Kundenanlage may
    leave it out (AHB-FACTS §2), and the 55002 must name it (Muss [2061]). Before, such an
    Anmeldung was confirmed with a 55002 lacking LOC+Z16 (our own structure check flags it)."""
    raw = anmeldung(detail="ZAP").replace(f"LOC+Z16+{KUNDENANLAGE}'".encode(), b"")
    raw = raw.replace(b"UNT+19+", b"UNT+18+")
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    result = await p.ingest(raw, THU_1430)
    assert result.status == "accepted"
    [(code, text)] = await aperak_errors(store)
    assert code == "Z29" and "LOC+Z16" in text and "[67]" in text


def test_the_split_places_a_ruhende_malos_messages_together() -> None:
    """The Anmeldung names the Kundenanlage's LOC+Z16 too, the Abmeldung only the LOC+Z22: both
    are the ruhende MaLo's, and a split must not place them apart."""
    later = THU_1430 + timedelta(hours=1)
    files = [
        ("anmeldung.edi", anmeldung(detail="ZAP"), THU_1430),
        (
            "abmeldung.edi",
            abmeldung(LFA, ref="LFAABM1", ide="ABMTX1", end=START, sent_at=later, detail="ZAP"),
            later,
        ),
        ("other.edi", interchange(LFN, NB, "LFN0002", later, ["IDE+24+X", "RFF+Z13:55001"]), later),
    ]
    partitioner = Partitioner(2, [NB])
    placed = [set(partitioner.split(name, raw, at)) for name, raw, at in files]
    assert placed[0] == placed[1]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (anmeldung(detail="ZAP"), MALO),  # LOC+Z22, not the Kundenanlage's LOC+Z16 before it
        (abmeldung(LFA, ref="A1", ide="A1", end=START, sent_at=THU_1430, detail="ZAP"), MALO),
        (anmeldung(pid="55077", gv="ZW1", malo=TRANCHE), TRANCHE),
        (
            abmeldung(LFA, ref="A2", ide="A2", end=START, sent_at=THU_1430, detail="ZW5", malo=TRANCHE),
            TRANCHE,
        ),
        (anmeldung(pid="55077", gv="ZW0"), MALO),
        (anmeldung(), MALO),
    ],
)
def test_a_trigger_is_keyed_by_its_object_in_the_family_and_the_replay(raw: bytes, expected: str) -> None:
    """What a trigger is for, one function for the family's routing and the pipelined replay's
    keys: the replay keyed a ZAP Anmeldung by the Kundenanlage (the parser's LOC+Z16) and its
    Abmeldung by nothing, while a process of an earlier run is keyed by its ruhende MaLo, so a
    continued replay fired the LFA Frist of such a process beside, not after, the answer
    received before it was due (deemed agreement instead of the LFA's answer)."""
    [message] = parse_interchange(raw).messages
    [tx] = message.transactions
    assert trigger_object(str(tx.pid or message.pid), tx) == expected


async def test_a_zap_abmeldung_ends_a_supply_a_zap_anmeldung_started_or_gets_a01(store: LmdbStore) -> None:
    """E_0607 steps 20/30: the supply journal keeps whether a confirmed Anmeldung was for a
    ruhende MaLo; a ZAP Abmeldung of a supply a plain Anmeldung started is refused with A01."""
    later, end = THU_1430 + timedelta(hours=1), START + timedelta(days=31)
    p = pipeline(store, VirtualClock(THU_1430))
    for malo, detail, answer in ((MALO, "ZAP", "A11"), ("20000000016", "ZW4", "A01")):
        await p.ingest(anmeldung(detail=detail, malo=malo, ref=f"LFN{detail}", ide=f"TX{detail}"), THU_1430)
        ids = {"ref": f"AB{detail}", "ide": f"ABTX{detail}"}
        raw = abmeldung(LFN, **ids, end=end, sent_at=later, malo=malo, detail="ZAP")
        await p.ingest(raw, later)
        sent = [m for m in await outbox(store) if kind(m) in ("55005", "55006")]
        assert [m.payload["transactions"][0]["answer_code"] for m in sent] == [answer]
        for m in await outbox(store):  # the next round starts from an empty outbox
            await store.acknowledge(m.message_id)
