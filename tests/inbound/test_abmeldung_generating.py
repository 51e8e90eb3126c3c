"""E_0607 for an Abmeldung (55004) of a generating MaLo or a Tranche, bytes in, answers out.

EBD 4.1 (FV2510, AHB-FACTS S3) step 10: neither a consuming (ZW4) nor a ruhende (ZAP) MaLo goes
to step 500: the Lieferende must be the 1st of a month, 00:00 (else A21), the Abmeldung at least
one month ahead of it (step 520, else A22); the Zustimmung is A27, not the consuming A11. A
Tranche (ZW5) is named by LOC+Z21, not LOC+Z16 (AHB-FACTS §2).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import abmeldung
from mako_actors.gpke.validation import AhbFinding, check_transaction
from mako_actors.inbound import DirectHost, InboundPipeline, StaticMasterData, Suppliers
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore

NB, LFA = "9900000002009", "9900000003005"
MALO, TRANCHE = "51900000012", "41234567896"
BERLIN = ZoneInfo("Europe/Berlin")
WED = datetime(2025, 12, 10, 10, 0, tzinfo=BERLIN)  # received Wed 2025-12-10 10:00


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


async def answer_to(store: LmdbStore, raw: bytes, received_at: datetime = WED) -> tuple[str, ...]:
    """Ingest ``raw`` from LFA (which supplies both locations); its UTILMD answer or APERAK."""
    clock = VirtualClock(received_at)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    suppliers = StaticMasterData({MALO: Suppliers(current=LFA), TRANCHE: Suppliers(current=LFA)})
    pipeline = InboundPipeline(store, host, tenants=[NB], master_data=suppliers, clock=clock)
    result = await pipeline.ingest(raw, received_at)
    assert result.status == "accepted"
    sent = await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))
    for message in sent:
        if message.message_type == "UTILMD":
            (tx,) = message.payload["transactions"]
            return (tx["pid"], tx["answer_code"])
    (aperak,) = [m for m in sent if m.message_type == "APERAK"]
    return ("APERAK", *(e["code"] for e in aperak.payload["errors"]))


def end(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("detail", "location", "lieferende", "expected"),
    [
        ("ZW3", "Z16", end(2025, 12, 15), ("55006", "A21")),  # not the 1st of a month
        ("ZW3", "Z16", end(2026, 1, 1), ("55006", "A22")),  # less than a month ahead
        ("ZW3", "Z16", end(2026, 2, 1), ("55005", "A27")),
        ("ZW5", "Z21", end(2026, 2, 1), ("55005", "A27")),  # a Tranche, named by LOC+Z21
        ("ZW5", "Z21", end(2025, 12, 15), ("55006", "A21")),
        ("ZW4", "Z16", end(2025, 12, 15), ("55005", "A11")),  # consuming: E_0607 steps 20-140
        (None, "Z16", end(2025, 12, 15), ("APERAK", "Z29")),  # no #2: step 10 cannot be decided
    ],
)
async def test_e0607_decides_by_the_kind_of_location(
    store: LmdbStore, detail: str | None, location: str, lieferende: datetime, expected: tuple[str, ...]
) -> None:
    raw = abmeldung(
        lf=LFA, nb=NB, malo=TRANCHE if location == "Z21" else MALO, zuordnungsende=lieferende,
        ide_ref="AB1", control_ref="LFA1", sent_at=WED, detail=detail, location=location,
    )  # fmt: skip
    assert await answer_to(store, raw) == expected


async def test_zzd_is_refused_before_it_is_valid(store: LmdbStore) -> None:
    """AHB-FACTS §3: STS+7 ZZD is in FV2510's code list, valid from 2026-04-01 only."""
    raw = abmeldung(
        lf=LFA, nb=NB, malo=MALO, zuordnungsende=end(2025, 12, 15), ide_ref="AB1", control_ref="LFA1",
        sent_at=WED, transaction_reason="ZZD",
    )  # fmt: skip
    assert await answer_to(store, raw) == ("APERAK", "Z39")
    findings, _ = check_transaction(
        "55004", malo=MALO, request_ref=None, dates={"93": end(2026, 5, 1)}, transaction_reason="ZZD",
        received_at=end(2026, 4, 1), transaction_detail="ZW4",
    )  # fmt: skip
    assert findings == []
    findings, _ = check_transaction(
        "55004", malo=MALO, request_ref=None, dates={"93": end(2026, 5, 1)}, transaction_reason="ZZD",
        received_at=datetime(2026, 3, 31, 23, 59, tzinfo=BERLIN), transaction_detail="ZW4",
    )  # fmt: skip
    assert [f for f, _ in findings] == [AhbFinding.CODE_NOT_ALLOWED]


async def decide_both(store: LmdbStore, first: str, second: str, when: datetime) -> list[tuple[str, str]]:
    """Two Abmeldungen of the generating MaLo by LFA at ``when`` (reasons ``first``, ``second``)."""
    for ref, reason in (("AB1", first), ("AB2", second)):
        raw = abmeldung(
            lf=LFA, nb=NB, malo=MALO, zuordnungsende=when, ide_ref=ref, control_ref=f"LFA{ref}",
            sent_at=WED, detail="ZW3", transaction_reason=reason,
        )  # fmt: skip
        await answer_to(store, raw)
    sent = await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))
    return [
        (m.payload["transactions"][0]["pid"], m.payload["transactions"][0]["answer_code"])
        for m in sent
        if m.message_type == "UTILMD"
    ]


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # E_0607 step 580 → 590 (LFA holds nothing after the date) → 610: the confirmed end's
        # reason does not say the operator left (a Kündigung): 620, A27; else A26.
        ("ZT4", "ZT4", ("55005", "A27")),
        ("ZT5", "Z33", ("55005", "A27")),
        ("Z33", "ZT4", ("55006", "A26")),
        ("E01", "Z33", ("55006", "A26")),
    ],
)
async def test_an_end_confirmed_before_is_decided_by_its_reason(
    store: LmdbStore, first: str, second: str, expected: tuple[str, str]
) -> None:
    assert await decide_both(store, first, second, end(2026, 2, 1)) == [("55005", "A27"), expected]


async def test_a_generating_aufhebung_zh2_names_the_confirmed_start_or_gets_a23(store: LmdbStore) -> None:
    """Step 570: ZH2 must name the start confirmed to the LF; LFA's assignment runs already."""
    raw = abmeldung(
        lf=LFA, nb=NB, malo=MALO, zuordnungsende=end(2026, 2, 1), ide_ref="AB1", control_ref="LFA1",
        sent_at=WED, detail="ZW3", transaction_reason="ZH2",
    )  # fmt: skip
    assert b"DTM+92:" in raw and b"DTM+93:" not in raw
    assert await answer_to(store, raw) == ("55006", "A23")
