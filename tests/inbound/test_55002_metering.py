"""End to end on LMDB: a 55002 names the MaLo's Messstellenbetreiber and Messlokationen (S1
FV2504 55002: SG8 "Daten der Marktlokation" SEQ+Z98 Muss [2061] with SG10 ZB3/CAV+Z91 Muss
[483] for a gemessene MaLo; SG5 LOC+Z17 Muss ([96] ⊻ [483]) for each Messlokation, and one SG8
"Daten der Messlokation" SEQ+ZF3 each [2284] with its MSB and the gMSB CAV+ZF0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mako_actors.edifact import Message, UtilmdTransaction, render_outbound
from mako_actors.edifact.structure import check_structure
from mako_actors.errors import InvalidArgument
from mako_actors.inbound import Suppliers
from mako_actors.replay import load_master_data
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFN,
    MALO,
    NB,
    START,
    THU_1430,
    TRANCHE_OF,
    anmeldung,
    interchange,
    outbox,
    pipeline,
    store,
    utilmd_by_pid,
)

__all__ = ["store"]

MSB, GMSB = "9900000005003", "9900000006001"
MELOS = ("DE1111111111" + "A" * 20 + "1", "DE1111111111" + "A" * 20 + "2")


def shape(message: Message) -> list[str]:
    """The transaction's segments from LOC on, as ``TAG+first element`` (CAV/CCI in full)."""
    (t,) = message.transactions
    out = []
    for s in t.segments:
        if s.tag in ("LOC", "SEQ", "RFF"):
            out.append(f"{s.tag}+{s.value(0)}+{s.value(1)}" if s.tag == "LOC" else f"{s.tag}+{s.value(0)}")
        elif s.tag in ("CCI", "CAV"):
            out.append(f"{s.tag}+{':'.join(s.components(0))}|{':'.join(s.components(2))}")
    return out


async def confirmation(store: LmdbStore, master: Suppliers) -> Message:
    await pipeline(store, VirtualClock(THU_1430), **{MALO: master}).ingest(anmeldung(), THU_1430)
    return utilmd_by_pid(await outbox(store))["55002"]  # rendered and structure-checked


async def test_a_gemessene_malo_names_its_msb_and_messlokationen(store: LmdbStore) -> None:
    master = Suppliers(measurement="ZW7", msb=MSB, msb_role="Z40", gmsb=GMSB, messlokationen=MELOS)
    message = await confirmation(store, master)
    msb = f"CAV+Z91:{MSB}::Z40:Z19|"  # (the second DE7110, "Art der Leistungserbringung": Muss)
    assert shape(message) == [
        f"LOC+Z16+{MALO}", f"LOC+Z17+{MELOS[0]}", f"LOC+Z17+{MELOS[1]}", "RFF+Z13", "RFF+TN", "RFF+Z60",
        "SEQ+Z98", "CCI+|ZB3", msb,
        "SEQ+ZF3", "RFF+Z19", "CCI+|ZB3", msb, f"CAV+ZF0:{GMSB}|",
        "SEQ+ZF3", "RFF+Z19", "CCI+|ZB3", msb, f"CAV+ZF0:{GMSB}|",
    ]  # fmt: skip
    refs = [s.value(0, 1) for s in message.segments if s.tag == "RFF" and s.value(0) == "Z19"]
    assert refs == list(MELOS)


async def test_a_pauschale_malo_carries_the_malo_data_group_only(store: LmdbStore) -> None:
    """ZW6: LOC+Z17 and the SG10 are Muss only for ZAP/ZW7; SEQ+Z98 is Muss always."""
    master = Suppliers(measurement="ZW6", msb=MSB, msb_role="Z39", gmsb=MSB, messlokationen=MELOS)
    message = await confirmation(store, master)
    assert shape(message) == [f"LOC+Z16+{MALO}", "RFF+Z13", "RFF+TN", "RFF+Z60", "SEQ+Z98"]


def test_the_structure_check_reads_sg8_groups() -> None:
    head = [
        "IDE+24+NBTX1", "DTM+92:202511302300?+00:303", "STS+7++E03+ZW7", "STS+E01++A51:E_0623",
        f"LOC+Z16+{MALO}", "RFF+Z13:55002", "RFF+TN:LFNTX1",
    ]  # fmt: skip
    z98 = ["SEQ+Z98", "CCI+++ZB3", f"CAV+Z91:{MSB}::Z39"]
    zf3 = ["SEQ+ZF3", f"RFF+Z19:{MELOS[0]}", "CCI+++ZB3", f"CAV+Z91:{MSB}::Z39", f"CAV+ZF0:{MSB}"]

    def problems(tx: list[str]) -> list[str]:
        return check_structure(interchange(NB, LFN, "NB1", THU_1430, tx))

    melos = [f"LOC+Z17+{melo}" for melo in MELOS]
    assert problems([*head[:5], *melos, *head[5:], *z98, *zf3, *zf3]) == []
    apart = [*head[:5], melos[0], "RFF+Z13:55002", melos[1]]  # one after another, or not at all
    assert any("LOC+Z17 repeats" in p for p in problems(apart))
    assert any("required SG8 SEQ+Z98 missing" in p for p in problems([*head, *zf3]))
    assert any("SEQ+Z98 out of order" in p for p in problems([*head, *zf3, *z98]))
    assert any("SEQ+Z98 repeats" in p for p in problems([*head, *z98, *z98]))
    assert any("CAV+ZF0 missing" in p for p in problems([*head, *z98, *zf3[:-1]]))
    assert any("SEQ+Z79 is not carried" in p for p in problems([*head, *z98, "SEQ+Z79+1"]))


def test_master_data_check_the_msb_fields(tmp_path: Path) -> None:
    path = tmp_path / "master.json"

    def read(entry: dict[str, object]) -> Suppliers:
        path.write_text(json.dumps({MALO: entry}))
        return load_master_data(path).suppliers(NB, MALO, START)

    ours = read({"msb": MSB, "messlokationen": list(MELOS)})
    assert (ours.msb, ours.msb_role, ours.gmsb, ours.messlokationen) == (MSB, "Z39", MSB, MELOS)
    for entry, complaint in (
        ({"msb": MSB, "msb_role": "Z40"}, "not the grundzuständige"),
        ({"messlokationen": list(MELOS)}, "need 'msb'"),
        ({"msb": MSB, "messlokationen": ["DE123"]}, "Messlokation-IDs"),
        ({"msb": "MSB"}, "'msb' is 'MSB', not an MP-ID"),
        ({"msb": MSB, "msb_role": "Z99", "gmsb": GMSB}, "'msb_role' is 'Z99'"),
    ):
        with pytest.raises(InvalidArgument, match=complaint):
            read(entry)


async def test_the_55078_names_them_too_after_the_tranche(store: LmdbStore) -> None:
    """S1 FV2504 55078: LOC+Z17 Muss [623] (the last SG5, after a Tranche's LOC+Z21), SG8 Z98 with
    its SG10 Muss [2061], the Tranche's Z15 ([477]), one ZF3 per Messlokation [2284]; a
    generating MaLo is always measured."""
    tranche = Suppliers(
        tranche_of=TRANCHE_OF, tranche_basis="ZD2", msb=MSB, gmsb=MSB, messlokationen=MELOS[:1]
    )
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: tranche})
    await p.ingest(anmeldung(pid="55077", gv="ZW1", customer=None), THU_1430)
    message = utilmd_by_pid(await outbox(store))["55078"]
    msb = f"CAV+Z91:{MSB}::Z39:Z19|"
    assert shape(message) == [
        f"LOC+Z16+{TRANCHE_OF}", f"LOC+Z21+{MALO}", f"LOC+Z17+{MELOS[0]}", "RFF+Z13", "RFF+TN", "RFF+Z60",
        "SEQ+Z98", "CCI+|ZB3", msb, "SEQ+Z15", "CCI+Z37|ZD2", "SEQ+ZF3", "RFF+Z19", "CCI+|ZB3", msb,
        f"CAV+ZF0:{MSB}|",
    ]  # fmt: skip


def test_suppliers_decide_the_msb_defaults_and_refuse_a_missing_gmsb() -> None:
    """One place decides the defaults: role Z39, and then the MSB is the gMSB; another role needs
    the gMSB named (the renderer leaves CAV+ZF0 out rather than name the wrong party)."""
    own = Suppliers(msb=MSB, messlokationen=MELOS)
    assert (own.msb_role, own.gmsb) == ("Z39", MSB)
    with pytest.raises(ValueError, match="not the grundzuständige"):
        Suppliers(msb=MSB, msb_role="Z40")
    with pytest.raises(ValueError, match="need 'msb'"):
        Suppliers(messlokationen=MELOS)
    tx = UtilmdTransaction(ide_ref="NBTX1", pid="55002", malo=MALO, messlokationen=MELOS[:1], msb=MSB,
                           msb_role="Z40")  # fmt: skip
    rendered = rendered_55002(tx)
    assert b"CAV+ZF0" not in rendered and b"CAV+Z91:" + MSB.encode() + b"::Z40" in rendered
    assert any("CAV+ZF0 missing" in p for p in check_structure(rendered))


def test_a_ruhende_malos_55002_names_its_msb_with_its_messlokationen_only() -> None:
    """S2 55002 (FV2504, FV2510): SG10 of SEQ+Z98 (CCI+++ZB3, CAV+Z91) is Muss [483], with ZW7
    only; a ruhende MaLo's (ZAP) names its MSB in SEQ+ZF3 per Messlokation ([96]). Before, the
    MSB went into SEQ+Z98 too (found by a review against the machine-readable AHB)."""
    tx = UtilmdTransaction(
        ide_ref="NBTX1", pid="55002", malo=MALO, messlokationen=MELOS[:1], msb=MSB, msb_role="Z39",
        transaction_reason="E03", transaction_reason_detail="ZAP",
    )  # fmt: skip
    rendered = rendered_55002(tx)
    text = rendered.decode("latin-1")
    assert "SEQ+Z98'SEQ+ZF3'" in text.replace("\n", "")
    assert f"SEQ+ZF3'RFF+Z19:{MELOS[0]}'CCI+++ZB3'CAV+Z91:{MSB}::Z39:Z19'CAV+ZF0:{MSB}'" in text
    # (this transaction lacks the rest of a 55002: only its SG8 is looked at)
    assert not [p for p in check_structure(rendered) if "SEQ" in p or "CCI" in p or "CAV" in p]


def rendered_55002(tx: UtilmdTransaction) -> bytes:
    """``tx`` in a UTILMD of its own, as the outbox renders it."""
    return render_outbound("UTILMD", {
        "envelope": {"sender_id": NB, "recipient_id": LFN, "prepared_at": THU_1430.isoformat(),
                     "control_ref": "NB1"},
        "reference": "M1", "document_number": "D1", "document_date": THU_1430.isoformat(),
        "sender_id": NB, "recipient_id": LFN, "transactions": [tx.model_dump(mode="json")],
    })  # fmt: skip
