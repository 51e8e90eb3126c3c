"""An in-memory store for unit tests: the same semantics as LMDB, nothing on disk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mako_actors.errors import EngineError, StoreError
from stores._base import StoreBase, WriteFn, chained_conflict, failed_commit, run_write
from stores._kv import KvTxn, MemoryTables

T = TypeVar("T")


class InMemoryStore(StoreBase):
    """Every store protocol in process memory; for tests only (nothing survives the process).

    Writes run on the calling thread after yielding to the event loop once (so concurrent
    commands on one stream conflict as on LMDB); a batch counts as one transaction.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tables = MemoryTables()
        self._closed = False

    async def _read(self, fn: Callable[[KvTxn], T]) -> T:
        self._check_open()
        return fn(self._tables.txn())

    async def _write_batch(self, fns: Sequence[WriteFn]) -> list[Any]:
        self._check_open()
        # Let other tasks run first, as LMDB's writer thread does: two commands on one stream
        # that loaded the same version then race, and the second commit is a VersionConflict
        # here too (without the yield each command ran to its commit before the next loaded).
        await asyncio.sleep(0)
        self._check_open()
        results: list[Any] = []
        failed: dict[str, int] = {}  # a failed commit's stream -> the version it would leave
        for fn in fns:
            txn = self._tables.txn()
            blocked = chained_conflict(fn, failed, txn) if failed else None
            if blocked is not None:
                results.append(blocked)
            else:
                try:
                    results.append(run_write(fn, txn))
                    continue
                except EngineError as exc:
                    txn.rollback()
                    results.append(exc)
                except Exception as exc:  # a bug in one write must not take its batch down
                    txn.rollback()
                    results.append(StoreError(f"write failed: {exc!r}"))
            failed_commit(fn, results[-1], failed)  # a chain goes on through a blocked one too
        self._stats.transactions += 1
        self._stats.largest_batch = max(self._stats.largest_batch, len(fns))
        return results

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("InMemoryStore is closed")

    async def aclose(self) -> None:
        """Refuse further use; the data is gone with the object."""
        self._closed = True
