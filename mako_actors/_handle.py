"""What every process handle shares: its ids, and fresh command contexts for them."""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from mako_actors.envelope import CommandContext, ProcessIdentity, trusted, utc
from mako_actors.ids import ConversationId, CorrelationId, ProcessId, StreamId, TenantId
from mako_actors.version import WorkflowId
from mako_actors.workflow import Workflow

C = TypeVar("C", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)

log = logging.getLogger("mako_actors.process")


@dataclass(slots=True)
class DroppedOutputStats:
    """What ``execute`` and ``execute_and_collect`` (not ``execute_and_enqueue``) dropped, as
    the reference API says they do.

    ``commands``: commands whose outbox messages, deadlines or deadline cancellations were
    dropped; ``messages``, ``deadlines`` and ``cancellations`` (labels to cancel): how many;
    ``by_command``: commands per ``"<workflow>:<command type>"``. Render it with
    ``prometheus_text({"dropped": DROPPED_OUTPUT})``. Deadlines and cancellations dropped on
    actors are not seen by the caller and not counted.
    """

    commands: int = 0
    messages: int = 0
    deadlines: int = 0
    cancellations: int = 0
    by_command: dict[str, int] = field(default_factory=dict)


DROPPED_OUTPUT = DroppedOutputStats()
"""Process-wide counts of outbox messages, deadlines and cancellations dropped by ``execute``."""


def note_dropped(
    workflow: str,
    command: object,
    messages: int,
    deadlines: int,
    cancellations: int = 0,
    *,
    method: str = "execute",
) -> None:
    """Count a command whose outbox messages, deadlines or deadline cancellations ``method``
    dropped; warn once per kind.

    One warning per workflow and command type for the life of the process: the drop is the
    documented behaviour of ``execute``, but nearly always a mistake for ``execute_and_enqueue``.
    """
    if not messages and not deadlines and not cancellations:
        return
    kind = f"{workflow}:{type(command).__name__}"
    stats = DROPPED_OUTPUT
    stats.commands += 1
    stats.messages += messages
    stats.deadlines += deadlines
    stats.cancellations += cancellations
    seen = stats.by_command.get(kind, 0)
    stats.by_command[kind] = seen + 1
    if not seen:
        text = (
            f"{method} dropped {messages} outbox message(s), {deadlines} deadline(s) and "
            f"{cancellations} deadline cancellation(s) of {kind}; use execute_and_enqueue to "
            "store them with the events (warned once per command type)"
        )
        log.warning(text)
        # Also a Python warning: shown by default, where a library's log record (NullHandler)
        # is not, so a script that loses its answers this way hears of it.
        warnings.warn(text, RuntimeWarning, stacklevel=2)


class ProcessHandle(Generic[C, S]):
    """The identity side of ``Process`` and ``ProcessRef``: ids, ``identity()``, contexts."""

    _identity: ProcessIdentity
    _workflow: Workflow[C, S]

    @property
    def process_id(self) -> ProcessId:
        """The stable process id."""
        return self._identity.process_id

    @property
    def workflow_id(self) -> WorkflowId:
        """The workflow and format version this process was created under."""
        return self._identity.workflow_id

    @property
    def stream_id(self) -> StreamId:
        return self._identity.stream_id

    @property
    def tenant_id(self) -> TenantId:
        return self._identity.tenant_id

    @property
    def workflow(self) -> Workflow[C, S]:
        return self._workflow

    def identity(self) -> ProcessIdentity:
        """The four ids as one serializable value; persist it to route later messages here."""
        return self._identity

    def new_context(self) -> CommandContext:
        """A context with fresh correlation and conversation ids for this process."""
        return CommandContext.new(self.tenant_id, self.process_id, self.workflow_id)

    def context_for_inbound(
        self, interchange_ref: str, *, recorded_at: datetime | None = None
    ) -> CommandContext:
        """A context whose correlation id is UUID v5 of ``interchange_ref``.

        Retransmissions of one interchange share the correlation root. Pass the reference
        sender-qualified (``"<sender MP-ID>:<0020>"``): 0020 is unique only per sender.
        ``recorded_at``: for historic input, the instant to stamp the command with
        (``CommandContext.with_recorded_at``); ``ValueError`` when naive.
        """
        if recorded_at is not None and recorded_at.tzinfo is not UTC:
            recorded_at = utc(recorded_at)
        # Built at once (not ``new_context().with_correlation``): once per inbound command.
        return trusted(
            CommandContext,
            {
                "tenant_id": self._identity.tenant_id,
                "process_id": self._identity.process_id,
                "workflow_id": self._identity.workflow_id,
                "correlation_id": _correlation(interchange_ref),
                "conversation_id": ConversationId.new(),
                "causation_id": None,
                "recorded_at": recorded_at,
            },
            _CONTEXT_SET,
        )


_CONTEXT_SET = set(CommandContext.model_fields)  # every field given; shared, the model is frozen


@functools.lru_cache(maxsize=4096)
def _correlation(interchange_ref: str) -> CorrelationId:
    """``CorrelationId.from_interchange_ref``, cached: an interchange's commands share it (a uuid5)."""
    return CorrelationId.from_interchange_ref(interchange_ref)
