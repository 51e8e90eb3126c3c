"""A process's history as a person reads it: what happened when, and which interchange caused it.

``await timeline(store, "1628")`` finds the process (a full stream id, a process id, or a unique
prefix of either, as printed by ``mako-actors processes list``) and returns one
``TimelineEntry`` per event: its time, type, the interchange that caused it (``sender:0020``,
from the event's data or from the correlation id it shares with such an event) and, when the
workflow is known, the process's status after it. The CLI (``processes timeline``) and the
notebook share it. Reads only; costs one read of the stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from mako_actors.envelope import EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument, NotFound
from mako_actors.ids import StreamId
from mako_actors.store import EventStore
from mako_actors.workflow import Workflow

__all__ = ["TimelineEntry", "find_stream", "interchange_of", "status_of", "timeline"]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of a process as a line of its history."""

    sequence: int
    global_position: int
    recorded_at: datetime
    event_type: str
    interchange: str | None  # "<sender MP-ID>:<0020>" of the interchange that caused it
    correlation_id: str
    status: str | None  # the process's status after this event (None: workflow unknown)

    def to_plain(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "global_position": self.global_position,
            "recorded_at": self.recorded_at.isoformat(),
            "event_type": self.event_type,
            "interchange": self.interchange,
            "correlation_id": self.correlation_id,
            "status": self.status,
        }


async def find_stream(store: EventStore, process: ProcessIdentity | StreamId | str) -> StreamId:
    """The stream of ``process``: an identity, a stream id, a process id or its unique end or
    beginning (the CLI's tables print an id's last 8 characters: a fresh id begins with its
    time stamp, which the processes of the same minute share).

    ``NotFound`` when nothing matches, ``InvalidArgument`` (naming the candidates) when a
    part matches several processes. A lookup by part lists the store's streams once.
    """
    if isinstance(process, ProcessIdentity):
        return process.stream_id
    text = str(process).strip().lower()
    if not text:
        raise InvalidArgument("empty process id")
    matches = [s for s in await store.list_streams() if _matches(s, text)]
    if not matches:
        raise NotFound(f"no process matches {process!r}")
    if len(matches) > 1:
        shown = ", ".join(str(s.process_id) for s in matches[:5])
        raise InvalidArgument(
            f"{process!r} matches {len(matches)} processes ({shown}...); give more of the id"
        )
    return matches[0]


def _matches(stream: StreamId, text: str) -> bool:
    process = str(stream.process_id)
    return stream == text or process.endswith(text) or process.startswith(text) or stream.startswith(text)


def interchange_of(event: EventEnvelope) -> str | None:
    """``sender:0020`` of the interchange an event names in its data, if it names one."""
    payload = event.payload
    for source in (payload.get("inbound"), payload):
        if isinstance(source, Mapping) and source.get("interchange_ref") and source.get("sender"):
            return f"{source['sender']}:{source['interchange_ref']}"
    return None


def status_of(state: Any) -> str:
    """A short status word for any state: its ``status`` field, or the receipt log's stage."""
    status = getattr(state, "status", None)
    if isinstance(status, Enum):
        return str(status.value)
    if status is not None:
        return str(status)
    if hasattr(state, "processed") and hasattr(state, "received"):  # the inbound receipt log
        if not state.received:
            return "new"
        if not getattr(state, "accepted", True):
            return "rejected"
        return "processed" if state.processed else "received"
    return "-"


def entries(
    events: Iterable[EventEnvelope], workflow: Workflow[Any, Any] | None = None
) -> list[TimelineEntry]:
    """The timeline of already loaded events (see ``timeline``)."""
    events = list(events)
    by_correlation: dict[str, str] = {}
    for event in events:
        named = interchange_of(event)
        if named is not None:
            by_correlation.setdefault(str(event.correlation_id), named)
    state = workflow.initial_state() if workflow is not None else None
    out: list[TimelineEntry] = []
    for event in events:
        status: str | None = None
        if workflow is not None and state is not None:
            try:
                state = workflow.apply(state, workflow.decode_event(event))
                status = status_of(state)
            except EngineError:
                state, status = None, "?"  # an event this code cannot read: no status from here on
        out.append(
            TimelineEntry(
                sequence=event.sequence,
                global_position=event.global_position,
                recorded_at=event.recorded_at,
                event_type=event.event_type,
                interchange=interchange_of(event) or by_correlation.get(str(event.correlation_id)),
                correlation_id=str(event.correlation_id),
                status=status,
            )
        )
    return out


async def timeline(
    store: EventStore,
    process: ProcessIdentity | StreamId | str,
    workflow: Workflow[Any, Any] | Mapping[str, Workflow[Any, Any]] | None = None,
) -> list[TimelineEntry]:
    """Every event of ``process`` as a ``TimelineEntry``, oldest first.

    ``workflow`` (one, or a mapping name → workflow to pick by the process's workflow name)
    adds the status after each event. ``NotFound``/``InvalidArgument`` as ``find_stream``.
    """
    stream = await find_stream(store, process)
    events = await store.load(stream)
    if isinstance(workflow, Mapping):
        workflow = workflow.get(events[0].workflow_id.name) if events else None
    return entries(events, workflow)
