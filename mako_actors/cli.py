"""The ``mako-actors`` console script.

Subcommands register themselves in :func:`build_parser` via ``add_parser`` on the returned
subparsers object and set ``handler`` (``Callable[[argparse.Namespace], int]``) as default.
The store inspection commands live in ``_cli_store``, ``serve`` in ``serve``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mako_actors.edifact import (
    EdifactError,
    Interchange,
    InterchangeTooLarge,
    read_interchange,
    try_parse_interchange,
)
from mako_actors.replay_cli import add_replay_commands

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


_DESCRIPTION = (
    "Event-sourced MaKo processes (GPKE supplier change, UTILMD, APERAK, CONTRL, Fristen) on LMDB: "
    "inspect EDIFACT files, replay archives, run a node, look inside a store."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from mako_actors import _cli_store, serve

    parser = argparse.ArgumentParser(prog="mako-actors", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--log-format", choices=("human", "json"), default=None, help="log lines as text (default) or JSON"
    )
    parser.add_argument(
        "--log-level",
        default=None,
        type=_log_level,
        help="debug, info, warning or error (default: info for serve, error otherwise: reports say the rest)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do ('COMMAND --help' tells more)"
    )
    inspect = sub.add_parser(
        "inspect",
        help="parse an EDIFACT interchange and show its envelope and messages",
        description="Parse FILE strictly; exit 1 with the typed error if it is rejected.",
    )
    inspect.add_argument("file", type=Path, help="EDIFACT interchange (bytes as received)")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    inspect.set_defaults(handler=_inspect)
    add_replay_commands(sub)
    masterdata = sub.add_parser("masterdata", help="supply assignments in the store")
    masterdata_sub = masterdata.add_subparsers(dest="masterdata_command", required=True, help="action")
    imports = masterdata_sub.add_parser(
        "import",
        help="import initial supply assignments (JSON or CSV) into the store",
        description="Append FILE's assignments (malo, supplier, from, until) to the supply journals.",
    )
    imports.add_argument("file", type=Path, help="assignments as .json or .csv (malo,supplier,from,until)")
    imports.add_argument("--store", type=Path, required=True, help="LMDB store directory")
    imports.add_argument("--tenant", required=True, help="our MP-ID (the grid operator)")
    imports.set_defaults(handler=_masterdata_import)
    serve.register(sub)
    _cli_store.register(sub)
    _logging_options_everywhere(parser)
    return parser


_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(value: str) -> str:
    """A ``--log-level`` value; argparse reports any other as a usage error (exit 2)."""
    if value.lower() not in _LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(_LEVELS)}")
    return value.lower()


def _logging_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--log-format``/``--log-level`` after any (sub)command too (``serve --log-format json``).

    ``SUPPRESS``: a subcommand sets them only when given, never hides the top-level value.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument(
                    "--log-format", choices=("human", "json"), default=argparse.SUPPRESS,
                    help="log lines as text (default) or JSON",
                )  # fmt: skip
                child.add_argument(
                    "--log-level", default=argparse.SUPPRESS, type=_log_level,
                    help="debug, info, warning or error",
                )  # fmt: skip
                _logging_options_everywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 rejected input, 2 usage/IO, 141 the
    reader of stdout went away, e.g. ``| head``: quietly, as a command a closed pipe ended)."""
    from mako_actors.logs import configure_logging

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (2, said on stderr) or --help/--version (0)
        return exc.code if isinstance(exc.code, int) else 2
    default_level = "info" if args.command == "serve" else "error"
    configure_logging(
        (args.log_level or default_level).upper(), json_lines=(args.log_format or "human") == "json"
    )
    handler: Handler = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # here, so a closed pipe is met inside this try, not at exit
    except BrokenPipeError:
        # The reader left (``--json | head``): nothing is wrong, nothing more to say. Python
        # would flush stdout again at exit and print the error; a dead end takes that output.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe ended
    if argv is None:
        # This process is the command's own (the console script passes no argv): what the command
        # left on the heap dies with it. A replay leaves ~300,000 objects in reference cycles that
        # the interpreter's exit would collect one by one (~1.4 s CPU for the benchmark archive);
        # frozen, they are left to the OS. Nothing is open by then (stores closed and synced,
        # reports written); logging still flushes at exit.
        gc.freeze()
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mako-actors")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def interchange_to_plain(ic: Interchange) -> dict[str, Any]:
    """The envelope and per-message summary as JSON-compatible data."""
    return {
        "source": ic.source,
        "syntax_id": ic.syntax_id,
        "syntax_version": ic.syntax_version,
        "charset": ic.charset,
        "una": ic.delimiters.una if ic.una_present else None,
        "sender": {"id": ic.sender.id, "qualifier": ic.sender.qualifier},
        "recipient": {"id": ic.recipient.id, "qualifier": ic.recipient.qualifier},
        "prepared_at": ic.prepared_at.isoformat(),
        "control_ref": ic.control_ref,
        "application_ref": ic.application_ref,
        "test": ic.test,
        "sha256": ic.sha256,
        "segment_count": ic.segment_count,
        "correlation_ref": ic.correlation_ref,
        "messages": [
            {
                "reference": m.reference,
                "type": m.message_type,
                "version": f"{m.version}:{m.release}:{m.agency}",
                "mig_version": m.association_code,
                "pid": m.pid,
                "document_code": m.document_code,
                "document_number": m.document_number,
                "document_date": m.document_date.isoformat() if m.document_date else None,
                "segment_count": m.segment_count,
                "transactions": [
                    {"ide": t.ide_ref, "pid": t.pid, "malo": t.malo, "request_ref": t.request_ref}
                    for t in m.transactions
                ],
                "problems": list(m.problems),
            }
            for m in ic.messages
        ],
    }


def _inspect(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        raw = read_interchange(path)
    except InterchangeTooLarge as exc:
        print(f"mako-actors inspect: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mako-actors inspect: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    result = try_parse_interchange(raw, source=str(path))
    if isinstance(result, EdifactError):
        if args.json:
            print(json.dumps({"ok": False, **result.to_plain()}, indent=2, ensure_ascii=False))
        else:
            print(f"REJECTED {type(result).__name__}: {result}")
        return 1
    if args.json:
        print(json.dumps({"ok": True, **interchange_to_plain(result)}, indent=2, ensure_ascii=False))
    else:
        _print_table(result)
    return 0


def _masterdata_import(args: argparse.Namespace) -> int:
    import asyncio

    from mako_actors._placement import check_not_replay_parts
    from mako_actors._store_lock import STORE_LOCK, check_directory_path, held
    from mako_actors.errors import EngineError
    from mako_actors.gpke.masterdata import ImportReport, check_import, import_checked
    from stores.lmdb import LmdbStore

    async def run() -> ImportReport:
        async with LmdbStore(args.store) as store:
            return await import_checked(store, checked)

    try:
        check_not_replay_parts(args.store, "masterdata import")
        checked = check_import(args.tenant, args.file)  # before the store (and its directory) exists
        store_dir = Path(args.store)
        check_directory_path("masterdata import", "--store", store_dir)
        store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Its check (is the MaLo decided on?) and its append are separate transactions: a node
        # serving the store could claim the MaLo in between, and the import would override it.
        refusal = "masterdata import writes a store no node serves and nothing else writes"
        with held(store_dir / STORE_LOCK, "store", "mako-actors masterdata import", refusal):
            report = asyncio.run(run())
    except EngineError as exc:
        print(f"mako-actors masterdata import: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the store's directory or its lock cannot be made (nothing imported)
        print(f"mako-actors masterdata import: --store {args.store}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{report.rows} assignment(s) for {report.malos} MaLo(s): {report.appended} imported, "
          f"{report.skipped} already present")
    if report.not_imported:
        print(
            "mako-actors masterdata import: note: not imported (the store keeps supply assignments "
            f"only): {_not_imported(report.not_imported)}; serve's master_data and replay "
            "--master-data take them, the file as it is (JSON by MaLo)",
            file=sys.stderr,
        )
    return 0


def _not_imported(fields: dict[str, int]) -> str:
    """The master data an import left out, for its note: each field and how many MaLos gave it."""
    parts = []
    for name, malos in fields.items():
        if name == "bilanzkreise":
            parts.append("the register of Zuordnungsermächtigungen ('bilanzkreise')")
        elif name == "complete":
            parts.append("'complete' (the file lists every MaLo)")
        elif name == "measurement":
            parts.append(f"the measurement (ZW6/ZW7) of {malos} MaLo(s)")
        else:
            parts.append(f"'{name}' of {malos} MaLo(s)")
    return ", ".join(parts)


def _print_table(ic: Interchange) -> None:
    from rich.console import Console
    from rich.table import Table

    # Rich drops colour and wraps to 80 columns when piped; force a wide, plain layout then.
    console = Console(width=None if sys.stdout.isatty() else 120)
    test = "  TEST" if ic.test else ""
    console.print(
        f"{ic.source}: {ic.syntax_id}:{ic.syntax_version} ({ic.charset}){test}\n"
        f"  from {ic.sender.id}:{ic.sender.qualifier} to {ic.recipient.id}:"
        f"{ic.recipient.qualifier}, prepared {ic.prepared_at:%Y-%m-%d %H:%M}Z\n"
        f"  0020 {ic.control_ref}, {len(ic.messages)} message(s), "
        f"{ic.segment_count} segments, sha256 {ic.sha256[:16]}...",
        highlight=False,
        markup=False,
    )
    table = Table("ref", "type", "version", "PID", "document", "segments", "transactions")
    for m in ic.messages:
        table.add_row(
            m.reference,
            m.message_type,
            f"{m.version}:{m.release}:{m.association_code}",
            m.pid or "-",
            f"{m.document_code or '-'} {m.document_number or ''}",
            str(m.segment_count),
            ", ".join(t.ide_ref for t in m.transactions) or "-",
        )
    console.print(table)
    for m in ic.messages:
        for p in m.problems:
            console.print(f"  warning ({m.reference}): {p}", highlight=False, markup=False)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
