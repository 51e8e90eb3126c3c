"""UNH message versions (S009) per message type and EDI@Energy format version (AHB-FACTS §7).

Outbound messages take their S009 from this table, by the format version in force when they
are sent (the MIGs of a release expire with it: ``MIG_UTILMD_S2.1_…_20260930``); inbound
ingestion can check a received UNH against ``expected_unh_version``. A format version that is
not in the table is refused with ``UnsupportedMessageVersion``: old strings are never sent
under a newer release. Entries carry their confidence (``H``/``M``, AHB-FACTS legend).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from mako_actors.errors import InvalidArgument, register_error
from mako_actors.version import KNOWN_FORMAT_VERSIONS, FormatVersion

__all__ = [
    "UNH_VERSIONS",
    "UnhVersion",
    "UnsupportedMessageVersion",
    "expected_unh_version",
    "sending_format_version",
    "unh_mismatch",
    "unh_version",
]

_BERLIN = ZoneInfo("Europe/Berlin")


@register_error
class UnsupportedMessageVersion(InvalidArgument):
    """No UNH version is known for this message type under this format version; nothing is
    rendered (sending the previous release's strings would be rejected by the partner)."""


@dataclass(frozen=True, slots=True)
class UnhVersion:
    """One S009: ``UTILMD:D:11A:UN:S2.1``; ``confidence`` H or M (AHB-FACTS §7)."""

    message_type: str
    version: str
    release: str
    agency: str
    association_code: str
    confidence: Literal["H", "M"] = "H"

    def __str__(self) -> str:
        return ":".join((self.message_type, self.version, self.release, self.agency, self.association_code))


def _v(text: str, confidence: Literal["H", "M"] = "H") -> UnhVersion:
    kind, version, release, agency, association = text.split(":")
    return UnhVersion(kind, version, release, agency, association, confidence)


_LFW24 = {
    "UTILMD": _v("UTILMD:D:11A:UN:S2.1"),
    "APERAK": _v("APERAK:D:07B:UN:2.1i"),
    "CONTRL": _v("CONTRL:D:3:UN:2.0b"),
}

# AHB-FACTS §7. FV2504/FV2510/FV2604: H (MIG XML names, mirror file list). FV2610: M — only
# the mirror's file names (MIG_UTILMD_S2.2_20261001, MIG_APERAK_2.2_20261001,
# MIG_CONTRL_2.0b_20221001_99991231); the S2.2/2.2 contents were not examined.
UNH_VERSIONS: dict[str, dict[str, UnhVersion]] = {
    "FV2504": _LFW24,
    "FV2510": _LFW24,
    "FV2604": _LFW24,
    "FV2610": {
        "UTILMD": _v("UTILMD:D:11A:UN:S2.2", "M"),
        "APERAK": _v("APERAK:D:07B:UN:2.2", "M"),
        "CONTRL": _v("CONTRL:D:3:UN:2.0b", "M"),
    },
}


def unh_version(message_type: str, format_version: FormatVersion | str) -> UnhVersion:
    """The S009 of ``message_type`` under ``format_version`` (``FV2510`` or ``FV2025-10-01``).

    Raises ``UnsupportedMessageVersion`` naming both when the table has no entry, and
    ``InvalidArgument`` for a malformed format version.
    """
    short = FormatVersion.parse(format_version).short
    entry = UNH_VERSIONS.get(short, {}).get(message_type.upper())
    if entry is None:
        raise UnsupportedMessageVersion(
            f"no UNH version of {message_type} is known for {short} (known: "
            + ", ".join(sorted(UNH_VERSIONS))
            + "); refusing to render rather than send another release's version"
        )
    return entry


def expected_unh_version(message_type: str, format_version: FormatVersion | str) -> str:
    """The S009 a ``message_type`` must carry under ``format_version``, ``UTILMD:D:11A:UN:S2.1``.

    For checking an inbound UNH against the format version in force on its transmission day.
    Raises ``UnsupportedMessageVersion`` like ``unh_version``.
    """
    return str(unh_version(message_type, format_version))


@functools.lru_cache(maxsize=1024)
def unh_mismatch(s009: str, format_version: FormatVersion | str) -> str | None:
    """Why a received UNH S009 (``UTILMD:D:11A:UN:S1.1``) is wrong under ``format_version``, or
    ``None`` when it is the expected one (cached: pure, asked per inbound message for the same
    few versions).

    For inbound checks on the FV in force on the transmission day; a message type or release
    outside the table is a mismatch too (its reason says so). Never raises for the S009 text.
    """
    message_type = s009.split(":", 1)[0]
    try:
        expected = expected_unh_version(message_type, format_version)
    except UnsupportedMessageVersion as exc:
        return str(exc)
    if s009 != expected:
        short = FormatVersion.parse(format_version).short
        return f"UNH {s009} is not {expected}, the version of {message_type} under {short}"
    return None


@functools.lru_cache(maxsize=1024)
def sending_format_version(instant: datetime) -> FormatVersion:
    """The format version whose MIGs apply to a message sent at ``instant`` (Berlin date).

    Instants before the oldest known release (FV2504, the LFW24 go-live) get that release: the
    builders write LFW24 content only, which has no older format. Raises ``InvalidArgument``
    for a naive datetime. Cached per instant (every payload of a command asks with its instant;
    equal instants in other zones are the same Berlin day).
    """
    if instant.tzinfo is None:
        raise InvalidArgument("sending_format_version needs an aware datetime")
    return _sending_format_version_on(instant.astimezone(_BERLIN).date())


@functools.lru_cache(maxsize=1024)
def _sending_format_version_on(day: date) -> FormatVersion:
    """``sending_format_version`` of a Berlin day; cached (every outbound payload asks, and a
    replay's days are few; the release table is fixed at import)."""
    if day < min(KNOWN_FORMAT_VERSIONS.values()):
        return FormatVersion(min(KNOWN_FORMAT_VERSIONS.values()))
    return FormatVersion.in_force(day)
