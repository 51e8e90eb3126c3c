"""``mako-actors replay --workers N --ray``: Ray workers decide like one local worker, write the
local workers' stores, re-run idempotently, and a failed worker is exit 2 with nothing reported."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.cli import main
from mako_actors.replay import decisions_in
from stores.lmdb import LmdbStore

pytestmark = pytest.mark.usefixtures("ray_cluster")

NB = "9900000002009"
SAME_AS_LOCAL = (
    "files", "messages", "events_appended", "outbox_enqueued", "processes_created", "deadlines_fired",
    "statuses", "outcomes", "dead_letters", "outbox", "errors", "rejected", "decision_digest",
)  # fmt: skip


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred messages: rejected files, duplicates, competing Anmeldungen, dead letters."""
    directory = tmp_path_factory.mktemp("archive") / "in"
    spec = ArchiveSpec(days=3, processes=80, seed=5, defects=0.2, duplicates=0.1, competing=0.2, suppliers=6)
    generate_archive(directory, spec)
    return directory


def replay(src: Path, store: Path, report: Path, *extra: str) -> tuple[int, dict[str, Any] | None]:
    argv = ["replay", str(src), "--store", str(store), "--tenant", NB, "--report", str(report), *extra]
    code = main(argv)
    return code, json.loads(report.read_text()) if report.exists() else None


async def contents(store_path: Path) -> tuple[int, int, int]:
    """Events, dead letters and outbox rows in one store."""
    async with LmdbStore(store_path) as store:
        return (
            len(await store.read_all(0, 1_000_000)),
            len(await store.dead_letters(limit=1_000_000)),
            await store.outbox_count(),
        )


def test_ray_workers_decide_like_local_workers_into_the_same_stores_and_rerun_idempotently(
    messy: Path, tmp_path: Path
) -> None:
    code, one = replay(messy, tmp_path / "one", tmp_path / "one.json")
    assert code == 0 and one is not None
    code, local = replay(messy, tmp_path / "local", tmp_path / "local.json", "--workers", "2")
    assert code == 0 and local is not None
    code, ray = replay(messy, tmp_path / "ray", tmp_path / "ray.json", "--workers", "2", "--ray")
    assert code == 0 and ray is not None
    assert one["statuses"]["rejected"] > 0 and one["dead_letters"] > 0 and one["deadlines_fired"] > 0
    assert ray["mode"] == "pipelined x2 ray" and ray["decision_digest"] == one["decision_digest"]
    for key in ("messages", "processes_created", "deadlines_fired", "outcomes"):
        assert ray[key] == one[key], key
    for key in SAME_AS_LOCAL:
        assert ray[key] == local[key], key
    parts = ["part-0-of-2", "part-1-of-2"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == parts
    for part in parts:  # the same decisions in the same partition's store as the local workers'
        ours, theirs = (asyncio.run(decisions_in(tmp_path / d / part)) for d in ("ray", "local"))
        assert ours == theirs and ours, part

    before = [asyncio.run(contents(tmp_path / "ray" / part)) for part in parts]
    code, again = replay(messy, tmp_path / "ray", tmp_path / "again.json", "--workers", "2", "--ray")
    assert code == 0 and again is not None
    written = {k: again[k] for k in ("events_appended", "outbox_enqueued", "dead_letters", "deadlines_fired")}
    assert written == dict.fromkeys(written, 0)
    assert again["decision_digest"] == one["decision_digest"]
    assert again["statuses"]["duplicate"] > 0 and "accepted" not in again["statuses"]
    assert [asyncio.run(contents(tmp_path / "ray" / part)) for part in parts] == before


def test_a_failed_ray_worker_exits_2_naming_its_partition_and_reports_nothing(
    messy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "part-1-of-2").write_text("not an LMDB directory")  # worker 1 cannot open its store
    code, report = replay(messy, store, tmp_path / "report.json", "--workers", "2", "--ray", "--json")
    out, err = capsys.readouterr()
    assert code == 2 and report is None and out == ""
    assert "Ray worker 1 of 2" in err and "part-1-of-2" in err and "Traceback" not in err
    assert "Ray worker 0" not in err  # the other worker completed its partition
    assert asyncio.run(contents(store / "part-0-of-2"))[0] > 0


def test_one_ray_worker_writes_the_plain_store_and_ray_settings_are_checked_first(
    messy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, one = replay(messy, tmp_path / "one", tmp_path / "one.json", "--ray")
    assert code == 0 and one is not None and one["mode"] == "pipelined x1 ray"
    assert (tmp_path / "one" / "data.mdb").exists() and not list((tmp_path / "one").glob("part-*"))
    code, local = replay(messy, tmp_path / "one", tmp_path / "local.json")  # a local run reads it
    assert code == 0 and local is not None and local["events_appended"] == 0
    assert local["decision_digest"] == one["decision_digest"]
    capsys.readouterr()
    for extra, named in (
        (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --ray"),
        (["--ray", "--ray-address", "ray://head:10001"], "a Ray client cannot reach"),
    ):
        code, report = replay(messy, tmp_path / "never", tmp_path / "never.json", *extra)
        assert code == 2 and report is None and named in capsys.readouterr().err
        assert not (tmp_path / "never").exists()
