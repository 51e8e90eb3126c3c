"""End to end on LMDB: E_0622 steps that need the MaLo's master data (EBD trees FV2504-FV2610).
Step 30: a MaLo that takes no part in market communication at the Anmeldedatum (stillgelegt,
"Modell 2") gets 55003 A02; step 50: an Anmeldung for a Neuanlage (ID formed, Inbetriebnahme
ahead) is the wrong process, A04; for a generating MaLo step 220, its first, A21 in a 55080, and
step 250, A24 when not all its metering devices measure quarter-hourly."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from mako_actors.errors import InvalidArgument
from mako_actors.inbound import Suppliers
from mako_actors.replay import load_master_data
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFA,
    LFN,
    MALO,
    START,
    THU_1430,
    anmeldung,
    decide,
    dtm,
    kind,
    outbox,
    store,
    tx,
)

__all__ = ["store"]


async def test_a_stillgelegte_malo_is_rejected_with_a02_and_not_claimed(store: LmdbStore) -> None:
    gone = Suppliers(current=LFA, out_of_market_from=START - timedelta(days=3))
    assert await decide(store, anmeldung(), **{MALO: gone}) == [("55003", "A02")]
    [answer] = [tx(m) for m in await outbox(store) if kind(m) == "55003"]
    assert answer["answer_ebd"] == "E_0622"


async def test_a_malo_leaving_the_market_only_after_the_start_is_taken(store: LmdbStore) -> None:
    later = Suppliers(current=LFA, out_of_market_from=START + timedelta(days=1))
    assert await decide(store, anmeldung(), **{MALO: later}) == [("55036", None), ("55010", None)]


async def test_an_anmeldung_for_a_neuanlage_is_the_wrong_process_a04(store: LmdbStore) -> None:
    ahead = Suppliers(in_operation_from=START)  # ID formed, Inbetriebnahme after the receipt
    assert await decide(store, anmeldung(), **{MALO: ahead}) == [("55003", "A04")]


async def test_a_malo_in_operation_before_the_receipt_is_no_neuanlage(store: LmdbStore) -> None:
    running = Suppliers(in_operation_from=THU_1430 - timedelta(days=30))
    assert await decide(store, anmeldung(), **{MALO: running}) == [("55002", "A51")]


async def test_einzug_in_neuanlage_of_a_generating_malo_gets_a21_first(store: LmdbStore) -> None:
    """Step 220 is the first of a generating MaLo: before its lead times (here missed too)."""
    late = dtm("92", START).replace("2025113023", "2025111423").encode()
    raw = anmeldung(pid="55077", gv="ZW0", customer=None).replace(dtm("92", START).encode(), late)
    assert await decide(store, raw, **{MALO: Suppliers(in_operation_from=START)}) == [("55080", "A21")]


async def test_the_vorlauffrist_is_checked_before_the_market_communication(store: LmdbStore) -> None:
    """Step 15 (A07) comes before step 30 (A02) for a consuming MaLo."""
    late = dtm("92", START).replace("2025113023", "2025111323").encode()
    raw = anmeldung().replace(dtm("92", START).encode(), late)
    gone = Suppliers(out_of_market_from=THU_1430)
    assert await decide(store, raw, **{MALO: gone}) == [("55003", "A07")]


def test_master_data_read_both_instants_and_refuse_one_without_offset(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    entry = {
        "in_operation_from": "2026-03-01T00:00:00+01:00", "out_of_market_from": "2027-01-01T00:00:00+01:00"
    }
    path.write_text(json.dumps({MALO: entry}))
    read = load_master_data(path).suppliers(LFN, MALO, START)
    assert (read.in_operation_from.isoformat(), read.out_of_market_from.isoformat()) == (  # type: ignore[union-attr]
        entry["in_operation_from"], entry["out_of_market_from"]
    )
    path.write_text(json.dumps({MALO: {"out_of_market_from": "2027-01-01T00:00:00"}}))
    with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: field 'out_of_market_from'.*without its offset"):
        load_master_data(path)


async def test_a_generating_malo_without_quarter_hour_metering_gets_a24(store: LmdbStore) -> None:
    """Step 250 (erz.): not all metering devices measure quarter-hourly (FV2504: no balancing on
    ¼-h values) → 55080 A24, no 55010; it comes after step 220 and before the lead times (here
    missed too)."""
    late = dtm("92", START).replace("2025113023", "2025111423").encode()
    raw = anmeldung(pid="55077", gv="ZW0", customer=None).replace(dtm("92", START).encode(), late)
    assert await decide(store, raw, **{MALO: Suppliers(current=LFA, quarter_hour_metering=False)}) == [
        ("55080", "A24")
    ]
    [answer] = [tx(m) for m in await outbox(store) if kind(m) == "55080"]
    assert answer["answer_ebd"] == "E_0622"


@pytest.mark.parametrize("metering", [True, None])
async def test_quarter_hour_metering_or_none_goes_on(store: LmdbStore, metering: bool | None) -> None:
    raw = anmeldung(pid="55077", gv="ZW0", customer=None)
    assert await decide(store, raw, **{MALO: Suppliers(current=LFA, quarter_hour_metering=metering)}) == [
        ("55036", None), ("55010", None)
    ]  # fmt: skip


async def test_step_220_comes_before_step_250(store: LmdbStore) -> None:
    neither = Suppliers(in_operation_from=START, quarter_hour_metering=False)
    assert await decide(store, anmeldung(pid="55077", gv="ZW0", customer=None), **{MALO: neither}) == [
        ("55080", "A21")
    ]


async def test_a_consuming_malo_is_not_asked_for_quarter_hour_metering(store: LmdbStore) -> None:
    assert await decide(store, anmeldung(), **{MALO: Suppliers(quarter_hour_metering=False)}) == [
        ("55002", "A51")
    ]


def test_master_data_read_quarter_hour_metering_as_a_json_boolean(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    path.write_text(json.dumps({MALO: {"quarter_hour_metering": False}}))
    assert load_master_data(path).suppliers(LFN, MALO, START).quarter_hour_metering is False
    path.write_text(json.dumps({MALO: {"quarter_hour_metering": "no"}}))
    with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: field 'quarter_hour_metering' is 'no'"):
        load_master_data(path)
