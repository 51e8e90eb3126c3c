"""Store protocols: what every backend (``stores.memory``, ``stores.lmdb``) must guarantee.

One store object implements all of them. Every method is async; a backend never blocks the
event loop on a write (LMDB writes run on a writer thread).

Guarantees every implementation keeps (the contract suite in ``mako_actors.testing`` checks
them against each backend):

- ``commit`` is atomic: the events, outbox messages, deadlines, deadline cancellations, the
  snapshot and registry entries of one ``Commit`` are stored together or not at all.
- Optimistic concurrency: a commit whose ``expected`` version does not match the stream raises
  ``VersionConflict`` and writes nothing, not even its outbox rows.
- Sequence numbers start at 1 and have no gaps; global positions increase in commit order.
- ``stream_version`` is O(1); keys scan in stream-then-sequence and due-time order.
- Registry keys are tenant-scoped; a key bound to another stream raises ``RegistryConflict``.
- Keys named by callers are bounded by LMDB's 511-byte key (``stores._schema.MAX_KEY_BYTES``)
  less the bytes the layout adds, in UTF-8: registry and dead-letter keys at most 495 bytes,
  journal keys 486, inbox keys 511, checkpoint names 510. A longer one raises
  ``InvalidArgument`` naming it and writes nothing (a commit holding it writes nothing at
  all), on the memory store as on LMDB.
- Journal entries of a ``Commit`` are appended with it or not at all, in commit order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from mako_actors._frozen import positional_maker
from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline
from mako_actors.envelope import EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError
from mako_actors.ids import DeadlineId, OutboxMessageId, StreamId, TenantId
from mako_actors.outbox import OutboxMessage
from mako_actors.snapshot import Snapshot
from mako_actors.version import ExpectedVersion


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One plain-data entry appended to the tenant-scoped journal ``key`` (a read model).

    Journals are append-only lists per business key (e.g. ``supply:<MaLo>``), written in the
    same transaction as the events that decided them, so a read model never lags its cause.
    """

    tenant_id: TenantId
    key: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    """Everything one command writes, in one transaction.

    ``events`` carry placeholder sequence numbers; the store assigns the real ones (version+1,
    ...) and the global positions. A ``snapshot`` must be at the stream's version after this
    commit. ``cancel_deadline_labels`` cancels this stream's deadlines with those labels before
    ``deadlines`` are registered, so one command can re-arm a label. ``fired_deadline_id``: the
    deadline a timeout's commit handles and removes; when it is no longer stored (fired or
    cancelled meanwhile) the commit fails with ``DeadlineGone`` and writes nothing.
    """

    stream_id: StreamId
    expected: ExpectedVersion
    events: Sequence[EventEnvelope] = ()
    outbox: Sequence[OutboxMessage] = ()
    deadlines: Sequence[Deadline] = ()
    cancel_deadline_labels: Sequence[str] = ()
    cancel_deadline_ids: Sequence[DeadlineId] = ()
    snapshot: Snapshot | None = None
    registry: Sequence[tuple[str, ProcessIdentity]] = ()
    journal: Sequence[JournalEntry] = ()
    fired_deadline_id: DeadlineId | None = None


@dataclass(frozen=True, slots=True)
class Activation:
    """What a store read for rebuilding one process's state (``load_activation``).

    ``snapshot``: the usable latest snapshot, or None (replay from the first event);
    ``events``: the events after it (all events without one); ``ignored_snapshot_at``: the
    sequence of a matching snapshot the stream does not hold (past its end, or over other
    events than it was taken after), which was ignored.
    """

    snapshot: Snapshot | None
    events: list[EventEnvelope]
    ignored_snapshot_at: int | None = None


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The stored events (with sequence numbers and global positions) and the new version."""

    events: tuple[EventEnvelope, ...]
    version: int


#: ``CommitResult(events, version)`` without the frozen ``__init__``'s ``object.__setattr__``
#: per field: a store builds one per commit.
commit_result: Callable[[tuple[EventEnvelope, ...], int], CommitResult] = positional_maker(CommitResult)


@dataclass(slots=True)
class StoreStats:
    """Counters a store keeps for tests, benchmarks and metrics."""

    transactions: int = 0
    commits: int = 0
    conflicts: int = 0
    largest_batch: int = 0
    events_read: int = 0
    map_resizes: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class EventStore(Protocol):
    """Append-only event streams with optimistic concurrency and a global order."""

    async def append(
        self, stream_id: StreamId, expected: ExpectedVersion, events: Sequence[EventEnvelope]
    ) -> list[EventEnvelope]: ...
    async def load(self, stream_id: StreamId) -> list[EventEnvelope]: ...
    async def load_from(
        self, stream_id: StreamId, after_seq: int, *, upto: int | None = None
    ) -> list[EventEnvelope]: ...
    async def stream_version(self, stream_id: StreamId) -> int: ...
    async def list_streams(self, prefix: str = "") -> list[StreamId]: ...
    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[EventEnvelope]:
        """One page of at most ``limit`` events after ``after_position`` in global order."""
        ...


@runtime_checkable
class AtomicAppend(Protocol):
    """Events plus outbox, deadlines, snapshot and registry entries in one transaction."""

    async def commit(self, commit: Commit) -> CommitResult: ...
    async def commit_many(
        self, commits: Sequence[Commit]
    ) -> list[CommitResult | EngineError]: ...


@runtime_checkable
class OutboxStore(Protocol):
    """Durable outbound messages, due by ``next_attempt_at``."""

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None: ...
    async def pending(self, limit: int, now: datetime) -> list[OutboxMessage]: ...
    async def acknowledge(self, message_id: OutboxMessageId) -> bool: ...
    async def dead_letter_outbox(
        self, message_id: OutboxMessageId, reason: str, recorded_at: datetime
    ) -> DeadLetter:
        """The message's dead letter and its removal from the outbox, in one transaction;
        ``NotFound`` (nothing written) if it is gone."""
        ...
    async def reschedule(
        self, message_id: OutboxMessageId, next_attempt_at: datetime, error: str | None = None
    ) -> OutboxMessage: ...
    async def outbox_count(self) -> int: ...


@runtime_checkable
class SnapshotStore(Protocol):
    """The latest snapshot per stream."""

    async def save_snapshot(self, snapshot: Snapshot) -> None: ...
    async def load_snapshot(self, stream_id: StreamId) -> Snapshot | None: ...


@runtime_checkable
class DeadlineStore(Protocol):
    """Persisted timers, due by ``due_at``."""

    async def register_deadline(self, deadline: Deadline) -> None: ...
    async def cancel_deadline(self, deadline_id: DeadlineId) -> bool: ...
    async def dead_letter_deadline(
        self, deadline_id: DeadlineId, reason: str, recorded_at: datetime
    ) -> DeadLetter:
        """The deadline's dead letter and its removal, in one transaction; ``NotFound``
        (nothing written) if it is gone."""
        ...
    async def due_deadlines(self, now: datetime, limit: int) -> list[Deadline]: ...
    async def deadlines_for_stream(self, stream_id: StreamId) -> list[Deadline]: ...


@runtime_checkable
class Registry(Protocol):
    """Tenant-scoped map from business keys to process identities."""

    async def register(self, tenant_id: TenantId, key: str, identity: ProcessIdentity) -> None: ...
    async def lookup(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None: ...


@runtime_checkable
class Journal(Protocol):
    """Tenant-scoped, append-only lists of plain entries per key (read models of a commit)."""

    async def journal(self, tenant_id: TenantId, key: str) -> list[dict[str, Any]]: ...
    async def append_journal(
        self, tenant_id: TenantId, key: str, entries: Sequence[Mapping[str, Any]]
    ) -> None: ...


@runtime_checkable
class Inbox(Protocol):
    """Inbound dedup: ``accept`` is true the first time a key is seen, false after."""

    async def accept(self, key: str, digest: str = "") -> bool: ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """Messages given up on, in the order they were given up."""

    async def add_dead_letter(self, letter: DeadLetter) -> DeadLetter: ...
    async def dead_letters(self, limit: int = 100, after_position: int = 0) -> list[DeadLetter]: ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Projection checkpoints: the last global position a projection has processed, and the
    state of an in-memory read model saved with it (so a restart reads only newer events)."""

    async def save_checkpoint(self, name: str, position: int, state: Any = None) -> None: ...
    async def load_checkpoint(self, name: str) -> int: ...
    async def load_checkpoint_state(self, name: str) -> tuple[int, Any]: ...


@runtime_checkable
class Store(
    EventStore,
    AtomicAppend,
    OutboxStore,
    SnapshotStore,
    DeadlineStore,
    Registry,
    Journal,
    Inbox,
    DeadLetterStore,
    CheckpointStore,
    Protocol,
):
    """Everything the engine needs from one backend."""

    @property
    def stats(self) -> StoreStats: ...
    async def aclose(self) -> None: ...
