"""The loop-level ``Runner`` of ``LocalActorSystem``: order per actor, fairness, errors per command.

One runner decides every ready actor's commands per loop turn and sends the turn's commits in
one store call; these tests pin what callers rely on: each process's commands in arrival
order, no actor starving the others, a refused command failing alone, timeouts removing
their deadline, and a burst over many actors costing one write transaction.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mako_actors import (
    Deadline,
    DeadlineId,
    EventId,
    ProcessId,
    ProcessIdentity,
    StoreError,
    WorkflowError,
)
from mako_actors.actors import LocalActorSystem, ProcessRef
from stores.lmdb import LmdbStore
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import Close, Ledger, Record

NOW = datetime(2025, 6, 5, 12, 0, tzinfo=UTC)


async def test_interleaved_commands_keep_arrival_order_per_process(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger], max_batch=7) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(30)]
        # Round-robin over the processes, all in flight at once: every turn holds many actors,
        # each with several queued commands (more than max_batch for some).
        futures = [
            asyncio.ensure_future(refs[i % 30].execute(Record(amount=i))) for i in range(30 * 20)
        ]
        await asyncio.gather(*futures)
    for k, ref in enumerate(refs):
        events = await store.load(ref.stream_id)
        assert [e.payload["amount"] for e in events] == list(range(k, 600, 30))
        assert [e.sequence for e in events] == list(range(1, 21))


async def test_a_busy_actor_does_not_starve_the_others(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger], max_batch=10) as system:
        busy, quiet = system.spawn("ledger", TENANT, LEDGER_ID), system.spawn("ledger", TENANT, LEDGER_ID)
        await asyncio.gather(busy.state(), quiet.state())  # both active
        done: list[str] = []

        def mark(name: str) -> Any:
            return lambda _: done.append(name)

        backlog = [asyncio.ensure_future(busy.execute(Record(amount=1))) for _ in range(500)]
        for future in backlog:
            future.add_done_callback(mark("busy"))
        single = asyncio.ensure_future(quiet.execute(Record(amount=1)))
        single.add_done_callback(mark("quiet"))
        await asyncio.gather(single, *backlog)
    # The quiet process's command went in the first turn with the busy one's first batch of
    # 10; without fairness it would wait behind all 500.
    assert done.index("quiet") <= 20, done.index("quiet")
    assert len(await store.load(busy.stream_id)) == 500


async def test_refused_commands_fail_alone_within_a_turn(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(5)]
        amounts = [3, -1, 4, -2, 5]
        results = await asyncio.gather(
            *(ref.execute(Record(amount=a)) for ref in refs for a in amounts), return_exceptions=True
        )
        for k, result in enumerate(results):
            if amounts[k % 5] < 0:
                assert isinstance(result, WorkflowError) and "negative amount" in str(result)
            else:
                assert isinstance(result, list) and len(result) == 1
        states = [await ref.state() for ref in refs]
        stats = system.stats
    assert all(s.total == 12 and s.entries == 3 for s in states)
    assert stats.failed_commands == 10 and stats.commands == 15
    for ref in refs:
        assert [e.payload["amount"] for e in await store.load(ref.stream_id)] == [3, 4, 5]


async def test_a_burst_over_many_active_actors_is_one_turn_and_one_transaction(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(200)]
        await asyncio.gather(*(ref.state() for ref in refs))  # activate them all first
        transactions, commits = store.stats.transactions, store.stats.commits
        await asyncio.gather(*(ref.execute(Record(amount=2)) for ref in refs))
        assert store.stats.commits - commits == 200
        assert store.stats.transactions - transactions == 1
        assert [(await ref.state()).total for ref in refs] == [2] * 200


async def test_timeouts_with_and_without_compensation_remove_their_deadline(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref: ProcessRef[Any, Any] = system.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute_and_enqueue(Record(amount=1, remind_at=NOW + timedelta(days=1)))
        (first,) = await store.deadlines_for_stream(ref.stream_id)
        events = await ref.execute_timeout(first)  # Ledger closes itself on a reminder
        assert events is not None and events[0].event_type == "ledger.closed"
        assert await store.deadlines_for_stream(ref.stream_id) == []
        # A closed ledger's on_deadline returns None: the deadline goes, no event is written.
        stray = Deadline(
            deadline_id=DeadlineId.for_event(EventId.new(), 0),
            stream_id=ref.stream_id,
            process_id=ref.process_id,
            tenant_id=TENANT,
            workflow_id=LEDGER_ID,
            label="reminder",
            due_at=NOW,
            causation_event_id=EventId.new(),
        )
        await store.register_deadline(stray)
        version = await ref.event_count()
        results = await asyncio.gather(ref.execute_timeout(stray), ref.state())
        assert results[0] is None and results[1].closed
        assert await store.deadlines_for_stream(ref.stream_id) == []
        assert await ref.event_count() == version
        with pytest.raises(WorkflowError):
            await ref.execute(Close())


async def test_drain_waits_for_queued_commands_and_leaves_actors_idle(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger], idle_timeout=None) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(20)]
        futures = [asyncio.ensure_future(r.execute(Record(amount=1))) for r in refs for _ in range(5)]
        await asyncio.sleep(0)
        await system.drain()
        assert all(f.done() for f in futures)
        assert await system.passivate_idle() == 20 and system.live_count == 0
        assert [(await r.state()).total for r in refs] == [5] * 20


async def test_live_actors_share_their_tenant_and_workflow_ids(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(3)]
        decoded = [ProcessIdentity.model_validate(r.identity().to_plain()) for r in refs]
        await asyncio.gather(*(system.resume(i).execute(Record(amount=1)) for i in decoded))
        actors = [system._live[r.stream_id] for r in refs]
        assert [a.identity for a in actors] == [r.identity() for r in refs]
        assert len({id(a.identity.tenant_id) for a in actors}) == 1
        assert len({id(a.identity.workflow_id) for a in actors}) == 1
        copied = actors[0].identity.model_copy(update={"process_id": ProcessId.new()})
        assert copied.model_fields_set == set(ProcessIdentity.model_fields)
        assert actors[1].identity.model_fields_set == set(ProcessIdentity.model_fields)
        assert actors[1].identity.to_plain() == refs[1].identity().to_plain()


async def test_a_burst_to_passive_processes_activates_them_in_the_same_turn(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(50)]
        await asyncio.gather(*(ref.execute(Record(amount=1)) for ref in refs))
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.resume(ref.identity()) for ref in refs]
        transactions = store.stats.transactions
        # LMDB reads without waiting: each actor activates in the turn that brought its first
        # command, and the whole burst is still one write transaction.
        await asyncio.gather(*(ref.execute(Record(amount=2)) for ref in refs))
        assert store.stats.transactions - transactions == 1
        assert system.stats.activations == 50
        assert [(await ref.state()).total for ref in refs] == [3] * 50


class _AsyncReads:
    """A wrapper forwarding to ``store`` that answers snapshot reads itself (as caches do).

    Its class has no ``load_activation_now``: actors activate in the slow path, through the
    wrapper's own reads, although ``__getattr__`` would find the store's method.
    """

    def __init__(self, store: LmdbStore) -> None:
        self._store = store
        self.snapshot_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def load_snapshot(self, stream_id: Any) -> Any:
        self.snapshot_reads += 1
        return await self._store.load_snapshot(stream_id)


async def test_activation_without_a_synchronous_read_gives_the_same_states(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger], snapshot_interval=3) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(5)]
        for amount in range(1, 8):
            await asyncio.gather(*(ref.execute(Record(amount=amount)) for ref in refs))
    wrapped = _AsyncReads(store)
    async with LocalActorSystem(wrapped, workflows=[Ledger]) as system:  # type: ignore[arg-type]
        again = [system.resume(ref.identity()) for ref in refs]
        await asyncio.gather(*(ref.execute(Record(amount=100)) for ref in again))
        assert [(await ref.state()).total for ref in again] == [128] * 5
        assert system.stats.activations == 5
        assert wrapped.snapshot_reads == 5


@pytest.mark.parametrize("failing", ["one stream of a turn's reads", "the turn's read transaction"])
async def test_a_failed_activation_read_fails_the_head_command_only(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        # A resumed handle: ``spawn``'s own handle starts its new process without a read.
        ref = system.resume(system.spawn("ledger", TENANT, LEDGER_ID).identity())
        real_one, real_many = store.load_activation_now, store.load_activations_now
        calls = 0

        def flaky_one(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("disk hiccup")
            return real_one(*args)

        def flaky_many(requests: Any) -> Any:
            nonlocal calls
            if failing == "the turn's read transaction":
                raise StoreError("read transaction failed")  # each actor then reads alone
            calls += 1
            return [RuntimeError("disk hiccup")] if calls == 1 else real_many(requests)

        monkeypatch.setattr(store, "load_activation_now", flaky_one)
        monkeypatch.setattr(store, "load_activations_now", flaky_many)
        first = asyncio.ensure_future(ref.execute(Record(amount=1)))
        second = asyncio.ensure_future(ref.execute(Record(amount=2)))
        with pytest.raises(RuntimeError, match="disk hiccup"):
            await first
        assert [e.sequence for e in await second] == [1]
        assert (await ref.state()).total == 2


class _NoHost:
    """The host side of a partition's forwarding store: records what it is asked to forward."""

    def __init__(self) -> None:
        self.forwarded: list[int] = []

    async def forward_keys(self, partition: int, commits: list[Any]) -> None:
        self.forwarded.append(len(commits))


async def test_a_partitioned_hosts_store_activates_inside_the_turn(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A partitioned Ray host wraps each partition's LmdbStore to forward registry keys after
    # commits; its actors must still activate by the in-turn read, not the awaited one.
    from mako_actors.actors.ray_system import _ForwardingStore

    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(50)]
        await asyncio.gather(*(ref.execute(Record(amount=1)) for ref in refs))

    async def awaited_read(*args: Any) -> Any:
        raise AssertionError("activation took the awaited read path")

    monkeypatch.setattr(store, "load_activation", awaited_read)
    monkeypatch.setattr(store, "load_snapshot", awaited_read)
    forwarding = _ForwardingStore(store, _NoHost(), 0)  # type: ignore[arg-type]
    async with LocalActorSystem(forwarding, workflows=[Ledger]) as system:  # type: ignore[arg-type]
        refs = [system.resume(ref.identity()) for ref in refs]
        transactions = store.stats.transactions
        await asyncio.gather(*(ref.execute(Record(amount=2)) for ref in refs))
        assert store.stats.transactions - transactions == 1
        assert system.stats.activations == 50
        assert [(await ref.state()).total for ref in refs] == [3] * 50
