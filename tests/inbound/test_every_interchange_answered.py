"""Every identifiable interchange gets an answer: CONTRL 4 where the syntax is broken, APERAK
313 where a message was readable but not processable; the dead letter stays as well."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mako_actors.edifact import render_outbound
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFA,
    LFN,
    NB,
    THU_1430,
    anmeldung,
    interchange,
    kind,
    lfa_answer,
    outbox,
    pipeline,
    store,
)

__all__ = ["store"]


async def test_a_truncated_file_with_an_intact_unb_gets_contrl_4(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    raw = anmeldung()
    cut = raw[: raw.index(b"LOC+Z16") + 5]  # the transfer broke off mid-segment
    result = await p.ingest(cut, THU_1430, source="cut.edi")
    assert result.status == "rejected" and result.sender == LFN and result.interchange_ref == "LFN0001"
    [contrl] = await outbox(store)
    assert (contrl.recipient, contrl.payload["action"]) == (LFN, "4")
    assert contrl.payload["error_code"]  # the 0085 of the defect, on UCI
    assert render_outbound("CONTRL", contrl.payload).startswith(b"UNA")
    assert await store.dead_letters() == []  # answered and recorded as a receipt, not lost


async def test_an_answer_to_no_request_of_ours_gets_aperak_z10_and_a_dead_letter(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    result = await p.ingest(lfa_answer("NOSUCHIDE", sent_at=THU_1430), THU_1430)
    [outcome] = result.messages
    assert (outcome.outcome, outcome.refused) == ("dead_letter", "Z10")
    assert sorted(kind(m) for m in await outbox(store)) == ["APERAK-", "CONTRL7"]
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert aperak.recipient == LFA and aperak.payload["referenced_transaction_ref"] == "LFATX1"
    assert [d.kind for d in await store.dead_letters()] == ["inbound"]


async def test_an_answer_without_rff_tn_gets_aperak_z29(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    raw = lfa_answer("X", sent_at=THU_1430).replace(b"'RFF+TN:X", b"")
    raw = raw.replace(b"UNT+12+", b"UNT+11+")
    [outcome] = (await p.ingest(raw, THU_1430)).messages
    assert outcome.refused == "Z29"


async def test_a_utilmd_without_transactions_gets_aperak_z29(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    raw = interchange(LFN, NB, "EMPTY1", THU_1430, [])
    [outcome] = (await p.ingest(raw, THU_1430)).messages
    assert (outcome.outcome, outcome.refused) == ("dead_letter", "Z29")
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert "RFF+TN" not in render_outbound("APERAK", aperak.payload).decode("latin-1")  # UNOC


async def test_refusals_are_written_once_even_when_the_interchange_is_ingested_again(
    store: LmdbStore,
) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    raw = anmeldung(pid="55555")
    await p.ingest(raw, THU_1430)
    again = await p.ingest(raw, THU_1430 + timedelta(minutes=1))
    assert again.status == "duplicate"
    assert sorted(kind(m) for m in await outbox(store)) == ["APERAK-", "CONTRL7"]


# -- the UNH version must be the one in force on the transmission day (AHB-FACTS §7) -----------


@pytest.mark.parametrize(
    ("version", "received_at"),
    [
        ("UTILMD:D:11A:UN:S1.1", THU_1430),  # pre-FV2504 MIG under FV2510
        ("UTILMD:D:11A:UN:S2.2", THU_1430),  # FV2610's MIG a year early
        ("UTILMD:D:11A:UN:S2.1", datetime(2026, 10, 1, 8, 0, tzinfo=UTC)),  # FV2610 needs S2.2
    ],
)
async def test_a_unh_version_not_in_force_is_rejected_by_contrl_ucm_12(
    store: LmdbStore, version: str, received_at: datetime
) -> None:
    p = pipeline(store, VirtualClock(received_at))
    result = await p.ingest(anmeldung(version=version, sent_at=received_at), received_at)
    assert result.status == "rejected" and result.messages == []
    [contrl] = await outbox(store)
    assert contrl.payload["action"] == "4"
    [ucm] = contrl.payload["messages"]
    assert (ucm["reference"], ucm["action"], ucm["error_code"]) == ("M1", "4", "12")
    assert f"UCM+M1+{version}+4+12".encode() in render_outbound("CONTRL", contrl.payload)
    assert {e.workflow_id.name for e in await store.read_all(0, 100)} == {"mako-inbox"}  # nothing started


async def test_the_version_in_force_is_accepted(store: LmdbStore) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    result = await p.ingest(anmeldung(version="UTILMD:D:11A:UN:S2.1"), THU_1430)
    assert result.status == "accepted" and [m.outcome for m in result.messages] == ["started"]


@pytest.mark.parametrize(
    ("mutate", "uci_tail"),
    [
        (lambda raw: raw.replace(b"UNZ+1+", b"UNZ+2+"), b"+4+29+UNZ'"),  # UNZ count
        (lambda raw: raw[: raw.index(b"UNZ")], b"+4+13+UNZ'"),  # no UNZ
        (lambda raw: raw.replace(f"{NB}:500".encode(), b"9900000009999:500", 1), b"+4+7+UNB'"),  # not us
        (lambda raw: raw[: raw.index(b"LOC+Z16") + 5], b"+4+18'"),  # truncated mid-segment: no 0013
    ],
)
async def test_uci_names_the_segment_of_an_interchange_level_error(
    store: LmdbStore, mutate: object, uci_tail: bytes
) -> None:
    """AHB-FACTS §6: ``UCI+…+<0083>[+<0085>+<0013 UNA|UNB|UNZ>]``: the 0085 of an interchange-
    level error comes with the segment it is about, where there is one of the three."""
    assert callable(mutate)
    p = pipeline(store, VirtualClock(THU_1430))
    await p.ingest(mutate(anmeldung()), THU_1430)
    (contrl,) = [m for m in await outbox(store) if m.message_type == "CONTRL"]
    text = render_outbound("CONTRL", contrl.payload)
    uci = text[text.index(b"UCI+") :].split(b"'")[0] + b"'"
    assert uci.endswith(uci_tail), uci


async def test_uci_copies_the_unb_qualifiers_as_received(store: LmdbStore) -> None:
    """AHB-FACTS §6: UCI carries S002/S003 "as received", not the qualifier the ID usually has."""
    p = pipeline(store, VirtualClock(THU_1430))
    raw = anmeldung().replace(f"UNB+UNOC:3+{LFN}:500".encode(), f"UNB+UNOC:3+{LFN}:14".encode(), 1)
    # Accepted, then other bytes under its 0020 (CONTRL 4 with 0085 26 about the UNB).
    for bytes_in in (raw, raw.replace(b"UNZ+1+", b"UNZ+2+")):
        await p.ingest(bytes_in, THU_1430)
    sent = await outbox(store)
    contrls = [render_outbound("CONTRL", m.payload) for m in sent if m.message_type == "CONTRL"]
    assert len(contrls) == 2
    for text in contrls:
        assert f"+{LFN}:14+{NB}:500+".encode() in text, text
    assert sum(f"+{LFN}:14+{NB}:500+4+26+UNB'".encode() in text for text in contrls) == 1


async def test_a_message_type_no_process_handles_gets_aperak_z31_not_z29(store: LmdbStore) -> None:
    """An MSCONS lacks nothing it should have: Z29 ("erforderliche Angabe fehlt") would send
    its sender looking for a missing segment; Z31 says the recipient does not take it."""
    p = pipeline(store, VirtualClock(THU_1430))
    mscons = interchange(
        LFN, NB, "MSCONS1", THU_1430,
        ["UNS+D", "NAD+DP", "LOC+172+51900000012", "LIN+1", "QTY+220:42.5:KWH"],
        bgm="7", version="MSCONS:D:04B:UN:2.4c",
    )  # fmt: skip
    result = await p.ingest(mscons, THU_1430)
    [outcome] = result.messages
    assert (result.status, outcome.outcome, outcome.refused) == ("accepted", "dead_letter", "Z31")
    [aperak] = [m for m in await outbox(store) if m.message_type == "APERAK"]
    assert aperak.recipient == LFN and [e["code"] for e in aperak.payload["errors"]] == ["Z31"]
    assert "MSCONS M1" in aperak.payload["errors"][0]["text"]
    assert b"ERC+Z31" in render_outbound("APERAK", aperak.payload)
    assert [d.kind for d in await store.dead_letters()] == ["inbound-unhandled"]
