"""End to end on LMDB: a 55077 of Geschäftsvorfall 2 (STS+7 #2 ZW1) changes the supplier of a
Tranche, which it names by LOC+Z21 and never by LOC+Z16 (S1 FV2504 55077 [476]/[477]). Every
message of its process names the Tranche as a Tranche: the 55010 with STS+7 ZW5 and LOC+Z21
([481]), the 55036/55037 LOC+Z21 ([347]), the 55078 both the MaLo and the Tranche ([2061],
[477]), a 55080 after the LFA's objection STS+Z35 ZW5 and RFF+Z20 ([84])."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mako_actors import TenantId
from mako_actors.edifact import Message, check_structure
from mako_actors.errors import InvalidArgument
from mako_actors.gpke.supply import SupplyView, supply_key
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.inbound import Suppliers
from mako_actors.replay import load_master_data
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFA,
    LFN,
    MALO,
    NB,
    START,
    THU_1430,
    TRANCHE_OF,
    anmeldung,
    aperak_errors,
    interchange,
    kind,
    lfa_answer,
    locations,
    outbox,
    package_segments,
    pipeline,
    store,
    utilmd_by_pid,
)

__all__ = ["store"]

TRANCHE = MALO  # the Tranche's ID: a MaLo-ID's format ([950])
ANSWER_AT = datetime(2025, 11, 13, 16, 0, tzinfo=UTC)
TENANT = TenantId.from_party_id(NB)
# The NB's master data of the Tranche: its MaLo and its share of it (the 55078's SG8 Z15)
TRANCHE_DATA = Suppliers(current=LFA, tranche_of=TRANCHE_OF, tranche_percent="37.50")


def values(message: Message, tag: str, qualifier: str) -> list[object]:
    """The elements after the qualifier of each ``tag+qualifier`` segment."""
    return [s.elements[1:] for s in message.segments if s.tag == tag and s.value(0) == qualifier]


async def consulted(store: LmdbStore) -> dict[str, Message]:
    """A GV2 Anmeldung of TRANCHE (of MaLo TRANCHE_OF, held by the LFA): what went out."""
    p = pipeline(store, VirtualClock(THU_1430), **{TRANCHE: TRANCHE_DATA})
    result = await p.ingest(anmeldung(pid="55077", gv="ZW1"), THU_1430)
    assert [m.outcome for m in result.messages] == ["started"]
    return utilmd_by_pid(await outbox(store))


async def test_the_55010_and_55036_name_the_tranche(store: LmdbStore) -> None:
    sent = await consulted(store)
    request = sent["55010"]
    assert values(request, "STS", "7") == [["", "E03", "ZW5"]]  # ZW5: a Tranche ([481])
    assert locations(request) == [("Z21", TRANCHE)]
    assert locations(sent["55036"]) == [("Z21", TRANCHE)]


async def test_confirmed_the_55078_names_malo_and_tranche_and_the_55037_the_tranche(store: LmdbStore) -> None:
    sent = await consulted(store)
    p = pipeline(store, VirtualClock(ANSWER_AT), **{TRANCHE: TRANCHE_DATA})
    before = {m.message_id for m in await outbox(store)}
    await p.ingest(lfa_answer(sent["55010"].transactions[0].ide_ref, sent_at=ANSWER_AT), ANSWER_AT)
    decided = utilmd_by_pid([m for m in await outbox(store) if m.message_id not in before])
    assert locations(decided["55078"]) == [("Z16", TRANCHE_OF), ("Z21", TRANCHE)]
    assert decided["55078"].transactions[0].transaction_reasons == ("E03", "ZW1")
    # SG8 "Daten der Tranche" (Muss [477]): a percentage of the MaLo, QTY+11 in % ([384])
    assert values(decided["55078"], "SEQ", "Z15") == [[]]
    assert [s.elements for s in decided["55078"].segments if s.tag == "QTY"] == [[["11", "37.5", "P1"]]]
    assert values(decided["55078"], "CCI", "Z37") == [["", "ZD1"]]
    assert locations(decided["55037"]) == [("Z21", TRANCHE)]
    # The Tranche's own supply journal: the LFN holds it from the start, its MaLo is untouched.
    view = SupplyView.fold(await store.journal(TENANT, supply_key(TRANCHE)))
    assert view.supplier_at(START) == LFN
    assert await store.journal(TENANT, supply_key(TRANCHE_OF)) == []


async def test_an_objection_gives_a_55080_naming_the_tranche(store: LmdbStore) -> None:
    sent = await consulted(store)
    p = pipeline(store, VirtualClock(ANSWER_AT), **{TRANCHE: TRANCHE_DATA})
    objection = lfa_answer(sent["55010"].transactions[0].ide_ref, pid="55012", code="A39", sent_at=ANSWER_AT)
    await p.ingest(objection, ANSWER_AT)
    rejection = utilmd_by_pid(await outbox(store))["55080"]
    assert values(rejection, "STS", "Z35") == [["", ["A39", "E_0624"], ["ZW5", "", "", TRANCHE]]]
    assert values(rejection, "NAD", "VY") == [[[LFA, "", "293"]]]
    assert [s.elements[0] for s in rejection.segments if s.tag == "RFF" and s.value(0) == "Z20"] == [
        ["Z20", TRANCHE]
    ]
    assert locations(rejection) == []  # §2: no SG5 in a 55080


async def test_a_gv2_naming_its_object_by_loc_z16_is_refused(store: LmdbStore) -> None:
    raw = anmeldung(pid="55077", gv="ZW1").replace(
        f"LOC+Z21+{TRANCHE}".encode(), f"LOC+Z16+{TRANCHE}".encode()
    )
    p = pipeline(store, VirtualClock(THU_1430), **{TRANCHE: TRANCHE_DATA})
    await p.ingest(raw, THU_1430)
    assert await aperak_errors(store) == [
        ("Z29", "PID 55077: Tranche-ID (SG5 LOC+Z21) missing")
    ]


async def test_a_tranche_the_master_data_does_not_know_is_not_found(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430), **{TRANCHE: Suppliers(current=LFA)})
    await p.ingest(anmeldung(pid="55077", gv="ZW1"), THU_1430)
    assert await aperak_errors(store) == [
        ("Z14", f"Tranche {TRANCHE} is not in the master data (no MaLo known for it)")
    ]
    assert [kind(m) for m in await outbox(store)] == ["CONTRL7", "APERAK-"]  # no 55010, no 55036


async def test_gv1_names_the_malo_not_a_tranche(store: LmdbStore) -> None:
    tx = [
        "IDE+24+LFNTX1",
        "DTM+92:202511302300?+00:303",
        "STS+7++E03+ZW0",
        f"LOC+Z21+{TRANCHE}",
        "RFF+Z13:55077",
        *package_segments((("1", bilanzkreis_of(LFN)),)),
    ]
    p = pipeline(store, VirtualClock(THU_1430))
    await p.ingest(interchange(LFN, NB, "LFN0001", THU_1430, tx), THU_1430)
    assert await aperak_errors(store) == [("Z29", "PID 55077: MaLo-ID (SG5 LOC+Z16) missing")]


def test_master_data_names_the_malo_of_a_tranche(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    path.write_text(json.dumps({TRANCHE: {"tranche_of": TRANCHE_OF, "current": LFA}}))
    assert load_master_data(path).suppliers(NB, TRANCHE, START) == Suppliers(
        current=LFA, tranche_of=TRANCHE_OF
    )
    path.write_text(json.dumps({TRANCHE: {"tranche_of": "5190000001"}}))
    with pytest.raises(
        InvalidArgument, match=f"Tranche {TRANCHE}: field 'tranche_of' is '5190000001', not a MaLo-ID"
    ):
        load_master_data(path)


async def test_a_tranche_formed_by_aufteilungsfaktor_gets_zd2_without_a_percentage(store: LmdbStore) -> None:
    by_factor = Suppliers(current=LFA, tranche_of=TRANCHE_OF, tranche_basis="ZD2")
    p = pipeline(store, VirtualClock(THU_1430), **{TRANCHE: by_factor})
    await p.ingest(anmeldung(pid="55077", gv="ZW1"), THU_1430)
    sent = utilmd_by_pid(await outbox(store))
    p = pipeline(store, VirtualClock(ANSWER_AT), **{TRANCHE: by_factor})
    await p.ingest(lfa_answer(sent["55010"].transactions[0].ide_ref, sent_at=ANSWER_AT), ANSWER_AT)
    confirmation = utilmd_by_pid(await outbox(store))["55078"]
    assert values(confirmation, "CCI", "Z37") == [["", "ZD2"]]
    assert [s for s in confirmation.segments if s.tag == "QTY"] == []


def _confirmation(*sg8: str) -> bytes:
    """A 55078 of GV2 as we send it, with ``sg8`` after its SG8 Z98."""
    return interchange(NB, LFN, "NB1", THU_1430, [
        "IDE+24+NBTX1", "DTM+92:202511302300?+00:303", "STS+7++E03+ZW1", "STS+E01++A55:E_0623",
        f"LOC+Z16+{TRANCHE_OF}", f"LOC+Z21+{TRANCHE}", "RFF+Z13:55078", "RFF+TN:LFNTX1", "RFF+Z60:1",
        "SEQ+Z98", *sg8,
    ])  # fmt: skip


def test_the_structure_check_names_a_55078_without_the_tranche_s_data() -> None:
    """Master data that do not say how the Tranche's size is formed leave SG8 Z15 out: the
    message then misses a Muss group ([477]), which the check names; a percentage basis
    without its QTY+11 ([384]) likewise."""
    assert check_structure(_confirmation("SEQ+Z15", "QTY+11:37.5:P1", "CCI+Z37++ZD1")) == []
    assert check_structure(_confirmation("SEQ+Z15", "CCI+Z37++ZD2")) == []
    assert [p for p in check_structure(_confirmation()) if "Z15" in p] == [
        "UTILMD M1 IDE NBTX1 (PID 55078): SG8 SEQ+Z15 required with STS+7 ZW1 (S1 AHB)"
    ]
    assert [p for p in check_structure(_confirmation("SEQ+Z15", "CCI+Z37++ZD1")) if "Z15" in p] == [
        "UTILMD M1 IDE NBTX1 (PID 55078) SG8 SEQ+Z15: QTY+11 required with CCI+Z37++ZD1"
    ]


def test_master_data_say_how_a_tranche_is_sized(tmp_path: Path) -> None:
    path = tmp_path / "master.json"

    def read(entry: dict[str, object]) -> Suppliers:
        path.write_text(json.dumps({TRANCHE: {"tranche_of": TRANCHE_OF, **entry}}))
        return load_master_data(path).suppliers(NB, TRANCHE, START)

    by_percent, as_number = read({"tranche_percent": "12.50"}), read({"tranche_percent": 12.5})
    by_factor = read({"tranche_basis": "ZD2"})
    assert (by_percent.tranche_basis, by_percent.tranche_percent) == ("ZD1", "12.5")
    assert as_number.tranche_percent == "12.5"  # a JSON number
    assert (by_factor.tranche_basis, by_factor.tranche_percent) == ("ZD2", None)
    for entry, complaint in (
        ({"tranche_percent": "100"}, "'tranche_percent' is '100', expected a percentage > 0 and < 100"),
        ({"tranche_percent": "1.005"}, "at most two decimals"),
        ({"tranche_basis": "ZD1"}, "percentage \\(ZD1\\) needs 'tranche_percent'"),
        ({"tranche_basis": "ZD2", "tranche_percent": "5"}, "\\(ZD2\\) has no 'tranche_percent'"),
        ({"tranche_basis": "Z99"}, "'tranche_basis' is 'Z99'"),
    ):
        with pytest.raises(InvalidArgument, match=f"MaLo {TRANCHE}: .*{complaint}"):
            read(entry)
    path.write_text(json.dumps({MALO: {"tranche_percent": "5"}}))
    with pytest.raises(InvalidArgument, match="need 'tranche_of'"):
        load_master_data(path)
