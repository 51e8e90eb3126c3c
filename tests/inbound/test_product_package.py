"""End to end on LMDB: the Produktpakete of an Anmeldung (SG8 ``SEQ+Z79``, Muss in 55001/55077),
the Zuordnungsermächtigung for their Bilanzkreis (E_0622 step 60 A05 / step 260 A25, the
deviation named in FTX+ACB: S1 55003 [23], 55080 [24]) and the package the NB plans, named by
``RFF+Z60`` in the 55002/55078 (Muss, S1 FV2504 55002/55078 "Informativ zur Umsetzung geplantes
Produktpaket")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mako_actors.errors import InvalidArgument
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.gpke.validation import is_valid_eic
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData, Suppliers
from mako_actors.replay import load_master_data
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    KUNDENANLAGE,
    LFA,
    LFN,
    LFN2,
    MALO,
    NB,
    START,
    THU_1430,
    anmeldung,
    aperak_errors,
    dtm,
    interchange,
    kind,
    outbox,
    store,
    tx,
    utilmd_by_pid,
)

__all__ = ["store"]

OWN, OTHER = bilanzkreis_of(LFN), bilanzkreis_of(LFN2)


def pipeline(
    store: LmdbStore, register: dict[str, frozenset[str]] | None, **suppliers: Suppliers
) -> InboundPipeline:
    """A pipeline whose master data hold ``register`` (supplier → Bilanzkreise with a
    Zuordnungsermächtigung; ``None``: no register)."""
    clock = VirtualClock(THU_1430)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    data = StaticMasterData(suppliers, register)
    return InboundPipeline(store, host, tenants=[NB], master_data=data, clock=clock)


def ftx_acb(message: object) -> str:
    segments = message.segments  # type: ignore[attr-defined]
    [ftx] = [s for s in segments if s.tag == "FTX" and s.value(0) == "ACB"]
    return "".join(ftx.components(3))


def test_synthetic_bilanzkreise_are_valid_eics() -> None:
    assert is_valid_eic(OWN) and is_valid_eic(OTHER) and OWN != OTHER


async def test_the_55002_names_the_package_of_first_priority_not_the_first_sent(store: LmdbStore) -> None:
    """Priorities come from SEQ+ZH0's CAV+Z75…: package 7 (Z75) is planned though 3 came first."""
    sg8 = [
        "SEQ+Z79+3", "PIA+5+9991000002082:Z11", "CCI+Z66", f"CAV+ZV4:::{OWN}",
        "SEQ+Z79+7", "PIA+5+9991000002082:Z11", "CCI+Z66", f"CAV+ZV4:::{OWN}",
        "SEQ+ZH0+3", "CCI+Z65+++Z01", "CAV+Z76",
        "SEQ+ZH0+7", "CCI+Z65+++Z01", "CAV+Z75",
    ]  # fmt: skip
    segments = ["IDE+24+LFNTX1", dtm("92", START), "STS+7++E01+ZW4", f"LOC+Z16+{MALO}", "RFF+Z13:55001"]
    raw = interchange(LFN, NB, "LFN0001", THU_1430, [*segments, *sg8, "NAD+Z09+++Beispiel:Paula"])
    await pipeline(store, {LFN: frozenset({OWN})}).ingest(raw, THU_1430)
    sent = utilmd_by_pid(await outbox(store))
    [z60] = [s.value(0, 1) for s in sent["55002"].segments if s.tag == "RFF" and s.value(0) == "Z60"]
    assert z60 == "7"


async def test_a_produktpaket_id_longer_than_its_format_gets_z35_not_a_55002_that_breaks_the_mig(
    store: LmdbStore,
) -> None:
    """SEQ 1050 is an..10 and the 55002 repeats the planned package in RFF+Z60. Before, a
    40-character ID was taken and echoed there, so the LFN's CONTRL would refuse our 55002; now
    the Anmeldung gets APERAK Z35 and nothing is decided. Ten characters fit and are repeated."""
    p = pipeline(store, None)
    await p.ingest(anmeldung(packages=(("1" * 11, OWN),)), THU_1430)
    [(code, text)] = await aperak_errors(store)
    assert code == "Z35" and "1" * 11 in text
    assert not [m for m in await outbox(store) if m.message_type == "UTILMD"]
    await p.ingest(anmeldung(ref="LFN0002", ide="LFNTX2", packages=(("9" * 10, OWN),)), THU_1430)
    sent = utilmd_by_pid(await outbox(store))
    [z60] = [s.value(0, 1) for s in sent["55002"].segments if s.tag == "RFF" and s.value(0) == "Z60"]
    assert z60 == "9" * 10


async def test_an_anmeldung_without_a_produktpaket_gets_aperak_z29(store: LmdbStore) -> None:
    await pipeline(store, None).ingest(anmeldung(packages=()), THU_1430)
    assert await aperak_errors(store) == [
        ("Z29", "PID 55001: SG8 SEQ+Z79 (Bestandteil eines Produktpakets) missing")
    ]
    assert not [m for m in await outbox(store) if m.message_type == "UTILMD"]


async def test_a_ruhende_malo_needs_no_produktpaket(store: LmdbStore) -> None:
    """55001 SG8 SEQ+Z79 is "Muss [480]": only "Wenn SG4 STS+7++xxx+ZW4 vorhanden" (S1 FV2504
    55001.csv). A ruhende MaLo's Anmeldung (ZAP) names none; it got APERAK Z29 and counted as not
    received. Now it is decided (E_0622) like one that names a package."""
    suppliers = {MALO: Suppliers(current=LFA), KUNDENANLAGE: Suppliers(kundenanlage=True)}
    await pipeline(store, None, **suppliers).ingest(anmeldung(detail="ZAP", packages=()), THU_1430)
    assert await aperak_errors(store) == []
    assert sorted((kind(m), m.recipient) for m in await outbox(store) if m.message_type == "UTILMD") == [
        ("55010", LFA), ("55036", LFN)
    ]  # fmt: skip


async def test_an_anmeldung_without_its_kind_of_malo_gets_z29(store: LmdbStore) -> None:
    """55001 STS+7 C556#2 is Muss: ZW4 (verbrauchend) or ZAP (ruhend), S1 FV2504 55001.csv
    rows 80/83 "X". Without it the SG8 rule [480] could not be read, and it was confirmed."""
    raw = anmeldung(detail="", packages=()).replace(b"STS+7++E01+'", b"STS+7++E01'")
    await pipeline(store, None, **{MALO: Suppliers(current=LFA)}).ingest(raw, THU_1430)
    assert await aperak_errors(store) == [("Z29", "PID 55001: STS+7 C556#2 (ZAP|ZW4) missing")]
    assert not [m for m in await outbox(store) if m.message_type == "UTILMD"]


async def test_no_zuordnungsermaechtigung_for_the_bilanzkreis_is_rejected_with_a05(store: LmdbStore) -> None:
    """The LFN names a Bilanzkreis it holds no Zuordnungsermächtigung for: 55003 A05 (E_0622 step
    60) naming it in FTX+ACB; the MaLo is not claimed, so another supplier's Anmeldung is decided
    on its own (not A06)."""
    p = pipeline(store, {LFN: frozenset({OWN}), LFN2: frozenset({OTHER})}, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(packages=(("1", OTHER),)), THU_1430)
    messages = await outbox(store)
    assert [kind(m) for m in messages if m.message_type == "UTILMD"] == ["55003"]
    [answer] = [tx(m) for m in messages if kind(m) == "55003"]
    assert (answer["answer_code"], answer["answer_ebd"]) == ("A05", "E_0622")
    text = ftx_acb(utilmd_by_pid(messages)["55003"])
    assert OTHER in text and "Zuordnungsermächtigung" in text
    rival = anmeldung(lfn=LFN2, ref="LFN2001", ide="LFN2TX1", packages=(("1", OTHER),))
    await p.ingest(rival, THU_1430)
    to_rival = [kind(m) for m in await outbox(store) if m.recipient == LFN2 and m.message_type == "UTILMD"]
    assert to_rival == ["55036"]  # consulting the LFA, not rejected as a competitor


class _ErpMasterData:
    """Master data written against the protocol before the register existed: ``suppliers`` only."""

    def suppliers(self, tenant: str, malo: str, at: object) -> Suppliers:
        return Suppliers(current=LFA)


async def test_master_data_without_a_register_leave_the_bilanzkreis_unchecked(store: LmdbStore) -> None:
    """A ``MasterData`` without ``bilanzkreise`` (the optional ``BilanzkreisRegister``) still
    decides: the package is planned as if no register were kept, no AttributeError per Anmeldung."""
    clock = VirtualClock(THU_1430)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    p = InboundPipeline(store, host, tenants=[NB], master_data=_ErpMasterData(), clock=clock)
    await p.ingest(anmeldung(packages=(("1", OTHER),)), THU_1430)
    sent = [kind(m) for m in await outbox(store) if m.message_type == "UTILMD"]
    assert sent == ["55036", "55010"]  # the LFA is consulted, no 55003 A05
    assert await aperak_errors(store) == []


async def test_the_first_package_the_nb_can_implement_is_planned(store: LmdbStore) -> None:
    p = pipeline(store, {LFN: frozenset({OWN})})
    await p.ingest(anmeldung(packages=(("1", OTHER), ("2", OWN))), THU_1430)
    confirmation = tx(next(m for m in await outbox(store) if kind(m) == "55002"))
    assert confirmation["product_package"] == "2"


async def test_a_generating_malo_without_zuordnungsermaechtigung_gets_a25(store: LmdbStore) -> None:
    """Step 260 comes before the competing Anmeldung (270) and the lead times: A25 in a 55080."""
    late = dtm("92", START).replace("2025113023", "2025111423")  # one day ahead: too late too
    raw = anmeldung(pid="55077", gv="ZW0", customer=None, packages=(("1", OTHER),))
    raw = raw.replace(dtm("92", START).encode(), late.encode())
    await pipeline(store, {LFN: frozenset({OWN})}).ingest(raw, THU_1430)
    messages = await outbox(store)
    [answer] = [tx(m) for m in messages if kind(m) == "55080"]
    assert (answer["answer_code"], answer["answer_ebd"]) == ("A25", "E_0622")
    assert OTHER in ftx_acb(utilmd_by_pid(messages)["55080"])


async def test_a_missed_vorlauffrist_is_checked_before_the_zuordnungsermaechtigung(store: LmdbStore) -> None:
    """E_0622 for a consuming MaLo: step 15 (A07) before step 60 (A05)."""
    late = dtm("92", START).replace("2025113023", "2025111323")
    raw = anmeldung(packages=(("1", OTHER),)).replace(dtm("92", START).encode(), late.encode())
    await pipeline(store, {LFN: frozenset({OWN})}).ingest(raw, THU_1430)
    [answer] = [tx(m) for m in await outbox(store) if kind(m) == "55003"]
    assert answer["answer_code"] == "A07"


async def test_without_a_register_the_bilanzkreis_is_not_checked(store: LmdbStore) -> None:
    await pipeline(store, None).ingest(anmeldung(packages=(("4", OTHER),)), THU_1430)
    confirmation = tx(next(m for m in await outbox(store) if kind(m) == "55002"))
    assert (confirmation["answer_code"], confirmation["product_package"]) == ("A51", "4")


def test_master_data_read_the_register_and_refuse_a_bad_eic(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    path.write_text(json.dumps({MALO: {"current": LFA}, "bilanzkreise": {LFN: [OWN]}}))
    data = load_master_data(path)
    assert data.bilanzkreise(NB, LFN) == frozenset({OWN})
    assert data.bilanzkreise(NB, LFN2) == frozenset()  # a register: an unlisted supplier holds none
    assert data.suppliers(NB, MALO, START).current == LFA
    path.write_text(json.dumps({"bilanzkreise": {LFN: [OWN[:15] + "X"]}}))
    with pytest.raises(InvalidArgument, match=f"{LFN}.*{OWN[:15]}X.*not an EIC"):
        load_master_data(path)
    path.write_text(json.dumps({"bilanzkreise": {"LF": [OWN]}}))
    with pytest.raises(InvalidArgument, match="'LF' is not an MP-ID"):
        load_master_data(path)
    path.write_text(json.dumps({MALO: {}}))
    assert load_master_data(path).bilanzkreise(NB, LFN) is None  # no register: not checked


async def test_many_unusable_packages_still_give_a_sendable_answer(store: LmdbStore) -> None:
    """FTX+ACB holds 2,560 characters: the deviations of forty packages are cut, not unsendable."""
    many = tuple((str(k), OTHER) for k in range(1, 41))
    # each package with its Bilanzkreis product only, no priorities (taken in the order sent)
    sg8 = [seg for k, eic in many for seg in (f"SEQ+Z79+{k}", "PIA+5+9991000002082:Z11", f"CAV+ZV4:::{eic}")]
    segments = ["IDE+24+LFNTX1", dtm("92", START), "STS+7++E01+ZW4", f"LOC+Z16+{MALO}", "RFF+Z13:55001"]
    raw = interchange(LFN, NB, "LFN0001", THU_1430, [*segments, *sg8, "NAD+Z09+++Beispiel:Paula"])
    await pipeline(store, {LFN: frozenset({OWN})}).ingest(raw, THU_1430)
    messages = await outbox(store)
    text = ftx_acb(utilmd_by_pid(messages)["55003"])  # rendered and structure-checked
    assert len(text) == 2560 and text.endswith("...") and text.startswith("Produktpaket 1:")


@pytest.mark.parametrize(
    ("change", "code", "named"),
    [
        (("SEQ+Z79+1'", "SEQ+Z79'"), "Z29", "without its package number"),
        (("SEQ+Z79+1'", "SEQ+Z79+0'"), "Z35", "'0' is no whole number > 0"),
        (("SEQ+Z79+1'", "SEQ+Z79+1.5'"), "Z35", "'1.5' is no whole number > 0"),
        (("PIA+5+9991000002082:Z11'", ""), "Z29", "its product (PIA+5) missing"),
        (("PIA+5+9991000002082:Z11'", "PIA+5+9991000002082:Z12'"), "Z39", "code list (7143) Z12"),
        (("PIA+5+9991000002082:Z11'", "PIA+5+9991000002082'"), "Z29", "code list (7143) missing"),
        (("SEQ+ZH0+1'", "SEQ+ZH0+2'"), "Z39", "SEQ+ZH0 2 names no package"),
        # (a superscript two is a digit to Python, no number to the AHB: it crashed the ingest)
        (("SEQ+Z79+1'", "SEQ+Z79+\u00b2'"), "Z35", "is no whole number > 0"),
    ],
    ids=["no 1050", "1050 zero", "1050 a decimal", "no PIA+5", "PIA code list", "PIA no code list",
         "ZH0 names none", "1050 superscript"],
)  # fmt: skip
async def test_a_package_the_ahb_forbids_gets_an_aperak_and_starts_nothing(
    store: LmdbStore, change: tuple[str, str], code: str, named: str
) -> None:
    """The packages were read leniently: a SEQ+Z79 without (or with a zero or decimal) package
    number, a package without its product or with another code list, a priority naming no
    package: taken (APERAK 312, the process started), the package dropped or ranked by the order
    sent, unseen by E_0622 step 60 (found by an AHB review: 1050 [914] ∧ [937], PIA Muss, Z11)."""
    raw = anmeldung(packages=(("1", OWN),)).decode("latin-1")
    old, new = change
    assert old in raw
    raw = raw.replace(old, new)
    if not new:  # one segment less: UNT counts it
        raw = raw.replace("UNT+18+", "UNT+17+")
    await pipeline(store, None).ingest(raw.encode("latin-1"), THU_1430)
    errors = await aperak_errors(store)
    assert any(c == code and named in text for c, text in errors), errors
    assert not [m for m in await outbox(store) if m.message_type == "UTILMD"]


async def test_a_package_number_with_a_leading_zero_is_its_number(store: LmdbStore) -> None:
    """SEQ+Z79+01 with its priority SEQ+ZH0+1 is one package (compared by value), taken."""
    raw = anmeldung(packages=(("1", OWN),)).replace(b"SEQ+Z79+1'", b"SEQ+Z79+01'")
    await pipeline(store, None).ingest(raw, THU_1430)
    assert await aperak_errors(store) == []
    assert [m for m in await outbox(store) if m.message_type == "UTILMD"]


async def test_a_priority_names_a_package_by_its_number_also_with_a_leading_zero(store: LmdbStore) -> None:
    """SEQ+Z79+02 ranked first by SEQ+ZH0+2: the check compared the numbers by value, the ranking
    by text, so the package's priority was lost (the order sent won) (found by the final read)."""
    raw = anmeldung(packages=(("1", OWN), ("2", OWN)))
    raw = raw.replace(b"SEQ+Z79+2'", b"SEQ+Z79+02'").replace(b"CAV+Z75'", b"CAV+Z7X'")
    raw = raw.replace(b"CAV+Z76'", b"CAV+Z75'").replace(b"CAV+Z7X'", b"CAV+Z76'")
    await pipeline(store, {LFN: frozenset({OWN})}).ingest(raw, THU_1430)
    assert await aperak_errors(store) == []
    confirmation = tx(next(m for m in await outbox(store) if kind(m) == "55002"))
    assert confirmation["product_package"] == "02"
