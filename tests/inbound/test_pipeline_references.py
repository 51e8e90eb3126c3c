"""The references of the messages the inbound pipeline itself sends: its CONTRLs and the
negative APERAKs refusing transactions. A partner deduplicates by our UNB 0020 (and matches
its CONTRL/APERAK to ours by it), so two different messages of ours must never share one, and
the same message must keep its references in every run (serve and replay alike).

Bytes in through ``InboundPipeline`` on LMDB.
"""

from __future__ import annotations

from pathlib import Path

from mako_actors import OutboxMessage
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.supply import StaticMasterData
from mako_actors.inbound import DirectHost, InboundPipeline, Suppliers
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import LFA, MALO, NB, THU_1430, anmeldung, outbox

OTHER_MALO = "51238696781"


def _pipeline(store: LmdbStore, after_routing: bool = False) -> InboundPipeline:
    clock = VirtualClock(THU_1430)
    master = StaticMasterData({MALO: Suppliers(current=LFA), OTHER_MALO: Suppliers()})
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    return InboundPipeline(
        store, host, tenants=[NB], master_data=master, clock=clock, receipt_after_routing=after_routing
    )


def _with_transactions(raw: bytes, ides: list[str]) -> bytes:
    """``raw`` (one message, one transaction) with that transaction once per ``ides`` entry
    (its ``IDE`` segment replaced by it; the MaLo alternating, so none is a competing one)."""
    text = raw.decode("latin-1")
    segments = [s for s in text[9:].split("'") if s]
    ide = next(i for i, s in enumerate(segments) if s.startswith("IDE"))
    unt = next(i for i, s in enumerate(segments) if s.startswith("UNT"))
    body: list[str] = []
    for n, segment in enumerate(ides):
        copy = [s.replace(MALO, OTHER_MALO) if n % 2 else s for s in segments[ide:unt]]
        body += [segment, *copy[1:]]
    unh = next(i for i, s in enumerate(segments) if s.startswith("UNH"))
    head = segments[:ide]
    trailer = f"UNT+{len(head) - unh + len(body) + 1}+{segments[unt].split('+')[2]}"
    return (text[:9] + "'".join([*head, *body, trailer, *segments[unt + 1 :]]) + "'").encode("latin-1")


def _refs(m: OutboxMessage) -> tuple[str, str, str]:
    """Our UNB 0020, UNH 0062 and BGM 1004 of an outbox message."""
    return m.payload["envelope"]["control_ref"], m.payload["reference"], m.payload["document_number"]


async def _refusals(store: LmdbStore) -> list[OutboxMessage]:
    return [m for m in await outbox(store) if m.message_type == "APERAK" and not m.payload["positive"]]


async def test_each_refused_transaction_of_one_message_gets_references_of_its_own(tmp_path: Path) -> None:
    """Two transactions of one message without their 7402 (``IDE+24`` alone), and an IDE sent
    twice: before, their refusals (APERAK Z29, Z15) were seeded by sender, 0020, 0062 and IDE
    only, so each pair carried the same 0020, 0062 and 1004 and the partner dropped the second
    as a duplicate. Now each has its own, and serve and replay give every one the same."""
    raw = _with_transactions(anmeldung(), ["IDE+24", "IDE+24", "IDE+24+LFNTX1", "IDE+24+LFNTX1"])
    refs: dict[bool, list[tuple[str, str, str]]] = {}
    for after_routing in (False, True):
        async with LmdbStore(tmp_path / f"db-{after_routing}") as store:
            result = await _pipeline(store, after_routing).ingest(raw, THU_1430)
            assert [m.refused for m in result.messages] == ["Z29", "Z29", None, "Z15"]
            refs[after_routing] = sorted(_refs(m) for m in await _refusals(store))
    assert len(refs[False]) == 3
    for kind in range(3):  # 0020, 0062, 1004: each one differs between the refusals
        assert len({r[kind] for r in refs[False]}) == 3
    assert refs[True] == refs[False]



async def _contrls(store: LmdbStore) -> list[tuple[str, str, str, str | None]]:
    """(0020, 0062, UCI 0083, UCI 0085) of each CONTRL in the outbox, in the order enqueued."""
    return [
        (m.payload["envelope"]["control_ref"], m.payload["reference"], m.payload["action"],
         m.payload.get("error_code"))
        for m in await outbox(store) if m.message_type == "CONTRL"
    ]  # fmt: skip


async def test_a_corrected_resend_gets_a_contrl_of_its_own_and_a_retransmission_the_same(
    tmp_path: Path,
) -> None:
    """A rejected interchange counts as not received, so other bytes under its sender and 0020
    are a new receipt. Before, their CONTRL repeated the 0020 and 0062 of our CONTRL 4 for the
    rejected bytes: a partner deduplicating by our 0020 dropped the CONTRL 7 of its corrected
    resend. Now every CONTRL on other bytes has references of its own, also apart from the
    CONTRL 26 that answers rejected bytes sent again once others were accepted; the same bytes
    again are a duplicate (no CONTRL), or, received anew after other rejected bytes, answered
    by the same CONTRL. Serve and replay give every CONTRL the same references."""
    good = anmeldung()
    truncated = good[: good.index(b"RFF+Z13")]  # cut mid-message: CONTRL 4, UCM 0085 = 13
    wrong_version = anmeldung(version="UTILMD:D:11A:UN:S9.9")  # CONTRL 4, UCM 0085 = 12
    files = [truncated, truncated, wrong_version, truncated, good, good, wrong_version]
    contrls: dict[bool, list[tuple[str, str, str, str | None]]] = {}
    for after_routing in (False, True):
        async with LmdbStore(tmp_path / f"db-{after_routing}") as store:
            p = _pipeline(store, after_routing)
            statuses = [(await p.ingest(raw, THU_1430)).status for raw in files]
            assert statuses == [
                "rejected", "duplicate", "rejected", "rejected", "accepted", "duplicate", "conflict",
            ]  # fmt: skip
            contrls[after_routing] = await _contrls(store)
    first, wrong, again, corrected, conflict = contrls[False]
    # (the rejections name their message's error on a UCM line, not on UCI)
    assert [(c[2], c[3]) for c in (first, wrong, corrected, conflict)] == [
        ("4", None), ("4", None), ("7", None), ("4", "26"),
    ]  # fmt: skip
    assert again == first
    assert len({c[0] for c in (first, wrong, corrected, conflict)}) == 4
    assert len({c[1] for c in (first, wrong, corrected, conflict)}) == 4
    assert contrls[True] == contrls[False]
