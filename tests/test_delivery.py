"""The outbox worker: several workers on one store, draining, order, file permissions."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors import (
    OutboxMessage,
    PendingOutbox,
    Process,
    TenantId,
    WorkflowId,
)
from mako_actors.delivery import DirectorySender, OutboxWorker, PermanentDeliveryError, RetryPolicy
from mako_actors.errors import StoreError
from mako_actors.scheduler import VirtualClock
from mako_actors.testing import envelope, identity, outbox_row
from stores.lmdb import LmdbStore
from tests.test_commit_atomicity import Burst, BurstWorkflow

T0 = datetime(2025, 6, 5, 12, 0, tzinfo=UTC)
TENANT = TenantId.from_party_id("9900000002009")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


class Recorder:
    """A sender that records what it sent; fails for ids in ``failing``."""

    def __init__(self) -> None:
        self.sent: list[OutboxMessage] = []
        self.failing: set[object] = set()

    async def send(self, message: OutboxMessage) -> None:
        if message.message_id in self.failing:
            raise ConnectionError("gateway down")
        self.sent.append(message)


async def enqueue_many(
    store: LmdbStore, count: int, due: datetime = T0, *, streams: bool = False
) -> list[OutboxMessage]:
    """``count`` messages due at ``due``: of one process, or (``streams``) each of its own."""
    ident = identity()
    rows = []
    for index in range(count):
        if streams:
            ident = identity()
        rows.append(outbox_row(ident, envelope(ident).event_id, due, index))
    await store.enqueue(rows)
    return rows


async def test_a_worker_survives_a_message_another_worker_acknowledged(store: LmdbStore) -> None:
    rows = await enqueue_many(store, 3)

    class Racing:
        """Fails the first message after another worker delivered and acknowledged it."""

        def __init__(self) -> None:
            self.sent: list[OutboxMessage] = []

        async def send(self, message: OutboxMessage) -> None:
            if message.message_id == rows[0].message_id:
                await store.acknowledge(message.message_id)  # the other worker won
                raise ConnectionError("timeout")
            self.sent.append(message)

    sender = Racing()
    report = await OutboxWorker(store, sender, lambda: T0).run_once()
    assert (report.delivered, report.failed) == (2, 1)  # reschedule raised NotFound: counted, not fatal
    assert [m.message_id for m in sender.sent] == [r.message_id for r in rows[1:]]
    assert await store.outbox_count() == 0


async def test_run_once_delivers_everything_due_beyond_one_batch(store: LmdbStore) -> None:
    rows = await enqueue_many(store, 25, streams=True)
    await enqueue_many(store, 3, due=T0 + timedelta(hours=1))  # not due yet
    sender = Recorder()
    sender.failing = {rows[0].message_id, rows[7].message_id}
    report = await OutboxWorker(store, sender, lambda: T0, batch=4).run_once()
    assert (report.delivered, report.retried) == (23, 2)  # each attempted once, none twice
    delivered = [r.message_id for r in rows if r.message_id not in sender.failing]
    assert [m.message_id for m in sender.sent] == delivered
    assert await store.outbox_count() == 5


async def test_run_once_stops_when_failed_messages_stay_due(store: LmdbStore) -> None:
    rows = await enqueue_many(store, 6, streams=True)
    sender = Recorder()
    sender.failing = {r.message_id for r in rows}
    policy = RetryPolicy(base_delay=timedelta(0), max_delay=timedelta(0))  # retried "now" again
    report = await OutboxWorker(store, sender, lambda: T0, policy, batch=2).run_once()
    assert report.retried == 6
    assert all(m.attempts == 1 for m in await store.pending(10, T0))


async def test_one_commands_messages_are_delivered_in_the_order_handle_returned(store: LmdbStore) -> None:
    clock = VirtualClock(T0)

    class Many(BurstWorkflow):
        def handle(self, state, command):  # type: ignore[no-untyped-def]
            out = super().handle(state, command)
            return out.model_copy(update={"outbox": tuple(
                PendingOutbox(message_type="NOTICE", recipient="9900000001001", payload={"n": n})
                for n in range(command.messages)
            )})

    p = Process(Many(), store, TENANT, WorkflowId.new("burst", "FV2510"), clock=clock)
    for _ in range(3):
        await p.execute_and_enqueue(Burst(messages=16))
    sender = Recorder()
    await OutboxWorker(store, sender, clock).run_once()
    assert [m.payload["n"] for m in sender.sent] == list(range(16)) * 3


class Outage:
    """A sender whose target is gone (``down``): every send fails; records what it sent."""

    def __init__(self) -> None:
        self.down = True
        self.sent: list[OutboxMessage] = []

    async def send(self, message: OutboxMessage) -> None:
        if self.down:
            raise OSError(28, "No space left on device")
        self.sent.append(message)


@pytest.mark.parametrize("restarted", [False, True])
async def test_a_process_messages_keep_their_order_across_an_outage(
    store: LmdbStore, restarted: bool
) -> None:
    """Each failed message is retried after its own jittered delay. Before, once the gateway
    came back, the messages of one command (a 55002, then the 55037 DOMAIN §2 sends only after
    it) left in the order their random delays fell: half of the processes' 55037 went first.
    Now a message waits while an earlier one of its process waits for a retry, also for a
    worker started after the failure (it reads the retried messages from the store)."""
    rows = []
    for _ in range(12):
        rows += await enqueue_many(store, 3)  # one process each: messages 0, 1, 2 in this order
    clock = VirtualClock(T0)
    sender = Outage()
    worker = OutboxWorker(store, sender, clock)
    first = await worker.run_once()
    assert (first.retried, first.held) == (12, 24)  # the first of each process failed, the rest wait
    sender.down = False
    if restarted:
        worker = OutboxWorker(store, sender, clock)
    for _ in range(4):
        clock.advance(timedelta(seconds=5))
        await worker.run_once()
    assert await store.outbox_count() == 0
    order: dict[object, list[int]] = {}
    for message in sender.sent:
        order.setdefault(message.stream_id, []).append(message.payload["i"])
    assert list(order.values()) == [[0, 1, 2]] * 12


async def test_a_dead_lettered_message_no_longer_holds_its_process_back(store: LmdbStore) -> None:
    rows = await enqueue_many(store, 2)
    sender = Recorder()
    sender.failing = {rows[0].message_id}
    clock = VirtualClock(T0)
    worker = OutboxWorker(store, sender, clock, RetryPolicy(max_attempts=2))
    assert (await worker.run_once()).held == 1
    clock.advance(timedelta(minutes=1))
    report = await worker.run_once()
    assert (report.dead_lettered, report.delivered) == (1, 0)  # the second waited one more run
    clock.advance(timedelta(seconds=1))
    assert (await worker.run_once()).delivered == 1
    assert [m.message_id for m in sender.sent] == [rows[1].message_id]


class FailingAfter(LmdbStore):
    """Every write after the first ``writes`` fails (None: none fails): the store gone, as in a crash."""

    writes: int | None = None

    async def _write(self, fn: Any) -> Any:
        if self.writes is not None:
            if self.writes == 0:
                raise StoreError("store gone", transient=True)
            self.writes -= 1
        return await super()._write(fn)


@pytest.mark.parametrize("writes", [0, 1])
async def test_a_message_given_up_on_is_either_a_dead_letter_or_queued_never_both(
    tmp_path: Path, writes: int
) -> None:
    """The letter and the row's removal were two writes: a failure between them left both, the
    row was delivered on the next run, and a requeue of the open letter sent it once more."""
    async with FailingAfter(tmp_path / "db") as store:
        [row] = await enqueue_many(store, 1)
        sender = Recorder()
        sender.failing = {row.message_id}
        clock = VirtualClock(T0)
        worker = OutboxWorker(store, sender, clock, RetryPolicy(max_attempts=1))
        store.writes = writes
        await worker.run_once()
        store.writes = None
        letters = await store.dead_letters()
        assert len(letters) + await store.outbox_count() == 1
        sender.failing = set()
        clock.advance(timedelta(minutes=1))
        await worker.run_once()
        for letter in letters:  # the operator puts every open letter back
            await store.requeue_dead_letter(letter.position, clock())
        await worker.run_once()
        assert [m.message_id for m in sender.sent] == [row.message_id]


async def test_a_message_delivered_by_another_worker_meanwhile_is_no_dead_letter(store: LmdbStore) -> None:
    await enqueue_many(store, 1)

    class Racing:
        async def send(self, message: OutboxMessage) -> None:
            await store.acknowledge(message.message_id)  # the other worker delivered it
            raise PermanentDeliveryError("receiver refused")

    report = await OutboxWorker(store, Racing(), lambda: T0).run_once()
    assert (report.dead_lettered, report.failed) == (0, 1)
    assert await store.dead_letters() == []


def contrl_payload() -> dict[str, Any]:
    """A CONTRL 7 the NB sends the LFN (renderable: the directory sender renders it)."""
    return {
        "envelope": {"sender_id": "9900000002009", "recipient_id": "9900000001001",
                     "prepared_at": T0.isoformat(), "control_ref": "NB0001"},
        "reference": "C1", "interchange_ref": "LFN0001", "interchange_sender_id": "9900000001001",
        "interchange_recipient_id": "9900000002009", "action": "7",
    }  # fmt: skip


async def test_directory_sender_keeps_personal_data_private(tmp_path: Path, store: LmdbStore) -> None:
    old = os.umask(0o022)
    try:
        contrl = contrl_payload()
        [row] = await enqueue_many(store, 1)
        await store.acknowledge(row.message_id)
        message = row.model_copy(update={"message_type": "CONTRL", "payload": contrl})
        await store.enqueue([message])
        target = tmp_path / "gateway" / "out"
        report = await OutboxWorker(store, DirectorySender(target), lambda: T0).run_once()
        assert report.delivered == 1
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        [written] = list(target.iterdir())
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
        assert written.name.endswith(".edi") and not written.name.startswith(".")
        # Written under a dot name first: a gateway that picks up every visible file never
        # takes a half-written one (serve's own inbox ignores such names the same way).
        renamed: list[tuple[str, str]] = []
        real_replace = os.replace

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            renamed.append((os.path.basename(src), os.path.basename(dst)))
            real_replace(src, dst)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("mako_actors.delivery.os.replace", replace)
            await DirectorySender(target).send(message)
        assert renamed and all(src.startswith(".") and src.endswith(".tmp") for src, _ in renamed)
    finally:
        os.umask(old)


async def test_a_message_delivered_again_over_its_own_file_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a SIGKILL between a delivery and its acknowledgement the message is sent again
    (at least once, by design), and the file of its name was written over without a word: the
    node's metrics and log said nothing of the repeat. Now it is logged and counted."""
    contrl = contrl_payload()
    ident = identity()
    row = outbox_row(ident, envelope(ident).event_id, T0)
    message = row.model_copy(update={"message_type": "CONTRL", "payload": contrl, "idempotency_key": "k1"})
    told: list[None] = []
    sender = DirectorySender(tmp_path / "out", on_rewritten=lambda: told.append(None))
    await sender.send(message)
    first = (tmp_path / "out" / "CONTRL-k1.edi").read_bytes()
    assert (sender.rewritten, told) == (0, [])
    await sender.send(message.model_copy(update={"idempotency_key": "k2"}))  # another message
    assert (sender.rewritten, told) == (0, [])
    with caplog.at_level(logging.WARNING, logger="mako_actors.delivery"):
        await sender.send(message)  # the same one again: its acknowledgement was lost
    assert (sender.rewritten, len(told)) == (1, 1)
    assert "CONTRL-k1.edi was still in" in caplog.text and "delivered again" in caplog.text
    assert (tmp_path / "out" / "CONTRL-k1.edi").read_bytes() == first


async def test_an_outbox_row_that_does_not_decode_is_named(store: LmdbStore) -> None:
    """A row a newer release wrote (one more field) stops delivery of every row behind it.
    Before, the error named no row: nobody could find which one to deal with."""
    import msgpack

    from mako_actors.errors import DeserializationError

    [first, *_] = await enqueue_many(store, 3)

    def newer(txn: Any) -> None:
        key = first.message_id.bytes
        plain = msgpack.unpackb(txn.get("outbox", key), raw=False)
        txn.put("outbox", key, msgpack.packb({**plain, "priority": 1}, use_bin_type=True))

    await store._write(newer)
    with pytest.raises(DeserializationError, match=str(first.message_id)):
        await store.pending(10, T0 + timedelta(days=1))


async def test_serve_waits_out_a_gateway_outage_of_hours(store: LmdbStore) -> None:
    """With the default policy, eight attempts were spent within about four minutes of an
    unmounted or full outbox folder, and every answer became a dead letter. The node retries by
    age: at most ten minutes apart, for six hours."""
    from mako_actors.serve import OUTBOX_RETRY

    [row] = await enqueue_many(store, 1)
    clock = VirtualClock(T0)
    sender = Outage()
    worker = OutboxWorker(store, sender, clock, OUTBOX_RETRY)
    while clock() < T0 + timedelta(hours=5):
        await worker.run_once()
        [waiting] = await store.pending(1, datetime.max.replace(tzinfo=UTC))
        assert waiting.next_attempt_at - clock() <= timedelta(minutes=10)
        clock.set(waiting.next_attempt_at)
    sender.down = False
    assert (await worker.run_once()).delivered == 1
    assert [m.message_id for m in sender.sent] == [row.message_id]
    assert await store.dead_letters() == []


async def test_a_message_requeued_behind_a_workers_back_is_not_held_behind_itself(
    store: LmdbStore,
) -> None:
    """Worker one saw the message fail (it waits for a retry there); another worker gave up on
    it, and an operator requeued it under a later place. Worker one must send it, not hold it
    behind its own earlier place for good."""
    [row] = await enqueue_many(store, 1)
    clock = VirtualClock(T0)
    sender = Outage()
    first = OutboxWorker(store, sender, clock)
    await first.run_once()
    clock.advance(timedelta(minutes=1))
    second = OutboxWorker(store, sender, clock, RetryPolicy(max_attempts=1))
    assert (await second.run_once()).dead_lettered == 1
    [letter] = await store.dead_letters()
    await store.requeue_dead_letter(letter.position, clock())
    sender.down = False
    report = await first.run_once()
    assert (report.delivered, report.held) == (1, 0)
    assert [m.message_id for m in sender.sent] == [row.message_id]


class Delayed(BurstWorkflow):
    """Sends one message a day after the command (``not_before``)."""

    def handle(self, state, command):  # type: ignore[no-untyped-def]
        out = super().handle(state, command)
        later = PendingOutbox(
            message_type="NOTICE", recipient="9900000001001", not_before=T0 + timedelta(days=1)
        )
        return out.model_copy(update={"outbox": (later,)})


async def enqueue_delayed(store: LmdbStore, clock: VirtualClock) -> None:
    p = Process(Delayed(), store, TENANT, WorkflowId.new("burst", "FV2510"), clock=clock)
    await p.execute_and_enqueue(Burst())


@pytest.mark.parametrize("serving", [False, True])
async def test_a_message_delayed_by_a_day_is_retried_when_its_first_attempt_fails(
    store: LmdbStore, serving: bool
) -> None:
    """A message's age counted from its creation: one sent a day later (``not_before``) was a
    day old at its first attempt, and a single failure made it a dead letter ("too old"),
    never retried, with the default policy and serve's alike. Its age counts from when it
    became due."""
    from mako_actors.serve import OUTBOX_RETRY

    clock = VirtualClock(T0)
    await enqueue_delayed(store, clock)
    sender = Outage()
    worker = OutboxWorker(store, sender, clock, OUTBOX_RETRY if serving else RetryPolicy())
    clock.set(T0 + timedelta(days=1))
    assert (await worker.run_once()).retried == 1
    sender.down = False
    [waiting] = await store.pending(1, datetime.max.replace(tzinfo=UTC))
    clock.set(waiting.next_attempt_at)
    assert (await worker.run_once()).delivered == 1
    assert len(sender.sent) == 1 and await store.dead_letters() == []


async def test_a_delayed_message_is_given_up_on_max_age_after_it_became_due(store: LmdbStore) -> None:
    """The age limit still holds for a delayed message, counted from its ``not_before``."""
    from mako_actors.serve import OUTBOX_RETRY

    clock = VirtualClock(T0)
    await enqueue_delayed(store, clock)
    worker = OutboxWorker(store, Outage(), clock, OUTBOX_RETRY)
    clock.set(T0 + timedelta(days=1))
    while not (await worker.run_once()).dead_lettered:
        [waiting] = await store.pending(1, datetime.max.replace(tzinfo=UTC))
        clock.set(waiting.next_attempt_at)
    waited = clock() - (T0 + timedelta(days=1))
    assert OUTBOX_RETRY.max_age <= waited <= OUTBOX_RETRY.max_age + OUTBOX_RETRY.max_delay
    [letter] = await store.dead_letters()
    assert letter.reason.startswith("too old") and letter.recorded_at == clock()


async def test_failed_deliveries_are_logged_once_a_minute_naming_the_error(
    store: LmdbStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway down (or the outbox folder gone) retried every message silently: nothing was
    logged until the first became a dead letter hours later, only a counter moved."""
    rows = await enqueue_many(store, 6, streams=True)
    sender = Recorder()
    sender.failing = {r.message_id for r in rows}
    with caplog.at_level("WARNING", logger="mako_actors.delivery"):
        report = await OutboxWorker(store, sender, lambda: T0).run_once()
    assert report.retried == 6
    warnings = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(warnings) == 1 and "gateway down" in warnings[0] and "attempt 1" in warnings[0]


async def test_retrying_a_message_due_already_keeps_its_process_order(store: LmdbStore) -> None:
    """``outbox retry`` made a message due at the moment it ran: one due already moved behind
    its process's later messages due before then, and left after them."""
    rows = await enqueue_many(store, 3)  # one process, due at T0, in this order
    await store.retry_outbox(rows[0].message_id, T0 + timedelta(hours=1))
    sender = Recorder()
    await OutboxWorker(store, sender, lambda: T0 + timedelta(hours=1)).run_once()
    assert [m.message_id for m in sender.sent] == [r.message_id for r in rows]
