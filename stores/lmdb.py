"""The embedded, durable store: one LMDB environment per directory, with group commit.

Write path: every write (a command's ``Commit``, an outbox acknowledgement, ...) is queued to
one writer thread per store. The thread takes everything queued, opens **one** write
transaction, runs the writes one after the other directly in it, commits once (one fsync), and
only then answers each caller. Concurrent commands from many actors therefore share an fsync,
and the asyncio loop never waits on disk.

A write that fails (a conflict, bad data) must not fail its neighbours. Most failures are
found before the write changes anything (an expected version is checked first): that write
just reports its error and the batch goes on. Only a write that fails after it changed
something costs more: the transaction is aborted and the batch is run again, that write now in
a nested transaction of its own (aborted alone), the others still directly. So a batch opens
nested transactions only for writes that failed half-way (``stats.extra``:
``nested_transactions``, ``redone_batches``).

Reads run on the caller's thread in a read-only transaction: LMDB reads are memory-mapped and
take microseconds, and never wait for the writer (MVCC).

Several OS processes may open the same directory at once (Ray host actors on one node): LMDB's
lock file serializes their writers, and optimistic concurrency catches the rest. The map grows
by doubling on ``MapFullError`` and the batch is retried; a map grown by another process is
adopted on ``MapResizedError``. Never carry an open store across ``fork``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, cast

import lmdb

from mako_actors.errors import DeserializationError, EngineError, InvalidArgument, StoreError, register_error
from mako_actors.ids import StreamId
from mako_actors.store import Activation, Commit, CommitResult
from stores import _schema as schema
from stores._base import StoreBase, WriteFn, chained_conflict, failed_commit, run_write
from stores._kv import DATABASES

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()
_RESIZE_RETRIES = 16


class _Redo(Exception):
    """Write ``index`` of the batch failed after changing something: redo it isolated."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class _Fenced(Exception):
    """The environment is fenced (``LmdbStore.fence``): this write transaction wrote nothing."""


# The ``meta`` key of a fenced environment: a partition's copy that is being moved away.
_FENCE = b"fenced:moving"


class Durability(StrEnum):
    """How hard a commit is pushed to disk before it is acknowledged.

    - ``FSYNC`` (default): data and meta page are flushed; survives power loss.
    - ``NO_META_SYNC``: data flushed, meta page not: a power loss may roll back the last
      transactions, never corrupt the database.
    - ``NO_SYNC``: the OS flushes when it likes: survives a process crash, not a power loss.
    """

    FSYNC = "fsync"
    NO_META_SYNC = "no_meta_sync"
    NO_SYNC = "no_sync"


@register_error
class StoreOpenError(StoreError):
    """The store directory cannot be opened; the message names the path and the real cause
    (not a directory, read-only file system, permission denied, ...)."""


@register_error
class StoreDiskFull(StoreError):
    """A write failed because the file system holding the store is full; nothing of the
    failed batch was written, and writes succeed again once space is freed (transient)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message, transient=transient)


# Free space below which an I/O error during a write is reported as a full disk: LMDB turns a
# short write (what a full disk gives) into EIO.
_LOW_SPACE = 8 * 1024 * 1024


def _open_env(
    path: Path, real: str, *, map_size: int, max_readers: int, sync: bool, metasync: bool
) -> tuple[Any, dict[str, Any]]:
    """Create (0700) and open the environment (files 0600); ``StoreOpenError`` names the cause.

    Store files hold personal data (names, MaLo, addresses): nobody but the owner reads them.
    """
    try:
        if path.exists() and not path.is_dir():
            raise StoreOpenError(f"cannot open LMDB store at {real}: it exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = lmdb.open(
            real,
            map_size=map_size,
            max_dbs=len(DATABASES) + 1,
            max_readers=max_readers,
            sync=sync,
            metasync=metasync,
            mode=0o600,
            # A process-wide reader table slot per thread would leak with thread pools.
            lock=True,
        )
        clear_stale_readers(env, real)
    except OSError as exc:
        cause = errno.errorcode.get(exc.errno or 0, "OSError")
        raise StoreOpenError(f"cannot open LMDB store at {real}: {exc.strerror} ({cause})") from None
    except lmdb.Error as exc:
        raise StoreOpenError(f"cannot open LMDB store at {real}: {_lmdb_cause(exc)}") from None
    try:
        # Checked before any table is made: a store of a later format is left as it is.
        record = meta_retrying(env, lambda: _format_to_record(env, real))
        dbs = {name: env.open_db(name.encode()) for name in DATABASES}
        if record is not None:
            meta_retrying(env, functools.partial(_record_format, env, dbs["meta"], real, record))
        return env, dbs
    except lmdb.Error as exc:
        env.close()
        raise StoreOpenError(f"cannot open LMDB store at {real}: {_lmdb_cause(exc)}") from None
    except BaseException:
        env.close()
        raise


def check_format(txn: lmdb.Transaction, meta: Any, real: str) -> int | None:
    """The store format ``meta`` records (None: no row); ``StoreOpenError`` naming the path, the
    store's format and the formats this code reads if it is none of them (a later version's)."""
    raw = txn.get(schema.FORMAT_KEY, db=meta)
    if raw is None:
        return None
    try:
        version = schema.unpack(bytes(raw))
    except DeserializationError:
        version = raw
    if type(version) is not int or not 1 <= version <= schema.FORMAT_VERSION:
        reads = "format 1" if schema.FORMAT_VERSION == 1 else f"formats 1 to {schema.FORMAT_VERSION}"
        raise StoreOpenError(
            f"cannot open LMDB store at {real}: it is in store format {version!r}, and this version "
            f"of mako_actors reads store {reads} (a later version wrote it? open it with that one); "
            "nothing written"
        )
    return version


def _format_to_record(env: Any, real: str) -> int | None:
    """The format to record in the environment opened at ``real`` for writing: ``FORMAT_VERSION``
    for a new one and for one of an earlier format (this code writes rows of its own from now
    on), None when it records this one. ``StoreOpenError`` for a later format."""
    with env.begin() as txn:
        try:
            meta = env.open_db(b"meta", txn=txn, create=False)
        except lmdb.NotFoundError:
            return schema.FORMAT_VERSION  # no tables yet: made by this open
        return None if check_format(txn, meta, real) == schema.FORMAT_VERSION else schema.FORMAT_VERSION


def _record_format(env: Any, meta: Any, real: str, version: int) -> None:
    """Write ``version`` as the store's format unless another process recorded it (or a later
    one) meanwhile, or the environment is fenced (a moving partition's old copy takes no write)."""
    with env.begin(write=True) as txn:
        recorded = check_format(txn, meta, real)
        if (recorded is None or recorded < version) and txn.get(_FENCE, db=meta) is None:
            txn.put(schema.FORMAT_KEY, schema.pack(version), db=meta)


def meta_retrying(env: Any, fn: Callable[[], T]) -> T:
    """``fn()``, again after adopting a map another process grew, or growing a full one.

    For the checks at open, before the store's locks exist: nothing else uses ``env`` yet.
    """
    for _ in range(_RESIZE_RETRIES):
        try:
            return fn()
        except lmdb.MapResizedError:
            env.set_mapsize(0)
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)
    raise StoreOpenError(f"cannot open LMDB store at {env.path()}: its map kept changing size")


def clear_stale_readers(env: Any, real: str) -> int:
    """Free the reader slots of processes that died inside a read transaction; how many.

    Such a slot keeps its transaction's snapshot: LMDB reuses no page freed after it, so every
    later write grows the file (a CLI read or a notebook beside ``serve`` killed mid-read grew
    its store ~40-fold). LMDB clears it only when asked, or when every process closed the
    store. Cheap (a scan of the reader table); called at every open, by ``serve`` and by the
    Ray hosts (``_Host.clear_stale_readers``).
    """
    cleared = int(env.reader_check())
    if cleared:
        log.warning("LMDB store at %s: cleared %d reader slot(s) of processes dead mid-read", real, cleared)
    return cleared


def _lmdb_cause(exc: lmdb.Error) -> str:
    """py-lmdb's message without the repeated path prefix (``"<path>: Read-only file system"``)."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text and text.startswith("/") else text


def _write_error(real: str, exc: lmdb.Error) -> StoreError:
    """A failed write transaction as a typed error: a full disk is named as such."""
    try:
        stats = os.statvfs(real)
        free = stats.f_bavail * stats.f_frsize
    except OSError:
        free = None
    text = str(exc)
    if "No space left" in text or "Disk quota" in text or (
        free is not None and free < _LOW_SPACE and ("Input/output" in text or "too large" in text)
    ):
        return StoreDiskFull(
            f"LMDB write failed in {real}: the file system is full ({free} bytes free; {text}); "
            "nothing of this batch was written"
        )
    return StoreError(f"LMDB write failed in {real}: {text}", transient=True)


class _Cursors(dict[str, lmdb.Cursor]):
    """One cursor per database of a transaction, opened by the first ``cursors[db]`` of it.

    (A miss is ``__missing__``, so a hit, once per row written, costs a dict lookup and no
    Python call.)
    """

    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        super().__init__()
        self._txn = txn
        self._dbs = dbs

    def __missing__(self, db: str) -> lmdb.Cursor:
        cursor = self[db] = self._txn.cursor(db=self._dbs[db])
        return cursor


class _LmdbTxn:
    """``KvTxn`` over one py-lmdb transaction; ``writes`` counts puts and deletes attempted.

    Rows of ``meta`` (the global, outbox and dead-letter counters every commit reads and
    bumps) are cached: read once per transaction and written back once by ``flush()``, not
    once per commit of a batch. Whoever commits the LMDB transaction calls ``flush()`` first.

    In a write transaction (``write=True``) rows are read and written through one cursor per
    database, opened on first use: ``Cursor.put`` with positional flags is ~3x cheaper than
    ``Transaction.put(..., db=...)`` (py-lmdb parses keyword arguments per call), and a
    commit writes several rows. Before a nested transaction begins, ``close_cursors()``: the
    parent's cursors are not used while a child is open, and are reopened after it.
    """

    __slots__ = ("_cursors", "_dbs", "_dirty", "_meta", "_txn", "_write", "writes")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any], *, write: bool = False) -> None:
        self._txn = txn
        self._dbs = dbs
        self._meta: dict[bytes, bytes | None] = {}
        self._dirty: set[bytes] = set()
        self._cursors = _Cursors(txn, dbs)
        self._write = write
        self.writes = 0

    def close_cursors(self) -> None:
        """Close the cursors of this transaction (reopened on next use)."""
        cursors, self._cursors = self._cursors, _Cursors(self._txn, self._dbs)
        for cursor in cursors.values():
            cursor.close()

    def get(self, db: str, key: bytes) -> bytes | None:
        if db == "meta":
            meta = self._meta
            if key in meta:
                return meta[key]
            value = self._txn.get(key, db=self._dbs[db])
            raw = meta[key] = None if value is None else bytes(value)
            return raw
        value = self._cursors[db].get(key) if self._write else self._txn.get(key, db=self._dbs[db])
        return None if value is None else bytes(value)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.writes += 1  # counted before the call: a put that raised may have changed pages
        if db == "meta":
            self._meta[key] = value
            self._dirty.add(key)
            return
        if self._write:
            self._cursors[db].put(key, value)
        else:  # (LMDB refuses it: a read-only transaction)
            self._txn.put(key, value, db=self._dbs[db])

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        if db == "meta":  # the cached rows: through get and put
            if self.get(db, key) is not None:
                return False
            self.put(db, key, value)
            return True
        self.writes += 1
        if self._write:
            # (dupdata, overwrite) positionally: False when ``key`` is present.
            return bool(self._cursors[db].put(key, value, True, False))
        return bool(self._txn.put(key, value, db=self._dbs[db], overwrite=False))

    def delete(self, db: str, key: bytes) -> bool:
        self.writes += 1
        if db == "meta":
            existed = self.get(db, key) is not None
            self._meta[key] = None
            self._dirty.add(key)
            return existed
        return bool(self._txn.delete(key, db=self._dbs[db]))

    def flush(self) -> None:
        """Write the cached ``meta`` rows changed since the last flush into the transaction."""
        if not self._dirty:
            return
        db = self._dbs["meta"]
        for key in sorted(self._dirty):
            value = self._meta[key]
            if value is None:
                self._txn.delete(key, db=db)
            else:
                self._txn.put(key, value, db=db)
        self._dirty.clear()

    def forget(self) -> None:
        """Drop the ``meta`` cache (a nested transaction committed into this one changed it)."""
        self.flush()
        self._meta.clear()

    def scan(
        self, db: str, start: bytes, stop: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        if db == "meta":
            self.flush()
        cursor = self._txn.cursor(db=self._dbs[db])
        if not cursor.set_range(start):
            return
        for raw_key, value in cursor.iternext():
            key = bytes(raw_key)
            if stop is not None and key >= stop:
                return
            yield key, bytes(value)

    def count(self, db: str) -> int:
        if db == "meta":
            self.flush()
        return int(self._txn.stat(self._dbs[db])["entries"])

    def count_range(self, db: str, start: bytes, stop: bytes) -> int:
        """``KvTxn.count_range``: no row is copied, and a write transaction opens no cursor.

        (A writer counts with the cursor it writes ``db`` through: a count runs to its end
        before the next write repositions it. A journal's length is counted once per entry
        appended, a new journal's mostly: one ``set_range``.)
        """
        if db == "meta":
            self.flush()
        cursor = self._cursors[db] if self._write else self._txn.cursor(db=self._dbs[db])
        count = 0
        found = cursor.set_range(start)
        # (Keys are ``bytes``: no transaction here is begun with ``buffers=True``.)
        while found and cast(bytes, cursor.key()) < stop:
            count += 1
            found = cursor.next()
        return count


class _WriteRequest:
    __slots__ = ("fns", "future")

    def __init__(self, fns: Sequence[WriteFn], future: Future[list[Any]]) -> None:
        self.fns = fns
        self.future = future


class LmdbStore(StoreBase):
    """Every store protocol on one LMDB environment in ``path`` (created if missing).

    Use as ``async with LmdbStore(path) as store:`` or call ``aclose()``; closing drains queued
    writes, stops the writer thread and releases the environment. ``max_batch`` caps how many
    writes share one transaction. Opening the same path twice in one OS process is refused
    (LMDB forbids it); share the store object instead. Every write transaction looks for a
    ``fence`` (set on a partition being moved away): whoever opens a partition's directory, the
    CLI or a node given it as ``--store`` too, is refused while the move runs. A store of a later
    on-disk format than this code reads (``_schema.FORMAT_VERSION``) is refused with
    ``StoreOpenError``, nothing written; one made before formats were recorded gets the row.
    """

    _open_paths: set[str] = set()
    _open_lock = threading.Lock()

    @staticmethod
    def _claim_path(real: str) -> None:
        """Mark the resolved path ``real`` open in this process (one environment per path and process).

        Raises ``StoreError`` if it already is; whoever claims it releases it on close or failure.
        """
        with LmdbStore._open_lock:
            if real in LmdbStore._open_paths:
                raise StoreError(f"LMDB environment {real} is already open in this process")
            LmdbStore._open_paths.add(real)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability | str = Durability.FSYNC,
        map_size: int = 256 * 1024 * 1024,
        max_batch: int = 1024,
        max_readers: int = 256,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self.durability = Durability(durability)
        except ValueError:
            choices = ", ".join(repr(d.value) for d in Durability)
            raise InvalidArgument(f"LmdbStore: durability {durability!r} is none of {choices}") from None
        for name, value in (("map_size", map_size), ("max_batch", max_batch), ("max_readers", max_readers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"LmdbStore: {name} must be a positive whole number, got {value!r}")
        self.max_batch = max_batch
        real = str(self.path.resolve())
        LmdbStore._claim_path(real)
        self._real = real
        try:
            self._env, self._dbs = _open_env(
                self.path,
                real,
                map_size=map_size,
                max_readers=max_readers,
                sync=self.durability is not Durability.NO_SYNC,
                metasync=self.durability is Durability.FSYNC,
            )
        except BaseException:
            # Whatever failed, this path is not open: a later attempt must not be refused.
            with LmdbStore._open_lock:
                LmdbStore._open_paths.discard(real)
            raise
        # Readers take it shared in spirit (one at a time is fine: reads are microseconds);
        # the writer takes it only to change the map size, which needs no live transactions.
        self._env_lock = threading.Lock()
        # Held for a whole write batch, by the writer thread and by ``commit_many_now`` on the
        # caller's: LMDB runs one write transaction at a time anyway, but the map may only be
        # resized while none is open in this process, and a resize by one thread while the
        # other's transaction is open failed that transaction ("mdb_txn_begin: Invalid
        # argument"). Re-entrant: a batch adopts another process's map size while holding it.
        # Order: this lock, then ``_env_lock``.
        self._write_lock = threading.RLock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, name=f"lmdb-writer:{real}", daemon=True
        )
        self._writer.start()

    # -- reads -----------------------------------------------------------------------------

    async def _read(self, fn: Callable[[Any], T]) -> T:
        return self.read_sync(fn)

    def read_sync(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(KvTxn)`` in a read-only transaction on this thread (internal, for tools)."""
        self._check_open()
        for _ in range(_RESIZE_RETRIES):
            try:
                with self._env_lock, self._env.begin(buffers=False) as txn:
                    return fn(_LmdbTxn(txn, self._dbs))
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.Error as exc:
                raise StoreError(f"LMDB read failed in {self._real}: {exc}") from None
        raise StoreError(f"LMDB map kept changing size under {self._real}", transient=True)

    def load_activation_now(
        self, stream_id: StreamId, workflow_name: str, state_schema_version: int
    ) -> Activation | None:
        """``load_activation`` in one read transaction on this thread (never waits on the writer)."""
        activation = self.read_sync(
            lambda txn: schema.load_activation(txn, stream_id, workflow_name, state_schema_version, None)
        )
        self._stats.events_read += len(activation.events)
        return activation

    def load_activations_now(
        self, requests: Sequence[tuple[StreamId, str, int]]
    ) -> list[Activation | Exception]:
        """``load_activation_now`` for many ``(stream_id, workflow_name, state_schema_version)``
        at once, in one read transaction (the actors a loop turn activates).

        A stream that does not read or decode gets its error in its place, the others their
        ``Activation``; ``StoreError`` only when the read transaction itself fails.
        """

        def read(txn: Any) -> list[Activation | Exception]:
            out: list[Activation | Exception] = []
            for stream_id, workflow_name, state_schema_version in requests:
                try:
                    out.append(
                        schema.load_activation(txn, stream_id, workflow_name, state_schema_version, None)
                    )
                except lmdb.Error:
                    raise  # the transaction itself: retried or reported by ``read_sync``
                except Exception as exc:
                    out.append(exc)
            return out

        activations = self.read_sync(read)
        self._stats.events_read += sum(
            len(a.events) for a in activations if isinstance(a, Activation)
        )
        return activations

    # -- writes ----------------------------------------------------------------------------

    def _write_batch(self, fns: Sequence[WriteFn]) -> asyncio.Future[list[Any]]:
        self._check_open()
        future: Future[list[Any]] = Future()
        self._queue.put(_WriteRequest(fns, future))
        return asyncio.wrap_future(future)

    def commit_many_now(self, commits: Sequence[Commit]) -> list[CommitResult | EngineError]:
        """``commit_many`` on the calling thread, now: one write transaction, no writer-thread hop.

        For a batch job on one event loop that gathers its commits itself (``replay``): it blocks
        the loop for the transaction and saves the hand-over to the writer thread and back.
        Failures, map growth and redo are as in ``commit_many``; a write transaction of the
        writer thread in progress is waited for (LMDB runs one at a time). Raises ``StoreError``
        when the transaction itself fails.
        """
        self._check_open()
        # Commits travel as themselves: ``run_write`` applies a ``Commit`` without a wrapper.
        request = _WriteRequest(commits, Future())
        self._run_batch([request], len(commits))
        results: list[CommitResult | EngineError] = request.future.result()
        for result in results:
            self._count_result(result)
        return results

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._run_queued(item):
                return
            # Nothing of a batch stays referenced here while the next one is awaited: its
            # commits and results (every envelope, id and row of a turn) would otherwise live
            # on until then, traversed by each garbage collection meanwhile, and die here.
            del item

    def _run_queued(self, first: _WriteRequest) -> bool:
        """Run ``first`` and whatever else is queued (up to ``max_batch`` writes) as one batch.

        True if the stop marker was taken from the queue (the loop ends after this batch).
        A request whose caller gave up (its future cancelled) before it was taken is dropped,
        unwritten; one taken can no longer be cancelled (``set_running_or_notify_cancel``), so
        its answer always finds its future pending.
        """
        batch: list[_WriteRequest] = []
        size = 0
        if first.future.set_running_or_notify_cancel():
            batch.append(first)
            size = len(first.fns)
        while size < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                if batch:
                    self._run_batch(batch, size)
                return True
            if nxt.future.set_running_or_notify_cancel():
                batch.append(nxt)
                size += len(nxt.fns)
        if batch:
            self._run_batch(batch, size)
        return False

    def _run_batch(self, batch: list[_WriteRequest], size: int) -> None:
        with self._write_lock:
            self._run_batch_locked(batch, size)

    def _run_batch_locked(self, batch: list[_WriteRequest], size: int) -> None:
        outcome: list[list[Any]] | BaseException
        for _ in range(_RESIZE_RETRIES):
            try:
                outcome = self._transact(batch)
                break
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.Error as exc:
                outcome = _write_error(self._real, exc)
                break
            except _Fenced:
                from mako_actors.partitions import PartitionNotOpen

                outcome = PartitionNotOpen(f"{self._real} is being moved to another node: nothing written")
                break
            except BaseException as exc:  # never leave a caller waiting forever
                outcome = StoreError(f"LMDB write failed in {self._real}: {exc!r}")
                break
        else:
            outcome = StoreError(f"LMDB map could not grow enough in {self._real}")
        self._stats.transactions += 1
        self._stats.largest_batch = max(self._stats.largest_batch, size)
        for index, request in enumerate(batch):
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome[index])

    def _transact(self, batch: list[_WriteRequest]) -> list[list[Any]]:
        """One write transaction for the whole batch; each write's result or its error, in order.

        Writes run directly in the transaction. One that raises after changing something
        (``_Redo``) makes the batch run again from scratch with that write isolated in a
        nested transaction; the others stay flat. Each redo isolates one more write, so a
        batch runs at most once more per half-failed write.
        """
        isolated: set[int] = set()
        while True:
            try:
                return self._transact_once(batch, isolated)
            except _Redo as redo:
                isolated.add(redo.index)
                self._count("redone_batches")

    def _transact_once(self, batch: list[_WriteRequest], isolated: set[int]) -> list[list[Any]]:
        results: list[list[Any]] = []
        index = 0
        with self._env.begin(write=True) as parent:
            # One lookup per batch, on every store: a store opened outside the partition layer
            # (an operator's command on a partition directory) must not write past a fence either.
            if parent.get(_FENCE, db=self._dbs["meta"]) is not None:
                raise _Fenced(self._real)
            txn = _LmdbTxn(parent, self._dbs, write=True)
            for request in batch:
                out: list[Any] = []
                failed: dict[str, int] = {}  # a failed commit's stream -> the version it would leave
                for fn in request.fns:
                    # (``failed_commit`` only where a write can fail: not on the success path.)
                    blocked = chained_conflict(fn, failed, txn) if failed else None
                    if blocked is not None:
                        out.append(blocked)
                        failed_commit(fn, blocked, failed)
                    elif index in isolated:
                        out.append(self._nested(parent, txn, fn))
                        failed_commit(fn, out[-1], failed)
                    else:
                        writes = txn.writes
                        try:
                            out.append(run_write(fn, txn))
                        except (lmdb.MapFullError, lmdb.MapResizedError):
                            raise
                        except Exception as exc:
                            # Half-written (or LMDB itself failed, which may leave the
                            # transaction unusable): abort all, redo with this one isolated.
                            if txn.writes != writes or isinstance(exc, lmdb.Error):
                                raise _Redo(index) from None
                            out.append(self._as_error(exc))
                            failed_commit(fn, out[-1], failed)
                    index += 1
                results.append(out)
            txn.flush()
        return results

    def _nested(self, parent: lmdb.Transaction, outer: _LmdbTxn, fn: WriteFn) -> Any:
        """Run ``fn`` in a nested transaction: on any error it is aborted alone."""
        self._count("nested_transactions")
        outer.flush()  # the child must see every counter the batch bumped so far
        outer.close_cursors()  # a parent's cursors stay unused while its child is open
        child = self._env.begin(write=True, parent=parent)
        try:
            inner = _LmdbTxn(child, self._dbs, write=True)
            result = run_write(fn, inner)
            inner.flush()
            child.commit()
            outer.forget()
            return result
        except (lmdb.MapFullError, lmdb.MapResizedError):
            child.abort()
            raise
        except Exception as exc:  # a bug in one write must not fail its neighbours
            child.abort()
            return self._as_error(exc)

    def _as_error(self, exc: Exception) -> EngineError:
        if isinstance(exc, EngineError):
            return exc
        if isinstance(exc, lmdb.Error):
            return StoreError(f"LMDB write failed in {self._real}: {exc}")
        return StoreError(f"write failed: {exc!r}")

    def _count(self, name: str) -> None:
        extra = self._stats.extra
        extra[name] = extra.get(name, 0) + 1

    def fence(self, on: bool) -> None:
        """Refuse (``on``) or allow again every later write transaction on this environment, in
        every process that has it open: ``PartitionNotOpen``, nothing written.

        For a partition being moved away: set under
        LMDB's write lock, so every write that began before it is in a copy taken after, and no
        write after it is lost with the old copy. The copy carries the fence: its new owner
        lifts it. Raises ``StoreError`` if the write fails.
        """
        self._check_open()
        with self._write_lock:
            for _ in range(_RESIZE_RETRIES):
                try:
                    with self._env.begin(write=True) as txn:
                        if on:
                            txn.put(_FENCE, b"1", db=self._dbs["meta"])
                        else:
                            txn.delete(_FENCE, db=self._dbs["meta"])
                    return
                except lmdb.MapResizedError:  # another process grew the map: take its size
                    with self._env_lock:
                        self._env.set_mapsize(0)
                except lmdb.MapFullError:
                    self._grow_map()
                except lmdb.Error as exc:
                    raise StoreError(f"LMDB fence write failed in {self._real}: {exc}") from None
            raise StoreError(f"LMDB fence write failed in {self._real}: the map kept changing size")

    def _grow_map(self) -> None:
        """Double the map; the caller holds ``_write_lock`` (no write transaction is open)."""
        with self._env_lock:
            self._env.set_mapsize(self._env.info()["map_size"] * 2)
        self._stats.map_resizes += 1

    def _adopt_map_size(self) -> None:
        """Take the map size another process set; waits for a write batch in progress here."""
        with self._write_lock, self._env_lock:
            self._env.set_mapsize(0)

    def clear_stale_readers(self) -> int:
        """Free the reader slots of processes that died mid-read (``clear_stale_readers``); how
        many. A long-running node calls it now and then: a reader beside it may be killed."""
        self._check_open()
        return clear_stale_readers(self._env, self._real)

    # -- lifecycle -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"LmdbStore at {self._real} is closed")

    def close(self) -> None:
        """Finish queued writes, stop the writer thread and release the environment."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        with contextlib.suppress(lmdb.Error):
            if self.durability is not Durability.FSYNC:
                self._env.sync(True)
        self._env.close()
        with LmdbStore._open_lock:
            LmdbStore._open_paths.discard(self._real)

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop while queued writes finish."""
        if self._closed:
            return
        await asyncio.to_thread(self.close)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
