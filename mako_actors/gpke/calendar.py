"""Werktag arithmetic on the BDEW calendar (via ``bdew-datetimes``), Europe/Berlin.

Every function is pure and takes aware datetimes; none reads a clock. The ÜT (day of
transmission) is the Berlin date of the *receipt instant* recorded at the transport boundary.
Holiday rules are not written here: they come from ``bdew-datetimes`` on top of ``holidays``,
whose versions ``calendar_version()`` reports so each computed Frist can record them.
"""

from __future__ import annotations

import importlib.metadata
from datetime import date, datetime, time, timedelta
from functools import cache, lru_cache
from types import ModuleType
from zoneinfo import ZoneInfo

from mako_actors.errors import InvalidArgument

__all__ = [
    "BERLIN",
    "calendar_version",
    "end_of_werktag",
    "is_midnight_berlin",
    "is_month_start",
    "is_werktag",
    "last_werktag_before",
    "latest_uet_for",
    "month_vorlauffrist_met",
    "next_werktag",
    "next_werktag_at",
    "uet",
    "vorlauffrist_met",
]

BERLIN = ZoneInfo("Europe/Berlin")


@cache
def _bdew() -> ModuleType:
    """``bdew_datetimes``, imported on first use: it loads ``holidays`` with every country
    (~0.2 s), which a process that computes no Werktag (a replay's parent, a CLI command
    that reads the store) never needs."""
    import bdew_datetimes

    return bdew_datetimes


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{name} must be timezone-aware, got {value!r}")
    return value


@cache
def calendar_version() -> str:
    """The calendar's data version, e.g. ``bdew-datetimes==0.12.0;holidays==0.109``.

    Stored with every computed Frist so a replay can tell which calendar produced it.
    """
    parts = []
    for dist in ("bdew-datetimes", "holidays"):
        try:
            parts.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist}==unknown")
    return ";".join(parts)


@lru_cache(maxsize=4096)
def is_werktag(day: date) -> bool:
    """Whether ``day`` is a Werktag on the BDEW calendar (DOMAIN §3.1; cached: the calendar is
    fixed, and every APERAK window asks)."""
    return bool(_bdew().is_bdew_working_day(day))


def uet(received_at: datetime) -> date:
    """The Übertragungstag: the Berlin calendar date of the receipt instant.

    Cached by instant: each trigger asks for it once per Frist. (Datetimes of one zone compare
    by wall time, ignoring ``fold``, so the second of a repeated hour is not cached.)
    """
    if received_at.fold:
        return _uet(received_at)
    return _cached_uet(received_at)


def _uet(received_at: datetime) -> date:
    return _aware(received_at, "received_at").astimezone(BERLIN).date()


# Equal keys (fold 0) are one instant, so one Berlin date; a naive value raises and is not cached.
_cached_uet = lru_cache(maxsize=4096)(_uet)


@lru_cache(maxsize=4096)
def next_werktag(day: date, n: int = 1) -> date:
    """The n-th Werktag strictly after ``day`` (``day`` itself never counts).

    Cached: the BDEW calendar is fixed, and every trigger asks for the same few days.
    """
    if n < 1:
        raise InvalidArgument(f"next_werktag: n must be >= 1, got {n}")
    for _ in range(n):
        day = _bdew().get_next_working_day(day)
    return day


def next_werktag_at(received_at: datetime, at: time, n: int = 1) -> datetime:
    """``at`` (Berlin wall clock) on the n-th Werktag after the ÜT of ``received_at``.

    "By 11:00 on the first Werktag after the day of transmission"; the ÜT never counts, also
    when it is itself no Werktag. Returns an aware Berlin datetime (CET/CEST resolved).
    """
    return datetime.combine(next_werktag(uet(received_at), n), at, tzinfo=BERLIN)


def end_of_werktag(received_at: datetime, n: int = 1) -> datetime:
    """00:00 Berlin of the day after the n-th Werktag after the ÜT (an exclusive bound)."""
    day = next_werktag(uet(received_at), n) + timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=BERLIN)


@lru_cache(maxsize=4096)
def last_werktag_before(day: date) -> date:
    """The last Werktag strictly before ``day`` (cached, as ``next_werktag``)."""
    result: date = _bdew().get_previous_working_day(day)
    return result


def is_midnight_berlin(value: datetime) -> bool:
    """Whether an aware instant is 00:00 Europe/Berlin (an electricity day boundary).

    Cached by instant as ``uet`` (every trigger asks, and its dates are a few day boundaries).
    """
    if value.fold:
        return _is_midnight_berlin(value)
    return _cached_is_midnight_berlin(value)


def _is_midnight_berlin(value: datetime) -> bool:
    local = _aware(value, "value").astimezone(BERLIN)
    return local.timetz().replace(tzinfo=None) == time(0)


_cached_is_midnight_berlin = lru_cache(maxsize=4096)(_is_midnight_berlin)


def _berlin_date(value: datetime, name: str) -> date:
    """The Berlin calendar date of an aware instant (``uet``'s cache); ``InvalidArgument``
    naming ``name`` for a naive one."""
    return uet(_aware(value, name))


def latest_uet_for(zuordnungsbeginn: datetime) -> date:
    """The latest ÜT for an Anmeldung: the day before the last WT before Zuordnungsbeginn."""
    return last_werktag_before(_berlin_date(zuordnungsbeginn, "zuordnungsbeginn")) - timedelta(days=1)


def vorlauffrist_met(received_at: datetime, zuordnungsbeginn: datetime) -> bool:
    """Whether ``ÜT < last WT before Zuordnungsbeginn`` holds (DOMAIN §3.3; no back-dating)."""
    start = _berlin_date(zuordnungsbeginn, "zuordnungsbeginn")
    return uet(received_at) < last_werktag_before(start)


def werktage_vorlauffrist_met(received_at: datetime, zuordnungsbeginn: datetime, werktage: int) -> bool:
    """Whether the ÜT is at the latest the ``werktage``-th Werktag before the Zuordnungsbeginn.

    E_0622 step 440, an EEG/KWKG MaLo's verkürzter Wechsel: "Eingang spätestens 5 WT vor
    Zuordnungsbeginn" (start Monday 1 March: Monday 22 February at the latest, the fünftletzte
    Werktag of the month before, as § 21c EEG words it).
    """
    day = _berlin_date(zuordnungsbeginn, "zuordnungsbeginn")
    for _ in range(werktage):
        day = last_werktag_before(day)
    return uet(received_at) <= day


def is_month_start(value: datetime) -> bool:
    """Whether an aware instant is the 1st of a calendar month, 00:00 Europe/Berlin."""
    return is_midnight_berlin(value) and _berlin_date(value, "value").day == 1


def month_vorlauffrist_met(received_at: datetime, zuordnungsbeginn: datetime) -> bool:
    """Whether the ÜT is at least one calendar month before the Zuordnungsbeginn's Berlin date.

    E_0622's "Vorlauffrist von einem Monat" (steps 430/630/810): start 1 July, ÜT 1 June at the
    latest. The EBD does not say whether the boundary day counts; here it does †. A start on
    the 31st looks back to the last day of a shorter month.
    """
    return uet(received_at) <= months_back(_berlin_date(zuordnungsbeginn, "zuordnungsbeginn"), 1)


def months_back(day: date, months: int) -> date:
    """The same day ``months`` calendar months before ``day`` (the 31st of a shorter month is its
    last day: 31 March, one month back, is 28 or 29 February)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    days_in_month = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, min(day.day, days_in_month))


def esv_began_within(esv_from: datetime, end: datetime, months: int = 3) -> bool:
    """Whether an Ersatz-/Grundversorgung beginning at ``esv_from`` began within ``months``
    calendar months before a supply's ``end`` (E_0607 step 80; Berlin dates, both boundary days
    counted †)."""
    end_day = _berlin_date(end, "end")
    return months_back(end_day, months) <= _berlin_date(esv_from, "esv_from") <= end_day
