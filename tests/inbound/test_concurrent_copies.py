"""Copies of one interchange ingested at the same time (two gateway channels delivering it at
once, a caller gathering ingests): one is processed, the others are its duplicates."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from mako_actors.actors import LocalActorSystem
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.inbound import InboundPipeline, ReceiptWorkflow, StaticMasterData, Suppliers
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import LFA, LFN, MALO, NB, THU_1430, anmeldung, kind, lfa_answer, outbox, store, tx

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
