"""The replay's light scan: the routing values it reads, and when it must leave them to the parser."""

from __future__ import annotations

from mako_actors._partition import Scan
from mako_actors.edifact import parse_interchange

UNB = b"UNA:+.? 'UNB+UNOC:3+9900000010002:500+9900000002009:500+251103:0713+AN001'"


def interchange(*transaction: bytes) -> bytes:
    body = [
        b"UNH+M1+UTILMD:D:11A:UN:S2.1",
        b"BGM+E01+DAN001",
        b"DTM+137:202511030713?+00:303",
        b"NAD+MS+9900000010002::293",
        b"NAD+MR+9900000002009::293",
        *transaction,
    ]
    segments = b"'".join(body) + b"'"
    return UNB + segments + b"UNT+%d+M1'UNZ+1+AN001'" % (len(body) + 1)


TX = (b"IDE+24+T001", b"STS+7++E03", b"LOC+Z16+34719742207", b"RFF+Z13:55001")


def test_release_characters_outside_the_values_read_leave_the_scan_sure() -> None:
    """Names and DTM offsets are escaped all the time; the scan reads neither, so it stays keyed."""
    raw = interchange(*TX, b"NAD+Z09+++O?'Brien:A?+B GmbH::::Z01")
    scan = Scan(raw)
    assert scan.ok and not scan.escaped
    (message,) = scan.messages
    assert message.txs == [{b"IDE": b"T001", b"7495": b"24", b"LOC": b"34719742207", b"Z13": b"55001"}]
    (parsed,) = parse_interchange(raw).messages[0].transactions
    assert (parsed.ide_ref, parsed.malo, parsed.pid) == ("T001", "34719742207", "55001")


def test_a_release_character_in_a_value_read_leaves_the_item_to_the_parser() -> None:
    for segment, replaced in (
        (b"IDE+24+T?+01", b"IDE+24+T001"),
        (b"LOC+Z16+3471974?:2207", b"LOC+Z16+34719742207"),
        (b"RFF+Z13:550?01", b"RFF+Z13:55001"),
    ):
        raw = interchange(*TX).replace(replaced, segment)
        assert Scan(raw).escaped, segment
    # NAD+MS is not read (the UNB sender seeds a trigger's references): its escapes do not matter.
    raw = interchange(*TX).replace(b"NAD+MS+9900000010002::293", b"NAD+M?S+9900000010002::293")
    assert not Scan(raw).escaped
