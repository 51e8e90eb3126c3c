"""``InboundPipeline(receipt_after_routing=True)`` (the replay's): one receipt write per interchange,
after routing, and what a crash before it or between the default's two writes leaves to a re-run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mako_actors import Commit, CommitResult, EngineError, StoreError
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import NB, THU_1430, anmeldung, kind, outbox, store

__all__ = ["store"]  # the fixture


class _Crashing:
    """The store, except that commits of workflow ``fail`` raise (a crash at that write)."""

    def __init__(self, store: LmdbStore, fail: str) -> None:
        self._store, self.fail = store, fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def commit(self, commit: Commit) -> CommitResult:
        if commit.events and commit.events[0].workflow_id.name == self.fail:
            raise StoreError("crash", transient=True)
        return await self._store.commit(commit)

    async def commit_many(self, commits: Sequence[Commit]) -> list[CommitResult | EngineError]:
        return [await self.commit(c) for c in commits]


def pipeline(store: Any, clock: VirtualClock, *, after: bool) -> InboundPipeline:
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    master = StaticMasterData({})
    return InboundPipeline(
        store, host, tenants=[NB], master_data=master, clock=clock, receipt_after_routing=after
    )


def raw() -> bytes:
    return anmeldung()


def kinds(messages: list[Any]) -> list[str]:
    return [kind(m) for m in messages]


async def receipt_events(store: LmdbStore) -> list[str]:
    return [e.event_type for e in await store.read_all(0, 1000) if e.workflow_id.name == "mako-inbox"]


async def test_the_receipt_its_contrl_and_the_outcome_are_one_write_after_the_process(
    store: LmdbStore,
) -> None:
    clock = VirtualClock(THU_1430)
    result = await pipeline(store, clock, after=True).ingest(raw(), THU_1430)
    assert result.status == "accepted" and [m.outcome for m in result.messages] == ["started"]
    events = await store.read_all(0, 1000)
    inbox = [e for e in events if e.workflow_id.name == "mako-inbox"]
    assert [e.event_type for e in inbox] == ["inbox.interchange_received", "inbox.interchange_processed"]
    assert inbox[0].global_position > max(e.global_position for e in events if e not in inbox)
    assert store.stats.commits == 2  # the process's command and the receipt
    assert "CONTRL7" in kinds(await outbox(store))
    again = await pipeline(store, clock, after=True).ingest(raw(), THU_1430)
    assert again.status == "duplicate" and again.messages == [] and store.stats.commits == 2


async def test_after_a_crash_before_the_receipt_its_transactions_count_as_reused(store: LmdbStore) -> None:
    """Nothing tells a crash before the receipt from an IDE reused in a new interchange: both
    are a known transaction under an unrecorded interchange, answered Z15 as serve answers a
    reused IDE. The replay, the only caller, refuses a store a run left half-done instead."""
    clock = VirtualClock(THU_1430)
    crashing = _Crashing(store, "mako-inbox")
    try:
        await pipeline(crashing, clock, after=True).ingest(raw(), THU_1430)
        raise AssertionError("the receipt write crashed: ingest must raise")
    except StoreError:
        pass
    assert await receipt_events(store) == [] and await store.outbox_count() > 0  # the process decided
    again = await pipeline(store, clock, after=True).ingest(raw(), THU_1430)
    assert again.status == "accepted" and [m.outcome for m in again.messages] == ["dead_letter"]
    assert [m.refused for m in again.messages] == ["Z15"]
    assert await receipt_events(store) == ["inbox.interchange_received", "inbox.interchange_processed"]
    assert kinds(await outbox(store)).count("CONTRL7") == 1


async def test_an_interchange_received_but_not_processed_by_the_default_is_completed(
    store: LmdbStore,
) -> None:
    clock = VirtualClock(THU_1430)
    crashing = _Crashing(store, "gpke-nb")  # the receipt is written, then routing crashes
    try:
        await pipeline(crashing, clock, after=False).ingest(raw(), THU_1430)
        raise AssertionError("routing crashed: ingest must raise")
    except StoreError:
        pass
    assert await receipt_events(store) == ["inbox.interchange_received"]
    again = await pipeline(store, clock, after=True).ingest(raw(), THU_1430)
    assert again.status == "accepted" and [m.outcome for m in again.messages] == ["started"]
    assert await receipt_events(store) == ["inbox.interchange_received", "inbox.interchange_processed"]
    assert kinds(await outbox(store)).count("CONTRL7") == 1


def test_the_receipt_stream_of_an_interchange_is_the_uuid5_of_recipient_sender_and_0020() -> None:
    # A retransmission (any run, any process) must find the stream the first copy opened.
    import uuid

    from mako_actors.ids import ProcessId, TenantId
    from mako_actors.inbound import _RECEIPT_NAMESPACE, receipt_identity

    receipt_identity.cache_clear()
    for sender, ref in (("9900000010002", "LFN1"), ("9900000010003", "ÄÖ-14CHARS-REF")):
        identity = receipt_identity(NB, sender, ref)
        expected = ProcessId(uuid.uuid5(_RECEIPT_NAMESPACE, f"{NB}:{sender}:{ref}"))
        assert identity.process_id == expected and type(identity.process_id) is ProcessId
        assert str(identity.process_id) == str(expected)
        assert identity.tenant_id == TenantId.from_party_id(NB)
        assert identity.stream_id == f"process/{identity.tenant_id}/{expected}"
