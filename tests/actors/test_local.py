"""``LocalActorSystem`` on a real LMDB store: ordering, activation, passivation, group commit, failures."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from mako_actors import InvalidArgument, Process, StoreError, WorkflowError
from mako_actors.actors import ActorSystemClosed, LocalActorSystem, ProcessRef
from mako_actors.actors._actor import COMMAND, Op
from stores.lmdb import LmdbStore
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import Close, Ledger, LedgerState, Record


def replay(store: LmdbStore, ref: ProcessRef[Any, Any]) -> Process[Any, Any]:
    return Process.from_identity(Ledger(), store, ref.identity())


async def test_thousand_concurrent_commands_to_one_process(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)

        async def caller(start: int) -> None:
            for amount in range(start, 1000, 50):
                events = await ref.execute(Record(amount=amount))
                assert len(events) == 1

        await asyncio.gather(*(caller(i) for i in range(50)))
        stats = system.stats
        assert stats.commands == 1000 and stats.conflicts == 0 and stats.failed_commands == 0
        state = await ref.state()
    events = await store.load(ref.stream_id)
    assert [e.sequence for e in events] == list(range(1, 1001))
    assert sorted(e.payload["amount"] for e in events) == list(range(1000))
    assert state == await replay(store, ref).state()
    assert state.total == sum(range(1000)) and state.entries == 1000


async def test_commands_run_in_arrival_order(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn(Ledger, TENANT, LEDGER_ID)
        futures = [asyncio.ensure_future(ref.execute(Record(amount=i))) for i in range(100)]
        await asyncio.gather(*futures)
    assert [e.payload["amount"] for e in await store.load(ref.stream_id)] == list(range(100))


async def test_activation_reads_snapshot_plus_tail(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger], snapshot_interval=100) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await asyncio.gather(*(ref.execute(Record(amount=i)) for i in range(1037)))
        snapshot = await store.load_snapshot(ref.stream_id)
        assert snapshot is not None and snapshot.sequence == 1000
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        again = system.resume(ref.identity())
        before = store.stats.events_read
        state = await again.state()
        assert store.stats.events_read - before == 37  # the tail after the snapshot, not 1037
        assert system.stats.activations == 1
    before = store.stats.events_read
    assert state == await replay(store, ref).state()
    assert store.stats.events_read - before == 1037


async def test_commands_arriving_during_activation_wait_in_order(store: LmdbStore) -> None:
    process = Process(Ledger(), store, TENANT, LEDGER_ID)
    for i in range(300):
        await process.execute(Record(amount=i))
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.resume(process.identity())
        results = await asyncio.gather(*(ref.execute(Record(amount=1000 + i)) for i in range(20)))
        assert [r[0].sequence for r in results] == list(range(301, 321))
        assert system.stats.activations == 1


async def test_passivation_after_idle_timeout_and_reactivation(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger], idle_timeout=0.05) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=5))
        assert system.is_live(ref.stream_id)
        for _ in range(200):
            if not system.is_live(ref.stream_id):
                break
            await asyncio.sleep(0.01)
        assert not system.is_live(ref.stream_id)
        assert system.stats.passivations == 1
        await ref.execute(Record(amount=7))
        assert (await ref.state()).total == 12
        assert system.stats.activations == 2


async def test_live_actor_cap_holds_under_load(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger], max_live=8, idle_timeout=None) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(40)]

        async def hammer(ref: ProcessRef[Any, Any]) -> None:
            for i in range(5):
                await ref.execute(Record(amount=i))

        await asyncio.gather(*(hammer(r) for r in refs))
        stats = system.stats
        assert stats.max_live_seen <= 8 and stats.live <= 8
        assert stats.passivations >= 32
        states = [await r.state() for r in refs]
    assert all(s.total == 10 and s.entries == 5 for s in states)


async def test_group_commit_across_processes(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "db")
    async with LocalActorSystem(store, workflows=[Ledger], close_store=True) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(200)]
        before = store.stats.transactions
        await asyncio.gather(*(r.execute(Record(amount=3)) for r in refs))
        transactions = store.stats.transactions - before
    assert transactions < 200 / 5, transactions
    async with LmdbStore(tmp_path / "db") as reopened:
        for ref in refs:
            assert [e.payload["amount"] for e in await reopened.load(ref.stream_id)] == [3]


async def test_workflow_error_fails_alone(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        results = await asyncio.gather(
            ref.execute(Record(amount=1)),
            ref.execute(Record(amount=-1)),
            ref.execute(Record(amount=2)),
            return_exceptions=True,
        )
        assert isinstance(results[1], WorkflowError)
        assert [len(r) for r in (results[0], results[2])] == [1, 1]  # type: ignore[arg-type]
        assert (await ref.state()).total == 3
        await ref.execute(Close(reason="done"))
        with pytest.raises(WorkflowError):
            await ref.execute(Record(amount=1))
        state = await ref.state()
    assert state == await replay(store, ref).state()
    assert state.closed and state.total == 3


async def test_commit_failure_makes_the_actor_reload(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        real = store.commit_many

        async def failing(commits: Any) -> Any:
            monkeypatch.setattr(store, "commit_many", real)
            raise StoreError("disk on fire")

        monkeypatch.setattr(store, "commit_many", failing)
        with pytest.raises(StoreError):
            await ref.execute(Record(amount=10))
        reloads = system.stats.reloads
        assert (await ref.state()).total == 1  # the failed command left no trace in memory
        assert system.stats.reloads == reloads + 1
        await ref.execute(Record(amount=2))
        assert (await ref.state()).total == 3
    assert [e.payload["amount"] for e in await store.load(ref.stream_id)] == [1, 2]


async def test_conflict_with_another_writer_reloads_and_retries(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        # A second writer behind the actor's back (a failover, another node).
        await replay(store, ref).execute(Record(amount=100))
        events = await ref.execute(Record(amount=2))
        assert events[0].sequence == 3
        assert system.stats.conflicts == 1
        assert (await ref.state()).total == 103
        with pytest.raises(InvalidArgument, match="max_attempts"):
            await ref.execute_with_retry(Record(amount=1), 0)
        assert await ref.event_count() == 3


async def test_commands_decided_in_one_turn_after_another_writer_all_land_in_order(store: LmdbStore) -> None:
    """The actor decides two queued commands in one turn, the second on the state the first
    leaves, and commits both in one request. Another writer appended meanwhile: the first
    conflicts. Before, the second then matched the stream's version and was stored, decided on
    a state the store never had (and snapshotted): events out of order, a wrong total for good."""
    async with LocalActorSystem(store, workflows=[Ledger], snapshot_interval=3) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        await replay(store, ref).execute(Record(amount=100))  # behind the actor's back
        await asyncio.gather(ref.execute(Record(amount=10)), ref.execute(Record(amount=1000)))
        stored = [e.payload["amount"] for e in await store.load(ref.stream_id)]
        assert stored == [1, 100, 10, 1000]  # in arrival order, each once
        assert (await replay(store, ref).state()).total == 1111
        assert (await replay(store, ref).state_with_snapshot()).total == 1111
        assert (await ref.state()).total == 1111


async def test_ops_waiting_for_room_under_max_live_keep_their_order(store: LmdbStore) -> None:
    """The first op of a process waits for room (the one live actor is busy); a second op of the
    same process, dispatched after it, must run after it. Before, the second one made the actor
    itself once the busy one went idle, ran first, and the first found the ledger closed."""
    async with LocalActorSystem(store, workflows=[Ledger], max_live=1, idle_timeout=None) as system:
        busy = system.spawn("ledger", TENANT, LEDGER_ID)
        waiting = system.spawn("ledger", TENANT, LEDGER_ID)
        await busy.execute(Record(amount=1))  # the cap is reached
        first = asyncio.ensure_future(waiting.execute(Record(amount=7)))
        await busy.execute(Record(amount=2))  # busy meanwhile: the first op waits for room
        closed = await waiting.execute(Close())
        recorded = await first
        assert [e.sequence for e in recorded] == [1] and [e.sequence for e in closed] == [2]


async def test_a_spawned_process_starts_without_a_store_read(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_read(*args: Any) -> Any:
        raise AssertionError("a spawned process read the store")

    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        monkeypatch.setattr(store, "load_activation_now", no_read)
        monkeypatch.setattr(store, "load_activations_now", no_read)
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(3)]
        results = await asyncio.gather(*(ref.execute(Record(amount=1)) for ref in refs))
        assert [[e.sequence for e in events] for events in results] == [[1]] * 3
        assert system.stats.activations == 3
        monkeypatch.undo()
        # Given ids may name stored processes: their first activation reads the store.
        again = system.spawn("ledger", TENANT, LEDGER_ID, process_id=refs[0].process_id)
        await system.passivate_idle()
        assert [e.sequence for e in await again.execute(Record(amount=2))] == [2]
        assert (await again.state()).total == 3


async def test_a_spawned_process_written_by_another_writer_first_reloads(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        # Another handle on the identity writes before the spawned handle's first command:
        # the actor started from the initial state, so its commit conflicts and it reloads.
        await replay(store, ref).execute(Record(amount=100))
        events = await ref.execute(Record(amount=2))
        assert events[0].sequence == 2
        assert system.stats.conflicts == 1 and system.stats.reloads == 1
        assert (await ref.state()).total == 102


async def test_a_spawned_handles_first_read_reads_the_store(store: LmdbStore) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await replay(store, ref).execute(Record(amount=7))  # written before ref's first op
        assert (await ref.state()).total == 7  # not the initial state: reads skip no read


@pytest.mark.filterwarnings("ignore:execute dropped:RuntimeWarning")  # Close's cancellation, by design
async def test_a_spawned_handles_refused_first_command_is_decided_on_the_stored_state(
    store: LmdbStore,
) -> None:
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await replay(store, ref).execute(Close(reason="audit"))  # written before ref's first op
        # Refused on the initial state too ("negative amount"), but the process is closed:
        # the refusal must come from the stored state, with nothing written.
        with pytest.raises(WorkflowError, match="closed"):
            await ref.execute(Record(amount=-1))
        assert (await ref.state()).closed
        assert len(await store.load(ref.stream_id)) == 1
        fresh = system.spawn("ledger", TENANT, LEDGER_ID)
        with pytest.raises(WorkflowError, match="negative amount"):
            await fresh.execute(Record(amount=-1))  # nothing stored: refused on the initial state
        assert await store.load(fresh.stream_id) == []
        # Behind a command that commits, the refused one waits for that commit to confirm the state.
        other = system.spawn("ledger", TENANT, LEDGER_ID)
        results = await asyncio.gather(
            other.execute(Record(amount=5)), other.execute(Record(amount=-1)), return_exceptions=True
        )
        assert isinstance(results[1], WorkflowError) and "negative amount" in str(results[1])
        assert (await other.state()).total == 5


@pytest.mark.filterwarnings("ignore:execute dropped:RuntimeWarning")  # execute's drop is part of the API
async def test_process_api_parity(store: LmdbStore) -> None:
    from datetime import UTC, datetime, timedelta

    async with LocalActorSystem(store, workflows={"ledger": Ledger()}) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        ctx = ref.context_for_inbound("9900000000003:REF1")
        events = await ref.execute_with(Record(amount=1, notify="9900000000010"), ctx)
        assert events[0].correlation_id == ctx.correlation_id
        assert await store.outbox_count() == 0  # execute drops the outbox
        events, outbox = await ref.execute_and_collect(Record(amount=1, notify="x"))
        assert len(outbox) == 1 and outbox[0].causation_event_id == events[0].event_id
        due = datetime.now(UTC) + timedelta(minutes=5)
        await ref.execute_and_enqueue(Record(amount=1, notify="x", remind_at=due, register_key="malo-1"))
        assert await store.outbox_count() == 1
        (deadline,) = await store.deadlines_for_stream(ref.stream_id)
        found = await system.lookup(TENANT, "malo-1")
        assert found is not None and found.identity() == ref.identity()
        assert await system.lookup(TENANT, "nope") is None
        timeout_events = await found.execute_timeout(deadline)
        assert timeout_events is not None and timeout_events[0].event_type == "ledger.closed"
        assert await store.deadlines_for_stream(ref.stream_id) == []
        assert await ref.event_count() == 4
        assert (await ref.state_at(1)).total == 1
        assert isinstance(await ref.state_with_snapshot(), LedgerState)
        assert ref.process_id == ref.identity().process_id and ref.workflow_id == LEDGER_ID
        with pytest.raises(ValueError):
            await ref.state_at(9)
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        taken = [
            (await ref.execute_and_enqueue_with_snapshot(Record(amount=1), snapshot_interval=3))[1]
            for _ in range(6)
        ]
        assert taken == [False, False, True, False, False, True]
        assert await ref.execute_with_retry(Record(amount=1), 3)
        assert await ref.take_snapshot(interval=1)
    with pytest.raises(ActorSystemClosed):
        await ref.execute(Record(amount=1))


async def test_aclose_drains_mailboxes(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "db")
    system = LocalActorSystem(store, workflows=[Ledger], close_store=True)
    ref = system.spawn("ledger", TENANT, LEDGER_ID)
    pending = [asyncio.ensure_future(ref.execute(Record(amount=i))) for i in range(50)]
    await asyncio.sleep(0)
    await system.aclose()
    assert all(f.done() and not f.exception() for f in pending)
    async with LmdbStore(tmp_path / "db") as reopened:
        assert len(await reopened.load(ref.stream_id)) == 50


def test_process_ref_has_every_process_method_with_the_same_parameters() -> None:
    import inspect

    from mako_actors import Process
    from mako_actors.actors import ProcessRef

    skip = {"store", "new", "from_stream", "from_identity"}  # a ref is made by its actor system
    names = [n for n in dir(Process) if not n.startswith("_") and n not in skip]
    for name in names:
        assert hasattr(ProcessRef, name), f"ProcessRef lacks {name}"
        ours, theirs = getattr(Process, name), getattr(ProcessRef, name)
        if callable(ours):
            assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), (
                name
            )


async def test_gc_freeze_every_is_opt_in_and_undone_on_close(tmp_path: Path) -> None:
    import gc

    assert gc.get_freeze_count() == 0
    async with LmdbStore(tmp_path / "plain") as store, LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(20)]
        await asyncio.gather(*(ref.execute(Record(amount=1)) for ref in refs))
        assert gc.get_freeze_count() == 0  # off by default: no process-wide side effect
    async with LmdbStore(tmp_path / "frozen") as store:
        async with LocalActorSystem(store, workflows=[Ledger], gc_freeze_every=10) as system:
            refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(20)]
            await asyncio.gather(*(ref.execute(Record(amount=k)) for k, ref in enumerate(refs)))
            await asyncio.gather(*(ref.execute(Record(amount=1)) for ref in refs))
            # The live actors' state went to the permanent generation; commands work as ever.
            assert gc.get_freeze_count() > 0
            assert [(await ref.state()).total for ref in refs] == [k + 1 for k in range(20)]
        assert gc.get_freeze_count() == 0  # aclose unfroze it: frozen garbage is collectable
    with pytest.raises(InvalidArgument, match="gc_freeze_every"):
        LocalActorSystem(store, workflows=[Ledger], gc_freeze_every=-1)


async def test_live_actors_share_one_tenant_and_workflow_id_object(store: LmdbStore) -> None:
    # Identities decoded from plain data (a message, a Ray call) carry their own id objects;
    # live actors keep one shared copy of each (memory per live process). An identity made
    # of the shared objects already is kept as it is.
    from mako_actors import ProcessIdentity

    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        plain = [system.spawn("ledger", TENANT, LEDGER_ID).identity().to_plain() for _ in range(3)]
        refs = [system.resume(ProcessIdentity.model_validate(p)) for p in plain]
        assert refs[0].identity().tenant_id is not refs[1].identity().tenant_id
        for ref in refs:
            await ref.execute(Record(amount=1))
        live = [system._live[ref.stream_id].identity for ref in refs]
        assert live == [ref.identity() for ref in refs]
        first = live[0]
        assert all(i.tenant_id is first.tenant_id and i.workflow_id is first.workflow_id for i in live)
        again = system.spawn("ledger", first.tenant_id, first.workflow_id)
        await again.execute(Record(amount=1))
        assert system._live[again.stream_id].identity is again.identity()
        # Equal ids of a new object: shared copies, one new identity.
        other = system.resume(ProcessIdentity.model_validate(again.identity().to_plain()))
        await system.passivate_idle()
        await other.execute(Record(amount=2))
        kept = system._live[other.stream_id].identity
        assert kept is not other.identity() and kept == other.identity()
        assert kept.tenant_id is first.tenant_id and kept.workflow_id is first.workflow_id


async def test_ops_dispatched_before_the_first_activation_share_one_actor_in_order(
    store: LmdbStore,
) -> None:
    # The first activation of a system with an idle reaper waits (it starts the reaper), so
    # ``dispatch`` returns coroutines; a Ray host's batch makes all of them before any runs.
    # Run as tasks in that order, they must reach one actor, in the order they were made.
    async with LocalActorSystem(store, workflows=[Ledger], idle_timeout=60.0) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        ops = [Op(COMMAND, Record(amount=i)) for i in range(1, 11)]
        waiters = [asyncio.ensure_future(system.dispatch(ref.identity(), op)) for op in ops]
        outcomes = await asyncio.gather(*waiters)
        assert [o.events[0].payload["amount"] for o in outcomes] == list(range(1, 11))
        assert [o.events[0].sequence for o in outcomes] == list(range(1, 11))
        assert system.stats.activations == 1 and system.stats.conflicts == 0
        assert (await ref.state()).total == sum(range(1, 11))


async def test_enqueuing_commands_to_a_live_actor_skip_the_op(store: LmdbStore) -> None:
    """``execute_and_enqueue``(``_with``) to a live actor goes straight into its mailbox and is
    answered with the events alone; to an actor that is not live it dispatches an ``Op``."""
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        identity = ref.identity()
        assert system.submit_enqueue(identity, Record(amount=1), None) is None  # not live yet
        first = await ref.execute_and_enqueue(Record(amount=1, notify="9900000000010"))
        assert system.is_live(ref.stream_id)
        queued = system.submit_enqueue(identity, Record(amount=2, notify="9900000000010"), None)
        assert queued is not None
        assert [e.sequence for e in await queued] == [2]
        ctx = ref.context_for_inbound("9900000000003:REF1")
        events = await ref.execute_and_enqueue_with(Record(amount=3), ctx)
        assert [e.sequence for e in events] == [3]
        assert events[0].correlation_id == ctx.correlation_id
        assert await ref.execute_and_enqueue(Record(amount=0)) != []
        with pytest.raises(WorkflowError):  # refused: fails alone, nothing written
            await ref.execute_and_enqueue(Record(amount=-1))
        await system.passivate_idle()
        assert system.submit_enqueue(identity, Record(amount=1), None) is None
        again = system.resume(identity)
        events = await again.execute_and_enqueue_with(Record(amount=4), ctx)
        assert [e.sequence for e in events] == [5]
        assert [e.sequence for e in await again.execute_and_enqueue(Record(amount=5))] == [6]
        assert (await again.state()).total == 15 and len(first) == 1
    assert await store.outbox_count() == 2
    with pytest.raises(ActorSystemClosed):
        system.submit_enqueue(identity, Record(amount=1), None)


async def test_a_caller_behind_an_activation_survives_its_actor_making_room(store: LmdbStore) -> None:
    """``max_live`` = 1: Q's ``state()`` activates Q and finishes within its turn, the idle
    actor is passivated for R before Q's waiting command resumes. Before, that command failed
    with "actor ... was passivated" (InvalidArgument: an inbound answer refused with APERAK
    Z35). Passivation is transparent: it activates Q again."""
    refs = []
    for _ in range(3):
        process = Process(Ledger(), store, TENANT, LEDGER_ID)
        await process.execute(Record(amount=0))
        refs.append(process.identity())
    async with LocalActorSystem(store, workflows=[Ledger], idle_timeout=None, max_live=1) as system:
        x, q, r = (system.resume(identity) for identity in refs)
        await x.execute(Record(amount=0))  # X is the live actor
        results = await asyncio.gather(
            x.execute(Record(amount=1)), q.state(), q.execute(Record(amount=1)), r.execute(Record(amount=1)),
            return_exceptions=True,
        )  # fmt: skip
        assert [type(result).__name__ for result in results] == ["list", "LedgerState", "list", "list"]
    assert (await Process.from_identity(Ledger(), store, refs[1]).state()).total == 1


class _Escaped(BaseException):
    """Neither an ``Exception`` nor a cancellation: e.g. a test framework's failure."""


class Escaping(Ledger):
    def handle(self, state: LedgerState, command: Any) -> Any:
        if isinstance(command, Record) and command.amount == 13:
            raise _Escaped("not an Exception")
        return super().handle(state, command)


async def test_a_base_exception_in_handle_fails_its_command_only(store: LmdbStore) -> None:
    """Before, it left the runner's turn: the other processes' commands of that turn were never
    answered, their actors stayed busy for good, and ``aclose`` never returned."""
    async with LocalActorSystem(store, workflows=[Escaping], idle_timeout=None) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(3)]
        await asyncio.gather(*(ref.execute(Record(amount=0)) for ref in refs))
        loop = asyncio.get_running_loop()
        seen: list[BaseException] = []
        loop.set_exception_handler(lambda _, context: seen.append(context["exception"]))
        results = await asyncio.wait_for(
            asyncio.gather(*(ref.execute(Record(amount=a)) for ref, a in zip(refs, (1, 13, 1), strict=True)),
                           return_exceptions=True),
            timeout=10,
        )  # fmt: skip
        loop.set_exception_handler(None)
        assert [type(result).__name__ for result in results] == ["list", "_Escaped", "list"]
        assert [type(exc).__name__ for exc in seen] == ["_Escaped"]  # reported, not swallowed
        assert len(await asyncio.wait_for(refs[2].execute(Record(amount=2)), timeout=10)) == 1
    assert [(await replay(store, ref).state()).total for ref in refs] == [1, 0, 3]


async def test_aclose_finishes_commands_waiting_for_room_under_max_live(store: LmdbStore) -> None:
    """aclose completes every operation accepted before it. Before, commands waiting for room
    under ``max_live`` got ActorSystemClosed and were not written."""
    system = LocalActorSystem(store, workflows=[Ledger], idle_timeout=None, max_live=1)
    refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(4)]
    pending = [asyncio.ensure_future(ref.execute(Record(amount=1))) for ref in refs for _ in range(5)]
    await asyncio.sleep(0)
    await asyncio.wait_for(system.aclose(), timeout=30)
    assert all(len(done.result()) == 1 for done in pending)
    assert [(await replay(store, ref).state()).total for ref in refs] == [5, 5, 5, 5]
    with pytest.raises(ActorSystemClosed):
        await refs[0].execute(Record(amount=1))


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"snapshot_interval": -1}, "snapshot_interval must be 0 (never) or positive"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ],
)
def test_settings_an_actor_system_cannot_run_with_are_refused(
    store: LmdbStore, setting: dict[str, int], said: str
) -> None:
    """``max_batch=0`` was accepted, and the first command spun the event loop forever (no
    ``wait_for`` could end it); a negative snapshot interval was taken silently."""
    with pytest.raises(InvalidArgument, match=re.escape(said)):
        LocalActorSystem(store, [Ledger], **setting)  # type: ignore[arg-type]


def test_a_virtual_clock_refuses_a_naive_instant() -> None:
    """``set`` read a naive instant as this machine's local time (a 12:00 meant as UTC became
    11:00 UTC in Berlin); the constructor refused it already."""
    from datetime import datetime

    from mako_actors import VirtualClock

    clock = VirtualClock(datetime.fromisoformat("2025-11-13T12:00:00+00:00"))
    with pytest.raises(InvalidArgument, match="aware instant"):
        clock.set(datetime(2025, 11, 13, 12, 45))
    assert clock().isoformat() == "2025-11-13T12:00:00+00:00"


async def test_a_missing_command_is_refused_alike_by_process_and_actor(store: LmdbStore) -> None:
    """``execute(None)``: ``Process`` returned ``[]`` (taken for a deadline's "nothing to do"),
    an actor failed on a bare ``AssertionError``. Both refuse it now, writing nothing."""
    process = Process(Ledger(), store, TENANT, LEDGER_ID)
    for call in (process.execute, process.execute_and_enqueue, process.execute_and_collect):
        with pytest.raises(InvalidArgument, match="a command is needed, got None"):
            await call(None)  # type: ignore[arg-type]
    async with LocalActorSystem(store, [Ledger]) as system:
        ref = system.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        for call in (ref.execute, ref.execute_and_enqueue, ref.execute_and_collect):
            with pytest.raises(InvalidArgument, match="a command is needed, got None"):
                await call(None)  # type: ignore[arg-type]
        assert await ref.event_count() == 1
    assert await process.event_count() == 0


async def test_a_stale_deadline_is_gone_for_process_and_actor_alike(store: LmdbStore) -> None:
    """``execute_timeout`` of a deadline its process cancelled meanwhile, whose compensation is
    nothing now: ``Process`` returned ``None`` (a scheduler counted it fired), an actor raised
    ``DeadlineGone``. Both say ``DeadlineGone`` now, writing nothing."""
    from datetime import UTC, datetime

    from mako_actors.errors import DeadlineGone

    due = datetime(2025, 1, 1, tzinfo=UTC)
    async with LocalActorSystem(store, [Ledger]) as system:
        handles = (Process(Ledger(), store, TENANT, LEDGER_ID), system.spawn("ledger", TENANT, LEDGER_ID))
        for handle in handles:
            await handle.execute_and_enqueue(Record(amount=1, remind_at=due))
            [deadline] = await store.deadlines_for_stream(handle.stream_id)
            await handle.execute_and_enqueue(Close())  # cancels it
            with pytest.raises(DeadlineGone):
                await handle.execute_timeout(deadline)
            assert await handle.event_count() == 2
