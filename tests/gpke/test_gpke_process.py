"""End to end on ``Process`` over a real LMDB store: outbox, deadlines, registry, timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gpke_support import LFA, LFN, MALO, NB, START, abmeldung, anmeldung, berlin, lfa_answer

from mako_actors.errors import RegistryConflict
from mako_actors.gpke import GpkeNbWorkflow, PidRouter, Status, ide_key, malo_key, transaction_key
from mako_actors.ids import TenantId
from mako_actors.outbox import OutboxMessage
from mako_actors.process import Process
from mako_actors.version import FormatVersion
from stores.lmdb import LmdbStore

TENANT = TenantId.from_party_id(NB)
ROUTER = PidRouter()
WF = GpkeNbWorkflow()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    store = LmdbStore(tmp_path / "db", durability="no_sync")
    try:
        yield store
    finally:
        await store.aclose()


def kinds(messages: list[OutboxMessage]) -> list[tuple[str, str | None, str]]:
    result = []
    for m in sorted(messages, key=lambda m: m.message_id.hex):
        kind = ("312" if m.payload["positive"] else "313") if m.message_type == "APERAK" else (
            m.payload["transactions"][0]["pid"])
        result.append((m.message_type, kind, m.recipient))
    return sorted(result)


async def new_process(store: LmdbStore, command: Any) -> Process[Any, Any]:
    process: Process[Any, Any] = Process(
        WF, store, TENANT, ROUTER.workflow_id(command.pid, command.format_version)
    )
    await process.execute_and_enqueue(command)
    return process


async def route_answer(store: LmdbStore, command: Any) -> Process[Any, Any]:
    identity = await store.lookup(TENANT, ROUTER.routing_key(command))
    assert identity is not None, "the answer must find its process by RFF+TN"
    return Process.from_identity(WF, store, identity)


async def outbox(store: LmdbStore) -> list[OutboxMessage]:
    return await store.pending(100, datetime(2100, 1, 1, tzinfo=UTC))


async def test_lfa_silence_fires_at_nine_and_nb_confirms(store: LmdbStore) -> None:
    process = await new_process(store, anmeldung(current_supplier=LFA))
    assert process.workflow_id.name == "gpke-nb"
    assert process.workflow_id.format_version == FormatVersion.parse("FV2504")
    (deadline,) = await store.deadlines_for_stream(process.stream_id)
    assert deadline.label == "lfa_answer" and deadline.due_at == berlin(2025, 6, 10, 9, 0)
    assert await store.due_deadlines(berlin(2025, 6, 10, 8, 59), 10) == []
    (due,) = await store.due_deadlines(berlin(2025, 6, 10, 9, 0), 10)

    events = await process.execute_timeout(due)
    assert events is not None
    assert [e.event_type for e in events] == ["gpke.lfa_deemed_to_agree", "gpke.anmeldung_decided"]
    assert await store.deadlines_for_stream(process.stream_id) == []
    assert kinds(await outbox(store)) == sorted([
        ("APERAK", "312", LFN), ("UTILMD", "55036", LFN), ("UTILMD", "55010", LFA),
        ("UTILMD", "55002", LFN), ("UTILMD", "55037", LFA),
    ])
    state = await process.state()
    assert state.status is Status.CONFIRMED and state.lfa_deemed


async def test_lfa_answer_routes_by_rff_tn_and_discharges_the_deadline(store: LmdbStore) -> None:
    process = await new_process(store, anmeldung(current_supplier=LFA))
    request = next(m for m in await outbox(store) if m.message_type == "UTILMD"
                   and m.payload["transactions"][0]["pid"] == "55010")
    answer = lfa_answer(request.payload["transactions"][0]["ide_ref"])
    routed = await route_answer(store, answer)
    assert routed.process_id == process.process_id

    await routed.execute_and_enqueue(answer)
    assert await store.deadlines_for_stream(process.stream_id) == []
    state = await process.state()
    assert state.status is Status.CONFIRMED and not state.lfa_deemed
    # A late timer firing (e.g. a worker that read it before the cancel) compensates nothing.


async def test_outbox_messages_are_caused_by_the_events_that_store_their_refs(store: LmdbStore) -> None:
    process = await new_process(store, anmeldung(current_supplier=LFA))
    envelopes = await store.load(process.stream_id)
    messages = await outbox(store)
    assert {m.causation_event_id for m in messages} == {envelopes[0].event_id}
    stored_refs = {
        ref["interchange_ref"]
        for env in envelopes for ref in env.payload.values()
        if isinstance(ref, dict) and "interchange_ref" in ref and "message_type" in ref
    }
    assert stored_refs == {m.payload["envelope"]["control_ref"] for m in messages}


async def test_business_keys_are_registered_in_the_same_write(store: LmdbStore) -> None:
    process = await new_process(store, anmeldung(current_supplier=LFA))
    for key in (transaction_key(LFN, "LFNTX000001"), malo_key(MALO, 0)):
        identity = await store.lookup(TENANT, key)
        assert identity is not None and identity.process_id == process.process_id
    # A second live process cannot take the same MaLo key: the registry guards the race.
    with pytest.raises(RegistryConflict):
        await new_process(store, anmeldung(ide_ref="LFNTX000002", interchange_ref="LFN2"))
    # The caller's lookup found a live process: the new Anmeldung is answered with E_0622 A06.
    competing = await new_process(
        store, anmeldung(
            ide_ref="LFNTX000002", interchange_ref="LFN2", competing_process=True,
            competing_start=START, competing_next_date="2025-06-20T00:00:00+02:00",
        )
    )
    assert (await competing.state()).status is Status.REJECTED


async def test_message_rejected_by_aperak_sets_no_frist_and_no_business_key(store: LmdbStore) -> None:
    process = await new_process(store, anmeldung(malo="51900000013", current_supplier=LFA))
    assert await store.deadlines_for_stream(process.stream_id) == []
    assert await store.lookup(TENANT, transaction_key(LFN, "LFNTX000001")) is None
    assert kinds(await outbox(store)) == [("APERAK", "313", LFN)]
    # The corrected resend with the same IDE starts a fresh process.
    again = await new_process(store, anmeldung(current_supplier=LFA, interchange_ref="LFN0605143002"))
    assert (await again.state()).status is Status.AWAITING_LFA


async def test_outbox_routes_our_own_ide_for_answers(store: LmdbStore) -> None:
    process = await new_process(store, anmeldung(current_supplier=LFA))
    for message in await outbox(store):
        if message.message_type == "UTILMD":
            ide = message.payload["transactions"][0]["ide_ref"]
            identity = await store.lookup(TENANT, ide_key(ide))
            assert identity is not None and identity.process_id == process.process_id


async def test_lfa_objection_end_to_end(store: LmdbStore) -> None:
    process = await new_process(store, anmeldung(pid="55077", current_supplier=LFA))
    request = next(m for m in await outbox(store) if m.message_type == "UTILMD"
                   and m.payload["transactions"][0]["pid"] == "55010")
    answer = lfa_answer(request.payload["transactions"][0]["ide_ref"], pid="55012", answer_code="A35")
    await (await route_answer(store, answer)).execute_and_enqueue(answer)
    assert await store.deadlines_for_stream(process.stream_id) == []
    decided = [m for m in await outbox(store) if m.message_type == "UTILMD"
               and m.payload["transactions"][0]["pid"] == "55080"]
    assert [m.payload["transactions"][0]["answer_code"] for m in decided] == ["A57"]
    assert (await process.state()).status is Status.REJECTED


async def test_abmeldung_before_christmas_end_to_end(store: LmdbStore) -> None:
    command = abmeldung(received_at="2025-12-23T10:00:00+01:00", zuordnungsende="2026-01-01T00:00:00+01:00")
    process = await new_process(store, command)
    envelopes = await store.load(process.stream_id)
    assert [e.event_type for e in envelopes] == ["gpke.abmeldung_received", "gpke.abmeldung_decided"]
    due = datetime.fromisoformat(envelopes[0].payload["fristen"]["due"]["decision"])
    assert due == berlin(2025, 12, 29, 6, 0)  # 24.12 no WT, 25./26.12 holidays, then a weekend
    assert kinds(await outbox(store)) == [("APERAK", "312", LFA), ("UTILMD", "55005", LFA)]
