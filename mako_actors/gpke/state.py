"""State of one GPKE NB process, folded from its events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from mako_actors.gpke._models import without_none
from mako_actors.gpke.fristen import FristenRecord
from mako_actors.gpke.payloads import OutboundRef
from mako_actors.gpke.supply import Measurement

__all__ = ["GpkeState", "Status"]


class Status(StrEnum):
    """Where the process is. ``NOT_RECEIVED``: its trigger was rejected by APERAK.

    ``AWAITING_OPERATOR``: 09:00 passed after the LFA rejected our 55010, so its silence is no
    agreement; nothing more happens until an operator sends ``DeemLfaAgreement`` or
    ``RejectAnmeldung``. Or a Geschäftsvorfall 3 awaits the Tranche the NB forms
    (``FormTranche``, ``RejectTrancheRequest`` or ``RejectAnmeldung``).
    """

    NEW = "new"
    NOT_RECEIVED = "not_received"
    AWAITING_LFA = "awaiting_lfa"
    AWAITING_OPERATOR = "awaiting_operator"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"

    @property
    def finished(self) -> bool:
        return self in (Status.NOT_RECEIVED, Status.CONFIRMED, Status.REJECTED)


class GpkeState(BaseModel):
    """Everything the handlers decide on; ``sent`` counts our outbound messages (ref index)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Status = Status.NEW
    kind: str | None = None  # "anmeldung" | "abmeldung"
    pid: str | None = None
    format_version: str | None = None
    seed: str = ""
    sent: int = 0
    own_id: str | None = None
    lfn: str | None = None
    malo: str | None = None
    request_ide: str | None = None
    received_at: datetime | None = None
    zuordnungsbeginn: datetime | None = None
    transaction_reason: str | None = None  # the trigger's STS+7 #1 / #2 (its answers repeat them)
    transaction_detail: str | None = None
    zuordnungsende: datetime | None = None
    generating: bool = False
    lfa: str | None = None
    lfz: str | None = None
    lfz_start: datetime | None = None
    lfz_more: tuple[tuple[str, datetime], ...] = ()  # further LFZ a confirmation cancels
    lfa_request_ide: str | None = None
    lfa_answer_due: datetime | None = None
    lfa_confirmed: bool | None = None
    lfa_code: str | None = None
    lfa_deemed: bool = False
    fristen: FristenRecord | None = None
    outbound: tuple[OutboundRef, ...] = ()
    rejected_inbound: int = 0
    answer_code: str | None = None
    negative_acks: tuple[str, ...] = ()  # our 0020s a partner rejected by CONTRL 4 / APERAK 313
    lfa_rejected_at: datetime | None = None  # when the LFA's rejection of our 55010 was received
    malo_measurement: Measurement | None = None  # from master data; None: the config default
    fixed_term_reason: str | None = None  # STS+7 #3 of a befristete Anmeldung (ends ``zuordnungsende``)
    tranche_malo: str | None = None  # set: ``malo`` is a Tranche's ID, of this MaLo (GV2)
    tranche_basis: str | None = None  # how the Tranche's size is formed (ZD1/ZD2, master data)
    tranche_percent: str | None = None  # its percentage of the MaLo (ZD1)
    requested_share: str | None = None  # the share a Geschäftsvorfall 3 asks for (TrancheRequested)
    kundenanlage_malo: str | None = None  # set: ``malo`` is a ruhende MaLo in this one's Kundenanlage
    kundenanlage_netzlokationen: tuple[tuple[str, str, str], ...] | None = None  # (ID, MSB, role)
    product_package: str | None = None  # the Produktpaket planned (RFF+Z60 of the 55002/55078)
    msb: str | None = None  # from master data (AnmeldungReceived): the MSB a 55002 names, its role,
    msb_role: str | None = None  # the grundzuständige MSB and the Messlokationen
    gmsb: str | None = None
    messlokationen: tuple[str, ...] | None = None
    # The answers and acknowledgements this process handled (``workflow._answer_key`` and
    # ``_ack_key``): the same one routed again (after a failed ingest) changes nothing.
    handled: tuple[str, ...] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Snapshots leave these out while they are None: the same bytes as before.
        data: dict[str, Any] = handler(self)
        data = without_none(without_none(data, "malo_measurement"), "fixed_term_reason")
        data = without_none(without_none(data, "tranche_malo"), "kundenanlage_malo")
        for name in (
            "product_package", "msb", "msb_role", "gmsb", "messlokationen", "tranche_basis",
            "kundenanlage_netzlokationen", "handled", "lfa_rejected_at",
        ):  # fmt: skip
            data = without_none(data, name)
        return without_none(without_none(data, "tranche_percent"), "requested_share")
