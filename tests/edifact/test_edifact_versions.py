"""UNH versions per format version (AHB-FACTS §7): known releases, FV2610, refusal of others."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.edifact.versions import (
    UNH_VERSIONS,
    UnsupportedMessageVersion,
    expected_unh_version,
    sending_format_version,
    unh_mismatch,
    unh_version,
)
from mako_actors.errors import EngineError, InvalidArgument
from mako_actors.gpke.payloads import AperakPayload, OutboundRef, UtilmdPayload, build_contrl_payload
from mako_actors.version import FormatVersion

NB, LFN = "9900000002009", "9900000001001"


@pytest.mark.parametrize("fv", ["FV2504", "FV2510", "FV2604", "FV2025-06-06", "FV2026-04-01"])
def test_lfw24_releases_send_s21_21i_20b(fv: str) -> None:
    assert expected_unh_version("UTILMD", fv) == "UTILMD:D:11A:UN:S2.1"
    assert expected_unh_version("APERAK", fv) == "APERAK:D:07B:UN:2.1i"
    assert expected_unh_version("CONTRL", fv) == "CONTRL:D:3:UN:2.0b"
    assert unh_version("UTILMD", fv).confidence == "H"


def test_fv2610_is_known_since_2026_10_01_with_medium_confidence() -> None:
    assert FormatVersion.in_force(date(2026, 10, 1)).short == "FV2610"
    assert FormatVersion.in_force(date(2026, 9, 30)).short == "FV2604"
    assert expected_unh_version("UTILMD", "FV2610") == "UTILMD:D:11A:UN:S2.2"
    assert expected_unh_version("APERAK", "FV2026-10-01") == "APERAK:D:07B:UN:2.2"
    assert expected_unh_version("CONTRL", "FV2610") == "CONTRL:D:3:UN:2.0b"
    assert {v.confidence for v in UNH_VERSIONS["FV2610"].values()} == {"M"}


@pytest.mark.parametrize("fv", ["FV2310", "FV2704"])
def test_a_release_outside_the_table_is_refused_with_a_typed_error(fv: str) -> None:
    with pytest.raises(UnsupportedMessageVersion, match=fv) as info:
        expected_unh_version("UTILMD", fv)
    assert isinstance(info.value, InvalidArgument)
    assert type(EngineError.from_plain(info.value.to_plain())) is UnsupportedMessageVersion
    with pytest.raises(UnsupportedMessageVersion, match="MSCONS"):
        unh_version("MSCONS", "FV2510")


def test_sending_day_picks_the_release_berlin_midnight_and_before_lfw24() -> None:
    # 2026-09-30 22:00 UTC is 2026-10-01 00:00 in Berlin: FV2610 is in force.
    assert sending_format_version(datetime(2026, 9, 30, 21, 59, tzinfo=UTC)).short == "FV2604"
    assert sending_format_version(datetime(2026, 9, 30, 22, 0, tzinfo=UTC)).short == "FV2610"
    assert sending_format_version(datetime(2025, 6, 5, 12, tzinfo=UTC)).short == "FV2504"
    with pytest.raises(InvalidArgument):
        sending_format_version(datetime(2026, 1, 1))


def _refs(message_type: Any, pid: str | None = None) -> OutboundRef:
    return OutboundRef.derive("seed", 0, message_type, LFN, pid)


@pytest.mark.parametrize(
    ("sent_at", "utilmd", "aperak"),
    [
        (datetime(2026, 9, 30, 12, tzinfo=UTC), "S2.1", "2.1i"),
        (datetime(2026, 12, 2, 9, tzinfo=UTC), "S2.2", "2.2"),
    ],
)
def test_payloads_render_the_version_of_their_sending_day(
    sent_at: datetime, utilmd: str, aperak: str
) -> None:
    ref = _refs("UTILMD", "55002")
    payload = UtilmdPayload.build(
        ref, NB, sent_at, malo="51900000012", start=datetime(2026, 12, 31, 23, tzinfo=UTC),
        answer_code="A51", answer_ebd="E_0623", request_ref="LFNTX1",
        trigger_pid="55001", trigger_reason="E03", measurement="ZW7",
    ).to_payload()
    (m,) = parse_interchange(render_outbound("UTILMD", payload)).messages
    assert (m.release, m.association_code) == ("11A", utilmd)
    ap = AperakPayload.build(
        _refs("APERAK"), NB, sent_at, interchange_ref="LFN1", referenced_date=sent_at,
        document_number="D1", ide_ref="LFNTX1",
    ).to_payload()
    (a,) = parse_interchange(render_outbound("APERAK", ap)).messages
    assert (a.release, a.association_code) == ("07B", aperak)
    contrl = build_contrl_payload(
        interchange_ref="LFN1", interchange_sender=LFN, interchange_recipient=NB,
        accepted=True, prepared_at=sent_at,
    ).to_payload()
    (c,) = parse_interchange(render_outbound("CONTRL", contrl)).messages
    assert (c.release, c.association_code) == ("3", "2.0b")


def test_a_payload_of_an_unknown_release_is_not_rendered_with_old_strings() -> None:
    payload = UtilmdPayload.build(
        _refs("UTILMD", "55036"), NB, datetime(2026, 12, 2, 9, tzinfo=UTC), malo="51900000012",
        request_ref="LFNTX1", other_party_id="9900000003005",
    ).to_payload()
    with pytest.raises(UnsupportedMessageVersion, match="FV2704"):
        render_outbound("UTILMD", {**payload, "format_version": "FV2704"})
    with pytest.raises(InvalidArgument, match="contradicts"):
        render_outbound("UTILMD", {**payload, "association_code": "S2.1"})
    # A stored payload without a format version gets the release of its document date.
    legacy = {k: v for k, v in payload.items() if k != "format_version"}
    (m,) = parse_interchange(render_outbound("UTILMD", legacy)).messages
    assert m.association_code == "S2.2"


def test_unh_mismatch_names_what_an_inbound_message_should_carry() -> None:
    assert unh_mismatch("UTILMD:D:11A:UN:S2.1", "FV2510") is None
    assert unh_mismatch("UTILMD:D:11A:UN:S2.2", "FV2610") is None
    reason = unh_mismatch("UTILMD:D:11A:UN:S1.1", "FV2510")
    assert reason is not None and "UTILMD:D:11A:UN:S2.1" in reason and "FV2510" in reason
    assert unh_mismatch("UTILMD:D:11A:UN:S2.1", "FV2610") is not None  # old strings after 2026-10-01
    unknown = unh_mismatch("UTILMD:D:11A:UN:S2.1", "FV2704")
    assert unknown is not None and "FV2704" in unknown
