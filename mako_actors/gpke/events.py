"""Events of the GPKE NB workflow (stable type names ``gpke.*``, schema version 1).

Every event that enqueues a message stores that message's ``OutboundRef`` (our 0020, 0062,
BGM 1004, IDE), so the references are part of the history and replay identically.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from mako_actors.gpke._models import PlainDump, plain_dumper, positional
from mako_actors.gpke.commands import InboundUtilmd
from mako_actors.gpke.fristen import FristenRecord, canonical_fv
from mako_actors.gpke.payloads import OutboundRef
from mako_actors.gpke.supply import Measurement
from mako_actors.workflow import Event

__all__ = [
    "ALL_EVENTS",
    "AbmeldungDecided",
    "AbmeldungReceived",
    "AcknowledgementReceived",
    "AnmeldungDecided",
    "AnmeldungReceived",
    "AnmeldungRejectedAtOnce",
    "AnmeldungRejectedByOperator",
    "DecisionOverdue",
    "ErrorItem",
    "FixedTermRequested",
    "GpkeEvent",
    "InboundInfo",
    "InboundRejected",
    "KundenanlageKnown",
    "LateLfaAnswerIgnored",
    "LfaAgreementDeemedByOperator",
    "LfaAnswered",
    "LfaConsulted",
    "LfaDeemedToAgree",
    "LfaNotReached",
    "MaloMeasurementKnown",
    "TrancheFormationAwaited",
    "TrancheFormedByOperator",
    "TrancheKnown",
    "TrancheRequestRejectedByOperator",
    "TrancheRequested",
]


class InboundInfo(BaseModel):
    """The identifying data of one inbound UTILMD transaction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: str
    sender: str
    recipient: str
    malo: str | None
    ide_ref: str
    document_number: str
    document_date: datetime | None
    interchange_ref: str
    message_ref: str
    format_version: str
    received_at: datetime

    @classmethod
    def of(cls, command: InboundUtilmd) -> InboundInfo:
        """The info of a (validated) command; built without validating its values again."""
        return positional(cls)(  # every field, in declaration order
            command.pid,
            command.sender,
            command.recipient,
            command.malo,
            command.ide_ref,
            command.document_number,
            command.document_date,
            command.interchange_ref,
            command.message_ref,
            canonical_fv(command.format_version),  # format_version
            command.received_at,
        )


class ErrorItem(BaseModel):
    """One finding: the APERAK ERC code, our internal reason and a readable text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    reason: str
    text: str


class GpkeEvent(Event, PlainDump):
    """Base of the GPKE events: stored through ``plain_dump`` (pydantic's dump, written out),
    as every event a replay stores costs one dump."""

    @classmethod
    def payload_dumper(cls) -> Callable[[Any], dict[str, Any]]:
        """The class's written-out dump, called by storage directly (what ``model_dump`` calls)."""
        dump = plain_dumper(cls) if cls.model_dump is PlainDump.model_dump else None
        return super().payload_dumper() if dump is None else dump


class InboundRejected(GpkeEvent, type="gpke.inbound_rejected"):
    """A UTILMD rightly rejected by APERAK 313: it counts as not received (no step, no Frist)."""

    inbound: InboundInfo
    errors: tuple[ErrorItem, ...]
    aperak: OutboundRef
    aperak_due: datetime
    ack_windows_version: str


class LaterSupply(BaseModel):
    """A supplier's confirmed assignment of a MaLo from ``start``, later than an Anmeldung's."""

    model_config = ConfigDict(frozen=True)

    supplier: str
    start: datetime


class AnmeldungReceived(GpkeEvent, type="gpke.anmeldung_received"):
    """A 55001/55077 passed APERAK checks (positive APERAK sent); its Fristen are computed."""

    inbound: InboundInfo
    generating: bool
    zuordnungsbeginn: datetime
    transaction_reason: str | None
    lfa: str | None
    lfz: str | None
    lfz_start: datetime | None
    warnings: tuple[str, ...]
    aperak: OutboundRef
    aperak_due: datetime
    ack_windows_version: str
    fristen: FristenRecord
    # Further LFZ confirmed after ``lfz`` (by start): a confirmed Anmeldung cancels their
    # assignments too, each told by a 55038
    lfz_more: tuple[LaterSupply, ...] = ()
    # STS+7 C556#2 (ZW4/ZAP, ZW0/ZW1/ZW2): the answers decided later repeat it (AHB-FACTS §3)
    transaction_detail: str | None = None
    # The Produktpaket the NB plans (E_0622 step 60/260: the first, by the LFN's priority, whose
    # Bilanzkreis it may use): the 55002/55078 name it in RFF+Z60. None: the Anmeldung named none
    # it may use (then E_0622 rejects it) or was stored before packages were read.
    product_package: str | None = None
    # The MaLo's Messstellenbetreiber from master data (MP-ID; Z39 grundzuständig, Z40
    # wettbewerblich, Z41 Auffang-MSB), the grundzuständige MSB and its Messlokationen: a 55002
    # for a gemessene or ruhende MaLo names them (S1 FV2504 55002 LOC+Z17, SG8 Z98/ZF3). None:
    # the master data name no MSB.
    msb: str | None = None
    msb_role: str | None = None
    gmsb: str | None = None
    messlokationen: tuple[str, ...] | None = None


class MaloMeasurementKnown(GpkeEvent, type="gpke.malo_measurement_known"):
    """The MaLo's master data say how it is measured (ZW6 pauschale / ZW7 gemessene MaLo): the
    STS+7 #2 of the 55002 decided later. Follows ``AnmeldungReceived`` only when they say it, so
    a process of a MaLo without it stores what it stored before (``GpkeConfig`` decides)."""

    measurement: Measurement


class FixedTermRequested(GpkeEvent, type="gpke.fixed_term_requested"):
    """The Anmeldung is befristet (55001 STS+7 #3 ``reason``, E01/E03): the supply it asks for
    ends at ``zuordnungsende`` (DTM+93). Follows ``AnmeldungReceived`` only then, so other
    processes store what they stored before; the 55002 repeats both (AHB 55001/55002 [10])."""

    zuordnungsende: datetime
    reason: str


class TrancheKnown(GpkeEvent, type="gpke.tranche_known"):
    """The Anmeldung is for a Tranche (a 55077 of Geschäftsvorfall 2; the process's ``malo`` is
    the Tranche's ID) of MaLo ``malo`` (NB master data). Every message of the process names the
    Tranche as LOC+Z21 (55080: STS+Z35 ZW5, RFF+Z20), the 55078 both (S1 FV2504 55078 [477]).
    ``basis``/``percent``: how the Tranche's size is formed, from master data (ZD1 with the
    percentage of the MaLo, ZD2 an Aufteilungsfaktor), which the 55078 names in SG8 Z15 (Muss
    for Geschäftsvorfall 2); ``None``: the master data do not say (or stored before)."""

    malo: str
    basis: str | None = None
    percent: str | None = None


class KundenanlageKnown(GpkeEvent, type="gpke.kundenanlage_known"):
    """The Anmeldung is for a ruhende MaLo (STS+7 #2 ZAP; the process's ``malo`` is its ID,
    LOC+Z22) in the Kundenanlage of MaLo ``malo`` (the 55001's LOC+Z16). The 55002 names both
    (S1 FV2504 55002 [2061], [2003] ∧ [96]), and the Netzlokationen of ``malo`` whose MSB the
    master data give, ``(ID, MSB, role)`` each (LOC+Z18 and SG8 ZD7, Muss [96] ∧ [688])."""

    malo: str
    netzlokationen: tuple[tuple[str, str, str], ...] = ()


class AnmeldungRejectedAtOnce(GpkeEvent, type="gpke.anmeldung_rejected_at_once"):
    """E_0622 rejected the Anmeldung (Vorlauffrist, competing process, requirements of the LF the
    NB cannot meet): 55003/55080 sent.

    ``assigned_supplier``: the competitor is not a running Anmeldung but a confirmed
    assignment of that supplier starting at the same date (only with
    ``GpkeConfig.confirmed_assignment_blocks``). ``remark``: the deviation named in
    FTX+ACB (A05/A25: e.g. no Zuordnungsermächtigung for the Bilanzkreis).
    """

    ebd: str
    code: str
    reason: str
    answer: OutboundRef
    processing_start: datetime | None = None
    next_processing_date: datetime | None = None
    assigned_supplier: str | None = None
    remark: str | None = None


class LfaConsulted(GpkeEvent, type="gpke.lfa_consulted"):
    """55036 went to the LFN and 55010 to the LFA; the LFA's answer is due at ``answer_due``.

    ``info`` is ``None`` where the LFA is the LFN itself (a Geschäftsvorfall 3 of the supplier
    of the whole MaLo: E_0622 step 830 asks it too; a 55036 informs of *another* supplier).
    """

    lfa: str
    info: OutboundRef | None
    request: OutboundRef
    answer_due: datetime


class LfaAnswered(GpkeEvent, type="gpke.lfa_answered"):
    """The LFA answered in time with its E_0624 ``code``.

    ``confirmed``: the answer counts as agreement for E_0623: a 55011, or a 55012 with A30/A41
    (supply already ended; AHB-FACTS §4). ``warnings``: AHB findings that reject nothing.
    ``end``: the answer's DTM+93, the end of supply the LFA names (``None``: none sent).
    """

    inbound: InboundInfo
    confirmed: bool
    code: str | None
    aperak: OutboundRef
    warnings: tuple[str, ...] = ()
    end: datetime | None = None


class LfaDeemedToAgree(GpkeEvent, type="gpke.lfa_deemed_to_agree"):
    """09:00 WT1 passed without an LFA answer: silence counts as 55011 (not a failure)."""

    due_at: datetime


class LfaNotReached(GpkeEvent, type="gpke.lfa_not_reached"):
    """09:00 WT1 passed after the LFA rejected our 55010 (CONTRL 4 / APERAK 313).

    A rightly rejected message counts as not received (DOMAIN §2), so the LFA's silence is no
    agreement: nothing is sent, the MaLo stays claimed and the process waits for an operator
    (``DeemLfaAgreement`` or ``RejectAnmeldung``). ``interchange_ref`` is the 0020 of the
    rejected 55010; the rejection itself is the ``AcknowledgementReceived`` before it.
    """

    due_at: datetime
    interchange_ref: str


class DecisionOverdue(GpkeEvent, type="gpke.decision_overdue"):
    """11:00 WT1 passed and the LFN has no answer: the NB's own Frist for 55002/55003 (55078/
    55080; DOMAIN §2 row 8) is missed while the process awaits an operator after ``LfaNotReached``. Nothing is
    sent; the process still waits (an operator's decision answers late). ``due_at`` is the Frist.
    """

    due_at: datetime


class LfaAgreementDeemedByOperator(GpkeEvent, type="gpke.lfa_agreement_deemed_by_operator"):
    """An operator decided that a process whose 55010 did not reach the LFA goes on as if the
    LFA agreed (e.g. the LFA confirmed by other means); ``reason`` is the operator's note."""

    decided_at: datetime
    reason: str


class AnmeldungRejectedByOperator(GpkeEvent, type="gpke.anmeldung_rejected_by_operator"):
    """An operator rejected the Anmeldung of a process whose 55010 did not reach the LFA
    (E_0623 A99 "Sonstiges"); ``text`` is what the 55003/55080 says in FTX+ACB."""

    decided_at: datetime
    text: str


class TrancheRequested(GpkeEvent, type="gpke.tranche_requested"):
    """A Geschäftsvorfall 3 asks for a new Tranche of ``share`` percent of the MaLo (its SG8 product
    Tranchengröße). Follows ``AnmeldungReceived`` only then, so other processes store what they
    stored before; ``FormTranche`` without a percentage forms this share."""

    share: str


class TrancheFormationAwaited(GpkeEvent, type="gpke.tranche_formation_awaited"):
    """A Geschäftsvorfall 3 (55077 STS+7 #2 ZW2) passed E_0622 and no supplier asked objected:
    E_0623 (steps 520-600) now needs the NB to form the new Tranche (its ID, its share), which no
    message carries. Nothing is sent; the process awaits an operator (``FormTranche``,
    ``RejectTrancheRequest`` or ``RejectAnmeldung``) with the NB's 11:00 Frist as a timer."""


class TrancheFormedByOperator(GpkeEvent, type="gpke.tranche_formed_by_operator"):
    """An operator formed the Tranche a Geschäftsvorfall 3 asked for: ``tranche`` (its ID) with
    ``percent`` of the MaLo; ``shares_missing``: E_0623 A55 instead of A56."""

    decided_at: datetime
    tranche: str
    percent: str
    shares_missing: bool
    reason: str


class TrancheRequestRejectedByOperator(GpkeEvent, type="gpke.tranche_request_rejected_by_operator"):
    """An operator found the share a Geschäftsvorfall 3 asked for not free (E_0623 A54)."""

    decided_at: datetime
    reason: str


class LateLfaAnswerIgnored(GpkeEvent, type="gpke.lfa_answer_ignored"):
    """An LFA answer after the decision (or a repeat): acknowledged, without effect."""

    inbound: InboundInfo
    aperak: OutboundRef


class AnmeldungDecided(GpkeEvent, type="gpke.anmeldung_decided"):
    """E_0623 decided: 55002/55078 (``confirmed``) or 55003/55080; plus 55037 / 55038.

    ``lfa_code`` is the LFA's E_0624 code repeated as STS+Z35 when it objected.
    """

    confirmed: bool
    ebd: str
    code: str
    reason: str
    lfa_code: str | None
    answer: OutboundRef
    termination: OutboundRef | None
    future_cancellation: OutboundRef | None
    more_cancellations: tuple[OutboundRef, ...] = ()  # the 55038 to ``lfz_more``, in its order


class AbmeldungReceived(GpkeEvent, type="gpke.abmeldung_received"):
    """A 55004 passed APERAK checks (positive APERAK sent); its Fristen are computed."""

    inbound: InboundInfo
    zuordnungsende: datetime
    current_supplier: str | None
    warnings: tuple[str, ...]
    aperak: OutboundRef
    aperak_due: datetime
    ack_windows_version: str
    fristen: FristenRecord


class AbmeldungDecided(GpkeEvent, type="gpke.abmeldung_decided"):
    """E_0607 decided: 55005 (``confirmed``) or 55006 with ``code``."""

    confirmed: bool
    ebd: str
    code: str
    reason: str
    answer: OutboundRef


class AcknowledgementReceived(GpkeEvent, type="gpke.acknowledgement_received"):
    """A CONTRL or APERAK on one of our outbound interchanges (``positive`` or with ``codes``).

    A negative one means the partner counts our message as not received: it is recorded for
    the operator; correcting and resending is a decision outside this workflow.
    """

    message_type: str
    sender: str
    referenced_interchange_ref: str
    positive: bool
    codes: tuple[str, ...] = ()
    interchange_ref: str
    received_at: datetime
    message_ref: str | None = None  # its UNH 0062 (None: recorded before it was kept)


ALL_EVENTS: tuple[type[Event], ...] = (
    AcknowledgementReceived,
    InboundRejected,
    AnmeldungReceived,
    MaloMeasurementKnown,
    FixedTermRequested,
    TrancheKnown,
    KundenanlageKnown,
    AnmeldungRejectedAtOnce,
    LfaConsulted,
    LfaAnswered,
    LfaDeemedToAgree,
    LfaNotReached,
    DecisionOverdue,
    LfaAgreementDeemedByOperator,
    AnmeldungRejectedByOperator,
    TrancheRequested,
    TrancheFormationAwaited,
    TrancheFormedByOperator,
    TrancheRequestRejectedByOperator,
    LateLfaAnswerIgnored,
    AnmeldungDecided,
    AbmeldungReceived,
    AbmeldungDecided,
)
