"""The references of the messages the inbound pipeline itself sends: its CONTRLs and the
negative APERAKs refusing transactions. A partner deduplicates by our UNB 0020 (and matches
its CONTRL/APERAK to ours by it), so two different messages of ours must never share one, and
the same message must keep its references in every run (serve and replay alike).

Bytes in through ``InboundPipeline`` on LMDB.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mako_actors import OutboxMessage
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.supply import StaticMasterData
from mako_actors.inbound import DirectHost, InboundPipeline, Suppliers, receipt_identity
from mako_actors.replay import _RunView, replay_directory
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import LFA, LFN, MALO, NB, THU_1430, anmeldung, outbox

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
    CONTRL 26 that answers other bytes sent once some were accepted; bytes received before,
    the last or earlier ones under the reference, are a duplicate (no CONTRL: a re-run of the
    same files answers nothing again). Serve and replay give every CONTRL the same references."""
    good = anmeldung()
    truncated = good[: good.index(b"RFF+Z13")]  # cut mid-message: CONTRL 4, UCM 0085 = 13
    wrong_version = anmeldung(version="UTILMD:D:11A:UN:S9.9")  # CONTRL 4, UCM 0085 = 12
    other = anmeldung(version="UTILMD:D:11A:UN:S9.8")  # other bytes again
    files = [truncated, truncated, wrong_version, truncated, good, good, wrong_version, other]
    contrls: dict[bool, list[tuple[str, str, str, str | None]]] = {}
    for after_routing in (False, True):
        async with LmdbStore(tmp_path / f"db-{after_routing}") as store:
            p = _pipeline(store, after_routing)
            statuses = [(await p.ingest(raw, THU_1430)).status for raw in files]
            assert statuses == [
                "rejected", "duplicate", "rejected", "duplicate", "accepted", "duplicate", "duplicate",
                "conflict",
            ]  # fmt: skip
            contrls[after_routing] = await _contrls(store)
    first, wrong, corrected, conflict = contrls[False]
    # (the rejections name their message's error on a UCM line, not on UCI)
    assert [(c[2], c[3]) for c in (first, wrong, corrected, conflict)] == [
        ("4", None), ("4", None), ("7", None), ("4", "26"),
    ]  # fmt: skip
    assert len({c[0] for c in (first, wrong, corrected, conflict)}) == 4
    assert len({c[1] for c in (first, wrong, corrected, conflict)}) == 4
    assert contrls[True] == contrls[False]


def _contrl(sender: str, control_ref: str, referenced: str, action: str) -> bytes:
    """A partner's CONTRL (UCI 0083 ``action``) on our interchange ``referenced``."""
    text = (
        f"UNA:+.? 'UNB+UNOC:3+{sender}:500+{NB}:500+251113:1500+{control_ref}'UNH+1+CONTRL:D:3:UN:2.0b'"
        f"UCI+{referenced}+{NB}:500+{sender}:500+{action}'UNT+3+1'UNZ+1+{control_ref}'"
    )
    return text.encode("latin-1")


def _without_7402() -> bytes:
    """An Anmeldung whose one transaction has no reference (``IDE+24``): refused, APERAK Z29."""
    return _with_transactions(anmeldung(), ["IDE+24"])


async def test_the_partners_contrl_on_our_refusal_is_recorded_where_it_was_sent(tmp_path: Path) -> None:
    """Before, the 0020 of a refusal APERAK (the pipeline's, not a process's) was bound nowhere,
    so the partner's CONTRL on it always became a dead letter "CONTRL refers to unknown
    interchange". Now the receipt stream that sent it binds ``ic:<0020>`` in the same write:
    a positive CONTRL is recorded there and nothing else; a negative one too, and a dead letter
    says that the partner counts our refusal as not received; a CONTRL from anyone else is
    refused (a dead letter), as a process refuses one."""
    async with LmdbStore(tmp_path / "db") as store:
        p = _pipeline(store)
        refused = await p.ingest(_without_7402(), THU_1430)
        assert [m.refused for m in refused.messages] == ["Z29"]
        [aperak] = await _refusals(store)
        ours = aperak.payload["envelope"]["control_ref"]
        receipt = receipt_identity(NB, LFN, "LFN0001")
        assert await store.lookup(receipt.tenant_id, f"ic:{ours}") == receipt
        letters = len(await store.dead_letters(limit=100))  # the refusal's

        later = THU_1430 + timedelta(minutes=20)
        positive = await p.ingest(_contrl(LFN, "LFNC1", ours, "7"), later)
        assert [(m.outcome, m.ack) for m in positive.messages] == [("routed", "accepted")]
        assert len(await store.dead_letters(limit=100)) == letters

        negative = await p.ingest(_contrl(LFN, "LFNC2", ours, "4"), later)
        assert [(m.outcome, m.ack) for m in negative.messages] == [("routed", "rejected")]
        [letter] = (await store.dead_letters(limit=100))[letters:]
        assert f"{LFN} rejected our APERAK {ours}" in letter.reason

        stranger = await p.ingest(_contrl(LFA, "LFAC1", ours, "7"), later)
        assert [m.outcome for m in stranger.messages] == ["dead_letter"]
        assert f"which went to {LFN}" in stranger.messages[0].detail

        events = await store.load(receipt.stream_id)
        recorded = [e.payload for e in events if e.event_type == "inbox.refusal_acknowledged"]
        assert [(e["interchange_ref"], e["positive"]) for e in recorded] == [
            ("LFNC1", True), ("LFNC2", False),
        ]  # fmt: skip


@pytest.mark.parametrize("window", [1, 512])
async def test_a_replay_records_the_contrl_on_our_refusal_in_both_schedules(
    tmp_path: Path, window: int
) -> None:
    """A replay keys the CONTRL by the receipt stream its ``ic:`` binding names (the refused
    interchange's receipt key, so it never writes there beside a copy of that interchange), and
    records it there as serve does, in either schedule and with the same decisions."""
    async with LmdbStore(tmp_path / "scratch") as store:  # our refusal's 0020, as serve sends it
        await _pipeline(store).ingest(_without_7402(), THU_1430)
        [aperak] = await _refusals(store)
    ours = aperak.payload["envelope"]["control_ref"]
    files = {
        "refused.edi": (_without_7402(), THU_1430),
        "contrl.edi": (_contrl(LFN, "LFNC1", ours, "4"), THU_1430 + timedelta(minutes=20)),
        "refused-again.edi": (_without_7402(), THU_1430 + timedelta(minutes=30)),
    }
    directory = tmp_path / "in"
    directory.mkdir()
    rows = ["file,received_at"]
    for name, (raw, at) in files.items():
        (directory / name).write_bytes(raw)
        rows.append(f"{name},{at.isoformat()}")
    (directory / "manifest.csv").write_text("\n".join(rows) + "\n")
    digests = set()
    for sequential in (False, True):
        store_path = tmp_path / f"store-{sequential}"
        report = await replay_directory(
            directory, store_path, tenants=[NB], sequential=sequential, window=window
        )
        assert report.outcomes["routed"] == 1 and report.statuses["duplicate"] == 1
        digests.add(report.decision_digest)
        async with LmdbStore(store_path) as store:
            reasons = [letter.reason for letter in await store.dead_letters(limit=100)]
            assert not [r for r in reasons if "unknown interchange" in r]
            assert [r for r in reasons if f"rejected our APERAK {ours}" in r]
            receipt = receipt_identity(NB, LFN, "LFN0001").stream_id
            events = await store.load(receipt)
            assert [e.event_type for e in events][-1] == "inbox.refusal_acknowledged"
            # The key a pipelined run gives the CONTRL: the one every copy of "refused" has.
            assert _RunView(store, lambda _: None).receipt_key_of(receipt) == ("receipt", LFN, NB, "LFN0001")
    assert len(digests) == 1
