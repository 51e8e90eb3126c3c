"""Fuzzing: whatever bytes arrive, the parser returns an Interchange or raises EdifactError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mako_actors.edifact import EdifactError, parse_interchange, synthetic_utilmd

VALID = synthetic_utilmd(messages=2, transactions=2, tricky=True, line_break="\r\n")
SPECIALS = b"UNAUNBUNHUNTUNZ:+.? '?\r\n\xfc0123456789"


def _parse_or_typed_error(raw: bytes) -> None:
    try:
        ic = parse_interchange(raw, source="fuzz")
    except EdifactError as err:
        assert err.source == "fuzz"
        # The catch-all for unexpected Python errors must never be what rejects the input.
        assert type(err) is not EdifactError, str(err)
        return
    # Anything accepted must satisfy the receiver checks it claims.
    assert all(m.segments[0].tag == "UNH" and m.segments[-1].tag == "UNT" for m in ic.messages)
    assert all(int(m.segments[-1].value(0)) == len(m.segments) for m in ic.messages)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(raw: bytes) -> None:
    _parse_or_typed_error(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b"UNA:+.? 'UNB+UNOC:3+" + b))
def test_random_bytes_after_a_valid_prefix(raw: bytes) -> None:
    _parse_or_typed_error(raw)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(VALID) - 1),
            st.integers(0, 3),
            st.sampled_from(list(SPECIALS)),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutations_of_a_valid_interchange(edits: list[tuple[int, int, int]]) -> None:
    raw = bytearray(VALID)
    for pos, op, byte in edits:
        if not raw:
            break
        pos = min(pos, len(raw) - 1)
        if op == 0:
            raw[pos] = byte
        elif op == 1:
            del raw[pos]
        elif op == 2:
            raw.insert(pos, byte)
        else:
            del raw[pos:]
    _parse_or_typed_error(bytes(raw))
