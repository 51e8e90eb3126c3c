"""Delivering the outbox: at least once, with backoff, jitter and dead letters.

The worker asks the store for due messages, hands each to a ``Sender`` and acknowledges it only
after the sender returned. A failed attempt is rescheduled with exponential backoff and jitter;
after ``max_attempts`` attempts, or when the message is older than ``max_age`` (counted from
when it became due, ``OutboxMessage.due_since``), or at once for a ``PermanentDeliveryError``,
the message becomes a dead letter (the letter written and its row removed in one transaction).
Receivers deduplicate on the message's stable ``idempotency_key``: a crash between sending and
acknowledging sends it again.

A process's messages leave in their enqueue order, also across failures: while one of them
waits for a retry, the later ones of its process are held (left due, not attempted), so a 55037
never overtakes the 55002 its command returned before it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from mako_actors._durable import fsync_directory
from mako_actors.errors import EngineError, InvalidArgument, OutboxError
from mako_actors.ids import OutboxMessageId, StreamId
from mako_actors.logs import log_context
from mako_actors.outbox import OutboxMessage
from mako_actors.store import Store

log = logging.getLogger(__name__)
_WARN_EVERY_S = 60.0


class PermanentDeliveryError(OutboxError):
    """The message can never be delivered (rejected by the receiver, unrenderable): dead-letter it."""


class Sender(Protocol):
    """Sends one message; raises to report failure (``PermanentDeliveryError``: do not retry)."""

    async def send(self, message: OutboxMessage) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, plus limits on attempts and age.

    ``max_age`` counts from when the message became due (``OutboxMessage.due_since``).
    """

    max_attempts: int = 8
    base_delay: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=10)
    max_age: timedelta = timedelta(hours=6)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgument(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")

    def delay(self, attempts: int, rng: random.Random) -> timedelta:
        """The wait before the next attempt after ``attempts`` failed ones."""
        # In float seconds: a timedelta doubled 47 times overflows (attempts are not capped).
        doubled = self.base_delay.total_seconds() * 2.0 ** min(max(0, attempts - 1), 512)
        ceiling = min(self.max_delay.total_seconds(), doubled)
        return timedelta(seconds=rng.uniform(0.5, 1.0) * ceiling)


@dataclass
class DeliveryReport:
    """The outcome of one ``run_once``.

    ``failed``: messages whose attempt hit a store error (e.g. ``NotFound`` because another
    worker acknowledged it meanwhile); they stay in the outbox as the store has them.
    ``held``: due messages not attempted because an earlier one of their process waits for a
    retry (they stay due).
    """

    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    failed: int = 0
    held: int = 0


class OutboxWorker:
    """Delivers due outbox messages of one store through a ``Sender``."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        *,
        batch: int = 100,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._batch = batch
        self._rng = rng or random.Random()
        # The last failure logged (its error, when): a sender that fails for every message (a
        # gateway down, the outbox folder gone) is named once a minute, not once per message.
        self._warned: tuple[str, float] | None = None
        # Per stream, its messages waiting for a retry: id -> (position, next attempt). Read from
        # the store at the first run (a restarted worker keeps the order too), then kept here.
        self._waiting: dict[StreamId, dict[OutboxMessageId, tuple[int, datetime]]] | None = None

    async def run_once(self) -> DeliveryReport:
        """Attempt every message due at the clock's current time, once each, ``batch`` at a time.

        Reads the due messages in pages of ``batch`` until none is left that this run has not
        attempted (a retried message moves into the future and is not attempted twice). A
        store error on one message (``NotFound`` when another worker acknowledged it, a
        ``StoreError``) is logged and counted in ``failed``; the run goes on with the next.
        """
        now = self._clock()
        report = DeliveryReport()
        if self._waiting is None:
            self._waiting = await self._retried_messages()
        attempted: set[OutboxMessageId] = set()
        limit = self._batch
        while True:
            due = await self._store.pending(limit, now)
            fresh = [message for message in due if message.message_id not in attempted]
            if not fresh:
                if len(due) < limit:
                    self._forget_gone(attempted, now)
                    return report
                # Every slot is held by a message attempted already that is still due (its
                # reschedule failed, or it is held): look further instead of stopping short.
                limit += self._batch
                continue
            for message in fresh:
                attempted.add(message.message_id)
                if self._behind_a_retry(message):
                    report.held += 1
                    continue
                await self._attempt(message, report)

    async def _retried_messages(self) -> dict[StreamId, dict[OutboxMessageId, tuple[int, datetime]]]:
        """The outbox's messages that failed before (``attempts`` > 0), by stream: one pass."""
        waiting: dict[StreamId, dict[OutboxMessageId, tuple[int, datetime]]] = {}
        for message in await self._store.pending(sys.maxsize, datetime.max.replace(tzinfo=UTC)):
            if message.attempts:
                waiting.setdefault(message.stream_id, {})[message.message_id] = (
                    message.position, message.next_attempt_at
                )
        return waiting

    def _behind_a_retry(self, message: OutboxMessage) -> bool:
        """Whether an earlier message of ``message``'s stream waits for a retry."""
        assert self._waiting is not None
        waiting = self._waiting.get(message.stream_id)
        if not waiting:
            return False
        # (Not behind itself: a message requeued meanwhile comes back under a later position.)
        ident = message.message_id
        return any(message.position > position for other, (position, _) in waiting.items() if other != ident)

    def _settled(self, message: OutboxMessage) -> None:
        """``message`` left the outbox (delivered or dead-lettered): its stream's later ones may go."""
        assert self._waiting is not None
        waiting = self._waiting.get(message.stream_id)
        if waiting is not None:
            waiting.pop(message.message_id, None)
            if not waiting:
                del self._waiting[message.stream_id]

    def _forget_gone(self, seen: set[OutboxMessageId], now: datetime) -> None:
        """Drop waiting messages due by ``now`` that this run did not see: gone from the outbox
        (an operator's requeue gave them a new place), so they hold nothing back any more."""
        assert self._waiting is not None
        for stream, waiting in list(self._waiting.items()):
            for ident, (_, at) in list(waiting.items()):
                if at <= now and ident not in seen:
                    del waiting[ident]
            if not waiting:
                del self._waiting[stream]

    async def _attempt(self, message: OutboxMessage, report: DeliveryReport) -> None:
        with log_context(
            correlation_id=message.correlation_id,
            process_id=message.process_id,
            message_id=message.message_id,
        ):
            try:
                await self._attempt_logged(message, report)
            except EngineError as exc:
                # Another worker may have acknowledged or moved it; never let one message
                # stop the worker.
                log.warning("outbox message %s: store error, left as stored: %r", message.message_id, exc)
                report.failed += 1

    async def _attempt_logged(self, message: OutboxMessage, report: DeliveryReport) -> None:
        try:
            await self._sender.send(message)
        except PermanentDeliveryError as exc:
            await self._dead_letter(message, f"permanent: {exc}", report)
            return
        except Exception as exc:  # any sender failure is retried; the sender is not ours
            now = self._clock()
            attempts = message.attempts + 1
            # From when it became due: a message delayed past ``max_age`` by its ``not_before``
            # was dead-lettered on its first failure, never retried.
            too_old = now - message.due_since >= self._policy.max_age
            if attempts >= self._policy.max_attempts or too_old:
                why = "too old" if too_old else f"{attempts} attempts"
                await self._dead_letter(message, f"{why}; last error: {exc!r}", report)
                return
            updated = await self._store.reschedule(
                message.message_id, now + self._policy.delay(attempts, self._rng), repr(exc)
            )
            self._warn(message, attempts, updated.next_attempt_at, exc)
            assert self._waiting is not None
            self._waiting.setdefault(message.stream_id, {})[message.message_id] = (
                updated.position, updated.next_attempt_at
            )
            report.retried += 1
            return
        await self._store.acknowledge(message.message_id)
        self._settled(message)
        report.delivered += 1

    def _warn(self, message: OutboxMessage, attempts: int, again: datetime, exc: Exception) -> None:
        """Log a failed delivery that will be retried: the first of its kind, then once a minute."""
        text, at = repr(exc), time.monotonic()
        if self._warned is not None and self._warned[0] == text and at - self._warned[1] < _WARN_EVERY_S:
            return
        self._warned = (text, at)
        log.warning(
            "outbox message %s to %s not delivered (attempt %d), retried from %s: %s "
            "(the same failure is logged once a minute)",
            message.message_id, message.recipient, attempts, again.isoformat(), text,
        )  # fmt: skip

    async def _dead_letter(self, message: OutboxMessage, reason: str, report: DeliveryReport) -> None:
        # One transaction: a crash between adding the letter and removing the row left both,
        # and the row was delivered later while the letter still offered it for a requeue.
        await self._store.dead_letter_outbox(message.message_id, reason, self._clock())
        log.error("outbox message %s to %s dead-lettered: %s", message.message_id, message.recipient, reason)
        self._settled(message)
        report.dead_lettered += 1

    async def run_forever(self, interval: float = 1.0) -> None:
        """Deliver every ``interval`` seconds until cancelled; a failed run is logged, not fatal."""
        while True:
            try:
                await self.run_once()
            except EngineError as exc:  # e.g. the store briefly unavailable: try again later
                log.error("outbox delivery run failed: %r", exc)
            await asyncio.sleep(interval)


class DirectorySender:
    """Renders each message to EDIFACT and drops it into a directory (a gateway's pickup folder).

    The file is named by the message's idempotency key and written atomically (a temporary file
    under a dot name, which a gateway's pickup ignores as unfinished, then a rename), so a
    redelivery after a crash rewrites the same file with the same bytes. A
    payload that cannot be rendered is a ``PermanentDeliveryError``. Messages hold personal
    data: a directory created here is 0700 and every file 0600.

    ``test``: a test system's sender: every interchange carries the test indicator (UNB 0035 =
    1), so nothing it sends can enter a partner's production processes (DOMAIN §4).
    ``rewritten`` counts the files written over one of the same name still in the directory (a
    crash between a delivery and its acknowledgement): each is logged as a warning and told to
    ``on_rewritten`` (e.g. a metric). One the gateway took already cannot be seen here; its
    pickup must take a name once.
    """

    def __init__(
        self, directory: Path, *, test: bool = False, on_rewritten: Callable[[], None] | None = None
    ) -> None:
        self.directory = directory
        self.test = test
        self.rewritten = 0
        self._on_rewritten = on_rewritten
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def send(self, message: OutboxMessage) -> None:
        from mako_actors.edifact import render_outbound

        try:
            payload = message.payload
            if self.test:
                payload = {**payload, "envelope": {**payload.get("envelope", {}), "test": True}}
            raw = render_outbound(message.message_type, payload)
        except InvalidArgument as exc:
            raise PermanentDeliveryError(f"cannot render {message.message_type}: {exc}") from None
        target = self.directory / f"{message.message_type}-{message.idempotency_key}.edi"
        temporary = self.directory / f".{target.name}.tmp"
        if await asyncio.to_thread(_write_atomically, temporary, target, raw):
            self.rewritten += 1
            log.warning(
                "outbox: %s was still in %s: delivered again (its acknowledgement was lost, e.g. "
                "in a crash); written over with the same name",
                target.name, self.directory,
            )  # fmt: skip
            if self._on_rewritten is not None:
                self._on_rewritten()


def _write_atomically(temporary: Path, target: Path, raw: bytes) -> bool:
    """Write ``raw`` to ``target`` by a rename; True if ``target`` existed before."""
    existed = target.exists()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o600)  # also when a stale temporary file of another mode was left
        handle.write(raw)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    # The message is acknowledged (deleted from the store) once this returns: its file's name
    # must be on disk by then.
    fsync_directory(target.parent)
    return existed
