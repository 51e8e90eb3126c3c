"""The store's semantics, written once over ``KvTxn``: key layout, encoding and every operation.

Keys are built so byte order is the order we scan in: big-endian integers for sequence numbers,
positions and due times (microseconds since the epoch), fixed-width UUID bytes for ids, and a
``\\x00`` after a stream id so one stream's range never runs into another's. Values are msgpack
of plain data, never pickle.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgpack
from pydantic_core import to_jsonable_python

from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline
from mako_actors.envelope import (
    EventEnvelope,
    PlainEnvelopeDecoder,
    ProcessIdentity,
    iso_utc,
    stamped_plain,
    workflow_text,
)
from mako_actors.errors import (
    DeadlineGone,
    DeserializationError,
    InboxConflict,
    InvalidArgument,
    NotFound,
    RegistryConflict,
    SerializationError,
    VersionConflict,
)
from mako_actors.ids import DeadlineId, OutboxMessageId, StreamId, TenantId
from mako_actors.outbox import OutboxMessage, outbox_plain
from mako_actors.snapshot import Snapshot
from mako_actors.store import Activation, Commit, CommitResult, commit_result
from mako_actors.version import ExpectedVersion
from stores._kv import KvTxn

_GLOBAL = b"global_position"
_DEAD = b"dead_letter_position"
_OUTBOX = b"outbox_position"
_MAX_KEY = b"\xff" * 8
_DEAD_KEY = b"dead_letter_key:"

FORMAT_VERSION = 2
"""The on-disk format of a durable store: its tables, key layout and value encoding. Bump it
with any change older code would misread or refuse: a key or row laid out anew, a table
repurposed, and also a new field in a stored row (rows decode strictly: an older version
refuses an unknown field, mid-operation). Not for what older code never reads (a new table).

1: rows as before formats were recorded; 2: outbox rows keep ``not_before``, snapshots their
``event_id``. A store records its format in ``meta`` under ``FORMAT_KEY`` (msgpack of the
integer). A store without the row is of format 1 (made before formats were recorded). A
read-write open records this code's format (it writes rows of it from now on), a read-only one
writes nothing. A store of a format above this one is refused on every open
(``StoreOpenError``), before anything is written: a version rolled back after an upgrade
refuses the store at open instead of failing on its rows."""
FORMAT_KEY = b"format_version"

MAX_KEY_BYTES = 511
"""LMDB's key size limit (``Environment.max_key_size()`` of its default build). Every key a
caller names is checked against it, less the bytes the layout adds, on every store: a longer
one raises ``InvalidArgument`` before anything is written, never LMDB's ``MDB_BAD_VALSIZE``
(a ``StoreError``, which callers would retry)."""
# The longest caller-named key of each kind (UTF-8 bytes): its row key adds the tenant (16
# bytes) to registry and journal keys, a NUL and a u64 sequence to journal keys, a NUL (the
# state row) to checkpoint names, and a prefix to dead-letter keys.
MAX_REGISTRY_KEY = MAX_KEY_BYTES - 16
MAX_JOURNAL_KEY = MAX_KEY_BYTES - 16 - 1 - 8
MAX_INBOX_KEY = MAX_KEY_BYTES
MAX_CHECKPOINT_NAME = MAX_KEY_BYTES - 1
MAX_DEAD_LETTER_KEY = MAX_KEY_BYTES - len(_DEAD_KEY)

T = TypeVar("T")


# -- encoding ------------------------------------------------------------------------------


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def from_u64(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def micros(instant: datetime) -> int:
    return max(0, int(instant.timestamp() * 1_000_000))


def pack(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``: the same bytes, from a reused packer.

    ``packb`` builds a ``Packer`` (and its 256 KiB buffer) per call, about half of its cost
    for a stored row. A packer is not thread-safe, so each thread (each store's writer) keeps
    its own, with a small buffer; one whose buffer grew for a large row (or that failed) is
    dropped, so a thread keeps no more than ``_PACK_KEEP`` for it.
    """
    try:
        packer = _PACKERS.packer
    except AttributeError:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True, buf_size=_PACK_BUFFER)
    try:
        raw: bytes = packer.pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        del _PACKERS.packer
        raise SerializationError(f"cannot encode {type(value).__name__} as msgpack: {exc}") from None
    except BaseException:
        del _PACKERS.packer
        raise
    if len(raw) > _PACK_KEEP:
        del _PACKERS.packer
    return raw


_PACK_BUFFER = 16 * 1024
_PACK_KEEP = 1024 * 1024
_PACKERS = threading.local()


def unpack(raw: bytes) -> Any:
    """A stored value again. Map keys as written: a read model's state or a journal entry may
    key by number (``{2024: 5}``), which ``pack`` writes; msgpack's default refuses to read it.
    """
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DeserializationError(f"stored value is not valid msgpack: {exc}") from None


def _decode(raw: bytes, build: Callable[[dict[str, Any]], T], what: str) -> T:
    try:
        return build(unpack(raw))
    except DeserializationError:
        raise
    except Exception as exc:  # pydantic ValidationError and friends: stored data is bad
        raise DeserializationError(f"stored {what} does not decode: {exc}") from None


def _sized(what: str, key: str, limit: int) -> bytes:
    """``key`` in UTF-8; ``InvalidArgument`` naming it when it is longer than ``limit`` bytes."""
    raw = key.encode()
    if len(raw) > limit:
        _too_long(what, key, len(raw), limit)
    return raw


def _too_long(what: str, key: str, size: int, limit: int) -> None:
    shown = f"{key[:60]!r}..." if len(key) > 60 else repr(key)
    raise InvalidArgument(
        f"{what} {shown} is {size} bytes in UTF-8; at most {limit} fit in a store key "
        f"(LMDB keys hold {MAX_KEY_BYTES} bytes)"
    )


def stream_key(stream_id: str) -> bytes:
    return stream_id.encode() + b"\x00"


def event_key(stream_id: str, seq: int) -> bytes:
    return stream_key(stream_id) + u64(seq)


# -- events --------------------------------------------------------------------------------


def stream_version(txn: KvTxn, stream_id: str) -> int:
    raw = txn.get("streams", stream_id.encode())
    return 0 if raw is None else from_u64(raw)


def load_events(
    txn: KvTxn, stream_id: str, after_seq: int = 0, upto: int | None = None
) -> list[EventEnvelope]:
    start = event_key(stream_id, after_seq + 1)
    stop = event_key(stream_id, upto + 1) if upto is not None else stream_key(stream_id) + _MAX_KEY
    decode = PlainEnvelopeDecoder()  # parses the stream's repeated ids once
    return [_decode(raw, decode, "event") for _, raw in txn.scan("events", start, stop)]


def list_streams(txn: KvTxn, prefix: str) -> list[StreamId]:
    start = prefix.encode()
    stop = _prefix_end(start)
    return [StreamId(key.decode()) for key, _ in txn.scan("streams", start, stop)]


def _prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key starting with ``prefix`` (None: no upper bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _after(what: str, after_position: int) -> bytes:
    """The key of the position after ``after_position``; ``InvalidArgument`` when it is negative."""
    if after_position < 0:
        raise InvalidArgument(f"{what}: after_position must be >= 0, got {after_position}")
    return u64(after_position + 1)


def read_all(txn: KvTxn, after_position: int, limit: int) -> list[EventEnvelope]:
    out: list[EventEnvelope] = []
    decode = PlainEnvelopeDecoder()
    for _, ref in txn.scan("global", _after("read_all", after_position)):
        if len(out) >= limit:
            break
        raw = txn.get("events", ref)
        if raw is None:
            raise DeserializationError(f"global index points at a missing event {ref!r}")
        out.append(_decode(raw, decode, "event"))
    return out


def apply_commit(txn: KvTxn, commit: Commit) -> CommitResult:
    """Write one ``Commit``; raises before writing anything it cannot write whole.

    Callers run it inside a transaction they abort on any exception, so a failure late in the
    function (a registry conflict, say) still leaves nothing behind.
    """
    stream_id = commit.stream_id
    _check_commit_belongs(commit)
    stream = stream_id.encode()
    raw = txn.get("streams", stream)
    # (Counters are decoded and encoded inline, not through ``u64``/``from_u64``: a Python
    # call each, several per commit, on the writer's hot path.)
    current = 0 if raw is None else int.from_bytes(raw, "big")
    expected = commit.expected
    # An exact version (every engine commit) is compared inline: ``matches`` reads enum
    # members, which costs a Python-level descriptor call each on 3.11.
    if not (expected.version == current if expected.kind is None else expected.matches(current)):
        raise VersionConflict(stream_id, expected, current)
    fired = commit.fired_deadline_id
    if fired is not None and txn.get("deadlines", fired.int.to_bytes(16, "big")) is None:
        # Checked before anything is written: a deadline fires once, however many schedulers
        # or live actors of the process raced for it.
        raise DeadlineGone(f"deadline {fired} of {stream_id} is no longer stored (fired or cancelled)")
    events = commit.events
    version = current + len(events)
    if commit.snapshot is not None and commit.snapshot.sequence != version:
        raise InvalidArgument(
            f"snapshot at sequence {commit.snapshot.sequence} does not match the stream's "
            f"version {version} after this commit"
        )
    # The stored envelopes: ``events`` itself while every one is stamped in place (an
    # engine-made placeholder, see ``EventEnvelope.stamped``), else a list of the copies. (No
    # list and tuple per commit on the hot path: both would live until the caller is answered,
    # two more objects per command for the garbage collector.)
    stored: list[EventEnvelope] | None = None
    if events:
        put = txn.put
        raw = txn.get("meta", _GLOBAL)
        position = 0 if raw is None else int.from_bytes(raw, "big")
        prefix = stream + b"\x00"
        for offset, envelope in enumerate(events, start=1):
            fields = envelope.__dict__
            if fields["stream_id"] != stream_id:
                raise InvalidArgument(
                    f"event {envelope.event_id} belongs to {envelope.stream_id}, not {stream_id}"
                )
            seq = current + offset
            position += 1
            stamped, plain = stamped_plain(envelope, fields, seq, position)
            if stamped is not envelope and stored is None:
                stored = list(events[: offset - 1])
            if stored is not None:
                stored.append(stamped)
            key = prefix + seq.to_bytes(8, "big")
            put("events", key, pack(plain))
            put("global", position.to_bytes(8, "big"), key)
        put("meta", _GLOBAL, position.to_bytes(8, "big"))
        put("streams", stream, version.to_bytes(8, "big"))
    # (Each optional part behind an ``if``: most commits have none of them, and a ``for``
    # over an empty tuple still builds an iterator.)
    if commit.outbox:
        _enqueue_all(txn, commit.outbox)
    if commit.cancel_deadline_labels:
        _cancel_labelled(txn, stream_id, set(commit.cancel_deadline_labels))
    if commit.cancel_deadline_ids:
        for deadline_id in commit.cancel_deadline_ids:
            cancel_deadline(txn, deadline_id, of_stream=stream_id)
    if fired is not None:
        cancel_deadline(txn, fired, of_stream=stream_id)
    if commit.deadlines:
        for deadline in commit.deadlines:
            register_deadline(txn, deadline)
    if commit.snapshot is not None:
        save_snapshot(txn, commit.snapshot)
    if commit.registry:
        _register_commit(txn, commit.registry)
    if commit.journal:
        for entry in commit.journal:
            append_journal(txn, entry.tenant_id, entry.key, entry.data)
    if stored is not None:
        return commit_result(tuple(stored), version)
    return commit_result(events if type(events) is tuple else tuple(events), version)


def _check_commit_belongs(commit: Commit) -> None:
    """Refuse (``InvalidArgument``) a commit holding a row of another stream, process or tenant.

    Every event, outbox row, deadline, the snapshot, every registry and journal entry must belong to
    the commit's stream: a forged or mixed-up row would put one tenant's data into another's
    stream or bind its keys there. A few integer comparisons per row, no reads.
    """
    stream_id = commit.stream_id
    events = commit.events
    tenant, process = _owner(stream_id, events[0].__dict__ if events else None)
    workflow = events[0].__dict__["workflow_id"] if events else None
    for envelope in events:
        # (Fields from ``__dict__``: a model attribute goes through pydantic's slow
        # ``__getattr__`` hook; several per row, once per commit.)
        fields = envelope.__dict__
        if (
            fields["tenant_id"].int != tenant
            or fields["process_id"].int != process
            or (fields["workflow_id"] is not workflow and fields["workflow_id"] != workflow)
        ):
            raise InvalidArgument(
                f"commit to {stream_id}: event {envelope.event_id} belongs to process "
                f"{envelope.process_id} of tenant {envelope.tenant_id} ({envelope.workflow_id})"
            )
    if commit.outbox or commit.deadlines:
        # (The two tuples one after the other, not unpacked into a new one.)
        rows: Sequence[Any]
        for rows in (commit.outbox, commit.deadlines):
            for row in rows:
                fields = row.__dict__
                if (
                    fields["stream_id"] != stream_id
                    or fields["tenant_id"].int != tenant
                    or fields["process_id"].int != process
                ):
                    raise InvalidArgument(
                        f"commit to {stream_id}: {type(row).__name__} of process {row.process_id} "
                        f"of tenant {row.tenant_id} ({row.stream_id}) does not belong to it"
                    )
    if commit.snapshot is not None and commit.snapshot.stream_id != stream_id:
        raise InvalidArgument(
            f"commit to {stream_id}: snapshot of {commit.snapshot.stream_id} does not belong to it"
        )
    # A commit's keys mostly share one identity object (its process): checked once.
    checked: ProcessIdentity | None = None
    for key, identity in commit.registry:
        if identity is not checked:
            if identity.__dict__["stream_id"] != stream_id:
                raise InvalidArgument(
                    f"commit to {stream_id}: registry key {key!r} would bind {identity.stream_id}"
                )
            checked = identity
    for entry in commit.journal:
        if entry.tenant_id.int != tenant:
            raise InvalidArgument(
                f"commit to {stream_id}: journal {entry.key!r} of tenant {entry.tenant_id} "
                "does not belong to it"
            )


def _owner(stream_id: str, event: dict[str, Any] | None = None) -> tuple[int, int]:
    """The tenant and process (as 128-bit ints) a stream id names; parsed once per stream.

    Cached in a plain dict, emptied when it reaches ``_OWNERS_MAX`` entries: an
    ``lru_cache`` keeps a linked-list node per entry, one more object per stream for the
    garbage collector to traverse for as long as the process runs. Most commits of a large
    fleet are a stream's first in a while, so a new stream id is not parsed when it is
    the one the fields of the commit's first ``event`` (its ``__dict__``) spell: the ids'
    canonical text, which is what the parse would read. Else a canonical stream id (every
    ``StreamId``) is read as hex directly, ~3x cheaper than two ``uuid.UUID`` parses;
    anything else is parsed by ``uuid.UUID``, as it always was.
    """
    owner = _OWNERS.get(stream_id)
    if owner is not None:
        return owner
    if event is not None and stream_id == _stream_text(event["tenant_id"], event["process_id"]):
        owner = event["tenant_id"].int, event["process_id"].int
    elif _CANONICAL_STREAM.fullmatch(stream_id) is not None:
        owner = int(stream_id[8:44].replace("-", ""), 16), int(stream_id[45:].replace("-", ""), 16)
    else:
        try:
            _, tenant, process = stream_id.split("/")
            owner = uuid.UUID(tenant).int, uuid.UUID(process).int
        except ValueError:
            raise InvalidArgument(
                f"{stream_id!r} is not a stream id (process/<tenant>/<process>)"
            ) from None
    if len(_OWNERS) >= _OWNERS_MAX:
        _OWNERS.clear()
    _OWNERS[stream_id] = owner
    return owner


def _stream_text(tenant_id: Any, process_id: Any) -> str:
    """``f"process/{tenant_id}/{process_id}"``: typed ids by the text they keep from birth."""
    try:
        return f"process/{tenant_id._text}/{process_id._text}"
    except AttributeError:  # ids of other types (an envelope built without validation)
        return f"process/{tenant_id}/{process_id}"


_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CANONICAL_STREAM = re.compile(f"process/{_UUID}/{_UUID}")
_OWNERS: dict[str, tuple[int, int]] = {}
_OWNERS_MAX = 1 << 16


def append(
    txn: KvTxn, stream_id: StreamId, expected: ExpectedVersion, events: Sequence[EventEnvelope]
) -> CommitResult:
    return apply_commit(txn, Commit(stream_id=stream_id, expected=expected, events=events))


# -- outbox --------------------------------------------------------------------------------


def _due_key(at: datetime, ident: bytes) -> bytes:
    return u64(micros(at)) + ident


def _outbox_due_key(message: OutboxMessage) -> bytes:
    """due micros(8) + position(8) + id(16): equal due times scan in enqueue order.

    Rows written before positions existed (position 0) keep their 24-byte key.
    """
    ident = message.message_id.bytes
    if message.position:
        return u64(micros(message.next_attempt_at)) + u64(message.position) + ident
    return _due_key(message.next_attempt_at, ident)


def _aware(value: datetime, what: str) -> datetime:
    """``value`` if it is time-zone aware; ``InvalidArgument`` for a naive one (local time?)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(
            f"{what}: naive datetime {value.isoformat()} has no time zone; pass an aware one"
        )
    return value


def enqueue(txn: KvTxn, message: OutboxMessage) -> None:
    """Store a new message with the next outbox position (its place among equal due times).

    A message id stored already is left as it is: re-enqueueing (a retried command, a
    redelivered batch) must not reset its attempts, error or schedule.
    """
    _enqueue_all(txn, (message,))


def _enqueue_all(txn: KvTxn, messages: Sequence[OutboxMessage]) -> None:
    """``enqueue`` each of ``messages``, reading and writing the position counter once.

    A row stored already is encoded in vain (rare; it saves a lookup per new row).
    """
    raw = txn.get("meta", _OUTBOX)
    start = position = 0 if raw is None else int.from_bytes(raw, "big")
    insert, put = txn.insert, txn.put
    for message in messages:
        fields = message.__dict__  # (not attributes: pydantic's ``__getattr__`` hook is slow)
        # ``message_id.bytes`` is ``UUID.bytes``, a Python property: the id's int, directly.
        ident = fields["message_id"].int.to_bytes(16, "big")
        plain = outbox_plain(fields, message.__pydantic_fields_set__)
        plain["position"] = position + 1
        if insert("outbox", ident, pack(plain)):
            position += 1
            # (``micros`` inline: once per outbox row.)
            due = max(0, int(fields["next_attempt_at"].timestamp() * 1_000_000)).to_bytes(8, "big")
            put("outbox_due", due + position.to_bytes(8, "big") + ident, b"")
    if position != start:
        put("meta", _OUTBOX, position.to_bytes(8, "big"))


def _due(
    txn: KvTxn,
    index: str,
    rows: str,
    now: datetime,
    limit: int,
    build: Callable[[dict[str, Any]], T],
    what: str,
) -> list[T]:
    """Up to ``limit`` rows of ``rows`` whose due-time key in ``index`` is at or before ``now``."""
    out: list[T] = []
    for key, _ in txn.scan(index, b"", u64(micros(_aware(now, what + "s due")) + 1)):
        if len(out) >= limit:
            break
        raw = txn.get(rows, key[-16:])  # the id ends every due key
        if raw is not None:
            try:
                out.append(_decode(raw, build, what))
            except DeserializationError as exc:
                # Name the row: every later one waits behind it, and the operator must find it.
                raise DeserializationError(f"{exc} (its id: {uuid.UUID(bytes=key[-16:])})") from None
    return out


def pending(txn: KvTxn, limit: int, now: datetime) -> list[OutboxMessage]:
    """Due messages, by due time, then in enqueue order (a command's in the order returned)."""
    return _due(txn, "outbox_due", "outbox", now, limit, OutboxMessage.from_plain, "outbox message")


def acknowledge(txn: KvTxn, message_id: OutboxMessageId) -> bool:
    raw = txn.get("outbox", message_id.bytes)
    if raw is None:
        return False
    message = _decode(raw, OutboxMessage.from_plain, "outbox message")
    txn.delete("outbox_due", _outbox_due_key(message))
    txn.delete("outbox", message_id.bytes)
    return True


def dead_letter_outbox(
    txn: KvTxn, message_id: OutboxMessageId, reason: str, recorded_at: datetime
) -> DeadLetter:
    """Move an outbox message into the dead letters: the letter (carrying the row as stored)
    and the row's removal in one transaction; ``NotFound`` if it is gone, nothing written."""
    _aware(recorded_at, "dead letter")
    raw = txn.get("outbox", message_id.bytes)
    if raw is None:
        raise NotFound(f"outbox message {message_id} does not exist (acknowledged already?)")
    message = _decode(raw, OutboxMessage.from_plain, "outbox message")
    letter = add_dead_letter(
        txn, DeadLetter(kind="outbox", reason=reason, payload=message.to_plain(), recorded_at=recorded_at)
    )
    txn.delete("outbox_due", _outbox_due_key(message))
    txn.delete("outbox", message_id.bytes)
    return letter


def reschedule(
    txn: KvTxn, message_id: OutboxMessageId, next_attempt_at: datetime, error: str | None
) -> OutboxMessage:
    _aware(next_attempt_at, "reschedule")
    raw = txn.get("outbox", message_id.bytes)
    if raw is None:
        raise NotFound(f"outbox message {message_id} does not exist (acknowledged already?)")
    message = _decode(raw, OutboxMessage.from_plain, "outbox message")
    updated = message.model_copy(
        update={
            "next_attempt_at": next_attempt_at.astimezone(UTC),
            "attempts": message.attempts + 1,
            "last_error": error,
        }
    )
    txn.delete("outbox_due", _outbox_due_key(message))
    txn.put("outbox", message_id.bytes, pack(updated.to_plain()))
    txn.put("outbox_due", _outbox_due_key(updated), b"")
    return updated


# -- deadlines -----------------------------------------------------------------------------


def register_deadline(txn: KvTxn, deadline: Deadline) -> None:
    ident = deadline.deadline_id.int.to_bytes(16, "big")
    raw = txn.get("deadlines", ident)
    if raw is not None:  # replaced: its index rows may be keyed by another due time or stream
        _remove_deadline(txn, ident, *_due_and_stream(raw))
    txn.put("deadlines", ident, pack(_deadline_plain(deadline)))
    txn.put("deadlines_due", _due_key(deadline.due_at, ident), b"")
    txn.put("deadlines_stream", stream_key(deadline.stream_id) + ident, b"")


def _deadline_plain(deadline: Deadline) -> dict[str, Any]:
    """``deadline.to_plain()`` (``model_dump(mode="json")``), written out for the exact class.

    Ids and the workflow id serialize as ``str``, an aware UTC ``due_at`` as ``iso_utc``
    writes it, the payload as ``to_jsonable_python``; pydantic's dump costs several times more.
    A subclass, or a due time in another zone, dumps through pydantic.
    """
    fields = deadline.__dict__
    due = fields["due_at"]
    if type(deadline) is not Deadline or due.tzinfo is not UTC:
        return deadline.to_plain()
    cause = fields["causation_event_id"]
    try:
        # (``_text``: the typed ids' ``str``, kept from birth; ``workflow_text``: ``str``, cached.)
        return {
            "deadline_id": fields["deadline_id"]._text,
            "stream_id": str(fields["stream_id"]),
            "process_id": fields["process_id"]._text,
            "tenant_id": fields["tenant_id"]._text,
            "workflow_id": workflow_text(fields["workflow_id"]),
            "label": fields["label"],
            "due_at": iso_utc(due),
            "payload": to_jsonable_python(fields["payload"]),
            "causation_event_id": None if cause is None else str(cause),
        }
    except AttributeError:  # built without validation from other values (``model_construct``)
        return deadline.to_plain()


def cancel_deadline(txn: KvTxn, deadline_id: DeadlineId, *, of_stream: str | None = None) -> bool:
    """Remove a deadline; with ``of_stream``, refuse one of another stream (``InvalidArgument``)."""
    ident = deadline_id.int.to_bytes(16, "big")
    raw = txn.get("deadlines", ident)
    if raw is None:
        return False
    due, stream = _due_and_stream(raw)
    if of_stream is not None and stream != of_stream:
        raise InvalidArgument(f"deadline {deadline_id} belongs to {stream}, not {of_stream}")
    _remove_deadline(txn, ident, due, stream)
    return True


def dead_letter_deadline(
    txn: KvTxn, deadline_id: DeadlineId, reason: str, recorded_at: datetime, keyed: bool = False
) -> DeadLetter:
    """Move a deadline into the dead letters: the letter (carrying the row as stored) and the
    deadline's removal in one transaction; ``NotFound`` if it is gone, nothing written.

    ``keyed``: the letter gets ``DeadLetter.keyed()``'s key (a replay keys all of its letters).
    """
    _aware(recorded_at, "dead letter")
    ident = deadline_id.int.to_bytes(16, "big")
    raw = txn.get("deadlines", ident)
    if raw is None:
        raise NotFound(f"deadline {deadline_id} does not exist (fired or cancelled already?)")
    deadline = _decode(raw, Deadline.from_plain, "deadline")
    letter = DeadLetter(kind="deadline", reason=reason, payload=deadline.to_plain(), recorded_at=recorded_at)
    stored = add_dead_letter(txn, letter.keyed() if keyed else letter)
    _remove_deadline(txn, ident, *_due_and_stream(raw))
    return stored


def _remove_deadline(txn: KvTxn, ident: bytes, due: int, stream: str) -> None:
    txn.delete("deadlines_due", u64(due) + ident)
    txn.delete("deadlines_stream", stream_key(stream) + ident)
    txn.delete("deadlines", ident)


def _due_and_stream(raw: bytes, data: Any = None) -> tuple[int, str]:
    """Due micros and stream id of a stored deadline row (``data``: the row unpacked already).

    Read straight from a row in the canonical stored form (the engine's own rows); anything
    else is decoded by ``Deadline.from_plain`` (``DeserializationError`` if it is no deadline).
    """
    due, stream = _stored_due_and_stream(unpack(raw) if data is None else data)
    if due is None or stream is None:
        deadline = _decode(raw, Deadline.from_plain, "deadline")
        return micros(deadline.due_at), deadline.stream_id
    return due, stream


def _cancel_labelled(txn: KvTxn, stream_id: str, labels: set[str]) -> None:
    """Remove the stream's deadlines whose label is in ``labels``.

    A row is only unpacked to read its label; a match in the canonical stored form (the
    engine's own rows) is removed by its stored stream id and due time without building a
    ``Deadline``. Anything else goes through ``Deadline.from_plain``, so an unreadable row
    whose label would match fails the commit with ``DeserializationError``, as it always did.
    """
    prefix = stream_key(stream_id)
    idents = [key[len(prefix) :] for key, _ in txn.scan("deadlines_stream", prefix, _prefix_end(prefix))]
    for ident in idents:
        raw = txn.get("deadlines", ident)
        if raw is None:
            continue
        data = unpack(raw)
        label = data.get("label") if type(data) is dict else None
        if type(label) is str:
            if label in labels:
                _remove_deadline(txn, ident, *_due_and_stream(raw, data))
            continue
        deadline = _decode(raw, Deadline.from_plain, "deadline")
        if deadline.label in labels:
            _remove_deadline(txn, ident, micros(deadline.due_at), deadline.stream_id)


def _stored_due_and_stream(data: Any) -> tuple[int | None, str | None]:
    """Due micros and stream id of a deadline row in the form ``_deadline_plain`` writes.

    (None, None) for anything else: a row of other fields, or a due time not written as
    ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (which ``datetime.fromisoformat`` reads exactly as
    pydantic does).
    """
    if type(data) is not dict or data.keys() != _DEADLINE_FIELDS:
        return None, None
    due, stream = data["due_at"], data["stream_id"]
    if type(due) is not str or type(stream) is not str or _ISO_UTC.fullmatch(due) is None:
        return None, None
    return micros(datetime.fromisoformat(due)), stream


_DEADLINE_FIELDS = frozenset(Deadline.model_fields)
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z")


def due_deadlines(txn: KvTxn, now: datetime, limit: int) -> list[Deadline]:
    return _due(txn, "deadlines_due", "deadlines", now, limit, Deadline.from_plain, "deadline")


def deadlines_for_stream(txn: KvTxn, stream_id: str) -> list[Deadline]:
    prefix = stream_key(stream_id)
    out: list[Deadline] = []
    for key, _ in txn.scan("deadlines_stream", prefix, _prefix_end(prefix)):
        raw = txn.get("deadlines", key[len(prefix) :])
        if raw is not None:
            out.append(_decode(raw, Deadline.from_plain, "deadline"))
    out.sort(key=lambda d: d.due_at)
    return out


# -- snapshots, registry, inbox, dead letters, checkpoints ----------------------------------


def save_snapshot(txn: KvTxn, snapshot: Snapshot) -> None:
    txn.put("snapshots", snapshot.stream_id.encode(), pack(snapshot.to_plain()))


def load_snapshot(txn: KvTxn, stream_id: str) -> Snapshot | None:
    raw = txn.get("snapshots", stream_id.encode())
    return None if raw is None else _decode(raw, Snapshot.from_plain, "snapshot")


def load_activation(
    txn: KvTxn, stream_id: str, workflow_name: str, state_schema_version: int, upto: int | None
) -> Activation:
    """What rebuilding a process's state needs, read in one transaction (see ``Activation``).

    The latest snapshot counts if the workflow and state schema version match, it is not past
    ``upto`` and the stream holds it (its sequence, and there the event it was taken after:
    one it does not hold is reported in ``ignored_snapshot_at``); then the tail after it, else
    every event up to ``upto``.
    """
    # The version first: a stream without events (every new process) or one that ends at
    # its snapshot needs no cursor scan at all.
    version = stream_version(txn, stream_id)
    last = version if upto is None else min(version, upto)
    snapshot = load_snapshot(txn, stream_id)
    ignored = None
    if (
        snapshot is not None
        and snapshot.workflow_name == workflow_name
        and snapshot.state_schema_version == state_schema_version
        and (upto is None or snapshot.sequence <= upto)
    ):
        if version >= snapshot.sequence and _holds(txn, stream_id, snapshot):
            tail = load_events(txn, stream_id, snapshot.sequence, upto) if last > snapshot.sequence else []
            return Activation(snapshot, tail, None)
        # Past the stream's end, or over other events (restored from elsewhere?).
        ignored = snapshot.sequence
    return Activation(None, load_events(txn, stream_id, 0, upto) if last > 0 else [], ignored)


def _holds(txn: KvTxn, stream_id: str, snapshot: Snapshot) -> bool:
    """Whether the stream's event at the snapshot's sequence is the one it was taken after.

    True for a snapshot without an event id (at sequence 0, or written before ids were
    recorded). The caller checked that the stream reaches the sequence.
    """
    event_id = snapshot.event_id
    if event_id is None:
        return True
    raw = txn.get("events", event_key(stream_id, snapshot.sequence))
    if raw is None:
        return False
    text = str(event_id)
    # The engine writes an event row as a map whose first entry is its id: compared in place,
    # the row needs no unpacking. Any other row (or another id) is unpacked to be sure.
    if 0x80 <= raw[0] <= 0x8F and raw.startswith(_EVENT_ID_ENTRY + text.encode(), 1):
        return True
    data = unpack(raw)
    return type(data) is dict and data.get("event_id") == text


_EVENT_ID_ENTRY = b"\xa8event_id\xd9\x24"
"""msgpack of the key ``"event_id"`` and the head of a 36-character string (a UUID's text)."""


def _registry_key(tenant_id: TenantId, key: str) -> bytes:
    if not key:
        raise InvalidArgument("registry key must not be empty")
    return tenant_id.int.to_bytes(16, "big") + _sized("registry key", key, MAX_REGISTRY_KEY)


def register(txn: KvTxn, tenant_id: TenantId, key: str, identity: ProcessIdentity) -> None:
    if identity.tenant_id != tenant_id:
        raise InvalidArgument(
            f"registry key {key!r}: identity belongs to tenant {identity.tenant_id}, not {tenant_id}"
        )
    _bind(txn, _registry_key(tenant_id, key), pack(_identity_plain(identity)), key, identity)


def _register_commit(txn: KvTxn, registry: Sequence[tuple[str, ProcessIdentity]]) -> None:
    """``register`` each entry of a commit whose identities ``_check_commit_belongs`` checked.

    A commit's entries name its own process, mostly as one identity object: its row is
    encoded once, not once per key. The tenant check of ``register`` holds by construction
    (each key is registered under its identity's own tenant).
    """
    last: ProcessIdentity | None = None
    tenant = b""
    row = b""
    insert = txn.insert
    for key, identity in registry:
        if identity is not last:
            # (``UUID.bytes`` is a Python property: the id's int, directly, as elsewhere here.)
            last, tenant = identity, identity.tenant_id.int.to_bytes(16, "big")
            row = pack(_identity_plain(identity))
        if not key:
            raise InvalidArgument("registry key must not be empty")
        raw_key = tenant + key.encode()
        if len(raw_key) > MAX_KEY_BYTES:
            _too_long("registry key", key, len(raw_key) - 16, MAX_REGISTRY_KEY)
        if not insert("registry", raw_key, row):  # (``_bind`` inline: a call less per key)
            _check_bound(txn, raw_key, key, identity)


def _bind(txn: KvTxn, raw_key: bytes, row: bytes, key: str, identity: ProcessIdentity) -> None:
    """Store ``row`` under ``raw_key`` unless bound already; ``RegistryConflict`` if bound elsewhere."""
    if not txn.insert("registry", raw_key, row):
        _check_bound(txn, raw_key, key, identity)


def _check_bound(txn: KvTxn, raw_key: bytes, key: str, identity: ProcessIdentity) -> None:
    """``RegistryConflict`` unless the stored ``raw_key`` binds ``identity``'s stream."""
    existing = txn.get("registry", raw_key)
    assert existing is not None  # insert found it
    bound = _decode(existing, ProcessIdentity.model_validate, "registry entry")
    if bound.stream_id != identity.stream_id:
        raise RegistryConflict(
            f"registry key {key!r} of tenant {identity.tenant_id} is bound to {bound.stream_id}, "
            f"not {identity.stream_id}"
        )


def _identity_plain(identity: ProcessIdentity) -> dict[str, Any]:
    """``identity.to_plain()`` (``model_dump(mode="json")``), written out for the exact class.

    Every field serializes as ``str`` of its value (the id types' serializer), in declaration
    order; pydantic's dump costs several times more. A subclass dumps through pydantic.
    """
    if type(identity) is not ProcessIdentity:
        return identity.to_plain()
    fields = identity.__dict__
    try:
        # (``_text``: the typed ids' ``str``, kept from birth; ``workflow_text``: ``str``, cached.)
        return {
            "stream_id": str(fields["stream_id"]),
            "process_id": fields["process_id"]._text,
            "tenant_id": fields["tenant_id"]._text,
            "workflow_id": workflow_text(fields["workflow_id"]),
        }
    except AttributeError:  # built without validation from other values (``model_construct``)
        return identity.to_plain()


def lookup(txn: KvTxn, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
    raw = txn.get("registry", _registry_key(tenant_id, key))
    return None if raw is None else _decode(raw, ProcessIdentity.model_validate, "registry entry")


def accept(txn: KvTxn, key: str, digest: str) -> bool:
    if not key:
        raise InvalidArgument("inbox key must not be empty")
    raw_key = _sized("inbox key", key, MAX_INBOX_KEY)
    existing = txn.get("inbox", raw_key)
    if existing is None:
        txn.put("inbox", raw_key, digest.encode())
        return True
    if existing.decode() != digest:
        raise InboxConflict(
            f"inbox key {key!r} was accepted before with different content "
            f"(stored digest {existing.decode()!r}, now {digest!r}); not processed"
        )
    return False


def add_dead_letter(txn: KvTxn, letter: DeadLetter) -> DeadLetter:
    if letter.key is not None:  # one dead letter per key: a repeat writes nothing
        index = _DEAD_KEY + _sized("dead letter key", letter.key, MAX_DEAD_LETTER_KEY)
        known = txn.get("meta", index)
        if known is not None:
            raw = txn.get("dead_letters", known)
            found = letter.model_copy() if raw is None else _decode(raw, DeadLetter.from_plain, "dead letter")
            found._stored_before = True
            return found
    position = from_u64(txn.get("meta", _DEAD) or u64(0)) + 1
    txn.put("meta", _DEAD, u64(position))
    if letter.key is not None:
        txn.put("meta", index, u64(position))
    stored = letter.model_copy(update={"position": position})
    txn.put("dead_letters", u64(position), pack(stored.to_plain()))
    return stored


def dead_letters(txn: KvTxn, limit: int, after_position: int) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    for _, raw in txn.scan("dead_letters", _after("dead_letters", after_position)):
        if len(out) >= limit:
            break
        out.append(_decode(raw, DeadLetter.from_plain, "dead letter"))
    return out


def save_checkpoint(txn: KvTxn, name: str, position: int, state: Any = None) -> None:
    """The position under ``name``; ``state`` (plain data, or None: none) under ``name`` + NUL,
    so a position saved without a state never meets an older one."""
    if not name or "\x00" in name:
        raise InvalidArgument(f"checkpoint name must be non-empty and without NUL, got {name!r}")
    key = _sized("checkpoint name", name, MAX_CHECKPOINT_NAME)
    if state is None:
        txn.delete("checkpoints", key + b"\x00")
    else:
        try:
            packed = pack(state)
        except SerializationError as exc:
            raise InvalidArgument(f"checkpoint {name!r}: state must be plain data: {exc}") from None
        txn.put("checkpoints", key + b"\x00", packed)
    txn.put("checkpoints", key, u64(position))


def load_checkpoint(txn: KvTxn, name: str) -> int:
    raw = txn.get("checkpoints", _sized("checkpoint name", name, MAX_CHECKPOINT_NAME))
    return 0 if raw is None else from_u64(raw)


def load_checkpoint_state(txn: KvTxn, name: str) -> tuple[int, Any]:
    """``(position, state)`` as ``save_checkpoint`` left them: ``(0, None)`` when never saved."""
    raw = txn.get("checkpoints", _sized("checkpoint name", name, MAX_CHECKPOINT_NAME) + b"\x00")
    return load_checkpoint(txn, name), None if raw is None else unpack(raw)


def _journal_prefix(tenant_id: TenantId, key: str) -> bytes:
    if not key or "\x00" in key:
        raise InvalidArgument(f"journal key must be non-empty and without NUL: {key!r}")
    return tenant_id.int.to_bytes(16, "big") + _sized("journal key", key, MAX_JOURNAL_KEY) + b"\x00"


def append_journal(txn: KvTxn, tenant_id: TenantId, key: str, data: Mapping[str, Any]) -> None:
    """Append one entry; its sequence number is the journal's length (journals stay short)."""
    prefix = _journal_prefix(tenant_id, key)
    seq = txn.count_range("journal", prefix, prefix[:-1] + b"\x01")  # (the prefix ends in NUL)
    txn.put("journal", prefix + u64(seq), pack(dict(data)))


def journal(txn: KvTxn, tenant_id: TenantId, key: str) -> list[dict[str, Any]]:
    prefix = _journal_prefix(tenant_id, key)
    return [unpack(raw) for _, raw in txn.scan("journal", prefix, _prefix_end(prefix))]
