"""Split decoded EDIFACT text into segments, elements and components; escape for writing.

Representation (cheap on purpose, batch re-processing reads millions of messages): a
:class:`Segment` is a ``(tag, elements)`` tuple; an element is a ``str`` when it has no component
separator, else a ``list[str]`` of all its components (empty trailing components kept, exactly as
written). Release characters are removed; the values are the literal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
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
    @lru_cache(maxsize=64)
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
        try:
            el = self[1][element]
            if el.__class__ is str:
                return el if component == 0 else ""
            return el[component]
        except IndexError:
            return ""

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
    linear; a handful of ``str.split`` calls per segment. Escaped service characters become
    private-use stand-ins first, so only the few non-ASCII segments pay for restoring them.
    """
    rel = delimiters.release
    protected = rel in text
    if protected:
        guarded = _protect(text, delimiters)
        if rel in guarded:
            # A release before an ordinary character, a line break or the end: rare, exact path.
            return _tokenize_exact(text, delimiters, source)
        text = guarded
    term = delimiters.terminator
    if "\n" in text:
        # Escaped terminators are sentinels by now, so every terminator here is a real one.
        text = text.replace(term + "\r\n", term).replace(term + "\n", term)
    pieces = text.split(term)
    last = pieces.pop()
    if "\n" in text or "\r" in text:
        pieces = [p.lstrip(_CRLF) if p and p[0] in _CRLF else p for p in pieces]
    el = delimiters.element
    co = delimiters.component
    # Most segments have no component separator at all; only those pay for the inner loop.
    if not protected:
        pairs = [
            (ps[0], [x.split(co) if co in x else x for x in ps[1:]]) if co in p else (ps[0], ps[1:])
            for p, ps in zip(pieces, map(str.split, pieces, repeat(el)), strict=True)
        ]
    else:
        # A non-ASCII piece may hold stand-ins for escaped characters (or just umlauts). The
        # usual one (a DTM's "?+" zone offset, a name) has no escaped component separator: the
        # other stand-ins are put back in each element before its component split, inline
        # (``_restore`` does the same for every case, at the cost of a call per piece).
        swaps = _swaps(delimiters)
        (release, _), (component, _), (element, _), (terminator, _) = swaps
        pairs = [
            (
                (ps[0], [x.split(co) if co in x else x for x in ps[1:]]) if co in p
                else (ps[0], ps[1:])
            )
            if p.isascii()
            else (
                (ps[0], [
                    y.split(co) if co in y else y
                    for y in [x.replace(element, el).replace(release, rel).replace(terminator, term)
                              for x in ps[1:]]
                ])
                if component not in p
                else _restore(p, ps, co, swaps)
            )
            for p, ps in zip(pieces, map(str.split, pieces, repeat(el)), strict=True)
        ]
    if not _valid_tags.issuperset(map(_first, pairs)):
        for i, pair in enumerate(pairs):
            _check_piece(pair[0], i + 1, delimiters, source)
    _check_rest(last, delimiters, _NO_RELEASE if protected else rel, len(pairs) + 1, source, protected)
    return list(map(_new_segment, repeat(Segment), pairs))


_first = itemgetter(0)


def _check_piece(tag: str, number: int, d: Delimiters, source: str | None) -> None:
    if not tag:
        raise EdifactSyntaxError(
            "empty segment", source=source, segment_number=number, expected="a segment tag",
            found=d.terminator,
        )
    if tag not in _valid_tags:
        _check_tag(tag.translate(_restore_table(d)), number, source)


def _check_rest(
    last: str, d: Delimiters, rel: str, number: int, source: str | None, protected: bool = False
) -> None:
    """Raise for text after the last terminator; ``protected``: ``last`` holds stand-ins for
    escaped characters, shown as the release sequence they stand for (as in the input)."""
    rest = last.lstrip(_CRLF)
    if not rest:
        return
    if _odd_release_suffix(rest, rel):
        raise DanglingRelease(
            "release character at end of input",
            source=source,
            segment_number=number,
            expected="a character after the release character",
            found="end of input",
        )
    if protected:
        rest = rest.translate(_unprotect_table(d))
    raise EdifactSyntaxError(
        "last segment is not terminated",
        source=source,
        segment_number=number,
        expected=d.terminator,
        found=f"end of input after {rest[-20:]!r}",
    )


def _tokenize_exact(text: str, d: Delimiters, source: str | None) -> list[Segment]:
    """Character-exact tokenizer for text whose release characters precede ordinary data."""
    rel = d.release
    pieces = _split_escaped(text, d.terminator, rel)
    last = pieces.pop()
    out: list[Segment] = []
    for piece in pieces:
        if piece and piece[0] in _CRLF:
            piece = piece.lstrip(_CRLF)
        if rel in piece:
            out.append(_escaped_segment(piece, d, len(out) + 1, source))
            continue
        parts = piece.split(d.element)
        _check_piece(parts[0], len(out) + 1, d, source)
        comps = [p.split(d.component) if d.component in p else p for p in parts[1:]]
        out.append(_new_segment(Segment, (parts[0], comps)))
    _check_rest(last, d, rel, len(out) + 1, source)
    return out


# Our charsets are all single-byte, so decoded text never contains these private-use code
# points: an escaped service character can stand in for itself while we split with str.split.
_NO_RELEASE = "\ue0ff"
_SENTINEL = re.compile("[\ue000-\ue003]")


def _protect(text: str, d: Delimiters) -> str:
    rel = d.release
    text = text.replace(rel + rel, "\ue000")
    text = text.replace(rel + d.component, "\ue001")
    text = text.replace(rel + d.element, "\ue002")
    return text.replace(rel + d.terminator, "\ue003")


@lru_cache(maxsize=16)
def _restore_table(d: Delimiters) -> dict[int, str]:
    return str.maketrans(
        {"\ue000": d.release, "\ue001": d.component, "\ue002": d.element, "\ue003": d.terminator}
    )


@lru_cache(maxsize=16)
def _unprotect_table(d: Delimiters) -> dict[int, str]:
    """Stand-ins back to the release sequences they replaced (``_protect`` undone)."""
    rel = d.release
    return str.maketrans({
        "\ue000": rel + rel, "\ue001": rel + d.component, "\ue002": rel + d.element,
        "\ue003": rel + d.terminator,
    })


@lru_cache(maxsize=16)
def _swaps(d: Delimiters) -> tuple[tuple[str, str], ...]:
    return (("\ue000", d.release), ("\ue001", d.component), ("\ue002", d.element),
            ("\ue003", d.terminator))


def _restore(
    piece: str, parts: list[str], co: str, swaps: tuple[tuple[str, str], ...]
) -> tuple[str, list[Element]]:
    """``(tag, elements)`` of a non-ASCII piece, with escaped characters put back.

    Usual case (no escaped component separator; ``tokenize`` inlines it): the other stand-ins
    are put back in each element before its component split, since what they stand for is not
    the component separator. ``str.replace`` returns a string without the stand-in as it is
    (no copy), and three of them cost less than finding out which stand-ins occur; most
    non-ASCII pieces hold umlauts only or a "?+" zone offset. ``str.translate`` would look up
    every character.
    """
    (release, rel), (component, _), (element, el), (terminator, term) = swaps
    if component not in piece:
        return (parts[0], [
            y.split(co) if co in y else y
            for x in parts[1:]
            for y in [x.replace(element, el).replace(release, rel).replace(terminator, term)]
        ])
    present = [swap for swap in swaps if swap[0] in piece]
    return (parts[0], [
        (
            [c if c.isascii() else _unguard(c, present) for c in x.split(co)] if co in x
            else (x if x.isascii() else _unguard(x, present))
        )
        for x in parts[1:]
    ])


def _unguard(value: str, present: list[tuple[str, str]]) -> str:
    for stand_in, char in present:
        value = value.replace(stand_in, char)
    return value


def released(text: str, at: int, release: str) -> bool:
    """Whether the character at ``at`` is escaped: an odd run of release characters before it
    (an even one is released release characters). Counts back from ``at``; copies nothing."""
    run = 0
    while run < at and text[at - run - 1] == release:
        run += 1
    return run % 2 == 1


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
    if (
        d.release not in value and d.component not in value and d.element not in value
        and d.terminator not in value
    ):
        return value
    rel = d.release
    out = value.replace(rel, rel + rel)
    for c in (d.component, d.element, d.terminator):
        out = out.replace(c, rel + c)
    return out
