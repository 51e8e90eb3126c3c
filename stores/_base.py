"""The async store API, once: every method is a read or a write of a ``_schema`` function.

A backend supplies three things: ``_read(fn)`` (run ``fn`` in a read transaction),
``_write_batch(fns)`` (run each ``fn`` in its own nested transaction inside one write
transaction, and return each one's result or ``EngineError``) and ``aclose()``. Everything
else, the whole public store API, lives here, so backends cannot drift apart.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline
from mako_actors.envelope import EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument, VersionConflict
from mako_actors.ids import DeadlineId, OutboxMessageId, StreamId, TenantId
from mako_actors.outbox import OutboxMessage
from mako_actors.snapshot import Snapshot
from mako_actors.store import Activation, Commit, CommitResult, StoreStats
from mako_actors.version import ExpectedVersion
from stores import _inspect
from stores import _schema as schema
from stores._kv import KvTxn

T = TypeVar("T")
WriteFn = Callable[[KvTxn], Any] | Commit
"""One write of a batch: a function of the transaction, or a ``Commit`` (``apply_commit``)."""


def chained_conflict(fn: WriteFn, failed: dict[str, int], txn: KvTxn) -> VersionConflict | None:
    """``VersionConflict`` for a ``Commit`` that follows a failed commit of its stream in the same
    request, expecting the version that one would have left (``failed``: stream -> that
    version), else None: nothing of it is written.

    An actor decides its next command on the state its previous one leaves and commits both in
    one request, the second expecting the first's version. Had the first failed because another
    writer appended one event, the second would match the stream's version and store events
    decided on a state the store never had (and a snapshot of it). A commit of the stream that
    expects something else (decided on its own) stands alone.
    """
    if type(fn) is Commit and failed.get(fn.stream_id) == _expected_exact(fn):
        return VersionConflict(fn.stream_id, fn.expected, schema.stream_version(txn, fn.stream_id))
    return None


def failed_commit(fn: WriteFn, result: Any, failed: dict[str, int]) -> None:
    """Note in ``failed`` the version a failed ``Commit`` would have left its stream at, for the
    commits chained to it (``chained_conflict``); one without an exact expectation starts none."""
    if type(fn) is Commit and isinstance(result, EngineError):
        expected = _expected_exact(fn)
        if expected is not None:
            failed[fn.stream_id] = expected + len(fn.events)


def _expected_exact(commit: Commit) -> int | None:
    """The version ``commit`` expects its stream at, if it names one (``ANY``: None)."""
    expected = commit.expected
    if expected == ExpectedVersion.ANY:
        return None
    return 0 if expected == ExpectedVersion.NO_STREAM else expected.version


def run_write(fn: WriteFn, txn: KvTxn) -> Any:
    """Run one write of a batch in ``txn``.

    A ``Commit`` travels as itself rather than wrapped in a ``partial`` per commit: one
    object less per command for the garbage collector.
    """
    if type(fn) is Commit:
        return schema.apply_commit(txn, fn)
    return fn(txn)  # type: ignore[operator]


class StoreBase(abc.ABC):
    """The full ``mako_actors.store.Store`` API over a backend's read and write primitives."""

    def __init__(self) -> None:
        self._stats = StoreStats()

    @property
    def stats(self) -> StoreStats:
        """Counters: write transactions, commits, conflicts, largest batch, events read."""
        return self._stats

    @abc.abstractmethod
    async def _read(self, fn: Callable[[KvTxn], T]) -> T: ...

    @abc.abstractmethod
    def _write_batch(self, fns: Sequence[WriteFn]) -> Awaitable[list[Any]]:
        """Results in order; an ``EngineError`` in the list means that write alone failed.

        Each write runs through ``run_write``.
        """

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def _write(self, fn: Callable[[KvTxn], T]) -> T:
        (result,) = await self._write_batch([fn])
        if isinstance(result, EngineError):
            raise result
        return result  # type: ignore[no-any-return]

    def _count_result(self, result: Any) -> None:
        if isinstance(result, CommitResult):
            self._stats.commits += 1
        elif isinstance(result, EngineError) and result.transient:
            self._stats.conflicts += 1

    async def __aenter__(self) -> StoreBase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- events and atomic commits ---------------------------------------------------------

    async def commit(self, commit: Commit) -> CommitResult:
        """Write ``commit`` atomically; ``VersionConflict`` (nothing written) on a stale version."""
        (result,) = await self.commit_many([commit])
        if isinstance(result, EngineError):
            raise result
        return result

    async def commit_many(self, commits: Sequence[Commit]) -> list[CommitResult | EngineError]:
        """Write several commits in one transaction; each succeeds or fails on its own, but for
        the commits of one stream, which are a chain.

        A conflict or error in one commit leaves the others untouched; the list holds each
        one's ``CommitResult`` or its ``EngineError``, in order. After a commit of a stream
        fails, a later one in the list that expects the version it would have left fails too
        (``VersionConflict``, nothing written): it was decided on that state (``chained_conflict``).
        """
        results = await self._write_batch(commits)
        for result in results:
            self._count_result(result)
        return results

    async def append(
        self, stream_id: StreamId, expected: ExpectedVersion, events: Sequence[EventEnvelope]
    ) -> list[EventEnvelope]:
        """Append events atomically under optimistic concurrency; returns them as stored."""
        result = await self.commit(Commit(stream_id=stream_id, expected=expected, events=events))
        return list(result.events)

    async def load(self, stream_id: StreamId) -> list[EventEnvelope]:
        """Every event of the stream, in sequence order (empty if the stream does not exist)."""
        return await self.load_from(stream_id, 0)

    async def load_from(
        self, stream_id: StreamId, after_seq: int, *, upto: int | None = None
    ) -> list[EventEnvelope]:
        """Events with ``after_seq < sequence <= upto`` (``upto`` None: to the end)."""
        if after_seq < 0:
            raise InvalidArgument(f"load_from: after_seq must be >= 0, got {after_seq}")
        events = await self._read(lambda txn: schema.load_events(txn, stream_id, after_seq, upto))
        self._stats.events_read += len(events)
        return events

    async def stream_version(self, stream_id: StreamId) -> int:
        """The sequence number of the stream's last event (0: no events); O(1)."""
        return await self._read(lambda txn: schema.stream_version(txn, stream_id))

    async def list_streams(self, prefix: str = "") -> list[StreamId]:
        """Ids of the streams starting with ``prefix``, in byte order."""
        return await self._read(lambda txn: schema.list_streams(txn, prefix))

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventEnvelope]:
        """One page: at most ``limit`` (default 1,000) events of all streams after ``after_position``.

        In global order. Not everything: read on from the last event's ``global_position``
        until a page is empty. ``InvalidArgument`` for a negative ``after_position``.
        """
        return await self._read(lambda txn: schema.read_all(txn, after_position, limit))

    # -- outbox ----------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Store outbound messages (idempotent per message id)."""
        def write(txn: KvTxn) -> None:
            for message in messages:
                schema.enqueue(txn, message)

        await self._write(write)

    async def pending(self, limit: int, now: datetime) -> list[OutboxMessage]:
        """Messages due at ``now``, earliest ``next_attempt_at`` first."""
        return await self._read(lambda txn: schema.pending(txn, limit, now))

    async def acknowledge(self, message_id: OutboxMessageId) -> bool:
        """Remove a delivered message; false if it was not there."""
        return await self._write(lambda txn: schema.acknowledge(txn, message_id))

    async def dead_letter_outbox(
        self, message_id: OutboxMessageId, reason: str, recorded_at: datetime
    ) -> DeadLetter:
        """Give up on an outbox message: its dead letter (the row as stored, kind ``outbox``) and
        the row's removal in one transaction, so a crash leaves either the row or the letter.

        ``NotFound`` if the message is gone (another worker delivered it): nothing is written.
        """
        return await self._write(lambda txn: schema.dead_letter_outbox(txn, message_id, reason, recorded_at))

    async def reschedule(
        self, message_id: OutboxMessageId, next_attempt_at: datetime, error: str | None = None
    ) -> OutboxMessage:
        """Count a failed attempt and move the message to ``next_attempt_at``; ``NotFound`` if gone."""
        return await self._write(lambda txn: schema.reschedule(txn, message_id, next_attempt_at, error))

    async def outbox_count(self) -> int:
        """How many messages wait in the outbox."""
        return await self._read(lambda txn: txn.count("outbox"))

    # -- snapshots -------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the stream's snapshot."""
        await self._write(lambda txn: schema.save_snapshot(txn, snapshot))

    async def load_snapshot(self, stream_id: StreamId) -> Snapshot | None:
        """The stream's latest snapshot, if any."""
        return await self._read(lambda txn: schema.load_snapshot(txn, stream_id))

    async def load_activation(
        self, stream_id: StreamId, workflow_name: str, state_schema_version: int, upto: int | None = None
    ) -> Activation:
        """The latest usable snapshot of the stream and the events after it, in one read.

        What ``load_state`` needs, read in one transaction instead of two or three; the
        snapshot counts only for ``workflow_name`` at ``state_schema_version``.
        """
        activation = await self._read(
            lambda txn: schema.load_activation(txn, stream_id, workflow_name, state_schema_version, upto)
        )
        self._stats.events_read += len(activation.events)
        return activation

    def load_activation_now(
        self, stream_id: StreamId, workflow_name: str, state_schema_version: int
    ) -> Activation | None:
        """``load_activation`` on the calling thread, if this backend reads without waiting.

        None when it cannot (the caller then awaits ``load_activation``). The embedded stores
        read in microseconds from memory-mapped pages, so an actor activates in the loop turn
        that brought its first message, without a task of its own.
        """
        return None

    # -- deadlines -------------------------------------------------------------------------

    async def register_deadline(self, deadline: Deadline) -> None:
        """Store a deadline (replacing one with the same id)."""
        await self._write(lambda txn: schema.register_deadline(txn, deadline))

    async def cancel_deadline(self, deadline_id: DeadlineId) -> bool:
        """Remove a deadline; false if it was not there."""
        return await self._write(lambda txn: schema.cancel_deadline(txn, deadline_id))

    async def dead_letter_deadline(
        self, deadline_id: DeadlineId, reason: str, recorded_at: datetime, *, keyed: bool = False
    ) -> DeadLetter:
        """Give up on a deadline: its dead letter (the row as stored, kind ``deadline``) and its
        removal in one transaction, so a crash leaves either the deadline or the letter.

        ``NotFound`` if the deadline is gone (fired or cancelled meanwhile): nothing is written.
        ``keyed``: the letter gets ``DeadLetter.keyed()``'s key, so an equal one is stored once.
        """
        return await self._write(
            lambda txn: schema.dead_letter_deadline(txn, deadline_id, reason, recorded_at, keyed)
        )

    async def due_deadlines(self, now: datetime, limit: int) -> list[Deadline]:
        """Deadlines due at ``now``, earliest first."""
        return await self._read(lambda txn: schema.due_deadlines(txn, now, limit))

    async def deadlines_for_stream(self, stream_id: StreamId) -> list[Deadline]:
        """The stream's open deadlines, earliest first."""
        return await self._read(lambda txn: schema.deadlines_for_stream(txn, stream_id))

    # -- registry, inbox, dead letters, checkpoints ----------------------------------------

    async def register(self, tenant_id: TenantId, key: str, identity: ProcessIdentity) -> None:
        """Bind a business key to a process; ``RegistryConflict`` if bound to another one."""
        await self._write(lambda txn: schema.register(txn, tenant_id, key, identity))

    async def lookup(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        """The process bound to ``key`` in ``tenant_id``, if any."""
        return await self._read(lambda txn: schema.lookup(txn, tenant_id, key))

    async def journal(self, tenant_id: TenantId, key: str) -> list[dict[str, Any]]:
        """The entries of journal ``key`` in ``tenant_id``, in append order (empty if none)."""
        return await self._read(lambda txn: schema.journal(txn, tenant_id, key))

    async def append_journal(
        self, tenant_id: TenantId, key: str, entries: Sequence[Mapping[str, Any]]
    ) -> None:
        """Append ``entries`` to journal ``key`` in one transaction (imports; commits carry their own)."""

        def write(txn: KvTxn) -> None:
            for entry in entries:
                schema.append_journal(txn, tenant_id, key, entry)

        await self._write(write)

    async def accept(self, key: str, digest: str = "") -> bool:
        """True the first time ``key`` is seen; false for a repeat with the same ``digest``.

        A repeat with a different digest raises ``InboxConflict`` (same reference, other bytes).
        """
        return await self._write(lambda txn: schema.accept(txn, key, digest))

    async def add_dead_letter(self, letter: DeadLetter) -> DeadLetter:
        """Store a dead letter; returns it with its position."""
        return await self._write(lambda txn: schema.add_dead_letter(txn, letter))

    async def dead_letters(self, limit: int = 100, after_position: int = 0) -> list[DeadLetter]:
        """Dead letters after ``after_position``, oldest first; ``InvalidArgument`` if it is negative."""
        return await self._read(lambda txn: schema.dead_letters(txn, limit, after_position))

    async def save_checkpoint(self, name: str, position: int, state: Any = None) -> None:
        """Record that projection ``name`` has processed up to global ``position``, with the read
        model's ``state`` (plain data; None: none) in the same transaction.

        ``InvalidArgument`` for an empty name, one with NUL, or a state msgpack cannot hold.
        """
        await self._write(lambda txn: schema.save_checkpoint(txn, name, position, state))

    async def load_checkpoint(self, name: str) -> int:
        """The last saved position of projection ``name`` (0 if none)."""
        return await self._read(lambda txn: schema.load_checkpoint(txn, name))

    async def load_checkpoint_state(self, name: str) -> tuple[int, Any]:
        """The last saved position of projection ``name`` and the state saved with it:
        ``(0, None)`` if none, ``(position, None)`` if it was saved without one."""
        return await self._read(lambda txn: schema.load_checkpoint_state(txn, name))

    # -- operator reads and repairs (``mako-actors outbox/deadlines/dead-letters/stats``) ----

    async def outbox_messages(self, limit: int = 10_000) -> list[OutboxMessage]:
        """Up to ``limit`` outbox rows, due or not, earliest next attempt first."""
        return await self._read(lambda txn: _inspect.outbox_messages(txn, limit))

    async def outbox_page(
        self, after: OutboxMessageId | None = None, limit: int = 1_000
    ) -> list[OutboxMessage]:
        """Up to ``limit`` outbox rows after message ``after`` (None: from the first), in id order
        (ids are time-ordered: about the order they were enqueued).

        Each page is its own read: paging on with the last id read reaches every message that
        stays in the outbox meanwhile exactly once, however often it is rescheduled.
        """
        start = b"" if after is None else after.bytes
        return await self._read(lambda txn: _inspect.outbox_page(txn, start, limit))

    async def outbox_of_stream(self, stream_id: StreamId) -> list[OutboxMessage]:
        """The messages of one stream waiting to leave, earliest next attempt first.

        Costs one pass over the whole outbox (it has no index by stream).
        """
        return await self._read(lambda txn: _inspect.outbox_of_stream(txn, str(stream_id)))

    async def due_counts(self, by: datetime | None = None) -> tuple[int, int]:
        """How many outbox messages and open deadlines are due at ``by`` (None: all of them)."""

        def both(txn: KvTxn) -> tuple[int, int]:
            return _inspect.due_count(txn, "outbox_due", by), _inspect.due_count(txn, "deadlines_due", by)

        return await self._read(both)

    async def all_deadlines(self, limit: int = 10_000) -> list[Deadline]:
        """Up to ``limit`` open deadlines of every process, earliest first."""
        return await self._read(lambda txn: _inspect.all_deadlines(txn, limit))

    async def table_counts(self) -> dict[str, int]:
        """Entries per table (events, streams, outbox, deadlines, dead letters, ...)."""
        return await self._read(_inspect.table_counts)

    async def retry_outbox(self, message_id: OutboxMessageId, now: datetime) -> OutboxMessage:
        """Make an outbox message due at ``now``; ``NotFound`` if it was delivered already."""
        return await self._write(lambda txn: _inspect.retry_outbox(txn, message_id, now))

    async def requeue_dead_letter(self, position: int, now: datetime) -> DeadLetter:
        """Put a dead outbox message or deadline back and stamp the letter, atomically.

        ``InvalidArgument`` for a letter requeued before or an inbound one (no bytes kept);
        ``NotFound`` for an unknown position.
        """
        return await self._write(lambda txn: _inspect.requeue_dead_letter(txn, position, now))
