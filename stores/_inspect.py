"""Reads and repairs for operators, over ``KvTxn``: whole tables, counts, requeue and retry.

The engine's own paths read by due time or by stream; a person looking inside a store wants
everything (the whole outbox, every open deadline) and wants to put a dead letter back. These
functions are written once here, like ``_schema``, so both backends get them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline
from mako_actors.errors import InvalidArgument, NotFound
from mako_actors.ids import OutboxMessageId
from mako_actors.outbox import OutboxMessage
from stores._kv import DATABASES, KvTxn
from stores._schema import _decode, _outbox_due_key, enqueue, micros, pack, register_deadline, u64, unpack


def outbox_messages(txn: KvTxn, limit: int) -> list[OutboxMessage]:
    """Up to ``limit`` outbox rows, earliest next attempt first, due or not."""
    out: list[OutboxMessage] = []
    for key, _ in txn.scan("outbox_due", b""):
        if len(out) >= limit:
            break
        raw = txn.get("outbox", key[-16:])  # the id ends every due key (24 or 32 bytes long)
        if raw is not None:
            out.append(_decode(raw, OutboxMessage.from_plain, "outbox message"))
    return out


def outbox_page(txn: KvTxn, after: bytes, limit: int) -> list[OutboxMessage]:
    """Up to ``limit`` outbox rows whose ids sort after ``after`` (b"": from the first), id order.

    Paging by id, not by due time: a message rescheduled between two pages keeps its place, so
    every message that stays in the outbox throughout is read exactly once.
    """
    out: list[OutboxMessage] = []
    # Ids are 16 bytes: after + NUL is the first key greater than ``after``.
    for _, raw in txn.scan("outbox", after + b"\x00" if after else b""):
        if len(out) >= limit:
            break
        out.append(_decode(raw, OutboxMessage.from_plain, "outbox message"))
    return out


def outbox_of_stream(txn: KvTxn, stream_id: str) -> list[OutboxMessage]:
    """The outbox rows of one stream, earliest next attempt first.

    There is no index by stream (the engine never asks): one pass over the outbox, building a
    message only for the stream's own rows.
    """
    out: list[OutboxMessage] = []
    for _, raw in txn.scan("outbox", b""):
        plain = unpack(raw)
        if isinstance(plain, dict) and plain.get("stream_id") == stream_id:
            out.append(_decode(raw, OutboxMessage.from_plain, "outbox message"))
    out.sort(key=lambda m: (m.next_attempt_at, m.position))
    return out


def due_count(txn: KvTxn, index: str, by: datetime | None) -> int:
    """How many rows of a due index (``outbox_due``, ``deadlines_due``) are due at ``by`` (None:
    all). Both begin their keys with the due instant in microseconds, so this counts keys only."""
    if by is None:
        return txn.count(index)
    return txn.count_range(index, b"", u64(micros(by) + 1))


def _reschedule_now(txn: KvTxn, message: OutboxMessage, update: dict[str, object]) -> OutboxMessage:
    """``message`` stored with ``update`` applied, its due key moved; it keeps its position."""
    updated = message.model_copy(update=update)
    txn.delete("outbox_due", _outbox_due_key(message))
    txn.put("outbox", message.message_id.bytes, pack(updated.to_plain()))
    txn.put("outbox_due", _outbox_due_key(updated), b"")
    return updated


def all_deadlines(txn: KvTxn, limit: int) -> list[Deadline]:
    """Up to ``limit`` open deadlines, earliest first."""
    out: list[Deadline] = []
    for key, _ in txn.scan("deadlines_due", b""):
        if len(out) >= limit:
            break
        raw = txn.get("deadlines", key[8:])
        if raw is not None:
            out.append(_decode(raw, Deadline.from_plain, "deadline"))
    return out


def table_counts(txn: KvTxn) -> dict[str, int]:
    """Entries per sub-database."""
    return {db: txn.count(db) for db in DATABASES}


def dead_letter(txn: KvTxn, position: int) -> DeadLetter:
    """The dead letter at ``position``; ``NotFound`` if there is none."""
    raw = txn.get("dead_letters", u64(position))
    if raw is None:
        raise NotFound(f"no dead letter at position {position}")
    return _decode(raw, DeadLetter.from_plain, "dead letter")


def retry_outbox(txn: KvTxn, message_id: OutboxMessageId, now: datetime) -> OutboxMessage:
    """Make an outbox message due by ``now`` (attempts kept); ``NotFound`` if it is gone.

    One due already keeps its due time: moved to ``now`` it would leave after its process's
    later messages due before then."""
    raw = txn.get("outbox", message_id.bytes)
    if raw is None:
        raise NotFound(f"outbox message {message_id} does not exist (delivered already?)")
    message = _decode(raw, OutboxMessage.from_plain, "outbox message")
    due = min(message.next_attempt_at, now.astimezone(UTC))
    return _reschedule_now(txn, message, {"next_attempt_at": due})


def requeue_dead_letter(txn: KvTxn, position: int, now: datetime) -> DeadLetter:
    """Put a dead outbox message or deadline back, and stamp the letter, in one transaction.

    The outbox message is due at ``now`` with its attempts reset (same id and idempotency key,
    so a receiver still deduplicates; same ``created_at`` and ``not_before``, so a message older
    than the worker's ``max_age`` gets one more attempt, not another series); the deadline keeps
    its due time and so fires on the scheduler's next run. Raises ``InvalidArgument`` for a
    letter requeued before or of a kind that carries nothing to replay (inbound letters hold the
    audit trail, not the bytes).
    """
    letter = dead_letter(txn, position)
    if letter.requeued_at is not None:
        raise InvalidArgument(f"dead letter {position} was requeued already at {letter.requeued_at}")
    if letter.kind not in ("outbox", "deadline"):
        source = letter.payload.get("source") or letter.payload.get("sha256") or "?"
        raise InvalidArgument(
            f"dead letter {position} is of kind {letter.kind!r}: it records where the message came "
            f"from (source {source}), not its bytes; fix the cause and send the interchange again"
        )
    try:
        if letter.kind == "outbox":
            message = OutboxMessage.from_plain(letter.payload)
            update: dict[str, object] = {
                "next_attempt_at": now.astimezone(UTC),
                "attempts": 0,
                "last_error": None,
            }
            raw = txn.get("outbox", message.message_id.bytes)
            if raw is None:  # the usual case: a fresh position, behind what is queued already
                enqueue(txn, message.model_copy(update=update))
            else:  # still (or again) in the outbox: enqueue would leave it as it is
                stored = _decode(raw, OutboxMessage.from_plain, "outbox message")
                _reschedule_now(txn, stored, update)
        else:
            register_deadline(txn, Deadline.from_plain(letter.payload))
    except ValidationError as exc:
        raise InvalidArgument(
            f"dead letter {position}: its payload is not a valid {letter.kind}: {exc}"
        ) from None
    stamped = letter.model_copy(update={"requeued_at": now.astimezone(UTC)})
    txn.put("dead_letters", u64(position), pack(stamped.to_plain()))
    return stamped
