"""A ``rebalance`` that fails or is given up midway leaves the partition open on exactly one node,
writable, with the map unchanged; a fence a move left behind is lifted by ``rebalance`` to the
node that holds the partition.

The two node hosts are the real ``_Host`` on real LMDB directories, called in this process
instead of through Ray (a failure is injected into one step of the move); the driver is a real
``RayActorSystem`` with those hosts as its node hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import stores.partitioned as partitioned_store
from mako_actors import PartitionMap, ProcessIdentity, RayActorSystem
from mako_actors.actors import ray_system
from mako_actors.actors._actor import COMMAND, Op
from mako_actors.partitions import key_home, partition_of
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import Ledger, Record

pytestmark = pytest.mark.usefixtures("ray_cluster")  # RayActorSystem wants ray.init()
COUNT = 2


class _Method:
    """``host.method.remote(...)`` as Ray would run it: the call proceeds even if the caller
    stops waiting (``after`` is awaited first, to hold a reply back)."""

    def __init__(self, fn: Callable[..., Any], after: Callable[[], Any] | None = None) -> None:
        self.fn, self.after = fn, after

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        async def run() -> Any:
            result = await self.fn(*args)
            if self.after is not None:
                await self.after()
            return result

        return asyncio.ensure_future(run())


class _Handle:
    """A node host's actor handle, its calls answered by the ``_Host`` in this process."""

    def __init__(self, host: Any, **slow: Callable[[], Any]) -> None:
        self.host = host
        for name in ("hand_over", "adopt", "reopen", "discard", "retire", "set_assignment", "lookup"):
            setattr(self, name, _Method(getattr(host, name), slow.get(name)))


def _spec(data_dir: Path, node: str, partitions: list[int]) -> dict[str, Any]:
    return {
        "workflows": [Ledger], "store_options": None, "clock": None, "pushed_clock": None,
        "options": {"snapshot_interval": 100, "max_attempts": 8, "max_batch": 512, "idle_timeout": None,
                    "max_live": None},
        "prefix": "t", "namespace": "t", "inbound": None, "mode": "partitioned", "node": node,
        "data_dir": str(data_dir), "partitions": partitions, "assignment": ["a", "b"],
    }  # fmt: skip


class Nodes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.a = ray_system._Host(_spec(root / "a", "a", [0]))
        self.b = ray_system._Host(_spec(root / "b", "b", [1]))
        self.layout = PartitionMap(("a", "b"), {"a": str(root / "a"), "b": str(root / "b")})
        self.identity = next(
            i for i in (ProcessIdentity.new(TENANT, LEDGER_ID) for _ in range(100))
            if partition_of(i.stream_id, COUNT) == 0
        )  # fmt: skip

    def driver(self, **slow_b: Callable[[], Any]) -> RayActorSystem:
        system = RayActorSystem(
            self.root / "map", workflows=[Ledger], partitions=self.layout, name_prefix="t"
        )
        system._started = True  # its hosts are the in-process ones below

        async def nobody(partition: int, count: int) -> None:
            return None

        system._end_dedicated_of_others = nobody  # type: ignore[method-assign]
        system._node_hosts = {"a": _Handle(self.a), "b": _Handle(self.b, **slow_b)}
        return system

    async def write(self, host: Any) -> object:
        """One command for the process of partition 0 on ``host``: its result or error."""
        (result,) = await host.run_batch([(0, self.identity, Op(COMMAND, command=Record(amount=1)))])
        return result

    async def total(self, host: Any) -> int:
        from mako_actors.actors._actor import STATE

        (state,) = await host.run_batch([(0, self.identity, Op(STATE))])
        return int(state.total)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    n = Nodes(tmp_path)
    await n.a.create_partitions([0])
    await n.b.create_partitions([1])
    yield n
    await n.a.aclose()
    await n.b.aclose()


def refused(result: object) -> bool:
    """Whether a host refused the write unrun (the partition is not open there, or fenced)."""
    return isinstance(result, ray_system._Failure) and result.plain["error"] == "PartitionNotOpen"


async def test_a_copy_that_fails_leaves_the_partition_open_where_it_was(
    nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not refused(await nodes.write(nodes.a))

    def disk_full(store: Any) -> bytes:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(partitioned_store, "export_partition", disk_full)
    with pytest.raises(OSError, match="No space left"):
        await nodes.driver().rebalance(0, "b")
    assert await nodes.a.open_partitions() == [0] and await nodes.b.open_partitions() == [1]
    assert not refused(await nodes.write(nodes.a))  # not fenced: before, every write was refused
    assert await nodes.total(nodes.a) == 2
    assert PartitionMap.load(nodes.root / "map").assignment == ("a", "b")


async def test_a_move_given_up_while_the_copy_is_installed_is_undone_on_both_nodes(nodes: Nodes) -> None:
    await nodes.write(nodes.a)
    installed = asyncio.Event()

    async def reply_late() -> None:  # the copy is in place, the reply not yet back
        installed.set()
        await asyncio.sleep(3600)

    move = asyncio.create_task(nodes.driver(adopt=reply_late).rebalance(0, "b"))
    await installed.wait()
    move.cancel()
    with pytest.raises(asyncio.CancelledError):
        await move
    # Before: the copy was opened (unfenced) on b and the partition reopened on a: writable on both.
    assert await nodes.a.open_partitions() == [0] and await nodes.b.open_partitions() == [1]
    assert refused(await nodes.write(nodes.b))
    assert [p.name.split("-")[0] for p in (nodes.root / "b").glob("p0000.abandoned-*")] == ["p0000.abandoned"]
    assert not refused(await nodes.write(nodes.a)) and await nodes.total(nodes.a) == 2
    assert PartitionMap.load(nodes.root / "map").assignment == ("a", "b")


async def test_a_move_that_succeeds_leaves_one_open_writable_copy(nodes: Nodes) -> None:
    await nodes.write(nodes.a)
    driver = nodes.driver()
    await driver.rebalance(0, "b")
    assert await nodes.a.open_partitions() == [] and await nodes.b.open_partitions() == [0, 1]
    assert not refused(await nodes.write(nodes.b)) and await nodes.total(nodes.b) == 2
    assert PartitionMap.load(nodes.root / "map").assignment == ("b", "b")
    assert (nodes.root / "a" / f"p0000.moved-{driver.partition_map.epoch}").is_dir()  # type: ignore[union-attr]


async def test_a_fence_left_by_a_move_that_stopped_midway_is_lifted_by_rebalance_to_its_node(
    nodes: Nodes,
) -> None:
    await nodes.write(nodes.a)
    await nodes.a.hand_over(0)  # ... and then the driver died: the map still names node a
    await nodes.a.aclose()
    nodes.a = ray_system._Host(_spec(nodes.root / "a", "a", [0]))  # its host restarts
    assert await nodes.a.open_partitions() == [0]
    assert refused(await nodes.write(nodes.a))  # open, but the fence refuses every write
    await nodes.driver().rebalance(0, "a")
    assert not refused(await nodes.write(nodes.a)) and await nodes.total(nodes.a) == 2


async def test_lookups_refused_at_once_by_the_old_node_all_follow_another_drivers_move(nodes: Nodes) -> None:
    key = next(k for k in (f"tx:9900000000010:T{n}" for n in range(100)) if key_home(TENANT, k, COUNT) == 0)
    await nodes.a._stores[0].register(TENANT, key, nodes.identity)
    stale = nodes.driver()  # its map still names node a for partition 0
    await nodes.driver().rebalance(0, "b")  # another driver's move
    found = await asyncio.gather(*(stale.lookup(TENANT, key) for _ in range(3)), return_exceptions=True)
    # Before: the first refusal re-read the map; the others found it read and gave up.
    assert [getattr(f, "stream_id", f) for f in found] == [nodes.identity.stream_id] * 3


async def test_a_reopen_sent_while_the_copy_is_taken_waits_for_it(nodes: Nodes) -> None:
    """A move given up while the old host drains the partition for its copy: the undo's reopen
    reaches the host meanwhile. Before, it opened the partition at once, and the copy taken
    after it fenced what it had opened (every write refused until another rebalance)."""
    await nodes.write(nodes.a)
    copy = asyncio.create_task(nodes.a.hand_over(0))
    await asyncio.sleep(0)  # the copy is under way: its actors drain
    await nodes.a.reopen(0)
    await copy
    assert await nodes.a.open_partitions() == [0]
    assert not refused(await nodes.write(nodes.a)) and await nodes.total(nodes.a) == 2


async def test_a_failed_move_leaves_a_copy_it_did_not_install_on_the_target(nodes: Nodes) -> None:
    """Node a lost partition 0; an operator restored a backup of it on b. A move of it to b fails
    (a has nothing to hand over). Before, undoing the move set aside b's copy, the only one."""
    import shutil

    await nodes.write(nodes.a)
    await nodes.a.aclose()
    shutil.copytree(nodes.root / "a" / "p0000", nodes.root / "b" / "p0000")  # the backup
    shutil.rmtree(nodes.root / "a" / "p0000")  # a's disk lost it
    nodes.a = ray_system._Host(_spec(nodes.root / "a", "a", [0]))
    with pytest.raises(ray_system.PartitionUnavailable):
        await nodes.driver().rebalance(0, "b")
    assert sorted(p.name for p in (nodes.root / "b").iterdir()) == ["p0000", "p0001"]
    await nodes.b.reopen(0)  # the operator brings the backup up (e.g. the map edited to b)
    assert await nodes.total(nodes.b) == 1
