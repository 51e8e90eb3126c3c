"""GPKE (LFW24, NB side) as a market process family of the inbound pipeline (``family``).

Triggers (55001/55077/55004) start a ``gpke-nb`` process after one read of the MaLo's supply
journal (current and future supplier, an open Anmeldung, a confirmed start at the same date,
the MaLo key generation); answers (55011/55012) resume the process bound to ``ide:<RFF+TN>``;
CONTRL/APERAK on our interchanges resume the one bound to ``ic:<0020>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from mako_actors.edifact import Interchange, Message, Transaction
from mako_actors.edifact.interchange import NAD_CODE_LISTS
from mako_actors.edifact.outbound import BILANZKREIS_PRODUCT
from mako_actors.errors import InvalidArgument
from mako_actors.family import Decision, InboundTransaction, Reads, Refuse, Resume, Skip, Start
from mako_actors.gpke._models import positional
from mako_actors.gpke.commands import ProductPackage, ReceiveAcknowledgement
from mako_actors.gpke.fristen import canonical_fv
from mako_actors.gpke.keys import interchange_key, transaction_key
from mako_actors.gpke.router import PidRouter
from mako_actors.gpke.supply import (
    BilanzkreisRegister,
    MasterData,
    Suppliers,
    SupplyView,
    supply_key,
    tranche_percent,
)
from mako_actors.gpke.validation import (
    AUFHEBUNG_REASONS,
    abmeldung_date,
    fixed_term_end,
    is_tranche,
    object_location,
)
from mako_actors.version import FormatVersion, WorkflowId

__all__ = ["GpkeFamily", "trigger_object"]

_LAST_INSTANT = timedelta(microseconds=1)


class GpkeFamily:
    """The GPKE family: PIDs of ``router`` (default: 55001, 55077, 55004, 55011, 55012).

    ``master_data`` stands in for imported assignments of MaLos whose supply journal has none.
    """

    name = "gpke"

    def __init__(self, router: PidRouter | None = None, master_data: MasterData | None = None) -> None:
        self._router = router or PidRouter()
        self._master = master_data
        # The register of Zuordnungsermächtigungen, if the master data keep one (an optional
        # protocol: master data written before it existed still work, unchecked).
        self._register = master_data if isinstance(master_data, BilanzkreisRegister) else None
        # The workflow id of each (PID, format version) a trigger started under: a handful.
        self._workflow_ids: dict[tuple[str, FormatVersion], WorkflowId] = {}

    def handles(self, pid: str) -> bool:
        return self._router.routes(pid)

    async def route(self, tx: InboundTransaction, reads: Reads) -> Decision:
        values = _values(tx)
        route = self._router.route(str(values["pid"]))
        if route.mode == "answer":
            if not tx.transaction.request_ref:  # Muss in 55011/55012 (AHB-FACTS §2), our only route
                return Refuse("Z29", f"PID {route.pid}: RFF+TN (reference of our request) missing")
            command = self._router.build_command(values)
            return Resume(
                self._router.routing_key(command),
                command,
                unknown=f"RFF+TN {tx.transaction.request_ref!r} names no request of ours",
            )
        sender = str(values["sender"])
        bound = await reads.lookup(tx.tenant, transaction_key(sender, tx.transaction.ide_ref))
        if bound is not None:
            return Skip(f"transaction {tx.transaction.ide_ref} seen before", bound)
        command = await self._trigger_command(tx, values, reads)
        workflow_id = self._workflow_ids.get((route.pid, tx.format_version))
        if workflow_id is None:
            workflow_id = self._workflow_ids[(route.pid, tx.format_version)] = self._router.workflow_id(
                route.pid, tx.format_version
            )
        # The MaLo's partition holds its ``malo:`` claim and its supply journal (``partitions``).
        malo = values.get("malo")
        return Start(route.workflow_name, workflow_id, command, routing_key=str(malo) if malo else None)

    def acknowledgement(self, values: Mapping[str, Any]) -> tuple[str, BaseModel] | None:
        try:
            command = ReceiveAcknowledgement.model_validate(dict(values))
        except ValidationError as exc:
            raise InvalidArgument(f"acknowledgement: {exc}") from None
        return interchange_key(command.referenced_interchange_ref), command

    async def _trigger_command(
        self, tx: InboundTransaction, values: dict[str, Any], reads: Reads
    ) -> BaseModel:
        """Add the MaLo's supply assignments and open claims to a trigger's values.

        One journal read per trigger (``supply:<MaLo>``, see ``gpke.supply``): who supplies
        the MaLo at the date, who is confirmed for later, whether another Anmeldung of the MaLo
        is being worked on, and which generation of the MaLo key this one binds.
        """
        malo = values.get("malo")
        if values["pid"] == "55004":
            start = abmeldung_date(
                values.get("transaction_reason"), values.get("zuordnungsbeginn"), values.get("zuordnungsende")
            )
        else:
            start = values.get("zuordnungsbeginn")
        if malo and isinstance(start, datetime):
            baseline = self._master.suppliers(str(values["recipient"]), malo, start) if self._master else None
            journal = await reads.journal(tx.tenant, supply_key(malo))
            view = SupplyView.fold(journal, baseline)
            if values["pid"] in ("55001", "55077"):
                if baseline is not None and not baseline.known and not journal:
                    values["malo_unknown"] = True  # neither master data nor a process knows it
                suppliers = view.suppliers(start)
                values["current_supplier"] = suppliers.current
                until = fixed_term_end(
                    values["pid"], values.get("fixed_term_reason"), values.get("zuordnungsende")
                )
                if suppliers.future_start is None or until is None or suppliers.future_start < until:
                    # (an LFZ starting when a befristete Anmeldung has ended is not superseded)
                    values["future_supplier"] = suppliers.future
                    values["future_supplier_start"] = suppliers.future_start
                values["later_suppliers"] = view.superseded(start, until)
                values["malo_key_generation"] = view.claim_count
                if baseline is not None and baseline.measurement is not None:
                    values["malo_measurement"] = baseline.measurement  # else the workflow's default
                if baseline is not None:  # E_0622 steps 30, 50 and 220 (the MaLo's master data)
                    values["malo_in_operation_from"] = baseline.in_operation_from
                    values["malo_out_of_market_from"] = baseline.out_of_market_from
                    values["malo_quarter_hour_metering"] = baseline.quarter_hour_metering  # (step 250)
                    values["malo_eeg_kwkg"] = self._eeg_kwkg(values, baseline, start)  # (steps 405/605/805)
                    values["malo_ausfallverguetung"] = baseline.ausfallverguetung  # (step 420)
                if baseline is not None and baseline.msb is not None:  # named by a 55002 (ZW7)
                    values["malo_msb"] = baseline.msb
                    values["malo_msb_role"] = baseline.msb_role
                    values["malo_gmsb"] = baseline.gmsb
                    values["malo_messlokationen"] = baseline.messlokationen
                if values.get("transaction_detail") == "ZAP" and self._master is not None:
                    self._kundenanlage(values, baseline, start)
                if is_tranche(values["pid"], values.get("transaction_detail")) and baseline is not None:
                    values["tranche_malo"] = baseline.tranche_of  # None: not found (APERAK Z14)
                    values["tranche_basis"] = baseline.tranche_basis  # its size (the 55078's SG8 Z15)
                    values["tranche_percent"] = baseline.tranche_percent
                packages = values.get("product_packages")
                if packages and self._register is not None:
                    held = self._register.bilanzkreise(str(values["recipient"]), str(values["sender"]))
                    if held is not None:  # the NB's register of Zuordnungsermächtigungen
                        values["product_packages"] = tuple(
                            _package(p.id, p.bilanzkreis, p.bilanzkreis in held) for p in packages
                        )
                claim = view.open_claim()
                if claim is not None:
                    values["competing_process"] = True
                    values["competing_start"] = claim.at
                    values["competing_next_date"] = claim.due
                confirmed = view.confirmed_start(start)
                if confirmed is not None:
                    values["assigned_at_start"] = confirmed.supplier
            else:
                sender = str(values["sender"])
                if values.get("transaction_reason") in AUFHEBUNG_REASONS:
                    values["cancels_start"] = view.starts_at(sender, start)
                holds = view.can_end(sender, start)
                # Not the sender's to end: name who supplies on the last day before the end.
                values["current_supplier"] = sender if holds else view.supplier_at(start - _LAST_INSTANT)
                # Ended there before (E_0607 steps 100/580), and by an Abmeldung of which reason.
                if view.ended_at(sender, start):
                    values["already_ended"] = True
                    values["ended_reason"] = view.end_reason(sender, start)
                    values["still_assigned"] = holds  # supplies it again all the same
                if baseline is not None:
                    values["malo_esv_from"] = baseline.esv_from  # (E_0607 step 80)
                if values.get("transaction_detail") == "ZAP":  # (E_0607 step 30)
                    values["malo_resting"] = view.resting(sender, start)
        return self._router.build_command(values)

    def _eeg_kwkg(self, values: dict[str, Any], entry: Suppliers, start: datetime) -> bool | None:
        """Whether the master data mark the MaLo (or Tranche) EEG/KWKG; a Tranche's entry that says
        nothing takes the word of its MaLo's (a second master-data read)."""
        if entry.eeg_kwkg is not None or entry.tranche_of is None or self._master is None:
            return entry.eeg_kwkg
        return self._master.suppliers(str(values["recipient"]), entry.tranche_of, start).eeg_kwkg

    def _kundenanlage(self, values: dict[str, Any], resting: Suppliers | None, start: datetime) -> None:
        """The master data E_0622 steps 16–28 ask of a ruhende MaLo (``resting``) and of the MaLo of
        its Kundenanlage (LOC+Z16, read here)."""
        assert self._master is not None
        if resting is not None:
            values["resting_generating"] = resting.generating
            values["resting_ims"] = resting.ims
            values["resting_netzlokationen"] = resting.netzlokationen
        malo = values.get("kundenanlage_malo")
        if malo:
            kua = self._master.suppliers(str(values["recipient"]), malo, start)
            values["kundenanlage_is_kua"] = kua.kundenanlage
            values["kundenanlage_virtual_summenzaehler"] = kua.virtual_summenzaehler
            values["kundenanlage_netzlokationen"] = kua.netzlokationen
            values["kundenanlage_netzlokation_msbs"] = kua.netzlokation_msbs  # (the 55002's ZD7)


def _values(tx: InboundTransaction) -> dict[str, Any]:
    """The router's plain values for one transaction (command field names)."""
    interchange, message, transaction = tx.interchange, tx.message, tx.transaction
    sent_as = message.sender.id if message.sender else None
    values: dict[str, Any] = {
        "pid": tx.pid,
        # The UNB parties are the ones that exchanged the interchange (its CONTRL went to the
        # sender); a NAD+MS or NAD+MR naming someone else is the sender's error, answered by
        # the workflow's APERAK, never a reason to act or answer in another party's name.
        "sender": interchange.sender.id,
        "sent_as": sent_as if sent_as != interchange.sender.id else None,
        "recipient": interchange.recipient.id,
        "addressed_to": message.recipient.id if message.recipient else None,
        "malo": transaction.malo,
        "ide_ref": transaction.ide_ref,
        "document_number": message.document_number or message.reference,
        "document_code": message.document_code,
        "document_date": message.document_date,
        "interchange_ref": interchange.control_ref,
        "message_ref": message.reference,
        # the command's own type, taken as it is (its text would only be parsed back)
        "format_version": tx.format_version,
        "received_at": tx.received_at,
        "interchange_date": interchange.prepared_at,
    }
    if values["pid"] in ("55001", "55077"):
        values["zuordnungsbeginn"] = transaction.start
        values["transaction_reason"] = transaction.transaction_reason
        reasons = transaction.transaction_reasons
        values["transaction_detail"] = reasons[1] if len(reasons) > 1 and reasons[1] else None
        if len(reasons) > 2 and reasons[2]:  # a befristete Anmeldung: #3 and its end, DTM+93
            values["fixed_term_reason"] = reasons[2]
        if transaction.end is not None:
            values["zuordnungsende"] = transaction.end
        values["customer_name"] = _customer_name(transaction)
        values["product_packages"], problems = _product_packages(transaction)
        if problems:
            values["package_problems"] = problems
        if values["pid"] == "55077" and values["transaction_detail"] == "ZW2":
            values["requested_share"] = _requested_share(transaction)
        _object(values, transaction)
        if values["transaction_detail"] == "ZAP":
            # the ruhende MaLo lies in a Kundenanlage: its MaLo, LOC+Z16 (S1 55001 [67])
            values["kundenanlage_malo"] = transaction.location("Z16")
            values["kundenanlage_formed"] = _forms_kundenanlage(transaction, tx.format_version)
    elif values["pid"] == "55004":
        values["zuordnungsende"] = transaction.end
        values["zuordnungsbeginn"] = transaction.start  # an Aufhebung's date (``abmeldung_date``)
        values["transaction_reason"] = transaction.transaction_reason
        reasons = transaction.transaction_reasons
        values["transaction_detail"] = reasons[1] if len(reasons) > 1 and reasons[1] else None
        _object(values, transaction)
    elif values["pid"] in ("55011", "55012"):
        values["request_ref"] = transaction.request_ref
        values["answer_code"] = transaction.answer_code
        values["answer_ebd"] = transaction.answer_ebd
        values["zuordnungsende"] = transaction.end
        values["transaction_reason"] = transaction.transaction_reason
    if transaction.malformed_dates or message.malformed_header_dates:
        values["malformed_dates"] = transaction.malformed_dates + message.malformed_header_dates
    if message.repeated or transaction.repeated:
        values["repeated"] = message.repeated + transaction.repeated
    missing = _missing_header(message)
    if missing:
        values["missing_header"] = missing
    code_lists = _code_list_mismatches(interchange, message)
    if code_lists:
        values["code_lists"] = code_lists
    return values


def _code_list_mismatches(interchange: Interchange, message: Message) -> tuple[str, ...]:
    """NAD+MS / NAD+MR whose code list (3055, the third component) is not the one the UNB
    qualifier of that party goes with (DOMAIN §4: 500↔293, 502↔332, 14↔9)."""
    found = []
    parties = (("MS", message.sender, interchange.sender), ("MR", message.recipient, interchange.recipient))
    for role, nad, unb in parties:
        want = NAD_CODE_LISTS.get(unb.qualifier)
        if nad is not None and want is not None and nad.qualifier != want:
            found.append(
                f"NAD+{role} code list (3055) {nad.qualifier!r} does not go with UNB qualifier "
                f"{unb.qualifier!r} ({want!r} does)"
            )
    return tuple(found)


def _missing_header(message: Message) -> tuple[str, ...]:
    """The Muss header segments ``message`` lacks: BGM (its 1001), DTM+137, NAD+MS, NAD+MR (a
    DTM+137 sent but malformed is not missing: the parser names it in ``problems``)."""
    missing = []
    if message.document_code is None:
        missing.append("BGM")
    if message.document_date is None and not any("DTM+137" in p for p in message.problems):
        missing.append("DTM+137")
    if message.sender is None:
        missing.append("NAD+MS")
    if message.recipient is None:
        missing.append("NAD+MR")
    return tuple(missing)


def trigger_object(pid: str, transaction: Transaction) -> str | None:
    """The ID a trigger (55001/55077/55004) is for, as its process is routed and keyed: named by
    the LOC its STS+7 #2 asks for (``object_location``): a Tranche's LOC+Z21, a ruhende MaLo's
    LOC+Z22, never the LOC+Z16 beside them; a 55077 of GV1/GV3 by its LOC+Z16 only. Any other
    transaction as the parser reads it (LOC+Z16, else LOC+Z21)."""
    reasons = transaction.transaction_reasons
    location = object_location(pid, reasons[1] if len(reasons) > 1 and reasons[1] else None)
    if location != "Z16" or pid == "55077":
        return transaction.location(location)
    return transaction.malo


def _object(values: dict[str, Any], transaction: Transaction) -> None:
    """Set ``values["malo"]`` to the ID of what the trigger is for (``trigger_object``)."""
    values["malo"] = trigger_object(str(values["pid"]), transaction)


# Built from the parser's strings without validating them again (a trigger makes one or two).
_package = positional(ProductPackage)
_SG8_TAGS = frozenset({"SEQ", "PIA", "CAV", "NAD"})
_PRIORITY_RANK = {"Z75": 1, "Z76": 2, "Z77": 3, "Z78": 4, "Z79": 5}


def _product_packages(
    transaction: Transaction,
) -> tuple[tuple[ProductPackage, ...], tuple[tuple[str, str], ...]]:
    """The Produktpakete of an Anmeldung (SG8 ``SEQ+Z79`` DE1050), by the LFN's priority: the rank
    of its ``SEQ+ZH0`` (``CAV+Z75``…``Z79``, else the ZH0s' order; a number compared by value,
    ``_package_number``), then packages without one in the order sent. A package's Bilanzkreis
    is the ``CAV+ZV4`` of its product ``PIA+5`` 9991000002082 (Codeliste der Konfigurationen
    6.1.1). And what the AHB forbids in them, as ``(kind, text)`` (kind ``missing``, ``format``
    or ``code``; UTILMD AHB 55001/55077, machine-readable FV2504/FV2510): a SEQ+Z79 without its
    package number 1050, or one that is no whole number > 0 ([914] ∧ [937]); a package without
    its product (PIA+5, Muss) or with another code list than Z11; a SEQ+ZH0 naming no package
    sent. Read leniently, such a package was dropped or ranked by the order sent, unseen by
    E_0622 step 60/260."""
    bilanzkreis: dict[str, str | None] = {}
    ranks: dict[str, int] = {}  # by package number
    priorities: list[str] = []  # the ZH0s' numbers as sent
    problems: list[tuple[str, str]] = []
    group = ""  # the SEQ qualifier of the SG8 group being read
    package = product = ""
    sold = True  # the current SEQ+Z79 group has its PIA+5
    for segment in transaction.segments:
        tag = segment.tag
        if tag not in _SG8_TAGS:
            continue
        if tag == "NAD":  # SG12 follows the SG8 groups
            break
        if tag == "SEQ":
            if not sold:
                problems.append(("missing", f"SG8 SEQ+Z79 {package}: its product (PIA+5) missing"))
            group, package, product = segment.value(0), segment.value(1), ""
            sold = group != "Z79"
            if group == "Z79":
                if not package:
                    problems.append(("missing", "SG8 SEQ+Z79 without its package number (1050)"))
                else:
                    bilanzkreis.setdefault(package, None)
                    if not (package.isascii() and package.isdigit()) or int(package) == 0:
                        text = f"SG8 SEQ+Z79 package number {package!r} is no whole number > 0"
                        problems.append(("format", text))
            elif group == "ZH0" and package:
                priorities.append(package)
                ranks.setdefault(_package_number(package), 100 + len(ranks))
        elif group == "Z79" and tag == "PIA" and segment.value(0) == "5":
            product, sold = segment.value(1), True
            code_list = segment.value(1, 1)
            if code_list != "Z11":
                text = f"SG8 SEQ+Z79 {package}: PIA+5 code list (7143) {code_list or 'missing'}, expected Z11"
                problems.append(("code" if code_list else "missing", text))
        elif group == "Z79" and tag == "CAV" and segment.value(0) == "ZV4" and product == BILANZKREIS_PRODUCT:
            bilanzkreis[package] = segment.value(0, 3) or None
        elif group == "ZH0" and tag == "CAV" and segment.value(0) in _PRIORITY_RANK:
            number = _package_number(package)
            if number in ranks:
                ranks[number] = _PRIORITY_RANK[segment.value(0)]
    if not sold:
        problems.append(("missing", f"SG8 SEQ+Z79 {package}: its product (PIA+5) missing"))
    sent = {_package_number(p) for p in bilanzkreis}
    problems += [
        ("code", f"SG8 SEQ+ZH0 {named} names no package (SEQ+Z79) sent")
        for named in priorities
        if _package_number(named) not in sent
    ]
    order = sorted(bilanzkreis, key=lambda p: ranks.get(_package_number(p), 1000))  # stable: as sent
    return tuple(_package(p, bilanzkreis[p], None) for p in order), tuple(problems)


def _package_number(text: str) -> str:
    """A package number as ZH0 and Z79 compare it: by value when it is one (``01`` is ``1``)."""
    return str(int(text)) if text.isascii() and text.isdigit() else text


#: Codeliste der Konfigurationen: product "Ruhende Marktlokation" and its properties that form a
#: new Kundenanlage (§ 20 Abs. 1d EnWG, § 10c EEG: "Bildung"; 9991000003204 is "Integration").
#: E_0622 step 19 names 9991000002933 up to FV2510 and also 9991000003212 from FV2604 on.
RESTING_MALO_PRODUCT = "9991000002769"
FORMING_PROPERTIES = frozenset({"9991000002933", "9991000003212"})
_FORMING_UP_TO_FV2510 = frozenset({"9991000002933"})


def _forms_kundenanlage(transaction: Transaction, format_version: FormatVersion | str) -> bool:
    """Whether an SG8 ``SEQ+Z79`` of the Anmeldung orders product 9991000002769 with a property
    (``CAV+ZH9``) that forms a new Kundenanlage in the tree of its format version (E_0622 step 19)."""
    early = canonical_fv(format_version) in ("FV2504", "FV2510")
    forming = _FORMING_UP_TO_FV2510 if early else FORMING_PROPERTIES
    return any(
        code == RESTING_MALO_PRODUCT and values.get("ZH9") in forming
        for code, values in _ordered_products(transaction)
    )


#: Codeliste der Konfigurationen: product "Tranchengröße", Muss in a Geschäftsvorfall 3, and its
#: property "prozentuale Aufteilung" (the others, Aufteilungsfaktor and Aufteilung auf Technische
#: Ressourcen, are no share of the MaLo).
TRANCHE_SIZE_PRODUCT = "9991000002090"
PERCENTAGE_PROPERTY = "9991000003014"


def _requested_share(transaction: Transaction) -> str | None:
    """The share of the MaLo a Geschäftsvorfall 3 asks for: the ``CAV+ZV4`` value of its SG8
    product 9991000002090 with the property 9991000003014 (``CAV+ZH9``), as a percentage (either
    decimal mark: a UNA may declare the comma); ``None`` when it names none, another property, or
    no valid percentage."""
    for code, values in _ordered_products(transaction):
        share = values.get("ZV4")
        if code == TRANCHE_SIZE_PRODUCT and values.get("ZH9") == PERCENTAGE_PROPERTY and share:
            try:
                return tranche_percent(share.replace(",", "."))
            except ValueError:
                return None
    return None


def _ordered_products(transaction: Transaction) -> list[tuple[str, dict[str, str]]]:
    """Each product an Anmeldung orders (SG8 ``SEQ+Z79``, ``PIA+5``): its code and its ``CAV``
    values by qualifier (``ZH9`` the property, ``ZV4`` the value details)."""
    products: list[tuple[str, dict[str, str]]] = []
    group = ""
    values: dict[str, str] | None = None  # the CAVs of this group's product (None: none yet)
    for segment in transaction.segments:
        tag = segment.tag
        if tag == "NAD":  # SG12 follows the SG8 groups
            break
        if tag == "SEQ":
            group, values = segment.value(0), None
        elif group == "Z79" and tag == "PIA" and segment.value(0) == "5":
            values = {}
            products.append((segment.value(1), values))
        elif tag == "CAV" and values is not None:
            values[segment.value(0)] = segment.value(0, 3)
    return products


def _customer_name(transaction: Transaction) -> tuple[str, ...] | None:
    """C080 of ``NAD+Z09`` (Name 1-5, 3045 Namensformat), as received; the 55010 repeats it
    (S1 FV2504 55010 [279]: Muss with ZW4/ZAP)."""
    for segment in transaction.segments:
        if segment.tag == "NAD" and segment.value(0) == "Z09":
            name = tuple(segment.components(3))
            # C080 3036 #1 is the Muss one (the 55010 repeats it, where it is Muss too); 3045
            # (Z01/Z02, the sixth) only says how the name is formed
            return name if name and name[0].strip() else None
    return None
