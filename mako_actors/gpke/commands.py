"""Commands of the GPKE NB workflow: inbound UTILMD business data and deadline expiries.

Commands carry what the message *claims* (validated by the workflow, so a bad MaLo becomes a
negative APERAK, not an exception) plus the NB's own master data as supplied by ingestion
(``current_supplier``, ``future_supplier``, ``competing_process``): the workflow looks nothing
up. Only structural problems (a missing required field, a naive datetime, a PID that does not
belong to the command) fail pydantic validation; ``build_command`` turns those into
``InvalidArgument`` for the dead-letter path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from mako_actors.errors import InvalidArgument
from mako_actors.gpke.supply import Measurement, MsbRole, TrancheBasis, tranche_percent, tranche_size
from mako_actors.gpke.validation import is_valid_malo_id
from mako_actors.version import FormatVersion

__all__ = [
    "AwareDatetime",
    "DecisionDeadlinePassed",
    "DeemLfaAgreement",
    "FormTranche",
    "GpkeCommand",
    "InboundUtilmd",
    "LfaAnswerDeadlinePassed",
    "ProductPackage",
    "ReceiveAbmeldung",
    "ReceiveAcknowledgement",
    "ReceiveAnmeldung",
    "ReceiveLfaAnswer",
    "RejectAnmeldung",
    "RejectTrancheRequest",
    "parse_command",
]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class ProductPackage(BaseModel):
    """One Produktpaket an Anmeldung asks for (SG8 ``SEQ+Z79`` DE1050), in the LFN's priority order
    (``SEQ+ZH0`` with ``CAV+Z75``…``Z79``; alternatives: the NB implements the first it can).

    ``bilanzkreis``: the EIC in ``CAV+ZV4`` of its Bilanzkreis product (``None``: it names none).
    ``authorized``: from the NB's register of Zuordnungsermächtigungen, whether the LFN holds one
    for that Bilanzkreis (``None``: the NB's master data keep no register; E_0622 step 60/260
    is then not checked).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=35)
    bilanzkreis: str | None = None
    authorized: bool | None = None


class InboundUtilmd(BaseModel):
    """Fields every inbound UTILMD transaction carries.

    ``sender``/``recipient``: the UNB sender / recipient MP-IDs; ``ide_ref``: IDE+24; ``document_number``:
    BGM 1004; ``document_date``: DTM+137; ``interchange_ref``: UNB 0020; ``message_ref``: UNH
    0062; ``format_version``: the FV in force for the message; ``received_at``: the receipt
    instant at the transport boundary (the ÜT derives from it). ``malo`` may be missing or
    malformed: the workflow answers that with a negative APERAK. ``recipient`` is us (the UNB
    recipient); ``addressed_to`` is set when the message's NAD+MR names someone else, and
    ``sent_as`` when its NAD+MS does (DOMAIN §4: both must match the UNB), which the workflow
    answers with a negative APERAK to the UNB sender too: a message never acts in the name of
    a party other than the one that sent the interchange. ``malformed_dates``: ``(qualifier,
    "value:format")`` of each DTM+92/93 sent in a shape its format does not allow (that date is
    then ``None``), and of a header DTM+137 not in format 303 in UTC; the workflow answers APERAK Z35,
    where an absent date gets Z29.
    ``repeated``: each once-only segment sent again (``"LOC+Z16"``; ``Message.repeated`` and
    ``Transaction.repeated``): the workflow answers APERAK Z40 and decides nothing.
    ``missing_header``: the Muss header segments the message lacks (BGM, DTM+137, NAD+MS,
    NAD+MR): APERAK Z29, nothing decided. ``code_lists``: a NAD+MS/MR code list (3055) that does
    not go with its party's UNB qualifier, as text: APERAK Z39, nothing decided.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: str
    sender: str
    recipient: str
    malo: str | None = None
    ide_ref: str = Field(min_length=1, max_length=35)
    document_number: str = Field(min_length=1, max_length=35)
    document_date: AwareDatetime | None = None
    interchange_ref: str = Field(min_length=1, max_length=14)
    message_ref: str = Field(min_length=1, max_length=14)
    format_version: FormatVersion
    received_at: AwareDatetime
    addressed_to: str | None = None  # NAD+MR as sent, when it differs from ``recipient`` (UNB)
    sent_as: str | None = None  # NAD+MS as sent, when it differs from ``sender`` (UNB)
    interchange_date: AwareDatetime | None = None  # UNB S004: our APERAK's DTM+171 (AHB-FACTS §5)
    document_code: str | None = None  # BGM 1001 as sent (a mismatch with the PID is a warning)
    malformed_dates: tuple[tuple[str, str], ...] = ()
    repeated: tuple[str, ...] = ()
    missing_header: tuple[str, ...] = ()
    code_lists: tuple[str, ...] = ()


class ReceiveAnmeldung(InboundUtilmd):
    """UTILMD 55001 (consuming MaLo) or 55077 (generating MaLo) from the LFN.

    NB data from the MaLo's supply journal (``gpke.supply``): ``current_supplier`` holds the
    MaLo at Zuordnungsbeginn (the LFA; ``None`` or the sender itself means none);
    ``future_supplier`` is an LFZ confirmed for a later date, whose assignment starting
    ``future_supplier_start`` the Anmeldung supersedes, and ``later_suppliers`` every such
    ``(LFZ, start)`` by start (the first is ``future_supplier``'s; empty: only that one is
    known, as from a caller of before); ``competing_process`` says another
    Anmeldung of the MaLo is being worked on, and ``competing_start``/``competing_next_date``
    become DTM+Z07/Z08 of the 55003; ``assigned_at_start`` is the supplier whose confirmed
    Anmeldung starts exactly at ``zuordnungsbeginn`` (a competitor only with
    ``GpkeConfig.confirmed_assignment_blocks``; else it is the LFA, ``current_supplier``).
    ``malo_key_generation`` is the number of
    claims in the journal, the generation of ``malo_key`` this Anmeldung binds (see ``keys``).
    From the NB's master data: ``malo_measurement``, ZW6 (pauschale) or ZW7 (gemessene MaLo),
    the STS+7 #2 of a 55002; ``None``: the workflow's default (``GpkeConfig.malo_measurement``).
    A befristete Anmeldung (55001 STS+7 #3 E01/E03, ``fixed_term_reason``) ends at
    ``zuordnungsende`` (DTM+93, then Muss; AHB UTILMD 55001 [10]); otherwise a DTM+93 is ignored.
    A 55077 of Geschäftsvorfall 2 (STS+7 #2 ZW1) is for a Tranche: ``malo`` is then its ID
    (LOC+Z21; ``None`` if the message named none), and ``tranche_malo`` the MaLo the Tranche
    belongs to, from the NB's master data (``None``: the Tranche is unknown, APERAK Z14), with
    ``tranche_basis``/``tranche_percent``, how its size is formed (the 55078 names it in SG8 Z15;
    see ``Suppliers``).
    A 55001 with STS+7 #2 ZAP is for a ruhende MaLo: ``malo`` is its ID (LOC+Z22), and
    ``kundenanlage_malo`` the MaLo of the Kundenanlage it lies in (LOC+Z16; the 55002 names both);
    ``kundenanlage_formed``: the Anmeldung orders a new Kundenanlage (SG8 product 9991000002769
    with a "Bildung" property), E_0622 step 19. A 55077 of Geschäftsvorfall 3 (ZW2) asks for
    ``requested_share`` of the MaLo (its SG8 product Tranchengröße, a percentage; ``None``: it
    names none). From master data (``Suppliers``, E_0622 steps
    16–28): the ruhende MaLo's ``resting_generating``/``resting_ims``/``resting_netzlokationen``
    and the Kundenanlage MaLo's ``kundenanlage_is_kua``/``kundenanlage_virtual_summenzaehler``/
    ``kundenanlage_netzlokationen`` (``None``: not known, not checked), and of those the
    ``(ID, MSB, role)`` the master data give the MSB of (``kundenanlage_netzlokation_msbs``: the
    55002 names them, LOC+Z18 and SG8 ZD7).
    ``product_packages``: the Produktpakete it asks for, by priority (empty: none, APERAK Z29).
    From the MaLo's master data (``Suppliers``): ``malo_in_operation_from``, a Neuanlage's
    Inbetriebnahme, and ``malo_out_of_market_from``, from when it takes no part in market
    communication (E_0622 steps 50/220 and 30), ``malo_quarter_hour_metering``, whether a
    generating MaLo's metering is quarter-hourly (step 250; ``None``: not known),
    ``malo_eeg_kwkg``/``malo_ausfallverguetung``, whether it is an EEG/KWKG MaLo and in the
    Ausfallvergütung now (its lead times, steps 400-440, 600-630, 800-810);
    ``malo_msb``/``malo_msb_role``/``malo_gmsb``/``malo_messlokationen``, its
    Messstellenbetreiber and Messlokationen (a 55002 names them).
    """

    kind: Literal["anmeldung"] = "anmeldung"
    pid: Literal["55001", "55077"]
    zuordnungsbeginn: AwareDatetime | None = None  # DTM+92; missing: APERAK Z29 (AHB-FACTS §3)
    transaction_reason: str | None = None
    transaction_detail: str | None = None  # STS+7 C556#2: ZW4/ZAP (55001), ZW0/ZW1/ZW2 (55077)
    fixed_term_reason: str | None = None  # STS+7 C556#3 E01/E03: a befristete Anmeldung (55001)
    zuordnungsende: AwareDatetime | None = None  # DTM+93: where a befristete Anmeldung ends
    customer_name: tuple[str, ...] | None = None  # NAD+Z09 C080 as received (the 55010 repeats it)
    current_supplier: str | None = None
    future_supplier: str | None = None
    future_supplier_start: AwareDatetime | None = None
    later_suppliers: tuple[tuple[str, AwareDatetime], ...] = ()
    competing_process: bool = False
    competing_start: AwareDatetime | None = None
    competing_next_date: AwareDatetime | None = None
    assigned_at_start: str | None = None
    malo_key_generation: int = Field(default=0, ge=0)
    malo_measurement: Measurement | None = None
    tranche_malo: str | None = None
    malo_unknown: bool = False  # the master data list the NB's MaLos, not this one (APERAK Z14)
    tranche_basis: TrancheBasis | None = None
    tranche_percent: str | None = None
    kundenanlage_malo: str | None = None
    product_packages: tuple[ProductPackage, ...] = ()
    #: What the AHB forbids in its packages, ``(missing|format|code, text)`` (APERAK Z29/Z35/Z39).
    package_problems: tuple[tuple[str, str], ...] = ()
    malo_in_operation_from: AwareDatetime | None = None
    malo_out_of_market_from: AwareDatetime | None = None
    malo_quarter_hour_metering: bool | None = None
    malo_eeg_kwkg: bool | None = None
    malo_ausfallverguetung: bool | None = None
    kundenanlage_formed: bool = False
    requested_share: str | None = None
    resting_generating: bool | None = None
    resting_ims: bool | None = None
    resting_netzlokationen: tuple[str, ...] | None = None
    kundenanlage_is_kua: bool | None = None
    kundenanlage_virtual_summenzaehler: bool | None = None
    kundenanlage_netzlokationen: tuple[str, ...] | None = None
    kundenanlage_netzlokation_msbs: tuple[tuple[str, str, str], ...] = ()
    malo_msb: str | None = None
    malo_msb_role: MsbRole | None = None
    malo_gmsb: str | None = None
    malo_messlokationen: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _competing_dates(self) -> ReceiveAnmeldung:
        # 55003 A06 / 55080 A45 carry DTM+Z07/Z08 as Muss (AHB-FACTS §3 [358]/[355]).
        if self.competing_process and (self.competing_start is None or self.competing_next_date is None):
            raise ValueError("competing_process needs competing_start and competing_next_date (DTM+Z07/Z08)")
        return self

    @model_validator(mode="after")
    def _tranche_size(self) -> ReceiveAnmeldung:
        # As ``Suppliers`` checks them (SG8 Z15 of the 55078: QTY+11 with ZD1 only).
        if self.tranche_basis is not None or self.tranche_percent is not None:
            basis, percent = tranche_size(self.tranche_basis, self.tranche_percent)
            object.__setattr__(self, "tranche_basis", basis)
            object.__setattr__(self, "tranche_percent", percent)
        return self


class ReceiveAbmeldung(InboundUtilmd):
    """UTILMD 55004 (Abmeldung, Lieferende) from a supplier.

    From the MaLo's supply journal: ``current_supplier`` is the sender when it holds an
    assignment the Abmeldung can end, else who supplies on the day before the end;
    ``already_ended``: the sender's supply already ends at exactly that date (confirmed before),
    ``ended_reason`` the STS+7 #1 of the Abmeldung that ended it (``None``: another supplier's
    start ended it, or the journal predates the field), ``still_assigned`` that the sender holds
    the MaLo at that date all the same (assigned again; E_0607 steps 110/590).
    ``transaction_detail`` is STS+7 #2: ZW4 verbrauchende, ZAP ruhende, ZW3 erzeugende MaLo,
    ZW5 Tranche (its ID, LOC+Z21, is ``malo`` then); E_0607 decides the last two by other rules.
    An Aufhebung einer zukünftigen Zuordnung (STS+7 #1 ZG9/ZH1/ZH2) carries ``zuordnungsbeginn``
    (DTM+92: the start the NB confirmed, which it cancels) instead of ``zuordnungsende``; the
    supply then ends at that start (``validation.abmeldung_date``), and ``cancels_start`` says
    the sender's assignment begins exactly then (E_0607 steps 90/570: else A06/A23).
    ``malo_esv_from``: from the MaLo's master data, when its last Ersatz-/Grundversorgung began
    (E_0607 step 80 for an Abmeldung "Ende der ESV ohne Folgelieferung"; ``None``: not known).
    ``malo_resting``: for an Abmeldung with STS+7 ZAP, whether the supply it ends was started for
    a ruhende MaLo of a Kundenanlage (the journal's ``started`` fact; E_0607 step 30; ``None``:
    not known).
    """

    kind: Literal["abmeldung"] = "abmeldung"
    pid: Literal["55004"] = "55004"
    zuordnungsende: AwareDatetime | None = None  # DTM+93; missing: APERAK Z29 (AHB-FACTS §3)
    zuordnungsbeginn: AwareDatetime | None = None  # DTM+92 of an Aufhebung (ZG9/ZH1/ZH2)
    transaction_reason: str | None = None
    transaction_detail: str | None = None
    current_supplier: str | None = None
    already_ended: bool = False
    ended_reason: str | None = None
    still_assigned: bool = False
    cancels_start: bool = False
    malo_esv_from: AwareDatetime | None = None
    malo_resting: bool | None = None


class ReceiveLfaAnswer(InboundUtilmd):
    """UTILMD 55011 (Bestätigung) / 55012 (Ablehnung) from the LFA to our 55010.

    ``request_ref`` is its RFF+TN (our 55010's IDE); ``answer_code``/``answer_ebd`` its STS+E01
    code of E_0624 (required; a 55012's is repeated as STS+Z35 in the 55003). Since FV2504 the
    answer has no SG5, so ``malo`` is normally ``None`` (AHB-FACTS §2). ``transaction_reason``:
    its STS+7 #1 (E01/E03, Muss: missing is APERAK Z29, another code Z39), not needed to decide;
    its #2 is not read (the AHB gives the answer's C556#2 no status).
    """

    kind: Literal["lfa_answer"] = "lfa_answer"
    pid: Literal["55011", "55012"]
    request_ref: str
    answer_code: str | None = None
    answer_ebd: str | None = None
    zuordnungsende: AwareDatetime | None = None
    transaction_reason: str | None = None


class ReceiveAcknowledgement(BaseModel):
    """A CONTRL or APERAK from a market partner on one of our outbound interchanges.

    ``referenced_interchange_ref`` is our 0020 (CONTRL UCI, APERAK RFF+ACE), by which ingestion
    found the process; ``positive`` is CONTRL 0083 = 7 / APERAK BGM 312; ``codes`` the 0085 or
    ERC codes of a rejection.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ack"] = "ack"
    message_type: Literal["CONTRL", "APERAK"]
    sender: str
    referenced_interchange_ref: str = Field(min_length=1, max_length=14)
    positive: bool
    codes: tuple[str, ...] = ()
    interchange_ref: str = Field(min_length=1, max_length=14)
    message_ref: str = Field(min_length=1, max_length=14)
    received_at: AwareDatetime
    #: What in our interchange it names: UNH 0062s (CONTRL UCM, APERAK RFF+ACW), BGM 1004s
    #: (APERAK RFF+AGO), IDEs (APERAK RFF+TN); each must be one of ours there.
    messages: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()
    transactions: tuple[str, ...] = ()


class LfaAnswerDeadlinePassed(BaseModel):
    """Compensation when 09:00 WT1 passed without an LFA answer: the LFA is deemed to agree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["lfa_deadline"] = "lfa_deadline"
    due_at: AwareDatetime


class DecisionDeadlinePassed(BaseModel):
    """11:00 WT1, the NB's own Frist for its answer to the LFN (row 8), passed while the process
    awaits an operator (``LfaNotReached``): the miss is recorded; nothing is sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["decision_deadline"] = "decision_deadline"
    due_at: AwareDatetime


class DeemLfaAgreement(BaseModel):
    """An operator's decision for a process in ``awaiting_operator`` (its 55010 was rejected by
    the LFA and 09:00 passed): go on as if the LFA agreed, i.e. 55002/55078 and 55037 now.

    ``decided_at`` stamps the answers (workflows read no clock); ``reason`` is stored in the
    event for audit. Any other status refuses it (``WorkflowError``, nothing written).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["deem_lfa_agreement"] = "deem_lfa_agreement"
    decided_at: AwareDatetime
    reason: str = Field(min_length=1)


def _remark(text: str) -> str:
    """An FTX+ACB text: trimmed, not empty, in the interchange charset (UNOC = ISO 8859-1)."""
    text = text.strip()
    if not text:
        raise ValueError("the text is empty; it goes to the LFN in FTX+ACB and must say why")
    try:
        text.encode("iso-8859-1")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"character {text[exc.start]!r} at {exc.start} cannot be sent: UTILMD uses UNOC (ISO 8859-1)"
        ) from None
    return text


class RejectAnmeldung(BaseModel):
    """An operator's decision for a process in ``awaiting_operator`` (its 55010 was rejected by
    the LFA and 09:00 passed): reject the Anmeldung, 55003/55080 with E_0623 A99 ("Sonstiges")
    and ``text`` in FTX+ACB (Muss with A99, AHB 55003 [23] / 55080 [24]).

    ``text`` is what the LFN reads: at most 2,560 characters (five FTX parts of 512), ISO 8859-1
    only. A99 is usable until the "Nutzungsmöglichkeit Ende" of the format version in force at
    ``decided_at`` (01.04.2027 under FV2610); later, or in any status but ``awaiting_operator``,
    the workflow refuses it (``WorkflowError``, nothing written).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["reject_anmeldung"] = "reject_anmeldung"
    decided_at: AwareDatetime
    text: Annotated[str, AfterValidator(_remark), Field(max_length=2560)]


def _tranche_id(value: str) -> str:
    if not is_valid_malo_id(value):
        raise ValueError(f"{value!r} is no Tranche-ID (a MaLo-ID's format with its check digit, [950])")
    return value


class FormTranche(BaseModel):
    """An operator's decision for a Geschäftsvorfall 3 (a 55077 with STS+7 #2 ZW2) awaiting its
    Tranche (status ``awaiting_operator``): the NB has formed Tranche ``tranche`` (its ID) with
    ``percent`` of the MaLo for the LFN (``None``: the share the Anmeldung asked for; refused if
    it named none). The 55078 confirms with E_0623 A56, or A55 with
    ``shares_missing`` (a share stays in the NB's Bilanzkreis of a direktvermarktungspflichtige
    MaLo, E_0623 steps 530/540), and names the MaLo (LOC+Z16), the Tranche (LOC+Z21) and its
    share (SG8 Z15, QTY+11 with CCI+Z37++ZD1). The MaLo's claim is released; the NB's master
    data name the Tranche from then on (``tranche_of``, its supplier), which decide later
    Anmeldungen of it. ``reason`` is kept for audit. Any other process or status refuses it
    (``WorkflowError``, nothing written).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["form_tranche"] = "form_tranche"
    decided_at: AwareDatetime
    tranche: Annotated[str, AfterValidator(_tranche_id)]
    percent: Annotated[str, BeforeValidator(str), AfterValidator(tranche_percent)] | None = None
    shares_missing: bool = False
    reason: str = Field(min_length=1)


class RejectTrancheRequest(BaseModel):
    """An operator's decision for a Geschäftsvorfall 3 awaiting its Tranche: the percentage the LFN
    asked for is not free at the MaLo (E_0623 step 520), 55080 with A54. ``reason`` is kept for
    audit. Any other process or status refuses it (``WorkflowError``, nothing written)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["reject_tranche_request"] = "reject_tranche_request"
    decided_at: AwareDatetime
    reason: str = Field(min_length=1)


GpkeCommand = Annotated[
    ReceiveAnmeldung
    | ReceiveAbmeldung
    | ReceiveLfaAnswer
    | ReceiveAcknowledgement
    | LfaAnswerDeadlinePassed
    | DecisionDeadlinePassed
    | DeemLfaAgreement
    | RejectAnmeldung
    | FormTranche
    | RejectTrancheRequest,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(GpkeCommand)


def parse_command(data: Mapping[str, Any]) -> BaseModel:
    """A command from plain data with a ``kind`` key; raises ``InvalidArgument`` naming the fields."""
    try:
        result: BaseModel = _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise InvalidArgument(f"invalid GPKE command: {exc}") from None
    return result
