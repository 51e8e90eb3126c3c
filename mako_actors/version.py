"""Versions: EDI@Energy format versions, workflow ids and expected stream versions.

``FormatVersion`` is the EDI@Energy release set in force on a date (``FV2025-10-01``, or the
short form ``FV2510`` for the first of that month); versions order by date. ``WorkflowId`` is
a workflow name plus the format version a process started under; it is stored with every
event, so a process keeps its rules when a newer format version comes into force.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import Enum
from functools import total_ordering
from typing import Any, ClassVar, Self

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from mako_actors.errors import InvalidArgument

_LONG = re.compile(r"^FV(\d{4})-(\d{2})-(\d{2})$")
_SHORT = re.compile(r"^FV(\d{2})(\d{2})$")
_WORKFLOW_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def _str_schema(cls: type[Any]) -> core_schema.CoreSchema:
    return core_schema.no_info_plain_validator_function(
        lambda v: v if isinstance(v, cls) else cls.parse(v),
        serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="always"),
        json_schema_input_schema=core_schema.str_schema(),
    )


# The releases we know, with their go-live (DOMAIN §1: FV2504 went live with LFW24 on
# 2025-06-06, not on the 1st). Short names resolve through this table; others mean the 1st.
# FV2610 is in force since 2026-10-01 (AHB-FACTS §7: UTILMD S2.2, APERAK 2.2 from 20261001).
KNOWN_FORMAT_VERSIONS: dict[str, date] = {
    "FV2504": date(2025, 6, 6),
    "FV2510": date(2025, 10, 1),
    "FV2604": date(2026, 4, 1),
    "FV2610": date(2026, 10, 1),
}
_LABELS = {valid: label for label, valid in KNOWN_FORMAT_VERSIONS.items()}


@total_ordering
@dataclass(frozen=True, slots=True)
class FormatVersion:
    """An EDI@Energy format version, in force from ``valid_from`` (00:00 Europe/Berlin).

    ``FV2504`` and ``FV2025-06-06`` are the same release: short names of known releases
    resolve to their real go-live date (``KNOWN_FORMAT_VERSIONS``), others to the 1st of the
    month.
    """

    valid_from: date

    @classmethod
    def in_force(cls, day: date) -> FormatVersion:
        """The newest known format version in force on ``day`` (a Berlin calendar date).

        Raises ``InvalidArgument`` for a day before the oldest known release.
        """
        valid = [v for v in KNOWN_FORMAT_VERSIONS.values() if v <= day]
        if not valid:
            raise InvalidArgument(
                f"no known format version is in force on {day.isoformat()}; known: "
                + ", ".join(sorted(KNOWN_FORMAT_VERSIONS))
            )
        return cls(max(valid))

    @classmethod
    def parse(cls, text: object) -> FormatVersion:
        """Parse ``FV2025-10-01`` or ``FV2510``; raises ``InvalidArgument`` naming the input."""
        if isinstance(text, FormatVersion):
            return text
        if not isinstance(text, str):
            raise InvalidArgument(f"FormatVersion: expected a string like 'FV2025-10-01', got {text!r}")
        long, short = _LONG.match(text), _SHORT.match(text)
        try:
            if long:
                return cls(date(int(long[1]), int(long[2]), int(long[3])))
            if short:
                known = KNOWN_FORMAT_VERSIONS.get(text)
                return cls(known or date(2000 + int(short[1]), int(short[2]), 1))
        except ValueError as exc:
            raise InvalidArgument(f"FormatVersion: {text!r} is not a real date ({exc})") from None
        raise InvalidArgument(
            f"FormatVersion: {text!r} is malformed; expected 'FV' + YYYY-MM-DD or 'FV' + YYMM"
        )

    @property
    def short(self) -> str:
        """The short name, ``FV2510`` (``FV2504`` for the release that went live 2025-06-06)."""
        known = _LABELS.get(self.valid_from)
        return known or f"FV{self.valid_from.year % 100:02d}{self.valid_from.month:02d}"

    def __str__(self) -> str:
        return f"FV{self.valid_from.isoformat()}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, FormatVersion):
            return NotImplemented
        return self.valid_from < other.valid_from

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _str_schema(cls)


def check_workflow_name(name: object, what: str = "WorkflowId") -> None:
    """``InvalidArgument`` unless ``name`` is a workflow name (lower-case letters, digits, '-', '_', '.')."""
    if not isinstance(name, str) or not _WORKFLOW_NAME.match(name):
        raise InvalidArgument(f"{what}: name {name!r} must be lower-case letters, digits, '-', '_', '.'")


@dataclass(frozen=True, slots=True)
class WorkflowId:
    """A workflow name plus the format version its process started under: ``name@FV2025-10-01``."""

    name: str
    format_version: FormatVersion

    def __post_init__(self) -> None:
        check_workflow_name(self.name)
        if not isinstance(self.format_version, FormatVersion):
            object.__setattr__(self, "format_version", FormatVersion.parse(self.format_version))

    @classmethod
    def new(cls, name: str, format_version: FormatVersion | str) -> WorkflowId:
        """Build from a name and a format version (string forms are parsed)."""
        return cls(name, FormatVersion.parse(format_version))

    @classmethod
    def parse(cls, text: object) -> WorkflowId:
        """Parse ``name@FV2025-10-01``; raises ``InvalidArgument`` naming the input."""
        if isinstance(text, WorkflowId):
            return text
        # Every stored event, deadline and registry entry holds one of a few workflow ids:
        # the parsed (immutable) value is kept per string instead of re-parsed each time.
        known = _PARSED.get(text) if cls is WorkflowId and type(text) is str else None
        if known is not None:
            return known
        if not isinstance(text, str) or text.count("@") != 1:
            raise InvalidArgument(f"WorkflowId: {text!r} is not of the form 'name@FV2025-10-01'")
        name, fv = text.split("@")
        parsed = cls(name, FormatVersion.parse(fv))
        if cls is WorkflowId and type(text) is str:
            if len(_PARSED) >= 256:
                _PARSED.clear()
            _PARSED[text] = parsed
        return parsed

    def __str__(self) -> str:
        return f"{self.name}@{self.format_version}"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _str_schema(cls)


_PARSED: dict[str, WorkflowId] = {}


class _Expect(Enum):
    NO_STREAM = "no_stream"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class ExpectedVersion:
    """What the writer believes the stream's version is: ``NO_STREAM``, ``ANY`` or ``exact(n)``.

    The version of a stream is the sequence number of its last event (0 = no events).
    """

    kind: _Expect | None
    version: int = 0

    NO_STREAM: ClassVar[ExpectedVersion]
    ANY: ClassVar[ExpectedVersion]

    @classmethod
    def exact(cls, version: int) -> Self:
        """The stream must be at exactly ``version`` (0 means: must have no events)."""
        if not isinstance(version, int) or version < 0:
            raise InvalidArgument(f"ExpectedVersion.exact: {version!r} is not a version >= 0")
        return cls(None, version)

    def matches(self, actual: int) -> bool:
        """Whether a stream at ``actual`` satisfies this expectation."""
        if self.kind is _Expect.ANY:
            return True
        if self.kind is _Expect.NO_STREAM:
            return actual == 0
        return actual == self.version

    def to_plain(self) -> str | int:
        return self.kind.value if self.kind is not None else self.version

    @classmethod
    def from_plain(cls, value: str | int) -> ExpectedVersion:
        if value == "any":
            return cls.ANY
        if value == "no_stream":
            return cls.NO_STREAM
        return cls.exact(int(value))

    def __str__(self) -> str:
        return str(self.to_plain())


ExpectedVersion.NO_STREAM = ExpectedVersion(_Expect.NO_STREAM)
ExpectedVersion.ANY = ExpectedVersion(_Expect.ANY)
