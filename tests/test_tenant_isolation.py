"""Nobody writes where they don't belong: forged identities and foreign command contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mako_actors import (
    InvalidArgument,
    LocalActorSystem,
    Process,
    ProcessId,
    ProcessIdentity,
    StreamId,
    TenantId,
    WorkflowId,
)
from stores.lmdb import LmdbStore
from tests.workflows import Ledger, Record

TENANT_A = TenantId.from_party_id("9900000002009")
TENANT_B = TenantId.from_party_id("9900000001001")
WF = WorkflowId.new("ledger", "FV2510")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def forged_plain(victim: ProcessIdentity, tenant: TenantId) -> dict[str, str]:
    """A routing-table row claiming ``tenant`` and a process id, but ``victim``'s stream."""
    return {
        "stream_id": str(victim.stream_id),
        "process_id": str(victim.process_id),
        "tenant_id": str(tenant),
        "workflow_id": str(WF),
    }


async def test_an_identity_with_another_tenants_stream_is_refused(store: LmdbStore) -> None:
    victim = Process(Ledger(), store, TENANT_A, WF)
    await victim.execute(Record(amount=1))
    with pytest.raises(InvalidArgument, match="is not the stream of process"):
        ProcessIdentity(**forged_plain(victim.identity(), TENANT_B))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        ProcessIdentity(
            stream_id=StreamId.for_process(TENANT_A, ProcessId.new()),
            process_id=victim.process_id,
            tenant_id=TENANT_A,
            workflow_id=WF,
        )
    with pytest.raises(ValueError):
        ProcessIdentity.model_validate(forged_plain(victim.identity(), TENANT_B))
    assert await victim.event_count() == 1


async def test_execute_with_refuses_a_context_of_another_process(store: LmdbStore) -> None:
    mine = Process(Ledger(), store, TENANT_A, WF)
    other = Process(Ledger(), store, TENANT_B, WF)
    same_tenant = Process(Ledger(), store, TENANT_A, WF)
    for foreign in (other.new_context(), same_tenant.new_context()):
        with pytest.raises(InvalidArgument, match="command context of process"):
            await mine.execute_with(Record(amount=1), foreign)
        with pytest.raises(InvalidArgument):
            await mine.execute_and_enqueue_with(Record(amount=1), foreign)
        with pytest.raises(InvalidArgument):
            await mine.execute_with_retry_ctx(Record(amount=1), foreign, 2)
    other_workflow = mine.new_context().model_copy(update={"workflow_id": WorkflowId.new("ledger", "FV2604")})
    with pytest.raises(InvalidArgument):
        await mine.execute_with(Record(amount=1), other_workflow)
    assert await mine.event_count() == 0
    await mine.execute_with(Record(amount=1), mine.context_for_inbound("9900000001001:REF1"))
    assert await mine.event_count() == 1


async def test_actor_execute_with_refuses_a_context_of_another_process(store: LmdbStore) -> None:
    async with LocalActorSystem(store, [Ledger]) as system:
        mine = system.spawn("ledger", TENANT_A, WF)
        other = system.spawn("ledger", TENANT_B, WF)
        with pytest.raises(InvalidArgument, match="command context of process"):
            await mine.execute_with(Record(amount=1), other.new_context())
        with pytest.raises(InvalidArgument):
            await mine.execute_and_enqueue_with(Record(amount=1), other.new_context())
        assert await mine.event_count() == 0 and await other.event_count() == 0
        events = await mine.execute_with(Record(amount=2), mine.new_context())
        assert events[0].tenant_id == TENANT_A
