"""Our tokenizer must split exactly like pydifact (the test oracle) on valid input."""

from __future__ import annotations

import pytest
from edifact_support import SAMPLES, oracle, ours, sample_files

from mako_actors.edifact import synthetic_utilmd

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
