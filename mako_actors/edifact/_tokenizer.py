"""Split decoded EDIFACT text into segments, elements and components; escape for writing.

Representation (cheap on purpose, batch re-processing reads millions of messages): a
:class:`Segment` is a ``(tag, elements)`` tuple; an element is a ``str`` when it has no component
separator, else a ``list[str]`` of all its components (empty trailing components kept, exactly as
written). Release characters are removed; the values are the literal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from mako_actors.edifact.errors import DanglingRelease, EdifactSyntaxError

__all__ = ["DEFAULT_DELIMITERS", "Delimiters", "Element", "Segment", "escape", "tokenize"]

Element = str | list[str]

_CRLF = "\r\n"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The six UNA service characters; defaults are the ISO 9735 ones (``UNA:+.? '``)."""

    component: str = ":"
    element: str = "+"
    decimal: str = "."
    release: str = "?"
    reserved: str = " "
    terminator: str = "'"

    @classmethod
    def from_una(cls, chars: str) -> Delimiters:
        """Build from the 6 characters after ``UNA``; raises ``EdifactSyntaxError`` (code 22)
        when they are not 6, or separators/release/terminator are not pairwise distinct."""
        if len(chars) != 6:
            raise EdifactSyntaxError(
                "UNA must be followed by exactly 6 service characters",
                segment_tag="UNA",
                expected="6 characters",
                found=chars,
                syntax_error_code="22",
            )
        d = cls(*chars)
        specials = [d.component, d.element, d.release, d.terminator]
        if len(set(specials)) != 4 or any(c in _CRLF for c in specials):
            raise EdifactSyntaxError(
                "UNA service characters must be distinct and not CR/LF",
                segment_tag="UNA",
                expected="4 distinct separators/release/terminator",
                found=chars,
                syntax_error_code="22",
            )
        return d

    @property
    def una(self) -> str:
        """The UNA service string advice declaring these delimiters (9 characters)."""
        return (
            f"UNA{self.component}{self.element}{self.decimal}"
            f"{self.release}{self.reserved}{self.terminator}"
        )


DEFAULT_DELIMITERS = Delimiters()


class Segment(NamedTuple):
    """One segment: ``tag`` plus its elements (``str`` or ``list[str]`` of components)."""

    tag: str
    elements: list[Element]

    def value(self, element: int, component: int = 0) -> str:
        """Component ``component`` of element ``element`` (0-based, after the tag), or ``""``."""
        els = self.elements
        if element >= len(els):
            return ""
        el = els[element]
        if isinstance(el, str):
            return el if component == 0 else ""
        return el[component] if component < len(el) else ""

    def components(self, element: int) -> list[str]:
        """All components of element ``element`` as a list (``[]`` when the element is absent)."""
        if element >= len(self.elements):
            return []
        el = self.elements[element]
        return [el] if isinstance(el, str) else list(el)


_new_segment = tuple.__new__
_valid_tags: set[str] = set()


def _check_tag(tag: str, number: int, source: str | None) -> None:
    if len(tag) == 3 and tag.isascii() and tag.isalnum() and tag == tag.upper():
        _valid_tags.add(tag)
        return
    raise EdifactSyntaxError(
        "invalid segment tag",
        source=source,
        segment_number=number,
        expected="3 upper-case letters/digits",
        found=tag[:40],
    )


def tokenize(text: str, delimiters: Delimiters, *, source: str | None = None) -> list[Segment]:
    """Split ``text`` (decoded, UNA already removed) into segments.

    CR/LF right after a segment terminator are line breaks, not data. Raises
    ``EdifactSyntaxError`` for an unterminated last segment, an empty segment or an invalid tag,
    and ``DanglingRelease`` for a release character at the end or before a line break. Cost:
    linear; segments without the release character take a pure ``str.split`` path.
    """
    rel = delimiters.release
    if rel in text:
        pieces = _split_escaped(text, delimiters.terminator, rel)
    else:
        pieces = text.split(delimiters.terminator)
    last = pieces.pop()
    el = delimiters.element
    co = delimiters.component
    out: list[Segment] = []
    append = out.append
    valid = _valid_tags
    for piece in pieces:
        if not piece or piece[0] in _CRLF:
            piece = piece.lstrip(_CRLF)
            if not piece:
                raise EdifactSyntaxError(
                    "empty segment",
                    source=source,
                    segment_number=len(out) + 1,
                    expected="a segment tag",
                    found=delimiters.terminator,
                )
        if rel in piece:
            append(_escaped_segment(piece, delimiters, len(out) + 1, source))
            continue
        parts = piece.split(el)
        tag = parts[0]
        if tag not in valid:
            _check_tag(tag, len(out) + 1, source)
        append(
            _new_segment(Segment, (tag, [p.split(co) if co in p else p for p in parts[1:]]))
        )
    rest = last.lstrip(_CRLF)
    if rest:
        if _odd_release_suffix(rest, rel):
            raise DanglingRelease(
                "release character at end of input",
                source=source,
                segment_number=len(out) + 1,
                expected="a character after the release character",
                found="end of input",
            )
        raise EdifactSyntaxError(
            "last segment is not terminated",
            source=source,
            segment_number=len(out) + 1,
            expected=delimiters.terminator,
            found=f"end of input after {rest[-20:]!r}",
        )
    return out


def _odd_release_suffix(s: str, rel: str) -> bool:
    return (len(s) - len(s.rstrip(rel))) % 2 == 1


def _split_escaped(s: str, sep: str, rel: str) -> list[str]:
    """``s.split(sep)`` that keeps separators preceded by an odd run of release chars."""
    parts = s.split(sep)
    out: list[str] = []
    pending: str | None = None
    for part in parts:
        if pending is not None:
            part = pending + sep + part
            pending = None
        if part.endswith(rel) and _odd_release_suffix(part, rel):
            pending = part
        else:
            out.append(part)
    if pending is not None:
        # Only the text after the last terminator can end in a live release char.
        out.append(pending)
    return out


def _unescape(s: str, rel: str, number: int, source: str | None) -> str:
    if rel not in s:
        return s
    out: list[str] = []
    i = 0
    n = len(s)
    while True:
        j = s.find(rel, i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j])
        if j + 1 >= n:
            raise DanglingRelease(
                "release character without a following character",
                source=source,
                segment_number=number,
                expected="a character after the release character",
                found="end of value",
            )
        c = s[j + 1]
        if c in _CRLF:
            raise DanglingRelease(
                "release character right before a line break",
                source=source,
                segment_number=number,
                expected="a character after the release character",
                found=repr(c),
            )
        out.append(c)
        i = j + 2


def _escaped_segment(piece: str, d: Delimiters, number: int, source: str | None) -> Segment:
    rel = d.release
    parts = _split_escaped(piece, d.element, rel)
    tag = _unescape(parts[0], rel, number, source)
    if tag not in _valid_tags:
        _check_tag(tag, number, source)
    elements: list[Element] = []
    for p in parts[1:]:
        if d.component in p:
            comps = _split_escaped(p, d.component, rel)
            if len(comps) > 1:
                elements.append([_unescape(c, rel, number, source) for c in comps])
                continue
        elements.append(_unescape(p, rel, number, source))
    return _new_segment(Segment, (tag, elements))


def escape(value: str, d: Delimiters) -> str:
    """``value`` with every service character prefixed by the release character."""
    if not any(c in value for c in (d.release, d.component, d.element, d.terminator)):
        return value
    rel = d.release
    out = value.replace(rel, rel + rel)
    for c in (d.component, d.element, d.terminator):
        out = out.replace(c, rel + c)
    return out
