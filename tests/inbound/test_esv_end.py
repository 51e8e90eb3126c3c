"""End to end on LMDB: E_0607 step 80 from the NB's master data. An Abmeldung "Ende der ESV ohne
Folgelieferung" (55004 STS+7 Z41) is confirmed only for a MaLo whose Ersatz-/Grundversorgung
(``esv_from`` in master.json) began within the 3 months before the end; else 55006 A05."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mako_actors.errors import InvalidArgument
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import abmeldung
from mako_actors.inbound import DirectHost, InboundPipeline
from mako_actors.replay import load_master_data
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore

NB, LF = "9900000002009", "9900000003005"
MALO = "51900000012"
BERLIN = ZoneInfo("Europe/Berlin")
WED = datetime(2025, 12, 10, 10, 0, tzinfo=BERLIN)
END = datetime(2026, 1, 1, tzinfo=BERLIN)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


async def answer(store: LmdbStore, master: Path, reason: str = "Z41") -> tuple[str, str]:
    clock = VirtualClock(WED)
    pipeline = InboundPipeline(
        store, DirectHost(store, [GpkeNbWorkflow()], clock), tenants=[NB],
        master_data=load_master_data(master), clock=clock,
    )  # fmt: skip
    raw = abmeldung(
        lf=LF, nb=NB, malo=MALO, zuordnungsende=END, ide_ref="ESV1", control_ref="LF1", sent_at=WED,
        transaction_reason=reason,
    )  # fmt: skip
    assert (await pipeline.ingest(raw, WED)).status == "accepted"
    [tx] = [
        m.payload["transactions"][0]
        for m in await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))
        if m.message_type == "UTILMD"
    ]
    return tx["pid"], tx["answer_code"]


def master(tmp_path: Path, esv_from: str) -> Path:
    path = tmp_path / "master.json"
    path.write_text(json.dumps({MALO: {"current": LF, "esv_from": esv_from}}))
    return path


async def test_the_end_of_an_esv_begun_lately_is_confirmed(store: LmdbStore, tmp_path: Path) -> None:
    assert await answer(store, master(tmp_path, "2025-11-01T00:00:00+01:00")) == ("55005", "A11")


async def test_the_end_of_an_esv_begun_long_before_is_rejected_a05(store: LmdbStore, tmp_path: Path) -> None:
    assert await answer(store, master(tmp_path, "2025-06-01T00:00:00+02:00")) == ("55006", "A05")


async def test_another_reason_is_not_asked_about_the_esv(store: LmdbStore, tmp_path: Path) -> None:
    assert await answer(store, master(tmp_path, "2025-06-01T00:00:00+02:00"), "ZT4") == ("55005", "A11")


def test_esv_from_needs_its_offset(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: field 'esv_from'.*without its offset"):
        load_master_data(master(tmp_path, "2025-06-01T00:00:00"))
