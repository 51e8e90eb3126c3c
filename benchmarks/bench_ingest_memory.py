"""Peak memory per MB of input: ``parse_interchange`` and ``InboundPipeline.ingest``.

Each measurement runs in a fresh child process: the growth of its peak resident set size
(``ru_maxrss``) from just before the call to just after, divided by the input size.
Run: ``.venv/bin/python benchmarks/bench_ingest_memory.py``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
import sys
import tempfile
from datetime import UTC, datetime
from multiprocessing.connection import Connection


def _input(megabytes: float) -> bytes:
    from mako_actors.edifact import synthetic_utilmd

    one = synthetic_utilmd(messages=100, transactions=1, control_ref="LFN1")
    messages = max(1, int(megabytes * 1024 * 1024 / len(one) * 100))
    return synthetic_utilmd(messages=messages, transactions=1, control_ref="LFN1")


def _measure(what: str, megabytes: float, conn: Connection) -> None:
    from mako_actors.edifact import parse_interchange
    from mako_actors.gpke import GpkeNbWorkflow
    from mako_actors.inbound import DirectHost, InboundPipeline
    from mako_actors.scheduler import VirtualClock
    from stores.lmdb import Durability, LmdbStore

    raw = _input(megabytes)
    received = datetime(2025, 6, 10, 12, 30, tzinfo=UTC)  # FV2504 in force, start in the future
    logging.disable(logging.CRITICAL)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if what == "parse":
        parsed = parse_interchange(raw, max_bytes=len(raw))
        assert parsed.messages
    else:

        async def ingest() -> None:
            async with LmdbStore(tempfile.mkdtemp(), durability=Durability.NO_SYNC) as store:
                clock = VirtualClock(received)
                host = DirectHost(store, [GpkeNbWorkflow()], clock)
                pipeline = InboundPipeline(store, host, tenants=["9900000002009"], clock=clock)
                await pipeline.ingest(raw, received)

        asyncio.run(ingest())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((len(raw), (after - before) * 1024))


def measure(what: str, megabytes: float) -> tuple[int, int]:
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_measure, args=(what, megabytes, sender))
    child.start()
    result: tuple[int, int] = receiver.recv()
    child.join()
    return result


def main() -> int:
    print("| call | input MB | peak RSS growth MB | MB per MB of input |")
    print("|---|---:|---:|---:|")
    for what, sizes in (("parse", (1, 8, 32)), ("ingest", (0.25, 1))):
        for megabytes in sizes:
            size, grown = measure(what, megabytes)
            mb = size / 1024 / 1024
            print(f"| {what} | {mb:.2f} | {grown / 1024 / 1024:.0f} | {grown / size:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
