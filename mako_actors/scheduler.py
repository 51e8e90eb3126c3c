"""Firing due deadlines (Fristen) into their processes, on a real or a virtual clock.

Deadlines are rows in the store, so they survive restarts; the scheduler only asks the store
what is due and hands each deadline to ``fire`` (usually ``Process.execute_timeout`` or the
same method on an actor-backed handle), which runs ``Workflow.on_deadline``'s compensation and
removes the deadline in the same transaction. Firing is idempotent: a deadline fired (and
removed) by someone else is simply no longer due.

A ``VirtualClock`` drives tests and replays of historic traffic: deadlines fire at their
historic times when the clock is advanced past them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mako_actors.deadlines import Deadline
from mako_actors.envelope import ProcessIdentity
from mako_actors.errors import DeadlineGone, EngineError, InvalidArgument, NotFound
from mako_actors.logs import log_context
from mako_actors.process import Process, system_clock
from mako_actors.store import Store
from mako_actors.workflow import Workflow

log = logging.getLogger(__name__)

Fire = Callable[[Deadline], Awaitable[object]]
_TICK = timedelta(microseconds=1)  # the resolution of stored instants


class VirtualClock:
    """A clock that moves only when told to; call it to read the time."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise InvalidArgument("VirtualClock needs an aware start time")
        self._now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        """Move to ``instant`` (aware); moving backwards is refused (deadlines already fired)."""
        if instant.tzinfo is None:  # (astimezone would read it as this machine's local time)
            raise InvalidArgument(f"VirtualClock.set needs an aware instant, got {instant.isoformat()}")
        instant = instant.astimezone(UTC)
        if instant < self._now:
            raise InvalidArgument(f"VirtualClock cannot go back from {self._now} to {instant}")
        self._now = instant

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta``; returns the new time."""
        self.set(self._now + delta)
        return self._now


# Read once: an attribute of a model class goes through its metaclass's ``__getattr__`` hook
# (~1k instructions), and every fired deadline asks.
_identity_of = ProcessIdentity.of


def identity_of(deadline: Deadline) -> ProcessIdentity:
    """The identity of the process that owns ``deadline``."""
    return _identity_of(deadline)


def process_firer(
    store: Store,
    workflows: Mapping[str, Workflow[Any, Any]],
    clock: Callable[[], datetime] = system_clock,
    max_attempts: int = 5,
) -> Fire:
    """A ``fire`` function that runs ``Process.execute_timeout_with_retry`` on the owning process.

    Pass the scheduler's clock, so compensation events are stamped with the firing time.
    """

    async def fire(deadline: Deadline) -> object:
        workflow = workflows.get(deadline.workflow_id.name)
        if workflow is None:
            raise InvalidArgument(f"no workflow named {deadline.workflow_id.name!r} for {deadline.label}")
        process = Process.from_identity(workflow, store, identity_of(deadline), clock=clock)
        return await process.execute_timeout_with_retry(deadline, max_attempts)

    return fire


@dataclass
class SchedulerStats:
    """What the scheduler did: fired, failed (dead-lettered), transient errors left for later."""

    fired: int = 0
    failed: int = 0
    retried_later: int = 0
    labels: dict[str, int] = field(default_factory=dict)


class DeadlineScheduler:
    """Fires every due deadline of a store through ``fire``, earliest first.

    A permanent error (a non-transient ``EngineError``, e.g. the workflow refused the
    compensation) dead-letters the deadline and removes it so it cannot block the queue; a
    transient one leaves it due for the next run. ``select``: fire only the deadlines it
    accepts (one host's share of a shared store: each fires through the actors it owns); the
    others are left to their schedulers. ``on_given_up``: told each deadline dead-lettered and
    why (a replay lists them in its report).
    """

    def __init__(
        self,
        store: Store,
        fire: Fire,
        clock: Callable[[], datetime],
        batch: int = 100,
        select: Callable[[Deadline], bool] | None = None,
        on_given_up: Callable[[Deadline, str], None] | None = None,
    ) -> None:
        self._store = store
        self._fire = fire
        self._clock = clock
        self._batch = batch
        self._select = select
        self._on_given_up = on_given_up
        self.stats = SchedulerStats()

    async def run_due(self, before: datetime | None = None) -> int:
        """Fire everything due at the clock's current time; returns how many fired (one whose
        workflow failed for good is dead-lettered, counted in ``stats.failed``, not here).

        With ``before``, only deadlines due strictly before it: a caller holding traffic
        received at ``before`` that is not ingested yet passes its instant, because what is
        received by a Frist's due instant is in time and must be decided before the Frist fires.
        """
        fired, _ = await self._run_due(before)
        return fired

    async def _run_due(self, before: datetime | None) -> tuple[int, int]:
        """``run_due``: how many fired, and how many were dead-lettered."""
        fired = given_up = 0
        skipped: set[Any] = set()
        while True:
            limit = self._clock()
            if before is not None and before <= limit:
                limit = before - _TICK
            due = await self._store.due_deadlines(limit, self._batch + len(skipped))
            due = [d for d in due if d.deadline_id not in skipped]
            if not due:
                return fired, given_up
            for deadline in due:
                if self._select is not None and not self._select(deadline):
                    skipped.add(deadline.deadline_id)  # another scheduler's
                    continue
                outcome = await self._fire_one(deadline)
                if outcome is True:
                    fired += 1
                elif outcome is False:
                    skipped.add(deadline.deadline_id)
                else:  # its workflow failed for good: dead-lettered, no longer due
                    given_up += 1

    async def advance_to(self, clock: VirtualClock, instant: datetime, inclusive: bool = True) -> int:
        """Move a virtual clock to ``instant``, firing each deadline at its own due time.

        Deadlines set by a compensation and due before ``instant`` fire in the same call. With
        ``inclusive=False`` those due exactly at ``instant`` stay due: a replay passes it before
        ingesting traffic received at ``instant``, which is in time for a Frist ending then.
        """
        fired = 0
        last = instant if inclusive else instant - _TICK
        while upcoming := await self._store.due_deadlines(last, 1):
            clock.set(max(clock(), upcoming[0].due_at))
            count, given_up = await self._run_due(None)
            fired += count
            if count == 0 and given_up == 0:  # only transient failures left: try again on the next call
                break
        clock.set(max(instant, clock()))
        return fired

    async def _give_up(self, deadline: Deadline, reason: str) -> None:
        """Dead-letter ``deadline`` (``dead-letters requeue`` puts it back) and cancel it."""
        # One write: a crash between the letter and the cancel left both, the restart fired the
        # deadline again and wrote a second letter, and requeueing both compensated twice.
        try:
            await self._store.dead_letter_deadline(deadline.deadline_id, reason, self._clock())
        except NotFound:
            log.info("deadline %s of %s: fired or cancelled meanwhile", deadline.label, deadline.stream_id)
            return
        self.stats.failed += 1
        if self._on_given_up is not None:
            self._on_given_up(deadline, reason)
        log.error(
            "deadline %s of %s dead-lettered (dead-letters requeue puts it back)",
            deadline.label, deadline.stream_id,
        )  # fmt: skip

    async def _fire_one(self, deadline: Deadline) -> bool | None:
        with log_context(process_id=deadline.process_id, deadline=deadline.label):
            return await self._fire_logged(deadline)

    async def _fire_logged(self, deadline: Deadline) -> bool | None:
        """True: fired. False: left due (transient) or gone meanwhile. None: its workflow
        failed for good and it was dead-lettered (not counted as fired, as ``stats.fired``)."""
        try:
            await self._fire(deadline)
        except DeadlineGone:
            # Fired meanwhile by another scheduler (or cancelled by its process): nothing written.
            log.info("deadline %s of %s: fired or cancelled meanwhile", deadline.label, deadline.stream_id)
            return False
        except EngineError as exc:
            if exc.transient or exc.operational:
                self.stats.retried_later += 1
                log.warning(
                    "deadline %s of %s: transient, left due: %s", deadline.label, deadline.stream_id, exc
                )
                return False
            log.error("deadline %s of %s failed: %s", deadline.label, deadline.stream_id, exc)
            await self._give_up(deadline, str(exc))
            return None
        except Exception as exc:  # a bug in the workflow's on_deadline (KeyError, ...): no retry fixes it
            log.exception("deadline %s of %s failed", deadline.label, deadline.stream_id)
            await self._give_up(deadline, f"{type(exc).__name__}: {exc}")
            return None
        self.stats.fired += 1
        self.stats.labels[deadline.label] = self.stats.labels.get(deadline.label, 0) + 1
        return True

    async def run_forever(self, interval: float = 1.0) -> None:
        """Poll every ``interval`` seconds until cancelled."""
        while True:
            await self.run_due()
            await asyncio.sleep(interval)
