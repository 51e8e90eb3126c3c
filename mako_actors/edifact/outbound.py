"""Builders for the messages the grid operator sends: UTILMD, APERAK, CONTRL.

Each builder takes a small frozen pydantic model that validates from a plain dict (the outbox
payload) and returns an :class:`OutboundMessage`; :func:`render_outbound` does dict -> bytes in
one call. Segment order follows the MIG group order (header, SG4 IDE/DTM/STS/LOC/RFF/NAD);
what a PID carries and its BGM code come from ``structure`` (AHB-FACTS §1-§3), the APERAK shapes
from AHB-FACTS §5, CONTRL from §6. The UNH version (S009) comes from ``versions`` by the payload's
``format_version`` (else the release in force at its document date; AHB-FACTS §7): an unknown
release raises ``UnsupportedMessageVersion`` instead of sending another release's strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mako_actors.edifact._tokenizer import Segment
from mako_actors.edifact.render import (
    OutboundEnvelope,
    OutboundMessage,
    format_dtm,
    render_interchange,
    seg,
)
from mako_actors.edifact.structure import BGM_DOCUMENT_CODE, allowed_segments, segment_key
from mako_actors.edifact.versions import sending_format_version, unh_version
from mako_actors.errors import InvalidArgument

__all__ = [
    "BILANZKREIS_PRODUCT",
    "Aperak",
    "AperakError",
    "Contrl",
    "ContrlDataElementError",
    "ContrlMessage",
    "ContrlSegmentError",
    "UtilmdMessage",
    "UtilmdTransaction",
    "build_aperak",
    "build_contrl",
    "build_utilmd",
    "render_outbound",
    "set_render_check",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: PIA+5 Produkt-Code of the Bilanzkreis product of a Produktpaket (Codeliste der Konfigurationen,
#: Kap. 6.1.1: in every package of an Anmeldung); its CAV+ZV4 names the Bilanzkreis (an EIC).
BILANZKREIS_PRODUCT = "9991000002082"
#: CAV 7111 of SEQ+ZH0's priorities, first to fifth (S1 FV2504 55001 rows 96-100).
_PRIORITIES = ("Z75", "Z76", "Z77", "Z78", "Z79")


class _Header(BaseModel):
    model_config = _FROZEN

    reference: str = Field(min_length=1, max_length=14)
    document_number: str = Field(min_length=1, max_length=35)
    document_date: datetime
    sender_id: str
    sender_code_list: str = "293"
    recipient_id: str
    recipient_code_list: str = "293"

    def _parties(self) -> list[Segment]:
        return [
            seg("NAD", "MS", [self.sender_id, "", self.sender_code_list]),
            seg("NAD", "MR", [self.recipient_id, "", self.recipient_code_list]),
        ]


class UtilmdTransaction(BaseModel):
    """One ``IDE+24`` group.

    ``transaction_reason``/``transaction_reason_detail``/``transaction_reason_fixed_term`` are
    STS+7 C556 #1/#2/#3 (AHB-FACTS §3; #3 E01/E03 marks a befristete Anmeldung and its answer);
    answers set ``answer_code``+``answer_ebd`` (STS+E01), ``request_ref`` (RFF+TN) and optionally
    the LFA's answer (STS+Z35) and another party (NAD+VY). ``anmeldung_uet`` is DTM+154 (the ÜT
    of the LFN's Lieferanmeldung, format 102, 55010). ``customer_name`` is C080 of NAD+Z09:
    ``(last, first)`` for a person (3045 Z01), or all components as received (Name 1-5, 3045).
    ``malo_qualifier`` is the LOC 3227 of ``malo`` (Z22: ruhende MaLo in a 55010 with ZAP, AHB-FACTS
    §2). ``tranche`` is a Tranche's ID (LOC+Z21; a 55077 of Geschäftsvorfall 2 names one, and every
    message of its process does; a 55080 names it in STS+Z35 and RFF+Z20). ``resting_malo`` is a
    ruhende MaLo's ID beside ``malo`` (LOC+Z22 after LOC+Z16: a 55002 for a ruhende MaLo).
    ``remark`` is FTX+ACB (Bemerkung; Muss in a 55003/55080 with A99, at most 2,560 characters).
    ``product_package`` is RFF+Z60 of an answer (55002/55078: the Produktpaket the NB plans).
    ``product_packages`` are an Anmeldung's Produktpakete (``(Produktpaket-ID, Bilanzkreis EIC)``,
    at most five, by priority): SG8 ``SEQ+Z79`` with the Bilanzkreis product (``PIA+5``,
    ``CCI+Z66``, ``CAV+ZV4``), then one ``SEQ+ZH0`` each (``CCI+Z65+++Z01``; ``CAV+Z75``… when
    there are several). A 55002/55078 carries SG8 "Daten der Marktlokation" (``SEQ+Z98``); with ``msb``
    (MP-ID) and ``msb_role`` (Z39 grundzuständig, Z40 wettbewerblich, Z41 Auffang-MSB) its SG10
    names the MSB, and each of ``messlokationen`` travels as ``LOC+Z17`` and as an SG8
    ``SEQ+ZF3`` with its MSB and ``gmsb`` (the grundzuständige MSB). A 55078 for a Tranche carries
    SG8 "Daten der Tranche" (``SEQ+Z15``) when ``tranche_basis`` says how its size is formed:
    ``CCI+Z37++ZD1`` with ``QTY+11:<tranche_percent>:P1`` (a percentage of the MaLo), or
    ``CCI+Z37++ZD2`` (an Aufteilungsfaktor). ``netzlokationen`` (``(ID, MSB MP-ID, MSB role)``
    each; a 55002 for a ruhende MaLo, Muss [96] ∧ [688]) travel as ``LOC+Z18`` (the first SG5)
    and as SG8 ``SEQ+ZD7`` with ``RFF+Z32`` and the MSB (before ``SEQ+Z98``).
    Segments a PID does not carry per the structure table (e.g. ``LOC+Z16`` in 55003, AHB-FACTS §2)
    are left out when rendering.
    """

    model_config = _FROZEN

    ide_ref: str = Field(min_length=1, max_length=35)
    pid: str = Field(min_length=5, max_length=5)
    malo: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    processing_start: datetime | None = None  # DTM+Z07: Lieferbeginndatum in Bearbeitung
    next_processing_date: datetime | None = None  # DTM+Z08: Datum für nächste Bearbeitung
    anmeldung_uet: date | None = None  # DTM+154 (format 102)
    transaction_reason: str | None = None
    transaction_reason_detail: str | None = None
    transaction_reason_fixed_term: str | None = None  # STS+7 C556 #3: befristete Anmeldung
    answer_code: str | None = None
    answer_ebd: str | None = None
    lfa_answer_code: str | None = None
    lfa_answer_ebd: str | None = None
    request_ref: str | None = None
    other_party_id: str | None = None
    other_party_code_list: str = "293"
    customer_name: tuple[str, ...] | None = None
    malo_qualifier: str = "Z16"
    remark: str | None = Field(default=None, min_length=1, max_length=2560)
    tranche: str | None = None
    resting_malo: str | None = None
    netzlokationen: tuple[tuple[str, str, Literal["Z39", "Z40", "Z41"]], ...] | None = None
    product_package: str | None = None
    product_packages: tuple[tuple[str, str], ...] | None = Field(default=None, min_length=1, max_length=5)
    messlokationen: tuple[str, ...] | None = None
    msb: str | None = None
    msb_role: Literal["Z39", "Z40", "Z41"] | None = None
    gmsb: str | None = None
    tranche_basis: Literal["ZD1", "ZD2"] | None = None
    tranche_percent: str | None = Field(default=None, pattern=r"^[0-9]{1,2}(\.[0-9]{1,2})?$")

    @model_validator(mode="after")
    def _answer_pairs(self) -> UtilmdTransaction:
        if (self.answer_code is None) != (self.answer_ebd is None):
            raise ValueError("answer_code and answer_ebd go together (STS+E01++code:EBD)")
        if (self.tranche_basis == "ZD1") != (self.tranche_percent is not None):
            raise ValueError("tranche_percent goes with tranche_basis ZD1 (QTY+11 of SG8 Z15), only there")
        return self


class UtilmdMessage(_Header):
    """A UTILMD message (request or answer).

    ``document_code`` is BGM 1001; left out, it comes from the PID (AHB-FACTS §1).
    ``format_version`` selects the UNH version (AHB-FACTS §7); see ``_unh``.
    """

    document_code: str | None = None
    release: str = "11A"
    association_code: str = "S2.1"
    format_version: str | None = None
    transactions: tuple[UtilmdTransaction, ...] = Field(min_length=1)


class AperakError(BaseModel):
    """One SG4 error of an APERAK 313 (AHB-FACTS §5, shape M).

    ``code`` is ERC 9321; ``text`` what deviates (``FTX+ABO``, right after ERC);
    ``description`` the error description (``FTX+AAO``, defaults to the ERC code's name from
    the MIG 2.1i code list); ``location`` the AHB location of the error (``FTX+Z02``). Z02 is
    required with Z29 (§5 [5]): a Z29 without ``location`` (e.g. an older stored payload) gets
    the first segment named in ``text`` (``LOC+Z16``), else ``IDE+24`` (the transaction).
    """

    model_config = _FROZEN

    code: str = Field(min_length=1)
    text: str = ""
    description: str = ""
    location: str = ""


# ERC 9321 names, APERAK MIG 2.1i code list (AHB-FACTS §5; H for FV2504/2510/2604).
ERC_NAMES: dict[str, str] = {
    "Z10": "ID unbekannt",
    "Z14": "Objekt im IT-System nicht gefunden",
    "Z15": "ID nicht eindeutig",
    "Z16": "Objekt nicht mehr im Netzgebiet",
    "Z17": "Absender ist zum angegebenen Zeitintervall/Zeitpunkt dem Objekt nicht zugeordnet",
    "Z18": "Empfänger ist zum angegebenen Zeitintervall/Zeitpunkt dem Objekt nicht zugeordnet",
    "Z29": "Erforderliche Angabe für diesen Anwendungsfall fehlt",
    "Z31": "Geschäftsvorfall wird vom Empfänger zurückgewiesen",
    "Z35": "Format nicht eingehalten",
    "Z37": "Geschäftsvorfall darf vom Sender nicht gesendet werden",
    "Z39": "Code nicht aus erlaubtem Wertebereich",
    "Z40": "Wiederholbarkeit überschritten",
    "Z41": "Zeitangabe unplausibel",
}


class Aperak(_Header):
    """APERAK: positive (BGM 312) without ``errors``, negative (313) with at least one.

    References (AHB-FACTS §5): ``RFF+ACE`` the answered interchange's 0020 with ``DTM+171`` its
    UNB date, ``RFF+AGO`` its BGM 1004, ``RFF+TN`` its IDE (Vorgangsnummer), ``RFF+ACW``
    (313 only) its UNH 0062 (``referenced_message_ref``).
    """

    positive: bool
    referenced_interchange_ref: str
    referenced_date: datetime
    referenced_document_number: str | None = None
    referenced_transaction_ref: str | None = None
    referenced_message_ref: str | None = None
    errors: tuple[AperakError, ...] = ()
    release: str = "07B"
    association_code: str = "2.1i"
    format_version: str | None = None

    @model_validator(mode="after")
    def _errors_match(self) -> Aperak:
        if self.positive == bool(self.errors):
            raise ValueError("a positive APERAK has no errors; a negative one needs at least one")
        return self


class ContrlDataElementError(BaseModel):
    """One UCD line: ``UCD+<0085>+<0098>[:<0104>]``, a data element in error (AHB-FACTS §6).

    ``element`` counts the segment tag as 1; ``component`` (from 1) only for a composite.
    """

    model_config = _FROZEN

    error_code: str = Field(min_length=1)
    element: int = Field(ge=1)
    component: int | None = Field(default=None, ge=1)


class ContrlSegmentError(BaseModel):
    """One UCS line and its UCD lines: ``UCS+<0096>[+<0085>]``, a segment in error inside a
    message, ``position`` counted from its UNH as 1 (AHB-FACTS §6: Muss when the error is not in
    UNH or UNT). ``error_code`` is a segment-level 0085; element errors go in ``elements``."""

    model_config = _FROZEN

    position: int = Field(ge=2)
    error_code: str | None = None
    elements: tuple[ContrlDataElementError, ...] = ()

    @model_validator(mode="after")
    def _names_an_error(self) -> ContrlSegmentError:
        if self.error_code is None and not self.elements:
            raise ValueError("a UCS line needs a segment error code (0085) or a data element error (UCD)")
        return self


class ContrlMessage(BaseModel):
    """One UCM line: a received message (0062 + S009 as received) and our action on it.

    A message-level syntax error is ``action`` 4 with ``error_code`` (0085) and
    ``error_segment`` (0013, ``UNH`` or ``UNT``), e.g. a wrong UNT count ``+4+29+UNT``
    (AHB-FACTS §6). An error in another segment of the message is ``action`` 4 with
    ``segment_errors`` (UCS/UCD lines) and no 0085/0013 on the UCM line.
    """

    model_config = _FROZEN

    reference: str
    message_type: str
    version: str = "D"
    release: str
    agency: str = "UN"
    association_code: str
    action: Literal["7", "4"]
    error_code: str | None = None
    error_segment: Literal["UNH", "UNT"] | None = None
    segment_errors: tuple[ContrlSegmentError, ...] = ()

    @model_validator(mode="after")
    def _segment_needs_code(self) -> ContrlMessage:
        if self.error_segment is not None and self.error_code is None:
            raise ValueError("error_segment (0013) needs an error_code (0085)")
        if self.segment_errors and self.action != "4":
            raise ValueError("a message with segment errors (UCS) is rejected: action 4")
        return self


class Contrl(BaseModel):
    """CONTRL for one received interchange; ``action`` 7 = acknowledged, 4 = rejected.

    ``error_code``/``error_segment`` (0085/0013 on UCI) are for interchange-level errors only;
    message-level errors go in ``messages`` (UCM) (AHB-FACTS §6).
    """

    model_config = _FROZEN

    reference: str = Field(min_length=1, max_length=14)
    interchange_ref: str
    interchange_sender_id: str
    interchange_sender_qualifier: str = "500"
    interchange_recipient_id: str
    interchange_recipient_qualifier: str = "500"
    action: Literal["7", "4"]
    error_code: str | None = None
    error_segment: Literal["UNA", "UNB", "UNZ"] | None = None
    messages: tuple[ContrlMessage, ...] = ()
    release: str = "3"
    association_code: str = "2.0b"
    format_version: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Contrl:
        if self.error_segment is not None and self.error_code is None:
            raise ValueError("error_segment (0013) needs an error_code (0085)")
        if self.action == "7" and any(m.action == "4" for m in self.messages):
            # AHB-FACTS §6: a Syntaxfehlermeldung has UCI 0083 = 4 (7 = "keine Syntaxfehler").
            raise ValueError("a CONTRL with a rejected message (UCM 4) needs UCI action 4")
        return self


def _unh(m: UtilmdMessage | Aperak | Contrl, message_type: str) -> tuple[str, str]:
    """UNH release (0052) and association code (0057) of ``m`` (AHB-FACTS §7).

    With ``format_version``: from the table (``UnsupportedMessageVersion`` if unknown), and an
    explicitly given ``release``/``association_code`` must agree. Without: explicit values as
    given, else the release in force at ``document_date`` (``sending_format_version``).
    """
    explicit = {"release", "association_code"} & m.model_fields_set
    fv = m.format_version
    if fv is None and explicit:
        return m.release, m.association_code
    if fv is None:
        if isinstance(m, Contrl):
            return m.release, m.association_code
        fv = str(sending_format_version(m.document_date))
    v = unh_version(message_type, fv)
    if explicit and (m.release, m.association_code) != (v.release, v.association_code):
        raise InvalidArgument(
            f"{message_type} {m.release}:{m.association_code} contradicts {fv} ({v})"
        )
    return v.release, v.association_code


def _transaction(t: UtilmdTransaction) -> list[Segment]:
    """The SG4 group of ``t`` in MIG order, without what its PID does not carry (§2, §3)."""
    out: list[Segment] = [seg("IDE", "24", t.ide_ref)]
    if t.start is not None:
        out.append(seg("DTM", ["92", format_dtm(t.start), "303"]))
    if t.end is not None:
        out.append(seg("DTM", ["93", format_dtm(t.end), "303"]))
    if t.anmeldung_uet is not None:
        out.append(seg("DTM", ["154", t.anmeldung_uet.strftime("%Y%m%d"), "102"]))
    if t.processing_start is not None:
        out.append(seg("DTM", ["Z07", format_dtm(t.processing_start), "303"]))
    if t.next_processing_date is not None:
        out.append(seg("DTM", ["Z08", format_dtm(t.next_processing_date), "303"]))
    if t.transaction_reason is not None:
        reasons: tuple[str | None, ...] = (t.transaction_reason, t.transaction_reason_detail)
        if t.transaction_reason_fixed_term is not None:
            reasons += (t.transaction_reason_fixed_term,)
        out.append(seg("STS", "7", "", *reasons))
    if t.answer_code is not None:
        out.append(seg("STS", "E01", "", [t.answer_code, t.answer_ebd or ""]))
    # A 55080 names its object in STS+Z35 C556#2 (ZW3 MaLo / ZW5 Tranche) and RFF+Z18/Z20.
    kind, object_id = ("ZW5", t.tranche) if t.tranche else ("ZW3", t.malo)
    if t.lfa_answer_code is not None:
        # §3: in 55080 the MaLo travels in STS+Z35 C556#2 DE9012, not in LOC+Z16.
        where = [kind, "", "", object_id] if t.pid == "55080" and object_id else None
        out.append(seg("STS", "Z35", "", [t.lfa_answer_code, t.lfa_answer_ebd or ""], where))
    if t.remark is not None:
        out.append(_ftx("ACB", t.remark))
    for nelo, _, _ in t.netzlokationen or ():
        out.append(seg("LOC", "Z18", nelo))  # the first SG5 (S1 55002 rows 104-108)
    if t.malo is not None:
        out.append(seg("LOC", t.malo_qualifier, t.malo))
    if t.resting_malo is not None:
        out.append(seg("LOC", "Z22", t.resting_malo))
    if t.tranche is not None:
        out.append(seg("LOC", "Z21", t.tranche))
    for melo in t.messlokationen or ():
        out.append(seg("LOC", "Z17", melo))  # the last SG5 (55002/55078: after Z22 and Z21)
    out.append(seg("RFF", ["Z13", t.pid]))
    if t.request_ref is not None:
        out.append(seg("RFF", ["TN", t.request_ref]))
    if t.product_package is not None:
        out.append(seg("RFF", ["Z60", t.product_package]))
    if t.product_packages is not None:
        out.extend(_packages(t.product_packages))
    if t.pid in ("55002", "55078"):
        out.extend(_malo_data(t))
    if t.customer_name is not None:
        name = list(t.customer_name)
        out.append(seg("NAD", "Z09", "", "", [*name, "", "", "", "Z01"] if len(name) == 2 else name))
    if t.other_party_id is not None:
        out.append(seg("NAD", "VY", [t.other_party_id, "", t.other_party_code_list]))
        if t.pid == "55080" and object_id:
            # S1 FV2504 55080 [84]: the LFA's SG12 references the MaLo (RFF+Z18) or Tranche (Z20)
            out.append(seg("RFF", ["Z20" if t.tranche else "Z18", object_id]))
    allowed = allowed_segments(t.pid)
    return out if allowed is None else [s for s in out if segment_key(s) in allowed]


def _malo_data(t: UtilmdTransaction) -> list[Segment]:
    """SG8 of a 55002/55078: one group per Netzlokation (with its MSB), Daten der Marktlokation
    (with its MSB), Daten der Tranche, then one group per Messlokation."""
    out: list[Segment] = []
    for nelo, nelo_msb, role in t.netzlokationen or ():
        out += [
            seg("SEQ", "ZD7"), seg("RFF", ["Z32", nelo]), seg("CCI", "", "", "ZB3"),
            seg("CAV", ["Z91", nelo_msb, "", role]),
        ]  # fmt: skip
    out.append(seg("SEQ", "Z98"))
    msb = None
    if t.msb is not None:
        # The second DE7110, "Art der Leistungserbringung" (Muss): Z19, the MSB's service on its
        # own contract, which a gMSB always and a wMSB normally renders; Z20 (a wMSB's
        # Weiterverpflichtung towards the gMSB) no master data say.
        msb = seg("CAV", ["Z91", t.msb, "", t.msb_role or "Z39", "Z19"])
        if not (t.pid == "55002" and t.transaction_reason_detail == "ZAP"):
            # (a 55002's SG10 of SEQ+Z98 is Muss [483], for ZW7 only: a ruhende MaLo's MSB is
            # named with its Messlokationen, SEQ+ZF3, alone)
            out += [seg("CCI", "", "", "ZB3"), msb]
    if t.tranche_basis is not None:
        out.append(seg("SEQ", "Z15"))
        if t.tranche_percent is not None:
            out.append(seg("QTY", ["11", t.tranche_percent, "P1"]))
        out.append(seg("CCI", "Z37", "", t.tranche_basis))
    if msb is None:
        return out
    # the gMSB is the MSB only when that is the grundzuständige; else unknown, left out (and the
    # structure check names the missing CAV+ZF0) rather than naming the wrong party
    gmsb = t.gmsb or (t.msb if t.msb_role in (None, "Z39") else None)
    for melo in t.messlokationen or ():
        out += [seg("SEQ", "ZF3"), seg("RFF", ["Z19", melo]), seg("CCI", "", "", "ZB3"), msb]
        if gmsb is not None:
            out.append(seg("CAV", ["ZF0", gmsb]))
    return out


def _packages(packages: tuple[tuple[str, str], ...]) -> list[Segment]:
    """SG8 of an Anmeldung: each package with its Bilanzkreis product, then their priorities."""
    out: list[Segment] = []
    for package, bilanzkreis in packages:
        out += [
            seg("SEQ", "Z79", package),
            seg("PIA", "5", [BILANZKREIS_PRODUCT, "Z11"]),
            seg("CCI", "Z66"),
            seg("CAV", ["ZV4", "", "", bilanzkreis]),
        ]
    for rank, (package, _) in enumerate(packages):
        out += [seg("SEQ", "ZH0", package), seg("CCI", "Z65", "", "", "Z01")]
        if len(packages) > 1:  # CAV+Z75… is Muss with more than one SEQ+ZH0 ([42])
            out.append(seg("CAV", _PRIORITIES[rank]))
    return out


def build_utilmd(m: UtilmdMessage) -> OutboundMessage:
    """The UTILMD message for ``m`` (body order: BGM, DTM+137, NAD+MS/MR, then per IDE).

    BGM 1001 is ``document_code`` or else the PID's (AHB-FACTS §1; E01 for a PID outside the
    table, e.g. a test's unknown PID); raises ``InvalidArgument`` for PIDs of both families.
    """
    code = m.document_code
    if code is None:
        codes = {BGM_DOCUMENT_CODE.get(t.pid, "E01") for t in m.transactions}
        if len(codes) != 1:
            raise InvalidArgument(
                "UTILMD: PIDs " + ", ".join(sorted({t.pid for t in m.transactions}))
                + " have different BGM document codes; pass document_code"
            )
        (code,) = codes
    body: list[Segment] = [
        seg("BGM", code, m.document_number),
        seg("DTM", ["137", format_dtm(m.document_date), "303"]),
        *m._parties(),
    ]
    for t in m.transactions:
        body.extend(_transaction(t))
    release, association = _unh(m, "UTILMD")
    return OutboundMessage(
        reference=m.reference, message_type="UTILMD", release=release,
        association_code=association, body=tuple(body),
    )


_SEGMENT_REF = re.compile(r"\b[A-Z]{3}\+[A-Z0-9]{1,3}\b")


def _location(e: AperakError) -> str:
    """FTX+Z02 text: the given location; for Z29 (where it is required) a derived one."""
    if e.location or e.code != "Z29":
        return e.location
    found = _SEGMENT_REF.search(e.text)
    return found.group(0) if found else "IDE+24"


def _ftx(qualifier: str, text: str) -> Segment:
    """``FTX+<4451>+++<text>``: C108 holds up to five 512-character parts."""
    return seg("FTX", qualifier, "", "", [text[i : i + 512] for i in range(0, 2560, 512)
                                         if text[i : i + 512]])


def build_aperak(a: Aperak) -> OutboundMessage:
    """The APERAK message for ``a`` in the shape of its BGM (AHB-FACTS §5).

    312: ``RFF+ACE``, ``DTM+171``, ``RFF+AGO``, ``RFF+TN`` (SG2) before the NAD groups.
    313: only ``RFF+ACE``/``DTM+171`` there; after NAD, per error ``ERC``, ``FTX+ABO``, then SG5
    ``RFF+ACW`` (UNH 0062), ``RFF+AGO``, ``RFF+TN``, ``FTX+AAO``, ``FTX+Z02``.
    """
    body: list[Segment] = [
        seg("BGM", "312" if a.positive else "313", a.document_number),
        seg("DTM", ["137", format_dtm(a.document_date), "303"]),
        seg("RFF", ["ACE", a.referenced_interchange_ref]),
        seg("DTM", ["171", format_dtm(a.referenced_date), "303"]),
    ]
    refs: list[Segment] = []
    if a.referenced_document_number is not None:
        refs.append(seg("RFF", ["AGO", a.referenced_document_number]))
    if a.referenced_transaction_ref is not None:
        refs.append(seg("RFF", ["TN", a.referenced_transaction_ref]))
    if a.positive:
        body.extend(refs)
    body.extend(a._parties())
    for e in a.errors:
        body.append(seg("ERC", e.code))
        body.append(_ftx("ABO", e.text or ERC_NAMES.get(e.code, e.code)))
        if a.referenced_message_ref is not None:
            body.append(seg("RFF", ["ACW", a.referenced_message_ref]))
        body.extend(refs)
        body.append(_ftx("AAO", e.description or ERC_NAMES.get(e.code, e.text or e.code)))
        location = _location(e)
        if location:
            body.append(_ftx("Z02", location))
    release, association = _unh(a, "APERAK")
    return OutboundMessage(
        reference=a.reference, message_type="APERAK", release=release,
        association_code=association, body=tuple(body),
    )


def build_contrl(c: Contrl) -> OutboundMessage:
    """The CONTRL message for ``c`` (UCI, then one UCM per listed message with its UCS/UCD)."""
    body: list[Segment] = [
        seg(
            "UCI", c.interchange_ref, [c.interchange_sender_id, c.interchange_sender_qualifier],
            [c.interchange_recipient_id, c.interchange_recipient_qualifier], c.action,
            c.error_code, c.error_segment,
        )
    ]
    for m in c.messages:
        s009 = [m.message_type, m.version, m.release, m.agency, m.association_code]
        body.append(seg("UCM", m.reference, s009, m.action, m.error_code, m.error_segment))
        for e in m.segment_errors:
            body.append(seg("UCS", str(e.position), e.error_code))
            for d in e.elements:
                where = str(d.element) if d.component is None else [str(d.element), str(d.component)]
                body.append(seg("UCD", d.error_code, where))
    release, association = _unh(c, "CONTRL")
    return OutboundMessage(
        reference=c.reference, message_type="CONTRL", release=release,
        association_code=association, body=tuple(body),
    )


RenderCheck = Callable[[str, Mapping[str, Any], bytes], None]
_render_check: RenderCheck | None = None


def set_render_check(check: RenderCheck | None) -> None:
    """Call ``check(message_type, payload, raw)`` on every interchange ``render_outbound``
    returns (``None``: no check).

    For test suites: e.g. ``structure.check_structure`` raising on a deviation, so everything
    a suite renders is checked. Process-wide; not for production use.
    """
    global _render_check
    _render_check = check


def render_outbound(
    message_type: str,
    payload: Mapping[str, Any],
    *,
    envelope: OutboundEnvelope | Mapping[str, Any] | None = None,
) -> bytes:
    """Render one outbound interchange holding one message, from plain data.

    ``message_type`` is ``UTILMD``, ``APERAK`` or ``CONTRL``; ``payload`` is the matching model as
    a dict (``UtilmdMessage``/``Aperak``/``Contrl`` fields). The envelope comes from ``envelope``
    or from ``payload["envelope"]`` (``OutboundEnvelope`` fields). Raises ``InvalidArgument``
    naming the invalid fields; never a pydantic error.
    """
    data = dict(payload)
    env_data = envelope if envelope is not None else data.pop("envelope", None)
    data.pop("envelope", None)
    if env_data is None:
        raise InvalidArgument("render_outbound needs an envelope (argument or payload key)")
    try:
        env = (
            env_data if isinstance(env_data, OutboundEnvelope)
            else OutboundEnvelope.model_validate(dict(env_data))
        )
        kind = message_type.upper()
        if kind == "UTILMD":
            message = build_utilmd(UtilmdMessage.model_validate(data))
        elif kind == "APERAK":
            message = build_aperak(Aperak.model_validate(data))
        elif kind == "CONTRL":
            message = build_contrl(Contrl.model_validate(data))
        else:
            raise InvalidArgument(
                f"unknown outbound message type {message_type!r}; use UTILMD, APERAK or CONTRL"
            )
    except ValidationError as exc:
        raise InvalidArgument(f"invalid {message_type} payload: {exc}") from None
    raw = render_interchange(env, [message])
    if _render_check is not None:
        _render_check(message_type, payload, raw)
    return raw
