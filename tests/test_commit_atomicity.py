"""What one command writes is one transaction, and snapshots follow every crossed multiple.

These tests exist because a deliberate break of each guarantee passed the rest of the suite:
the outbox written in a second transaction after the events, and a snapshot taken only when
the new version is an exact multiple of the interval.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from mako_actors import (
    EngineError,
    Event,
    LocalActorSystem,
    PendingDeadline,
    PendingOutbox,
    Process,
    TenantId,
    Workflow,
    WorkflowId,
    WorkflowOutput,
)
from stores.lmdb import LmdbStore

TENANT = TenantId.from_party_id("9900000002009")
NOW = datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
WF = WorkflowId.new("burst", "FV2510")


class Burst(BaseModel):
    """Append ``events`` events and send ``messages`` messages (``payload`` in each)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    events: int = 1
    messages: int = 0
    payload: Any = None
    remind: bool = False


class Counted(Event, type="burst.counted"):
    n: int


class Tally(BaseModel):
    model_config = ConfigDict(frozen=True)
    count: int = 0


class BurstWorkflow(Workflow[Burst, Tally]):
    """Several events and several outbox messages per command."""

    name = "burst"
    events = (Counted,)

    def initial_state(self) -> Tally:
        return Tally()

    def handle(self, state: Tally, command: Burst) -> WorkflowOutput:
        out = WorkflowOutput(events=tuple(Counted(n=state.count + i + 1) for i in range(command.events)))
        out = out.with_outbox(
            *(
                PendingOutbox(message_type="NOTICE", recipient="9900000001001",
                              payload={"index": i, "value": command.payload})
                for i in range(command.messages)
            )
        )
        if command.remind:
            out = out.with_deadlines(PendingDeadline(label="remind", due_at=NOW))
        return out

    def apply(self, state: Tally, event: Event) -> Tally:
        assert isinstance(event, Counted)
        return Tally(count=event.n)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def process(store: LmdbStore) -> Process[Burst, Tally]:
    return Process(BurstWorkflow(), store, TENANT, WF, clock=lambda: NOW)


class _Unencodable:
    """A value msgpack cannot store: the outbox row of its command fails to be written."""


# -- events + outbox + deadlines: one transaction ----------------------------------------------


async def test_process_writes_events_outbox_and_deadline_in_one_transaction(store: LmdbStore) -> None:
    p = process(store)
    await p.execute(Burst())  # the stream exists; what follows is one command
    before = store.stats.transactions
    events = await p.execute_and_enqueue(Burst(events=2, messages=3, remind=True))
    assert store.stats.transactions - before == 1
    assert len(events) == 2 and await store.outbox_count() == 3
    assert len(await store.deadlines_for_stream(p.stream_id)) == 1


async def test_actor_writes_events_outbox_and_deadline_in_one_transaction(store: LmdbStore) -> None:
    async with LocalActorSystem(store, [BurstWorkflow], clock=lambda: NOW) as system:
        ref = system.spawn("burst", TENANT, WF)
        await ref.execute(Burst())
        before = store.stats.transactions
        await ref.execute_and_enqueue(Burst(events=2, messages=3, remind=True))
        assert store.stats.transactions - before == 1
        assert await store.outbox_count() == 3


async def test_an_outbox_row_that_cannot_be_written_takes_its_events_with_it(store: LmdbStore) -> None:
    p = process(store)
    await p.execute(Burst())
    with pytest.raises(EngineError):
        await p.execute_and_enqueue(Burst(events=2, messages=2, payload=_Unencodable()))
    assert await p.event_count() == 1  # no event without its outbox row
    assert await store.outbox_count() == 0
    assert (await p.state()).count == 1
    await p.execute_and_enqueue(Burst(messages=1))  # and the stream goes on
    assert await p.event_count() == 2 and await store.outbox_count() == 1


async def test_actor_outbox_row_that_cannot_be_written_takes_its_events_with_it(store: LmdbStore) -> None:
    async with LocalActorSystem(store, [BurstWorkflow], clock=lambda: NOW) as system:
        ref = system.spawn("burst", TENANT, WF)
        await ref.execute(Burst())
        with pytest.raises(EngineError):
            await ref.execute_and_enqueue(Burst(events=2, messages=2, payload=_Unencodable()))
        assert await ref.event_count() == 1
        assert await store.outbox_count() == 0
        assert (await ref.state()).count == 1


# -- snapshots: every crossed multiple, not only exact ones ------------------------------------


async def test_process_snapshots_when_a_command_jumps_over_a_multiple(store: LmdbStore) -> None:
    p = process(store)
    _, taken = await p.execute_and_enqueue_with_snapshot(Burst(events=2), snapshot_interval=3)
    assert not taken
    _, taken = await p.execute_and_enqueue_with_snapshot(Burst(events=2), snapshot_interval=3)
    assert taken  # version 2 -> 4 crosses 3 without landing on it
    snap = await store.load_snapshot(p.stream_id)
    assert snap is not None and snap.sequence == 4 and snap.state == {"count": 4}


async def test_actor_snapshots_when_a_command_jumps_over_a_multiple(store: LmdbStore) -> None:
    async with LocalActorSystem(store, [BurstWorkflow], clock=lambda: NOW, snapshot_interval=5) as system:
        ref = system.spawn("burst", TENANT, WF)
        for _ in range(3):  # versions 3, 6 (crosses 5), 9
            await ref.execute(Burst(events=3))
        snap = await store.load_snapshot(ref.stream_id)
        assert snap is not None and snap.sequence == 6 and snap.state == {"count": 6}


def test_snapshot_due_follows_every_crossed_multiple() -> None:
    from mako_actors import Snapshot

    assert Snapshot.due(2, 4, 3) and Snapshot.due(2, 3, 3) and Snapshot.due(0, 10, 3)
    assert not Snapshot.due(3, 5, 3) and not Snapshot.due(0, 2, 3) and not Snapshot.due(0, 100, 0)
    assert Snapshot.should_take(6, 3) and not Snapshot.should_take(5, 3) and not Snapshot.should_take(0, 3)
