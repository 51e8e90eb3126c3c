"""The runner holds off the cyclic collector only while it decides a turn, never for good."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

from mako_actors.actors import LocalActorSystem, _gc_pause
from stores.lmdb import LmdbStore
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import Ledger, Record


async def test_the_collector_is_off_during_a_turn_and_on_again_after(
    store: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = Ledger.handle

    def handle(self: Ledger, state: Any, command: Any) -> Any:
        seen.append(gc.isenabled())  # runs inside the runner's turn
        return original(self, state, command)

    monkeypatch.setattr(Ledger, "handle", handle)
    async with LocalActorSystem(store, workflows=[Ledger]) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(20)]
        await asyncio.gather(*(ref.execute(Record(amount=1)) for ref in refs))
        assert gc.isenabled()
    assert seen == [False] * 20
    assert gc.isenabled()


async def test_a_collector_the_application_disabled_stays_disabled(store: LmdbStore) -> None:
    gc.disable()
    try:
        async with LocalActorSystem(store, workflows=[Ledger]) as system:
            await system.spawn("ledger", TENANT, LEDGER_ID).execute(Record(amount=1))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_pauses_from_threads_leave_the_collector_enabled() -> None:
    # Two runners on two threads: each pause/resume pair overlaps the other's in every order.
    start = threading.Barrier(2)
    states: list[bool] = []

    def runner() -> None:
        start.wait()
        for _ in range(2_000):
            _gc_pause.pause()
            states.append(gc.isenabled())
            _gc_pause.resume()

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert states == [False] * 4_000
    assert gc.isenabled()
