"""The ordered key-value transaction both stores are written against.

The store's semantics (``stores/_schema.py``) are written once, against ``KvTxn``: named
sub-databases of byte keys that scan in byte order. LMDB provides it natively; the in-memory
store provides it with sorted key lists and an undo log, so both backends behave alike by
construction and the contract suite checks the rest.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Protocol

DATABASES = (
    "events",  # stream \0 seq(8)          -> envelope
    "streams",  # stream                    -> version(8)
    "global",  # position(8)               -> events key
    "meta",  # name                       -> counter(8); format_version -> msgpack int
    "outbox",  # message id(16)            -> message
    "outbox_due",  # due micros(8) position(8) id(16) -> b"" (24 bytes, no position: older rows)
    "deadlines",  # deadline id(16)        -> deadline
    "deadlines_due",  # due micros(8) id(16) -> b""
    "deadlines_stream",  # stream \0 id(16) -> b""
    "snapshots",  # stream                  -> snapshot
    "registry",  # tenant(16) key           -> identity
    "inbox",  # key                         -> digest
    "dead_letters",  # position(8)          -> dead letter
    "checkpoints",  # name                  -> position(8)
    "journal",  # tenant(16) key \0 seq(8)  -> entry (read models written in a commit)
)


class KvTxn(Protocol):
    """One transaction over the named sub-databases in ``DATABASES``."""

    def get(self, db: str, key: bytes) -> bytes | None: ...
    def put(self, db: str, key: bytes, value: bytes) -> None: ...
    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        """Put ``key`` only if it is absent (one lookup, not a get and a put); True if written."""
        ...

    def delete(self, db: str, key: bytes) -> bool: ...
    def scan(
        self, db: str, start: bytes, stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys in ``[start, stop)`` in byte order (``stop`` None: to the end)."""
        ...

    def count(self, db: str) -> int: ...
    def count_range(self, db: str, start: bytes, stop: bytes) -> int:
        """How many keys lie in ``[start, stop)``: what ``scan`` would yield, counted."""
        ...


class MemoryTables:
    """Sorted in-memory tables with an undo log, so a failed commit leaves no trace."""

    def __init__(self) -> None:
        self.data: dict[str, dict[bytes, bytes]] = {db: {} for db in DATABASES}
        self.keys: dict[str, list[bytes]] = {db: [] for db in DATABASES}

    def txn(self) -> MemoryTxn:
        return MemoryTxn(self)


class MemoryTxn:
    """A ``KvTxn`` on ``MemoryTables``; ``rollback()`` undoes every write made through it."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables
        self._undo: list[tuple[str, bytes, bytes | None]] = []

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._t.data[db].get(key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        table = self._t.data[db]
        old = table.get(key)
        if old is None:
            bisect.insort(self._t.keys[db], key)
        table[key] = value
        self._undo.append((db, key, old))

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        if key in self._t.data[db]:
            return False
        self.put(db, key, value)
        return True

    def delete(self, db: str, key: bytes) -> bool:
        table = self._t.data[db]
        old = table.pop(key, None)
        if old is None:
            return False
        keys = self._t.keys[db]
        del keys[bisect.bisect_left(keys, key)]
        self._undo.append((db, key, old))
        return True

    def scan(
        self, db: str, start: bytes, stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        keys = self._t.keys[db]
        lo = bisect.bisect_left(keys, start)
        hi = len(keys) if stop is None else bisect.bisect_left(keys, stop)
        table = self._t.data[db]
        # A copy of the slice: callers may write while iterating.
        for key in keys[lo:hi]:
            value = table.get(key)
            if value is not None:
                yield key, value

    def count(self, db: str) -> int:
        return len(self._t.data[db])

    def count_range(self, db: str, start: bytes, stop: bytes) -> int:
        return sum(1 for _ in self.scan(db, start, stop))

    def rollback(self) -> None:
        for db, key, old in reversed(self._undo):
            table, keys = self._t.data[db], self._t.keys[db]
            if old is None:
                if table.pop(key, None) is not None:
                    del keys[bisect.bisect_left(keys, key)]
            else:
                if key not in table:
                    bisect.insort(keys, key)
                table[key] = old
        self._undo.clear()
