"""Synthetic parties and message values for the GPKE tests (ids with valid check digits)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mako_actors.gpke import GpkeNbWorkflow, GpkeState, build_command
from mako_actors.gpke.calendar import BERLIN
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.outbox import PendingOutbox
from mako_actors.workflow import WorkflowOutput

NB = "9900000002009"
LFN = "9900000001001"
LFA = "9900000003007"
LFZ = "9900000004005"
MALO = "51900000012"
TRANCHE_OF = "49825979199"  # in tests of Geschäftsvorfall 2 (a Tranche's ID is MALO), its MaLo
KUNDENANLAGE = "51000000912"  # in tests of a ruhende MaLo (ZAP; its ID is MALO), the Kundenanlage's MaLo
THU_1430 = "2025-06-05T14:30:00+02:00"  # DOMAIN §3.3 worked example
START = "2025-07-01T00:00:00+02:00"


def berlin(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def anmeldung(**overrides: Any) -> Any:
    """A 55001 from LFN to NB, built the way ingestion builds it (plain values)."""
    values: dict[str, Any] = {
        "pid": "55001", "sender": LFN, "recipient": NB, "malo": MALO,
        "ide_ref": "LFNTX000001", "document_number": "LFNDOC000001",
        "document_date": "2025-06-05T12:30:00+00:00", "interchange_ref": "LFN0605143001",
        "message_ref": "M1", "format_version": "FV2504", "received_at": THU_1430,
        "zuordnungsbeginn": START, "transaction_reason": "E03", "transaction_detail": "ZW4",
        "customer_name": ("Beispiel", "Paula", "", "", "Frau", "Z01"),
        "product_packages": ({"id": "1", "bilanzkreis": bilanzkreis_of(LFN)},),
    }
    if overrides.get("pid") == "55077":  # a generating MaLo's Anmeldung names its GV (AHB-FACTS §3)
        values["transaction_detail"] = "ZW0"
    values.update(overrides)
    return build_command(values)


def lfa_answer(request_ref: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "pid": "55011", "sender": LFA, "recipient": NB, "ide_ref": "LFATX000001",
        "document_number": "LFADOC000001", "interchange_ref": "LFA0606080001", "message_ref": "A1",
        "format_version": "FV2504", "received_at": "2025-06-10T08:00:00+02:00",
        "request_ref": request_ref, "answer_code": "A36", "answer_ebd": "E_0624",
        "zuordnungsende": START, "transaction_reason": "E01",
    }
    if overrides.get("pid") == "55012":  # a 55012 has no DTM+93 (AHB-FACTS §3)
        values.pop("zuordnungsende")
    values.update(overrides)
    return build_command(values)


def abmeldung(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "pid": "55004", "sender": LFA, "recipient": NB, "malo": MALO, "ide_ref": "LFATX000009",
        "document_number": "LFADOC000009", "interchange_ref": "LFA0605143009", "message_ref": "B1",
        "format_version": "FV2510", "received_at": THU_1430,
        "zuordnungsende": START, "current_supplier": LFA, "transaction_reason": "Z33",
        "transaction_detail": "ZW4",
    }
    values.update(overrides)
    return build_command(values)


def run(wf: GpkeNbWorkflow, state: GpkeState, command: Any) -> tuple[GpkeState, WorkflowOutput]:
    """Handle ``command`` and fold its events, as the engine would."""
    out = wf.handle(state, command)
    for event in out.events:
        state = wf.apply(state, event)
    return state, out


def sent(out: WorkflowOutput) -> list[tuple[str, str | None, str]]:
    """``(message type, PID or APERAK kind, recipient)`` per outbox entry, in order."""
    result: list[tuple[str, str | None, str]] = []
    for msg in out.outbox:
        result.append((msg.message_type, _kind(msg), msg.recipient))
    return result


def _kind(msg: PendingOutbox) -> str | None:
    if msg.message_type == "APERAK":
        return "312" if msg.payload["positive"] else "313"
    return str(msg.payload["transactions"][0]["pid"])


def utilmd(out: WorkflowOutput, pid: str) -> dict[str, Any]:
    """The single transaction of the outbox UTILMD with ``pid``."""
    found = [m for m in out.outbox if m.message_type == "UTILMD"
             and m.payload["transactions"][0]["pid"] == pid]
    assert len(found) == 1, f"expected one {pid}, got {sent(out)}"
    tx: dict[str, Any] = found[0].payload["transactions"][0]
    return tx
