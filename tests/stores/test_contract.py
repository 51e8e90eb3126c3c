"""The store contract suite, run against both backends."""

from __future__ import annotations

from pathlib import Path

from mako_actors.store import Store
from mako_actors.testing import StoreContract
from stores.lmdb import LmdbStore
from stores.memory import InMemoryStore


class TestInMemoryStore(StoreContract):
    async def open_store(self, path: Path) -> Store:
        return InMemoryStore()


class TestLmdbStore(StoreContract):
    durable = True

    async def open_store(self, path: Path) -> Store:
        return LmdbStore(path)
