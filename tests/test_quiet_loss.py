"""Nothing lost or poisoned quietly: undeclared events, snapshots the stream does not hold, dropped
outbox."""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mako_actors import (
    Event,
    InvalidArgument,
    LocalActorSystem,
    Process,
    ProcessIdentity,
    TenantId,
    WorkflowId,
    WorkflowOutput,
)
from mako_actors._handle import DROPPED_OUTPUT
from mako_actors.metrics import prometheus_text
from mako_actors.snapshot import Snapshot
from stores.lmdb import LmdbStore
from tests.workflows import Close, Ledger, LedgerState, Record

TENANT = TenantId.from_party_id("9900000002009")
WF = WorkflowId.new("ledger", "FV2510")
NOW = datetime(2025, 6, 5, 12, 30, tzinfo=UTC)


class Undeclared(Event, type="ledger.undeclared"):
    note: str


class Impostor(Event, type="ledger.recorded", version=2):
    """Same type name as the declared ``Recorded``, another model: decoding would not fit it."""

    note: str


class SloppyLedger(Ledger):
    """A ledger whose handler emits events it never declared, for negative amounts of -1/-2."""

    def handle(self, state: LedgerState, command: Any) -> WorkflowOutput:
        if isinstance(command, Record) and command.amount == -1:
            return WorkflowOutput.of(Undeclared(note="x"))
        if isinstance(command, Record) and command.amount == -2:
            declared = super().handle(state, Record(amount=1)).events
            return WorkflowOutput(events=(*declared, Impostor(note="x")))
        return super().handle(state, command)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


# -- an event type missing from Workflow.events -------------------------------------------------


async def test_an_undeclared_event_is_refused_before_the_commit(store: LmdbStore) -> None:
    p = Process(SloppyLedger(), store, TENANT, WF)
    await p.execute(Record(amount=1))
    for amount in (-1, -2):
        with pytest.raises(InvalidArgument, match=r"not in SloppyLedger\.events"):
            await p.execute(Record(amount=amount))
    assert await p.event_count() == 1
    await p.execute(Record(amount=2))  # the stream still loads and takes commands
    assert (await p.state()).total == 3


async def test_an_undeclared_event_is_refused_on_actors(store: LmdbStore) -> None:
    async with LocalActorSystem(store, [SloppyLedger]) as system:
        ref = system.spawn("ledger", TENANT, WF)
        await ref.execute(Record(amount=1))
        with pytest.raises(InvalidArgument):
            await ref.execute(Record(amount=-1))
        await ref.execute(Record(amount=2))
        assert (await ref.state()).total == 3
    assert (await Process.from_identity(Ledger(), store, ref.identity()).state()).total == 3


# -- a snapshot past the stream's end ----------------------------------------------------------


async def test_a_snapshot_past_the_end_is_ignored_and_counted(store: LmdbStore) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    for amount in (1, 2):
        await p.execute(Record(amount=amount))
    bogus = Ledger().snapshot_of(p.stream_id, 10, LedgerState(total=999, entries=10), NOW)
    await store.save_snapshot(bogus)
    assert (await p.state_with_snapshot()).total == 3
    assert store.stats.extra["snapshots_ignored"] == 1
    events = await p.execute_snapshot(Record(amount=4))  # no VersionConflict, now or ever
    assert events[0].sequence == 3
    await p.execute_and_enqueue_snapshot(Record(amount=1))
    assert (await p.state()).total == 8
    assert await p.take_snapshot(store, 2)  # replaces the bogus one
    snap = await store.load_snapshot(p.stream_id)
    assert snap is not None and snap.sequence == 4 and snap.state["total"] == 8
    assert (await p.state_with_snapshot()).total == 8


async def test_a_snapshot_at_the_end_is_still_used(store: LmdbStore) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    for amount in (1, 2):
        await p.execute(Record(amount=amount))
    await store.save_snapshot(Ledger().snapshot_of(p.stream_id, 2, LedgerState(total=3, entries=2), NOW))
    read = store.stats.events_read
    assert (await p.state_with_snapshot()).total == 3
    assert store.stats.events_read == read  # the snapshot is the whole state
    assert "snapshots_ignored" not in store.stats.extra


async def test_an_actor_activates_past_a_bogus_snapshot(store: LmdbStore) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    await p.execute(Record(amount=5))
    await store.save_snapshot(Ledger().snapshot_of(p.stream_id, 7, LedgerState(total=-1), NOW))
    async with LocalActorSystem(store, [Ledger]) as system:
        ref = system.resume(p.identity())
        assert (await ref.state()).total == 5
        events = await ref.execute(Record(amount=1))
        assert events[0].sequence == 2


async def test_an_actors_take_snapshot_replaces_a_snapshot_past_the_end(store: LmdbStore) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    await p.execute(Record(amount=5))
    await store.save_snapshot(Ledger().snapshot_of(p.stream_id, 50, LedgerState(total=-1), NOW))
    async with LocalActorSystem(store, [Ledger], snapshot_interval=0) as system:
        assert await system.resume(p.identity()).take_snapshot(interval=1)
    snap = await store.load_snapshot(p.stream_id)
    [event] = await store.load_from(p.stream_id, 0)
    assert snap is not None and (snap.sequence, snap.state["total"], snap.event_id) == (1, 5, event.event_id)
    assert (await p.state_with_snapshot()).total == 5
    assert store.stats.extra["snapshots_ignored"] == 1  # by the actor's activation only


# -- a snapshot of another copy of the stream ------------------------------------------------------


async def _other_copys_snapshot(tmp_path: Path, identity: ProcessIdentity, taken_by: str) -> Snapshot:
    """The snapshot at 2 another copy of the store took of the process: Record(1), Record(100)."""
    async with LmdbStore(tmp_path / "other") as other:
        q = Process.from_identity(Ledger(), other, identity, clock=lambda: NOW)
        await q.execute(Record(amount=1))
        if taken_by == "commit":
            await q.execute_and_enqueue_with_snapshot(Record(amount=100), snapshot_interval=2)
        else:
            await q.execute(Record(amount=100))
        if taken_by == "process":
            assert await q.take_snapshot(interval=1)
        elif taken_by == "actor":
            async with LocalActorSystem(other, [Ledger], snapshot_interval=0) as system:
                assert await system.resume(identity).take_snapshot(interval=1)
        snap = await other.load_snapshot(identity.stream_id)
    assert snap is not None and (snap.sequence, snap.state["total"]) == (2, 101)
    return snap


@pytest.mark.parametrize("taken_by", ["commit", "process", "actor"])
async def test_a_snapshot_of_another_copy_stays_ignored_once_the_stream_reaches_it(
    store: LmdbStore, tmp_path: Path, taken_by: str
) -> None:
    """Restored from another copy, a snapshot at 2 is not used when this stream reaches 2 with
    other events: every way of loading the state folds this stream's own events."""
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    await p.execute(Record(amount=1))
    foreign = await _other_copys_snapshot(tmp_path, p.identity(), taken_by)
    await store.save_snapshot(foreign)
    await p.execute_snapshot(Record(amount=2))  # the stream reaches the snapshot's sequence
    assert await p.event_count() == 2
    assert (await p.state_with_snapshot()).total == 3
    await p.execute_snapshot(Record(amount=4))
    assert (await p.state_with_snapshot()).total == 7
    async with LmdbStore(tmp_path / "snaps") as snaps:  # a separate snapshot store
        await snaps.save_snapshot(foreign)
        assert (await p.state_with_snapshot(snaps)).total == 7
    async with LocalActorSystem(store, [Ledger], snapshot_interval=0) as system:
        ref = system.resume(p.identity())
        assert (await ref.state()).total == 7
        await ref.execute(Record(amount=8))
        assert (await ref.state()).total == 15
    assert store.stats.extra["snapshots_ignored"] >= 4
    assert (await p.state()).total == 15


@pytest.mark.parametrize("by", ["process", "process with a snapshot store", "actor"])
async def test_take_snapshot_replaces_a_snapshot_of_another_copy(
    store: LmdbStore, tmp_path: Path, by: str
) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    await p.execute(Record(amount=1))
    foreign = await _other_copys_snapshot(tmp_path, p.identity(), "commit")
    await p.execute(Record(amount=2))
    async with LmdbStore(tmp_path / "snaps") as snaps:
        snap_store = snaps if by == "process with a snapshot store" else store
        await snap_store.save_snapshot(foreign)
        # Two events since none that counts: due at an interval of 2, though the foreign one
        # sits at the stream's version.
        if by == "actor":
            async with LocalActorSystem(store, [Ledger], snapshot_interval=0) as system:
                assert await system.resume(p.identity()).take_snapshot(interval=2)
        else:
            assert await p.take_snapshot(snap_store, interval=2)
        snap = await snap_store.load_snapshot(p.stream_id)
        assert snap is not None and (snap.sequence, snap.state["total"]) == (2, 3)
        assert (await p.state_with_snapshot(snap_store)).total == 3
        assert not await p.take_snapshot(snap_store, interval=2)  # its own counts again


# -- execute drops the outbox: warned once per command type, counted ---------------------------


async def test_execute_warns_once_per_command_type_and_counts_the_drop(
    store: LmdbStore, caplog: pytest.LogCaptureFixture
) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    before = (DROPPED_OUTPUT.commands, DROPPED_OUTPUT.messages, DROPPED_OUTPUT.deadlines)
    kind = "ledger:Record"
    seen = DROPPED_OUTPUT.by_command.get(kind, 0)
    with (
        caplog.at_level(logging.WARNING, logger="mako_actors.process"),
        warnings.catch_warnings(record=True) as shown,
    ):
        warnings.simplefilter("always")
        await p.execute(Record(amount=1, notify="9900000001001", remind_at=NOW))
        await p.execute(Record(amount=1, notify="9900000001001"))
        await p.execute(Record(amount=1))  # nothing to drop
        await p.execute_and_enqueue(Record(amount=1, notify="9900000001001"))
        await p.execute_and_collect(Record(amount=1, notify="9900000001001"))
    after = (DROPPED_OUTPUT.commands, DROPPED_OUTPUT.messages, DROPPED_OUTPUT.deadlines)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2, 1]
    assert DROPPED_OUTPUT.by_command[kind] == seen + 2
    logged = [r for r in caplog.records if "execute dropped" in r.getMessage()]
    assert len(logged) == (0 if seen else 1)
    # ... and as a RuntimeWarning, shown by default where the library's log records are not
    dropped = [w for w in shown if w.category is RuntimeWarning and "execute dropped" in str(w.message)]
    assert len(dropped) == len(logged)
    assert "mako_dropped_messages" in prometheus_text({"dropped": DROPPED_OUTPUT})
    assert await store.outbox_count() == 1


class _DroppingLedger(Ledger):
    """The ledger under a name of its own: its drops are warned about here, whatever ran before."""

    name = "ledger_drops"


async def test_dropped_deadline_changes_are_counted_and_warned_about(store: LmdbStore) -> None:
    p = Process(_DroppingLedger(), store, TENANT, WorkflowId.new("ledger_drops", "FV2510"))
    await p.execute_and_enqueue(Record(amount=1, remind_at=NOW))
    before = (DROPPED_OUTPUT.commands, DROPPED_OUTPUT.deadlines, DROPPED_OUTPUT.cancellations)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        await p.execute_and_collect(Record(amount=1, remind_at=NOW))  # its deadline is not stored
        await p.execute(Close())  # closed, but its "reminder" cancellation is not applied
    after = (DROPPED_OUTPUT.commands, DROPPED_OUTPUT.deadlines, DROPPED_OUTPUT.cancellations)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]
    texts = [str(w.message) for w in shown if w.category is RuntimeWarning]
    assert any(
        "execute_and_collect dropped 0 outbox message(s), 1 deadline(s)" in t for t in texts
    )
    assert [t for t in texts if "ledger_drops:Close" in t and "1 deadline cancellation(s)" in t]
    assert [d.label for d in await store.deadlines_for_stream(p.stream_id)] == ["reminder"]
    assert "mako_dropped_cancellations" in prometheus_text({"dropped": DROPPED_OUTPUT})


async def test_actor_execute_counts_the_dropped_outbox(store: LmdbStore) -> None:
    async with LocalActorSystem(store, [Ledger]) as system:
        ref = system.spawn("ledger", TENANT, WF)
        before = DROPPED_OUTPUT.messages
        await ref.execute(Record(amount=1, notify="9900000001001"))
        await ref.execute_and_enqueue(Record(amount=1, notify="9900000001001"))
        assert DROPPED_OUTPUT.messages - before == 1
        assert await store.outbox_count() == 1
