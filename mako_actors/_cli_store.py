"""``mako-actors processes|outbox|deadlines|dead-letters|stats``: look inside a store.

Every command takes ``--store PATH`` (the LMDB directory) and prints a table, or JSON with
``--json``. ``dead-letters list`` and ``stats`` also read a partitioned store: ``--store`` a
node's data directory (its ``p0007`` partitions), a saved partition map (every node's) or the
``--store`` of ``replay --workers n`` (its ``part-<k>-of-<n>`` stores); the other commands take
one partition's directory. Commands that only read open the store
read-only, so they are safe next to a running node (``outbox render DIR`` too: it writes the
messages waiting to leave as EDIFACT files into DIR, not into the store); ``outbox retry`` and
``dead-letters requeue`` write one transaction each. Ids are accepted as printed: a unique end of a
process or message id is enough (tables print the last 8 characters: fresh ids begin with their
time stamp, so ids made in the same minute share their first 8), and so is a unique beginning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline
from mako_actors.errors import EngineError, InvalidArgument, NotFound, StoreError
from mako_actors.outbox import OutboxMessage

T = TypeVar("T")
Run = Callable[[Any, argparse.Namespace], Awaitable[int]]
PartitionedRun = Callable[[list[Path], argparse.Namespace], Awaitable[int]]

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the store inspection subcommands to the CLI's subparsers object."""
    processes = sub.add_parser("processes", help="list processes, show one, or its timeline")
    psub = processes.add_subparsers(
        dest="processes_command", required=True, help="action",
        metavar="{list,show,timeline,deem-lfa-agreement,reject-anmeldung,form-tranche,reject-tranche-request}",
    )  # fmt: skip
    p = _leaf(psub, "list", "processes of the store, oldest first", _processes_list)
    p.add_argument("--tenant", help="our MP-ID (13 digits) or a tenant id prefix")
    p.add_argument("--workflow", help="workflow name, e.g. gpke-nb or mako-inbox")
    p.add_argument("--status", help="status after the last event, e.g. awaiting_lfa, confirmed")
    p.add_argument("--malo", help="MaLo-ID (11 digits)")
    _limit(p)
    p.add_argument(
        "--rejected", action="store_true",
        help="only processes a partner rejected a message of (CONTRL 4 / APERAK 313): "
        "that message counts as not received, whatever the status says",
    )  # fmt: skip
    p = _leaf(psub, "show", "one process: state, open deadlines, messages waiting to leave", _processes_show)
    p.add_argument("id", help=_PROCESS_ID)
    p = _leaf(psub, "timeline", "a process's events: time, type, causing interchange", _processes_timeline)
    p.add_argument("id", help=_PROCESS_ID)
    p = _decision(
        psub, "deem-lfa-agreement",
        "an operator's decision for a gpke-nb process in status awaiting_operator (the LFA rejected "
        "our 55010, 09:00 passed): go on as if the LFA agreed; 55002/55078 and 55037 are enqueued",
        _processes_deem_lfa_agreement,
    )  # fmt: skip
    p.add_argument("--reason", required=True, help="why, kept in the process's events for audit")
    p = _decision(
        psub, "reject-anmeldung",
        "the other operator's decision for a gpke-nb process in status awaiting_operator: reject "
        "the Anmeldung, 55003/55080 with E_0623 A99 'Sonstiges' and --text in FTX+ACB (A99 is "
        "usable until 01.04.2027 under FV2610)",
        _processes_reject_anmeldung,
    )  # fmt: skip
    p.add_argument(
        "--text", required=True,
        help="why, sent to the LFN in FTX+ACB (at most 2,560 characters, ISO 8859-1)",
    )  # fmt: skip
    p = _decision(
        psub, "form-tranche",
        "an operator's decision for a Geschäftsvorfall 3 (55077 ZW2) awaiting its Tranche: the NB "
        "formed it; the 55078 (E_0623 A56, A55 with --shares-missing) names the MaLo, the Tranche "
        "and its share. Add the Tranche to the master data (tranche_of) for later Anmeldungen",
        _processes_form_tranche,
    )  # fmt: skip
    p.add_argument("--tranche", required=True, help="the new Tranche's ID (a MaLo-ID's format)")
    p.add_argument(
        "--percent",
        help="its share of the MaLo in %% (> 0, < 100, two decimals; default: the share asked for)",
    )
    p.add_argument(
        "--shares-missing", action="store_true",
        help="a share stays in the NB's Bilanzkreis of a direktvermarktungspflichtige MaLo (A55)",
    )  # fmt: skip
    p.add_argument("--reason", required=True, help="kept in the process's events for audit")
    p = _decision(
        psub, "reject-tranche-request",
        "the other decision for a Geschäftsvorfall 3 awaiting its Tranche: the share asked for is "
        "not free at the MaLo, 55080 with E_0623 A54",
        _processes_reject_tranche_request,
    )  # fmt: skip
    p.add_argument("--reason", required=True, help="kept in the process's events for audit")

    outbox = sub.add_parser("outbox", help="messages waiting to leave; retry one now")
    osub = outbox.add_subparsers(
        dest="outbox_command", required=True, help="action", metavar="{list,retry,render}"
    )
    p = _leaf(osub, "list", "outbox messages, earliest next attempt first", _outbox_list)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--due", action="store_true", help="only messages due now (or at --at)")
    which.add_argument("--dead", action="store_true", help="dead-lettered outbox messages instead")
    p.add_argument("--at", help="ISO 8601 instant to use instead of now")
    _limit(p)
    p = _leaf(osub, "retry", "make one message due now (its attempts are kept)", _outbox_retry, write=True)
    p.add_argument("id", help="message id as printed by 'outbox list' (its unique end or beginning)")
    p = _leaf(
        osub, "render",
        "write every message waiting to leave as an EDIFACT file into DIR, as serve's outbox folder "
        "gets them (e.g. a replay's answers, for another replay's --compare-outbound); the store is "
        "only read",
        _outbox_render,
    )  # fmt: skip
    p.add_argument("directory", type=Path, help="folder to write into (created if missing)")

    deadlines = sub.add_parser("deadlines", help="open deadlines (Fristen) of every process")
    dsub = deadlines.add_subparsers(
        dest="deadlines_command", required=True, help="action", metavar="{list}"
    )
    p = _leaf(dsub, "list", "open deadlines, earliest first", _deadlines_list)
    p.add_argument("--overdue", action="store_true", help="only those due now (or at --at)")
    p.add_argument("--at", help="ISO 8601 instant to use instead of now")
    _limit(p)

    dead = sub.add_parser("dead-letters", help="what was given up on; put one back")
    xsub = dead.add_subparsers(
        dest="dead_letters_command", required=True, help="action", metavar="{list,requeue}"
    )
    p = _leaf(
        xsub,
        "list",
        "dead letters, oldest first",
        _dead_letters_list,
        partitioned=_dead_letters_list_partitioned,
    )
    p.add_argument("--kind", help="only this kind: outbox, deadline, inbound, inbound-conflict, ...")
    _limit(p)
    p = _leaf(
        xsub,
        "requeue",
        "put a dead outbox message back in the outbox, or a dead deadline back in the schedule",
        _dead_letters_requeue,
        write=True,
    )
    p.add_argument("position", type=_position, help="the dead letter's number ('#' in 'dead-letters list')")

    _leaf(
        sub,
        "stats",
        "entries per table, store size and map usage",
        _stats,
        help_text="store statistics",
        partitioned=_stats_partitioned,
    )


TABLE_ROWS = 1_000  # a table's rows unless --limit says otherwise: more than anyone reads


def _limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=_count, metavar="N",
        help=f"show at most N, first ones first (default: {TABLE_ROWS:,} in a table, every one with "
        "--json; 0: every one); the title always says how many there are",
    )  # fmt: skip


def _count(text: str) -> int:
    """A ``--limit`` for argparse: 0 or more; else a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (0 shows every one)")
    return value


def _rows_wanted(args: argparse.Namespace) -> int | None:
    """How many rows ``--limit`` (or its default) asks for; None: every one."""
    limit: int | None = args.limit
    if limit is None:
        limit = 0 if args.json else TABLE_ROWS
    return limit or None


def _shown(count: int, total: int, noun: str) -> str:
    """A table's title: how many there are, and how many the table shows if not all."""
    if count >= total:
        return f"{total} {noun}"
    return f"{total} {noun}, the first {count} shown (--limit 0 shows every one)"


def _position(text: str) -> int:
    """A dead letter's number for argparse: 1 to 2**64 - 1 (its key is 8 bytes); else a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"{value} is no dead letter's number ('#' in 'dead-letters list')")
    return value


def _leaf(
    sub: Any,
    name: str,
    description: str,
    run: Run,
    *,
    write: bool = False,
    help_text: str | None = None,
    partitioned: PartitionedRun | None = None,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text or description, description=description
    )
    where = "the LMDB store directory"
    if partitioned is not None:
        where += (
            ", or a partitioned store: a node's data directory, a saved partition map or a "
            "'replay --workers N' store"
        )
    parser.add_argument("--store", type=Path, required=True, help=where)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    prog = parser.prog
    parser.set_defaults(handler=lambda args: _run(args, run, write, partitioned, prog))
    return parser


def _decision(sub: Any, name: str, description: str, run: Run) -> argparse.ArgumentParser:
    """A leaf for an operator's decision on one process (it writes): its id and ``--at``."""
    parser = _leaf(sub, name, description, run, write=True)
    parser.add_argument("id", help=_PROCESS_ID)
    parser.add_argument("--at", help="ISO 8601 instant the answers are dated (default: now)")
    return parser


_PROCESS_ID = "process id as printed by 'processes list' (its unique end or beginning)"


def _run(
    args: argparse.Namespace, run: Run, write: bool, partitioned: PartitionedRun | None = None, prog: str = ""
) -> int:
    from mako_actors._placement import missing_parts, unfinished_replay
    from mako_actors._store_views import missing_partitions, partition_dirs, partition_roots
    from stores.lmdb import LmdbStore
    from stores.lmdb_readonly import ReadOnlyLmdbStore

    async def go() -> int:
        roots = partition_roots(args.store)
        if roots is not None:
            if partitioned is None:
                found = partition_dirs(roots, args.store)
                example = found[0][1] if found else roots[0] / "p0000"
                raise InvalidArgument(
                    f"{args.store} is a partitioned store; {prog} works on one partition: "
                    f"give --store one of its partition directories, e.g. {example}"
                )
            for root in roots:
                lost = missing_parts(root)
                if lost:  # what is shown covers the other parts only: say so, every time
                    print(
                        f"mako-actors: warning: {root} lacks {', '.join(lost)}; "
                        "what follows covers the other parts only",
                        file=sys.stderr,
                    )
            absent = missing_partitions(args.store, roots)
            if absent:  # a node's directory offline or unmounted: never a silent half
                print(
                    f"mako-actors: warning: partition(s) {', '.join(absent)} not found; "
                    "what follows covers the other partitions only",
                    file=sys.stderr,
                )
            _warn_unfinished([d for _, d in partition_dirs(roots, args.store) if unfinished_replay(d)])
            return await partitioned(roots, args)
        _warn_unfinished([args.store] if unfinished_replay(args.store) else [])
        if write and not (args.store / "data.mdb").is_file():
            # The read-only store's error (exit 2, usage/IO), never a fresh empty store.
            raise StoreError(f"no LMDB store at {args.store} (data.mdb missing)")
        if write:
            _check_not_replaying(args.store, prog)
        store: Any = LmdbStore(args.store) if write else ReadOnlyLmdbStore(args.store)
        try:
            return await run(store, args)
        finally:
            await store.aclose()

    try:
        return asyncio.run(go())
    except (NotFound, InvalidArgument) as exc:
        print(f"mako-actors: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"mako-actors: {exc}", file=sys.stderr)
        return 2


def _check_not_replaying(store: Path, prog: str) -> None:
    """``StoreError`` (exit 2) if a replay or an import writes ``store`` now (``_store_lock``): a
    replay reads its Fristen and receipts once when it starts, so what is written beside it
    would be missed or decided twice. Beside a serving node a decision is what serve expects."""
    from mako_actors._store_lock import STORE_LOCK, holder

    by = holder(store / STORE_LOCK)
    if by is not None and not by.startswith("mako-actors serve"):
        raise StoreError(f"{prog}: the store {store} is in use ({by}); write to it once that has ended")


def _warn_unfinished(stores: list[Path]) -> None:
    """Say on stderr, every time, that what follows shows stores a replay left unfinished."""
    from mako_actors._placement import unfinished_note

    for store in stores:
        print(
            f"mako-actors: warning: {store} was left by a replay that did not end, or one is still "
            f"writing to it ({unfinished_note(store)}): its last interchanges may be half-processed",
            file=sys.stderr,
        )


# -- output ------------------------------------------------------------------------------------


def _console() -> Any:
    from rich.console import Console

    # Piped output: no colour, and wide enough that ids and times are not wrapped.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def _table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
    _console().print(table)


def _json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _when(instant: datetime | None) -> str:
    return "-" if instant is None else instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(value: object) -> str:
    """An id as tables print it: its last 8 characters (random; a v7 id begins with its time)."""
    return str(value)[-8:]


_MARKERS = frozenset({"gpke.decision_overdue"})
_AT_AHEAD = timedelta(minutes=5)  # an operator's --at may lie this far ahead (clocks differ)


def _at(args: argparse.Namespace) -> datetime:
    if not getattr(args, "at", None):
        return datetime.now(UTC)
    try:
        instant = datetime.fromisoformat(args.at)
    except ValueError:
        raise InvalidArgument(f"--at {args.at!r} is not an ISO 8601 instant") from None
    if instant.tzinfo is None:
        raise InvalidArgument(f"--at {args.at!r} has no time zone")
    return instant


def _matches(value: str, text: str) -> bool:
    """Whether ``text`` (stripped, lower case) is a non-empty end or beginning of id ``value``."""
    return bool(text) and (value.endswith(text) or value.startswith(text))


def _unique(items: Sequence[T], text: str, key: Callable[[T], str], what: str) -> T:
    text = text.strip().lower()
    matches = [item for item in items if _matches(key(item), text)]
    if not matches:
        raise NotFound(f"no {what} matches {text!r}")
    if len(matches) > 1:
        raise InvalidArgument(f"{text!r} matches {len(matches)} {what}s; give more of the id")
    return matches[0]


# -- processes ---------------------------------------------------------------------------------


async def _processes_list(store: Any, args: argparse.Namespace) -> int:
    from mako_actors._store_views import list_processes

    rows = await list_processes(
        store, tenant=args.tenant, workflow=args.workflow, status=args.status, malo=args.malo,
        rejected=args.rejected,
    )  # fmt: skip
    total = len(rows)
    wanted = _rows_wanted(args)
    rows = rows if wanted is None else rows[:wanted]
    if args.json:
        _json([r.to_plain() for r in rows])
        return 0
    _table(
        _shown(len(rows), total, f"process(es) in {args.store}"),
        ("process", "workflow", "tenant", "status", "MaLo", "events", "started", "last event", "rejected"),
        (
            (
                _short(r.stream_id.process_id),
                r.workflow,
                r.party or _short(r.stream_id.tenant_id),
                r.status,
                r.malo,
                r.events,
                _when(r.started_at),
                _when(r.updated_at),
                " ".join(r.rejected),
            )
            for r in rows
        ),
    )
    return 0


async def _processes_show(store: Any, args: argparse.Namespace) -> int:
    from mako_actors._store_views import show_process

    detail = await show_process(store, args.id)
    plain = detail.to_plain()
    if args.json:
        _json(plain)
        return 0
    s = detail.summary
    console = _console()
    console.print(
        f"process {s.stream_id.process_id}\n  stream {s.stream_id}\n"
        f"  workflow {s.workflow}@{s.format_version}, tenant {s.party or s.stream_id.tenant_id}\n"
        f"  status {s.status}, MaLo {s.malo or '-'}, {s.events} event(s), "
        f"{_when(s.started_at)} .. {_when(s.updated_at)}",
        markup=False,
    )
    if plain["state"] is not None:
        console.print("state:", markup=False)
        console.print(json.dumps(plain["state"], indent=2, ensure_ascii=False), markup=False)
    _deadline_table(f"{len(detail.deadlines)} open deadline(s)", detail.deadlines, _at(args))
    _outbox_table(f"{len(detail.outbox)} message(s) waiting to leave", detail.outbox)
    return 0


async def _processes_deem_lfa_agreement(store: Any, args: argparse.Namespace) -> int:
    from mako_actors.gpke import DeemLfaAgreement

    if not args.reason.strip():
        raise InvalidArgument("--reason is empty; say why the process goes on without the LFA's answer")
    return await _operator_decides(
        store, args, lambda: DeemLfaAgreement(decided_at=_at(args), reason=args.reason.strip())
    )


async def _processes_reject_anmeldung(store: Any, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from mako_actors.gpke import RejectAnmeldung

    def command() -> RejectAnmeldung:
        try:
            return RejectAnmeldung(decided_at=_at(args), text=args.text)
        except ValidationError as exc:
            problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise InvalidArgument(f"--text: {problems}") from None

    return await _operator_decides(store, args, command)


async def _processes_form_tranche(store: Any, args: argparse.Namespace) -> int:
    from mako_actors.gpke import FormTranche

    return await _operator_decides(
        store, args,
        _checked(lambda: FormTranche(
            decided_at=_at(args), tranche=args.tranche.strip(),
            percent=args.percent.strip() if args.percent is not None else None,
            shares_missing=args.shares_missing, reason=args.reason.strip(),
        )),
    )  # fmt: skip


async def _processes_reject_tranche_request(store: Any, args: argparse.Namespace) -> int:
    from mako_actors.gpke import RejectTrancheRequest

    return await _operator_decides(
        store, args, _checked(lambda: RejectTrancheRequest(decided_at=_at(args), reason=args.reason.strip()))
    )


def _checked(build: Callable[[], BaseModel]) -> Callable[[], BaseModel]:
    """``build``, its ``ValidationError`` an ``InvalidArgument`` naming the fields (exit 1)."""
    from pydantic import ValidationError

    def command() -> BaseModel:
        try:
            return build()
        except ValidationError as exc:
            problems = "; ".join(
                f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: "
                + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise InvalidArgument(problems) from None

    return command


async def _operator_decides(store: Any, args: argparse.Namespace, command: Callable[[], BaseModel]) -> int:
    """Execute an operator's ``command()`` on gpke-nb process ``args.id``; a refusal by the
    workflow is an ``InvalidArgument`` (exit 1, nothing written)."""
    from mako_actors.envelope import ProcessIdentity
    from mako_actors.errors import WorkflowError
    from mako_actors.gpke import GpkeNbWorkflow
    from mako_actors.process import Process
    from mako_actors.timeline import find_stream

    stream = await find_stream(store, args.id)
    events = await store.load(stream)
    if not events or events[0].workflow_id.name != "gpke-nb":
        found = events[0].workflow_id.name if events else "no events"
        raise InvalidArgument(f"process {args.id!r} is not a gpke-nb process ({found})")
    first = events[0]
    identity = ProcessIdentity(
        stream_id=stream, process_id=first.process_id, tenant_id=first.tenant_id,
        workflow_id=first.workflow_id,
    )  # fmt: skip
    decision = command()
    at = getattr(decision, "decided_at", None)
    if isinstance(at, datetime):
        # Not a marker that the decision's Frist passed: a decision taken in time may be
        # recorded after it (history reproduced in a replay's store).
        last = next((e for e in reversed(events) if e.event_type not in _MARKERS), events[0])
        if at < last.recorded_at:
            raise InvalidArgument(
                f"--at {at.isoformat()} is before the process's last event ({last.event_type} at "
                f"{last.recorded_at.isoformat()}): a decision cannot come before what it decides on"
            )
        if at > datetime.now(UTC) + _AT_AHEAD:
            raise InvalidArgument(f"--at {at.isoformat()} lies in the future: the answers go out now")
    process = Process.from_identity(GpkeNbWorkflow(), store, identity)
    try:
        stored = await process.execute_and_enqueue(decision)
    except WorkflowError as exc:
        raise InvalidArgument(str(exc)) from None
    await _keys_to_their_homes(store, args.store, stream)
    if args.json:
        _json([e.to_plain() for e in stored])
    else:
        print(f"process {first.process_id}: {', '.join(e.event_type for e in stored)}")
    return 0


async def _keys_to_their_homes(store: Any, directory: Path, stream: Any) -> None:
    """In a partition of a partitioned store: write the process's registry keys homed in another
    partition there too, as a node's commit does (a lookup of an ``ic:``/``ide:`` key asks its
    home only: an APERAK or CONTRL on the decision's answers would not find the process). Homes
    on this node are written here (idempotent; a key bound to another process there is named);
    the others are named, for ``RayActorSystem.repair_keys`` (or the restart of their hosts)."""
    from mako_actors.errors import RegistryConflict
    from mako_actors.partitions import key_home
    from stores.lmdb import LmdbStore
    from stores.partitioned import MARKER, partition_dir, read_marker, registry_entries

    if not (directory / MARKER).is_file():
        return
    marker = read_marker(directory / MARKER)
    partition, count = int(marker["partition"]), int(marker["count"])
    by_home: dict[int, list[tuple[str, Any]]] = {}
    for key, identity in await registry_entries(store):
        if identity.stream_id == stream and (home := key_home(identity.tenant_id, key, count)) != partition:
            by_home.setdefault(home, []).append((key, identity))
    elsewhere: list[str] = []
    for home, entries in sorted(by_home.items()):
        target = partition_dir(directory.parent, home)
        if not (target / MARKER).is_file():  # on another node
            elsewhere += [key for key, _ in entries]
            continue
        try:  # (the decision is committed: a home that cannot be written is named, never fatal)
            async with LmdbStore(target) as other:
                for key, identity in entries:
                    try:
                        await other.register(identity.tenant_id, key, identity)  # (a same binding: no-op)
                    except RegistryConflict as exc:
                        print(f"mako-actors: warning: key {key!r} in {target}: {exc}", file=sys.stderr)
        except EngineError as exc:  # e.g. the partition is being moved (fenced)
            print(f"mako-actors: warning: {target}: {exc}", file=sys.stderr)
            elsewhere += [key for key, _ in entries]
    if elsewhere:
        print(
            f"mako-actors: warning: registry keys {', '.join(elsewhere)} belong in partitions on "
            "other nodes: run RayActorSystem.repair_keys() (or restart those nodes' hosts) so that "
            "answers to this decision find the process",
            file=sys.stderr,
        )


async def _processes_timeline(store: Any, args: argparse.Namespace) -> int:
    from mako_actors._store_views import known_workflows
    from mako_actors.timeline import timeline

    entries = await timeline(store, args.id, known_workflows())
    if args.json:
        _json([e.to_plain() for e in entries])
        return 0
    _table(
        f"timeline of {args.id}",
        ("#", "time", "event", "interchange", "status after"),
        (
            (e.sequence, _when(e.recorded_at), e.event_type, e.interchange, e.status)
            for e in entries
        ),
    )
    return 0


# -- outbox ------------------------------------------------------------------------------------


def _outbox_table(title: str, messages: Sequence[OutboxMessage]) -> None:
    _table(
        title,
        ("message", "type", "recipient", "process", "attempts", "next attempt", "last error"),
        (
            (
                _short(m.message_id),
                m.message_type,
                m.recipient,
                _short(m.process_id),
                m.attempts,
                _when(m.next_attempt_at),
                (m.last_error or "")[:60] or None,
            )
            for m in messages
        ),
    )


def _dead_table(title: str, letters: Sequence[DeadLetter]) -> None:
    _table(
        title,
        ("#", "kind", "recorded", "reason", "requeued"),
        (
            (d.position, d.kind, _when(d.recorded_at), d.reason[:100], _when(d.requeued_at))
            for d in letters
        ),
    )


async def _all_dead_letters(store: Any) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    while batch := await store.dead_letters(1000, out[-1].position if out else 0):
        out.extend(batch)
    return out


async def _outbox_list(store: Any, args: argparse.Namespace) -> int:
    if args.dead:
        letters = [d for d in await _all_dead_letters(store) if d.kind == "outbox"]
        if args.json:
            _json([d.to_plain() for d in letters])
        else:
            _dead_table(f"{len(letters)} dead-lettered outbox message(s)", letters)
        return 0
    wanted = _rows_wanted(args)
    now = _at(args)
    count, _ = await store.due_counts(now if args.due else None)
    # Earliest next attempt first, so the due ones lead: the first ``wanted`` of them are these.
    messages: list[OutboxMessage] = await store.outbox_messages(count if wanted is None else wanted)
    if args.due:
        messages = [m for m in messages if m.next_attempt_at <= now]
    if args.json:
        _json([m.to_plain() for m in messages])
    else:
        noun = f"outbox message(s){' due' if args.due else ''}"
        _outbox_table(_shown(len(messages), count, noun), messages)
    return 0


async def _every_outbox_message(store: Any) -> AsyncIterator[OutboxMessage]:
    """Every message in the outbox, a page at a time (``outbox_page``: none skipped or twice)."""
    after = None
    while page := await store.outbox_page(after, 1_000):
        for message in page:
            yield message
        after = page[-1].message_id


async def _outbox_render(store: Any, args: argparse.Namespace) -> int:
    from mako_actors.delivery import DirectorySender, PermanentDeliveryError

    try:
        sender = DirectorySender(args.directory)
    except OSError as exc:
        print(f"mako-actors outbox render: cannot create {args.directory}: {exc.strerror}", file=sys.stderr)
        return 2
    unrenderable: list[str] = []
    written = 0
    async for message in _every_outbox_message(store):
        try:
            await sender.send(message)
            written += 1
        except PermanentDeliveryError as exc:
            unrenderable.append(f"{message.message_id}: {exc}")
    if args.json:
        _json({"directory": str(args.directory), "written": written, "unrenderable": unrenderable})
    else:
        print(f"{written} message(s) written into {args.directory}")
        for line in unrenderable:
            print(f"not rendered: {line}", file=sys.stderr)
    return 1 if unrenderable else 0


async def _outbox_retry(store: Any, args: argparse.Namespace) -> int:
    text = args.id.strip().lower()
    every = [m async for m in _every_outbox_message(store)]
    matches = [m for m in every if _matches(str(m.message_id), text)]
    message = _unique(matches, text, lambda m: str(m.message_id), "outbox message")
    updated: OutboxMessage = await store.retry_outbox(message.message_id, datetime.now(UTC))
    # The delivery worker sends a process's messages in order: while an earlier one of its
    # process waits for a retry, this one is held (due, never attempted). Say which.
    mine = [m for m in every if m.stream_id == updated.stream_id]
    before = [m for m in mine if m.attempts and m.position < updated.position]
    behind = sorted(before, key=lambda m: m.position)
    if args.json:
        _json({**updated.to_plain(), "held_behind": [str(m.message_id) for m in behind]})
        return 0
    print(f"outbox message {updated.message_id} ({updated.message_type} to {updated.recipient}): due now")
    for m in behind:
        print(
            f"  held behind {m.message_id} ({m.message_type} to {m.recipient}, {m.attempts} failed "
            f"attempt(s), next {_when(m.next_attempt_at)}) of the same process: its messages go out "
            "in order; retry that one first"
        )
    return 0


# -- deadlines, dead letters, stats ------------------------------------------------------------


def _deadline_table(title: str, deadlines: Sequence[Deadline], now: datetime) -> None:
    _table(
        title,
        ("deadline", "label", "process", "workflow", "due", "overdue"),
        (
            (
                _short(d.deadline_id),
                d.label,
                _short(d.process_id),
                d.workflow_id.name,
                _when(d.due_at),
                "yes" if d.due_at <= now else "",
            )
            for d in deadlines
        ),
    )


async def _deadlines_list(store: Any, args: argparse.Namespace) -> int:
    now = _at(args)
    wanted = _rows_wanted(args)
    _, total = await store.due_counts(now if args.overdue else None)
    # Earliest first, so the overdue ones lead: the first ``wanted`` of them are these.
    deadlines: list[Deadline] = await store.all_deadlines(total if wanted is None else wanted)
    if args.overdue:
        deadlines = [d for d in deadlines if d.due_at <= now]
    if args.json:
        _json([d.to_plain() for d in deadlines])
    else:
        title = _shown(len(deadlines), total, f"open deadline(s){' overdue' if args.overdue else ''}")
        _deadline_table(title, deadlines, now)
    return 0


async def _dead_letters_list(store: Any, args: argparse.Namespace) -> int:
    # Oldest first, as the partitioned list: a replay records historic instants out of position order.
    letters = sorted(await _all_dead_letters(store), key=lambda d: (d.recorded_at, d.position))
    if args.kind:
        _check_kind(args.kind, {d.kind for d in letters})
        letters = [d for d in letters if d.kind == args.kind]
    shown = letters[: _rows_wanted(args)]
    if args.json:
        _json([d.to_plain() for d in shown])
    else:
        _dead_table(_shown(len(shown), len(letters), "dead letter(s)"), shown)
    return 0


#: The dead letters' kinds this package writes (a workflow of its own may add others).
_LETTER_KINDS = frozenset(
    {"outbox", "deadline", "inbound", "inbound-conflict", "inbound-misaddressed", "inbound-unhandled"}
)


def _check_kind(kind: str, held: set[str]) -> None:
    """``InvalidArgument`` for a ``--kind`` that is neither one this package writes nor one the
    store holds (a misspelt kind would list nothing, read as "none")."""
    if kind not in _LETTER_KINDS and kind not in held:
        known = ", ".join(sorted(_LETTER_KINDS | held))
        raise InvalidArgument(f"--kind {kind!r} is no dead letter kind; one of: {known}")


async def _dead_letters_list_partitioned(roots: list[Path], args: argparse.Namespace) -> int:
    from mako_actors._store_views import partition_dirs
    from stores.partitioned import dead_letters_of

    pairs = await dead_letters_of(partition_dirs(roots, args.store), limit=sys.maxsize)
    if args.kind:
        _check_kind(args.kind, {d.kind for _, d in pairs})
        pairs = [(p, d) for p, d in pairs if d.kind == args.kind]
    shown = pairs[: _rows_wanted(args)]
    if args.json:
        _json([{"partition": p, **d.to_plain()} for p, d in shown])
        return 0
    # '#' counts per partition: requeue with --store <node data dir>/p0007 (a replay's
    # STORE/part-<k>-of-<n>) and that number.
    _table(
        _shown(len(shown), len(pairs), "dead letter(s), every partition, oldest first"),
        ("partition", "#", "kind", "recorded", "reason", "requeued"),
        (
            (p, d.position, d.kind, _when(d.recorded_at), d.reason[:100], _when(d.requeued_at))
            for p, d in shown
        ),
    )
    return 0


async def _dead_letters_requeue(store: Any, args: argparse.Namespace) -> int:
    letter: DeadLetter = await store.requeue_dead_letter(args.position, datetime.now(UTC))
    if args.json:
        _json(letter.to_plain())
    else:
        back = "the outbox" if letter.kind == "outbox" else "the deadline schedule"
        print(f"dead letter {letter.position} ({letter.kind}) is back in {back}")
    return 0


def _summary(counts: dict[str, int], usage: Any, letters: list[DeadLetter]) -> dict[str, Any]:
    """One store's (or partition's) ``stats`` fields: entries per table, open dead letters, map use."""
    return {
        "tables": counts,
        "dead_letters_open": sum(1 for d in letters if d.requeued_at is None),
        "file_bytes": usage.file_bytes,
        "map_size": usage.map_size,
        "map_used_bytes": usage.used_bytes,
        "map_used_fraction": round(usage.used_fraction, 4),
    }


async def _stats(store: Any, args: argparse.Namespace) -> int:
    counts: dict[str, int] = await store.table_counts()
    usage = store.map_usage()
    letters = await _all_dead_letters(store)
    plain = {"store": str(args.store), **_summary(counts, usage, letters)}
    if args.json:
        _json(plain)
        return 0
    _table(f"store {args.store}", ("table", "entries"), sorted(counts.items()))
    _console().print(
        f"{plain['dead_letters_open']} dead letter(s) not requeued; data file {usage.file_bytes:,} bytes; "
        f"map {usage.used_bytes:,} of {usage.map_size:,} bytes used ({usage.used_fraction:.1%})",
        markup=False,
    )
    return 0


async def _stats_partitioned(roots: list[Path], args: argparse.Namespace) -> int:
    from mako_actors._store_views import partition_dirs
    from stores.lmdb_readonly import ReadOnlyLmdbStore

    partitions: dict[int, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    for partition, directory in partition_dirs(roots, args.store):
        store = ReadOnlyLmdbStore(directory)
        try:
            counts: dict[str, int] = await store.table_counts()
            usage = store.map_usage()
            letters = await _all_dead_letters(store)
        finally:
            await store.aclose()
        for table, entries in counts.items():
            totals[table] = totals.get(table, 0) + entries
        partitions[partition] = {"directory": str(directory), **_summary(counts, usage, letters)}
    plain = {
        "store": str(args.store),
        "tables": totals,
        "dead_letters_open": sum(p["dead_letters_open"] for p in partitions.values()),
        "file_bytes": sum(p["file_bytes"] for p in partitions.values()),
        "partitions": partitions,
    }
    if args.json:
        _json(plain)
        return 0
    _console().print(f"partitioned store {args.store}: {len(partitions)} partition(s)", markup=False)
    _table(None, ("table", "entries"), sorted(totals.items()))
    _table(
        None,
        ("partition", "directory", "dead letters open", "data file bytes", "map used"),
        (
            (
                p,
                v["directory"],
                v["dead_letters_open"],
                f"{v['file_bytes']:,}",
                f"{v['map_used_fraction']:.1%}",
            )
            for p, v in sorted(partitions.items())
        ),
    )
    _console().print(
        f"{plain['dead_letters_open']} dead letter(s) not requeued; data files {plain['file_bytes']:,} bytes",
        markup=False,
    )
    return 0
