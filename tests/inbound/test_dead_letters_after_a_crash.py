"""Inbound dead letters across a crash: none lost between a receipt and its letter, none twice.

``serve`` takes a file out of the inbox only after its ingest: a node killed before that ingests
it again on restart, and a node killed between a rejected interchange's receipt and its dead
letter finds a duplicate on restart. The crash is a store write that fails right before or
right after the dead letter is written (a SIGKILL there leaves the same store behind).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mako_actors.dead_letters import DeadLetter
from mako_actors.edifact import render_outbound
from mako_actors.errors import StoreError
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import anmeldung
from mako_actors.ids import TenantId
from mako_actors.inbound import DirectHost, InboundPipeline
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore

NB, LFN, FOREIGN = "9900000002009", "9900000001001", "9900000009999"
THU_1430 = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)
LATER = datetime(2025, 11, 13, 14, 30, tzinfo=UTC)  # the restart takes the file an hour later


class Crashing(LmdbStore):
    """The process dies right ``"before"`` or ``"after"`` the next dead letter is written."""

    crash: str | None = None

    async def add_dead_letter(self, letter: DeadLetter) -> DeadLetter:
        crash, self.crash = self.crash, None
        if crash == "before":
            raise StoreError("killed before the dead letter", transient=True)
        stored = await super().add_dead_letter(letter)
        if crash == "after":
            raise StoreError("killed after the dead letter", transient=True)
        return stored


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Crashing]:
    async with Crashing(tmp_path / "db") as s:
        yield s


def pipeline(store: LmdbStore, at: datetime, tenants: tuple[str, ...] = (NB,)) -> InboundPipeline:
    clock = VirtualClock(at)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    return InboundPipeline(store, host, tenants=tenants, clock=clock)


def utilmd(nb: str = NB, pid: str = "55001", control_ref: str = "LFN0605143001") -> bytes:
    return anmeldung(
        lfn=LFN, nb=nb, malo="51900000012", zuordnungsbeginn=START, ide_ref="LFNTX000001",
        control_ref=control_ref, sent_at=THU_1430, pid=pid,
    )  # fmt: skip


def flagged_contrl() -> bytes:
    """A CONTRL interchange flagged as a test: refused in production, its letter is all that is left."""
    contrl = render_outbound(
        "CONTRL",
        {"reference": "C1", "interchange_ref": "OURS0001", "interchange_sender_id": NB,
         "interchange_recipient_id": LFN, "action": "7"},
        envelope={"sender_id": LFN, "recipient_id": NB, "prepared_at": THU_1430, "control_ref": "LFNCTRL1"},
    )  # fmt: skip
    return contrl.replace(b"+LFNCTRL1'", b"+LFNCTRL1++++++1'", 1)

REJECTED = {"misaddressed": lambda: utilmd(nb=FOREIGN), "test-flagged CONTRL": flagged_contrl}


def content(letters: list[DeadLetter]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(d.kind, d.reason, d.payload) for d in letters]


async def uninterrupted(tmp_path: Path, raw: bytes, tenants: tuple[str, ...] = (NB,)) -> list[DeadLetter]:
    async with LmdbStore(tmp_path / "reference") as reference:
        await pipeline(reference, THU_1430, tenants).ingest(raw, THU_1430, source="in.edi")
        return await reference.dead_letters()


@pytest.mark.parametrize("case", REJECTED)
async def test_a_dead_letter_a_crash_lost_after_the_receipt_is_written_on_restart(
    store: Crashing, tmp_path: Path, case: str
) -> None:
    """Before, the restart found a duplicate of a rejected interchange, filed it to rejected/
    and wrote no letter: the misaddressed or refused interchange was in no dead letter at all."""
    raw = REJECTED[case]()
    store.crash = "before"
    with pytest.raises(StoreError):
        await pipeline(store, THU_1430).ingest(raw, THU_1430, source="in.edi")
    assert await store.dead_letters() == []  # the receipt (and CONTRL) written, the letter not
    again = await pipeline(store, LATER).ingest(raw, LATER, source="in.edi")
    assert again.status == "duplicate" and again.rejected_before
    assert content(await store.dead_letters()) == content(await uninterrupted(tmp_path, raw))


@pytest.mark.parametrize("case", REJECTED)
async def test_a_rejected_interchange_received_again_adds_no_dead_letter(
    store: Crashing, tmp_path: Path, case: str
) -> None:
    """Once per distinct content, under whatever name the same bytes come again."""
    raw = REJECTED[case]()
    await pipeline(store, THU_1430).ingest(raw, THU_1430, source="in.edi")
    for source in ("in.edi", "resent.edi"):
        again = await pipeline(store, LATER).ingest(raw, LATER, source=source)
        assert again.status == "duplicate" and again.first_source == "in.edi"
    assert content(await store.dead_letters()) == content(await uninterrupted(tmp_path, raw))


@pytest.mark.parametrize(
    ("raw", "tenants"),
    [
        pytest.param(b"this is not EDIFACT at all", (NB,), id="unreadable"),
        pytest.param(utilmd(nb=FOREIGN), (NB, "9900000002023"), id="misaddressed to one of several"),
        pytest.param(utilmd(pid="55099"), (NB,), id="refused transaction"),  # APERAK Z31 and a letter
        pytest.param(flagged_contrl(), (NB,), id="refused CONTRL interchange"),
    ],
)
async def test_an_interchange_taken_again_after_a_crash_gets_its_dead_letters_once(
    store: Crashing, tmp_path: Path, raw: bytes, tenants: tuple[str, ...]
) -> None:
    """Killed after the dead letter, before the file left the inbox (or before the receipt's
    InterchangeProcessed): before, the restart wrote the same letter a second time, and the
    dead-letter list and its metrics counted one rejection twice."""
    store.crash = "after"
    with pytest.raises(StoreError):
        await pipeline(store, THU_1430, tenants).ingest(raw, THU_1430, source="in.edi")
    await pipeline(store, LATER, tenants).ingest(raw, LATER, source="in.edi")
    expected = await uninterrupted(tmp_path, raw, tenants)
    assert len(expected) == 1 and content(await store.dead_letters()) == content(expected)


def transaction_twice(raw: bytes) -> bytes:
    """``raw``'s one transaction (IDE up to UNT) sent twice in its message: one IDE, two uses."""
    segments = raw.split(b"'")
    ide = next(n for n, segment in enumerate(segments) if segment.startswith(b"IDE+"))
    unt = next(n for n, segment in enumerate(segments) if segment.startswith(b"UNT+"))
    block = segments[ide:unt]
    tag, count, reference = segments[unt].split(b"+")
    counted = b"+".join([tag, str(int(count) + len(block)).encode(), reference])
    return b"'".join([*segments[:unt], *block, counted, *segments[unt + 1 :]])


async def refusals(store: LmdbStore) -> list[tuple[str, tuple[str, ...]]]:
    """The APERAKs waiting in ``store``'s outbox: positive or not, with their ERC codes."""
    pending = await store.pending(1_000, datetime.max.replace(tzinfo=UTC))
    return sorted(
        ("312" if m.payload["positive"] else "313", tuple(e["code"] for e in m.payload.get("errors") or ()))
        for m in pending
        if m.message_type == "APERAK"
    )


@pytest.mark.parametrize("crash", ["before", "after"])
@pytest.mark.parametrize("case", ["in another interchange", "twice in one message"])
async def test_a_reused_transaction_reference_is_refused_also_after_a_crash_cut_its_routing_short(
    store: Crashing, tmp_path: Path, crash: str, case: str
) -> None:
    """Killed between the Z15 refusal's dead letter and the receipt's InterchangeProcessed (which
    carries the APERAKs), the restart routed the interchange again and took every transaction
    it found known for one of its own: the reused IDE got no answer at all, and killed before
    the letter, no dead letter either (found by a crash review)."""
    if case == "in another interchange":
        earlier, raw = utilmd(), utilmd(control_ref="LFN0605143002")
    else:
        earlier, raw = None, transaction_twice(utilmd())
    async with LmdbStore(tmp_path / "reference") as reference:
        for s, at in ((reference, THU_1430), (store, THU_1430)):
            if earlier is not None:
                await pipeline(s, at).ingest(earlier, at, source="first.edi")
        await pipeline(reference, LATER).ingest(raw, LATER, source="in.edi")
        expected_letters, expected_aperaks = await reference.dead_letters(), await refusals(reference)
    assert [d.kind for d in expected_letters] == ["inbound-conflict"]
    assert ("313", ("Z15",)) in expected_aperaks
    store.crash = crash
    with pytest.raises(StoreError):
        await pipeline(store, LATER).ingest(raw, LATER, source="in.edi")
    result = await pipeline(store, LATER).ingest(raw, LATER, source="in.edi")
    assert [m.refused for m in result.messages][-1] == "Z15"
    if earlier is None:  # its first transaction started its process before the crash: recorded so
        assert [m.outcome for m in result.messages] == ["started", "dead_letter"]
    assert content(await store.dead_letters()) == content(expected_letters)
    assert await refusals(store) == expected_aperaks


async def test_a_contrl_on_our_refusal_routed_again_after_a_crash_is_recorded_once(store: Crashing) -> None:
    """The partner's CONTRL 4 on our Z15 APERAK, killed before its dead letter: routed again, it
    was recorded a second time on the refusing receipt stream (two acknowledgements in its
    timeline for one CONTRL; found by a crash review)."""
    from mako_actors.inbound import receipt_identity

    await pipeline(store, THU_1430).ingest(utilmd(), THU_1430, source="first.edi")
    await pipeline(store, THU_1430).ingest(utilmd(control_ref="LFN0605143002"), THU_1430, source="again.edi")
    pending = await store.pending(1_000, datetime.max.replace(tzinfo=UTC))
    [refusal] = [m for m in pending if m.message_type == "APERAK" and not m.payload["positive"]]
    contrl = render_outbound(
        "CONTRL",
        {"reference": "C1", "interchange_ref": refusal.payload["envelope"]["control_ref"],
         "interchange_sender_id": NB, "interchange_recipient_id": LFN, "action": "4"},
        envelope={"sender_id": LFN, "recipient_id": NB, "prepared_at": LATER, "control_ref": "LFNCTRL2"},
    )  # fmt: skip
    store.crash = "before"
    with pytest.raises(StoreError):
        await pipeline(store, LATER).ingest(contrl, LATER, source="contrl.edi")
    result = await pipeline(store, LATER).ingest(contrl, LATER, source="contrl.edi")
    assert [m.outcome for m in result.messages] == ["routed"]
    events = await store.load(receipt_identity(NB, LFN, "LFN0605143002").stream_id)
    assert [e.event_type for e in events].count("inbox.refusal_acknowledged") == 1
    assert [d.kind for d in await store.dead_letters()] == ["inbound-conflict", "inbound"]


class KilledBeforeProcessed(LmdbStore):
    """The process dies right before the receipt's InterchangeProcessed is written, once."""

    crash = False

    async def commit_many(self, commits: Any) -> Any:
        processed = any(e.event_type == "inbox.interchange_processed" for c in commits for e in c.events)
        if self.crash and processed:
            self.crash = False
            raise StoreError("killed before InterchangeProcessed", transient=True)
        return await super().commit_many(commits)


async def test_an_ide_refused_first_and_started_second_stays_started_when_routed_again(
    tmp_path: Path,
) -> None:
    """Its first use in the message refused before it bound the IDE (an unhandled PID, Z31), its
    second started the process. Routed again after a crash, the second was taken for a reuse of
    the IDE: refused Z15 and dead-lettered beside its process's own answers (found by
    re-review). It is the interchange's own: recorded as started, as without the crash."""
    raw = transaction_twice(utilmd()).replace(b"RFF+Z13:55001'", b"RFF+Z13:55999'", 1)
    async with LmdbStore(tmp_path / "reference") as reference:
        expected = await pipeline(reference, LATER).ingest(raw, LATER, source="in.edi")
        letters, aperaks = await reference.dead_letters(), await refusals(reference)
    assert [(m.outcome, m.refused) for m in expected.messages] == [("dead_letter", "Z31"), ("started", None)]
    async with KilledBeforeProcessed(tmp_path / "db") as store:
        store.crash = True
        with pytest.raises(StoreError):
            await pipeline(store, LATER).ingest(raw, LATER, source="in.edi")
        again = await pipeline(store, LATER).ingest(raw, LATER, source="in.edi")
        assert [(m.outcome, m.refused) for m in again.messages] == [("dead_letter", "Z31"), ("started", None)]
        bound = await store.lookup(TenantId.from_party_id(NB), f"tx:{LFN}:LFNTX000001")
        assert bound is not None and again.messages[1].process_id == bound.process_id
        assert content(await store.dead_letters()) == content(letters)
        assert await refusals(store) == aperaks


async def test_two_contrls_on_our_refusal_in_one_interchange_are_both_recorded(store: Crashing) -> None:
    """A CONTRL 7 and then a CONTRL 4 on our Z15 APERAK in one partner interchange: the receipt
    stream's key of an acknowledgement lacked the message's 0062, so the 4 was left out of it."""
    from mako_actors.inbound import receipt_identity

    await pipeline(store, THU_1430).ingest(utilmd(), THU_1430, source="first.edi")
    await pipeline(store, THU_1430).ingest(utilmd(control_ref="LFN0605143002"), THU_1430, source="again.edi")
    pending = await store.pending(1_000, datetime.max.replace(tzinfo=UTC))
    [refusal] = [m for m in pending if m.message_type == "APERAK" and not m.payload["positive"]]
    ours = refusal.payload["envelope"]["control_ref"]
    segments = [
        f"UNB+UNOC:3+{LFN}:500+{NB}:500+{LATER:%y%m%d:%H%M}+LFNCTRL3",
        "UNH+1+CONTRL:D:3:UN:2.0b", f"UCI+{ours}+{NB}:500+{LFN}:500+7", "UNT+3+1",
        "UNH+2+CONTRL:D:3:UN:2.0b", f"UCI+{ours}+{NB}:500+{LFN}:500+4+18+UNB", "UNT+3+2",
        "UNZ+2+LFNCTRL3",
    ]  # fmt: skip
    raw = ("UNA:+.? '" + "'".join(segments) + "'").encode("latin-1")
    result = await pipeline(store, LATER).ingest(raw, LATER, source="contrls.edi")
    assert [m.outcome for m in result.messages] == ["routed", "routed"]
    events = await store.load(receipt_identity(NB, LFN, "LFN0605143002").stream_id)
    recorded = [e.payload["positive"] for e in events if e.event_type == "inbox.refusal_acknowledged"]
    assert recorded == [True, False]
