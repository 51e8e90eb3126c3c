"""Projections: global order, checkpoints across restarts, failures isolated from the write path."""

from __future__ import annotations

from pathlib import Path

from mako_actors import EventEnvelope, Process, TenantId, WorkflowId
from mako_actors.projection import ProjectionRunner
from stores.lmdb import LmdbStore
from tests.workflows import Ledger, Record

TENANT = TenantId.from_party_id("9900000002009")
WF = WorkflowId.new("ledger", "FV2510")


class Totals:
    name = "totals"

    def __init__(self, fail_on: int | None = None) -> None:
        self.seen: list[int] = []
        self.fail_on = fail_on

    def handle(self, event: EventEnvelope) -> None:
        if event.payload.get("amount") == self.fail_on:
            raise ValueError("bad read model")
        self.seen.append(event.payload["amount"])


async def test_projection_sees_global_order_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        a = Process(Ledger(), store, TENANT, WF)
        b = Process(Ledger(), store, TENANT, WF)
        for n, p in enumerate([a, b, a, b], start=1):
            await p.execute(Record(amount=n))
        first = Totals()
        assert await ProjectionRunner(store, first, batch=3).run_once() == 4
        assert first.seen == [1, 2, 3, 4]
        await a.execute(Record(amount=5))
    async with LmdbStore(tmp_path) as store:
        again = Totals()
        assert await ProjectionRunner(store, again).run_once() == 1
        assert again.seen == [5]


async def test_a_failing_projection_stops_alone_and_resumes_at_the_failed_event(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        p = Process(Ledger(), store, TENANT, WF)
        for n in (1, 2, 3):
            await p.execute(Record(amount=n))
        broken = ProjectionRunner(store, Totals(fail_on=2))
        assert await broken.run_once() == 1
        assert broken.failed is not None and "bad read model" in broken.failed
        await p.execute(Record(amount=4))  # the write path is unaffected
        fixed = Totals()
        assert await ProjectionRunner(store, fixed).run_once() == 3
        assert fixed.seen == [2, 3, 4]


async def test_a_projection_cancelled_mid_batch_handles_no_event_twice(tmp_path: Path) -> None:
    """Cancelling ``run_forever`` is its way to stop (a node's shutdown). Before, the checkpoint
    of the events handled in the batch under way was not saved: after a restart they were
    handled again (e.g. inserted twice into a read model)."""
    import asyncio

    class Slow:
        name = "slow"

        def __init__(self) -> None:
            self.seen: list[int] = []
            self.tenth = asyncio.Event()

        async def handle(self, event: EventEnvelope) -> None:
            await asyncio.sleep(0)
            self.seen.append(event.global_position)  # done: the event counts as handled
            if len(self.seen) == 10:
                self.tenth.set()
                await asyncio.sleep(3600)  # cancelled here, within the first batch

    async with LmdbStore(tmp_path) as store:
        process = Process(Ledger(), store, TENANT, WF)
        for n in range(30):
            await process.execute(Record(amount=n))
        slow = Slow()
        task = asyncio.create_task(ProjectionRunner(store, slow, batch=500).run_forever())
        await slow.tenth.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await store.load_checkpoint("slow") == slow.seen[8]  # the 10th was cut short
        again = Totals()
        again.name = "slow"
        assert await ProjectionRunner(store, again).run_once() == 21
        assert again.seen == list(range(9, 30))  # from the one cut short on, each once
