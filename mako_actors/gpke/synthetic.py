"""Synthetic inbound LFW24 traffic as EDIFACT bytes: what LFN and LFA send the NB.

For tests, the demo and notebooks: every builder returns a complete, valid interchange (UNT/UNZ
counts right) that ``InboundPipeline.ingest`` reads like real traffic. All ids are synthetic;
``synthetic_malo`` makes MaLo-IDs with a correct check digit.
"""

from __future__ import annotations

from datetime import datetime

from mako_actors.edifact.outbound import UtilmdMessage, UtilmdTransaction, build_utilmd
from mako_actors.edifact.render import OutboundEnvelope, render_interchange
from mako_actors.edifact.synthetic import synthetic_malo
from mako_actors.gpke.validation import AUFHEBUNG_REASONS, eic_check_char

__all__ = ["abmeldung", "anmeldung", "bilanzkreis_of", "lfa_answer", "synthetic_malo"]


def bilanzkreis_of(supplier: str) -> str:
    """A synthetic Bilanzkreis (EIC, check character right) of ``supplier``: ``11XLF`` and the last
    ten digits of its MP-ID; one per supplier, so a register can hold it."""
    body = f"11XLF{supplier[-10:]}"
    return body + eic_check_char(body)


def _utilmd(
    sender: str,
    recipient: str,
    sent_at: datetime,
    control_ref: str,
    transaction: UtilmdTransaction,
    *,
    test: bool = False,
) -> bytes:
    envelope = OutboundEnvelope(
        sender_id=sender, recipient_id=recipient, prepared_at=sent_at, control_ref=control_ref, test=test
    )
    message = UtilmdMessage(
        reference="M1",
        document_number=f"D{control_ref}",
        document_date=sent_at,
        sender_id=sender,
        recipient_id=recipient,
        transactions=(transaction,),
    )
    return render_interchange(envelope, [build_utilmd(message)])


def anmeldung(
    *,
    lfn: str,
    nb: str,
    malo: str,
    zuordnungsbeginn: datetime,
    ide_ref: str,
    control_ref: str,
    sent_at: datetime,
    pid: str = "55001",
    test: bool = False,
    detail: str | None = None,
    packages: tuple[tuple[str, str], ...] | None = None,
) -> bytes:
    """UTILMD 55001 (or 55077) Anmeldung from the new supplier ``lfn`` to the grid operator ``nb``.

    ``detail`` is STS+7 #2; by default ZW4 (verbrauchende MaLo) for a 55001, ZW0 (GV1) for a 55077.
    ``packages``: its Produktpakete ``(ID, Bilanzkreis)`` by priority; by default one, ``"1"`` with
    ``bilanzkreis_of(lfn)``.
    """
    transaction = UtilmdTransaction(
        ide_ref=ide_ref,
        pid=pid,
        malo=malo,
        start=zuordnungsbeginn,
        transaction_reason="E03",
        transaction_reason_detail=detail or ("ZW0" if pid == "55077" else "ZW4"),
        customer_name=("Beispiel", "Paula") if pid == "55001" else None,  # a 55077 has no SG12
        product_packages=packages or (("1", bilanzkreis_of(lfn)),),
    )
    return _utilmd(lfn, nb, sent_at, control_ref, transaction, test=test)


def lfa_answer(
    *,
    lfa: str,
    nb: str,
    malo: str,
    request_ref: str,
    ide_ref: str,
    control_ref: str,
    sent_at: datetime,
    confirm: bool = True,
    answer_code: str | None = None,
    end: datetime | None = None,
) -> bytes:
    """UTILMD 55011 (confirm) or 55012 (object) to our 55010, shaped as since FV2504.

    No SG5 (``malo`` is not sent: AHB-FACTS §2); the E_0624 ``answer_code`` defaults to A36
    (agrees, contract ended) or A35 (Vertragsbindung); a 55011 carries ``DTM+93`` ``end``.
    """
    del malo  # kept in the signature for callers; an answer names its request by RFF+TN only
    transaction = UtilmdTransaction(
        ide_ref=ide_ref,
        pid="55011" if confirm else "55012",
        end=end if confirm and end is not None else (sent_at if confirm else None),
        transaction_reason="E01",
        request_ref=request_ref,
        answer_code=answer_code or ("A36" if confirm else "A35"),
        answer_ebd="E_0624",
    )
    return _utilmd(lfa, nb, sent_at, control_ref, transaction)


def abmeldung(
    *,
    lf: str,
    nb: str,
    malo: str,
    zuordnungsende: datetime,
    ide_ref: str,
    control_ref: str,
    sent_at: datetime,
    transaction_reason: str = "Z33",
    detail: str | None = "ZW4",
    location: str = "Z16",
) -> bytes:
    """UTILMD 55004 Abmeldung (Lieferende) from supplier ``lf`` to the grid operator ``nb``.

    ``detail`` is STS+7 #2 (ZW4 verbrauchende, ZW3 erzeugende MaLo, ZW5 Tranche, ZAP ruhende);
    ``location`` the LOC qualifier ``malo`` is sent under (Z21 for a Tranche's ID). An Aufhebung
    einer zukünftigen Zuordnung (``transaction_reason`` ZG9/ZH1/ZH2) sends ``zuordnungsende`` as
    DTM+92, the confirmed start it cancels, as the AHB has it; any other reason as DTM+93.
    """
    aufhebung = transaction_reason in AUFHEBUNG_REASONS
    transaction = UtilmdTransaction(
        ide_ref=ide_ref, pid="55004", malo=malo,
        start=zuordnungsende if aufhebung else None, end=None if aufhebung else zuordnungsende,
        transaction_reason=transaction_reason, transaction_reason_detail=detail, malo_qualifier=location,
    )  # fmt: skip
    return _utilmd(lf, nb, sent_at, control_ref, transaction)
