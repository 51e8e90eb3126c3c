"""A read-only view of an LMDB store directory: for inspection while a node may be writing.

``ReadOnlyLmdbStore(path)`` opens the environment with ``readonly=True``: every read method of
the store API works (each read sees one consistent snapshot, MVCC), every write raises
``StoreError`` and nothing, not even the map size, is changed on disk. A running node's
writes become visible to reads started after they committed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from mako_actors.errors import StoreError
from stores._base import StoreBase, WriteFn
from stores._kv import DATABASES
from stores.lmdb import LmdbStore, _LmdbTxn, check_format, clear_stale_readers, meta_retrying

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MapUsage:
    """How full the environment is: pages in use against the map size, and the file's size."""

    map_size: int
    used_bytes: int
    file_bytes: int

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.map_size if self.map_size else 0.0


class _Handles(dict[str, Any]):
    """Sub-database handles opened on first use inside one read transaction.

    A handle opened in a read-only transaction dies with it, so each read opens its own.
    """

    def __init__(self, env: lmdb.Environment, txn: lmdb.Transaction) -> None:
        super().__init__()
        self._env, self._txn = env, txn

    def __missing__(self, name: str) -> Any:
        if name not in DATABASES:
            raise KeyError(name)
        handle = self[name] = self._env.open_db(name.encode(), txn=self._txn, create=False)
        return handle


class ReadOnlyLmdbStore(StoreBase):
    """The store API over an existing LMDB directory, reads only; ``StoreError`` if it is missing,
    ``StoreOpenError`` if it is of a later on-disk format than this code reads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        if not (self.path / "data.mdb").is_file():
            raise StoreError(f"no LMDB store at {self.path} (data.mdb missing)")
        real = str(self.path.resolve())
        LmdbStore._claim_path(real)
        self._real = real
        try:
            # map_size 0: adopt the size the writer left in the meta page (for map usage).
            self._env = lmdb.open(real, readonly=True, max_dbs=len(DATABASES) + 1, lock=True, map_size=0)
            clear_stale_readers(self._env, real)
        except lmdb.Error as exc:
            with LmdbStore._open_lock:
                LmdbStore._open_paths.discard(real)
            raise StoreError(f"cannot open LMDB store at {real} read-only: {exc}") from None
        try:
            self._check_format(real)
        except BaseException:
            self._env.close()
            with LmdbStore._open_lock:
                LmdbStore._open_paths.discard(real)
            raise
        self._closed = False

    def _check_format(self, real: str) -> None:
        """``StoreOpenError`` if the store is of a format this code does not read; a store without
        the row (made before formats were recorded) is read as it is, and nothing is written."""

        def check() -> None:
            with self._env.begin() as txn:
                try:
                    meta = self._env.open_db(b"meta", txn=txn, create=False)
                except lmdb.NotFoundError:
                    return  # no tables at all: nothing to misread
                check_format(txn, meta, real)

        try:
            meta_retrying(self._env, check)  # a writer may grow the map meanwhile
        except lmdb.Error as exc:
            raise StoreError(f"cannot open LMDB store at {real} read-only: {exc}") from None

    async def _read(self, fn: Callable[[Any], T]) -> T:
        return self.read_sync(fn)

    def read_sync(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(KvTxn)`` in one read transaction."""
        if self._closed:
            raise StoreError(f"ReadOnlyLmdbStore at {self._real} is closed")
        for _ in range(4):
            try:
                with self._env.begin(buffers=False) as txn:
                    return fn(_LmdbTxn(txn, _Handles(self._env, txn)))
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)  # a writer grew the map: adopt its size
            except lmdb.Error as exc:
                raise StoreError(f"LMDB read failed in {self._real}: {exc}") from None
        raise StoreError(f"LMDB map kept changing size under {self._real}", transient=True)

    async def _write_batch(self, fns: Sequence[WriteFn]) -> list[Any]:
        raise StoreError(f"the store at {self._real} is open read-only")

    def map_usage(self) -> MapUsage:
        """Pages in use (``last_pgno`` times page size), the map size and the data file's size."""
        info, stat = self._env.info(), self._env.stat()
        return MapUsage(
            map_size=int(info["map_size"]),
            used_bytes=(int(info["last_pgno"]) + 1) * int(stat["psize"]),
            file_bytes=(self.path / "data.mdb").stat().st_size,
        )

    def close(self) -> None:
        """Release the environment."""
        if self._closed:
            return
        self._closed = True
        self._env.close()
        with LmdbStore._open_lock:
            LmdbStore._open_paths.discard(self._real)

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
