"""Generic EDIFACT writer: segments -> escaped text with UNA, UNB..UNZ and correct counts.

The caller supplies message bodies (the segments between UNH and UNT); the writer adds UNH, UNT
(counting UNH through UNT), UNB and UNZ (counting messages), escapes every value with the
release character, omits trailing empty components/elements (ISO 9735 7.1) and encodes in the
charset the syntax identifier names (UNOC -> ISO-8859-1). Output is deterministic: the same
input gives the same bytes, so a retried send is the identical interchange.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mako_actors.edifact._tokenizer import DEFAULT_DELIMITERS, Delimiters, Element, Segment, escape
from mako_actors.edifact.interchange import CHARSETS
from mako_actors.errors import InvalidArgument

__all__ = [
    "OutboundEnvelope",
    "OutboundMessage",
    "format_dtm",
    "render_interchange",
    "render_segment",
    "seg",
]

SegmentLike = Segment | tuple[str, Sequence[Element]]


def seg(tag: str, *elements: Element | None) -> Segment:
    """Build a segment; ``None`` elements become empty (handy for optional values)."""
    return _new_segment(
        Segment,
        (tag, [e if isinstance(e, str) else ("" if e is None else list(e)) for e in elements]),
    )


_new_segment = tuple.__new__


def render_segment(segment: SegmentLike, d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """One segment as text including its terminator; trailing empty parts are omitted."""
    return _render_many((segment,), d, "")


def _render_many(segments: Sequence[SegmentLike], d: Delimiters, line_break: str) -> str:
    """``segments`` as text, each followed by the terminator and ``line_break``.

    Cost: a segment's values are joined as they are and the result is checked for service
    characters that the joins did not put there (a count per separator); only a segment that
    has some is escaped value by value.
    """
    co = d.component
    el = d.element
    rel = d.release
    term = d.terminator
    plain = _plain(d)
    texts: list[str] = []
    for tag, elements in segments:
        parts = [tag]
        joined = 0
        for e in elements:
            if isinstance(e, str):
                parts.append(e)
            else:
                comps = list(e)
                while comps and comps[-1] == "":
                    comps.pop()
                if len(comps) > 1:
                    joined += len(comps) - 1
                parts.append(co.join(comps))
        while len(parts) > 1 and not parts[-1]:
            parts.pop()
        text = el.join(parts)
        if not (
            plain and rel not in text and term not in text and text.count(co) == joined
            and text.count(el) == len(parts) - 1
        ):
            text = _render_escaped(tag, elements, d)
        texts.append(text)
    if not texts:
        return ""
    end = term + line_break
    return end.join(texts) + end


@lru_cache(maxsize=64)
def _plain(d: Delimiters) -> bool:
    """Whether the separators are four distinct single characters, none a line break (so
    counting them in the joined text is exact)."""
    specials = (d.component, d.element, d.release, d.terminator)
    return (
        all(len(c) == 1 and c not in "\r\n" for c in specials) and len(set(specials)) == 4
    )


def _render_escaped(tag: str, elements: Sequence[Element], d: Delimiters) -> str:
    parts = [tag]
    for el in elements:
        if isinstance(el, str):
            parts.append(escape(el, d))
        else:
            comps = [escape(c, d) for c in el]
            while comps and not comps[-1]:
                comps.pop()
            parts.append(d.component.join(comps))
    while len(parts) > 1 and not parts[-1]:
        parts.pop()
    return d.element.join(parts)


_BERLIN = ZoneInfo("Europe/Berlin")


def format_dtm(instant: datetime, fmt: str = "303") -> str:
    """``instant`` as a DTM value: 303 (``...+00``) or 304 (seconds) in UTC; 102 (date) and 203
    carry no zone, so they are German wall time (Europe/Berlin), as ``parse_dtm`` reads them:
    the 00:00 Berlin a MaKo day begins at is that day's 102 date.

    Raises ``InvalidArgument`` for a naive datetime (its instant is ambiguous) or another format.
    """
    if instant.tzinfo is None:
        raise InvalidArgument("DTM values need an aware datetime")
    if fmt == "102":
        return instant.astimezone(_BERLIN).strftime("%Y%m%d")
    if fmt == "203":
        return instant.astimezone(_BERLIN).strftime("%Y%m%d%H%M")
    t = instant.astimezone(UTC)
    if fmt == "303":
        return t.strftime("%Y%m%d%H%M") + "+00"
    if fmt == "304":
        return t.strftime("%Y%m%d%H%M%S") + "+00"
    raise InvalidArgument(f"unsupported DTM format {fmt!r}; use 102, 203, 303 or 304")


class OutboundEnvelope(BaseModel):
    """UNB/UNZ values of an outbound interchange (plain-dict compatible).

    ``prepared_at`` must be aware; it is written as UTC ``YYMMDD:HHMM``. ``control_ref`` is
    0020 (at most 14 characters, unique per sender).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sender_id: str = Field(min_length=1, max_length=35)
    sender_qualifier: str = "500"
    recipient_id: str = Field(min_length=1, max_length=35)
    recipient_qualifier: str = "500"
    prepared_at: datetime
    control_ref: str = Field(min_length=1, max_length=14)
    syntax_id: str = "UNOC"
    syntax_version: str = "3"
    application_ref: str | None = None
    test: bool = False
    una: str = Field(default=DEFAULT_DELIMITERS.una, min_length=9, max_length=9)
    line_break: str = ""

    @field_validator("prepared_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("prepared_at must be timezone-aware")
        return v

    @field_validator("syntax_id")
    @classmethod
    def _known_charset(cls, v: str) -> str:
        if v not in CHARSETS:
            raise ValueError(f"unsupported syntax identifier {v!r}")
        return v

    @field_validator("line_break")
    @classmethod
    def _line_break(cls, v: str) -> str:
        if v not in ("", "\n", "\r\n"):
            raise ValueError("line_break must be '', '\\n' or '\\r\\n'")
        return v

    @property
    def delimiters(self) -> Delimiters:
        """The delimiters declared by ``una``."""
        return Delimiters.from_una(self.una[3:])


class OutboundMessage(BaseModel):
    """One message to write: UNH values plus its body (segments between UNH and UNT)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    reference: str = Field(min_length=1, max_length=14)
    message_type: str
    version: str = "D"
    release: str
    agency: str = "UN"
    association_code: str
    body: tuple[Segment, ...]


def render_interchange(
    envelope: OutboundEnvelope, messages: Iterable[OutboundMessage], *, with_una: bool = True
) -> bytes:
    """The complete interchange as bytes in the envelope's charset.

    Raises ``InvalidArgument`` when a value cannot be encoded in that charset (e.g. a ``€``
    under UNOC) or when two messages share a reference.
    """
    d = envelope.delimiters
    out: list[str] = [d.una + envelope.line_break] if with_una else []
    unb = seg(
        "UNB",
        [envelope.syntax_id, envelope.syntax_version],
        [envelope.sender_id, envelope.sender_qualifier],
        [envelope.recipient_id, envelope.recipient_qualifier],
        list(envelope.prepared_at.astimezone(UTC).strftime("%y%m%d:%H%M").split(":")),
        envelope.control_ref,
        "",
        envelope.application_ref or "",
        "",
        "",
        "",
        "1" if envelope.test else "",
    )
    lb = envelope.line_break
    out.append(_render_many((unb,), d, lb))
    count = 0
    seen: set[str] = set()
    for m in messages:
        if m.reference in seen:
            raise InvalidArgument(f"duplicate message reference {m.reference!r}")
        seen.add(m.reference)
        count += 1
        head = [m.message_type, m.version, m.release, m.agency, m.association_code]
        out.append(_render_many(
            [seg("UNH", m.reference, head), *m.body, seg("UNT", str(len(m.body) + 2), m.reference)],
            d, lb,
        ))
    out.append(_render_many((seg("UNZ", str(count), envelope.control_ref),), d, lb))
    text = "".join(out)
    codec = CHARSETS[envelope.syntax_id]
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"character {exc.object[exc.start]!r} cannot be written in {envelope.syntax_id}"
        ) from None
