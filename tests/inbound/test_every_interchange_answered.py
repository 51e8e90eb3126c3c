"""Every identifiable interchange gets an answer: CONTRL 4 where the syntax is broken, APERAK
313 where a message was readable but not processable; the dead letter stays as well."""

from __future__ import annotations

from datetime import timedelta

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
    assert "RFF+TN" not in render_outbound("APERAK", aperak.payload).decode()


async def test_refusals_are_written_once_even_when_the_interchange_is_ingested_again(
    store: LmdbStore,
) -> None:
    p = pipeline(store, VirtualClock(THU_1430))
    raw = anmeldung(pid="55555")
    await p.ingest(raw, THU_1430)
    again = await p.ingest(raw, THU_1430 + timedelta(minutes=1))
    assert again.status == "duplicate"
    assert sorted(kind(m) for m in await outbox(store)) == ["APERAK-", "CONTRL7"]
