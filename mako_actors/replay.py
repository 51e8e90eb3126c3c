"""Batch re-processing: replay an archive of interchanges through the workflows, in historic order.

``replay_directory(directory, store_path, tenants=...)`` reads every interchange file of a
directory, orders them by their receipt instant, and ingests them one after the other through
``InboundPipeline`` onto a ``LocalActorSystem`` (group commit, state in memory), while a
``VirtualClock`` follows the archive: before each interchange, every deadline due by its receipt
instant fires at its own historic time. Re-running over the same store is idempotent (the
receipt streams recognise every interchange) and reports them as duplicates.

The receipt instant comes from the archive, never from the bytes (DOMAIN: UNB S004 is the
sender's preparation time, not the ÜT): from ``manifest.csv`` in the directory (``file,
received_at`` with ISO 8601 instants) when it exists, else from each file's modification time.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mako_actors.actors import LocalActorSystem
from mako_actors.errors import InvalidArgument
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.inbound import InboundPipeline, MasterData, StaticMasterData, Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, identity_of
from stores.lmdb import Durability, LmdbStore

EDIFACT_SUFFIXES = (".edi", ".edifact", ".txt")
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class ArchivedInterchange:
    """One file of the archive and the instant it was received."""

    path: Path
    received_at: datetime


@dataclass
class ReplayReport:
    """What a replay did: interchanges by status, transactions by outcome, Fristen fired."""

    interchanges: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    deadlines_fired: int = 0
    outbox: int = 0
    dead_letters: int = 0
    first: datetime | None = None
    last: datetime | None = None
    errors: list[str] = field(default_factory=list)

    def to_plain(self) -> dict[str, Any]:
        return {
            "interchanges": self.interchanges,
            "statuses": dict(self.statuses),
            "outcomes": dict(self.outcomes),
            "deadlines_fired": self.deadlines_fired,
            "outbox": self.outbox,
            "dead_letters": self.dead_letters,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "errors": self.errors[:100],
        }


def load_master_data(path: Path) -> StaticMasterData:
    """NB master data from JSON: ``{"<MaLo>": {"current": MP-ID, "future": MP-ID, "future_start": ISO}}``.

    Raises ``InvalidArgument`` naming the file and the entry that does not fit.
    """
    try:
        raw = json.loads(path.read_text())
        return StaticMasterData(
            {
                malo: Suppliers(
                    current=entry.get("current"),
                    future=entry.get("future"),
                    future_start=datetime.fromisoformat(entry["future_start"])
                    if entry.get("future_start")
                    else None,
                )
                for malo, entry in raw.items()
            }
        )
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
        raise InvalidArgument(f"master data {path}: {exc}") from None


def archive(directory: Path) -> list[ArchivedInterchange]:
    """The interchanges of ``directory`` in receipt order (ties by file name).

    Raises ``InvalidArgument`` for a missing directory or a manifest naming an absent file or
    a naive/garbled instant.
    """
    if not directory.is_dir():
        raise InvalidArgument(f"replay: {directory} is not a directory")
    manifest = directory / "manifest.csv"
    items: list[ArchivedInterchange] = []
    if manifest.exists():
        with manifest.open(newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                path = directory / (row.get("file") or "")
                if not path.is_file():
                    raise InvalidArgument(f"{manifest}:{line}: no file {row.get('file')!r}")
                items.append(ArchivedInterchange(path, _instant(row.get("received_at"), manifest, line)))
    else:
        for path in directory.iterdir():
            if path.is_file() and path.suffix.lower() in EDIFACT_SUFFIXES:
                items.append(ArchivedInterchange(path, datetime.fromtimestamp(path.stat().st_mtime, UTC)))
    return sorted(items, key=lambda item: (item.received_at, item.path.name))


def _instant(text: str | None, manifest: Path, line: int) -> datetime:
    try:
        instant = datetime.fromisoformat(text or "")
    except ValueError:
        raise InvalidArgument(f"{manifest}:{line}: received_at {text!r} is not ISO 8601") from None
    if instant.tzinfo is None:
        raise InvalidArgument(f"{manifest}:{line}: received_at {text!r} has no time zone")
    return instant.astimezone(UTC)


async def replay_directory(
    directory: Path,
    store_path: Path,
    *,
    tenants: Iterable[str],
    master_data: MasterData | None = None,
    until: datetime | None = None,
    durability: Durability = Durability.NO_SYNC,
    progress: Progress | None = None,
) -> ReplayReport:
    """Replay every interchange of ``directory`` into the LMDB store at ``store_path``.

    ``until`` moves the virtual clock on after the last interchange (Fristen due by then fire).
    The default durability is ``NO_SYNC`` (a replay can be re-run; the store is synced on
    close); pass ``FSYNC`` to make every batch durable on its own.
    """
    items = archive(directory)
    report = ReplayReport(interchanges=len(items))
    if items:
        report.first, report.last = items[0].received_at, items[-1].received_at
    clock = VirtualClock(items[0].received_at if items else datetime.now(UTC))
    async with (
        LmdbStore(store_path, durability=durability) as store,
        LocalActorSystem(store, [GpkeNbWorkflow], clock=clock, idle_timeout=None) as system,
    ):
        pipeline = InboundPipeline(store, system, tenants=tenants, master_data=master_data, clock=clock)
        scheduler = DeadlineScheduler(
            store, lambda d: system.resume(identity_of(d)).execute_timeout(d), clock
        )
        for done, item in enumerate(items, start=1):
            report.deadlines_fired += await scheduler.advance_to(clock, item.received_at)
            result = await pipeline.ingest(item.path.read_bytes(), item.received_at, source=item.path.name)
            report.statuses[result.status] += 1
            report.outcomes.update(m.outcome for m in result.messages)
            if result.error:
                report.errors.append(f"{item.path.name}: {result.error}")
            if progress is not None:
                progress(done, len(items), item.path.name)
        if until is not None:
            report.deadlines_fired += await scheduler.advance_to(clock, until)
        await system.drain()
        report.outbox = await store.outbox_count()
        report.dead_letters = len(await store.dead_letters(limit=1_000_000))
    return report
