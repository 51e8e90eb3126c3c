"""Shared helpers for the EDIFACT tests: the external sample corpus and pydifact as oracle."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mako_actors.edifact import Element, Segment, decode, tokenize

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "edifact"


def sample_files() -> list[Path]:
    """Every EDIFACT file of the external corpus (``.edi``/``.txt``, licence texts excluded)."""
    if not SAMPLES.is_dir():
        return []
    return sorted(
        p
        for p in SAMPLES.rglob("*")
        if p.is_file() and p.suffix in (".edi", ".txt") and not p.name.upper().startswith("LICENSE")
    )


def normalise(element: Any) -> Element:
    """One documented normal form for both tokenizers.

    pydifact drops trailing empty components and turns a one-component element into a str;
    we keep components exactly as written. Normal form: trailing empty components removed,
    then a single (or no) component becomes a plain str. Empty trailing *elements* are kept by
    both and compared as they are.
    """
    if isinstance(element, str):
        return element
    comps = list(element)
    while comps and comps[-1] == "":
        comps.pop()
    if len(comps) <= 1:
        return comps[0] if comps else ""
    return comps


def ours(raw: bytes) -> list[tuple[str, list[Element]]]:
    d = decode(raw)
    return [(s.tag, [normalise(e) for e in s.elements]) for s in tokenize(d.text, d.delimiters)]


def oracle(raw: bytes) -> list[tuple[str, list[Element]]]:
    from pydifact.parser import Parser

    d = decode(raw)
    full = d.delimiters.una + d.text if d.una_present else d.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segs = list(Parser().parse(full))
    return [(s.tag, [normalise(e) for e in s.elements]) for s in segs if s.tag != "UNA"]


def as_plain(segments: list[Segment]) -> list[tuple[str, list[Element]]]:
    return [(s.tag, [normalise(e) for e in s.elements]) for s in segments]
