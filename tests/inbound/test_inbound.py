"""Inbound pipeline: EDIFACT bytes → receipt + CONTRL → GPKE processes, on LMDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors import OutboxMessage, StreamId, TenantId
from mako_actors.edifact import check_structure, parse_interchange, render_outbound
from mako_actors.gpke import GpkeNbWorkflow, malo_key
from mako_actors.gpke.synthetic import abmeldung, anmeldung, lfa_answer
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData, Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore

NB, LFN, LFA = "9900000002009", "9900000001001", "9900000003005"
MALO = "51900000012"
THU_1430 = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)  # Thu 2025-11-13 14:30 CET (FV2510)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)  # Zuordnungsbeginn 2025-12-01 00:00 CET
TENANT = TenantId.from_party_id(NB)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def pipeline(store: LmdbStore, clock: VirtualClock, **suppliers: Suppliers) -> InboundPipeline:
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    return InboundPipeline(store, host, tenants=[NB], master_data=StaticMasterData(suppliers), clock=clock)


def anmeldung_55001(ref: str = "LFN0605143001", ide: str = "LFNTX000001", malo: str = MALO) -> bytes:
    return anmeldung(
        lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=ide, control_ref=ref, sent_at=THU_1430
    )


async def outbox(store: LmdbStore) -> list[OutboxMessage]:
    return await store.pending(1000, datetime(2030, 1, 1, tzinfo=UTC))


def kinds(messages: list[OutboxMessage]) -> list[str]:
    out = []
    for m in messages:
        if m.message_type == "UTILMD":
            out.append(m.payload["transactions"][0]["pid"])
        elif m.message_type == "APERAK":
            out.append("APERAK+" if m.payload["positive"] else "APERAK-")
        else:
            out.append(f"CONTRL{m.payload['action']}")
    return out


def roundtrip(message: OutboxMessage) -> Any:
    """Every outbox payload renders to EDIFACT that our parser reads back."""
    return parse_interchange(render_outbound(message.message_type, message.payload))


async def test_anmeldung_with_silent_lfa_confirms_after_nine(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    result = await p.ingest(anmeldung_55001(), THU_1430, source="lfn-1.edi")
    assert result.status == "accepted"
    [started] = result.messages
    assert started.outcome == "started" and started.pid == "55001"
    sent = await outbox(store)
    assert sorted(kinds(sent)) == sorted(["CONTRL7", "APERAK+", "55036", "55010"])
    for message in sent:
        parsed = roundtrip(message)
        assert parsed.sender.id == NB
    contrl = next(m for m in sent if m.message_type == "CONTRL")
    assert contrl.recipient == LFN and contrl.payload["interchange_ref"] == "LFN0605143001"
    # Nobody answers: at 09:00 CET on Fri 2025-11-14 (WT1) the LFA is deemed to agree.
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, datetime(2025, 11, 14, 7, 59, tzinfo=UTC)) == 0
    assert await scheduler.advance_to(clock, datetime(2025, 11, 14, 8, 0, tzinfo=UTC)) == 1
    decided = [m for m in await outbox(store) if m not in sent]
    assert sorted(kinds(decided)) == ["55002", "55037"]
    confirmation = next(m for m in decided if m.payload["transactions"][0]["pid"] == "55002")
    assert confirmation.recipient == LFN
    assert confirmation.payload["transactions"][0]["request_ref"] == "LFNTX000001"
    [tx] = roundtrip(confirmation).messages[0].transactions
    assert (tx.pid, tx.malo, tx.request_ref) == ("55002", MALO, "LFNTX000001")


async def test_lfa_answer_is_routed_by_rff_tn(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung_55001(), THU_1430)
    request = next(m for m in await outbox(store) if kinds([m]) == ["55010"])
    request_ide = request.payload["transactions"][0]["ide_ref"]
    answer_at = THU_1430 + timedelta(hours=2)
    answer = lfa_answer(
        lfa=LFA,
        nb=NB,
        malo=MALO,
        request_ref=request_ide,
        ide_ref="LFATX1",
        control_ref="LFA0001",
        sent_at=answer_at,
        confirm=False,
        answer_code="A35",
    )
    result = await p.ingest(answer, answer_at)
    [routed] = result.messages
    assert routed.outcome == "routed" and routed.process_id is not None
    last = [m for m in await outbox(store) if m.stream_id == StreamId.for_process(TENANT, routed.process_id)]
    rejection = [m for m in last if kinds([m]) == ["55003"]]
    assert len(rejection) == 1
    tx = rejection[0].payload["transactions"][0]
    assert (tx["answer_code"], tx["lfa_answer_code"]) == ("A50", "A35")


async def test_retransmission_is_a_duplicate_and_other_bytes_raise_an_alarm(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    raw = anmeldung_55001()
    assert (await p.ingest(raw, THU_1430)).status == "accepted"
    before = (await store.read_all(0, 10_000), await store.outbox_count())
    again = await p.ingest(raw, THU_1430 + timedelta(minutes=5))
    assert again.status == "duplicate" and again.messages == []
    assert (await store.read_all(0, 10_000), await store.outbox_count()) == before
    changed = anmeldung_55001(ide="LFNTX000099")
    alarm = await p.ingest(changed, THU_1430 + timedelta(minutes=6))
    assert alarm.status == "conflict" and "other content" in (alarm.error or "")
    assert [d.kind for d in await store.dead_letters()] == ["inbound-conflict"]
    # The sender learns of it: CONTRL 4 with 0085 = 26 (duplicate detected), under its own 0020.
    after = await store.read_all(0, 10_000)
    assert [e.event_type for e in after[len(before[0]) :]] == ["inbox.interchange_conflicted"]
    contrls = [m for m in await outbox(store) if m.message_type == "CONTRL"]
    [first] = [m for m in contrls if m.payload["action"] == "7"]
    [answer] = [m for m in contrls if m.payload["action"] == "4"]
    assert (answer.payload["action"], answer.payload["error_code"]) == ("4", "26")
    assert answer.payload["interchange_ref"] == "LFN0605143001"
    assert answer.payload["envelope"]["control_ref"] != first.payload["envelope"]["control_ref"]
    assert "UCI+LFN0605143001+" in render_outbound("CONTRL", answer.payload).decode()
    # The same conflicting bytes again: no second CONTRL, another alarm.
    assert (await p.ingest(changed, THU_1430 + timedelta(minutes=7))).status == "conflict"
    assert len([m for m in await outbox(store) if m.message_type == "CONTRL"]) == 2


async def test_broken_interchange_is_rejected_with_contrl_and_starts_nothing(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    raw = anmeldung_55001().replace(b"UNT+", b"UNT+9")  # wrong UNT segment count
    result = await p.ingest(raw, THU_1430, source="broken.edi")
    assert result.status == "rejected" and "UNT" in (result.error or "")
    [contrl] = await outbox(store)
    # A message-level defect: UCI 4 and UCM+M1+UTILMD:D:11A:UN:S2.1+4+29 (AHB-FACTS §6).
    assert contrl.payload["action"] == "4" and contrl.payload.get("error_code") is None
    [ucm] = contrl.payload["messages"]
    assert (ucm["reference"], ucm["message_type"]) == ("M1", "UTILMD")
    assert (ucm["action"], ucm["error_code"]) == ("4", "29")
    events = await store.read_all(0, 100)
    assert {e.workflow_id.name for e in events} == {"mako-inbox"}  # no process started
    assert roundtrip(contrl).messages[0].message_type == "CONTRL"
    # The corrected resend under the same 0020 is a new receipt, accepted.
    fixed = await p.ingest(anmeldung_55001(), THU_1430 + timedelta(minutes=30))
    assert fixed.status == "accepted" and fixed.messages[0].outcome == "started"


async def test_a_rejected_interchange_received_again_stays_rejected(store: LmdbStore) -> None:
    """Its sender was told CONTRL 4 (not received): the same bytes again are a duplicate of a
    rejection, filed as one, also when the node would accept them now (test flag allowed)."""
    clock = VirtualClock(THU_1430)
    broken = anmeldung_55001().replace(b"UNT+", b"UNT+9")
    assert (await pipeline(store, clock).ingest(broken, THU_1430)).status == "rejected"
    again = await pipeline(store, clock).ingest(broken, THU_1430)
    assert (again.status, again.rejected_before) == ("duplicate", True)
    test = anmeldung(
        lfn=LFN, nb=NB, malo=MALO, zuordnungsbeginn=START, ide_ref="X2", control_ref="R2",
        sent_at=THU_1430, test=True,
    )  # fmt: skip
    assert (await pipeline(store, clock).ingest(test, THU_1430)).status == "rejected"
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    allowing = InboundPipeline(store, host, tenants=[NB], accept_test=True, clock=clock)
    later = await allowing.ingest(test, THU_1430)
    assert (later.status, later.rejected_before, later.messages) == ("duplicate", True, [])
    assert {e.workflow_id.name for e in await store.read_all(0, 100)} == {"mako-inbox"}  # nothing started
    accepted = anmeldung_55001(ref="LFN0605143002")
    assert (await pipeline(store, clock).ingest(accepted, THU_1430)).status == "accepted"
    repeat = await pipeline(store, clock).ingest(accepted, THU_1430)
    assert (repeat.status, repeat.rejected_before) == ("duplicate", False)


async def test_foreign_recipient_and_test_interchanges_are_refused(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    foreign = anmeldung(
        lfn=LFN,
        nb="9900000009999",
        malo=MALO,
        zuordnungsbeginn=START,
        ide_ref="X1",
        control_ref="R1",
        sent_at=THU_1430,
    )
    result = await p.ingest(foreign, THU_1430)
    assert result.status == "rejected" and "not one of our MP-IDs" in (result.error or "")
    test = anmeldung(
        lfn=LFN,
        nb=NB,
        malo=MALO,
        zuordnungsbeginn=START,
        ide_ref="X2",
        control_ref="R2",
        sent_at=THU_1430,
        test=True,
    )
    assert (await p.ingest(test, THU_1430)).status == "rejected"
    contrls = await outbox(store)
    fields = ("action", "error_code", "error_segment")
    by_ref = {m.payload["interchange_ref"]: tuple(m.payload.get(k) for k in fields) for m in contrls}
    # 0085 7 "recipient not actual recipient", 25 "test indicator not supported"; both about the UNB
    assert by_ref == {"R1": ("4", "7", "UNB"), "R2": ("4", "25", "UNB")}


async def test_unknown_and_gas_pids_become_dead_letters(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    for pid, ref in (("55555", "U1"), ("44001", "G1")):
        raw = anmeldung(
            lfn=LFN,
            nb=NB,
            malo=MALO,
            zuordnungsbeginn=START,
            ide_ref=ref,
            control_ref=ref,
            sent_at=THU_1430,
            pid=pid,
        )
        result = await p.ingest(raw, THU_1430)
        assert result.status == "accepted"
        assert [m.outcome for m in result.messages] == ["dead_letter"]
    letters = await store.dead_letters()
    assert [d.reason.split(":")[0] for d in letters] == ["UnhandledPid", "UnhandledPid"]
    assert letters[0].payload["pid"] == "55555" and letters[0].payload["interchange_ref"] == "U1"
    # ... and the sender learns of it: CONTRL 7 for the interchange, APERAK 313 Z31 for the message.
    aperaks = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert sorted(a.payload["referenced_interchange_ref"] for a in aperaks) == ["G1", "U1"]
    for aperak in aperaks:
        assert aperak.recipient == LFN and aperak.payload["positive"] is False
        assert [e["code"] for e in aperak.payload["errors"]] == ["Z31"]
        assert b"ERC+Z31" in render_outbound("APERAK", aperak.payload)


async def test_competing_anmeldung_is_rejected_at_once(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung_55001(), THU_1430)
    rival = anmeldung(
        lfn="9900000004001",
        nb=NB,
        malo=MALO,
        zuordnungsbeginn=START,
        ide_ref="RIVAL1",
        control_ref="RIV001",
        sent_at=THU_1430 + timedelta(minutes=10),
    )
    result = await p.ingest(rival, THU_1430 + timedelta(minutes=10))
    [outcome] = result.messages
    assert outcome.outcome == "started"
    answers = [
        m for m in await outbox(store) if m.recipient == "9900000004001" and m.message_type == "UTILMD"
    ]
    assert [m.payload["transactions"][0]["answer_code"] for m in answers] == ["A06"]


async def test_answer_without_process_and_abmeldung(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFN)})
    orphan = lfa_answer(
        lfa=LFA, nb=NB, malo=MALO, request_ref="NOSUCHIDE", ide_ref="O1", control_ref="O1", sent_at=THU_1430
    )
    assert [m.outcome for m in (await p.ingest(orphan, THU_1430)).messages] == ["dead_letter"]
    end = abmeldung(
        lf=LFN, nb=NB, malo=MALO, zuordnungsende=START, ide_ref="AB1", control_ref="AB1", sent_at=THU_1430
    )
    result = await p.ingest(end, THU_1430)
    assert [m.outcome for m in result.messages] == ["started"]
    assert "55005" in kinds(await outbox(store))


async def test_contrl_and_aperak_on_our_messages_find_the_process_that_sent_them(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    [started] = (await p.ingest(anmeldung_55001(), THU_1430)).messages
    sent = await outbox(store)
    to_lfa = next(m for m in sent if kinds([m]) == ["55010"])
    to_lfn = next(m for m in sent if kinds([m]) == ["55036"])
    later = THU_1430 + timedelta(minutes=20)
    contrl = render_outbound(
        "CONTRL",
        {
            "reference": "C1",
            "interchange_ref": to_lfa.payload["envelope"]["control_ref"],
            "interchange_sender_id": NB,
            "interchange_recipient_id": LFA,
            "action": "4",
            # AHB-FACTS §6: a message-level defect in a UCM line, the UCI without a code
            "messages": [
                {
                    "reference": to_lfa.payload["reference"],
                    "message_type": "UTILMD",
                    "release": "11A",
                    "association_code": "S2.1",
                    "action": "4",
                    "error_code": "29",
                    "error_segment": "UNT",
                }
            ],
        },
        envelope={"sender_id": LFA, "recipient_id": NB, "prepared_at": later, "control_ref": "LFACTRL1"},
    )
    aperak = render_outbound(
        "APERAK",
        {
            "reference": "A1",
            "document_number": "AP1",
            "document_date": later,
            "sender_id": LFN,
            "recipient_id": NB,
            "positive": False,
            "referenced_interchange_ref": to_lfn.payload["envelope"]["control_ref"],
            "referenced_date": later,
            "errors": [{"code": "Z35", "text": "Format nicht eingehalten"}],
        },
        envelope={"sender_id": LFN, "recipient_id": NB, "prepared_at": later, "control_ref": "LFNAPK1"},
    )
    before = await store.outbox_count()
    contrl_result = await p.ingest(contrl, later)
    aperak_result = await p.ingest(aperak, later)
    for result in (contrl_result, aperak_result):
        [ack] = result.messages
        assert (ack.outcome, ack.process_id, ack.ack) == ("routed", started.process_id, "rejected")
    # A CONTRL gets no CONTRL back; the APERAK's interchange gets its CONTRL 7.
    assert await store.outbox_count() == before + 1
    process_events = await store.load(StreamId.for_process(TENANT, started.process_id))
    acks = [e.payload for e in process_events if e.event_type == "gpke.acknowledgement_received"]
    assert [(a["message_type"], a["positive"], a["codes"]) for a in acks] == [
        ("CONTRL", False, ["29"]),
        ("APERAK", False, ["Z35"]),
    ]
    unknown = contrl.replace(to_lfa.payload["envelope"]["control_ref"].encode(), b"NOSUCHREF00000")
    unknown = unknown.replace(b"LFACTRL1", b"LFACTRL2")
    [orphan] = (await p.ingest(unknown, later)).messages
    assert orphan.outcome == "dead_letter" and "unknown interchange" in orphan.detail


@pytest.mark.parametrize("defect", ["unt count", "old version", "test flag", "misaddressed"])
async def test_a_contrl_refused_for_its_interchange_gets_no_contrl_back(
    store: LmdbStore, defect: str
) -> None:
    """ISO 9735: errors in a received CONTRL are not reported by a CONTRL. Before, a CONTRL
    whose UNT miscounted, whose version was not in force, whose UNB was a test or addressed to
    someone else got a CONTRL 4 back (the partner's system answers that one again).

    Nobody tells its sender, so its acknowledgements (a CONTRL 4 of our 55010 that would stop
    the LFA's deemed agreement) go to a dead letter, once per content. Before, only a log line
    and the receipt event were left of them (DOMAIN §5: nothing is dropped)."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    contrl = render_outbound(
        "CONTRL",
        {"reference": "C1", "interchange_ref": "OURS0001", "interchange_sender_id": NB,
         "interchange_recipient_id": LFN, "action": "7"},
        envelope={"sender_id": LFN, "recipient_id": NB, "prepared_at": THU_1430, "control_ref": "LFNCTRL1"},
    )  # fmt: skip
    assert b"UNT+3+C1'" in contrl
    broken = {
        "unt count": contrl.replace(b"UNT+3+C1'", b"UNT+9+C1'"),
        "old version": contrl.replace(b"CONTRL:D:3:UN:2.0b", b"CONTRL:D:3:UN:2.0a"),
        "test flag": contrl.replace(b"+LFNCTRL1'", b"+LFNCTRL1++++++1'", 1),
        "misaddressed": contrl.replace(f"{NB}:500".encode(), b"9900000099993:500", 1),
    }[defect]
    assert broken != contrl
    result = await p.ingest(broken, THU_1430)
    assert result.status == "rejected" and result.dead_lettered and p.dead_letters_written == 1
    assert await store.outbox_count() == 0
    [letter] = await store.dead_letters()
    assert letter.kind.startswith("inbound") and letter.payload["interchange_ref"] == "LFNCTRL1"
    again = await p.ingest(broken, THU_1430)
    assert again.status == "duplicate" and not again.dead_lettered and p.dead_letters_written == 1
    assert len(await store.dead_letters()) == 1


@pytest.mark.parametrize(
    ("defect", "uci"),
    [
        ("charset", b"+4+2+UNB'"),
        # Not a MaKo charset (DOMAIN §4): before, accepted, and a name in Latin-2 made the
        # 55010 to the LFA unrenderable in UNOC, while the 55037 went out at nine.
        ("latin-2", b"+4+2+UNB'"),
        # An element error inside a message: on its UCM line's UCS/UCD (AHB-FACTS §6).
        ("byte", b"+4'UCM+M1+UTILMD:D:11A:UN:S2.1+4'UCS+2'UCD+21+3'"),
        ("no s009", b"+4+"),
    ],
)
async def test_an_identifiable_sender_of_a_broken_interchange_gets_a_contrl(
    store: LmdbStore, defect: str, uci: bytes
) -> None:
    """Whoever an intact UNB names gets CONTRL 4 (DOMAIN §4: unknown -> reject with CONTRL).
    Before: a charset we do not take, a byte outside UNOB, a UNH without S009: a dead letter only."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    raw = anmeldung_55001()
    broken = {
        "charset": raw.replace(b"UNB+UNOC:3+", b"UNB+UNOY:3+", 1),
        "latin-2": raw.replace(b"UNB+UNOC:3+", b"UNB+UNOD:3+", 1).replace(
            b"Beispiel", "\u0141ukasz".encode("iso-8859-2"), 1
        ),
        "byte": raw.replace(b"UNB+UNOC:3+", b"UNB+UNOB:3+", 1).replace(b"BGM+E01+", b"BGM+E01+\xfc", 1),
        "no s009": raw.replace(b"+UTILMD:D:11A:UN:S2.1'", b"'", 1),
    }[defect]
    assert broken != raw
    result = await p.ingest(broken, THU_1430)
    assert result.status == "rejected"
    [contrl] = await outbox(store)
    assert contrl.message_type == "CONTRL" and contrl.recipient == LFN
    assert uci in render_outbound("CONTRL", contrl.payload)


@pytest.mark.parametrize("after", ["another message", "the UNZ"])
async def test_a_message_without_its_unt_is_named_in_the_contrl(store: LmdbStore, after: str) -> None:
    """AHB-FACTS §6: UCM+<0062 of the faulty message>+<S009>+4+<0085>+UNT. Before, the line named
    the intact message that followed (M2), or the error sat on the UCI with 0013 UNZ."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    head = f"UNA:+.? 'UNB+UNOC:3+{LFN}:500+{NB}:500+251113:1330+IC1'UNH+M1+UTILMD:D:11A:UN:S2.1'BGM+E01+D1'"
    tail = {
        "another message": "UNH+M2+UTILMD:D:11A:UN:S2.1'BGM+E01+D2'UNT+3+M2'UNZ+2+IC1'",
        "the UNZ": "UNZ+1+IC1'",
    }[after]
    result = await p.ingest((head + tail).encode(), THU_1430)
    assert result.status == "rejected"
    [contrl] = await outbox(store)
    assert b"UCM+M1+UTILMD:D:11A:UN:S2.1+4+13+UNT'" in render_outbound("CONTRL", contrl.payload)


async def test_an_interchange_of_syntax_version_4_is_refused_with_contrl_0085_2(store: LmdbStore) -> None:
    """DOMAIN §4: syntax version 3. Before, UNOC:4 was accepted (CONTRL 7) and its repetition
    separator read as data."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    raw = anmeldung_55001()
    assert b"UNB+UNOC:3+" in raw
    result = await p.ingest(raw.replace(b"UNB+UNOC:3+", b"UNB+UNOC:4+", 1), THU_1430)
    assert result.status == "rejected" and "syntax version" in (result.error or "")
    [contrl] = await outbox(store)
    assert contrl.message_type == "CONTRL" and b"+4+2+UNB'" in render_outbound("CONTRL", contrl.payload)
    assert not result.messages  # nothing of it routed


async def test_a_message_addressed_to_someone_else_gets_a_negative_aperak_from_us(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    raw = anmeldung_55001().replace(f"NAD+MR+{NB}".encode(), b"NAD+MR+9900000009999")
    [outcome] = (await p.ingest(raw, THU_1430)).messages
    assert outcome.outcome == "started"
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert aperak.payload["positive"] is False
    assert [e["code"] for e in aperak.payload["errors"]] == ["Z18"]
    assert aperak.payload["envelope"]["sender_id"] == NB  # answered as the UNB recipient, never as 9999


async def test_a_message_sent_in_another_partys_name_acts_for_nobody(store: LmdbStore) -> None:
    """DOMAIN §4: NAD+MS must match the UNB sender. LFN's interchange carrying a 55004 with
    NAD+MS = the supplier of the MaLo must not end that supplier's supply, nor may a 55012 in
    it stand as the old supplier's objection: APERAK 313 Z17 to the UNB sender, no decision."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    forged = abmeldung(
        lf=LFA, nb=NB, malo=MALO, zuordnungsende=START, ide_ref="AB1", control_ref="X1", sent_at=THU_1430
    ).replace(f"UNB+UNOC:3+{LFA}:500".encode(), f"UNB+UNOC:3+{LFN}:500".encode(), 1)
    result = await p.ingest(forged, THU_1430)
    assert result.status == "accepted"
    sent = await outbox(store)
    assert kinds(sent) == ["CONTRL7", "APERAK-"]  # a negative APERAK, no 55005 to anybody
    assert {m.recipient for m in sent} == {LFN}
    [aperak] = [m for m in sent if m.message_type == "APERAK"]
    assert aperak.payload["positive"] is False
    assert [e["code"] for e in aperak.payload["errors"]] == ["Z17"]
    assert f"NAD+MS {LFA} is not the interchange's sender {LFN}" in aperak.payload["errors"][0]["text"]

    # The old supplier's objection, forged the same way, is no objection: LFA is deemed to agree.
    await p.ingest(anmeldung_55001(), THU_1430)
    [request] = [m for m in await outbox(store) if m.message_type == "UTILMD" and m.recipient == LFA]
    objection = lfa_answer(
        lfa=LFA, nb=NB, malo=MALO, request_ref=request.payload["transactions"][0]["ide_ref"],
        ide_ref="OBJ1", control_ref="X2", sent_at=THU_1430, confirm=False,
    ).replace(f"UNB+UNOC:3+{LFA}:500".encode(), f"UNB+UNOC:3+{LFN}:500".encode(), 1)  # fmt: skip
    [outcome] = (await p.ingest(objection, THU_1430 + timedelta(hours=1))).messages
    assert outcome.outcome == "routed"
    clock.set(datetime(2025, 11, 14, 8, 0, tzinfo=UTC))
    firer = process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock)
    await DeadlineScheduler(store, firer, clock).run_due()
    answers = [
        (m.payload["transactions"][0]["pid"], m.payload["transactions"][0].get("answer_code"))
        for m in await outbox(store)
        if m.message_type == "UTILMD" and m.recipient == LFN
    ]
    assert answers == [("55036", None), ("55002", "A51")]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff garbage",
        b"UNB+UNOC:3+"
        + LFN.encode()
        + b":500+"
        + NB.encode()
        + b":500+251113:1430+"
        + b"R" * 40
        + b"'UNZ+1+R'",
        b"UNA:+.? 'UNB+UNOC:3+x+y+z+REF1'UNH+1+UTILMD:D:11A:UN:S2.1'",
    ],
)
async def test_garbage_never_raises_and_is_kept_as_receipt_or_dead_letter(
    store: LmdbStore, raw: bytes
) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    result = await p.ingest(raw, THU_1430, source="garbage.edi")
    assert result.status == "rejected" and result.error
    # Addressed to "y", not us: misaddressed, broken or not (our CONTRL 7 and a dead letter).
    kept = 2 if b"+x+y+" in raw else 1
    assert await store.outbox_count() + len(await store.dead_letters()) == kept


@pytest.mark.parametrize(
    ("body", "charset", "lines"),
    [
        # BGM 1004 an..35: element 3 (the tag is 1), component 1, segment 2 of the message.
        ("BGM+E01+" + "D" * 36 + "'", "UNOC", "UCS+2'UCD+39+3:1'"),
        # A byte outside UNOB in NAD C080 (element 5, component 1), segment 3; the released
        # terminator in the FTX before it does not end a segment.
        ("BGM+E01+D1'FTX+ACB+++a?'b'NAD+Z09+++M\u00fcller:Paula'", "UNOB", "UCS+4'UCD+21+5:1'"),
        # A simple data element as written (no component separator): no 0104.
        ("BGM+E01+D1'NAD+Z09+++M\u00fcller'", "UNOB", "UCS+3'UCD+21+5'"),
    ],
)
async def test_an_error_inside_a_message_is_named_by_ucs_and_ucd(
    store: LmdbStore, body: str, charset: str, lines: str
) -> None:
    """AHB-FACTS §6: an error outside UNH/UNT is UCM+<0062>+<S009>+4 with UCS+<position> and
    UCD+<0085>+<0098>[:<0104>] (Muss [9]). Before, it sat on the UCI as an interchange error."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    count = body.count("'") - body.count("?'") + 2
    text = (
        f"UNA:+.? 'UNB+{charset}:3+{LFN}:500+{NB}:500+251113:1330+IC1'UNH+M1+UTILMD:D:11A:UN:S2.1'"
        f"{body}UNT+{count}+M1'UNZ+1+IC1'"
    )
    result = await p.ingest(text.encode("latin-1"), THU_1430)
    assert result.status == "rejected"
    [contrl] = await outbox(store)
    rendered = render_outbound("CONTRL", contrl.payload)
    assert f"UCI+IC1+{LFN}:500+{NB}:500+4'UCM+M1+UTILMD:D:11A:UN:S2.1+4'{lines}UNT".encode() in rendered
    assert check_structure(rendered) == []


def _one_message(body: str, unt: str = "") -> bytes:
    """An interchange of one UTILMD M1 with ``body`` between UNH and UNT, UNT counting it."""
    count = body.count("'") - body.count("?'") + 2
    return (
        f"UNA:+.? 'UNB+UNOC:3+{LFN}:500+{NB}:500+251113:1330+IC1'UNH+M1+UTILMD:D:11A:UN:S2.1'"
        f"{body}UNT+{count}+M1{unt}'UNZ+1+IC1'"
    ).encode("latin-1")


@pytest.mark.parametrize(
    ("body", "lines"),
    [
        # An invalid tag (lower-case, 4 or 2 characters) and an empty segment: 15 "not supported in
        # this position" at the position the tokenizer stopped (segment 3 of the message).
        ("BGM+E01+D1'loc+Z16+1'", "UCS+3+15'"),
        ("BGM+E01+D1'LOCX+Z16+1'", "UCS+3+15'"),
        ("BGM+E01+D1'LO+Z16+1'", "UCS+3+15'"),
        ("BGM+E01+D1''", "UCS+3+15'"),
        # Released terminators and line breaks after terminators do not end or count a segment.
        ("FTX+ACB+++a?'b'FTX+ACB+++a??'loc+Z16+1'", "UCS+4+15'"),
        ("BGM+E01+D1'\r\nFTX+ACB+++a?'b'\nloc+Z16+1'", "UCS+4+15'"),
        # A release character right before a line break: 22 "invalid service character".
        ("BGM+E01+D1'LOC+Z16+1?\n'", "UCS+3+22'"),
        ("BGM+E01+D1'LOC+Z16+1?\r\n'", "UCS+3+22'"),
    ],
)
async def test_a_segment_the_tokenizer_refuses_inside_a_message_is_named_by_ucs(
    store: LmdbStore, body: str, lines: str
) -> None:
    """AHB-FACTS §6: an error inside a message (not in UNH/UNT) is UCM+<0062>+<S009>+4 with
    UCS+<position>[+<0085>], 0085 of 13, 15, 16, 22, 35, 36. Before, a segment the tokenizer
    could not split sat on the UCI as an interchange error (UCI+…+4+18, or +22)."""
    result = await pipeline(store, VirtualClock(THU_1430)).ingest(_one_message(body), THU_1430)
    assert result.status == "rejected"
    [contrl] = await outbox(store)
    rendered = render_outbound("CONTRL", contrl.payload)
    assert f"UCI+IC1+{LFN}:500+{NB}:500+4'UCM+M1+UTILMD:D:11A:UN:S2.1+4'{lines}UNT".encode() in rendered
    assert check_structure(rendered) == []


@pytest.mark.parametrize(
    ("bgm", "lines"),
    [
        # A fourth data element (UN's 4343, not in the MIG) or more: the segment's, UCS 16.
        ("BGM+E01+D1+9+AP", "UCS+2+16'"),
        ("BGM+E01+D1+9+AP+X", "UCS+2+16'"),
        # A component C106 (1004, 1056, 1060) does not have: the composite's, UCD 16 on element 3.
        ("BGM+E01+D1:::X", "UCS+2'UCD+16+3'"),
        ("BGM+E01:::::X+D1", "UCS+2'UCD+16+2'"),
        ("BGM+E01+D1+9:X", "UCS+2'UCD+16+4'"),
    ],
)
async def test_a_utilmd_bgm_with_more_constituents_than_the_mig_is_refused_by_contrl_16(
    store: LmdbStore, bgm: str, lines: str
) -> None:
    """The UTILMD MIG's BGM is C002 (1001:1131:3055:1000), C106 (1004:1056:1060) and 1225
    (DOMAIN §4). Before, more was taken silently (CONTRL 7, the message decided on what the
    parser happened to read); now it is a syntax error inside the message: UCS 16 "too many
    constituents" (AHB-FACTS §6), for the segment or the composite."""
    result = await pipeline(store, VirtualClock(THU_1430)).ingest(_one_message(bgm + "'"), THU_1430)
    assert result.status == "rejected" and "[0085=16]" in (result.error or "")
    [contrl] = await outbox(store)
    rendered = render_outbound("CONTRL", contrl.payload)
    assert f"UCI+IC1+{LFN}:500+{NB}:500+4'UCM+M1+UTILMD:D:11A:UN:S2.1+4'{lines}UNT".encode() in rendered
    assert check_structure(rendered) == []


@pytest.mark.parametrize(
    "bgm", ["BGM+E01+D1+9", "BGM+E01:::+00055001::+9", "BGM+E01+D1+9+", "BGM+E01+D1::+9"]
)
async def test_a_utilmd_bgm_in_the_mig_shape_is_still_taken(store: LmdbStore, bgm: str) -> None:
    """The shapes real senders use (1225 given, every component written empty as in the public
    samples) and an empty trailing element pass: nothing in them goes beyond the MIG."""
    result = await pipeline(store, VirtualClock(THU_1430)).ingest(_one_message(bgm + "'"), THU_1430)
    assert result.status == "accepted"


async def test_a_refused_segment_in_a_later_message_is_counted_from_its_unh(store: LmdbStore) -> None:
    """The UCS position counts from the UNH of the message the segment is in (AHB-FACTS §6)."""
    first = _one_message("BGM+E01+D1'")
    second = first.replace(b"M1", b"M2").replace(b"BGM+E01+D1'", b"BGM+E01+D2'DTM+137'loc+Z16+1'")
    raw = first[: first.index(b"UNZ")] + second[second.index(b"UNH") :]
    await pipeline(store, VirtualClock(THU_1430)).ingest(raw.replace(b"UNZ+1", b"UNZ+2"), THU_1430)
    [contrl] = await outbox(store)
    rendered = render_outbound("CONTRL", contrl.payload)
    assert b"+4'UCM+M2+UTILMD:D:11A:UN:S2.1+4'UCS+4+15'UNT" in rendered and b"UCM+M1" not in rendered


@pytest.mark.parametrize(
    ("mutate", "tail"),
    [
        # In the UNT: named on the UCM line with 0013 UNT, as other UNT errors.
        (lambda raw: raw.replace(b"+M1'UNZ", b"+M1?\n'UNZ"), b"UCM+M1+UTILMD:D:11A:UN:S2.1+4+22+UNT'"),
        # Outside any message (after its UNT; instead of its UNH): the interchange's, on the UCI.
        (lambda raw: raw.replace(b"'UNZ", b"''UNZ"), f"+{NB}:500+4+18'".encode()),
        (lambda raw: raw.replace(b"'UNZ", b"'XX+1'UNZ"), f"+{NB}:500+4+18'".encode()),
        (lambda raw: raw.replace(b"UNH+M1", b"unh+M1"), f"+{NB}:500+4+18'".encode()),
        # The unterminated end of a cut-off interchange: the interchange's too.
        (lambda raw: raw[: raw.index(b"LOC+") + 5], f"+{NB}:500+4+18'".encode()),
    ],
)
async def test_a_refused_segment_outside_a_message_body_is_not_named_by_ucs(
    store: LmdbStore, mutate: Callable[[bytes], bytes], tail: bytes
) -> None:
    """A segment the tokenizer refuses in UNT is a UCM line's 0085/0013; one outside a message
    stays an interchange-level error on the UCI (AHB-FACTS §6)."""
    raw = mutate(_one_message("BGM+E01+D1'LOC+Z16+1'"))
    await pipeline(store, VirtualClock(THU_1430)).ingest(raw, THU_1430)
    [contrl] = await outbox(store)
    rendered = render_outbound("CONTRL", contrl.payload)
    # (segments counted, not letters: a reference of ours may hold "UCS")
    assert tail + b"UNT" in rendered and rendered.count(b"'UCS+") == 0, rendered
    assert check_structure(rendered) == []


def test_a_partners_contrl_names_its_ucs_and_ucd_codes() -> None:
    """An error inside our message is named only on the partner's UCS/UCD lines (AHB-FACTS §6);
    the recorded acknowledgement keeps those codes. Before, it recorded none."""
    from mako_actors.inbound import _ack_values

    text = (
        f"UNA:+.? 'UNB+UNOC:3+{LFA}:500+{NB}:500+251113:1330+C1'UNH+M1+CONTRL:D:3:UN:2.0b'"
        f"UCI+NB1+{NB}:500+{LFA}:500+4'UCM+X1+UTILMD:D:11A:UN:S2.1+4'UCS+5+35'UCS+7'UCD+39+3:1'"
        "UNT+7+M1'UNZ+1+C1'"
    )
    interchange = parse_interchange(text.encode())
    values = _ack_values(interchange, interchange.messages[0], THU_1430)
    assert values is not None
    assert values["positive"] is False and values["codes"] == ("35", "39")


async def test_a_transaction_reference_reused_in_another_interchange_is_an_alarm(store: LmdbStore) -> None:
    """DOMAIN §5: IDE is a sub-key of the inbox key; the same key with other content raises an
    alarm and is not processed. Before, a second Anmeldung under a known IDE (another MaLo, a
    new interchange) got CONTRL 7 and then nothing: no APERAK, no dead letter, no warning. Its
    sender now gets APERAK Z15 ("nicht eindeutig"; DOMAIN §2: every UTILMD is answered)."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    first = await p.ingest(anmeldung_55001(), THU_1430)
    assert [m.outcome for m in first.messages] == ["started"]
    sent = len(await outbox(store))
    other = anmeldung_55001(ref="LFN0605143002", malo="51238696788")
    result = await p.ingest(other, THU_1430 + timedelta(minutes=5))
    assert result.status == "accepted"
    [outcome] = result.messages
    assert outcome.outcome == "dead_letter" and "LFNTX000001" in outcome.detail
    [letter] = await store.dead_letters()
    assert letter.kind == "inbound-conflict" and letter.payload["interchange_ref"] == "LFN0605143002"
    assert kinds((await outbox(store))[sent:]) == ["CONTRL7", "APERAK-"]
    [aperak] = (await outbox(store))[sent + 1 :]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z15" and "LFNTX000001" in error["text"]
    assert aperak.payload["referenced_transaction_ref"] == "LFNTX000001"


@pytest.mark.parametrize("s009", ["utilmd:D:11A:UN:S2.1", "ORDERS:D:09B:UN:1.4a", "APERAK:D:07B:UN:2.1i"])
async def test_only_a_utilmd_starts_a_process(store: LmdbStore, s009: str) -> None:
    """DOMAIN §1: the process PIDs are UTILMD's, and only its UNH version is checked. Before, any
    message with IDE+24 and RFF+Z13:55001 was routed by its PID: an ORDERS, an APERAK or a
    lower-case 'utilmd' of an old release each started a supplier change and sent the 55010."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    raw = anmeldung_55001().replace(b"UTILMD:D:11A:UN:S2.1", s009.encode())
    result = await p.ingest(raw, THU_1430)
    assert [m.outcome for m in result.messages] == ["dead_letter"]
    assert await store.lookup(TENANT, malo_key(MALO)) is None
    assert "55010" not in kinds(await outbox(store))


@pytest.mark.parametrize("lead", [b"\n", b"\r\n\r\n"])
async def test_line_breaks_before_the_una_are_tolerated_as_before_the_unb(
    store: LmdbStore, lead: bytes
) -> None:
    """Before, a line break before UNB was read past, one before UNA made the interchange
    unreadable: a dead letter and no CONTRL to an identifiable sender."""
    from mako_actors._partition import Scan

    raw = anmeldung_55001()
    assert raw.startswith(b"UNA")
    assert Scan(lead + raw).ok and Scan(lead + raw).sender == Scan(raw).sender
    result = await pipeline(store, VirtualClock(THU_1430)).ingest(lead + raw, THU_1430)
    assert result.status == "accepted" and [m.outcome for m in result.messages] == ["started"]
    assert await store.dead_letters() == []


async def test_the_contrl_copies_a_unb_without_qualifier_as_received(store: LmdbStore) -> None:
    """AHB-FACTS §6: UCI S002/S003 "as received". Before, a UNB sender without its qualifier
    got one made up from the MP-ID's prefix (':500')."""
    raw = anmeldung_55001().replace(f"+{LFN}:500+".encode(), f"+{LFN}+".encode(), 1)
    await pipeline(store, VirtualClock(THU_1430)).ingest(raw, THU_1430)
    contrl = next(m for m in await outbox(store) if m.message_type == "CONTRL")
    assert f"UCI+LFN0605143001+{LFN}+{NB}:500+7'".encode() in render_outbound("CONTRL", contrl.payload)


async def test_an_actor_system_closing_under_an_ingest_refuses_nothing_to_the_partner(
    store: LmdbStore,
) -> None:
    """A replay stopped (Ctrl-C) or a node shutting down closes its actor system under ingests
    in flight. Before, each of their transactions got APERAK Z35 'not processable' and a dead
    letter, and the receipt said processed: a re-run skipped them for good. Now the ingest
    fails (an operational error) and the same bytes are processed in full later."""
    from mako_actors import LocalActorSystem
    from mako_actors.actors import ActorSystemClosed

    clock = VirtualClock(THU_1430)
    closed = LocalActorSystem(store, [GpkeNbWorkflow()], clock=clock)
    await closed.aclose()
    p = InboundPipeline(store, closed, tenants=[NB], master_data=StaticMasterData({}), clock=clock)
    with pytest.raises(ActorSystemClosed):
        await p.ingest(anmeldung_55001(), THU_1430)
    assert await store.dead_letters() == [] and "APERAK-" not in kinds(await outbox(store))
    async with LocalActorSystem(store, [GpkeNbWorkflow()], clock=clock) as system:
        again = InboundPipeline(store, system, tenants=[NB], master_data=StaticMasterData({}), clock=clock)
        result = await again.ingest(anmeldung_55001(), THU_1430)
        assert [m.outcome for m in result.messages] == ["started"]


async def test_an_over_long_message_reference_is_not_copied_into_our_contrl(store: LmdbStore) -> None:
    """UCM copies 0062 and S009 as received; one too long for them (the defect itself) would
    make our own CONTRL break the CONTRL's limits (0062 an..14). Before, it was copied: the
    error now sits on the UCI."""
    raw = anmeldung_55001()
    reference = raw.split(b"UNH+", 1)[1].split(b"+", 1)[0]
    broken = raw.replace(reference, b"ABCDEFGHIJKLMNO")
    await pipeline(store, VirtualClock(THU_1430)).ingest(broken, THU_1430)
    [contrl] = await outbox(store)
    rendered = render_outbound("CONTRL", contrl.payload)
    assert b"'UCM+" not in rendered and f"+{NB}:500+4+39'".encode() in rendered
    assert check_structure(rendered) == []


async def test_an_unreadable_file_received_twice_counts_one_dead_letter_written(store: LmdbStore) -> None:
    """The node's ``mako_dead_letters_total`` counted every ingest that dead-lettered: the same
    unreadable file delivered twice counted two, although the store (letters keyed by content)
    holds one. The pipeline counts the letters it wrote; the store marks a repeat."""
    p = pipeline(store, VirtualClock(THU_1430))
    first = await p.ingest(b"not an interchange at all", THU_1430, source="junk.edi")
    after_first = p.dead_letters_written
    again = await p.ingest(b"not an interchange at all", THU_1430, source="junk.edi")
    assert first.dead_lettered and again.dead_lettered
    assert (after_first, p.dead_letters_written) == (1, 1)
    [letter] = await store.dead_letters()
    stored_again = await store.add_dead_letter(letter.model_copy(update={"position": 0}))
    assert stored_again.stored_before and stored_again.position == letter.position
    assert not letter.stored_before


async def test_a_unh_with_a_generators_placeholders_is_refused_not_processed(store: LmdbStore) -> None:
    """edifact_mapper's UNH ``+X+X:C`` (S010 0070 'X', no number): before, CONTRL 7 and the
    Anmeldung ran to its 55002/55037. Now CONTRL 4 with UCM 12 on UNH, and no process."""
    raw = anmeldung_55001().replace(b"UTILMD:D:11A:UN:S2.1'", b"UTILMD:D:11A:UN:S2.1+X+X:C'", 1)
    result = await pipeline(store, VirtualClock(THU_1430)).ingest(raw, THU_1430)
    assert result.status == "rejected" and "S010" in (result.error or "")
    [contrl] = await outbox(store)
    [ucm] = contrl.payload["messages"]
    assert (contrl.payload["action"], ucm["action"], ucm["error_code"]) == ("4", "4", "12")
    assert "+4+12+UNH'" in render_outbound("CONTRL", contrl.payload).decode()
    assert {e.workflow_id.name for e in await store.read_all(0, 100)} == {"mako-inbox"}
