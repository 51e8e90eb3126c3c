"""Inbound edges: over-long elements or control characters get no unsendable answer; misaddressed
interchanges."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import TenantId
from mako_actors.delivery import DirectorySender, OutboxWorker
from mako_actors.edifact import render_outbound
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import anmeldung
from mako_actors.inbound import DirectHost, InboundPipeline
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore

NB, LFN = "9900000002009", "9900000001001"
FOREIGN = "9900000009999"
MALO = "51900000012"
THU_1430 = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    async with LmdbStore(tmp_path / "db") as s:
        yield s


def pipeline(store: LmdbStore, clock: VirtualClock) -> InboundPipeline:
    return InboundPipeline(store, DirectHost(store, [GpkeNbWorkflow()], clock), tenants=[NB], clock=clock)


def interchange(nb: str = NB, control_ref: str = "LFN0605143001") -> bytes:
    return anmeldung(
        lfn=LFN, nb=nb, malo=MALO, zuordnungsbeginn=START, ide_ref="LFNTX000001",
        control_ref=control_ref, sent_at=THU_1430,
    )


@pytest.mark.parametrize(
    "replacements",
    [
        [(b"+9900000001001:500+", b"+990000000100112345678901234567890123:500+")],  # 0004: 36
        [(b"UNH+M1+", b"UNH+M1234567890ABCDE+"), (b"UNT+18+M1'", b"UNT+18+M1234567890ABCDE'")],  # 0062
        [(b"IDE+24+LFNTX000001", b"IDE+24+" + b"T" * 40)],  # 7402 longer than 35
        [(b"BGM+E01+DLFN0605143001", b"BGM+E01+" + b"D" * 40)],  # 1004 longer than 35
    ],
)
async def test_over_long_elements_are_refused_on_receipt_and_every_answer_is_sendable(
    store: LmdbStore, tmp_path: Path, replacements: list[tuple[bytes, bytes]]
) -> None:
    raw = interchange()
    for old, new in replacements:
        assert old in raw
        raw = raw.replace(old, new, 1)
    clock = VirtualClock(THU_1430)
    result = await pipeline(store, clock).ingest(raw, THU_1430, source="long.edi")
    assert result.status == "rejected" and "longer than" in (result.error or "")
    report = await OutboxWorker(store, DirectorySender(tmp_path / "out"), clock).run_once()
    assert report.dead_lettered == 0  # nothing decided that cannot be sent
    assert await store.outbox_count() == 0


@pytest.mark.parametrize(
    ("replacements", "contrl"),
    [
        # IDE 7402: before, copied into the RFF+TN of the APERAK and of the 55002.
        (
            [(b"IDE+24+LFNTX000001", b"IDE+24+LFNTX\x00000001")],
            b"UCM+M1+UTILMD:D:11A:UN:S2.1+4'UCS+6'UCD+21+3'",
        ),
        # UNH 0062: the UCI carries the error; no UCM line copies the reference.
        ([(b"UNH+M1+", b"UNH+M\x011+"), (b"UNT+18+M1'", b"UNT+18+M\x011'")], b"+4+21'UNT"),
        # A byte outside UNOB in BGM is the error, but the UNH 0062 its UCM line would copy holds
        # a control character: the UCI carries the error (before, the UCM copied it).
        (
            [(b"UNB+UNOC:3+", b"UNB+UNOB:3+"), (b"BGM+E01+", b"BGM+E01+\xfc"), (b"UNH+M1+", b"UNH+M\x011+"),
             (b"UNT+18+M1'", b"UNT+18+M\x011'")],
            b"+4+21'UNT",
        ),
        # UNB 0020 (also in UNZ): no CONTRL can name the interchange without copying it, a dead
        # letter only (before, UCI copied it).
        ([(b"LFN0605143001'", b"LFN06\x1b05143001'")], None),
        # A C1 byte (a Windows-1252 en dash) in the customer's name: before, accepted and copied
        # into the 55010 to the LFA, whose syntax check could refuse it.
        ([(b"NAD+Z09+++", b"NAD+Z09+++\x96")], b"UCM+M1+UTILMD:D:11A:UN:S2.1+4'UCS+"),
    ],
    ids=["7402", "0062", "0062-other-error", "0020", "c1-in-name"],
)
async def test_a_control_character_in_data_is_refused_and_never_copied_into_an_answer(
    store: LmdbStore, replacements: list[tuple[bytes, bytes]], contrl: bytes | None
) -> None:
    """UNOA..UNOC have no control characters for data, and our answers copy values as received:
    one taken with a NUL in 7402 made our APERAK and 55002 fail the partner's syntax check."""
    raw = interchange()
    for old, new in replacements:
        assert old in raw
        raw = raw.replace(old, new)
    clock = VirtualClock(THU_1430)
    result = await pipeline(store, clock).ingest(raw, THU_1430, source="control.edi")
    assert result.status == "rejected" and "0085=21" in (result.error or "")
    answers = await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))
    rendered = [render_outbound(m.message_type, m.payload) for m in answers]
    assert all(re.search(rb"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]", b) is None for b in rendered)
    if contrl is None:
        assert rendered == [] and await store.dead_letters()
    else:
        [only] = rendered
        assert answers[0].message_type == "CONTRL"
        assert contrl in only and (b"UCM" in contrl) == (b"UCM" in only)


async def test_a_well_formed_interchange_is_still_answered(store: LmdbStore, tmp_path: Path) -> None:
    clock = VirtualClock(THU_1430)
    result = await pipeline(store, clock).ingest(interchange(), THU_1430, source="ok.edi")
    assert result.status == "accepted"
    report = await OutboxWorker(store, DirectorySender(tmp_path / "out"), clock).run_once()
    assert report.delivered >= 2 and report.dead_lettered == 0


async def test_a_misaddressed_interchange_gets_no_answer_in_a_foreign_name(store: LmdbStore) -> None:
    clock = VirtualClock(THU_1430)
    result = await pipeline(store, clock).ingest(interchange(nb=FOREIGN, control_ref="R1"), THU_1430)
    assert result.status == "rejected"
    foreign_tenant = TenantId.from_party_id(FOREIGN)
    assert await store.list_streams(f"process/{foreign_tenant}/") == []  # nothing under their tenant
    for message in await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC)):
        assert message.payload.get("envelope", {}).get("sender_id") != FOREIGN
        assert message.tenant_id != foreign_tenant
    assert any("not one of our" in letter.reason for letter in await store.dead_letters())


async def test_a_misaddressed_interchange_is_rejected_by_us_with_code_7_once(store: LmdbStore) -> None:
    """One tenant: we, the actual recipient, send CONTRL 4 / 0085 = 7 from our own MP-ID."""
    clock = VirtualClock(THU_1430)
    raw = interchange(nb=FOREIGN, control_ref="R1")
    await pipeline(store, clock).ingest(raw, THU_1430)
    again = await pipeline(store, clock).ingest(raw, THU_1430)
    assert again.status == "duplicate"
    [contrl] = await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))
    assert contrl.tenant_id == TenantId.from_party_id(NB)
    assert contrl.payload["envelope"]["sender_id"] == NB and contrl.payload["envelope"]["recipient_id"] == LFN
    assert contrl.payload["interchange_recipient_id"] == FOREIGN  # S003 copied as received
    assert (contrl.payload["action"], contrl.payload["error_code"]) == ("4", "7")
    letters = [d for d in await store.dead_letters() if d.kind == "inbound-misaddressed"]
    assert len(letters) == 1  # the retransmission adds no second dead letter


async def test_with_several_tenants_a_misaddressed_interchange_gets_only_a_dead_letter(
    store: LmdbStore,
) -> None:
    clock = VirtualClock(THU_1430)
    host = DirectHost(store, [GpkeNbWorkflow()], clock)
    several = InboundPipeline(store, host, tenants=[NB, "9900000003007"], clock=clock)
    result = await several.ingest(interchange(nb=FOREIGN, control_ref="R1"), THU_1430)
    assert result.status == "rejected" and result.answered_by is None
    assert await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC)) == []
    assert [d.kind for d in await store.dead_letters()] == ["inbound-misaddressed"]


@pytest.mark.parametrize("defect", ["unt count", "lower-case tag", "no unz"])
async def test_a_broken_misaddressed_interchange_is_answered_by_us_with_code_7(
    store: LmdbStore, defect: str
) -> None:
    """A syntax error besides the foreign recipient: before, the CONTRL of the syntax error went
    out from the foreign MP-ID (UNB sender = the other party), with no dead letter and no alarm.
    Now it is misaddressed as one that parses: CONTRL 4 / 0085 = 7 from us, a dead letter
    naming both findings, and a retransmission answered once."""
    raw = interchange(nb=FOREIGN, control_ref="R1")
    text = raw.decode("latin-1")
    if defect == "unt count":
        count = text.split("UNT+")[1].split("+")[0]
        raw = text.replace(f"UNT+{count}+", f"UNT+{int(count) - 1}+").encode("latin-1")
    elif defect == "lower-case tag":
        raw = text.replace("'BGM+", "'bgm+", 1).encode("latin-1")
    else:
        raw = text[: text.index("UNZ")].encode("latin-1")
    clock = VirtualClock(THU_1430)
    result = await pipeline(store, clock).ingest(raw, THU_1430)
    assert result.status == "rejected" and "not one of our MP-IDs; " in (result.error or "")
    assert (await pipeline(store, clock).ingest(raw, THU_1430)).status == "duplicate"
    [contrl] = await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))
    assert contrl.payload["envelope"]["sender_id"] == NB
    assert (contrl.payload["action"], contrl.payload["error_code"]) == ("4", "7")
    [letter] = [d for d in await store.dead_letters() if d.kind == "inbound-misaddressed"]
    assert "not one of our MP-IDs" in letter.reason


@pytest.mark.parametrize(
    ("una", "cut"),
    [(True, False), (False, False), (True, True)],
    ids=["with-una", "without-una", "first-cut-off"],
)
async def test_a_second_interchange_in_the_same_file_is_a_dead_letter_not_lost(
    store: LmdbStore, una: bool, cut: bool
) -> None:
    """A gateway batches two interchanges in one file. The file is rejected (our CONTRL 4 names
    the first one only); before, the second got no answer and left no trace, so its sender
    waited for a CONTRL and nobody here knew. Now a dead letter names it, once per file, also
    when the first one is cut off before its UNZ (the replay's scan then read the second one's
    UNB as the file's: another receipt key than the pipeline's)."""
    from mako_actors._partition import read_facts

    second = interchange(control_ref="LFN0605143002")
    if not una:
        second = second[second.index(b"UNB") :]
    first = interchange()
    if cut:
        first = first[: first.index(b"UNZ")]
    clock = VirtualClock(THU_1430)
    raw = first + b"\r\n" + second
    [facts] = read_facts([("batch.edi", raw, THU_1430)], [NB])
    assert facts.key == (LFN.encode(), NB.encode(), b"LFN0605143001")
    p = pipeline(store, clock)
    result = await p.ingest(raw, THU_1430, source="batch.edi")
    # Counted for the node's metrics (``mako_dead_letters_total``) as written: it was not.
    assert result.status == "rejected" and p.dead_letters_written == 1
    [contrl] = [m for m in await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))]
    assert b"UCI+LFN0605143001+" in render_outbound("CONTRL", contrl.payload)
    [letter] = [d for d in await store.dead_letters() if "follows interchange" in d.reason]
    assert letter.payload["interchange_ref"] == "LFN0605143002" and "'LFN0605143002'" in letter.reason
    p = pipeline(store, clock)
    await p.ingest(raw, THU_1430, source="batch.edi")  # received again
    assert p.dead_letters_written == 0
    assert len([d for d in await store.dead_letters() if "follows interchange" in d.reason]) == 1


async def test_a_padded_interchange_gets_the_contrl_an_unpadded_one_gets(tmp_path: Path) -> None:
    """A wrong UNT count is a message's error: CONTRL 4 with its UCM line (AHB-FACTS §6). The
    pipeline finds the message by tokenizing the bytes again: padded with blanks (which the
    parser trims), that failed, and the error went on the UCI, without the UCM line."""
    raw = interchange().replace(b"UNT+18+M1'", b"UNT+17+M1'")
    contrls = []
    for k, tail in enumerate((b"", b"  \t\r\n")):
        async with LmdbStore(tmp_path / f"s{k}") as store:
            result = await pipeline(store, VirtualClock(THU_1430)).ingest(raw + tail, THU_1430)
            assert result.status == "rejected"
            [contrl] = await store.pending(100, datetime(2030, 1, 1, tzinfo=UTC))
            contrls.append(render_outbound("CONTRL", contrl.payload))
    assert b"UCM+M1+UTILMD:D:11A:UN:S2.1+4+29+UNT'" in contrls[1]
    ucis = [c.split(b"UCI", 1)[1].split(b"'UNT", 1)[0] for c in contrls]  # (our 0020s differ)
    assert ucis[0] == ucis[1]


async def test_an_interchange_padded_with_blanks_is_accepted(store: LmdbStore) -> None:
    """Spaces, tabs and blank lines after the last segment are no data: the interchange is
    intact (before: CONTRL 4, not received)."""
    clock = VirtualClock(THU_1430)
    result = await pipeline(store, clock).ingest(interchange() + b"   \t\r\n\r\n", THU_1430)
    assert result.status == "accepted"


@pytest.mark.parametrize("case", ["renamed-copy", "first-misaddressed", "second-unreadable", "other-una"])
async def test_a_further_interchange_is_named_once_whatever_the_first_one_is(
    store: LmdbStore, case: str
) -> None:
    """Review of the letter naming a further interchange in one file: a copy of the file under
    another name wrote it again (its payload named the source); a misaddressed first one, a
    second whose UNB cannot be read, and a cut-off first one followed by one with its own UNA
    (other service characters) got none."""
    second = interchange(control_ref="LFN0605143002")
    first = interchange()
    if case == "first-misaddressed":
        first = interchange(nb=FOREIGN)
    elif case == "second-unreadable":
        second = second.replace(b"LFN0605143002", b"LFN0605143002XYZ")  # (0020 is an..14)
    elif case == "other-una":
        first = first[: first.index(b"UNZ")]
        second = b"UNA:+.? ~" + second[second.index(b"UNB") :].replace(b"'", b"~")
    raw = first + b"\r\n" + second
    clock = VirtualClock(THU_1430)
    await pipeline(store, clock).ingest(raw, THU_1430, source="batch.edi")
    await pipeline(store, clock).ingest(raw, THU_1430 + timedelta(minutes=5), source="batch-again.edi")
    letters = [d for d in await store.dead_letters() if "follows interchange" in d.reason]
    assert len(letters) == 1
    if case == "second-unreadable":
        assert "cannot be read" in letters[0].reason and letters[0].payload["offset"] == len(first) + 2
    else:
        assert letters[0].payload["interchange_ref"] == "LFN0605143002"


@pytest.mark.parametrize(
    "name",
    [b"TUNA GMBH UNBEKANNT", b"Quote?'UNB+UNOC:3+9900000001001:500+9900000002009:500+251106:1430+QUOTED"],
    ids=["una-unb-in-a-name", "released-terminator-then-a-unb"],
)
async def test_a_cut_off_interchange_alone_names_no_further_one(store: LmdbStore, name: bytes) -> None:
    """The look for a further interchange with its own service characters (after a cut-off first
    one) took "UNA" and "UNB" anywhere: a customer named "TUNA GMBH UNBEKANNT" in a cut-off
    interchange got a dead letter naming an unreadable further interchange; then a UNB after a
    released terminator (``?'``, data) still counted as a segment start."""
    raw = interchange()
    assert b"NAD+Z09+++" in raw
    raw = raw.replace(b"NAD+Z09+++", b"NAD+Z09+++" + name + b":", 1)
    await pipeline(store, VirtualClock(THU_1430)).ingest(raw[: raw.index(b"UNZ")], THU_1430)
    assert [d for d in await store.dead_letters() if "follows interchange" in d.reason] == []
