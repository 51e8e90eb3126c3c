"""Envelope extraction and receiver checks of ``parse_interchange``."""

from __future__ import annotations

import hashlib
import pickle
from datetime import UTC, datetime

import pytest

from mako_actors.edifact import (
    ControlCountMismatch,
    DanglingRelease,
    DuplicateReference,
    EdifactError,
    EdifactSyntaxError,
    InvalidCharacter,
    MissingSegment,
    ReferenceMismatch,
    UnexpectedSegment,
    UnsupportedCharset,
    parse_dtm,
    parse_interchange,
    try_parse_interchange,
)
from mako_actors.errors import EngineError

# Our own synthetic 55001 in the shape of DOMAIN.md §4 (different IDs and values).
ANMELDUNG = (
    "UNA:+.? '\r\n"
    "UNB+UNOC:3+9900000001001:500+9900000002009:500+250704:0915+LFW0704091501++++++1'\r\n"
    "UNH+MSG7+UTILMD:D:11A:UN:S2.1'\r\n"
    "BGM+E01+ANM-2025-0001'\r\n"
    "DTM+137:202507040915?+00:303'\r\n"
    "NAD+MS+9900000001001::293'\r\n"
    "NAD+MR+9900000002009::293'\r\n"
    "IDE+24+VG-0001'\r\n"
    "DTM+92:202507312200?+00:303'\r\n"
    "STS+7++E03'\r\n"
    "LOC+Z16+51900000012'\r\n"
    "RFF+Z13:55001'\r\n"
    "NAD+Z09+++Grün?+Söhne:Jörg::::Z01'\r\n"
    "IDE+24+VG-0002'\r\n"
    "DTM+92:20250831220000?+00:304'\r\n"
    "LOC+Z16+41234567890'\r\n"
    "RFF+Z13:55001'\r\n"
    "RFF+TN:ALT-9'\r\n"
    "UNT+17+MSG7'\r\n"
    "UNZ+1+LFW0704091501'\r\n"
)


def good() -> bytes:
    return ANMELDUNG.encode("latin-1")


def test_envelope_values_of_a_55001() -> None:
    ic = parse_interchange(good(), source="anmeldung.edi")
    assert (ic.syntax_id, ic.syntax_version, ic.charset) == ("UNOC", "3", "iso-8859-1")
    assert (ic.sender.id, ic.sender.qualifier) == ("9900000001001", "500")
    assert (ic.recipient.id, ic.recipient.qualifier) == ("9900000002009", "500")
    assert ic.prepared_at == datetime(2025, 7, 4, 9, 15, tzinfo=UTC)
    assert ic.control_ref == "LFW0704091501"
    assert ic.test is True
    assert ic.una_present and ic.delimiters.una == "UNA:+.? '"
    assert ic.dedup_key == ("9900000002009", "9900000001001", "LFW0704091501")
    assert ic.correlation_ref == "9900000001001:LFW0704091501"
    assert ic.sha256 == hashlib.sha256(good()).hexdigest()
    assert ic.segment_count == 19
    (msg,) = ic.messages
    assert (msg.reference, msg.message_type, msg.version, msg.release) == ("MSG7", "UTILMD", "D",
                                                                           "11A")
    assert msg.mig_version == "S2.1"
    assert msg.pid == "55001"
    assert (msg.document_code, msg.document_number) == ("E01", "ANM-2025-0001")
    assert msg.document_date == datetime(2025, 7, 4, 9, 15, tzinfo=UTC)
    assert msg.sender is not None and msg.sender.id == "9900000001001"
    assert msg.sender.qualifier == "293"
    assert msg.recipient is not None and msg.recipient.id == "9900000002009"
    assert msg.segment_count == 17 and msg.first_segment_number == 2
    assert msg.problems == ()
    first, second = msg.transactions
    assert (first.ide_ref, first.pid, first.malo, first.transaction_reason) == (
        "VG-0001", "55001", "51900000012", "E03")
    assert first.start == datetime(2025, 7, 31, 22, 0, tzinfo=UTC)
    assert (second.ide_ref, second.request_ref) == ("VG-0002", "ALT-9")
    # A DTM+92 in format 304 parses, but UTILMD S2.1 takes 303 only: no Zuordnungsbeginn, named
    # for the APERAK (Z35) instead of read as the instant it happens to spell.
    assert second.start is None and second.malformed_dates == (("92", "20250831220000+00:304"),)
    nad = first.segments[-1]
    assert nad.tag == "NAD" and nad.elements[3] == ["Grün+Söhne", "Jörg", "", "", "", "Z01"]


def test_dtm_formats_and_zone() -> None:
    assert parse_dtm("20250605", "102") == datetime(2025, 6, 4, 22, 0, tzinfo=UTC)  # 00:00 CEST
    assert parse_dtm("202512010000", "203") == datetime(2025, 11, 30, 23, 0, tzinfo=UTC)  # 00:00 CET
    assert parse_dtm("202506051430", "203") == datetime(2025, 6, 5, 12, 30, tzinfo=UTC)  # 14:30 CEST
    assert parse_dtm("202506051430+02", "303") == datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
    assert parse_dtm("20250605123059+00", "304") == datetime(2025, 6, 5, 12, 30, 59, tzinfo=UTC)
    with pytest.raises(EdifactError, match="does not fit"):
        parse_dtm("20250605123059+00", "303")


def test_malformed_dtm_is_a_problem_not_a_rejection() -> None:
    raw = good().replace(b"DTM+137:202507040915?+00:303", b"DTM+137:20250704091500?+00:303")
    msg = parse_interchange(raw).messages[0]
    assert msg.document_date is None
    assert msg.problems and "segment 4 DTM+137" in msg.problems[0]


def _mutate(old: str, new: str) -> bytes:
    assert old in ANMELDUNG
    return ANMELDUNG.replace(old, new).encode("latin-1")


@pytest.mark.parametrize(
    ("raw", "kind", "number", "expected", "found", "code"),
    [
        (_mutate("UNT+17+MSG7", "UNT+12+MSG7"), ControlCountMismatch, 18, "17", "12", "29"),
        (_mutate("UNT+17+MSG7", "UNT+17+MSG8"), ReferenceMismatch, 18, "MSG7", "MSG8", "28"),
        (_mutate("UNZ+1+", "UNZ+2+"), ControlCountMismatch, 19, "1", "2", "29"),
        (_mutate("UNZ+1+LFW0704091501", "UNZ+1+OTHER"), ReferenceMismatch, 19,
         "LFW0704091501", "OTHER", "28"),
        (_mutate("UNZ+1+LFW0704091501'\r\n", ""), MissingSegment, 19, "UNZ",
         "end of interchange", "13"),
        (_mutate("UNT+17+MSG7'\r\n", ""), MissingSegment, 18, "UNT", "UNZ", "13"),
        (_mutate("UNH+MSG7+UTILMD:D:11A:UN:S2.1'\r\n", ""), UnexpectedSegment, 2,
         "UNH or UNZ", "BGM", "15"),
        (_mutate("UNOC:3", "UNOX:3"), UnsupportedCharset, 1, None, "UNOX", "2"),
        (_mutate("UNOC:3", "UNOA:3"), InvalidCharacter, 12, "UNOA characters", "0xFC", "21"),
        (_mutate("UNZ+1+LFW0704091501'\r\n", "UNZ+1+LFW0704091501?"), DanglingRelease, 19,
         None, "end of input", "22"),
        (_mutate("Jörg:", "Jörg?\r\n:"), DanglingRelease, 12, None, "'\\r'", "22"),
        (_mutate("UNZ+1+LFW0704091501'\r\n", "UNZ+1+LFW0704091501"), EdifactSyntaxError, 19,
         "'", None, "18"),
        (_mutate("BGM+E01", "bgm+E01"), EdifactSyntaxError, 3, None, "bgm", "18"),
        (_mutate("UNB+UNOC", "XYZ+UNOC"), MissingSegment, 1, "UNB", "XYZ", "13"),
    ],
    ids=[
        "unt-count", "unt-ref", "unz-count", "unz-ref", "missing-unz", "missing-unt",
        "outside-message", "unknown-charset", "non-ascii-in-unoa", "dangling-release-eof",
        "release-before-linebreak", "unterminated", "bad-tag", "missing-unb",
    ],
)
def test_every_defect_is_a_typed_error_naming_file_segment_and_expectation(
    raw: bytes, kind: type[EdifactError], number: int, expected: str | None, found: str | None,
    code: str,
) -> None:
    with pytest.raises(kind) as info:
        parse_interchange(raw, source="in/anmeldung.edi")
    err = info.value
    assert err.source == "in/anmeldung.edi" and "in/anmeldung.edi" in str(err)
    assert err.segment_number == number and f"segment {number}" in str(err)
    if expected is not None:
        assert err.expected == expected
    if found is not None:
        assert found in (err.found or "")
    assert err.syntax_error_code == code


@pytest.mark.parametrize(
    ("old", "new", "number", "element", "found"),
    [
        ("IDE+24+VG-0001", "IDE+24+VG-\x000001", 7, (3, None), "0x00"),  # our RFF+TN copies 7402
        ("NAD+Z09+++Grün", "NAD+Z09+++Gr\tün", 12, (5, 1), "0x09"),  # our 55010 copies the name
        ("+LFW0704091501++", "+LFW07\x1b04091501++", 1, (6, None), "0x1B"),  # our CONTRL copies 0020
        ("STS+7++E03'", "STS+7++E\n03'", 9, (4, None), "0x0A"),  # a line break inside a value
        ("RFF+TN:ALT-9'", "RFF+TN:ALT-9?'\r\n", 17, (2, 2), "0x0D"),  # ... after a released "'"
        ("IDE+24+VG-0002", "IDE+24+VG-\x7f0002", 13, (3, None), "0x7F"),  # DEL
        # C1 (no ISO 8859-1 characters): a Windows-1252 en dash or ellipsis in a name.
        ("NAD+Z09+++Grün", "NAD+Z09+++Gr\x96ün", 12, (5, 1), "0x96"),
        ("IDE+24+VG-0001", "IDE+24+VG-\x850001", 7, (3, None), "0x85"),
    ],
    ids=[
        "nul-in-7402", "tab-in-name", "escape-in-0020", "lf-in-value", "crlf-after-released", "del",
        "c1-in-name", "c1-in-7402",
    ],
)
def test_a_control_character_in_data_is_refused_where_it_stands(
    old: str, new: str, number: int, element: tuple[int, int | None], found: str
) -> None:
    """Answers copy values as received (IDE 7402 into RFF+TN, a name into the 55010, UNB 0020
    into the CONTRL): one with a control character would fail the partner's syntax check, as
    UNOA..UNOC have none for data (0085 21). Before, each was accepted and copied."""
    text = ANMELDUNG.replace(old, new, 1)
    assert text != ANMELDUNG
    with pytest.raises(InvalidCharacter, match=r"control character 0x") as info:
        parse_interchange(text.encode("latin-1"), source="in.edi")
    err = info.value
    assert (err.segment_number, err.element, err.found) == (number, element, found)
    assert err.syntax_error_code == "21"


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r\n\r\n", "\r"])
def test_line_breaks_between_segments_are_no_data(line_break: str) -> None:
    """DOMAIN §4: CR/LF after the segment terminator is not data, before the first segment too;
    a release character before a line break stays the tokenizer's (0085 22)."""
    text = line_break + ANMELDUNG.replace("'\r\n", "'" + line_break)
    assert parse_interchange(text.encode("latin-1")).messages[0].reference == "MSG7"
    released = ANMELDUNG.replace("ALT-9'\r\n", "ALT-9??'\r\n", 1)  # a released "?", then "'"
    assert parse_interchange(released.encode("latin-1")).messages[0].transactions[1].request_ref == "ALT-9?"
    with pytest.raises(DanglingRelease):
        parse_interchange(ANMELDUNG.replace("Jörg:", "Jörg?\r\n:").encode("latin-1"))


@pytest.mark.parametrize("tail", ["   ", "\t", "\r\n  \r\n", " \n\t \n"])
def test_blanks_after_the_last_segment_are_no_data(tail: str) -> None:
    """A gateway that pads the file or ends it with a blank line sent an intact interchange (the
    reference, pydifact, reads it so). Before, trailing spaces were "last segment is not
    terminated" (0085 18) and a tab a control character (21): CONTRL 4, not received. A DOS
    end-of-file byte stays a control character, and blanks after a released terminator stay
    data of an unterminated segment."""
    assert parse_interchange((ANMELDUNG + tail).encode("latin-1")).messages[0].reference == "MSG7"
    with pytest.raises(InvalidCharacter):
        parse_interchange((ANMELDUNG + tail + "\x1a").encode("latin-1"))
    unterminated = ANMELDUNG.rstrip("\r\n")[:-1] + "?'   "
    with pytest.raises(EdifactSyntaxError, match="not terminated"):
        parse_interchange(unterminated.encode("latin-1"))


@pytest.mark.parametrize("terminator", ["\t", " "])
def test_a_blank_the_una_declares_as_terminator_is_never_trimmed(terminator: str) -> None:
    """With a blank as the segment terminator, the other blanks after the last segment are
    trimmed as with ``'``; more of the terminator are empty segments (0085 18), as before."""
    other = " " if terminator == "\t" else "\t"
    body = ANMELDUNG.replace("'\r\n", "'").removeprefix("UNA:+.? '").replace("'", terminator)
    text = f"UNA:+.? {terminator}" + body
    assert parse_interchange((text + other * 3 + "\r\n").encode("latin-1")).messages[0].reference == "MSG7"
    with pytest.raises(EdifactSyntaxError):
        parse_interchange((text + terminator * 2).encode("latin-1"))


def test_control_characters_the_una_declares_are_delimiters_not_data() -> None:
    """ISO 9735's level B layout names IS1/IS3/IS4 as component and element separators and
    segment terminator in its UNA: delimiters, not data. Before, the control-character check
    refused the first one it met (0085 21)."""
    una = "UNA\x1f\x1d.? \x1c"
    body = ANMELDUNG[ANMELDUNG.index("UNB") :].replace("\r\n", "")
    text = una + body.replace("'", "\x1c").replace("+", "\x1d").replace(":", "\x1f")
    assert "UNOC" in text and "\x00" not in text
    assert parse_interchange(text.encode("latin-1")).messages[0].reference == "MSG7"


def test_duplicate_message_reference_is_rejected() -> None:
    msg = ANMELDUNG[ANMELDUNG.index("UNH") : ANMELDUNG.index("UNZ")]
    raw = ANMELDUNG.replace(msg, msg + msg).replace("UNZ+1+", "UNZ+2+").encode("latin-1")
    with pytest.raises(DuplicateReference) as info:
        parse_interchange(raw)
    assert info.value.segment_number == 19 and info.value.found == "MSG7"


def test_garbage_is_rejected_with_a_typed_error() -> None:
    for raw in (b"", b"hello world", b"UNA:+", b"\xff\xfe\x00", b"UNB+UNOC:3+a+b+c+d'"):
        result = try_parse_interchange(raw, source="junk")
        assert isinstance(result, EdifactError), raw
        assert "junk" in str(result)


def test_errors_survive_plain_data_and_pickle() -> None:
    err = try_parse_interchange(_mutate("UNT+17+MSG7", "UNT+12+MSG7"), source="f.edi")
    assert isinstance(err, ControlCountMismatch)
    again = EngineError.from_plain(err.to_plain())
    assert type(again) is ControlCountMismatch and str(again) == str(err)
    assert isinstance(again, ControlCountMismatch) and again.segment_number == 18
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is ControlCountMismatch and clone.expected == "17"


def test_interchange_without_messages_is_rejected() -> None:
    raw = b"UNB+UNOC:3+9900000001001:500+9900000002009:500+250704:0915+E1'UNZ+0+E1'"
    with pytest.raises(MissingSegment) as info:
        parse_interchange(raw, source="empty.edi")
    assert info.value.syntax_error_code == "32" and info.value.segment_number == 2


def test_release_before_an_ordinary_character_keeps_that_character() -> None:
    raw = ANMELDUNG.replace("Jörg", "J?örg?a").encode("latin-1")
    nad = parse_interchange(raw).messages[0].transactions[0].segments[-1]
    assert nad.value(3, 1) == "Jörga"


def test_nad_parties_inconsistent_with_unb_are_named_as_problems() -> None:
    raw = _mutate("NAD+MR+9900000002009::293", "NAD+MR+9900000003007::9")
    problems = parse_interchange(raw).messages[0].problems
    assert any("segment 6 NAD+MR" in p and "differs from UNB" in p for p in problems)
    assert any("code list '9'" in p and "'293'" in p for p in problems)
