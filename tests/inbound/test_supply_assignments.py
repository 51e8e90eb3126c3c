"""Supply assignments are state: confirmed Anmeldungen/Abmeldungen change who supplies a MaLo,
and no MaLo gets two suppliers for one start date (bytes in through ``InboundPipeline``)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors import StreamId, TenantId
from mako_actors.cli import main
from mako_actors.edifact import render_outbound
from mako_actors.errors import InvalidArgument
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.masterdata import import_assignments
from mako_actors.gpke.supply import StaticMasterData, SupplyView, supply_key
from mako_actors.inbound import DirectHost, InboundPipeline, Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFA,
    LFN,
    LFN2,
    MALO,
    NB,
    START,
    THU_1430,
    TRANCHE_OF,
    abmeldung,
    anmeldung,
    berlin,
    kind,
    lfa_answer,
    outbox,
    pipeline,
    store,
    to,
    tx,
)

__all__ = ["store"]
TENANT = TenantId.from_party_id(NB)
FRI_1000 = datetime(2025, 11, 14, 9, 0, tzinfo=UTC)  # Fri 10:00 CET, after the 09:00 Frist
JAN_1 = berlin(2026, 1, 1)


async def fire(store: LmdbStore, clock: VirtualClock, until: datetime) -> int:
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    return await scheduler.advance_to(clock, until)


async def view(store: LmdbStore, baseline: Suppliers | None = None) -> SupplyView:
    """The MaLo's assignments as the pipeline sees them (``baseline``: its static master data)."""
    return SupplyView.fold(await store.journal(TENANT, supply_key(MALO)), baseline)


# -- no MaLo gets two suppliers for one start date ----------------------------------------------


def blocking(store: LmdbStore, clock: VirtualClock) -> InboundPipeline:
    """A pipeline whose workflow rejects an Anmeldung for a date another supplier is confirmed
    for (``confirmed_assignment_blocks``, not the EBD's reading: the default asks that supplier)."""
    from mako_actors.gpke import GpkeConfig

    host = DirectHost(store, [GpkeNbWorkflow(GpkeConfig(confirmed_assignment_blocks=True))], clock)
    return InboundPipeline(store, host, tenants=[NB], master_data=StaticMasterData({}), clock=clock)


async def test_a_confirmed_assignment_blocks_a_second_anmeldung_for_the_same_date(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = blocking(store, clock)  # nobody supplies the MaLo: the first Anmeldung is confirmed at once
    await p.ingest(anmeldung(LFN), THU_1430)
    assert sorted(to(await outbox(store), LFN)) == ["55002", "APERAK+", "CONTRL7"]
    later = THU_1430 + timedelta(hours=3)
    [outcome] = (await p.ingest(anmeldung(LFN2, ref="RIVAL1", ide="RIVALTX"), later)).messages
    assert outcome.outcome == "started"
    [answer] = [m for m in await outbox(store) if m.recipient == LFN2 and m.message_type == "UTILMD"]
    assert (kind(answer), tx(answer)["answer_code"], tx(answer)["answer_ebd"]) == ("55003", "A06", "E_0622")
    assert datetime.fromisoformat(tx(answer)["processing_start"]) == START  # DTM+Z07
    text = render_outbound("UTILMD", answer.payload).decode("latin-1")
    assert "DTM+Z07:" in text and "DTM+Z08:" in text
    assert (await view(store)).supplier_at(START) == LFN  # one supplier at that date


async def test_the_confirmed_supplier_asking_again_for_its_own_start_is_confirmed_again(
    store: LmdbStore,
) -> None:
    """E_0622 step 70 asks for another Anmeldung "in Arbeit": its own confirmed one is none.
    Before, the LFN got 55003 A06 naming its own start as the one in Bearbeitung."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)  # nobody supplies the MaLo: the first Anmeldung is confirmed at once
    await p.ingest(anmeldung(LFN), THU_1430)
    later = THU_1430 + timedelta(hours=2)
    await p.ingest(anmeldung(LFN, ref="LFN0002", ide="LFNTX2", sent_at=later), later)
    answers = [m for m in await outbox(store) if m.recipient == LFN and m.message_type == "UTILMD"]
    assert [(kind(m), tx(m)["answer_code"]) for m in answers] == [("55002", "A51"), ("55002", "A51")]
    assert [m for m in await outbox(store) if kind(m) == "55010"] == []
    assert (await view(store)).supplier_at(START) == LFN


async def test_a_rejected_first_anmeldung_does_not_block(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(LFN), THU_1430)
    [request] = [m for m in await outbox(store) if kind(m) == "55010"]
    answer_at = THU_1430 + timedelta(hours=1)
    await p.ingest(lfa_answer(tx(request)["ide_ref"], pid="55012", code="A35", sent_at=answer_at), answer_at)
    to_lfn = [kind(m) for m in await outbox(store) if m.recipient == LFN and m.message_type == "UTILMD"]
    assert sorted(to_lfn) == ["55003", "55036"]
    later = THU_1430 + timedelta(hours=2)
    before = await outbox(store)
    await p.ingest(anmeldung(LFN2, ref="SECOND1", ide="SECONDTX"), later)
    new = [m for m in await outbox(store) if m not in before]
    assert "55003" not in [kind(m) for m in new]
    assert [m.recipient for m in new if kind(m) == "55010"] == [LFA]  # the LFA still supplies


async def test_a_running_anmeldung_competes_for_any_date_of_the_malo(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(LFN), THU_1430)
    later = THU_1430 + timedelta(minutes=30)
    await p.ingest(anmeldung(LFN2, ref="RIVAL1", ide="RIVALTX", start=JAN_1), later)
    [answer] = [m for m in await outbox(store) if m.recipient == LFN2 and m.message_type == "UTILMD"]
    assert (kind(answer), tx(answer)["answer_code"]) == ("55003", "A06")
    # DTM+Z07: the start in Bearbeitung; DTM+Z08: its decision Frist, 11:00 WT1 (E_0622 step 70).
    assert datetime.fromisoformat(tx(answer)["processing_start"]) == START
    assert datetime.fromisoformat(tx(answer)["next_processing_date"]) == berlin(2025, 11, 14, 11)


async def test_a_generating_malo_competes_with_a45(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(LFN, pid="55077"), THU_1430)
    await p.ingest(anmeldung(LFN2, ref="RIVAL1", ide="RIVALTX", pid="55077"), THU_1430 + timedelta(minutes=5))
    [answer] = [m for m in await outbox(store) if m.recipient == LFN2 and m.message_type == "UTILMD"]
    assert (kind(answer), tx(answer)["answer_code"]) == ("55080", "A45")


# The start is 1 December: GV3 (ZW2) on the 1st of a month misses its one month (E_0622 step 810)
@pytest.mark.parametrize(("gv", "code"), [("ZW0", "A34"), ("ZW1", "A30"), ("ZW2", "A44")])
async def test_a_late_generating_anmeldung_gets_the_code_of_its_geschaeftsvorfall(
    store: LmdbStore, gv: str, code: str
) -> None:
    late_at = datetime(2025, 11, 28, 9, 0, tzinfo=UTC)  # Fri before Mon 2025-12-01: too late
    # GV2 is for a Tranche (MALO then names it), which the NB's master data knows
    p = pipeline(store, VirtualClock(late_at), **{MALO: Suppliers(tranche_of=TRANCHE_OF)})
    await p.ingest(anmeldung(LFN, pid="55077", gv=gv, sent_at=late_at), late_at)
    [answer] = [m for m in await outbox(store) if m.message_type == "UTILMD"]
    assert (kind(answer), tx(answer)["answer_code"], tx(answer)["answer_ebd"]) == ("55080", code, "E_0622")


# -- assignments change with confirmed decisions -------------------------------------------------


async def test_the_next_process_asks_the_supplier_confirmed_before_not_the_one_that_left(
    store: LmdbStore,
) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(LFN), THU_1430)
    assert await fire(store, clock, FRI_1000) == 1  # LFA silent: LFN confirmed from 2025-12-01
    assert (await view(store)).supplier_at(START) == LFN
    before = await outbox(store)
    await p.ingest(anmeldung(LFN2, ref="NEXT1", ide="NEXTTX", start=JAN_1), FRI_1000)
    new = [m for m in await outbox(store) if m not in before]
    assert [m.recipient for m in new if kind(m) == "55010"] == [LFN]  # not the LFA, who left
    [info] = [m for m in new if kind(m) == "55036"]
    assert tx(info)["other_party_id"] == LFN


async def test_an_import_after_processes_decided_on_a_malo_is_refused(
    store: LmdbStore, tmp_path: Path
) -> None:
    """An import appends its assignments after the journal's decisions, and the last one
    covering a date wins: re-importing the node's master data after LFN was confirmed made the
    next Anmeldung ask LFA, who had been told by 55037 that its supply ended. Refused now,
    nothing written, also for the file's other MaLos."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(LFN), THU_1430)
    assert await fire(store, clock, FRI_1000) == 1  # LFN confirmed from 2025-12-01
    before = await store.journal(TENANT, supply_key(MALO))
    other = "41234567896"
    master = tmp_path / "master.json"
    master.write_text(json.dumps({other: {"current": LFN2}, MALO: {"current": LFA}}))
    with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: processes in this store decided"):
        await import_assignments(store, NB, master)
    assert await store.journal(TENANT, supply_key(MALO)) == before
    assert await store.journal(TENANT, supply_key(other)) == []
    assert (await view(store)).supplier_at(JAN_1) == LFN
    # A claim decided no supply (an Anmeldung rejected, or still open): imported as ever.
    claimed = "51238696781"
    await store.append_journal(TENANT, supply_key(claimed), [{"kind": "claimed", "process": "p1"}])
    await store.append_journal(TENANT, supply_key(claimed), [{"kind": "released", "process": "p1"}])
    master.write_text(json.dumps({"tenant": NB, claimed: {"current": LFA}}))
    assert (await import_assignments(store, NB, master)).appended == 1
    # An open Anmeldung took its LFA and future suppliers from the journal: refused too.
    await store.append_journal(TENANT, supply_key(claimed), [{"kind": "claimed", "process": "p2"}])
    master.write_text(json.dumps({claimed: {"current": LFN2}}))
    with pytest.raises(InvalidArgument, match=f"MaLo {claimed}: .*or an Anmeldung of it is open"):
        await import_assignments(store, NB, master)
    # A future_start is checked as serve and replay read it, with or without a future supplier.
    master.write_text(json.dumps({other: {"current": LFA, "future_start": "2026-01-01T01:00:00+01:00"}}))
    with pytest.raises(InvalidArgument, match=r"'future_start'.*is not 00:00 Europe/Berlin"):
        await import_assignments(store, NB, master)
    # The file's own tenant (serve and replay need it with several) must be --tenant's.
    with pytest.raises(InvalidArgument, match="of tenant '9900000007009', not of --tenant"):
        master.write_text(json.dumps({"tenant": "9900000007009", other: {"current": LFA}}))
        await import_assignments(store, NB, master)


async def test_a_confirmed_abmeldung_ends_the_supply_and_the_next_anmeldung_asks_nobody(
    store: LmdbStore,
) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    end = abmeldung(LFA, ref="ABM1", ide="ABMTX", end=START, sent_at=THU_1430)
    await p.ingest(end, THU_1430)
    assert [kind(m) for m in await outbox(store) if kind(m).startswith("5500")] == ["55005"]
    assert (await view(store)).supplier_at(START) is None
    before = await outbox(store)
    await p.ingest(anmeldung(LFN), THU_1430 + timedelta(minutes=10))
    new = [m for m in await outbox(store) if m not in before]
    assert "55010" not in [kind(m) for m in new]  # no 55010 to a supplier that already left
    assert sorted(kind(m) for m in new if m.recipient == LFN) == ["55002", "APERAK+", "CONTRL7"]
    # The old supplier cannot end it again: it is not assigned any more (APERAK Z17).
    again = abmeldung(LFA, ref="ABM2", ide="ABMTX2", end=JAN_1, sent_at=THU_1430 + timedelta(minutes=20))
    await p.ingest(again, THU_1430 + timedelta(minutes=20))
    [aperak] = [m for m in await outbox(store) if kind(m) == "APERAK-"]
    assert [e["code"] for e in aperak.payload["errors"]] == ["Z17"]


async def test_an_earlier_anmeldung_cancels_the_future_supplier(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA, future=LFN2, future_start=JAN_1)})
    await p.ingest(anmeldung(LFN), THU_1430)
    await fire(store, clock, FRI_1000)
    assert [kind(m) for m in await outbox(store) if m.recipient == LFN2] == ["55038"]
    after = await view(store, Suppliers(current=LFA, future=LFN2, future_start=JAN_1))
    assert after.suppliers(START) == Suppliers(current=LFN)  # LFN2's assignment from Jan 1 is gone
    assert after.supplier_at(JAN_1) == LFN


async def test_an_earlier_anmeldung_cancels_every_future_supplier_each_told_by_a_55038(
    store: LmdbStore,
) -> None:
    """LFN2 is confirmed from January, LF3 from February (each after asking the one before);
    then LFN registers for December and the LFA agrees: both later assignments end, and each
    of their suppliers gets a 55038 naming its own start (before: LFN2 only; LF3 went on
    believing it supplies from February)."""
    lf3 = "9900000005008"
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    feb = berlin(2026, 2, 1)

    async def sent(raw: bytes, at: datetime) -> list[Any]:
        before = await outbox(store)
        clock.set(max(clock(), at))
        await p.ingest(raw, at)
        return [m for m in await outbox(store) if m not in before]

    async def agreed(
        supplier: str, ref: str, start: datetime, at: datetime, holder: str, end: datetime
    ) -> None:
        asked = await sent(anmeldung(supplier, ref=ref, ide=f"{ref}TX", start=start, sent_at=at), at)
        [request] = [m for m in asked if kind(m) == "55010"]
        assert request.recipient == holder
        answer = lfa_answer(
            tx(request)["ide_ref"], ref=f"A{ref}", ide=f"A{ref}TX", sent_at=at, lfa=holder, end=end
        )
        news = await sent(answer, at + timedelta(minutes=5))
        assert [kind(m) for m in news if m.recipient == supplier and kind(m).startswith("550")] == ["55002"]

    await agreed(LFN2, "Z1", JAN_1, THU_1430, LFA, JAN_1)
    await agreed(lf3, "Z2", feb, THU_1430 + timedelta(minutes=20), LFN2, feb)
    await agreed(LFN, "N1", START, THU_1430 + timedelta(minutes=40), LFA, START)
    cancelled = {m.recipient: tx(m)["start"] for m in await outbox(store) if kind(m) == "55038"}
    utc = "%Y-%m-%dT%H:%M:%SZ"
    assert cancelled == {LFN2: JAN_1.astimezone(UTC).strftime(utc), lf3: feb.astimezone(UTC).strftime(utc)}
    after = await view(store)
    assert after.supplier_at(JAN_1) == LFN and after.supplier_at(feb) == LFN


# -- the initial import --------------------------------------------------------------------------


def test_masterdata_import_is_the_starting_point_in_the_store(tmp_path: Path) -> None:
    csv_file = tmp_path / "assignments.csv"
    csv_file.write_text(f"malo,supplier,from,until\n{MALO},{LFA},2020-01-01,\n")
    db = tmp_path / "db"
    assert main(["masterdata", "import", str(csv_file), "--store", str(db), "--tenant", NB]) == 0
    assert main(["masterdata", "import", str(csv_file), "--store", str(db), "--tenant", NB]) == 0
    asyncio.run(_the_store_knows(db))


async def _the_store_knows(db: Path) -> None:
    async with LmdbStore(db) as s:
        assert len(await s.journal(TENANT, supply_key(MALO))) == 1  # the re-run appended nothing
        clock = VirtualClock(THU_1430)
        p = InboundPipeline(s, DirectHost(s, [GpkeNbWorkflow()], clock), tenants=[NB], clock=clock)
        await p.ingest(anmeldung(LFN), THU_1430)  # no master data handed in: the store knows
        assert [m.recipient for m in await outbox(s) if kind(m) == "55010"] == [LFA]


async def test_masterdata_import_refuses_a_bad_row_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"malo": MALO, "supplier": LFA},
                {"malo": "51900000013", "supplier": LFA},  # check digit wrong
            ]
        )
    )
    async with LmdbStore(tmp_path / "db") as s:
        with pytest.raises(InvalidArgument, match="entry 2"):
            await import_assignments(s, NB, bad)
        assert await s.journal(TENANT, supply_key(MALO)) == []
        shaped = tmp_path / "by_malo.json"
        shaped.write_text(json.dumps({MALO: {"current": LFA, "future": LFN2, "future_start": "2026-01-01"}}))
        report = await import_assignments(s, NB, shaped)
        assert (report.rows, report.appended) == (2, 2)
        assert SupplyView.fold(await s.journal(TENANT, supply_key(MALO))).suppliers(START) == Suppliers(
            current=LFA, future=LFN2, future_start=JAN_1
        )
        # Two suppliers from one instant: the later row silently won the MaLo.
        twice = tmp_path / "twice.json"
        other = "41234567896"
        rows = [{"malo": other, "supplier": LFA, "start": "2026-01-01"},
                {"malo": other, "supplier": LFN2, "start": "2026-01-01"}]  # fmt: skip
        twice.write_text(json.dumps(rows))
        with pytest.raises(InvalidArgument, match=f"MaLo {other} is assigned to {LFA} and to {LFN2} from"):
            await import_assignments(s, NB, twice)
        assert await s.journal(TENANT, supply_key(other)) == []
        # A boundary at 01:00 CET (midnight UTC) was taken: the Anmeldung from 2026-01-01
        # asked the supplier of the day before and dated the other's 55038 at 01:00.
        hour = tmp_path / "hour.csv"
        hour.write_text(f"malo,supplier,from,until\n{other},{LFA},,2026-01-01T00:00:00Z\n")
        with pytest.raises(InvalidArgument, match="is not 00:00 Europe/Berlin"):
            await import_assignments(s, NB, hour)
        assert await s.journal(TENANT, supply_key(other)) == []


def test_master_data_read_a_future_start_as_masterdata_import_does(tmp_path: Path) -> None:
    """``future_start`` of a master data file was read as given: a date became a naive
    instant, and the first Anmeldung of that MaLo failed with a TypeError (the file went to
    rejected/ with no answer). A date is 00:00 Berlin; an instant must be that."""
    from mako_actors.replay import load_master_data

    path = tmp_path / "master.json"
    path.write_text(json.dumps({MALO: {"current": LFA, "future": LFN2, "future_start": "2026-01-01"}}))
    assert load_master_data(path).suppliers(NB, MALO, START).future_start == JAN_1
    path.write_text(json.dumps({MALO: {"current": LFA, "future": LFN2, "future_start": "2026-01-01T12:00"}}))
    with pytest.raises(InvalidArgument, match=r"'future_start'.* has no UTC offset"):
        load_master_data(path)


@pytest.mark.parametrize(
    ("first", "second", "answer"),
    [
        ("ZT4", "ZT4", ("55006", "A09")),  # E_0607 step 120: the new one says no move-out
        ("Z33", "ZT5", ("55006", "A09")),
        ("Z33", "Z33", ("55006", "A10")),  # step 130: both say the customer moved out
        ("E01", "Z33", ("55006", "A10")),
        ("ZT4", "E01", ("55005", "A11")),  # step 130 → 140: ended by a Kündigung, now a move-out
        ("ZT5", "Z33", ("55005", "A11")),
    ],
)
async def test_abmeldung_again_for_the_same_date_is_decided_by_both_reasons(
    store: LmdbStore, first: str, second: str, answer: tuple[str, str]
) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(
        abmeldung(LFA, ref="ABM1", ide="ABMTX", end=START, sent_at=THU_1430, reason=first), THU_1430
    )
    later = THU_1430 + timedelta(minutes=5)
    await p.ingest(abmeldung(LFA, ref="ABM2", ide="ABMTX2", end=START, sent_at=later, reason=second), later)
    answers = [(kind(m), tx(m)["answer_code"]) for m in await outbox(store) if kind(m) in ("55005", "55006")]
    assert answers == [("55005", "A11"), answer]
    # A confirmation records the newer reason for the next one; the end stays where it was.
    after = await view(store, Suppliers(current=LFA))
    assert after.end_reason(LFA, START) == (second if answer[0] == "55005" else first)
    assert after.supplier_at(START - timedelta(seconds=1)) == LFA and after.supplier_at(START) is None


async def test_the_future_supplier_may_end_its_assignment_at_its_start(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    master = Suppliers(current=LFA, future=LFN2, future_start=JAN_1)
    p = pipeline(store, clock, **{MALO: master})
    await p.ingest(abmeldung(LFN2, ref="ABM1", ide="ABMTX", end=JAN_1, sent_at=THU_1430), THU_1430)
    assert [(kind(m), tx(m)["answer_code"]) for m in await outbox(store) if kind(m) == "55005"] == [
        ("55005", "A11")
    ]
    assert (await view(store, master)).suppliers(START) == Suppliers(current=LFA)  # LFN2's start is gone


# -- the journal is written with its commit or not at all ----------------------------------------


async def test_journal_entries_share_the_fate_of_their_commit(store: LmdbStore) -> None:
    from mako_actors.errors import VersionConflict
    from mako_actors.ids import ProcessId
    from mako_actors.store import Commit, JournalEntry
    from mako_actors.version import ExpectedVersion

    stream = StreamId.for_process(TENANT, ProcessId.new())
    entry = JournalEntry(TENANT, supply_key(MALO), {"kind": "ended", "supplier": LFA, "at": "2025-12-01"})
    stale = Commit(stream_id=stream, expected=ExpectedVersion.exact(7), journal=[entry])
    fresh = Commit(stream_id=stream, expected=ExpectedVersion.exact(0), journal=[entry, entry])
    results = await store.commit_many([stale, fresh])
    assert isinstance(results[0], VersionConflict)
    assert await store.journal(TENANT, supply_key(MALO)) == [dict(entry.data), dict(entry.data)]
    assert await store.journal(TenantId.from_party_id(LFA), supply_key(MALO)) == []  # tenant-scoped


@pytest.mark.parametrize(("answer", "lfn2", "lfn_told"), [
    ("A36", "55002", ["55037"]),  # agrees: the LFN2 supplies from START, the LFN never starts
    ("A35", "55003", []),  # Vertragsbindung: the LFN keeps its start
    (None, "55002", ["55037"]),  # silent past the 09:00 Frist: deemed to agree
])  # fmt: skip
async def test_a_supplier_confirmed_for_the_same_date_is_asked_as_the_lfa(
    store: LmdbStore, answer: str | None, lfn2: str, lfn_told: list[str]
) -> None:
    """E_0622 step 70 names only an Anmeldung "in Arbeit" and "noch nicht beantwortet": one for
    a date another supplier is already confirmed for asks that supplier by 55010, as the LFA at
    that date. Before (the default ``confirmed_assignment_blocks``), the second supplier got A06
    with DTM+Z08 = the receipt, and A06 again at every retry: it could never supply that date,
    whatever the first one's customer wanted."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    await p.ingest(anmeldung(LFN), THU_1430)  # nobody supplies: confirmed at once
    later = THU_1430 + timedelta(hours=3)
    await p.ingest(anmeldung(LFN2, ref="RIVAL1", ide="RIVALTX"), later)
    sent = await outbox(store)
    [request] = [m for m in sent if kind(m) == "55010"]
    assert request.recipient == LFN  # the LFZ of that date
    assert sorted(kind(m) for m in sent if m.recipient == LFN2) == ["55036", "APERAK+", "CONTRL7"]
    if answer is not None:
        at = later + timedelta(hours=1)
        code, pid = answer, "55011" if answer == "A36" else "55012"
        await p.ingest(lfa_answer(tx(request)["ide_ref"], pid=pid, code=code, sent_at=at, lfa=LFN), at)
    else:
        clock.set(FRI_1000)
        await fire(store, clock, FRI_1000)
    sent = await outbox(store)
    assert [kind(m) for m in sent if m.recipient == LFN2 and m.message_type == "UTILMD"] == ["55036", lfn2]
    told = [kind(m) for m in sent if m.recipient == LFN and kind(m) in ("55037", "55038")]
    assert told == lfn_told
    supplier = (await view(store)).supplier_at(START)
    assert supplier == (LFN2 if lfn2 == "55002" else LFN)  # one supplier at that date, either way
    if lfn_told:
        # Told by 55037 as any LFA: its Aufhebung of that start now finds it ended already
        # (E_0607 step 100: 55006 A09), not "not assigned" (APERAK Z17, counted as not received).
        at = FRI_1000 + timedelta(hours=1)
        clock.set(at)
        await p.ingest(abmeldung(LFN, ref="LFNABM", ide="LFNABMTX", end=START, sent_at=at,
                                 reason="ZH1", qualifier="92"), at)  # fmt: skip
        sent = await outbox(store)
        assert [tx(m)["answer_code"] for m in sent if kind(m) == "55006"] == ["A09"]
        assert not [m for m in sent if kind(m) == "APERAK-"]


@pytest.mark.parametrize(
    ("code", "end", "warned"), [("A34", berlin(2025, 11, 20), True), ("A36", START, False)]
)
async def test_the_lfas_end_date_is_recorded_and_a_different_one_flagged(
    store: LmdbStore, code: str, end: datetime, warned: bool
) -> None:
    """E_0624 A34: the LFA ends its supply and names the date in its 55011 (DTM+93); A36/A40
    "zum angefragten oder davor liegenden Termin". The date was read and dropped: no event held
    it, so a gap before the LFN's start was never seen. E_0623 decides on the code (55002 A51)."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(LFN), THU_1430)
    [request] = [m for m in await outbox(store) if kind(m) == "55010"]
    at = THU_1430 + timedelta(hours=1)
    await p.ingest(lfa_answer(tx(request)["ide_ref"], code=code, end=end, sent_at=at), at)
    [answered] = [e for e in await store.read_all(0, 10_000) if e.event_type == "gpke.lfa_answered"]
    assert datetime.fromisoformat(answered.payload["end"]) == end
    flagged = [w for w in answered.payload["warnings"] if "DTM+93" in w]
    assert bool(flagged) is warned
    assert [tx(m)["answer_code"] for m in await outbox(store) if kind(m) == "55002"] == ["A51"]


async def test_an_anmeldung_for_a_malo_complete_master_data_do_not_list_gets_z14(store: LmdbStore) -> None:
    """APERAK Z14 "Objekt im IT-System nicht gefunden": master data that list every MaLo of the
    NB ("complete") name no such MaLo (another grid's, or a mistyped ID with a valid check
    digit). Before, it was confirmed at once (55002 A51): the LFN supplied a MaLo the NB lacks."""
    other = "51238696781"  # a valid check digit
    clock = VirtualClock(THU_1430)
    master = StaticMasterData({MALO: Suppliers(current=LFA)}, complete=True)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    p = InboundPipeline(store, host, tenants=[NB], master_data=master, clock=clock)
    await p.ingest(anmeldung(LFN, malo=other), THU_1430)
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z14" and other in error["text"]
    assert [m for m in await outbox(store) if m.message_type == "UTILMD"] == []
    # A MaLo they list: its LFA is asked as ever.
    await p.ingest(anmeldung(LFN, ref="LFN0002", ide="LFNTX2"), THU_1430)
    assert "55010" in [kind(m) for m in await outbox(store)]
    # Master data not said to be complete hold only what they know something about: taken.
    partial = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await partial.ingest(anmeldung(LFN2, ref="LFN0003", ide="LFNTX3", malo="41234567896"), THU_1430)
    assert [kind(m) for m in await outbox(store) if m.recipient == LFN2][-1] == "55002"


async def test_master_data_are_one_tenants(store: LmdbStore, tmp_path: Path) -> None:
    """Master data answered for every tenant: another NB's Anmeldung for this NB's MaLo asked
    this NB's supplier by 55010 and named it to the LFN. A file names its tenant now, and one
    without is refused where several tenants are served (a MaLo belongs to one NB)."""
    from mako_actors.replay import load_master_data, replay_directory
    from mako_actors.serve import Node
    from mako_actors.serve_config import ServeConfig

    other_nb = "9900000007009"
    master = tmp_path / "master.json"
    master.write_text(json.dumps({MALO: {"current": LFA}}))
    unnamed = load_master_data(master)
    clock = VirtualClock(THU_1430)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    with pytest.raises(InvalidArgument, match="master data name no tenant and 2 are given"):
        InboundPipeline(store, host, tenants=[NB, other_nb], master_data=unnamed, clock=clock)
    with pytest.raises(InvalidArgument, match="replay: the master data name no tenant"):
        await replay_directory(tmp_path, tmp_path / "r", tenants=[NB, other_nb], master_data=unnamed)
    config = ServeConfig(
        store=tmp_path / "s", tenants=(NB, other_nb), inbox=tmp_path / "in", outbox=tmp_path / "out",
        master_data=master, http_port=None,
    )  # fmt: skip
    with pytest.raises(InvalidArgument, match="serve: the master data name no tenant"):
        Node(config)._master_data()
    master.write_text(json.dumps({"tenant": NB, MALO: {"current": LFA}}))
    named = load_master_data(master)
    assert named.tenant == NB and named.suppliers(NB, MALO, START).current == LFA
    p = InboundPipeline(store, host, tenants=[NB, other_nb], master_data=named, clock=clock)
    result = await p.ingest(anmeldung(LFN).replace(NB.encode(), other_nb.encode()), THU_1430)
    assert [m.outcome for m in result.messages] == ["started"]
    # No LFA known to this tenant: confirmed at once (55002), no 55010 to the other NB's supplier.
    assert [kind(m) for m in await outbox(store) if kind(m).startswith("55")] == ["55002"]
    master.write_text(json.dumps({"tenant": "12", MALO: {"current": LFA}}))
    with pytest.raises(InvalidArgument, match="'tenant' is '12', not an MP-ID"):
        load_master_data(master)
