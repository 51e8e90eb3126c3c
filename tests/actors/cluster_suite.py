"""A partitioned store on a 3-node local Ray cluster (``ray.cluster_utils.Cluster``).

Not collected by the main run (the name does not start with ``test_``): ``test_ray_cluster.py``
runs this module in its own pytest subprocess, because a multi-node cluster cannot share the
session's single-node Ray instance. Every node has its own data directory; 8 partitions are
dealt over the nodes.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from mako_actors import CommandOutcomeUnknown, PartitionMap, PartitionUnavailable, RayActorSystem
from mako_actors.partitions import partition_of
from stores.lmdb import LmdbStore
from stores.partitioned import partition_dir
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import Ledger, Record

NODES = ("n1", "n2", "n3")
PARTITIONS = 8
PROCESSES = int(os.environ.get("MAKO_CLUSTER_PROCESSES", "10000"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"mako-node:n1": 1}, "include_dashboard": False},
    )
    nodes = {"n1": cluster.head_node}
    try:
        for name in NODES[1:]:
            nodes[name] = cluster.add_node(num_cpus=1, resources={f"mako-node:{name}": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, namespace="mako-cluster-tests")
        yield {"cluster": cluster, "nodes": nodes, "base": tmp_path_factory.mktemp("cluster")}
    finally:
        ray.shutdown()
        cluster.shutdown()


def layout(base: Path) -> PartitionMap:
    return PartitionMap.spread(PARTITIONS, {name: base / name for name in NODES})


async def streams_on_disk(base: Path) -> dict[tuple[str, int], set[str]]:
    """(node, partition) → the streams stored in that partition directory (opened read-side here)."""
    found: dict[tuple[str, int], set[str]] = {}
    for node in NODES:
        for p in range(PARTITIONS):
            directory = partition_dir(base / node, p)
            if directory.exists():
                async with LmdbStore(directory) as store:
                    found[(node, p)] = {str(s) for s in await store.list_streams()}
    return found


async def test_processes_spread_over_nodes_and_live_in_their_partition_only(cluster: dict[str, Any]) -> None:
    base: Path = cluster["base"] / "spread"
    name_prefix = f"c-{uuid.uuid4().hex[:6]}"
    async with RayActorSystem(base / "map", workflows=[Ledger], partitions=layout(base),
                              name_prefix=name_prefix) as actors:  # fmt: skip
        await actors.start()
        # Every host runs on the node that owns its partitions.
        for node in NODES:
            ray_node = await actors._node_host(node).node_id.remote()
            assert ray_node == actors._ray_node_id(node)
        refs = [actors.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"malo-{i}") for i in range(PROCESSES)]
        results = await asyncio.gather(*(r.execute(Record(amount=i)) for i, r in enumerate(refs)))
        assert all(len(r) == 1 and r[0].sequence == 1 for r in results)
        # Business keys: registered by the process, found by one lookup in the key's home partition.
        keyed = refs[:50]
        await asyncio.gather(
            *(r.execute(Record(amount=1, register_key=f"tx:{i}")) for i, r in enumerate(keyed))
        )
        for i, r in enumerate(keyed):
            found = await actors.lookup(TENANT, f"tx:{i}")
            assert found is not None and found.identity() == r.identity()
        assert actors.unavailable_errors == 0
    on_disk = await streams_on_disk(base)
    where: dict[str, list[tuple[str, int]]] = {}
    for place, streams in on_disk.items():
        for s in streams:
            where.setdefault(s, []).append(place)
    the_map = PartitionMap.load(base / "map")
    for r in refs:
        p = partition_of(r.stream_id, PARTITIONS)
        assert where[str(r.stream_id)] == [(the_map.node_of(p), p)]  # there, and nowhere else
    per_node = {n: sum(len(on_disk[(n, p)]) for p in the_map.partitions_of(n)) for n in NODES}
    assert sum(per_node.values()) == PROCESSES and min(per_node.values()) > PROCESSES // 5


async def test_rebalance_under_load_loses_no_acknowledged_command(cluster: dict[str, Any]) -> None:
    base: Path = cluster["base"] / "rebalance"
    async with RayActorSystem(base / "map", workflows=[Ledger], partitions=layout(base),
                              name_prefix=f"r-{uuid.uuid4().hex[:6]}") as actors:  # fmt: skip
        await actors.start()
        refs = [actors.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"malo-{i}") for i in range(64)]
        moving = 0
        source = actors.partition_map.node_of(moving) if actors.partition_map else ""
        target = next(n for n in NODES if n != source)
        acknowledged = [0] * len(refs)

        async def load(k: int) -> None:
            for _ in range(15):
                await refs[k].execute(Record(amount=1))
                acknowledged[k] += 1

        loaders = [asyncio.create_task(load(k)) for k in range(len(refs))]
        await asyncio.sleep(0.2)
        await actors.rebalance(moving, target)
        await asyncio.gather(*loaders)
        assert actors.partition_map is not None and actors.partition_map.node_of(moving) == target
        counts = await asyncio.gather(*(r.event_count() for r in refs))
        assert counts == acknowledged == [15] * len(refs)
    assert PartitionMap.load(base / "map").node_of(moving) == target  # recorded durably
    assert not partition_dir(base / source, moving).exists()
    assert (base / source / f"p{moving:04d}.moved-1").exists()
    on_disk = await streams_on_disk(base)
    moved = [r for r in refs if partition_of(r.stream_id, PARTITIONS) == moving]
    assert moved and all(str(r.stream_id) in on_disk[(target, moving)] for r in moved)


async def test_a_lost_node_makes_its_partitions_unavailable_until_it_returns(cluster: dict[str, Any]) -> None:
    base: Path = cluster["base"] / "loss"
    ray_cluster: Cluster = cluster["cluster"]
    async with RayActorSystem(base / "map", workflows=[Ledger], partitions=layout(base),
                              name_prefix=f"l-{uuid.uuid4().hex[:6]}") as actors:  # fmt: skip
        await actors.start()
        the_map = actors.partition_map
        assert the_map is not None
        refs = [actors.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"malo-{i}") for i in range(48)]
        for _ in range(3):
            await asyncio.gather(*(r.execute(Record(amount=1)) for r in refs))
        lost = [r for r in refs if the_map.node_of(partition_of(r.stream_id, PARTITIONS)) == "n3"]
        kept = [r for r in refs if r not in lost]
        assert lost and kept

        ray_cluster.remove_node(cluster["nodes"]["n3"])
        for r in lost:
            with pytest.raises((PartitionUnavailable, CommandOutcomeUnknown)):
                await r.execute(Record(amount=1))
        with pytest.raises(PartitionUnavailable):
            await lost[0].state()
        assert actors.unavailable_errors > 0
        status = await actors.partition_status()
        assert {p for p, s in status.items() if s == "unavailable"} == set(the_map.partitions_of("n3"))
        for r in kept:  # the rest keeps working
            assert len(await r.execute(Record(amount=1))) == 1
        assert not any(
            partition_dir(base / n, p).exists() for n in ("n1", "n2") for p in the_map.partitions_of("n3")
        )

        cluster["nodes"]["n3"] = ray_cluster.add_node(num_cpus=1, resources={"mako-node:n3": 1})
        ray_cluster.wait_for_nodes()
        counts = await asyncio.gather(*(r.event_count() for r in lost))
        assert all(c >= 3 for c in counts)  # nothing acknowledged was lost (a refused write may have landed)
        for r in lost:
            assert len(await r.execute(Record(amount=1))) == 1
        assert set((await actors.partition_status()).values()) == {"up"}
