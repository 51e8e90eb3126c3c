"""Hand-written UTILMD interchanges for the inbound tests: the segments a market partner sends.

Written segment by segment (not through our renderer), so the tests read bytes shaped as the
AHB says (AHB-FACTS §2–§3), including what our own renderer would never produce.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mako_actors import OutboxMessage
from mako_actors.edifact import Message, parse_interchange, render_outbound
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.calendar import BERLIN
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData, Suppliers
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore

NB, LFN, LFA = "9900000002009", "9900000001001", "9900000003005"
LFN2 = "9900000004001"
MALO = "51900000012"
TRANCHE_OF = "49825979199"  # in tests of Geschäftsvorfall 2 (a Tranche's ID is MALO), its MaLo
KUNDENANLAGE = "51000000912"  # in tests of a ruhende MaLo (ZAP; its ID is MALO), the Kundenanlage's MaLo
THU_1430 = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)  # Thu 2025-11-13 14:30 CET (FV2510)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)  # Zuordnungsbeginn 2025-12-01 00:00 CET


def dtm(qualifier: str, at: datetime) -> str:
    return f"DTM+{qualifier}:{at.astimezone(UTC):%Y%m%d%H%M}?+00:303"


def package_segments(packages: Sequence[tuple[str, str]]) -> list[str]:
    """SG8 of an Anmeldung for ``(Produktpaket-ID, Bilanzkreis EIC)`` by priority: each package's
    Bilanzkreis product (``PIA+5+9991000002082``, ``CAV+ZV4``), then ``SEQ+ZH0`` per package
    (``CAV+Z75``… with more than one)."""
    out: list[str] = []
    for package, eic in packages:
        out += [f"SEQ+Z79+{package}", "PIA+5+9991000002082:Z11", "CCI+Z66", f"CAV+ZV4:::{eic}"]
    for rank, (package, _) in enumerate(packages):
        out += [f"SEQ+ZH0+{package}", "CCI+Z65+++Z01"]
        if len(packages) > 1:
            out.append(f"CAV+Z7{5 + rank}")
    return out


def interchange(
    sender: str,
    recipient: str,
    control_ref: str,
    sent_at: datetime,
    transaction: Sequence[str],
    *,
    bgm: str = "E01",
    version: str = "UTILMD:D:11A:UN:S2.1",
    message_ref: str = "M1",
) -> bytes:
    """One interchange with one UTILMD message holding ``transaction`` (SG4 onwards)."""
    body = [
        f"UNH+{message_ref}+{version}",
        f"BGM+{bgm}+D{control_ref}",
        dtm("137", sent_at),
        f"NAD+MS+{sender}::293",
        f"NAD+MR+{recipient}::293",
        *transaction,
    ]
    body.append(f"UNT+{len(body) + 1}+{message_ref}")
    unb = f"UNB+UNOC:3+{sender}:500+{recipient}:500+{sent_at.astimezone(UTC):%y%m%d:%H%M}+{control_ref}"
    text = "UNA:+.? '" + "'".join([unb, *body, f"UNZ+1+{control_ref}"]) + "'"
    return text.encode("latin-1")


def anmeldung(
    lfn: str = LFN,
    *,
    ref: str = "LFN0001",
    ide: str = "LFNTX1",
    malo: str = MALO,
    start: datetime = START,
    sent_at: datetime = THU_1430,
    pid: str = "55001",
    version: str = "UTILMD:D:11A:UN:S2.1",
    gv: str = "ZW0",
    detail: str = "ZW4",
    customer: str | None = "Beispiel:Paula:::Frau:Z01",
    fixed_term: str | None = None,
    end: datetime | None = None,
    packages: Sequence[tuple[str, str]] | None = None,
) -> bytes:
    """A 55001 (or 55077, Geschäftsvorfall ``gv``) Anmeldung as the AHB shapes it: IDE, DTM+92,
    STS+7 (55001: E01 + ``detail``, ZW4 or ZAP), LOC+Z16, RFF+Z13, NAD+Z09 (C080 ``customer``).
    A befristete Anmeldung: STS+7 #3 ``fixed_term`` and DTM+93 ``end``. A 55077 of GV2 (ZW1) is
    for a Tranche: ``malo`` is then the Tranche's ID, sent as LOC+Z21 (S1 55077 [477]); a 55001
    with ZAP for a ruhende MaLo: ``malo`` in LOC+Z22, KUNDENANLAGE in LOC+Z16 ([96], [67]).
    ``packages``: its Produktpakete (SG8, ``package_segments``); by default ``"1"`` with the
    LFN's Bilanzkreis (``bilanzkreis_of``); ``()`` sends none."""
    reason = f"STS+7++E03+{gv}" if pid == "55077" else f"STS+7++E01+{detail}"
    if fixed_term is not None:
        reason += f"+{fixed_term}"
    dates = [dtm("92", start)] + ([dtm("93", end)] if end is not None else [])
    if pid == "55077":
        locations = [f"LOC+{'Z21' if gv == 'ZW1' else 'Z16'}+{malo}"]
    elif detail == "ZAP":  # a ruhende MaLo (LOC+Z22) in a Kundenanlage (its MaLo: LOC+Z16)
        locations = [f"LOC+Z16+{KUNDENANLAGE}", f"LOC+Z22+{malo}"]
    else:
        locations = [f"LOC+Z16+{malo}"]
    tx = [f"IDE+24+{ide}", *dates, reason, *locations, f"RFF+Z13:{pid}"]
    tx += package_segments((("1", bilanzkreis_of(lfn)),) if packages is None else packages)
    if customer is not None:
        tx.append(f"NAD+Z09+++{customer}")
    return interchange(lfn, NB, ref, sent_at, tx, version=version)


def abmeldung(
    lf: str,
    *,
    ref: str,
    ide: str,
    end: datetime,
    sent_at: datetime,
    malo: str = MALO,
    reason: str = "Z33",
    qualifier: str = "93",
    detail: str = "ZW4",
) -> bytes:
    """A 55004 Abmeldung: IDE, DTM+93 (``qualifier``: 92 for an Aufhebung einer zukünftigen
    Zuordnung, ZG9/ZH1/ZH2), STS+7++``reason``+``detail``, the LOC that detail asks for (Z22 for
    a ruhende MaLo, ZAP; Z21 for a Tranche, ZW5; else Z16; S1 55004 [479]-[481], [96]), RFF+Z13."""
    location = {"ZAP": "Z22", "ZW5": "Z21"}.get(detail, "Z16")
    tx = [f"IDE+24+{ide}", dtm(qualifier, end), f"STS+7++{reason}+{detail}", f"LOC+{location}+{malo}"]
    tx.append("RFF+Z13:55004")
    return interchange(lf, NB, ref, sent_at, tx, bgm="E02")


def lfa_answer(
    request_ide: str,
    *,
    pid: str = "55011",
    code: str = "A36",
    ref: str = "LFA0001",
    ide: str = "LFATX1",
    sent_at: datetime,
    end: datetime = START,
    lfa: str = LFA,
    malo: str | None = None,
) -> bytes:
    """A 55011/55012 as since FV2504: no SG5 (unless ``malo``), RFF+TN names our 55010."""
    tx = [f"IDE+24+{ide}"]
    if pid == "55011":
        tx.append(dtm("93", end))
    tx += ["STS+7++E01", f"STS+E01++{code}:E_0624"]
    if malo is not None:
        tx.append(f"LOC+Z16+{malo}")
    tx += [f"RFF+Z13:{pid}", f"RFF+TN:{request_ide}"]
    return interchange(lfa, NB, ref, sent_at, tx, bgm="E02")


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def pipeline(store: LmdbStore, clock: VirtualClock, **suppliers: Suppliers) -> InboundPipeline:
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    return InboundPipeline(store, host, tenants=[NB], master_data=StaticMasterData(suppliers), clock=clock)


async def outbox(store: LmdbStore) -> list[OutboxMessage]:
    return await store.pending(10_000, datetime(2030, 1, 1, tzinfo=UTC))


def kind(m: OutboxMessage) -> str:
    if m.message_type == "UTILMD":
        return str(m.payload["transactions"][0]["pid"])
    if m.message_type == "APERAK":
        return "APERAK+" if m.payload["positive"] else "APERAK-"
    return f"CONTRL{m.payload['action']}"


async def aperak_errors(store: LmdbStore) -> list[tuple[str, str]]:
    """``(ERC code, text)`` of the one APERAK in the outbox (none for a 312)."""
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    return [(e["code"], e["text"]) for e in aperak.payload.get("errors", ())]


async def answers(store: LmdbStore) -> list[tuple[str, str | None]]:
    """(PID, answer code) of each UTILMD in the outbox."""
    return [(kind(m), tx(m).get("answer_code")) for m in await outbox(store) if m.message_type == "UTILMD"]


async def decide(store: LmdbStore, raw: bytes, **master: Suppliers) -> list[tuple[str, str | None]]:
    """Ingest ``raw`` at THU_1430 with ``master`` as the NB's master data; the UTILMDs sent."""
    await pipeline(store, VirtualClock(THU_1430), **master).ingest(raw, THU_1430)
    return await answers(store)


def to(messages: list[OutboxMessage], recipient: str) -> list[str]:
    return [kind(m) for m in messages if m.recipient == recipient]


def tx(m: OutboxMessage) -> Any:
    return m.payload["transactions"][0]


def utilmd_by_pid(outbound: list[OutboxMessage]) -> dict[str, Message]:
    """Each UTILMD as the outbox worker renders it, conformant to the structure table, parsed
    back, by PID."""
    from tests.conftest import outbound_problems

    out: dict[str, Message] = {}
    for m in outbound:
        if m.message_type == "UTILMD":
            raw = render_outbound(m.message_type, m.payload)
            assert outbound_problems(raw) == [], kind(m)
            (out[kind(m)],) = parse_interchange(raw).messages
    return out


def locations(message: Message) -> list[tuple[str, str]]:
    """(qualifier, ID) of each LOC segment of ``message``, in order."""
    return [(s.value(0), s.value(1)) for s in message.segments if s.tag == "LOC"]
