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
