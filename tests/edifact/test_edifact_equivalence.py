"""The parser gives exactly the results and errors of the reference parser (base a159abf).

``parse_golden.json`` holds, per input, a digest of the reference parser's complete result (all
values down to the segments) or of its error (class and full message: segment number,
expected/found, 0085). Inputs: hand-made edge cases and seeded mutations of generated UTILMD
(truncation, byte flips, release characters, UNA variants, line breaks), every file of a
generated archive with 10 % defects plus mutations of it, and the external samples plus
mutations of them (skipped when absent).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parse_golden import corpora, key, outcome

from mako_actors.edifact import (
    Delimiters,
    EdifactError,
    InterchangeTooLarge,
    OutboundEnvelope,
    OutboundMessage,
    Segment,
    parse_interchange,
    render_interchange,
    render_segment,
    seg,
    synthetic_utilmd,
)
from mako_actors.edifact._tokenizer import _tokenize_exact, escape, tokenize
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


def test_malformed_dates_are_exactly_the_transactions_dtm_problems() -> None:
    """``Transaction.malformed_dates`` (left out of the golden digests) names, per transaction
    and in order, the DTM+92/93 its message's ``problems`` report, and those that parse but are
    no 303 in UTC (a 102 date: no instant in UTILMD S2.1), with value and format as sent."""
    seen = 0
    for raw in CORPORA["own"] + CORPORA["archive"] + CORPORA["samples"]:
        try:
            interchange = parse_interchange(raw, source="x")
        except EdifactError:
            continue
        for message in interchange.messages:
            reported = " | ".join(p for p in message.problems if " DTM+9" in p)
            for t in message.transactions:
                expected = tuple(
                    (s.value(0), f"{s.value(0, 1)}:{s.value(0, 2)}")
                    for n, s in enumerate(t.segments, t.first_segment_number)
                    if s.tag == "DTM" and s.value(0) in ("92", "93")
                    and (f"segment {n} DTM+{s.value(0)}: " in reported or not _utc_303(s))
                )
                assert t.malformed_dates == expected, raw[:160]
                seen += len(expected)
    assert seen > 10  # the mutated corpora hold malformed dates


def test_fast_tokenizer_path_splits_like_the_character_exact_path() -> None:
    """The split-based path and the character-exact one agree on values and on every error,
    message included (the "found" text of an unterminated last segment shows the input's own
    release sequences on both paths)."""
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
                results.append((type(err).__name__, err.segment_number, str(err)))
        assert results[0] == results[1], raw[:160]
        checked += 1
    assert checked > 1000


@pytest.mark.parametrize(
    ("una", "tail", "shown"),
    [
        ("UNA:+.? '", "FTX+A?+B?:C?'D??E", "FTX+A?+B?:C?'D??E"),
        ("UNA|*.# ~", "FTX*A#*B#|C#~D##E", "FTX*A#*B#|C#~D##E"),
    ],
)
def test_unterminated_last_segment_shows_the_release_sequences_as_written(
    una: str, tail: str, shown: str
) -> None:
    """The error names the text after the last terminator exactly as the input has it: an
    escaped separator appears as its release sequence (``?+``), never as an internal stand-in."""
    raw = synthetic_utilmd(una=una)
    body = raw.decode("latin-1").rstrip("\r\n")
    with pytest.raises(EdifactError) as caught:
        parse_interchange((body + tail).encode("latin-1"), source="x.edi")
    err = caught.value
    assert err.detail == "last segment is not terminated"
    assert err.found is not None and shown in err.found
    assert not any("\ue000" <= c <= "\ue0ff" for c in str(err))


def test_size_limit_is_checked_before_parsing() -> None:
    raw = synthetic_utilmd()
    assert parse_interchange(raw, max_bytes=len(raw)).control_ref
    with pytest.raises(InterchangeTooLarge, match=f"maximum interchange size of {len(raw) - 1}"):
        parse_interchange(raw, max_bytes=len(raw) - 1)


def _render_reference(segment: Segment, d: Delimiters) -> str:
    """The writer of base a159abf: escape every value, drop trailing empty parts."""
    tag, elements = segment
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
    return d.element.join(parts) + d.terminator


_VALUE = st.text(alphabet="AZaz09 :+'?.,|*#~;=!\"äß\r\n", max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    una=st.sampled_from(["UNA:+.? '", "UNA:+,? '", "UNA|*.# ~", 'UNA;=.! "']),
    tag=st.sampled_from(["FTX", "NAD", "A+B", "?'X"]),
    elements=st.lists(
        st.one_of(_VALUE, st.lists(_VALUE, max_size=5), st.none()), max_size=6
    ),
)
def test_writer_renders_like_escaping_every_value(
    una: str, tag: str, elements: list[str | list[str] | None]
) -> None:
    d = Delimiters.from_una(una[3:])
    segment = seg(tag, *elements)
    assert render_segment(segment, d) == _render_reference(segment, d)
    twice = render_interchange(
        OutboundEnvelope(sender_id="S", recipient_id="R", control_ref="C", una=una,
                         prepared_at=datetime(2025, 1, 1, tzinfo=UTC)),
        [OutboundMessage(reference="1", message_type="UTILMD", release="11A",
                         association_code="S2.1", body=(segment, segment))],
    ).decode("latin-1")
    assert _render_reference(segment, d) * 2 in twice


def test_parsed_values_are_ordinary_frozen_dataclasses() -> None:
    """The parser builds its results without the generated ``__init__``; they must still be
    complete, equal to ones built the ordinary way, frozen and picklable (and a Party, which
    holds no lists, hashable)."""
    ic = parse_interchange(synthetic_utilmd(messages=2, transactions=2, tricky=True))
    values = [ic, ic.sender, *ic.messages, *(t for m in ic.messages for t in m.transactions)]
    for value in values:
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        rebuilt = type(value)(**fields)
        assert rebuilt == value
        assert pickle.loads(pickle.dumps(value)) == value
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, "changed")
    assert hash(ic.sender) == hash(type(ic.sender)(ic.sender.id, ic.sender.qualifier))


def _utc_303(dtm: Segment) -> bool:
    return bool(dtm.value(0, 2) == "303" and dtm.value(0, 1).endswith("+00"))
