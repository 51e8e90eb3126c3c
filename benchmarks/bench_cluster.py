"""Ray throughput: (c) hosted Ray x2 on one machine and (e) a partitioned store on 1-3 Ray nodes.

Run from the repository root: ``.venv/bin/python benchmarks/bench_cluster.py [--rows c,e] [--quick]``.

Same workload as ``bench_actors.py`` (a tiny ledger, one command → one event, every commit
fsynced, ``execute_and_enqueue`` from 500 concurrent callers round-robin over N processes):

(b) ``LocalActorSystem`` on LMDB, for the ratio (c)/(b) measured in the same run.
(d) ``eventsourcing`` on SQLite, taken from ``bench_actors.py`` of the same checkout (2,000
    commands over min(N, 2,000) processes), for the ratio (c)/(d).
(c) ``RayActorSystem`` hosted, 2 host actors on one shared LMDB directory (as bench_actors).
(e) ``RayActorSystem(partitions=...)`` on a local ``ray.cluster_utils.Cluster`` of 1, 2 and 3
    nodes, each node its own data directory, 16 partitions dealt over the nodes, one host per
    node pinned there. All nodes share this machine's cores, so (e) shows the overhead of
    partitioning and node-pinned hosts, not a speed-up.

``MAKO_ROOT=/path/to/other/checkout`` runs the same harness against other code (a baseline);
(e) needs this checkout's partitioned store. Also prints memory per live hosted process (host
RSS delta / live actors at N=10,000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("MAKO_ROOT") or Path(__file__).resolve().parents[1]).resolve()
sys.path.insert(0, str(ROOT))

from mako_actors import TenantId, WorkflowId  # noqa: E402
from mako_actors.actors import LocalActorSystem, ProcessRef  # noqa: E402
from stores.lmdb import LmdbStore  # noqa: E402
from tests.workflows import Ledger, Record  # noqa: E402

TENANT = TenantId.from_party_id("9900000000003")
LEDGER_ID = WorkflowId.new("ledger", "FV2025-10-01")
CALLERS = 500


async def drive(refs: list[ProcessRef[Any, Any]], total: int, callers: int = CALLERS) -> float:
    """Send ``total`` commands round-robin over ``refs`` from ``callers`` tasks; returns seconds."""
    n = len(refs)

    async def caller(k: int) -> None:
        for i in range(k, total, callers):
            await refs[i % n].execute_and_enqueue(Record(amount=1))

    start = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(min(callers, total))))
    return time.perf_counter() - start


async def bench_local(path: Path, n: int, total: int) -> float:
    store = LmdbStore(path)
    async with LocalActorSystem(store, workflows=[Ledger], snapshot_interval=100, close_store=True) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(n)]
        return total / await drive(refs, total)


async def bench_hosted(path: Path, n: int, total: int) -> tuple[float, float]:
    from mako_actors.actors import RayActorSystem

    prefix = f"c{n}-{uuid.uuid4().hex[:6]}"
    async with RayActorSystem(path, workflows=[Ledger], hosts=2, name_prefix=prefix) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(n)]
        await asyncio.gather(
            *(system.spawn("ledger", TENANT, LEDGER_ID).execute(Record(amount=1)) for _ in range(20))
        )  # start the hosts, warm up
        rss_before = sum(await system.rss_bytes())
        seconds = await drive(refs, total)
        rss_after = sum(await system.rss_bytes())
        live = (await system.get_stats()).live
    return total / seconds, (rss_after - rss_before) / max(1, live)


async def bench_partitioned(base: Path, nodes: list[str], n: int, total: int) -> float:
    from mako_actors.actors import RayActorSystem
    from mako_actors.partitions import PartitionMap

    layout = PartitionMap.spread(16, {node: base / node for node in nodes})
    async with RayActorSystem(
        base / "partition-map",
        workflows=[Ledger],
        partitions=layout,
        name_prefix=f"e{len(nodes)}-{uuid.uuid4().hex[:6]}",
    ) as system:
        await system.start()
        refs = [system.spawn("ledger", TENANT, LEDGER_ID, routing_key=f"malo-{i}") for i in range(n)]
        await asyncio.gather(*(r.execute(Record(amount=1)) for r in refs[:50]))  # warm up
        return total / await drive(refs, total)


def eventsourcing_bench() -> Any:
    """(d) from ``bench_actors.py`` of the same checkout (``eventsourcing`` on SQLite), if present."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_actors", ROOT / "benchmarks" / "bench_actors.py")
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.bench_eventsourcing
    except Exception:  # another checkout's bench without it: the column stays empty
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="c,e", help="which rows: c, e or both (default c,e)")
    parser.add_argument("--quick", action="store_true", help="fewer commands (a smoke run)")
    args = parser.parse_args()
    rows = set(args.rows.split(","))
    scale = 0.2 if args.quick else 1.0
    total = int(10_000 * scale)
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    import ray

    print(f"code: {ROOT}; {os.cpu_count()} cores; {total} commands (at least N) per cell", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if "c" in rows:
            local = {n: asyncio.run(bench_local(base / f"b{n}", n, max(total, n))) for n in (100, 10_000)}
            peer = eventsourcing_bench()
            slow = int(2_000 * scale)
            d = {n: peer(base / f"d{n}.sqlite", n, slow) if peer else float("nan") for n in (100, 10_000)}
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=bool(os.environ.get("BENCH_LOGS")),
                namespace="bench-cluster",
            )
            try:
                for n in (100, 10_000):
                    rate, memory = asyncio.run(bench_hosted(base / f"c{n}", n, max(total, n)))
                    print(
                        f"N={n:>6,}: (b) local {local[n]:8,.0f}/s   (c) hosted Ray x2 {rate:8,.0f}/s   "
                        f"(d) evsrc {d[n]:8,.0f}/s   c/b {rate / local[n]:.2f}   c/d {rate / d[n]:.1f}   "
                        f"memory per live hosted process {memory / 1024:.1f} KiB",
                        flush=True,
                    )
            finally:
                ray.shutdown()
        if "e" in rows:
            from ray.cluster_utils import Cluster

            for count in (1, 2, 3):
                nodes = [f"n{i}" for i in range(1, count + 1)]
                cluster = Cluster(
                    initialize_head=True,
                    head_node_args={
                        "num_cpus": 1,
                        "resources": {"mako-node:n1": 1},
                        "include_dashboard": False,
                    },
                )
                try:
                    for node in nodes[1:]:
                        cluster.add_node(num_cpus=1, resources={f"mako-node:{node}": 1})
                    cluster.wait_for_nodes()
                    ray.init(address=cluster.address, log_to_driver=False, namespace="bench-cluster")
                    n = int(2_000 * scale)
                    rate = asyncio.run(bench_partitioned(base / f"e{count}", nodes, n, total))
                    print(f"(e) {count} node(s), 16 partitions, N={n:,}: {rate:8,.0f} commands/s", flush=True)
                finally:
                    ray.shutdown()
                    cluster.shutdown()


if __name__ == "__main__":
    main()
