"""The public surface: what `mako_actors` exports, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import mako_actors

REQUIRED = {
    # issue 2: the core types
    "Workflow", "WorkflowOutput", "PendingOutbox", "PendingDeadline", "CommandContext", "EventEnvelope",
    "OutboxMessage", "Deadline", "Snapshot", "ProcessIdentity", "Process", "TenantId", "ProcessId",
    "StreamId", "EventId", "CorrelationId", "CausationId", "ConversationId", "DeadlineId", "OutboxMessageId",
    "WorkflowId", "FormatVersion", "ExpectedVersion", "EngineError", "VersionConflict", "WorkflowError",
    # issue 3 and 4: the runtimes and the inbound path
    "LocalActorSystem", "ProcessRef", "InboundPipeline", "DeadlineScheduler", "VirtualClock",
    # issue 8: the cluster runtime, resolved lazily
    "RayActorSystem", "CommandOutcomeUnknown", "PartitionMap", "PartitionUnavailable",
    # issue 10: operating it
    "DROPPED_OUTPUT", "RepairReport",
}  # fmt: skip


def test_all_holds_the_public_names_and_each_resolves() -> None:
    assert set(mako_actors.__all__) >= REQUIRED
    assert len(mako_actors.__all__) == len(set(mako_actors.__all__))
    for name in mako_actors.__all__:
        assert not name.startswith("_")
        assert getattr(mako_actors, name) is not None


def test_importing_the_package_does_not_import_ray() -> None:
    code = "import sys, mako_actors, mako_actors.actors; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ray_actor_system_is_exported_lazily() -> None:
    code = (
        "import sys, mako_actors; before = 'ray' in sys.modules; "
        "from mako_actors import RayActorSystem; "
        "print(before, 'ray' in sys.modules, RayActorSystem.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "mako_actors.actors.ray_system"]


def test_repair_report_is_exported_lazily_and_the_dropped_counter_is_the_live_one() -> None:
    code = (
        "import sys, mako_actors; from mako_actors import DROPPED_OUTPUT; "
        "from mako_actors._handle import DROPPED_OUTPUT as live; before = 'ray' in sys.modules; "
        "from mako_actors import RepairReport; "
        "print(DROPPED_OUTPUT is live, before, 'ray' in sys.modules, RepairReport.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "True", "mako_actors.actors.ray_system"]
