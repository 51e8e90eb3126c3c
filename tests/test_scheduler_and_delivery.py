"""Deadline scheduler (virtual clock, restarts, failures) and the outbox worker (backoff, dead letters)."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors import Deadline, OutboxMessage, OutboxMessageId, Process, TenantId, WorkflowError, WorkflowId
from mako_actors.delivery import OutboxWorker, PermanentDeliveryError, RetryPolicy
from mako_actors.errors import StoreError
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore
from tests.test_delivery import FailingAfter
from tests.workflows import Ledger, Record

T0 = datetime(2025, 6, 5, 12, 0, tzinfo=UTC)
TENANT = TenantId.from_party_id("9900000002009")
WF = WorkflowId.new("ledger", "FV2510")


async def test_deadlines_fire_at_their_time_on_a_virtual_clock_and_survive_restart(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    async with LmdbStore(tmp_path) as store:
        p = Process(Ledger(), store, TENANT, WF, clock=clock)
        await p.execute_and_enqueue(Record(amount=1, remind_at=T0 + timedelta(hours=2)))
        other = Process(Ledger(), store, TENANT, WF, clock=clock)
        await other.execute_and_enqueue(Record(amount=1, remind_at=T0 + timedelta(hours=5)))
    async with LmdbStore(tmp_path) as store:  # a restart: deadlines are rows, not timers
        scheduler = DeadlineScheduler(store, process_firer(store, {"ledger": Ledger()}, clock), clock)
        assert await scheduler.run_due() == 0
        assert await scheduler.advance_to(clock, T0 + timedelta(hours=3)) == 1
        assert (await Process.from_identity(Ledger(), store, p.identity()).state()).closed
        assert not (await Process.from_identity(Ledger(), store, other.identity()).state()).closed
        assert await scheduler.advance_to(clock, T0 + timedelta(hours=6)) == 1
        assert clock() == T0 + timedelta(hours=6)
        events = await store.load(other.stream_id)
        assert events[-1].recorded_at == T0 + timedelta(hours=5)  # fired at its historic time
        assert await scheduler.run_due() == 0
        assert scheduler.stats.labels == {"reminder": 2}


async def test_a_refused_compensation_is_dead_lettered_not_retried_forever(tmp_path: Path) -> None:
    clock = VirtualClock(T0)

    async def refuse(deadline: Deadline) -> object:
        raise WorkflowError.rejected("cannot compensate")

    async with LmdbStore(tmp_path) as store:
        p = Process(Ledger(), store, TENANT, WF, clock=clock)
        await p.execute_and_enqueue(Record(amount=1, remind_at=T0))
        scheduler = DeadlineScheduler(store, refuse, clock)
        assert await scheduler.run_due() == 0  # given up, not fired (a replay's report counted it)
        assert scheduler.stats.failed == 1 and scheduler.stats.fired == 0
        [letter] = await store.dead_letters()
        assert letter.kind == "deadline" and "cannot compensate" in letter.reason
        assert await store.due_deadlines(T0, 10) == []


async def test_a_bug_in_on_deadline_dead_letters_that_deadline_and_the_others_still_fire(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(T0)

    class Buggy(Ledger):
        def on_deadline(self, deadline: Deadline, state: object) -> object:
            if deadline.due_at == T0:
                raise KeyError("a bug")
            return super().on_deadline(deadline, state)

    async with LmdbStore(tmp_path) as store:
        first, second = (
            Process(Ledger(), store, TENANT, WF, clock=clock),
            Process(Ledger(), store, TENANT, WF, clock=clock),
        )
        await first.execute_and_enqueue(Record(amount=1, remind_at=T0))
        await second.execute_and_enqueue(Record(amount=1, remind_at=T0 + timedelta(hours=1)))
        scheduler = DeadlineScheduler(store, process_firer(store, {"ledger": Buggy()}, clock), clock)
        # Before: the KeyError left run_due, and serve's Frist loop ended with it (every later
        # Frist waited for a restart, which met the same deadline first).
        assert await scheduler.advance_to(clock, T0 + timedelta(hours=2)) == 1
        assert scheduler.stats.failed == 1 and scheduler.stats.labels == {"reminder": 1}
        [letter] = await store.dead_letters()
        assert letter.kind == "deadline" and letter.reason == "KeyError: 'a bug'"
        assert letter.payload["stream_id"] == str(first.stream_id)
        assert (await Process.from_identity(Ledger(), store, second.identity()).state()).closed
        assert await store.due_deadlines(T0 + timedelta(hours=2), 10) == []


@pytest.mark.parametrize("writes", [0, 1])
async def test_a_deadline_given_up_on_is_either_a_dead_letter_or_pending_never_both(
    tmp_path: Path, writes: int
) -> None:
    """The letter and the cancel were two writes: a crash between them left both, the restart
    fired the deadline again and wrote a second letter, and requeueing both compensated twice."""
    clock = VirtualClock(T0)
    refused = True

    class Compensating(Ledger):  # each firing books 10 more: a second one shows in the total
        def on_deadline(self, deadline: Deadline, state: object) -> object:
            if refused:
                raise WorkflowError.rejected("cannot compensate")
            return Record(amount=10)

    async with FailingAfter(tmp_path / "db") as store:
        p = Process(Ledger(), store, TENANT, WF, clock=clock)
        await p.execute_and_enqueue(Record(amount=1, remind_at=T0))
        scheduler = DeadlineScheduler(store, process_firer(store, {"ledger": Compensating()}, clock), clock)
        store.writes = writes
        with contextlib.suppress(StoreError):  # the store gone mid-way, as in a crash
            await scheduler.run_due()
        store.writes = None
        await scheduler.run_due()  # the restart's run
        letters = await store.dead_letters()
        assert len(letters) == 1 and await store.due_deadlines(T0, 10) == []
        refused = False  # the operator fixed the cause and puts every open letter back
        for letter in letters:
            await store.requeue_dead_letter(letter.position, clock())
            await scheduler.run_due()
        assert (await Process.from_identity(Ledger(), store, p.identity()).state()).total == 11


async def test_a_deadline_cancelled_while_it_failed_is_no_dead_letter(tmp_path: Path) -> None:
    """A letter of a Frist its process cancelled meanwhile (answered) would, requeued, fire it."""
    clock = VirtualClock(T0)
    async with LmdbStore(tmp_path) as store:
        p = Process(Ledger(), store, TENANT, WF, clock=clock)
        await p.execute_and_enqueue(Record(amount=1, remind_at=T0))

        async def answered_meanwhile(deadline: Deadline) -> object:
            await store.cancel_deadline(deadline.deadline_id)
            raise WorkflowError.rejected("cannot compensate")

        scheduler = DeadlineScheduler(store, answered_meanwhile, clock)
        await scheduler.run_due()
        assert await store.dead_letters() == [] and scheduler.stats.failed == 0


def test_virtual_clock_refuses_to_go_back() -> None:
    clock = VirtualClock(T0)
    clock.advance(timedelta(minutes=1))
    with pytest.raises(ValueError):
        clock.set(T0)


class FlakySender:
    def __init__(self, failures: int, permanent: bool = False) -> None:
        self.failures = failures
        self.permanent = permanent
        self.sent: list[OutboxMessage] = []

    async def send(self, message: OutboxMessage) -> None:
        if self.failures > 0:
            self.failures -= 1
            if self.permanent:
                raise PermanentDeliveryError("receiver rejects it")
            raise ConnectionError("AS4 endpoint down")
        self.sent.append(message)


async def _one_message(store: LmdbStore, clock: VirtualClock) -> None:
    p = Process(Ledger(), store, TENANT, WF, clock=clock)
    await p.execute_and_enqueue(Record(amount=1, notify="9900000001001"))


async def test_outbox_worker_retries_with_backoff_then_delivers(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    sender = FlakySender(failures=2)
    async with LmdbStore(tmp_path) as store:
        await _one_message(store, clock)
        worker = OutboxWorker(store, sender, clock, RetryPolicy(max_attempts=5), rng=random.Random(1))
        first = await worker.run_once()
        assert (first.delivered, first.retried) == (0, 1)
        assert (await worker.run_once()).retried == 0  # not due yet: backoff holds it
        [waiting] = await store.pending(10, T0 + timedelta(days=1))
        assert waiting.attempts == 1 and "AS4 endpoint down" in (waiting.last_error or "")
        assert T0 + timedelta(seconds=1) <= waiting.next_attempt_at <= T0 + timedelta(seconds=2)
        clock.advance(timedelta(seconds=2))
        assert (await worker.run_once()).retried == 1
        clock.advance(timedelta(seconds=4))
        assert (await worker.run_once()).delivered == 1
        assert await store.outbox_count() == 0
        assert len(sender.sent) == 1


async def test_outbox_worker_dead_letters_permanent_errors_and_exhausted_attempts(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    async with LmdbStore(tmp_path) as store:
        await _one_message(store, clock)
        worker = OutboxWorker(store, FlakySender(failures=1, permanent=True), clock)
        assert (await worker.run_once()).dead_lettered == 1
        await _one_message(store, clock)
        stubborn = OutboxWorker(store, FlakySender(failures=99), clock, RetryPolicy(max_attempts=2))
        assert (await stubborn.run_once()).retried == 1
        clock.advance(timedelta(minutes=1))
        assert (await stubborn.run_once()).dead_lettered == 1
        letters = await store.dead_letters()
        assert [d.kind for d in letters] == ["outbox", "outbox"]
        assert letters[0].reason.startswith("permanent") and "2 attempts" in letters[1].reason
        assert await store.outbox_count() == 0


async def test_directory_sender_renders_edifact_and_dead_letters_unrenderable_payloads(
    tmp_path: Path,
) -> None:
    from mako_actors.delivery import DirectorySender
    from mako_actors.edifact import parse_interchange

    clock = VirtualClock(T0)
    async with LmdbStore(tmp_path / "db") as store:
        await _one_message(store, clock)  # a NOTICE payload: not EDIFACT, cannot be rendered
        contrl = {
            "envelope": {"sender_id": "9900000002009", "recipient_id": "9900000001001",
                         "prepared_at": T0.isoformat(), "control_ref": "NB0001"},
            "reference": "C1", "interchange_ref": "LFN0001", "interchange_sender_id": "9900000001001",
            "interchange_recipient_id": "9900000002009", "action": "7",
        }  # fmt: skip
        [row] = await store.pending(10, T0)
        changes = {"message_id": OutboxMessageId.new(), "idempotency_key": "k2", "message_type": "CONTRL"}
        await store.enqueue([row.model_copy(update={**changes, "payload": contrl})])
        report = await OutboxWorker(store, DirectorySender(tmp_path / "out"), clock).run_once()
        assert (report.delivered, report.dead_lettered) == (1, 1)
        [written] = list((tmp_path / "out").iterdir())
        assert written.name == "CONTRL-k2.edi"
        assert parse_interchange(written.read_bytes()).messages[0].message_type == "CONTRL"
        [letter] = await store.dead_letters()
        assert "cannot render NOTICE" in letter.reason


class Reminding(Ledger):
    """A ledger whose every reminder records one unit, whatever the state: firing twice shows."""

    name = "reminding"

    def on_deadline(self, deadline: Deadline, state: Any) -> Any:
        return Record(amount=1)


@pytest.mark.parametrize("firer", ["processes", "actors"])
async def test_two_schedulers_at_once_fire_each_deadline_once(tmp_path: Path, firer: str) -> None:
    """Two schedulers of one store (two nodes' ticks overlapping, two drivers) race for the same
    due deadlines. Before, the second one's retry decided the timeout again on the state the
    first one left, and every reminder was recorded twice. A timeout's commit now needs its
    deadline still stored (``DeadlineGone`` otherwise: nothing written, not counted)."""
    import asyncio

    from mako_actors import LocalActorSystem
    from mako_actors.scheduler import identity_of

    t0 = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    clock = VirtualClock(t0)
    workflow = Reminding()
    wf_id = WorkflowId.new("reminding", "FV2025-10-01")
    async with LmdbStore(tmp_path / "db") as store:
        processes = [Process(workflow, store, TENANT, wf_id) for _ in range(10)]
        for p in processes:
            await p.execute_and_enqueue(Record(amount=10, remind_at=t0 + timedelta(hours=1)))
        clock.set(t0 + timedelta(hours=2))
        systems = [LocalActorSystem(store, [workflow], clock=clock) for _ in range(2)]

        def fire_through(system: LocalActorSystem) -> Any:
            async def fire(deadline: Deadline) -> object:
                return await system.resume(identity_of(deadline)).execute_timeout_with_retry(deadline, 5)

            return fire

        fires = (
            [process_firer(store, {"reminding": workflow}, clock) for _ in range(2)]
            if firer == "processes"
            else [fire_through(s) for s in systems]
        )
        fired = await asyncio.gather(*(DeadlineScheduler(store, f, clock).run_due() for f in fires))
        for system in systems:
            await system.aclose()
        states = [await Process.from_identity(workflow, store, p.identity()).state() for p in processes]
        assert [state.total for state in states] == [11] * 10
        assert sum(fired) == 10 and await store.due_deadlines(clock(), 100) == []
