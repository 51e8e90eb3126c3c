"""The plug-in protocol between the transport boundary (``inbound``) and market process families.

A *family* (GPKE supplier change, later e.g. MaBiS or WiM) tells ``InboundPipeline``:

- which PIDs it handles (``handles``);
- how one received transaction becomes a command and where it goes (``route``): start a new
  process (``Start``), resume the process bound to a registry key (``Resume``), skip a
  transaction seen before (``Skip``), or refuse it with an APERAK error code (``Refuse``);
- how a CONTRL/APERAK on one of our interchanges reaches the process that sent it
  (``acknowledgement``).

The pipeline owns everything else: parsing, the receipt and its CONTRL, deduplication, the
negative APERAK of a refused message, dead letters, running commands on a ``ProcessHost``.
A new family is a class with these three methods handed to ``InboundPipeline(families=...)``;
``inbound.py`` does not change. Families decide on plain data and the store reads they ask
for (``Reads``), and may be called again for the same transaction when a concurrent trigger
took the same registry key (``Start`` then fails with ``RegistryConflict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from mako_actors.edifact import Interchange, Message, Transaction
from mako_actors.envelope import ProcessIdentity
from mako_actors.errors import EngineError, register_error
from mako_actors.ids import TenantId
from mako_actors.version import FormatVersion, WorkflowId

__all__ = [
    "Decision",
    "InboundTransaction",
    "ProcessFamily",
    "Reads",
    "Refuse",
    "Resume",
    "Skip",
    "Start",
    "UnhandledPid",
]


@register_error
class UnhandledPid(EngineError):
    """No market process family handles this PID; the message is refused (APERAK) and kept."""


@dataclass(frozen=True, slots=True)
class InboundTransaction:
    """One transaction of a received message, with what the boundary knows about it.

    ``tenant`` is us (the UNB recipient); ``format_version`` is the one in force on the
    transmission day (ÜT of ``received_at``); ``pid`` the transaction's (or message's) PID.
    """

    interchange: Interchange
    message: Message
    transaction: Transaction
    tenant: TenantId
    received_at: datetime
    format_version: FormatVersion

    @property
    def pid(self) -> str | None:
        return self.transaction.pid or self.message.pid


class Reads(Protocol):
    """The store reads a family may make while routing (the store implements them)."""

    async def lookup(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None: ...
    async def journal(self, tenant_id: TenantId, key: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Start:
    """Start a new process of ``workflow`` and run ``command`` on it.

    ``routing_key`` (GPKE: the MaLo) places the process in that key's partition when the
    ``ProcessHost`` is partitioned (``spawn(..., routing_key=...)``), so what must be decided
    together lives together; hosts without partitions ignore it.
    """

    workflow: str
    workflow_id: WorkflowId
    command: BaseModel
    routing_key: str | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """Run ``command`` on the process bound to registry ``key``; ``unknown`` is the APERAK text
    (ERC Z10) when no process is bound to it."""

    key: str
    command: BaseModel
    unknown: str


@dataclass(frozen=True, slots=True)
class Skip:
    """The transaction was received before (its reference is known); ``detail`` says so.

    The pipeline skips it when it routes an interchange again after a crash and ``process``
    (the process the reference is bound to; ``None``: not known) was started by that
    interchange, and dead-letters it as a conflict otherwise (a reference reused in another
    interchange)."""

    detail: str
    process: ProcessIdentity | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """The transaction is readable but not processable: APERAK 313 with ERC ``code``."""

    code: str
    text: str


Decision = Start | Resume | Skip | Refuse


class ProcessFamily(Protocol):
    """A market process family; see the module doc."""

    name: str

    def handles(self, pid: str) -> bool:
        """Whether transactions with this PID belong to the family (on the PID alone: the
        pipeline remembers the answer per PID)."""
        ...

    async def route(self, tx: InboundTransaction, reads: Reads) -> Decision:
        """What to do with one transaction. May raise ``EngineError`` for data it cannot use."""
        ...

    def acknowledgement(self, values: Mapping[str, Any]) -> tuple[str, BaseModel] | None:
        """``(registry key, command)`` for a CONTRL/APERAK on our interchange ``values[
        "referenced_interchange_ref"]``, or ``None`` when the family keeps no such keys."""
        ...
