"""The Fristen table: answer deadlines keyed by (format version, PID), and the ack windows.

Both are configuration (pydantic models with ``source`` and ``version`` fields), not literals
in workflow code: clock times and windows marked † in DOMAIN are unconfirmed and may change per
format version. ``DEFAULT_FRISTEN`` and ``DEFAULT_ACK_WINDOWS`` hold DOMAIN §2's values; pass
other tables to the workflow to override them. Every computed deadline is returned inside a
``FristenRecord`` naming the table and calendar versions, so events can store them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mako_actors.gpke._models import unvalidated
from mako_actors.gpke.calendar import (
    BERLIN,
    calendar_version,
    end_of_werktag,
    is_werktag,
    next_werktag_at,
    uet,
)
from mako_actors.gpke.errors import UnsupportedFormatVersion
from mako_actors.version import KNOWN_FORMAT_VERSIONS, FormatVersion

__all__ = [
    "DEFAULT_ACK_WINDOWS",
    "DEFAULT_FRISTEN",
    "FORMAT_VERSIONS",
    "AckWindows",
    "FristRule",
    "FristenRecord",
    "FristenTable",
    "canonical_fv",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# EDI@Energy names a release by its planned month; FV2504 came into force on 2025-06-06.
# The same releases as ``version.KNOWN_FORMAT_VERSIONS`` (FV2610 since 2026-10-01).
FORMAT_VERSIONS: dict[str, date] = dict(KNOWN_FORMAT_VERSIONS)


@functools.lru_cache(maxsize=256)
def canonical_fv(format_version: FormatVersion | str) -> str:
    """The release name (``FV2504``) for either its short form or its in-force date (cached:
    pure over the fixed release table, asked several times per command).

    ``FormatVersion.parse("FV2504")`` means 2025-04-01 while FV2504 is in force from 2025-06-06
    (``FV2025-06-06``); both name the same release here. Unknown versions keep their short form.
    """
    fv = FormatVersion.parse(format_version)
    if fv.short in FORMAT_VERSIONS:
        return fv.short
    for name, valid_from in FORMAT_VERSIONS.items():
        if valid_from == fv.valid_from:
            return name
    return fv.short


class FristRule(BaseModel):
    """One deadline shape: ``next_werktag_at`` (``at`` on WT n), ``end_of_werktag`` (n) or
    ``duration`` (``minutes`` after receipt). ``unconfirmed`` marks † values."""

    model_config = _FROZEN

    label: str
    kind: Literal["next_werktag_at", "end_of_werktag", "duration"]
    at: time | None = None
    n: int = Field(default=1, ge=1)
    minutes: int | None = None
    meaning: str = ""
    unconfirmed: bool = False

    @model_validator(mode="after")
    def _shape(self) -> FristRule:
        if self.kind == "next_werktag_at" and self.at is None:
            raise ValueError(f"rule {self.label!r}: next_werktag_at needs 'at'")
        if self.kind == "duration" and self.minutes is None:
            raise ValueError(f"rule {self.label!r}: duration needs 'minutes'")
        return self

    def due(self, received_at: datetime) -> datetime:
        """When this Frist ends for a trigger received at ``received_at`` (aware)."""
        if self.kind == "next_werktag_at":
            assert self.at is not None
            return next_werktag_at(received_at, self.at, self.n)
        if self.kind == "end_of_werktag":
            return end_of_werktag(received_at, self.n)
        assert self.minutes is not None
        # Elapsed time: added in UTC, as a Berlin wall clock would gain or lose an hour at DST.
        return received_at.astimezone(UTC) + timedelta(minutes=self.minutes)


class FristenRecord(BaseModel):
    """Deadlines computed for one trigger, with everything needed to reproduce them."""

    model_config = _FROZEN

    format_version: str
    pid: str
    received_at: datetime
    uet: date
    due: dict[str, datetime]
    table_version: str
    calendar_version: str


class FristenTable(BaseModel):
    """Fristen per format version (short name, e.g. ``FV2510``) and PID.

    ``aliases`` lets a newer FV reuse an older one's rules (``FV2604`` → ``FV2510``) until its
    own documents are checked.
    """

    model_config = _FROZEN

    version: str
    source: str
    rules: dict[str, dict[str, tuple[FristRule, ...]]]
    aliases: dict[str, str] = Field(default_factory=dict)

    def _fv_key(self, format_version: FormatVersion | str) -> str:
        short = canonical_fv(format_version)
        key = self.aliases.get(short, short)
        if key not in self.rules:
            raise UnsupportedFormatVersion(
                f"Fristen table {self.version}: no rules for format version {short}"
            )
        return key

    def supports(self, format_version: FormatVersion | str) -> bool:
        """Whether the table has rules for ``format_version``."""
        try:
            self._fv_key(format_version)
        except UnsupportedFormatVersion:
            return False
        return True

    def rules_for(self, format_version: FormatVersion | str, pid: str) -> tuple[FristRule, ...]:
        """The rules of ``pid`` under ``format_version`` (empty when the PID has none)."""
        return self.rules[self._fv_key(format_version)].get(pid, ())

    def rule(self, format_version: FormatVersion | str, pid: str, label: str) -> FristRule:
        """One rule by label; raises ``UnsupportedFormatVersion`` when it is missing."""
        for rule in self.rules_for(format_version, pid):
            if rule.label == label:
                return rule
        raise UnsupportedFormatVersion(
            f"Fristen table {self.version}: no rule {label!r} for PID {pid} in {format_version}"
        )

    def compute(self, format_version: FormatVersion | str, pid: str, received_at: datetime) -> FristenRecord:
        """All deadlines of ``pid`` for a trigger received at ``received_at`` (aware).

        The record is built from the values computed here, without validating them again.
        """
        rules = self.rules_for(format_version, pid)
        day = uet(received_at)
        return unvalidated(FristenRecord)(
            format_version=canonical_fv(format_version),
            pid=pid,
            received_at=received_at,
            uet=day,
            due=_due(rules, received_at, day),
            table_version=self.version,
            calendar_version=calendar_version(),
        )


# The deadlines of one rule set on one ÜT, for rule sets whose every rule counts Werktage from
# the ÜT alone (no ``duration``): every trigger of that day has the same ones. Keyed by the
# rule tuple's id; the entry holds the tuple, so that id stays its own while cached.
_DUE_BY_DAY: dict[tuple[int, date], tuple[tuple[FristRule, ...], dict[str, datetime]]] = {}


def _due(rules: tuple[FristRule, ...], received_at: datetime, day: date) -> dict[str, datetime]:
    """``{rule.label: rule.due(received_at)}``, a new dict each time (records never share one)."""
    cached = _DUE_BY_DAY.get((id(rules), day))
    if cached is not None and cached[0] is rules:
        return dict(cached[1])
    due = {r.label: r.due(received_at) for r in rules}
    if all(r.kind != "duration" for r in rules):
        if len(_DUE_BY_DAY) >= 4096:
            _DUE_BY_DAY.clear()
        _DUE_BY_DAY[(id(rules), day)] = (rules, due)
        return dict(due)
    return due


def _wt1(label: str, hour: int, meaning: str, unconfirmed: bool = False) -> FristRule:
    return FristRule(
        label=label, kind="next_werktag_at", at=time(hour), meaning=meaning, unconfirmed=unconfirmed
    )


_ANMELDUNG = (
    _wt1("info_existing_assignment", 7, "55036 to LFN (row 5)"),
    _wt1("lfa_answer", 9, "55011/55012 from LFA; silence counts as 55011 (row 7)"),
    _wt1("decision", 11, "55002/55003 or 55078/55080 to LFN (rows 4, 8)"),
    _wt1("termination", 12, "55037 to LFA (row 9)"),
    _wt1("future_cancellation", 12, "55038 to LFZ (row 10)"),
)
_ABMELDUNG = (_wt1("decision", 6, "55005/55006 to LF (row 14)"),)
_LFW24 = {"55001": _ANMELDUNG, "55077": _ANMELDUNG, "55004": _ABMELDUNG}

DEFAULT_FRISTEN = FristenTable(
    version="gpke-lfw24-2025.1",
    source="DOMAIN.md §2 (GPKE Teil 2, BK6-22-024 Anlage 1b, consolidated reading version)",
    rules={"FV2504": _LFW24, "FV2510": _LFW24},
    aliases={"FV2604": "FV2510", "FV2610": "FV2510"},  # FV2610: LFW24 Fristen unchanged †
)


class AckWindows(BaseModel):
    """CONTRL and APERAK answer windows † (CONTRL/APERAK AHBs, unconfirmed versions).

    CONTRL: ``contrl_minutes`` after receipt. APERAK for electricity UTILMD/ORDERS:
    ``aperak_minutes`` after receipt; received on a Saturday → next day ``saturday_until``;
    received on another non-Werktag → also ``aperak_minutes`` (the earliest reading †).
    Other electricity messages: ``other_at`` on WT1.
    """

    model_config = _FROZEN

    version: str
    source: str
    contrl_minutes: int = 360
    aperak_minutes: int = 45
    saturday_until: time = time(12)
    other_at: time = time(12)

    def contrl_due(self, received_at: datetime) -> datetime:
        """When the CONTRL for an interchange received at ``received_at`` is due."""
        return received_at.astimezone(UTC) + timedelta(minutes=self.contrl_minutes)  # elapsed

    def aperak_due(self, received_at: datetime, *, utilmd_or_orders: bool = True) -> datetime:
        """When the APERAK for a message received at ``received_at`` is due."""
        if not utilmd_or_orders:
            return next_werktag_at(received_at, self.other_at)
        day = uet(received_at)
        if not is_werktag(day) and day.weekday() == 5:
            return datetime.combine(day + timedelta(days=1), self.saturday_until, tzinfo=BERLIN)
        return received_at.astimezone(UTC) + timedelta(minutes=self.aperak_minutes)  # elapsed

    def as_record(self) -> Mapping[str, str]:
        return {"version": self.version, "source": self.source}


DEFAULT_ACK_WINDOWS = AckWindows(
    version="ack-windows-2025.1†",
    source="DOMAIN.md §2 acknowledgement windows (CONTRL/APERAK AHB, unconfirmed)",
)
