"""``load_activation``: snapshot and tail in one read, equal to reading them one by one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mako_actors import Process, TenantId, WorkflowId
from mako_actors.process import load_state
from stores import _schema
from stores._base import StoreBase
from stores.lmdb import LmdbStore
from stores.memory import InMemoryStore
from tests.workflows import Ledger, LedgerState, Record

TENANT = TenantId.from_party_id("9900000000003")
WF = WorkflowId.new("ledger", "FV2025-10-01")
NOW = datetime(2025, 6, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["lmdb", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBase]:
    backend: StoreBase = LmdbStore(tmp_path / "store") if request.param == "lmdb" else InMemoryStore()
    yield backend
    await backend.aclose()


async def test_activation_reads_the_snapshot_and_only_the_tail(store: StoreBase) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    fresh = await store.load_activation(p.stream_id, "ledger", 1)
    assert fresh.snapshot is None and fresh.events == [] and fresh.ignored_snapshot_at is None
    for amount in range(1, 6):
        await p.execute(Record(amount=amount))
    await store.save_snapshot(Ledger().snapshot_of(p.stream_id, 3, LedgerState(total=6, entries=3), NOW))
    read = await store.load_activation(p.stream_id, "ledger", 1)
    assert read.snapshot is not None and read.snapshot.sequence == 3
    assert [e.sequence for e in read.events] == [4, 5]
    assert [e.sequence for e in (await store.load_activation(p.stream_id, "ledger", 1, upto=4)).events] == [4]
    assert (await store.load_activation(p.stream_id, "ledger", 1, upto=3)).events == []
    # Up to an instant before the snapshot, or another schema version: a replay from the start.
    early = await store.load_activation(p.stream_id, "ledger", 1, upto=2)
    assert early.snapshot is None and [e.sequence for e in early.events] == [1, 2]
    other = await store.load_activation(p.stream_id, "ledger", 2)
    assert other.snapshot is None and len(other.events) == 5
    # What load_state builds from it equals a full replay, at every ``upto``.
    workflow = Ledger()
    for upto in (None, 0, 2, 3, 4, 5):
        with_snapshot = await load_state(workflow, store, p.stream_id, snapshots=store, upto=upto)
        replayed = await load_state(workflow, store, p.stream_id, upto=upto)
        assert with_snapshot == replayed


async def test_a_snapshot_at_the_streams_end_needs_no_events(store: StoreBase) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    for amount in (1, 2):
        await p.execute(Record(amount=amount))
    await store.save_snapshot(Ledger().snapshot_of(p.stream_id, 2, LedgerState(total=3, entries=2), NOW))
    read = await store.load_activation(p.stream_id, "ledger", 1)
    assert read.snapshot is not None and read.events == [] and read.ignored_snapshot_at is None
    await store.save_snapshot(Ledger().snapshot_of(p.stream_id, 9, LedgerState(total=-1), NOW))
    past = await store.load_activation(p.stream_id, "ledger", 1)
    assert past.snapshot is None and past.ignored_snapshot_at == 9 and len(past.events) == 2


async def test_a_snapshot_records_its_event_and_counts_only_over_it(store: StoreBase) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    for amount in (1, 2):
        await p.execute(Record(amount=amount))
    assert await p.take_snapshot(interval=2)
    snap = await store.load_snapshot(p.stream_id)
    events = await store.load_from(p.stream_id, 0)
    assert snap is not None and snap.event_id == events[1].event_id
    await p.execute(Record(amount=3))
    read = await store.load_activation(p.stream_id, "ledger", 1)
    assert read.snapshot == snap and [e.sequence for e in read.events] == [3]
    # The same sequence, taken after another event: not this stream's.
    await store.save_snapshot(snap.model_copy(update={"event_id": events[0].event_id}))
    other = await store.load_activation(p.stream_id, "ledger", 1)
    assert other.snapshot is None and other.ignored_snapshot_at == 2 and len(other.events) == 3


async def test_an_event_row_in_another_field_order_still_matches_its_snapshot(store: StoreBase) -> None:
    """The id is compared in place only in the engine's own row layout; any other is unpacked."""
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    for amount in (1, 2):
        await p.execute(Record(amount=amount))
    assert await p.take_snapshot(interval=2)
    [_, second] = await store.load_from(p.stream_id, 0)
    reordered = dict(reversed(list(second.to_plain().items())))  # as another writer might
    key = _schema.event_key(p.stream_id, 2)
    await store._write(lambda txn: txn.put("events", key, _schema.pack(reordered)))
    read = await store.load_activation(p.stream_id, "ledger", 1)
    assert read.snapshot is not None and read.ignored_snapshot_at is None


async def test_a_snapshot_row_without_an_event_id_counts_at_its_sequence(store: StoreBase) -> None:
    """Rows written before snapshots recorded their event's id load and count as they did."""
    p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
    for amount in (1, 2, 3):
        await p.execute(Record(amount=amount))
    plain = Ledger().snapshot_of(p.stream_id, 2, LedgerState(total=3, entries=2), NOW).to_plain()
    del plain["event_id"]
    key = p.stream_id.encode()
    await store._write(lambda txn: txn.put("snapshots", key, _schema.pack(plain)))
    snap = await store.load_snapshot(p.stream_id)
    assert snap is not None and snap.sequence == 2 and snap.event_id is None
    read = await store.load_activation(p.stream_id, "ledger", 1)
    assert read.snapshot == snap and [e.sequence for e in read.events] == [3]
    before = store.stats.events_read
    loaded = await load_state(Ledger(), store, p.stream_id, snapshots=store)
    assert loaded == (LedgerState(total=6, entries=3), 3)
    assert store.stats.events_read - before == 1  # the tail only: the snapshot was used


async def test_lmdb_reads_an_activation_without_awaiting(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "store") as store:
        p = Process(Ledger(), store, TENANT, WF, clock=lambda: NOW)
        await p.execute(Record(amount=4))
        now = store.load_activation_now(p.stream_id, "ledger", 1)
        assert now == await store.load_activation(p.stream_id, "ledger", 1)
    assert InMemoryStore().load_activation_now(p.stream_id, "ledger", 1) is None
