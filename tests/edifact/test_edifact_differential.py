"""Our tokenizer must split exactly like pydifact (the test oracle) on valid input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from edifact_support import SAMPLES, as_plain, normalise, oracle, ours, sample_files
from hypothesis import given, settings
from hypothesis import strategies as st

from mako_actors.edifact import (
    OutboundEnvelope,
    OutboundMessage,
    Segment,
    render_interchange,
    seg,
    synthetic_utilmd,
)

pytest.importorskip("pydifact")

VARIANTS = {
    "plain": {},
    "tricky-escapes": {"tricky": True},
    "crlf": {"tricky": True, "line_break": "\r\n"},
    "lf": {"line_break": "\n"},
    "decimal-comma": {"una": "UNA:+,? '", "tricky": True},
    "custom-separators": {"una": "UNA|*.# ~", "tricky": True},
    "custom-release-crlf": {"una": "UNA;=.! \"", "tricky": True, "line_break": "\r\n"},
    "no-una": {"with_una": False, "tricky": True},
    "unoa": {"syntax_id": "UNOA", "tricky": True},
    "many": {"messages": 5, "transactions": 3, "tricky": True, "seed": 7},
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_generated_interchanges_tokenize_like_pydifact(name: str) -> None:
    raw = synthetic_utilmd(**VARIANTS[name])  # type: ignore[arg-type]
    assert ours(raw) == oracle(raw)


def test_unoc_umlauts_are_single_bytes_and_tokenize_like_pydifact() -> None:
    raw = synthetic_utilmd(tricky=True, seed=3, messages=3)
    assert "Ä".encode("latin-1") in raw or "ö".encode("latin-1") in raw or b"\xdf" in raw
    assert b"\xc3" not in raw  # no UTF-8 sequences
    assert ours(raw) == oracle(raw)


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="external sample corpus absent")
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_sample_files_tokenize_like_pydifact(path) -> None:  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    assert ours(raw) == oracle(raw)


def test_release_before_ordinary_characters_like_pydifact() -> None:
    raw = synthetic_utilmd(tricky=True).replace(b"E03", b"E?0?3")
    assert ours(raw) == oracle(raw)


_TEXT = st.text(alphabet="AZaz09 :+'?.,|*#~äöüßÄ\r\n", max_size=12)
_UNAS = st.sampled_from(["UNA:+.? '", "UNA:+,? '", "UNA|*.# ~", "UNA;=.! \""])


@settings(max_examples=200, deadline=None)
@given(
    una=_UNAS,
    line_break=st.sampled_from(["", "\n", "\r\n"]),
    values=st.lists(st.lists(st.lists(_TEXT, min_size=1, max_size=4), min_size=1, max_size=5),
                    min_size=1, max_size=6),
)
def test_random_values_render_and_tokenize_like_pydifact(
    una: str, line_break: str, values: list[list[list[str]]]
) -> None:
    env = OutboundEnvelope(sender_id="S", recipient_id="R", control_ref="C1", una=una,
                           prepared_at=datetime(2025, 1, 1, tzinfo=UTC), line_break=line_break)
    body = tuple(seg("FTX", *[comps if len(comps) > 1 else comps[0] for comps in els])
                 for els in values)
    msg = OutboundMessage(reference="1", message_type="UTILMD", release="11A",
                          association_code="S2.1", body=body)
    raw = render_interchange(env, [msg])
    mine = ours(raw)
    assert mine == oracle(raw)
    # And the values come back: the writer only drops trailing empty parts.
    got = mine[2 : 2 + len(body)]
    want = [as_plain([render_trimmed(s)]) [0] for s in body]
    assert got == want


def render_trimmed(s: Segment) -> Segment:
    elements = [normalise(e) for e in s.elements]
    while elements and elements[-1] == "":
        elements.pop()
    return Segment(s.tag, elements)
