"""Builders for the messages the grid operator sends: UTILMD, APERAK, CONTRL.

Each builder takes a small frozen pydantic model that validates from a plain dict (the outbox
payload) and returns an :class:`OutboundMessage`; :func:`render_outbound` does dict -> bytes in
one call. Segment order follows the MIG group order (header, SG4 IDE/DTM/STS/LOC/RFF/NAD). The
default MIG versions (0057) are those of FV2504 †; pass ``association_code`` per format version.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
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
from mako_actors.errors import InvalidArgument

__all__ = [
    "Aperak",
    "AperakError",
    "Contrl",
    "ContrlMessage",
    "UtilmdMessage",
    "UtilmdTransaction",
    "build_aperak",
    "build_contrl",
    "build_utilmd",
    "render_outbound",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


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
    """One ``IDE+24`` group. Requests set ``transaction_reason`` (STS+7); answers set
    ``answer_code``+``answer_ebd`` (STS+E01), ``request_ref`` (RFF+TN) and optionally the LFA's
    answer (STS+Z35) and another party (NAD+VY)."""

    model_config = _FROZEN

    ide_ref: str = Field(min_length=1, max_length=35)
    pid: str = Field(min_length=5, max_length=5)
    malo: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    processing_start: datetime | None = None  # DTM+Z07: Lieferbeginndatum in Bearbeitung
    next_processing_date: datetime | None = None  # DTM+Z08: Datum für nächste Bearbeitung
    transaction_reason: str | None = None
    answer_code: str | None = None
    answer_ebd: str | None = None
    lfa_answer_code: str | None = None
    lfa_answer_ebd: str | None = None
    request_ref: str | None = None
    other_party_id: str | None = None
    other_party_code_list: str = "293"
    customer_name: tuple[str, str] | None = None

    @model_validator(mode="after")
    def _answer_pairs(self) -> UtilmdTransaction:
        if (self.answer_code is None) != (self.answer_ebd is None):
            raise ValueError("answer_code and answer_ebd go together (STS+E01++code:EBD)")
        return self


class UtilmdMessage(_Header):
    """A UTILMD message (request or answer); ``document_code`` is BGM 1001 per AHB †."""

    document_code: str = "E01"
    release: str = "11A"
    association_code: str = "S2.1"
    transactions: tuple[UtilmdTransaction, ...] = Field(min_length=1)


class AperakError(BaseModel):
    """One ERC code with its explanatory FTX text."""

    model_config = _FROZEN

    code: str = Field(min_length=1)
    text: str = ""


class Aperak(_Header):
    """APERAK: positive (BGM 312) without ``errors``, negative (313) with at least one.

    References †: ``RFF+ACE`` the answered interchange's 0020 with ``DTM+171`` its date, ``RFF+AGO``
    its BGM 1004, ``RFF+TN`` its IDE.
    """

    positive: bool
    referenced_interchange_ref: str
    referenced_date: datetime
    referenced_document_number: str | None = None
    referenced_transaction_ref: str | None = None
    errors: tuple[AperakError, ...] = ()
    release: str = "07B"
    association_code: str = "2.1i"

    @model_validator(mode="after")
    def _errors_match(self) -> Aperak:
        if self.positive == bool(self.errors):
            raise ValueError("a positive APERAK has no errors; a negative one needs at least one")
        return self


class ContrlMessage(BaseModel):
    """One UCM line: a received message (0062 + S009 as received) and our action on it.

    A message-level syntax error is ``action`` 4 with ``error_code`` (0085) and
    ``error_segment`` (0013, ``UNH`` or ``UNT``), e.g. a wrong UNT count ``+4+29+UNT``
    (AHB-FACTS §6).
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

    @model_validator(mode="after")
    def _segment_needs_code(self) -> ContrlMessage:
        if self.error_segment is not None and self.error_code is None:
            raise ValueError("error_segment (0013) needs an error_code (0085)")
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
    association_code: str = "2.0b"

    @model_validator(mode="after")
    def _consistent(self) -> Contrl:
        if self.error_segment is not None and self.error_code is None:
            raise ValueError("error_segment (0013) needs an error_code (0085)")
        if self.action == "7" and any(m.action == "4" for m in self.messages):
            # AHB-FACTS §6: a Syntaxfehlermeldung has UCI 0083 = 4 (7 = "keine Syntaxfehler").
            raise ValueError("a CONTRL with a rejected message (UCM 4) needs UCI action 4")
        return self


def build_utilmd(m: UtilmdMessage) -> OutboundMessage:
    """The UTILMD message for ``m`` (body order: BGM, DTM+137, NAD+MS/MR, then per IDE)."""
    body: list[Segment] = [
        seg("BGM", m.document_code, m.document_number),
        seg("DTM", ["137", format_dtm(m.document_date), "303"]),
        *m._parties(),
    ]
    for t in m.transactions:
        body.append(seg("IDE", "24", t.ide_ref))
        if t.start is not None:
            body.append(seg("DTM", ["92", format_dtm(t.start), "303"]))
        if t.end is not None:
            body.append(seg("DTM", ["93", format_dtm(t.end), "303"]))
        if t.processing_start is not None:
            body.append(seg("DTM", ["Z07", format_dtm(t.processing_start), "303"]))
        if t.next_processing_date is not None:
            body.append(seg("DTM", ["Z08", format_dtm(t.next_processing_date), "303"]))
        if t.transaction_reason is not None:
            body.append(seg("STS", "7", "", t.transaction_reason))
        if t.answer_code is not None:
            body.append(seg("STS", "E01", "", [t.answer_code, t.answer_ebd or ""]))
        if t.lfa_answer_code is not None:
            body.append(seg("STS", "Z35", "", [t.lfa_answer_code, t.lfa_answer_ebd or ""]))
        if t.malo is not None:
            body.append(seg("LOC", "Z16", t.malo))
        body.append(seg("RFF", ["Z13", t.pid]))
        if t.request_ref is not None:
            body.append(seg("RFF", ["TN", t.request_ref]))
        if t.customer_name is not None:
            last, first = t.customer_name
            body.append(seg("NAD", "Z09", "", "", [last, first, "", "", "", "Z01"]))
        if t.other_party_id is not None:
            body.append(seg("NAD", "VY", [t.other_party_id, "", t.other_party_code_list]))
    return OutboundMessage(
        reference=m.reference, message_type="UTILMD", release=m.release,
        association_code=m.association_code, body=tuple(body),
    )


def build_aperak(a: Aperak) -> OutboundMessage:
    """The APERAK message for ``a`` (BGM 312/313, RFF+ACE/DTM+171, NAD, ERC/FTX, RFF+AGO/TN)."""
    body: list[Segment] = [
        seg("BGM", "312" if a.positive else "313", a.document_number),
        seg("DTM", ["137", format_dtm(a.document_date), "303"]),
        seg("RFF", ["ACE", a.referenced_interchange_ref]),
        seg("DTM", ["171", format_dtm(a.referenced_date), "303"]),
        *a._parties(),
    ]
    for e in a.errors:
        body.append(seg("ERC", e.code))
        if e.text:
            body.append(seg("FTX", "Z02", "", "", [e.text[i : i + 512] for i in range(0, 2560, 512)
                                                    if e.text[i : i + 512]]))
    if a.referenced_document_number is not None:
        body.append(seg("RFF", ["AGO", a.referenced_document_number]))
    if a.referenced_transaction_ref is not None:
        body.append(seg("RFF", ["TN", a.referenced_transaction_ref]))
    return OutboundMessage(
        reference=a.reference, message_type="APERAK", release=a.release,
        association_code=a.association_code, body=tuple(body),
    )


def build_contrl(c: Contrl) -> OutboundMessage:
    """The CONTRL message for ``c`` (UCI, then one UCM per listed message)."""
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
    return OutboundMessage(
        reference=c.reference, message_type="CONTRL", release="3",
        association_code=c.association_code, body=tuple(body),
    )


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
    return render_interchange(env, [message])
