"""A person can put a dead letter back: an outbox message into the outbox, a deadline into the
schedule, once, atomically with the letter's requeued_at; on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import (
    CorrelationId,
    DeadLetter,
    Deadline,
    DeadlineId,
    EventId,
    InvalidArgument,
    NotFound,
    OutboxMessage,
    OutboxMessageId,
    ProcessIdentity,
    TenantId,
    WorkflowId,
)
from mako_actors.ids import ConversationId
from stores.lmdb import LmdbStore
from stores.memory import InMemoryStore

AnyStore = InMemoryStore | LmdbStore
T0 = datetime(2025, 11, 13, 8, tzinfo=UTC)
IDENTITY = ProcessIdentity.new(TenantId.from_party_id("9900000002009"), WorkflowId.new("gpke-nb", "FV2510"))
CAUSE = EventId.new()


@pytest.fixture(params=["memory", "lmdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    s = InMemoryStore() if request.param == "memory" else LmdbStore(tmp_path)
    yield s
    await s.aclose()


def message() -> OutboxMessage:
    return OutboxMessage(
        message_id=OutboxMessageId.for_event(CAUSE, 0), idempotency_key="k-1", stream_id=IDENTITY.stream_id,
        process_id=IDENTITY.process_id, tenant_id=IDENTITY.tenant_id, causation_event_id=CAUSE,
        correlation_id=CorrelationId.new(), conversation_id=ConversationId.new(), message_type="APERAK",
        recipient="9900000001001", payload={"x": 1}, created_at=T0, next_attempt_at=T0 + timedelta(hours=1),
        attempts=7, last_error="gateway down",
    )  # fmt: skip


def deadline() -> Deadline:
    return Deadline(
        deadline_id=DeadlineId.for_event(CAUSE, 0), stream_id=IDENTITY.stream_id,
        process_id=IDENTITY.process_id, tenant_id=IDENTITY.tenant_id, workflow_id=IDENTITY.workflow_id,
        label="lfa_answer", due_at=T0,
    )  # fmt: skip


async def test_an_outbox_letter_goes_back_due_now_with_fresh_attempts(store: AnyStore) -> None:
    letter = await store.add_dead_letter(
        DeadLetter(kind="outbox", reason="8 attempts", payload=message().to_plain(), recorded_at=T0)
    )
    now = T0 + timedelta(days=1)
    stamped = await store.requeue_dead_letter(letter.position, now)
    assert stamped.requeued_at == now
    (back,) = await store.pending(10, now)
    assert (back.message_id, back.idempotency_key, back.attempts, back.last_error) == (
        message().message_id, "k-1", 0, None
    )
    with pytest.raises(InvalidArgument, match="requeued already"):
        await store.requeue_dead_letter(letter.position, now)
    assert len(await store.outbox_messages()) == 1
    (listed,) = await store.dead_letters()
    assert listed.requeued_at == now


async def test_a_deadline_letter_goes_back_into_the_schedule(store: AnyStore) -> None:
    letter = await store.add_dead_letter(
        DeadLetter(kind="deadline", reason="refused", payload=deadline().to_plain(), recorded_at=T0)
    )
    await store.requeue_dead_letter(letter.position, T0 + timedelta(hours=2))
    assert [d.deadline_id for d in await store.due_deadlines(T0, 10)] == [deadline().deadline_id]
    assert [d.label for d in await store.all_deadlines()] == ["lfa_answer"]


async def test_inbound_and_broken_letters_are_refused_and_nothing_changes(store: AnyStore) -> None:
    inbound = await store.add_dead_letter(
        DeadLetter(kind="inbound", reason="unknown PID", payload={"source": "x.edi"}, recorded_at=T0)
    )
    broken = await store.add_dead_letter(
        DeadLetter(kind="outbox", reason="?", payload={"message_type": "APERAK"}, recorded_at=T0)
    )
    with pytest.raises(InvalidArgument, match=r"x\.edi.*send the interchange again"):
        await store.requeue_dead_letter(inbound.position, T0)
    with pytest.raises(InvalidArgument, match="not a valid outbox"):
        await store.requeue_dead_letter(broken.position, T0)
    with pytest.raises(NotFound):
        await store.requeue_dead_letter(99, T0)
    assert all(d.requeued_at is None for d in await store.dead_letters())
    assert await store.outbox_messages() == [] and await store.table_counts() != {}


async def test_retry_and_requeue_move_a_queued_message_without_a_second_row(store: AnyStore) -> None:
    """A message still in the outbox: retry makes it due now (attempts kept), a requeue of its
    dead letter resets its attempts; either way it stays one row, in its place among equal due times."""
    await store.enqueue([message()])
    (queued,) = await store.outbox_messages()
    now = T0 + timedelta(minutes=5)
    retried = await store.retry_outbox(queued.message_id, now)
    assert (retried.next_attempt_at, retried.attempts, retried.position) == (now, 7, queued.position)
    assert [m.message_id for m in await store.pending(10, now)] == [queued.message_id]
    letter = await store.add_dead_letter(
        DeadLetter(kind="outbox", reason="by hand", payload=queued.to_plain(), recorded_at=T0)
    )
    later = now + timedelta(minutes=5)
    await store.requeue_dead_letter(letter.position, later)
    (back,) = await store.outbox_messages()
    assert (back.next_attempt_at, back.attempts, back.last_error) == (later, 0, None)
    assert [m.message_id for m in await store.pending(10, later)] == [queued.message_id]
    await store.acknowledge(queued.message_id)
    assert await store.outbox_messages() == [] and await store.pending(10, later) == []


async def _letters_out_of_order(path: Path) -> None:
    """Three letters whose positions are not their time order, as a replay records them."""
    async with LmdbStore(path) as s:
        for hours in (5, 1, 3):
            await s.add_dead_letter(
                DeadLetter(kind="inbound", reason=f"at +{hours} h", recorded_at=T0 + timedelta(hours=hours))
            )


def test_the_cli_lists_dead_letters_oldest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import json

    from mako_actors.cli import main

    asyncio.run(_letters_out_of_order(tmp_path / "s"))
    assert main(["dead-letters", "list", "--store", str(tmp_path / "s"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["position"], d["reason"]) for d in listed] == [(2, "at +1 h"), (3, "at +3 h"), (1, "at +5 h")]
    assert main(["dead-letters", "list", "--store", str(tmp_path / "s")]) == 0
    table = capsys.readouterr().out
    assert table.index("at +1 h") < table.index("at +3 h") < table.index("at +5 h")


def test_the_cli_refuses_a_number_no_dead_letter_can_have_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from mako_actors.cli import main

    asyncio.run(_letters_out_of_order(tmp_path / "s"))
    for number in ("-1", "0", str(2**64), "x"):
        # a usage error, before the store is opened
        assert main(["dead-letters", "requeue", number, "--store", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert "argument position" in err and "OverflowError" not in err


def test_json_into_a_pipe_its_reader_closed_ends_quietly(tmp_path: Path) -> None:
    """``mako-actors ... --json | head -0``: no traceback, the shell's code for a closed pipe."""
    import asyncio
    import os
    import subprocess
    import sys

    asyncio.run(_letters_out_of_order(tmp_path / "s"))
    repo = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mako_actors.cli", "dead-letters", "list", "--store", str(tmp_path / "s"),
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(repo)},
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.close()  # the reader goes away before a byte is written
    _, err = process.communicate(timeout=60)
    assert process.returncode == 141 and err == b"", err.decode()
