"""What every actor system shares: its workflow registry and the handles it hands out."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from mako_actors.actors.ref import ProcessRef
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import InvalidArgument, NotFound
from mako_actors.ids import ProcessId, TenantId
from mako_actors.version import WorkflowId
from mako_actors.workflow import Workflow

WorkflowLike = Workflow[Any, Any] | type[Workflow[Any, Any]]
WorkflowsArg = Iterable[WorkflowLike] | Mapping[str, WorkflowLike]


def workflow_registry(workflows: WorkflowsArg) -> dict[str, Workflow[Any, Any]]:
    """Name → workflow instance from a list or mapping of workflow instances or classes.

    Raises ``InvalidArgument`` when two different workflows share a name or a mapping key is
    not the workflow's name.
    """
    items: Iterable[tuple[str | None, Any]] = (
        workflows.items() if isinstance(workflows, Mapping) else ((None, w) for w in workflows)
    )
    registry: dict[str, Workflow[Any, Any]] = {}
    for key, value in items:
        workflow = value() if isinstance(value, type) else value
        if not isinstance(workflow, Workflow):
            raise InvalidArgument(f"{value!r} is not a Workflow")
        workflow.check_name()
        if key is not None and key != workflow.name:
            raise InvalidArgument(f"workflow registered as {key!r} is named {workflow.name!r}")
        if workflow.name in registry and type(registry[workflow.name]) is not type(workflow):
            raise InvalidArgument(f"two workflows are named {workflow.name!r}")
        registry[workflow.name] = workflow
    return registry


# Read once: an attribute of a model class goes through its metaclass's ``__getattr__`` hook
# (~1k instructions), and every spawn builds an identity.
_of_process = ProcessIdentity.of_process


class HandleFactory(abc.ABC):
    """``workflow``, ``spawn``, ``resume`` and ``lookup``, over a system's ``_ref`` and registry."""

    workflows: dict[str, Workflow[Any, Any]]

    @abc.abstractmethod
    def _ref(
        self, workflow: Workflow[Any, Any], identity: ProcessIdentity, new: bool = False
    ) -> ProcessRef[Any, Any]:
        """A handle on ``identity`` whose operations this system dispatches.

        ``new``: ``identity`` has a process id ``spawn`` just drew at random, so its stream
        cannot hold anything yet (a system may skip the store read of its first activation).
        """

    @abc.abstractmethod
    async def _lookup_identity(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        """The identity a business key is registered to (from the store's registry)."""

    def submit_enqueue(
        self, identity: ProcessIdentity, command: BaseModel, ctx: CommandContext | None
    ) -> Awaitable[tuple[EventEnvelope, ...]] | None:
        """A shortcut for an enqueuing command, answered with its events alone; None: there is
        none here or now, so the handle dispatches an ``Op`` (see ``Dispatcher``)."""
        return None

    def workflow(self, workflow_or_name: WorkflowLike | str) -> Workflow[Any, Any]:
        """The registered workflow for a name, class or instance; ``NotFound`` if unregistered."""
        name = workflow_or_name if isinstance(workflow_or_name, str) else workflow_or_name.name
        try:
            return self.workflows[name]
        except KeyError:
            raise NotFound(f"no workflow {name!r} registered with this actor system") from None

    def spawn(
        self,
        workflow_or_name: WorkflowLike | str,
        tenant_id: TenantId,
        workflow_id: WorkflowId,
        *,
        process_id: ProcessId | None = None,
        routing_key: str | None = None,
    ) -> ProcessRef[Any, Any]:
        """A handle on a new process (random id unless given); nothing is stored before its first command.

        ``routing_key`` (e.g. the MaLo) places the process in that key's partition of a
        partitioned store (``mako_actors.partitions``): processes with one routing key live
        together. Raises ``NotFound`` for an unregistered workflow, ``InvalidArgument`` when
        ``workflow_id`` names another workflow or both ``process_id`` and ``routing_key`` are given.

        With a random id, the handle's first command starts the process from the workflow's
        initial state without reading the store (nothing can be stored under an id drawn just
        now; reads still read). A write through another handle on its ``identity()`` before
        that first command is still seen: the first commit expects version 0 (a conflict
        reloads the state and decides again), and a first command that would commit nothing
        or is refused reads the store and is decided again before it is answered.
        """
        workflow = self.workflow(workflow_or_name)
        if routing_key is not None:
            if process_id is not None:
                raise InvalidArgument("spawn: give process_id or routing_key, not both")
            from mako_actors.partitions import routed_process_id

            process_id = routed_process_id(tenant_id, routing_key)
        # A given or routed id may name an existing process; a random one cannot.
        new = process_id is None
        return self._ref(
            workflow,
            _of_process(tenant_id, process_id or ProcessId.new(), workflow_id),
            new,
        )

    def resume(self, identity: ProcessIdentity) -> ProcessRef[Any, Any]:
        """A handle on an existing process; its actor activates on the first message."""
        return self._ref(self.workflow(identity.workflow_id.name), identity)

    async def lookup(self, tenant_id: TenantId, key: str) -> ProcessRef[Any, Any] | None:
        """The process a business key is registered to in ``tenant_id``, or ``None``."""
        identity = await self._lookup_identity(tenant_id, key)
        return None if identity is None else self.resume(identity)
