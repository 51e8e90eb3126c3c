"""Parse an inbound interchange from bytes into typed envelope values, with receiver checks.

Entry points: :func:`parse_interchange` (strict: a complete :class:`Interchange` or an
:class:`~mako_actors.edifact.errors.EdifactError`), :func:`try_parse_interchange` (returns the
error instead of raising) and :func:`parse_file`. Checks: charset, UNA, release characters,
UNB/UNZ/UNH/UNT present and well placed, UNT segment count and reference, UNZ message count and
reference, unique 0062, the lengths of the values answers echo, a UTILMD BGM's constituents
(0085 16), no control character in data (0085 21; a line break after a terminator is none).
Business content (AHB rules, check digits) is not checked here; values that do not fit their
format (e.g. a DTM 303 with seconds) are listed in ``Message.problems``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import pairwise
from operator import itemgetter, sub
from pathlib import Path
from zoneinfo import ZoneInfo

from mako_actors._frozen import positional_maker
from mako_actors.edifact._tokenizer import DEFAULT_DELIMITERS, Delimiters, Segment, released, tokenize
from mako_actors.edifact.errors import (
    ControlCountMismatch,
    DuplicateReference,
    EdifactError,
    EdifactSyntaxError,
    ElementTooLong,
    InterchangeTooLarge,
    InvalidCharacter,
    InvalidValue,
    MissingSegment,
    ReferenceMismatch,
    UnexpectedSegment,
    UnsupportedCharset,
)

__all__ = [
    "CHARSETS",
    "MAX_INTERCHANGE_BYTES",
    "NAD_CODE_LISTS",
    "Decoded",
    "Interchange",
    "Message",
    "Party",
    "Transaction",
    "check_lengths",
    "decode",
    "has_control",
    "parse_dtm",
    "parse_file",
    "parse_interchange",
    "read_interchange",
    "trim_trailing_blanks",
    "try_parse_interchange",
]

#: The default largest interchange accepted (bytes). Real UTILMD/APERAK interchanges are
#: kilobytes; parsing takes 16-50x the input in memory, so an unbounded input (``/dev/zero``,
#: a runaway upload) must be refused before it is read whole.
MAX_INTERCHANGE_BYTES = 64 * 1024 * 1024

#: UNB S001 syntax identifier -> Python codec. UNOA/UNOB are subsets of ASCII; we accept any
#: ASCII there because public traffic uses lower case under UNOA. Only the MaKo charsets
#: (DOMAIN §4): a UNOD..UNOF interchange is refused with CONTRL 0085 2, since its names could
#: not be echoed in our UNOC answers (a 55010 to the LFA would fail to render, and the process
#: go on without it).
CHARSETS: dict[str, str] = {
    "UNOA": "ascii",
    "UNOB": "ascii",
    "UNOC": "iso-8859-1",
}


@dataclass(frozen=True, slots=True)
class Party:
    """A market partner: ``id`` (MP-ID) and its code list / qualifier (UNB 500 or NAD 293)."""

    id: str
    qualifier: str


@dataclass(frozen=True, slots=True)
class Transaction:
    """One ``IDE`` group (SG4) of a message; fields are ``None`` when the segment is absent.

    ``pid`` is the transaction's own ``RFF+Z13``, else one standing before the first IDE.
    ``transaction_reason`` is STS+7 C556 #1; ``transaction_reasons`` holds the codes of all
    its C556 composites by position (#1, #2, #3; ``""`` for an empty one, trailing empties
    dropped), e.g. ``("E01", "ZAP")`` for a ruhende MaLo (AHB-FACTS §3). ``malo`` is LOC+Z16,
    else a Tranche's ID (LOC+Z21) when the transaction names no MaLo (a 55004 of a Tranche, ZW5).
    ``malformed_dates`` holds ``(qualifier, "value:format")`` of each DTM+92/93 that was sent but
    is no 303 in UTC (e.g. ``("92", "20250601:102")``, or a 303 whose zone is not ``+00``):
    such a date is ``None`` like an
    absent one, and this tells the two apart (APERAK Z35 "Format nicht eingehalten", not Z29
    "fehlt"). ``repeated`` names (``"LOC+Z16"``) each segment the transaction sends again that
    it may send once (RFF+Z13/TN, LOC+Z16/Z21/Z22, DTM+92/93, STS+7/E01): which copy was
    meant is unknown, so the transaction means nothing certain (APERAK Z40 "Wiederholbarkeit
    überschritten"); its fields hold the first value sent. ``ide_qualifier`` is the IDE's 7495 as
    sent: the MIG allows ``24`` (Vorgang) only, and another still opens a group here, so that the
    transaction can be refused by its reference (APERAK Z39) instead of read as the one before.
    """

    ide_ref: str
    pid: str | None
    malo: str | None
    start: datetime | None
    end: datetime | None
    request_ref: str | None
    transaction_reason: str | None
    answer_code: str | None
    answer_ebd: str | None
    first_segment_number: int
    segments: tuple[Segment, ...] = field(repr=False)
    transaction_reasons: tuple[str, ...] = ()
    malformed_dates: tuple[tuple[str, str], ...] = ()
    repeated: tuple[str, ...] = ()
    ide_qualifier: str = "24"

    def location(self, qualifier: str) -> str | None:
        """The ID of the first ``LOC+<qualifier>`` (``Z22``: a ruhende MaLo's; ``None``: none)."""
        for segment in self.segments:
            if segment.tag == "LOC" and segment.value(0) == qualifier:
                return segment.value(1) or None
        return None


@dataclass(frozen=True, slots=True)
class Message:
    """One UNH..UNT message with its header values; ``segments`` include UNH and UNT.

    ``segment_count`` equals the checked UNT count. ``document_date`` is ``DTM+137`` as an aware
    UTC datetime (``None`` if absent or malformed, then named in ``problems``). ``problems``
    lists application-level findings that do not reject the interchange (APERAK material):
    malformed DTM values, NAD+MS/MR differing from UNB or with the wrong code list.
    ``repeated`` names each header segment sent again that a message holds once (BGM, DTM+137,
    NAD+MS, NAD+MR, RFF+Z13; see ``Transaction.repeated``). ``malformed_header_dates``:
    ``("137", "value:format")`` when the DTM+137 sent does not parse or is not in format 303
    (the only one the UTILMD MIG allows for it) in UTC (``?+00``, DOMAIN §4): APERAK Z35.
    """

    reference: str
    message_type: str
    version: str
    release: str
    agency: str
    association_code: str
    pid: str | None
    document_code: str | None
    document_number: str | None
    document_date: datetime | None
    sender: Party | None
    recipient: Party | None
    transactions: tuple[Transaction, ...]
    segment_count: int
    first_segment_number: int
    problems: tuple[str, ...]
    segments: tuple[Segment, ...] = field(repr=False)
    repeated: tuple[str, ...] = ()
    malformed_header_dates: tuple[tuple[str, str], ...] = ()

    @property
    def mig_version(self) -> str:
        """The EDI@Energy MIG version (UNH S009 0057, e.g. ``S2.1``)."""
        return self.association_code


@dataclass(frozen=True, slots=True)
class Interchange:
    """A received interchange that passed every receiver check.

    ``prepared_at`` is UNB S004 read as UTC. ``charset`` is the Python codec used to decode.
    ``segment_count`` counts UNB..UNZ (UNA excluded).
    """

    syntax_id: str
    syntax_version: str
    sender: Party
    recipient: Party
    prepared_at: datetime
    control_ref: str
    application_ref: str | None
    test: bool
    delimiters: Delimiters
    una_present: bool
    charset: str
    sha256: str
    source: str | None
    segment_count: int
    messages: tuple[Message, ...] = field(repr=False)

    @property
    def dedup_key(self) -> tuple[str, str, str]:
        """The inbox idempotency key: (recipient MP-ID, sender MP-ID, 0020)."""
        return (self.recipient.id, self.sender.id, self.control_ref)

    @property
    def correlation_ref(self) -> str:
        """``"<sender MP-ID>:<0020>"``, the input of the CorrelationId (UUID v5)."""
        return f"{self.sender.id}:{self.control_ref}"


# Positional constructors without the frozen ``__init__``'s ``object.__setattr__`` per field
# (``_maker`` is imported by ``inbound`` under this name too).
_maker = positional_maker


_party = _maker(Party)
_transaction_of = _maker(Transaction)
_message_of = _maker(Message)
_interchange_of = _maker(Interchange)


def read_interchange(path: str | Path, *, max_bytes: int = MAX_INTERCHANGE_BYTES) -> bytes:
    """The bytes of ``path``, reading at most ``max_bytes + 1`` of them.

    Raises ``InterchangeTooLarge`` when there are more (also for endless inputs such as
    ``/dev/zero`` or a pipe, whose size no ``stat`` tells). ``OSError`` passes through.
    """
    p = Path(path)
    with p.open("rb") as handle:
        raw = handle.read(max_bytes + 1)
    _check_size(raw, max_bytes, str(p))
    return raw


def _check_size(raw: bytes, max_bytes: int, source: str | None) -> None:
    if len(raw) > max_bytes:
        raise InterchangeTooLarge(
            f"input is larger than the maximum interchange size of {max_bytes} bytes",
            source=source, expected=f"at most {max_bytes} bytes", found=f"more than {max_bytes}",
        )


def parse_file(path: str | Path, *, max_bytes: int = MAX_INTERCHANGE_BYTES) -> Interchange:
    """Read ``path`` and parse it strictly; errors name the file. ``OSError`` passes through.

    Larger inputs than ``max_bytes`` are refused (``InterchangeTooLarge``) without reading them.
    """
    p = Path(path)
    return parse_interchange(read_interchange(p, max_bytes=max_bytes), source=str(p), max_bytes=max_bytes)


def try_parse_interchange(
    raw: bytes, *, source: str | None = None, max_bytes: int = MAX_INTERCHANGE_BYTES
) -> Interchange | EdifactError:
    """Like :func:`parse_interchange`, but return the error instead of raising it."""
    try:
        return parse_interchange(raw, source=source, max_bytes=max_bytes)
    except EdifactError as err:
        return err


def parse_interchange(
    raw: bytes, *, source: str | None = None, max_bytes: int = MAX_INTERCHANGE_BYTES
) -> Interchange:
    """Parse and check one interchange; all-or-nothing.

    Raises an :class:`EdifactError` subclass naming ``source``, the segment number and what was
    expected vs found; ``InterchangeTooLarge`` for input over ``max_bytes`` (default 64 MiB),
    before any work. Cost: one decode and one tokenizer pass, linear in the input.
    """
    try:
        _check_size(raw, max_bytes, source)
        return _parse(raw, source)
    except EdifactError as err:
        raise err.with_source(source) from None
    except (ValueError, IndexError, TypeError) as exc:  # pragma: no cover - defence in depth
        raise EdifactError(f"unparseable input: {exc}", source=source) from None


def _prefix(raw: bytes) -> tuple[Delimiters, bool, int]:
    # Line breaks before the first segment are tolerated, before a UNA as before a UNB (a
    # gateway that writes a newline first would else have every interchange refused unanswered).
    at = len(raw) - len(raw.lstrip(b"\r\n")) if raw[:1] in (b"\r", b"\n") else 0
    if raw.startswith(b"UNA", at):
        try:
            chars = raw[at + 3 : at + 9].decode("ascii")
        except UnicodeDecodeError:
            raise EdifactSyntaxError(
                "UNA service characters must be ASCII",
                segment_tag="UNA",
                expected="6 ASCII characters",
                found=repr(raw[at + 3 : at + 9]),
                syntax_error_code="22",
            ) from None
        return Delimiters.from_una(chars), True, at + 9
    return DEFAULT_DELIMITERS, False, 0


def _charset(raw: bytes, start: int, d: Delimiters) -> tuple[str, str]:
    head = raw[start : start + 64].lstrip(b"\r\n")
    el = d.element.encode("ascii")
    if not head.startswith(b"UNB" + el):
        raise MissingSegment(
            "interchange does not start with UNB",
            segment_number=1,
            expected="UNB",
            found=head[:3].decode("latin-1"),
        )
    s001 = head[4:].split(el, 1)[0].split(d.component.encode("ascii"), 1)[0]
    syntax_id = s001.decode("latin-1")
    codec = CHARSETS.get(syntax_id)
    if codec is None:
        raise UnsupportedCharset(
            "unsupported syntax identifier (charset) in UNB S001",
            segment_number=1,
            segment_tag="UNB",
            expected="one of " + "/".join(CHARSETS),
            found=syntax_id,
        )
    return syntax_id, codec


@dataclass(frozen=True, slots=True)
class Decoded:
    """The decoded text after the UNA (if any), with the delimiters and charset it declared."""

    text: str
    delimiters: Delimiters
    una_present: bool
    syntax_id: str
    charset: str


def delimiters_of(raw: bytes) -> tuple[Delimiters, int]:
    """The service characters (UNA's, else the defaults) and where the UNB starts; raises
    ``EdifactSyntaxError`` for a UNA that is not ASCII. For a reader of the UNB alone."""
    d, _, start = _prefix(raw)
    return d, start


def decode(raw: bytes, *, source: str | None = None) -> Decoded:
    """Read UNA and UNB S001 from the leading ASCII bytes and decode the rest by that charset.

    Raises ``EdifactSyntaxError`` (bad UNA), ``MissingSegment`` (no UNB),
    ``UnsupportedCharset`` or ``InvalidCharacter`` (a byte outside the charset).
    """
    try:
        d, una, start = _prefix(raw)
        syntax_id, codec = _charset(raw, start, d)
        return Decoded(_decode_text(raw, start, d, syntax_id, codec), d, una, syntax_id, codec)
    except EdifactError as err:
        raise err.with_source(source) from None


def _decode_text(raw: bytes, start: int, d: Delimiters, syntax_id: str, codec: str) -> str:
    """The text after the UNA, without the blanks after its last segment (``trim_trailing_blanks``:
    every reader of the raw bytes, the parser and the pipeline's error locating, sees the same)."""
    try:
        return trim_trailing_blanks(raw[start:].decode(codec), d)
    except UnicodeDecodeError as exc:
        pos = start + exc.start
        number, element = _locate(raw[start:pos].decode("latin-1"), raw[pos:].decode("latin-1"), d)
        raise InvalidCharacter(
            f"byte 0x{raw[pos]:02X} at offset {pos} is not valid in {syntax_id} ({codec})",
            segment_number=number,
            expected=f"{syntax_id} characters",
            found=f"0x{raw[pos]:02X}",
            element=element,
        ) from None


def _refuse_controls(text: str, start: int, d: Delimiters, syntax_id: str) -> None:
    """Raise ``InvalidCharacter`` (0085 21) for a control character in the data of ``text``
    (decoded from offset ``start`` of the input); see ``_control_at``."""
    at = _control_at(text, d)
    if at < 0:
        return
    # UNOA..UNOC have graphic characters only for data. Our answers copy values as received
    # (IDE 7402 into RFF+TN, UNB 0020 into UCI and RFF+ACE, a name into the 55010): one taken
    # with a control character would make the answer fail the partner's syntax check. That
    # holds for C1 too (0x80-0x9F: no character of ISO 8859-1, whatever a Windows-1252 export
    # meant by them, e.g. an en dash 0x96 in a name).
    number, element = _locate(text[:at], text[at:], d)
    found = f"0x{ord(text[at]):02X}"
    raise InvalidCharacter(
        f"control character {found} at offset {start + at} is not allowed in {syntax_id} data",
        segment_number=number,
        expected=f"{syntax_id} characters",
        found=found,
        element=element,
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(*values: str) -> bool:
    """Whether a value holds a C0 or C1 control character or DEL (line breaks included): none may
    stand in an answer's data, so a refused interchange's value that does cannot be copied into one."""
    return any(_CONTROL.search(v) for v in values)


def _control_at(text: str, d: Delimiters) -> int:
    """The index of the first C0 or C1 control character or DEL in the data of ``text``, -1 if none.

    Line breaks before the first segment and after a segment terminator are not data (DOMAIN §4);
    one after a live release character is left to the tokenizer (``DanglingRelease``, 0085 22).
    Cost: a replace per kind of line break and one ``isprintable`` pass (a few per cent of a
    parse); text that fails it (a control character, a blank line, an NBSP) takes the exact
    search, several times slower.
    """
    term = d.terminator
    lines = text
    if "\r" in lines:
        lines = lines.replace(term + "\r\n", term)
    if "\n" in lines:
        lines = lines.replace(term + "\n", term)
    if lines.lstrip("\r\n").isprintable():
        # Unless a terminator was released: a line break after it is data, and was taken out.
        released = d.release + term
        if released not in text or (released + "\n" not in text and released + "\r" not in text):
            return -1
    return _first_control(text, d)


@lru_cache(maxsize=16)
def _controls(d: Delimiters) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The patterns of ``_first_control``: a control character other than a line break and the
    UNA's service characters (ISO 9735's level B layout declares IS1/IS3/IS4 there); a line
    break after neither a line break, a terminator nor a release character; one after either of
    the last two (data again when that one is released)."""
    t, r = re.escape(d.terminator), re.escape(d.release)
    service = {d.component, d.element, d.release, d.reserved, d.terminator, "\r", "\n"}
    others = "".join(re.escape(c) for c in map(chr, [*range(0x20), *range(0x7F, 0xA0)]) if c not in service)
    # Two searches, each opening with a character class, cost less than one with both branches.
    return (
        re.compile(f"[{others}]"),
        re.compile(rf"[\r\n](?<![\r\n{t}{r}][\r\n])"),
        re.compile(rf"(?<=[{t}{r}])[\r\n]"),
    )


def _first_control(text: str, d: Delimiters) -> int:
    """``_control_at`` without its shortcut: exact for every text, released characters included."""
    other, lone, after = _controls(d)
    skip = len(text) - len(text.lstrip("\r\n"))
    end = len(text)
    for pattern in (other, lone):
        found = pattern.search(text, skip, end)
        if found is not None:
            end = found.start()
    for match in after.finditer(text, skip, end):
        i = match.start()
        # The terminator or release character before it released: the line break is data (an
        # unreleased release character before it is the tokenizer's dangling release).
        if released(text, i - 1, d.release):
            return i
    return -1 if end == len(text) else end


def _locate(before: str, after: str, d: Delimiters) -> tuple[int, tuple[int, int | None]]:
    """The segment number (UNB = 1) and UCD position (0098, 0104) of the character that starts
    ``after``; released delimiters do not count. 0104 is named only when the element holds a
    component separator, i.e. is a composite as written."""
    segment, element, component = 1, 1, 1  # element 1 is the tag
    released = False
    for c in before:
        if released:
            released = False
        elif c == d.release:
            released = True
        elif c == d.terminator:
            segment, element, component = segment + 1, 1, 1
        elif c == d.element:
            element, component = element + 1, 1
        elif c == d.component:
            component += 1
    composite = component > 1
    for c in after:
        if released:
            released = False
        elif c == d.release:
            released = True
        elif c in (d.element, d.terminator):
            break
        elif c == d.component:
            composite = True
            break
    return segment, (element, component if composite else None)


def _parse(raw: bytes, source: str | None) -> Interchange:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError("parse_interchange takes bytes")
    raw = bytes(raw)
    d, una, start = _prefix(raw)
    syntax_id, codec = _charset(raw, start, d)
    text = _decode_text(raw, start, d, syntax_id, codec)
    _refuse_controls(text, start, d, syntax_id)
    segments = tokenize(text, d, source=source)
    return _build(segments, d, una, syntax_id, codec, raw, source)


_BLANKS = " \t\r\n"


def trim_trailing_blanks(text: str, d: Delimiters) -> str:
    """``text`` without the spaces, tabs and line breaks after its last segment terminator: no
    data (DOMAIN §4 names line breaks; pydifact, the reference, reads the others so too). A
    gateway that pads a file or ends it with a blank line sent an intact interchange; before,
    it was rejected (CONTRL 4, 0085 18 or 21) and counted as not received. A UNA may declare a
    blank as the terminator: that one is never trimmed (more of it are empty segments)."""
    trimmed = text.rstrip(_BLANKS.replace(d.terminator, ""))
    if len(trimmed) == len(text) or not trimmed.endswith(d.terminator):
        return text
    if released(trimmed, len(trimmed) - 1, d.release):  # blanks after a released "'" are data
        return text
    return trimmed


def _require(seg: Segment, number: int, element: int, what: str, component: int = 0) -> str:
    value = seg.value(element, component)
    if not value:
        raise MissingSegment(
            f"{seg.tag} lacks {what}", segment_number=number, segment_tag=seg.tag,
            expected=what, found="",
        )
    return value


def _count(seg: Segment, number: int) -> int:
    text = _require(seg, number, 0, "the control count")
    # ASCII digits only ("²" is a digit to str.isdigit, not to int) and within n..10 / n..6.
    if not (text.isascii() and text.isdigit()):
        raise InvalidValue(
            f"{seg.tag} control count is not a number", segment_number=number,
            segment_tag=seg.tag, expected="digits", found=text[:40],
        )
    return int(text)


# (tag) -> ((element, component, data element, max length), ...): ISO 9735 v3 service
# segments, and the MIG limits of the header values our answers echo (BGM 1004, IDE 7402).
_MAX_LENGTHS: dict[str, tuple[tuple[int, int, str, int], ...]] = {
    "UNB": (
        (0, 0, "0001", 4), (0, 1, "0002", 1), (1, 0, "0004", 35), (1, 1, "0007", 4),
        (1, 2, "0008", 35), (2, 0, "0010", 35), (2, 1, "0007", 4), (2, 2, "0014", 35),
        (3, 0, "0017", 8), (3, 1, "0019", 4), (4, 0, "0020", 14), (5, 0, "0022", 14),
        (6, 0, "0026", 14), (7, 0, "0029", 1), (8, 0, "0031", 1), (9, 0, "0032", 35),
        (10, 0, "0035", 1),
    ),
    "UNH": (
        (0, 0, "0062", 14), (1, 0, "0065", 6), (1, 1, "0052", 3), (1, 2, "0054", 3),
        (1, 3, "0051", 3), (1, 4, "0057", 6), (2, 0, "0068", 35),
    ),
    "UNT": ((0, 0, "0074", 10), (1, 0, "0062", 14)),
    "UNZ": ((0, 0, "0036", 6), (1, 0, "0020", 14)),
    "BGM": ((1, 0, "1004", 35),),
    "IDE": ((1, 0, "7402", 35),),
}


_NO_LIMIT = 1 << 62


def _limits(rules: tuple[tuple[int, int, str, int], ...]) -> tuple[tuple[int, ...], ...]:
    """Per element, the limit of each component (``_NO_LIMIT`` where the table names none)."""
    per: list[tuple[int, ...]] = []
    for e in range(max(r[0] for r in rules) + 1):
        comps = {c: limit for el, c, _, limit in rules if el == e}
        per.append(tuple(comps.get(c, _NO_LIMIT) for c in range(max(comps, default=0) + 1)))
    return tuple(per)


#: ``_MAX_LENGTHS`` laid out like a segment's elements, so one pass checks a whole segment.
_LIMITS = {tag: _limits(rules) for tag, rules in _MAX_LENGTHS.items()}
#: The limits ``_message`` checks inline (each the first component of its element).
((_UNT_0074,), (_UNT_0062,)) = _LIMITS["UNT"]
((_UNH_0062,), _UNH_S009, (_UNH_0068,)) = _LIMITS["UNH"]
_BGM_1004 = _LIMITS["BGM"][1][0]
_IDE_7402 = _LIMITS["IDE"][1][0]


def check_lengths(seg: Segment, number: int) -> None:
    """Raise ``ElementTooLong`` (0085 39) for a value of a service segment (UNB, UNH, UNT, UNZ,
    and BGM 1004 / IDE 7402) longer than its data element allows; ``number``: for the error."""
    limits = _LIMITS.get(seg[0])
    if limits is None:
        return
    for k, element in enumerate(seg[1][: len(limits)]):
        lims = limits[k]
        if element.__class__ is str:
            if len(element) > lims[0]:
                _too_long(seg, number)
        # Length minus limit per component (map stops at the shorter); > 0 is too long.
        elif max(map(sub, map(len, element), lims), default=0) > 0:
            _too_long(seg, number)


#: BGM as the UTILMD MIG has it (DOMAIN §4: ``BGM+<1001>+<1004>[+<1225>]``), by data element:
#: how many components each may have (UN D.11A C002: 1001, 1131, 3055, 1000; C106: 1004,
#: 1056, 1060; 1225 simple). 4343, the fourth element of UN's BGM, is not in the MIG.
_BGM_SHAPE = (4, 3, 1)


def _bgm_constituents(seg: Segment, number: int) -> None:
    """Raise ``EdifactSyntaxError`` (0085 16, "too many constituents") for a UTILMD BGM with a
    value beyond ``_BGM_SHAPE``: in a data element after 1225 (the segment's error, a UCS line),
    or in a component its composite does not have (the composite's, a UCD line). An empty one
    says nothing and passes, as a trailing separator does."""
    els = seg[1]
    n = len(_BGM_SHAPE)
    if any(e if e.__class__ is str else any(e) for e in els[n:]):
        raise EdifactSyntaxError(
            "BGM has more data elements than the UTILMD MIG defines (C002, C106, 1225)",
            segment_number=number, segment_tag="BGM", expected=f"at most {n} data elements",
            found=str(len(els)), syntax_error_code="16",
        )
    for k, (e, allowed) in enumerate(zip(els, _BGM_SHAPE, strict=False)):
        if e.__class__ is not str and any(e[allowed:]):
            raise EdifactSyntaxError(
                f"BGM data element {k + 2} has more components than the UTILMD MIG defines",
                segment_number=number, segment_tag="BGM", expected=f"at most {allowed} components",
                found=str(len(e)), syntax_error_code="16", element=(k + 2, None),
            )


#: Segments whose limited elements are all simple data elements (no 0104 in a UCD).
_SIMPLE = frozenset({"UNT", "UNZ"})


def _check_s010(s010: str | list[str], unh: Segment, number: int) -> None:
    """UNH S010 (status of the transfer): 0070 n..2 and 0073 ``C`` or ``F`` when given; a
    generator's placeholder (``+X+X:C``) is an invalid value (0085 = 12), as any other."""
    parts = [s010] if s010.__class__ is str else s010
    sequence = parts[0]
    marker = parts[1] if len(parts) > 1 else ""
    if sequence and not (len(sequence) <= 2 and sequence.isascii() and sequence.isdigit()):
        component, want, found = 1, "a sequence number of at most 2 digits (S010 0070)", sequence
    elif marker not in ("", "C", "F"):
        component, want, found = 2, "C or F (S010 0073)", marker
    else:
        return
    raise InvalidValue(
        f"UNH status of the transfer (S010) is invalid: {found!r}", segment_number=number,
        segment_tag="UNH", expected=want, found=found[:40], element=(5, component),
    )  # fmt: skip


def _too_long(seg: Segment, number: int) -> None:
    # The first offending value in table order names the error.
    for element, component, name, limit in _MAX_LENGTHS[seg.tag]:
        value = seg.value(element, component)
        if len(value) > limit:
            raise ElementTooLong(
                f"{seg.tag} data element {name} is longer than its {limit} characters",
                segment_number=number, segment_tag=seg.tag,
                expected=f"at most {limit} characters", found=value[:40],
                # Every element the table limits is a composite (or S0xx) but UNT's/UNZ's and
                # UNB 0020..0035, which are simple: those name no component (0104).
                element=(element + 2, None if seg.tag in _SIMPLE else component + 1),
            )


def _unb_time(seg: Segment) -> datetime:
    els = seg[1]
    s004 = els[3] if len(els) > 3 else ""
    if s004.__class__ is str:
        date, time = s004, ""
    else:
        date, time = s004[0], s004[1] if len(s004) > 1 else ""
    try:
        if len(date) == 6:
            date = "20" + date
        if len(date) != 8 or not date.isdigit() or len(time) != 4 or not time.isdigit():
            raise ValueError(date)
        return datetime(
            int(date[:4]), int(date[4:6]), int(date[6:]), int(time[:2]), int(time[2:]), tzinfo=UTC
        )
    except ValueError:
        raise InvalidValue(
            "UNB S004 preparation date/time is invalid", segment_number=1, segment_tag="UNB",
            expected="YYMMDD:HHMM", found=f"{date}:{time}",
        ) from None


def _close(tags: list[str], i: int) -> int:
    """Index of the UNT closing the UNH at ``i``, else of the UNH/UNZ that cuts it, else len."""
    try:
        j = tags.index("UNT", i + 1)
    except ValueError:
        j = len(tags)
    inner = tags[i + 1 : j]
    if "UNH" in inner or "UNZ" in inner:
        return i + 1 + min(k for k, t in enumerate(inner) if t in ("UNH", "UNZ"))
    return j


def _build(
    segs: list[Segment], d: Delimiters, una: bool, syntax_id: str, codec: str, raw: bytes,
    source: str | None,
) -> Interchange:
    if not segs or segs[0].tag != "UNB":
        raise MissingSegment(
            "interchange does not start with UNB", segment_number=1, expected="UNB",
            found=segs[0].tag if segs else "nothing",
        )
    unb = segs[0]
    check_lengths(unb, 1)
    syntax_version = _require(unb, 1, 0, "the syntax version (S001 0002)", 1)
    sender = _party(_require(unb, 1, 1, "the sender (S002)"), unb.value(1, 1))
    recipient = _party(_require(unb, 1, 2, "the recipient (S003)"), unb.value(2, 1))
    prepared_at = _unb_time(unb)
    control_ref = _require(unb, 1, 4, "the interchange control reference (0020)")
    messages: list[Message] = []
    seen: dict[str, int] = {}
    i = 1
    n = len(segs)
    unz_index = -1
    tags = list(map(_tag_of, segs))
    while i < n:
        seg = segs[i]
        tag = seg.tag
        if tag == "UNH":
            j = _close(tags, i)
            if j >= n or segs[j].tag != "UNT":
                raise MissingSegment(
                    f"message {seg.value(0)!r} (opened at segment {i + 1}) has no UNT",
                    segment_number=j + 1, segment_tag=segs[j].tag if j < n else None,
                    expected="UNT", found=segs[j].tag if j < n else "end of interchange",
                )
            msg = _message(tuple(segs[i : j + 1]), tags, i, sender, recipient)
            if msg.reference in seen:
                raise DuplicateReference(
                    f"message reference repeats the one at segment {seen[msg.reference]}",
                    segment_number=i + 1, segment_tag="UNH",
                    expected="a 0062 unique within the interchange", found=msg.reference,
                )
            seen[msg.reference] = i + 1
            messages.append(msg)
            i = j + 1
        elif tag == "UNZ":
            unz_index = i
            break
        else:
            raise UnexpectedSegment(
                "segment outside a message" if tag != "UNB" else "second UNB",
                segment_number=i + 1, segment_tag=tag, expected="UNH or UNZ", found=tag,
            )
    if unz_index < 0:
        raise MissingSegment(
            "interchange has no UNZ", segment_number=n + 1, expected="UNZ",
            found="end of interchange",
        )
    if unz_index != n - 1:
        raise UnexpectedSegment(
            "segment after UNZ", segment_number=unz_index + 2, segment_tag=segs[unz_index + 1].tag,
            expected="end of interchange", found=segs[unz_index + 1].tag,
        )
    unz = segs[unz_index]
    if not messages:
        raise MissingSegment(
            "interchange contains no message", segment_number=n, segment_tag="UNZ",
            expected="at least one UNH..UNT", found="UNZ", syntax_error_code="32",
        )
    check_lengths(unz, n)
    declared = _count(unz, n)
    if declared != len(messages):
        raise ControlCountMismatch(
            "UNZ message count does not match", segment_number=n, segment_tag="UNZ",
            expected=str(len(messages)), found=str(declared),
        )
    unz_ref = unz.value(1)
    if unz_ref != control_ref:
        raise ReferenceMismatch(
            "UNZ reference differs from UNB 0020", segment_number=n, segment_tag="UNZ",
            expected=control_ref, found=unz_ref,
        )
    return _interchange_of(  # positional: the fields of Interchange in declaration order
        syntax_id,
        syntax_version,
        sender,
        recipient,
        prepared_at,
        control_ref,
        unb.value(6) or None,  # application_ref
        unb.value(10) == "1",  # test
        d,  # delimiters
        una,  # una_present
        codec,  # charset
        hashlib.sha256(raw).hexdigest(),  # sha256
        source,
        n,  # segment_count
        tuple(messages),  # messages
    )


_tag_of = itemgetter(0)

#: UNB S002/S003 qualifier -> the NAD 3055 code list that must go with it (DOMAIN §4).
NAD_CODE_LISTS = {"500": "293", "502": "332", "14": "9"}


def _party_problems(
    role: str, nad: Party, unb: Party, number: int, problems: list[str]
) -> None:
    if nad.id != unb.id:
        problems.append(f"segment {number} NAD+{role}: {nad.id!r} differs from UNB {unb.id!r}")
    want = NAD_CODE_LISTS.get(unb.qualifier)
    if want is not None and nad.qualifier != want:
        problems.append(
            f"segment {number} NAD+{role}: code list {nad.qualifier!r} does not match UNB "
            f"qualifier {unb.qualifier!r} (expected {want!r} in the third component)"
        )


def _message(
    segs: tuple[Segment, ...], tags: list[str], start: int, unb_sender: Party,
    unb_recipient: Party,
) -> Message:
    """The message ``segs`` (UNH..UNT), standing at index ``start`` of the interchange's
    ``tags``. Checks in the order the errors must win: lengths of UNH and UNT, 0062, 0065, the
    UNT count and reference, UNH S010, then header BGM (1004's length; in a UTILMD its constituents) and
    each IDE's length."""
    # Element access is spelled out (no Segment.value): this runs for every message of a
    # replay. ``e if e.__class__ is str else e[0]`` is an element's first component.
    first = start + 1
    count = len(segs)
    last = start + count
    unh = segs[0]
    unt = segs[-1]
    h = unh[1]
    e = h[0] if h else ""
    reference = e if e.__class__ is str else e[0]
    s009 = h[1] if len(h) > 1 else ""
    e = h[2] if len(h) > 2 else ""
    # The UNH row of _LIMITS spelled out (the generic check cost a fifth of a small message).
    # A component list from the tokenizer is never empty, so max() has a value.
    if (
        len(reference) > _UNH_0062
        or (
            len(s009) > _UNH_S009[0] if s009.__class__ is str
            else max(map(sub, map(len, s009), _UNH_S009)) > 0
        )
        or len(e if e.__class__ is str else e[0]) > _UNH_0068
    ):
        _too_long(unh, first)
    t = unt[1]
    if t:
        e = t[0]
        if len(e if e.__class__ is str else e[0]) > _UNT_0074:
            _too_long(unt, last)
        if len(t) > 1:
            e = t[1]
            if len(e if e.__class__ is str else e[0]) > _UNT_0062:
                _too_long(unt, last)
    if not reference:
        _require(unh, first, 0, "the message reference (0062)")
    message_type = s009 if s009.__class__ is str else s009[0]
    if not message_type:
        _require(unh, first, 1, "the message type (S009 0065)")
    e = t[0] if t else ""
    text = e if e.__class__ is str else e[0]
    # ASCII digits only ("²" is a digit to str.isdigit, not to int); _count names the defect.
    declared = int(text) if text and text.isascii() and text.isdigit() else _count(unt, last)
    if declared != count:
        raise ControlCountMismatch(
            f"UNT segment count of message {reference!r} does not match (UNH..UNT inclusive)",
            segment_number=last, segment_tag="UNT", expected=str(count), found=str(declared),
        )
    e = t[1] if len(t) > 1 else ""
    unt_ref = e if e.__class__ is str else e[0]
    if unt_ref != reference:
        raise ReferenceMismatch(
            "UNT reference differs from UNH 0062", segment_number=last, segment_tag="UNT",
            expected=reference, found=unt_ref,
        )
    if len(h) > 3:  # (after the count: a message's frame is checked before its values)
        _check_s010(h[3], unh, first)
    problems: list[str] = []
    repeated: list[str] = []
    header_dates: tuple[tuple[str, str], ...] = ()
    header_pid: str | None = None
    document_code = document_number = None
    document_date: datetime | None = None
    sender = recipient = None
    # The header is everything before the first IDE; only there do BGM, DTM+137, NAD and a
    # message-level RFF+Z13 count (a message without IDE is all header up to UNT).
    # Count first: list.index raising ValueError (with its formatted message) for the search
    # after the last IDE cost more than the rest of a small message's transaction loop.
    own_tags = tags[start:last]  # UNH..UNT, never "IDE" themselves
    utilmd = message_type == "UTILMD"  # whose BGM shape is checked (the MIG we answer by)
    ides = own_tags.count("IDE")
    first_ide = own_tags.index("IDE") if ides else count - 1
    seen: set[str] = set()
    for k in range(1, first_ide):
        seg = segs[k]
        tag = seg[0]
        if tag not in _HEADER_TAGS:
            continue
        els = seg[1]
        e = els[0] if els else ""
        q = e if e.__class__ is str else e[0]
        if tag == "RFF":
            if q == "Z13":
                if "RFF+Z13" in seen:
                    repeated.append("RFF+Z13")
                seen.add("RFF+Z13")
                if header_pid is None:
                    header_pid = seg.value(0, 1) or None
        elif tag == "BGM":
            e = els[1] if len(els) > 1 else ""
            number = e if e.__class__ is str else e[0]
            if len(number) > _BGM_1004:
                _too_long(seg, first + k)
            if utilmd:
                _bgm_constituents(seg, first + k)
            if "BGM" in seen:
                repeated.append("BGM")
            seen.add("BGM")
            if document_code is None:
                document_code = q or None
                document_number = number or None
        elif tag == "DTM":
            if q == "137":
                if "DTM+137" in seen:
                    repeated.append("DTM+137")
                seen.add("DTM+137")
                if document_date is None and not header_dates:
                    document_date = _dtm(seg, first + k, problems)
                    if document_date is None or seg.value(0, 2) != "303" or _zone_not_utc(seg):
                        header_dates = (("137", _dtm_text(seg)),)
        elif q == "MS" or q == "MR":  # NAD (no IDE stands in the header)
            if "NAD+" + q in seen:
                repeated.append("NAD+" + q)
            seen.add("NAD+" + q)
            e = els[1] if len(els) > 1 else ""
            # NAD C082: 3039 the MP-ID, 3055 the code list (third component).
            key = (e, "") if e.__class__ is str else (e[0], e[2] if len(e) > 2 else "")
            party = _PARTY_CACHE.get(key) or _nad_party(key)
            unb = unb_sender if q == "MS" else unb_recipient
            want = NAD_CODE_LISTS.get(unb.qualifier)
            if party.id != unb.id or (want is not None and party.qualifier != want):
                _party_problems(q, party, unb, first + k, problems)
            if q == "MS":
                sender = party
            else:
                recipient = party
    tx_starts: list[int] = []
    k = first_ide
    while ides:
        ide = segs[k][1]
        e = ide[1] if len(ide) > 1 else ""
        if len(e if e.__class__ is str else e[0]) > _IDE_7402:
            _too_long(segs[k], first + k)
        tx_starts.append(k)
        ides -= 1
        if ides:
            k = own_tags.index("IDE", k + 1)
    tx_starts.append(count - 1)
    transactions = tuple([
        _transaction(segs[a:b], first + a, header_pid, problems)
        for a, b in pairwise(tx_starts)
    ])
    # The message PID is the first RFF+Z13 of the message: the header's, else the first
    # transaction's own one (a transaction's pid falls back to the header's only).
    pid = header_pid
    if pid is None:
        pid = next((t.pid for t in transactions if t.pid is not None), None)
    if s009.__class__ is str:
        version = release = agency = association_code = ""
    else:
        version, release, agency, association_code = [*s009, "", "", "", ""][1:5]
    return _message_of(  # positional: the fields of Message in declaration order
        reference,
        message_type,
        version,
        release,
        agency,
        association_code,
        pid,
        document_code,
        document_number,
        document_date,
        sender,
        recipient,
        transactions,
        count,  # segment_count
        first,  # first_segment_number
        tuple(problems),  # problems
        segs,  # segments
        tuple(repeated),  # repeated
        header_dates,  # malformed_header_dates
    )


#: NAD parties by (MP-ID, code list): a replay sees the same few market partners in every
#: message, and parties are immutable. Cleared when full, so it stays small.
_PARTY_CACHE: dict[tuple[str, str], Party] = {}
_PARTY_CACHE_SIZE = 4096


def _nad_party(key: tuple[str, str]) -> Party:
    party = _party(*key)
    if len(_PARTY_CACHE) >= _PARTY_CACHE_SIZE:
        _PARTY_CACHE.clear()
    _PARTY_CACHE[key] = party
    return party


_TX_TAGS = frozenset(("RFF", "LOC", "DTM", "STS"))
#: The qualifiers of a transaction's segments the AHB allows once per SG4 IDE (AHB-FACTS §2:
#: LOC+Z16 "[2061] exactly once"; one Beginn, one Ende, one Transaktionsgrund, one answer).
_ONCE = {
    "RFF": frozenset(("Z13", "TN")),
    "LOC": frozenset(("Z16", "Z21", "Z22")),
    "DTM": frozenset(("92", "93")),
    "STS": frozenset(("7", "E01")),
}
_HEADER_TAGS = frozenset(("IDE", "RFF", "BGM", "DTM", "NAD"))


def _qualifier(seg: Segment) -> str:
    """``seg.value(0)``: the first component of the first element, ``""`` when absent."""
    elements = seg[1]
    if not elements:
        return ""
    first = elements[0]
    return first if first.__class__ is str else first[0]


def _transaction(
    segs: tuple[Segment, ...], first: int, header_pid: str | None, problems: list[str]
) -> Transaction:
    pid = malo = tranche = request_ref = reason = code = ebd = None
    start = end = None
    reasons: tuple[str, ...] = ()
    malformed: tuple[tuple[str, str], ...] = ()
    seen: set[str] = set()  # "TAG+qualifier" of each once-only segment read
    repeated: list[str] = []
    number = first - 1
    for seg in segs:
        number += 1
        tag = seg[0]
        if tag not in _TX_TAGS:
            continue
        # Inline Segment.value: q is the first component of the first element.
        els = seg[1]
        e = els[0] if els else ""
        q = e if e.__class__ is str else e[0]
        if q not in _ONCE.get(tag, ()):
            continue
        name = tag + "+" + q
        if name in seen:
            repeated.append(name)  # refused for it; which copy is read below does not matter then
        seen.add(name)
        # Each value from the first copy that has one (what the reference parser read).
        if tag == "RFF":
            if q == "Z13":
                if pid is None:
                    pid = (e[1] if e.__class__ is not str and len(e) > 1 else "") or None
            elif request_ref is None:
                request_ref = (e[1] if e.__class__ is not str and len(e) > 1 else "") or None
        elif tag == "LOC":
            if q == "Z16" and malo is None:
                e = els[1] if len(els) > 1 else ""
                malo = (e if e.__class__ is str else e[0]) or None
            elif q == "Z21" and tranche is None:
                e = els[1] if len(els) > 1 else ""
                tranche = (e if e.__class__ is str else e[0]) or None
        elif tag == "DTM":
            if q == "92" and start is None:
                start = _dtm(seg, number, problems)
                if start is None or _not_utc_303(seg):
                    start = None
                    malformed += (("92", _dtm_text(seg)),)
            elif q == "93" and end is None:
                end = _dtm(seg, number, problems)
                if end is None or _not_utc_303(seg):
                    end = None
                    malformed += (("93", _dtm_text(seg)),)
        elif q == "7":
            if reason is None:
                # C556 #1..#3 by position; an absent one is "" and so trailing, popped below.
                codes = [c if c.__class__ is str else c[0] for c in els[2:5]]
                reason = (codes[0] if codes else "") or None
                while codes and not codes[-1]:
                    codes.pop()
                reasons = tuple(codes)
        elif code is None:  # STS+E01
            code = seg.value(2, 0) or None
            ebd = seg.value(2, 1) or None
    ide = segs[0][1]
    e = ide[1] if len(ide) > 1 else ""
    e7495 = ide[0] if ide else ""
    return _transaction_of(  # positional: the fields of Transaction in declaration order
        e if e.__class__ is str else e[0],  # ide_ref
        pid or header_pid,  # pid
        malo or tranche,  # malo: a Tranche's ID (LOC+Z21) when the message names no MaLo
        start,
        end,
        request_ref,
        reason,  # transaction_reason
        code,  # answer_code
        ebd,  # answer_ebd
        first,  # first_segment_number
        segs,  # segments
        reasons,  # transaction_reasons
        malformed,  # malformed_dates
        tuple(repeated),  # repeated
        e7495 if e7495.__class__ is str else e7495[0],  # ide_qualifier (7495)
    )


#: Parsed DTM values by (value, format): a replay sees the same few instants again and again,
#: and the datetimes are immutable. Cleared when full, so it stays small.
_DTM_CACHE: dict[tuple[str, str], datetime] = {}
_DTM_CACHE_SIZE = 4096


def _dtm(seg: Segment, number: int, problems: list[str]) -> datetime | None:
    # C507 is a component list in every well-formed DTM; anything else takes Segment.value.
    elements = seg[1]
    c507 = elements[0] if elements else ""
    if c507.__class__ is list and len(c507) > 2:
        key = (c507[1], c507[2])
    else:
        key = (seg.value(0, 1), seg.value(0, 2))
    cached = _DTM_CACHE.get(key)
    if cached is not None:
        return cached
    try:
        parsed = parse_dtm(*key)
    except InvalidValue as err:
        problems.append(f"segment {number} DTM+{seg.value(0)}: {err.detail}")
        return None
    if len(_DTM_CACHE) >= _DTM_CACHE_SIZE:
        _DTM_CACHE.clear()
    _DTM_CACHE[key] = parsed
    return parsed


def _zone_not_utc(seg: Segment) -> bool:
    """Whether a DTM of format 303/304 names a zone other than ``+00``: a transaction's
    Zuordnungsbeginn/-ende is UTC in MaKo (AHB condition [931], DOMAIN §4), so an offset is
    "Format nicht eingehalten" (APERAK Z35), however well the instant itself parses."""
    value, fmt = seg.value(0, 1), seg.value(0, 2)
    return fmt in ("303", "304") and not value.endswith("+00")


def _not_utc_303(seg: Segment) -> bool:
    """Whether a transaction's DTM+92/93 is not what UTILMD S2.1 allows: format 303 in UTC (C507
    2379 ``[303]``, [931] ``?+00``). A 102 date was read as 00:00 Berlin, a guess at an
    instant the sender did not name: "Format nicht eingehalten" (APERAK Z35), as for DTM+137."""
    return seg.value(0, 2) != "303" or _zone_not_utc(seg)


def _dtm_text(seg: Segment) -> str:
    """C507 #2 and #3 (value and format) of a DTM as sent, e.g. ``2025061:102``."""
    return f"{seg.value(0, 1)}:{seg.value(0, 2)}"


_BERLIN = ZoneInfo("Europe/Berlin")


def _iso_dtm(value: str, fmt: str) -> str | None:
    n = len(value)
    if fmt == "303" and n == 15 and value[:12].isdigit():
        head, zone = value[:12], value[12:]
    elif fmt == "304" and n == 17 and value[:14].isdigit():
        head, zone = value[:14], value[14:]
    elif fmt == "203" and n == 12 and value.isdigit():
        head, zone = value, ""
    elif fmt == "102" and n == 8 and value.isdigit():
        head, zone = value + "0000", ""
    else:
        return None
    if zone and (zone[0] not in "+-" or not zone[1:].isdigit()):
        return None
    return f"{head[:8]}T{head[8:]}{zone}"


def parse_dtm(value: str, fmt: str) -> datetime:
    """A DTM value as an aware UTC datetime; formats 102, 203, 303 and 304.

    102 and 203 carry no zone: they are German wall time (Europe/Berlin), so a 102 date is the
    00:00 Berlin at which a MaKo day begins, not 00:00 UTC. Raises ``InvalidValue`` (0085 12)
    when the value does not fit the format or the format is not one of these.
    """
    iso = _iso_dtm(value, fmt)
    if iso is not None:
        try:
            parsed = datetime.fromisoformat(iso)
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_BERLIN)).astimezone(UTC)
        except ValueError:
            pass
    raise InvalidValue(
        f"value {value!r} does not fit DTM format {fmt!r}",
        expected={"102": "CCYYMMDD", "203": "CCYYMMDDHHMM", "303": "CCYYMMDDHHMM+ZZ",
                  "304": "CCYYMMDDHHMMSS+ZZ"}.get(fmt, "format 102/203/303/304"),
        found=value,
    )
