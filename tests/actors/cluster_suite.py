"""A partitioned store on a 3-node local Ray cluster (``ray.cluster_utils.Cluster``).

Not collected by the main run (the name does not start with ``test_``): ``test_ray_cluster.py``
runs this module in its own pytest subprocess, because a multi-node cluster cannot share the
session's single-node Ray instance. Every node has its own data directory; 8 partitions are
dealt over the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from mako_actors import (
    CommandOutcomeUnknown,
    InvalidArgument,
    PartitionMap,
    PartitionUnavailable,
    RayActorSystem,
    StaticMasterData,
    Suppliers,
    TenantId,
    VirtualClock,
)
from mako_actors.edifact.outbound import UtilmdMessage, UtilmdTransaction, build_utilmd
from mako_actors.edifact.render import OutboundEnvelope, render_interchange
from mako_actors.gpke import GpkeNbWorkflow, Status
from mako_actors.gpke.synthetic import anmeldung, bilanzkreis_of, lfa_answer
from mako_actors.gpke.validation import malo_check_digit
from mako_actors.inbound import receipt_identity
from mako_actors.partitions import key_home, partition_of, routing_slot
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


@contextlib.asynccontextmanager
async def two_drivers(
    base: Path, processes: int, **second: Any
) -> AsyncIterator[tuple[RayActorSystem, RayActorSystem, list[Any]]]:
    """Two drivers of one partitioned store with the same actor names (the second leaves the
    actors running when it closes; ``second``: more of its settings), and ``processes`` ledgers
    the first started, one command each."""
    prefix = f"{base.name}-{uuid.uuid4().hex[:6]}"
    async with RayActorSystem(base / "map", workflows=[Ledger], partitions=layout(base),
                              name_prefix=prefix) as first:  # fmt: skip
        other = RayActorSystem(
            base / "map", workflows=[Ledger], partitions=layout(base), name_prefix=prefix,
            kill_on_close=False, **second,
        )  # fmt: skip
        try:
            refs = [first.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"m-{i}") for i in range(processes)]
            await asyncio.gather(*(r.execute(Record(amount=1)) for r in refs))
            yield first, other, refs
        finally:
            await other.aclose()


async def test_a_second_driver_follows_the_moves_another_driver_made(cluster: dict[str, Any]) -> None:
    """Two drivers share the hosts (the same actor names) and the map file; the first moves a
    partition, twice. The second is not told: the old host refuses its operations unrun, and it
    reads the map again and sends them, and a lookup, to the partition's new node. Before, they
    failed with PartitionUnavailable until the second driver was restarted."""
    base: Path = cluster["base"] / "follow"
    async with two_drivers(base, 32) as (first, second, started):
        refs = [second.resume(r.identity()) for r in started]
        moving = partition_of(refs[0].stream_id, PARTITIONS)
        names = (f"follow:{i}" for i in range(400))
        key = next(k for k in names if key_home(TENANT, k, PARTITIONS) == moving)
        await refs[1].execute(Record(amount=0, register_key=key))  # homed in the moving partition
        assert first.partition_map is not None and second.partition_map is not None
        source = first.partition_map.node_of(moving)
        target, third = (n for n in NODES if n != source)

        await first.rebalance(moving, target)
        assert second.partition_map.node_of(moving) == source  # not told
        results = await asyncio.gather(*(r.execute(Record(amount=1)) for r in refs))
        assert all(len(r) == 1 for r in results)
        assert (second.partition_map.epoch, second.partition_map.node_of(moving)) == (1, target)

        await first.rebalance(moving, third)
        found = await second.lookup(TENANT, key)
        assert found is not None and found.identity() == refs[1].identity()
        assert (second.partition_map.epoch, second.partition_map.node_of(moving)) == (2, third)
        expected = [2] * len(refs)
        expected[1] = 3  # (its key's Record)
        assert await asyncio.gather(*(r.event_count() for r in refs)) == expected
        assert second.unavailable_errors == 0
    on_disk = await streams_on_disk(base)
    moved = [r for r in refs if partition_of(r.stream_id, PARTITIONS) == moving]
    assert moved and all(str(r.stream_id) in on_disk[(third, moving)] for r in moved)


async def test_a_host_made_by_a_driver_with_an_old_map_opens_what_the_map_says_now(
    cluster: dict[str, Any],
) -> None:
    """The first driver moves a partition; the node that took it loses its host. The second
    driver, which has not heard of the move, makes that node's host again: it opens the
    partitions the map file names for the node now, so the moved partition's processes are
    served there again. Before, the host opened what the second driver's old map named, and
    every driver's operations on the moved partition were refused there."""
    async with two_drivers(cluster["base"] / "stale-host", 48) as (first, second, refs):
        assert first.partition_map is not None and second.partition_map is not None
        moving = partition_of(refs[0].stream_id, PARTITIONS)
        source = first.partition_map.node_of(moving)
        target = next(n for n in NODES if n != source)
        await first.rebalance(moving, target)
        name = f"{first.name_prefix}-node-{target}"
        ray.kill(ray.get_actor(name, namespace="mako_actors"))
        for _ in range(200):  # until Ray has let the name go
            try:
                ray.get_actor(name, namespace="mako_actors")
            except ValueError:
                break
            await asyncio.sleep(0.05)
        # The second driver reaches the target node first, for a partition that stayed there
        on_target = set(first.partition_map.partitions_of(target)) - {moving}
        stayed = next(r for r in refs if partition_of(r.stream_id, PARTITIONS) in on_target)
        assert await second.resume(stayed.identity()).event_count() == 1
        moved = [r for r in refs if partition_of(r.stream_id, PARTITIONS) == moving]
        assert await asyncio.gather(*(r.event_count() for r in moved)) == [1] * len(moved)
        results = await asyncio.gather(*(r.execute(Record(amount=1)) for r in moved))
        assert [len(r) for r in results] == [1] * len(moved)


async def test_a_second_driver_with_dedicated_actors_loses_nothing_to_a_move(cluster: dict[str, Any]) -> None:
    """A second driver (the same names: another's are refused) runs dedicated actors on the
    partitioned store. The first moves a partition it knows nothing of the second's actors in:
    the move ends them too (before, one lived on at the old node and kept writing to the old
    copy: the second's acknowledged commands were lost), and the second's next actor starts on
    the partition's new node (before, where its old map said: every command refused)."""
    base: Path = cluster["base"] / "dedicated"
    async with two_drivers(base, 16, placement="dedicated") as (hosted, dedicated, refs):
        other = RayActorSystem(base / "map", workflows=[Ledger], partitions=layout(base), name_prefix="other")
        with pytest.raises(InvalidArgument, match="served by Ray actors named"):  # its own hosts: refused
            await other.start()
        await other.aclose()
        assert hosted.partition_map is not None and dedicated.partition_map is not None
        moving = partition_of(refs[0].stream_id, PARTITIONS)
        in_moving = [r for r in refs if partition_of(r.stream_id, PARTITIONS) == moving]
        moved = [dedicated.resume(r.identity()) for r in in_moving]
        assert [len(await r.execute(Record(amount=1))) for r in moved] == [1] * len(moved)  # actors live
        target = next(n for n in NODES if n != hosted.partition_map.node_of(moving))
        await hosted.rebalance(moving, target)
        assert dedicated.partition_map.epoch == 0  # not told
        for r in moved:
            try:
                await r.execute(Record(amount=1))
            except CommandOutcomeUnknown:  # its actor was ended by the move
                continue
            pytest.fail("a command reached an actor of the moved partition's old copy")
        for r in moved:
            assert len(await r.execute(Record(amount=1))) == 1  # a new actor, on the new node
        assert dedicated.partition_map.node_of(moving) == target
        counts = await asyncio.gather(*(r.event_count() for r in in_moving))
        assert counts == [3] * len(moved)  # the three acknowledged commands, in the new copy

        # An actor the move does not find (another driver started it while the copy was taken,
        # here: the search switched off) meets the old copy's fence: it writes nothing there,
        # and its driver starts another where the map says.
        async def not_found(partition: int, count: int) -> None:
            return None

        hosted._end_dedicated_of_others = not_found  # type: ignore[method-assign]
        await hosted.rebalance(moving, next(n for n in NODES if n != target))
        assert [len(await r.execute(Record(amount=1))) for r in moved] == [1] * len(moved)
        counts = await asyncio.gather(*(r.event_count() for r in in_moving))
        assert counts == [4] * len(moved)


async def test_two_drivers_moving_one_partition_at_once_take_turns(cluster: dict[str, Any]) -> None:
    """Both drivers move the same partition at the same time, to different nodes. They take
    turns on the map file's lock, the second moving it on from where the first put it: it lives
    on one node at the end, each move's old directory is retired, nothing is lost. Before, both
    copied it from its first node and opened it on two (and the second map overwrote the first)."""
    base: Path = cluster["base"] / "turns"
    async with two_drivers(base, 32) as (first, second, refs):
        moving = partition_of(refs[0].stream_id, PARTITIONS)
        assert first.partition_map is not None
        source = first.partition_map.node_of(moving)
        one, other = (n for n in NODES if n != source)
        await asyncio.gather(first.rebalance(moving, one), second.rebalance(moving, other))
        final = PartitionMap.load(base / "map")
        assert final.epoch == 2 and final.node_of(moving) in (one, other)
        results = await asyncio.gather(*(r.execute(Record(amount=1)) for r in refs))
        assert all(len(r) == 1 for r in results)
        assert await asyncio.gather(*(r.event_count() for r in refs)) == [2] * len(refs)
    live = [n for n in NODES if partition_dir(base / n, moving).exists()]
    assert live == [final.node_of(moving)]  # one copy open, the others retired
    retired = sorted(p.name for n in NODES for p in (base / n).glob(f"p{moving:04d}.moved-*"))
    assert retired == [f"p{moving:04d}.moved-1", f"p{moving:04d}.moved-2"]
    on_disk = await streams_on_disk(base)
    moved = [r for r in refs if partition_of(r.stream_id, PARTITIONS) == moving]
    assert moved and all(str(r.stream_id) in on_disk[(final.node_of(moving), moving)] for r in moved)


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


async def test_interchanges_ingested_on_the_hosts_of_their_malos(cluster: dict[str, Any]) -> None:
    """Each interchange runs on its MaLo's node; receipts and ``tx:`` keys homed on other nodes
    are written through those nodes' hosts; the driver then finds and reads the same processes."""
    base: Path = cluster["base"] / "ingest"
    nb, lfn, lfa = "9900000002009", "9900000001001", "9900000003005"
    tenant = TenantId.from_party_id(nb)
    received = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    start = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)
    malos = [f"{body}{malo_check_digit(body)}" for body in (f"51238696{i:02d}" for i in range(12))]
    the_map = layout(base)
    node_of_malo = {m: the_map.node_of(routing_slot(tenant, m) % PARTITIONS) for m in malos}
    assert set(node_of_malo.values()) == set(NODES)
    receipt_nodes = {
        m: the_map.node_of(partition_of(receipt_identity(nb, lfn, f"LFN{i}").stream_id, PARTITIONS))
        for i, m in enumerate(malos)
    }
    assert any(receipt_nodes[m] != node_of_malo[m] for m in malos)  # some receipts live on another node
    inbound = {"tenants": [nb], "master_data": StaticMasterData({m: Suppliers(current=lfa) for m in malos})}
    clock = VirtualClock(received)
    prefix = f"i-{uuid.uuid4().hex[:6]}"
    async with RayActorSystem(base / "map", workflows=[GpkeNbWorkflow], partitions=the_map, clock=clock,
                              inbound=inbound, name_prefix=prefix) as actors:  # fmt: skip
        raws = [
            anmeldung(lfn=lfn, nb=nb, malo=m, zuordnungsbeginn=start, ide_ref=f"TX{i}", control_ref=f"LFN{i}",
                      sent_at=received)
            for i, m in enumerate(malos)
        ]  # fmt: skip
        results = await asyncio.gather(*(actors.ingest(raw, received) for raw in raws))
        outcomes = [(r.status, [m.outcome for m in r.messages]) for r in results]
        assert outcomes == [("accepted", ["started"])] * len(malos)
        assert {r.status for r in await asyncio.gather(*(actors.ingest(raw, received) for raw in raws))} == {
            "duplicate"
        }
        refs = {}
        for i, m in enumerate(malos):  # the driver finds each process by one lookup
            ref = await actors.lookup(tenant, f"tx:{lfn}:TX{i}")
            assert ref is not None and ref.identity().process_id == results[i].messages[0].process_id
            refs[m] = ref
        assert actors.unavailable_errors == 0
        requests = {}
        for m, ref in refs.items():
            p = partition_of(ref.stream_id, PARTITIONS)
            assert the_map.node_of(p) == node_of_malo[m]
            async with LmdbStore(partition_dir(base / node_of_malo[m], p)) as store:
                pending = await store.pending(1000, datetime(2100, 1, 1, tzinfo=UTC))
            [request] = [
                o for o in pending
                if o.stream_id == ref.stream_id and o.message_type == "UTILMD"
                and o.payload["transactions"][0]["pid"] == "55010"
            ]  # fmt: skip
            requests[m] = request.payload["transactions"][0]["ide_ref"]
        clock.advance(timedelta(hours=1))
        answers = [
            lfa_answer(lfa=lfa, nb=nb, malo=m, request_ref=requests[m], ide_ref=f"LFA{i}",
                       control_ref=f"LFA{i}", sent_at=clock())
            for i, m in enumerate(malos)
        ]  # fmt: skip
        routed = await asyncio.gather(*(actors.ingest(a, clock()) for a in answers))
        for m, r in zip(malos, routed, strict=True):
            [answered] = r.messages
            assert (answered.outcome, answered.process_id) == ("routed", refs[m].identity().process_id)
            state = await refs[m].state()
            assert state.status is Status.CONFIRMED
        # A bundled interchange whose transactions' MaLos live on all three nodes: it runs on the
        # first MaLo's node, the other transactions' processes start on theirs.
        bundle = [f"{body}{malo_check_digit(body)}" for body in (f"51238697{i:02d}" for i in range(30))]
        picked = [next(m for m in bundle if the_map.node_of(routing_slot(tenant, m) % PARTITIONS) == n)
                  for n in NODES]  # fmt: skip
        packages = (("1", bilanzkreis_of(lfn)),)
        transactions = tuple(
            UtilmdTransaction(ide_ref=f"B{k}", pid="55001", malo=m, start=start, transaction_reason="E03",
                              transaction_reason_detail="ZW4", customer_name=("Beispiel", "Paula"),
                              product_packages=packages)
            for k, m in enumerate(picked)
        )  # fmt: skip
        message = UtilmdMessage(reference="M1", document_number="DB1", document_date=clock(), sender_id=lfn,
                                recipient_id=nb, transactions=transactions)  # fmt: skip
        envelope = OutboundEnvelope(sender_id=lfn, recipient_id=nb, prepared_at=clock(), control_ref="B1")
        bundled = await actors.ingest(render_interchange(envelope, [build_utilmd(message)]), clock())
        assert [o.outcome for o in bundled.messages] == ["started"] * 3
        for k, m in enumerate(picked):
            ref = await actors.lookup(tenant, f"tx:{lfn}:B{k}")
            assert ref is not None
            assert partition_of(ref.stream_id, PARTITIONS) == routing_slot(tenant, m) % PARTITIONS
    on_disk = await streams_on_disk(base)
    for i, m in enumerate(malos):  # every receipt stream is in its own partition, on its node only
        receipt = receipt_identity(nb, lfn, f"LFN{i}").stream_id
        places = [place for place, streams in on_disk.items() if str(receipt) in streams]
        assert places == [(receipt_nodes[m], partition_of(receipt, PARTITIONS))]
