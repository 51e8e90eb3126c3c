"""Metrics with ``prometheus-client``: counters, level gauges and latency histograms.

Two ways in:

- ``Metrics``: one registry with what a node measures as it works: interchanges and messages
  by outcome, command latency, commit batch size, outbox delivery latency, deliveries, retries
  and dead letters (counters end in ``_total``), the outbox and deadline levels (gauges), and
  the engine's own stats objects read at scrape time (``watch``). ``render()`` is the text a
  ``/metrics`` endpoint serves; ``mako-actors serve`` does that.
- ``prometheus_text({"store": store.stats, "actors": system.stats, ...})``: the stats
  dataclasses once, as text. Fields that only grow are counters (``mako_<group>_<field>_total``),
  the others gauges; every family has a ``# HELP``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics", "StatsCollector", "prometheus_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What each known stats field means, and whether it only grows (a counter) or is a level.
_FIELDS: dict[str, tuple[str, str]] = {
    # StoreStats
    "transactions": ("counter", "write transactions committed"),
    "commits": ("counter", "process commits stored"),
    "conflicts": ("counter", "writes refused by optimistic concurrency"),
    "largest_batch": ("gauge", "most writes that shared one transaction so far"),
    "events_read": ("counter", "events read from the store"),
    "map_resizes": ("counter", "times the LMDB map was grown"),
    # StoreStats.extra: implementation counts, each its own counter
    "nested_transactions": ("counter", "writes isolated in a nested transaction after a failure"),
    "redone_batches": ("counter", "write batches run again to isolate a failed write"),
    "snapshots_ignored": ("counter", "snapshots not used on activation (schema or state changed)"),
    # ActorStats
    "activations": ("counter", "process actors activated from the store"),
    "reloads": ("counter", "actor state reloads after a failed commit"),
    "passivations": ("counter", "idle process actors passivated"),
    "failed_commands": ("counter", "commands that raised"),
    "batches": ("counter", "commit batches sent to the store"),
    "live": ("gauge", "process actors in memory"),
    "max_live_seen": ("gauge", "most process actors in memory at once"),
    # SchedulerStats
    "fired": ("counter", "deadlines fired"),
    "failed": ("counter", "deadlines that failed for good (dead-lettered)"),
    "retried_later": ("counter", "deadline firings left due after a transient error"),
    "labels": ("counter", "deadlines fired, by label"),
}


def _help(group: str, field: str) -> tuple[str, str]:
    if group in ("actors", "actor") and field == "commands":
        return "counter", "commands handled by process actors"
    return _FIELDS.get(field, ("gauge", f"{group} {field.replace('_', ' ')}"))


def _families(group: str, stats: Any, labels: Mapping[str, str]) -> Iterator[Metric]:
    fields: dict[str, Any]
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        fields = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    elif isinstance(stats, int | float) and not isinstance(stats, bool):
        fields = {"": stats}
    else:
        raise TypeError(f"metrics group {group!r}: expected a stats dataclass or a number")
    names, values = list(labels), list(labels.values())
    # ``extra`` holds counts of the implementation (StoreStats): each key is a counter of its
    # own, never one gauge of unrelated quantities.
    extra = fields.pop("extra", None)
    if isinstance(extra, dict):
        for key, count in sorted(extra.items()):
            if isinstance(count, int | float) and not isinstance(count, bool):
                text = _FIELDS.get(key, ("counter", f"{group} {key.replace('_', ' ')}"))[1]
                counter = CounterMetricFamily(f"mako_{group}_{key}", text, labels=names)
                counter.add_metric(values, count)
                yield counter
    for field, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | float | dict):
            continue
        if isinstance(value, dict) and not value:
            continue
        name = f"mako_{group}_{field}".rstrip("_")
        kind, text = _help(group, field) if field else ("gauge", f"{group.replace('_', ' ')}")
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(name, text, labels=[*names, "label"] if isinstance(value, dict) else names)
        if isinstance(value, dict):
            for key, item in sorted(value.items()):
                if isinstance(item, int | float):
                    family.add_metric([*values, str(key)], item)
        else:
            family.add_metric(values, value)
        yield family


class StatsCollector(Collector):
    """Reads stats objects at scrape time: ``{"store": lambda: store.stats, ...}``."""

    def __init__(
        self, groups: Mapping[str, Callable[[], Any]], labels: Mapping[str, str] | None = None
    ) -> None:
        self._groups = dict(groups)
        self._labels = dict(labels or {})

    def collect(self) -> Iterator[Metric]:
        for group, read in self._groups.items():
            yield from _families(group, read(), self._labels)


def prometheus_text(groups: Mapping[str, Any], *, labels: Mapping[str, str] | None = None) -> str:
    """The text exposition of every numeric field of each stats dataclass in ``groups``.

    Growing fields are counters (``_total``), the rest gauges, each with ``# HELP``; dict
    fields become one series per key (``label="..."``); plain numbers a gauge named by their
    key. ``labels`` (e.g. ``{"node": "nb-1"}``) are added to every series.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector({k: _constant(v) for k, v in groups.items()}, labels))
    return generate_latest(registry).decode()


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)


class Metrics:
    """The metrics of one node, in their own ``CollectorRegistry`` (never the global one).

    Thread-safe (prometheus-client); ``render()`` may run on an HTTP thread while the event
    loop records. (``mako-actors serve`` also turns off prometheus-client's ``*_created``
    series, process-wide, with ``prometheus_client.disable_created_metrics()``.)
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.interchanges = Counter(
            "mako_interchanges", "interchanges ingested, by status", ["status"], registry=r
        )
        self.messages = Counter(
            "mako_messages", "transactions of ingested interchanges, by outcome", ["outcome"], registry=r
        )
        self.command_seconds = Histogram(
            "mako_command_duration_seconds",
            "time from handing a command to its process until its commit was confirmed",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "mako_commit_batch_size",
            "commits written by one store.commit_many call (one group commit of the actor system)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "mako_outbox_delivery_latency_seconds",
            "time from an outbox message's being due (created, or its not_before) until delivered",
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.delivered = Counter(
            "mako_outbox_delivered", "outbox messages delivered, by type", ["message_type"], registry=r
        )
        self.delivery_retries = Counter(
            "mako_outbox_retries", "failed delivery attempts rescheduled", registry=r
        )
        self.outbox_held = Gauge(
            "mako_outbox_held",
            "due outbox messages held back at the last delivery run: an earlier message of their "
            "process waits for a retry (a process's messages go out in order)",
            registry=r,
        )
        self.redelivered = Counter(
            "mako_outbox_redelivered",
            "messages written over a file of the same name still in the outbox folder: delivered "
            "again after their acknowledgement was lost (a crash); the gateway must take each name once",
            registry=r,
        )
        self.acknowledgements = Counter(
            "mako_acknowledgements",
            "CONTRL/APERAK received on our interchanges, by type and result (rejected: the partner "
            "counts our message as not received; someone must correct and resend it)",
            ["message_type", "result"],
            registry=r,
        )
        self.dead_letters = Counter(
            "mako_dead_letters", "messages given up on by this node, by source", ["source"], registry=r
        )
        self.stale_readers = Counter(
            "mako_store_stale_readers_cleared",
            "LMDB reader slots of processes that died mid-read (a CLI or notebook beside the node), "
            "cleared; each had stopped the store reusing freed pages, so it grew with every write",
            registry=r,
        )
        self.outbox_pending = Gauge("mako_outbox_pending", "messages waiting in the outbox", registry=r)
        self.deadlines_open = Gauge("mako_deadlines_open", "open deadlines (Fristen)", registry=r)
        self.inbox_waiting = Gauge("mako_inbox_waiting", "files waiting in the inbox directory", registry=r)
        self.inbox_unreadable = Gauge(
            "mako_inbox_unreadable",
            "inbox files this node cannot read (e.g. permissions): skipped, and Fristen from their "
            "receipt on wait for them",
            registry=r,
        )
        self.dead_letters_stored = Gauge(
            "mako_dead_letters_stored", "dead letters in the store, requeued or not", registry=r
        )
        self.awaiting_operator = Gauge(
            "mako_processes_awaiting_operator",
            "processes waiting for an operator's decision, their answers not sent (NaN until the "
            "node has read the store's events once)",
            registry=r,
        )
        self.awaiting_operator.set(float("nan"))

    def watch(self, groups: Mapping[str, Callable[[], Any]], labels: Mapping[str, str] | None = None) -> None:
        """Also export these stats objects, read at each scrape (``{"store": lambda: store.stats}``)."""
        self.registry.register(StatsCollector(groups, labels))

    def observe_ingest(
        self,
        status: str,
        outcomes: Mapping[str, int],
        *,
        acknowledgements: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Count one ingested interchange and its transactions' outcomes.

        ``acknowledgements``: ``(message type, "accepted" | "rejected")`` of each CONTRL/APERAK
        in it on one of ours. (Its dead letters are counted from ``InboundPipeline.dead_letters_written``.)
        """
        self.interchanges.labels(status=status).inc()
        for message_type, result in acknowledgements:
            self.acknowledgements.labels(message_type=message_type, result=result).inc()
        for outcome, count in outcomes.items():
            self.messages.labels(outcome=outcome).inc(count)

    def observe_delivery(self, message_type: str, due_since: datetime, now: datetime) -> None:
        """Count one delivered message and how long it waited since it became due
        (``OutboxMessage.due_since``: a deliberately delayed message's delay is no latency)."""
        self.delivered.labels(message_type=message_type).inc()
        self.delivery_seconds.observe(max(0.0, (now - due_since).total_seconds()))

    def time_command(self) -> _Timer:
        """``with metrics.time_command(): await handle.execute...``: observe the command's latency."""
        return _Timer(self.command_seconds)

    def render(self) -> bytes:
        """The text exposition of everything in the registry."""
        return generate_latest(self.registry)


class _Timer:
    __slots__ = ("_histogram", "_start")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._histogram.observe(time.perf_counter() - self._start)
