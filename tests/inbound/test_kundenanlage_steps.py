"""End to end on LMDB: E_0622 steps 16–28, an Anmeldung of a ruhende MaLo (55001 STS+7 #2 ZAP,
LOC+Z22) in a Kundenanlage (its MaLo LOC+Z16), decided from the NB's master data as the
machine-readable trees say: FV2504 asks for an iMS first (step 17, A36), then whether the
ruhende MaLo is a consuming one (18, A09); an Anmeldung forming a new Kundenanlage (product
9991000002769 with a "Bildung" property, step 19) goes on (from FV2510: unless the Kundenanlage's
quantities are computed by a virtueller Summenzähler and the ruhende MaLo has no iMS, 20/22,
A47); integrating into an existing one needs a MaLo "Kundenanlage" (25, A08), the same
Netzlokationen (26, A37) and, from FV2510, an iMS where the Summenzähler is virtual (27/28, A46).
What the master data do not say is not checked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mako_actors.errors import InvalidArgument
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.inbound import Suppliers
from mako_actors.replay import load_master_data
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    KUNDENANLAGE,
    LFN,
    MALO,
    NB,
    START,
    THU_1430,
    anmeldung,
    dtm,
    interchange,
    kind,
    outbox,
    package_segments,
    pipeline,
    store,
    tx,
    utilmd_by_pid,
)

__all__ = ["store"]

NELO, OTHER_NELO = "E1234567890", "E0987654321"
# Under FV2504 (in force until 30.09.2025): a Thursday, and a start with its lead time kept
THU_2504 = datetime(2025, 8, 14, 12, 30, tzinfo=UTC)
START_2504 = datetime(2025, 8, 31, 22, 0, tzinfo=UTC)
# SG8 product "Ruhende Marktlokation" with the property "als ruhende MaLo zu KuA nach 20 Abs.1d
# EnWG (Bildung)" (Codeliste der Konfigurationen); 9991000003204 is "... (Integration)"
FORMING = ("SEQ+Z79+1", "PIA+5+9991000002769:Z11", "CCI+Z66", "CAV+ZH9:::9991000002933")
INTEGRATING = (*FORMING[:3], "CAV+ZH9:::9991000003204")
# "... KuA nach § 10c EEG (Bildung)": a Bildung in step 19 from FV2604 on only
FORMING_10C = (*FORMING[:3], "CAV+ZH9:::9991000003212")
THU_2604 = datetime(2026, 6, 11, 12, 30, tzinfo=UTC)  # Thursday, FV2604 in force
START_2604 = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)  # 1 July 2026, 00:00 CEST


def resting_anmeldung(
    product: Sequence[str] = (), *, fv2504: bool = False, start: datetime = START, at: datetime = THU_1430
) -> bytes:
    """A 55001 with ZAP for MALO in KUNDENANLAGE, with ``product`` as a second SG8 Z79 group of
    its package, sent ``at``."""
    sent_at, start = (THU_2504, START_2504) if fv2504 else (at, start)
    segments = [
        "IDE+24+LFNTX1", dtm("92", start), "STS+7++E01+ZAP", f"LOC+Z16+{KUNDENANLAGE}", f"LOC+Z22+{MALO}",
        "RFF+Z13:55001", *package_segments((("1", bilanzkreis_of(LFN)),))[:4], *product, "SEQ+ZH0+1",
        "CCI+Z65+++Z01", "NAD+Z09+++Beispiel:Paula:::Frau:Z01",
    ]  # fmt: skip
    return interchange(LFN, NB, "LFN0001", sent_at, segments)


async def decide(
    store: LmdbStore, raw: bytes, resting: Suppliers, kua: Suppliers, at: datetime = THU_1430
) -> list[tuple[str, str | None]]:
    """(PID, answer code) of the UTILMDs sent for ``raw`` with these master data."""
    await pipeline(store, VirtualClock(at), **{MALO: resting, KUNDENANLAGE: kua}).ingest(raw, at)
    return [(kind(m), tx(m).get("answer_code")) for m in await outbox(store) if m.message_type == "UTILMD"]


GOES_ON = [("55002", "A51")]  # no LFA in the master data: confirmed at once


async def test_a_ruhende_malo_that_is_generating_gets_a09(store: LmdbStore) -> None:
    assert await decide(store, resting_anmeldung(), Suppliers(generating=True), Suppliers()) == [
        ("55003", "A09")
    ]
    [answer] = [tx(m) for m in await outbox(store) if kind(m) == "55003"]
    assert answer["answer_ebd"] == "E_0622"


async def test_integration_into_a_malo_that_is_no_kundenanlage_gets_a08(store: LmdbStore) -> None:
    raw = resting_anmeldung(INTEGRATING)
    assert await decide(store, raw, Suppliers(), Suppliers(kundenanlage=False)) == [("55003", "A08")]


async def test_a_new_kundenanlage_is_not_asked_to_be_one_already(store: LmdbStore) -> None:
    """Step 19 yes → 20: the MaLo of a Kundenanlage to be formed is none yet."""
    raw = resting_anmeldung(FORMING)
    assert await decide(store, raw, Suppliers(), Suppliers(kundenanlage=False)) == GOES_ON


async def test_a_ruhende_malo_behind_another_netzlokation_gets_a37(store: LmdbStore) -> None:
    resting = Suppliers(netzlokationen=(OTHER_NELO,))
    kua = Suppliers(kundenanlage=True, netzlokationen=(NELO,))
    assert await decide(store, resting_anmeldung(), resting, kua) == [("55003", "A37")]


async def test_behind_the_kundenanlage_s_netzlokation_it_goes_on(store: LmdbStore) -> None:
    resting = Suppliers(netzlokationen=(NELO,))
    kua = Suppliers(kundenanlage=True, netzlokationen=(NELO, OTHER_NELO))
    assert await decide(store, resting_anmeldung(), resting, kua) == GOES_ON


@pytest.mark.parametrize(
    ("product", "virtual", "code"),
    [
        (FORMING, True, "A47"),  # steps 19 → 20 → 22
        (INTEGRATING, True, "A46"),  # steps 25 → 26 → 27 → 28
        ((), True, "A46"),  # no product: an integration too (step 19 no)
        (FORMING, False, None),  # no virtueller Summenzähler: no iMS needed
        (INTEGRATING, False, None),
    ],
)
async def test_without_an_ims_a_virtual_summenzaehler_rejects(
    store: LmdbStore, product: Sequence[str], virtual: bool, code: str | None
) -> None:
    kua = Suppliers(kundenanlage=True, virtual_summenzaehler=virtual)
    decided = await decide(store, resting_anmeldung(product), Suppliers(ims=False), kua)
    assert decided == ([("55003", code)] if code else GOES_ON)


async def test_fv2504_asks_for_the_ims_first_with_a36(store: LmdbStore) -> None:
    """Step 17 (FV2504 only): before step 18, and whatever the Kundenanlage."""
    raw = resting_anmeldung(FORMING, fv2504=True)
    decided = await decide(store, raw, Suppliers(ims=False, generating=True), Suppliers(), THU_2504)
    assert decided == [("55003", "A36")]


async def test_fv2504_has_no_summenzaehler_steps(store: LmdbStore) -> None:
    raw = resting_anmeldung(INTEGRATING, fv2504=True)
    kua = Suppliers(kundenanlage=True, virtual_summenzaehler=True)
    assert await decide(store, raw, Suppliers(ims=True), kua, THU_2504) == GOES_ON


async def test_a_consuming_malo_s_anmeldung_takes_none_of_these_steps(store: LmdbStore) -> None:
    assert await decide(store, anmeldung(), Suppliers(generating=True, ims=False), Suppliers()) == GOES_ON


async def test_the_vorlauffrist_comes_before_them(store: LmdbStore) -> None:
    late = resting_anmeldung(start=START.replace(day=13))  # the next day, 00:00
    assert await decide(store, late, Suppliers(generating=True), Suppliers()) == [("55003", "A07")]


def test_master_data_read_the_kundenanlage_facts(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    entry = {"kundenanlage": True, "virtual_summenzaehler": False, "netzlokationen": [NELO]}
    path.write_text(json.dumps({KUNDENANLAGE: entry, MALO: {"generating": False, "ims": True}}))
    master = load_master_data(path)
    kua, resting = master.suppliers(LFN, KUNDENANLAGE, START), master.suppliers(LFN, MALO, START)
    assert (kua.kundenanlage, kua.virtual_summenzaehler, kua.netzlokationen) == (True, False, (NELO,))
    assert (resting.generating, resting.ims, resting.netzlokationen) == (False, True, None)
    for bad, complaint in (
        ({"ims": "yes"}, "field 'ims' is 'yes', expected true or false"),
        ({"netzlokationen": NELO}, "field 'netzlokationen' is 'E1234567890', expected a list"),
        ({"netzlokationen": ["E12"]}, "field 'netzlokationen' has 'E12', expected a list of Netzlo"),
    ):
        path.write_text(json.dumps({MALO: bad}))
        with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: {complaint}"):
            load_master_data(path)


@pytest.mark.parametrize(
    ("at", "start", "answer"),
    [
        (THU_1430, START, [("55003", "A08")]),  # FV2510: no Bildung, so an integration (step 25)
        (THU_2604, START_2604, GOES_ON),  # FV2604: a Bildung (step 19 → 20)
    ],
)
async def test_the_10c_property_forms_a_kundenanlage_from_fv2604_on(
    store: LmdbStore, at: datetime, start: datetime, answer: list[tuple[str, str | None]]
) -> None:
    raw = resting_anmeldung(FORMING_10C, start=start, at=at)
    assert await decide(store, raw, Suppliers(), Suppliers(kundenanlage=False), at) == answer


async def test_the_55002_names_the_kundenanlages_netzlokationen_with_their_msb(store: LmdbStore) -> None:
    """S1 FV2504 55002: with ZAP, LOC+Z18 is Muss for each Netzlokation of the LOC+Z16 MaLo ([96] ∧
    [688]), each with SG8 "Daten der Netzlokation" and its MSB ([294] ∧ [2356]); one whose MSB
    the master data do not give cannot be named, and the process says so."""
    msb = "9900000005001"
    kua = Suppliers(netzlokationen=(NELO, OTHER_NELO), netzlokation_msbs=((NELO, msb, "Z40"),))
    assert await decide(store, resting_anmeldung(), Suppliers(), kua) == GOES_ON
    confirmation = utilmd_by_pid(await outbox(store))["55002"]  # rendered, structure checked
    [nelo] = [s for s in confirmation.segments if s.tag == "LOC" and s.value(0) == "Z18"]
    assert nelo.value(1) == NELO
    tags = [s.tag + "+" + s.value(0) for s in confirmation.segments]
    start = tags.index("SEQ+ZD7")
    assert tags[start : start + 5] == ["SEQ+ZD7", "RFF+Z32", "CCI+", "CAV+Z91", "SEQ+Z98"]
    cav = confirmation.segments[start + 3]
    assert (cav.value(0, 1), cav.value(0, 3)) == (msb, "Z40")
    [received] = [e for e in await store.read_all(0, 100) if e.event_type == "gpke.anmeldung_received"]
    assert any(OTHER_NELO in w and "no MSB" in w for w in received.payload["warnings"])


def test_master_data_read_a_netzlokation_with_its_msb(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    entry = {"netzlokationen": [NELO, {"id": OTHER_NELO, "msb": "9900000005001", "msb_role": "Z40"}]}
    path.write_text(json.dumps({KUNDENANLAGE: entry}))
    read = load_master_data(path).suppliers(LFN, KUNDENANLAGE, START)
    assert read.netzlokationen == (NELO, OTHER_NELO)
    assert read.netzlokation_msbs == ((OTHER_NELO, "9900000005001", "Z40"),)
    path.write_text(json.dumps({KUNDENANLAGE: {"netzlokationen": [{"id": NELO, "msb": "12"}]}}))
    with pytest.raises(InvalidArgument, match=f"MaLo {KUNDENANLAGE}: Netzlokation {NELO}: MSB '12'"):
        load_master_data(path)
