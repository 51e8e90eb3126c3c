"""``replay --workers N``: the archive's partitions replayed on N OS processes, one store each.

Each worker reads the whole archive, splits it with the same deterministic ``Partitioner`` (a
light scan, and a full parse of each file it would cut and gets a piece of, to learn whether the
pipeline rejects it as a whole: on the benchmark archive ~72 % of the messages lie in bundles
cut on 2 workers, and a worker's share costs ~4 % more CPU than with the scan alone; each of
those bundles' pieces is parsed again by its replay) and replays only its own pieces into
``store_path/part-<k>-of-<n>``; no worker waits for another, because nothing in one partition
depends on another. The parent sums the reports and hashes the union of the decisions, which
must equal a one-worker run's ``decision_digest``; the dead letters and answers must be those of
one run too. Where each file goes (by tenant + MaLo, answers with their requests, a file under a
known interchange reference with a piece of that interchange, a file the pipeline rejects as a
whole never cut, escaped values read by the parser) is ``mako_actors._partition``'s rule.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mako_actors._partition import split_by_partition

if TYPE_CHECKING:
    from mako_actors.replay import ArchivedInterchange, ReplayReport, _Options

__all__ = ["replay_partitions"]


def part_path(store_path: Path, k: int, n: int) -> Path:
    """The store of partition ``k`` of ``n`` (``store_path`` itself for one: a plain run's layout)."""
    return store_path if n == 1 else store_path / f"part-{k}-of-{n}"


# Runs ``worker(*call)`` for every call and returns the results in order (e.g. on Ray).
Runner = Callable[[Callable[..., Any], list[tuple[Any, ...]]], Awaitable[list[Any]]]


async def replay_partitions(
    items: list[ArchivedInterchange],
    store_path: Path,
    options: _Options,
    n: int,
    runner: Runner | None = None,
) -> ReplayReport:
    """Replay ``items`` on ``n`` worker processes (``runner``: elsewhere); the summed report (module doc)."""
    from mako_actors.replay import ReplayReport, decision_digest

    started = time.perf_counter()
    sources = [(str(item.path), item.received_at) for item in items]
    if items:  # Fristen due by the archive's last receipt fire in every partition, as in one run
        last = items[-1].received_at
        options = replace(options, until=max(options.until, last) if options.until else last)
    calls = [(sources, str(part_path(store_path, k, n)), options, k, n, gc.get_threshold()) for k in range(n)]
    if runner is not None:
        results = await runner(_worker, calls)
    else:
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = await asyncio.gather(*(loop.run_in_executor(pool, _worker, *call) for call in calls))
    total = ReplayReport(files=len(items), mode=f"{'sequential' if options.sequential else 'pipelined'} x{n}")
    if items:
        total.first, total.last = items[0].received_at, items[-1].received_at
    decisions: dict[str, list[list[Any]]] = {}
    for report, part in results:
        for name in (
            "messages", "events_appended", "outbox_enqueued", "processes_created", "deadlines_fired",
            "dead_letters", "outbox",
        ):  # fmt: skip
            setattr(total, name, getattr(total, name) + getattr(report, name))
        total.statuses += report.statuses
        total.outcomes += report.outcomes
        total.errors += report.errors
        total.rejected += report.rejected
        total.failures += report.failures
        decisions |= part
    total.statuses, total.outcomes = Counter(total.statuses), Counter(total.outcomes)
    total.duration_s = time.perf_counter() - started
    total.decision_digest = decision_digest(decisions)
    return total


def _worker(
    sources: list[tuple[str, datetime]],
    store: str,
    options: _Options,
    k: int,
    n: int,
    parent_gc: tuple[int, int, int],
) -> tuple[ReplayReport, dict[str, list[list[Any]]]]:
    import gc
    import logging

    from mako_actors.replay import ArchivedInterchange, ReplayReport, _replay_items

    logging.getLogger("mako_actors").setLevel(logging.ERROR)
    gc.set_threshold(*parent_gc)
    unreadable = ReplayReport()
    read: list[tuple[Path, datetime, bytes]] = []
    for name, at in sources:
        try:
            read.append((Path(name), at, Path(name).read_bytes()))
        except OSError as exc:
            if k == 0:
                unreadable.failures.append(f"{Path(name).name}: cannot read: {exc.strerror or exc}")
    pieces = split_by_partition(n, [(path.name, raw, at) for path, at, raw in read], options.tenants, k)
    mine = [
        ArchivedInterchange(path, at, raw=split[k])
        for (path, at, _), split in zip(read, pieces, strict=True)
        if k in split
    ]
    report, decisions = asyncio.run(_replay_items(mine, Path(store), options, None))
    report.failures += unreadable.failures
    return report, decisions
