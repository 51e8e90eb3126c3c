"""A once-only segment sent twice in a transaction or a message header (a second LOC+Z16,
DTM+92, STS+7, STS+E01, RFF+Z13, NAD+MR, ...): the parser reads only the first, so what was
meant is unknown. AHB-FACTS §2: LOC+Z16 "[2061] exactly once per SG4 IDE"; §5: ERC Z40
"Wiederholbarkeit überschritten". Before, the first copy was decided on (an LFA answer with
two STS+E01 confirmed or refused by whichever came first) and the second dropped unseen;
now the transaction gets APERAK Z40 and nothing is decided. The same for the transaction
reference: an IDE used twice in one message (Z15), an IDE without its reference (Z29).

Bytes in through ``InboundPipeline`` on LMDB.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.supply import StaticMasterData
from mako_actors.inbound import DirectHost, InboundPipeline, Suppliers
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFA,
    LFN,
    MALO,
    NB,
    START,
    THU_1430,
    abmeldung,
    anmeldung,
    kind,
    lfa_answer,
    outbox,
    pipeline,
    store,
    tx,
)

__all__ = ["store"]
OTHER_MALO = "51238696781"


def edited(raw: bytes, change: Callable[[list[str]], list[str]]) -> bytes:
    """``raw`` (one message, UNA with ``'``) with its segments changed; the UNT count follows."""
    text = raw.decode("latin-1")
    segments = change([s for s in text[9:].split("'") if s])
    unh = next(i for i, s in enumerate(segments) if s.startswith("UNH"))
    unt = next(i for i, s in enumerate(segments) if s.startswith("UNT"))
    segments[unt] = f"UNT+{unt - unh + 1}+{segments[unt].split('+')[2]}"
    return (text[:9] + "'".join(segments) + "'").encode("latin-1")


def twice(raw: bytes, prefix: str, again: str | None = None) -> bytes:
    """``raw`` with ``again`` (default: a copy of the first segment starting with ``prefix``)
    right after that segment."""

    def insert(segments: list[str]) -> list[str]:
        at = next(i for i, s in enumerate(segments) if s.startswith(prefix))
        return [*segments[: at + 1], again if again is not None else segments[at], *segments[at + 1 :]]

    return edited(raw, insert)


async def refused_with_z40(store: LmdbStore, sender: str) -> str:
    """The one APERAK to ``sender``: a 313 with Z40 only; its text."""
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK" and m.recipient == sender]
    assert not aperak.payload["positive"]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z40"
    return str(error["text"])


@pytest.mark.parametrize(
    ("prefix", "again", "named"),
    [
        ("LOC+Z16", f"LOC+Z16+{OTHER_MALO}", "LOC+Z16"),
        ("DTM+92", "DTM+92:202512312300?+00:303", "DTM+92"),
        ("STS+7", "STS+7++E03+ZW4", "STS+7"),
        ("RFF+Z13", "RFF+Z13:55004", "RFF+Z13"),
        ("NAD+MR", None, "NAD+MR"),
        ("BGM", None, "BGM"),
    ],
)
async def test_an_anmeldung_with_a_once_only_segment_twice_is_refused_z40(
    store: LmdbStore, prefix: str, again: str | None, named: str
) -> None:
    raw = twice(anmeldung(), prefix, again)
    [message] = parse_interchange(raw).messages
    assert named in message.repeated + message.transactions[0].repeated
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA), OTHER_MALO: Suppliers()})
    await p.ingest(raw, THU_1430)
    assert named in await refused_with_z40(store, LFN)
    assert [kind(m) for m in await outbox(store) if m.message_type == "UTILMD"] == []  # no 55036/55010


async def test_an_abmeldung_naming_two_malos_ends_neither(store: LmdbStore) -> None:
    raw = abmeldung(LFN, ref="ABM1", ide="ABMTX1", end=START, sent_at=THU_1430)
    raw = twice(raw, "LOC+Z16", f"LOC+Z16+{OTHER_MALO}")
    both = {MALO: Suppliers(current=LFN), OTHER_MALO: Suppliers(current=LFN)}
    p = pipeline(store, VirtualClock(THU_1430), **both)
    await p.ingest(raw, THU_1430)
    assert "LOC+Z16" in await refused_with_z40(store, LFN)
    assert [kind(m) for m in await outbox(store) if m.message_type == "UTILMD"] == []  # no 55005


@pytest.mark.parametrize(("pid", "first", "second"), [("55011", "A36", "A35"), ("55012", "A35", "A36")])
async def test_an_lfa_answer_with_two_answer_codes_decides_nothing(
    store: LmdbStore, pid: str, first: str, second: str
) -> None:
    """A 55011 agreeing (A36) and objecting (A35) at once was confirmed by its first code: a
    55002 to the LFN and a 55037 ending the LFA's supply; a 55012 the other way round refused."""
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(), THU_1430)
    [request] = [m for m in await outbox(store) if kind(m) == "55010"]
    at = THU_1430 + timedelta(hours=2)
    answer = lfa_answer(tx(request)["ide_ref"], pid=pid, code=first, sent_at=at)
    await p.ingest(twice(answer, "STS+E01", f"STS+E01++{second}:E_0624"), at)
    assert "STS+E01" in await refused_with_z40(store, LFA)
    assert [kind(m) for m in await outbox(store) if kind(m) in ("55002", "55003", "55037")] == []


async def test_a_single_copy_of_each_is_still_processed(store: LmdbStore) -> None:
    """The other transactions of a bundle are not affected, nor are segments that may repeat."""
    raw = anmeldung()
    [message] = parse_interchange(raw).messages
    assert message.repeated == () and message.transactions[0].repeated == ()
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(raw, THU_1430)
    assert [kind(m) for m in await outbox(store)] == ["CONTRL7", "APERAK+", "55036", "55010"]


@pytest.mark.parametrize("after_routing", [False, True])
async def test_an_ide_used_twice_in_one_message_refuses_the_second_z15(
    store: LmdbStore, after_routing: bool
) -> None:
    """Two transactions under one IDE (other MaLos): the first started its process and got its
    312; the second was an inbound-conflict dead letter only, so the LFN read the 312 as covering
    both. Now the second gets APERAK Z15 ("nicht eindeutig") naming the IDE as well, also in a
    replay (``receipt_after_routing``), which took every known IDE for a re-route."""

    def second_transaction(segments: list[str]) -> list[str]:
        ide = next(i for i, s in enumerate(segments) if s.startswith("IDE"))
        unt = next(i for i, s in enumerate(segments) if s.startswith("UNT"))
        again = [s.replace(MALO, OTHER_MALO) for s in segments[ide:unt]]
        return segments[:unt] + again + segments[unt:]

    raw = edited(anmeldung(), second_transaction)
    clock = VirtualClock(THU_1430)
    master = StaticMasterData({MALO: Suppliers(current=LFA), OTHER_MALO: Suppliers()})
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    p = InboundPipeline(
        store, host, tenants=[NB], master_data=master, clock=clock, receipt_after_routing=after_routing
    )
    result = await p.ingest(raw, THU_1430)
    assert [m.outcome for m in result.messages] == ["started", "dead_letter"]
    [refused] = [m for m in await outbox(store) if m.message_type == "APERAK" and not m.payload["positive"]]
    [error] = refused.payload["errors"]
    assert error["code"] == "Z15" and "LFNTX1" in error["text"]


async def test_an_ide_used_twice_in_one_message_the_first_refused_refuses_the_second_z15(
    store: LmdbStore,
) -> None:
    """The first transaction under the IDE is refused by the workflow (a MaLo failing its check
    digit: Z14) and binds no ``tx:`` key; the second, otherwise valid, took the references the
    first one's refusal holds (same seed) and lost three times: APERAK Z35 "competing triggers
    kept racing". The IDE is not unique either way: Z15, as when the first one had started."""

    def second_transaction(segments: list[str]) -> list[str]:
        ide = next(i for i, s in enumerate(segments) if s.startswith("IDE"))
        unt = next(i for i, s in enumerate(segments) if s.startswith("UNT"))
        again = [s.replace("12345678901", MALO) for s in segments[ide:unt]]
        return segments[:unt] + again + segments[unt:]

    raw = edited(anmeldung(malo="12345678901"), second_transaction)
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    result = await p.ingest(raw, THU_1430)
    assert [(m.outcome, m.refused) for m in result.messages] == [("started", None), ("dead_letter", "Z15")]
    refused = [m for m in await outbox(store) if m.message_type == "APERAK" and not m.payload["positive"]]
    assert [m.payload["errors"][0]["code"] for m in refused] == ["Z14", "Z15"]


async def test_an_ide_without_its_reference_gets_z29_and_no_empty_rff_tn(store: LmdbStore) -> None:
    """``IDE+24`` alone: before, APERAK Z35 carrying the validator's dump (line breaks, a link)
    in FTX, and an empty ``RFF+TN'``. Now Z29 (a Muss value missing), no RFF+TN."""
    from mako_actors.edifact import render_outbound

    raw = edited(anmeldung(), lambda segments: [("IDE+24" if s.startswith("IDE") else s) for s in segments])
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(raw, THU_1430)
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z29" and "7402" in error["text"]
    rendered = render_outbound("APERAK", aperak.payload).decode("latin-1")
    assert "RFF+TN" not in rendered and "pydantic" not in rendered


async def test_an_ide_with_another_qualifier_than_24_is_refused_z39_and_decides_nothing(
    store: LmdbStore,
) -> None:
    """The UTILMD MIG allows IDE 7495 = 24 (Vorgang) only. Before, ``IDE+99`` was taken as a
    transaction: its 55001 was decided (55036, 55010 to the LFA). Now it gets APERAK Z39 ("Code
    nicht aus erlaubtem Wertebereich") naming its reference, and a transaction beside it in the
    same message is decided as before."""

    def ide_99_beside(segments: list[str]) -> list[str]:
        ide = next(i for i, s in enumerate(segments) if s.startswith("IDE"))
        unt = next(i for i, s in enumerate(segments) if s.startswith("UNT"))
        other = [s.replace(MALO, OTHER_MALO) for s in segments[ide:unt]]
        other[0] = "IDE+99+LFNTX2"
        return segments[:unt] + other + segments[unt:]

    raw = edited(anmeldung(), ide_99_beside)
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA), OTHER_MALO: Suppliers()})
    result = await p.ingest(raw, THU_1430)
    assert [(m.ide_ref, m.outcome, m.refused) for m in result.messages] == [
        ("LFNTX1", "started", None), ("LFNTX2", "dead_letter", "Z39"),
    ]  # fmt: skip
    [refused] = [m for m in await outbox(store) if m.message_type == "APERAK" and not m.payload["positive"]]
    [error] = refused.payload["errors"]
    assert error["code"] == "Z39" and "IDE+99" in error["text"]
    assert refused.payload["referenced_transaction_ref"] == "LFNTX2"
    # Only the IDE+24 transaction was decided: its 55036 and 55010, nothing for OTHER_MALO.
    assert [kind(m) for m in await outbox(store) if m.message_type == "UTILMD"] == ["55036", "55010"]


@pytest.mark.parametrize("segment", ["BGM", "DTM+137", "NAD+MS", "NAD+MR"])
async def test_an_anmeldung_without_a_muss_header_segment_is_refused_z29(
    store: LmdbStore, segment: str
) -> None:
    """BGM, DTM+137, NAD+MS and NAD+MR are Muss in every UTILMD. Before, a 55001 without one was
    decided (55036 and a 55010 to the LFA): the parser noted the gap, nothing read the note."""
    starts = (segment + "+", segment + ":")
    raw = edited(anmeldung(), lambda segments: [s for s in segments if not s.startswith(starts)])
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(raw, THU_1430)
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z29" and segment in error["text"]
    assert [m for m in await outbox(store) if m.message_type == "UTILMD"] == []


@pytest.mark.parametrize(
    ("old", "new", "role"),
    [
        (f"NAD+MS+{LFN}::293", f"NAD+MS+{LFN}:293:9", "MS"),  # 293 in the second component
        (f"NAD+MR+{NB}::293", f"NAD+MR+{NB}::332", "MR"),  # a DVGW code list beside UNB 500
        (f"NAD+MS+{LFN}::293", f"NAD+MS+{LFN}", "MS"),  # none at all
    ],
    ids=["ms-code-list-in-second-component", "mr-332-beside-500", "ms-without-code-list"],
)
async def test_a_nad_code_list_that_does_not_go_with_the_unb_qualifier_gets_z39(
    store: LmdbStore, old: str, new: str, role: str
) -> None:
    """DOMAIN §4: NAD+MS/MR carry the code list (3055) in the third component, and it must match
    the UNB's (500↔293, 502↔332, 14↔9). Before, the parser noted a mismatch and nothing read the
    note: a 55001 with ``NAD+MS+<id>:293:9`` (the layout of a public sample set) was decided,
    55036 and 55010 sent."""
    raw = anmeldung()
    assert old.encode() in raw
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(raw.replace(old.encode(), new.encode(), 1), THU_1430)
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z39" and f"NAD+{role} code list" in error["text"]
    assert [m for m in await outbox(store) if m.message_type == "UTILMD"] == []


async def test_a_customer_name_longer_than_its_format_gets_z35_not_a_55010_that_breaks_the_mig(
    store: LmdbStore,
) -> None:
    """NAD+Z09 C080 3036 is an..70; the 55010 to the LFA repeats the name (Muss [279]). Before,
    a 400-character name was taken and echoed into a 55010 the LFA's CONTRL would refuse."""
    raw = anmeldung(customer="X" * 71 + ":Paula:::Frau:Z01")
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(raw, THU_1430)
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z35" and "NAD+Z09" in error["text"]
    assert [m for m in await outbox(store) if m.message_type == "UTILMD"] == []
    # 70 characters fit: taken, and repeated as sent.
    fits = anmeldung(ref="LFN0002", ide="LFNTX2", customer="Y" * 70 + ":Paula:::Frau:Z01")
    await p.ingest(fits, THU_1430)
    assert [kind(m) for m in await outbox(store) if m.message_type == "UTILMD"] == ["55036", "55010"]


async def test_a_customer_name_with_a_component_after_3045_gets_z35_not_a_55010_that_breaks_the_mig(
    store: LmdbStore,
) -> None:
    """C080 is five 3036 and a 3045, nothing more; the 55010 repeats the components as received.
    Before, ``…:Frau:Z01:X`` was taken and the 55010 to the LFA carried seven components (0085 16
    at the LFA); now the Anmeldung gets APERAK Z35. An empty component more is left out when the
    55010 is written, so it passes."""
    p = pipeline(store, VirtualClock(THU_1430), **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(customer="Beispiel:Paula:::Frau:Z01:X"), THU_1430)
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    [error] = aperak.payload["errors"]
    assert error["code"] == "Z35" and "after 3045" in error["text"]
    assert [m for m in await outbox(store) if m.message_type == "UTILMD"] == []
    await p.ingest(anmeldung(ref="LFN0002", ide="LFNTX2", customer="Beispiel:Paula:::Frau:Z01:"), THU_1430)
    [request] = [m for m in await outbox(store) if kind(m) == "55010"]
    assert b"NAD+Z09+++Beispiel:Paula:::Frau:Z01'" in render_outbound("UTILMD", request.payload)
