"""A partitioned store on the one-node session cluster: outbox, deadlines, projections per partition."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import EventEnvelope, InvalidArgument, PartitionMap, RayActorSystem, VirtualClock
from mako_actors.partitions import PartitionUnavailable, partition_of
from stores.lmdb import LmdbStore
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.actors.ray_workflows import FileSender
from tests.workflows import Ledger, Record

pytestmark = pytest.mark.usefixtures("ray_cluster")

START = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
PARTITIONS = 4


class Journal:
    """A read model that keeps every event it is fed."""

    name = "journal"

    def __init__(self) -> None:
        self.events: list[EventEnvelope] = []

    def handle(self, event: EventEnvelope) -> None:
        self.events.append(event)


def partitioned(tmp_path: Path, clock: VirtualClock) -> RayActorSystem:
    layout = PartitionMap.spread(PARTITIONS, {"local": tmp_path / "data"})
    return RayActorSystem(
        tmp_path / "map", workflows=[Ledger], partitions=layout, clock=clock,
        name_prefix=f"p-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip


def dedicated(tmp_path: Path, count: int) -> RayActorSystem:
    """Dedicated placement on ``count`` partitions, all on this node."""
    layout = PartitionMap.spread(count, {"local": tmp_path / "data"})
    return RayActorSystem(
        tmp_path / "map", workflows=[Ledger], placement="dedicated", partitions=layout,
        name_prefix=f"d-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip


async def test_outbox_deadlines_and_projections_run_per_partition(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    async with partitioned(tmp_path, clock) as actors:
        await actors.start()
        refs = [actors.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"malo-{i}") for i in range(24)]
        assert len({partition_of(r.stream_id, PARTITIONS) for r in refs}) == PARTITIONS
        for r in refs:
            await r.execute_and_enqueue(
                Record(amount=1, notify="9900000000010", remind_at=START + timedelta(hours=1))
            )

        outbox = tmp_path / "outbox"
        report = await actors.deliver_outbox(FileSender(str(outbox)))
        assert (report.delivered, report.retried, report.dead_lettered) == (24, 0, 0)
        assert len(list(outbox.iterdir())) == 24
        assert (await actors.deliver_outbox(FileSender(str(outbox)))).delivered == 0

        assert await actors.fire_due_deadlines() == 0  # not due yet on the virtual clock
        clock.advance(timedelta(hours=2))
        assert await actors.fire_due_deadlines() == 24
        for r in refs:
            state = await r.state()
            assert state.closed and state.reason == "timeout:reminder"

        journal = Journal()
        assert await actors.run_projection(journal) == 48  # Recorded + Closed of each process
        assert await actors.run_projection(journal) == 0  # one checkpoint per partition
        by_stream: dict[str, list[int]] = {}
        for event in journal.events:
            by_stream.setdefault(str(event.stream_id), []).append(event.sequence)
        assert all(seqs == [1, 2] for seqs in by_stream.values()) and len(by_stream) == 24
        closed_at = {e.recorded_at for e in journal.events if e.event_type == "ledger.closed"}
        assert closed_at == {START + timedelta(hours=2)}  # the hosts stamped the virtual time


async def test_the_map_file_is_the_truth(tmp_path: Path) -> None:
    clock = VirtualClock(START)
    async with partitioned(tmp_path, clock) as actors:
        await actors.start()
        ref = actors.spawn("ledger", TENANT, LEDGER_ID, routing_key="malo-1")
        await ref.execute(Record(amount=5))
    other = PartitionMap.spread(8, {"local": tmp_path / "data"})
    with pytest.raises(InvalidArgument):  # a different layout for an existing map is refused
        RayActorSystem(tmp_path / "map", workflows=[Ledger], partitions=other, name_prefix="x")
    async with partitioned(tmp_path, clock) as again:  # same layout: the data is found again
        assert (await again.resume(ref.identity()).state()).total == 5


async def test_dedicated_actors_run_on_their_partitions_node(tmp_path: Path) -> None:
    async with dedicated(tmp_path, 2) as actors:
        refs = [actors.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"malo-{i}") for i in range(4)]
        for r in refs:  # no start(): the first operation creates the partitions
            await r.execute(Record(amount=2, register_key=f"tx:{r.stream_id}"))
        node = actors._ray_node_id("local")
        for r in refs:
            assert await actors._dedicated[r.stream_id].node_id.remote() == node
            found = await actors.lookup(TENANT, f"tx:{r.stream_id}")
            assert found is not None and found.identity() == r.identity()
        assert await actors.passivate_idle() == 4
        assert [(await r.state()).total for r in refs] == [2] * 4
    for r in refs:
        p = partition_of(r.stream_id, 2)
        async with LmdbStore(tmp_path / "data" / f"p{p:04d}") as store:
            assert await store.stream_version(r.stream_id) == 1


async def test_a_failed_start_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with partitioned(tmp_path, VirtualClock(START)) as actors:
        found = actors._ray_node_id
        monkeypatch.setattr(actors, "_ray_node_id", lambda node: None)  # the node not up yet
        with pytest.raises(PartitionUnavailable):
            await actors.start()
        monkeypatch.setattr(actors, "_ray_node_id", found)
        ref = actors.spawn("ledger", TENANT, LEDGER_ID, routing_key="malo-1")
        await ref.execute(Record(amount=3))  # starts again: creates the partitions, then runs
        assert (await ref.state()).total == 3


async def test_two_drivers_creating_a_map_at_once_agree_on_one(tmp_path: Path) -> None:
    import fcntl
    import threading

    mine = PartitionMap.spread(4, {"local": tmp_path / "data"})
    theirs = PartitionMap.spread(8, {"local": tmp_path / "data"})
    tmp_path.joinpath("map.lock").touch()
    outcome: list[object] = []

    def second_driver() -> None:
        try:
            RayActorSystem(tmp_path / "map", workflows=[Ledger], partitions=mine, name_prefix="x")
            outcome.append("started")
        except InvalidArgument as exc:
            outcome.append(exc)

    # The first driver is between "no map yet" and saving its own: it holds the map's lock.
    with open(tmp_path / "map.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        thread = threading.Thread(target=second_driver)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # the second one waits for the lock instead of saving its map
        theirs.save(tmp_path / "map")
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    thread.join(10)
    (error,) = outcome
    assert isinstance(error, InvalidArgument) and "records 8 partitions" in str(error)
    assert PartitionMap.load(tmp_path / "map") == theirs  # the first one's map stands


async def test_a_dedicated_write_queued_behind_a_fenced_one_is_refused_unrun_not_lost(tmp_path: Path) -> None:
    import asyncio

    from mako_actors.partitions import PartitionNotOpen
    from stores.partitioned import open_partition

    async with dedicated(tmp_path, 1) as actors:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID, routing_key="malo-1")
        await ref.execute(Record(amount=1))
        store = open_partition(tmp_path / "data", 0, 1)  # as another driver's move fences it
        store.fence(True)
        first = asyncio.ensure_future(ref.execute(Record(amount=2)))
        for _ in range(3):  # its call is on its way
            await asyncio.sleep(0)
        second = asyncio.ensure_future(ref.execute(Record(amount=4)))  # waits behind the first
        results = await asyncio.gather(first, second, return_exceptions=True)
        # Before: the first's refusal ended the actor and the second, sent next, found no
        # handle: a KeyError, and no retry.
        assert [type(r) for r in results] == [PartitionNotOpen, PartitionNotOpen]
        store.fence(False)
        await store.aclose()
        await ref.execute(Record(amount=8))
        assert (await ref.state()).total == 9  # nothing of the refused ones was written


async def test_a_system_whose_names_another_took_over_makes_no_more_actors(tmp_path: Path) -> None:
    layout = PartitionMap.spread(1, {"local": tmp_path / "data"})
    first = RayActorSystem(
        tmp_path / "map", workflows=[Ledger], placement="dedicated", partitions=layout,
        name_prefix=f"n1-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    await first.resume(first.spawn("ledger", TENANT, LEDGER_ID, routing_key="a").identity()).execute(
        Record(amount=1)
    )
    assert await first.passivate_idle() == 1
    await _end_named(f"{first.name_prefix}-node-local", first.namespace)  # none of its actors lives now
    async with RayActorSystem(
        tmp_path / "map", workflows=[Ledger], partitions=layout, name_prefix=f"n2-{uuid.uuid4().hex[:8]}"
    ) as second:  # fmt: skip
        await second.start()  # takes the names over: its host serves the partition now
        with pytest.raises(InvalidArgument, match="served by Ray actors named"):
            # Before: the first system had checked once and went on making actors of its
            # names beside the second's host.
            await first.spawn("ledger", TENANT, LEDGER_ID, routing_key="b").execute(Record(amount=1))
    await first.aclose()


async def _end_named(name: str, namespace: str) -> None:
    """Kill the named actor and wait until Ray no longer lists it."""
    import asyncio

    import ray

    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    while any(a["name"] == name for a in ray.util.list_named_actors(all_namespaces=True)):
        await asyncio.sleep(0.05)


async def test_a_driver_on_an_existing_map_starts_every_nodes_host(tmp_path: Path) -> None:
    """Hosts call each other by name (a registry key forwarded to its home partition), and only
    a driver creates hosts. Before, a driver on an existing map created only the hosts of the
    nodes it touched: a key homed on another node was never written there (a lookup missed it,
    for GPKE an APERAK Z10 to a valid answer) until a manual repair."""
    from mako_actors.partitions import key_home

    layout = PartitionMap.spread(PARTITIONS, {"local": str(tmp_path / "a"), "other": str(tmp_path / "b")})
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    async with RayActorSystem(tmp_path / "map", [Ledger], partitions=layout, name_prefix=prefix) as first:
        await first.start()  # creates the partitions; its hosts end with it
    async with RayActorSystem(tmp_path / "map", [Ledger], partitions=layout, name_prefix=prefix) as second:
        ref = next(
            r for r in (second.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"m{i}") for i in range(100))
            if layout.node_of(partition_of(r.stream_id, PARTITIONS)) == "local"
        )
        keys = (f"tx:{j}" for j in range(1000))
        key = next(k for k in keys if layout.node_of(key_home(TENANT, k, PARTITIONS)) == "other")
        await ref.execute(Record(amount=1, register_key=key))
        found = await second.lookup(TENANT, key)
        assert found is not None and found.stream_id == ref.stream_id


async def test_partitions_a_driver_saved_a_map_for_but_never_made_are_made_by_the_next(
    tmp_path: Path,
) -> None:
    """A driver saves a new map at once, and makes its partitions only when it starts; one that
    stops in between (it died, or its start failed: a node not up yet) left them unmade. Before,
    no later driver made them: every partition unavailable for good."""
    layout = PartitionMap.spread(PARTITIONS, {"local": tmp_path / "data"})
    prefix = f"n-{uuid.uuid4().hex[:8]}"
    first = RayActorSystem(tmp_path / "map", [Ledger], partitions=layout, name_prefix=prefix)
    await first.aclose()  # before any start
    assert not PartitionMap.load(tmp_path / "map").created and not (tmp_path / "data").exists()
    async with RayActorSystem(tmp_path / "map", [Ledger], partitions=layout, name_prefix=prefix) as second:
        ref = second.spawn("ledger", TENANT, LEDGER_ID, routing_key="malo-1")
        await ref.execute(Record(amount=4))
        assert (await ref.state()).total == 4
    assert PartitionMap.load(tmp_path / "map").created  # from now on a missing partition was lost
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [f"p{p:04d}" for p in range(PARTITIONS)]


async def test_a_projection_goes_on_past_a_partition_its_host_cannot_open(tmp_path: Path) -> None:
    """run_projection skips unavailable partitions, as deliver_outbox and fire_due_deadlines
    do. Before, a partition whose data its (live) host could not open stopped it with
    PartitionNotOpen: the partitions after it were not fed."""
    import os

    clock = VirtualClock(START)
    async with partitioned(tmp_path, clock) as actors:
        refs = [actors.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"malo-{i}") for i in range(16)]
        for r in refs:
            await r.execute(Record(amount=1))
        missing = sum(partition_of(r.stream_id, PARTITIONS) == 1 for r in refs)
        assert 0 < missing < 16
        name_prefix = actors.name_prefix
    os.rename(tmp_path / "data" / "p0001", tmp_path / "data" / "p0001.offline")
    layout = PartitionMap.spread(PARTITIONS, {"local": tmp_path / "data"})
    again = RayActorSystem(tmp_path / "map", workflows=[Ledger], partitions=layout, name_prefix=name_prefix)
    async with again:
        assert await again.run_projection(Journal()) == 16 - missing
