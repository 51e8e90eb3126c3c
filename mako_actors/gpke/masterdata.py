"""The initial import of supply assignments into the store (``mako-actors masterdata import``).

The import is the starting point of each MaLo's supply journal (``gpke.supply``); confirmed
Anmeldungen and Abmeldungen change the assignments from there on, so the store, not the file,
is the truth after the import. Accepted files:

- JSON, a list of assignments ``[{"malo", "supplier", "from"?, "until"?}, ...]``, or the
  per-MaLo shape of ``replay --master-data``: ``{"<MaLo>": {"current", "future"?, "future_start"?}}``;
- CSV with the header ``malo,supplier,from,until`` (``from``/``until`` may be empty).

Files are UTF-8 (a byte order mark is allowed); another encoding is refused, naming the file.

Instants are ISO 8601 with an offset, or a date ``YYYY-MM-DD`` (00:00 Europe/Berlin, the start
of a MaKo day). The rest of a MaLo's master data (``measurement``, ZW6/ZW7, which is checked;
``eeg_kwkg``, ``msb``, ``tranche_of`` and every other field of the per-MaLo shape or extra CSV
column; the register ``bilanzkreise``) is not imported: the supply journal holds assignments
only, so the report counts the MaLos giving each such field (``not_imported``) and the caller
says so; the same file given as ``serve``'s ``master_data`` or ``replay --master-data`` carries
it. Everything is checked before anything is
written: a bad row raises ``InvalidArgument`` naming the file and the row, and the store is left
untouched. Re-importing the same file appends nothing (an identical entry already in the journal
is skipped).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from mako_actors.errors import InvalidArgument
from mako_actors.gpke.calendar import BERLIN, is_midnight_berlin
from mako_actors.gpke.supply import MEASUREMENTS, SupplyFact, supply_key
from mako_actors.gpke.validation import is_valid_malo_id
from mako_actors.ids import TenantId
from mako_actors.store import Journal

__all__ = [
    "CheckedImport",
    "ImportReport",
    "check_import",
    "import_assignments",
    "import_checked",
    "load_assignments",
]


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: rows read, entries appended, entries already present, and per field
    of master data the file gives but the journal does not take, how many MaLos give it
    (``not_imported``; ``"bilanzkreise"``: 1 for the register; see the module doc)."""

    rows: int
    appended: int
    skipped: int
    malos: int
    not_imported: dict[str, int] = field(default_factory=dict)

    @property
    def measurements_not_imported(self) -> int:
        """The MaLos whose ``measurement`` (ZW6/ZW7) the file gives."""
        return self.not_imported.get("measurement", 0)


#: What an assignment row holds (the list and CSV shapes); the rest of a row is master data.
_ROW_FIELDS = frozenset({"malo", "supplier", "from", "until"})
#: What an entry of the per-MaLo shape holds that the journal takes.
_ENTRY_FIELDS = frozenset({"current", "future", "future_start"})


def _instant(value: Any, where: str) -> datetime | None:
    """A supply boundary: a date (00:00 Europe/Berlin) or an instant with its offset that is
    00:00 Europe/Berlin (a Zuordnung begins and ends at midnight, DOMAIN.md Conventions)."""
    if value in (None, ""):
        return None
    return boundary(str(value).strip(), where)


def boundary(text: str, where: str) -> datetime:
    """``text`` as a supply boundary (see ``_instant``); ``InvalidArgument`` naming ``where``."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), BERLIN)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{where}: {text!r} is not an ISO 8601 date or instant") from None
    if parsed.tzinfo is None:
        raise InvalidArgument(f"{where}: {text!r} has no UTC offset")
    if not is_midnight_berlin(parsed):
        # (01:00 CET taken as the start asked the supplier of the day before, and dated a
        # 55038 at that hour)
        raise InvalidArgument(f"{where}: {text!r} is not 00:00 Europe/Berlin, when a Zuordnung begins")
    return parsed


def _fact(row: Mapping[str, Any], where: str) -> tuple[str, SupplyFact]:
    malo = str(row.get("malo") or "").strip()
    supplier = str(row.get("supplier") or "").strip()
    if not is_valid_malo_id(malo):
        raise InvalidArgument(f"{where}: MaLo-ID {malo!r} is not 11 digits with a valid check digit")
    if not (supplier.isdigit() and len(supplier) == 13):
        raise InvalidArgument(f"{where}: supplier {supplier!r} is not a 13-digit MP-ID")
    start = _instant(row.get("from"), where)
    until = _instant(row.get("until"), where)
    if start is not None and until is not None and until <= start:
        raise InvalidArgument(f"{where}: until {until.isoformat()} is not after from {start.isoformat()}")
    return malo, SupplyFact(kind="assigned", supplier=supplier, at=start, until=until)


def _measured(row: Mapping[str, Any], where: str) -> bool:
    """Whether ``row`` gives a measurement; ``InvalidArgument`` for one that is not ZW6/ZW7."""
    value = row.get("measurement")
    if value in (None, ""):
        return False
    if value not in MEASUREMENTS:
        expected = ", ".join(MEASUREMENTS)
        raise InvalidArgument(f"{where}: field 'measurement' is {value!r}, expected one of {expected}")
    return True


_Extras = list[tuple[str, str, Mapping[str, Any]]]  # (where, MaLo, its fields not imported)


def _rows_of_json(raw: Any, name: str) -> tuple[list[tuple[str, Mapping[str, Any]]], _Extras]:
    """The assignment rows of a JSON file, and per entry the master data the journal does not take."""
    extras: _Extras = []
    if isinstance(raw, list):
        rows = [(f"{name}: entry {i + 1}", row) for i, row in enumerate(raw) if isinstance(row, Mapping)]
        return rows, extras
    if isinstance(raw, Mapping):
        rows = []
        for malo, entry in raw.items():
            if malo == "bilanzkreise":  # the register of Zuordnungsermächtigungen, no MaLo
                extras.append((f"{name}: 'bilanzkreise'", "", {"bilanzkreise": entry}))
                continue
            if malo == "complete":  # "lists every MaLo": the file's, serve and replay read it
                extras.append((f"{name}: 'complete'", "", {"complete": entry}))
                continue
            if malo == "tenant":  # the NB the file is of: ``check_import`` compares it with --tenant
                continue
            if not isinstance(entry, Mapping):
                raise InvalidArgument(f"{name}: MaLo {malo}: expected an object")
            try:  # a misspelt field: refused here as by serve and replay, never a note only
                check_master_fields(str(malo), dict(entry))
            except ValueError as exc:
                raise InvalidArgument(f"{name}: {exc}") from None
            where = f"{name}: MaLo {malo}"
            extras.append((where, malo, {k: v for k, v in entry.items() if k not in _ENTRY_FIELDS}))
            future, future_start = entry.get("future"), entry.get("future_start")
            if future_start not in (None, ""):
                _instant(future_start, f"{where}: 'future_start'")  # as serve and replay read it
            if entry.get("current"):
                until = future_start if future else None
                rows.append((where, {"malo": malo, "supplier": entry["current"], "until": until}))
            if future:
                if not future_start:
                    raise InvalidArgument(f"{where}: 'future' needs 'future_start'")
                rows.append((where, {"malo": malo, "supplier": future, "from": future_start}))
        return rows, extras
    raise InvalidArgument(f"{name}: expected a JSON list of assignments or an object by MaLo")


def load_assignments(path: Path) -> list[tuple[str, SupplyFact]]:
    """``(MaLo, assigned fact)`` per row of a JSON or CSV file; ``InvalidArgument`` on any bad row."""
    return _load(path)[0]


def _load(path: Path) -> tuple[list[tuple[str, SupplyFact]], dict[str, int]]:
    """``load_assignments`` and per field of master data not imported the MaLos giving it."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # (a BOM, as Excel writes it, is not data)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"{path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 (e.g. Excel's 'CSV UTF-8')"
        ) from None
    name = str(path)
    extras: _Extras = []
    if path.suffix.lower() == ".json":
        try:
            rows, extras = _rows_of_json(json.loads(text), name)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{name}: not JSON: {exc}") from None
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = {"malo", "supplier"} - set(reader.fieldnames or ())
        if missing:
            raise InvalidArgument(f"{name}: CSV header lacks {sorted(missing)} (malo,supplier,from,until)")
        rows = []
        for i, line in enumerate(reader):
            where = f"{name}: line {i + 2}"
            beyond = line.pop(None, None)  # ``DictReader``'s key for values past the header's columns
            if beyond and any(str(v).strip() for v in beyond):
                raise InvalidArgument(f"{where}: more values than the header has columns: {beyond!r}")
            rows.append((where, line))
    else:
        raise InvalidArgument(f"{name}: expected a .json or .csv file")
    facts: list[tuple[str, SupplyFact]] = []
    for where, row in rows:
        rest = {k: v for k, v in row.items() if k not in _ROW_FIELDS}
        extras.append((where, str(row.get("malo") or "").strip(), rest))
        if "supplier" in row or not any(v not in (None, "") for v in rest.values()):
            facts.append(_fact(row, where))  # (else a row of master data only)
    return facts, _not_imported(extras)


def _not_imported(extras: _Extras) -> dict[str, int]:
    """Per field given (not empty), the MaLos giving it; a bad ``measurement`` raises
    ``InvalidArgument`` naming where."""
    by_field: dict[str, set[str]] = {}
    for where, malo, fields in extras:
        for key, value in fields.items():
            if value in (None, "") or (key == "measurement" and not _measured(fields, where)):
                continue
            by_field.setdefault(key, set()).add(malo)
    return {key: len(malos) for key, malos in sorted(by_field.items())}


#: Every field of a MaLo's (or Tranche's) master-data entry ``replay.load_master_data`` reads.
MASTER_FIELDS = frozenset({
    "current", "future", "future_start", "measurement", "tranche_of", "tranche_basis", "tranche_percent",
    "in_operation_from", "out_of_market_from", "esv_from", "quarter_hour_metering", "generating", "ims",
    "kundenanlage", "virtual_summenzaehler", "eeg_kwkg", "ausfallverguetung", "netzlokationen", "msb",
    "msb_role", "gmsb", "messlokationen",
})  # fmt: skip


def check_master_fields(malo: str, entry: Any) -> None:
    """``ValueError`` for an entry that is no object, or names a field nobody reads: a misspelt
    flag would otherwise switch its check off without a word."""
    if not isinstance(entry, dict):
        raise ValueError(f"MaLo {malo}: expected an object of fields, got {entry!r}")
    unknown = sorted(set(entry) - MASTER_FIELDS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], MASTER_FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"MaLo {malo}: unknown field(s) {', '.join(map(repr, unknown))}{hint}; known: "
            f"{', '.join(sorted(MASTER_FIELDS))}"
        )


@dataclass(frozen=True, slots=True)
class CheckedImport:
    """A file's assignments for one tenant, every row checked (``check_import``); nothing written."""

    tenant_id: TenantId
    facts: list[tuple[str, SupplyFact]]
    not_imported: dict[str, int]


def check_import(tenant: str, path: Path) -> CheckedImport:
    """Every check of an import, before a store is opened: the tenant (an MP-ID), the file, each row.

    Raises ``InvalidArgument`` naming what is wrong (the file and row; a file that is not UTF-8).
    Reads ``path`` only.
    """
    tenant_id = TenantId.from_party_id(tenant)
    facts, not_imported = _load(path)
    named = _file_tenant(path)
    if named is not None and named != tenant:
        raise InvalidArgument(f"{path}: the master data are of tenant {named!r}, not of --tenant {tenant}")
    starts: dict[tuple[str, object], str | None] = {}
    for malo, fact in facts:
        if fact.kind != "assigned":
            continue
        other = starts.setdefault((malo, fact.at), fact.supplier)
        if other != fact.supplier:
            # Two suppliers from one instant: the later row would silently win the MaLo.
            since = "the start" if fact.at is None else fact.at.isoformat()
            raise InvalidArgument(
                f"{path}: MaLo {malo} is assigned to {other} and to {fact.supplier} from {since}"
            )
    return CheckedImport(tenant_id, facts, not_imported)


#: The supply facts processes write when they decide a supply (see ``gpke.supply``).
_DECIDED = frozenset({"started", "ended"})


def _decided_or_deciding(entries: list[dict[str, Any]]) -> bool:
    """Whether a MaLo's journal holds a decided supply or a claim not yet released or started."""
    open_claims: set[Any] = set()
    for entry in entries:
        kind = entry.get("kind")
        if kind in _DECIDED:
            return True
        if kind == "claimed":
            open_claims.add(entry.get("process"))
        elif kind == "released":
            open_claims.discard(entry.get("process"))
    return bool(open_claims)


def _file_tenant(path: Path) -> Any:
    """The ``"tenant"`` a master data JSON object names (``_load`` read the file already)."""
    if path.suffix.lower() != ".json":
        return None
    raw = json.loads(path.read_text(encoding="utf-8-sig"))
    return raw.get("tenant") if isinstance(raw, Mapping) else None


async def import_assignments(store: Journal, tenant: str, path: Path) -> ImportReport:
    """Append the assignments of ``path`` to the MaLos' supply journals of ``tenant`` (MP-ID).

    All rows are checked first (``InvalidArgument``, nothing written); entries already in a
    journal are skipped, so re-running an import is harmless.
    """
    return await import_checked(store, check_import(tenant, path))


async def import_checked(store: Journal, checked: CheckedImport) -> ImportReport:
    """``import_assignments`` of what ``check_import`` checked (so a caller can check before it
    opens the store); entries already in a journal are skipped. ``InvalidArgument`` (nothing
    written) if a MaLo with new entries has a supply its processes decided, or an open claim."""
    tenant_id, facts = checked.tenant_id, checked.facts
    by_malo: dict[str, list[dict[str, Any]]] = {}
    for malo, fact in facts:
        by_malo.setdefault(malo, []).append(fact.to_entry())
    appended = skipped = 0
    to_append: list[tuple[str, list[dict[str, Any]]]] = []
    decided: list[str] = []
    for malo, entries in by_malo.items():
        present = await store.journal(tenant_id, supply_key(malo))
        new = [e for e in entries if e not in present]
        skipped += len(entries) - len(new)
        if new and _decided_or_deciding(present):
            # Processes decided on this MaLo already (an Anmeldung confirmed, an Abmeldung): an
            # assignment appended after them would override them (the last one covering a
            # date wins), and the next Anmeldung would ask a supplier told its supply ended.
            # An open Anmeldung took its LFA and future suppliers from the journal before: its
            # answers would go by that. (A released claim decided nothing.)
            decided.append(malo)
        elif new:
            to_append.append((malo, new))
    if decided:
        named = ", ".join(decided[:5]) + (f" and {len(decided) - 5} more" if len(decided) > 5 else "")
        raise InvalidArgument(
            f"masterdata import: MaLo {named}: processes in this store decided on its supply already, "
            "or an Anmeldung of it is open; an import is the starting point and would override "
            "their decisions (nothing imported)"
        )
    for malo, new in to_append:
        await store.append_journal(tenant_id, supply_key(malo), new)
        appended += len(new)
    return ImportReport(len(facts), appended, skipped, len(by_malo), dict(checked.not_imported))
