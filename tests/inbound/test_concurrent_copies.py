"""Copies of one interchange ingested at the same time (two gateway channels delivering it at
once, a caller gathering ingests): one is processed, the others are its duplicates."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any, cast

import pytest

from mako_actors.actors import LocalActorSystem
from mako_actors.errors import StoreError
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.inbound import DirectHost, InboundPipeline, ReceiptWorkflow, StaticMasterData, Suppliers
from mako_actors.scheduler import VirtualClock
from mako_actors.store import Commit
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFA,
    LFN,
    MALO,
    NB,
    START,
    THU_1430,
    anmeldung,
    dtm,
    interchange,
    kind,
    lfa_answer,
    outbox,
    store,
    tx,
)

__all__ = ["store"]


async def test_copies_ingested_at_once_are_processed_once(store: LmdbStore) -> None:
    """The second copy found the first one's receipt not yet processed, took it for a crash's
    leftover and routed the interchange again beside it: the Anmeldung's copy was refused with
    APERAK Z35 ("competing triggers kept racing"), the LFA answer was applied twice (a second
    APERAK to the LFA)."""
    clock = VirtualClock(THU_1430)
    async with LocalActorSystem(
        store, [GpkeNbWorkflow(), ReceiptWorkflow()], clock=clock, close_store=False
    ) as system:
        master = StaticMasterData({MALO: Suppliers(current=LFA)})
        p = InboundPipeline(store, system, tenants=[NB], master_data=master, clock=clock, receipts=system)
        raw = anmeldung(LFN)
        first, second = await asyncio.gather(p.ingest(raw, THU_1430), p.ingest(raw, THU_1430))
        assert sorted([first.status, second.status]) == ["accepted", "duplicate"]
        [request] = [m for m in await outbox(store) if kind(m) == "55010"]
        at = THU_1430 + timedelta(hours=1)
        answer = lfa_answer(tx(request)["ide_ref"], sent_at=at)
        results = await asyncio.gather(*(p.ingest(answer, at) for _ in range(3)))
        assert sorted(r.status for r in results) == ["accepted", "duplicate", "duplicate"]
    sent = Counter(kind(m) for m in await outbox(store))
    assert sent["APERAK-"] == 0 and sent["APERAK+"] == 2  # one for the Anmeldung, one for the answer
    events = Counter(e.event_type for e in await store.read_all(0, 10_000))
    assert events["gpke.lfa_answered"] == 1 and events["gpke.anmeldung_received"] == 1
    assert not await store.dead_letters()


class _FailsOnce:
    """A store whose commit of one event type (of one stream, if given) fails once (a disk full,
    a partition being moved, a host gone): the ingest raises midway."""

    def __init__(self, store: LmdbStore, event_type: str | None = None) -> None:
        self._store = store
        self.event_type = event_type
        self.stream: object = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def commit(self, commit: Commit) -> object:
        hit = any(e.event_type == self.event_type for e in commit.events)
        if hit and (self.stream is None or commit.stream_id == self.stream):
            self.event_type = None
            raise StoreError("disk full", transient=True)
        return await self._store.commit(commit)


async def test_ingesting_again_after_a_failure_midway_applies_each_answer_once(store: LmdbStore) -> None:
    """One LFA interchange answers two of our 55010s; the second answer's commit fails, the ingest
    raises, the caller ingests the same bytes again as told. The first answer was applied again:
    an ``lfa_answer_ignored`` after its ``lfa_answered`` and a second APERAK to the LFA (the same
    for an acknowledgement: recorded twice)."""
    second_malo = "41234567896"
    flaky = _FailsOnce(store)
    clock = VirtualClock(THU_1430)
    host = DirectHost(cast(Any, flaky), [GpkeNbWorkflow()], clock)
    master = StaticMasterData({MALO: Suppliers(current=LFA), second_malo: Suppliers(current=LFA)})
    p = InboundPipeline(cast(Any, flaky), host, tenants=[NB], master_data=master, clock=clock)
    await p.ingest(anmeldung(LFN), THU_1430)
    await p.ingest(anmeldung(LFN, ref="LFN0002", ide="LFNTX2", malo=second_malo), THU_1430)
    requests = {tx(m)["malo"]: m for m in await outbox(store) if kind(m) == "55010"}
    at = THU_1430 + timedelta(hours=1)
    answers: list[str] = []
    for n, malo in enumerate((MALO, second_malo)):
        answers += [f"IDE+24+LFATX{n}", dtm("93", START), "STS+7++E01", "STS+E01++A36:E_0624",
                    "RFF+Z13:55011", f"RFF+TN:{tx(requests[malo])['ide_ref']}"]  # fmt: skip
    raw = interchange(LFA, NB, "LFA0001", at, answers, bgm="E02")
    flaky.stream, flaky.event_type = requests[second_malo].stream_id, "gpke.lfa_answered"
    with pytest.raises(StoreError):
        await p.ingest(raw, at)
    again = await p.ingest(raw, at)
    assert [m.outcome for m in again.messages] == ["routed", "routed"]
    events = Counter(e.event_type for e in await store.read_all(0, 10_000))
    assert events["gpke.lfa_answered"] == 2 and events["gpke.lfa_answer_ignored"] == 0
    to_lfa = [m for m in await outbox(store) if m.recipient == LFA and m.message_type == "APERAK"]
    assert len(to_lfa) == 2  # one per answer


async def test_ingesting_again_an_anmeldung_its_process_refused_changes_nothing(store: LmdbStore) -> None:
    """The Anmeldung was refused by its process (APERAK: a kind of MaLo not allowed), then the
    receipt's last step failed. Ingested again, the new spawn met the references the refusing
    process had taken (it took no ``tx:`` key, so routing did not skip it): "competing triggers
    kept racing", a second APERAK (Z35) and a dead letter."""
    flaky = _FailsOnce(store, "inbox.interchange_processed")
    clock = VirtualClock(THU_1430)
    host = DirectHost(cast(Any, flaky), [GpkeNbWorkflow()], clock)
    master = StaticMasterData({MALO: Suppliers(current=LFA)})
    p = InboundPipeline(cast(Any, flaky), host, tenants=[NB], master_data=master, clock=clock)
    raw = anmeldung(LFN, detail="ZW9")  # not ZW4|ZAP: refused by its process
    with pytest.raises(StoreError):
        await p.ingest(raw, THU_1430)
    again = await p.ingest(raw, THU_1430)
    assert [m.outcome for m in again.messages] == ["duplicate"]
    assert [kind(m) for m in await outbox(store) if m.message_type == "APERAK"] == ["APERAK-"]
    assert not await store.dead_letters()


async def test_ingesting_again_keeps_the_z15_of_an_ide_used_twice_in_one_message(store: LmdbStore) -> None:
    """One message uses one IDE twice, the first transaction refused by its process: the second
    is refused Z15. When the receipt's last step failed and the interchange was routed again,
    the second was taken for "decided before" and its Z15 never sent."""
    def transaction(raw: bytes) -> list[str]:
        segments = raw.decode("latin-1").split("'")
        first = next(k for k, s in enumerate(segments) if s.startswith("IDE+24"))
        return segments[first : next(k for k, s in enumerate(segments) if s.startswith("UNT+"))]

    flaky = _FailsOnce(store, "inbox.interchange_processed")
    clock = VirtualClock(THU_1430)
    host = DirectHost(cast(Any, flaky), [GpkeNbWorkflow()], clock)
    master = StaticMasterData({MALO: Suppliers(current=LFA)})
    p = InboundPipeline(cast(Any, flaky), host, tenants=[NB], master_data=master, clock=clock)
    refused = transaction(anmeldung(LFN, ide="SAMEIDE", detail="ZW9"))
    both = refused + transaction(anmeldung(LFN, ide="SAMEIDE"))
    raw = interchange(LFN, NB, "R0001", THU_1430, both)
    with pytest.raises(StoreError):
        await p.ingest(raw, THU_1430)
    await p.ingest(raw, THU_1430)
    aperaks = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert sorted(e["code"] for m in aperaks for e in m.payload["errors"]) == ["Z15", "Z39"]
