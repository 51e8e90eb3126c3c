"""The parser gives exactly the results and errors of the reference parser (base a159abf).

``parse_golden.json`` holds, per input, a digest of the reference parser's complete result (all
values down to the segments) or of its error (class and full message: segment number,
expected/found, 0085). Inputs: hand-made edge cases and seeded mutations of generated UTILMD
(truncation, byte flips, release characters, UNA variants, line breaks), every file of a
generated archive with 10 % defects plus mutations of it, and the external samples plus
mutations of them (skipped when absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from parse_golden import corpora, key, outcome

from mako_actors.edifact import EdifactError, InterchangeTooLarge, parse_interchange, synthetic_utilmd
from mako_actors.edifact._tokenizer import _tokenize_exact, tokenize
from mako_actors.edifact.interchange import decode

GOLDEN = json.loads((Path(__file__).with_name("parse_golden.json")).read_text())
CORPORA = corpora()


def _differences(name: str) -> tuple[int, list[str]]:
    golden = GOLDEN[name]
    known = 0
    wrong: list[str] = []
    for raw in CORPORA[name]:
        want = golden.get(key(raw))
        if want is None:
            continue
        known += 1
        if outcome(raw) != want:
            wrong.append(repr(raw[:160]))
    return known, wrong


def test_own_inputs_parse_exactly_like_the_reference() -> None:
    known, wrong = _differences("own")
    # These inputs come from this package alone: every one must be in the golden file.
    assert known == len(CORPORA["own"]) > 1000
    assert not wrong, f"{len(wrong)} inputs differ, e.g. {wrong[:3]}"


def test_generated_archive_with_defects_parses_exactly_like_the_reference() -> None:
    known, wrong = _differences("archive")
    if known < len(CORPORA["archive"]) // 2:
        pytest.skip("the archive generator's output changed since the golden file was made")
    assert not wrong, f"{len(wrong)} inputs differ, e.g. {wrong[:3]}"


def test_samples_parse_exactly_like_the_reference() -> None:
    if not CORPORA["samples"]:
        pytest.skip("external sample corpus absent")
    known, wrong = _differences("samples")
    if known < len(CORPORA["samples"]) // 2:
        pytest.skip("the external samples changed since the golden file was made")
    assert not wrong, f"{len(wrong)} inputs differ, e.g. {wrong[:3]}"


def test_fast_tokenizer_path_splits_like_the_character_exact_path() -> None:
    """The split-based path and the character-exact one agree on values and on the kind and
    place of an error (the "found" text of an unterminated last segment differs: the fast
    path shows an escaped character's stand-in there, as the reference parser did)."""
    checked = 0
    for raw in CORPORA["own"] + CORPORA["samples"]:
        try:
            d = decode(raw)
        except EdifactError:
            continue
        results: list[object] = []
        for split in (tokenize, _tokenize_exact):
            try:
                results.append(split(d.text, d.delimiters, source="x"))
            except EdifactError as err:
                results.append((type(err).__name__, err.segment_number, err.detail))
        assert results[0] == results[1], raw[:160]
        checked += 1
    assert checked > 1000


def test_size_limit_is_checked_before_parsing() -> None:
    raw = synthetic_utilmd()
    assert parse_interchange(raw, max_bytes=len(raw)).control_ref
    with pytest.raises(InterchangeTooLarge, match=f"maximum interchange size of {len(raw) - 1}"):
        parse_interchange(raw, max_bytes=len(raw) - 1)
