"""FV2610 (in force since 2026-10-01): traffic in UTILMD S2.2 / APERAK 2.2 is accepted, answered
in S2.2 / 2.2 (AHB-FACTS §7, M), and decided by the GPKE tables of FV2510 (Fristen and EBD
codes are aliased: AHB-FACTS §4 names the same code sets for EBD 4.3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.gpke import DEFAULT_CODES, DEFAULT_FRISTEN, GpkeNbWorkflow
from mako_actors.gpke import events as ev
from mako_actors.gpke.codes import Ebd, Reason
from mako_actors.gpke.synthetic import anmeldung, lfa_answer
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData, Suppliers
from mako_actors.scheduler import VirtualClock
from mako_actors.version import FormatVersion
from stores.lmdb import LmdbStore
from tests.conftest import outbound_problems

NB, LFN, LFA = "9900000002009", "9900000001001", "9900000003005"
MALO = "51900000012"
THU = datetime(2026, 11, 12, 13, 30, tzinfo=UTC)  # Thu 2026-11-12 14:30 CET: FV2610
START = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 2026-12-01 00:00 CET


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def unh(raw: bytes) -> list[str]:
    return [
        f"{m.message_type}:{m.version}:{m.release}:{m.agency}:{m.association_code}"
        for m in parse_interchange(raw).messages
    ]


async def sent(store: LmdbStore, seen: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for m in await store.pending(1000, datetime(2030, 1, 1, tzinfo=UTC)):
        if str(m.message_id) in seen:
            continue
        seen.add(str(m.message_id))
        raw = render_outbound(m.message_type, m.payload)
        assert outbound_problems(raw) == []
        (message,) = parse_interchange(raw).messages
        out[message.pid if m.message_type == "UTILMD" else m.message_type or ""] = raw
    return out


async def test_fv2610_traffic_is_accepted_and_answered_in_s22_by_the_fv2510_rules(store: LmdbStore) -> None:
    clock = VirtualClock(THU)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    p = InboundPipeline(
        store, host, tenants=[NB], master_data=StaticMasterData({MALO: Suppliers(current=LFA)}), clock=clock
    )
    request_in = anmeldung(lfn=LFN, nb=NB, malo=MALO, zuordnungsbeginn=START, ide_ref="LFNTX1",
                           control_ref="LFN1", sent_at=THU)
    assert unh(request_in) == ["UTILMD:D:11A:UN:S2.2"]  # a partner's builder under FV2610
    result = await p.ingest(request_in, THU)
    assert result.status == "accepted" and [m.outcome for m in result.messages] == ["started"]

    seen: set[str] = set()
    first = await sent(store, seen)
    assert set(first) == {"CONTRL", "APERAK", "55036", "55010"}
    assert unh(first["CONTRL"]) == ["CONTRL:D:3:UN:2.0b"]
    assert unh(first["APERAK"]) == ["APERAK:D:07B:UN:2.2"]
    assert unh(first["55010"]) == unh(first["55036"]) == ["UTILMD:D:11A:UN:S2.2"]

    # The Fristen of FV2510 apply (alias): the LFA answers by 09:00 of the next Werktag.
    [stored] = [e for e in await store.read_all(0, 100) if e.event_type == "gpke.anmeldung_received"]
    received = ev.AnmeldungReceived.model_validate(stored.payload)
    assert FormatVersion.parse(received.inbound.format_version).short == "FV2610"
    assert received.fristen.format_version == "FV2610"
    expected = DEFAULT_FRISTEN.compute("FV2510", "55001", THU).due
    assert received.fristen.due == expected
    assert received.fristen.due["lfa_answer"] == datetime(2026, 11, 13, 8, 0, tzinfo=UTC)

    request_ide = parse_interchange(first["55010"]).messages[0].transactions[0].ide_ref
    at = datetime(2026, 11, 13, 7, 0, tzinfo=UTC)
    answer = lfa_answer(lfa=LFA, nb=NB, malo=MALO, request_ref=request_ide, ide_ref="LFATX1",
                        control_ref="LFA1", sent_at=at, end=START)
    assert unh(answer) == ["UTILMD:D:11A:UN:S2.2"]
    assert (await p.ingest(answer, at)).status == "accepted"
    decided = await sent(store, seen)
    assert set(decided) == {"CONTRL", "APERAK", "55002", "55037"}
    assert unh(decided["55002"]) == unh(decided["55037"]) == ["UTILMD:D:11A:UN:S2.2"]
    # The E_0623 code of FV2510 (A51: no objection), looked up through the FV2610 alias.
    (tx,) = parse_interchange(decided["55002"]).messages[0].transactions
    assert tx.answer_code == DEFAULT_CODES.code_for("FV2610", Ebd.DECIDE_ANMELDUNG, Reason.APPROVED_CONSUMING)
    assert tx.answer_code == "A51"


async def test_s21_under_fv2610_is_refused_by_contrl_not_decided(store: LmdbStore) -> None:
    clock = VirtualClock(THU)
    p = InboundPipeline(store, DirectHost(store, [GpkeNbWorkflow()], clock), tenants=[NB], clock=clock)
    old = anmeldung(lfn=LFN, nb=NB, malo=MALO, zuordnungsbeginn=START, ide_ref="LFNTX1",
                    control_ref="LFN1", sent_at=datetime(2026, 9, 30, 12, 0, tzinfo=UTC))
    assert unh(old) == ["UTILMD:D:11A:UN:S2.1"]  # built on the last day of FV2604
    result = await p.ingest(old, THU)
    assert result.status == "rejected" and result.error is not None and "S2.2" in result.error
    [contrl] = await store.pending(10, datetime(2030, 1, 1, tzinfo=UTC))
    assert b"UCM+M1+UTILMD:D:11A:UN:S2.1+4+12+UNH" in render_outbound("CONTRL", contrl.payload)
