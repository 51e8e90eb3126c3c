"""The inspection CLI on a partitioned store: dead letters and stats of every partition.

The layout is the one a ``RayActorSystem`` with a ``PartitionMap`` leaves on disk: each node's
data directory holds ``p0007`` LMDB environments with their ``PARTITION`` marker, written by
``stores.partitioned``; the saved map names every node's directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import DeadLetter, PartitionMap
from stores.lmdb import LmdbStore
from stores.partitioned import create_partition, open_partition
from tests.test_cli_store import NB, Capture, run, run_json

T0 = datetime(2025, 10, 1, 8, tzinfo=UTC)
COUNT = 4
# partition -> (node, minutes after T0 of its dead letters); letters interleave across nodes
PLACED = {0: ("a", [0, 3]), 1: ("b", [1, 4]), 2: ("a", [2]), 3: ("b", [])}


def kind_of(minute: int) -> str:
    return "outbox" if minute % 2 else "inbound"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("partitioned")
    nodes = {"a": root / "a", "b": root / "b"}

    async def build() -> None:
        for partition, (node, minutes) in PLACED.items():
            create_partition(nodes[node], partition, COUNT)
            store = open_partition(nodes[node], partition, COUNT)
            try:
                for m in minutes:
                    letter = DeadLetter(
                        kind=kind_of(m), reason=f"m{m}", recorded_at=T0 + timedelta(minutes=m)
                    )
                    await store.add_dead_letter(letter)
            finally:
                await store.aclose()

    asyncio.run(build())
    (nodes["a"] / "p0001.moved-2").mkdir()  # a moved-away copy is not read
    assignment = tuple(node for _, (node, _) in sorted(PLACED.items()))
    PartitionMap(assignment, {n: str(d) for n, d in nodes.items()}).save(root / "partitions.map")
    return {**nodes, "map": root / "partitions.map"}


def test_dead_letters_of_every_node_merge_by_time_with_their_partition(
    layout: dict[str, Path], capsys: Capture
) -> None:
    rows = run_json(capsys, "dead-letters", "list", "--store", str(layout["map"]))
    assert [(r["partition"], r["reason"], r["position"]) for r in rows] == [
        (0, "m0", 1), (1, "m1", 1), (2, "m2", 1), (0, "m3", 2), (1, "m4", 2),
    ]  # fmt: skip
    assert [r["kind"] for r in rows] == [kind_of(m) for m in range(5)]


def test_a_node_directory_shows_only_that_nodes_partitions(layout: dict[str, Path], capsys: Capture) -> None:
    rows = run_json(capsys, "dead-letters", "list", "--store", str(layout["a"]))
    assert [(r["partition"], r["reason"]) for r in rows] == [(0, "m0"), (2, "m2"), (0, "m3")]
    outbox = run_json(capsys, "dead-letters", "list", "--store", str(layout["map"]), "--kind", "outbox")
    assert [(r["partition"], r["reason"]) for r in outbox] == [(1, "m1"), (0, "m3")]


def test_the_table_names_the_partition_of_each_row(layout: dict[str, Path], capsys: Capture) -> None:
    code, out, err = run(capsys, "dead-letters", "list", "--store", str(layout["map"]))
    assert code == 0, err
    assert "5 dead letter(s)" in out and "partition" in out
    rows = [line.split("│")[1:3] for line in out.splitlines() if "│ m" in line or "│ 2025" in line]
    assert [(p.strip(), n.strip()) for p, n in rows] == [
        ("0", "1"),
        ("1", "1"),
        ("2", "1"),
        ("0", "2"),
        ("1", "2"),
    ]


def test_stats_count_dead_letters_and_entries_over_partitions(
    layout: dict[str, Path], capsys: Capture
) -> None:
    plain = run_json(capsys, "stats", "--store", str(layout["map"]))
    assert plain["dead_letters_open"] == 5
    assert sorted(int(p) for p in plain["partitions"]) == [0, 1, 2, 3]
    assert {int(p): v["dead_letters_open"] for p, v in plain["partitions"].items()} == {
        0: 2,
        1: 2,
        2: 1,
        3: 0,
    }
    assert plain["tables"]["dead_letters"] == 5  # entries are summed over the partitions
    assert {int(p): v["tables"]["dead_letters"] for p, v in plain["partitions"].items()} == {
        0: 2,
        1: 2,
        2: 1,
        3: 0,
    }
    code, out, err = run(capsys, "stats", "--store", str(layout["b"]))
    assert code == 0, err
    assert "2 partition(s)" in out and "2 dead letter(s) not requeued" in out


def test_per_partition_commands_name_a_partition_directory(layout: dict[str, Path], capsys: Capture) -> None:
    code, _, err = run(capsys, "processes", "list", "--store", str(layout["a"]))
    assert code == 1
    assert "partitioned store" in err and str(layout["a"] / "p0000") in err
    # requeue works per partition, with the '#' the merged list printed
    code, _, err = run(capsys, "dead-letters", "requeue", "1", "--store", str(layout["map"]))
    assert code == 1 and "partitioned store" in err


def test_a_file_that_is_no_partition_map_is_refused(tmp_path: Path, capsys: Capture) -> None:
    (tmp_path / "notes.txt").write_text("not a map")
    code, _, err = run(capsys, "dead-letters", "list", "--store", str(tmp_path / "notes.txt"))
    assert code == 1 and "neither a store directory nor a partition map" in err


def test_a_plain_store_lists_as_before_without_a_partition(tmp_path: Path, capsys: Capture) -> None:
    async def build() -> None:
        async with LmdbStore(tmp_path / "store") as store:
            await store.add_dead_letter(DeadLetter(kind="inbound", reason="plain", recorded_at=T0))

    asyncio.run(build())
    rows = run_json(capsys, "dead-letters", "list", "--store", str(tmp_path / "store"))
    assert [(r["reason"], r["position"]) for r in rows] == [("plain", 1)]
    assert "partition" not in rows[0]
    assert "partitions" not in run_json(capsys, "stats", "--store", str(tmp_path / "store"))


def build_replay_parts(root: Path, n: int, reasons: dict[int, list[str]]) -> None:
    """``root/part-<k>-of-<n>`` LMDB stores as ``replay --workers n`` names them, with dead letters."""

    async def build() -> None:
        for k in range(n):
            async with LmdbStore(root / f"part-{k}-of-{n}") as store:
                for minute, reason in enumerate(reasons.get(k, [])):
                    at = T0 + timedelta(minutes=2 * minute + k)
                    await store.add_dead_letter(DeadLetter(kind="inbound", reason=reason, recorded_at=at))

    asyncio.run(build())


def test_a_replay_workers_store_reads_as_its_parts(tmp_path: Path, capsys: Capture) -> None:
    build_replay_parts(tmp_path, 2, {0: ["a0", "a1"], 1: ["b0"]})
    rows = run_json(capsys, "dead-letters", "list", "--store", str(tmp_path))
    merged = [(r["partition"], r["reason"], r["position"]) for r in rows]
    assert merged == [(0, "a0", 1), (1, "b0", 1), (0, "a1", 2)]
    plain = run_json(capsys, "stats", "--store", str(tmp_path))
    assert plain["dead_letters_open"] == 3
    assert {int(p): v["directory"] for p, v in plain["partitions"].items()} == {
        0: str(tmp_path / "part-0-of-2"),
        1: str(tmp_path / "part-1-of-2"),
    }
    code, _, err = run(capsys, "processes", "list", "--store", str(tmp_path))
    assert code == 1 and str(tmp_path / "part-0-of-2") in err


def test_replay_parts_of_two_worker_counts_are_refused(tmp_path: Path, capsys: Capture) -> None:
    build_replay_parts(tmp_path, 2, {})
    build_replay_parts(tmp_path, 3, {})
    code, _, err = run(capsys, "stats", "--store", str(tmp_path))
    assert code == 1 and "replay parts of [2, 3] workers" in err


def test_a_replay_store_missing_a_part_says_so_on_every_view(tmp_path: Path, capsys: Capture) -> None:
    build_replay_parts(tmp_path, 3, {0: ["a0"], 1: ["b0"], 2: ["c0"]})
    shutil.rmtree(tmp_path / "part-1-of-3")
    code, out, err = run(capsys, "dead-letters", "list", "--store", str(tmp_path), "--json")
    assert code == 0 and [r["reason"] for r in json.loads(out)] == ["a0", "c0"]
    assert "lacks part-1-of-3" in err and "covers the other parts only" in err
    code, _, err = run(capsys, "stats", "--store", str(tmp_path))
    assert code == 0 and "lacks part-1-of-3" in err


def test_an_operator_write_to_a_partition_being_moved_is_refused(tmp_path: Path, capsys: Capture) -> None:
    """A move fences the old copy so that nothing written after it stays behind there. Before,
    the CLI opened the partition's directory like any store and wrote past the fence: the
    requeued letter (or an operator's decision) lived only in the copy about to be retired."""

    async def build() -> None:
        create_partition(tmp_path, 2, COUNT)
        store = open_partition(tmp_path, 2, COUNT)
        try:
            await store.add_dead_letter(DeadLetter(kind="inbound", reason="r", recorded_at=T0))
            store.fence(True)
        finally:
            await store.aclose()

    asyncio.run(build())
    partition = tmp_path / "p0002"
    code, _, err = run(capsys, "dead-letters", "requeue", "1", "--store", str(partition))
    assert code == 2 and "being moved" in err and "nothing written" in err
    [row] = run_json(capsys, "dead-letters", "list", "--store", str(partition))
    assert row["requeued_at"] is None


def test_a_partition_the_map_names_but_no_node_holds_is_named_on_every_view(
    layout: dict[str, Path], capsys: Capture
) -> None:
    """A node's directory offline or not mounted: the merged views warn which partitions they
    lack. Before, they showed the other nodes' rows as if they were all."""
    offline = layout["b"].with_name("b.offline")
    layout["b"].rename(offline)
    try:
        code, out, err = run(capsys, "dead-letters", "list", "--store", str(layout["map"]), "--json")
        assert code == 0 and len(json.loads(out)) == 3  # node a's letters
        assert "p0001 (node b" in err and "p0003 (node b" in err and "other partitions only" in err
        code, _, err = run(capsys, "stats", "--store", str(layout["map"]))
        assert code == 0 and "p0001 (node b" in err
    finally:
        offline.rename(layout["b"])


def test_a_stale_copy_a_cut_short_move_left_is_not_read_through_the_map(
    layout: dict[str, Path], capsys: Capture
) -> None:
    """A move of p0000 from a to b cut short after the copy: b holds a stale p0000 the map does
    not assign. Before, the views read every marked copy: dead letters listed twice, stats of
    the copy that sorted last, and no warning when the mapped node lacked it."""
    stale = layout["b"] / "p0000"
    shutil.copytree(layout["a"] / "p0000", stale)
    try:
        letters = run_json(capsys, "dead-letters", "list", "--store", str(layout["map"]))
        assert len(letters) == 5 and sorted(d["partition"] for d in letters).count(0) == 2
        plain = run_json(capsys, "stats", "--store", str(layout["map"]))
        assert plain["partitions"]["0"]["directory"] == str(layout["a"] / "p0000")
        # The mapped node lacks it: named missing, the stale copy not read in its place.
        aside = layout["a"] / "p0000.aside"
        (layout["a"] / "p0000").rename(aside)
        try:
            code, out, err = run(capsys, "dead-letters", "list", "--store", str(layout["map"]), "--json")
            assert code == 0 and len(json.loads(out)) == 3 and "p0000 (node a" in err
        finally:
            aside.rename(layout["a"] / "p0000")
    finally:
        shutil.rmtree(stale)


def test_a_garbled_partition_marker_or_map_is_a_clear_error(tmp_path: Path, capsys: Capture) -> None:
    create_partition(tmp_path / "node", 0, COUNT)
    (tmp_path / "node" / "p0000" / "PARTITION").write_bytes(b"garbage")
    code, _, err = run(capsys, "dead-letters", "list", "--store", str(tmp_path / "node"))
    assert code == 1 and "is no readable partition marker" in err
    (tmp_path / "one.bin").write_bytes(b"\x01")
    code, _, err = run(capsys, "stats", "--store", str(tmp_path / "one.bin"))
    assert code == 1 and "neither a store directory nor a partition map" in err


def test_a_map_made_with_relative_directories_is_read_from_any_working_directory(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the map kept ``data/a`` as given: a host or the CLI in another working directory
    looked for the partitions there, found none (a host opened nothing, stats showed none)."""
    monkeypatch.chdir(tmp_path)
    made = PartitionMap.spread(2, {"a": "data/a"})
    made.save(tmp_path / "map")
    for p in range(2):
        create_partition(made.data_dirs["a"], p, 2)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert PartitionMap.load(tmp_path / "map").data_dirs == {"a": str(tmp_path / "data" / "a")}
    code, out, err = run(capsys, "stats", "--store", str(tmp_path / "map"), "--json")
    assert code == 0 and "not found" not in err and sorted(json.loads(out)["partitions"]) == ["0", "1"]


def _contents(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("command", ["masterdata", "replay"])
@pytest.mark.parametrize(
    "store, named",
    [
        ("node/p0002", "is partition 2 of 4 of a partitioned store"),
        ("node", "is a node's data directory of a partitioned store (it holds p0000, p0001, p0002, ...)"),
    ],
)
def test_a_partition_or_a_nodes_data_directory_is_no_store_to_write_into(
    tmp_path: Path, capsys: Capture, command: str, store: str, named: str
) -> None:
    """Before, an import into one partition put every MaLo's supply journal there (most belong to
    other partitions, where their processes never saw them), and an import or replay into a
    node's directory made a store beside its partitions that no host reads."""
    for p in range(COUNT):
        create_partition(tmp_path / "node", p, COUNT)
    (tmp_path / "archive").mkdir()
    listed = tmp_path / "a.csv"
    listed.write_text("malo,supplier\n51238696781,9900000010078\n")
    before = _contents(tmp_path / "node")
    if command == "masterdata":
        argv = ["masterdata", "import", str(listed), "--store", str(tmp_path / store), "--tenant", NB]
    else:
        argv = ["replay", str(tmp_path / "archive"), "--store", str(tmp_path / store), "--tenant", NB]
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"--store {tmp_path / store} {named}" in err, err
    assert _contents(tmp_path / "node") == before  # nothing written
