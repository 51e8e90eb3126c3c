"""On LMDB, from EDIFACT to the operator's CLI: a Geschäftsvorfall 3 (55077 STS+7 #2 ZW2) waits
for its Tranche with nothing sent to the LFN; ``processes form-tranche`` sends the 55078 (E_0623
A56) naming the MaLo, the new Tranche and its share; bad input is refused, nothing written."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mako_actors.cli import main
from mako_actors.edifact import render_outbound
from mako_actors.edifact.structure import check_structure
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import LFN, MALO, NB, THU_1430, anmeldung, dtm, interchange, kind, outbox, pipeline

TRANCHE = "41234567896"
MID_DECEMBER = datetime(2025, 12, 14, 23, 0, tzinfo=UTC)  # 15.12.2025 00:00 CET: not the 1st


def asking_for(share: str) -> bytes:
    """A GV3 whose Produktpaket also names the Tranchengröße (product 9991000002090) as a
    percentage (property 9991000003014) of ``share``."""
    return interchange(LFN, NB, "LFN0001", THU_1430, [
        "IDE+24+LFNTX1", dtm("92", MID_DECEMBER), "STS+7++E03+ZW2", f"LOC+Z16+{MALO}", "RFF+Z13:55077",
        "SEQ+Z79+1", "PIA+5+9991000002082:Z11", "CCI+Z66", f"CAV+ZV4:::{bilanzkreis_of(LFN)}",
        "SEQ+Z79+1", "PIA+5+9991000002090:Z11", "CCI+Z66", "CAV+ZH9:::9991000003014", f"CAV+ZV4:::{share}",
        "SEQ+ZH0+1", "CCI+Z65+++Z01",
    ])  # fmt: skip


def awaiting_store(path: Path, raw: bytes | None = None) -> str:
    """A store holding one GV3 process (``raw``) awaiting its Tranche; its process id."""

    async def build() -> str:
        async with LmdbStore(path) as store:
            p = pipeline(store, VirtualClock(THU_1430))
            raw_ = raw if raw is not None else anmeldung(pid="55077", gv="ZW2", start=MID_DECEMBER)
            [started] = (await p.ingest(raw_, THU_1430)).messages
            assert [kind(m) for m in await outbox(store)] == ["CONTRL7", "APERAK+"]  # no 55078 yet
            return str(started.process_id)

    return asyncio.run(build())


def test_listing_the_waiting_processes_folds_only_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``processes list --status awaiting_operator`` (what the alert's runbook runs) finds the
    waiting processes by their event types (from serve's saved queue when there is one) and
    folds only those: before, it loaded and folded every process of the store."""
    from mako_actors.gpke.awaiting import QUEUE_CHECKPOINT
    from stores.lmdb_readonly import ReadOnlyLmdbStore

    process = awaiting_store(tmp_path / "db")

    async def more() -> None:  # ten more processes, decided at once, and serve's saved queue
        async with LmdbStore(tmp_path / "db") as store:
            p = pipeline(store, VirtualClock(THU_1430))
            for i in range(10):
                raw = anmeldung(ref=f"LFN1{i:02d}", ide=f"LFNTX1{i:02d}", malo="51238696781")
                await p.ingest(raw, THU_1430)
            events = await store.read_all(0, 10_000)
            [waiting] = {e.stream_id for e in events if e.event_type == "gpke.tranche_formation_awaited"}
            await store.save_checkpoint(QUEUE_CHECKPOINT, events[-5].global_position, [waiting])

    asyncio.run(more())
    loaded: list[str] = []
    load = ReadOnlyLmdbStore.load

    async def counted(self: ReadOnlyLmdbStore, stream_id: Any, *args: Any, **kwargs: Any) -> Any:
        loaded.append(str(stream_id))
        return await load(self, stream_id, *args, **kwargs)

    monkeypatch.setattr(ReadOnlyLmdbStore, "load", counted)
    db = str(tmp_path / "db")
    assert main(["processes", "list", "--store", db, "--status", "awaiting_operator", "--json"]) == 0
    assert [row["process_id"] for row in json.loads(capsys.readouterr().out)] == [process]
    assert len(loaded) == 1 and loaded[0].endswith(process)
    loaded.clear()
    assert main(["processes", "list", "--store", db, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(loaded) > 10  # the others: every one


def test_the_operator_forms_the_tranche_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process = awaiting_store(tmp_path / "db")
    db = str(tmp_path / "db")
    assert main(["processes", "list", "--store", db, "--status", "awaiting_operator", "--json"]) == 0
    assert [row["process_id"] for row in json.loads(capsys.readouterr().out)] == [process]
    form = ["processes", "form-tranche", process[-8:], "--store", db, "--at", "2025-11-14T09:40:00+01:00"]
    assert main([*form, "--tranche", "41234567890", "--percent", "30", "--reason", "PV"]) == 1
    assert "--tranche: " in capsys.readouterr().err
    assert main([*form, "--tranche", TRANCHE, "--percent", "100", "--reason", "PV"]) == 1
    assert "--percent: 'tranche_percent' is '100'" in capsys.readouterr().err
    # The MaLo's own ID as the "new" Tranche: the 55078 named one ID in LOC+Z16 and LOC+Z21.
    assert main([*form, "--tranche", MALO, "--percent", "30", "--reason", "PV"]) == 1
    assert "needs an ID of its own, not its MaLo's" in capsys.readouterr().err
    code = main([*form, "--tranche", TRANCHE, "--percent", "37.5", "--reason", "PV, 37,5 % frei"])
    assert code == 0, capsys.readouterr().err
    assert "gpke.tranche_formed_by_operator, gpke.anmeldung_decided" in capsys.readouterr().out
    assert main(["processes", "reject-tranche-request", process[-8:], "--store", db, "--reason", "x"]) == 1
    assert "this one is confirmed" in capsys.readouterr().err

    async def sent() -> list[bytes]:
        async with LmdbStore(tmp_path / "db") as store:
            return [render_outbound("UTILMD", m.payload) for m in await outbox(store) if kind(m) == "55078"]

    [confirmation] = asyncio.run(sent())
    assert b"STS+E01++A56:E_0623'" in confirmation
    assert f"LOC+Z16+{MALO}'LOC+Z21+{TRANCHE}'".encode() in confirmation
    assert b"SEQ+Z15'QTY+11:37.5:P1'CCI+Z37++ZD1'" in confirmation
    assert f"NAD+MR+{LFN}".encode() in confirmation and check_structure(confirmation) == []


def test_without_percent_the_share_the_anmeldung_asked_for_is_formed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process = awaiting_store(tmp_path / "db", asking_for("12.50"))
    db = str(tmp_path / "db")
    assert main(["processes", "show", process[-8:], "--store", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["requested_share"] == "12.5"
    form = ["processes", "form-tranche", process[-8:], "--store", db, "--tranche", TRANCHE, "--reason", "x"]
    code = main(form)
    assert code == 0, capsys.readouterr().err

    async def sent() -> list[bytes]:
        async with LmdbStore(tmp_path / "db") as store:
            return [render_outbound("UTILMD", m.payload) for m in await outbox(store) if kind(m) == "55078"]

    [confirmation] = asyncio.run(sent())
    assert b"QTY+11:12.5:P1'" in confirmation and check_structure(confirmation) == []
