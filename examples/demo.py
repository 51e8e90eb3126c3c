"""`make demo`: a synthetic day of LFW24 traffic at a grid operator, on the embedded LMDB store.

Valid Anmeldungen (the old supplier confirming, objecting, or staying silent until 09:00 WT1),
one without an old supplier, a bad MaLo-ID, a missed Vorlauffrist, a competing Anmeldung, an
Abmeldung, a retransmission, a broken interchange and an unknown PID arrive as EDIFACT bytes.
They run through the inbound pipeline onto process actors (``LocalActorSystem``); the Fristen
fire on a virtual clock; the outbox worker renders every outbound message to EDIFACT and
delivers it to ``data/demo/outbox``. Then the store is closed and reopened, and every process is still there.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mako_actors import OutboxMessage, Process, ProcessIdentity
from mako_actors.actors import LocalActorSystem
from mako_actors.delivery import DirectorySender, OutboxWorker
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import abmeldung, anmeldung, lfa_answer
from mako_actors.inbound import InboundPipeline, StaticMasterData, Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, identity_of
from stores.lmdb import LmdbStore

DATA = Path(__file__).resolve().parent.parent / "data" / "demo"
NB = "9900000002009"  # we are the grid operator
LFN1, LFN2, LFN3, LFN4 = "9900000001001", "9900000004001", "9900000005008", "9900000006006"
LFA = "9900000003005"
MALO = {
    "A": "51900000012",
    "B": "41234567896",
    "C": "20000000016",
    "D": "31111111113",
    "E": "51900000013",  # wrong check digit
    "F": "60000000004",
    "G": "70000000011",
}
DAY = datetime(2025, 11, 13, tzinfo=UTC)  # Thursday; WT1 is Friday 2025-11-14
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)  # Zuordnungsbeginn 2025-12-01 00:00 CET
console = Console(width=120)


def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    """Berlin wall time on the demo day (CET = UTC+1 in November), as UTC."""
    return DAY + timedelta(days=day, hours=hour - 1, minutes=minute)


@dataclass
class Arrival:
    when: datetime
    what: str
    raw: bytes | None = None  # None: an LFA answer built from our own 55010 when it is due
    malo: str = ""
    confirm: bool = True


def _anmeldung(lfn: str, malo: str, ref: str, when: datetime, start: datetime = START) -> bytes:
    return anmeldung(
        lfn=lfn, nb=NB, malo=malo, zuordnungsbeginn=start, ide_ref=f"TX{ref}", control_ref=ref, sent_at=when
    )


def traffic() -> list[Arrival]:
    first = _anmeldung(LFN1, MALO["A"], "LFN1000001", at(8, 5))
    broken = _anmeldung(LFN2, MALO["D"], "LFN2000009", at(13)).replace(b"UNT+", b"UNT+9")
    unknown = anmeldung(
        lfn=LFN3,
        nb=NB,
        malo=MALO["F"],
        zuordnungsbeginn=START,
        ide_ref="TXU",
        control_ref="LFN3000009",
        sent_at=at(16),
        pid="55555",
    )
    return [
        Arrival(at(8, 5), "55001 MaLo A, old supplier will confirm", first),
        Arrival(
            at(9, 10),
            "55001 MaLo B, old supplier stays silent",
            _anmeldung(LFN2, MALO["B"], "LFN2000001", at(9, 10)),
        ),
        Arrival(
            at(9, 30),
            "55001 MaLo A again: competing process",
            _anmeldung(LFN4, MALO["A"], "LFN4000001", at(9, 30)),
        ),
        Arrival(at(10), "55011 old supplier confirms MaLo A", None, MALO["A"], True),
        Arrival(
            at(10, 20),
            "55001 MaLo C, old supplier will object",
            _anmeldung(LFN3, MALO["C"], "LFN3000001", at(10, 20)),
        ),
        Arrival(at(11), "55001 MaLo D, no old supplier", _anmeldung(LFN1, MALO["D"], "LFN1000002", at(11))),
        Arrival(
            at(11, 30),
            "55001 MaLo E, bad MaLo check digit",
            _anmeldung(LFN2, MALO["E"], "LFN2000002", at(11, 30)),
        ),
        Arrival(
            at(12),
            "55001 MaLo F, Vorlauffrist missed",
            _anmeldung(LFN3, MALO["F"], "LFN3000002", at(12), at(0, day=1)),
        ),
        Arrival(at(12, 30), "retransmission of the 08:05 interchange", first),
        Arrival(at(13), "broken interchange (wrong UNT count)", broken),
        Arrival(at(14, 30), "55012 old supplier objects for MaLo C", None, MALO["C"], False),
        Arrival(
            at(15),
            "55004 Abmeldung MaLo G",
            abmeldung(
                lf=LFN1,
                nb=NB,
                malo=MALO["G"],
                zuordnungsende=START,
                ide_ref="TXAB1",
                control_ref="LFN1000003",
                sent_at=at(15),
            ),
        ),
        Arrival(at(16), "unknown PID 55555", unknown),
    ]


def describe(message: OutboxMessage) -> str:
    if message.message_type == "UTILMD":
        tx = message.payload["transactions"][0]
        code = f" {tx['answer_code']}" if tx.get("answer_code") else ""
        return f"UTILMD {tx['pid']}{code}"
    if message.message_type == "APERAK":
        return "APERAK " + ("312 positive" if message.payload["positive"] else "313 negative")
    return f"CONTRL {message.payload['action']}"


async def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    clock = VirtualClock(at(0))
    suppliers = {MALO[k]: Suppliers(current=LFA) for k in "ABC"} | {MALO["G"]: Suppliers(current=LFN1)}
    console.print(f"[bold]mako_actors demo[/] - one day at grid operator {NB}, LMDB store in {DATA}")
    async with LmdbStore(DATA / "store") as store:
        async with LocalActorSystem(store, workflows=[GpkeNbWorkflow], clock=clock) as system:
            pipeline = InboundPipeline(
                store, system, tenants=[NB], master_data=StaticMasterData(suppliers), clock=clock
            )
            scheduler = DeadlineScheduler(
                store, lambda d: system.resume(identity_of(d)).execute_timeout(d), clock
            )
            table = Table(title="inbound, Thu 2025-11-13 (Berlin time)", show_lines=False)
            for column in ("time", "what arrived", "result", "process"):
                table.add_column(column)
            silent = None  # the process whose old supplier never answers: shown again after reopening
            for arrival in traffic():
                await scheduler.advance_to(clock, arrival.when)
                raw = arrival.raw or await _lfa_answer(store, arrival)
                result = await pipeline.ingest(raw, arrival.when, source=arrival.what)
                outcomes = ", ".join(f"{m.pid}: {m.outcome}" for m in result.messages) or result.error or ""
                process = next((str(m.process_id)[-8:] for m in result.messages if m.process_id), "")
                silent = silent or next(
                    (m.process_id for m in result.messages if "silent" in arrival.what and m.process_id), None
                )
                table.add_row(
                    (arrival.when + timedelta(hours=1)).strftime("%H:%M"),
                    arrival.what,
                    f"{result.status}: {outcomes}"[:60],
                    process,
                )
            console.print(table)
            fired = await scheduler.advance_to(clock, at(12, day=1))
            console.print(f"Friday 12:00: the virtual clock fired {fired} Fristen (09:00 LFA silence, ...)")
        await report(store)
    console.print("store closed; reopening ...")
    async with LmdbStore(DATA / "store") as store:
        streams = await store.list_streams()
        events = await store.read_all(0, 1_000_000)
        console.print(
            f"reopened: {len(streams)} streams, {len(events)} events, "
            f"{await store.outbox_count()} messages waiting in the outbox, "
            f"{len(await store.dead_letters())} dead letters"
        )
        first = next(e for e in events if e.process_id == silent)
        process = Process.from_identity(GpkeNbWorkflow(), store, ProcessIdentity.of(first))
        console.print(f"timeline of {str(silent)[-8:]} (old supplier silent), resumed from its identity:")
        for event in await store.load(process.stream_id):
            state = await process.state_at(event.sequence)
            console.print(
                f"  #{event.sequence} {event.recorded_at:%a %H:%M}Z {event.event_type:<28} -> {state.status}"
            )
    console.print(
        f"look inside: .venv/bin/mako-actors processes list --store {DATA / 'store'}\n"
        "  (and processes show/timeline ID, outbox list, deadlines list, dead-letters list, stats)",
        markup=False,
        highlight=False,
    )


async def _lfa_answer(store: LmdbStore, arrival: Arrival) -> bytes:
    """The old supplier's answer to the 55010 we sent for ``arrival.malo``."""
    requests = [
        m
        for m in await store.pending(10_000, datetime(2100, 1, 1, tzinfo=UTC))
        if m.message_type == "UTILMD"
        and m.payload["transactions"][0]["pid"] == "55010"
        and m.payload["transactions"][0].get("malo") == arrival.malo
    ]
    request = requests[0].payload["transactions"][0]
    return lfa_answer(
        lfa=LFA,
        nb=NB,
        malo=arrival.malo,
        request_ref=request["ide_ref"],
        ide_ref=f"LFA{arrival.malo[-4:]}",
        control_ref=f"LFA{arrival.malo[-6:]}",
        sent_at=arrival.when,
        confirm=arrival.confirm,
    )


async def report(store: LmdbStore) -> None:
    """Per process: where it ended and what it sent; then deliver the outbox to data/demo/outbox."""
    by_stream: dict[str, list[OutboxMessage]] = defaultdict(list)
    for message in await store.pending(10_000, datetime(2100, 1, 1, tzinfo=UTC)):
        by_stream[message.stream_id].append(message)
    table = Table(title="supplier-change processes: how each ended and what it sent (to ...)")
    for column in ("process", "PID", "status", "outbound messages"):
        table.add_column(column)
    receipts: dict[str, int] = defaultdict(int)
    for stream, messages in sorted(by_stream.items(), key=lambda kv: min(m.created_at for m in kv[1])):
        events = await store.load(stream)
        if events[0].workflow_id.name != "gpke-nb":
            for m in messages:
                receipts[describe(m)] += 1
            continue
        state = await Process.from_identity(GpkeNbWorkflow(), store, ProcessIdentity.of(events[0])).state()
        sent = "; ".join(
            f"{describe(m)} ({m.recipient[-4:]})" for m in sorted(messages, key=lambda m: m.created_at)
        )
        table.add_row(stream.split("/")[-1][-8:], state.pid or "", state.status.value, sent)
    console.print(table)
    console.print("receipts: " + ", ".join(f"{n} x {kind}" for kind, n in sorted(receipts.items())))
    worker = OutboxWorker(
        store, DirectorySender(DATA / "outbox"), clock=lambda: datetime(2100, 1, 1, tzinfo=UTC)
    )
    delivered = (await worker.run_once()).delivered
    console.print(f"the outbox worker rendered {delivered} outbound interchanges into {DATA / 'outbox'}")
    for letter in await store.dead_letters():
        console.print(f"dead letter ({letter.kind}): {letter.reason[:100]}")


if __name__ == "__main__":
    asyncio.run(main())
