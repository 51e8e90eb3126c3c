"""Metrics: counters end in _total, gauges are levels, histograms measure latency; all have HELP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mako_actors import LocalActorSystem, Process, TenantId, WorkflowId
from mako_actors.metrics import Metrics, prometheus_text
from mako_actors.scheduler import SchedulerStats
from mako_actors.testing import envelope, identity, outbox_row
from stores.lmdb import LmdbStore
from tests.workflows import Ledger, Record

Labels = tuple[tuple[str, str], ...]


def families(text: str) -> dict[str, tuple[str, str, dict[Labels, float]]]:
    """name -> (type, help, {labels: value of the family's main sample}), as Prometheus parses it."""
    out = {}
    for family in text_string_to_metric_families(text):
        main = {"counter": "_total", "histogram": "_count"}.get(family.type, "")
        samples = {
            tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == family.name + main
        }
        out[family.name] = (family.type, family.documentation, samples)
    return out


async def test_stats_render_as_counters_and_level_gauges_with_help(tmp_path: Path) -> None:
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
    assert 'mako_store_commits_total{node="nb-1"} 2.0' in lines
    assert "# TYPE mako_store_commits_total counter" in lines
    assert 'mako_deadlines_fired_total{node="nb-1"} 3.0' in lines
    assert 'mako_deadlines_labels_total{label="lfa-09:00",node="nb-1"} 2.0' in lines
    assert 'mako_deadlines_labels_total{label="we\\"ird",node="nb-1"} 1.0' in lines
    assert "# TYPE mako_outbox_pending gauge" in lines and 'mako_outbox_pending{node="nb-1"} 0.0' in lines
    assert "# TYPE mako_store_largest_batch gauge" in lines  # a level, not a count
    parsed = families(text)
    assert all(help_text for _, help_text, _ in parsed.values())
    for name, (kind, _, _) in parsed.items():
        assert (kind == "counter") == any(line.startswith(f"{name}_total") for line in lines), name


async def test_node_metrics_record_ingest_commands_and_delivery(tmp_path: Path) -> None:
    metrics = Metrics()
    async with LmdbStore(tmp_path) as store, LocalActorSystem(store, [Ledger]) as system:
        metrics.watch({"store": lambda: store.stats, "actors": lambda: system.stats})
        tenant = TenantId.from_party_id("9900000002009")
        ref = system.spawn("ledger", tenant, WorkflowId.new("ledger", "FV2510"))
        for amount in (1, 2, 3):
            with metrics.time_command():
                await ref.execute(Record(amount=amount))
        metrics.outbox_pending.set(await store.outbox_count())
    metrics.observe_ingest("accepted", {"started": 2, "dead_letter": 1})
    metrics.observe_ingest("duplicate", {"dead_letter": 1})  # its letter was stored before
    metrics.observe_ingest("rejected", {})
    created = datetime(2025, 11, 13, 8, tzinfo=UTC)
    metrics.observe_delivery("APERAK", created, created + timedelta(seconds=3))
    parsed = families(metrics.render().decode())

    assert parsed["mako_interchanges"][0] == "counter"
    assert parsed["mako_interchanges"][2] == {
        (("status", "accepted"),): 1.0, (("status", "duplicate"),): 1.0, (("status", "rejected"),): 1.0
    }
    assert parsed["mako_messages"][2][(("outcome", "started"),)] == 2.0
    assert parsed["mako_outbox_delivered"][2] == {(("message_type", "APERAK"),): 1.0}
    kind, _, samples = parsed["mako_command_duration_seconds"]
    assert kind == "histogram" and samples == {(): 3.0}
    text = metrics.render().decode()
    assert 'mako_outbox_delivery_latency_seconds_bucket{le="5.0"} 1.0' in text
    assert 'mako_outbox_delivery_latency_seconds_bucket{le="1.0"} 0.0' in text
    assert parsed["mako_outbox_pending"][0] == "gauge"
    assert parsed["mako_actors_commands"][0] == "counter" and "mako_actors_commands_total 3.0" in text
    assert parsed["mako_actors_live"][0] == "gauge"
    assert parsed["mako_store_commits"][2][()] == 3.0
    assert all(help_text for _, help_text, _ in parsed.values())


async def test_a_delayed_messages_delivery_latency_counts_from_when_it_became_due(tmp_path: Path) -> None:
    """A message the workflow delayed by a day (``not_before``) was observed as a day of
    latency, past every bucket: the node's latency histogram counts from when it became due."""
    from mako_actors.serve import _MeasuredSender

    metrics = Metrics()
    now = datetime.now(UTC)
    contrl = {
        "envelope": {"sender_id": "9900000002009", "recipient_id": "9900000001001",
                     "prepared_at": now.isoformat(), "control_ref": "NB0001"},
        "reference": "C1", "interchange_ref": "LFN0001", "interchange_sender_id": "9900000001001",
        "interchange_recipient_id": "9900000002009", "action": "7",
    }  # fmt: skip
    ident = identity()
    message = outbox_row(ident, envelope(ident).event_id, now).model_copy(
        update={"message_type": "CONTRL", "payload": contrl, "created_at": now - timedelta(days=1),
                "not_before": now}
    )  # fmt: skip
    await _MeasuredSender(tmp_path / "out", metrics).send(message)
    text = metrics.render().decode()
    assert 'mako_outbox_delivery_latency_seconds_bucket{le="5.0"} 1.0' in text


def test_the_stores_own_counts_are_counters_of_their_own() -> None:
    """StoreStats.extra counts only grow: each is a counter (Prometheus reads a restart as a
    reset, not a drop). Before, all three were one gauge, told apart by a label."""
    from mako_actors.store import StoreStats

    counts = {"nested_transactions": 2, "redone_batches": 1, "snapshots_ignored": 4}
    stats = StoreStats(commits=3, extra=dict(counts))
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text({"store": stats}))}
    assert "mako_store_extra" not in families
    for name, value in counts.items():
        family = families[f"mako_store_{name}"]
        assert family.type == "counter"
        assert [s.value for s in family.samples if s.name.endswith("_total")] == [value]
