"""Answers are validated by their own AHB rules, not a trigger's (AHB-FACTS §2–§4).

Bytes in through ``InboundPipeline``; stored events and rendered outbox messages out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mako_actors import StreamId, TenantId
from mako_actors.edifact import parse_interchange, render_outbound
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.inbound import InboundPipeline, Suppliers
from mako_actors.scheduler import DeadlineScheduler, VirtualClock, process_firer
from stores.lmdb import LmdbStore
from tests.edifact.edifact_support import SAMPLES
from tests.inbound.edi import (
    LFA,
    LFN,
    MALO,
    NB,
    THU_1430,
    anmeldung,
    kind,
    lfa_answer,
    outbox,
    pipeline,
    store,
    to,
    tx,
)

__all__ = ["store"]
TENANT = TenantId.from_party_id(NB)
ANSWER_AT = THU_1430 + timedelta(hours=2)


async def consulted(store: LmdbStore) -> tuple[InboundPipeline, str, VirtualClock]:
    """A 55001 for a MaLo the LFA supplies: 55010 sent, the LFA's answer awaited."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(), THU_1430)
    [request] = [m for m in await outbox(store) if kind(m) == "55010"]
    return p, tx(request)["ide_ref"], clock


async def process_events(store: LmdbStore, process_id: object) -> list[str]:
    return [e.event_type for e in await store.load(StreamId.for_process(TENANT, process_id))]  # type: ignore[arg-type]


async def fire_nine(store: LmdbStore, clock: VirtualClock) -> int:
    scheduler = DeadlineScheduler(store, process_firer(store, {"gpke-nb": GpkeNbWorkflow()}, clock), clock)
    return await scheduler.advance_to(clock, datetime(2025, 11, 14, 8, 0, tzinfo=UTC))


async def test_55012_without_sg5_is_an_objection_and_the_change_is_rejected(store: LmdbStore) -> None:
    p, request_ide, clock = await consulted(store)
    before = await outbox(store)
    result = await p.ingest(lfa_answer(request_ide, pid="55012", code="A35", sent_at=ANSWER_AT), ANSWER_AT)
    [routed] = result.messages
    assert routed.outcome == "routed"
    new = [m for m in await outbox(store) if m not in before]
    assert sorted(to(new, LFA)) == ["APERAK+", "CONTRL7"]  # no 313 Z29 "MaLo missing"
    assert to(new, LFN) == ["55003"]
    [rejection] = [m for m in new if kind(m) == "55003"]
    assert (tx(rejection)["answer_code"], tx(rejection)["lfa_answer_code"]) == ("A50", "A35")
    rendered = render_outbound(rejection.message_type, rejection.payload).decode("latin-1")
    assert "STS+Z35++A35:E_0624'" in rendered and "LOC+Z16" not in rendered  # 55003: no SG5 (§2)
    # The objection stands: nothing is confirmed at 09:00.
    assert await fire_nine(store, clock) == 0
    assert not [m for m in await outbox(store) if kind(m) in ("55002", "55037")]
    assert "gpke.lfa_answered" in await process_events(store, routed.process_id)


async def test_55011_without_sg5_confirms_at_once(store: LmdbStore) -> None:
    p, request_ide, _ = await consulted(store)
    before = await outbox(store)
    await p.ingest(lfa_answer(request_ide, sent_at=ANSWER_AT), ANSWER_AT)
    new = [m for m in await outbox(store) if m not in before]
    assert sorted(kind(m) for m in new) == ["55002", "55037", "APERAK+", "CONTRL7"]
    [confirmation] = [m for m in new if kind(m) == "55002"]
    [parsed] = parse_interchange(render_outbound("UTILMD", confirmation.payload)).messages[0].transactions
    assert parsed.malo == MALO  # 55002 carries LOC+Z16 (§2)


@pytest.mark.parametrize(("code", "decision"), [("A30", "55002"), ("A43", "55003"), ("A33", "55003")])
async def test_e_0624_a30_is_no_objection_and_a43_stands(store: LmdbStore, code: str, decision: str) -> None:
    p, request_ide, _ = await consulted(store)
    await p.ingest(lfa_answer(request_ide, pid="55012", code=code, sent_at=ANSWER_AT), ANSWER_AT)
    [answer] = [m for m in await outbox(store) if kind(m) in ("55002", "55003")]
    assert kind(answer) == decision
    assert tx(answer).get("lfa_answer_code") == (None if decision == "55002" else code)


async def test_answer_with_a_code_of_the_wrong_cluster_gets_aperak_z39(store: LmdbStore) -> None:
    p, request_ide, clock = await consulted(store)
    await p.ingest(lfa_answer(request_ide, pid="55011", code="A35", sent_at=ANSWER_AT), ANSWER_AT)
    [aperak] = [m for m in await outbox(store) if kind(m) == "APERAK-"]
    assert [e["code"] for e in aperak.payload["errors"]] == ["Z39"]
    # Rejected by APERAK, it counts as not received: the LFA is silent, deemed to agree at 09:00.
    assert await fire_nine(store, clock) == 1


@pytest.mark.parametrize(
    ("cut", "named"),
    [
        (lambda raw: raw.replace(b":E_0624'", b"'"), "without its EBD (E_0624)"),  # C556 1131 'X' [E_0624]
        (lambda raw: raw.replace(b"STS+7++E01'", b""), "STS+7 Transaktionsgrund missing"),  # STS+7 Muss
    ],
    ids=["no EBD", "no STS+7"],
)
async def test_an_objection_missing_what_the_ahb_requires_is_refused_and_counts_as_not_received(
    store: LmdbStore, cut: Any, named: str
) -> None:
    """A 55012 without its answer code's EBD or without STS+7 (both Muss, machine-readable AHB and
    S1 FV2504) was taken, and the objection rejected the change (55003). Refused by APERAK it counts
    as not received: at 09:00 the LFA is deemed to agree (found by an AHB review)."""
    p, request_ide, clock = await consulted(store)
    raw = cut(lfa_answer(request_ide, pid="55012", code="A35", sent_at=ANSWER_AT))
    if b"STS+7" not in raw:  # one segment less: UNT counts it
        count = raw.split(b"UNT+", 1)[1].split(b"+", 1)[0]
        raw = raw.replace(b"UNT+" + count, b"UNT+" + str(int(count) - 1).encode(), 1)
    await p.ingest(raw, ANSWER_AT)
    [aperak] = [m for m in await outbox(store) if kind(m) == "APERAK-"]
    assert any(named in e["text"] for e in aperak.payload["errors"]), aperak.payload["errors"]
    assert not [m for m in await outbox(store) if kind(m) == "55003"]
    assert await fire_nine(store, clock) == 1
    assert [kind(m) for m in await outbox(store) if kind(m) in ("55002", "55037")] == ["55002", "55037"]


async def test_an_old_style_loc_z16_in_an_answer_is_ignored_with_a_warning(store: LmdbStore) -> None:
    p, request_ide, _ = await consulted(store)
    other_malo = "41234567890"
    [routed] = (
        await p.ingest(
            lfa_answer(request_ide, pid="55012", code="A35", sent_at=ANSWER_AT, malo=other_malo), ANSWER_AT
        )
    ).messages
    assert [kind(m) for m in await outbox(store) if kind(m) == "55003"] == ["55003"]
    events = await store.load(StreamId.for_process(TENANT, routed.process_id))  # type: ignore[arg-type]
    [answered] = [e.payload for e in events if e.event_type == "gpke.lfa_answered"]
    assert any("no SG5" in w for w in answered["warnings"])


async def test_anmeldung_without_loc_z16_is_answered_with_aperak_z29(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock)
    raw = anmeldung().replace(f"LOC+Z16+{MALO}'".encode(), b"")
    raw = raw.replace(b"UNT+18+", b"UNT+17+")
    [outcome] = (await p.ingest(raw, THU_1430)).messages
    assert outcome.outcome == "started"
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert [e["code"] for e in aperak.payload["errors"]] == ["Z29"]
    assert "LOC+Z16" in aperak.payload["errors"][0]["text"]


@pytest.mark.parametrize(("detail", "codes", "sent"), [("ZW3", ["Z39"], []), ("ZW4", [], ["55010", "55036"])])
async def test_an_anmeldung_s_sts_7_second_code_outside_zw4_zap_gets_aperak_z39(
    store: LmdbStore, detail: str, codes: list[str], sent: list[str]
) -> None:
    """55001 STS+7 C556#2 is ZW4 or ZAP (AHB-FACTS §3). Before, a ZW3 (a code of the 55004) was
    taken for a consuming MaLo: APERAK 312, 55036 and a 55010 with ZW4."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(detail=detail), THU_1430)
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert [e["code"] for e in aperak.payload["errors"]] == codes
    assert sorted(kind(m) for m in await outbox(store) if m.message_type == "UTILMD") == sent


async def test_an_lfa_answer_with_another_transaktionsgrund_than_e01_e03_gets_aperak_z39(
    store: LmdbStore,
) -> None:
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    await p.ingest(anmeldung(), THU_1430)
    [request] = [m for m in await outbox(store) if kind(m) == "55010"]
    answer = lfa_answer(tx(request)["ide_ref"], ref="A1", ide="A1TX", sent_at=THU_1430, lfa=LFA)
    assert b"STS+7++E01" in answer
    await p.ingest(answer.replace(b"STS+7++E01", b"STS+7++Z33"), THU_1430 + timedelta(minutes=5))
    codes = [
        [e["code"] for e in m.payload["errors"]]
        for m in await outbox(store)
        if m.recipient == LFA and m.message_type == "APERAK"
    ]
    assert codes == [["Z39"]]


@pytest.mark.parametrize(
    "customer", [None, ":::::Z01", ":Paula::::Z01", " ::::Z01"],
    ids=["no NAD+Z09", "Namensformat only", "no first name part", "a blank name"],
)  # fmt: skip
async def test_anmeldung_without_the_customer_gets_aperak_z29_and_asks_nobody(
    store: LmdbStore, customer: str | None
) -> None:
    """SG12 NAD+Z09 (Kunde des Lieferanten) is Muss in a 55001 (AHB UTILMD 55001 FV2504), and
    the 55010 must repeat it (S1 55010 [279]): without it the LFA would reject our 55010. A
    NAD+Z09 with its Namensformat (3045) but no name counted as one (found by an AHB review)."""
    clock = VirtualClock(THU_1430)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA)})
    [outcome] = (await p.ingest(anmeldung(customer=customer), THU_1430)).messages
    assert outcome.outcome == "started"
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert [(e["code"], e["text"]) for e in aperak.payload["errors"]] == [
        ("Z29", "PID 55001: NAD+Z09 (Kunde des Lieferanten) missing")
    ]
    assert [m for m in await outbox(store) if m.message_type == "UTILMD"] == []


# -- the edifact_mapper samples (FV2510; known defects per DOMAIN.md §6 patched, nothing else) ------

MAPPER = SAMPLES / "edifact_mapper"


def sample_answer(name: str, request_ide: str, code: str | None) -> bytes:
    """A sample 55011/55012 with its known defects repaired so that it reaches our process.

    Repaired: the parties (random GLNs, NAD code list in the wrong component), the 14-digit
    DTM 303 values, the UNH placeholders (``+X+X:C``: CONTRL 4), and RFF+TN (random) set to our
    55010's IDE. Left as it is: no SG5, BGM+E01, ``STS+7++E01+ZW0``; the random E_0624 code
    unless ``code`` is given.
    """
    text = (MAPPER / name).read_bytes().decode("latin-1").replace("+X+X:C'", "'")
    text = text.replace("1234567890128:500", f"{LFA}:500").replace("9876543210987:500", f"{NB}:500")
    text = text.replace("NAD+MS+1234567890128:293:9", f"NAD+MS+{LFA}::293")
    text = text.replace("NAD+MR+1234567890128:293:9", f"NAD+MR+{NB}::293")
    text = text.replace("DTM+137:20241115120000?+00:303", "DTM+137:202511131530?+00:303")
    text = text.replace("DTM+93:20260824120000?+00:303", "DTM+93:202511302300?+00:303")
    text = text.replace("RFF+TN:HHQXD2STIS4C", f"RFF+TN:{request_ide}")
    text = text.replace("GENERATED00001", "MAPPER0001")
    if code is not None:
        text = text.replace("RUXTDZ1YU799:E_0624", f"{code}:E_0624")
    return text.encode("latin-1")


@pytest.mark.skipif(not MAPPER.is_dir(), reason="external sample corpus absent")
@pytest.mark.parametrize(
    ("name", "code", "decision"),
    [
        ("fv2510_utilmd_55011.edi", "A36", "55002"),
        ("fv2510_utilmd_55012.edi", "A35", "55003"),
    ],
)
async def test_sample_answers_have_no_sg5_and_are_decided_by_their_code(
    store: LmdbStore, name: str, code: str, decision: str
) -> None:
    p, request_ide, _ = await consulted(store)
    parsed = parse_interchange(sample_answer(name, request_ide, code))
    assert parsed.messages[0].transactions[0].malo is None  # the sample agrees with §2
    [routed] = (await p.ingest(sample_answer(name, request_ide, code), ANSWER_AT)).messages
    assert routed.outcome == "routed"
    sent = await outbox(store)
    assert [kind(m) for m in sent if m.recipient == LFA and m.message_type == "APERAK"] == ["APERAK+"]
    assert [kind(m) for m in sent if kind(m) in ("55002", "55003")] == [decision]
    # The sample's BGM+E01 (the AHB has E02 for 55011/55012, §1) is recorded, not rejected.
    events = await store.load(StreamId.for_process(TENANT, routed.process_id))  # type: ignore[arg-type]
    [answered] = [e.payload for e in events if e.event_type == "gpke.lfa_answered"]
    assert any("BGM E01" in w for w in answered["warnings"])


@pytest.mark.skipif(not MAPPER.is_dir(), reason="external sample corpus absent")
async def test_sample_answer_with_its_random_code_gets_z39_not_z29(store: LmdbStore) -> None:
    p, request_ide, _ = await consulted(store)
    await p.ingest(sample_answer("fv2510_utilmd_55012.edi", request_ide, None), ANSWER_AT)
    [aperak] = [m for m in await outbox(store) if kind(m) == "APERAK-"]
    assert [e["code"] for e in aperak.payload["errors"]] == ["Z39"]


async def test_what_we_send_keeps_the_sg5_and_rff_tn_rules_of_its_own_pid(store: LmdbStore) -> None:
    """Every UTILMD rendered in a day with confirmations, objections, E_0622 and Abmeldungen."""
    from mako_actors.gpke.validation import AHB_RULES
    from tests.inbound.edi import LFN2, START, abmeldung, berlin

    clock = VirtualClock(THU_1430)
    lfz_start = berlin(2026, 2, 1)
    p = pipeline(store, clock, **{MALO: Suppliers(current=LFA, future=LFN2, future_start=lfz_start)})
    await p.ingest(anmeldung(), THU_1430)
    await p.ingest(anmeldung(LFN2, ref="RIVAL", ide="RIVALTX"), THU_1430)  # 55003 A06
    other = "41234567896"
    third, fourth = "51238696781", "61234567894"
    p2 = pipeline(store, clock, **{other: Suppliers(current=LFA), third: Suppliers(current=LFA)})
    await p2.ingest(anmeldung(ref="O1", ide="OTX", malo=other), THU_1430)
    for ref in ("E1", "E2"):  # 55005, then 55006 A09 (ended at that date already)
        await p2.ingest(abmeldung(LFA, ref=ref, ide=ref, end=START, sent_at=THU_1430, malo=third), THU_1430)
    await p2.ingest(anmeldung(ref="G1", ide="GTX", malo=fourth, pid="55077"), THU_1430)  # 55078
    requests = {tx(m)["malo"]: tx(m)["ide_ref"] for m in await outbox(store) if kind(m) == "55010"}
    objection = lfa_answer(requests[other], pid="55012", code="A35", ref="L1", sent_at=ANSWER_AT)
    await p2.ingest(objection, ANSWER_AT)  # 55003 A50
    await fire_nine(store, clock)  # MaLo: LFA silent -> 55002, 55037, 55038
    seen = set()
    for m in await outbox(store):
        if m.message_type != "UTILMD":
            continue
        [parsed] = parse_interchange(render_outbound("UTILMD", m.payload)).messages[0].transactions
        rule = AHB_RULES[parsed.pid or ""]
        assert (parsed.malo is not None) == (rule.malo == "required"), parsed.pid
        assert (parsed.request_ref is not None) == rule.request_ref, parsed.pid
        seen.add(parsed.pid)
    assert seen >= {"55002", "55003", "55005", "55006", "55010", "55036", "55037", "55038", "55078"}
