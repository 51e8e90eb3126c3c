"""The operator reads behind ``outbox list/render/retry``, ``deadlines list`` and ``processes
show`` (paging, one stream's messages, due counts), and read models' state read back as
written; on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import (
    CorrelationId,
    Deadline,
    DeadlineId,
    EventId,
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
TENANT = TenantId.from_party_id("9900000002009")
A = ProcessIdentity.new(TENANT, WorkflowId.new("gpke-nb", "FV2510"))
B = ProcessIdentity.new(TENANT, WorkflowId.new("gpke-nb", "FV2510"))


@pytest.fixture(params=["memory", "lmdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    s = InMemoryStore() if request.param == "memory" else LmdbStore(tmp_path)
    yield s
    await s.aclose()


def message(identity: ProcessIdentity, due: datetime) -> OutboxMessage:
    cause = EventId.new()
    return OutboxMessage(
        message_id=OutboxMessageId.for_event(cause, 0), idempotency_key=str(cause),
        stream_id=identity.stream_id, process_id=identity.process_id, tenant_id=identity.tenant_id,
        causation_event_id=cause, correlation_id=CorrelationId.new(), conversation_id=ConversationId.new(),
        message_type="APERAK", recipient="9900000001001", payload={}, created_at=T0, next_attempt_at=due,
    )  # fmt: skip


async def test_paging_reads_every_message_once_while_they_are_rescheduled(store: AnyStore) -> None:
    messages = [message(A, T0 + timedelta(minutes=n)) for n in range(25)]
    await store.enqueue(messages)
    by_id = sorted(messages, key=lambda m: m.message_id.bytes)  # ids are ordered by ms only
    seen: list[OutboxMessageId] = []
    after = None
    while page := await store.outbox_page(after, limit=10):
        seen.extend(m.message_id for m in page)
        after = page[-1].message_id
        if len(seen) == 10:
            # Between pages: the last unread message moves to the front of the due order, the
            # first unread one leaves (delivered).
            await store.reschedule(by_id[-1].message_id, T0 - timedelta(days=1), "retry")
            assert await store.acknowledge(by_id[10].message_id)
    assert seen == [m.message_id for m in by_id if m is not by_id[10]]
    assert await store.outbox_page(None, limit=0) == []


async def test_one_streams_messages_and_due_counts(store: AnyStore) -> None:
    mine = [message(A, T0 + timedelta(hours=2)), message(A, T0)]
    await store.enqueue([message(B, T0 + timedelta(hours=n)) for n in range(5)] + mine)
    assert [m.message_id for m in await store.outbox_of_stream(A.stream_id)] == [
        mine[1].message_id, mine[0].message_id
    ]  # fmt: skip
    assert await store.outbox_of_stream(ProcessIdentity.new(TENANT, A.workflow_id).stream_id) == []
    for n in range(3):
        await store.register_deadline(
            Deadline(
                deadline_id=DeadlineId.for_event(EventId.new(), 0),
                stream_id=B.stream_id,
                process_id=B.process_id,
                tenant_id=TENANT,
                workflow_id=B.workflow_id,
                label="x",
                due_at=T0 + timedelta(days=n),
            )
        )
    assert await store.due_counts() == (7, 3)
    assert await store.due_counts(T0 + timedelta(hours=2)) == (5, 1)  # 08:00 x2, 09:00, 10:00 x2
    assert await store.due_counts(T0 - timedelta(microseconds=1)) == (0, 0)
    assert await store.due_counts(T0) == (2, 1)  # due at the instant itself counts


async def test_state_keyed_by_numbers_reads_back_as_it_was_written(store: AnyStore) -> None:
    """A projection's state keyed by year, a journal entry keyed by number: before, the write
    was acknowledged and every later read of it failed (msgpack's strict map keys)."""
    await store.save_checkpoint("by-year", 10, {2024: 5, "total": {2025: 7}})
    assert await store.load_checkpoint_state("by-year") == (10, {2024: 5, "total": {2025: 7}})
    await store.append_journal(TENANT, "counts:1", [{"by_year": {2024: 5}}])
    assert await store.journal(TENANT, "counts:1") == [{"by_year": {2024: 5}}]
