"""Metrics render the engine's counters in the Prometheus text format."""

from __future__ import annotations

from pathlib import Path

from mako_actors import Process, TenantId, WorkflowId
from mako_actors.metrics import prometheus_text
from mako_actors.scheduler import SchedulerStats
from stores.lmdb import LmdbStore
from tests.workflows import Ledger, Record


async def test_store_and_scheduler_counters_render(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        p = Process(
            Ledger(), store, TenantId.from_party_id("9900000002009"), WorkflowId.new("ledger", "FV2510")
        )
        await p.execute(Record(amount=1))
        await p.execute(Record(amount=2))
        stats = SchedulerStats(fired=3, labels={"lfa-09:00": 2, 'we"ird': 1})
        text = prometheus_text(
            {"store": store.stats, "deadlines": stats, "outbox_pending": await store.outbox_count()},
            labels={"node": "nb-1"},
        )
    lines = text.splitlines()
    assert 'mako_store_commits{node="nb-1"} 2' in lines
    assert 'mako_deadlines_fired{node="nb-1"} 3' in lines
    assert 'mako_deadlines_labels{node="nb-1",label="lfa-09:00"} 2' in lines
    assert 'mako_deadlines_labels{node="nb-1",label="we\\"ird"} 1' in lines
    assert 'mako_outbox_pending{node="nb-1"} 0' in lines
    assert "# TYPE mako_store_transactions gauge" in lines
