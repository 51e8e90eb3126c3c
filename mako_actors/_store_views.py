"""What the inspection commands show of a store: process summaries and details, as plain data.

Reads only (``processes``, and where a partitioned store's partitions are); the CLI renders
these as tables or JSON. Listing processes folds every stream's events through its workflow
(known: the GPKE NB workflow and the receipt log), so it costs one read of the whole store: an
operator's tool, not a hot path.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from mako_actors.deadlines import Deadline
from mako_actors.envelope import EventEnvelope
from mako_actors.errors import EngineError, InvalidArgument
from mako_actors.ids import OutboxMessageId, StreamId, TenantId
from mako_actors.outbox import OutboxMessage
from mako_actors.store import Store
from mako_actors.timeline import find_stream, status_of
from mako_actors.workflow import Workflow


class InspectableStore(Store, Protocol):
    """A store with the operator reads of ``stores._base.StoreBase`` (every backend here)."""

    async def outbox_messages(self, limit: int = 10_000) -> list[OutboxMessage]: ...
    async def outbox_page(
        self, after: OutboxMessageId | None = None, limit: int = 1_000
    ) -> list[OutboxMessage]: ...
    async def outbox_of_stream(self, stream_id: StreamId) -> list[OutboxMessage]: ...
    async def due_counts(self, by: datetime | None = None) -> tuple[int, int]: ...
    async def all_deadlines(self, limit: int = 10_000) -> list[Deadline]: ...
    async def table_counts(self) -> dict[str, int]: ...


def known_workflows() -> dict[str, Workflow[Any, Any]]:
    """The workflows this package ships, by name."""
    from mako_actors.gpke import GpkeNbWorkflow
    from mako_actors.inbound import ReceiptWorkflow

    return {w.name: w for w in (GpkeNbWorkflow(), ReceiptWorkflow())}


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """One process as a row: ids, workflow, our MP-ID, status, MaLo, events and times.

    ``rejected``: the 0020s of interchanges this process sent that their recipient rejected by
    CONTRL 4 or APERAK 313: those messages count as not received (DOMAIN §2), whatever the
    status says, until someone corrects and resends them.
    """

    stream_id: StreamId
    workflow: str
    format_version: str
    party: str | None  # our MP-ID (the tenant) where the events name it
    status: str
    malo: str | None
    events: int
    started_at: datetime
    updated_at: datetime
    state: Any = None
    rejected: tuple[str, ...] = ()

    def to_plain(self) -> dict[str, Any]:
        return {
            "process_id": str(self.stream_id.process_id),
            "stream_id": str(self.stream_id),
            "tenant_id": str(self.stream_id.tenant_id),
            "party": self.party,
            "workflow": self.workflow,
            "format_version": self.format_version,
            "status": self.status,
            "malo": self.malo,
            "events": self.events,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "rejected_interchanges": list(self.rejected),
        }


def summarize(events: list[EventEnvelope], workflows: Mapping[str, Workflow[Any, Any]]) -> ProcessSummary:
    """The summary of one stream's events (at least one)."""
    first, last = events[0], events[-1]
    workflow = workflows.get(first.workflow_id.name)
    state: Any = None
    status = "?"
    if workflow is not None:
        try:
            state = workflow.fold(workflow.initial_state(), events)
            status = status_of(state)
        except EngineError:
            state, status = None, "?"
    return ProcessSummary(
        stream_id=first.stream_id,
        workflow=first.workflow_id.name,
        format_version=str(first.workflow_id.format_version),
        party=_party(first),
        status=status,
        malo=getattr(state, "malo", None),
        events=last.sequence,
        started_at=first.recorded_at,
        updated_at=last.recorded_at,
        state=state,
        rejected=tuple(getattr(state, "negative_acks", ())),
    )


def _party(event: EventEnvelope) -> str | None:
    payload = event.payload
    inbound = payload.get("inbound")
    for source in (inbound, payload):
        if isinstance(source, Mapping) and isinstance(source.get("recipient"), str):
            return str(source["recipient"])
    return None


def tenant_matches(stream: StreamId, text: str) -> bool:
    """Whether ``text`` (an MP-ID, or a tenant id or its prefix) names the stream's tenant."""
    text = text.strip().lower()
    if text.isdigit() and len(text) == 13:
        try:
            return stream.tenant_id == TenantId.from_party_id(text)
        except InvalidArgument:
            return False
    return str(stream.tenant_id).startswith(text)


def check_filters(*, tenant: str | None, malo: str | None) -> None:
    """``InvalidArgument`` for a MaLo or tenant filter no process can match (an empty list would
    read as "there is none"); statuses and workflows are checked against what the store holds
    (``list_processes``)."""
    if malo is not None and not (malo.isascii() and malo.isdigit() and len(malo) == 11):
        raise InvalidArgument(f"--malo {malo!r} is no MaLo-ID (11 digits)")
    text = tenant.strip().lower() if tenant is not None else None
    if text is not None and not (text.isdigit() and len(text) == 13) and not _TENANT_PREFIX.fullmatch(text):
        raise InvalidArgument(f"--tenant {tenant!r} is neither an MP-ID (13 digits) nor a tenant id prefix")


def _known_values(what: str, value: str, known: set[str], seen: set[str]) -> None:
    """``InvalidArgument`` for a ``--status``/``--workflow`` that is neither one this package
    knows nor one the store holds (a misspelt one would list nothing)."""
    if value not in known and value not in seen:
        raise InvalidArgument(f"--{what} {value!r} is no {what}; one of: {', '.join(sorted(known | seen))}")


_TENANT_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]*")


def _statuses() -> set[str]:
    """The statuses of this package's workflows ("?": a process whose events no longer fold)."""
    from mako_actors.gpke.state import Status

    return {*(s.value for s in Status), "received", "processed", "?"}


async def list_processes(
    store: Store,
    *,
    tenant: str | None = None,
    workflow: str | None = None,
    status: str | None = None,
    malo: str | None = None,
    workflows: Mapping[str, Workflow[Any, Any]] | None = None,
    rejected: bool = False,
) -> list[ProcessSummary]:
    """Every process matching the filters, oldest first (``rejected``: only those with a sent
    interchange its recipient rejected, see ``ProcessSummary.rejected``)."""
    workflows = workflows if workflows is not None else known_workflows()
    check_filters(tenant=tenant, malo=malo)
    out: list[ProcessSummary] = []
    streams = await store.list_streams()
    if status == AWAITING_OPERATOR:  # the few waiting ones, not every process folded
        waiting = await _awaiting_operator(store)
        streams = [stream for stream in streams if stream in waiting]
    seen_workflows: set[str] = set()
    seen_statuses: set[str] = set()
    for stream in streams:
        if tenant is not None and not tenant_matches(stream, tenant):
            continue
        events = await store.load(stream)
        if not events:
            continue
        seen_workflows.add(events[0].workflow_id.name)
        if workflow is not None and events[0].workflow_id.name != workflow:
            continue
        summary = summarize(events, workflows)
        seen_statuses.add(summary.status)
        if status is not None and summary.status != status:
            continue
        if malo is not None and summary.malo != malo:
            continue
        if rejected and not summary.rejected:
            continue
        # Without its folded state (only ``show`` prints it): a GPKE state is ~20 KiB of
        # objects, and a listing holds every row until it is sorted.
        out.append(replace(summary, state=None))
    if not out:  # nothing matched: say so if a filter names what cannot exist
        if workflow is not None:
            _known_values("workflow", workflow, set(workflows), seen_workflows)
        if status is not None and status != AWAITING_OPERATOR:
            _known_values("status", status, _statuses(), seen_statuses)
    out.sort(key=lambda s: (s.started_at, s.stream_id))
    return out


AWAITING_OPERATOR = "awaiting_operator"


async def _awaiting_operator(store: Store) -> set[str]:
    """The streams waiting for an operator (``gpke.awaiting``): the set ``serve`` saved with its
    checkpoint and the events after it (every event, without one), by type only."""
    from mako_actors.gpke.awaiting import QUEUE_CHECKPOINT, OperatorQueue

    position, state = await store.load_checkpoint_state(QUEUE_CHECKPOINT)
    try:
        queue = OperatorQueue(state)
    except InvalidArgument:  # not a queue's: read every event
        queue, position = OperatorQueue(), 0
    while events := await store.read_all(position, 5_000):
        for event in events:
            queue.handle(event)
        position = events[-1].global_position
    return queue.waiting


@dataclass(frozen=True, slots=True)
class ProcessDetail:
    """One process: its summary and state, open deadlines and the messages waiting to leave."""

    summary: ProcessSummary
    deadlines: list[Deadline]
    outbox: list[OutboxMessage]

    def to_plain(self) -> dict[str, Any]:
        state = self.summary.state
        return {
            **self.summary.to_plain(),
            "state": state.model_dump(mode="json") if hasattr(state, "model_dump") else None,
            "deadlines": [d.to_plain() for d in self.deadlines],
            "outbox": [m.to_plain() for m in self.outbox],
        }


async def show_process(
    store: InspectableStore, process: str, workflows: Mapping[str, Workflow[Any, Any]] | None = None
) -> ProcessDetail:
    """The detail of the process ``process`` names (ids as printed; unique prefixes work)."""
    workflows = workflows if workflows is not None else known_workflows()
    stream = await find_stream(store, process)
    events = await store.load(stream)
    if not events:
        raise InvalidArgument(f"process {process!r} has no events")
    outbox = await store.outbox_of_stream(stream)
    return ProcessDetail(summarize(events, workflows), await store.deadlines_for_stream(stream), outbox)


# -- partitioned stores ------------------------------------------------------------------------


def partition_roots(path: Path) -> list[Path] | None:
    """The node data directories to read when ``path`` names a partitioned store, else ``None``.

    ``path`` is a saved ``PartitionMap`` file (every node directory it names), or a node's data
    directory holding ``p0007`` partition directories with their ``PARTITION`` marker, or the
    ``--store`` of ``replay --workers n`` (its ``part-<k>-of-<n>`` stores). A plain LMDB
    directory (``data.mdb`` in it) is not partitioned. A file that is not a partition map
    raises ``InvalidArgument``.
    """
    from stores.partitioned import MARKER

    if path.is_file():
        from mako_actors.partitions import PartitionMap

        try:
            partition_map = PartitionMap.load(path)
        except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
            raise InvalidArgument(f"{path} is neither a store directory nor a partition map: {exc}") from None
        return [Path(d) for d in dict.fromkeys(partition_map.data_dirs.values())]
    if (path / "data.mdb").is_file():
        return None
    if any((d / MARKER).is_file() for d in path.glob("p[0-9][0-9][0-9][0-9]")) or replay_parts(path):
        return [path]
    return None


def missing_partitions(path: Path, roots: Sequence[Path]) -> list[str]:
    """The partitions the map file ``path`` names that none of ``roots`` holds, e.g. a node's
    directory offline or not mounted: ``p0003 (node b, /data/b)`` each; empty for a node's
    directory (it shows that node's partitions only, by design)."""
    if not path.is_file():
        return []
    from mako_actors.partitions import PartitionMap

    partition_map = PartitionMap.load(path)
    found = {p for p, _ in partition_dirs(roots, path)}
    return [
        f"p{p:04d} (node {node}, {partition_map.data_dirs.get(node, '?')})"
        for p, node in enumerate(partition_map.assignment)
        if p not in found
    ]


def replay_parts(path: Path) -> list[tuple[int, Path]]:
    """``(k, directory)`` of the ``part-<k>-of-<n>`` stores ``replay --workers n`` left in ``path``.

    Only directories holding a ``data.mdb`` count. Parts of two different ``n`` in one directory
    raise ``InvalidArgument`` (they are two runs' splits, not one store).
    """
    from mako_actors._placement import existing_parts

    found = [(k, n, d) for k, n, d in existing_parts(path) if (d / "data.mdb").is_file()]
    counts = sorted({n for _, n, _ in found})
    if len(counts) > 1:
        raise InvalidArgument(
            f"{path} holds replay parts of {counts} workers; give --store one part directory"
        )
    return [(k, d) for k, _, d in found]


def partition_dirs(roots: Sequence[Path], store: Path | None = None) -> list[tuple[int, Path]]:
    """``(partition, directory)`` of every partition under ``roots`` (marked ones only), by number.

    Moved-away copies (``p0007.moved-3``) and directories without the ``PARTITION`` marker are
    skipped, as ``stores.partitioned.merged_dead_letters`` does. A replay's ``part-<k>-of-<n>``
    stores count as partitions ``k``. When ``store`` is the partition map file, only the copy on
    the node the map assigns each partition counts: a move cut short leaves a stale copy on the
    other node. Without a map, a partition found twice raises ``InvalidArgument`` naming both.
    """
    from stores.partitioned import MARKER, read_marker

    found: list[tuple[int, Path]] = []
    for root in roots:
        for directory in sorted(root.glob("p[0-9][0-9][0-9][0-9]")):
            marker = directory / MARKER
            if directory.is_dir() and marker.is_file():
                found.append((int(read_marker(marker)["partition"]), directory))
        found.extend(replay_parts(root))
    found.sort()
    if store is not None and store.is_file():
        from mako_actors.partitions import PartitionMap

        partition_map = PartitionMap.load(store)
        homes = {
            p: (Path(partition_map.data_dirs[node]) / f"p{p:04d}").resolve()
            for p, node in enumerate(partition_map.assignment)
        }
        return [(p, d) for p, d in found if homes.get(p) == d.resolve()]
    for (p, first), (q, second) in itertools.pairwise(found):
        if p == q:
            raise InvalidArgument(
                f"partition {p} is in {first} and in {second} (a move cut short?): give the "
                "partition map as --store, which says whose copy counts"
            )
    return found
