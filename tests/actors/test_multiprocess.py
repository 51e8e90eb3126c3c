"""Two OS processes, each with its own ``LocalActorSystem``, on one LMDB directory and one stream.

Each side believes it owns the process; optimistic concurrency must make the loser reload and
retry, so no acknowledged command is lost and none is stored twice.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

from mako_actors import Process, ProcessIdentity, VersionConflict
from mako_actors.actors import LocalActorSystem
from stores.lmdb import LmdbStore
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import Ledger, Record

PER_SIDE = 300


def _hammer(path: str, identity_json: str, side: int, start: Any, out: Any) -> None:
    async def main() -> list[int]:
        identity = ProcessIdentity.model_validate_json(identity_json)
        acked: list[int] = []
        store = LmdbStore(path)
        async with LocalActorSystem(store, workflows=[Ledger], max_attempts=1000, close_store=True) as system:
            ref = system.resume(identity)

            async def one(amount: int) -> None:
                try:
                    await ref.execute(Record(amount=amount))
                except VersionConflict:
                    return  # not acknowledged: allowed, but then it must not be stored
                acked.append(amount)

            start.wait()
            for chunk in range(0, PER_SIDE, 20):  # waves, so both sides interleave for a while
                await asyncio.gather(*(one(side * 100_000 + i) for i in range(chunk, chunk + 20)))
                await asyncio.sleep(0.002)
        return acked

    out.put(asyncio.run(main()))


async def test_two_os_processes_never_lose_or_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with LmdbStore(path) as store:
        process = Process(Ledger(), store, TENANT, LEDGER_ID)
        await process.execute(Record(amount=0))
    identity = process.identity().model_dump_json()
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_hammer, args=(str(path), identity, side, start, out)) for side in (1, 2)]
    for child in children:
        child.start()
    try:
        start.set()
        acked = [out.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    assert all(child.exitcode == 0 for child in children)
    async with LmdbStore(path) as store:
        events = await store.load(process.stream_id)
        state = await Process.from_identity(Ledger(), store, process.identity()).state()
    stored = [e.payload["amount"] for e in events[1:]]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len(stored) == len(set(stored))  # nothing stored twice
    assert sorted(stored) == sorted(acked[0] + acked[1])  # exactly the acknowledged ones
    assert len(stored) > PER_SIDE  # both sides got through
    assert state.entries == len(events)
