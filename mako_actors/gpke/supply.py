"""Supply assignments of a MaLo (who supplies it from when), as a journal in the store.

Each MaLo has one journal ``supply:<MaLo>`` (tenant-scoped, see ``store.Journal``). Its entries
are ``SupplyFact``s, appended in the same transaction as the event that decided them:

- ``assigned``: an imported assignment (``mako-actors masterdata import``), the starting point;
- ``claimed``: an Anmeldung passed E_0622 and is being worked on (until it is decided);
- ``started``: an Anmeldung was confirmed (E_0623): its supplier supplies from ``at`` (until
  ``until`` for a befristete Anmeldung); the previous supplier's assignment ends there and later
  ones are cancelled (55037 / 55038), but those starting when a befristete supply has ended;
- ``released``: a claimed Anmeldung was rejected (E_0623): nothing changes;
- ``ended``: an Abmeldung was confirmed (E_0607): the supplier's assignment ends at ``at``;
  ``reason`` is its STS+7 #1 (a later Abmeldung for the same date is decided by it, E_0607
  steps 130/610).

``SupplyView.fold`` replays a journal into the assignments and open claims; ingestion reads one
journal per trigger and hands the result to the workflow as command data (the workflow looks
nothing up). Everything stays local to one MaLo.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from mako_actors.errors import InvalidArgument
from mako_actors.gpke._models import built, json_value, unvalidated

__all__ = [
    "MEASUREMENTS",
    "MSB_ROLES",
    "TRANCHE_BASES",
    "Assignment",
    "BilanzkreisRegister",
    "MasterData",
    "Measurement",
    "MsbRole",
    "StaticMasterData",
    "Suppliers",
    "SupplyFact",
    "SupplyView",
    "TrancheBasis",
    "check_master_tenants",
    "fact_entry",
    "supply_key",
    "tranche_percent",
    "tranche_size",
]

#: STS+7 C556#2 of a 55002 for a MaLo that is not ruhend (AHB-FACTS §3): ZW6 pauschale MaLo,
#: ZW7 gemessene MaLo. Which one a MaLo is, is the NB's master data of that MaLo.
Measurement = Literal["ZW6", "ZW7"]
MEASUREMENTS: tuple[Measurement, ...] = ("ZW6", "ZW7")
#: CAV 7110 of the MSB in a 55002's SG10 (S1 FV2504): grundzuständiger (Z39), wettbewerblicher
#: (Z40) Messstellenbetreiber, Auffangmessstellenbetreiber (Z41).
MsbRole = Literal["Z39", "Z40", "Z41"]
MSB_ROLES: tuple[MsbRole, ...] = ("Z39", "Z40", "Z41")
#: CCI+Z37 DE7037 of a 55078's SG8 "Daten der Tranche" (S1 FV2504): the size of a Tranche is a
#: percentage of its MaLo (ZD1, the QTY+11 names it) or an Aufteilungsfaktor on the basis of
#: Referenzenträger / installierte Leistung (ZD2).
TrancheBasis = Literal["ZD1", "ZD2"]
TRANCHE_BASES: tuple[TrancheBasis, ...] = ("ZD1", "ZD2")


def supply_key(malo: str) -> str:
    """The journal key of a MaLo's supply assignments: ``supply:<MaLo>``."""
    return f"supply:{malo}"


@dataclass(frozen=True, slots=True)
class Suppliers:
    """Who supplies a MaLo at a date (``current``) and who is confirmed for later (``future``).

    From master data it may also say how the MaLo is measured (``measurement``, the 55002's
    STS+7 #2); ``None``: the workflow's default (``GpkeConfig.malo_measurement``). For the ID of
    a Tranche, ``tranche_of`` is the MaLo it belongs to (the 55078 of a Geschäftsvorfall 2 names
    both); a Tranche the master data does not know is not found (APERAK Z14).
    ``in_operation_from``: a Neuanlage's Inbetriebnahme (the NB has formed its ID; an Anmeldung
    received before then is the wrong process, E_0622 A04/A21). ``out_of_market_from``: from
    then on the MaLo takes no part in market communication (stillgelegt, or "Modell 2"; an
    Anmeldung for a date from then on gets A02). ``quarter_hour_metering``: whether all metering
    devices the energy quantities of a generating MaLo (or Tranche) need measure quarter-hourly
    (E_0622 step 250: ``False`` rejects its Anmeldung with A24; ``None``: not known, not
    checked). For a ruhende MaLo and the MaLo of the Kundenanlage it lies in (E_0622 steps 16–28;
    ``None``: not known, not checked): ``generating``, the ruhende MaLo is an erzeugende one in
    the NB's system (A09); ``ims``, it is measured by an intelligentes Messsystem (else A36 under
    FV2504, A46/A47 later where the Kundenanlage's quantities are computed);
    ``kundenanlage``, the MaLo is a MaLo "Kundenanlage" (§ 20 Abs. 1d EnWG / § 10c EEG; else
    A08); ``virtual_summenzaehler``, the Kundenanlage's quantities are computed by a virtueller
    Summenzähler; ``netzlokationen``, the IDs of the Netzlokationen the MaLo lies behind (a
    ruhende MaLo's must be among its Kundenanlage's, else A37).
    ``msb``/``msb_role``/``gmsb``/``messlokationen``: the MaLo's Messstellenbetreiber (MP-ID; Z39
    grundzuständig, Z40 wettbewerblich, Z41 Auffang), the grundzuständige MSB and the IDs of its
    Messlokationen, which a 55002 for a gemessene MaLo names (S1 FV2504 55002: LOC+Z17, SG8
    Z98/ZF3 with SG10). With ``msb`` the role defaults to
    Z39 and ``gmsb`` to the MSB when it is the grundzuständige; raises ``ValueError`` for another
    role without ``gmsb``, and for role, gMSB or Messlokationen without ``msb``.
    ``tranche_basis``/``tranche_percent``: how a Tranche's size is formed (ZD1: ``tranche_percent``
    of its MaLo, a decimal text > 0 and < 100 with at most two decimals; ZD2: an
    Aufteilungsfaktor, no percentage), which its 55078 names (SG8 Z15); a percentage alone means
    ZD1. Raises ``ValueError`` for them without ``tranche_of``, for ZD1 without a percentage or ZD2
    with one, and for a percentage out of that range.
    ``eeg_kwkg``: a generating MaLo (or Tranche) whose power is paid for under the EEG or the KWKG
    (E_0622 steps 405/605/805: its Anmeldungen take the month-start and one-month lead-time rules,
    A27/A28, A31/A32, A44; ``False`` or ``None``: the "Nicht-EEG/KWKG" lead times, A34/A30/A35; a
    Tranche's entry without it takes its MaLo's);
    ``ausfallverguetung``: it is in the Ausfallvergütung now (the NB's EEG register), so a supplier
    taking it over leaves it in a verkürzter Wechsel (step 420: 5 WT, A29); it needs ``eeg_kwkg``
    (``ValueError`` otherwise).
    ``netzlokation_msbs``: ``(ID, MSB, role)`` of those of ``netzlokationen`` whose MSB the master
    data give: a 55002 for a ruhende MaLo names its Kundenanlage's Netzlokationen with them
    (LOC+Z18 and SG8 ZD7, Muss [96] ∧ [688]).
    ``esv_from``: the Lieferbeginn of the Ersatz-/Grundversorgung the NB last registered for the
    MaLo (use case "Beginn der Ersatz-/Grundversorgung"); an Abmeldung "Ende der ESV ohne
    Folgelieferung" (STS+7 Z41) ending more than 3 months after it, or before it, gets 55006 A05
    (E_0607 step 80; ``None``: not known, not checked).
    ``known``: ``False`` from master data that list every MaLo of the NB but not this one.
    """

    current: str | None = None
    future: str | None = None
    future_start: datetime | None = None
    measurement: Measurement | None = None
    tranche_of: str | None = None
    in_operation_from: datetime | None = None
    out_of_market_from: datetime | None = None
    quarter_hour_metering: bool | None = None
    generating: bool | None = None
    ims: bool | None = None
    kundenanlage: bool | None = None
    virtual_summenzaehler: bool | None = None
    netzlokationen: tuple[str, ...] | None = None
    netzlokation_msbs: tuple[tuple[str, str, str], ...] = ()
    msb: str | None = None
    msb_role: MsbRole | None = None
    gmsb: str | None = None
    messlokationen: tuple[str, ...] = ()
    tranche_basis: TrancheBasis | None = None
    tranche_percent: str | None = None
    eeg_kwkg: bool | None = None
    ausfallverguetung: bool | None = None
    esv_from: datetime | None = None
    #: False: master data that list every MaLo of the NB (``StaticMasterData(complete=True)``)
    #: do not list this one: an Anmeldung of it is for no MaLo of the NB (APERAK Z14).
    known: bool = True

    def __post_init__(self) -> None:
        if self.ausfallverguetung and not self.eeg_kwkg:
            raise ValueError("'ausfallverguetung' is an EEG Veräußerungsform: it needs 'eeg_kwkg': true")
        if self.tranche_basis is not None or self.tranche_percent is not None:
            self._check_tranche()
        if self.msb is None:
            if self.msb_role is not None or self.gmsb is not None or self.messlokationen:
                raise ValueError("'msb_role', 'gmsb' and 'messlokationen' need 'msb'")
            return
        role = self.msb_role or "Z39"
        if self.gmsb is None and role != "Z39":
            raise ValueError(f"the MSB is not the grundzuständige ({role}); name it in 'gmsb'")
        object.__setattr__(self, "msb_role", role)  # the one place these defaults are decided
        object.__setattr__(self, "gmsb", self.gmsb or self.msb)

    def _check_tranche(self) -> None:
        if self.tranche_of is None:
            raise ValueError("'tranche_basis' and 'tranche_percent' are a Tranche's: they need 'tranche_of'")
        basis, percent = tranche_size(self.tranche_basis, self.tranche_percent)
        object.__setattr__(self, "tranche_basis", basis)
        object.__setattr__(self, "tranche_percent", percent)


def tranche_size(basis: object, percent: object) -> tuple[TrancheBasis, str | None]:
    """``(basis, percent)`` of a Tranche's size, checked and normalised: a percentage alone means
    ZD1, which needs one (``tranche_percent``); ZD2 (an Aufteilungsfaktor) takes none. Raises
    ``ValueError`` naming what does not fit."""
    basis = basis or "ZD1"
    if basis == "ZD2":
        if percent is not None:
            raise ValueError("a Tranche formed by Aufteilungsfaktor (ZD2) has no 'tranche_percent'")
        return "ZD2", None
    if basis != "ZD1":
        raise ValueError(f"'tranche_basis' is {basis!r}, expected one of {', '.join(TRANCHE_BASES)}")
    if percent is None:
        raise ValueError("a Tranche formed by percentage (ZD1) needs 'tranche_percent'")
    return "ZD1", tranche_percent(percent)


def tranche_percent(value: object) -> str:
    """``value`` as the percentage a 55078's QTY+11 names: decimal text, > 0 and < 100, at most two
    decimals ([914], [955], [930]); raises ``ValueError`` naming the value otherwise."""
    number = None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        with suppress(InvalidOperation):
            number = Decimal(str(value))
    if number is None or not number.is_finite() or not 0 < number < 100 or number != round(number, 2):
        raise ValueError(
            f"'tranche_percent' is {value!r}, expected a percentage > 0 and < 100 with at most two decimals"
        )
    return format(number.normalize(), "f")


_NO_SUPPLIERS = Suppliers()  # frozen: one shared instance
_UNKNOWN = Suppliers(known=False)


class MasterData(Protocol):
    """Initial assignments not (yet) imported into the store (``mako-actors masterdata import``).

    Its assignments are used only for a MaLo whose supply journal holds no imported
    assignment; confirmed Anmeldungen and Abmeldungen in the journal change them from there on.
    Its ``measurement`` of a MaLo is used for every Anmeldung of it (the journal holds none).
    """

    def suppliers(self, tenant: str, malo: str, at: datetime) -> Suppliers: ...


@runtime_checkable
class BilanzkreisRegister(Protocol):
    """Master data that also keep the NB's register of Zuordnungsermächtigungen (optional: master
    data without it, e.g. one written before the register existed, leave E_0622 step 60/260
    unchecked)."""

    def bilanzkreise(self, tenant: str, supplier: str) -> frozenset[str] | None:
        """The Bilanzkreise (EICs) ``supplier`` holds a Zuordnungsermächtigung for at the NB
        ``tenant``; ``None``: the master data keep no such register (E_0622 step 60/260 is then
        not checked). With a register, a supplier it does not list holds none."""
        ...


class StaticMasterData:
    """Initial assignments (and measurements) from a mapping MaLo → ``Suppliers``, and optionally
    the register of Zuordnungsermächtigungen, supplier MP-ID → Bilanzkreise (tests, demos,
    replays).

    ``complete``: the mapping lists every MaLo of the NB, so one it does not name is not known
    (``Suppliers.known``: an Anmeldung of it gets APERAK Z14); otherwise it holds only the MaLos
    it says something about, and any other has no supplier. ``tenant``: the NB (our MP-ID) the
    data is of; for another tenant it says nothing (no supplier, no register). ``None``: of
    every tenant, which only fits one (a MaLo belongs to one NB; ``check_master_tenants``).
    """

    def __init__(
        self,
        by_malo: Mapping[str, Suppliers] | None = None,
        bilanzkreise: Mapping[str, frozenset[str]] | None = None,
        *,
        complete: bool = False,
        tenant: str | None = None,
    ) -> None:
        self.by_malo = dict(by_malo or {})
        self.authorizations = None if bilanzkreise is None else dict(bilanzkreise)
        self.complete = complete
        self.tenant = tenant

    def suppliers(self, tenant: str, malo: str, at: datetime) -> Suppliers:
        if self.tenant is not None and tenant != self.tenant:
            return _NO_SUPPLIERS
        return self.by_malo.get(malo, _UNKNOWN if self.complete else _NO_SUPPLIERS)

    def bilanzkreise(self, tenant: str, supplier: str) -> frozenset[str] | None:
        if self.authorizations is None or (self.tenant is not None and tenant != self.tenant):
            return None
        return self.authorizations.get(supplier, frozenset())


def check_master_tenants(master: MasterData | None, tenants: Iterable[str], where: str) -> None:
    """``InvalidArgument`` when static master data would answer for tenants it is not of: one
    without a ``tenant`` given several tenants (each NB's MaLos are its own: another tenant's
    Anmeldung would ask this one's supplier), or one of a tenant not among ``tenants``."""
    if not isinstance(master, StaticMasterData):
        return
    ours = sorted(set(tenants))
    if master.tenant is None and len(ours) > 1:
        raise InvalidArgument(
            f"{where}: the master data name no tenant and {len(ours)} are given ({', '.join(ours)}): "
            'they would apply to each; give the file "tenant": "<MP-ID>", or import each '
            "tenant's assignments with 'masterdata import --tenant'"
        )
    if master.tenant is not None and master.tenant not in ours:
        given = ", ".join(ours)
        raise InvalidArgument(f"{where}: the master data are of tenant {master.tenant}, none of {given}")


FactKind = Literal["assigned", "claimed", "started", "released", "ended"]


class SupplyFact(BaseModel):
    """One journal entry of a MaLo (see the module doc for the kinds).

    ``process`` is the deciding process's key (its seed: sender, 0020, 0062 and IDE of the
    trigger), so a claim and its outcome pair up; ``due`` is when a claimed Anmeldung is decided
    at the latest (its 11:00 WT1 Frist), the DTM+Z08 of an A06 rejection. ``resting`` (a
    ``started`` fact): whether the Anmeldung was for a ruhende MaLo of a Kundenanlage (STS+7
    ZAP), which E_0607 step 30 asks of a later Abmeldung; ``None``: not known (written before the
    field existed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FactKind
    supplier: str | None = None
    at: datetime | None = None
    until: datetime | None = None
    process: str | None = None
    due: datetime | None = None
    reason: str | None = None
    resting: bool | None = None

    def to_entry(self) -> dict[str, Any]:
        """Plain data for the journal (``None`` fields left out): ``model_dump(mode="json",
        exclude_none=True)``, built directly (one or two per decision)."""
        return _entry(self.__dict__)


_FACT_FIELDS = tuple(SupplyFact.model_fields)


def _entry(values: dict[str, Any]) -> dict[str, Any]:
    return {name: json_value(value) for name in _FACT_FIELDS if (value := values.get(name)) is not None}


def fact_entry(
    kind: FactKind,
    *,
    supplier: str | None = None,
    at: datetime | None = None,
    until: datetime | None = None,
    process: str | None = None,
    due: datetime | None = None,
    reason: str | None = None,
    resting: bool | None = None,
) -> dict[str, Any]:
    """``SupplyFact(kind=kind, ...).to_entry()`` without building the fact: the workflow writes
    its facts straight into the journal (values of the fields' types, as for ``unvalidated``)."""
    values = {
        "kind": kind, "supplier": supplier, "at": at, "until": until, "process": process, "due": due,
        "reason": reason, "resting": resting,
    }  # fmt: skip
    return _entry(values)


@dataclass(slots=True)
class Assignment:
    """``supplier`` supplies the MaLo in ``[start, end)``; ``None`` is open-ended."""

    supplier: str
    start: datetime | None
    end: datetime | None
    end_reason: str | None = None  # STS+7 #1 of the Abmeldung that ended it at ``end``
    # ``end`` is no end E_0607 step 100 counts (an Abmeldung's, an LFA's answer or silence,
    # another's start running it out): where a befristete Anmeldung asked its supply to end
    # (its DTM+93), or the start of a future assignment another's confirmed Anmeldung cancelled
    # (a 55038, none of step 100's confirmations)
    uncounted_end: bool = False
    resting: bool | None = None  # started by an Anmeldung for a ruhende MaLo (ZAP); None: not known

    def covers(self, at: datetime) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)

    def endable(self, supplier: str, end: datetime) -> bool:
        """Whether an Abmeldung of ``supplier`` ending at ``end`` ends this assignment: its own,
        running at ``end`` or starting exactly then."""
        return (
            self.supplier == supplier
            and (self.start is None or self.start <= end)
            and (self.end is None or self.end > end)
        )

    @property
    def cancelled(self) -> bool:
        """Ended at its start (an Aufhebung, a 55038): it supplies nothing, but a later
        Abmeldung for that date finds it ended there (E_0607 step 100)."""
        return self.start is not None and self.end == self.start


@dataclass(slots=True)
class SupplyView:
    """A MaLo's assignments and open Anmeldung claims, folded from its journal."""

    assignments: list[Assignment] = field(default_factory=list)
    claims: dict[str, SupplyFact] = field(default_factory=dict)
    claim_count: int = 0

    @classmethod
    def fold(cls, entries: Iterable[Mapping[str, Any]], baseline: Suppliers | None = None) -> SupplyView:
        """The view after ``entries`` (journal order). ``baseline`` stands in for an import
        when the journal has none (master data handed to the pipeline, not yet imported)."""
        facts = [_fact_of(entry) for entry in entries]
        view = cls()
        if baseline is not None and not any(f.kind == "assigned" for f in facts):
            for fact in _baseline_facts(baseline):
                view.apply(fact)
        for fact in facts:
            view.apply(fact)
        return view

    def apply(self, fact: SupplyFact) -> None:
        if fact.kind == "assigned" and fact.supplier:
            self.assignments.append(Assignment(fact.supplier, fact.at, fact.until))
        elif fact.kind == "claimed" and fact.process:
            self.claims[fact.process] = fact
            self.claim_count += 1
        elif fact.kind == "released" and fact.process:
            self.claims.pop(fact.process, None)
        elif fact.kind == "started" and fact.supplier and fact.at is not None:
            if fact.process:
                self.claims.pop(fact.process, None)
            self._cut(None, fact.at, starting=fact.supplier, until=fact.until)
            started = Assignment(fact.supplier, fact.at, fact.until)
            started.uncounted_end, started.resting = fact.until is not None, fact.resting
            self.assignments.append(started)
        elif fact.kind == "ended" and fact.supplier and fact.at is not None:
            self._cut(fact.supplier, fact.at, fact.reason)

    def _cut(
        self,
        supplier: str | None,
        at: datetime,
        reason: str | None = None,
        starting: str | None = None,
        until: datetime | None = None,
    ) -> None:
        """End the assignments (of ``supplier``, or all) at ``at``, by an Abmeldung of ``reason``
        if given. Those starting then or later are cancelled (kept, ended at their start); not so
        those of ``starting``, which its confirmed start replaces (dropped), nor those starting
        at or after ``until``, the end of a befristete supply from ``at`` (they stay).

        An Abmeldung (``supplier`` given) ends one assignment of its sender: the one running at
        ``at``, or one starting exactly then (an Aufhebung, E_0607 step 90). A later one of the
        same supplier is its own Zuordnung and stays."""
        kept: list[Assignment] = []
        for a in self.assignments:
            later = until is not None and a.start is not None and a.start >= until
            after = supplier is not None and a.start is not None and a.start > at
            if (supplier is not None and a.supplier != supplier) or a.cancelled or later or after:
                kept.append(a)
            elif a.start is not None and a.start >= at:
                if a.supplier == starting:
                    continue  # replaced by the same supplier's confirmed start, not ended
                # A future assignment that never starts (Aufhebung, 55038): empty, not gone. Its
                # own Aufhebung confirmed ends it for step 100 ("already ended"); another's
                # earlier start cancelling it does not (the next Anmeldung of its supplier may
                # start). Another's start at the same instant does: its supplier was asked as the
                # LFA (55010) and told by 55037, as any LFA whose supply ends.
                a.end, a.end_reason = a.start, reason
                a.uncounted_end = supplier is None and a.start != at
                kept.append(a)
            else:
                if a.end is None or a.end > at:
                    a.end, a.end_reason, a.uncounted_end = at, reason, False
                elif a.end == at and reason is not None:
                    # confirmed (again) by an Abmeldung, maybe for another reason (E_0607 A11/A27)
                    a.end_reason, a.uncounted_end = reason, False
                kept.append(a)
        self.assignments = kept

    def supplier_at(self, at: datetime) -> str | None:
        """Who supplies the MaLo at ``at`` (the latest decided assignment covering it)."""
        for a in reversed(self.assignments):
            if a.covers(at):
                return a.supplier
        return None

    def suppliers(self, at: datetime) -> Suppliers:
        """The supplier at ``at`` and the earliest one confirmed to start after it."""
        later = self.superseded(at)
        future, future_start = later[0] if later else (None, None)
        return Suppliers(current=self.supplier_at(at), future=future, future_start=future_start)

    def superseded(self, at: datetime, until: datetime | None = None) -> tuple[tuple[str, datetime], ...]:
        """``(supplier, start)`` of every confirmed assignment starting after ``at`` (and before
        ``until``, the end of a befristete supply from ``at``), by start: what an Anmeldung from
        ``at`` cancels when it is confirmed (``_cut``), each supplier told by a 55038."""
        later = [
            (a.supplier, a.start)
            for a in self.assignments
            if a.start is not None and a.start > at and not a.cancelled and (until is None or a.start < until)
        ]
        return tuple(sorted(later, key=operator.itemgetter(1)))  # (stable: ties keep journal order)

    def can_end(self, supplier: str, end: datetime) -> bool:
        """Whether ``supplier`` holds an assignment an Abmeldung ending at ``end`` can end: one
        running at ``end`` or starting exactly then (a future assignment cancelled, E_0607 step 90)."""
        return any(a.endable(supplier, end) for a in self.assignments)

    def resting(self, supplier: str, end: datetime) -> bool | None:
        """Whether the assignment of ``supplier`` an Abmeldung ending at ``end`` ends (``can_end``)
        was started for a ruhende MaLo of a Kundenanlage (E_0607 step 30); ``None``: not known
        (an imported assignment, or a fact written before ``SupplyFact.resting``)."""
        return next((a.resting for a in reversed(self.assignments) if a.endable(supplier, end)), None)

    def starts_at(self, supplier: str, at: datetime) -> bool:
        """Whether an assignment of ``supplier`` begins exactly at ``at`` (the start an Aufhebung
        einer zukünftigen Zuordnung must name, E_0607 steps 90/570)."""
        return any(a.supplier == supplier and a.start == at for a in self.assignments)

    def ended_at(self, supplier: str, end: datetime) -> bool:
        """Whether ``supplier``'s supply already ends exactly at ``end`` by a confirmation E_0607
        step 100 counts (an Abmeldung's, an LFA's answer or silence, another's start), not by the
        term of a befristete Anmeldung nor by a 55038 cancelling it before it started."""
        return any(a.supplier == supplier and a.end == end and not a.uncounted_end for a in self.assignments)

    def end_reason(self, supplier: str, end: datetime) -> str | None:
        """The STS+7 #1 of the Abmeldung that ended ``supplier``'s supply at ``end``; ``None``
        when none did (not ended there, or ended by another supplier's start)."""
        return next(
            (
                a.end_reason
                for a in self.assignments
                if a.supplier == supplier and a.end == end and not a.uncounted_end
            ),
            None,
        )

    def confirmed_start(self, at: datetime) -> Assignment | None:
        """An assignment that starts exactly at ``at``, if any: confirmed by an Anmeldung, or
        imported (a migrated future assignment was confirmed too, by the system before us)."""
        for a in self.assignments:
            if a.start is not None and a.start == at and not a.cancelled:
                return a
        return None

    def open_claim(self) -> SupplyFact | None:
        """An Anmeldung of this MaLo that is being worked on and not yet answered (E_0622 A06)."""
        return next(iter(self.claims.values()), None)


def _baseline_facts(baseline: Suppliers) -> list[SupplyFact]:
    """The ``assigned`` facts of master data. Validated as ``SupplyFact``s unless every value
    already has its field's type (a str MP-ID, a datetime): asked once per trigger."""
    fact = SupplyFact if not _typed(baseline) else unvalidated(SupplyFact)
    facts: list[SupplyFact] = []
    if baseline.current:
        until = baseline.future_start if baseline.future else None
        facts.append(fact(kind="assigned", supplier=baseline.current, until=until))
    if baseline.future and baseline.future_start is not None:
        facts.append(fact(kind="assigned", supplier=baseline.future, at=baseline.future_start))
    return facts


def _typed(baseline: Suppliers) -> bool:
    """Whether the values of ``baseline`` have the types of the ``SupplyFact`` fields they fill."""
    return (
        (baseline.current is None or type(baseline.current) is str)
        and (baseline.future is None or type(baseline.future) is str)
        and (baseline.future_start is None or type(baseline.future_start) is datetime)
    )


_INSTANTS = ("at", "until", "due")
_KINDS = frozenset({"assigned", "claimed", "started", "released", "ended"})
_FACT_FIELD_SET = frozenset(_FACT_FIELDS)


def _fact_of(entry: Mapping[str, Any]) -> SupplyFact:
    """A journal entry as a ``SupplyFact``. Entries are written by this module only (plain data
    of ``to_entry``), so the instants are parsed directly instead of validating each entry: a
    MaLo's journal is read once per trigger and grows with its history."""
    if entry.get("kind") not in _KINDS:
        return SupplyFact.model_validate(entry)  # a clear error for anything unexpected
    # An unknown key (none is written today) is left out, as ``model_construct`` did.
    values = dict(entry) if _FACT_FIELD_SET.issuperset(entry) else {
        name: value for name, value in entry.items() if name in _FACT_FIELD_SET
    }
    for name in _INSTANTS:
        raw = values.get(name)
        if isinstance(raw, str):
            values[name] = datetime.fromisoformat(raw)
    return built(SupplyFact, values)
