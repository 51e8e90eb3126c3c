"""Bytes in through ``InboundPipeline``, rendered EDIFACT out: the shapes AHB-FACTS prescribes
for what we send (BGM §1, SG5/RFF+TN §2, STS+7 and SG4 dates §3, APERAK §5, CONTRL §6,
UNH versions §7). Each test reads the stored outbox and renders it as the outbox worker does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mako_actors import OutboxMessage
from mako_actors.edifact import (
    Message,
    OutboundEnvelope,
    UtilmdMessage,
    UtilmdTransaction,
    build_utilmd,
    parse_interchange,
    render_interchange,
    render_outbound,
)
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import bilanzkreis_of, lfa_answer
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData, Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore
from tests.conftest import outbound_problems

NB, LFN, LFA, LFZ = "9900000002009", "9900000001001", "9900000003005", "9900000004005"
MALO = "51900000012"
THU_1430 = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)  # Thu 2025-11-13 14:30 CET (FV2510)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)  # Zuordnungsbeginn 2025-12-01 00:00 CET
LFZ_START = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)  # the LFZ's confirmed start 2026-02-01


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def pipeline(store: LmdbStore, clock: VirtualClock, suppliers: Suppliers | None) -> InboundPipeline:
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    data = StaticMasterData({MALO: suppliers} if suppliers else {})
    return InboundPipeline(store, host, tenants=[NB], master_data=data, clock=clock)


def anmeldung(
    *, malo: str | None = MALO, reason: str = "E03", start: datetime = START,
    sent_at: datetime = THU_1430, ref: str = "LFN0001", pid: str = "55001",
) -> bytes:
    """A 55001 (or 55077) from the LFN with UNH 0062 ``LFNMSG1``, BGM 1004 ``LFNDOC1``, IDE
    ``LFNTX1``."""
    detail = "ZW4" if pid == "55001" else "ZW0"
    tx = UtilmdTransaction(ide_ref="LFNTX1", pid=pid, malo=malo, start=start,
                           transaction_reason=reason, transaction_reason_detail=detail,
                           customer_name=("Beispiel", "Paula") if pid == "55001" else None,
                           product_packages=(("1", bilanzkreis_of(LFN)),))
    message = UtilmdMessage(reference="LFNMSG1", document_number="LFNDOC1", document_date=sent_at,
                            sender_id=LFN, recipient_id=NB, transactions=(tx,))
    env = OutboundEnvelope(sender_id=LFN, recipient_id=NB, prepared_at=sent_at, control_ref=ref)
    return render_interchange(env, [build_utilmd(message)])


async def rendered(store: LmdbStore, seen: set[str] | None = None) -> dict[str, Message]:
    """The outbox (minus ``seen`` ids) rendered and parsed back, keyed by PID / APERAK / CONTRL;
    every interchange also passes the structure check."""
    out: dict[str, Message] = {}
    pending: list[OutboxMessage] = await store.pending(1000, datetime(2030, 1, 1, tzinfo=UTC))
    for m in pending:
        if seen is not None and str(m.message_id) in seen:
            continue
        if seen is not None:
            seen.add(str(m.message_id))
        raw = render_outbound(m.message_type, m.payload)
        assert outbound_problems(raw) == []
        (message,) = parse_interchange(raw).messages
        key = message.pid if m.message_type == "UTILMD" else m.message_type
        assert key is not None
        out[key] = message
    return out


def shape(message: Message) -> list[str]:
    return [s.tag + "+" + s.value(0) for s in message.segments[1:-1]]


def sg4(message: Message) -> list[str]:
    (tx,) = message.transactions
    return [s.tag + "+" + s.value(0) for s in tx.segments]


def value(message: Message, tag: str, qualifier: str, element: int = 0, component: int = 1) -> str:
    return next(s for s in message.segments if s.tag == tag and s.value(0) == qualifier).value(
        element, component
    )


async def test_55001_with_an_lfa_then_silence_renders_every_message_per_ahb(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, Suppliers(current=LFA))
    assert (await p.ingest(anmeldung(), THU_1430)).status == "accepted"
    seen: set[str] = set()
    first = await rendered(store, seen)
    assert set(first) == {"CONTRL", "APERAK", "55036", "55010"}

    contrl = first["CONTRL"]
    assert (contrl.release, contrl.association_code) == ("3", "2.0b")
    assert shape(contrl) == ["UCI+LFN0001"] and contrl.segments[1].value(3) == "7"

    aperak = first["APERAK"]  # §5: 312 with its references before the NAD groups
    assert (aperak.document_code, aperak.association_code) == ("312", "2.1i")
    assert shape(aperak) == ["BGM+312", "DTM+137", "RFF+ACE", "DTM+171", "RFF+AGO", "RFF+TN",
                             "NAD+MS", "NAD+MR"]
    assert (value(aperak, "RFF", "ACE"), value(aperak, "RFF", "AGO"), value(aperak, "RFF", "TN")) == (
        "LFN0001", "LFNDOC1", "LFNTX1")
    assert value(aperak, "DTM", "171") == "202511131330+00"

    info = first["55036"]  # §1 E01, §3 STS+7 Z26 and no SG4 date, §2 LOC+Z16 and RFF+TN
    assert info.document_code == "E01" and info.association_code == "S2.1"
    assert sg4(info) == ["IDE+24", "STS+7", "LOC+Z16", "RFF+Z13", "RFF+TN", "NAD+VY"]
    assert info.transactions[0].transaction_reason == "Z26"
    assert info.transactions[0].request_ref == "LFNTX1"

    request = first["55010"]  # §1 E02, §3 DTM+93 + DTM+154 (102), E03 + ZW4, no RFF+TN, NAD+VY LFN
    assert request.document_code == "E02"
    assert sg4(request) == [
        "IDE+24", "DTM+93", "DTM+154", "STS+7", "LOC+Z16", "RFF+Z13", "NAD+Z09", "NAD+VY"]
    assert value(request, "NAD", "VY", 1, 0) == LFN
    # S1 55010 [279]: the customer name of the 55001 (Muss with ZW4), C080 as the LFN sent it
    z09 = next(s for s in request.segments if s.tag == "NAD" and s.value(0) == "Z09")
    assert z09.elements[3] == ["Beispiel", "Paula", "", "", "", "Z01"]
    assert value(request, "DTM", "93") == "202511302300+00"
    dtm154 = next(s for s in request.segments if s.tag == "DTM" and s.value(0) == "154")
    assert dtm154.elements[0] == ["154", "20251113", "102"]
    sts7 = next(s for s in request.segments if s.tag == "STS" and s.value(0) == "7")
    assert sts7.elements[2:] == ["E03", "ZW4"]

    # Nobody answers: at 09:00 CET on WT1 the LFA is deemed to agree.
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, datetime(2025, 11, 14, 8, 0, tzinfo=UTC)) == 1
    decided = await rendered(store, seen)
    assert set(decided) == {"55002", "55037"}
    confirmation = decided["55002"]
    assert confirmation.document_code == "E01"
    assert sg4(confirmation) == [
        "IDE+24", "DTM+92", "STS+7", "STS+E01", "LOC+Z16", "RFF+Z13", "RFF+TN", "RFF+Z60", "SEQ+Z98"
    ]  # SG8 "Daten der Marktlokation" (its MSB only with master data naming it)
    assert value(confirmation, "RFF", "Z60") == "1"  # the Produktpaket the NB plans
    assert confirmation.transactions[0].answer_code == "A51"
    # §3: #1 as the Anmeldung (E03), #2 ZW7 gemessene MaLo (GpkeConfig default †)
    sts7 = next(s for s in confirmation.segments if s.tag == "STS" and s.value(0) == "7")
    assert sts7.elements[2:] == ["E03", "ZW7"]
    termination = decided["55037"]  # §1 E02, §3 DTM+93 + ZC8/ZW4, §2 no RFF+TN
    assert termination.document_code == "E02"
    assert sg4(termination) == ["IDE+24", "DTM+93", "STS+7", "LOC+Z16", "RFF+Z13"]
    sts7 = next(s for s in termination.segments if s.tag == "STS")
    assert sts7.elements[2:] == ["ZC8", "ZW4"]


async def _with_an_lfz(store: LmdbStore, reason: str) -> tuple[dict[str, Message], Message]:
    """An Anmeldung (STS+7 #1 ``reason``) of a MaLo with an LFZ, the LFA silent until 09:00:
    the messages before 09:00 and the 55038 to the LFZ, rendered."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, Suppliers(current=LFA, future=LFZ, future_start=LFZ_START))
    await p.ingest(anmeldung(reason=reason), THU_1430)
    seen: set[str] = set()
    first = await rendered(store, seen)
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    await scheduler.advance_to(clock, datetime(2025, 11, 14, 8, 0, tzinfo=UTC))
    return first, (await rendered(store, seen))["55038"]


async def test_einzug_gives_55010_e01_and_an_lfz_gets_55038(store: LmdbStore) -> None:
    first, cancellation = await _with_an_lfz(store, "E01")  # §1 E02, §3 DTM+92 + ZG9/ZW4
    sts7 = next(s for s in first["55010"].segments if s.tag == "STS")
    assert sts7.elements[2:] == ["E01", "ZW4"]  # §3 [192]: E01 with ZW4
    assert cancellation.document_code == "E02"
    assert sg4(cancellation) == ["IDE+24", "DTM+92", "STS+7", "LOC+Z16", "RFF+Z13", "NAD+VY"]
    assert value(cancellation, "NAD", "VY", 1, 0) == LFN  # S1 [579]: the LFN with ZH0/ZG9
    assert value(cancellation, "DTM", "92") == "202601312300+00"
    # An Einzug: the future assignment's customer has moved out (ZG9, "wegen Auszug des
    # Kunden"); a Wechsel to an earlier date cancels it with ZH0 (below).
    sts7 = next(s for s in cancellation.segments if s.tag == "STS")
    assert sts7.elements[2:] == ["ZG9", "ZW4"]


async def test_a_wechsel_to_an_earlier_date_gives_the_lfz_55038_zh0(store: LmdbStore) -> None:
    _, cancellation = await _with_an_lfz(store, "E03")
    sts7 = next(s for s in cancellation.segments if s.tag == "STS")
    assert sts7.elements[2:] == ["ZH0", "ZW4"]


async def test_lfa_objection_gives_55003_without_sg5_and_with_sts_z35(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, Suppliers(current=LFA))
    await p.ingest(anmeldung(), THU_1430)
    seen: set[str] = set()
    request = (await rendered(store, seen))["55010"]
    answer_at = datetime(2025, 11, 13, 16, 0, tzinfo=UTC)
    objection = lfa_answer(lfa=LFA, nb=NB, malo=MALO, request_ref=request.transactions[0].ide_ref,
                           ide_ref="LFATX1", control_ref="LFA0001", sent_at=answer_at, confirm=False,
                           answer_code="A35")
    await p.ingest(objection, answer_at)
    rejection = (await rendered(store, seen))["55003"]
    assert rejection.document_code == "E01"
    # §2: 55003 has no SG5 (no LOC+Z16); §3: STS+Z35 with the E_0624 code, required with A50,
    # as is the objecting LFA in NAD+VY (S1 FV2504 55003 [363] ∧ [566])
    assert sg4(rejection) == ["IDE+24", "STS+7", "STS+E01", "STS+Z35", "RFF+Z13", "RFF+TN", "NAD+VY"]
    nad_vy = next(s for s in rejection.segments if s.tag == "NAD" and s.value(0) == "VY")
    assert nad_vy.elements[1] == [LFA, "", "293"]
    assert rejection.transactions[0].malo is None
    assert rejection.transactions[0].transaction_reasons == ("E03", "ZW4")  # §3: #1 as the 55001
    z35 = next(s for s in rejection.segments if s.tag == "STS" and s.value(0) == "Z35")
    assert z35.elements[2] == ["A35", "E_0624"]
    assert rejection.transactions[0].answer_code == "A50"


async def test_generating_malo_55010_says_zw3_and_55080_carries_the_malo_in_sts_z35(
    store: LmdbStore,
) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, Suppliers(current=LFA))
    await p.ingest(anmeldung(pid="55077"), THU_1430)
    seen: set[str] = set()
    request = (await rendered(store, seen))["55010"]
    sts7 = next(s for s in request.segments if s.tag == "STS")
    assert sts7.elements[2:] == ["E03", "ZW3"]  # §3: E01 only with ZW4/ZAP; ZW3 = erzeugende MaLo
    answer_at = datetime(2025, 11, 13, 16, 0, tzinfo=UTC)
    objection = lfa_answer(lfa=LFA, nb=NB, malo=MALO, request_ref=request.transactions[0].ide_ref,
                           ide_ref="LFATX1", control_ref="LFA0001", sent_at=answer_at, confirm=False,
                           answer_code="A39")
    await p.ingest(objection, answer_at)
    rejection = (await rendered(store, seen))["55080"]
    assert rejection.document_code == "E01"
    # §2: no SG5 in 55080; §3: STS+7 E03 + ZW3, STS+Z35 Muss with A57, the MaLo in its DE9012;
    # S1 FV2504 55080 [84]: the LFA in SG12 NAD+VY with the MaLo in its RFF+Z18
    sg12 = ["NAD+VY", "RFF+Z18"]
    assert sg4(rejection) == ["IDE+24", "STS+7", "STS+E01", "STS+Z35", "RFF+Z13", "RFF+TN", *sg12]
    rff_z18 = next(s for s in rejection.segments if s.tag == "RFF" and s.value(0) == "Z18")
    assert rff_z18.elements[0] == ["Z18", MALO]
    sts = {s.value(0): s for s in rejection.segments if s.tag == "STS"}
    assert sts["7"].elements[2:] == ["E03", "ZW3"]
    assert sts["E01"].elements[2] == ["A57", "E_0623"]
    assert sts["Z35"].elements[2:] == [["A39", "E_0624"], ["ZW3", "", "", MALO]]


async def test_missed_vorlauffrist_gives_55003_at_once_with_the_anmeldungs_reason(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, Suppliers(current=LFA))
    await p.ingest(anmeldung(start=datetime(2025, 11, 13, 23, 0, tzinfo=UTC)), THU_1430)
    rejection = (await rendered(store))["55003"]
    assert sg4(rejection) == ["IDE+24", "STS+7", "STS+E01", "RFF+Z13", "RFF+TN"]
    sts = [s for s in rejection.segments if s.tag == "STS"]
    assert sts[0].elements[2:] == ["E03", "ZW4"] and sts[1].elements[2] == ["A07", "E_0622"]


async def test_missing_malo_gives_aperak_313_with_references_under_the_error(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, None)
    await p.ingest(anmeldung(malo=None), THU_1430)
    out = await rendered(store)
    assert set(out) == {"CONTRL", "APERAK"}
    aperak = out["APERAK"]
    assert aperak.document_code == "313"
    assert shape(aperak) == [
        "BGM+313", "DTM+137", "RFF+ACE", "DTM+171", "NAD+MS", "NAD+MR",
        "ERC+Z29", "FTX+ABO", "RFF+ACW", "RFF+AGO", "RFF+TN", "FTX+AAO", "FTX+Z02"]
    assert (value(aperak, "RFF", "ACE"), value(aperak, "RFF", "ACW"), value(aperak, "RFF", "AGO"),
            value(aperak, "RFF", "TN")) == ("LFN0001", "LFNMSG1", "LFNDOC1", "LFNTX1")
    z02 = next(s for s in aperak.segments if s.tag == "FTX" and s.value(0) == "Z02")
    assert z02.value(3) == "LOC+Z16"


async def test_under_fv2610_the_answers_carry_s22_and_aperak_22(store: LmdbStore) -> None:
    sent_at = datetime(2026, 11, 12, 13, 30, tzinfo=UTC)  # Thu; FV2610 in force since 2026-10-01
    clock = VirtualClock(sent_at)
    p = pipeline(store, clock, None)
    result = await p.ingest(
        anmeldung(sent_at=sent_at, start=datetime(2026, 11, 30, 23, 0, tzinfo=UTC)), sent_at
    )
    assert result.status == "accepted"
    out = await rendered(store)
    assert set(out) == {"CONTRL", "APERAK", "55002"}
    assert out["55002"].association_code == "S2.2" and out["55002"].release == "11A"
    assert out["APERAK"].association_code == "2.2"
    assert out["CONTRL"].association_code == "2.0b"
