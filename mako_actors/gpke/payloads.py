"""Outbound payloads (UTILMD, APERAK, CONTRL) as plain data, and our derived references.

Each model dumps (``to_payload``) to exactly the fields of the renderer models in
``mako_actors.edifact.outbound`` (``UtilmdMessage``, ``Aperak``, ``Contrl``) plus an
``envelope`` key with ``OutboundEnvelope`` fields, so ``render_outbound(message_type, payload)``
turns an outbox entry into bytes. ``None`` fields are left out. Each payload carries the
``format_version`` in force when it is sent (``sending_format_version``), which selects its UNH
version (AHB-FACTS §7); UTILMD payloads carry the PID's BGM code (§1) and STS+7 (§3,
``transaktionsgrund``).

Our references (0020, 0062, BGM 1004, IDE) derive from the process's seed (the first inbound
message's sender, 0020, 0062 and IDE) and a running message index: a retried send or a replay
yields the identical interchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mako_actors.edifact.outbound import ContrlDataElementError, ContrlSegmentError
from mako_actors.edifact.structure import BGM_DOCUMENT_CODE
from mako_actors.edifact.versions import sending_format_version
from mako_actors.errors import InvalidArgument
from mako_actors.gpke._models import built, json_value, positional, unvalidated
from mako_actors.gpke.validation import mp_id_qualifiers

if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:
        # CPython's own SHA-256: for the few dozen bytes of a reference's seed it costs less
        # than OpenSSL's (``hashlib``), which sets up and wipes a context for every hash. Same
        # digests; every message we send derives four references.
        from _sha256 import sha256
    except ImportError:  # an interpreter built without it
        from hashlib import sha256

__all__ = [
    "AperakError",
    "AperakPayload",
    "ContrlDataElementError",
    "ContrlMessageError",
    "ContrlMessageLine",
    "ContrlPayload",
    "ContrlSegmentError",
    "EnvelopePayload",
    "OutboundRef",
    "UtilmdPayload",
    "UtilmdTransactionPayload",
    "aperak_payload",
    "build_contrl_payload",
    "contrl_payload",
    "derive_ref",
    "derive_request_refs",
    "refusal_interchange_ref",
    "refusal_seed",
    "transaktionsgrund",
    "utilmd_payload",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


# Per reference kind: its first letter and how many hex digits of the digest follow (1004, IDE).
_REF_SHAPE = {"1004": ("D", 19), "IDE": ("T", 19)}
_SHORT = {"0020": "N", "0062": "M"}


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 base 32
_B32_PAIRS = tuple(a + b for a in _B32 for b in _B32)  # ten bits each


def _short(digest: Any) -> str:
    """13 base-32 characters (A-Z, 2-7) of a SHA-256: 65 bits in the 13 characters the 0020's
    an..14 leaves after the letter (``b32encode(digest[:9])[:13]``, at half its cost: two per
    message we send).

    Hex gave 52 bits: every message a tenant sends shares the 0020 space, which must stay
    unique for years; at 10 million messages two of them collided with probability ~1 %
    (a collision is refused as a competing trigger, or reaches the partner as a duplicate
    0020), now ~1e-6 (1e-4 at 100 million).
    """
    n = int.from_bytes(digest.digest()[:9], "big") >> 7
    p = _B32_PAIRS
    return (
        p[n >> 55] + p[(n >> 45) & 1023] + p[(n >> 35) & 1023] + p[(n >> 25) & 1023]
        + p[(n >> 15) & 1023] + p[(n >> 5) & 1023] + _B32[n & 31]
    )


def derive_ref(seed: str, index: int, kind: Literal["0020", "0062", "1004", "IDE"]) -> str:
    """A deterministic reference for outbound message ``index`` of the process with ``seed``.

    0020 and 0062 have 14 characters (the 0020 limit): the letter, then ``_short`` of the
    SHA-256 of ``seed|index|kind``; 1004 and IDE have 20 (limit 35): the letter, then its
    upper-case hex cut to length.
    """
    digest = sha256(f"{seed}|{index}|{kind}".encode())
    if kind in _SHORT:
        return _SHORT[kind] + _short(digest)
    prefix, length = _REF_SHAPE[kind]
    return prefix + digest.hexdigest()[:length].upper()


def refusal_seed(sender: str, control_ref: str, message_ref: str, ide_ref: str) -> str:
    """The seed of the negative APERAK the inbound pipeline refuses transaction ``ide_ref`` (""
    for a whole message, or a transaction without its reference) of a message with: its
    references are ``OutboundRef.derive(seed, position, "APERAK", sender)``, ``position`` the
    transaction's in its message (0 for a whole message)."""
    return f"APERAK:{sender}:{control_ref}:{message_ref}:{ide_ref}"


def refusal_interchange_ref(
    sender: str, control_ref: str, message_ref: str, ide_ref: str, position: int
) -> str:
    """The 0020 of that APERAK (``refusal_seed``): what the partner's CONTRL on it names."""
    return derive_ref(refusal_seed(sender, control_ref, message_ref, ide_ref), position, "0020")


def derive_request_refs(seed: str, count: int) -> list[tuple[str, str]]:
    """``(derive_ref(seed, i, "IDE"), derive_ref(seed, i, "0020"))`` for ``i`` in ``range(count)``,
    each index's common prefix encoded once (a replay predicts them for every trigger)."""
    pairs = []
    for index in range(count):
        base = f"{seed}|{index}|".encode()
        ide = sha256(base + b"IDE").hexdigest()
        pairs.append(("T" + ide[:19].upper(), "N" + _short(sha256(base + b"0020"))))
    return pairs


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
        """The references of outbound message ``index`` (UTILMD gets an IDE, APERAK none).

        Built without re-validation: every value is a str we derive here or a typed argument
        (mypy checks callers), and this runs for every message we send.
        """
        # ``derive_ref`` of each kind: SHA-256 of ``seed|index|kind``, the common prefix encoded
        # once (hashing each short text anew is cheaper than copying a hash of the prefix).
        base = f"{seed}|{index}|".encode()
        ide = None
        if message_type == "UTILMD":
            ide = "T" + sha256(base + b"IDE").hexdigest()[:19].upper()
        interchange = "N" + _short(sha256(base + b"0020"))
        message = "M" + _short(sha256(base + b"0062"))
        document = "D" + sha256(base + b"1004").hexdigest()[:19].upper()
        if cls is OutboundRef:  # fields in declaration order
            return _make_ref(message_type, pid, recipient, interchange, message, document, ide)
        return unvalidated(cls)(
            message_type=message_type,
            pid=pid,
            recipient=recipient,
            interchange_ref=interchange,
            message_ref=message,
            document_number=document,
            ide_ref=ide,
        )


# Every field given, in declaration order: ``derive`` runs for every message we send.
_make_ref = positional(OutboundRef)


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
        """The UNB values of one message; built without re-validation (typed arguments, checked
        by mypy; the enclosing payload is validated and dumped), as it runs for every send."""
        return built(
            cls,
            {
                "sender_id": sender,
                "sender_qualifier": mp_id_qualifiers(sender)[0],
                "recipient_id": recipient,
                "recipient_qualifier": mp_id_qualifiers(recipient)[0],
                "prepared_at": at,
                "control_ref": control_ref,
            },
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
    format_version: str | None = None  # selects the UNH version (AHB-FACTS §7)

    def to_payload(self) -> dict[str, Any]:
        """Plain JSON-ready data for ``PendingOutbox.payload`` (``None`` fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def _header(ref: OutboundRef, sender: str, at: datetime) -> dict[str, Any]:
    return {
        # The release in force when the message is sent decides its MIG version (§7).
        "format_version": sending_format_version(at).short,
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
    anmeldung_uet: date | None = None  # DTM+154 (55010)
    transaction_reason_detail: str | None = None  # STS+7 C556 #2
    transaction_reason_fixed_term: str | None = None  # STS+7 C556 #3 (befristete Anmeldung)
    customer_name: tuple[str, ...] | None = None  # NAD+Z09 C080 (last, first, …, 3045), 55010
    malo_qualifier: str | None = None  # LOC 3227 when not Z16: Z22 ruhende MaLo (55010 with ZAP)
    remark: str | None = None  # FTX+ACB: why (55003/55080 with A99, an operator's text)
    tranche: str | None = None  # LOC+Z21 (STS+Z35 and RFF+Z20 in a 55080): a Tranche's ID
    resting_malo: str | None = None  # LOC+Z22 beside LOC+Z16: the ruhende MaLo of a 55002 (ZAP)
    product_package: str | None = None  # RFF+Z60: the Produktpaket planned (55002/55078)
    netzlokationen: tuple[tuple[str, str, str], ...] | None = None  # LOC+Z18, SG8 ZD7: (ID, MSB, role)
    messlokationen: tuple[str, ...] | None = None  # LOC+Z17 and SG8 ZF3 (55002, from master data)
    msb: str | None = None  # SG10 CAV+Z91 of the 55002's SG8 Z98/ZF3: the MaLo's MSB
    msb_role: str | None = None  # Z39 grundzuständig, Z40 wettbewerblich, Z41 Auffang-MSB
    gmsb: str | None = None  # CAV+ZF0 of the 55002's SG8 ZF3: the grundzuständige MSB
    tranche_basis: str | None = None  # CCI+Z37 of the 55078's SG8 Z15: ZD1 percentage, ZD2 factor
    tranche_percent: str | None = None  # QTY+11 (P1) of the 55078's SG8 Z15, with ZD1


def transaktionsgrund(
    pid: str,
    trigger_pid: str | None,
    trigger_reason: str | None = None,
    trigger_detail: str | None = None,
    measurement: str | None = None,
) -> tuple[str, str | None] | None:
    """STS+7 #1 and #2 of a message ``pid`` we send in a process started by ``trigger_pid``
    (55001/55077/55004) whose STS+7 was ``trigger_reason`` (#1) and ``trigger_detail`` (#2);
    ``None`` when not derivable.

    AHB-FACTS §3 (FV2510, H): 55010 #1 E01 only with ZW4/ZAP ([192]) else E03, #2 ZAP for a ruhende
    MaLo (the 55001 said ZAP), ZW4 for a consuming MaLo (55001), ZW3 for a generating one (55077),
    ZW5 for a Tranche (a 55077 of GV2, ZW1; S1 55010 [481]); 55036 Z26; 55037 ZC8 (Beendigung der
    Zuordnung) + ZW3|ZW4; 55038 + ZW3|ZW4 with #1 ZG9 (Aufhebung wegen Auszug des Kunden) when the
    Anmeldung was an Einzug (E01: whoever the future assignment was for has moved out), else ZH0
    (wegen Anmeldung eines anderen LF zu einem früheren Termin); both are triggered by the LFN (S1
    55038 [579]), ZG9 for E01 is our reading (M). Answers repeat the Anmeldung's #1: 55002 #2 ZAP
    (ruhend) else ``measurement`` (ZW6 pauschale / ZW7 gemessene MaLo; the MaLo's master data, else
    the workflow's default †), 55003 #2 ZW4, 55078 E03 + the 55077's Geschäftsvorfall ZW0|ZW1|ZW2
    (M: the AHB lists the set, that it repeats the trigger's is our reading), 55080 E03 + ZW3;
    55005/55006 #1 as the Abmeldung.
    """
    malo_kind = "ZW3" if trigger_pid == "55077" else "ZW4"
    resting = trigger_pid == "55001" and trigger_detail == "ZAP"
    if pid == "55010":
        # a 55077 of Geschäftsvorfall 2 (ZW1) is for a Tranche: ZW5 (S1 55010 [481])
        tranche = trigger_pid == "55077" and trigger_detail == "ZW1"
        kind = "ZAP" if resting else "ZW5" if tranche else malo_kind
        return ("E01" if trigger_reason == "E01" and kind in ("ZW4", "ZAP") else "E03"), kind
    if pid == "55036":
        return "Z26", None
    if pid == "55037":
        return "ZC8", malo_kind
    if pid == "55038":
        return ("ZG9" if trigger_reason == "E01" else "ZH0"), malo_kind
    if pid == "55080":
        return "E03", "ZW3"
    if pid == "55078":
        return "E03", trigger_detail if trigger_detail in ("ZW0", "ZW1", "ZW2") else None
    if pid in ("55002", "55003") and trigger_reason in ("E01", "E03"):
        if pid == "55003":
            return trigger_reason, "ZW4"
        return trigger_reason, "ZAP" if resting else measurement
    if pid in ("55005", "55006") and trigger_reason:
        return trigger_reason, None
    return None


def _complete_transaction(
    pid: str,
    transaction: dict[str, Any],
    trigger_pid: str | None,
    trigger_reason: str | None,
    trigger_detail: str | None,
    measurement: str | None,
) -> None:
    """Add the derived values of a UTILMD ``pid``'s IDE group to ``transaction`` (in place):
    NAD+VY's code list, STS+7 from ``transaktionsgrund`` unless given, LOC+Z22 for a 55010 on a
    ruhende MaLo (AHB-FACTS §2, §3)."""
    other = transaction.get("other_party_id")
    if other is not None:
        transaction["other_party_code_list"] = mp_id_qualifiers(other)[1]
    if transaction.get("transaction_reason") is None:
        reason = transaktionsgrund(pid, trigger_pid, trigger_reason, trigger_detail, measurement)
        if reason is not None:
            transaction["transaction_reason"], transaction["transaction_reason_detail"] = reason
    if pid == "55010" and transaction.get("transaction_reason_detail") == "ZAP":
        transaction.setdefault("malo_qualifier", "Z22")


class UtilmdPayload(_Header):
    """A UTILMD message with one transaction; ``document_code`` is BGM 1001 (AHB-FACTS §1)."""

    document_code: str | None = None
    transactions: tuple[UtilmdTransactionPayload, ...] = Field(min_length=1)

    @classmethod
    def build(
        cls,
        ref: OutboundRef,
        sender: str,
        at: datetime,
        *,
        trigger_pid: str | None = None,
        trigger_reason: str | None = None,
        trigger_detail: str | None = None,
        measurement: str | None = None,
        validate: bool = True,
        **transaction: Any,
    ) -> UtilmdPayload:
        """The UTILMD for ``ref`` sent by ``sender`` at ``at``; ``transaction`` fills the IDE group.

        Without an explicit ``transaction_reason``, STS+7 comes from ``transaktionsgrund`` for
        the process's ``trigger_pid``/``trigger_reason``/``trigger_detail`` (``measurement``:
        ZW6/ZW7 for a 55002). A 55010 for a ruhende MaLo (#2 ZAP) names it in ``LOC+Z22``
        (AHB-FACTS §2). ``validate=False`` skips pydantic validation (several times cheaper):
        only for values that already have their fields' types, such as the workflow's validated
        command and state; an unknown or missing field still raises ``InvalidArgument``.
        """
        assert ref.ide_ref is not None and ref.pid is not None
        _complete_transaction(ref.pid, transaction, trigger_pid, trigger_reason, trigger_detail, measurement)
        header = _header(ref, sender, at)
        if validate:
            tx = UtilmdTransactionPayload(ide_ref=ref.ide_ref, pid=ref.pid, **transaction)
            return cls(**header, document_code=BGM_DOCUMENT_CODE.get(ref.pid), transactions=(tx,))
        transaction["ide_ref"], transaction["pid"] = ref.ide_ref, ref.pid
        header["document_code"] = BGM_DOCUMENT_CODE.get(ref.pid)
        header["transactions"] = (built(UtilmdTransactionPayload, transaction),)
        return built(cls, header)


class AperakError(BaseModel):
    """One ERC code: ``text`` (FTX+ABO), ``description`` (FTX+AAO, default: the code's name),
    ``location`` (FTX+Z02, the AHB location; required with Z29, AHB-FACTS §5)."""

    model_config = _FROZEN

    code: str
    text: str = ""
    description: str = ""
    location: str = ""


class AperakPayload(_Header):
    """APERAK: ``positive`` (BGM 312) or negative (313) with ``errors`` (ERC + FTX).

    ``referenced_interchange_ref`` (RFF+ACE) and ``referenced_date`` (DTM+171) name the
    answered interchange, ``referenced_document_number`` (RFF+AGO) its BGM 1004,
    ``referenced_transaction_ref`` (RFF+TN) its IDE, ``referenced_message_ref`` (RFF+ACW, 313
    only) its UNH 0062 (AHB-FACTS §5).
    """

    positive: bool
    referenced_interchange_ref: str
    referenced_date: datetime
    referenced_document_number: str | None = None
    referenced_transaction_ref: str | None = None
    referenced_message_ref: str | None = None
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
        message_ref: str | None = None,
        validate: bool = True,
    ) -> AperakPayload:
        """APERAK 312 (no ``errors``) or 313 on the message ``message_ref`` (UNH 0062).

        ``validate=False``: as for ``UtilmdPayload.build``, only for values of the fields' types.
        """
        values = _header(ref, sender, at) | {
            "positive": not errors,
            "referenced_interchange_ref": interchange_ref,
            "referenced_date": referenced_date,
            "referenced_document_number": document_number,
            "referenced_transaction_ref": ide_ref,
            "referenced_message_ref": message_ref,
            "errors": errors,
        }
        return cls(**values) if validate else built(cls, values)


# -- payloads as plain data, without building the models ------------------------------------------
#
# The workflow only stores a payload's ``to_payload()``; building the models (and dumping them
# again) is most of the cost of a send. These build the dump directly: the same keys in the same
# order (the stored msgpack bytes) and the same JSON values, instants serialised by pydantic
# itself. ``tests/gpke/test_gpke_fast_paths.py`` holds them to the models' dumps.

_TX_FIELDS = tuple(UtilmdTransactionPayload.model_fields)
_TX_FIELD_SET = frozenset(_TX_FIELDS)


# The values of the last (sender, instant) a header was built for: the payloads of one command
# share both objects. Compared by identity (the entry holds them, so their ids stay theirs):
# equal instants in other zones dump differently. One tuple, replaced whole.
_last_stamp: tuple[object, object, tuple[str, str, str, str]] = (None, None, ("", "", "", ""))


def _stamp(sender: str, at: datetime) -> tuple[str, str, str, str]:
    """UNB qualifier and NAD code list of ``sender``, ``at`` as dumped, and the MIG version."""
    global _last_stamp
    last_sender, last_at, values = _last_stamp
    if last_sender is sender and last_at is at:
        return values
    values = (
        *mp_id_qualifiers(sender),
        json_value(at),
        sending_format_version(at).short,
    )
    _last_stamp = (sender, at, values)
    return values


def _plain_header(ref: dict[str, Any], sender: str, at: datetime) -> dict[str, Any]:
    """``_Header`` fields of ``_header(ref, sender, at)`` as dumped (declaration order);
    ``ref`` is the ``OutboundRef``'s ``__dict__`` (one attribute hook for all its fields)."""
    sender_qualifier, sender_code_list, at_json, format_version = _stamp(sender, at)
    recipient = ref["recipient"]
    recipient_qualifier, recipient_code_list = mp_id_qualifiers(recipient)
    return {
        "envelope": {
            "sender_id": sender,
            "sender_qualifier": sender_qualifier,
            "recipient_id": recipient,
            "recipient_qualifier": recipient_qualifier,
            "prepared_at": at_json,
            "control_ref": ref["interchange_ref"],
        },
        "reference": ref["message_ref"],
        "document_number": ref["document_number"],
        "document_date": at_json,
        "sender_id": sender,
        "sender_code_list": sender_code_list,
        "recipient_id": recipient,
        "recipient_code_list": recipient_code_list,
        "format_version": format_version,
    }


def utilmd_payload(
    ref: OutboundRef,
    sender: str,
    at: datetime,
    *,
    trigger_pid: str | None = None,
    trigger_reason: str | None = None,
    trigger_detail: str | None = None,
    measurement: str | None = None,
    **transaction: Any,
) -> dict[str, Any]:
    """``UtilmdPayload.build(ref, sender, at, ...).to_payload()`` without building the models.

    For the workflow's already-validated values only (as ``validate=False``): every value must
    have its field's type; an unknown field raises ``InvalidArgument``.
    """
    values = ref.__dict__
    pid, ide_ref = values["pid"], values["ide_ref"]
    assert ide_ref is not None and pid is not None
    _complete_transaction(pid, transaction, trigger_pid, trigger_reason, trigger_detail, measurement)
    if not _TX_FIELD_SET.issuperset(transaction):
        unknown = sorted(set(transaction) - _TX_FIELD_SET)
        raise InvalidArgument(f"UtilmdTransactionPayload: unknown fields {unknown}")
    transaction["ide_ref"], transaction["pid"] = ide_ref, pid
    # In declaration order: asking each of the ~20 fields costs less than sorting the given ones.
    get = transaction.get
    tx = {
        name: value if type(value) is str else json_value(value)
        for name in _TX_FIELDS
        if (value := get(name)) is not None
    }
    payload = _plain_header(values, sender, at)
    document_code = BGM_DOCUMENT_CODE.get(pid)
    if document_code is not None:
        payload["document_code"] = document_code
    payload["transactions"] = [tx]
    return payload


def aperak_payload(
    ref: OutboundRef,
    sender: str,
    at: datetime,
    *,
    interchange_ref: str,
    referenced_date: datetime,
    document_number: str,
    ide_ref: str,
    errors: tuple[AperakError, ...] = (),
    message_ref: str | None = None,
) -> dict[str, Any]:
    """``AperakPayload.build(ref, sender, at, ...).to_payload()`` without building the models;
    the values must have their fields' types (as for ``validate=False``)."""
    payload = _plain_header(ref.__dict__, sender, at)
    payload["positive"] = not errors
    payload["referenced_interchange_ref"] = interchange_ref
    payload["referenced_date"] = json_value(referenced_date)
    for name, value in (
        ("referenced_document_number", document_number),
        ("referenced_transaction_ref", ide_ref),
        ("referenced_message_ref", message_ref),
    ):
        if value is not None:
            payload[name] = value
    payload["errors"] = [
        {"code": e.code, "text": e.text, "description": e.description, "location": e.location} for e in errors
    ]
    return payload


class ContrlMessageLine(BaseModel):
    """One UCM line: a received message (0062, S009) and our action on it.

    ``error_segment`` is 0013 (``UNH``/``UNT``) of a message-level syntax error (AHB-FACTS §6).
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
    error_segment: str | None = None
    segment_errors: tuple[ContrlSegmentError, ...] | None = None  # None: stored without (none)


class ContrlMessageError(BaseModel):
    """A message-level syntax error to report in a CONTRL ``UCM`` (AHB-FACTS §6).

    ``message_ref`` is the faulty message's UNH 0062, ``message_type`` its full S009 as received
    (``UTILMD:D:11A:UN:S2.1``). An error in UNH or UNT is ``code`` (0085, e.g. ``29`` for a wrong
    UNT count) and ``segment`` (0013); an error in another segment of the message is
    ``segment_error`` (its UCS/UCD lines), and the UCM line then carries no 0085.
    """

    model_config = _FROZEN

    message_ref: str = Field(min_length=1)  # as received, even when over-long (it is the defect)
    message_type: str = Field(min_length=1)
    code: str | None = Field(default=None, min_length=1)
    segment: Literal["UNH", "UNT"] | None = None
    segment_error: ContrlSegmentError | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ContrlMessageError:
        if (self.code is None or self.segment is None) == (self.segment_error is None):
            raise ValueError("a message error is either code + segment (UNH/UNT) or a segment_error (UCS)")
        return self

    def line(self) -> ContrlMessageLine:
        """The ``UCM+<0062>+<S009>+4[+<0085>+<0013>]`` line of this error (S009 copied as
        received), with its UCS/UCD lines."""
        parts = self.message_type.split(":")
        parts += [""] * (5 - len(parts))
        kind, version, release, agency, association = parts[:5]
        return ContrlMessageLine(
            reference=self.message_ref,
            message_type=kind,
            version=version,
            release=release,
            agency=agency,
            association_code=association,
            action="4",
            error_code=self.code,
            error_segment=self.segment,
            segment_errors=(self.segment_error,) if self.segment_error is not None else None,
        )


class ContrlPayload(BaseModel):
    """CONTRL for one received interchange: UCI ``action`` 7 accepted / 4 rejected.

    ``error_code``/``error_segment`` (0085/0013 on UCI) are for interchange-level errors only;
    message-level errors are ``messages`` lines (UCM) with UCI 0083 = 4 (AHB-FACTS §6, M).
    """

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
    error_segment: str | None = None
    messages: tuple[ContrlMessageLine, ...] = ()
    format_version: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _as_received(qualifier: str | None, mp_id: str) -> str:
    """UCI's S002/S003 qualifier "as received" (AHB-FACTS §6): empty when the UNB had none;
    ``None`` (not known, e.g. a caller that passes only the ID): the usual one of the ID."""
    return qualifier if qualifier is not None else mp_id_qualifiers(mp_id)[0]


def build_contrl_payload(
    *,
    interchange_ref: str,
    interchange_sender: str,
    interchange_recipient: str,
    accepted: bool,
    prepared_at: datetime,
    error_code: str | None = None,
    error_segment: Literal["UNA", "UNB", "UNZ"] | None = None,
    messages: tuple[ContrlMessageLine, ...] = (),
    message_errors: Sequence[ContrlMessageError] = (),
    variant: str | None = None,
    answered_by: str | None = None,
    interchange_sender_qualifier: str | None = None,
    interchange_recipient_qualifier: str | None = None,
) -> ContrlPayload:
    """The CONTRL answering one received interchange (we are its recipient, so we send it).

    CONTRL is per interchange, not per process: ingestion builds it before or beside routing the
    interchange's messages to workflows, and sends it within ``AckWindows.contrl_due``. Our 0020
    and 0062 derive from the received interchange's sender and 0020, so a retry is identical.

    ``error_code`` (+ ``error_segment``, 0013) is an interchange-level error and goes on UCI.
    Each of ``message_errors`` becomes one ``UCM+<0062>+<S009>+4+<0085>+UNH|UNT`` after the
    ``messages`` lines, and any of them makes UCI 0083 = 4 (AHB-FACTS §6: "Syntaxfehlermeldung
    (UCI DE0083 = 4)"; M).

    ``variant`` names a further CONTRL on the same received reference (e.g. the digest of
    other bytes that arrived under it, answered with 0085 = 26): its 0020 and 0062 derive
    from the variant too, so they never repeat those of the first CONTRL, and the same
    variant again gives the same references.

    ``answered_by`` is our MP-ID when the interchange named another recipient (UCI still copies
    its S003 as received; the CONTRL's UNB sender is us, never the party it was addressed to).
    ``interchange_sender_qualifier``/``interchange_recipient_qualifier``: the UNB S002/S003
    qualifiers as received, copied into UCI (§6: "as received"); ``None``: the usual one of the ID.
    """
    seed = f"CONTRL:{interchange_sender}:{interchange_ref}"
    if variant is not None:
        seed = f"{seed}:{variant}"
    control_ref = derive_ref(seed, 0, "0020")
    lines = (*messages, *(e.line() for e in message_errors))
    rejected = not accepted or any(line.action == "4" for line in lines)
    return ContrlPayload(
        envelope=EnvelopePayload.between(
            answered_by or interchange_recipient, interchange_sender, prepared_at, control_ref
        ),
        reference=derive_ref(seed, 0, "0062"),
        interchange_ref=interchange_ref,
        interchange_sender_id=interchange_sender,
        interchange_sender_qualifier=_as_received(interchange_sender_qualifier, interchange_sender),
        interchange_recipient_id=interchange_recipient,
        interchange_recipient_qualifier=_as_received(interchange_recipient_qualifier, interchange_recipient),
        action="4" if rejected else "7",
        error_code=error_code,
        error_segment=error_segment if error_code is not None else None,
        messages=lines,
        format_version=sending_format_version(prepared_at).short,
    )


def contrl_payload(
    *,
    interchange_ref: str,
    interchange_sender: str,
    interchange_recipient: str,
    accepted: bool,
    prepared_at: datetime,
    error_code: str | None = None,
    error_segment: Literal["UNA", "UNB", "UNZ"] | None = None,
    message_errors: Sequence[ContrlMessageError] = (),
    variant: str | None = None,
    answered_by: str | None = None,
    interchange_sender_qualifier: str | None = None,
    interchange_recipient_qualifier: str | None = None,
) -> dict[str, Any]:
    """``build_contrl_payload(...).to_payload()`` without building the models (one per received
    interchange): the same keys in the same order and the same JSON values.

    The values must have their fields' types (strings of a parsed UNB, an aware instant).
    """
    seed = f"CONTRL:{interchange_sender}:{interchange_ref}"
    if variant is not None:
        seed = f"{seed}:{variant}"
    # ``derive_ref`` of 0020 and 0062 with the common prefix hashed once.
    base = sha256(f"{seed}|0|".encode())
    message = base.copy()
    base.update(b"0020")
    message.update(b"0062")
    sender = answered_by or interchange_recipient
    sender_qualifier, _, at_json, format_version = _stamp(sender, prepared_at)
    lines = [e.line().model_dump(mode="json", exclude_none=True) for e in message_errors]
    payload: dict[str, Any] = {
        "envelope": {
            "sender_id": sender,
            "sender_qualifier": sender_qualifier,
            "recipient_id": interchange_sender,
            "recipient_qualifier": mp_id_qualifiers(interchange_sender)[0],
            "prepared_at": at_json,
            "control_ref": "N" + _short(base),
        },
        "reference": "M" + _short(message),
        "interchange_ref": interchange_ref,
        "interchange_sender_id": interchange_sender,
        "interchange_sender_qualifier": _as_received(interchange_sender_qualifier, interchange_sender),
        "interchange_recipient_id": interchange_recipient,
        "interchange_recipient_qualifier": (
            _as_received(interchange_recipient_qualifier, interchange_recipient)
        ),
        "action": "4" if not accepted or lines else "7",
    }
    if error_code is not None:
        payload["error_code"] = error_code
        if error_segment is not None:
            payload["error_segment"] = error_segment
    payload["messages"] = lines
    payload["format_version"] = format_version
    return payload
