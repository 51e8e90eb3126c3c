"""Receiver limits: element lengths, control counts that are no numbers, the interchange size."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mako_actors.cli import main
from mako_actors.edifact import (
    ElementTooLong,
    InterchangeTooLarge,
    InvalidValue,
    parse_file,
    parse_interchange,
    read_interchange,
    synthetic_utilmd,
    try_parse_interchange,
)

BASE = synthetic_utilmd(control_ref="LFN1")


def variant(old: bytes, new: bytes) -> bytes:
    assert old in BASE
    return BASE.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "element"),
    [
        (b"+9900000001001:500+", b"+" + b"9" * 36 + b":500+", "0004"),
        (b"+9900000002009:500+", b"+" + b"9" * 36 + b":500+", "0010"),
        (b"+LFN1'UNH", b"+LFN123456789012'UNH", "0020"),  # 15 characters
        (b"UNH+M1+", b"UNH+M12345678901234+", "0062"),
        (b"BGM+E01+DOC0-1'", b"BGM+E01+" + b"D" * 36 + b"'", "1004"),
        (b"IDE+24+TX0-0-0'", b"IDE+24+" + b"T" * 36 + b"'", "7402"),
        (b"UTILMD:D:11A:UN:S2.1'", b"UTILMD:D:11A:UN:S2.1xyz'", "0057"),
    ],
)
def test_an_element_longer_than_its_syntax_allows_is_refused(old: bytes, new: bytes, element: str) -> None:
    with pytest.raises(ElementTooLong, match=element) as info:
        parse_interchange(variant(old, new))
    assert isinstance(info.value, InvalidValue)
    assert info.value.syntax_error_code == "39"


@pytest.mark.parametrize(
    ("status", "refused"),
    [
        (b"+X+X:C", "'X'"),  # a generator's placeholders (edifact_mapper): was accepted, CONTRL 7
        (b"++123:C", "'123'"),
        (b"++1:L", "'L'"),
        (b"++1:C", None),
        (b"++01:F", None),
        (b"+ACCESS+:C", None),
    ],
)
def test_a_unh_status_of_the_transfer_that_is_no_sequence_number_is_refused(
    status: bytes, refused: str | None
) -> None:
    """UNH S010: 0070 is n..2, 0073 C or F (ISO 9735 v3). An invalid value is 0085 = 12."""
    raw = variant(b"UTILMD:D:11A:UN:S2.1'", b"UTILMD:D:11A:UN:S2.1" + status + b"'")
    if refused is None:
        assert parse_interchange(raw).messages[0].reference == "M1"
        return
    with pytest.raises(InvalidValue, match=f"S010.*{refused}") as info:
        parse_interchange(raw)
    assert (info.value.syntax_error_code, info.value.segment_tag) == ("12", "UNH")


def test_elements_at_their_maximum_length_are_accepted() -> None:
    raw = variant(b"+LFN1'UNH", b"+LFN12345678901'UNH").replace(b"UNZ+1+LFN1'", b"UNZ+1+LFN12345678901'")
    raw = raw.replace(b"UNH+M1+", b"UNH+M1234567890123+").replace(b"UNT+12+M1'", b"UNT+12+M1234567890123'")
    ic = parse_interchange(raw.replace(b"IDE+24+TX0-0-0'", b"IDE+24+" + b"T" * 35 + b"'"))
    assert ic.control_ref == "LFN12345678901" and ic.messages[0].reference == "M1234567890123"


def test_release_characters_do_not_count_towards_the_length() -> None:
    escaped = b"LFN?+23456789?'1"  # 14 characters once the release characters are removed
    raw = variant(b"+LFN1'UNH", b"+" + escaped + b"'UNH").replace(b"UNZ+1+LFN1'", b"UNZ+1+" + escaped + b"'")
    assert parse_interchange(raw).control_ref == "LFN+23456789'1"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"UNT+12+", "UNT+²+".encode("latin-1")),
        (b"UNZ+1+", "UNZ+¹+".encode("latin-1")),
        (b"UNT+12+", b"UNT+" + b"1" * 4300 + b"+"),
        (b"UNZ+1+", b"UNZ+" + b"1" * 4300 + b"+"),
        (b"UNT+12+", b"UNT+00000000012+"),
    ],
)
def test_a_control_count_that_is_no_small_number_is_an_invalid_value(old: bytes, new: bytes) -> None:
    result = try_parse_interchange(variant(old, new))
    assert isinstance(result, InvalidValue), result
    assert "unparseable" not in str(result)


def test_the_maximum_interchange_size_is_configurable_and_typed(tmp_path: Path) -> None:
    with pytest.raises(InterchangeTooLarge, match="maximum interchange size"):
        parse_interchange(BASE, max_bytes=len(BASE) - 1)
    assert parse_interchange(BASE, max_bytes=len(BASE)).control_ref == "LFN1"
    assert isinstance(try_parse_interchange(b"UNB" * 100, max_bytes=10), InterchangeTooLarge)
    f = tmp_path / "in.edi"
    f.write_bytes(BASE)
    with pytest.raises(InterchangeTooLarge):
        parse_file(f, max_bytes=100)
    assert parse_file(f).control_ref == "LFN1"


def test_an_endless_input_is_not_read_whole() -> None:
    started = time.monotonic()
    with pytest.raises(InterchangeTooLarge):
        read_interchange("/dev/zero", max_bytes=1 << 20)
    assert time.monotonic() - started < 10


def test_inspect_dev_zero_stops_at_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "/dev/zero"]) == 1
    assert "maximum interchange size" in capsys.readouterr().err
