"""Inbound MaKo traffic: EDIFACT bytes → receipt + CONTRL → one command per transaction.

``InboundPipeline.ingest(raw, received_at)`` is the transport boundary:

1. Parse the interchange (our tokenizer; UNT/UNZ counts and references checked). A syntax
   error, a recipient that is not one of our tenants, or a test interchange in production
   rejects the whole interchange: no process starts and no business event is written. Whoever
   can be identified (an intact UNB, even of a truncated file) gets CONTRL 4 with the 0085
   code; a message-level defect (UNT count, UNH/UNT reference) is named in a UCM line.
2. Record the receipt in the interchange's own receipt stream (``mako-inbox`` workflow, one
   stream per recipient + sender + 0020, so a retransmission is recognised: the same bytes
   are a duplicate (``rejected_before`` if their receipt rejected them, and then processed no
   more), other bytes under the same reference an ``InboxConflict`` alarm, a dead letter and a
   CONTRL 4 with 0085 = 26) and enqueue the CONTRL (``7`` accepted / ``4`` rejected) in the
   same transaction. Other bytes under a reference whose receipt rejected them are a new
   receipt (a corrected resend), the rejected ones still received (a duplicate if they come
   again, also after the resend): a rejection's CONTRL derives its 0020/0062 from the bytes
   too, so the CONTRL of the resend never repeats them.
3. For every transaction of every message: the market process family that handles its PID
   (``family.ProcessFamily``; GPKE by default) decides to start a process, resume one, skip
   the transaction or refuse it. Commands run through ``execute_and_enqueue_with`` with the
   interchange's correlation id, so the answers leave through the outbox.
4. A transaction that is readable but not processable (a PID no family handles, an answer to
   no request of ours, values that do not fit) gets a negative APERAK (313) from us, written
   with the receipt's ``InterchangeProcessed`` (its 0020 bound there as ``ic:<0020>``, so the
   partner's CONTRL on it is recorded on the receipt stream: ``RefusalAcknowledged``, a
   negative one also a dead letter), and a dead letter with its audit context; nothing is
   dropped and no exception escapes.

Dead letters are keyed by their content: ingesting an interchange again after a crash adds
none twice, and a duplicate of a rejected interchange writes its letter again (stored once),
so a crash between a receipt and its letter loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import re
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from mako_actors._frozen import positional_maker
from mako_actors._handle import _correlation
from mako_actors.dead_letters import DeadLetter
from mako_actors.edifact import (
    DanglingRelease,
    Delimiters,
    EdifactError,
    EdifactSyntaxError,
    Interchange,
    InvalidCharacter,
    Message,
    Segment,
    Transaction,
    UnsupportedCharset,
    decode,
    tokenize,
    try_parse_interchange,
)
from mako_actors.edifact._tokenizer import released
from mako_actors.edifact.interchange import check_lengths, delimiters_of, has_control, trim_trailing_blanks
from mako_actors.edifact.versions import UNH_VERSIONS, unh_mismatch
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity, trusted
from mako_actors.errors import (
    EngineError,
    InboxConflict,
    InvalidArgument,
    RegistryConflict,
    VersionConflict,
    WorkflowError,
)
from mako_actors.family import InboundTransaction, ProcessFamily, Refuse, Resume, Skip, UnhandledPid

# Market-wide pieces (not GPKE routing): the ÜT, and the CONTRL/APERAK every EDI@Energy
# message type is answered with.
from mako_actors.gpke.calendar import uet
from mako_actors.gpke.keys import interchange_key
from mako_actors.gpke.payloads import (
    AperakError,
    AperakPayload,
    ContrlDataElementError,
    ContrlMessageError,
    ContrlSegmentError,
    OutboundRef,
    contrl_payload,
    refusal_seed,
)

# Re-exported for existing callers; they belong to the GPKE family (``gpke.supply``).
from mako_actors.gpke.supply import MasterData as MasterData
from mako_actors.gpke.supply import StaticMasterData as StaticMasterData
from mako_actors.gpke.supply import Suppliers as Suppliers
from mako_actors.ids import CorrelationId, ProcessId, TenantId, _v5
from mako_actors.logs import log_context
from mako_actors.outbox import PendingOutbox
from mako_actors.process import Clock, Process, system_clock
from mako_actors.store import Store
from mako_actors.version import FormatVersion, WorkflowId
from mako_actors.workflow import Event, Workflow, WorkflowOutput

if TYPE_CHECKING:
    from mako_actors.gpke.router import PidRouter

log = logging.getLogger(__name__)
_RECEIPT_NAMESPACE = uuid.UUID("5c1e7a92-4d3b-5f08-a6e1-93b2c4d5e6f7")
_RECEIPT_NAMESPACE_BYTES = _RECEIPT_NAMESPACE.bytes
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
    """Every message of the interchange was routed or dead-lettered (counts per outcome).

    ``refused``: how many transactions got a negative APERAK from the pipeline with it.
    """

    outcomes: dict[str, int]
    refused: int = 0


class InterchangeConflicted(Event, type="inbox.interchange_conflicted"):
    """Other bytes arrived under an accepted interchange's reference: alarm, not processed."""

    sha256: str
    received_at: datetime
    source: str | None


class RefusalAcknowledged(Event, type="inbox.refusal_acknowledged"):
    """The partner's CONTRL on a negative APERAK the pipeline sent from this receipt stream
    (``referenced_interchange_ref``: that APERAK's 0020). A negative one (0083 4): the partner
    counts our refusal as not received."""

    message_type: str
    sender: str
    referenced_interchange_ref: str
    positive: bool
    codes: tuple[str, ...] = ()
    interchange_ref: str
    received_at: datetime
    message_ref: str | None = None  # the CONTRL's UNH 0062 (None: recorded before it was kept)


class RecordProcessed(BaseModel):
    """Record that every message of the interchange was routed (or dead-lettered), and send
    the negative APERAKs of the transactions refused (``refusals``: APERAK payloads), the 0020
    of each bound to this receipt stream (``ic:<0020>``) for the partner's CONTRL on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["processed"] = "processed"
    outcomes: dict[str, int]
    refusals: tuple[dict[str, Any], ...] = ()


class RecordReceipt(BaseModel):
    """Record one received interchange and acknowledge it with a CONTRL.

    With ``processed``, its messages were routed already: the receipt, its CONTRL and the
    outcome are recorded at once (``InboundPipeline(receipt_after_routing=True)``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["receipt"] = "receipt"
    receipt: InterchangeReceived
    contrl: dict[str, Any] | None  # None: an interchange of CONTRLs, which get no CONTRL back
    processed: RecordProcessed | None = None


class RecordConflict(BaseModel):
    """Record other bytes under a received reference, and answer them with ``contrl`` (4, 26)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["conflict"] = "conflict"
    conflict: InterchangeConflicted
    sender: str
    contrl: dict[str, Any]


class RecordAcknowledgement(BaseModel):
    """Record the partner's CONTRL on one of the refusal APERAKs of this receipt stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["acknowledgement"] = "acknowledgement"
    acknowledgement: RefusalAcknowledged


class ReceiptState(BaseModel):
    model_config = ConfigDict(frozen=True)
    received: bool = False
    sha256: str = ""
    accepted: bool = False
    processed: bool = False
    conflicts: tuple[str, ...] = ()  # digests of other bytes seen under this reference
    # The receipt's source and error: a rejected interchange's dead letter is made of them.
    source: str | None = None
    error: str | None = None
    sender: str = ""  # the interchange's, to whom the pipeline's APERAKs went
    # Digests of earlier receipts under this reference, rejected and followed by other bytes:
    # received (answered, CONTRL 4) before, so the same bytes again are a duplicate, no conflict.
    rejected: tuple[str, ...] = ()
    # ``<partner's 0020>:<0062>:<our APERAK's 0020>`` of each CONTRL on a refusal recorded: the
    # same one routed again (its interchange re-routed after a crash) is recorded once.
    acknowledged: tuple[str, ...] = ()

    def holds(self, digest: str) -> bool:
        """Whether ``RecordReceipt`` of bytes with ``digest`` would be refused: something was
        accepted under this reference, or these very bytes were received before."""
        fields = self.__dict__
        return fields["received"] and (
            fields["accepted"] or fields["sha256"] == digest or digest in fields["rejected"]
        )


ReceiptCommand = RecordReceipt | RecordProcessed | RecordConflict | RecordAcknowledgement


class ReceiptWorkflow(Workflow[ReceiptCommand, ReceiptState]):
    """The receipt log of one interchange: received (with its CONTRL), then processed; the
    partner's CONTRLs on the APERAKs the pipeline refused its transactions with."""

    name = RECEIPT_WORKFLOW
    # 2: the receipt's source and error in the state (a snapshot of 1 lacks them); 3: its sender;
    # 4: the digests of earlier rejected receipts; 5: the acknowledgements recorded
    state_schema_version = 5
    events = (InterchangeReceived, InterchangeProcessed, InterchangeConflicted, RefusalAcknowledged)

    def initial_state(self) -> ReceiptState:
        return _NO_RECEIPT

    def handle(self, state: ReceiptState, command: ReceiptCommand) -> WorkflowOutput:
        if isinstance(command, RecordProcessed):
            if not state.received or state.processed:
                raise WorkflowError.invalid_state("interchange not received, or processed already")
            return _processed((), (), command)
        if isinstance(command, RecordAcknowledgement):
            return _acknowledged(state, command.acknowledgement)
        if isinstance(command, RecordConflict):
            digest = command.conflict.sha256
            if digest == state.sha256 or digest in state.conflicts:
                raise WorkflowError.invalid_state("these bytes were answered already")
            return WorkflowOutput.of(command.conflict).with_outbox(
                PendingOutbox(message_type="CONTRL", recipient=command.sender, payload=command.contrl)
            )
        # A rejected interchange counts as not received: its corrected resend (other bytes, same
        # 0020) is a new receipt. An accepted one, or bytes received before (the last ones, or
        # rejected ones before them), is a retransmission (``ReceiptState.holds``).
        # (Fields read from ``__dict__``: a model attribute goes through pydantic's
        # ``__getattr__`` hook; once per interchange.)
        fields = command.__dict__
        receipt = fields["receipt"]
        received = receipt.__dict__
        if state.holds(received["sha256"]):
            raise WorkflowError.invalid_state(f"interchange {receipt.interchange_ref} was received already")
        payload = fields["contrl"]
        contrl = () if payload is None else (_pending("CONTRL", received["sender"], payload),)
        if fields["processed"] is None:
            return WorkflowOutput.of(receipt).with_outbox(*contrl)
        return _processed((receipt,), contrl, fields["processed"])

    def apply(self, state: ReceiptState, event: Event) -> ReceiptState:
        if isinstance(event, InterchangeReceived):
            rejected = state.rejected
            if state.received and not state.accepted and state.sha256 not in rejected:
                rejected = (*rejected, state.sha256)  # followed by other bytes: kept as received
            return _receipt_state(
                True, event.sha256, event.accepted, False, state.conflicts, event.source, event.error,
                event.sender, rejected, state.acknowledged,
            )  # fmt: skip
        if isinstance(event, InterchangeConflicted):
            return state.model_copy(update={"conflicts": (*state.conflicts, event.sha256)})
        if isinstance(event, RefusalAcknowledged):
            # A record for the operator: nothing is decided by it, but it is recorded once.
            return state.model_copy(update={"acknowledged": (*state.acknowledged, _ack_key(event))})
        # InterchangeProcessed
        return _receipt_state(
            state.received, state.sha256, state.accepted, True, state.conflicts, state.source, state.error,
            state.sender, state.rejected, state.acknowledged,
        )  # fmt: skip


_NO_RECEIPT = ReceiptState()  # frozen: every new receipt stream starts from this one
_RECEIPT_STATE_SET = set(ReceiptState.model_fields)
_OUTCOME_SET = {"outcomes", "refused"}
_PROCESSED_SET = {"outcomes", "refusals"}  # as validation sets them (``kind`` is a default)
# Every field given (as ``_record_receipt`` builds them): shared by all, the models are frozen.
_RECEIVED_SET = set(InterchangeReceived.model_fields)
_RECORD_SET = set(RecordReceipt.model_fields)


def _receipt_state(
    received: bool,
    sha256: str,
    accepted: bool,
    processed: bool,
    conflicts: tuple[str, ...],
    source: str | None,
    error: str | None,
    sender: str,
    rejected: tuple[str, ...],
    acknowledged: tuple[str, ...],
) -> ReceiptState:
    """A ``ReceiptState`` of typed values, without validation (every stream's every event)."""
    fields = {
        "received": received,
        "sha256": sha256,
        "accepted": accepted,
        "processed": processed,
        "conflicts": conflicts,
        "source": source,
        "error": error,
        "sender": sender,
        "rejected": rejected,
        "acknowledged": acknowledged,
    }
    return trusted(ReceiptState, fields, _RECEIPT_STATE_SET)


# Read once: an attribute of a model class goes through its metaclass's ``__getattr__`` hook
# (~1k instructions each), and these run per answer sent and per interchange.
_of_plain = PendingOutbox.of_plain
_of_process = ProcessIdentity.of_process


def _pending(message_type: str, recipient: str, payload: dict[str, Any]) -> PendingOutbox:
    """A ``PendingOutbox`` of a plain payload we built ourselves (a CONTRL or APERAK of
    ``edifact``'s builders: strings and ints), neither re-validated nor walked again when stored."""
    return _of_plain(message_type, recipient, payload)


def _processed(
    events: tuple[Event, ...], outbox: tuple[PendingOutbox, ...], command: RecordProcessed
) -> WorkflowOutput:
    """``events`` and ``outbox`` with the outcome: ``InterchangeProcessed`` and the refusals'
    negative APERAKs (after ``outbox``), the 0020 of each bound to this stream (``ic:``), as a
    process binds its own: the partner's CONTRL on it finds it (DOMAIN §5)."""
    fields = command.__dict__
    payloads = fields["refusals"]
    processed = trusted(
        InterchangeProcessed, {"outcomes": fields["outcomes"], "refused": len(payloads)}, _OUTCOME_SET
    )
    # ``WorkflowOutput.of(...).with_outbox(...)`` in one model (typed values: no validation).
    output = {**_NO_OUTPUT, "events": (*events, processed), "outbox": outbox}
    if not payloads:
        return trusted(WorkflowOutput, output, _EVENTS_AND_OUTBOX)
    output["outbox"] = (*outbox, *[_pending("APERAK", p["envelope"]["recipient_id"], p) for p in payloads])
    output["register_keys"] = tuple([interchange_key(p["envelope"]["control_ref"]) for p in payloads])
    return trusted(WorkflowOutput, output, _EVENTS_OUTBOX_AND_KEYS)


def _acknowledged(state: ReceiptState, acknowledgement: RefusalAcknowledged) -> WorkflowOutput:
    """The partner's CONTRL on a refusal APERAK of this stream (its ``ic:`` key led here)."""
    ack = acknowledgement.__dict__
    referenced = ack["referenced_interchange_ref"]
    if ack["message_type"] != "CONTRL":  # an APERAK is answered by a CONTRL only, never an APERAK
        raise WorkflowError.rejected(
            f"{ack['message_type']} refers to our APERAK {referenced} (refusing a transaction): "
            "only a CONTRL answers an APERAK"
        )
    if ack["sender"] != state.sender:
        # Only its recipient acknowledges it: anyone else would make it count as not received.
        raise WorkflowError.rejected(
            f"CONTRL from {ack['sender']} refers to our APERAK {referenced}, which went to {state.sender}"
        )
    if _ack_key(acknowledgement) in state.acknowledged:
        return WorkflowOutput()  # recorded before: its interchange is routed again (after a crash)
    return WorkflowOutput.of(acknowledgement)


def _ack_key(acknowledgement: RefusalAcknowledged) -> str:
    """The partner's 0020 (and 0062) and our APERAK's 0020: one CONTRL, however often routed."""
    ack = acknowledgement.__dict__
    if ack["message_ref"] is None:
        return f"{ack['interchange_ref']}:{ack['referenced_interchange_ref']}"
    return f"{ack['interchange_ref']}:{ack['message_ref']}:{ack['referenced_interchange_ref']}"


_NO_OUTPUT = {name: info.default for name, info in WorkflowOutput.model_fields.items()}
# Shared: the model is frozen.
_EVENTS_AND_OUTBOX = {"events", "outbox"}
_EVENTS_OUTBOX_AND_KEYS = {"events", "outbox", "register_keys"}


@functools.lru_cache(maxsize=4096)
def receipt_identity(recipient: str, sender: str, interchange_ref: str) -> ProcessIdentity:
    """The receipt stream of one interchange: derived from recipient, sender and 0020 only, so a
    retransmission (or other bytes under the same reference) finds the same stream.

    Cached (a pure function of its arguments; each interchange asks up to four times, and the
    uuid5 ids cost more than the rest of a receipt's routing).
    """
    tenant = _tenant_or_placeholder(recipient)
    # ``ProcessId(uuid.uuid5(_RECEIPT_NAMESPACE, ...))`` without ``uuid``'s argument parsing
    # (once per interchange: every receipt stream is new).
    process_id = _v5(ProcessId, _RECEIPT_NAMESPACE_BYTES, f"{recipient}:{sender}:{interchange_ref}")
    return _of_process(tenant, process_id, _RECEIPT_WORKFLOW_ID)


# -- where commands run ----------------------------------------------------------------------


class Handle(Protocol):
    """What the pipeline needs of a process handle (``Process`` and actor refs have it)."""

    def identity(self) -> ProcessIdentity: ...
    def context_for_inbound(
        self, interchange_ref: str, *, recorded_at: datetime | None = None
    ) -> CommandContext: ...
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


async def received_before(store: Store, raw: bytes, tenants: Collection[str]) -> bool | None:
    """Whether ``store`` holds the receipt of these very bytes, or of an interchange accepted
    under their UNB reference: whether ``InboundPipeline.ingest`` would decide nothing of them.

    None when the UNB cannot be read or names no answerable receipt (such a file only ever
    becomes a dead letter). A read: nothing is written. Cost: one stream read when the
    reference is known.
    """
    header = _lenient_header(raw)
    if header is None:
        return None
    sender, recipient, reference = header[:3]
    if recipient not in tenants:
        if len(tenants) != 1:
            return None  # not ours and nobody's to answer: a dead letter only (``_misaddressed``)
        recipient = next(iter(tenants))  # recorded under our own MP-ID (``_misaddressed``)
    try:
        identity = receipt_identity(recipient, sender, reference)
    except (InvalidArgument, ValidationError):
        return None
    if not await store.stream_version(identity.stream_id):
        return False
    receipts = DirectHost(store, [ReceiptWorkflow()])
    state: ReceiptState = await receipts.resume(identity).state()
    return state.holds(hashlib.sha256(raw).hexdigest())


# -- results ---------------------------------------------------------------------------------

Outcome = Literal["started", "routed", "duplicate", "dead_letter"]
Status = Literal["accepted", "rejected", "duplicate", "conflict"]
Acknowledged = Literal["accepted", "rejected"]


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """What happened to one transaction of one message.

    A CONTRL/APERAK on one of our interchanges, routed to the process that sent it, has ``detail``
    its message type and ``ack`` whether it ``accepted`` or ``rejected`` ours (CONTRL 0083 4 or
    APERAK 313: the partner counts our message as not received); ``None`` for any other.
    """

    message_ref: str
    pid: str | None
    ide_ref: str | None
    outcome: Outcome
    process_id: ProcessId | None = None
    detail: str = ""
    refused: str | None = None  # the ERC code of the negative APERAK we sent for it
    ack: Acknowledged | None = None


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
    #: Our MP-ID that answered an interchange addressed to someone else (else the recipient).
    answered_by: str | None = None
    #: The UNB S002/S003 qualifiers as received, which the CONTRL's UCI copies (AHB-FACTS §6).
    sender_qualifier: str | None = None
    recipient_qualifier: str | None = None
    #: The interchange itself became a dead letter (unreadable, misaddressed, a conflicting
    #: retransmission), besides any dead letters of its transactions (their outcomes).
    dead_lettered: bool = False
    #: A ``duplicate`` of an interchange its first receipt rejected (CONTRL 4): it stays rejected.
    rejected_before: bool = False
    #: A ``duplicate``'s receipt: the source (file name) and error it recorded, the first copy's.
    first_source: str | None = None
    first_error: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.messages:
            out[m.outcome] = out.get(m.outcome, 0) + 1
        return out


def storable_name(name: str) -> str:
    """``name`` as UTF-8 can carry it: bytes a file name had that were no UTF-8 as ``\\xfc``.

    ``os.fsdecode`` turns such bytes (a Latin-1 ``Müller`` from a Windows gateway) into lone
    surrogates, which no stored event, log line or report can encode. ASCII names cost one
    O(1) test; a name without such bytes comes back unchanged.
    """
    if name.isascii():
        return name
    try:
        raw = name.encode("utf-8", "surrogateescape")  # the file name's own bytes
    except UnicodeEncodeError:  # a surrogate no file system made: escape it as it is
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _storable_source(
    source: str, parsed: Interchange | EdifactError | None
) -> tuple[str, Interchange | EdifactError | None]:
    """``ingest``'s ``source`` and an ahead-parsed ``parsed`` naming ``storable_name(source)``."""
    storable = storable_name(source)
    if storable == source or parsed is None:
        return storable, parsed
    if isinstance(parsed, EdifactError):
        return storable, parsed.with_source(storable)
    return storable, replace(parsed, source=storable)


# -- the pipeline ----------------------------------------------------------------------------


class InboundPipeline:
    """Ingests EDIFACT interchanges for the tenants (our MP-IDs) given; see the module docs.

    ``families``: the market process families routing transactions by PID (default: GPKE,
    built from ``router`` and ``master_data``, which are only accepted without ``families``).
    A ``host`` whose ``spawn`` takes ``routing_key`` (actor systems) gets the family's, so a
    trigger's process lands in its MaLo's partition. ``receipts``: the ``ProcessHost`` the
    receipt streams run on (default: plain processes on ``store``; it must know ``mako-inbox``).

    ``receipt_after_routing``: an accepted interchange not received before is routed first and
    its receipt, CONTRL and outcome are written in one command afterwards (one write instead
    of two). Only for a caller that never ingests one interchange twice at once (a replay,
    whose schedule orders every interchange of a receipt stream): the receipt no longer
    guards the routing against a concurrent copy. A crash before that write leaves the
    interchange unrecorded and its transactions known: ingesting it again takes them as
    reused references (APERAK Z15, an ``inbound-conflict`` dead letter each), so such a caller
    must not go on after a crash (the replay's running mark refuses its store). The CONTRL
    then follows the processes' answers in the outbox.

    ``record_at_receipt``: every command and dead letter of an interchange is stamped with its
    ``received_at`` (``CommandContext.with_recorded_at``), not with ``clock``'s reading when
    it runs: for historic input (a replay, which runs interchanges ahead of its clock).

    Copies of one interchange (UNB sender, recipient, 0020) ingested at the same time take
    turns: the later one waits for the first to finish and is then its duplicate. Otherwise it
    would find the first one's receipt not yet processed, take it for a crash's leftover and
    route the interchange a second time beside it. ``in_flight``: the table of interchanges
    being ingested, shared by the pipelines that should take turns (a Ray host makes one
    pipeline per call); by default this pipeline's own.

    ``dead_letters_written``: the dead letters this pipeline wrote since it was made (a letter
    the store held already, the same file received again, is not counted), also by ingests
    that then failed: a monitor reads it after every ingest, raised or not.
    """

    def __init__(
        self,
        store: Store,
        host: ProcessHost,
        *,
        tenants: Iterable[str],
        families: Sequence[ProcessFamily] | None = None,
        router: PidRouter | None = None,
        master_data: MasterData | None = None,
        accept_test: bool = False,
        clock: Clock = system_clock,
        receipts: ProcessHost | None = None,
        receipt_after_routing: bool = False,
        record_at_receipt: bool = False,
        in_flight: dict[tuple[str, str, str], asyncio.Event] | None = None,
    ) -> None:
        self._store = store
        self._in_flight = in_flight if in_flight is not None else {}
        self.dead_letters_written = 0
        self._host = host
        self._tenants = set(tenants)
        if not self._tenants:
            raise InvalidArgument("InboundPipeline needs at least one tenant MP-ID")
        if families is None:
            from mako_actors.gpke.family import GpkeFamily  # the default family, for convenience
            from mako_actors.gpke.supply import check_master_tenants

            check_master_tenants(master_data, self._tenants, "InboundPipeline")
            families = [GpkeFamily(router, master_data)]
        elif router is not None or master_data is not None:
            raise InvalidArgument("InboundPipeline: give router/master_data to the family, not beside it")
        self._families = tuple(families)
        # PID -> the family that handles it (``_family``, for every transaction); a family's
        # ``handles`` depends on the PID alone.
        self._by_pid: dict[str, ProcessFamily | None] = {}
        # A partitioned host places a trigger's process by the family's routing key (the MaLo).
        self._routed_spawn = "routing_key" in inspect.signature(host.spawn).parameters
        self._accept_test = accept_test
        self._clock = clock
        # Where receipt streams run (``mako-inbox``): plain processes on ``store`` unless given.
        self._receipts = receipts or DirectHost(store, [ReceiptWorkflow()], clock)
        self._receipts_in_store = receipts is None  # their streams are ``store``'s
        self._receipt_after_routing = receipt_after_routing
        self._record_at_receipt = record_at_receipt
        # The format version in force per ÜT day (``FormatVersion.in_force``, for every interchange).
        self._format_versions: dict[date, FormatVersion] = {}

    async def ingest(
        self,
        raw: bytes,
        received_at: datetime,
        source: str | None = None,
        *,
        parsed: Interchange | EdifactError | None = None,
    ) -> IngestResult:
        """Ingest one interchange received at ``received_at`` (aware; the ÜT derives from it).

        Never raises for bad input: the result says what happened. Raises only for store
        failures (``StoreError``), after which re-ingesting the same bytes is safe. ``parsed``:
        ``try_parse_interchange(raw, source=source)`` if the caller parsed ahead (a replay).
        ``source`` (a file name) is recorded as ``storable_name(source)``.
        """
        if received_at.tzinfo is None:
            raise InvalidArgument("ingest: received_at must be timezone-aware")
        if source is not None and not source.isascii():  # (an O(1) test: names are mostly ASCII)
            source, parsed = _storable_source(source, parsed)
        if parsed is None:
            parsed = try_parse_interchange(raw, source=source)
        if isinstance(parsed, Interchange):
            digest = parsed.sha256  # the parser hashed these bytes already
            header: _Header | None = (
                parsed.sender.id, parsed.recipient.id, parsed.control_ref,
                parsed.sender.qualifier, parsed.recipient.qualifier,
            )  # fmt: skip
        else:
            digest = hashlib.sha256(raw).hexdigest()
            header = _lenient_header(raw)
        # The same (cached) uuid5 the commands' contexts take as their correlation id.
        correlation: CorrelationId | None = _correlation(f"{header[0]}:{header[2]}") if header else None
        key = header[:3] if header else None
        turn: asyncio.Event | None = None
        if key is not None:
            while (running := self._in_flight.get(key)) is not None:
                await running.wait()  # (an Event: a waiter cancelled cancels nothing shared)
            turn = self._in_flight[key] = asyncio.Event()
        try:
            with log_context(correlation_id=correlation, interchange_ref=header and header[2], source=source):
                result = await self._ingest(raw, parsed, header, digest, received_at, source)
                _log_result(result)
        finally:
            if key is not None and turn is not None:
                del self._in_flight[key]
                turn.set()
        return result

    async def _ingest(
        self,
        raw: bytes,
        parsed: Interchange | EdifactError,
        header: _Header | None,
        digest: str,
        received_at: datetime,
        source: str | None,
    ) -> IngestResult:
        if isinstance(parsed, EdifactError):
            result = IngestResult(source, "rejected", error=str(parsed))
            if header is not None:
                result.sender, result.recipient, result.interchange_ref = header[:3]
                result.sender_qualifier, result.recipient_qualifier = header[3:]
                try:
                    if result.recipient not in self._tenants:
                        # Never answered in another party's name, broken or not: as one that parses.
                        await self._misaddressed(result, digest, received_at, not _contrl_only(raw))
                        await self._following_letter(result, raw, digest, received_at)
                        return result
                    message_errors = _message_error(raw, parsed)
                    code = None if message_errors else parsed.syntax_error_code
                    contrls = _contrl_only(raw)
                    await self._record_receipt(
                        result, digest, received_at, 0, code, message_errors=message_errors,
                        error_segment=_uci_segment(parsed) if code else None, acknowledge=not contrls,
                    )  # fmt: skip
                    if contrls:
                        await self._refused_contrls(result, digest, received_at)
                    await self._following_letter(result, raw, digest, received_at)
                    return result
                except (InvalidArgument, ValidationError):
                    pass  # a UNB too broken to answer (e.g. an over-long 0020): keep it as a dead letter
            result.dead_lettered = True
            await self._dead_letter(
                "inbound",
                f"unreadable interchange: {parsed}",
                {"source": source, "sha256": digest},
                received_at,
            )
            return result
        result = IngestResult(
            source,
            "accepted",
            interchange_ref=parsed.control_ref,
            sender=parsed.sender.id,
            recipient=parsed.recipient.id,
            sender_qualifier=parsed.sender.qualifier,
            recipient_qualifier=parsed.recipient.qualifier,
        )
        only_contrl = all(m.message_type == "CONTRL" for m in parsed.messages)
        # A CONTRL gets no CONTRL back, also when its interchange is refused (ISO 9735).
        answer = not (parsed.messages and only_contrl)
        if parsed.recipient.id not in self._tenants:
            await self._misaddressed(result, digest, received_at, answer)
            return result
        if parsed.syntax_version != "3":
            # MaKo interchanges are syntax version 3 (DOMAIN §4): a 4 reads its repetition
            # separator as data. ISO 9735 0085 = 2 "syntax version or level not supported".
            result.status = "rejected"
            result.error = f"syntax version {parsed.syntax_version!r} (UNB S001 0002) not supported: 3 only"
            await self._receipt_only(result, digest, received_at, "2", "UNB", acknowledge=answer)
            if not answer:
                await self._refused_contrls(result, digest, received_at)
            return result
        if parsed.test and not self._accept_test:
            result.status, result.error = "rejected", "test interchange (UNB 0035 = 1) refused in production"
            # ISO 9735 0085 = 25 "test indicator not supported", about the UNB †
            await self._receipt_only(result, digest, received_at, "25", "UNB", acknowledge=answer)
            if not answer:
                await self._refused_contrls(result, digest, received_at)
            return result
        try:
            fv = self._format_version(uet(received_at))
        except InvalidArgument as exc:
            result.status, result.error = "rejected", f"no format version in force: {exc}"
            await self._receipt_only(result, digest, received_at, None, acknowledge=answer)
            if not answer:
                await self._refused_contrls(result, digest, received_at)
            return result
        wrong_versions = _version_errors(parsed, fv)
        if wrong_versions:
            result.status = "rejected"
            result.error = "UNH version not in force: " + "; ".join(reason for _, reason in wrong_versions)
            await self._record_receipt(
                result,
                digest,
                received_at,
                len(parsed.messages),
                None,
                message_errors=[line for line, _ in wrong_versions],
                acknowledge=answer,
            )
            if not answer:
                await self._refused_contrls(result, digest, received_at)
            return result
        # One handle on the receipt stream for every step of this interchange (its id is a uuid5).
        receipts = self._receipt_handle(result)
        unrecorded = await self._receipt_is_new(receipts, digest) if self._receipt_after_routing else ""
        record_after = bool(unrecorded)
        record = functools.partial(
            self._record_receipt,
            result, digest, received_at, len(parsed.messages), None,
            acknowledge=not only_contrl, handle=receipts, empty=unrecorded == "empty",
        )  # fmt: skip
        if not record_after and not await record():
            return result
        # Received before and not fully processed (a crash in between): its transactions may
        # have started processes already, which routing skips. With the receipt written after
        # routing (replays) such a crash leaves no receipt, but the replay's running mark
        # refuses that store: a known transaction there is a reused IDE (Z15), as in serve.
        rerouting = result.status == "duplicate"
        result.status = "accepted"
        tenant = _tenant_of(parsed.recipient.id)
        refusals: list[dict[str, Any]] = []
        # IDEs whose process this interchange started, met again while it is routed again
        claimed: set[str] | None = set() if rerouting else None
        for message in parsed.messages:
            if message.message_type in ("CONTRL", "APERAK"):
                # An acknowledgement starts no process, whatever IDE/RFF+Z13 it may carry.
                result.messages.append(await self._acknowledgement(tenant, parsed, message, received_at))
                continue
            if message.message_type != "UTILMD" or not message.transactions:
                # Only UTILMD carries the process PIDs (DOMAIN §1: 55xxx), and only its version is
                # checked: an ORDERS or a 'utilmd' with RFF+Z13:55001 is no Anmeldung.
                result.messages.append(await self._unhandled(parsed, message, received_at, refusals))
                continue
            seen: set[str] = set()
            for transaction in message.transactions:
                tx = _inbound_transaction(parsed, message, transaction, tenant, received_at, fv)
                repeated = transaction.ide_ref in seen
                seen.add(transaction.ide_ref)
                result.messages.append(await self._route(tx, refusals, claimed, repeated))
        # Counts and APERAK payloads built here: no validation of them.
        processed = trusted(
            RecordProcessed,
            {"kind": "processed", "outcomes": result.counts(), "refusals": tuple(refusals)},
            _PROCESSED_SET,
        )
        if record_after:
            await record(processed=processed)
            return result
        await receipts.execute_and_enqueue_with(processed, self._receipt_ctx(result, received_at, receipts))
        return result

    def _format_version(self, day: date) -> FormatVersion:
        """``FormatVersion.in_force(day)``, remembered per day (a pure function of it)."""
        fv = self._format_versions.get(day)
        if fv is None:
            fv = FormatVersion.in_force(day)  # InvalidArgument: not remembered
            if len(self._format_versions) < 4096:  # a replay's days are few; keep it small anyway
                self._format_versions[day] = fv
        return fv

    # -- receipts --------------------------------------------------------------------------

    def _receipt_identity(self, result: IngestResult) -> ProcessIdentity:
        assert result.recipient is not None and result.sender is not None
        receiver = result.answered_by or result.recipient
        return receipt_identity(receiver, result.sender, str(result.interchange_ref))

    async def _misaddressed(
        self, result: IngestResult, digest: str, received_at: datetime, acknowledge: bool = True
    ) -> None:
        """An interchange whose UNB recipient is not one of our MP-IDs: never answered in its name.

        ISO 9735 0085 = 7 ("recipient not actual recipient") is the actual recipient's answer,
        so with one tenant we, the party that received it, send CONTRL 4 with code 7 from our
        own MP-ID and record the receipt under our own tenant (DOMAIN.md §5). With several
        tenants nothing says which of ours received it: no answer. Either way an alarm (the
        warning logged for the result) and a dead letter, once per distinct content.
        """
        assert result.recipient is not None
        result.status = "rejected"
        broken = f"; {result.error}" if result.error else ""  # what the parser found besides
        result.error = f"recipient {result.recipient} is not one of our MP-IDs{broken}"
        if len(self._tenants) == 1:
            result.answered_by = next(iter(self._tenants))
            await self._receipt_only(result, digest, received_at, "7", "UNB", acknowledge)
        await self._rejection_letter(result, digest, received_at, "inbound-misaddressed", "")

    async def _refused_contrls(self, result: IngestResult, digest: str, received_at: datetime) -> None:
        """A refused interchange of CONTRLs: a dead letter, once per distinct content.

        Its sender is told nothing (a CONTRL gets no CONTRL), and its acknowledgements are not
        applied: a CONTRL 4 of our 55010 among them would be lost unseen, and the LFA deemed to
        agree at nine (DOMAIN §5: nothing is dropped). The operator reads it and decides.
        """
        prefix = "CONTRL interchange refused, its acknowledgements not applied: "
        await self._rejection_letter(result, digest, received_at, "inbound", prefix)

    async def _following_letter(
        self, result: IngestResult, raw: bytes, digest: str, received_at: datetime
    ) -> None:
        """A dead letter naming a further interchange after the first one in ``raw`` (a gateway's
        batch in one file): our answer names the first only, so its sender would wait for one
        to the next forever, and nobody here would see it. Once per content, as
        ``_rejection_letter`` (a copy received again under another name writes nothing)."""
        if result.status == "rejected":
            source = result.source
        elif result.status == "duplicate" and result.rejected_before:
            source = result.first_source
        else:
            return
        found = _following_interchange(raw)
        if found is None:
            return
        offset, header = found
        if header is None:
            named, ref = f"an interchange whose UNB cannot be read (at byte {offset})", None
        else:
            named, ref = f"interchange {header[2]!r} from {header[0]}", header[2]
        reason = (
            f"{named} follows interchange {result.interchange_ref!r} in the same file: the file was "
            "rejected, only the first answered; the sender must send each interchange on its own"
        )
        audit = {"source": source, "sha256": digest, "interchange_ref": ref, "offset": offset}
        await self._dead_letter("inbound", reason, audit, received_at)

    async def _rejection_letter(
        self, result: IngestResult, digest: str, received_at: datetime, kind: str, prefix: str
    ) -> None:
        """The dead letter of an interchange rejected whole: ``prefix`` and its error.

        A duplicate of one its receipt rejected gets it again as its first copy got it (that
        copy's source and error), which the store keeps once: written only if a crash between
        that receipt and its letter lost it. A conflict was dead-lettered as such.
        """
        if result.status == "rejected":
            result.dead_lettered = True
            source, error = result.source, result.error
        elif result.status == "duplicate" and result.rejected_before and result.first_error is not None:
            source, error = result.first_source, result.first_error
        else:
            return
        audit = {**_audit(result), "source": source, "sha256": digest}
        await self._dead_letter(kind, f"{prefix}{error or ''}", audit, received_at)

    def _receipt_handle(self, result: IngestResult) -> Handle:
        return self._receipts.resume(self._receipt_identity(result))

    def _receipt_ctx(
        self, result: IngestResult, received_at: datetime, handle: Handle | None = None
    ) -> CommandContext:
        handle = handle or self._receipt_handle(result)
        return self._context(handle, f"{result.sender}:{result.interchange_ref}", received_at)

    def _context(self, handle: Handle, interchange_ref: str, received_at: datetime) -> CommandContext:
        """The context of a command for an interchange received at ``received_at``."""
        if self._record_at_receipt:
            return handle.context_for_inbound(interchange_ref, recorded_at=received_at)
        return handle.context_for_inbound(interchange_ref)

    async def _receipt_is_new(self, handle: Handle, digest: str) -> Literal["empty", "new", ""]:
        """Whether ``RecordReceipt`` of these bytes would be taken (nothing accepted, or other
        bytes rejected, under this reference) on the receipt stream ``handle``: a read, no write.

        ``"empty"``: taken, and the stream (one of ``store``'s) holds no event at all; ``"new"``:
        taken; ``""``: not taken.
        """
        if self._receipts_in_store and not await self._store.stream_version(handle.identity().stream_id):
            return "empty"  # nothing under this reference yet (the usual case): no state to rebuild
        state: ReceiptState = await handle.state()
        return "" if state.holds(digest) else "new"

    async def _receipt_only(
        self,
        result: IngestResult,
        digest: str,
        received_at: datetime,
        error_code: str | None,
        error_segment: Literal["UNA", "UNB", "UNZ"] | None = None,
        acknowledge: bool = True,
    ) -> Status:
        """Record a rejected interchange's receipt and CONTRL (``acknowledge``: none for an
        interchange of CONTRLs); the status after it (e.g. duplicate)."""
        await self._record_receipt(
            result, digest, received_at, 0, error_code, error_segment=error_segment, acknowledge=acknowledge
        )
        return result.status

    async def _record_receipt(
        self,
        result: IngestResult,
        digest: str,
        received_at: datetime,
        messages: int,
        error_code: str | None,
        *,
        acknowledge: bool = True,
        message_errors: Sequence[ContrlMessageError] = (),
        processed: RecordProcessed | None = None,
        handle: Handle | None = None,
        empty: bool = False,
        error_segment: Literal["UNA", "UNB", "UNZ"] | None = None,
    ) -> bool:
        """Write the receipt and its CONTRL; false (status set) when nothing more is to be done.

        True also for an accepted interchange received before but not fully processed (a crash
        in between): its messages are routed again, and routing skips transactions it knows.
        ``processed``: the outcome of messages routed already, written with the receipt.
        ``handle``: the receipt stream's handle if the caller has it; ``empty``: the caller read
        its stream (one of ``store``'s) as empty just now, so its state is not read again.
        """
        assert result.sender and result.recipient and result.interchange_ref
        accepted = result.status == "accepted"
        # The payload as stored, built directly (one per interchange; no models to dump).
        contrl = (
            contrl_payload(
                interchange_ref=result.interchange_ref,
                interchange_sender=result.sender,
                interchange_recipient=result.recipient,
                accepted=accepted,
                prepared_at=received_at,
                error_code=None if accepted else error_code,
                error_segment=error_segment,
                message_errors=message_errors,
                # A rejected interchange counts as not received: other bytes under its 0020 (a
                # corrected resend) are a new receipt, whose CONTRL must not repeat this one's
                # 0020/0062. So a rejection's derive from its bytes too (the same bytes: the same
                # CONTRL), apart from a conflict's CONTRL 26 (the bare digest); the one accepted
                # receipt under a 0020 keeps the plain ones, in every piece of a split bundle.
                variant=None if accepted else f"rejected:{digest}",
                answered_by=result.answered_by,
                interchange_sender_qualifier=result.sender_qualifier,
                interchange_recipient_qualifier=result.recipient_qualifier,
            )
            if acknowledge
            else None
        )
        # Every value has its field's type already (strings of the parsed UNB, the aware
        # instant ``ingest`` checked): built without validating them again.
        receipt = trusted(
            InterchangeReceived,
            {
                "sender": result.sender,
                "recipient": result.recipient,
                "interchange_ref": result.interchange_ref,
                "sha256": digest,
                "source": result.source,
                "received_at": received_at,
                "accepted": accepted,
                "messages": messages,
                "error": result.error,
            },
            _RECEIVED_SET,
        )
        command = trusted(
            RecordReceipt,
            {
                "kind": "receipt",
                "receipt": receipt,
                "contrl": contrl,
                "processed": processed,
            },
            _RECORD_SET,
        )
        if handle is None:
            handle = self._receipt_handle(result)
        try:
            ctx = self._receipt_ctx(result, received_at, handle)
            if empty and isinstance(handle, Process):
                # A new receipt stream, written whole by this one command: no state to rebuild.
                await handle._execute_and_enqueue_new(command, ctx)
            else:
                await handle.execute_and_enqueue_with(command, ctx)
            return accepted
        except (WorkflowError, VersionConflict):
            state: ReceiptState = await handle.state()
        if state.sha256 != digest and digest not in state.rejected:
            alarm = InboxConflict(
                f"interchange {result.interchange_ref} from {result.sender} was received before with "
                f"other content (sha256 {state.sha256[:12]}…, now {digest[:12]}…); not processed"
            )
            result.status, result.error = "conflict", str(alarm)
            if acknowledge:
                await self._answer_conflict(result, digest, received_at)
            result.dead_lettered = True
            await self._dead_letter("inbound-conflict", str(alarm), _audit(result), received_at)
            return False
        if state.sha256 != digest:
            # Bytes rejected before a later receipt under this reference: refused then, a
            # duplicate now (their letter was written before the later bytes came).
            result.status, result.rejected_before = "duplicate", True
            return False
        result.status, result.rejected_before = "duplicate", not state.accepted
        result.first_source, result.first_error = state.source, state.error
        # Refused once, refused for good: its sender was told it counts as not received.
        return accepted and state.accepted and not state.processed

    async def _answer_conflict(self, result: IngestResult, digest: str, received_at: datetime) -> None:
        """CONTRL 4 with 0085 = 26 (duplicate detected) for other bytes under a known 0020.

        Our CONTRL gets its own 0020/0062 (derived from the digest), so it never repeats the
        references of the CONTRL that answered the first bytes. Once per distinct content.
        """
        assert result.sender and result.recipient and result.interchange_ref
        payload = contrl_payload(
            interchange_ref=result.interchange_ref,
            interchange_sender=result.sender,
            interchange_recipient=result.recipient,
            accepted=False,
            prepared_at=received_at,
            error_code="26",
            error_segment="UNB",  # the 0020 in UNB is the one taken already
            variant=digest,
            answered_by=result.answered_by,
            interchange_sender_qualifier=result.sender_qualifier,
            interchange_recipient_qualifier=result.recipient_qualifier,
        )
        conflict = InterchangeConflicted(sha256=digest, received_at=received_at, source=result.source)
        # Refused when these bytes were answered before (or concurrently): one CONTRL is enough.
        with contextlib.suppress(WorkflowError, VersionConflict):
            await self._receipt_handle(result).execute_and_enqueue_with(
                RecordConflict(conflict=conflict, sender=result.sender, contrl=payload),
                self._receipt_ctx(result, received_at),
            )

    # -- one transaction -------------------------------------------------------------------

    def handles(self, pid: str) -> bool:
        """Whether a family routes ``pid`` (else its transactions are refused, APERAK Z31)."""
        return self._family(pid) is not None

    def _family(self, pid: str | None) -> ProcessFamily | None:
        if not pid:
            return None
        try:
            return self._by_pid[pid]
        except KeyError:
            pass
        found = next((family for family in self._families if family.handles(pid)), None)
        if len(self._by_pid) < 1024:  # a few PIDs in practice; garbage ones must not grow it
            self._by_pid[pid] = found
        return found

    async def _route(
        self,
        tx: InboundTransaction,
        refusals: list[dict[str, Any]],
        claimed: set[str] | None = None,
        repeated: bool = False,
    ) -> MessageOutcome:
        """Route one transaction: start or resume its process, or refuse it (APERAK).

        ``claimed`` (not ``None``): its interchange was routed before, cut short; a transaction
        its family knows (``Skip``) is then the one that interchange carried if the process it
        is bound to was started by that interchange (``_started_by``) and no transaction of it
        before this one claimed that process already (the IDEs in ``claimed``: the first one
        under an IDE to reach the family started the process, any later one was refused).
        Otherwise a known transaction reference (IDE) came again in another interchange, or
        twice in this one: the same sub-key with other content raises an alarm and is not
        processed (DOMAIN §5), so it is a dead letter (``inbound-conflict``) where an operator
        looks, never dropped unseen.
        """
        rerouting = claimed is not None
        interchange, transaction = tx.interchange, tx.transaction
        if not transaction.ide_ref:  # its process is keyed, and its answers referenced, by it
            text = "IDE+24 without its reference (7402)"
            return await self._refuse(tx, refusals, "Z29", text, InvalidArgument(text))
        if transaction.ide_qualifier != "24":
            # The UTILMD MIG's only 7495 is 24 (Vorgang): anything else says it is no
            # transaction, so none of it is read. ERC Z39 "Code nicht aus erlaubtem Wertebereich".
            text = f"IDE+{transaction.ide_qualifier}: qualifier (7495) not allowed, only 24 (Vorgang)"
            return await self._refuse(tx, refusals, "Z39", text, InvalidArgument(text))
        pid = tx.pid
        family = self._family(pid)
        if family is None:
            if not pid:
                return await self._refuse(
                    tx, refusals, "Z29", "PID (RFF+Z13) missing", InvalidArgument("no PID (RFF+Z13)")
                )
            text = f"PID {pid} is not a process this market partner handles"
            error = UnhandledPid(f"no market process family handles PID {pid!r}")
            return await self._refuse(tx, refusals, "Z31", text, error)
        try:
            for attempt in range(_RACE_TRIES):  # a concurrent trigger may take the same registry key
                if attempt:
                    # Partitioned: the winner's key reaches the partition lookups ask (its home)
                    # just after its commit; give it that moment before asking again.
                    await asyncio.sleep(0.002 * 4 ** (attempt - 1))
                decision = await family.route(tx, self._store)
                if isinstance(decision, Skip):
                    ide = transaction.ide_ref
                    own = claimed is not None and ide not in claimed
                    if own and claimed is not None and await self._started_by(decision.process, interchange):
                        claimed.add(ide)
                        if decision.process is not None:  # recorded as a run without the crash would
                            return _outcome(tx, "started", decision.process.process_id)
                        return _outcome(tx, "duplicate", detail=decision.detail)
                    return await self._used_before(tx, refusals, decision.detail)
                if isinstance(decision, Refuse):
                    return await self._refuse(
                        tx, refusals, decision.code, decision.text, InvalidArgument(decision.text)
                    )
                if isinstance(decision, Resume):
                    identity = await self._store.lookup(tx.tenant, decision.key)
                    if identity is None:
                        return await self._refuse(
                            tx, refusals, "Z10", decision.unknown, InvalidArgument(decision.unknown)
                        )
                    handle = self._host.resume(identity)
                    await handle.execute_and_enqueue_with(
                        decision.command, self._context(handle, interchange.correlation_ref, tx.received_at)
                    )
                    return _outcome(tx, "routed", identity.process_id)
                if self._routed_spawn and decision.routing_key:
                    spawn: Any = self._host.spawn
                    handle = spawn(
                        decision.workflow, tx.tenant, decision.workflow_id, routing_key=decision.routing_key
                    )
                else:
                    handle = self._host.spawn(decision.workflow, tx.tenant, decision.workflow_id)
                try:
                    await handle.execute_and_enqueue_with(
                        decision.command, self._context(handle, interchange.correlation_ref, tx.received_at)
                    )
                    return _outcome(tx, "started", handle.identity().process_id)
                except RegistryConflict:
                    if repeated:
                        # An earlier transaction of this message under the same IDE was refused
                        # (binding no ``tx:`` key) and holds the references this one would take:
                        # the IDE is not unique, as when that one had started (Z15).
                        detail = "used by an earlier transaction of its message"
                        return await self._used_before(tx, refusals, detail)
                    continue
            if rerouting:
                # Its interchange is routed again after a failure, and every spawn met the
                # references of this very transaction: decided then by a process that took no
                # ``tx:`` key (it refused it). (A competing trigger's claim is met and decided
                # on above, by routing again.)
                return _outcome(tx, "duplicate", detail="decided before its re-routing")
            raise RegistryConflict(f"PID {pid} {transaction.ide_ref}: competing triggers kept racing")
        except EngineError as exc:
            if exc.transient or exc.operational:
                raise  # the system's failure, not the transaction's: processed again later
            # The partner reads the FTX: the first line only (no validator dump, no links).
            summary = next(iter(str(exc).splitlines()), type(exc).__name__)[:200]
            return await self._refuse(tx, refusals, "Z35", f"not processable: {summary}", exc)

    async def _started_by(self, process: ProcessIdentity | None, interchange: Interchange) -> bool:
        """Whether ``process`` was started by ``interchange`` (its first event's correlation is
        the interchange's, ``context_for_inbound``): a crash cut that interchange's routing
        short after its transaction started it. ``None`` (the family did not say): assumed.
        One stream read; only when an interchange is routed again."""
        if process is None:
            return True
        first = await self._store.load_from(process.stream_id, 0, upto=1)
        return not first or first[0].correlation_id == _correlation(interchange.correlation_ref)

    async def _used_before(
        self, tx: InboundTransaction, refusals: list[dict[str, Any]], detail: str
    ) -> MessageOutcome:
        """Refuse a transaction whose IDE was used before (DOMAIN §5): APERAK Z15, an
        ``inbound-conflict`` dead letter where an operator looks."""
        interchange, transaction, pid = tx.interchange, tx.transaction, tx.pid
        reason = (
            f"transaction {transaction.ide_ref} (PID {pid}) from {interchange.sender.id} in "
            f"interchange {interchange.control_ref}: {detail}, not processed"
        )
        audit = _audit_of(interchange, tx.message, transaction)
        await self._dead_letter("inbound-conflict", reason, audit, tx.received_at)
        # Its sender is told (DOMAIN §2: every UTILMD is answered): a 312 for the first use must
        # not seem to cover this one. ERC Z15: "nicht eindeutig".
        text = f"transaction reference (IDE) {transaction.ide_ref} used before; not processed"
        refusals.append(_refusal(interchange, tx.message, transaction, tx.received_at, "Z15", text))
        return replace(_outcome(tx, "dead_letter", detail=reason), refused="Z15")

    async def _refuse(
        self, tx: InboundTransaction, refusals: list[dict[str, Any]], code: str, text: str, error: EngineError
    ) -> MessageOutcome:
        """Refuse one transaction: a negative APERAK (``code``) with the receipt, and a dead letter."""
        interchange, message, transaction = tx.interchange, tx.message, tx.transaction
        refusals.append(_refusal(interchange, message, transaction, tx.received_at, code, text))
        reason = f"{type(error).__name__}: {error}"
        audit = {**_audit_of(interchange, message, transaction), "error": error.to_plain()}
        await self._dead_letter("inbound", reason, audit, tx.received_at)
        return replace(_outcome(tx, "dead_letter", detail=reason), refused=code)

    async def _acknowledgement(
        self, tenant: TenantId, interchange: Interchange, message: Message, received_at: datetime
    ) -> MessageOutcome:
        """A CONTRL/APERAK on one of our interchanges: routed by our 0020 to the process that sent it."""
        values = _ack_values(interchange, message, received_at)
        if values is None:
            return await self._unhandled(interchange, message, received_at, None)
        try:
            for family in self._families:
                routed = family.acknowledgement(values)
                if routed is None:
                    continue
                key, command = routed
                identity = await self._store.lookup(tenant, key)
                if identity is None:
                    continue
                if identity.workflow_id.name == RECEIPT_WORKFLOW:  # an APERAK the pipeline sent
                    return await self._refusal_acknowledged(
                        identity, interchange, message, values, received_at
                    )
                handle = self._host.resume(identity)
                await handle.execute_and_enqueue_with(
                    command, self._context(handle, interchange.correlation_ref, received_at)
                )
                if not values["positive"]:
                    # The partner counts our message as not received: someone must correct and
                    # resend it, so say so where an operator looks (the event alone is silent).
                    log.warning(
                        "%s rejected our interchange %s (%s %s); process %s: the message counts as "
                        "not received (mako-actors processes timeline %s)",
                        values["sender"], values["referenced_interchange_ref"], message.message_type,
                        " ".join(values["codes"]) or "without code", identity.process_id, identity.process_id,
                    )  # fmt: skip
                return MessageOutcome(
                    message.reference, None, None, "routed", identity.process_id, message.message_type,
                    ack="accepted" if values["positive"] else "rejected",
                )
            ref = values["referenced_interchange_ref"]
            raise InvalidArgument(f"{message.message_type} refers to unknown interchange {ref!r}")
        except (EngineError, ValidationError) as exc:
            if isinstance(exc, EngineError) and (exc.transient or exc.operational):
                raise  # the system's failure, not the acknowledgement's: processed again later
            reason = f"{type(exc).__name__}: {exc}"
            await self._dead_letter("inbound", reason, _audit_of(interchange, message), received_at)
            return MessageOutcome(message.reference, None, None, "dead_letter", None, reason)

    async def _refusal_acknowledged(
        self,
        identity: ProcessIdentity,
        interchange: Interchange,
        message: Message,
        values: dict[str, Any],
        received_at: datetime,
    ) -> MessageOutcome:
        """The partner's CONTRL on a refusal APERAK of ours: recorded on the receipt stream that
        sent it (``RefusalAcknowledged``; refused, so a dead letter, when it is no CONTRL or not
        from that APERAK's recipient).

        A negative one is a dead letter as well: the partner counts our refusal as not received,
        so it still waits for an answer to its transaction, and only an operator can see that.
        """
        acknowledgement = RefusalAcknowledged(
            message_type=message.message_type,
            sender=values["sender"],
            referenced_interchange_ref=values["referenced_interchange_ref"],
            positive=values["positive"],
            codes=values["codes"],
            interchange_ref=interchange.control_ref,
            received_at=received_at,
            message_ref=message.reference,
        )
        handle = self._receipts.resume(identity)
        await handle.execute_and_enqueue_with(
            RecordAcknowledgement(acknowledgement=acknowledgement),
            self._context(handle, interchange.correlation_ref, received_at),
        )
        positive = acknowledgement.positive
        if not positive:
            codes = " ".join(acknowledgement.codes) or "without code"
            reason = (
                f"{acknowledgement.sender} rejected our APERAK {acknowledgement.referenced_interchange_ref} "
                f"(CONTRL 4, {codes}), which refused a transaction of theirs: they count the refusal as "
                "not received and still await an answer; correct and resend it "
                f"(mako-actors processes timeline {identity.process_id})"
            )
            await self._dead_letter("inbound", reason, _audit_of(interchange, message), received_at)
        return MessageOutcome(
            message.reference, None, None, "routed", identity.process_id, message.message_type,
            ack="accepted" if positive else "rejected",
        )  # fmt: skip

    async def _unhandled(
        self,
        interchange: Interchange,
        message: Message,
        received_at: datetime,
        refusals: list[dict[str, Any]] | None,
    ) -> MessageOutcome:
        """A message no workflow consumes, a dead letter: a UTILMD without transaction (IDE+24)
        gets APERAK Z29 (a Muss group is missing), a message of another type (MSCONS, INVOIC,
        ...: no process here handles it) APERAK Z31; an acknowledgement without reference
        gets none (no APERAK on an APERAK)."""
        reason = f"{message.message_type} {message.reference} has nothing a workflow handles"
        await self._dead_letter("inbound-unhandled", reason, _audit_of(interchange, message), received_at)
        refused = None
        if refusals is not None:
            if message.message_type == "UTILMD":
                refused, text = "Z29", f"UTILMD {message.reference}: no transaction (IDE+24)"
            else:
                refused = "Z31"
                text = f"{message.message_type} {message.reference}: no process of this partner handles it"
            refusals.append(_refusal(interchange, message, None, received_at, refused, text))
        return MessageOutcome(message.reference, message.pid, None, "dead_letter", None, reason, refused)

    async def _dead_letter(
        self, kind: str, reason: str, payload: dict[str, Any], received_at: datetime
    ) -> None:
        """Store a dead letter keyed by its content: the same letter again writes nothing.

        An interchange ingested again after a crash before it left the inbox (or before its
        receipt's ``InterchangeProcessed``) makes its letters again; each is stored once.
        """
        at = received_at if self._record_at_receipt else self._clock()
        stored = await self._store.add_dead_letter(
            DeadLetter(kind=kind, reason=reason, payload=payload, recorded_at=at).keyed()
        )
        if not stored.stored_before:
            self.dead_letters_written += 1


# -- helpers ---------------------------------------------------------------------------------


def _contrl_only(raw: bytes) -> bool:
    """Whether every message of an interchange the parser refused is a CONTRL, read leniently
    (UNH S009 of each complete message): it gets no CONTRL back either."""
    from mako_actors._partition import Scan

    kinds = {message.kind for message in Scan(raw).messages}
    return kinds == {b"CONTRL"}


def _following_interchange(raw: bytes) -> tuple[int, _Header | None] | None:
    """Where a further interchange begins after the first one in ``raw`` (a gateway's batch in
    one file; the first one ended by its UNZ or cut off before it) and its UNB values, read
    leniently (None: unreadable); None when nothing but blanks follows the first one."""
    from mako_actors._partition import Scan

    scan = Scan(raw)
    if scan.second >= 0:
        at = scan.second
    elif scan.unz_start >= 0:
        end = raw.find(scan.term, scan.unz_start)
        rest = raw[end + 1 :] if end >= 0 else b""
        at = len(raw) - len(rest.lstrip(b" \t\r\n"))
    else:
        # Cut off, and the next one has other service characters (its own UNA): the scan read
        # it with the first one's and never met a segment starting with UNA or UNB. Taken only
        # at a segment start of the first one and with a UNB that reads: a name such as "TUNA
        # GMBH UNBEKANNT" in a cut-off interchange is no further one.
        found = _following_at(raw, scan.head_end, scan.term, scan.rel) if scan.head_end else None
        if found is None:
            return None
        return found
    if not raw.startswith((b"UNA", b"UNB"), at):
        return None
    return at, _lenient_header(raw[at:])


def _following_at(raw: bytes, start: int, terminator: bytes, release: bytes) -> tuple[int, _Header] | None:
    """A UNA + UNB (its own service characters) or a UNB with the default ones right after a
    terminator (and blanks) of the text from ``start``, whose UNB reads; None if there is none.
    A released terminator (``?'`` in a name) is data, no segment end."""
    for found in _FOLLOWING.finditer(raw, start):
        at = found.start()
        before = raw[:at].rstrip(b" \t\r\n")
        if not before.endswith(terminator):
            continue
        run, i = 0, len(before) - 2
        while i >= 0 and before[i : i + 1] == release:
            run, i = run + 1, i - 1
        if run % 2:
            continue
        header = _lenient_header(raw[at:])
        if header is not None:
            return at, header
    return None


# A UNA (its six service characters, then the UNB) or a UNB with the default separators.
_FOLLOWING = re.compile(rb"UNA.{6}[ \t\r\n]*UNB|UNB\+UNO[A-Z]:", re.DOTALL)


# Positional constructors (every field, in declaration order) without the frozen dataclasses'
# ``object.__setattr__`` per field: one of each per transaction.
_inbound_transaction = positional_maker(InboundTransaction)
_message_outcome = positional_maker(MessageOutcome)


def _outcome(
    tx: InboundTransaction, kind: Outcome, process_id: ProcessId | None = None, detail: str = ""
) -> MessageOutcome:
    return _message_outcome(
        tx.message.reference,
        tx.pid,
        tx.transaction.ide_ref,
        kind,
        process_id,
        detail,
        None,  # refused
        None,  # ack
    )


def _refusal(
    interchange: Interchange,
    message: Message,
    transaction: Transaction | None,
    at: datetime,
    code: str,
    text: str,
) -> dict[str, Any]:
    """The APERAK 313 payload refusing one transaction (or message) we could not process.

    Its references derive from what it answers, so a re-run of the same interchange produces
    the identical APERAK: the message and the transaction's position in it, as an IDE may be
    missing or repeated in one message (each refusal must have its own 0020, 0062 and 1004).
    """
    ide = transaction.ide_ref if transaction is not None else ""
    seed = refusal_seed(interchange.sender.id, interchange.control_ref, message.reference, ide)
    # The first transaction's (and a whole message's) index stays 0: references of before.
    position = 0 if transaction is None else _position(message, transaction)
    ref = OutboundRef.derive(seed, position, "APERAK", interchange.sender.id)
    payload = AperakPayload.build(
        ref,
        interchange.recipient.id,
        at,
        interchange_ref=interchange.control_ref,
        referenced_date=interchange.prepared_at,
        document_number=message.document_number or message.reference,
        ide_ref=ide,
        errors=(AperakError(code=code, text=text[:500]),),
        message_ref=message.reference,
    )
    if not ide:  # no IDE to name: no RFF+TN (an empty one would be a syntax error of ours)
        payload = payload.model_copy(update={"referenced_transaction_ref": None})
    return payload.to_payload()


def _position(message: Message, transaction: Transaction) -> int:
    """Where ``transaction`` (one of ``message.transactions``, by identity) stands in it.

    By identity: two transactions with equal content (an IDE sent twice) are two positions.
    """
    return next(i for i, t in enumerate(message.transactions) if t is transaction)


def _version_errors(
    interchange: Interchange, fv: FormatVersion
) -> tuple[tuple[ContrlMessageError, str], ...]:
    """UCM lines (with the reason) for messages whose UNH version is not the one of ``fv``, the
    format version in force on the ÜT day (``edifact.versions``, AHB-FACTS §7).

    A message in a MIG version not in force cannot be checked against the MIG that applies, so
    it is a syntax-level rejection: CONTRL with ``UCM+<0062>+<S009 as received>+4+12+UNH``
    (0085 12: invalid value, in UNH), and the interchange counts as not received. Message
    types the version table does not know (no EDI@Energy type we handle) are not checked here;
    routing refuses them.
    """
    errors: list[tuple[ContrlMessageError, str]] = []
    for m in interchange.messages:
        if m.message_type not in _VERSIONED_TYPES:
            continue
        got = f"{m.version}:{m.release}:{m.agency}:{m.association_code}"
        reason = unh_mismatch(f"{m.message_type}:{got}", fv)
        if reason is not None:
            line = ContrlMessageError(
                message_ref=m.reference, message_type=f"{m.message_type}:{got}", code="12", segment="UNH"
            )
            errors.append((line, f"message {m.reference}: {reason}"))
    return tuple(errors)


_VERSIONED_TYPES = frozenset(t for table in UNH_VERSIONS.values() for t in table)


def _message_error(raw: bytes, error: EdifactError) -> tuple[ContrlMessageError, ...]:
    """The UCM line of a message-level defect, if any: in UNH or UNT (count, reference, a cut-off
    message), or a located segment or data element error in another segment of a message.

    AHB-FACTS §6: ``UCM+<0062>+<S009>+4+<0085>+UNH|UNT``, the S009 copied as received; an
    error elsewhere in the message is ``UCM+<0062>+<S009>+4`` with ``UCS+<position>`` and
    ``UCD+<0085>+<0098>[:<0104>]`` (Muss [9]). A segment the tokenizer could not split inside
    a message is ``UCS+<position>+<0085>`` (``_unsplit_segment_error``), and so is an error of a
    whole segment the parser names (a UTILMD BGM with too many data elements: 16).
    """
    if _unsplit(error):
        return _unsplit_segment_error(raw, error)
    # A message without its UNT is reported where the parser met the UNH or UNZ that cut it
    # off: the line names the message before that segment, 0013 UNT.
    cut_off = error.expected == "UNT" and error.segment_tag in ("UNH", "UNZ", None)
    # An error the parser names a segment of, but no element in it, with a code a UCS may carry.
    whole_segment = (
        error.element is None and error.segment_tag is not None and error.syntax_error_code in _UCS_CODES
    )
    in_body = (error.element is not None or whole_segment) and error.segment_tag not in _ENVELOPE_TAGS
    envelope_error = error.segment_tag in ("UNT", "UNH") or cut_off
    if not (envelope_error or in_body) or error.segment_number is None:
        return ()
    try:
        segments = tokenize(*_text_of(raw))
    except (EdifactError, ValueError, IndexError):
        return ()
    if in_body and segments[min(error.segment_number, len(segments)) - 1].tag in _ENVELOPE_TAGS:
        return ()  # e.g. a bad byte in UNB or UNH (the error names no tag): the UCI carries it
    unh: Segment | None = None
    unh_number = 0
    last = error.segment_number - 1 if cut_off else error.segment_number
    for k in range(min(last, len(segments)) - 1, -1, -1):
        tag = segments[k].tag
        if tag == "UNH":
            unh, unh_number = segments[k], k + 1
            break
        if in_body and tag in ("UNT", "UNB", "UNZ"):
            return ()  # the segment stands outside any message: the UCI carries the error
    if unh is None or not unh.value(0) or not unh.value(1) or not _fits_a_ucm(unh):
        # No reference or S009 to name it by, or one our CONTRL could not carry (the defect is
        # its length): the UCI carries the error.
        return ()
    message_ref, message_type = unh.value(0), ":".join(unh.components(1))
    if in_body:
        position = error.segment_number - unh_number + 1
        if error.element is None:
            failed_segment = ContrlSegmentError(position=position, error_code=error.syntax_error_code)
        else:
            element, component = error.element
            failed = ContrlDataElementError(
                error_code=error.syntax_error_code, element=element, component=component
            )
            failed_segment = ContrlSegmentError(position=position, elements=(failed,))
        return (
            ContrlMessageError(
                message_ref=message_ref, message_type=message_type, segment_error=failed_segment
            ),
        )
    if not envelope_error:
        return ()
    where: Literal["UNH", "UNT"] = "UNT" if error.segment_tag == "UNT" or cut_off else "UNH"
    return (
        ContrlMessageError(
            message_ref=message_ref, message_type=message_type, code=error.syntax_error_code, segment=where
        ),
    )


def _unsplit(error: EdifactError) -> bool:
    """Whether the tokenizer refused a segment it could not split (an invalid tag, an empty
    segment, a dangling release, an unterminated end): such an error names no tag or element."""
    return isinstance(error, EdifactSyntaxError) and error.segment_tag is None and error.element is None


def _unsplit_segment_error(raw: bytes, error: EdifactError) -> tuple[ContrlMessageError, ...]:
    """The UCM line of a segment the tokenizer refused inside a message (between its UNH and
    UNT): ``UCS+<position>+<0085>``, or ``+22+UNT`` for a dangling release in the UNT.

    None (the UCI carries the error) when the segment stands outside any message, when the
    message's UNH cannot be copied, or for the unterminated end of a cut-off interchange: the
    interchange's defect, not one message's. The parser's 0085 is ISO 9735's for the
    interchange (18 "unspecified" for a bad tag); a UCS takes 13, 15, 16, 22, 35 or 36 only
    (AHB-FACTS §6), so it is mapped here: a dangling release is 22 "invalid service character"
    (the release character used with nothing to release); an invalid tag (``loc``, ``LOCX``)
    and an empty segment (``''``) are 15 "not supported in this position", a segment the
    message does not allow where it stands. Not 13 "missing": on a UCS it says a mandatory
    segment is absent, which sends the sender looking for a segment it did not leave out.
    """
    number = error.segment_number
    if number is None:
        return ()
    try:
        text, delimiters = _text_of(raw)
        cut = _cut_before(text, delimiters, number)
        if cut is None:
            return ()
        before = tokenize(cut[0], delimiters)
    except (EdifactError, ValueError, IndexError):
        return ()
    segment = cut[1].lstrip("\r\n")
    if len(before) != number - 1 or _segment_end(segment, delimiters.terminator, delimiters.release) < 0:
        return ()  # no terminator after it: a cut-off interchange, the UCI's
    for k in range(len(before) - 1, -1, -1):
        tag = before[k].tag
        if tag in ("UNT", "UNB", "UNZ"):
            return ()  # outside any message
        if tag == "UNH":
            unh, unh_number = before[k], k + 1
            break
    else:
        return ()
    if not unh.value(0) or not unh.value(1) or not _fits_a_ucm(unh):
        return ()
    ref, kind = unh.value(0), ":".join(unh.components(1))
    dangling = isinstance(error, DanglingRelease)
    if dangling and segment.startswith("UNT" + delimiters.element):
        # In UNT itself: AHB-FACTS §6 names an error in UNH/UNT on the UCM line, not by a UCS.
        return (ContrlMessageError(message_ref=ref, message_type=kind, code="22", segment="UNT"),)
    failed = ContrlSegmentError(position=number - unh_number + 1, error_code="22" if dangling else "15")
    return (ContrlMessageError(message_ref=ref, message_type=kind, segment_error=failed),)


def _cut_before(text: str, delimiters: Delimiters, number: int) -> tuple[str, str] | None:
    """``text`` cut before segment ``number`` (UNB = 1) as the tokenizer counts segments: the
    segments before it (their terminators included) and the rest; None if there are fewer."""
    terminator, release = delimiters.terminator, delimiters.release
    end = -1
    for _ in range(number - 1):
        end = text.find(terminator, end + 1)
        while end > 0 and released(text, end, release):
            end = text.find(terminator, end + 1)
        if end < 0:
            return None
    return text[: end + 1], text[end + 1 :]


def _text_of(raw: bytes) -> tuple[str, Delimiters]:
    r"""The interchange's text after the UNA and its service characters, decoded by its charset;
    a charset we do not take, or a byte outside it, read as Latin-1 (one character per byte):
    the UNB is ASCII, so its sender can still be told (CONTRL 4, 0085 2 or 21), and an error's
    message found around the offending byte. Raises the other ``EdifactError``\ s of ``decode``."""
    try:
        decoded = decode(raw)
        return decoded.text, decoded.delimiters
    except (UnsupportedCharset, InvalidCharacter):
        delimiters, start = delimiters_of(raw)
        return trim_trailing_blanks(raw[start:].decode("latin-1"), delimiters), delimiters


def _fits_a_ucm(unh: Segment) -> bool:
    """Whether a UNH's 0062 and S009 are within their lengths and hold no control character, so a
    UCM line can copy them."""
    try:
        check_lengths(unh, 0)
    except EdifactError:
        return False
    return not has_control(unh.value(0), *unh.components(1))


#: The 0085 codes a UCS line may carry (AHB-FACTS §6); a located error of a whole segment with
#: one of them is named there.
_UCS_CODES = frozenset({"13", "15", "16", "22", "35", "36"})
#: Segments whose errors are the interchange's or a message envelope's, never a UCS line.
_ENVELOPE_TAGS = frozenset({"UNA", "UNB", "UNZ", "UNH", "UNT"})


def _log_result(result: IngestResult) -> None:
    """One line per interchange, and one per transaction that did not reach a process."""
    level = logging.INFO if result.status in ("accepted", "duplicate") else logging.WARNING
    if log.isEnabledFor(level):  # else spare the counts (once per interchange)
        detail = result.error or result.counts()
        log.log(level, "interchange %s: %s %s", result.interchange_ref, result.status, detail)
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
        # AHB-FACTS §6: an interchange-level 0085 sits on UCI, a message-level one on its UCM
        # line (UCM+<0062>+<S009>+4+<0085>+UNH|UNT) with a UCI that carries no code.
        ucms = by_tag.get("UCM", [])
        # Codes of the UCS/UCD lines too: an error inside a message is named only there.
        inner = (*(u.value(1) for u in by_tag.get("UCS", [])), *(u.value(0) for u in by_tag.get("UCD", [])))
        codes = tuple(c for c in (uci[0].value(4), *(u.value(3) for u in ucms), *inner) if c)
        # 0083 4 rejects; 7 (accepted) and 8 (received only) do not (DOMAIN §1): a rejected
        # message counts as not received, which stops a deemed LFA agreement.
        return base | {
            "referenced_interchange_ref": uci[0].value(0),
            "positive": uci[0].value(3) != "4" and not any(u.value(2) == "4" for u in ucms),
            "codes": codes,
            "messages": tuple(u.value(0) for u in ucms if u.value(0)),  # our UNH 0062 each names
        }
    refs: dict[str, list[str]] = {}
    for segment in by_tag.get("RFF", []):
        if segment.value(0, 1):
            refs.setdefault(segment.value(0, 0), []).append(segment.value(0, 1))
    ace = refs.get("ACE")
    if not ace:
        return None
    return base | {
        "referenced_interchange_ref": ace[0],
        "positive": message.document_code == "312",
        "codes": tuple(s.value(0) for s in by_tag.get("ERC", [])),
        # What in our interchange it names (AHB-FACTS §5): RFF+ACW our UNH 0062, RFF+AGO our BGM
        # 1004, RFF+TN our IDE.
        "messages": tuple(refs.get("ACW", ())),
        "documents": tuple(refs.get("AGO", ())),
        "transactions": tuple(refs.get("TN", ())),
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


@functools.lru_cache(maxsize=256)
def _tenant_of(mp_id: str) -> TenantId:
    """``TenantId.from_party_id``, cached: our few tenants' uuid5 once, not per interchange."""
    return TenantId.from_party_id(mp_id)


def _tenant_or_placeholder(mp_id: str) -> TenantId:
    """The tenant of an MP-ID; a malformed one (a rejected interchange) gets a stable stand-in."""
    try:
        return _tenant_of(mp_id)
    except InvalidArgument:
        return TenantId(uuid.uuid5(_RECEIPT_NAMESPACE, f"unknown-party:{mp_id}"))


#: UNB sender, recipient, 0020, and the sender's and recipient's qualifiers as received.
_Header = tuple[str, str, str, str, str]
#: Routings of one transaction that lost a race for a registry key to a concurrent trigger,
#: before it is refused (APERAK Z35): the others waited 2, 8, 32 and 128 ms for the winner.
_RACE_TRIES = 5
_UCI_SEGMENTS: dict[str | None, Literal["UNA", "UNB", "UNZ"]] = {"UNA": "UNA", "UNB": "UNB", "UNZ": "UNZ"}


def _uci_segment(error: EdifactError) -> Literal["UNA", "UNB", "UNZ"] | None:
    """0013 of an interchange-level error on UCI: UNA, UNB or UNZ (AHB-FACTS §6), if it is one.

    A missing UNZ names UNZ; an error in another segment (a stray one, a truncated file) names
    none, and UCI carries the 0085 alone.
    """
    return _UCI_SEGMENTS.get(error.segment_tag) or ("UNZ" if error.expected == "UNZ" else None)


def _lenient_header(raw: bytes) -> _Header | None:
    """Sender, recipient, 0020 and the two qualifiers from a UNB that parses even if the rest
    does not.

    Only the UNB segment is tokenized, so a truncated or garbled tail still leaves the sender
    identifiable (and answerable by CONTRL).
    """
    try:
        text, delimiters = _text_of(raw)
        text = text.lstrip("\r\n")
        end = _segment_end(text, delimiters.terminator, delimiters.release)
        if end < 0:
            return None
        for segment in tokenize(text[: end + 1], delimiters):
            if segment.tag == "UNB":
                sender, recipient, ref = segment.value(1), segment.value(2), segment.value(4)
                # Values a CONTRL cannot carry (0004/0010 an..35, 0020 an..14, a control character:
                # the partner's syntax check would refuse our CONTRL) get none: a dead letter.
                fits = 0 < len(sender) <= 35 and 0 < len(recipient) <= 35 and 0 < len(ref) <= 14
                qualifiers = segment.value(1, 1), segment.value(2, 1)
                if fits and not has_control(sender, recipient, ref, *qualifiers):
                    return (sender, recipient, ref, *qualifiers)
                return None
            return None
    except (EdifactError, ValueError, IndexError):
        return None
    return None


def _segment_end(text: str, terminator: str, release: str | None) -> int:
    """Index of the first segment terminator not escaped by the release character (-1: none)."""
    i = 0
    while i < len(text):
        c = text[i]
        if release and c == release:
            i += 2
            continue
        if c == terminator:
            return i
        i += 1
    return -1
