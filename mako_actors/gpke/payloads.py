"""Outbound payloads (UTILMD, APERAK, CONTRL) as plain data, and our derived references.

Each model dumps (``to_payload``) to exactly the fields of the renderer models in
``mako_actors.edifact.outbound`` (``UtilmdMessage``, ``Aperak``, ``Contrl``) plus an
``envelope`` key with ``OutboundEnvelope`` fields, so ``render_outbound(message_type, payload)``
turns an outbox entry into bytes. ``None`` fields are left out.

Our references (0020, 0062, BGM 1004, IDE) derive from the process's seed (the first inbound
message's sender, 0020, 0062 and IDE) and a running message index: a retried send or a replay
yields the identical interchange.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mako_actors.gpke.validation import mp_id_qualifiers

__all__ = [
    "AperakError",
    "AperakPayload",
    "ContrlMessageError",
    "ContrlMessageLine",
    "ContrlPayload",
    "EnvelopePayload",
    "OutboundRef",
    "UtilmdPayload",
    "UtilmdTransactionPayload",
    "build_contrl_payload",
    "derive_ref",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _digest(seed: str, index: int, kind: str) -> str:
    return hashlib.sha256(f"{seed}|{index}|{kind}".encode()).hexdigest().upper()


def derive_ref(seed: str, index: int, kind: Literal["0020", "0062", "1004", "IDE"]) -> str:
    """A deterministic reference for outbound message ``index`` of the process with ``seed``.

    0020 and 0062 have 14 characters (the 0020 limit); 1004 and IDE have 20 (limit 35).
    """
    prefix = {"0020": "N", "0062": "M", "1004": "D", "IDE": "T"}[kind]
    length = 13 if kind in ("0020", "0062") else 19
    return prefix + _digest(seed, index, kind)[:length]


class OutboundRef(BaseModel):
    """The references of one message we send, stored in the event that enqueues it."""

    model_config = _FROZEN

    message_type: Literal["UTILMD", "APERAK", "CONTRL"]
    pid: str | None = None
    recipient: str
    interchange_ref: str
    message_ref: str
    document_number: str
    ide_ref: str | None = None

    @classmethod
    def derive(
        cls,
        seed: str,
        index: int,
        message_type: Literal["UTILMD", "APERAK"],
        recipient: str,
        pid: str | None = None,
    ) -> OutboundRef:
        """The references of outbound message ``index`` (UTILMD gets an IDE, APERAK none)."""
        return cls(
            message_type=message_type,
            pid=pid,
            recipient=recipient,
            interchange_ref=derive_ref(seed, index, "0020"),
            message_ref=derive_ref(seed, index, "0062"),
            document_number=derive_ref(seed, index, "1004"),
            ide_ref=derive_ref(seed, index, "IDE") if message_type == "UTILMD" else None,
        )


class EnvelopePayload(BaseModel):
    """UNB values (``OutboundEnvelope`` fields of the renderer)."""

    model_config = _FROZEN

    sender_id: str
    sender_qualifier: str
    recipient_id: str
    recipient_qualifier: str
    prepared_at: datetime
    control_ref: str

    @classmethod
    def between(cls, sender: str, recipient: str, at: datetime, control_ref: str) -> EnvelopePayload:
        return cls(
            sender_id=sender,
            sender_qualifier=mp_id_qualifiers(sender)[0],
            recipient_id=recipient,
            recipient_qualifier=mp_id_qualifiers(recipient)[0],
            prepared_at=at,
            control_ref=control_ref,
        )


class _Header(BaseModel):
    model_config = _FROZEN

    envelope: EnvelopePayload
    reference: str
    document_number: str
    document_date: datetime
    sender_id: str
    sender_code_list: str
    recipient_id: str
    recipient_code_list: str

    def to_payload(self) -> dict[str, Any]:
        """Plain JSON-ready data for ``PendingOutbox.payload`` (``None`` fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def _header(ref: OutboundRef, sender: str, at: datetime) -> dict[str, Any]:
    return {
        "envelope": EnvelopePayload.between(sender, ref.recipient, at, ref.interchange_ref),
        "reference": ref.message_ref,
        "document_number": ref.document_number,
        "document_date": at,
        "sender_id": sender,
        "sender_code_list": mp_id_qualifiers(sender)[1],
        "recipient_id": ref.recipient,
        "recipient_code_list": mp_id_qualifiers(ref.recipient)[1],
    }


class UtilmdTransactionPayload(BaseModel):
    """One IDE group: PID (RFF+Z13), MaLo (LOC+Z16), DTM+92/93, STS+E01 answer code + EBD,
    optional STS+Z35 (the LFA's E_0624 code), RFF+TN (the request's IDE), NAD+VY (other party)."""

    model_config = _FROZEN

    ide_ref: str
    pid: str
    malo: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    transaction_reason: str | None = None
    answer_code: str | None = None
    answer_ebd: str | None = None
    lfa_answer_code: str | None = None
    lfa_answer_ebd: str | None = None
    request_ref: str | None = None
    other_party_id: str | None = None
    other_party_code_list: str | None = None
    processing_start: datetime | None = None  # DTM+Z07
    next_processing_date: datetime | None = None  # DTM+Z08


class UtilmdPayload(_Header):
    """A UTILMD message with one transaction."""

    transactions: tuple[UtilmdTransactionPayload, ...] = Field(min_length=1)

    @classmethod
    def build(cls, ref: OutboundRef, sender: str, at: datetime, **transaction: Any) -> UtilmdPayload:
        """The UTILMD for ``ref`` sent by ``sender`` at ``at``; ``transaction`` fills the IDE group."""
        assert ref.ide_ref is not None and ref.pid is not None
        other = transaction.get("other_party_id")
        if other is not None:
            transaction["other_party_code_list"] = mp_id_qualifiers(other)[1]
        tx = UtilmdTransactionPayload(ide_ref=ref.ide_ref, pid=ref.pid, **transaction)
        return cls(**_header(ref, sender, at), transactions=(tx,))


class AperakError(BaseModel):
    """One ERC code with its FTX text."""

    model_config = _FROZEN

    code: str
    text: str = ""


class AperakPayload(_Header):
    """APERAK: ``positive`` (BGM 312) or negative (313) with ``errors`` (ERC + FTX).

    ``referenced_interchange_ref`` (RFF+ACE) and ``referenced_date`` (DTM+171) name the
    answered interchange, ``referenced_document_number`` (RFF+AGO) its BGM 1004,
    ``referenced_transaction_ref`` (RFF+TN) its IDE.
    """

    positive: bool
    referenced_interchange_ref: str
    referenced_date: datetime
    referenced_document_number: str | None = None
    referenced_transaction_ref: str | None = None
    errors: tuple[AperakError, ...] = ()

    @classmethod
    def build(
        cls,
        ref: OutboundRef,
        sender: str,
        at: datetime,
        *,
        interchange_ref: str,
        referenced_date: datetime,
        document_number: str,
        ide_ref: str,
        errors: tuple[AperakError, ...] = (),
    ) -> AperakPayload:
        return cls(
            **_header(ref, sender, at),
            positive=not errors,
            referenced_interchange_ref=interchange_ref,
            referenced_date=referenced_date,
            referenced_document_number=document_number,
            referenced_transaction_ref=ide_ref,
            errors=errors,
        )


class ContrlMessageLine(BaseModel):
    """One UCM line: a received message (0062, S009) and our action on it."""

    model_config = _FROZEN

    reference: str
    message_type: str
    release: str
    association_code: str
    action: Literal["7", "4"]
    error_code: str | None = None


class ContrlPayload(BaseModel):
    """CONTRL for one received interchange: UCI ``action`` 7 accepted / 4 rejected."""

    model_config = _FROZEN

    envelope: EnvelopePayload
    reference: str
    interchange_ref: str
    interchange_sender_id: str
    interchange_sender_qualifier: str
    interchange_recipient_id: str
    interchange_recipient_qualifier: str
    action: Literal["7", "4"]
    error_code: str | None = None
    messages: tuple[ContrlMessageLine, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ContrlMessageError(BaseModel):
    """A message-level syntax error: ``UCM+<message_ref>+<S009>+4+<code>+<segment>`` (AHB-FACTS §6).

    ``message_type`` is the full S009 as received (e.g. ``UTILMD:D:11A:UN:S2.1``), ``code`` the
    0085 value, ``segment`` the 0013 service segment (``UNH`` or ``UNT``).
    """

    model_config = _FROZEN

    message_ref: str
    message_type: str
    code: str
    segment: Literal["UNH", "UNT"]

    def line(self) -> ContrlMessageLine:
        # Minimal: 0013 (``segment``) is not rendered until the renderer knows it.
        parts = [*self.message_type.split(":"), "", "", "", "", ""]
        return ContrlMessageLine(
            reference=self.message_ref,
            message_type=parts[0],
            release=parts[2],
            association_code=parts[4],
            action="4",
            error_code=self.code,
        )


def build_contrl_payload(
    *,
    interchange_ref: str,
    interchange_sender: str,
    interchange_recipient: str,
    accepted: bool,
    prepared_at: datetime,
    error_code: str | None = None,
    messages: tuple[ContrlMessageLine, ...] = (),
    message_errors: Sequence[ContrlMessageError] = (),
) -> ContrlPayload:
    """The CONTRL answering one received interchange (we are its recipient, so we send it).

    CONTRL is per interchange, not per process: ingestion builds it before or beside routing the
    interchange's messages to workflows, and sends it within ``AckWindows.contrl_due``. Our 0020
    and 0062 derive from the received interchange's sender and 0020, so a retry is identical.
    """
    seed = f"CONTRL:{interchange_sender}:{interchange_ref}"
    control_ref = derive_ref(seed, 0, "0020")
    return ContrlPayload(
        envelope=EnvelopePayload.between(interchange_recipient, interchange_sender, prepared_at, control_ref),
        reference=derive_ref(seed, 0, "0062"),
        interchange_ref=interchange_ref,
        interchange_sender_id=interchange_sender,
        interchange_sender_qualifier=mp_id_qualifiers(interchange_sender)[0],
        interchange_recipient_id=interchange_recipient,
        interchange_recipient_qualifier=mp_id_qualifiers(interchange_recipient)[0],
        action="7" if accepted else "4",
        error_code=error_code,
        messages=messages + tuple(e.line() for e in message_errors),
    )
