"""The PID router: which workflow and command a parsed UTILMD transaction belongs to.

``PidRouter.route(pid)`` names the workflow, the command type and how the message finds its
process: ``trigger`` routes start a new process (``gpke.family`` adds the MaLo's supply
assignments and open claims first), ``answer`` routes look up ``ide_key(request_ref)``. An
unknown PID raises ``UnknownPid`` and a gas PID ``GasNotSupported``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from mako_actors.errors import InvalidArgument
from mako_actors.gpke.commands import (
    ReceiveAbmeldung,
    ReceiveAcknowledgement,
    ReceiveAnmeldung,
    ReceiveLfaAnswer,
)
from mako_actors.gpke.errors import GasNotSupported, UnknownPid
from mako_actors.gpke.keys import ide_key, interchange_key, transaction_key
from mako_actors.gpke.workflow import WORKFLOW_NAME
from mako_actors.version import FormatVersion, WorkflowId

__all__ = ["DEFAULT_ROUTES", "PidRouter", "Route", "build_command"]

_PID = re.compile(r"^[1-9]\d{4}$")


@dataclass(frozen=True, slots=True)
class Route:
    """Where one PID goes: the workflow name, the command model and the routing mode."""

    pid: str
    workflow_name: str
    command_type: type[BaseModel]
    mode: Literal["trigger", "answer"]


DEFAULT_ROUTES: tuple[Route, ...] = (
    Route("55001", WORKFLOW_NAME, ReceiveAnmeldung, "trigger"),
    Route("55077", WORKFLOW_NAME, ReceiveAnmeldung, "trigger"),
    Route("55004", WORKFLOW_NAME, ReceiveAbmeldung, "trigger"),
    Route("55011", WORKFLOW_NAME, ReceiveLfaAnswer, "answer"),
    Route("55012", WORKFLOW_NAME, ReceiveLfaAnswer, "answer"),
)


class PidRouter:
    """PID → ``Route``; build commands from plain extracted values."""

    def __init__(self, routes: Iterable[Route] = DEFAULT_ROUTES) -> None:
        self._routes: dict[str, Route] = {}
        for route in routes:
            if route.pid in self._routes:
                raise InvalidArgument(f"PidRouter: PID {route.pid} is routed twice")
            self._routes[route.pid] = route
        # Per command model, its validator's ``validate_python``: what ``model_validate`` calls,
        # without its keyword wrapper and two class attribute reads (once per transaction).
        self._validators: dict[type[BaseModel], Callable[[Any], BaseModel]] = {}

    @property
    def pids(self) -> tuple[str, ...]:
        return tuple(sorted(self._routes))

    def routes(self, pid: str) -> bool:
        """Whether ``pid`` has a route (asked for every inbound transaction)."""
        return pid in self._routes

    def route(self, pid: str) -> Route:
        """The route of ``pid``; ``GasNotSupported`` for 44xxx, ``UnknownPid`` otherwise."""
        route = self._routes.get(pid)
        if route is not None:
            return route
        if isinstance(pid, str) and _PID.match(pid) and pid.startswith("44"):
            raise GasNotSupported(
                f"PID {pid} is a gas process (GeLi Gas); the GPKE workflows handle electricity only"
            )
        raise UnknownPid(f"no workflow for PID {pid!r}; routed PIDs: {', '.join(self.pids)}")

    def workflow_id(self, pid: str, format_version: FormatVersion | str) -> WorkflowId:
        """The workflow id of a new process started by ``pid`` under ``format_version``."""
        return WorkflowId.new(self.route(pid).workflow_name, format_version)

    def build_command(self, values: Mapping[str, Any]) -> BaseModel:
        """The command for one parsed UTILMD transaction, from plain values (``pid`` selects it).

        ``values`` use the command's field names (see ``commands``); strings are accepted for
        datetimes (ISO 8601 with offset) and the format version. Raises ``UnknownPid`` /
        ``GasNotSupported`` or ``InvalidArgument`` naming the bad fields.
        """
        route = self.route(str(values.get("pid")))
        validate = self._validators.get(route.command_type)
        if validate is None:
            validate = self._validator(route.command_type)
        try:
            # A plain dict as it is (validation copies what it keeps), another mapping as a dict.
            return validate(values if type(values) is dict else dict(values))
        except ValidationError as exc:
            raise InvalidArgument(f"PID {route.pid}: invalid message data: {exc}") from None

    def _validator(self, command_type: type[BaseModel]) -> Callable[[Any], BaseModel]:
        if not command_type.__pydantic_complete__:  # a stand-in validator until it is rebuilt
            return command_type.model_validate
        validate: Callable[[Any], BaseModel] = command_type.__pydantic_validator__.validate_python
        self._validators[command_type] = validate
        return validate

    def routing_key(self, command: BaseModel) -> str:
        """The registry key of the process an ``answer`` belongs to, or a trigger's transaction key."""
        if isinstance(command, ReceiveLfaAnswer):
            return ide_key(command.request_ref)
        if isinstance(command, ReceiveAcknowledgement):
            return interchange_key(command.referenced_interchange_ref)
        if isinstance(command, ReceiveAnmeldung | ReceiveAbmeldung):
            return transaction_key(command.sender, command.ide_ref)
        raise InvalidArgument(f"no routing key for {type(command).__name__}")


def build_command(values: Mapping[str, Any]) -> BaseModel:
    """``PidRouter().build_command(values)`` with the default routes."""
    return _DEFAULT.build_command(values)


_DEFAULT = PidRouter()
