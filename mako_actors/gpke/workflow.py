"""The GPKE supplier change (LFW24) on the grid operator's (NB) side, as a pure workflow.

Triggers: 55001/55077 (Anmeldung) and 55004 (Abmeldung), each starting its own process;
answers: 55011/55012 from the LFA (routed by ``ide:<RFF+TN>``); the 09:00 WT1 expiry of the
LFA's answer (``LfaAnswerDeadlinePassed``, from ``on_deadline``). Per command:

1. APERAK checks of the message against the AHB rules of its own PID (``validation.AHB_RULES``,
   AHB-FACTS §2–§4: e.g. 55011/55012 have no SG5), MaLo check digit, MP-IDs, day-boundary
   dates, references. A failure sends APERAK 313 and records ``InboundRejected``: the message
   counts as not received, starts no step, sets no Frist and registers no business key.
   Otherwise APERAK 312 goes out.
2. E_0622 (Anmeldung), in the EBD's order: a missed Vorlauffrist (A07; generating MaLo:
   A34/A30/A35 by Geschäftsvorfall, after A45; GV3 starting on the 1st of a month: one month,
   A44; an EEG/KWKG MaLo: the 1st of a month and one month, A27/A28 and A31/A32, 5 WT out of
   the Ausfallvergütung, A29, GV3 one month, A44), the MaLo's master data (out of market
   communication A02, a Neuanlage A04/A21, a generating MaLo without ¼-h metering A24), the
   LF's requirements (A05/A25) or a competing Anmeldung of the MaLo that is being worked on and
   not yet answered (A06; A45 generating; E_0622 step 70: a supplier already confirmed for the
   same date is the LFA asked in step 3, ``GpkeConfig.confirmed_assignment_blocks``), is
   answered at once with
   55003/55080; the process ends. Otherwise the process claims the MaLo
   (``malo_key`` and a ``claimed`` fact in the MaLo's supply journal, ``gpke.supply``).
3. With an LFA: 55036 to the LFN and 55010 to the LFA, and a Frist ``lfa_answer`` at 09:00 WT1.
   Its answer (or its silence, ``LfaDeemedToAgree``) leads to E_0623: 55002/55078 (55002 STS+7
   #2: ZW6/ZW7 from the MaLo's master data, ``MaloMeasurementKnown``, else
   ``GpkeConfig.malo_measurement``), 55037 to the LFA and a 55038 to each LFZ whose later
   assignment it cancels; or, on objection
   (E_0624 A30/A41 are none), 55003/55080 with STS+Z35. Without an LFA the decision follows
   at once. An answer received after 09:00 but handled before the timer fired counts as
   silence: the Frist is decided first, at its instant. If the LFA rejected our 55010 by then
   (CONTRL 4 / APERAK 313 from the LFA on its interchange, received by 09:00 whenever it is
   handled), the 55010 counts as not received, so 09:00 deems nothing: ``LfaNotReached``,
   status ``awaiting_operator``, nothing sent, until an operator's ``DeemLfaAgreement`` (as if
   the LFA agreed) or ``RejectAnmeldung`` (55003/55080 with A99 and the operator's text);
   meanwhile the NB's own answer Frist (11:00 WT1) is a timer ``decision``, whose expiry
   records ``DecisionOverdue`` (the process still waits; a late decision still answers).
   A Geschäftsvorfall 3 (55077 ZW2) asks the MaLo's supplier also when that is the sender
   (E_0622 step 830: "an alle LFA und an den Anmeldenden"; no 55036 then) and takes E_0623
   steps 500-600: the LFA objecting is 55080 A53; otherwise ``TrancheFormationAwaited``,
   status ``awaiting_operator``, nothing sent, until an operator's ``FormTranche`` (55078
   A56/A55 naming the new Tranche and its share) or ``RejectTrancheRequest`` (55080 A54); no
   55037, and the claim is released either way.
   The decision is a ``started`` or ``released`` fact in the supply journal, in the
   same commit. A befristete Anmeldung (STS+7 #3, ``FixedTermRequested``) is confirmed for
   its term only: the fact ends at its DTM+93, which the 55002 repeats with #3.
4. 55004: the sender must hold an assignment the Abmeldung can end (else APERAK Z17); E_0607
   at once: 55005 (A11, an ``ended`` fact with the reason), or 55006 (A02 end not after the
   ÜT). An Aufhebung einer zukünftigen Zuordnung (STS+7 ZG9/ZH1/ZH2) names the start it
   cancels (DTM+92); ZH2 at another date gets A06. A ZAP Abmeldung ending a supply that no
   ZAP Anmeldung started (the journal's ``started`` fact) gets A01 (steps 20/30), before the
   Vorlauffrist. "Ende der ESV ohne Folgelieferung" (Z41)
   without an Ersatz-/Grundversorgung begun in the 3 months before the end (the MaLo's master
   data) gets A05 (step 80). Ended at that date already: steps 110-130
   by the new reason and the earlier end's (A09, A10, or A11 for a move-out after a Kündigung).
   An erzeugende MaLo or a Tranche (STS+7 #2 ZW3/ZW5) takes steps 500-620: 55006 with A21 (not
   the 1st of a month), A22 (less than a month ahead), A23 (ZH2 not at the confirmed start),
   A25/A26 (ended at that date already, steps 590-610), else 55005 with A27.

CONTRL is per interchange, not per process, so ingestion sends it (``build_contrl_payload``).
Answers go out in the command that decides them, well before their Frist; every Frist is still
computed and stored in the triggering event (with table and calendar versions) for audit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from mako_actors.deadlines import Deadline, PendingDeadline
from mako_actors.edifact.versions import sending_format_version
from mako_actors.envelope import utc
from mako_actors.errors import WorkflowError
from mako_actors.gpke._models import positional, unvalidated, updated
from mako_actors.gpke.calendar import (
    esv_began_within,
    is_midnight_berlin,
    is_month_start,
    month_vorlauffrist_met,
    uet,
    vorlauffrist_met,
    werktage_vorlauffrist_met,
)
from mako_actors.gpke.codes import DEFAULT_CODES, CodeTable, Ebd, Reason
from mako_actors.gpke.commands import (
    DecisionDeadlinePassed,
    DeemLfaAgreement,
    FormTranche,
    InboundUtilmd,
    LfaAnswerDeadlinePassed,
    ProductPackage,
    ReceiveAbmeldung,
    ReceiveAcknowledgement,
    ReceiveAnmeldung,
    ReceiveLfaAnswer,
    RejectAnmeldung,
    RejectTrancheRequest,
)
from mako_actors.gpke.errors import UnsupportedFormatVersion
from mako_actors.gpke.events import (
    ALL_EVENTS,
    AbmeldungDecided,
    AbmeldungReceived,
    AcknowledgementReceived,
    AnmeldungDecided,
    AnmeldungReceived,
    AnmeldungRejectedAtOnce,
    AnmeldungRejectedByOperator,
    DecisionOverdue,
    ErrorItem,
    FixedTermRequested,
    InboundInfo,
    InboundRejected,
    KundenanlageKnown,
    LateLfaAnswerIgnored,
    LaterSupply,
    LfaAgreementDeemedByOperator,
    LfaAnswered,
    LfaConsulted,
    LfaDeemedToAgree,
    LfaNotReached,
    MaloMeasurementKnown,
    TrancheFormationAwaited,
    TrancheFormedByOperator,
    TrancheKnown,
    TrancheRequested,
    TrancheRequestRejectedByOperator,
)
from mako_actors.gpke.fristen import (
    DEFAULT_ACK_WINDOWS,
    DEFAULT_FRISTEN,
    AckWindows,
    FristenTable,
    canonical_fv,
)
from mako_actors.gpke.keys import ide_key, interchange_key, malo_key, transaction_key
from mako_actors.gpke.payloads import AperakError, OutboundRef, aperak_payload, utilmd_payload
from mako_actors.gpke.state import GpkeState, Status
from mako_actors.gpke.supply import fact_entry, supply_key
from mako_actors.gpke.validation import (
    AHB_RULES,
    AUFHEBUNG_REASONS,
    AhbFinding,
    MpIdCheck,
    abmeldung_date,
    check_mp_id,
    check_transaction,
    fixed_term_end,
    is_tranche,
    is_valid_malo_id,
    lfa_objects,
    object_location,
)
from mako_actors.outbox import PendingOutbox
from mako_actors.version import FormatVersion
from mako_actors.workflow import Event, Workflow, WorkflowOutput

__all__ = ["DECISION_DEADLINE", "LFA_ANSWER_DEADLINE", "WORKFLOW_NAME", "GpkeConfig", "GpkeNbWorkflow"]

WORKFLOW_NAME = "gpke-nb"
LFA_ANSWER_DEADLINE = "lfa_answer"
#: 11:00 WT1, the NB's Frist for its answer to the LFN: a timer only while an operator decides.
DECISION_DEADLINE = "decision"


@dataclass(frozen=True)
class GpkeConfig:
    """Tables and settings of the workflow: all configuration, none of it read from a clock."""

    fristen: FristenTable = DEFAULT_FRISTEN
    codes: CodeTable = DEFAULT_CODES
    ack_windows: AckWindows = DEFAULT_ACK_WINDOWS
    mp_id_check: MpIdCheck = MpIdCheck.WARN
    #: False (E_0622 step 70: only an Anmeldung "in Arbeit" and "noch nicht beantwortet"
    #: competes, S3 FV2504-FV2610): an Anmeldung for a date at which another supplier's
    #: Anmeldung was already confirmed asks that supplier as the LFA at that date (55036 to the
    #: LFN, 55010 to it); on agreement or silence it gets 55037 ending its assignment at its own
    #: start, on objection the LFN gets 55003 A50. True: rejected by E_0622 with A06/A45 (DTM+Z08
    #: the receipt), at every retry, so that date stays the first supplier's whatever it says.
    confirmed_assignment_blocks: bool = False
    #: STS+7 C556#2 of a 55002 (AHB-FACTS §3: ZW6 pauschale / ZW7 gemessene MaLo, or ZAP for a
    #: ruhende one) when the Anmeldung did not say ZAP, for a MaLo whose master data do not say
    #: it (``Suppliers.measurement``, the command's ``malo_measurement``): the NB's default †.
    malo_measurement: Literal["ZW6", "ZW7"] = "ZW7"


#: STS+7 #2 of a 55004 for which E_0607 step 10 says "neither verbrauchend nor ruhend":
#: erzeugende MaLo (ZW3) and Tranche (ZW5); ZW4, ZAP and a missing #2 take the consuming path.
_NOT_CONSUMING = frozenset({"ZW3", "ZW5"})
#: E_0607 step 120: Transaktionsgründe that say the customer moved out (E01 Ein-/Auszug, Z33
#: Auszug wegen Stilllegung). Steps 130 / 610: the reasons of an earlier confirmed end that do
#: not (ZT4/ZT5 Kündigung durch LF / Kunde, Z41 Ende der ESV, ZH2 Aufhebung wegen aufgehobenem
#: Vertragsverhältnis, ZQ7/ZT0 fehlende Zuordnungsermächtigung of the NB's 55007); step 610 of
#: a generating MaLo or Tranche lists them without Z41. Codes: UTILMD AHB 55004/55007 FV2504.
_MOVED_OUT = frozenset({"E01", "Z33"})
_NOT_MOVED_OUT = frozenset({"ZT4", "ZT5", "Z41", "ZH2", "ZQ7", "ZT0"})
_NOT_MOVED_OUT_GENERATING = _NOT_MOVED_OUT - {"Z41"}
_ESV_END = "Z41"  # STS+7 #1 of a 55004: Ende der ESV ohne Folgelieferung (E_0607 steps 70/80)
_ABMELDUNG_APPROVED = frozenset({Reason.ABMELDUNG_APPROVED, Reason.ABMELDUNG_APPROVED_GENERATING})


def _seed(cmd: InboundUtilmd) -> str:
    return f"{cmd.sender}:{cmd.interchange_ref}:{cmd.message_ref}:{cmd.ide_ref}"


def _refs(event: Event) -> list[OutboundRef]:
    """The outbound references an event stores, in field order (a tuple field's in its order).

    Every one counts in ``sent``: a reference missed here is handed out again to the next
    message (its 0020, 0062 and document number sent twice).
    """
    values = event.__dict__  # every field of a model instance is in it
    refs: list[OutboundRef] = []
    for name in _ref_fields(type(event)):
        value = values[name]
        if isinstance(value, OutboundRef):
            refs.append(value)
        elif isinstance(value, tuple):
            refs.extend(v for v in value if isinstance(v, OutboundRef))
    return refs


@functools.cache
def _ref_fields(event_type: type[Event]) -> tuple[str, ...]:
    """The fields of ``event_type`` that may hold an ``OutboundRef`` (by annotation), in order;
    cached per type: ``apply`` runs for every event and most fields never hold one."""
    return tuple(
        name
        for name, info in event_type.model_fields.items()
        if info.annotation is Any or "OutboundRef" in repr(info.annotation)
    )


@dataclass
class _Out:
    """One command's output under construction; events are applied as they are emitted."""

    workflow: GpkeNbWorkflow
    state: GpkeState
    seed: str
    own_id: str
    at: datetime
    pending: int = 0
    events: list[Event] = field(default_factory=list)
    outbox: list[PendingOutbox] = field(default_factory=list)
    deadlines: list[PendingDeadline] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)  # supply facts as stored

    def ref(
        self, message_type: Literal["UTILMD", "APERAK"], recipient: str, pid: str | None = None
    ) -> OutboundRef:
        ref = _derive(self.seed, self.state.sent + self.pending, message_type, recipient, pid)
        self.pending += 1
        self.keys.append(interchange_key(ref.interchange_ref))
        if ref.ide_ref is not None:
            self.keys.append(ide_key(ref.ide_ref))
        return ref

    def send(self, ref: OutboundRef, payload: dict[str, Any]) -> None:
        """Enqueue ``payload`` (the dump of a ``UtilmdPayload``/``AperakPayload``) for ``ref``."""
        self.outbox.append(_pending(ref.message_type, ref.recipient, payload))

    def utilmd(self, recipient: str, pid: str, **transaction: Any) -> OutboundRef:
        ref = self.ref("UTILMD", recipient, pid)
        state = self.state
        tranche_malo = state.tranche_malo
        if tranche_malo is not None and "malo" in transaction:
            # The process's object is a Tranche: LOC+Z21 (STS+Z35 ZW5 / RFF+Z20 in a 55080);
            # the 55078 names its MaLo too (LOC+Z16 Muss [2061]).
            transaction["tranche"] = transaction.pop("malo")
            if pid == "55078":
                transaction["malo"] = tranche_malo
                # SG8 Z15 "Daten der Tranche" (Muss [477]), as the master data say
                transaction["tranche_basis"] = state.tranche_basis
                transaction["tranche_percent"] = state.tranche_percent
        elif pid == "55002" and state.transaction_detail == "ZAP" and "malo" in transaction:
            # A ruhende MaLo: LOC+Z22, and the Kundenanlage's MaLo LOC+Z16 ([2003] ∧ [96], [2061])
            transaction["resting_malo"] = transaction.pop("malo")
            if state.kundenanlage_malo is not None:
                transaction["malo"] = state.kundenanlage_malo
            if state.kundenanlage_netzlokationen:  # LOC+Z18 and SG8 ZD7 (Muss [96] ∧ [688])
                transaction["netzlokationen"] = state.kundenanlage_netzlokationen
        transaction.setdefault("trigger_pid", state.pid)  # STS+7 derives from it (§3)
        transaction.setdefault("measurement", state.malo_measurement or self.workflow.config.malo_measurement)
        # Command and state values were validated on the way in: no second validation, and
        # the payload is built as the plain data it is stored as (no models to dump).
        self.send(ref, utilmd_payload(ref, self.own_id, self.at, **transaction))
        return ref

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.state = self.workflow._fold(self.state, event)
        self.pending = 0

    def output(self) -> WorkflowOutput:
        journal: tuple[tuple[str, dict[str, Any]], ...] = ()
        if self.journal:
            key = supply_key(self.malo)
            journal = tuple((key, entry) for entry in self.journal)
        return _output(  # every field of ``WorkflowOutput``, in its order
            tuple(self.events),  # events
            tuple(self.outbox),  # outbox
            tuple(self.deadlines),  # deadlines
            tuple(self.cancel),  # cancel_deadlines
            tuple(dict.fromkeys(self.keys)),  # register_keys
            journal,  # journal
        )

    @property
    def malo(self) -> str:
        assert self.state.malo is not None, "supply facts need the process's MaLo"
        return self.state.malo


_INITIAL = GpkeState()
# The makers of what every command builds, looked up once.
_pending = PendingOutbox.of_plain  # our payload builders make plain data
# Read once: an attribute of a model or enum class goes through its metaclass's ``__getattr__``
# hook (~1k instructions each), and these are read by every command and every fold.
_derive = OutboundRef.derive
_info_of = InboundInfo.of
_NEW, _NOT_RECEIVED, _AWAITING_LFA = Status.NEW, Status.NOT_RECEIVED, Status.AWAITING_LFA
_AWAITING_OPERATOR = Status.AWAITING_OPERATOR
_CONFIRMED, _REJECTED = Status.CONFIRMED, Status.REJECTED
_output = positional(WorkflowOutput)  # once per command
_deadline = unvalidated(PendingDeadline)
_NAME_PART = 70  # the length of a C080 3036 (party name), an..70 (UN D.11A)
_PACKAGE_ID = 10  # the length of a SEQ 1050 (a Produktpaket-ID in SEQ+Z79), an..10 (UN D.11A)


class GpkeNbWorkflow(Workflow[BaseModel, GpkeState]):
    """The NB side of LFW24 (55001/55077, 55004 and the LFA consultation); see the module doc."""

    name = WORKFLOW_NAME
    # 2: the trigger's STS+7 (transaction_reason/_detail) in the state; 3: every 55038 of a
    # decision counted in ``sent``/``outbound`` (a snapshot of 2 missed all but the first); 4:
    # ``handled`` (a snapshot of 3 lacks the answers it handled: one routed again was applied)
    state_schema_version = 4
    events = ALL_EVENTS

    def __init__(self, config: GpkeConfig | None = None) -> None:
        self.config = config or GpkeConfig()
        # The states ``handle`` already folded, by event (see ``apply``); a few at a time.
        self._folded: dict[int, tuple[GpkeState, Event, GpkeState]] = {}
        # Whether ``config``'s tables cover a format version (asked by every trigger).
        self._supported: dict[FormatVersion, bool] = {}

    def initial_state(self) -> GpkeState:
        """The empty state: one shared instance (frozen, all its values immutable)."""
        return _INITIAL

    # -- commands ----------------------------------------------------------------------------

    def handle(self, state: GpkeState, command: BaseModel) -> WorkflowOutput:
        if isinstance(command, ReceiveAnmeldung):
            return self._anmeldung(state, command)
        if isinstance(command, ReceiveAbmeldung):
            return self._abmeldung(state, command)
        if isinstance(command, ReceiveLfaAnswer):
            return self._lfa_answer(state, command)
        if isinstance(command, LfaAnswerDeadlinePassed):
            return self._lfa_silent(state, command)
        if isinstance(command, ReceiveAcknowledgement):
            return self._acknowledgement(state, command)
        if isinstance(command, DeemLfaAgreement):
            return self._operator_deems(state, command)
        if isinstance(command, DecisionDeadlinePassed):
            return self._decision_overdue(state, command)
        if isinstance(command, RejectAnmeldung):
            return self._operator_rejects(state, command)
        if isinstance(command, FormTranche):
            return self._operator_forms_tranche(state, command)
        if isinstance(command, RejectTrancheRequest):
            return self._operator_rejects_tranche_request(state, command)
        raise WorkflowError.rejected(f"{self.name}: unknown command {type(command).__name__}")

    def _acknowledgement(self, state: GpkeState, cmd: ReceiveAcknowledgement) -> WorkflowOutput:
        """Record a CONTRL/APERAK on one of our interchanges; it may arrive after the decision.

        Only the interchange's recipient acknowledges it: an acknowledgement from anyone else
        is refused (it would otherwise make our 55010 count as not received in their name).
        """
        referenced = cmd.referenced_interchange_ref
        key = _ack_key(cmd.sender, cmd.interchange_ref, cmd.message_type, referenced, cmd.message_ref)
        if _seen(state, key):
            return WorkflowOutput()  # routed again (its interchange re-routed): recorded already
        sent = [ref for ref in state.outbound if ref.interchange_ref == referenced]
        if not sent:
            raise WorkflowError.rejected(
                f"{self.name}: {cmd.message_type} refers to interchange {cmd.referenced_interchange_ref}, "
                "which this process did not send"
            )
        recipients = {ref.recipient for ref in sent}
        if cmd.sender not in recipients:
            raise WorkflowError.rejected(
                f"{self.name}: {cmd.message_type} from {cmd.sender} refers to interchange "
                f"{cmd.referenced_interchange_ref}, which went to {', '.join(sorted(recipients))}"
            )
        if cmd.message_type == "APERAK" and sent[0].message_type != "UTILMD":
            # An APERAK answers a UTILMD only (AHB-FACTS §5; a CONTRL answers an APERAK): as a
            # rejection it would make our APERAK count as not received.
            raise WorkflowError.rejected(
                f"{self.name}: APERAK from {cmd.sender} refers to our {sent[0].message_type} "
                f"{referenced}: only a CONTRL answers an {sent[0].message_type}"
            )
        named = (
            ("message", cmd.messages, {ref.message_ref for ref in sent}),
            ("document", cmd.documents, {ref.document_number for ref in sent}),
            ("transaction", cmd.transactions, {ref.ide_ref for ref in sent if ref.ide_ref}),
        )
        for what, given, ours in named:
            foreign = [value for value in given if value not in ours]
            if foreign:
                # It acknowledges something we did not send in that interchange: applied, it
                # would make our message count as not received (or received) in its name.
                raise WorkflowError.rejected(
                    f"{self.name}: {cmd.message_type} from {cmd.sender} on our interchange {referenced} "
                    f"names {what} {', '.join(foreign)}, which that interchange does not hold"
                )
        # (Recorded whenever it comes: whether a rejection of our 55010 stops the deemed
        # agreement at 09:00 goes by its receipt instant, ``_rejected_lfa_request``; deciding
        # the Frist here would step over one a node holds back for an older file.)
        ack = cmd.model_dump(exclude={"kind", *_NAMED_REFERENCES})
        return WorkflowOutput.of(AcknowledgementReceived(**ack))

    def on_deadline(self, deadline: Deadline, state: GpkeState) -> BaseModel | None:
        """09:00 WT1 without an LFA answer → ``LfaAnswerDeadlinePassed``; 11:00 WT1 still
        awaiting an operator → ``DecisionDeadlinePassed``; anything else passes."""
        if deadline.label == LFA_ANSWER_DEADLINE and state.status is _AWAITING_LFA:
            return LfaAnswerDeadlinePassed(due_at=deadline.due_at)
        if deadline.label == DECISION_DEADLINE and state.status is _AWAITING_OPERATOR:
            return DecisionDeadlinePassed(due_at=deadline.due_at)
        return None

    def _start(self, state: GpkeState, cmd: InboundUtilmd) -> _Out:
        if state.status is not _NEW:
            raise WorkflowError.invalid_state(
                f"{self.name}: PID {cmd.pid} starts a process, but this one is {state.status.value}; "
                "route triggers to a new process"
            )
        fv = cmd.format_version
        supported = self._supported.get(fv)
        if supported is None:
            tables = self.config
            supported = self._supported[fv] = tables.fristen.supports(fv) and tables.codes.supports(fv)
        if not supported:
            raise UnsupportedFormatVersion(f"{self.name}: no Fristen/code tables for {fv.short}")
        return _Out(self, state, _seed(cmd), cmd.recipient, cmd.received_at)

    def _anmeldung(self, state: GpkeState, cmd: ReceiveAnmeldung) -> WorkflowOutput:
        out = self._start(state, cmd)
        fv = canonical_fv(cmd.format_version)
        errors, warnings = self._check_message(cmd, fv)
        if cmd.zuordnungsbeginn is not None and not is_midnight_berlin(cmd.zuordnungsbeginn):
            errors.append(
                self._error(
                    fv, Reason.FORMAT_NOT_KEPT, "Zuordnungsbeginn (DTM+92) is not 00:00 Europe/Berlin"
                )
            )
        # A befristete Anmeldung (STS+7 #3 of the PID's rule, which made DTM+93 Muss): its end.
        until = fixed_term_end(cmd.pid, cmd.fixed_term_reason, cmd.zuordnungsende)
        if until is not None and not errors:
            assert cmd.zuordnungsbeginn is not None
            if not is_midnight_berlin(until):
                text = "Zuordnungsende (DTM+93) is not 00:00 Europe/Berlin"
                errors.append(self._error(fv, Reason.FORMAT_NOT_KEPT, text))
            elif until <= cmd.zuordnungsbeginn:
                text = f"Zuordnungsende (DTM+93) {until} is not after Zuordnungsbeginn {cmd.zuordnungsbeginn}"
                errors.append(self._error(fv, Reason.DATE_IMPLAUSIBLE, text))
        if errors:
            return self._reject_inbound(out, cmd, errors)
        if cmd.transaction_detail == "ZAP":
            warnings += _unnamed_netzlokationen(cmd)
        assert cmd.zuordnungsbeginn is not None and cmd.malo is not None  # AHB rule of 55001/55077
        current = cmd.current_supplier
        # E_0622 step 830: a Geschäftsvorfall 3's share is not free where a supplier holds the
        # MaLo, and the Anfrage goes "an alle LFA und an den Anmeldenden": also to the sender
        # when it holds the MaLo itself (else E_0623 steps 520-540, A54/A55, are not reached).
        gv3 = cmd.pid == "55077" and cmd.transaction_detail == "ZW2"
        lfa = current if current is not None and (current != cmd.sender or gv3) else None
        # Every LFZ whose assignment a confirmation cancels (the sender's own later one it
        # replaces: no 55038 to itself); a caller that names only ``future_supplier``: that one.
        lfz_more: tuple[tuple[str, datetime], ...] = ()
        if cmd.later_suppliers:
            superseded = [(party, start) for party, start in cmd.later_suppliers if party != cmd.sender]
            lfz, lfz_start = superseded[0] if superseded else (None, None)
            lfz_more = tuple(superseded[1:])
        else:
            lfz = cmd.future_supplier if cmd.future_supplier not in (None, cmd.sender) else None
            lfz_start = cmd.future_supplier_start if lfz else None
        aperak = self._aperak(out, cmd, ())
        fristen = self.config.fristen.compute(fv, cmd.pid, cmd.received_at)
        # E_0622 step 60/260 over the Produktpakete (decided below, in the EBD's order)
        planned, unmet = _planned_package(cmd.product_packages)
        out.emit(
            unvalidated(AnmeldungReceived)(
                inbound=_info_of(cmd),
                generating=cmd.pid == "55077",
                zuordnungsbeginn=cmd.zuordnungsbeginn,
                transaction_reason=cmd.transaction_reason,
                transaction_detail=cmd.transaction_detail,
                lfa=lfa,
                lfz=lfz,
                lfz_start=lfz_start,
                lfz_more=tuple(LaterSupply(supplier=party, start=start) for party, start in lfz_more),
                warnings=tuple(warnings),
                aperak=aperak,
                aperak_due=self.config.ack_windows.aperak_due(cmd.received_at),
                ack_windows_version=self.config.ack_windows.version,
                fristen=fristen,
                product_package=None if planned is None else planned.id,
                **_metering(cmd),
            )
        )
        if cmd.malo_measurement is not None:
            out.emit(unvalidated(MaloMeasurementKnown)(measurement=cmd.malo_measurement))
        if cmd.tranche_malo is not None and is_tranche(cmd.pid, cmd.transaction_detail):
            tranche = {"malo": cmd.tranche_malo, "basis": cmd.tranche_basis, "percent": cmd.tranche_percent}
            out.emit(unvalidated(TrancheKnown)(**tranche))
        if cmd.requested_share is not None and cmd.pid == "55077" and cmd.transaction_detail == "ZW2":
            out.emit(unvalidated(TrancheRequested)(share=cmd.requested_share))
        if cmd.kundenanlage_malo is not None and cmd.transaction_detail == "ZAP":
            known = unvalidated(KundenanlageKnown)
            out.emit(known(malo=cmd.kundenanlage_malo, netzlokationen=cmd.kundenanlage_netzlokation_msbs))
        if until is not None and cmd.fixed_term_reason is not None:
            out.emit(unvalidated(FixedTermRequested)(zuordnungsende=until, reason=cmd.fixed_term_reason))
        out.keys.append(transaction_key(cmd.sender, cmd.ide_ref))
        # E_0622 in the EBD's order (AHB-FACTS §4): the Vorlauffrist (step 15, A07) first, then a
        # ruhende MaLo and its Kundenanlage (16-28: A36, A09, A47, A08, A37, A46), the MaLo out of
        # market communication (30, A02), a Neuanlage (50, A04; 220, A21 first for a generating
        # MaLo), its ¼-h metering (250, A24), the LF's requirements (60, A05; 260, A25 before a
        # generating MaLo's lead times), the competing Anmeldung (70, A06; 270, A45) last.
        reason = remark = None
        competing = Reason.COMPETING_PROCESS_GENERATING if cmd.pid == "55077" else Reason.COMPETING_PROCESS
        assigned = cmd.assigned_at_start if self.config.confirmed_assignment_blocks else None
        if assigned == cmd.sender:
            # Its own confirmed start is no other Anmeldung "in Arbeit" (E_0622 step 70): the
            # sender supplies from then on, so it is confirmed again, with no LFA to ask.
            assigned = None
        z07 = z08 = None
        if cmd.pid == "55077":  # erz.: the lead time of its Geschäftsvorfall, checked last
            lead_time = _generating_lead_time(cmd, cmd.zuordnungsbeginn)
            late = False
        else:
            lead_time = None
            late = not vorlauffrist_met(cmd.received_at, cmd.zuordnungsbeginn)
        new_installation = (
            cmd.malo_in_operation_from is not None and cmd.malo_in_operation_from > cmd.received_at
        )
        out_of_market = (
            cmd.malo_out_of_market_from is not None and cmd.malo_out_of_market_from <= cmd.zuordnungsbeginn
        )
        if late:  # (a 55001's only: a 55077's lead time is ``lead_time``, checked last)
            reason = Reason.VORLAUFFRIST_MISSED  # verbr.: step 15 comes first
        elif cmd.transaction_detail == "ZAP" and (resting := _resting_malo(cmd, fv)) is not None:
            reason = resting  # steps 16-28
        elif out_of_market and cmd.pid == "55001":
            reason = Reason.NOT_IN_MARKET_COMMUNICATION  # step 30
        elif new_installation:  # step 50 (verbr.) / 220 (erz., its first)
            generating = cmd.pid == "55077"
            reason = Reason.NEW_INSTALLATION_GENERATING if generating else Reason.NEW_INSTALLATION
        elif cmd.pid == "55077" and cmd.malo_quarter_hour_metering is False:
            reason = Reason.NO_QUARTER_HOUR_METERING  # step 250 (erz.): no ¼-h metering
        elif unmet is not None:
            generating = cmd.pid == "55077"
            reason = Reason.REQUIREMENTS_UNMET_GENERATING if generating else Reason.REQUIREMENTS_UNMET
            remark = unmet  # "die Abweichungen sind zu benennen": FTX+ACB, Muss with A05/A25
        elif cmd.competing_process:
            reason, z07, z08 = competing, cmd.competing_start, cmd.competing_next_date
            if z08 is None or z08 < cmd.received_at:
                # The competing claim's Frist has passed and it still waits (an operator's
                # decision): "from when Anmeldungen are taken again" is no instant in the past.
                z08 = cmd.received_at
        elif assigned is not None:
            # (``confirmed_assignment_blocks``) Confirmed for this very date already: that start
            # counts as "in Bearbeitung" until it happens; other dates are taken now (DTM+Z08).
            reason, z07, z08 = competing, cmd.zuordnungsbeginn, cmd.received_at
        elif lead_time is not None:
            reason = lead_time  # erz.: A45 (step 270) first, then steps 400-440, 600-630, 800-810
        if reason is not None:
            code = self.config.codes.code_for(fv, Ebd.REJECT_AT_ONCE, reason)
            answer = out.utilmd(
                cmd.sender,
                _answer_pid(cmd.pid, False),
                start=cmd.zuordnungsbeginn,
                answer_code=code,
                answer_ebd=Ebd.REJECT_AT_ONCE,
                request_ref=cmd.ide_ref,
                processing_start=z07,
                next_processing_date=z08,
                trigger_reason=cmd.transaction_reason,
                trigger_detail=cmd.transaction_detail,
                remark=remark,
            )
            out.emit(
                unvalidated(AnmeldungRejectedAtOnce)(
                    ebd=Ebd.REJECT_AT_ONCE,
                    code=code,
                    reason=reason,
                    answer=answer,
                    processing_start=z07,
                    next_processing_date=z08,
                    assigned_supplier=assigned if reason == competing and not cmd.competing_process else None,
                    remark=remark,
                )
            )
            return out.output()
        out.keys.append(malo_key(cmd.malo, cmd.malo_key_generation))
        out.journal.append(
            fact_entry(
                kind="claimed",
                supplier=cmd.sender,
                at=cmd.zuordnungsbeginn,
                process=out.seed,
                due=fristen.due.get("decision"),
            )
        )
        if lfa is None:
            self._decide_anmeldung(out, confirmed=True)
            return out.output()
        # 55036 informs the LFN of another supplier holding the MaLo (DOMAIN §3 step 5).
        info = None if lfa == cmd.sender else out.utilmd(
            cmd.sender,
            "55036",
            malo=cmd.malo,
            start=cmd.zuordnungsbeginn,
            request_ref=cmd.ide_ref,
            other_party_id=lfa,
        )
        request = out.utilmd(
            lfa,
            "55010",
            malo=cmd.malo,
            end=cmd.zuordnungsbeginn,
            anmeldung_uet=uet(cmd.received_at),
            trigger_reason=cmd.transaction_reason,
            trigger_detail=cmd.transaction_detail,
            # NAD+Z09 of a 55001 (S1 55010 [279]: with ZW4/ZAP only; a 55077 has no SG12 at all)
            customer_name=cmd.customer_name if cmd.pid == "55001" else None,
            other_party_id=cmd.sender,  # NAD+VY: the LFN (S1 55010 [567])
        )
        due = fristen.due[LFA_ANSWER_DEADLINE]
        out.emit(unvalidated(LfaConsulted)(lfa=lfa, info=info, request=request, answer_due=due))
        out.deadlines.append(
            # ``PendingDeadline(...)`` without validating our own values again: the only thing it
            # would do is store the instant as UTC (``AwareUtc``).
            _deadline(
                label=LFA_ANSWER_DEADLINE,
                due_at=utc(due),
                payload={"pid": "55010", "request_ide": request.ide_ref, "lfa": lfa},
            )
        )
        return out.output()

    def _decide_anmeldung(
        self,
        out: _Out,
        *,
        confirmed: bool,
        remark: str | None = None,
        formed: TrancheFormedByOperator | None = None,
        share_not_free: bool = False,
    ) -> None:
        """E_0623: confirm, or reject because the LFA objected; with ``remark`` (an operator's
        rejection) A99 "Sonstiges" with that text in FTX+ACB. A Geschäftsvorfall 3 takes steps
        500-600: the LFA objecting is A53; else it waits for an operator to form the Tranche
        (``formed``: A56/A55) or find its share not free (``share_not_free``: A54)."""
        s = out.state
        assert s.format_version and s.pid and s.lfn and s.request_ide
        gv3 = _is_gv3(s)
        if gv3 and confirmed and formed is None:
            # No message names the new Tranche's ID and share: nothing goes out until the NB
            # has formed it (and no A58, which E_0623 gives GV1/GV2 only).
            _await_operator(out, TrancheFormationAwaited())
            return
        if formed is not None:
            shares_missing = formed.shares_missing
            reason = Reason.GV3_TRANCHE_FORMED_SHARES_MISSING if shares_missing else Reason.GV3_TRANCHE_FORMED
        elif confirmed:
            reason = Reason.APPROVED_GENERATING if s.generating else Reason.APPROVED_CONSUMING
        elif remark is not None:
            reason = Reason.OTHER_REJECTION
        elif share_not_free:
            reason = Reason.GV3_SHARE_NOT_FREE
        elif gv3:
            reason = Reason.GV3_NO_AGREEMENT  # step 510: the supplier asked did not agree
        else:
            reason = Reason.LFA_OBJECTED_GENERATING if s.generating else Reason.LFA_OBJECTED_CONSUMING
        code = self.config.codes.code_for(s.format_version, Ebd.DECIDE_ANMELDUNG, reason)
        # STS+Z35 repeats the LFA's objection (A50/A57 only, AHB 55003 [356] / 55080 [84]).
        lfa_code = None if confirmed or remark is not None or gv3 else s.lfa_code
        # The 55002 of a befristete Anmeldung repeats its end and STS+7 #3 (AHB 55002 [10]).
        fixed_term: dict[str, Any] = (
            {"end": s.zuordnungsende, "transaction_reason_fixed_term": s.fixed_term_reason}
            if confirmed and s.fixed_term_reason is not None
            else {}
        )
        # A 55002 for a gemessene (ZW7) or ruhende MaLo, and every 55078, names the MaLo's MSB
        # and Messlokationen (55002: LOC+Z17 Muss [96] ⊻ [483], SG10 of SG8 Z98 Muss [483];
        # 55078: both Muss), when master data name them.
        measurement = s.malo_measurement or self.config.malo_measurement
        measured = s.generating or measurement == "ZW7" or s.transaction_detail == "ZAP"
        metering: dict[str, Any] = (
            {"msb": s.msb, "msb_role": s.msb_role, "gmsb": s.gmsb, "messlokationen": s.messlokationen or None}
            if confirmed and measured and s.msb is not None
            else {}
        )
        answer = out.utilmd(
            s.lfn,
            _answer_pid(s.pid, confirmed),
            # 55002/55078 carry LOC+Z16; 55003/55080 have no SG5 (AHB-FACTS §2, the renderer
            # leaves it out), and 55080 names the MaLo in STS+Z35 C556#2 DE9012 (§3)
            malo=s.malo,
            start=s.zuordnungsbeginn,
            answer_code=code,
            answer_ebd=Ebd.DECIDE_ANMELDUNG,
            request_ref=s.request_ide,
            lfa_answer_code=lfa_code,
            lfa_answer_ebd=Ebd.LFA_ANSWER if lfa_code else None,
            # ... and names the objecting LFA in SG12 NAD+VY (55003 [363], 55080 [84]; [566])
            other_party_id=s.lfa if lfa_code else None,
            # STS+7 of the answer repeats the Anmeldung's (AHB-FACTS §3), kept in the state
            trigger_reason=s.transaction_reason,
            trigger_detail=s.transaction_detail,
            remark=remark,
            # RFF+Z60 of a 55002/55078: the Produktpaket the NB plans (S1 FV2504, Muss)
            product_package=s.product_package if confirmed else None,
            **fixed_term,
            **metering,
            # GV3: the new Tranche (LOC+Z21 Muss [478]) and its share (SG8 Z15 Muss [478])
            **(
                {"tranche": formed.tranche, "tranche_basis": "ZD1", "tranche_percent": formed.percent}
                if formed is not None
                else {}
            ),
        )
        assert s.zuordnungsbeginn is not None
        if gv3:
            # The MaLo's claim ends; who supplies the new Tranche is the NB's master data from now
            # on (its ``tranche_of`` entry), and the LFA keeps the rest of the MaLo: no 55037.
            out.journal.append(fact_entry(kind="released", process=s.seed))
        elif confirmed:
            # A befristete Anmeldung's supply ends at its DTM+93 (``zuordnungsende``).
            out.journal.append(
                fact_entry(
                    kind="started",
                    supplier=s.lfn,
                    at=s.zuordnungsbeginn,
                    until=s.zuordnungsende,
                    process=s.seed,
                    resting=s.transaction_detail == "ZAP",  # (E_0607 step 30 asks it later)
                )
            )
        else:
            out.journal.append(fact_entry(kind="released", process=s.seed))
        termination = cancellation = None
        if confirmed and s.lfa is not None and not gv3:
            termination = out.utilmd(
                s.lfa, "55037", malo=s.malo, end=s.zuordnungsbeginn, trigger_detail=s.transaction_detail
            )
        cancellations: list[OutboundRef] = []
        if confirmed and s.lfz is not None and not gv3:
            for party, start in ((s.lfz, s.lfz_start), *s.lfz_more):
                cancellations.append(
                    out.utilmd(
                        party,
                        "55038",
                        malo=s.malo,
                        start=start,
                        other_party_id=s.lfn,
                        trigger_reason=s.transaction_reason,  # E01 (Einzug): ZG9, else ZH0
                        trigger_detail=s.transaction_detail,
                    )
                )
            cancellation = cancellations[0]
        out.emit(
            unvalidated(AnmeldungDecided)(
                confirmed=confirmed,
                ebd=Ebd.DECIDE_ANMELDUNG,
                code=code,
                reason=reason,
                lfa_code=lfa_code,
                answer=answer,
                termination=termination,
                future_cancellation=cancellation,
                more_cancellations=tuple(cancellations[1:]),
            )
        )

    def _lfa_answer(self, state: GpkeState, cmd: ReceiveLfaAnswer) -> WorkflowOutput:
        if state.kind != "anmeldung" or state.lfa_request_ide is None or state.own_id is None:
            raise WorkflowError.invalid_state(
                f"{self.name}: LFA answer {cmd.ide_ref} reached a process that sent no 55010"
            )
        if _seen(state, _answer_key(cmd.sender, cmd.interchange_ref, cmd.message_ref, cmd.ide_ref)):
            # This very transaction again: its interchange was routed again after an ingest that
            # failed midway (a store or a host down). It was decided and answered then.
            return WorkflowOutput()
        fv = state.format_version or canonical_fv(cmd.format_version)
        out = _Out(self, state, state.seed, state.own_id, cmd.received_at)
        # Checked by the rules of its own PID (55011/55012: no SG5, RFF+TN and an E_0624 code),
        # never by the trigger's (AHB-FACTS §2).
        errors, warnings = self._check_message(cmd, fv)
        if cmd.sender != state.lfa:
            errors.append(
                self._error(
                    fv, Reason.SENDER_NOT_ASSIGNED, f"{cmd.sender} is not the supplier asked by 55010"
                )
            )
        if cmd.request_ref != state.lfa_request_ide:
            errors.append(
                self._error(fv, Reason.ID_UNKNOWN, f"RFF+TN {cmd.request_ref} names no 55010 of ours")
            )
        if errors:
            return self._reject_inbound(out, cmd, errors)
        due = state.lfa_answer_due
        if state.status is _AWAITING_LFA and due is not None and cmd.received_at > due:
            # Received after 09:00 but handled before the timer fired: the receipt instant
            # decides, so this is silence, not an answer. Decided as the Frist would have, at
            # its instant and first (the same messages, stamps and references as a replay's,
            # or a node's that ran at 09:00), then this answer is ignored as a late one.
            self._silence(out, due, cancel=True)
            out.at = cmd.received_at
            aperak = self._aperak(out, cmd, ())
            out.emit(unvalidated(LateLfaAnswerIgnored)(inbound=_info_of(cmd), aperak=aperak))
            return out.output()
        aperak = self._aperak(out, cmd, ())
        if state.status is not _AWAITING_LFA:
            # After 09:00 (or a repeat): the process moved on; later answers are ignored.
            out.emit(unvalidated(LateLfaAnswerIgnored)(inbound=_info_of(cmd), aperak=aperak))
            return out.output()
        # E_0623 (AHB-FACTS §4): a 55012 with A30/A41 counts as no objection; A43 always stands.
        # Not in a Geschäftsvorfall 3: step 510 asks whether a request was agreed to, and A41
        # is an Ablehnung (the A41 exception is step 440's, of GV1/GV2).
        confirmed = cmd.pid == "55011" or not lfa_objects(
            cmd.answer_code, generating=state.generating, new_tranche=_is_gv3(state)
        )
        end, asked = cmd.zuordnungsende, state.zuordnungsbeginn
        if end is not None and asked is not None and end != asked:
            # E_0624 lets the LFA end earlier (A34; A36/A40 "oder davor liegenden Termin"); E_0623
            # decides on the code alone, and the journal keeps the end asked. A gap before the
            # LFN's start needs an Ersatz-/Grundversorgung: recorded for the operator to see.
            text = f"the LFA's DTM+93 {end.isoformat()} is not the end our 55010 asked ({asked.isoformat()})"
            warnings.append(text)
        out.emit(
            unvalidated(LfaAnswered)(
                inbound=_info_of(cmd),
                confirmed=confirmed,
                code=cmd.answer_code,
                aperak=aperak,
                warnings=tuple(warnings),
                end=end,
            )
        )
        out.cancel.append(LFA_ANSWER_DEADLINE)
        self._decide_anmeldung(out, confirmed=confirmed)
        return out.output()

    def _lfa_silent(self, state: GpkeState, cmd: LfaAnswerDeadlinePassed) -> WorkflowOutput:
        if state.status is not _AWAITING_LFA or state.own_id is None:
            return WorkflowOutput()  # answered meanwhile: nothing to compensate
        out = _Out(self, state, state.seed, state.own_id, cmd.due_at)
        self._silence(out, cmd.due_at, cancel=False)
        return out.output()

    def _silence(self, out: _Out, due: datetime, *, cancel: bool) -> None:
        """The LFA's silence at 09:00 (``due``), decided at that instant: deemed agreement, or,
        when the LFA rejected our 55010 by then (an acknowledgement received before it), nothing
        but ``LfaNotReached``. ``cancel``: decided before the timer fired (its Frist goes)."""
        out.at = due
        if cancel:
            out.cancel.append(LFA_ANSWER_DEADLINE)
        rejected = _rejected_lfa_request(out.state, due)
        if rejected is not None:
            # The LFA counts our 55010 as not received (DOMAIN §2): its silence agrees to
            # nothing, and ending its supply on it would be a wrong decision. An operator decides.
            _not_reached(out, due, rejected)
            return
        out.emit(unvalidated(LfaDeemedToAgree)(due_at=due))
        self._decide_anmeldung(out, confirmed=True)

    def _operator(self, state: GpkeState, cmd: _OperatorDecision) -> _Out:
        """The output of an operator's decision, stamped ``cmd.decided_at``; ``WorkflowError``
        unless the process awaits one (its 55010 was rejected and 09:00 passed, or a
        Geschäftsvorfall 3 awaits its Tranche) and, for a Tranche's decisions, is a GV3."""
        if state.status is not _AWAITING_OPERATOR or state.own_id is None:
            raise WorkflowError.invalid_state(
                f"{self.name}: {type(cmd).__name__} is for a process awaiting an operator; this one is "
                f"{state.status.value}"
            )
        tranche_decision = isinstance(cmd, FormTranche | RejectTrancheRequest)
        if tranche_decision != _is_gv3(state) and not isinstance(cmd, RejectAnmeldung):
            raise WorkflowError.invalid_state(
                f"{self.name}: {type(cmd).__name__} is not for this process: "
                + (
                    "a Geschäftsvorfall 3 goes on by its Tranche (FormTranche, RejectTrancheRequest)"
                    if _is_gv3(state)
                    else "only a Geschäftsvorfall 3 (55077 STS+7 ZW2) asks for a new Tranche"
                )
            )
        return _Out(self, state, state.seed, state.own_id, cmd.decided_at)

    def _operator_forms_tranche(self, state: GpkeState, cmd: FormTranche) -> WorkflowOutput:
        out = self._operator(state, cmd)
        if cmd.tranche == state.malo:
            # The 55078 names the MaLo by LOC+Z16 and the new Tranche by LOC+Z21 ([478]).
            raise WorkflowError.rejected(
                f"{self.name}: the new Tranche needs an ID of its own, not its MaLo's ({state.malo})"
            )
        if cmd.shares_missing and state.lfa_request_ide is None:
            # E_0623 step 500: no supplier was asked, so steps 520-540 (A55) are not reached.
            raise WorkflowError.rejected(
                f"{self.name}: no supplier of the MaLo was asked (E_0623 step 500): the Tranche is "
                "formed without missing shares (A56), or the Anmeldung rejected (A99)"
            )
        percent = cmd.percent or state.requested_share
        if percent is None:
            raise WorkflowError.rejected(
                f"{self.name}: the Anmeldung named no share (SG8 Tranchengröße): give the percentage formed"
            )
        formed = TrancheFormedByOperator(
            decided_at=cmd.decided_at,
            tranche=cmd.tranche,
            percent=percent,
            shares_missing=cmd.shares_missing,
            reason=cmd.reason,
        )
        out.emit(formed)
        out.cancel.append(DECISION_DEADLINE)
        self._decide_anmeldung(out, confirmed=True, formed=formed)
        return out.output()

    def _operator_rejects_tranche_request(
        self, state: GpkeState, cmd: RejectTrancheRequest
    ) -> WorkflowOutput:
        out = self._operator(state, cmd)
        if state.lfa_request_ide is None:
            # E_0623 step 500: no supplier was asked, so step 520's A54 is not reached.
            raise WorkflowError.rejected(
                f"{self.name}: no supplier of the MaLo was asked (E_0623 step 500), so no share can "
                "have stayed taken (A54): form the Tranche (A56) or reject the Anmeldung (A99)"
            )
        out.emit(TrancheRequestRejectedByOperator(decided_at=cmd.decided_at, reason=cmd.reason))
        out.cancel.append(DECISION_DEADLINE)
        self._decide_anmeldung(out, confirmed=False, share_not_free=True)
        return out.output()

    def _operator_deems(self, state: GpkeState, cmd: DeemLfaAgreement) -> WorkflowOutput:
        out = self._operator(state, cmd)
        out.emit(LfaAgreementDeemedByOperator(decided_at=cmd.decided_at, reason=cmd.reason))
        out.cancel.append(DECISION_DEADLINE)
        self._decide_anmeldung(out, confirmed=True)
        return out.output()

    def _operator_rejects(self, state: GpkeState, cmd: RejectAnmeldung) -> WorkflowOutput:
        out = self._operator(state, cmd)
        # A99 may be sent until the end its EBD version names (AHB-FACTS §4): the answer goes out
        # under the format version in force at the decision.
        sending = sending_format_version(cmd.decided_at)
        codes = self.config.codes
        if not codes.supports(sending):
            raise UnsupportedFormatVersion(f"{self.name}: no code table for {sending.short}")
        end = codes.usable_until_day(sending, Ebd.DECIDE_ANMELDUNG, "A99")
        if end is not None and uet(cmd.decided_at) >= end:  # ``uet``: the Berlin day
            raise WorkflowError.rejected(
                f"{self.name}: E_0623 A99 may be sent before {end:%d.%m.%Y} under {sending.short}, "
                f"not at {cmd.decided_at.isoformat()}; only deeming the LFA's agreement is left"
            )
        out.emit(AnmeldungRejectedByOperator(decided_at=cmd.decided_at, text=cmd.text))
        out.cancel.append(DECISION_DEADLINE)
        self._decide_anmeldung(out, confirmed=False, remark=cmd.text)
        return out.output()

    def _decision_overdue(self, state: GpkeState, cmd: DecisionDeadlinePassed) -> WorkflowOutput:
        if state.status is not _AWAITING_OPERATOR:
            return WorkflowOutput()  # decided meanwhile
        return WorkflowOutput.of(DecisionOverdue(due_at=cmd.due_at))

    def _abmeldung(self, state: GpkeState, cmd: ReceiveAbmeldung) -> WorkflowOutput:
        out = self._start(state, cmd)
        fv = canonical_fv(cmd.format_version)
        errors, warnings = self._check_message(cmd, fv)
        aufhebung = cmd.transaction_reason in AUFHEBUNG_REASONS
        # The instant the sender's supply ends: DTM+93, or an Aufhebung's DTM+92 (never begins).
        end = abmeldung_date(cmd.transaction_reason, cmd.zuordnungsbeginn, cmd.zuordnungsende)
        date = "Zuordnungsbeginn (DTM+92)" if aufhebung else "Zuordnungsende (DTM+93)"
        if end is not None and not is_midnight_berlin(end):
            errors.append(self._error(fv, Reason.FORMAT_NOT_KEPT, f"{date} is not 00:00 Europe/Berlin"))
        if not errors and cmd.current_supplier != cmd.sender and not cmd.already_ended:
            # Not a case of E_0607: the sender is not assigned to the MaLo at that date (APERAK
            # ERC Z17, AHB-FACTS §5); the Abmeldung counts as not received.
            held = f"from {end}" if aufhebung else f"up to {end}"
            errors.append(
                self._error(
                    fv, Reason.SENDER_NOT_ASSIGNED, f"{cmd.sender} does not supply MaLo {cmd.malo} {held}"
                )
            )
        if errors:
            return self._reject_inbound(out, cmd, errors)
        assert end is not None  # AHB rule of 55004 (DTM+93, or DTM+92 of an Aufhebung)
        aperak = self._aperak(out, cmd, ())
        out.emit(
            unvalidated(AbmeldungReceived)(
                inbound=_info_of(cmd),
                zuordnungsende=end,
                current_supplier=cmd.current_supplier,
                warnings=tuple(warnings),
                aperak=aperak,
                aperak_due=self.config.ack_windows.aperak_due(cmd.received_at),
                ack_windows_version=self.config.ack_windows.version,
                fristen=self.config.fristen.compute(fv, cmd.pid, cmd.received_at),
            )
        )
        out.keys.append(transaction_key(cmd.sender, cmd.ide_ref))
        # ZH2 (aufgehobenes Vertragsverhältnis) must name the start confirmed to the LF (steps
        # 90 / 570); ZG9 / ZH1 are not asked that by the EBD.
        wrong_start = cmd.transaction_reason == "ZH2" and not cmd.cancels_start
        still_assigned = cmd.still_assigned  # steps 110 / 590
        if cmd.transaction_detail in _NOT_CONSUMING:  # E_0607 step 10 → 500 (EBD 4.1, S3)
            if not is_month_start(end):
                reason = Reason.ABMELDUNG_NOT_MONTH_START  # step 500 (A21)
            elif not month_vorlauffrist_met(cmd.received_at, end):
                reason = Reason.ABMELDUNG_MONTH_VORLAUFFRIST  # step 520 (A22)
            elif wrong_start:
                reason = Reason.AUFHEBUNG_NOT_CONFIRMED_START_GENERATING  # step 570 (A23)
            elif not cmd.already_ended:
                reason = Reason.ABMELDUNG_APPROVED_GENERATING  # step 580 → 620 (A27)
            elif still_assigned and cmd.transaction_reason != "Z33":
                reason = Reason.ABMELDUNG_ALREADY_ENDED_GENERATING  # step 590 → 600 (A25)
            elif cmd.ended_reason in _NOT_MOVED_OUT_GENERATING:
                reason = Reason.ABMELDUNG_APPROVED_GENERATING  # step 610 → 620 (A27)
            else:
                reason = Reason.ABMELDUNG_ENDED_SAME_REASON_GENERATING  # step 610 (A26)
        elif cmd.transaction_detail == "ZAP" and cmd.malo_resting is False:
            reason = Reason.ABMELDUNG_NOT_RESTING  # steps 20/30 (A01)
        elif not uet(cmd.received_at) < uet(end):
            reason = Reason.ABMELDUNG_NOT_FORWARD  # step 50 (A02)
        elif wrong_start:
            reason = Reason.AUFHEBUNG_NOT_CONFIRMED_START  # step 90 (A06)
        elif cmd.transaction_reason == _ESV_END and not _esv_began(cmd.malo_esv_from, end):
            reason = Reason.ABMELDUNG_NO_RECENT_ESV  # step 80 (A05)
        elif not cmd.already_ended or still_assigned:
            reason = Reason.ABMELDUNG_APPROVED  # step 100 / 110 → 140 (A11)
        elif cmd.transaction_reason not in _MOVED_OUT:
            reason = Reason.ABMELDUNG_ALREADY_ENDED  # step 120 (A09)
        elif cmd.ended_reason in _NOT_MOVED_OUT:
            reason = Reason.ABMELDUNG_APPROVED  # step 130 → 140 (A11): now we know they moved out
        else:
            reason = Reason.ABMELDUNG_ENDED_SAME_REASON  # step 130 (A10)
        confirmed = reason in _ABMELDUNG_APPROVED
        if confirmed:
            out.journal.append(
                fact_entry(
                    kind="ended", supplier=cmd.sender, at=end, process=out.seed, reason=cmd.transaction_reason
                )
            )
        code = self.config.codes.code_for(fv, Ebd.ABMELDUNG, reason)
        # 55005 repeats the date as the 55004 had it (DTM+92 of an Aufhebung, else DTM+93); a
        # 55006 has no SG4 date (AHB UTILMD 55005 [7] [11], 55006).
        dates = {} if not confirmed else {"start": end} if aufhebung else {"end": end}
        answer = out.utilmd(
            cmd.sender,
            "55005" if confirmed else "55006",  # neither has an SG5 (AHB-FACTS §2)
            answer_code=code,
            answer_ebd=Ebd.ABMELDUNG,
            request_ref=cmd.ide_ref,
            trigger_reason=cmd.transaction_reason,
            **dates,
        )
        out.emit(
            unvalidated(AbmeldungDecided)(
                confirmed=confirmed, ebd=Ebd.ABMELDUNG, code=code, reason=reason, answer=answer
            )
        )
        return out.output()

    # -- APERAK ------------------------------------------------------------------------------

    def _error(self, fv: str, reason: str, text: str) -> ErrorItem:
        return ErrorItem(code=self.config.codes.code_for(fv, Ebd.APERAK, reason), reason=reason, text=text)

    def _check_message(self, cmd: InboundUtilmd, fv: str) -> tuple[list[ErrorItem], list[str]]:
        """APERAK-level findings (errors reject the message) and warnings (recorded only)."""
        errors: list[ErrorItem] = []
        warnings: list[str] = []
        if cmd.repeated:
            # Which MaLo, date or answer was meant is unknown: nothing to decide on.
            text = f"{', '.join(cmd.repeated)} sent more than once; the AHB allows each once"
            errors.append(self._error(fv, Reason.REPETITION_EXCEEDED, text))
        if cmd.missing_header:
            # Muss in every UTILMD (AHB-FACTS §1; DOMAIN §4: NAD+MS/MR name the parties the UNB
            # names): without them no message says who sends what to whom, and when.
            text = f"{', '.join(cmd.missing_header)} missing in the message header"
            errors.append(self._error(fv, Reason.MISSING_DATA, text))
        header_date = dict(cmd.malformed_dates).get("137") if cmd.malformed_dates else None
        if header_date is not None:
            # The message date: format 303 only (UTILMD MIG), a value that parses.
            text = f"DTM+137:{header_date} is no instant in format 303 in UTC (CCYYMMDDHHMM?+00)"
            errors.append(self._error(fv, Reason.FORMAT_NOT_KEPT, text))
        if cmd.code_lists:
            # DOMAIN §4: the code list must match the UNB's qualifier; a message naming its
            # parties under another one does not say who they are as the interchange does.
            errors.append(self._error(fv, Reason.CODE_NOT_ALLOWED, "; ".join(cmd.code_lists)))
        for role, value in (("sender", cmd.sender), ("recipient", cmd.recipient)):
            ok, finding = check_mp_id(value, self.config.mp_id_check)
            if finding and ok:
                warnings.append(f"{role}: {finding}")
            elif finding:
                errors.append(self._error(fv, Reason.FORMAT_NOT_KEPT, f"{role}: {finding}"))
        if cmd.sent_as is not None and cmd.sent_as != cmd.sender:
            errors.append(
                self._error(
                    fv,
                    Reason.SENDER_NOT_ASSIGNED,
                    f"NAD+MS {cmd.sent_as} is not the interchange's sender {cmd.sender}",
                )
            )
        if cmd.addressed_to is not None and cmd.addressed_to != cmd.recipient:
            errors.append(
                self._error(
                    fv,
                    Reason.RECIPIENT_NOT_ASSIGNED,
                    f"NAD+MR {cmd.addressed_to} is not the interchange's recipient {cmd.recipient}",
                )
            )
        # The fields of this command type (a missing one is None): ``getattr`` with a default
        # would go through pydantic's slow ``__getattr__`` for every absent field.
        fields = cmd.__dict__
        findings, ahb_warnings = check_transaction(
            cmd.pid,
            malo=cmd.malo,
            request_ref=fields.get("request_ref"),
            dates={"92": fields.get("zuordnungsbeginn"), "93": fields.get("zuordnungsende")},
            transaction_reason=fields.get("transaction_reason"),
            answer_code=fields.get("answer_code"),
            answer_ebd=fields.get("answer_ebd"),
            document_code=cmd.document_code,
            received_at=cmd.received_at,
            transaction_detail=fields.get("transaction_detail"),
            malformed_dates=dict(cmd.malformed_dates) if cmd.malformed_dates else None,
            fixed_term_reason=fields.get("fixed_term_reason"),
            customer=fields.get("customer_name") is not None,
            location=object_location(cmd.pid, fields.get("transaction_detail")),
            packages=None if (packages := fields.get("product_packages")) is None else bool(packages),
        )
        for finding, text in findings:
            errors.append(self._error(fv, _FINDING_REASONS[finding], text))
        name = fields.get("customer_name")
        if name is not None and (
            any(len(part) > _NAME_PART for part in name[:5]) or any(len(part) > 3 for part in name[5:6])
            or any(name[6:])
        ):
            # C080 (UN D.11A): five 3036 an..70 and a 3045 an..3, nothing more. Our 55010 repeats
            # the name as received (Muss [279]): taken, it would make the 55010 break the MIG at
            # the LFA (an empty component more is left out when it is written).
            text = (
                f"NAD+Z09 C080: a 3036 longer than {_NAME_PART} characters, a 3045 longer than 3, "
                "or a component after 3045"
            )
            errors.append(self._error(fv, Reason.FORMAT_NOT_KEPT, text))
        for kind, text in fields.get("package_problems") or ():
            errors.append(self._error(fv, _PACKAGE_PROBLEMS[kind], text))
        long_ids = [p.id for p in fields.get("product_packages") or () if len(p.id) > _PACKAGE_ID]
        if long_ids:
            # SEQ 1050 is an..10 (UN D.11A); the 55002/55078 repeats the package the NB plans in
            # RFF+Z60: taken, a longer one would make that answer break the MIG at the LFN.
            first = long_ids[0][:40]
            text = f"SG8 SEQ+Z79 Produktpaket-ID (1050) longer than {_PACKAGE_ID} characters: {first}"
            errors.append(self._error(fv, Reason.FORMAT_NOT_KEPT, text))
        warnings.extend(ahb_warnings)
        rule = AHB_RULES.get(cmd.pid)
        tranche = is_tranche(cmd.pid, fields.get("transaction_detail"))
        what = "Tranche-ID" if tranche else "MaLo-ID"  # a Tranche's ID has a MaLo-ID's format [950]
        if rule is not None and rule.malo == "required" and cmd.malo and not is_valid_malo_id(cmd.malo):
            errors.append(
                self._error(fv, Reason.MALO_INVALID, f"{what} {cmd.malo} fails its check digit or format")
            )
        elif tranche and cmd.malo and fields.get("tranche_malo") is None:
            # The NB forms Tranchen; one its master data does not know is "nicht gefunden".
            text = f"Tranche {cmd.malo} is not in the master data (no MaLo known for it)"
            errors.append(self._error(fv, Reason.MALO_INVALID, text))
        elif cmd.malo and fields.get("malo_unknown"):
            # "Objekt im IT-System nicht gefunden": another grid's MaLo, or a mistyped one with a
            # valid check digit. Confirming it would make the sender supply what the NB lacks.
            text = f"MaLo {cmd.malo} is not in the NB's master data"
            errors.append(self._error(fv, Reason.MALO_INVALID, text))
        kundenanlage = fields.get("kundenanlage_malo")
        if kundenanlage is not None and not is_valid_malo_id(kundenanlage):
            text = f"MaLo-ID {kundenanlage} of the Kundenanlage (LOC+Z16) fails its check digit or format"
            errors.append(self._error(fv, Reason.MALO_INVALID, text))
        elif (
            kundenanlage is None and cmd.pid == "55001" and fields.get("transaction_detail") == "ZAP"
            and fields.get("kundenanlage_formed") is False
        ):  # fmt: skip
            # 55001 LOC+Z16 is Muss [2061] ∧ [67]: absent only with the product that forms the
            # ruhende MaLo's Kundenanlage (AHB-FACTS §2); the 55002 must name it (Muss [2061]).
            text = "LOC+Z16 (MaLo of the Kundenanlage) missing; required [67] unless a Kundenanlage is formed"
            errors.append(self._error(fv, Reason.MISSING_DATA, text))
        return errors, warnings

    def _aperak(self, out: _Out, cmd: InboundUtilmd, errors: tuple[ErrorItem, ...]) -> OutboundRef:
        ref = out.ref("APERAK", cmd.sender)
        out.send(
            ref,
            aperak_payload(
                ref,
                out.own_id,
                out.at,
                interchange_ref=cmd.interchange_ref,
                # DTM+171: UNB S004 of the answered interchange (AHB-FACTS §5)
                referenced_date=cmd.interchange_date or cmd.document_date or cmd.received_at,
                document_number=cmd.document_number,
                ide_ref=cmd.ide_ref,
                errors=tuple(AperakError(code=e.code, text=e.text) for e in errors) if errors else (),
                message_ref=cmd.message_ref,
            ),
        )
        return ref

    def _reject_inbound(self, out: _Out, cmd: InboundUtilmd, errors: list[ErrorItem]) -> WorkflowOutput:
        """APERAK 313 and ``InboundRejected``: no step, no Frist, no business key."""
        aperak = self._aperak(out, cmd, tuple(errors))
        out.emit(
            unvalidated(InboundRejected)(
                inbound=_info_of(cmd),
                errors=tuple(errors),
                aperak=aperak,
                aperak_due=self.config.ack_windows.aperak_due(cmd.received_at),
                ack_windows_version=self.config.ack_windows.version,
            )
        )
        return out.output()

    # -- events ------------------------------------------------------------------------------

    def apply(self, state: GpkeState, event: Event) -> GpkeState:
        """The state after ``event``.

        ``handle`` folds each event it emits as it goes (later steps decide on that state), and
        the engine then applies the same events to the same state again: that second time, the
        state ``handle`` computed for these very objects is returned instead of a new copy.
        """
        folded = self._folded.pop(id(event), None)
        if folded is not None and folded[0] is state and folded[1] is event:
            return folded[2]
        return self._apply(state, event)

    def _fold(self, state: GpkeState, event: Event) -> GpkeState:
        """``apply``, remembered for the engine's second ``apply`` of the same output."""
        after = self._apply(state, event)
        folded = self._folded
        if len(folded) >= 64:  # outputs the engine never applied (e.g. ``handle`` raised later)
            folded.clear()
        folded[id(event)] = (state, event, after)  # holding both keeps their ids unique
        return after

    def _apply(self, state: GpkeState, event: Event) -> GpkeState:
        # Fields are read from ``__dict__`` here and in the steps: each attribute read on a
        # model instance goes through pydantic's ``__getattr__`` hook, which costs more.
        values = state.__dict__
        refs = _refs(event)
        update: dict[str, Any] = {
            "sent": values["sent"] + len(refs),
            "outbound": values["outbound"] + tuple(refs),
        }
        if not values["seed"] and isinstance(event, _SEEDING):
            info = event.inbound.__dict__
            update["seed"] = (
                f"{info['sender']}:{info['interchange_ref']}:{info['message_ref']}:{info['ide_ref']}"
            )
            update["own_id"] = info["recipient"]
        step = _STEPS.get(type(event))
        if step is None:  # a subclass of one of ours, or another event (changes no more)
            step = next((f for t, f in _STEPS.items() if isinstance(event, t)), _no_step)
        step(state, event, update)
        return updated(state, update)


# -- what each event changes beyond ``sent``/``outbound``/``seed`` (into ``update``, in place) -----


def _no_step(state: GpkeState, event: Any, update: dict[str, Any]) -> None:
    pass


def _rejected(state: GpkeState, event: InboundRejected, update: dict[str, Any]) -> None:
    if state.status is _NEW:
        update["status"] = _NOT_RECEIVED
        update["pid"] = event.inbound.pid
        update["format_version"] = event.inbound.format_version
    update["rejected_inbound"] = state.rejected_inbound + 1
    _answer_handled(state, event, update)


def _received(info: InboundInfo, update: dict[str, Any]) -> None:
    values = info.__dict__
    update["pid"] = values["pid"]
    update["format_version"] = values["format_version"]
    update["lfn"] = values["sender"]
    update["malo"] = values["malo"]
    update["request_ide"] = values["ide_ref"]
    update["received_at"] = values["received_at"]
    update["status"] = _NEW


def _anmeldung_received(state: GpkeState, event: AnmeldungReceived, update: dict[str, Any]) -> None:
    values = event.__dict__
    _received(values["inbound"], update)
    update["kind"] = "anmeldung"
    update["zuordnungsbeginn"] = values["zuordnungsbeginn"]
    update["transaction_reason"] = values["transaction_reason"]
    update["transaction_detail"] = values["transaction_detail"]
    update["generating"] = values["generating"]
    update["lfa"] = values["lfa"]
    update["lfz"] = values["lfz"]
    update["lfz_start"] = values["lfz_start"]
    # (stored before: absent)
    update["lfz_more"] = tuple((later.supplier, later.start) for later in values.get("lfz_more", ()))
    update["fristen"] = values["fristen"]
    update["product_package"] = values.get("product_package")  # (stored before: absent)
    update["msb"], update["msb_role"] = values.get("msb"), values.get("msb_role")
    update["gmsb"], update["messlokationen"] = values.get("gmsb"), values.get("messlokationen")


def _measurement_known(state: GpkeState, event: MaloMeasurementKnown, update: dict[str, Any]) -> None:
    update["malo_measurement"] = event.measurement


def _tranche_known(state: GpkeState, event: TrancheKnown, update: dict[str, Any]) -> None:
    values = event.__dict__
    update["tranche_malo"] = values["malo"]
    update["tranche_basis"], update["tranche_percent"] = values.get("basis"), values.get("percent")


def _kundenanlage_known(state: GpkeState, event: KundenanlageKnown, update: dict[str, Any]) -> None:
    values = event.__dict__
    update["kundenanlage_malo"] = values["malo"]
    update["kundenanlage_netzlokationen"] = values["netzlokationen"] or None


def _fixed_term(state: GpkeState, event: FixedTermRequested, update: dict[str, Any]) -> None:
    update["zuordnungsende"] = event.zuordnungsende
    update["fixed_term_reason"] = event.reason


def _abmeldung_received(state: GpkeState, event: AbmeldungReceived, update: dict[str, Any]) -> None:
    values = event.__dict__
    _received(values["inbound"], update)
    update["kind"] = "abmeldung"
    update["zuordnungsende"] = values["zuordnungsende"]
    update["fristen"] = values["fristen"]


def _rejected_at_once(state: GpkeState, event: AnmeldungRejectedAtOnce, update: dict[str, Any]) -> None:
    update["status"] = _REJECTED
    update["answer_code"] = event.code


def _lfa_consulted(state: GpkeState, event: LfaConsulted, update: dict[str, Any]) -> None:
    values = event.__dict__
    update["status"] = _AWAITING_LFA
    update["lfa_request_ide"] = values["request"].__dict__["ide_ref"]
    update["lfa_answer_due"] = values["answer_due"]


def _lfa_answered(state: GpkeState, event: LfaAnswered, update: dict[str, Any]) -> None:
    values = event.__dict__
    update["lfa_confirmed"] = values["confirmed"]
    update["lfa_code"] = values["code"]
    _answer_handled(state, event, update)


def _lfa_deemed(
    state: GpkeState, event: LfaDeemedToAgree | LfaAgreementDeemedByOperator, update: dict[str, Any]
) -> None:
    update["lfa_confirmed"] = True
    update["lfa_deemed"] = True


def _lfa_not_reached(state: GpkeState, event: LfaNotReached, update: dict[str, Any]) -> None:
    update["status"] = _AWAITING_OPERATOR


def _tranche_requested(state: GpkeState, event: TrancheRequested, update: dict[str, Any]) -> None:
    update["requested_share"] = event.share


def _awaits_operator(state: GpkeState, event: TrancheFormationAwaited, update: dict[str, Any]) -> None:
    update["status"] = _AWAITING_OPERATOR


def _not_reached(out: _Out, due: datetime, rejected: str) -> None:
    """``LfaNotReached``, then the operator's wait (``_await_operator``)."""
    _await_operator(out, LfaNotReached(due_at=due, interchange_ref=rejected))


def _await_operator(out: _Out, event: LfaNotReached | TrancheFormationAwaited) -> None:
    """``event`` (the process awaits an operator) and, while one decides, the NB's own 11:00 Frist
    as a timer: ``deadlines list`` shows what is at stake, and a miss is recorded
    (``DecisionOverdue``)."""
    out.emit(event)
    s = out.state
    decision = s.fristen.due.get(DECISION_DEADLINE) if s.fristen is not None else None
    if decision is not None and s.pid is not None:
        answers = f"{_answer_pid(s.pid, True)}/{_answer_pid(s.pid, False)}"
        out.deadlines.append(
            _deadline(
                label=DECISION_DEADLINE,
                due_at=utc(decision),
                payload={"pid": answers, "lfn": s.lfn, "waiting_for": "operator"},
            )
        )


def _is_gv3(state: GpkeState) -> bool:
    """Whether the process is a Geschäftsvorfall 3 (a 55077 with STS+7 #2 ZW2: a new Tranche)."""
    return state.generating and state.transaction_detail == "ZW2"


_OperatorDecision = DeemLfaAgreement | RejectAnmeldung | FormTranche | RejectTrancheRequest


def _rejected_lfa_request(state: GpkeState, by: datetime) -> str | None:
    """The 0020 of our 55010 if the LFA rejected it (CONTRL 4 / APERAK 313) received by ``by``
    (09:00: a rejection received later stops nothing, in whatever order it is handled), else
    ``None``. (A rejection recorded before its instant was kept counts whenever it came.)"""
    rejected_at = state.lfa_rejected_at
    if rejected_at is not None and rejected_at > by:
        return None
    request = _lfa_request_interchange(state)
    return request if request is not None and request in state.negative_acks else None


def _lfa_request_interchange(state: GpkeState) -> str | None:
    """The 0020 of our 55010 (``None`` before it was sent)."""
    for ref in state.outbound:
        if ref.ide_ref == state.lfa_request_ide:
            return ref.interchange_ref
    return None


def _decided(state: GpkeState, event: AnmeldungDecided | AbmeldungDecided, update: dict[str, Any]) -> None:
    values = event.__dict__
    update["status"] = _CONFIRMED if values["confirmed"] else _REJECTED
    update["answer_code"] = values["code"]


def _acknowledged(state: GpkeState, event: AcknowledgementReceived, update: dict[str, Any]) -> None:
    values = event.__dict__
    referenced = values["referenced_interchange_ref"]
    if not values["positive"]:
        if referenced not in state.negative_acks:
            update["negative_acks"] = (*state.negative_acks, referenced)
        if state.lfa_request_ide is not None and referenced == _lfa_request_interchange(state):
            # The earliest received, in whatever order they are handled (``_rejected_lfa_request``).
            at, before = values["received_at"], state.lfa_rejected_at
            update["lfa_rejected_at"] = at if before is None else min(before, at)
    sender, interchange_ref, message_ref = values["sender"], values["interchange_ref"], values["message_ref"]
    key = _ack_key(sender, interchange_ref, values["message_type"], referenced, message_ref)
    update["handled"] = (*(state.handled or ()), key)


def _answer_handled(
    state: GpkeState, event: LfaAnswered | LateLfaAnswerIgnored | InboundRejected, update: dict[str, Any]
) -> None:
    info = event.inbound.__dict__
    key = _answer_key(info["sender"], info["interchange_ref"], info["message_ref"], info["ide_ref"])
    update["handled"] = (*(state.handled or ()), key)


def _answer_key(sender: str, interchange_ref: str, message_ref: str, ide_ref: str) -> str:
    """An inbound UTILMD transaction: sender, 0020, 0062 and IDE (unique per sender, DOMAIN §5)."""
    return f"{sender}:{interchange_ref}:{message_ref}:{ide_ref}"


#: The APERAK reason of each kind of ``ReceiveAnmeldung.package_problems``.
_PACKAGE_PROBLEMS = {
    "missing": Reason.MISSING_DATA, "format": Reason.FORMAT_NOT_KEPT, "code": Reason.CODE_NOT_ALLOWED,
}  # fmt: skip

#: What an acknowledgement names in our interchange, checked, not stored (``ReceiveAcknowledgement``).
_NAMED_REFERENCES = ("messages", "documents", "transactions")


def _ack_key(
    sender: str, interchange_ref: str, message_type: str, referenced: str, message_ref: str | None
) -> str:
    """A CONTRL/APERAK on one of our interchanges: its sender, 0020 and 0062, its type, our 0020
    (an event recorded before the 0062 was kept: without it)."""
    if message_ref is None:
        return f"{sender}:{interchange_ref}:{message_type}:{referenced}"
    return f"{sender}:{interchange_ref}:{message_ref}:{message_type}:{referenced}"


def _seen(state: GpkeState, key: str) -> bool:
    handled = state.__dict__["handled"]
    return handled is not None and key in handled


# Built once: ``A | B`` in an ``isinstance`` builds a new union on every call.
_SEEDING = (InboundRejected, AnmeldungReceived, AbmeldungReceived)
# By exact type, in the order ``_apply`` once asked ``isinstance`` (a subclass finds its base's).
_STEPS: dict[type[Any], Callable[[GpkeState, Any, dict[str, Any]], None]] = {
    InboundRejected: _rejected,
    AnmeldungReceived: _anmeldung_received,
    MaloMeasurementKnown: _measurement_known,
    TrancheKnown: _tranche_known,
    KundenanlageKnown: _kundenanlage_known,
    FixedTermRequested: _fixed_term,
    AbmeldungReceived: _abmeldung_received,
    AnmeldungRejectedAtOnce: _rejected_at_once,
    LfaConsulted: _lfa_consulted,
    LfaAnswered: _lfa_answered,
    LfaDeemedToAgree: _lfa_deemed,
    LfaNotReached: _lfa_not_reached,
    DecisionOverdue: _no_step,
    LfaAgreementDeemedByOperator: _lfa_deemed,
    AnmeldungRejectedByOperator: _no_step,
    TrancheRequested: _tranche_requested,
    TrancheFormationAwaited: _awaits_operator,
    TrancheFormedByOperator: _no_step,
    TrancheRequestRejectedByOperator: _no_step,
    AnmeldungDecided: _decided,
    AbmeldungDecided: _decided,
    AcknowledgementReceived: _acknowledged,
    LateLfaAnswerIgnored: _answer_handled,
}


def _unnamed_netzlokationen(cmd: ReceiveAnmeldung) -> list[str]:
    """Warnings for the Netzlokationen of a ruhende MaLo's Kundenanlage the 55002 cannot name: the
    master data know them but not their MSB, which SG8 ZD7 needs (so the 55002 lacks them)."""
    known = {nelo for nelo, _, _ in cmd.kundenanlage_netzlokation_msbs}
    return [
        f"Netzlokation {nelo} of MaLo {cmd.kundenanlage_malo}: no MSB in the master data, so the 55002 "
        "cannot name it (LOC+Z18 with SG8 ZD7, Muss [96] ∧ [688])"
        for nelo in cmd.kundenanlage_netzlokationen or ()
        if nelo not in known
    ]


def _esv_began(esv_from: datetime | None, end: datetime) -> bool:
    """E_0607 step 80: an Ersatz-/Grundversorgung began within 3 months before ``end`` (not known
    from the master data: not checked)."""
    return esv_from is None or esv_began_within(esv_from, end)


def _generating_lead_time(cmd: ReceiveAnmeldung, start: datetime) -> str | None:
    """Why a 55077 misses its Geschäftsvorfall's start date or lead time (E_0622), or None.

    GV3 (steps 800-810): one month of lead time for a start on the 1st of a month and for an
    EEG/KWKG MaLo, else the Nicht-EEG/KWKG one (806, A35). GV1/GV2 of a Nicht-EEG/KWKG MaLo
    (405/605): the ÜT at the latest the day before the last WT (A34/A30). Of an EEG/KWKG MaLo:
    a start on the 1st of a month (410/620: A27/A31) and one month of lead time (430/630:
    A28/A32), for GV1 5 WT in a verkürzter Wechsel out of the Ausfallvergütung (420/440: A29).
    Steps 400/600 (a change of Veräußerungsform) lead to these very steps for an EEG/KWKG MaLo;
    for a Nicht-EEG/KWKG one, which has no EEG Veräußerungsform, they are not asked †.
    """
    received, detail, eeg = cmd.received_at, cmd.transaction_detail, cmd.malo_eeg_kwkg is True
    if detail == "ZW2":
        if eeg or is_month_start(start):
            return None if month_vorlauffrist_met(received, start) else Reason.MONTH_VORLAUFFRIST_MISSED_GV3
        return None if vorlauffrist_met(received, start) else Reason.VORLAUFFRIST_MISSED_GV3
    if not eeg:
        if vorlauffrist_met(received, start):
            return None
        return _GENERATING_LATE.get(detail or "", Reason.VORLAUFFRIST_MISSED_GV1)
    gv2 = detail == "ZW1"
    if not is_month_start(start):
        return Reason.EEG_NOT_MONTH_START_GV2 if gv2 else Reason.EEG_NOT_MONTH_START_GV1
    if not gv2 and cmd.malo_ausfallverguetung:
        met = werktage_vorlauffrist_met(received, start, _VERKUERZT_WT)
        return None if met else Reason.EEG_SHORT_VORLAUFFRIST_MISSED_GV1
    if month_vorlauffrist_met(received, start):
        return None
    return Reason.EEG_VORLAUFFRIST_MISSED_GV2 if gv2 else Reason.EEG_VORLAUFFRIST_MISSED_GV1


_VERKUERZT_WT = 5  # E_0622 step 440: "Eingang spätestens 5 WT vor Zuordnungsbeginn"

_GENERATING_LATE = {
    "ZW0": Reason.VORLAUFFRIST_MISSED_GV1,
    "ZW1": Reason.VORLAUFFRIST_MISSED_GV2,
    "ZW2": Reason.VORLAUFFRIST_MISSED_GV3,
}


#: The APERAK reason of each kind of AHB finding (the code table maps it to an ERC code).
_FINDING_REASONS = {
    AhbFinding.MISSING: Reason.MISSING_DATA,
    AhbFinding.CODE_NOT_ALLOWED: Reason.CODE_NOT_ALLOWED,
    AhbFinding.FORMAT: Reason.FORMAT_NOT_KEPT,
}


_REMARK_MAX = 2560


def _metering(cmd: ReceiveAnmeldung) -> dict[str, Any]:
    """The MaLo's MSB, its role, the gMSB and Messlokationen for ``AnmeldungReceived`` as the
    master data (``Suppliers``, which decides their defaults) name them; none without an MSB."""
    if cmd.malo_msb is None:
        return {}
    return {
        "msb": cmd.malo_msb,
        "msb_role": cmd.malo_msb_role,
        "gmsb": cmd.malo_gmsb,
        "messlokationen": cmd.malo_messlokationen or None,
    }


def _resting_malo(cmd: ReceiveAnmeldung, fv: str) -> str | None:
    """E_0622 steps 16–28 for a ruhende MaLo (STS+7 #2 ZAP) in the tree of ``fv``, from master
    data (a fact not known passes its step): the reason of the rejection, ``None`` to go on."""
    if fv == "FV2504" and cmd.resting_ims is False:
        return Reason.RESTING_NOT_IMS  # step 17 (FV2504 only)
    if cmd.resting_generating:
        return Reason.RESTING_NOT_CONSUMING  # step 18
    # Steps 22/28 (from FV2510): where the Kundenanlage's quantities are computed by a virtueller
    # Summenzähler (steps 20/27), the ruhende MaLo must be measured by an iMS.
    needs_ims = fv != "FV2504" and cmd.kundenanlage_virtual_summenzaehler is True
    if cmd.kundenanlage_formed:  # step 19: a new Kundenanlage
        return Reason.RESTING_NOT_IMS_NEW_KUNDENANLAGE if needs_ims and cmd.resting_ims is False else None
    if cmd.kundenanlage_is_kua is False:
        return Reason.NOT_A_KUNDENANLAGE  # step 25
    resting, kua = cmd.resting_netzlokationen, cmd.kundenanlage_netzlokationen
    # Step 26, "hinter der (den) gleichen Netzlokation(en)": read as every Netzlokation of the
    # ruhende MaLo being one of the Kundenanlage's (†)
    if resting is not None and kua is not None and not set(resting) <= set(kua):
        return Reason.NOT_BEHIND_THE_SAME_NETZLOKATION
    return Reason.RESTING_NOT_IMS_EXISTING_KUNDENANLAGE if needs_ims and cmd.resting_ims is False else None


def _planned_package(packages: tuple[ProductPackage, ...]) -> tuple[ProductPackage | None, str | None]:
    """E_0622 step 60/260 over an Anmeldung's Produktpakete (by the LFN's priority): the first whose
    requirements the NB can meet (its Bilanzkreis is one the LFN holds a Zuordnungsermächtigung
    for, or the NB keeps no register), else ``None`` and the deviations for FTX+ACB."""
    for package in packages:
        if package.authorized is not False:
            return package, None
    if not packages:
        return None, None
    deviations = "; ".join(
        f"Produktpaket {p.id}: keine Zuordnungsermächtigung des LF für Bilanzkreis {p.bilanzkreis}"
        if p.bilanzkreis
        else f"Produktpaket {p.id}: kein Bilanzkreis (PIA+5 9991000002082, CAV+ZV4) angegeben"
        for p in packages
    )
    # FTX+ACB holds at most 2,560 characters (five of 512); more packages than the AHB's five
    # must not make the answer unsendable.
    return None, deviations if len(deviations) <= _REMARK_MAX else deviations[: _REMARK_MAX - 3] + "..."


def _answer_pid(pid: str, confirmed: bool) -> str:
    """55001 → 55002/55003; 55077 → 55078/55080 (55079 is unused)."""
    if pid == "55077":
        return "55078" if confirmed else "55080"
    return "55002" if confirmed else "55003"
