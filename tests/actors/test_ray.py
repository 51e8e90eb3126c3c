"""``RayActorSystem`` on a real local Ray cluster, both placements, over a shared LMDB directory."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import ray

from mako_actors import Process, VersionConflict, VirtualClock, WorkflowError
from mako_actors.actors import CommandOutcomeUnknown, ProcessRef, RayActorSystem
from mako_actors.actors._routing import host_index
from stores.lmdb import LmdbStore
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.actors.ray_workflows import Fail, Faulty, FixedClock
from tests.workflows import Ledger, Record

FAULTY_ID = LEDGER_ID.__class__.new("faulty", "FV2025-10-01")

pytestmark = pytest.mark.usefixtures("ray_cluster")


def system(path: Path, placement: Any, **kw: Any) -> RayActorSystem:
    return RayActorSystem(
        path,
        workflows=[Ledger, Faulty],
        placement=placement,
        hosts=2,
        name_prefix=f"t-{uuid.uuid4().hex[:8]}",
        **kw,
    )


async def replayed(path: Path, ref: ProcessRef[Any, Any]) -> tuple[list[int], Any]:
    async with LmdbStore(path) as store:
        events = await store.load(ref.stream_id)
        state = await Process.from_identity(Ledger(), store, ref.identity()).state()
    return [e.sequence for e in events], state


@pytest.mark.parametrize("placement", ["hosted", "dedicated"])
async def test_core_suite(tmp_path: Path, placement: str) -> None:
    path = tmp_path / "db"
    async with system(path, placement) as actors:
        one = actors.spawn("ledger", TENANT, LEDGER_ID)
        results = await asyncio.gather(*(one.execute(Record(amount=i)) for i in range(200)))
        assert sorted(r[0].sequence for r in results) == list(range(1, 201))
        state = await one.state()
        count = 3 if placement == "dedicated" else 20
        others = [actors.spawn(Ledger, TENANT, LEDGER_ID) for _ in range(count)]
        await asyncio.gather(*(r.execute(Record(amount=5)) for r in others for _ in range(3)))
        with pytest.raises(WorkflowError) as refused:
            await one.execute(Record(amount=-1))
        assert refused.value.kind.value == "rejected"
        events = await one.execute_and_enqueue(Record(amount=1, register_key="malo-9"))
        assert events[0].sequence == 201
        found = await actors.lookup(TENANT, "malo-9")
        assert found is not None and found.identity() == one.identity()
        assert await one.event_count() == 201
        assert (await one.state_at(2)).entries == 2
        stats = await actors.get_stats()
        assert stats.conflicts == 0 and stats.commands >= 200 + 3 * len(others)
        other_states = [await r.state() for r in others]
    sequences, replay = await replayed(path, one)
    assert sequences == list(range(1, 202))
    assert state.total == sum(range(200)) and replay.total == state.total + 1
    assert all(s.total == 15 for s in other_states)


@pytest.mark.parametrize("placement", ["hosted", "dedicated"])
async def test_engine_errors_arrive_as_their_class(tmp_path: Path, placement: str) -> None:
    async with system(tmp_path / "db", placement) as actors:
        ref = actors.spawn("faulty", TENANT, FAULTY_ID)
        with pytest.raises(VersionConflict) as conflict:
            await ref.execute(Fail(kind="conflict"))
        assert (conflict.value.expected, conflict.value.actual) == ("3", 7)
        with pytest.raises(WorkflowError):
            await ref.execute(Fail(kind="workflow"))
        await ref.execute(Fail(kind="ok"))
        assert (await ref.state()).passed == 1


async def test_an_error_that_cannot_travel_back_fails_its_command_only(tmp_path: Path) -> None:
    """A workflow's exception that pickles but does not unpickle. Before, the whole batch's
    results were unreadable at the driver: the other commands, committed, were reported failed
    (a caller resending them would run them twice)."""
    from mako_actors import EngineError

    async with system(tmp_path / "db", "hosted") as actors:
        await actors.spawn("faulty", TENANT, FAULTY_ID).execute(Fail(kind="ok"))  # the host is up
        good = [actors.spawn("faulty", TENANT, FAULTY_ID) for _ in range(5)]
        bad = actors.spawn("faulty", TENANT, FAULTY_ID)
        results = await asyncio.gather(
            *(r.execute(Fail(kind="ok")) for r in good), bad.execute(Fail(kind="unpicklable")),
            return_exceptions=True,
        )  # fmt: skip
        assert all(isinstance(r, list) for r in results[:5]), results
        assert isinstance(results[5], EngineError) and "Unpicklable: 7: bad input" in str(results[5])
        assert [(await r.state()).passed for r in good] == [1] * 5


async def test_killed_host_loses_no_acknowledged_command(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with system(path, "hosted") as actors:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID)
        for i in range(20):
            await ref.execute(Record(amount=i))
        host = actors.host_for(ref.stream_id)
        assert host is actors.host_handles()[host_index(str(ref.stream_id), 2)]
        ray.kill(host, no_restart=False)
        acknowledged = 20
        for _ in range(100):  # the restart takes a moment; a reply lost meanwhile is reported, not retried
            try:
                await ref.execute(Record(amount=100))
                acknowledged += 1
                break
            except CommandOutcomeUnknown:
                await asyncio.sleep(0.1)
        assert acknowledged == 21, "no command was acknowledged after the host was killed"
        count = await ref.event_count()
        assert count >= acknowledged  # an unknown outcome may have been stored; acknowledged ones are
        state = await ref.state()
    sequences, replay = await replayed(path, ref)
    assert sequences == list(range(1, count + 1))
    assert state == replay
    assert replay.total - sum(range(20)) == 100 * (count - 20)


@pytest.mark.parametrize("placement", ["hosted", "dedicated"])
async def test_a_resent_write_is_not_overtaken_by_its_callers_next(tmp_path: Path, placement: str) -> None:
    """The actor dies while deciding an idempotent write; the caller's next write waits in the
    driver meanwhile, and (dedicated) a later one is sent during the resend's back-off. The
    resend goes first: before, the next writes left at once for the restarted actor and the
    resent one ran after them, so the process saw the caller's writes out of order."""
    marker = tmp_path / "crash"
    async with system(tmp_path / "db", placement) as actors:
        ref = actors.spawn("faulty", TENANT, FAULTY_ID)
        await ref.execute(Fail(kind="ok", label="first"))
        crashing = asyncio.create_task(ref.execute(
            Fail(kind="crash_once", label="resent", marker=str(marker), idempotency_key="k1")
        ))  # fmt: skip
        while not marker.exists():
            await asyncio.sleep(0.01)
        following = asyncio.create_task(ref.execute(Fail(kind="ok", label="next", idempotency_key="k2")))
        while not any(b.items for b in actors._batchers.values()):  # queued behind the call in flight
            await asyncio.sleep(0.01)
        Path(f"{marker}.go").write_text("")
        calls = [crashing, following]
        expected: tuple[str, ...] = ("first", "resent", "next")
        if placement == "dedicated":
            while ref.stream_id in actors._dedicated:  # the dead actor is dropped: the resend backs off
                await asyncio.sleep(0.01)
            later = Fail(kind="ok", label="later", idempotency_key="k3")
            calls.append(asyncio.create_task(ref.execute(later)))
            expected += ("later",)
        await asyncio.gather(*calls)
        assert (await ref.state()).labels == expected
        assert not actors._resending


@pytest.mark.parametrize("serving", ["commands", "deadlines", "outbox"])
async def test_a_host_frees_the_slot_of_a_reader_killed_mid_read_beside_it(
    tmp_path: Path, serving: str
) -> None:
    """A reader of the hosts' store (a CLI on the node) is killed mid-read while they run: a
    host frees its slot while it serves, also when it only fires deadlines or delivers the
    outbox (it writes then too). Before, only ``serve`` and an open did: a host running for
    long kept the slot's snapshot, and its store grew with every write until reopened; then
    only a host's next batch of commands did."""
    from tests.actors.ray_workflows import FileSender
    from tests.stores.test_stale_readers import _killed_mid_read

    path = tmp_path / "db"
    actors = system(path, "hosted")
    actors._base_spec["stale_readers_every"] = 0.2  # (30 s by default)
    async with actors:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))  # the hosts are up, with the store open
        async with LmdbStore(path) as beside:
            pid = _killed_mid_read(path)
            assert f"{pid} " in str(beside._env.readers())
            await asyncio.sleep(0.3)
            if serving == "commands":
                await ref.execute(Record(amount=2))
            elif serving == "deadlines":
                await actors.fire_due_deadlines()
            else:
                await actors.deliver_outbox(FileSender(str(tmp_path / "sent")))
            assert f"{pid} " not in str(beside._env.readers())
        assert (await ref.state()).total == (3 if serving == "commands" else 1)


async def test_dedicated_passivation_and_get_if_exists(tmp_path: Path) -> None:
    path = tmp_path / "db"
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    first = RayActorSystem(path, workflows=[Ledger], placement="dedicated", name_prefix=prefix)
    second = RayActorSystem(path, workflows=[Ledger], placement="dedicated", name_prefix=prefix)
    try:
        ref = first.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        # The second system finds the same named Ray actor: one actor, so no conflicts.
        again = second.resume(ref.identity())
        await asyncio.gather(*(h.execute(Record(amount=1)) for h in (ref, again) for _ in range(20)))
        assert (await first.get_stats()).conflicts == 0
        assert await first.passivate_idle() == 1
        assert (await first.get_stats()).live == 0
        assert ref.stream_id not in first._last_used  # the driver keeps nothing per passivated process
        assert (await ref.state()).total == 41  # re-activated from the store
    finally:
        await first.aclose()
        await second.aclose()


async def test_hosts_stamp_the_drivers_virtual_clock(tmp_path: Path) -> None:
    start = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    clock = VirtualClock(start)
    async with system(tmp_path / "db", "hosted", clock=clock) as actors:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID)
        [first] = await ref.execute(Record(amount=1))
        clock.advance(timedelta(days=3))
        [second] = await ref.execute(Record(amount=2))
    assert (first.recorded_at, second.recorded_at) == (start, start + timedelta(days=3))


async def test_a_picklable_clock_runs_on_the_hosts(tmp_path: Path) -> None:
    instant = datetime(2030, 1, 1, tzinfo=UTC)
    async with system(tmp_path / "db", "hosted", clock=FixedClock(instant)) as actors:
        [event] = await actors.spawn("ledger", TENANT, LEDGER_ID).execute(Record(amount=1))
    assert event.recorded_at == instant


async def test_concurrent_commands_of_two_drivers_apply_in_arrival_order(tmp_path: Path) -> None:
    # Two systems on the same host actors stand for two drivers; each sends its 50 commands
    # without waiting, so both interleave at the host. Each driver's own order must survive.
    path = tmp_path / "db"
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    first = RayActorSystem(path, workflows=[Ledger], hosts=2, name_prefix=prefix, kill_on_close=False)
    second = RayActorSystem(path, workflows=[Ledger], hosts=2, name_prefix=prefix)
    try:
        ref = first.spawn("ledger", TENANT, LEDGER_ID)
        again = second.resume(ref.identity())
        results = await asyncio.gather(
            *(ref.execute(Record(amount=i)) for i in range(1, 51)),
            *(again.execute(Record(amount=1000 + i)) for i in range(1, 51)),
        )
        stats = await first.get_stats()
    finally:
        await first.aclose()
        await second.aclose()
    by_amount = {r[0].payload["amount"]: r[0].sequence for r in results}
    for base in (0, 1000):
        sequences = [by_amount[base + i] for i in range(1, 51)]
        assert sequences == sorted(sequences)  # per driver: in the order sent
    assert sorted(by_amount.values()) == list(range(1, 101)) and stats.conflicts == 0


async def test_one_loop_turn_travels_in_one_call_with_errors_per_command(tmp_path: Path) -> None:
    async with system(tmp_path / "db", "hosted") as actors:
        ref = actors.spawn("faulty", TENANT, FAULTY_ID)
        calls = 0
        send = actors._call

        async def counting(key: Any, items: Any) -> None:
            nonlocal calls
            calls += 1
            await send(key, items)

        actors._call = counting  # type: ignore[method-assign]
        outcomes = await asyncio.gather(
            *(ref.execute(Fail(kind="workflow" if i % 3 == 0 else "ok")) for i in range(30)),
            return_exceptions=True,
        )
        assert calls == 1
        assert [isinstance(o, WorkflowError) for o in outcomes] == [i % 3 == 0 for i in range(30)]
        assert (await ref.state()).passed == 20


async def test_a_passivated_actor_is_replaced_only_after_its_kill_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ray.kill only sends the kill; on a busy machine the GCS processes it later. Make that
    # delay long and certain: the next call must still reach a fresh actor, never the old one.
    real_kill = ray.kill
    kills: list[threading.Timer] = []

    def late_kill(handle: Any, *, no_restart: bool = True) -> None:
        kills.append(threading.Timer(0.5, real_kill, args=(handle,), kwargs={"no_restart": no_restart}))
        kills[-1].start()

    monkeypatch.setattr(ray, "kill", late_kill)
    actors = system(tmp_path / "db", "dedicated")
    try:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        first = actors._dedicated[ref.stream_id]
        assert await actors.passivate_idle() == 1
        await ref.execute(Record(amount=2))  # the old actor is closed and about to die
        assert actors._dedicated[ref.stream_id]._actor_id != first._actor_id
        assert (await ref.state()).total == 3
    finally:
        await actors.aclose()
        for timer in kills:
            timer.join()


async def test_a_write_to_a_dead_dedicated_actor_is_unknown_and_the_next_call_gets_a_new_one(
    tmp_path: Path,
) -> None:
    """A dedicated actor killed from outside (another driver's rebalance, an operator): the write
    that finds it dead has an unknown outcome, and the next call starts a new actor. Before, the
    dead handle was kept, and every later write of the process failed the same way."""
    actors = system(tmp_path / "db", "dedicated")
    try:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        dead = actors._dedicated[ref.stream_id]
        ray.kill(dead, no_restart=True)
        with pytest.raises(CommandOutcomeUnknown):
            for _ in range(100):  # until the kill has landed
                await ref.execute(Record(amount=0))
                await asyncio.sleep(0.05)
        assert len(await ref.execute(Record(amount=2))) == 1
        assert actors._dedicated[ref.stream_id]._actor_id != dead._actor_id
        assert (await ref.state()).total == 3
    finally:
        await actors.aclose()


async def test_aclose_waits_for_every_operation_already_sent(tmp_path: Path) -> None:
    # Hosted commands join their host's batch when sent, with no coroutine of the system in
    # between: aclose must still wait for each of them (answered, and durable) before it ends.
    path = tmp_path / "db"
    actors = system(path, "hosted", max_inflight_calls=1)
    refs = [actors.spawn("ledger", TENANT, LEDGER_ID) for _ in range(40)]
    await refs[0].execute(Record(amount=1))  # the hosts are up
    sent = [asyncio.ensure_future(r.execute(Record(amount=2))) for r in refs for _ in range(3)]
    await asyncio.sleep(0)  # every command is in a batch now, most not sent yet
    await actors.aclose()
    assert all(task.done() and task.exception() is None for task in sent)
    totals = [(await replayed(path, r))[1].total for r in refs]
    assert totals == [7] + [6] * 39


@pytest.mark.parametrize("placement", ["hosted", "dedicated"])
async def test_two_stores_under_the_same_names_are_refused(tmp_path: Path, placement: str) -> None:
    """Two systems with the same names share actors. Before, a second system on another store
    got the first one's hosts: its commands were acknowledged and written into the first store."""
    from mako_actors import InvalidArgument

    prefix = f"t-{uuid.uuid4().hex[:8]}"
    first = RayActorSystem(tmp_path / "a", [Ledger], placement=placement, hosts=2, name_prefix=prefix)
    second = RayActorSystem(tmp_path / "b", [Ledger], placement=placement, hosts=2, name_prefix=prefix)
    try:
        await first.spawn("ledger", TENANT, LEDGER_ID).execute(Record(amount=1))
        await first.lookup(TENANT, "nothing")  # (dedicated: its registry actor is up too)
        ref = second.spawn("ledger", TENANT, LEDGER_ID)
        if placement == "hosted":
            with pytest.raises(InvalidArgument, match=r"serves .*/a, not .*/b"):
                await ref.execute(Record(amount=42))
        else:  # its own actor per process, on its own store; the registry actor is shared
            await ref.execute(Record(amount=42))
        with pytest.raises(InvalidArgument, match="another name_prefix"):
            await second.lookup(TENANT, "nothing")
    finally:
        await second.aclose()
        await first.aclose()
    async with LmdbStore(tmp_path / "a") as store:
        assert await store.stream_version(ref.stream_id) == 0


async def test_after_aclose_every_call_is_refused_and_no_actor_is_made_again(tmp_path: Path) -> None:
    """Before, lookup, passivate_idle and get_stats went on after aclose and made the hosts
    again, left running with the store open."""
    from mako_actors.actors import ActorSystemClosed

    actors = system(tmp_path / "db", "hosted")
    await actors.spawn("ledger", TENANT, LEDGER_ID).execute(Record(amount=1))
    await actors.aclose()
    calls = (
        lambda: actors.lookup(TENANT, "k"), actors.passivate_idle, actors.get_stats, actors.fire_due_deadlines
    )
    for call in calls:
        with pytest.raises(ActorSystemClosed):
            await call()
    named = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in named if n.startswith(actors.name_prefix)]


async def test_a_driver_whose_shared_hosts_another_driver_ended_gets_new_ones(tmp_path: Path) -> None:
    """Two drivers on one store share hosts by name; the first one's aclose ends them. Before,
    every later call of the second driver failed (CommandOutcomeUnknown), for good: its handles
    pointed at the ended actors. Now the call that meets the dead host is reported unknown, and
    the next one looks the hosts up by name again (made anew)."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    first = RayActorSystem(tmp_path / "db", [Ledger], hosts=2, name_prefix=prefix)
    second = RayActorSystem(tmp_path / "db", [Ledger], hosts=2, name_prefix=prefix)
    try:
        ref = second.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        await first.spawn("ledger", TENANT, LEDGER_ID).execute(Record(amount=1))
        await first.aclose()  # ends the hosts both use
        outcomes: list[str] = []
        while outcomes[-2:] != ["ok", "ok"]:
            # (Until Ray has processed the kill, the name may still hand out the dying actor.)
            assert len(outcomes) < 50, outcomes
            try:
                await ref.execute(Record(amount=1))
                outcomes.append("ok")
            except CommandOutcomeUnknown:
                outcomes.append("unknown")
                await asyncio.sleep(0.05)
        stored = (await ref.state()).total - 1
        assert outcomes.count("ok") <= stored <= len(outcomes)
    finally:
        await second.aclose()


async def test_a_call_the_hosts_refused_as_closed_by_another_driver_is_resent(tmp_path: Path) -> None:
    """Another driver's aclose closed the shared hosts (they refuse everything, unrun) and ends
    them a moment later. Before, this driver's call failed with ActorSystemClosed, though its
    system is open: now it is resent to the hosts looked up again, made anew once ended."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    first = RayActorSystem(tmp_path / "db", [Faulty], hosts=2, name_prefix=prefix, kill_on_close=False)
    second = RayActorSystem(tmp_path / "db", [Faulty], hosts=2, name_prefix=prefix)
    try:
        ref = second.spawn("faulty", TENANT, FAULTY_ID)
        await ref.execute(Fail(kind="ok", label="before"))
        hosts = first.host_handles()
        await first.aclose()  # closed, still alive: its kill comes later

        async def end_them() -> None:
            await asyncio.sleep(0.3)
            for host in hosts:
                ray.kill(host, no_restart=True)

        ending = asyncio.create_task(end_them())
        await ref.execute(Fail(kind="ok", label="after", idempotency_key="k-after"))
        await ending
        assert (await ref.state()).labels == ("before", "after")
    finally:
        await second.aclose()


async def test_aclose_waits_for_a_firing_of_deadlines_under_way(tmp_path: Path) -> None:
    """Before, aclose closed the hosts under a running fire_due_deadlines: the firing failed
    with 'store is closed', and a deadline it was firing was dead-lettered yet stayed due."""
    start = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    clock = VirtualClock(start)
    path = tmp_path / "db"
    actors = system(path, "hosted", clock=clock)
    refs = [actors.spawn("ledger", TENANT, LEDGER_ID) for _ in range(100)]
    await asyncio.gather(
        *(r.execute_and_enqueue(Record(amount=1, remind_at=start + timedelta(hours=1))) for r in refs)
    )
    clock.advance(timedelta(hours=2))
    firing = asyncio.ensure_future(actors.fire_due_deadlines())
    await asyncio.sleep(0.05)  # under way on the host
    await actors.aclose()
    assert firing.done() and await firing == 100
    async with LmdbStore(path) as store:
        assert await store.due_deadlines(clock(), 200) == [] and await store.dead_letters() == []


async def test_a_store_the_hosts_cannot_open_is_named_not_an_unknown_outcome(tmp_path: Path) -> None:
    """Before, a host that failed in its constructor (a store path below a regular file) gave
    CommandOutcomeUnknown for a write ("may or may not have been stored", false: nothing ran)
    and a read waited ~25 s for the same."""
    from mako_actors.actors import HostStartFailed

    (tmp_path / "afile").write_text("")
    async with system(tmp_path / "afile" / "db", "hosted") as actors:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID)
        with pytest.raises(HostStartFailed, match=r"cannot open LMDB store .*Not a directory"):
            await ref.execute(Record(amount=1))
        with pytest.raises(HostStartFailed, match="cannot open LMDB store"):
            await ref.state()


async def test_deadlines_fire_through_the_actor_that_owns_the_process(tmp_path: Path) -> None:
    """Hosted on a shared store, host 0 fired every deadline through an actor of its own: a
    second live actor of another host's process, whose owner then answered reads from the
    state before the timeout (closed=False) until its next write conflicted."""
    start = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    clock = VirtualClock(start)
    async with system(tmp_path / "db", "hosted", clock=clock) as actors:
        refs = [actors.spawn("ledger", TENANT, LEDGER_ID) for _ in range(12)]
        for r in refs:
            await r.execute_and_enqueue(Record(amount=1, remind_at=start + timedelta(hours=1)))
        assert len({host_index(str(r.stream_id), 2) for r in refs}) == 2  # both hosts own some
        clock.advance(timedelta(hours=2))
        assert await actors.fire_due_deadlines() == 12
        assert [(await r.state()).closed for r in refs] == [True] * 12
        assert (await actors.get_stats()).conflicts == 0


async def test_a_command_class_the_workers_cannot_import_fails_as_an_engine_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command of a module only the driver has (an unsaved helper module beside a notebook):
    the host cannot read the batch. Before, the callers got Ray's own ``RayTaskError``; no Ray
    type may reach a caller. Nothing is written."""
    import sys
    import types

    from pydantic import BaseModel

    from mako_actors import EngineError

    module = types.ModuleType("only_on_the_driver")

    class Pay(BaseModel):
        amount: int

    Pay.__module__, Pay.__qualname__ = module.__name__, "Pay"
    module.Pay = Pay  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    async with system(tmp_path / "db", "hosted") as actors:
        ref = actors.spawn("ledger", TENANT, LEDGER_ID)
        await ref.execute(Record(amount=1))
        with pytest.raises(EngineError, match="a Ray worker failed: ModuleNotFoundError"):
            await ref.execute(Pay(amount=5))
        assert (await ref.state()).total == 1
