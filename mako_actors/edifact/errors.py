"""Typed errors of the EDIFACT layer, each naming file, segment number and expected vs found.

Every defect an inbound interchange can have surfaces as an :class:`EdifactError` subclass
(never a ``ValueError``, ``IndexError`` or ``UnicodeDecodeError``). ``syntax_error_code`` is the
ISO 9735 data element 0085 value to put into the CONTRL answer (``UCI``/``UCM``/``UCS``)::

    EdifactError                 0085 18 unspecified (base; garbage that fits nothing better)
    ├── EdifactSyntaxError       a tokenizer-level defect (unterminated segment, bad tag, ...),
    │                            or too many constituents for the MIG (16)
    │   └── DanglingRelease      release character at end of input or before a line break (22)
    ├── UnsupportedCharset       UNB S001 names a syntax identifier we cannot decode (2)
    ├── InvalidCharacter         bytes that are not valid in the declared charset (21)
    ├── MissingSegment           UNB, UNZ, UNH or UNT (or a mandatory element) is absent (13;
    │                            32 when the interchange holds no message at all)
    ├── UnexpectedSegment        a segment where none of that kind may stand (15)
    ├── InvalidValue             a service element has an invalid value, e.g. a date (12)
    │   └── ElementTooLong       an element longer than its syntax allows, e.g. 0020 an..14 (39)
    ├── InterchangeTooLarge      the input exceeds the configured maximum size (18)
    ├── ControlCountMismatch     UNT segment count or UNZ message count is wrong (29)
    ├── ReferenceMismatch        UNT 0062 != UNH 0062, or UNZ 0020 != UNB 0020 (28)
    └── DuplicateReference       a 0062 message reference repeats within the interchange (26)
"""

from __future__ import annotations

from typing import Any, ClassVar

from mako_actors.errors import EngineError, register_error

__all__ = [
    "ControlCountMismatch",
    "DanglingRelease",
    "DuplicateReference",
    "EdifactError",
    "EdifactSyntaxError",
    "ElementTooLong",
    "InterchangeTooLarge",
    "InvalidCharacter",
    "InvalidValue",
    "MissingSegment",
    "ReferenceMismatch",
    "UnexpectedSegment",
    "UnsupportedCharset",
]


class EdifactError(EngineError):
    """An interchange violates EDIFACT syntax or a receiver check; nothing of it was accepted.

    ``source`` is the file (or other name) given to the parser, ``segment_number`` the 1-based
    position of the offending segment in the interchange (UNB is 1; the UNA service string
    advice is not counted), ``segment_tag`` its tag, ``expected``/``found`` what the receiver
    wanted and what it got, and ``syntax_error_code`` the ISO 9735 0085 code for CONTRL.
    ``element``, when known, locates a data-element error inside its segment as CONTRL's UCD
    counts it: (0098, 0104), the segment tag being element 1 and ``None`` for a simple element.
    """

    default_code: ClassVar[str] = "18"

    def __init__(
        self,
        detail: str,
        *,
        source: str | None = None,
        segment_number: int | None = None,
        segment_tag: str | None = None,
        expected: str | None = None,
        found: str | None = None,
        syntax_error_code: str | None = None,
        element: tuple[int, int | None] | None = None,
    ) -> None:
        self.detail = detail
        self.source = source
        self.segment_number = segment_number
        self.segment_tag = segment_tag
        self.expected = expected
        self.found = found
        self.syntax_error_code = syntax_error_code or self.default_code
        self.element = element
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source or "<bytes>"
        if self.segment_number is not None:
            where += f": segment {self.segment_number}"
            if self.segment_tag:
                where += f" ({self.segment_tag})"
        text = f"{where}: {self.detail}"
        if self.expected is not None or self.found is not None:
            text += f"; expected {self.expected!r}, found {self.found!r}"
        return f"{text} [0085={self.syntax_error_code}]"

    def with_source(self, source: str | None) -> EdifactError:
        """A copy of this error naming ``source`` (used when the name is known only later)."""
        if source is None or source == self.source:
            return self
        args = self._plain_args()
        args["source"] = source
        return type(self)._build(args)

    def _plain_args(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "source": self.source,
            "segment_number": self.segment_number,
            "segment_tag": self.segment_tag,
            "expected": self.expected,
            "found": self.found,
            "syntax_error_code": self.syntax_error_code,
            "element": list(self.element) if self.element is not None else None,
        }

    @classmethod
    def _build(cls, args: dict[str, Any]) -> EdifactError:
        number = args.get("segment_number")
        element = args.get("element")
        return cls(
            str(args.get("detail", "")),
            source=args.get("source"),
            segment_number=int(number) if number is not None else None,
            segment_tag=args.get("segment_tag"),
            expected=args.get("expected"),
            found=args.get("found"),
            syntax_error_code=args.get("syntax_error_code"),
            element=(int(element[0]), None if element[1] is None else int(element[1])) if element else None,
        )

    @classmethod
    def _from_args(cls, message: str, args: dict[str, Any]) -> EngineError:
        return cls._build(args)


class EdifactSyntaxError(EdifactError):
    """The bytes cannot be split into segments (unterminated, empty or malformed segment), or a
    segment has more data elements or components than the MIG defines (0085 16)."""


class DanglingRelease(EdifactSyntaxError):
    """A release character stands at the end of the input or right before a line break."""

    default_code = "22"


class UnsupportedCharset(EdifactError):
    """UNB S001 names a syntax identifier (charset) this receiver does not support."""

    default_code = "2"


class InvalidCharacter(EdifactError):
    """The bytes are not valid in the charset that UNB S001 declares."""

    default_code = "21"


class MissingSegment(EdifactError):
    """A mandatory service segment or element (UNB, UNZ, UNH, UNT, 0020, ...) is absent."""

    default_code = "13"


class UnexpectedSegment(EdifactError):
    """A segment stands where it may not (outside a message, after UNZ, nested UNH)."""

    default_code = "15"


class InvalidValue(EdifactError):
    """A service data element has a value that does not fit its format (date, count)."""

    default_code = "12"


class ElementTooLong(InvalidValue):
    """A data element is longer than its syntax allows (UNB 0004 an..35, 0020 an..14, ...).

    Refused on receipt: answers echo these values, and an answer that cannot be rendered
    would be dead-lettered at delivery instead of sent.
    """

    default_code = "39"


class InterchangeTooLarge(EdifactError):
    """The input is larger than the receiver's configured maximum interchange size."""


class ControlCountMismatch(EdifactError):
    """The UNT segment count or the UNZ message count does not match what was received."""

    default_code = "29"


class ReferenceMismatch(EdifactError):
    """UNT 0062 differs from UNH 0062, or UNZ 0020 differs from UNB 0020."""

    default_code = "28"


class DuplicateReference(EdifactError):
    """A message reference 0062 occurs twice in one interchange."""

    default_code = "26"


for _cls in (
    EdifactError,
    EdifactSyntaxError,
    DanglingRelease,
    UnsupportedCharset,
    InvalidCharacter,
    MissingSegment,
    UnexpectedSegment,
    InvalidValue,
    ElementTooLong,
    InterchangeTooLarge,
    ControlCountMismatch,
    ReferenceMismatch,
    DuplicateReference,
):
    register_error(_cls)
