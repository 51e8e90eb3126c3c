"""The ``replay`` and ``generate-archive`` subcommands of ``mako-actors``.

``replay`` exit codes: 0 the replay completed (rejected interchanges are results, listed in the
report), 1 with ``--strict`` when anything was rejected or dead-lettered, 2 an operational
failure (bad arguments, an unreadable archive or store; the message names it, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mako_actors.serve_config import MASTER_DATA_HELP

if TYPE_CHECKING:
    from mako_actors.compare import SentArchive

__all__ = ["add_replay_commands"]


def add_replay_commands(sub: Any) -> None:
    """Register ``replay`` and ``generate-archive`` on the CLI's subparsers."""
    replay = sub.add_parser(
        "replay",
        help="re-process a directory of archived interchanges in receipt order",
        description=(
            "Ingest every interchange of DIRECTORY in receipt order (manifest.csv with file,received_at; "
            "else file modification times) into the LMDB store, firing Fristen at their historic times. "
            "Re-runs change nothing. --workers N splits the archive by MaLo (each in one) into N stores "
            "(STORE/part-<k>-of-<N>), on N local processes or, with --ray, N Ray workers on this "
            "machine's node (the archive and the store must be on its disk); a later archive continues "
            "them with the same N. Exit 0 completed, 1 with "
            "--strict when anything was rejected, 2 operational failure (a failed worker included)."
        ),
    )
    replay.add_argument("directory", type=Path, help="the archive: interchange files (+ manifest.csv)")
    replay.add_argument("--store", type=Path, required=True, help="LMDB store directory (created if missing)")
    replay.add_argument("--tenant", action="append", required=True, help="our MP-ID (repeatable)")
    replay.add_argument(
        "--master-data",
        type=Path,
        help=MASTER_DATA_HELP + " (default: DIRECTORY/master.json if there)",
    )
    replay.add_argument("--until", help="ISO 8601 instant: fire Fristen due by then after the last file")
    replay.add_argument("--fsync", action="store_true", help="fsync every batch (default: sync on close)")
    replay.add_argument("--sequential", action="store_true", help="one interchange at a time (reference run)")
    replay.add_argument("--window", type=int, default=512, help="items in flight when pipelined (512)")
    replay.add_argument(
        "--workers", type=int, default=1, help="OS processes (or Ray workers), one store per partition"
    )
    replay.add_argument(
        "--ray",
        action="store_true",
        help=(
            "run the --workers as Ray tasks (1 CPU each), pinned to this machine's Ray node: DIRECTORY "
            "and --store are read and written there, so run the replay on a node of the cluster"
        ),
    )
    replay.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --ray: the cluster to join (auto, HOST:PORT); default: start a local Ray for the run",
    )
    replay.add_argument("--report", type=Path, help="write the report as JSON to this file")
    replay.add_argument("--strict", action="store_true", help="exit 1 when anything was rejected")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.add_argument(
        "--compare-outbound", type=Path, metavar="DIR", help="what was actually sent: report the differences"
    )
    replay.add_argument("--compare-csv", type=Path, metavar="FILE", help="write the differences as CSV")
    replay.add_argument(
        "--message-types",
        metavar="TYPES",
        help="replay only interchanges with a message of these types, comma-separated (e.g. "
        "UTILMD,CONTRL,APERAK: what the GPKE workflows read); the others in the archive (MSCONS, "
        "INVOIC, ...) are skipped and counted by type, not answered with a negative APERAK "
        "(default: every interchange)",
    )
    replay.add_argument(
        "--compare-types",
        default="UTILMD,APERAK,CONTRL",
        metavar="TYPES",
        help="message types to compare, comma-separated (default: UTILMD,APERAK,CONTRL)",
    )
    replay.add_argument(
        "--compare-tolerance",
        type=float,
        default=60.0,
        metavar="MINUTES",
        help="a message sent further than this from the replay's is 'other Frist' (default: 60)",
    )
    replay.set_defaults(handler=_replay)
    generate = sub.add_parser(
        "generate-archive",
        help="write a synthetic archive of inbound LFW24 traffic (for replays and benchmarks)",
        description="Write DIR/*.edi, DIR/manifest.csv (receipt instants) and DIR/master.json.",
    )
    generate.add_argument("directory", type=Path, help="where to write the archive (created if missing)")
    generate.add_argument("--days", type=int, default=5)
    generate.add_argument("--processes", type=int, default=1000)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--defects", type=float, default=0.02, help="share of broken files/messages")
    generate.add_argument("--nb", default=None, help="the grid operator's MP-ID (recipient)")
    generate.add_argument(
        "--start", type=_day, default=None,
        help=(
            "first day of the traffic, YYYY-MM-DD (default 2025-11-03): a later month, with another "
            "--seed, continues a store"
        ),
    )  # fmt: skip
    generate.set_defaults(handler=_generate)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day YYYY-MM-DD") from None


def _generate(args: argparse.Namespace) -> int:
    from mako_actors.archive import DEFAULT_NB, ArchiveSpec, generate_archive
    from mako_actors.errors import EngineError

    try:
        spec = ArchiveSpec(
            days=args.days,
            processes=args.processes,
            seed=args.seed,
            defects=args.defects,
            nb=args.nb or DEFAULT_NB,
            **({"start": args.start} if args.start is not None else {}),
        )
        summary = generate_archive(args.directory, spec)
    except (EngineError, OSError) as exc:
        print(f"mako-actors generate-archive: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_plain(), indent=2))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from mako_actors.errors import InvalidArgument
    from mako_actors.replay import check_replay_arguments, parse_message_types

    # Before a worker or the progress bar starts: a bad tenant, count or directory, or a store
    # of another layout, is refused with nothing written and nothing else printed.
    try:
        check_replay_arguments(args.directory, args.store, args.tenant, args.window, args.workers)
        types = parse_message_types(args.message_types) if args.message_types is not None else None
        _check_outputs(args)  # a report lost after hours of replay would leave only duplicates
    except InvalidArgument as exc:
        print(f"mako-actors replay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.ray:
        from mako_actors._workers import start_workers

        start_workers()  # the workers' imports run while this process sets up (_workers doc)
    import asyncio
    import gc

    import lmdb
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress

    from mako_actors.errors import EngineError
    from mako_actors.replay import load_master_data, replay_directory, skipped_interchanges
    from stores.lmdb import Durability

    # A batch job with millions of short-lived objects and a window of parsed interchanges
    # alive for seconds: every young collection walks that window again. The default threshold
    # (700) costs 5-10 % here; 50,000 still ~13 % of a run, 200,000 ~5 % for a few MB more
    # (benchmarks/README.md). The library leaves the collector to apps; this process is ours.
    gc.set_threshold(200_000)
    console = Console(stderr=True, highlight=False)
    try:
        until = datetime.fromisoformat(args.until) if args.until else None
        if until is not None and until.tzinfo is None:
            raise ValueError(f"--until {args.until!r} has no time zone")
        master_path = args.master_data or args.directory / "master.json"
        master = load_master_data(master_path) if args.master_data or master_path.is_file() else None
        if args.store.exists() and not args.store.is_dir():
            raise ValueError(f"--store {args.store} is not a directory")
        if args.ray_address is not None and not args.ray:
            raise ValueError("--ray-address needs --ray")
        # What was sent is read before the replay, which may take hours: a folder that cannot be
        # read fails now, with nothing written.
        sent = _read_sent(args)
        earlier = _fired_before(args) if sent is not None else None
        with Progress(console=console, disable=args.json) as bar:
            task = bar.add_task("replaying", total=None)

            def step(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=escape(name[:40]))

            report = asyncio.run(
                replay_directory(
                    args.directory,
                    args.store,
                    tenants=args.tenant,
                    master_data=master,
                    until=until,
                    durability=Durability.FSYNC if args.fsync else Durability.NO_SYNC,
                    progress=step,
                    sequential=args.sequential,
                    window=args.window,
                    workers=args.workers,
                    ray=args.ray,
                    ray_address=args.ray_address,
                    message_types=types,
                )
            )
        plain = report.to_plain()
        # What earlier runs into this store skipped too: their messages are in its outbox.
        period = None
        if report.first is not None and report.last is not None:
            period = (report.first, max(report.last, until) if until is not None else report.last)
        # (The run's clock began where the store's earlier runs had fired Fristen up to.)
        differences = _compare(args, sent, plain, skipped_interchanges(args.store), period, earlier)
        if args.report is not None:
            args.report.write_text(json.dumps(plain, indent=2, ensure_ascii=False) + "\n")
    except (EngineError, ValueError, OSError, lmdb.Error) as exc:
        console.print(f"mako-actors replay: {type(exc).__name__}: {exc}", markup=False, soft_wrap=True)
        return 2
    if report.not_in_manifest:  # also with --json: stdout is for machines, this is for the person
        names = ", ".join(report.not_in_manifest[:10]) + (", ..." if len(report.not_in_manifest) > 10 else "")
        console.print(
            f"mako-actors replay: warning: {len(report.not_in_manifest)} interchange file(s) of "
            f"{args.directory} not in manifest.csv, not replayed: {names}",
            markup=False, soft_wrap=True, highlight=False,
        )  # fmt: skip
    if report.calendar_changed:  # Fristen of the earlier runs and this one on different calendars
        console.print(
            f"mako-actors replay: warning: Werktag calendar changed since the store's earlier runs "
            f"({report.calendar_changed}): Fristen they left pending fire as they computed them",
            markup=False, soft_wrap=True, highlight=False,
        )  # fmt: skip
    if report.statuses.get("duplicate") and not report.events_appended:
        # A re-run with other master data or settings decides nothing again: a "none" of the
        # comparison, an unchanged digest, would say the new settings change nothing.
        console.print(
            f"mako-actors replay: note: nothing was decided again: {report.statuses['duplicate']} "
            "interchange(s) were received before in this store (to decide the archive under these "
            "settings, replay it into a new store)",
            markup=False, soft_wrap=True, highlight=False,
        )  # fmt: skip
    if report.awaiting_operator:  # their answers are not sent: say so, also with --json
        console.print(
            f"mako-actors replay: {report.awaiting_operator} process(es) await an operator's decision, "
            "their answers not sent (processes list --status awaiting_operator)",
            markup=False, soft_wrap=True, highlight=False,
        )  # fmt: skip
    if args.json:
        print(json.dumps(plain, indent=2, ensure_ascii=False))
    else:
        for key in (
            "files", "messages", "statuses", "outcomes", "events_appended", "outbox_enqueued",
            "processes_created", "deadlines_fired", "dead_letters", "awaiting_operator", "not_in_manifest",
            "skipped_by_type", "duration_s", "messages_per_s", "decision_digest",
        ):  # fmt: skip
            print(f"{key:>17}: {plain[key]}")
        print(f"{'period':>17}: {plain['first']} .. {plain['last']}")
        for error in report.errors[:20]:
            print(f"  {error}")
        if differences is not None:
            compared = plain["compare_outbound"]
            print(f"outbound differences: {compared['by_kind'] or 'none'}")
            for name in compared["unreadable"][:20]:
                print(f"  not compared: {name}")
            if len(compared["unreadable"]) > 20:
                print(f"  ... {len(compared['unreadable']) - 20} more not compared (--json)")
            outside = compared["outside_period"]
            if any(outside.values()):
                print(
                    f"  outside the replay's period, not compared: {outside['sent']} sent, "
                    f"{outside['replay']} of the store's earlier runs"
                )
            for d in differences[:50]:
                # (a process by the last 8 characters of its id, as ``processes show`` takes it)
                print(
                    f"  {d.kind:<17} {d.pid:<11} {d.process[-8:] or '-':<8} {d.key:<40} "
                    f"sent: {d.sent or '-':<30} replay: {d.replay or '-'}"
                )
            if len(differences) > 50:
                print(f"  ... {len(differences) - 50} more (--json, --compare-csv)")
    if report.failures:
        return 2
    return 1 if args.strict and (report.rejected or report.outcomes.get("dead_letter", 0)) else 0


def _check_outputs(args: argparse.Namespace) -> None:
    """``InvalidArgument`` if ``--report`` or ``--compare-csv`` cannot be written; writes nothing.

    Checked before the replay: found after it, the store holds the run and a re-run reports
    everything as a duplicate. A file that exists must be a writable file, else its directory
    must exist and be writable.
    """
    from mako_actors.errors import InvalidArgument

    if args.compare_csv is not None and args.compare_outbound is None:
        raise InvalidArgument("--compare-csv needs --compare-outbound")
    for flag, path in (("--report", args.report), ("--compare-csv", args.compare_csv)):
        if path is None:
            continue
        if path.is_dir():
            raise InvalidArgument(f"{flag} {path} is a directory")
        if path.exists():
            if not os.access(path, os.W_OK):
                raise InvalidArgument(f"{flag} {path} is not writable")
            continue
        parent = path.parent
        if not parent.is_dir():
            raise InvalidArgument(f"{flag} {path}: no directory {parent}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InvalidArgument(f"{flag} {path}: directory {parent} is not writable")


def _check_compare(args: argparse.Namespace) -> list[str]:
    """The ``--compare-types``; ``ValueError`` for a bad one or a ``--compare-outbound`` not a directory."""
    from mako_actors.compare import COMPARED_TYPES

    types = [t.strip().upper() for t in args.compare_types.split(",") if t.strip()]
    if not types or not set(types) <= set(COMPARED_TYPES):
        raise ValueError(f"--compare-types {args.compare_types!r}: some of {','.join(COMPARED_TYPES)}")
    if not 0 <= args.compare_tolerance < 10**6:
        raise ValueError(f"--compare-tolerance {args.compare_tolerance}: minutes, at least 0")
    if args.compare_outbound is not None and not args.compare_outbound.is_dir():
        raise ValueError(f"--compare-outbound {args.compare_outbound} is not a directory")
    return types


def _read_sent(args: argparse.Namespace) -> SentArchive | None:
    """``--compare-outbound``'s folder as ``compare.read_sent`` reads it (None without it)."""
    types = _check_compare(args)
    if args.compare_outbound is None:
        return None
    from mako_actors.compare import read_sent

    return read_sent(args.compare_outbound, types, senders=args.tenant)


def _fired_before(args: argparse.Namespace) -> datetime | None:
    """The instant up to which the store's earlier runs fired every Frist (the earliest of its
    parts'); None for a new store. Read before the replay moves it on."""
    import asyncio

    from mako_actors._workers import part_path
    from mako_actors.replay import _fired_until
    from stores.lmdb import LmdbStore

    async def read(path: Path) -> datetime | None:
        store = LmdbStore(path)
        async with store:
            return await _fired_until(store)

    found: list[datetime] = []
    for k in range(args.workers):
        path = part_path(args.store, k, args.workers)
        at = asyncio.run(read(path)) if (path / "data.mdb").is_file() else None
        if at is not None:
            found.append(at)
    return min(found) if found else None


def _compare(
    args: argparse.Namespace,
    sent: SentArchive | None,
    plain: dict[str, Any],
    skipped: list[tuple[str, str]],
    period: tuple[datetime, datetime] | None,
    since: datetime | None,
) -> list[Any] | None:
    """``--compare-outbound``: the differences, also put into ``plain`` and the CSV file; what
    was sent about the ``skipped`` interchanges (``--message-types``) is not compared, nor what
    lies outside the replay's ``period`` on either side (a continued store's earlier runs)."""
    if sent is None:
        return None
    import asyncio
    from collections import Counter

    from mako_actors._workers import part_path
    from mako_actors.compare import compare_outbound, differences_csv

    types = _check_compare(args)
    stores = [part_path(args.store, k, args.workers) for k in range(args.workers)]
    unreadable: list[str] = []
    outside: dict[str, int] = {}
    differences = asyncio.run(
        compare_outbound(
            sent,
            stores,
            tolerance=timedelta(minutes=args.compare_tolerance),
            types=types,
            unreadable=unreadable,
            skipped=skipped,
            period=period,
            outside=outside,
            since=since,
        )
    )
    plain["compare_outbound"] = {
        "types": types,
        "tolerance_minutes": args.compare_tolerance,
        "unreadable": unreadable[:1000],
        "outside_period": outside,
        "differences": len(differences),
        "by_kind": dict(sorted(Counter(d.kind for d in differences).items())),
        "rows": [d.to_plain() for d in differences[:10_000]],
        "rows_truncated": len(differences) > 10_000,
    }
    if args.compare_csv is not None:
        args.compare_csv.write_text(differences_csv(differences))
    return differences
