"""Batch re-processing: replay an archive of interchanges through the workflows, in historic order.

``replay_directory(directory, store_path, tenants=...)`` reads every interchange file of a
directory, orders them by their receipt instant and ingests them through ``InboundPipeline``
onto a ``LocalActorSystem`` (group commit, state in memory), firing every Frist at its
historic instant. Re-running over the same store is idempotent (the receipt streams recognise
every interchange, dead letters are stored once) and reports them as duplicates.

Two schedules give the same decisions (``ReplayReport.decision_digest`` proves it):

- ``sequential=True``: one interchange after the other; before each, a ``VirtualClock`` moves
  to its receipt instant and ``DeadlineScheduler`` fires every deadline due by then.
- pipelined (the default): interchanges are read and parsed ahead and up to ``window`` of them
  are in flight at once, so the actors' commits share LMDB write transactions. Each item waits
  only for the earlier items it depends on, by *routing key*: the receipt (sender, recipient,
  0020), the MaLo and the transaction (sender, IDE) of a trigger, and for an answer or an
  acknowledgement the MaLo of the process it names (for a CONTRL on a refusal APERAK of the
  pipeline, the receipt key of the interchange it refused), found in an in-memory view of the
  registry that every commit of the run updates (``_RunView``). A deadline a commit sets is queued under
  its process's key at its due instant and fires after every earlier item of that key and
  before every later one, once all items received before it are queued. A process an earlier
  run started has the key its trigger had (its MaLo, read from its first event in the store),
  so a deadline it left pending is queued like one of this run's. Whatever cannot be keyed (an
  answer whose request is unknown so far) runs alone, after everything before it; a file the
  parser rejects touches only its receipt stream and dead letters. The run's clock follows the
  queue's horizon (up to ``window`` interchanges ahead of what runs), so nothing is stamped
  from it: an interchange's commands and dead letters carry its receipt instant
  (``InboundPipeline(record_at_receipt=True)``), a deadline's its due instant
  (``CommandContext.with_recorded_at``), as the sequential schedule's clock stands then.

Both schedules parse each file once (the keys come from the parsed values, which ``ingest``
takes), write an accepted interchange's receipt, CONTRL and outcome in one command after its
messages are routed (``InboundPipeline(receipt_after_routing=True)``; the CONTRL follows the
processes' answers in the replay's outbox), and write the commits asked for in one loop turn
(pipelined: within a few loop turns of the first) in one LMDB transaction on the loop's own
thread (``_RunView``: the replay is the store's only writer). Into a fresh store, the decision
digest is gathered from the commits as they are made.

The receipt instant comes from the archive, never from the bytes (DOMAIN: UNB S004 is the
sender's preparation time, not the ÜT): from ``manifest.csv`` in the directory (``file,
received_at`` with ISO 8601 instants; files must lie inside the directory) when it exists,
else from each file's modification time. With a manifest, interchange files of the directory
(``EDIFACT_SUFFIXES``) it does not list are not replayed; the report names them
(``not_in_manifest``), as the files a gateway added after the manifest was written.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import csv
import hashlib
import heapq
import json
import logging
import operator
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pydantic_core import to_jsonable_python

from mako_actors._durable import fsync_directory
from mako_actors._partition import Predictions, RefKind, Scan, trigger_seed
from mako_actors._placement import RUNNING_MARKER
from mako_actors._store_lock import STORE_LOCK, held
from mako_actors.actors import LocalActorSystem
from mako_actors.actors._actor import TIMEOUT, Op
from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline
from mako_actors.edifact import EdifactError, Interchange, try_parse_interchange
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.awaiting import awaits_operator
from mako_actors.gpke.calendar import calendar_version
from mako_actors.gpke.family import trigger_object
from mako_actors.gpke.masterdata import boundary, check_master_fields
from mako_actors.gpke.supply import MEASUREMENTS, MSB_ROLES, check_master_tenants
from mako_actors.gpke.validation import MpIdIssue, is_valid_eic, is_valid_malo_id, mp_id_issue
from mako_actors.ids import DeadlineId, StreamId, TenantId
from mako_actors.inbound import (
    RECEIPT_WORKFLOW,
    InboundPipeline,
    IngestResult,
    MasterData,
    StaticMasterData,
    Suppliers,
    _ack_values,
    _lenient_header,
    received_before,
    storable_name,
)
from mako_actors.scheduler import _TICK, DeadlineScheduler, VirtualClock, identity_of
from mako_actors.snapshot import Snapshot
from mako_actors.store import Activation, Commit, CommitResult, Store
from stores._schema import event_key, pack, unpack
from stores.lmdb import Durability, LmdbStore

__all__ = [
    "ArchivedInterchange",
    "ReplayReport",
    "archive",
    "check_replay_arguments",
    "decision_digest",
    "decisions_in",
    "load_master_data",
    "process_decisions",
    "replay_directory",
]

log = logging.getLogger(__name__)

EDIFACT_SUFFIXES = (".edi", ".edifact", ".txt")
Progress = Callable[[int, int, str], None]
_TRIGGERS = ("55001", "55077", "55004")
_ANSWERS = ("55011", "55012")
_FAR = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ArchivedInterchange:
    """One file of the archive and the instant it was received (``raw``: its bytes, if read)."""

    path: Path
    received_at: datetime
    raw: bytes | None = None


@dataclass
class ReplayReport:
    """What a replay did: files and messages, what was written, decisions, rejections, speed."""

    files: int = 0
    messages: int = 0  # UNH..UNT found in the files (also in rejected ones)
    statuses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    events_appended: int = 0
    outbox_enqueued: int = 0
    processes_created: int = 0
    deadlines_fired: int = 0
    dead_letters: int = 0
    #: Processes the run left awaiting an operator's decision (their answer is not sent: an LFA
    #: our 55010 did not reach, a Geschäftsvorfall 3's Tranche): ``processes list --status
    #: awaiting_operator`` names them.
    awaiting_operator: int = 0
    outbox: int = 0
    first: datetime | None = None
    last: datetime | None = None
    errors: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: Interchange files of the archive that its manifest.csv does not list: not replayed.
    not_in_manifest: list[str] = field(default_factory=list)
    #: Files skipped for their message types (``message_types``), by those types ("MSCONS"),
    #: and each one's interchange as (UNB sender, 0020): what was sent back then about it (its
    #: CONTRL, an APERAK) is no difference (``compare_outbound(skipped=...)``).
    skipped_by_type: Counter[str] = field(default_factory=Counter)
    skipped_interchanges: list[tuple[str, str]] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    decision_digest: str = ""
    mode: str = "pipelined"
    #: ``"<before> -> <now>"`` when the store's earlier runs computed their Fristen on another
    #: Werktag calendar (``gpke.calendar.calendar_version``) than this one: a Frist they left
    #: pending fires at the instant they computed, the new ones follow this calendar.
    calendar_changed: str | None = None
    #: Each file's status by its path and receipt instant, which ``statuses`` counts: under
    #: ``--workers`` a file cut into pieces is one file of the archive, its pieces' statuses
    #: merged (``merged_status``).
    file_statuses: dict[tuple[str, datetime], str] = field(default_factory=dict, repr=False)

    @property
    def interchanges(self) -> int:
        return self.files

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.duration_s if self.duration_s > 0 else 0.0

    def to_plain(self) -> dict[str, Any]:
        """The report as JSON-ready data (errors, rejections and file lists capped at 1,000 lines each)."""
        return {
            "files": self.files,
            "messages": self.messages,
            "events_appended": self.events_appended,
            "outbox_enqueued": self.outbox_enqueued,
            "processes_created": self.processes_created,
            "deadlines_fired": self.deadlines_fired,
            "dead_letters": self.dead_letters,
            "awaiting_operator": self.awaiting_operator,
            "errors": self.errors[:1000],
            "rejected": self.rejected[:1000],
            "failures": self.failures[:1000],
            "not_in_manifest": len(self.not_in_manifest),
            "not_in_manifest_files": self.not_in_manifest[:1000],
            "skipped": sum(self.skipped_by_type.values()),
            "skipped_by_type": dict(sorted(self.skipped_by_type.items())),
            "skipped_files": self.skipped_files[:1000],
            "duration_s": round(self.duration_s, 3),
            "messages_per_s": round(self.messages_per_s, 1),
            "decision_digest": self.decision_digest,
            "statuses": dict(sorted(self.statuses.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
            "outbox": self.outbox,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "mode": self.mode,
            "calendar": calendar_version(),
            "calendar_changed": self.calendar_changed,
        }


_ASSIGNMENT_LIST = (
    "master data {path}: an assignment list (malo, supplier, from, until) goes into the store with "
    "`mako-actors masterdata import`; master data here is JSON by MaLo: "
    '{{"<MaLo>": {{"current": MP-ID, "future": MP-ID, "future_start": ISO, "measurement": "ZW6"|"ZW7"}}, '
    '"<Tranche>": {{"tranche_of": "<MaLo>", "tranche_percent": "25.5", "current": MP-ID, ...}}, '
    '"bilanzkreise": {{"<LF MP-ID>": ["<EIC>", ...]}}}}'
)


def load_master_data(path: Path) -> StaticMasterData:
    """NB master data from JSON: ``{"<MaLo>": {"current": MP-ID, "future": MP-ID, "future_start":
    ISO, "measurement": "ZW6"|"ZW7", "in_operation_from": ISO, "out_of_market_from": ISO, "esv_from": ISO,
    "quarter_hour_metering": true|false, "generating"|"ims"|"kundenanlage"|"virtual_summenzaehler":
    true|false, "eeg_kwkg"|"ausfallverguetung": true|false, "netzlokationen": [ID, ...], "msb":
    MP-ID, "msb_role": "Z39"|"Z40"|"Z41", "gmsb": MP-ID, "messlokationen": [ID, ...]}}``,
    every key optional (instants with their offset; see ``Suppliers``); a Tranche's entry (keyed
    by its ID) has ``"tranche_of": "<MaLo>"``, the MaLo it belongs to, and how its size is formed:
    ``"tranche_percent": "<% of the MaLo>"`` (ZD1) or ``"tranche_basis": "ZD2"`` (Aufteilungsfaktor),
    which its 55078 names (SG8 Z15, Muss for Geschäftsvorfall 2). The optional key ``"bilanzkreise"``
    is the NB's register of Zuordnungsermächtigungen, ``{"<LF MP-ID>": ["<Bilanzkreis EIC>",
    ...]}``: with it, an Anmeldung whose Produktpakete name no Bilanzkreis of its sender there is
    rejected by E_0622 (A05/A25; a supplier not listed holds none); without it, not checked.
    The optional key ``"complete": true`` says the file lists every MaLo (and Tranche) of the NB:
    an Anmeldung for one it does not list, and no process of the NB knows, gets APERAK Z14
    ("Objekt im IT-System nicht gefunden"); without it, such a MaLo has no supplier. The
    optional key ``"tenant": "<MP-ID>"`` names the NB the file is of (for other tenants it says
    nothing); without it a run with several tenants refuses the file (``check_master_tenants``).

    ``measurement`` is the MaLo's STS+7 #2 of a 55002 (ZW6 pauschale / ZW7 gemessene MaLo);
    without it the workflow's default decides. Raises ``InvalidArgument`` naming the file and
    the entry (and field) that does not fit, a field it does not know (a misspelt flag would
    switch its check off unseen), and for an assignment list (``masterdata import``'s
    CSV or JSON list, which belongs in the store) says so.
    """
    if path.suffix.lower() == ".csv":
        raise InvalidArgument(_ASSIGNMENT_LIST.format(path=path))
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
        if isinstance(raw, list):
            raise InvalidArgument(_ASSIGNMENT_LIST.format(path=path))
        by_malo: dict[str, Suppliers] = {}
        register = _register(raw.pop("bilanzkreise", None))
        complete = raw.pop("complete", False)
        if not isinstance(complete, bool):
            raise InvalidArgument(f"master data {path}: 'complete' is {complete!r}, expected true or false")
        tenant = raw.pop("tenant", None)
        if tenant is not None and (not isinstance(tenant, str) or mp_id_issue(tenant) is MpIdIssue.MALFORMED):
            raise InvalidArgument(f"master data {path}: 'tenant' is {tenant!r}, not an MP-ID (13 digits)")
        for malo, entry in raw.items():
            check_master_fields(malo, entry)
            measurement = entry.get("measurement")
            if measurement is not None and measurement not in MEASUREMENTS:
                raise ValueError(
                    f"MaLo {malo}: field 'measurement' is {measurement!r}, expected one of "
                    f"{', '.join(MEASUREMENTS)}"
                )
            tranche_of = entry.get("tranche_of")
            if tranche_of is not None and not is_valid_malo_id(str(tranche_of)):
                raise ValueError(f"Tranche {malo}: field 'tranche_of' is {tranche_of!r}, not a MaLo-ID")
            start = entry.get("future_start")
            by_malo[malo] = _suppliers(
                malo,
                current=entry.get("current"),
                future=entry.get("future"),
                # As ``masterdata import`` reads it: a date is 00:00 Berlin (a naive instant
                # failed the first Anmeldung of that MaLo with a TypeError).
                future_start=(
                    boundary(str(start).strip(), f"master data {path}: MaLo {malo}: field 'future_start'")
                    if start
                    else None
                ),
                measurement=measurement,
                tranche_of=tranche_of,
                tranche_basis=entry.get("tranche_basis"),
                tranche_percent=entry.get("tranche_percent"),
                in_operation_from=_entry_instant(entry, malo, "in_operation_from"),
                out_of_market_from=_entry_instant(entry, malo, "out_of_market_from"),
                esv_from=_entry_instant(entry, malo, "esv_from"),
                quarter_hour_metering=_entry_flag(entry, malo, "quarter_hour_metering"),
                **{name: _entry_flag(entry, malo, name) for name in _FLAGS},
                **_netzlokationen(entry, malo),
                **_metering(entry, malo),
            )
        return StaticMasterData(by_malo, register, complete=complete, tenant=tenant)
    except InvalidArgument:
        raise
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
        raise InvalidArgument(f"master data {path}: {exc}") from None


_MELO = re.compile(r"^[A-Z]{2}[0-9A-Z]{31}$")  # a Zählpunktbezeichnung ([951])


def _suppliers(malo: str, **fields: Any) -> Suppliers:
    """``Suppliers(**fields)``; its ``ValueError`` names the MaLo."""
    try:
        return Suppliers(**fields)
    except ValueError as exc:
        raise ValueError(f"MaLo {malo}: {exc}") from None


_FLAGS = ("generating", "ims", "kundenanlage", "virtual_summenzaehler", "eeg_kwkg", "ausfallverguetung")
_NELO = re.compile(r"^E[0-9A-Z]{10}$")  # a Netzlokations-ID ([960])


def _netzlokationen(entry: dict[str, Any], malo: str) -> dict[str, Any]:
    """``netzlokationen`` and ``netzlokation_msbs`` of ``entry["netzlokationen"]``: a list of
    Netzlokations-IDs, each an ID or ``{"id": ID, "msb": MP-ID, "msb_role": "Z39"|"Z40"|"Z41"}``
    (its MSB, which a 55002 naming it needs; the role defaults to Z39). ``ValueError`` naming
    what does not fit."""
    nelos = entry.get("netzlokationen")
    if nelos is None:
        return {}
    expected = (
        "expected a list of Netzlokations-IDs (E and 10 digits or capital letters), each maybe as "
        '{"id": ID, "msb": MP-ID, "msb_role": "Z39"|"Z40"|"Z41"}'
    )
    if not isinstance(nelos, list):
        raise ValueError(f"MaLo {malo}: field 'netzlokationen' is {nelos!r}, {expected}")
    ids: list[str] = []
    msbs: list[tuple[str, str, str]] = []
    for item in nelos:
        ident, msb, role = (item, None, None) if isinstance(item, str) else _nelo_object(item)
        if not isinstance(ident, str) or not _NELO.match(ident):
            raise ValueError(f"MaLo {malo}: field 'netzlokationen' has {item!r}, {expected}")
        if msb is not None:
            if mp_id_issue(str(msb)) is MpIdIssue.MALFORMED or role not in MSB_ROLES:
                what = f"MSB {msb!r} / role {role!r}"
                raise ValueError(f"MaLo {malo}: Netzlokation {ident}: {what}, {expected}")
            msbs.append((ident, str(msb), str(role)))
        ids.append(ident)
    return {"netzlokationen": tuple(ids), "netzlokation_msbs": tuple(msbs)}


def _nelo_object(item: Any) -> tuple[Any, Any, Any]:
    """(ID, MSB, role) of a Netzlokation given as an object; unknown keys make it no object."""
    if not isinstance(item, dict) or not set(item) <= {"id", "msb", "msb_role"}:
        return None, None, None
    return item.get("id"), item.get("msb"), item.get("msb_role", "Z39")


def _entry_flag(entry: dict[str, Any], malo: str, name: str) -> bool | None:
    """``entry[name]``, a JSON ``true``/``false`` (``None`` when absent); ``ValueError`` otherwise."""
    value = entry.get(name)
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"MaLo {malo}: field {name!r} is {value!r}, expected true or false")
    return value


def _metering(entry: dict[str, Any], malo: str) -> dict[str, Any]:
    """``msb``, ``msb_role``, ``gmsb`` and ``messlokationen`` of a MaLo's entry, their formats
    checked (``ValueError``); ``Suppliers`` checks how they go together and fills the defaults."""
    msb, role, gmsb = entry.get("msb"), entry.get("msb_role"), entry.get("gmsb")
    melos = entry.get("messlokationen", [])
    for name, value in (("msb", msb), ("gmsb", gmsb)):
        if value is not None and mp_id_issue(str(value)) is MpIdIssue.MALFORMED:
            raise ValueError(f"MaLo {malo}: field {name!r} is {value!r}, not an MP-ID (13 digits)")
    if role is not None and role not in MSB_ROLES:
        raise ValueError(f"MaLo {malo}: field 'msb_role' is {role!r}, expected one of {', '.join(MSB_ROLES)}")
    if not isinstance(melos, list) or not all(isinstance(m, str) and _MELO.match(m) for m in melos):
        raise ValueError(
            f"MaLo {malo}: field 'messlokationen' is {melos!r}, expected a list of Messlokation-IDs "
            "(33 characters: country code, then 0-9 A-Z)"
        )
    return {"msb": msb, "msb_role": role, "gmsb": gmsb, "messlokationen": tuple(melos)}


def _entry_instant(entry: dict[str, Any], malo: str, name: str) -> datetime | None:
    """An ISO instant with its offset in ``entry[name]``, or None (``ValueError`` naming both)."""
    text = entry.get(name)
    if text is None:
        return None
    at = datetime.fromisoformat(str(text))
    if at.tzinfo is None:
        raise ValueError(f"MaLo {malo}: field {name!r} is {text!r}, an instant without its offset")
    return at


def _register(raw: Any) -> dict[str, frozenset[str]] | None:
    """``"bilanzkreise"`` of master data checked: MP-ID → list of valid EICs (``ValueError``)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"'bilanzkreise' is {type(raw).__name__}, expected {{MP-ID: [EIC, ...]}}")
    register: dict[str, frozenset[str]] = {}
    for supplier, eics in raw.items():
        if mp_id_issue(supplier) is MpIdIssue.MALFORMED:
            raise ValueError(f"'bilanzkreise': {supplier!r} is not an MP-ID (13 digits)")
        if not isinstance(eics, list):
            raise ValueError(f"'bilanzkreise' of {supplier}: expected a list of EICs, got {eics!r}")
        bad = [e for e in eics if not isinstance(e, str) or not is_valid_eic(e)]
        if bad:
            raise ValueError(
                f"'bilanzkreise' of {supplier}: {bad[0]!r} is not an EIC (16 characters 0-9, A-Z, "
                "'-' with its check character)"
            )
        register[supplier] = frozenset(eics)
    return register


def archive(directory: Path, unlisted: list[str] | None = None) -> list[ArchivedInterchange]:
    """The interchanges of ``directory`` in receipt order (ties by file name).

    With ``manifest.csv``, only the files it lists; the names of the directory's interchange
    files (``EDIFACT_SUFFIXES``) it leaves out are appended to ``unlisted``, sorted. Raises
    ``InvalidArgument`` for a missing directory, or a manifest naming a file outside the
    directory (``../``, an absolute path), an absent file or a naive/garbled instant.
    """
    if not directory.is_dir():
        raise InvalidArgument(f"replay: {directory} is not a directory")
    manifest = directory / "manifest.csv"
    root = directory.resolve()
    items: list[ArchivedInterchange] = []
    if manifest.exists():
        try:
            # Regular files right in the directory (no link): their resolved path is known.
            plain = {e.name for e in os.scandir(root) if e.is_file(follow_symlinks=False)}
            listed: set[str] = set()  # names of ``plain`` the manifest lists (by name, no Path per file)
            # (utf-8-sig: a byte order mark, as Excel writes one, is not part of the header.)
            with manifest.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if not {"file", "received_at"} <= set(reader.fieldnames or ()):
                    raise InvalidArgument(
                        f"{manifest}: the header must name the columns file,received_at (comma-"
                        f"separated), got {','.join(reader.fieldnames or ()) or 'nothing'!r}"
                    )
                lines: dict[Path, int] = {}  # each listed file -> its line
                for line, row in enumerate(reader, start=2):
                    name = row.get("file") or ""
                    if name in plain:
                        path = root / name
                    else:
                        path = (directory / name).resolve()
                        if Path(name).is_absolute() or not path.is_relative_to(root) or path == root:
                            raise InvalidArgument(f"{manifest}:{line}: {name!r} lies outside the archive")
                        if not path.is_file():
                            raise InvalidArgument(f"{manifest}:{line}: no file {name!r}")
                    if lines.setdefault(path, line) != line:
                        # One file, two receipts: which instant is its? Replayed at the first, the
                        # second would be a silent duplicate.
                        raise InvalidArgument(
                            f"{manifest}:{line}: {name!r} is listed again (line {lines[path]}); "
                            "each file is received once"
                        )
                    items.append(ArchivedInterchange(path, _instant(row.get("received_at"), manifest, line)))
                    if path.parent == root:  # also e.g. "./x.edi"
                        listed.add(path.name)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InvalidArgument(f"{manifest}: cannot read: {exc}") from None
        if unlisted is not None:
            unlisted += sorted(
                name for name in plain - listed if os.path.splitext(name)[1].lower() in EDIFACT_SUFFIXES
            )
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


# -- decisions -------------------------------------------------------------------------------


def process_decisions(events: Iterable[EventEnvelope]) -> dict[str, list[list[Any]]]:
    """Each GPKE process's ordered decisions, keyed by its seed (first message's references).

    A decision is one event: its type, the messages it sends (type, PID, recipient), its
    answer code and the Frist instants it sets. The seed (``sender:0020:0062:IDE`` of the
    message that started the process) is the same in every run, unlike the process id.
    """
    decisions = _Decisions()
    for event in events:
        decisions.add(event)
    return decisions.result()


class _Decisions:
    """``process_decisions``, gathered one event at a time (in any order) as a run commits them.

    Kept as tuples of plain values (lists only in ``result``): a run holds one per decision
    until its end, and tuples of untracked values drop out of the cyclic GC's generations.
    """

    def __init__(self) -> None:
        # stream -> [first sequence seen, its seed (None: none in it), (sequence, decision)...]
        self._streams: dict[StreamId, list[Any]] = {}

    def add(self, event: EventEnvelope) -> None:
        fields = event.__dict__  # (not attributes: pydantic's ``__getattr__`` hook; per event)
        if fields["event_type"].startswith("gpke."):
            sequence = fields["sequence"]
            stream_id = fields["stream_id"]
            stream = self._streams.get(stream_id)
            if stream is None:
                stream = self._streams[stream_id] = [sequence, _seed_of(event), []]
            elif sequence < stream[0]:
                stream[0], stream[1] = sequence, _seed_of(event)
            stream[2].append((sequence, _decision(event)))

    def result(self) -> dict[str, list[list[Any]]]:
        out: dict[str, list[list[Any]]] = {}
        for stream_id, (_, seed, entries) in self._streams.items():
            entries.sort(key=_first)
            out[seed if seed is not None else str(stream_id)] = [
                [event_type, list(sent), *rest] for _, (event_type, sent, *rest) in entries
            ]
        return out


_first = operator.itemgetter(0)


def _seed_of(event: EventEnvelope) -> str | None:
    """The seed a process's first event names (its ``inbound`` message), if it names one."""
    inbound = event.__dict__["payload"].get("inbound")
    if isinstance(inbound, dict):
        get = inbound.get  # ``!s``: str() of each value, as the digest always took them
        return f"{get('sender')!s}:{get('interchange_ref')!s}:{get('message_ref')!s}:{get('ide_ref')!s}"
    return None


def _decision(event: EventEnvelope) -> tuple[Any, ...]:
    """``(event type, messages sent, code, confirmed, due, Fristen)`` as stored: the values in
    their JSON form (an instant as ISO text)."""
    fields = event.__dict__
    payload = fields["payload"]
    sent = tuple(
        [
            f"{v['message_type']}:{v.get('pid') or ''}>{v['recipient']}"
            for value in payload.values()
            # (a list: several of one kind, e.g. a 55038 to each LFZ an Anmeldung supersedes)
            for v in (value if isinstance(value, list) else (value,))
            if isinstance(v, dict) and "message_type" in v and "interchange_ref" in v
        ]
    )
    fristen = payload.get("fristen")
    due = fristen.get("due") if isinstance(fristen, dict) else None
    dues = dict(sorted(due.items())) if isinstance(due, dict) else None
    event_type = fields["event_type"]
    code, confirmed = payload.get("code"), payload.get("confirmed")
    due_at = payload.get("answer_due") or payload.get("due_at")
    # A stored or engine-made payload is JSON data already (the usual case): nothing to convert.
    # (Type sets, not a generator per value: this runs for every decision of a run.)
    if _JSON_SCALARS.issuperset((type(event_type), type(code), type(confirmed), type(due_at))) and (
        dues is None
        or (_STR_TYPE.issuperset(map(type, dues)) and _JSON_SCALARS.issuperset(map(type, dues.values())))
    ):
        return (event_type, sent, code, confirmed, due_at, dues)
    event_type, *rest = to_jsonable_python([event_type, code, confirmed, due_at, dues])
    return (event_type, sent, *rest)


_JSON_SCALARS = frozenset((str, int, bool, float, type(None)))
_STR_TYPE = frozenset((str,))


def decision_digest(decisions: dict[str, list[list[Any]]]) -> str:
    """SHA-256 over every process's decisions, in seed order (independent of the schedule)."""
    return digest_of(encoded_decisions(decisions))


def encoded_decisions(decisions: dict[str, list[list[Any]]]) -> dict[str, bytes]:
    """Each process's decisions as ``decision_digest`` hashes them (``digest_of`` of a union of
    such dicts is the digest of the union: how ``--workers N`` merges its workers' decisions)."""
    encode = _DIGEST_JSON.encode  # one encoder for all seeds (``json.dumps`` makes one per call)
    return {seed: encode([seed, steps]).encode() for seed, steps in decisions.items()}


def awaiting_operator(decisions: dict[str, list[list[Any]]]) -> int:
    """How many processes of ``process_decisions`` wait for an operator (``gpke.awaiting``: an
    acknowledgement or a late answer after the wait began does not end it)."""
    return sum(1 for entries in decisions.values() if awaits_operator(entry[0] for entry in entries))


def digest_of(encoded: dict[str, bytes]) -> str:
    """SHA-256 over ``encoded_decisions``' values in seed order."""
    digest = hashlib.sha256()
    for seed in sorted(encoded):
        digest.update(encoded[seed])
    return digest.hexdigest()


# Exactly ``json.dumps(..., sort_keys=True, default=str)``: the digest's bytes never change.
_DIGEST_JSON = json.JSONEncoder(sort_keys=True, default=str)


async def decisions_in(store_path: Path) -> dict[str, list[list[Any]]]:
    """``process_decisions`` of every event in the LMDB store at ``store_path`` (read only)."""
    async with LmdbStore(store_path) as store:
        return process_decisions(await _all_events(store))


async def _all_events(store: Store) -> list[EventEnvelope]:
    events: list[EventEnvelope] = []
    position = 0
    while batch := await store.read_all(position, 10_000):
        events.extend(batch)
        position = batch[-1].global_position
    return events


# -- the run's view of the store -------------------------------------------------------------


# Loop turns a pipelined run's first commit waits for others to join its write transaction
# (``_RunView._flush``; more gained nothing measurable), and the waiting calls (each one or more
# commits) that end the wait early.
_GATHER_TURNS = 6
_GATHER_LIMIT = 4096

# A receipt stream's last event, but for the partner's CONTRLs on the APERAKs it sent.
_PROCESSED = "inbox.interchange_processed"
_RECEIVED = "inbox.interchange_received"  # a receipt stream's first event


class _RunView:
    """The store, seen through this run: registry bindings, pending deadlines, counters.

    Every commit that passes through is recorded after the store confirmed it, so routing
    decisions that depend on earlier commits (which process an answer belongs to) can be made
    without a store read, and the deadlines a commit sets are known at once.
    """

    def __init__(
        self, store: LmdbStore, on_deadline: Callable[[Deadline], None], gather_turns: int = 0
    ) -> None:
        self._store = store
        # Commits asked for within ``gather_turns`` loop turns of the first, written together
        # (``_flush``).
        self._waiting: list[tuple[Sequence[Commit], asyncio.Future[list[CommitResult | EngineError]]]] = []
        self._gather_turns = gather_turns
        self._turns_left = gather_turns
        self._on_deadline = on_deadline
        self._loop: asyncio.AbstractEventLoop | None = None  # the run's, from the first commit on
        # A store without events at the start (``fresh``) holds nothing this run did not
        # commit: a key not in ``registry`` is unbound and a stream not in ``touched`` is empty,
        # so neither needs a read. ``receipts``: full histories of receipt streams begun in
        # this run, until they are processed (each is loaded twice, by a plain ``Process``).
        self.fresh = False
        self.cache_receipts = False
        self.touched: set[StreamId] = set()
        self.receipts: dict[StreamId, list[EventEnvelope]] = {}
        # Keyed by (tenant's ``.int``, key) and a deadline id's ``.int``: a UUID hashes (and
        # compares) in Python code, an int in C; these dicts are read and written per commit.
        self.registry: dict[tuple[int, str], ProcessIdentity] = {}
        self.stream_keys: dict[StreamId, tuple[str, ...]] = {}
        # A ``tx:`` key not bound yet -> the MaLo keys of the triggers read ahead that may bind it,
        # by their seed (``trigger_seed``; two transactions of one message share one): the
        # process that binds it tells which (its seed, then its MaLo).
        self.tx_keys: dict[tuple[int, str], dict[str, list[tuple[str, ...]]]] = {}
        self.pending: dict[int, Deadline] = {}
        self._by_stream: dict[StreamId, set[int]] = {}
        # ``fresh_journals``: the store held no journal entry at the start (a fresh store may
        # hold imported ones), so ``journals`` holds every entry, as the store reads them back.
        self.fresh_journals = False
        self.journals: dict[tuple[int, str], list[dict[str, Any]]] = {}
        # Entries appended but not read yet, as given: ``journal`` gives them the store's
        # msgpack round trip when their journal is first read (few are: a MaLo's journal is
        # read by its next trigger only; each round trip builds a msgpack unpacker).
        self._unread: dict[tuple[int, str], list[dict[str, Any]]] = {}
        self.events = self.outbox = 0
        # A fresh store's decisions are exactly those this run commits: no read at the end.
        self.decisions = _Decisions()
        # A bug in ``_observe`` (the view no longer matches the store): the run must end.
        self.broken: BaseException | None = None

    def raise_if_broken(self) -> None:
        """Raise the bug that broke the run's view (``broken``), if one did: the run ends."""
        if self.broken is not None:
            raise self.broken

    async def commit(self, commit: Commit) -> CommitResult:
        (result,) = await self.commit_many((commit,))
        if isinstance(result, EngineError):
            raise result
        return result

    async def commit_many(self, commits: Sequence[Commit]) -> list[CommitResult | EngineError]:
        """Write ``commits`` in the next write transaction (within ``gather_turns`` loop turns).

        Every commit of those turns (the actors' batches, receipts, ...) shares one LMDB write
        transaction, run on the loop's thread (``LmdbStore.commit_many_now``): the replay is the
        store's only writer, so handing each batch to the writer thread and back only costs.
        """
        # The run's loop, remembered: ``get_running_loop`` is a system call on 3.11 (getpid).
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[list[CommitResult | EngineError]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((commits, future))
        return await future

    def _flush(self) -> None:
        if self._turns_left and len(self._waiting) < _GATHER_LIMIT:
            # Not yet: the run's other items are a few loop turns from their own commits (a
            # receipt, then the route, then the actor's decision each take a turn). Every write
            # transaction rewrites each B-tree page it touches (LMDB copies on write), and
            # commits of random streams touch different pages, so one transaction for all of
            # them writes fewer pages than one per turn (on the benchmark archive: ~160
            # transactions instead of ~450, ~7 % less CPU per message).
            self._turns_left -= 1
            assert self._loop is not None
            self._loop.call_soon(self._flush)
            return
        self._turns_left = self._gather_turns
        waiting, self._waiting = self._waiting, []
        try:
            results = self._store.commit_many_now([c for commits, _ in waiting for c in commits])
        except BaseException as exc:  # the transaction failed: every caller learns it
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for commits, future in waiting:
            mine = results[start : start + len(commits)]
            start += len(commits)
            try:
                for commit, result in zip(commits, mine, strict=True):
                    if not isinstance(result, EngineError):
                        self._observe(commit, result)
            except BaseException as exc:  # a bug here must end the run, never leave a caller waiting
                self.broken = self.broken or exc
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(mine)

    async def lookup(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        known = self.registry.get((tenant_id.int, key))
        if known is not None or self.fresh:
            return known
        found = await self._store.lookup(tenant_id, key)
        if found is not None:
            self.registry[(tenant_id.int, key)] = found
        return found

    async def journal(self, tenant_id: TenantId, key: str) -> list[dict[str, Any]]:
        """The store's journal ``key``: without a read when the run began without journals."""
        if self.fresh_journals and key and "\x00" not in key:  # else the store refuses the key
            where = (tenant_id.int, key)
            unread = self._unread.pop(where, None)
            if unread is not None:
                self.journals.setdefault(where, []).extend([unpack(pack(entry)) for entry in unread])
            return list(self.journals.get(where, ()))
        return await self._store.journal(tenant_id, key)

    async def append_journal(
        self, tenant_id: TenantId, key: str, entries: Sequence[Mapping[str, Any]]
    ) -> None:
        await self._store.append_journal(tenant_id, key, entries)
        for entry in entries:
            self._journaled(tenant_id, key, entry)

    def _journaled(self, tenant_id: TenantId, key: str, data: Mapping[str, Any]) -> None:
        """Keep an entry appended to a journal (the store accepted it), for ``journal``: which
        reads it back through the store's own msgpack round trip, so a read from here equals a
        read from the store (lists for tuples)."""
        if self.fresh_journals:
            self._unread.setdefault((tenant_id.int, key), []).append(dict(data))

    async def register(self, tenant_id: TenantId, key: str, identity: ProcessIdentity) -> None:
        await self._store.register(tenant_id, key, identity)
        self.registry[(tenant_id.int, key)] = identity

    def _unknown(self, stream_id: StreamId) -> bool:
        return self.fresh and stream_id not in self.touched

    async def load(self, stream_id: StreamId) -> list[EventEnvelope]:
        return await self.load_from(stream_id, 0)

    async def load_from(
        self, stream_id: StreamId, after_seq: int, *, upto: int | None = None
    ) -> list[EventEnvelope]:
        events = self.receipts.get(stream_id)
        if events is not None:
            return [e for e in events if after_seq < e.sequence and (upto is None or e.sequence <= upto)]
        if self._unknown(stream_id):
            return []
        return await self._store.load_from(stream_id, after_seq, upto=upto)

    async def stream_version(self, stream_id: StreamId) -> int:
        events = self.receipts.get(stream_id)
        if events is not None:
            return events[-1].sequence if events else 0
        return 0 if self._unknown(stream_id) else await self._store.stream_version(stream_id)

    async def load_snapshot(self, stream_id: StreamId) -> Snapshot | None:
        if stream_id in self.receipts or self._unknown(stream_id):
            return None
        return await self._store.load_snapshot(stream_id)

    # ``load_state`` and the actors ask the store's *class* for these: defined here, a process
    # activates in one call (and an actor in the loop turn of its first message) instead of
    # reading snapshot, tail and version one await at a time.
    async def load_activation(
        self, stream_id: StreamId, workflow_name: str, state_schema_version: int, upto: int | None = None
    ) -> Activation:
        cached = self._cached_activation(stream_id, upto)
        if cached is not None:
            return cached
        return await self._store.load_activation(stream_id, workflow_name, state_schema_version, upto)

    def load_activation_now(
        self, stream_id: StreamId, workflow_name: str, state_schema_version: int
    ) -> Activation | None:
        cached = self._cached_activation(stream_id, None)
        if cached is not None:
            return cached
        return self._store.load_activation_now(stream_id, workflow_name, state_schema_version)

    def load_activations_now(
        self, requests: Sequence[tuple[StreamId, str, int]]
    ) -> list[Activation | Exception]:
        """``LmdbStore.load_activations_now`` (the actors a loop turn activates): answered here
        where the view knows the answer (as ``load_activation_now``; on a fresh store every new
        process), the rest read from the store in one transaction."""
        known = [self._cached_activation(stream_id, None) for stream_id, _, _ in requests]
        missing = [request for request, cached in zip(requests, known, strict=True) if cached is None]
        if not missing:
            return cast(list[Activation | Exception], known)
        read = iter(self._store.load_activations_now(missing))
        return [next(read) if cached is None else cached for cached in known]

    def _cached_activation(self, stream_id: StreamId, upto: int | None) -> Activation | None:
        """What the store would answer, known without a read (as ``load_from``/``load_snapshot``).

        A receipt stream begun in this run has its whole history here and no snapshot (the
        history is dropped when a snapshot is written); a stream this run never touched on a
        fresh store is empty. None: ask the store.
        """
        events = self.receipts.get(stream_id)
        if events is not None:
            return Activation(None, [e for e in events if upto is None or e.sequence <= upto])
        if self._unknown(stream_id):
            return Activation(None, [])
        return None

    async def add_dead_letter(self, letter: DeadLetter) -> DeadLetter:
        return await self._store.add_dead_letter(letter if letter.key else letter.keyed())

    async def cancel_deadline(self, deadline_id: DeadlineId) -> bool:
        self.forget(deadline_id)
        return await self._store.cancel_deadline(deadline_id)

    async def dead_letter_deadline(
        self, deadline_id: DeadlineId, reason: str, recorded_at: datetime
    ) -> DeadLetter:
        """``Store.dead_letter_deadline``, the letter keyed as every letter of a run is."""
        self.forget(deadline_id)
        return await self._store.dead_letter_deadline(deadline_id, reason, recorded_at, keyed=True)

    def _observe(self, commit: Commit, result: CommitResult) -> None:
        events = result.events
        self.events += len(commit.events)
        self.outbox += len(commit.outbox)
        stream = commit.stream_id
        # A receipt stream's events are no process decisions (``_Decisions`` skips them).
        # (Envelope fields read from ``__dict__``: a model attribute goes through pydantic's
        # ``__getattr__`` hook; this runs for every commit of a run.)
        receipts = bool(events) and events[0].__dict__["workflow_id"].name == RECEIPT_WORKFLOW
        if self.cache_receipts and receipts:
            if commit.snapshot is not None or _PROCESSED in [e.__dict__["event_type"] for e in events]:
                # Done (usually in the stream's first commit, with its receipt): later loads
                # (a re-run) read the store.
                self.receipts.pop(stream, None)
            else:
                cached = self.receipts.get(stream)
                if cached is not None:
                    cached.extend(events)
                elif stream not in self.touched and events[0].__dict__["sequence"] == 1:
                    self.receipts[stream] = list(events)
        self.touched.add(stream)
        if self.fresh and not receipts:
            add = self.decisions.add
            for event in events:
                add(event)
        for entry in commit.journal:
            self._journaled(entry.tenant_id, entry.key, entry.data)
        last: ProcessIdentity | None = None
        tenant = 0
        for key, identity in commit.registry:
            if identity is not last:  # a commit's keys mostly share its process's identity
                last, tenant = identity, identity.__dict__["tenant_id"].int
            tenant_key = (tenant, key)
            self.registry[tenant_key] = identity
            # A transaction is bound once: its dependency is not needed again (only ``tx:``
            # keys have one).
            if key.startswith("tx:"):
                pending = self.tx_keys.pop(tenant_key, None)
                if pending:
                    # The trigger whose process binds it (an earlier one with its IDE may have
                    # been refused and bound nothing: its MaLo is not this process's).
                    self.stream_keys.setdefault(identity.stream_id, _binder(pending, commit, events))
        if commit.cancel_deadline_labels:
            labels = set(commit.cancel_deadline_labels)
            for number in list(self._by_stream.get(stream, ())):
                if self.pending[number].label in labels:
                    self._forget(number)
        for deadline_id in commit.cancel_deadline_ids:
            self._forget(deadline_id.int)
        if commit.fired_deadline_id is not None:
            self._forget(commit.fired_deadline_id.int)
        for deadline in commit.deadlines:
            self.remember(deadline)
            self._on_deadline(deadline)

    def remember(self, deadline: Deadline) -> None:
        """``deadline`` is pending."""
        number = deadline.deadline_id.int
        self.pending[number] = deadline
        self._by_stream.setdefault(deadline.stream_id, set()).add(number)

    def is_pending(self, deadline_id: DeadlineId) -> bool:
        """Whether ``deadline_id`` is pending (neither fired nor cancelled)."""
        return deadline_id.int in self.pending

    def forget(self, deadline_id: DeadlineId) -> None:
        """``deadline_id`` is no longer pending (fired or cancelled)."""
        self._forget(deadline_id.int)

    def _forget(self, number: int) -> None:
        deadline = self.pending.pop(number, None)
        if deadline is not None:
            ids = self._by_stream[deadline.stream_id]
            ids.discard(number)
            if not ids:
                del self._by_stream[deadline.stream_id]

    def key_of(self, stream_id: StreamId) -> tuple[str, ...]:
        """The routing key of the process ``stream_id``: the MaLo key of the trigger that started
        it (``_Pipeline._keys``), else the stream's own; one store read for a process an earlier
        run started (``learn_stored_keys``)."""
        key = self.stream_keys.get(stream_id)
        if key is not None:
            return key
        if self.fresh:
            # Every process of a fresh store started in this run and got its key with its
            # trigger's commit; not cached, so that commit's binding still sets it.
            return ("stream", str(stream_id))
        self.learn_stored_keys((stream_id,))
        return self.stream_keys[stream_id]

    def receipt_key_of(self, stream_id: StreamId) -> tuple[str, ...]:
        """The routing key of the receipt stream ``stream_id``: its interchange's receipt key
        (``_Pipeline._keys``), read from its first event once (in the store: the binding that
        led here was committed), so a CONTRL on a refusal APERAK sent from it waits for every
        earlier copy of that interchange and never writes to the stream beside one."""
        key = self.stream_keys.get(stream_id)
        if key is None:
            self.learn_stored_keys((stream_id,))
            key = self.stream_keys[stream_id]
        return key

    def learn_stored_keys(self, stream_ids: Iterable[StreamId]) -> None:
        """Read the keys of processes in the store (its first event's trigger), one transaction.

        A process an earlier run started must wait under the key this run's items of it use:
        its MaLo, as a trigger for it (a retransmission, an answer's prediction) is keyed. Under
        its stream's key a Frist it left pending would fire beside, not after, an answer
        received before it is due.
        """
        missing = [stream_id for stream_id in dict.fromkeys(stream_ids) if stream_id not in self.stream_keys]
        if missing:
            self.stream_keys.update(
                self._store.read_sync(
                    lambda txn: {stream_id: _stored_key(txn, stream_id) for stream_id in missing}
                )
            )


def _binder(
    pending: dict[str, list[tuple[str, ...]]], commit: Commit, events: Sequence[EventEnvelope]
) -> tuple[str, ...]:
    """The MaLo key of the trigger whose process binds a ``tx:`` key in ``commit``, among the
    ``pending`` ones read ahead: by its seed (its first event's), then by the ``malo:`` key the
    commit binds (two transactions of one message share a seed)."""
    seed = _seed_of(events[0]) if events else None
    candidates = pending.get(seed) if seed is not None else None
    if not candidates:
        candidates = [key for keys in pending.values() for key in keys]
    if len(candidates) > 1:
        claimed = {key[5:].split("#", 1)[0] for key, _ in commit.registry if key.startswith("malo:")}
        for key in candidates:
            if key[2] in claimed:
                return key
    return candidates[0]


def _stored_key(txn: Any, stream_id: StreamId) -> tuple[str, ...]:
    """``_RunView.key_of`` of a process in the store: ``("malo", recipient, MaLo)`` of the trigger
    its first event records (``str`` of the MaLo, as ``_Pipeline._keys`` takes it); of a receipt
    stream, ``("receipt", sender, recipient, 0020)`` of its interchange; else the stream's key
    (no such event: not a trigger's process)."""
    raw = txn.get("events", event_key(str(stream_id), 1))
    record = unpack(raw) if raw is not None else {}
    payload = record.get("payload")
    inbound = payload.get("inbound") if isinstance(payload, dict) else None
    if isinstance(inbound, dict) and isinstance(inbound.get("recipient"), str):
        return ("malo", inbound["recipient"], str(inbound.get("malo")))
    if record.get("event_type") == _RECEIVED and isinstance(payload, dict):
        return ("receipt", str(payload["sender"]), str(payload["recipient"]), str(payload["interchange_ref"]))
    return ("stream", str(stream_id))


class _Forward:
    """A store attribute the view does not define itself, read from the store on each access.

    What a ``__getattr__`` forwarding to the store would answer, without one: a class with a
    Python ``__getattr__`` has every attribute read of its instances go through CPython's
    slow lookup hook, which bypasses the interpreter's attribute caches, and the view's own
    fields are read several times per commit. A non-data descriptor, so the view's instance
    attributes (``pending``) still come first, as they did.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, view: _RunView | None, owner: type[_RunView] | None = None) -> Any:
        if view is None:
            return self
        return getattr(view._store, self._name)


# Every attribute of an ``LmdbStore`` (methods, properties, the settings its ``__init__`` sets)
# that the view does not define: the store the run commits to, seen through the view.
for _name in {*dir(LmdbStore), "path", "durability", "max_batch"} - set(dir(_RunView)):
    if not _name.startswith("__"):
        setattr(_RunView, _name, _Forward(_name))
del _name


# -- the pipelined schedule ------------------------------------------------------------------


@dataclass(eq=False)
class _Item:
    """One unit of work: an interchange to ingest, or a deadline to fire."""

    at: datetime
    rank: int  # interchanges (0) run before deadlines (1) due at the same instant: in time
    seq: int
    keys: tuple[tuple[str, ...], ...] = ()
    exclusive: bool = False
    source: ArchivedInterchange | None = None
    raw: bytes = b""
    parsed: Interchange | EdifactError | None = None
    messages: int = 0
    deadline: Deadline | None = None
    state: str = "queued"  # queued -> ready -> started
    parked: bool = False
    #: Where it stands in its queues: ``(at, rank, seq)`` (set once; compared on every insert).
    order: tuple[datetime, int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.order = (self.at, self.rank, self.seq)


class _Pipeline:
    def __init__(
        self,
        items: list[ArchivedInterchange],
        view: _RunView,
        pipeline: InboundPipeline,
        system: LocalActorSystem,
        clock: VirtualClock,
        tenants: set[str],
        report: ReplayReport,
        window: int,
        until: datetime | None,
        progress: Progress | None,
    ) -> None:
        self.archive, self.view, self.pipeline, self.system = items, view, pipeline, system
        self.clock, self.report, self.window, self.until, self.progress = (
            clock,
            report,
            window,
            until,
            progress,
        )
        self.tenants = {t: TenantId.from_party_id(t) for t in tenants}
        # The IDEs / 0020s every trigger's process may send, for answers in flight (``_target_key``).
        self.predicted: Predictions[tuple[str, ...]] = Predictions()
        self.queues: dict[tuple[str, ...], list[_Item]] = {}
        self.parked: list[tuple[datetime, int, _Item]] = []  # a heap by due instant
        self.ready: list[_Item] = []
        self.running: dict[_Item, asyncio.Task[None]] = {}  # holds the tasks till they are done
        self.finished: list[tuple[_Item, Exception | None]] = []
        self.wakeup = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.queued = 0
        self.seq = 0
        self.next_index = 0
        self.done = 0

    # -- keys --------------------------------------------------------------------------------

    def _keys(self, item: _Item) -> None:
        """Parse the interchange ahead and find its routing keys, or ``exclusive`` when unknown yet.

        The keys come from the parsed values the router will use. A file the parser rejects
        touches its receipt stream (if its UNB is readable) and dead letters only. A
        transaction without a PID, or of a PID no family handles, is refused: no process. An
        answer or acknowledgement whose process is not known yet runs alone.
        """
        assert item.source is not None
        parsed = try_parse_interchange(item.raw, source=item.source.path.name)
        item.parsed = parsed
        if isinstance(parsed, EdifactError):
            item.messages = len(Scan(item.raw).messages)  # UNH..UNT found, as the report counts
            header = _lenient_header(item.raw)
            if header is not None:
                sender, us, control = header[:3]
                item.keys = (("receipt", sender, us, control),)
                if us not in self.tenants and len(self.tenants) == 1:  # answered as ours (one tenant)
                    item.keys += tuple(("receipt", sender, t, control) for t in self.tenants)
            return
        item.messages = len(parsed.messages)
        us, sender, control = parsed.recipient.id, parsed.sender.id, parsed.control_ref
        keys: list[tuple[str, ...]] = [("receipt", sender, us, control)]
        tenant = self.tenants.get(us)
        if tenant is None:  # not for us: a receipt only, ours if we answer it (one tenant)
            keys += [("receipt", sender, t, control) for t in self.tenants if len(self.tenants) == 1]
            item.keys = tuple(keys)
            return
        for message in parsed.messages:
            if message.message_type in ("CONTRL", "APERAK"):
                values = _ack_values(parsed, message, item.at)
                if values is None:
                    continue  # nothing it refers to: a dead letter only
                ref = str(values["referenced_interchange_ref"])
                key = self._target_key(tenant, f"ic:{ref}", "0020", (us, ref))
                if key is None:
                    item.exclusive = True
                    return
                keys.append(key)
                continue
            if message.message_type != "UTILMD":
                continue  # routes no transaction (the pipeline's rule): a dead letter with the receipt
            by = sender  # the family keys (``tx:``) and the workflow seeds by the UNB sender, not NAD+MS
            for tx in message.transactions:
                pid = tx.pid or message.pid
                if not pid or not self.pipeline.handles(pid):
                    continue  # refused by the pipeline: an APERAK with the receipt, a dead letter
                if pid in _ANSWERS:
                    request = tx.request_ref or ""
                    key = self._target_key(tenant, f"ide:{request}", "IDE", (us, request))
                    if key is None:
                        item.exclusive = True
                        return
                    keys.append(key)
                    continue
                # its object, as the family keys its process (a ruhende MaLo's LOC+Z22, not the
                # Kundenanlage's LOC+Z16 beside it) and as a process of an earlier run is keyed
                malo_key = ("malo", us, str(trigger_object(pid, tx)))
                keys += [malo_key, ("tx", by, tx.ide_ref)]
                seed = trigger_seed(by, control, message.reference, tx.ide_ref)
                if tx.ide_ref and tx.ide_qualifier == "24":  # (else refused: it binds nothing)
                    # Several triggers read ahead may share an IDE; the process that binds its
                    # ``tx:`` key takes its own trigger's MaLo key (``_observe``). One key for all
                    # keyed a process by another trigger's MaLo: its Fristen then fired ahead of
                    # its answers.
                    registrants = self.view.tx_keys.setdefault((tenant.int, f"tx:{by}:{tx.ide_ref}"), {})
                    registrants.setdefault(seed, []).append(malo_key)
                self.predicted.add(us, seed, malo_key)
        item.keys = tuple(dict.fromkeys(keys))

    def _target_key(
        self, tenant: TenantId, registry_key: str, kind: RefKind, reference: tuple[str, str]
    ) -> tuple[str, ...] | None:
        """The key of the process an answer names: bound already, or about to be.

        A binding committed in this run gives the process's key. Otherwise the answer may name
        a message a queued trigger is about to send: the references the workflow derives for
        every trigger (``our_references``) predict its key, so the answer waits for that
        trigger alone. Neither: ``None``, the answer runs alone (it is probably unroutable).
        The predictions are derived only when a binding is missing (most answers find one).
        """
        target = self.view.registry.get((tenant.int, registry_key))
        if target is not None:
            if target.workflow_id.name == RECEIPT_WORKFLOW:  # a refusal APERAK the pipeline sent
                return self.view.receipt_key_of(target.stream_id)
            return self.view.key_of(target.stream_id)
        return self.predicted.get(kind, reference)

    # -- the queues ---------------------------------------------------------------------------

    def _horizon(self) -> datetime:
        """Deadlines due before this instant may fire: every item received up to it is queued.

        While files are left, the next file's instant (a deadline due exactly then waits for it:
        what is received at a Frist's due instant is in time); after the last one, just past
        the last instant (or ``until``).
        """
        if self.next_index < len(self.archive):
            return self.archive[self.next_index].received_at
        last = self.archive[-1].received_at if self.archive else datetime.min.replace(tzinfo=UTC)
        return (max(last, self.until) if self.until is not None else last) + _TICK

    def _enqueue(self, item: _Item) -> None:
        # Only interchanges count against the window: deadlines parked until the archive
        # reaches their instant must not hold back the interchanges that get it there.
        self.queued += item.deadline is None
        queues, order = self.queues, item.order
        for key in item.keys:
            queue = queues.get(key)
            if queue is None:
                queues[key] = [item]
                continue
            if queue[-1].order <= order:
                queue.append(item)  # the usual case: later than everything queued under the key
                continue
            index = bisect.bisect_right(queue, order, key=_order_of)
            if index == 0 and queue[0].state != "queued":
                index = 1  # never ahead of an item already under way
            queue.insert(index, item)
        self._check(item)

    def _check(self, item: _Item) -> None:
        if item.state != "queued":
            return
        queues = self.queues
        for key in item.keys:
            if queues[key][0] is not item:
                return
        if item.deadline is not None and item.at >= self._horizon():
            if not item.parked:
                item.parked = True
                heapq.heappush(self.parked, (item.at, item.seq, item))
        else:
            item.state = "ready"
            self.ready.append(item)

    def add_deadline(self, deadline: Deadline) -> None:
        """A commit set ``deadline``: queue its firing under its process's key."""
        self.seq += 1
        key = self.view.key_of(deadline.stream_id)
        self._enqueue(_Item(deadline.due_at, 1, self.seq, keys=(key,), deadline=deadline))

    def _finish(self, item: _Item) -> None:
        self.queued -= item.deadline is None
        for key in item.keys:
            queue = self.queues[key]
            if queue[0] is item:
                del queue[0]  # always so: an item runs only at the head of its queues
            else:
                queue.remove(item)
            if queue:
                self._check(queue[0])
            else:
                del self.queues[key]

    def _unpark(self) -> None:
        """Deadlines parked at the head of their queues fire once every earlier item is queued.

        One that lost its place at a head meanwhile is checked again when it gets back there.
        """
        horizon = self._horizon()
        while self.parked and self.parked[0][0] < horizon:
            item = heapq.heappop(self.parked)[2]
            item.parked = False
            self._check(item)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            while self.next_index < len(self.archive) and self.queued < self.window:
                source = self.archive[self.next_index]
                self.seq += 1
                raw = _read(source, self.report)
                if raw is None:
                    self.next_index += 1
                    continue
                item = _Item(source.received_at, 0, self.seq, source=source, raw=raw)
                self._keys(item)
                if item.exclusive:
                    # Everything before it first (deadlines due by its instant included), then
                    # it alone; only then may the horizon move past it.
                    await self._drain()
                    self.clock.set(max(self.clock(), source.received_at))
                    await self._execute(item)
                    self.next_index += 1
                    self._unpark()
                    continue
                self.next_index += 1
                self.clock.set(max(self.clock(), source.received_at))
                self._enqueue(item)
                self._unpark()
            self._start_ready()
            if not self.running:
                if self.next_index < len(self.archive):
                    raise AssertionError("replay pipeline: nothing runs, nothing may be queued")
                if self.until is not None:
                    self.clock.set(max(self.clock(), self.until))
                self._unpark()
                self._start_ready()
                if not self.running:
                    return
                continue
            await self._wait_one()

    def _start_ready(self) -> None:
        ready, self.ready = self.ready, []
        create_task, run = self.loop.create_task, self._run
        for item in ready:
            item.state = "started"
            self.running[item] = create_task(run(item))

    async def _run(self, item: _Item) -> None:
        """``_execute``, then hand the item (and its failure) to ``_wait_one``.

        No done callback on the task: that would cost a loop turn's handle per item.
        """
        error: Exception | None = None
        try:
            await self._execute(item)
        except Exception as exc:  # a store failure: ``_wait_one`` ends the run with it
            error = exc
        self.finished.append((item, error))
        self.wakeup.set()

    async def _wait_one(self) -> None:
        """Wait until at least one running item is done; release every finished one."""
        while not self.finished:
            self.wakeup.clear()
            await self.wakeup.wait()
        finished, self.finished = self.finished, []
        for item, error in finished:
            del self.running[item]
            if error is not None:
                raise error
            self._finish(item)

    async def _drain(self) -> None:
        """Run everything queued that may run now (parked deadlines stay parked)."""
        self._start_ready()
        while self.running:
            await self._wait_one()
            self._start_ready()

    async def _execute(self, item: _Item) -> None:
        if item.deadline is not None:
            await self._fire(item.deadline)
            return
        assert item.source is not None
        source = item.source
        result = await self.pipeline.ingest(
            item.raw, source.received_at, source=source.path.name, parsed=item.parsed
        )
        item.parsed = None  # done: the window holds only what is still to run
        _count(self.report, source, result, item.messages)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.archive), source.path.name)

    async def _fire(self, deadline: Deadline) -> None:
        if not self.view.is_pending(deadline.deadline_id):
            return  # cancelled (answered) meanwhile
        self.view.forget(deadline.deadline_id)
        identity = identity_of(deadline)
        # Stamped at its due instant, as the sequential schedule's clock stands when it fires
        # (this one's is wherever the queue's horizon is).
        ctx = CommandContext.new(identity.tenant_id, identity.process_id, identity.workflow_id)
        op = Op(TIMEOUT, None, ctx.with_recorded_at(deadline.due_at), True, 1, None, deadline)
        try:
            await self.system.dispatch(identity, op)  # ``execute_timeout`` with a context
            self.report.deadlines_fired += 1
        except Exception as exc:
            if self.view.broken is not None or (
                isinstance(exc, EngineError) and (exc.transient or exc.operational)
            ):
                raise  # (the commit path failed, not the Frist's workflow: it may have fired)
            # As the sequential run's scheduler: refused, or a bug in the workflow's
            # ``on_deadline`` (no retry fixes it): a dead letter, and the run goes on.
            reason = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            self.report.errors.append(_frist_failed(deadline, reason))
            payload = deadline.to_plain()
            await self.view.add_dead_letter(
                DeadLetter(kind="deadline", reason=reason, payload=payload, recorded_at=deadline.due_at)
            )
            await self.view.cancel_deadline(deadline.deadline_id)


_order_of = operator.attrgetter("order")


def _frist_failed(deadline: Deadline, reason: str) -> str:
    """The report's error line for a Frist whose workflow failed (it was dead-lettered)."""
    return f"deadline {deadline.label} of {deadline.stream_id}: {reason}"


def _read(item: ArchivedInterchange, report: ReplayReport) -> bytes | None:
    """The file's bytes; None (and a failure in the report) when it cannot be read."""
    if item.raw is not None:
        return item.raw
    try:
        return _read_file(item.path)
    except OSError as exc:
        report.failures.append(f"{storable_name(item.path.name)}: cannot read: {exc.strerror or exc}")
        return None


_CHUNK = 1 << 16


def _read_file(path: Path) -> bytes:
    """``path.read_bytes()`` in half its CPU: no file object, and an interchange (a few KB)
    is one ``read``. Raises ``OSError`` as ``read_bytes`` does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data  # a short read of a regular file is its end
        chunks = [data]
        while data:
            data = os.read(fd, 1 << 20)
            chunks.append(data)
        return b"".join(chunks)
    finally:
        os.close(fd)


def in_receipt_order(report: ReplayReport, items: Sequence[ArchivedInterchange]) -> None:
    """Sort ``report``'s rejected files and errors as their files are in ``items`` (receipt order).

    A pipelined run finishes files in the order their writes complete (a dead letter's on the
    store's writer thread, a receipt's in the run's next transaction), and ``--workers N``
    merges part by part: without this the report's lists would depend on the schedule.
    """
    index: dict[str, int] = {}
    for position, item in enumerate(items):
        index.setdefault(storable_name(item.path.name), position)
    last = len(items)
    report.rejected.sort(key=lambda name: index.get(name, last))
    report.errors.sort(key=lambda line: index.get(line.partition(": ")[0], last))


def _count(report: ReplayReport, source: ArchivedInterchange, result: IngestResult, messages: int) -> None:
    report.messages += messages
    outcomes = report.outcomes
    for m in result.messages:
        outcomes[m.outcome] += 1
    name = storable_name(source.path.name)  # (as the report's JSON and a terminal can carry it)
    if result.error:
        report.errors.append(f"{name}: {result.error}")
    # (by its path: two files of one name in the archive's folders are two files)
    count_file(report, (str(source.path), source.received_at), result.status)


#: Of a file's pieces' statuses, the one that tells its file's: something refused (the other
#: bytes under a reference, a rejection) before something decided before something received before.
_STATUS_RANK = {"conflict": 3, "rejected": 2, "accepted": 1, "duplicate": 0}


def merged_status(one: str, other: str) -> str:
    """The status of a file two of whose pieces (``--workers``) had ``one`` and ``other``."""
    return one if _STATUS_RANK.get(one, 4) >= _STATUS_RANK.get(other, 4) else other


def count_file(report: ReplayReport, key: tuple[str, datetime], status: str) -> None:
    """Count ``status`` for the file ``key`` (path, receipt instant) in ``report.statuses`` and
    ``rejected``, merged with what its other pieces counted (``merged_status``)."""
    before = report.file_statuses.get(key)
    now = status if before is None else merged_status(before, status)
    if now == before:
        return
    report.file_statuses[key] = now
    if before is not None:
        report.statuses[before] -= 1
        if not report.statuses[before]:
            del report.statuses[before]
    report.statuses[now] += 1
    refused = ("rejected", "conflict")
    if now in refused and before not in refused:
        report.rejected.append(storable_name(Path(key[0]).name))


# -- the entry point -------------------------------------------------------------------------


async def replay_directory(
    directory: Path,
    store_path: Path,
    *,
    tenants: Iterable[str],
    master_data: MasterData | None = None,
    until: datetime | None = None,
    durability: Durability = Durability.NO_SYNC,
    progress: Progress | None = None,
    sequential: bool = False,
    window: int = 512,
    workers: int = 1,
    workflow: GpkeNbWorkflow | None = None,
    ray: bool = False,
    ray_address: str | None = None,
    message_types: Collection[str] | None = None,
) -> ReplayReport:
    """Replay every interchange of ``directory`` into the LMDB store at ``store_path``.

    ``until`` moves the virtual clock on after the last interchange (Fristen due by then fire).
    The default durability is ``NO_SYNC`` (a replay can be re-run; the store is synced on
    close, so the run is durable when this returns); ``FSYNC`` makes every batch durable on its
    own. ``sequential`` runs one interchange at a time; otherwise up to ``window`` items are
    queued at once (see the module doc). ``workers`` > 1 replays the archive's partitions on as
    many OS processes, each into its own store ``store_path/part-<i>-of-<n>`` (see
    ``mako_actors._partition``); the report sums theirs. ``ray``: the same workers as Ray tasks
    on this process's Ray, else on ``ray_address`` or a local instance started for the run,
    pinned to this machine's node (``mako_actors._ray_replay``). ``workflow``: the GPKE workflow to
    decide with (e.g. another ``GpkeConfig``: changed Fristen or code tables). Raises
    ``InvalidArgument`` for a bad archive, tenant or setting and ``StoreError`` when a store
    cannot be opened or written; ``InvalidArgument`` also when ``store_path`` holds a store of
    another worker count (``mako_actors._placement.check_layout``), or a node serves it or
    another replay or import writes it (the run holds its lock, ``_store_lock``). ``message_types`` (e.g.
    ``{"UTILMD", "CONTRL", "APERAK"}``): replay only the files holding a message of one of them
    (and those with none readable: they are rejected as in any run); the others, an operator's
    MSCONS, INVOIC, ... in the same archive, are skipped and counted (``skipped_by_type``)
    instead of each answered with a negative APERAK and kept as a dead letter.
    """
    tenant_ids = check_replay_arguments(directory, store_path, tenants, window, workers)
    check_master_tenants(master_data, tenant_ids, "replay")
    unlisted: list[str] = []
    items = archive(directory, unlisted)
    skipped_by_type: Counter[str] = Counter()
    skipped: list[tuple[ArchivedInterchange, str, str]] = []
    if message_types is not None:
        items, skipped_by_type, skipped = of_types(items, frozenset(message_types))
        if skipped:
            # The archive's clock runs to its last receipt, skipped or not: Fristen due before
            # an MSCONS received last fire as in a run with it (the files only move the clock).
            last = max(item.received_at for item, _, _ in skipped)
            until = last if until is None else max(until, last)
    options = _Options(tenant_ids, master_data, until, durability, sequential, window, workflow)
    if ray:
        from mako_actors._ray_replay import check_ray_settings

        check_ray_settings(ray_address)  # (before the store's directory is made)
    # The whole run holds the store's lock, its part stores' placement reads included (each
    # worker locks its part besides).
    store_path = Path(store_path)
    store_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with held(store_path / STORE_LOCK, "store", "mako-actors replay", _ALONE):
        options = replace(options, locked=store_path)
        report = await _replay_run(items, store_path, options, workers, ray, ray_address, progress)
        report.skipped_interchanges = [(sender, control) for _, sender, control in skipped]
        _remember_skipped(store_path, report.skipped_interchanges)  # (the store's: written locked)
    report.not_in_manifest = [storable_name(name) for name in unlisted]
    report.skipped_by_type = skipped_by_type
    report.skipped_files = [storable_name(item.path.name) for item, _, _ in skipped]
    return report


async def _replay_run(
    items: list[ArchivedInterchange],
    store_path: Path,
    options: _Options,
    workers: int,
    ray: bool,
    ray_address: str | None,
    progress: Progress | None,
) -> ReplayReport:
    """``replay_directory``'s run of ``items`` with the store's lock held: one worker, N OS
    processes or Ray tasks."""
    untaken: _Untaken | None = None
    if workers > 1:
        # Checked before any worker writes: a part refusing alone would leave the others run on.
        # Which part takes a file is known only once the workers read the archive (``_workers``).
        untaken = await _untaken_in_parts(store_path, items, options.tenants, workers)
        options = replace(options, late_checked=True)
    if ray:
        from mako_actors._ray_replay import replay_on_ray

        report = await replay_on_ray(
            items, store_path, options, workers, address=ray_address, untaken=untaken
        )
    elif workers == 1:
        report, _ = await _replay_items(items, store_path, options, progress)
    else:
        from mako_actors._workers import replay_partitions

        report = await replay_partitions(items, store_path, options, workers, untaken=untaken)
    return report


SKIPPED_RECORD = "skipped-interchanges.csv"  # beside the store's data: sender,0020 per line


def _remember_skipped(store_path: Path, skipped: list[tuple[str, str]]) -> None:
    """Append the interchanges this run skipped (``--message-types``) to ``SKIPPED_RECORD`` in
    the store's directory, fsynced: a later run on the same store compares what was sent about
    them as little as this one does (``skipped_interchanges``)."""
    if not skipped:
        return
    with (store_path / SKIPPED_RECORD).open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(skipped)
        handle.flush()
        os.fsync(handle.fileno())


def skipped_interchanges(store_path: Path) -> list[tuple[str, str]]:
    """``(UNB sender, 0020)`` of every interchange a replay into ``store_path`` skipped, in any
    run so far (``_remember_skipped``); empty when none did."""
    try:
        with (store_path / SKIPPED_RECORD).open(newline="", encoding="utf-8") as handle:
            return sorted({(row[0], row[1]) for row in csv.reader(handle) if len(row) == 2})
    except FileNotFoundError:
        return []


_MESSAGE_TYPE = re.compile(r"^[A-Z]{6}$")


def parse_message_types(text: str) -> frozenset[str]:
    """The message types of a comma-separated list (``UTILMD,CONTRL``, any case); ``InvalidArgument``
    naming an entry that is no EDIFACT message type (six letters, UNH 0065) or an empty list."""
    types = [t.strip().upper() for t in text.split(",") if t.strip()]
    bad = [t for t in types if not _MESSAGE_TYPE.match(t)]
    if bad or not types:
        raise InvalidArgument(
            f"message types {text!r}: expected six-letter EDIFACT types such as UTILMD,CONTRL,APERAK"
            + (f", not {', '.join(map(repr, bad))}" if bad else "")
        )
    return frozenset(types)


def of_types(
    items: list[ArchivedInterchange], types: frozenset[str]
) -> tuple[list[ArchivedInterchange], Counter[str], list[tuple[ArchivedInterchange, str, str]]]:
    """The ``items`` whose interchange holds a message of ``types``, or no readable message (the
    replay rejects it as usual); the others counted by their message types (``MSCONS``); and
    those others with their interchange's UNB sender and 0020.

    Reads each file once here (the replay reads the kept ones again; their bytes are not kept,
    an archive may be larger than memory). A file that cannot be read is kept: the replay
    reports it.
    """
    kept: list[ArchivedInterchange] = []
    skipped: Counter[str] = Counter()
    interchanges: list[tuple[ArchivedInterchange, str, str]] = []
    for item in items:
        try:
            raw = item.raw if item.raw is not None else item.path.read_bytes()
        except OSError:
            kept.append(item)
            continue
        scan = Scan(raw)
        kinds = {m.kind.decode("ascii", "replace") for m in scan.messages}
        if kinds and not kinds & types:
            skipped[",".join(sorted(kinds))] += 1
            interchanges.append((item, scan.sender.decode("latin-1"), scan.control.decode("latin-1")))
        else:
            kept.append(item)
    return kept, skipped, interchanges


def check_replay_arguments(
    directory: Path, store_path: Path, tenants: Iterable[str], window: int = 512, workers: int = 1
) -> list[str]:
    """The checks ``replay_directory`` makes before it reads or writes anything; our sorted MP-IDs.

    Raises ``InvalidArgument`` naming what is wrong: a tenant that is not a 13-digit MP-ID (or
    none), a window or worker count below 1, a ``directory`` that is not one, a ``store_path``
    holding a store of another worker count (``mako_actors._placement.check_layout``). Cheap (no
    file is read but the store's layout marker), so a caller can run them before it starts.
    """
    tenant_ids = sorted(set(tenants))
    if not tenant_ids:
        raise InvalidArgument("replay: no tenant given (our MP-ID, e.g. --tenant 9900000000002)")
    for tenant in tenant_ids:
        TenantId.from_party_id(tenant)  # InvalidArgument for anything but an MP-ID
    if window < 1 or workers < 1:
        raise InvalidArgument(f"replay: window and workers must be >= 1, got {window} and {workers}")
    if not directory.is_dir():
        raise InvalidArgument(f"replay: {directory} is not a directory")
    from mako_actors._placement import check_layout

    check_layout(store_path, workers)
    return tenant_ids


@dataclass(frozen=True)
class _Options:
    tenants: list[str]
    master_data: MasterData | None
    until: datetime | None
    durability: Durability
    sequential: bool
    window: int
    workflow: GpkeNbWorkflow | None = None
    #: The archive's late files were checked for every part store (``replay_directory`` with
    #: ``--workers``, ``_Untaken``): a part need not read them again.
    late_checked: bool = False
    #: The store ``replay_directory`` holds the lock of for the whole run (``_store_lock``): a
    #: worker replaying into it (one worker, in a Ray task too) takes no lock of its own.
    locked: Path | None = None


#: Why a replay is refused on a store another holds (``_store_lock.held``).
_ALONE = "replay writes a store no node serves and no other replay writes"


async def _replay_items(
    items: list[ArchivedInterchange], store_path: Path, options: _Options, progress: Progress | None
) -> tuple[ReplayReport, dict[str, bytes]]:
    """One replay of ``items`` (in receipt order) into one store; the report and each process's
    decisions as ``decision_digest`` encodes them (what ``--workers`` merges; encoded once).
    ``InvalidArgument`` if a node serves the store or another replay writes it (``_store_lock``)."""
    if options.locked == Path(store_path):
        return await _replay_locked(items, store_path, options, progress)
    Path(store_path).mkdir(parents=True, exist_ok=True, mode=0o700)
    # A node serving the store (or another replay) would decide beside this run: the Fristen
    # fired and the receipts it reads once at the start would not stay the store's.
    with held(Path(store_path) / STORE_LOCK, "store", "mako-actors replay", _ALONE):
        return await _replay_locked(items, store_path, options, progress)


async def _replay_locked(
    items: list[ArchivedInterchange], store_path: Path, options: _Options, progress: Progress | None
) -> tuple[ReplayReport, dict[str, bytes]]:
    """``_replay_items`` with the store's lock held."""
    sequential, until = options.sequential, options.until
    report = ReplayReport(files=len(items), mode="sequential" if sequential else "pipelined")
    if items:
        report.first, report.last = items[0].received_at, items[-1].received_at
    clock = VirtualClock(items[0].received_at if items else datetime.now(UTC))
    started = time.perf_counter()
    add_deadline: list[Callable[[Deadline], None]] = []
    lmdb = LmdbStore(store_path, durability=options.durability)
    running = Path(store_path) / RUNNING_MARKER
    async with lmdb:
        if running.exists() and await lmdb.read_all(0, 1):
            # Receipts follow routing here: what the run routed last may lack its receipt, and
            # a run on it would decide that traffic again (an LFA's answer applied twice).
            raise InvalidArgument(
                f"{store_path} was left by a replay that did not end (it holds {RUNNING_MARKER}): "
                "its last interchanges may be half-processed, and a run on it would decide some "
                "of them again; replay into a new store"
            )
        fired_until = await _fired_until(lmdb)
        report.calendar_changed = await _calendar_changed(lmdb)
        if fired_until is not None and not options.late_checked:
            await _refuse_late_files([lmdb], items, options.tenants, fired_until, store_path)
        _mark_running(running)
        # (A sequential run has nothing to gather: each interchange waits for its commits.)
        view = _RunView(
            lmdb, lambda d: add_deadline[0](d) if add_deadline else None, 0 if sequential else _GATHER_TURNS
        )
        store = cast(Store, view)
        dead_before = len(await lmdb.dead_letters(limit=10**9))
        # The reference run reads everything from the store, so it also checks the view.
        view.fresh = not sequential and not await lmdb.read_all(0, 1)
        view.cache_receipts = not sequential
        view.fresh_journals = not sequential and lmdb.read_sync(lambda txn: txn.count("journal")) == 0
        workflows = [options.workflow or GpkeNbWorkflow()]
        async with LocalActorSystem(store, workflows, clock=clock, idle_timeout=None) as system:
            pipeline = InboundPipeline(
                store,
                system,
                tenants=options.tenants,
                master_data=options.master_data,
                clock=clock,
                receipt_after_routing=True,  # the schedule never runs one receipt stream twice at once
                record_at_receipt=True,  # stamped as the sequential schedule's clock stands
            )
            if sequential:
                await _sequential(items, store, pipeline, system, clock, report, until, progress)
            else:
                run = _Pipeline(
                    items, view, pipeline, system, clock, set(options.tenants), report, options.window, until,
                    progress,
                )  # fmt: skip
                add_deadline.append(run.add_deadline)
                await _queue_stored_deadlines(lmdb, run)
                await run.run()
            await system.drain()
        # Every Frist due by the run's end has fired: what a later run may still add lies after it.
        ends = [at for at in (items[-1].received_at if items else None, until) if at is not None]
        if ends and (fired_until is None or max(ends) > fired_until):
            await lmdb.save_checkpoint(
                FIRED_UNTIL, 0, {"at": max(ends).isoformat(), "calendar": calendar_version()}
            )
        report.events_appended, report.outbox_enqueued = view.events, view.outbox
        report.processes_created = report.outcomes.get("started", 0)
        report.outbox = await lmdb.outbox_count()
        report.dead_letters = len(await lmdb.dead_letters(limit=10**9)) - dead_before
        report.duration_s = time.perf_counter() - started  # the digest below is not part of it
        decisions = view.decisions.result() if view.fresh else process_decisions(await _all_events(lmdb))
        encoded = encoded_decisions(decisions)
        report.decision_digest = digest_of(encoded)
        report.awaiting_operator = awaiting_operator(decisions)
        in_receipt_order(report, items)
    # Closed, so synced: the run's writes are durable before its mark goes.
    running.unlink()
    fsync_directory(running.parent)
    return report, encoded


#: The checkpoint holding the instant by which a replay into the store fired every Frist due.
FIRED_UNTIL = "replay-fired-until"


@dataclass(frozen=True)
class _Untaken:
    """Files of the archive no part store of a continued ``--workers`` run took, received by the
    latest instant up to which a part fired its Fristen (``_untaken_in_parts``).

    Each part fires its own Fristen, so such a file is late only where a part that takes a piece
    of it fired them by its receipt: a part whose worker died before storing anything takes its
    files as new. Which parts take a file is the walk's to say (``refuse``).
    """

    fired: tuple[datetime | None, ...]  # by part: ``_fired_until`` of its store
    received: dict[str, datetime]  # each file's path (``str``) -> its receipt instant

    def refuse(self, store_path: Path, takers: Mapping[str, Collection[int]]) -> None:
        """``InvalidArgument`` naming the files a part of ``takers`` (the parts that get a piece
        of each file, by path) takes after it fired the Fristen due by their receipt."""
        from mako_actors._workers import part_path

        late: list[str] = []
        past: dict[int, datetime] = {}  # each part taking a late file -> the instant it fired by
        for name, at in self.received.items():
            # A part that fired nothing (None: its worker died before storing any) takes it as new.
            fired = {k: by for k in takers.get(name, ()) if (by := self.fired[k]) is not None and at <= by}
            if fired:
                late.append(Path(name).name)
                past |= fired
        if late:
            n = len(self.fired)
            by_part = ", ".join(
                f"{part_path(store_path, k, n).name} by {at.isoformat()}" for k, at in sorted(past.items())
            )
            raise _late_files(
                store_path,
                late,
                "the instant up to which an earlier replay had fired every Frist due in the part "
                f"store that takes them ({by_part})",
            )


async def _untaken_in_parts(
    store_path: Path, items: list[ArchivedInterchange], tenants: Collection[str], workers: int
) -> _Untaken | None:
    """The files of ``items`` that no part store a ``--workers`` run continues took (a file taken
    by any part is a duplicate), received by the latest instant up to which one fired its
    Fristen; None when there are none. Reads each such file once more; writes nothing."""
    from mako_actors._workers import part_path

    async with contextlib.AsyncExitStack() as stack:
        stores: dict[int, LmdbStore] = {}
        for k in range(workers):
            part = part_path(store_path, k, workers)
            if (part / "data.mdb").is_file():
                stores[k] = LmdbStore(part)
                stack.push_async_callback(stores[k].aclose)
        fired = tuple([await _fired_until(stores[k]) if k in stores else None for k in range(workers)])
        known = [at for at in fired if at is not None]
        if not known:
            return None
        files = await _untaken(list(stores.values()), items, tenants, max(known))
    return _Untaken(fired, {str(item.path): item.received_at for item in files}) if files else None


async def _calendar_changed(store: LmdbStore) -> str | None:
    """``"<before> -> <now>"`` when the last run into ``store`` recorded another Werktag calendar
    than this process has (logged as a warning), else None (the same, or none recorded)."""
    _, state = await store.load_checkpoint_state(FIRED_UNTIL)
    before = state.get("calendar") if isinstance(state, dict) else None
    now = calendar_version()
    if not isinstance(before, str) or before == now:
        return None
    log.warning(
        "%s: its earlier runs computed Fristen on the Werktag calendar %s, this run on %s: "
        "Fristen they left pending fire as they computed them, new ones follow %s",
        store.path, before, now, now,
    )
    return f"{before} -> {now}"


async def _fired_until(store: LmdbStore) -> datetime | None:
    """The instant by which earlier runs into ``store`` fired every Frist due (None: no run yet,
    or one from before this was recorded); ``InvalidArgument`` if its checkpoint is garbled."""
    _, state = await store.load_checkpoint_state(FIRED_UNTIL)
    if state is None:
        return None
    try:
        at = datetime.fromisoformat(state["at"])
        if at.tzinfo is None:
            raise ValueError("no time zone")
    except (TypeError, KeyError, ValueError) as exc:
        raise InvalidArgument(
            f"{store.path}: checkpoint {FIRED_UNTIL!r} is garbled ({state!r}: {exc})"
        ) from None
    return at


async def _refuse_late_files(
    stores: Sequence[LmdbStore],
    items: list[ArchivedInterchange],
    tenants: Collection[str],
    fired_until: datetime,
    store_path: Path,
) -> None:
    """``InvalidArgument`` naming the files received by ``fired_until`` that no earlier run into
    ``stores`` took (``_untaken``): in one run they would have been decided before the Fristen
    that fired after them (an LFA's answer in time would be late now). Writes nothing."""
    late = await _untaken(stores, items, tenants, fired_until)
    if late:
        raise _late_files(
            store_path,
            [item.path.name for item in late],
            f"{fired_until.isoformat()}, when an earlier replay into this store had fired every Frist due",
        )


async def _untaken(
    stores: Sequence[LmdbStore],
    items: list[ArchivedInterchange],
    tenants: Collection[str],
    fired_until: datetime,
) -> list[ArchivedInterchange]:
    """The ``items`` received by ``fired_until`` that no earlier run into ``stores`` took (files a
    run took are duplicates). Reads each such file once more; writes nothing."""
    untaken: list[ArchivedInterchange] = []
    for item in items:
        if item.received_at > fired_until:
            break  # in receipt order
        try:
            raw = item.raw if item.raw is not None else item.path.read_bytes()
        except OSError:
            continue  # reported by the run as unreadable, decides nothing
        for store in stores:
            if await received_before(store, raw, tenants) is not False:
                break  # taken (or never more than a dead letter)
        else:
            untaken.append(item)
    return untaken


def _late_files(store_path: Path, late: list[str], when: str) -> InvalidArgument:
    """The refusal of the files ``late`` (names), received by ``when``."""
    shown = ", ".join(late[:5]) + (f" and {len(late) - 5} more" if len(late) > 5 else "")
    return InvalidArgument(
        f"{store_path}: {len(late)} file(s) of the archive were received by {when}, but are not "
        f"in it ({shown}): decided now, they would come after Fristen that one run fires after "
        "them; replay the whole archive into a new store"
    )


def _mark_running(marker: Path) -> None:
    marker.write_text(f"replay started {datetime.now(UTC).isoformat()} by process {os.getpid()}\n")
    fsync_directory(marker.parent)


async def _queue_stored_deadlines(store: Store, run: _Pipeline) -> None:
    """Deadlines an earlier run left pending, each under its process's key read from the store
    (``_RunView.learn_stored_keys``): ordered against every item of its process, as in one run."""
    deadlines = await store.due_deadlines(_FAR, 10**9)
    run.view.learn_stored_keys(deadline.stream_id for deadline in deadlines)
    for deadline in deadlines:
        run.view.remember(deadline)
        run.add_deadline(deadline)


async def _sequential(
    items: list[ArchivedInterchange],
    store: Store,
    pipeline: InboundPipeline,
    system: LocalActorSystem,
    clock: VirtualClock,
    report: ReplayReport,
    until: datetime | None,
    progress: Progress | None,
) -> None:
    scheduler = DeadlineScheduler(
        store,
        lambda d: system.resume(identity_of(d)).execute_timeout(d),
        clock,
        on_given_up=lambda d, reason: report.errors.append(_frist_failed(d, reason)),
    )
    view = cast(_RunView, store)
    for done, item in enumerate(items, start=1):
        # What is received at a Frist's due instant is in time: it goes first.
        report.deadlines_fired += await scheduler.advance_to(clock, item.received_at, inclusive=False)
        view.raise_if_broken()  # (the scheduler takes a failed Frist for its workflow's)
        raw = _read(item, report)
        if raw is None:
            continue
        parsed = try_parse_interchange(raw, source=item.path.name)
        messages = len(parsed.messages) if isinstance(parsed, Interchange) else len(Scan(raw).messages)
        result = await pipeline.ingest(raw, item.received_at, source=item.path.name, parsed=parsed)
        _count(report, item, result, messages)
        if progress is not None:
            progress(done, len(items), item.path.name)
    # Deadlines due at the last instant (or by ``until``) fire after its traffic, as in the
    # pipelined run. (No item: an empty archive, every file skipped by type, a worker's share
    # without a file; only ``until`` moves the clock then.)
    last = items[-1].received_at if items else until
    if last is not None:
        end = last if until is None else max(last, until)
        report.deadlines_fired += await scheduler.advance_to(clock, end)
        view.raise_if_broken()
