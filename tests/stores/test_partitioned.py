"""Partitions without Ray: stable placement, the durable map, partition directories and copies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mako_actors import InvalidArgument, PartitionMap, PartitionUnavailable, ProcessId, StreamId, TenantId
from mako_actors.partitions import key_home, partition_of, routed_process_id, routing_slot
from stores.partitioned import (
    create_partition,
    export_partition,
    import_partition,
    open_partition,
    partition_dir,
    retire_partition,
)

TENANT = TenantId.from_party_id("9900000000003")
MALO = "51238696781"


def test_a_routing_key_puts_every_process_of_one_malo_in_one_partition_for_any_count() -> None:
    streams = [StreamId.for_process(TENANT, routed_process_id(TENANT, MALO)) for _ in range(20)]
    assert len(set(streams)) == 20  # still random ids
    for count in (1, 2, 16, 64, 4096):
        assert {partition_of(s, count) for s in streams} == {routing_slot(TENANT, MALO) % count}
        # the competing-process key of that MaLo is looked up in that same partition
        assert key_home(TENANT, f"malo:{MALO}:2025-12-01#0", count) == partition_of(streams[0], count)


def test_placement_is_the_same_in_another_interpreter() -> None:
    # Python's hash() is salted per process; the partition must not be.
    code = (
        "from mako_actors import TenantId; from mako_actors.partitions import routing_slot, key_home; "
        "t = TenantId.from_party_id('9900000000003'); "
        f"print(routing_slot(t, '{MALO}'), key_home(t, 'tx:A:1', 64))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(routing_slot(TENANT, MALO)), str(key_home(TENANT, "tx:A:1", 64))]


def test_random_process_ids_spread_over_partitions() -> None:
    counts = [0] * 16
    for _ in range(3200):
        counts[partition_of(StreamId.for_process(TENANT, ProcessId.new()), 16)] += 1
    assert min(counts) > 100  # ~200 each


@pytest.mark.parametrize("count", [0, 3, 12, 8192])
def test_partition_counts_are_powers_of_two_up_to_4096(count: int) -> None:
    with pytest.raises(InvalidArgument):
        PartitionMap.spread(count, {"n1": "/d"})


def test_the_map_is_saved_durably_and_changes_only_by_moves(tmp_path: Path) -> None:
    layout = PartitionMap.spread(8, {"n1": tmp_path / "a", "n2": tmp_path / "b"})
    assert layout.assignment == ("n1", "n2") * 4 and layout.partitions_of("n2") == [1, 3, 5, 7]
    layout.save(tmp_path / "map")
    assert PartitionMap.load(tmp_path / "map") == layout
    moved = layout.moved(1, "n1")
    assert (moved.epoch, moved.node_of(1), layout.node_of(1)) == (1, "n1", "n2")
    with pytest.raises(InvalidArgument):
        layout.moved(1, "n9")
    with pytest.raises(InvalidArgument):
        PartitionMap(("n1", "n2"), {"n1": "/a"})  # a node without a data directory
    with pytest.raises(InvalidArgument):
        PartitionMap.load(tmp_path / "missing")


async def test_a_partition_opens_only_where_it_was_created_or_copied(tmp_path: Path) -> None:
    node_a, node_b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(PartitionUnavailable):
        open_partition(node_a, 3, 8)  # never created: no fresh empty environment
    assert not partition_dir(node_a, 3).exists()
    create_partition(node_a, 3, 8)
    create_partition(node_a, 3, 8)  # idempotent
    with pytest.raises(InvalidArgument):
        open_partition(node_a, 3, 16)  # the marker names another layout
    store = open_partition(node_a, 3, 8)
    process = ProcessId.new()
    from mako_actors import ProcessIdentity, WorkflowId

    identity = ProcessIdentity.of_process(TENANT, process, WorkflowId.new("ledger", "FV2025-10-01"))
    await store.register(TENANT, "malo:1", identity)
    copy = export_partition(store)
    await store.aclose()
    import_partition(node_b, 3, 8, copy)
    with pytest.raises(InvalidArgument):
        import_partition(node_b, 3, 8, copy)  # never overwrite a partition
    retired = retire_partition(node_a, 3, 1)
    assert retired.name == "p0003.moved-1"
    with pytest.raises(PartitionUnavailable):
        open_partition(node_a, 3, 8)
    async with open_partition(node_b, 3, 8) as moved:
        assert await moved.lookup(TENANT, "malo:1") == identity


async def test_a_fenced_copy_refuses_every_write_in_every_process_and_its_copy_carries_the_fence(
    tmp_path: Path,
) -> None:
    """A move fences the old copy under LMDB's write lock before copying it: no process writes
    to it after that (another driver's actor would have written where nothing reads again), and
    the copy's new owner lifts the fence it carries."""
    from mako_actors import PartitionNotOpen, ProcessIdentity, WorkflowId

    node_a, node_b = tmp_path / "a", tmp_path / "b"
    create_partition(node_a, 3, 8)
    store = open_partition(node_a, 3, 8)
    identity = ProcessIdentity.of_process(TENANT, ProcessId.new(), WorkflowId.new("ledger", "FV2025-10-01"))
    await store.register(TENANT, "malo:1", identity)
    store.fence(True)
    with pytest.raises(PartitionNotOpen, match="nothing written"):
        await store.register(TENANT, "malo:2", identity)
    code = (  # the same environment, open in another process
        "import asyncio; from mako_actors import TenantId, ProcessIdentity, ProcessId, WorkflowId; "
        "from stores.partitioned import open_partition; "
        f"s = open_partition({str(node_a)!r}, 3, 8); t = TenantId.from_party_id('9900000000003'); "
        "i = ProcessIdentity.of_process(t, ProcessId.new(), WorkflowId.new('ledger', 'FV2025-10-01'))\n"
        "try:\n    asyncio.run(s.register(t, 'malo:9', i)); print('written')\n"
        "except Exception as exc:\n    print(type(exc).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "PartitionNotOpen", out.stderr[-2000:]
    copy = export_partition(store)
    await store.aclose()
    import_partition(node_b, 3, 8, copy)
    async with open_partition(node_b, 3, 8) as moved:
        with pytest.raises(PartitionNotOpen):
            await moved.register(TENANT, "malo:3", identity)  # the copy carries the fence
        moved.fence(False)
        await moved.register(TENANT, "malo:3", identity)
        assert await moved.lookup(TENANT, "malo:1") == identity
        assert await moved.lookup(TENANT, "malo:2") is None and await moved.lookup(TENANT, "malo:9") is None


async def test_a_fence_is_set_after_another_process_grew_the_map(tmp_path: Path) -> None:
    """The old host fences a copy another driver's actor still has open: when that one grew the
    map meanwhile, the fence write takes the new size instead of failing (MDB_MAP_RESIZED)."""
    from mako_actors import PartitionNotOpen

    create_partition(tmp_path, 3, 8)
    store = open_partition(tmp_path, 3, 8, map_size=1 << 20)
    await store.save_checkpoint("warm", 1)  # this process has written with the 1 MiB map
    code = (  # the same environment in another process, a 3 MB state: the map doubles twice
        "import asyncio; from stores.partitioned import open_partition; "
        f"s = open_partition({str(tmp_path)!r}, 3, 8, map_size=1 << 20)\n"
        "asyncio.run(s.save_checkpoint('big', 1, ['x' * 1000] * 3000)); print(s.stats.map_resizes)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert int(out.stdout.strip() or 0) >= 1, out.stderr[-2000:]
    store.fence(True)  # before: StoreError "MDB_MAP_RESIZED"
    with pytest.raises(PartitionNotOpen):
        await store.save_checkpoint("after", 2)
    store.fence(False)
    await store.save_checkpoint("after", 2)
    assert await store.load_checkpoint("big") == 1
    await store.aclose()


@pytest.mark.parametrize("lost", ["deleted", "emptied"])
async def test_a_partition_that_lost_its_data_file_is_unavailable_not_empty(
    tmp_path: Path, lost: str
) -> None:
    """The marker is left, the LMDB data file is gone (or cut to nothing). Before, the partition
    opened as a fresh, empty store: its processes unknown, new writes taken."""
    from mako_actors import ProcessIdentity, WorkflowId

    create_partition(tmp_path, 2, 4)
    assert (partition_dir(tmp_path, 2) / "data.mdb").stat().st_size > 0  # made with the marker
    identity = ProcessIdentity.of_process(TENANT, ProcessId.new(), WorkflowId.new("ledger", "FV2025-10-01"))
    async with open_partition(tmp_path, 2, 4) as store:
        await store.register(TENANT, "malo:1", identity)
    data = partition_dir(tmp_path, 2) / "data.mdb"
    if lost == "deleted":
        data.unlink()
        (partition_dir(tmp_path, 2) / "lock.mdb").unlink()
    else:
        data.write_bytes(b"")
    before = sorted((p.name, p.stat().st_size) for p in partition_dir(tmp_path, 2).iterdir())
    with pytest.raises(PartitionUnavailable, match=r"data file .*data\.mdb is (missing|empty)"):
        open_partition(tmp_path, 2, 4)
    assert sorted((p.name, p.stat().st_size) for p in partition_dir(tmp_path, 2).iterdir()) == before


def test_a_map_saved_with_relative_directories_reads_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A map an earlier version saved as given (``data/a``) stays readable: its directories mean
    what they meant to the reader before, and are saved absolute by the next change."""
    import msgpack

    plain = {"format": 1, "epoch": 0, "assignment": ["a", "a"], "data_dirs": {"a": "data/a"}}
    (tmp_path / "map").write_bytes(msgpack.packb(plain))
    monkeypatch.chdir(tmp_path)
    loaded = PartitionMap.load(tmp_path / "map")
    assert loaded.data_dirs == {"a": str(tmp_path / "data" / "a")}
    assert loaded.created  # its driver made the partitions when it started
    assert loaded == PartitionMap.spread(2, {"a": "data/a"})  # a driver given it finds it its own
    loaded.moved(1, "a").save(tmp_path / "map")
    monkeypatch.chdir("/")
    assert PartitionMap.load(tmp_path / "map").data_dirs == {"a": str(tmp_path / "data" / "a")}
