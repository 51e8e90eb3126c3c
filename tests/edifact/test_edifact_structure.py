"""The structure table: it catches deviations, agrees with the real samples' shapes, and the
demo's whole outbox conforms to it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from edifact_support import SAMPLES

from mako_actors.edifact import (
    OutboundEnvelope,
    OutboundMessage,
    Segment,
    decode,
    render_interchange,
    seg,
    tokenize,
)
from mako_actors.edifact.structure import (
    _REQUIRED_IF_REASON,
    BGM_DOCUMENT_CODE,
    UTILMD_SG4,
    check_structure,
    segment_key,
)
from tests.conftest import outbound_problems

T0 = datetime(2025, 11, 13, 12, tzinfo=UTC)
ENV = OutboundEnvelope(sender_id="9900000002009", recipient_id="9900000001001", prepared_at=T0,
                       control_ref="N1")
HEAD = [seg("DTM", ["137", "202511131200+00", "303"]),
        seg("NAD", "MS", ["9900000002009", "", "293"]), seg("NAD", "MR", ["9900000001001", "", "293"])]


def _raw(message_type: str, body: list[Segment], release: str = "11A", association: str = "S2.1") -> bytes:
    return render_interchange(ENV, [OutboundMessage(
        reference="M1", message_type=message_type, release=release, association_code=association,
        body=tuple(body))])


def _utilmd(bgm: str, *tx: Segment) -> bytes:
    return _raw("UTILMD", [seg("BGM", bgm, "D1"), *HEAD, seg("IDE", "24", "T1"), *tx])


STS_7 = seg("STS", "7", "", "E03", "ZW4")
STS_E01 = seg("STS", "E01", "", ["A07", "E_0622"])
TN = seg("RFF", ["TN", "LFNTX1"])


def test_a_conformant_55003_passes() -> None:
    assert check_structure(_utilmd("E01", STS_7, STS_E01, seg("RFF", ["Z13", "55003"]), TN)) == []


@pytest.mark.parametrize(
    ("raw", "finding"),
    [
        # §2: 55003 has no SG5
        (_utilmd("E01", STS_7, STS_E01, seg("LOC", "Z16", "51900000012"), seg("RFF", ["Z13", "55003"]), TN),
         "LOC+Z16 is not carried here"),
        # §1: 55010 is E02
        (_utilmd("E01", seg("DTM", ["93", "202511302300+00", "303"]), seg("DTM", ["154", "20251113", "102"]),
                 seg("STS", "7", "", "E03", "ZW4"), seg("LOC", "Z16", "51900000012"),
                 seg("RFF", ["Z13", "55010"])),
         "BGM E01 for PID 55010, expected E02"),
        # §2: 55002 must carry LOC+Z16
        (_utilmd("E01", seg("DTM", ["92", "202511302300+00", "303"]), STS_E01,
                 seg("RFF", ["Z13", "55002"]), TN),
         "required LOC+Z16 missing"),
        # MIG order: SG5 LOC before SG6 RFF
        (_utilmd("E02", seg("STS", "7", "", "ZC8", "ZW4"), seg("DTM", ["93", "202511302300+00", "303"]),
                 seg("LOC", "Z16", "51900000012"), seg("RFF", ["Z13", "55037"])),
         "DTM+93 out of order"),
        # S1 55010 [279]: the customer name with ZW4; 55038 [579]: the LFN with ZH0
        (_utilmd("E02", seg("DTM", ["93", "202511302300+00", "303"]), seg("DTM", ["154", "20251113", "102"]),
                 seg("STS", "7", "", "E03", "ZW4"), seg("LOC", "Z16", "51900000012"),
                 seg("RFF", ["Z13", "55010"]), seg("NAD", "VY", ["9900000001001", "", "293"])),
         "NAD+Z09 required with STS+7 ZW4"),
        (_utilmd("E02", seg("DTM", ["92", "202601312300+00", "303"]), seg("STS", "7", "", "ZH0", "ZW4"),
                 seg("LOC", "Z16", "51900000012"), seg("RFF", ["Z13", "55038"])),
         "NAD+VY required with STS+7 ZH0"),
        # §3: 55003 with A50 needs STS+Z35
        (_utilmd("E01", seg("STS", "E01", "", ["A50", "E_0623"]), seg("RFF", ["Z13", "55003"]), TN),
         "STS+Z35 required with answer A50"),
        # S1 55003 [23] / 55080 [24]: A99 (Sonstiges) needs its reason in FTX+ACB
        (_utilmd("E01", STS_7, seg("STS", "E01", "", ["A99", "E_0623"]), seg("RFF", ["Z13", "55003"]), TN),
         "FTX+ACB required with answer A99"),
        (_utilmd("E01", seg("STS", "7", "", "E03", "ZW3"), seg("STS", "E01", "", ["A99", "E_0623"]),
                 seg("RFF", ["Z13", "55080"]), TN),
         "FTX+ACB required with answer A99"),
        # §5: 313 keeps AGO under the error, Z29 needs FTX+Z02
        (_raw("APERAK", [seg("BGM", "313", "D1"), HEAD[0], seg("RFF", ["ACE", "LFN1"]),
                         seg("DTM", ["171", "202511131200+00", "303"]), seg("RFF", ["AGO", "D9"]),
                         *HEAD[1:], seg("ERC", "Z29"), seg("FTX", "ABO", "", "", "x"),
                         seg("RFF", ["ACW", "M9"]), seg("RFF", ["AGO", "D9"]),
                         seg("FTX", "AAO", "", "", "y")], "07B", "2.1i"),
         "RFF+AGO is not carried here"),
        (_raw("APERAK", [seg("BGM", "313", "D1"), HEAD[0], seg("RFF", ["ACE", "LFN1"]),
                         seg("DTM", ["171", "202511131200+00", "303"]), *HEAD[1:], seg("ERC", "Z29"),
                         seg("FTX", "ABO", "", "", "x"), seg("RFF", ["ACW", "M9"]),
                         seg("RFF", ["AGO", "D9"]), seg("FTX", "AAO", "", "", "y")], "07B", "2.1i"),
         "FTX+Z02 required with ERC+Z29"),
        # §6: a rejected message needs UCI 4
        (_raw("CONTRL", [seg("UCI", "LFN1", ["9900000001001", "500"], ["9900000002009", "500"], "7"),
                         seg("UCM", "M9", ["UTILMD", "D", "11A", "UN", "S2.1"], "4", "29", "UNT")],
              "3", "2.0b"),
         "needs UCI 0083 = 4"),
    ],
)
def test_the_check_names_each_deviation(raw: bytes, finding: str) -> None:
    problems = check_structure(raw)
    assert any(finding in p for p in problems), problems


def test_every_pid_we_send_has_a_bgm_code() -> None:
    assert set(UTILMD_SG4) <= set(BGM_DOCUMENT_CODE)


def _sample_sg4(pid: str) -> list[str]:
    """The SG4 segment keys of the edifact_mapper sample of ``pid`` (tokenized only: several of
    these files have a wrong UNT count, DOMAIN.md §6)."""
    raw = (SAMPLES / "edifact_mapper" / f"fv2510_utilmd_{pid}.edi").read_bytes()
    decoded = decode(raw)
    segments = tokenize(decoded.text, decoded.delimiters)
    start = next(i for i, s in enumerate(segments) if s.tag == "IDE")
    return [segment_key(s) for s in segments[start:] if s.tag not in ("UNT", "UNZ")]


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="external sample corpus absent")
@pytest.mark.parametrize("pid", sorted(UTILMD_SG4))
def test_table_agrees_with_the_fv2510_samples(pid: str) -> None:
    """Every required segment of our table is in the sample (generated from the official AHB
    XML); LOC+Z16 and RFF+TN are there exactly when our table carries them (AHB-FACTS §2); our
    SG4 dates are a subset of the sample's, but for those only a Transaktionsgrund the sample
    does not carry requires (a 55005's DTM+92 of an Aufhebung, ZG9/ZH1/ZH2)."""
    sample = _sample_sg4(pid)
    rules = UTILMD_SG4[pid]
    ours = {r.key for r in rules}
    assert {r.key for r in rules if r.presence == "M"} <= set(sample)
    for key in ("LOC+Z16", "RFF+TN"):
        assert (key in sample) == (key in ours), key
    raw = (SAMPLES / "edifact_mapper" / f"fv2510_utilmd_{pid}.edi").read_bytes()
    other_reasons = {
        key
        for (of, reason), keys in _REQUIRED_IF_REASON.items()
        if of == pid and f"STS+7++{reason}".encode() not in raw
        for key in keys
    }
    dates = {k for k in ours if k.startswith("DTM")} - other_reasons
    assert dates <= {k for k in sample if k.startswith("DTM")}


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="external sample corpus absent")
def test_dtm_154_is_format_102_as_in_the_55010_sample() -> None:
    raw = (SAMPLES / "edifact_mapper" / "fv2510_utilmd_55010.edi").read_bytes()
    assert b"DTM+154:20251001:102'" in raw


def test_the_demos_whole_outbox_conforms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import examples.demo as demo

    monkeypatch.setattr(demo, "DATA", tmp_path / "demo")
    asyncio.run(demo.main())
    files = sorted((tmp_path / "demo" / "outbox").iterdir())
    kinds = {f.name.split("-")[0] for f in files}
    assert kinds == {"UTILMD", "APERAK", "CONTRL"} and len(files) > 30
    problems = {f.name: outbound_problems(f.read_bytes()) for f in files}
    assert {name: p for name, p in problems.items() if p} == {}
    bgm = {}
    for f in files:
        text = f.read_bytes().decode("latin-1")
        if "RFF+Z13:" in text:
            pid = text.split("RFF+Z13:")[1][:5]
            bgm.setdefault(pid, set()).add(text.split("BGM+")[1][:3])
    assert bgm["55010"] == bgm["55037"] == bgm["55005"] == {"E02"}
    assert bgm["55002"] == bgm["55036"] == bgm["55003"] == {"E01"}


def _sample_keys(name: str) -> list[str]:
    decoded = decode((SAMPLES / "edifact_mapper" / name).read_bytes())
    return [segment_key(s) for s in tokenize(decoded.text, decoded.delimiters)]


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="external sample corpus absent")
def test_our_aperak_312_has_the_samples_segment_order() -> None:
    """The FV2510 APERAK sample (a 312) orders SG2 before the NAD groups as we do (§5); its
    CTA/COM contact lines are optional and not sent by us."""
    sample = [k for k in _sample_keys("fv2510_aperak.edi") if k not in ("CTA", "COM")]
    assert sample[2:-2] == ["BGM+312", "DTM+137", "RFF+ACE", "DTM+171", "RFF+AGO", "RFF+TN",
                            "NAD+MS", "NAD+MR"]


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="external sample corpus absent")
def test_our_contrl_puts_0085_and_0013_where_the_sample_does() -> None:
    """The FV2510 CONTRL sample: ``UCI+ref+S002+S003+4+2+UNA`` and ``UCM+ref+S009+4+12+UNH``."""
    from mako_actors.edifact import render_outbound
    from mako_actors.gpke.payloads import ContrlMessageError, build_contrl_payload

    decoded = decode((SAMPLES / "edifact_mapper" / "fv2510_contrl.edi").read_bytes())
    sample = {s.tag: s for s in tokenize(decoded.text, decoded.delimiters)}
    assert (sample["UCI"].value(3), sample["UCI"].value(4), sample["UCI"].value(5)) == ("4", "2", "UNA")
    assert (sample["UCM"].value(2), sample["UCM"].value(3), sample["UCM"].value(4)) == ("4", "12", "UNH")
    ours = render_outbound("CONTRL", build_contrl_payload(
        interchange_ref="LFN1", interchange_sender="9900000001001", interchange_recipient="9900000002009",
        accepted=True, prepared_at=T0,
        message_errors=[ContrlMessageError(message_ref="M1", message_type="UTILMD:D:11A:UN:S2.1",
                                           code="12", segment="UNH")]).to_payload())
    decoded = decode(ours)
    mine = {s.tag: s for s in tokenize(decoded.text, decoded.delimiters)}
    assert (mine["UCI"].value(3), mine["UCM"].value(2), mine["UCM"].value(3), mine["UCM"].value(4)) == (
        "4", "4", "12", "UNH")
