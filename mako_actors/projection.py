"""Projections: read models fed from the global event order, with persistent checkpoints.

A projection sees every event of the store once, in commit order, and its checkpoint (the
last global position it processed) is saved after each batch; after a restart it continues
from there. Projections run beside the write path and never affect it: an exception in a
projection stops that projection (``failed`` says why), never a command.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable
from typing import Protocol

from mako_actors.envelope import EventEnvelope
from mako_actors.store import Store

log = logging.getLogger(__name__)


class Projection(Protocol):
    """A read model: ``name`` keys its checkpoint; ``handle`` may be sync or async."""

    name: str

    def handle(self, event: EventEnvelope) -> Awaitable[None] | None: ...


class ProjectionRunner:
    """Feeds one projection from ``store.read_all`` and saves its checkpoint per batch."""

    def __init__(self, store: Store, projection: Projection, batch: int = 500) -> None:
        self._store = store
        self._projection = projection
        self._batch = batch
        self.failed: str | None = None

    async def run_once(self) -> int:
        """Catch up to the end of the global order; returns how many events were handled.

        Events after the failing one are not handled and the checkpoint stays before it, so a
        fixed projection resumes exactly there. Cancelled (``run_forever``'s way to stop), it
        saves the checkpoint of the last event handled before it ends: none is handled twice.
        """
        if self.failed is not None:
            return 0
        name = self._projection.name
        position = saved = await self._store.load_checkpoint(name)
        handled = 0
        try:
            while events := await self._store.read_all(position, self._batch):
                for event in events:
                    try:
                        result = self._projection.handle(event)
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:  # a read model's bug must not reach the write path
                        self.failed = f"event {event.global_position} ({event.event_type}): {exc!r}"
                        log.error("projection %s stopped at %s", name, self.failed)
                        return handled
                    position = event.global_position
                    handled += 1
                await self._store.save_checkpoint(name, position)
                saved = position
        finally:
            if position != saved:
                # Shielded: a second cancellation must not lose what the first one left.
                await asyncio.shield(self._store.save_checkpoint(name, position))
        return handled

    async def run_forever(self, interval: float = 0.5) -> None:
        """Catch up every ``interval`` seconds until cancelled or failed."""
        while self.failed is None:
            await self.run_once()
            await asyncio.sleep(interval)
