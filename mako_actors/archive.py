"""Synthetic archives of inbound LFW24 traffic at a grid operator, for replays and benchmarks.

``generate_archive(directory, ArchiveSpec(days=..., processes=..., seed=...))`` writes what an
NB's gateway would have archived: one ``.edi`` file per received interchange, ``manifest.csv``
(``file,received_at``, the receipt instants) and ``master.json`` (who supplies each MaLo, for
``replay --master-data``). Deterministic per spec: the same spec writes the same bytes.

The traffic: Anmeldungen (55001, some 55077) bundled per new supplier into interchanges of up
to ``bundle`` messages, Abmeldungen (55004), the old supplier's answers to our 55010 (55011 on
time, 55012 objections, answers after 09:00 WT1, and none at all), competing Anmeldungen for a
MaLo already in a change, retransmitted interchanges (the same bytes again) and, at ``defects``
rate, broken files (truncated, garbage), invalid MaLo-IDs and missed Vorlauffristen.

The LFA's answer names our 55010 by its IDE in ``RFF+TN`` (55011/55012 carry no ``LOC+Z16``
since FV2504). That IDE is derived by the workflow from the Anmeldung's references, so the
generator asks the workflow for it (``lfa_request_ide``) rather than copying its rule.

A 55077 of Geschäftsvorfall 2 (STS+7 #2 ZW1) is for a Tranche and names it by ``LOC+Z21`` only
(S1 FV2504 55077 [477]); ``master.json`` then has the Tranche's entry with ``tranche_of``, the MaLo
it belongs to (the NB forms Tranchen, so its master data knows them).

Every Anmeldung asks for one Produktpaket (SG8 ``SEQ+Z79``) whose Bilanzkreis is its sender's
(``bilanzkreis_of``); ``master.json``'s ``"bilanzkreise"`` registers each supplier's, and names
the MSB and a Messlokation of each consuming MaLo (the 55002 names them). Among the ``defects``,
some Anmeldungen name another supplier's Bilanzkreis (E_0622 A05/A25) or are for a stillgelegte
MaLo (A02) or a Neuanlage (A04/A21).

Beyond the plain cases, as a grid operator receives them: most generating MaLos are EEG/KWKG
(``eeg_kwkg``; a GV2's Tranche takes its MaLo's word), so their Anmeldungen ask for the 1st of a
month with a month of lead time, some out of the Ausfallvergütung (``ausfallverguetung``, 5 WT);
their late defects miss the month start (A27/A31) or the lead time (A28/A29/A32). Some consuming
Anmeldungen are for a ruhende MaLo in a Kundenanlage (STS+7 ZAP, the ruhende MaLo in ``LOC+Z22``,
the Kundenanlage's MaLo in ``LOC+Z16``, both with master data: Netzlokation, iMS, MSB); their
defects name a MaLo that is no Kundenanlage (A08) or lies behind another Netzlokation (A37). Some
generating Anmeldungen are of Geschäftsvorfall 3 (STS+7 ZW2, a new Tranche: the process then
waits for the NB's operator, its answer unsent). Some Abmeldungen end an Ersatz-/Grundversorgung
(STS+7 Z41) whose start ``esv_from`` names, their defects one that began more than 3 months before
(E_0607 A05); some are for a ruhende MaLo (STS+7 ZAP), named by ``LOC+Z22`` alone. All of these
are chosen from IDs and the reference counter, not drawn: the random stream, and so every other
message of a spec, stays as it was.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from mako_actors.edifact.outbound import UtilmdMessage, UtilmdTransaction, build_utilmd
from mako_actors.edifact.render import OutboundEnvelope, render_interchange
from mako_actors.edifact.synthetic import synthetic_malo
from mako_actors.errors import InvalidArgument
from mako_actors.gpke.calendar import BERLIN, next_werktag, uet
from mako_actors.gpke.commands import ProductPackage, ReceiveAnmeldung
from mako_actors.gpke.events import LfaConsulted
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.gpke.validation import _malo_rule, malo_check_digit
from mako_actors.gpke.workflow import GpkeNbWorkflow
from mako_actors.version import FormatVersion

__all__ = ["ArchiveSpec", "ArchiveSummary", "generate_archive", "lfa_request_ide", "mp_id"]

DEFAULT_NB = "9900000002009"
_LFA_ANSWER_AT = time(9, 0)


def mp_id(n: int) -> str:
    """A BDEW-style MP-ID (``99…``) with a valid check digit, numbered ``n``."""
    body = f"99{n:010d}"
    return body + str(_malo_rule(body))


@dataclass(frozen=True)
class ArchiveSpec:
    """What to generate: ``processes`` supplier changes over ``days`` days from ``start``.

    ``defects`` is the share (0..1) of broken files and invalid messages; ``duplicates`` the
    share of interchanges received a second time; ``bundle`` the most messages per interchange.
    """

    days: int = 5
    processes: int = 100
    seed: int = 0
    defects: float = 0.02
    duplicates: float = 0.02
    competing: float = 0.03
    bundle: int = 8
    suppliers: int = 24
    nb: str = DEFAULT_NB
    start: date = date(2025, 11, 3)

    def check(self) -> None:
        """Raises ``InvalidArgument`` naming the first value out of range."""
        if self.days < 1 or self.processes < 0 or self.bundle < 1 or self.suppliers < 3:
            raise InvalidArgument("archive: days >= 1, processes >= 0, bundle >= 1, suppliers >= 3")
        for name in ("defects", "duplicates", "competing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidArgument(f"archive: {name} must lie in 0..1, got {getattr(self, name)}")


@dataclass
class ArchiveSummary:
    """What was written: files, messages (UNH) by kind, the period covered."""

    files: int = 0
    messages: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None

    def to_plain(self) -> dict[str, object]:
        return {
            "files": self.files,
            "messages": self.messages,
            "kinds": dict(sorted(self.kinds.items())),
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
        }


@dataclass
class _Tx:
    """One transaction to send: who, when, what, and (after bundling) its references.

    ``tranche_of``: the MaLo of the Tranche an Anmeldung of Geschäftsvorfall 2 is for.
    """

    kind: str
    sender: str
    at: datetime
    transaction: UtilmdTransaction
    interchange_ref: str = ""
    message_ref: str = ""
    document_number: str = ""
    lfa: str | None = None  # for an Anmeldung the LFA will answer: who
    answer: str | None = None  # "confirm", "object", "late", or None (silent)
    tranche_of: str | None = None
    master: dict[str, Any] = field(default_factory=dict)  # the NB's master data of its MaLo
    # What the NB's master data add to the command (``gpke.family``) beyond ``master``'s own
    # dates: EEG/KWKG flags, a ruhende MaLo's and its Kundenanlage's facts (command field names)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Interchange:
    sender: str
    at: datetime
    control_ref: str
    txs: list[_Tx]


def lfa_request_ide(tx: _Tx, nb: str) -> str | None:
    """The IDE of the 55010 the workflow sends for the Anmeldung ``tx``, or None if it sends none."""
    t = tx.transaction
    assert t.start is not None
    command = ReceiveAnmeldung(
        pid=t.pid,
        sender=tx.sender,
        recipient=nb,
        # a Tranche's ID is the object of a GV2 Anmeldung, a ruhende MaLo's of a ZAP one
        malo=t.tranche or t.resting_malo or t.malo,
        ide_ref=t.ide_ref,
        document_number=tx.document_number,
        document_date=tx.at,
        interchange_ref=tx.interchange_ref,
        message_ref=tx.message_ref,
        format_version=FormatVersion.in_force(uet(tx.at)),
        received_at=tx.at,
        zuordnungsbeginn=t.start,
        transaction_reason=t.transaction_reason,
        transaction_detail=t.transaction_reason_detail,  # a 55077's GV, which E_0622 needs
        customer_name=t.customer_name,  # NAD+Z09, Muss in a 55001
        current_supplier=tx.lfa,
        tranche_malo=tx.tranche_of,
        malo_out_of_market_from=tx.master.get("out_of_market_from"),
        malo_in_operation_from=tx.master.get("in_operation_from"),
        kundenanlage_malo=t.malo if t.resting_malo else None,
        **tx.facts,
        # every supplier's own Bilanzkreis is in the register master.json writes
        product_packages=tuple(
            ProductPackage(id=package, bilanzkreis=eic, authorized=eic == bilanzkreis_of(tx.sender))
            for package, eic in t.product_packages or ()
        ),
    )
    output = GpkeNbWorkflow().handle(GpkeNbWorkflow().initial_state(), command)
    for event in output.events:
        if isinstance(event, LfaConsulted):
            return event.request.ide_ref
    return None


def tranche_id(malo: str) -> str:
    """A Tranche ID of ``malo`` for generated traffic: a valid MaLo-ID (the format of a Tranche's
    ID, [950]) from its digits, the first kept, the other nine reversed."""
    base = malo[0] + malo[9:0:-1]
    return base + str(malo_check_digit(base))


def _object_of(tx: _Tx) -> str | None:
    """The ID an Anmeldung is for: a Tranche's, a ruhende MaLo's or the MaLo's."""
    t = tx.transaction
    return t.tranche or t.resting_malo or t.malo


def kundenanlage_id(malo: str) -> str:
    """The MaLo-ID of the Kundenanlage a generated ruhende MaLo ``malo`` lies in: its digits, the
    first kept, the other nine rotated by one, and a check digit."""
    base = malo[0] + malo[2:10] + malo[1]
    return base + str(malo_check_digit(base))


def _month_start_from(day: date) -> datetime:
    """00:00 Berlin of the first 1st of a month on or after ``day``."""
    if day.day != 1:
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return datetime.combine(day, time(0), BERLIN).astimezone(UTC)


class _Generator:
    def __init__(self, spec: ArchiveSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.suppliers = [mp_id(1000 + i) for i in range(spec.suppliers)]
        self.master: dict[str, dict[str, Any]] = {}
        self.msb = mp_id(5000)  # the grundzuständige MSB of every MaLo
        self.counter = 0

    def next_ref(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.spec.seed % 1000:03d}{self.counter:08d}"

    def instant(self) -> datetime:
        """A receipt instant on one of the days, mostly in business hours (Berlin)."""
        day = self.spec.start + timedelta(days=self.rng.randrange(self.spec.days))
        hour = self.rng.choice(range(7, 19)) if self.rng.random() < 0.9 else self.rng.randrange(24)
        local = datetime.combine(day, time(hour, self.rng.randrange(60), self.rng.randrange(60)), BERLIN)
        return local.astimezone(UTC)

    def start_for(self, at: datetime, late: bool) -> datetime:
        """00:00 Berlin some days after the ÜT (within the Vorlauffrist unless ``late``)."""
        ahead = 1 if late else self.rng.randint(6, 40)
        return datetime.combine(uet(at) + timedelta(days=ahead), time(0), BERLIN).astimezone(UTC)

    def triggers(self) -> list[_Tx]:
        out: list[_Tx] = []
        for _ in range(self.spec.processes):
            malo = synthetic_malo(self.rng)
            at = self.instant()
            roll = self.rng.random()
            defect = self.rng.random() < self.spec.defects
            if roll < 0.15:  # Abmeldung by the supplier (mostly the one who supplies the MaLo)
                lf = self.rng.choice(self.suppliers)
                self.master[malo] = {"current": lf if self.rng.random() < 0.9 else self.other(lf)}
                end = self.start_for(at, late=False)
                # One in eight ends an Ersatz-/Grundversorgung (Z41): E_0607 step 80 confirms it
                # when it began within the 3 months before the end (its defect: long before, A05).
                esv = self.counter % 8 == 3
                if esv:
                    began = end - timedelta(days=200 if defect else 40)
                    self.master[malo]["esv_from"] = began.isoformat()
                # One in twenty is for a ruhende MaLo, named by LOC+Z22 alone (S1 55004 [96])
                resting = not esv and int(malo[1:3]) % 20 == 7
                tx = UtilmdTransaction(
                    ide_ref=self.next_ref("A"), pid="55004", malo=malo, end=end,
                    transaction_reason="Z41" if esv else "Z33",
                    transaction_reason_detail="ZAP" if resting else "ZW4",
                    malo_qualifier="Z22" if resting else "Z16",
                )  # fmt: skip
                out.append(_Tx("abmeldung", lf, at, tx))
                continue
            lfn = self.rng.choice(self.suppliers)
            lfa = self.other(lfn) if self.rng.random() < 0.85 else None
            generating = roll > 0.95
            detail = ("ZW0" if roll > 0.975 else "ZW1") if generating else "ZW4"
            if detail == "ZW0" and malo[3] == "5":  # one in ten GV1 is a GV3: a new Tranche
                detail = "ZW2"
            # GV2 (ZW1) changes the supplier of a Tranche of the MaLo: its ID is the object
            # (derived, so the random stream and every other message stay as they were).
            tranche_of, malo = (malo, tranche_id(malo)) if detail == "ZW1" else (None, malo)
            entry: dict[str, Any] = {"current": lfa} if lfa is not None else {}
            if tranche_of is not None:
                # its share of the MaLo (the 55078's SG8 Z15), from the ID: the random stream stays
                entry.update(tranche_of=tranche_of, tranche_percent=str(5 + int(malo[-3:]) % 90))
            bad_malo = defect and self.rng.random() < 0.5
            # The other defects by the counter (so the random stream stays as it was): a Bilanzkreis
            # the LFN holds no Zuordnungsermächtigung for (A05/A25), a stillgelegte MaLo (A02 for
            # a consuming one), a Neuanlage (A04/A21), a missed Vorlauffrist.
            other = self.counter % 4 if defect and not bad_malo else None
            foreign, late_start = other == 0, other == 3
            sent_id = (malo[:10] + str((int(malo[10]) + 1) % 10)) if bad_malo else malo
            start = self.start_for(at, late=late_start)
            facts: dict[str, Any] = {}
            # A ruhende MaLo in a Kundenanlage (1 in 20 consuming ones, by its ID); its defects
            # take the place of the stillgelegte MaLo and the Neuanlage
            kundenanlage = kundenanlage_id(malo) if not generating and int(malo[1:3]) % 20 == 7 else None
            if kundenanlage is not None:
                facts = self.resting(malo, kundenanlage, entry, other)
            elif other == 1:
                entry["out_of_market_from"] = (start - timedelta(days=1)).isoformat()
            elif other == 2:
                entry["in_operation_from"] = (at + timedelta(days=30)).isoformat()
            if generating and int(malo[-2]) % 4:  # three in four generating MaLos are EEG/KWKG
                start, facts = self.eeg(malo, tranche_of, detail, entry, at, start, late_start)
            # The MSB and Messlokation a 55002 (gemessen) and every 55078 name (the NB's own, Z39);
            # a Tranche's is its MaLo's
            entry.update(msb=self.msb, messlokationen=[f"DE{tranche_of or malo}{'0' * 20}"])
            self.master[malo] = entry
            names = (self.rng.choice(_NAMES), self.rng.choice(_NAMES))  # drawn after the start
            tx = UtilmdTransaction(
                ide_ref=self.next_ref("T"),
                pid="55077" if generating else "55001",
                # a ruhende MaLo's Anmeldung names its Kundenanlage's MaLo (LOC+Z16) and itself (Z22)
                malo=None if tranche_of else kundenanlage or sent_id,
                resting_malo=sent_id if kundenanlage else None,
                tranche=sent_id if tranche_of else None,
                start=start,
                transaction_reason="E03",
                # STS+7 #2 as real senders send it: the GV (GV1-3), a verbrauchende or a ruhende MaLo.
                transaction_reason_detail="ZAP" if kundenanlage else detail,
                # (drawn for a 55077 too, so the random stream stays; it has no SG12, NAD+Z09)
                customer_name=names if not generating else None,
                product_packages=(("1", bilanzkreis_of(self.not_(lfn) if foreign else lfn)),),
            )
            answer = self.rng.choices(["confirm", "object", "late", None], weights=(70, 10, 10, 10))[0]
            out.append(_Tx(
                "anmeldung", lfn, at, tx, lfa=lfa, answer=answer if lfa else None, tranche_of=tranche_of,
                master=entry, facts=facts,
            ))  # fmt: skip
            if self.rng.random() < self.spec.competing:  # another supplier wants the same MaLo
                rival = self.other(lfn)
                later = at + timedelta(minutes=self.rng.randint(5, 240))
                key = "tranche" if tranche_of else "resting_malo" if kundenanlage else "malo"
                own = (("1", bilanzkreis_of(rival)),)  # the rival's own Bilanzkreis
                update = {"ide_ref": self.next_ref("T"), "product_packages": own, key: malo}
                rtx = tx.model_copy(update=update)
                out.append(_Tx(
                    "competing", rival, later, rtx, tranche_of=tranche_of, master=entry, facts=facts
                ))  # fmt: skip
        return out

    def eeg(
        self,
        malo: str,
        tranche_of: str | None,
        detail: str,
        entry: dict[str, Any],
        at: datetime,
        start: datetime,
        late: bool,
    ) -> tuple[datetime, dict[str, Any]]:
        """An EEG/KWKG MaLo's master data (a Tranche's on its MaLo's entry), the start its Anmeldung
        asks for and the facts its command gets: the 1st of a month at least a month ahead; late,
        the day after (mostly not a 1st: A27) or the next 1st (within a month: A28, A29 out of the
        Ausfallvergütung, which a GV1 of one in three such MaLos leaves in 5 WT)."""
        leaves_ausfall = detail == "ZW0" and int(malo[-3]) % 3 == 0
        if tranche_of is not None:
            self.master.setdefault(tranche_of, {})["eeg_kwkg"] = True
        else:
            entry["eeg_kwkg"] = True
            if leaves_ausfall:
                entry["ausfallverguetung"] = True
        if not late:
            start = _month_start_from(uet(at) + timedelta(days=32))
        elif self.counter % 2:
            start = _month_start_from(uet(at) + timedelta(days=2))
        facts = {"malo_eeg_kwkg": True, "malo_ausfallverguetung": True if leaves_ausfall else None}
        return start, facts

    def resting(
        self, malo: str, kundenanlage: str, entry: dict[str, Any], other: int | None
    ) -> dict[str, Any]:
        """The master data of a ruhende MaLo (``entry``) and of its Kundenanlage's MaLo behind one
        Netzlokation (measured by an iMS, the Netzlokation by the NB's MSB), and the facts its
        command gets; defect 1 is a Kundenanlage's MaLo that is none (A08), 2 a ruhende MaLo behind
        another Netzlokation (A37)."""
        nelo = "E" + kundenanlage[1:]
        own = "E" + malo[1:] if other == 2 else nelo
        is_kua = other != 1
        self.master[kundenanlage] = {
            "kundenanlage": is_kua, "netzlokationen": [{"id": nelo, "msb": self.msb}]
        }  # fmt: skip
        entry.update(ims=True, netzlokationen=[own])
        return {
            "resting_ims": True,
            "resting_netzlokationen": (own,),
            "kundenanlage_is_kua": is_kua,
            "kundenanlage_netzlokationen": (nelo,),
        }

    def not_(self, supplier: str) -> str:
        """The first supplier other than ``supplier`` (no random draw)."""
        return next(s for s in self.suppliers if s != supplier)

    def other(self, supplier: str) -> str:
        while (choice := self.rng.choice(self.suppliers)) == supplier:
            pass
        return choice

    def bundle(self, txs: list[_Tx], prefix: str) -> list[_Interchange]:
        """Per sender, consecutive transactions within an hour share an interchange."""
        by_sender: dict[str, list[_Tx]] = {}
        for tx in sorted(txs, key=lambda t: (t.at, t.transaction.ide_ref)):
            by_sender.setdefault(tx.sender, []).append(tx)
        out: list[_Interchange] = []
        for sender, items in sorted(by_sender.items()):
            current: _Interchange | None = None
            for tx in items:
                fits = current is not None and len(current.txs) < self.spec.bundle
                if current is None or not fits or tx.at - current.txs[0].at > timedelta(hours=1):
                    current = _Interchange(sender, tx.at, self.next_ref(prefix), [])
                    out.append(current)
                current.txs.append(tx)
                current.at = tx.at  # received when its last message was ready
        for ic in out:
            for number, tx in enumerate(ic.txs, start=1):
                tx.interchange_ref, tx.message_ref = ic.control_ref, f"M{number}"
                tx.document_number, tx.at = f"D{ic.control_ref}{number:03d}", ic.at
        return out

    def answers(self, triggers: list[_Tx]) -> list[_Tx]:
        """The LFAs' answers to the 55010s the workflow sends for the ``triggers``' Anmeldungen."""
        # Bundled, a competing Anmeldung may be received before the one it competes with; the
        # first received is worked on, the other rejected at once (A06/A45): it asks no LFA.
        first: dict[str | None, tuple[datetime, str]] = {}
        for tx in triggers:
            if tx.kind in ("anmeldung", "competing"):
                received = (tx.at, tx.interchange_ref)
                first[_object_of(tx)] = min(first.get(_object_of(tx), received), received)
        out: list[_Tx] = []
        for tx in triggers:
            if tx.kind != "anmeldung" or tx.lfa is None or tx.answer is None:
                continue
            if first[_object_of(tx)] < (tx.at, tx.interchange_ref):
                continue
            request = lfa_request_ide(tx, self.spec.nb)
            if request is None:  # rejected at once or by APERAK: no 55010, nothing to answer
                continue
            due = datetime.combine(next_werktag(uet(tx.at)), _LFA_ANSWER_AT, BERLIN).astimezone(UTC)
            if tx.answer == "late":
                at = due + timedelta(minutes=self.rng.randint(1, 300))
            else:
                window = max(60, int((due - tx.at).total_seconds()) - 60)
                at = tx.at + timedelta(seconds=self.rng.randint(60, window))
            confirm = tx.answer != "object"
            # E_0624 codes of the right cluster (AHB-FACTS §4): Zustimmung in 55011, which also
            # carries DTM+93 (the end of supply: the new supplier's start); Ablehnung in 55012,
            # A30 included (supply already ended: the NB treats it as no objection).
            # STS+7 is Muss in an answer (AHB-FACTS §3, the machine-readable AHB): #1 as our
            # 55010 named it, which repeats the Anmeldung's.
            answer = UtilmdTransaction(
                ide_ref=self.next_ref("L"),
                pid="55011" if confirm else "55012",
                request_ref=request,
                end=tx.transaction.start if confirm else None,
                transaction_reason=tx.transaction.transaction_reason or "E03",
                answer_code=self.rng.choice(_ZUSTIMMUNG if confirm else _ABLEHNUNG),
                answer_ebd="E_0624",
            )
            out.append(_Tx("answer", tx.lfa, at, answer))
        return out


_ZUSTIMMUNG = ["A36", "A31", "A34"]
_ABLEHNUNG = ["A35", "A33", "A32", "A30"]
_NAMES = ["Müller", "Schäfer", "Größe", "Özdemir", "Beispiel", "Weiß", "O'Brien", "A+B GmbH"]


def _render(ic: _Interchange, nb: str) -> bytes:
    envelope = OutboundEnvelope(
        sender_id=ic.sender, recipient_id=nb, prepared_at=ic.at, control_ref=ic.control_ref
    )
    messages = [
        build_utilmd(
            UtilmdMessage(
                reference=tx.message_ref,
                document_number=tx.document_number,
                document_date=ic.at,
                sender_id=ic.sender,
                recipient_id=nb,
                transactions=(tx.transaction,),
            )
        )
        for tx in ic.txs
    ]
    return render_interchange(envelope, messages)


def generate_archive(directory: Path, spec: ArchiveSpec) -> ArchiveSummary:
    """Write the archive of ``spec`` into ``directory`` (created; must hold no manifest yet).

    Raises ``InvalidArgument`` for a bad spec or a directory that already has a manifest.
    """
    spec.check()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "manifest.csv").exists():
        raise InvalidArgument(f"archive: {directory} already holds a manifest.csv")
    gen = _Generator(spec)
    triggers = gen.triggers()
    interchanges = gen.bundle([t for t in triggers if t.kind != "abmeldung"], "AN")
    interchanges += gen.bundle([t for t in triggers if t.kind == "abmeldung"], "AB")
    interchanges += gen.bundle(gen.answers(triggers), "LA")
    files: list[tuple[str, bytes, datetime, str]] = []
    summary = ArchiveSummary()
    for ic in sorted(interchanges, key=lambda i: (i.at, i.control_ref)):
        raw = _render(ic, spec.nb)
        kind = ic.txs[0].kind
        files.append((f"{ic.control_ref}.edi", raw, ic.at, kind))
        summary.messages += len(ic.txs)
        summary.kinds.update(tx.kind for tx in ic.txs)
        if gen.rng.random() < spec.duplicates:  # the sender's retransmission, hours later
            again = ic.at + timedelta(hours=gen.rng.randint(1, 30))
            files.append((f"{ic.control_ref}-again.edi", raw, again, "duplicate"))
            summary.kinds["duplicate"] += len(ic.txs)
        if gen.rng.random() < spec.defects / 2:  # broken in transit: cut off mid-message
            cut = raw[: gen.rng.randint(len(raw) // 3, len(raw) - 10)]
            files.append((f"{ic.control_ref}-broken.edi", cut, ic.at + timedelta(minutes=1), "broken"))
            summary.kinds["broken"] += 1
        if gen.rng.random() < spec.defects / 10:
            junk = bytes(gen.rng.randrange(256) for _ in range(200))
            files.append((f"{ic.control_ref}-junk.edi", junk, ic.at + timedelta(minutes=2), "garbage"))
            summary.kinds["garbage"] += 1
    rows = ["file,received_at"]
    for name, raw, at, _ in files:
        (directory / name).write_bytes(raw)
        rows.append(f"{name},{at.isoformat()}")
    (directory / "manifest.csv").write_text("\n".join(rows) + "\n")
    # the NB's register of Zuordnungsermächtigungen: each supplier's own Bilanzkreis
    register = {supplier: [bilanzkreis_of(supplier)] for supplier in gen.suppliers}
    master = {**gen.master, "bilanzkreise": register, "complete": True}  # every MaLo of its NB
    (directory / "master.json").write_text(json.dumps(master, sort_keys=True))
    summary.files = len(files)
    if files:
        instants = [at for _, _, at, _ in files]
        summary.first, summary.last = min(instants), max(instants)
    return summary
