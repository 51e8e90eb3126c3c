"""End to end on LMDB: the LFA's APERAK 313 on our 55010 means the LFA was not asked (DOMAIN §2),
so 09:00 WT1 confirms nothing; an operator's ``DeemLfaAgreement`` does, and only that."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from edi import LFA, LFN, MALO, NB, THU_1430, anmeldung, kind, lfa_answer, outbox, pipeline, store

from mako_actors import OutboxMessage, OutboxMessageId, Process, ProcessId, StreamId, TenantId
from mako_actors.cli import main
from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.gpke import DeemLfaAgreement, GpkeNbWorkflow, Status, interchange_key
from mako_actors.inbound import MessageOutcome, Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore

__all__ = ["store"]  # the fixture, imported for pytest

TENANT = TenantId.from_party_id(NB)
NINE_CET = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)  # 09:00 Berlin on WT1 (Fri 2025-11-14)
ELEVEN_CET = datetime(2025, 11, 14, 10, 0, tzinfo=UTC)  # 11:00 Berlin: the NB's answer Frist


def aperak_313(referenced_ref: str, at: datetime) -> bytes:
    """The LFA's APERAK 313 on interchange ``referenced_ref``, segment order of AHB-FACTS §5."""
    stamp = f"{at:%Y%m%d%H%M}?+00:303"
    segments = [
        f"UNB+UNOC:3+{LFA}:500+{NB}:500+{at:%y%m%d:%H%M}+LFAAPK0001",
        "UNH+1+APERAK:D:07B:UN:2.1i",
        "BGM+313+LFAAPKDOC1",
        f"DTM+137:{stamp}",
        f"RFF+ACE:{referenced_ref}",
        f"DTM+171:{stamp}",
        f"NAD+MS+{LFA}::293",
        f"NAD+MR+{NB}::293",
        "ERC+Z14",
        "FTX+Z02+++MaLo unbekannt",
        "UNT+10+1",
        "UNZ+1+LFAAPK0001",
    ]
    return ("UNA:+.? '" + "'".join(segments) + "'").encode("latin-1")


def contrl(referenced_ref: str, at: datetime, action: str) -> bytes:
    """The LFA's CONTRL on interchange ``referenced_ref`` with UCI 0083 ``action`` (AHB-FACTS §6;
    a rejection names its 0085 and the segment, UNB)."""
    rejected = "+18+UNB" if action == "4" else ""
    segments = [
        f"UNB+UNOC:3+{LFA}:500+{NB}:500+{at:%y%m%d:%H%M}+LFACTRL0001",
        "UNH+1+CONTRL:D:3:UN:2.0b",
        f"UCI+{referenced_ref}+{NB}:500+{LFA}:500+{action}{rejected}",
        "UNT+3+1",
        "UNZ+1+LFACTRL0001",
    ]
    return ("UNA:+.? '" + "'".join(segments) + "'").encode("latin-1")


async def consulting(store: LmdbStore) -> tuple[Any, VirtualClock, MessageOutcome, OutboxMessage]:
    """An Anmeldung for a MaLo the LFA supplies: the pipeline, its clock, the started outcome (a
    process id) and our 55010 in the outbox."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    [started] = (await p.ingest(anmeldung(), THU_1430, source="lfn.edi")).messages
    assert started.process_id is not None
    request = next(m for m in await outbox(store) if kind(m) == "55010")
    return p, clock, started, request


async def consult_and_acknowledge(
    store: LmdbStore, acknowledgement: Callable[[str, datetime], bytes]
) -> tuple[ProcessId, str, set[OutboxMessageId]]:
    """An Anmeldung, the LFA's ``acknowledgement`` of our 55010, then 09:00 WT1: the process id,
    the 55010's 0020 and the outbox ids before 09:00."""
    p, clock, started, request = await consulting(store)
    request_ref = request.payload["envelope"]["control_ref"]
    raw = acknowledgement(request_ref, THU_1430 + timedelta(minutes=30))
    for acked in (await p.ingest(raw, THU_1430 + timedelta(minutes=30), source="lfa.edi")).messages:
        assert (acked.outcome, acked.process_id) == ("routed", started.process_id)
    before = {m.message_id for m in await outbox(store)}
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, NINE_CET) == 1
    return started.process_id, request_ref, before


async def stall(
    store: LmdbStore, rejection: Callable[[str, datetime], bytes] = aperak_313
) -> tuple[ProcessId, str, set[OutboxMessageId]]:
    """``consult_and_acknowledge`` with a rejection: nothing goes out at 09:00."""
    process_id, request_ref, before = await consult_and_acknowledge(store, rejection)
    after = [m for m in await outbox(store) if m.message_id not in before]
    assert after == [], f"nothing goes out on a silence the LFA could not keep: {[kind(m) for m in after]}"
    types = [e.event_type for e in await store.load(StreamId.for_process(TENANT, process_id))]
    assert types[-2:] == ["gpke.acknowledgement_received", "gpke.lfa_not_reached"]
    return process_id, request_ref, before


async def test_a_contrl_4_on_the_55010_stops_the_deemed_agreement_too(
    store: LmdbStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mako_actors.inbound"):
        process_id, request_ref, _ = await stall(store, functools.partial(contrl, action="4"))
    [warning] = [r.getMessage() for r in caplog.records if "rejected our interchange" in r.getMessage()]
    assert f"{LFA} rejected our interchange {request_ref} (CONTRL 18)" in warning
    assert f"process {process_id}" in warning


@pytest.mark.parametrize("action", ["7", "8"])
async def test_a_contrl_7_or_8_received_only_is_no_rejection(store: LmdbStore, action: str) -> None:
    """0083 8 (received only) rejects nothing (DOMAIN §1): 09:00 deems agreement as ever."""
    _, _, before = await consult_and_acknowledge(store, functools.partial(contrl, action=action))
    assert await answers_since(store, before) == [("55002", LFN), ("55037", LFA)]


async def answers_since(store: LmdbStore, before: set[OutboxMessageId]) -> list[tuple[str, str]]:
    answers = [m for m in await outbox(store) if m.message_id not in before]
    for message in answers:  # what goes out renders and reads back
        parsed = parse_interchange(render_outbound(message.message_type, message.payload))
        assert parsed.messages[0].transactions[0].pid == kind(message)
    return sorted((kind(m), m.recipient) for m in answers)


async def test_a_55010_rejected_by_aperak_is_not_deemed_agreed_at_nine(store: LmdbStore) -> None:
    process_id, request_ref, before = await stall(store)
    identity = await store.lookup(TENANT, interchange_key(request_ref))
    assert identity is not None and identity.process_id == process_id
    process = Process.from_identity(GpkeNbWorkflow(), store, identity)
    assert (await process.state()).status is Status.AWAITING_OPERATOR
    decided_at = NINE_CET + timedelta(minutes=40)
    decision = DeemLfaAgreement(decided_at=decided_at, reason="LFA confirmed by phone")
    await process.execute_and_enqueue(decision)
    assert await answers_since(store, before) == [("55002", LFN), ("55037", LFA)]
    assert (await process.state()).status is Status.CONFIRMED


def stalled_store(db: Path) -> tuple[ProcessId, set[OutboxMessageId]]:
    """``stall`` in a store at ``db``, closed again: the process and the outbox ids before 09:00."""

    async def prepare() -> tuple[ProcessId, set[OutboxMessageId]]:
        async with LmdbStore(db) as s:
            process_id, _, before = await stall(s)
            return process_id, before

    return asyncio.run(prepare())


def test_the_operator_decides_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process_id, before = stalled_store(tmp_path / "db")
    db = str(tmp_path / "db")
    assert main(["processes", "list", "--store", db, "--status", "awaiting_operator", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["process_id"] == str(process_id)
    assert main(["processes", "list", "--store", db, "--rejected", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["process_id"] == str(process_id) and len(row["rejected_interchanges"]) == 1
    # What is at stake is on the operator's list of Fristen: the answer to the LFN by 11:00.
    assert main(["deadlines", "list", "--store", db, "--json"]) == 0
    [frist] = json.loads(capsys.readouterr().out)
    assert (frist["label"], frist["process_id"]) == ("decision", str(process_id))
    assert datetime.fromisoformat(frist["due_at"]) == ELEVEN_CET
    # Refused without a reason, and (below) for a process no longer awaiting an operator.
    deem = ["processes", "deem-lfa-agreement", str(process_id)[:10], "--store", db]
    assert main([*deem, "--reason", " "]) == 1
    assert "--reason is empty" in capsys.readouterr().err
    # Dated before what it decides on, or years ahead: refused, nothing written (answers went
    # out dated 2020 or 2031 before).
    for at, said in (("2020-01-01T00:00:00+00:00", "before the process's last event"),
                     ("2031-06-01T00:00:00+00:00", "lies in the future")):  # fmt: skip
        assert main([*deem, "--reason", "by phone", "--at", at]) == 1
        assert said in capsys.readouterr().err
    code = main([*deem, "--reason", "LFA confirmed by phone", "--at", "2025-11-14T09:40:00+01:00"])
    assert code == 0, capsys.readouterr().err
    assert "gpke.lfa_agreement_deemed_by_operator, gpke.anmeldung_decided" in capsys.readouterr().out
    assert main([*deem, "--reason", "twice"]) == 1
    assert "this one is confirmed" in capsys.readouterr().err
    assert main(["deadlines", "list", "--store", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # decided: the 11:00 timer is gone

    async def check() -> list[tuple[str, str]]:
        async with LmdbStore(tmp_path / "db") as s:
            return await answers_since(s, before)

    assert asyncio.run(check()) == [("55002", LFN), ("55037", LFA)]


async def test_eleven_oclock_without_an_operator_is_recorded_and_nothing_is_sent(store: LmdbStore) -> None:
    process_id, request_ref, before = await stall(store)
    clock = VirtualClock(NINE_CET)
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, ELEVEN_CET - timedelta(seconds=1)) == 0
    assert await scheduler.advance_to(clock, ELEVEN_CET) == 1
    events = await store.load(StreamId.for_process(TENANT, process_id))
    assert events[-1].event_type == "gpke.decision_overdue"
    assert datetime.fromisoformat(events[-1].payload["due_at"]) == ELEVEN_CET
    assert await answers_since(store, before) == [] and await store.all_deadlines() == []
    # Late, the operator's decision still sends the answers.
    identity = await store.lookup(TENANT, interchange_key(request_ref))
    assert identity is not None
    process = Process.from_identity(GpkeNbWorkflow(), store, identity)
    assert (await process.state()).status is Status.AWAITING_OPERATOR
    await process.execute_and_enqueue(DeemLfaAgreement(decided_at=ELEVEN_CET, reason="LFA reached late"))
    assert await answers_since(store, before) == [("55002", LFN), ("55037", LFA)]


def test_processes_whose_answer_a_partner_rejected_are_listed_whatever_their_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The LFN rejects our 55002 (APERAK 313): the process is confirmed, but its answer counts as
    not received; ``processes list --rejected`` is where an operator finds it."""

    async def prepare() -> tuple[ProcessId, str]:
        async with LmdbStore(tmp_path / "db") as s:
            process_id, _, _ = await consult_and_acknowledge(s, functools.partial(contrl, action="7"))
            [answer] = [m for m in await outbox(s) if kind(m) == "55002"]
            answer_ref = answer.payload["envelope"]["control_ref"]
            clock = VirtualClock(NINE_CET)
            p = pipeline(s, clock, **{MALO: Suppliers(current=LFA)})
            at = NINE_CET + timedelta(minutes=20)
            rejection = aperak_313(answer_ref, at).replace(LFA.encode(), LFN.encode())
            [routed] = (await p.ingest(rejection, at, source="lfn.edi")).messages
            assert (routed.outcome, routed.process_id) == ("routed", process_id)
            return process_id, answer_ref

    process_id, answer_ref = asyncio.run(prepare())
    db = str(tmp_path / "db")
    assert main(["processes", "list", "--store", db, "--rejected", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["process_id"], row["status"]) == (str(process_id), "confirmed")
    assert row["rejected_interchanges"] == [answer_ref]
    assert main(["processes", "list", "--store", db, "--rejected"]) == 0
    assert answer_ref in capsys.readouterr().out  # the table's "rejected" column


def test_the_operator_rejects_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process_id, before = stalled_store(tmp_path / "db")
    db = str(tmp_path / "db")
    reject = ["processes", "reject-anmeldung", str(process_id)[:10], "--store", db]
    at = ["--at", "2025-11-14T09:40:00+01:00"]
    # What the LFN could not receive is refused before anything is written.
    assert main([*reject, "--text", "Gebühr 5 €", *at]) == 1
    assert "--text: character '€' at 9 cannot be sent: UTILMD uses UNOC" in capsys.readouterr().err
    assert main([*reject, "--text", "  ", *at]) == 1
    assert "--text: the text is empty" in capsys.readouterr().err
    text = "Anmeldung vom Kunden widerrufen (Schreiben vom 13.11.)"
    assert main([*reject, "--text", text, *at]) == 0, capsys.readouterr().err
    assert "gpke.anmeldung_rejected_by_operator, gpke.anmeldung_decided" in capsys.readouterr().out
    assert main([*reject, "--text", text]) == 1
    assert "this one is rejected" in capsys.readouterr().err
    assert main(["deadlines", "list", "--store", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # decided: the 11:00 timer is gone

    async def check() -> bytes:
        async with LmdbStore(tmp_path / "db") as s:
            assert await answers_since(s, before) == [("55003", LFN)]
            [answer] = [m for m in await outbox(s) if m.message_id not in before]
            return render_outbound(answer.message_type, answer.payload)

    raw = asyncio.run(check())
    assert b"STS+E01++A99:E_0623'" in raw and f"FTX+ACB+++{text}'".encode("latin-1") in raw


def test_an_operator_decision_in_a_partition_writes_its_keys_at_their_homes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decision on one partition's directory wrote its answers' ``ic:``/``ide:`` keys in that
    partition only; a lookup asks a key's home (``key_home``), so an APERAK or CONTRL on the
    decision's 55002/55037 would not have found the process until a host repaired the keys."""
    from mako_actors.partitions import key_home, routing_slot
    from stores.partitioned import create_partition, open_partition, registry_entries

    root, count = tmp_path / "node", 4
    home = routing_slot(TENANT, MALO) & (count - 1)
    for p in range(count):
        create_partition(root, p, count)

    async def stalled() -> str:  # the LFA refused our 55010, 09:00 passed: awaiting an operator
        async with open_partition(root, home, count) as store:
            clock = VirtualClock(THU_1430)
            p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
            started = await p.ingest(anmeldung(), THU_1430)
            [request] = [m for m in await outbox(store) if kind(m) == "55010"]
            later = THU_1430 + timedelta(minutes=30)
            await p.ingest(aperak_313(request.payload["envelope"]["control_ref"], later), later)
            firer = process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock)
            await DeadlineScheduler(store, firer, clock).advance_to(clock, NINE_CET)
            return str(started.messages[0].process_id)

    async def entries(p: int) -> list[tuple[str, object]]:
        async with open_partition(root, p, count) as store:
            return [(key, identity.stream_id) for key, identity in await registry_entries(store)]

    process = asyncio.run(stalled())
    deem = ["processes", "deem-lfa-agreement", process[-8:], "--store", str(root / f"p{home:04d}")]
    assert main([*deem, "--reason", "LFA agreed by phone"]) == 0, capsys.readouterr().err
    homed_elsewhere = [(k, s) for k, s in asyncio.run(entries(home)) if key_home(TENANT, k, count) != home]
    assert any(k.startswith("ic:") for k, _ in homed_elsewhere)  # the answers' interchanges
    for key, stream in homed_elsewhere:
        assert (key, stream) in asyncio.run(entries(key_home(TENANT, key, count))), key


def positive_then_negative(referenced_ref: str, at: datetime) -> bytes:
    """The LFA's APERAK 312 and then APERAK 313 on interchange ``referenced_ref``, two messages of
    one interchange."""
    rejection = aperak_313(referenced_ref, at).decode("latin-1")
    head, _, rest = rejection.partition("'UNH+1+")
    negative = "UNH+2+" + rest.rsplit("'UNZ+", 1)[0].replace("UNT+10+1", "UNT+10+2")
    positive = ("UNH+1+" + rest.rsplit("'UNZ+", 1)[0]).replace("BGM+313+", "BGM+312+")
    positive = positive.replace("'ERC+Z14'FTX+Z02+++MaLo unbekannt", "").replace("UNT+10+1", "UNT+8+1")
    return f"{head}'{positive}'{negative}'UNZ+2+LFAAPK0001'".encode("latin-1")


async def test_a_rejection_after_an_acceptance_in_one_interchange_counts(store: LmdbStore) -> None:
    """Two acknowledgements of one type on one of our interchanges in one partner interchange
    were one to the process (its key lacked the message's 0062): the APERAK 313 after the 312 was
    dropped unseen and 09:00 deemed the LFA agreed (found by review)."""
    await stall(store, positive_then_negative)


async def test_an_aperak_on_our_aperak_is_refused_not_counted_as_a_rejection(store: LmdbStore) -> None:
    """Only a CONTRL answers an APERAK: an APERAK 313 on the process's APERAK 312 to the LFN
    made our APERAK count as not received (listed by ``processes list --rejected``)."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    [started] = (await p.ingest(anmeldung(), THU_1430, source="lfn.edi")).messages
    ours = next(m for m in await outbox(store) if m.message_type == "APERAK")
    raw = aperak_313(ours.payload["envelope"]["control_ref"], THU_1430 + timedelta(minutes=30))
    raw = raw.replace(f"UNB+UNOC:3+{LFA}:500".encode(), f"UNB+UNOC:3+{LFN}:500".encode())
    raw = raw.replace(f"NAD+MS+{LFA}".encode(), f"NAD+MS+{LFN}".encode())
    [acked] = (await p.ingest(raw, THU_1430 + timedelta(minutes=30), source="lfn-aperak.edi")).messages
    assert acked.outcome == "dead_letter"
    [letter] = [d for d in await store.dead_letters() if "only a CONTRL answers" in d.reason]
    assert letter.kind == "inbound"
    assert started.process_id is not None
    events = await store.load(StreamId.for_process(TENANT, started.process_id))
    assert "gpke.acknowledgement_received" not in [e.event_type for e in events]


def naming(what: str) -> Callable[[str, datetime], bytes]:
    """An acknowledgement of our 55010's interchange naming something it does not hold: a
    transaction (APERAK RFF+TN) or message (CONTRL UCM 0062) of ours sent elsewhere."""

    def make(referenced_ref: str, at: datetime) -> bytes:
        if what == "transaction":
            raw = aperak_313(referenced_ref, at).decode("latin-1")
            return raw.replace("FTX+Z02+++MaLo unbekannt", "RFF+TN:NBOTHERTX1'FTX+Z02+++1").replace(
                "UNT+10+1", "UNT+11+1"
            ).encode("latin-1")
        raw = contrl(referenced_ref, at, "7").decode("latin-1")
        return raw.replace("UNT+3+1", "UCM+NOTOURS+UTILMD:D:11A:UN:S2.1+4+29+UNT'UNT+4+1").encode("latin-1")

    return make


@pytest.mark.parametrize("what", ["transaction", "message"])
async def test_an_acknowledgement_naming_what_our_interchange_does_not_hold_is_refused(
    store: LmdbStore, what: str
) -> None:
    """Only RFF+ACE (APERAK) and UCI (CONTRL) were read: an APERAK 313 whose RFF+TN, or a CONTRL
    whose UCM, named a transaction or message we never sent in that interchange made our 55010
    count as not received, and 09:00 confirmed nothing. It is a dead letter now, and 09:00 deems
    the LFA's silence agreement as without it (found by review)."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(), THU_1430, source="lfn.edi")
    request = next(m for m in await outbox(store) if kind(m) == "55010")
    at = THU_1430 + timedelta(minutes=30)
    raw = naming(what)(request.payload["envelope"]["control_ref"], at)
    [acked] = (await p.ingest(raw, at, source="lfa.edi")).messages
    assert acked.outcome == "dead_letter"
    [letter] = [d for d in await store.dead_letters() if "does not hold" in d.reason]
    assert ("NBOTHERTX1" if what == "transaction" else "NOTOURS") in letter.reason
    before = {m.message_id for m in await outbox(store)}
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, NINE_CET) == 1
    assert await answers_since(store, before) == [("55002", LFN), ("55037", LFA)]


async def test_a_rejection_received_after_nine_stops_nothing_whichever_is_handled_first(
    store: LmdbStore,
) -> None:
    """The LFA's CONTRL 4 on our 55010 received at 09:30, after its silence was deemed agreement at
    09:00: handled before the timer fired (a library caller's order, or a node holding the
    Fristen back for an older file), it stopped the agreement (LfaNotReached, nothing sent),
    while the timer first confirmed. Its receipt instant decides (found by review)."""
    p, clock, started, request = await consulting(store)
    before = {m.message_id for m in await outbox(store)}
    late = NINE_CET + timedelta(minutes=30)
    raw = contrl(request.payload["envelope"]["control_ref"], late, "4")
    [acked] = (await p.ingest(raw, late, source="lfa.edi")).messages
    assert (acked.outcome, acked.ack) == ("routed", "rejected")
    assert await answers_since(store, before) == []  # recorded; 09:00 is the timer's
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, NINE_CET) == 1
    assert await answers_since(store, before) == [("55002", LFN), ("55037", LFA)]
    types = [e.event_type for e in await store.load(StreamId.for_process(TENANT, started.process_id))]
    decided = ["gpke.acknowledgement_received", "gpke.lfa_deemed_to_agree", "gpke.anmeldung_decided"]
    assert types[-3:] == decided


async def test_an_answer_received_before_nine_decides_though_a_later_acknowledgement_came_first(
    store: LmdbStore,
) -> None:
    """A node holds the 09:00 Frist back for an older file it cannot read yet (the LFA's 55012
    received at 08:59) and takes newer files meanwhile: an acknowledgement received at 09:05
    decided the Frist (a deemed agreement, 55002 and 55037) before the objection was read,
    which then came "late" (found by re-review). It is only recorded: the objection decides."""
    p, _, started, request = await consulting(store)
    ack_at, answer_at = NINE_CET + timedelta(minutes=5), NINE_CET - timedelta(minutes=1)
    raw = contrl(request.payload["envelope"]["control_ref"], ack_at, "7")
    assert [m.outcome for m in (await p.ingest(raw, ack_at, source="ack.edi")).messages] == ["routed"]
    objection = lfa_answer(request.payload["transactions"][0]["ide_ref"], pid="55012", code="A35",
                           sent_at=answer_at)  # fmt: skip
    await p.ingest(objection, answer_at, source="answer.edi")
    sent = sorted((kind(m), m.recipient) for m in await outbox(store) if m.message_type == "UTILMD")
    assert ("55003", LFN) in sent and ("55002", LFN) not in sent and ("55037", LFA) not in sent
    types = [e.event_type for e in await store.load(StreamId.for_process(TENANT, started.process_id))]
    assert "gpke.lfa_answered" in types and "gpke.lfa_answer_ignored" not in types


async def test_the_earliest_rejection_received_counts_whichever_is_handled_first(store: LmdbStore) -> None:
    """The LFA's APERAK 313 on our 55010 received at 08:30 and its CONTRL 4 received at 09:30:
    the 09:30 one handled first set the instant, and 09:00 deemed agreement (found by re-review)."""
    p, clock, started, request = await consulting(store)
    request_ref = request.payload["envelope"]["control_ref"]
    late, early = NINE_CET + timedelta(minutes=30), NINE_CET - timedelta(minutes=30)
    await p.ingest(contrl(request_ref, late, "4"), late, source="late.edi")
    await p.ingest(aperak_313(request_ref, early), early, source="early.edi")
    before = {m.message_id for m in await outbox(store)}
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    assert await scheduler.advance_to(clock, NINE_CET) == 1
    assert await answers_since(store, before) == []
    types = [e.event_type for e in await store.load(StreamId.for_process(TENANT, started.process_id))]
    assert types[-1] == "gpke.lfa_not_reached"
