"""``CommandContext.with_recorded_at``: historic input stamped at its own instant, on every path.

A command whose context carries ``recorded_at`` has its events, outbox messages and snapshot
stamped with that instant instead of the clock's reading; without it, the clock's. On LMDB.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mako_actors import CommandContext, LocalActorSystem, Process
from mako_actors.ids import ProcessId, TenantId
from mako_actors.version import WorkflowId
from stores.lmdb import LmdbStore
from tests.workflows import Ledger, Record

TENANT = TenantId.from_party_id("9900000000010")
LEDGER = WorkflowId.new("ledger", "FV2025-10-01")
RECIPIENT = "9900000000027"
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
HISTORIC = datetime(2025, 3, 1, 7, 30, tzinfo=timezone(timedelta(hours=1)))  # 06:30 UTC


def clock() -> datetime:
    return NOW


async def test_a_process_stamps_a_historic_command_at_its_instant_and_others_at_the_clock(
    tmp_path: Path,
) -> None:
    async with LmdbStore(tmp_path / "s") as store:
        process = Process(Ledger(), store, TENANT, LEDGER, clock=clock)
        ctx = process.new_context().with_recorded_at(HISTORIC)
        assert ctx.recorded_at == HISTORIC and ctx.recorded_at is not None and ctx.recorded_at.tzinfo is UTC
        old = await process.execute_and_enqueue_with(Record(amount=1, notify=RECIPIENT), ctx)
        new = await process.execute_and_enqueue(Record(amount=2, notify=RECIPIENT))
        assert [e.recorded_at for e in old + new] == [HISTORIC, NOW]
        assert old[0].correlation_id == ctx.correlation_id  # the copy keeps the context's ids
        assert [e.recorded_at for e in await store.load(process.stream_id)] == [HISTORIC, NOW]
        outbox = sorted(await store.outbox_messages(), key=lambda m: m.created_at)
        assert [(m.created_at, m.next_attempt_at) for m in outbox] == [(HISTORIC, HISTORIC), (NOW, NOW)]


async def test_an_actor_stamps_a_historic_command_and_its_snapshot_at_its_instant(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "s")
    async with LocalActorSystem(
        store, workflows=[Ledger()], clock=clock, snapshot_interval=2, close_store=True
    ) as system:
        ref = system.spawn("ledger", TENANT, LEDGER)
        await ref.execute_and_enqueue(Record(amount=1))
        [event] = await ref.execute_and_enqueue_with(
            Record(amount=2, notify=RECIPIENT), ref.new_context().with_recorded_at(HISTORIC)
        )
        assert event.recorded_at == HISTORIC
        assert [e.recorded_at for e in await store.load(ref.stream_id)] == [NOW, HISTORIC]
        [message] = await store.outbox_messages()
        assert message.created_at == HISTORIC
        snapshot = await store.load_snapshot(ref.stream_id)
        assert snapshot is not None and snapshot.sequence == 2 and snapshot.taken_at == HISTORIC


async def test_an_inbound_context_can_carry_the_receipt_instant(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "s") as store:
        process = Process(Ledger(), store, TENANT, LEDGER, clock=clock)
        plain = process.context_for_inbound("9900000000027:N1")
        stamped = process.context_for_inbound("9900000000027:N1", recorded_at=HISTORIC)
        assert plain.recorded_at is None and stamped.recorded_at == HISTORIC
        assert stamped.recorded_at is not None and stamped.recorded_at.tzinfo is UTC
        assert stamped.correlation_id == plain.correlation_id  # UUID v5 of the reference, as before
        [event] = await process.execute_and_enqueue_with(Record(amount=1), stamped)
        assert event.recorded_at == HISTORIC
        with pytest.raises(ValueError, match="naive datetime"):
            process.context_for_inbound("9900000000027:N1", recorded_at=datetime(2025, 3, 1, 7, 30))


def test_a_naive_instant_is_refused_and_a_new_context_has_none() -> None:
    ctx = CommandContext.new(TENANT, ProcessId.new(), LEDGER)
    assert ctx.recorded_at is None
    with pytest.raises(ValueError, match="naive datetime"):
        ctx.with_recorded_at(datetime(2025, 3, 1, 7, 30))
