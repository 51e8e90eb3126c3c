"""Bytes in through ``InboundPipeline``, rendered bytes out: what our answers repeat of what a
partner sent (AHB-FACTS §2, §3, §5) — the customer name in the 55010, the Anmeldung's STS+7 in
answers decided after the LFA's answer, a ruhende MaLo (ZAP), and DTM+171 of an APERAK."""

from __future__ import annotations

from datetime import UTC, datetime

from edi import (
    LFA,
    LFN,
    MALO,
    THU_1430,
    TRANCHE_OF,
    anmeldung,
    lfa_answer,
    outbox,
    pipeline,
    store,
)

from mako_actors import OutboxMessage
from mako_actors.edifact import Message, parse_interchange, render_outbound
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.inbound import Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore
from tests.conftest import outbound_problems

__all__ = ["store"]

WT1_0900 = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)  # Fri 09:00 CET: the LFA's Frist


def rendered(messages: list[OutboxMessage]) -> dict[str, Message]:
    """Each outbox message rendered as the outbox worker does and parsed back, by PID/type."""
    out: dict[str, Message] = {}
    for m in messages:
        raw = render_outbound(m.message_type, m.payload)
        assert outbound_problems(raw) == []
        (message,) = parse_interchange(raw).messages
        out[message.pid if m.message_type == "UTILMD" else m.message_type or ""] = message
    return out


def segment(message: Message, tag: str, qualifier: str) -> list[object]:
    return next(s for s in message.segments if s.tag == tag and s.value(0) == qualifier).elements


async def silence(store: LmdbStore, clock: VirtualClock) -> None:
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, WT1_0900) == 1


async def test_the_55010_repeats_the_customer_name_of_the_55001_as_received(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    # A C080 as in real traffic: Name 1-4, title, 3045 Z01 (person)
    await p.ingest(anmeldung(customer="Becker:Lisa:Mustermann:Mustermann:Frau:Z01"), THU_1430)
    request = rendered(await outbox(store))["55010"]
    assert segment(request, "NAD", "Z09")[3] == ["Becker", "Lisa", "Mustermann", "Mustermann", "Frau", "Z01"]
    assert segment(request, "STS", "7")[2:] == ["E01", "ZW4"]  # §3 [192]: E01 with ZW4


async def test_answers_decided_after_the_lfa_repeat_the_anmeldungs_sts7(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA, tranche_of=TRANCHE_OF, tranche_percent="50")})
    await p.ingest(anmeldung(pid="55077", gv="ZW1"), THU_1430)
    first = await outbox(store)
    request_ide = rendered(first)["55010"].transactions[0].ide_ref
    at = datetime(2025, 11, 13, 16, 0, tzinfo=UTC)
    await p.ingest(lfa_answer(request_ide, sent_at=at), at)
    seen = {m.message_id for m in first}
    decided = rendered([m for m in await outbox(store) if m.message_id not in seen])
    # 55078 (§3): #1 E03, #2 the 55077's Geschäftsvorfall (ZW1), kept in the state since
    # the Anmeldung; 55037: ZC8 + ZW3 (generating MaLo)
    assert decided["55078"].transactions[0].transaction_reasons == ("E03", "ZW1")
    assert decided["55078"].transactions[0].answer_code == "A58"
    assert decided["55037"].transactions[0].transaction_reasons == ("ZC8", "ZW3")
    # GV2 is for a Tranche (MALO): LOC+Z21 everywhere, the 55078 names its MaLo too ([477])
    assert sg5(decided["55078"]) == [("Z16", TRANCHE_OF), ("Z21", MALO)]
    assert sg5(decided["55037"]) == [("Z21", MALO)] and sg5(rendered(first)["55010"]) == [("Z21", MALO)]
    # A 55010 for a generating MaLo or Tranche names no customer (NAD+Z09 only with ZW4/ZAP, S1
    # 55010 [279]), even when the 55077 carried one (it has no SG12)
    assert not [s for s in rendered(first)["55010"].segments if s.tag == "NAD" and s.value(0) == "Z09"]


def sg5(message: Message) -> list[tuple[str, str]]:
    """(qualifier, ID) of the message's LOC segments."""
    return [(s.value(0), s.value(1)) for s in message.segments if s.tag == "LOC"]


async def test_a_ruhende_malo_zap_is_recognised_and_repeated(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    result = await p.ingest(anmeldung(detail="ZAP"), THU_1430)
    assert [m.outcome for m in result.messages] == ["started"]
    first = await outbox(store)
    request = rendered(first)["55010"]
    # §3: 55010 #1 E01 (Einzug, allowed with ZAP), #2 ZAP; §2: the MaLo in LOC+Z22; S1 [279]
    # NAD+Z09 Muss with ZAP
    assert request.transactions[0].transaction_reasons == ("E01", "ZAP")
    assert segment(request, "LOC", "Z22")[1] == MALO
    assert not any(s.tag == "LOC" and s.value(0) == "Z16" for s in request.segments)
    assert segment(request, "NAD", "Z09")[3][:2] == ["Beispiel", "Paula"]
    await silence(store, clock)
    seen = {m.message_id for m in first}
    confirmation = rendered([m for m in await outbox(store) if m.message_id not in seen])["55002"]
    assert confirmation.transactions[0].transaction_reasons == ("E01", "ZAP")  # §3: ZW6|ZW7|ZAP


async def test_aperak_dtm_171_is_the_unb_time_of_the_answered_interchange(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    # Prepared (UNB S004) at 14:12 CET, the message dated (DTM+137) 14:30 CET.
    raw = anmeldung().replace(b"+251113:1330+", b"+251113:1312+")
    assert parse_interchange(raw).prepared_at == datetime(2025, 11, 13, 13, 12, tzinfo=UTC)
    await p.ingest(raw, THU_1430)
    out = rendered(await outbox(store))
    assert out["APERAK"].document_code == "312"
    assert segment(out["APERAK"], "DTM", "171")[0] == ["171", "202511131312+00", "303"]  # §5: UNB S004
    # A refused transaction (PID nobody handles) gets the same: its APERAK 313 names S004.
    unhandled = anmeldung(pid="55555", ref="LFN0002").replace(b"+251113:1330+", b"+251113:1311+")
    await p.ingest(unhandled, THU_1430)
    refusal = next(
        m for m in await outbox(store)
        if m.message_type == "APERAK" and not m.payload["positive"]
    )
    assert segment(rendered([refusal])["APERAK"], "DTM", "171")[0][1] == "202511131311+00"
    assert refusal.recipient == LFN
