"""Inbound MaKo traffic: EDIFACT bytes → receipt + CONTRL → one command per transaction.

``InboundPipeline.ingest(raw, received_at)`` is the transport boundary:

1. Parse the interchange (our tokenizer; UNT/UNZ counts and references checked). A syntax
   error, a recipient that is not one of our tenants, or a test interchange in production
   rejects the whole interchange: no process starts and no business event is written.
2. Record the receipt in the interchange's own receipt stream (``mako-inbox`` workflow, one
   stream per recipient + sender + 0020, so a retransmission is recognised: the same bytes
   are a duplicate, other bytes under the same reference an ``InboxConflict`` alarm) and
   enqueue the CONTRL (``7`` accepted / ``4`` rejected) in the same transaction.
3. For every transaction of every message: the PID router picks the workflow and builds the
   command (the receipt instant, the format version in force and the NB's master data are
   added here: workflows look nothing up). Triggers (55001/55077/55004) start a process after
   the competing-process probe of the MaLo key; answers (55011/55012) find their process by
   ``RFF+TN`` in the registry. Each command runs through ``execute_and_enqueue_with`` with the
   interchange's correlation id, so the APERAK and UTILMD answers leave through the outbox.
4. Whatever cannot be routed (unknown PID, gas, no process for an answer, invalid data) becomes
   a dead letter with its audit context; nothing is dropped and no exception escapes.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from mako_actors.dead_letters import DeadLetter
from mako_actors.edifact import (
    EdifactError,
    Interchange,
    Message,
    Transaction,
    decode,
    tokenize,
    try_parse_interchange,
)
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import (
    EngineError,
    InboxConflict,
    InvalidArgument,
    RegistryConflict,
    VersionConflict,
    WorkflowError,
)
from mako_actors.gpke.calendar import uet
from mako_actors.gpke.commands import ReceiveAcknowledgement
from mako_actors.gpke.keys import transaction_key
from mako_actors.gpke.payloads import build_contrl_payload
from mako_actors.gpke.router import PidRouter
from mako_actors.gpke.supply import Suppliers as Suppliers
from mako_actors.gpke.supply import SupplyView, supply_key
from mako_actors.ids import CorrelationId, ProcessId, TenantId
from mako_actors.logs import log_context
from mako_actors.outbox import PendingOutbox
from mako_actors.process import Clock, Process, system_clock
from mako_actors.store import Store
from mako_actors.version import FormatVersion, WorkflowId
from mako_actors.workflow import Event, Workflow, WorkflowOutput

log = logging.getLogger(__name__)
_LAST_INSTANT = timedelta(microseconds=1)
_RECEIPT_NAMESPACE = uuid.UUID("5c1e7a92-4d3b-5f08-a6e1-93b2c4d5e6f7")
RECEIPT_WORKFLOW = "mako-inbox"
_RECEIPT_WORKFLOW_ID = WorkflowId.new(RECEIPT_WORKFLOW, "FV2504")


# -- the receipt log -------------------------------------------------------------------------


class InterchangeReceived(Event, type="inbox.interchange_received"):
    """An interchange arrived: from whom, under which reference, its digest, and the verdict."""

    sender: str
    recipient: str
    interchange_ref: str
    sha256: str
    source: str | None
    received_at: datetime
    accepted: bool
    messages: int
    error: str | None = None


class InterchangeProcessed(Event, type="inbox.interchange_processed"):
    """Every message of the interchange was routed or dead-lettered (counts per outcome)."""

    outcomes: dict[str, int]


class RecordReceipt(BaseModel):
    """Record one received interchange and acknowledge it with a CONTRL."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["receipt"] = "receipt"
    receipt: InterchangeReceived
    contrl: dict[str, Any] | None  # None: an interchange of CONTRLs, which get no CONTRL back


class RecordProcessed(BaseModel):
    """Record that every message of the interchange was routed (or dead-lettered)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["processed"] = "processed"
    outcomes: dict[str, int]


class ReceiptState(BaseModel):
    model_config = ConfigDict(frozen=True)
    received: bool = False
    sha256: str = ""
    accepted: bool = False
    processed: bool = False


class ReceiptWorkflow(Workflow[RecordReceipt | RecordProcessed, ReceiptState]):
    """The receipt log of one interchange: received (with its CONTRL), then processed."""

    name = RECEIPT_WORKFLOW
    events = (InterchangeReceived, InterchangeProcessed)

    def initial_state(self) -> ReceiptState:
        return ReceiptState()

    def handle(self, state: ReceiptState, command: RecordReceipt | RecordProcessed) -> WorkflowOutput:
        if isinstance(command, RecordProcessed):
            if not state.received or state.processed:
                raise WorkflowError.invalid_state("interchange not received, or processed already")
            return WorkflowOutput.of(InterchangeProcessed(outcomes=command.outcomes))
        # A rejected interchange counts as not received: its corrected resend (other bytes, same
        # 0020) is a new receipt. An accepted one, or the same bytes again, is a retransmission.
        receipt = command.receipt
        if state.received and (state.accepted or state.sha256 == receipt.sha256):
            raise WorkflowError.invalid_state(f"interchange {receipt.interchange_ref} was received already")
        output = WorkflowOutput.of(receipt)
        if command.contrl is None:
            return output
        return output.with_outbox(
            PendingOutbox(message_type="CONTRL", recipient=receipt.sender, payload=command.contrl)
        )

    def apply(self, state: ReceiptState, event: Event) -> ReceiptState:
        if isinstance(event, InterchangeReceived):
            return ReceiptState(received=True, sha256=event.sha256, accepted=event.accepted)
        # InterchangeProcessed
        return state.model_copy(update={"processed": True})


# -- where commands run ----------------------------------------------------------------------


class Handle(Protocol):
    """What the pipeline needs of a process handle (``Process`` and actor refs have it)."""

    def identity(self) -> ProcessIdentity: ...
    def context_for_inbound(self, interchange_ref: str) -> CommandContext: ...
    async def state(self) -> Any: ...
    async def execute_and_enqueue_with(self, command: Any, ctx: CommandContext) -> list[EventEnvelope]: ...


class ProcessHost(Protocol):
    """Starts and finds processes: ``DirectHost`` (plain ``Process``) or an actor system."""

    def spawn(self, workflow: str, tenant_id: TenantId, workflow_id: WorkflowId) -> Handle: ...
    def resume(self, identity: ProcessIdentity) -> Handle: ...


class DirectHost:
    """A ``ProcessHost`` of plain ``Process`` handles: state is replayed for every command."""

    def __init__(self, store: Store, workflows: Iterable[Workflow[Any, Any]], clock: Clock = system_clock):
        self._store = store
        self._workflows = {w.name: w for w in workflows}
        self._clock = clock

    def _workflow(self, name: str) -> Workflow[Any, Any]:
        try:
            return self._workflows[name]
        except KeyError:
            raise InvalidArgument(f"no workflow named {name!r}; known: {sorted(self._workflows)}") from None

    def spawn(self, workflow: str, tenant_id: TenantId, workflow_id: WorkflowId) -> Process[Any, Any]:
        return Process(self._workflow(workflow), self._store, tenant_id, workflow_id, clock=self._clock)

    def resume(self, identity: ProcessIdentity) -> Process[Any, Any]:
        return Process.from_identity(
            self._workflow(identity.workflow_id.name), self._store, identity, clock=self._clock
        )


# -- master data -----------------------------------------------------------------------------


class MasterData(Protocol):
    """Initial assignments not (yet) imported into the store (``mako-actors masterdata import``).

    Used only for a MaLo whose supply journal holds no imported assignment; confirmed
    Anmeldungen and Abmeldungen in the journal change it from there on.
    """

    def suppliers(self, tenant: str, malo: str, at: datetime) -> Suppliers: ...


class StaticMasterData:
    """Initial assignments from a mapping MaLo → ``Suppliers`` (tests, demos, replays)."""

    def __init__(self, by_malo: Mapping[str, Suppliers] | None = None) -> None:
        self.by_malo = dict(by_malo or {})

    def suppliers(self, tenant: str, malo: str, at: datetime) -> Suppliers:
        return self.by_malo.get(malo, Suppliers())


# -- results ---------------------------------------------------------------------------------

Outcome = Literal["started", "routed", "duplicate", "dead_letter"]
Status = Literal["accepted", "rejected", "duplicate", "conflict"]


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """What happened to one transaction of one message."""

    message_ref: str
    pid: str | None
    ide_ref: str | None
    outcome: Outcome
    process_id: ProcessId | None = None
    detail: str = ""


@dataclass(slots=True)
class IngestResult:
    """What ``ingest`` did with one interchange."""

    source: str | None
    status: Status
    interchange_ref: str | None = None
    sender: str | None = None
    recipient: str | None = None
    error: str | None = None
    messages: list[MessageOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.messages:
            out[m.outcome] = out.get(m.outcome, 0) + 1
        return out


# -- the pipeline ----------------------------------------------------------------------------


class InboundPipeline:
    """Ingests EDIFACT interchanges for the tenants (our MP-IDs) given; see the module docs."""

    def __init__(
        self,
        store: Store,
        host: ProcessHost,
        *,
        tenants: Iterable[str],
        router: PidRouter | None = None,
        master_data: MasterData | None = None,
        accept_test: bool = False,
        clock: Clock = system_clock,
    ) -> None:
        self._store = store
        self._host = host
        self._tenants = set(tenants)
        if not self._tenants:
            raise InvalidArgument("InboundPipeline needs at least one tenant MP-ID")
        self._router = router or PidRouter()
        self._master = master_data
        self._accept_test = accept_test
        self._clock = clock
        self._receipts = DirectHost(store, [ReceiptWorkflow()], clock)

    async def ingest(self, raw: bytes, received_at: datetime, source: str | None = None) -> IngestResult:
        """Ingest one interchange received at ``received_at`` (aware; the ÜT derives from it).

        Never raises for bad input: the result says what happened. Raises only for store
        failures (``StoreError``), after which re-ingesting the same bytes is safe.
        """
        if received_at.tzinfo is None:
            raise InvalidArgument("ingest: received_at must be timezone-aware")
        parsed = try_parse_interchange(raw, source=source)
        digest = hashlib.sha256(raw).hexdigest()
        header = (
            (parsed.sender.id, parsed.recipient.id, parsed.control_ref)
            if isinstance(parsed, Interchange)
            else _lenient_header(raw)
        )
        correlation = CorrelationId.from_interchange_ref(f"{header[0]}:{header[2]}") if header else None
        with log_context(correlation_id=correlation, interchange_ref=header and header[2], source=source):
            result = await self._ingest(parsed, header, digest, received_at, source)
            _log_result(result)
        return result

    async def _ingest(
        self,
        parsed: Interchange | EdifactError,
        header: tuple[str, str, str] | None,
        digest: str,
        received_at: datetime,
        source: str | None,
    ) -> IngestResult:
        if isinstance(parsed, EdifactError):
            result = IngestResult(source, "rejected", error=str(parsed))
            if header is not None:
                result.sender, result.recipient, result.interchange_ref = header
                try:
                    await self._receipt_only(result, digest, received_at, parsed.syntax_error_code)
                    return result
                except (InvalidArgument, ValidationError):
                    pass  # a UNB too broken to answer (e.g. an over-long 0020): keep it as a dead letter
            await self._dead_letter(
                "inbound", f"unreadable interchange: {parsed}", {"source": source, "sha256": digest}
            )
            return result
        result = IngestResult(
            source,
            "accepted",
            interchange_ref=parsed.control_ref,
            sender=parsed.sender.id,
            recipient=parsed.recipient.id,
        )
        if parsed.recipient.id not in self._tenants:
            result.status, result.error = (
                "rejected",
                f"recipient {parsed.recipient.id} is not one of our MP-IDs",
            )
            await self._receipt_only(result, digest, received_at, "7")
            return result
        if parsed.test and not self._accept_test:
            result.status, result.error = "rejected", "test interchange (UNB 0035 = 1) refused in production"
            await self._receipt_only(result, digest, received_at, None)
            return result
        only_contrl = all(m.message_type == "CONTRL" for m in parsed.messages)
        if not await self._record_receipt(
            result, digest, received_at, len(parsed.messages), None, acknowledge=not only_contrl
        ):
            return result
        result.status = "accepted"
        tenant = TenantId.from_party_id(parsed.recipient.id)
        for message in parsed.messages:
            if message.message_type in ("CONTRL", "APERAK"):
                result.messages.append(await self._acknowledgement(tenant, parsed, message, received_at))
            elif not message.transactions:
                result.messages.append(await self._unhandled(parsed, message))
            for transaction in message.transactions:
                result.messages.append(await self._route(tenant, parsed, message, transaction, received_at))
        await self._receipt_handle(result).execute_and_enqueue_with(
            RecordProcessed(outcomes=result.counts()), self._receipt_ctx(result)
        )
        return result

    # -- receipts --------------------------------------------------------------------------

    def _receipt_identity(self, result: IngestResult) -> ProcessIdentity:
        assert result.recipient is not None and result.sender is not None
        tenant = _tenant_or_placeholder(result.recipient)
        key = f"{result.recipient}:{result.sender}:{result.interchange_ref}"
        process_id = ProcessId(uuid.uuid5(_RECEIPT_NAMESPACE, key))
        return ProcessIdentity.of_process(tenant, process_id, _RECEIPT_WORKFLOW_ID)

    def _receipt_handle(self, result: IngestResult) -> Handle:
        return self._receipts.resume(self._receipt_identity(result))

    def _receipt_ctx(self, result: IngestResult) -> CommandContext:
        return self._receipt_handle(result).context_for_inbound(f"{result.sender}:{result.interchange_ref}")

    async def _receipt_only(
        self, result: IngestResult, digest: str, received_at: datetime, error_code: str | None
    ) -> None:
        await self._record_receipt(result, digest, received_at, 0, error_code)

    async def _record_receipt(
        self,
        result: IngestResult,
        digest: str,
        received_at: datetime,
        messages: int,
        error_code: str | None,
        *,
        acknowledge: bool = True,
    ) -> bool:
        """Write the receipt and its CONTRL; false (status set) when nothing more is to be done.

        True also for an accepted interchange received before but not fully processed (a crash
        in between): its messages are routed again, and routing skips transactions it knows.
        """
        assert result.sender and result.recipient and result.interchange_ref
        accepted = result.status == "accepted"
        contrl = build_contrl_payload(
            interchange_ref=result.interchange_ref,
            interchange_sender=result.sender,
            interchange_recipient=result.recipient,
            accepted=accepted,
            prepared_at=received_at,
            error_code=None if accepted else error_code,
        )
        receipt = InterchangeReceived(
            sender=result.sender,
            recipient=result.recipient,
            interchange_ref=result.interchange_ref,
            sha256=digest,
            source=result.source,
            received_at=received_at,
            accepted=accepted,
            messages=messages,
            error=result.error,
        )
        command = RecordReceipt(receipt=receipt, contrl=contrl.to_payload() if acknowledge else None)
        handle = self._receipt_handle(result)
        try:
            await handle.execute_and_enqueue_with(command, self._receipt_ctx(result))
            return accepted
        except (WorkflowError, VersionConflict):
            state: ReceiptState = await handle.state()
        if state.sha256 != digest:
            alarm = InboxConflict(
                f"interchange {result.interchange_ref} from {result.sender} was received before with "
                f"other content (sha256 {state.sha256[:12]}…, now {digest[:12]}…); not processed"
            )
            result.status, result.error = "conflict", str(alarm)
            await self._dead_letter("inbound-conflict", str(alarm), _audit(result))
            return False
        result.status = "duplicate"
        return accepted and not state.processed

    # -- one transaction -------------------------------------------------------------------

    async def _route(
        self,
        tenant: TenantId,
        interchange: Interchange,
        message: Message,
        transaction: Transaction,
        received_at: datetime,
    ) -> MessageOutcome:
        pid = transaction.pid or message.pid

        def outcome(kind: Outcome, process_id: ProcessId | None = None, detail: str = "") -> MessageOutcome:
            return MessageOutcome(message.reference, pid, transaction.ide_ref, kind, process_id, detail)

        try:
            route = self._router.route(str(pid))
            values = _values(interchange, message, transaction, received_at)
            if route.mode == "answer":
                command = self._router.build_command(values)
                identity = await self._store.lookup(tenant, self._router.routing_key(command))
                if identity is None:
                    raise InvalidArgument(f"no process for RFF+TN {transaction.request_ref!r}")
                handle = self._host.resume(identity)
                await handle.execute_and_enqueue_with(
                    command, handle.context_for_inbound(interchange.correlation_ref)
                )
                return outcome("routed", identity.process_id)
            sender = str(values["sender"])
            if await self._store.lookup(tenant, transaction_key(sender, transaction.ide_ref)) is not None:
                return outcome("duplicate", detail=f"transaction {transaction.ide_ref} seen before")
            for _ in range(3):  # a concurrent trigger may take the same MaLo key generation
                command = await self._trigger_command(tenant, values)
                handle = self._host.spawn(
                    route.workflow_name, tenant, self._router.workflow_id(route.pid, values["format_version"])
                )
                try:
                    await handle.execute_and_enqueue_with(
                        command, handle.context_for_inbound(interchange.correlation_ref)
                    )
                    return outcome("started", handle.identity().process_id)
                except RegistryConflict:
                    continue
            raise RegistryConflict(f"MaLo {transaction.malo}: competing triggers kept racing")
        except EngineError as exc:
            await self._dead_letter(
                "inbound",
                f"{type(exc).__name__}: {exc}",
                {**_audit_of(interchange, message, transaction), "error": exc.to_plain()},
            )
            return outcome("dead_letter", detail=f"{type(exc).__name__}: {exc}")

    async def _acknowledgement(
        self, tenant: TenantId, interchange: Interchange, message: Message, received_at: datetime
    ) -> MessageOutcome:
        """A CONTRL/APERAK on one of our interchanges: routed by our 0020 to the process that sent it."""
        values = _ack_values(interchange, message, received_at)
        if values is None:
            return await self._unhandled(interchange, message)
        try:
            command = ReceiveAcknowledgement.model_validate(values)
            identity = await self._store.lookup(tenant, self._router.routing_key(command))
            if identity is None:
                ref = values["referenced_interchange_ref"]
                raise InvalidArgument(f"{message.message_type} refers to unknown interchange {ref!r}")
            handle = self._host.resume(identity)
            await handle.execute_and_enqueue_with(
                command, handle.context_for_inbound(interchange.correlation_ref)
            )
            return MessageOutcome(
                message.reference, None, None, "routed", identity.process_id, message.message_type
            )
        except (EngineError, ValidationError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            await self._dead_letter("inbound", reason, _audit_of(interchange, message))
            return MessageOutcome(message.reference, None, None, "dead_letter", None, reason)

    async def _unhandled(self, interchange: Interchange, message: Message) -> MessageOutcome:
        """A message no workflow consumes (no transaction, or an acknowledgement without reference)."""
        reason = f"{message.message_type} {message.reference} has nothing a workflow handles"
        await self._dead_letter("inbound-unhandled", reason, _audit_of(interchange, message))
        return MessageOutcome(message.reference, message.pid, None, "dead_letter", None, reason)

    async def _trigger_command(self, tenant: TenantId, values: dict[str, Any]) -> BaseModel:
        """Add the MaLo's supply assignments and open claims to a trigger's values.

        One journal read per trigger (``supply:<MaLo>``, see ``gpke.supply``): who supplies
        the MaLo at the date, who is confirmed for later, whether another Anmeldung of the MaLo
        is being worked on, and which generation of the MaLo key this one binds.
        """
        values = dict(values)
        malo = values.get("malo")
        start = values.get("zuordnungsbeginn") or values.get("zuordnungsende")
        if malo and isinstance(start, datetime):
            baseline = self._master.suppliers(str(values["recipient"]), malo, start) if self._master else None
            view = SupplyView.fold(await self._store.journal(tenant, supply_key(malo)), baseline)
            if values["pid"] in ("55001", "55077"):
                suppliers = view.suppliers(start)
                values["current_supplier"] = suppliers.current
                values["future_supplier"] = suppliers.future
                values["future_supplier_start"] = suppliers.future_start
                values["malo_key_generation"] = view.claim_count
                claim = view.open_claim()
                if claim is not None:
                    values["competing_process"] = True
                    values["competing_start"] = claim.at
                    values["competing_next_date"] = claim.due
                confirmed = view.confirmed_start(start)
                if confirmed is not None:
                    values["assigned_at_start"] = confirmed.supplier
            else:
                # The supplier on the last day before the end (the one ending its supply).
                values["current_supplier"] = view.supplier_at(start - _LAST_INSTANT)
        return self._router.build_command(values)

    async def _dead_letter(self, kind: str, reason: str, payload: dict[str, Any]) -> None:
        await self._store.add_dead_letter(
            DeadLetter(kind=kind, reason=reason, payload=payload, recorded_at=self._clock())
        )


# -- helpers ---------------------------------------------------------------------------------


def _values(
    interchange: Interchange, message: Message, transaction: Transaction, received_at: datetime
) -> dict[str, Any]:
    """The router's plain values for one transaction (command field names)."""
    fv = FormatVersion.in_force(uet(received_at))
    values: dict[str, Any] = {
        "pid": transaction.pid or message.pid,
        "sender": message.sender.id if message.sender else interchange.sender.id,
        # We are the UNB recipient (the tenant); a NAD+MR naming someone else is the sender's
        # error, answered by the workflow's APERAK, never a reason to answer in another's name.
        "recipient": interchange.recipient.id,
        "addressed_to": message.recipient.id if message.recipient else None,
        "malo": transaction.malo,
        "ide_ref": transaction.ide_ref,
        "document_number": message.document_number or message.reference,
        "document_date": message.document_date,
        "interchange_ref": interchange.control_ref,
        "message_ref": message.reference,
        "format_version": str(fv),
        "received_at": received_at,
    }
    if values["pid"] in ("55001", "55077"):
        values["zuordnungsbeginn"] = transaction.start
        values["transaction_reason"] = transaction.transaction_reason
    elif values["pid"] == "55004":
        values["zuordnungsende"] = transaction.end
        values["transaction_reason"] = transaction.transaction_reason
    elif values["pid"] in ("55011", "55012"):
        values["request_ref"] = transaction.request_ref
        values["answer_code"] = transaction.answer_code
        values["answer_ebd"] = transaction.answer_ebd
        values["zuordnungsende"] = transaction.end
    return values


def _log_result(result: IngestResult) -> None:
    """One line per interchange, and one per transaction that did not reach a process."""
    level = logging.INFO if result.status in ("accepted", "duplicate") else logging.WARNING
    log.log(
        level, "interchange %s: %s %s", result.interchange_ref, result.status, result.error or result.counts()
    )
    for outcome in result.messages:
        if outcome.outcome == "dead_letter":
            log.warning(
                "message %s (PID %s) dead-lettered: %s", outcome.message_ref, outcome.pid, outcome.detail
            )


def _ack_values(interchange: Interchange, message: Message, received_at: datetime) -> dict[str, Any] | None:
    """The ``ReceiveAcknowledgement`` values of a CONTRL (UCI) or APERAK (BGM, RFF+ACE, ERC)."""
    base = {
        "message_type": message.message_type,
        "sender": interchange.sender.id,
        "interchange_ref": interchange.control_ref,
        "message_ref": message.reference,
        "received_at": received_at,
    }
    by_tag: dict[str, list[Any]] = {}
    for segment in message.segments:
        by_tag.setdefault(segment.tag, []).append(segment)
    if message.message_type == "CONTRL":
        uci = by_tag.get("UCI")
        if not uci:
            return None
        code = uci[0].value(4)
        return base | {
            "referenced_interchange_ref": uci[0].value(0),
            "positive": uci[0].value(3) == "7",
            "codes": (code,) if code else (),
        }
    ace = [s.value(0, 1) for s in by_tag.get("RFF", []) if s.value(0, 0) == "ACE"]
    if not ace:
        return None
    return base | {
        "referenced_interchange_ref": ace[0],
        "positive": message.document_code == "312",
        "codes": tuple(s.value(0) for s in by_tag.get("ERC", [])),
    }


def _audit_of(
    interchange: Interchange, message: Message, transaction: Transaction | None = None
) -> dict[str, Any]:
    """Where a dead-lettered message came from: enough to find and replay it."""
    audit = {
        "source": interchange.source,
        "interchange_ref": interchange.control_ref,
        "sender": interchange.sender.id,
        "recipient": interchange.recipient.id,
        "sha256": interchange.sha256,
        "message_ref": message.reference,
        "message_type": message.message_type,
        "pid": message.pid,
        "first_segment": message.first_segment_number,
    }
    if transaction is not None:
        audit |= {
            "pid": transaction.pid or message.pid,
            "ide_ref": transaction.ide_ref,
            "first_segment": transaction.first_segment_number,
        }
    return audit


def _audit(result: IngestResult) -> dict[str, Any]:
    return {
        "source": result.source,
        "interchange_ref": result.interchange_ref,
        "sender": result.sender,
        "recipient": result.recipient,
    }


def _tenant_or_placeholder(mp_id: str) -> TenantId:
    """The tenant of an MP-ID; a malformed one (a rejected interchange) gets a stable stand-in."""
    try:
        return TenantId.from_party_id(mp_id)
    except InvalidArgument:
        return TenantId(uuid.uuid5(_RECEIPT_NAMESPACE, f"unknown-party:{mp_id}"))


def _lenient_header(raw: bytes) -> tuple[str, str, str] | None:
    """Sender, recipient and 0020 from a UNB that parses even if the rest does not."""
    try:
        decoded = decode(raw)
        for segment in tokenize(decoded.text, decoded.delimiters):
            if segment.tag == "UNB":
                sender, recipient, ref = segment.value(1), segment.value(2), segment.value(4)
                return (sender, recipient, ref) if sender and recipient and ref else None
            if segment.tag != "UNA":
                return None
    except (EdifactError, ValueError, IndexError):
        return None
    return None
