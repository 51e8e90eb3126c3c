"""mako_actors: event-sourced, actor-based processes for German energy-market communication.

Layers, importing only downward:

=====================  ==========================================================
module                 what it holds
=====================  ==========================================================
``errors``             the ``EngineError`` hierarchy
``ids``, ``version``   typed ids, format versions, workflow ids, expected versions
``envelope``           ``ProcessIdentity``, ``CommandContext``, ``EventEnvelope``
``workflow``           ``Workflow``, ``Event``, ``WorkflowOutput`` (pure domain logic)
``outbox``             ``PendingOutbox``, ``OutboxMessage``
``deadlines``          ``PendingDeadline``, ``Deadline``
``snapshot``           ``Snapshot``
``dead_letters``       ``DeadLetter``
``store``              store protocols, ``Commit``, ``CommitResult``
``process``            ``Process``: the reference API over one command path
``actors``             ``LocalActorSystem``, ``RayActorSystem``, ``ProcessRef``
``partitions``         ``PartitionMap``, ``PartitionUnavailable`` (``PartitionNotOpen``): partitioned stores
``scheduler``          ``DeadlineScheduler``, ``VirtualClock``: Fristen fire
``delivery``           ``OutboxWorker``, ``Sender``: at-least-once delivery
``projection``         ``ProjectionRunner``: read models with checkpoints
``metrics``            ``Metrics``, ``prometheus_text``: Prometheus counters, gauges, histograms
``logs``               ``log_context``, ``configure_logging``: correlation ids on every line
``timeline``           ``timeline``: a process's events with their causing interchange
``edifact``            tokenizer, parser, receiver checks, renderers
``gpke``               the LFW24 supplier change, NB side; PID router; Fristen
``inbound``            ``InboundPipeline``: EDIFACT bytes → processes
``serve``              ``mako-actors serve``: inbox directory and HTTP in, outbox out, Fristen
``cli``                ``mako-actors inspect``, ``replay``, ``serve``, store inspection
``testing``            the store contract suite, for any backend
=====================  ==========================================================

Write path of one command: ``Process.execute_*`` → load state (replay or snapshot + tail) →
``Workflow.handle`` (pure) → stamp envelopes, outbox rows, deadlines → one ``Commit`` → the
store writes it in one transaction (LMDB: on its writer thread, group-committed).
"""

import logging as _logging
from typing import TYPE_CHECKING, Any

from mako_actors._handle import DROPPED_OUTPUT
from mako_actors.actors import ActorStats, ActorSystemClosed, LocalActorSystem, ProcessRef
from mako_actors.dead_letters import DeadLetter
from mako_actors.deadlines import Deadline, PendingDeadline
from mako_actors.delivery import DirectorySender, OutboxWorker, PermanentDeliveryError, RetryPolicy, Sender
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import (
    DeadlineGone,
    DeserializationError,
    EngineError,
    InboxConflict,
    InvalidArgument,
    NotFound,
    OutboxError,
    RegistryConflict,
    SerializationError,
    StoreError,
    VersionConflict,
    WorkflowError,
    WorkflowErrorKind,
)
from mako_actors.ids import (
    CausationId,
    ConversationId,
    CorrelationId,
    DeadlineId,
    EventId,
    OutboxMessageId,
    ProcessId,
    StreamId,
    TenantId,
)
from mako_actors.inbound import DirectHost, InboundPipeline, IngestResult, StaticMasterData, Suppliers
from mako_actors.logs import configure_logging, log_context
from mako_actors.metrics import Metrics, prometheus_text
from mako_actors.outbox import OutboxMessage, PendingOutbox
from mako_actors.process import Process, load_state
from mako_actors.projection import ProjectionRunner
from mako_actors.scheduler import DeadlineScheduler, VirtualClock
from mako_actors.snapshot import Snapshot
from mako_actors.store import Commit, CommitResult, Store, StoreStats
from mako_actors.timeline import TimelineEntry, timeline
from mako_actors.version import ExpectedVersion, FormatVersion, WorkflowId
from mako_actors.workflow import Event, Workflow, WorkflowOutput

if TYPE_CHECKING:
    from mako_actors.actors.ray_system import CommandOutcomeUnknown, RayActorSystem, RepairReport
    from mako_actors.partitions import PartitionMap, PartitionNotOpen, PartitionUnavailable

# A library does not decide where its logs go; this also keeps Python's last-resort handler
# from printing warnings the CLI's reports already show.
_logging.getLogger("mako_actors").addHandler(_logging.NullHandler())

__all__ = [
    "DROPPED_OUTPUT",
    "ActorStats",
    "ActorSystemClosed",
    "CausationId",
    "CommandContext",
    "CommandOutcomeUnknown",
    "Commit",
    "CommitResult",
    "ConversationId",
    "CorrelationId",
    "DeadLetter",
    "Deadline",
    "DeadlineGone",
    "DeadlineId",
    "DeadlineScheduler",
    "DeserializationError",
    "DirectHost",
    "DirectorySender",
    "EngineError",
    "Event",
    "EventEnvelope",
    "EventId",
    "ExpectedVersion",
    "FormatVersion",
    "InboundPipeline",
    "InboxConflict",
    "IngestResult",
    "InvalidArgument",
    "LocalActorSystem",
    "Metrics",
    "NotFound",
    "OutboxError",
    "OutboxMessage",
    "OutboxMessageId",
    "OutboxWorker",
    "PartitionMap",
    "PartitionNotOpen",
    "PartitionUnavailable",
    "PendingDeadline",
    "PendingOutbox",
    "PermanentDeliveryError",
    "Process",
    "ProcessId",
    "ProcessIdentity",
    "ProcessRef",
    "ProjectionRunner",
    "RayActorSystem",
    "RegistryConflict",
    "RepairReport",
    "RetryPolicy",
    "Sender",
    "SerializationError",
    "Snapshot",
    "StaticMasterData",
    "Store",
    "StoreError",
    "StoreStats",
    "StreamId",
    "Suppliers",
    "TenantId",
    "TimelineEntry",
    "VersionConflict",
    "VirtualClock",
    "Workflow",
    "WorkflowError",
    "WorkflowErrorKind",
    "WorkflowId",
    "WorkflowOutput",
    "configure_logging",
    "load_state",
    "log_context",
    "prometheus_text",
    "timeline",
]


_LAZY = {
    # Importing ``mako_actors`` must not import Ray (seconds, and a heavy dependency tree).
    "RayActorSystem": "mako_actors.actors.ray_system",
    "CommandOutcomeUnknown": "mako_actors.actors.ray_system",
    "RepairReport": "mako_actors.actors.ray_system",
    "PartitionMap": "mako_actors.partitions",
    "PartitionNotOpen": "mako_actors.partitions",
    "PartitionUnavailable": "mako_actors.partitions",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
