"""The workflow builds its references, payloads, events and states without re-validating values it
already validated. These tests hold those fast paths to the pydantic models they skip: what
they build must be what validation would accept and dump byte for byte the same."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
from gpke_support import LFA, LFN, MALO, NB, anmeldung
from pydantic import TypeAdapter

from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.errors import InvalidArgument
from mako_actors.gpke import GpkeNbWorkflow, GpkeState, Status
from mako_actors.gpke._models import built, json_value
from mako_actors.gpke.payloads import (
    AperakError,
    AperakPayload,
    ContrlMessageError,
    ContrlPayload,
    OutboundRef,
    UtilmdPayload,
    UtilmdTransactionPayload,
    aperak_payload,
    build_contrl_payload,
    contrl_payload,
    derive_ref,
    derive_request_refs,
    utilmd_payload,
)
from mako_actors.gpke.supply import SupplyFact, fact_entry
from mako_actors.outbox import PendingOutbox, _is_plain, has_plain_payload
from mako_actors.replay import _all_events, load_master_data, replay_directory
from mako_actors.workflow import WorkflowOutput
from stores.lmdb import LmdbStore

_ZONES = [UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("Europe/London"), timezone(timedelta(hours=-3))]
_INSTANTS = [
    datetime(2025, 6, 5, 14, 30, tzinfo=zone) + extra
    for zone in _ZONES
    for extra in (timedelta(0), timedelta(microseconds=500_000), timedelta(days=180, microseconds=7))
]

_BERLIN = ZoneInfo("Europe/Berlin")
_START = datetime(2025, 7, 1, tzinfo=_BERLIN)
_MALO = "51900000012"
_TRANCHE = "49825979199"
_ANMELDUNG = {"trigger_pid": "55001", "trigger_reason": "E03", "trigger_detail": "ZW4"}
_GENERATING = {"trigger_pid": "55077", "trigger_reason": "E03", "trigger_detail": "ZW1"}
# What the workflow sends, per PID (see ``GpkeNbWorkflow``), with other instants and zones.
_TRANSACTIONS: dict[str, list[dict[str, Any]]] = {
    "55002": [{"malo": _MALO, "start": _START, "answer_code": "A51", "answer_ebd": "E_0623",
               "request_ref": "LFNTX1", "measurement": "ZW7", **_ANMELDUNG}],
    "55003": [
        {"malo": _MALO, "start": _START, "answer_code": "A50", "answer_ebd": "E_0623", "request_ref": "X",
         "lfa_answer_code": "A32", "lfa_answer_ebd": "E_0624", "other_party_id": LFA, **_ANMELDUNG},
        {"start": _START, "answer_code": "A06", "answer_ebd": "E_0622", "request_ref": "X",
         "processing_start": datetime(2025, 6, 30, 22, tzinfo=UTC),
         "next_processing_date": datetime(2025, 6, 6, 11, 0, 0, 5, tzinfo=UTC), **_ANMELDUNG},
    ],
    "55010": [
        {"malo": _MALO, "end": _START, "anmeldung_uet": date(2025, 6, 5), "other_party_id": LFN,
         "customer_name": ("Beispiel", "Paula", "", "", "Frau", "Z01"), "trigger_pid": "55001",
         "trigger_reason": "E01", "trigger_detail": "ZAP"},
        # GV2 (ZW1) is for a Tranche: LOC+Z21 and STS+7 ZW5
        {"tranche": _TRANCHE, "end": _START, "anmeldung_uet": date(2025, 6, 5), "other_party_id": LFN,
         "customer_name": ("Solar GmbH", "", "", "", "", "Z02"), **_GENERATING},
    ],
    "55036": [{"malo": _MALO, "start": _START, "request_ref": "LFNTX1", "other_party_id": LFA, **_ANMELDUNG}],
    "55037": [{"malo": _MALO, "end": _START, **_ANMELDUNG}],
    "55038": [{"malo": _MALO, "start": _START, "other_party_id": LFN, **_ANMELDUNG}],
    "55078": [{"malo": _MALO, "tranche": _TRANCHE, "start": _START, "answer_code": "A58",
               "answer_ebd": "E_0623", "request_ref": "X", "tranche_basis": "ZD1", "tranche_percent": "37.5",
               **_GENERATING}],
    "55080": [
        {"start": _START, "answer_code": "A45", "answer_ebd": "E_0622", "request_ref": "X",
         "processing_start": _START, "next_processing_date": datetime(2025, 6, 6, 11, tzinfo=_BERLIN),
         **_GENERATING},
        {"tranche": _TRANCHE, "start": _START, "answer_code": "A57", "answer_ebd": "E_0623",
         "request_ref": "X", "lfa_answer_code": "A39", "lfa_answer_ebd": "E_0624", "other_party_id": LFA,
         **_GENERATING},
    ],
    "55005": [{"end": _START, "answer_code": "A11", "answer_ebd": "E_0607", "request_ref": "X",
               "trigger_pid": "55004", "trigger_reason": "Z33"}],
}


def _dump(model: Any) -> dict[str, Any]:
    result: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return result


@pytest.mark.parametrize("at", _INSTANTS)
@pytest.mark.parametrize("pid", sorted(_TRANSACTIONS))
def test_unvalidated_utilmd_equals_the_validated_one_and_dumps_the_same(at: datetime, pid: str) -> None:
    ref = OutboundRef.derive(f"seed-{pid}", 3, "UTILMD", LFA, pid)
    for transaction in _TRANSACTIONS[pid]:
        checked = UtilmdPayload.build(ref, NB, at, **dict(transaction))
        fast = UtilmdPayload.build(ref, NB, at, validate=False, **dict(transaction))
        assert fast == checked
        assert fast.to_payload() == _dump(checked) == checked.to_payload()
        assert list(fast.to_payload()) == list(_dump(checked))  # the same key order (msgpack bytes)
        assert UtilmdPayload.model_validate(fast.to_payload()) == checked
        plain = utilmd_payload(ref, NB, at, **dict(transaction))  # what the workflow stores
        assert plain == _dump(checked)
        assert msgpack.packb(plain) == msgpack.packb(_dump(checked))  # key order and types too


@pytest.mark.parametrize("at", _INSTANTS)
def test_unvalidated_aperak_equals_the_validated_one(at: datetime) -> None:
    ref = OutboundRef.derive("seed", 0, "APERAK", LFN)
    for errors, message_ref in (((), None), ((AperakError(code="Z29", text="DTM+92 missing"),), "M1")):
        values: dict[str, Any] = {
            "interchange_ref": "LFN1", "referenced_date": at - timedelta(minutes=5),
            "document_number": "D1", "ide_ref": "T1", "errors": errors, "message_ref": message_ref,
        }
        checked = AperakPayload.build(ref, NB, at, **values)
        fast = AperakPayload.build(ref, NB, at, validate=False, **values)
        assert fast == checked and fast.to_payload() == _dump(checked)
        assert list(fast.to_payload()) == list(_dump(checked))
        plain = aperak_payload(ref, NB, at, **values)
        assert msgpack.packb(plain) == msgpack.packb(_dump(checked)) and plain == _dump(checked)


def test_plain_utilmd_names_unknown_fields_and_dumps_str_subclasses_as_text() -> None:
    ref = OutboundRef.derive("s", 0, "UTILMD", LFN, "55002")
    with pytest.raises(InvalidArgument, match=r"unknown fields.*'strat'"):
        utilmd_payload(ref, NB, _INSTANTS[0], strat=None)

    class Code(StrEnum):
        A51 = "A51"

    values = {**_TRANSACTIONS["55002"][0], "answer_code": Code.A51}
    plain = utilmd_payload(ref, NB, _INSTANTS[0], **values)
    checked = UtilmdPayload.build(ref, NB, _INSTANTS[0], validate=False, **values)
    assert msgpack.packb(plain) == msgpack.packb(checked.to_payload())
    assert type(plain["transactions"][0]["answer_code"]) is str


def test_contrl_payload_dumps_as_pydantic_does() -> None:
    payload = build_contrl_payload(
        interchange_ref="LFN1", interchange_sender=LFN, interchange_recipient=NB, accepted=False,
        prepared_at=datetime(2025, 6, 5, 12, 30, 0, 123, tzinfo=UTC), error_code="26", error_segment="UNB",
    )
    assert payload.to_payload() == _dump(payload)
    assert list(payload.to_payload()) == list(_dump(payload))


_UCM = ContrlMessageError(message_ref="M1", message_type="UTILMD:D:11A:UN:S2.1", code="29", segment="UNT")


@pytest.mark.parametrize("at", _INSTANTS)
@pytest.mark.parametrize(
    "case",
    [
        {"accepted": True},
        {"accepted": False, "error_code": "7", "answered_by": NB, "interchange_recipient": "9900000000009"},
        {"accepted": False, "error_code": "26", "variant": "ab" * 32},
        {"accepted": False, "message_errors": (_UCM, _UCM.model_copy(update={"segment": "UNH"}))},
        {"accepted": True, "interchange_sender": "4012345000023"},  # a BDEW/GS1 code: other qualifiers
    ],
)
def test_plain_contrl_stores_the_bytes_of_the_model(at: datetime, case: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "interchange_ref": "LFN1", "interchange_sender": LFN, "interchange_recipient": NB, "prepared_at": at,
    } | case
    plain = contrl_payload(**values)  # what ingestion stores (one per interchange)
    checked = build_contrl_payload(**values).to_payload()
    assert plain == checked
    assert msgpack.packb(plain) == msgpack.packb(checked)  # key order and types too
    assert contrl_payload(**values) == plain  # the cached stamp of an equal call changes nothing


def test_predicted_request_references_are_those_of_our_references_and_the_workflow() -> None:
    from mako_actors._partition import CANDIDATES, our_references

    seed = "9900000010002:AN1:M2:T3"
    pairs = derive_request_refs(seed, CANDIDATES)
    assert pairs == our_references("9900000010002", "AN1", "M2", "T3")
    assert pairs == [(derive_ref(seed, i, "IDE"), derive_ref(seed, i, "0020")) for i in range(CANDIDATES)]
    sent = OutboundRef.derive(seed, 2, "UTILMD", LFA, "55010")  # what the workflow sends as index 2
    assert pairs[2] == (sent.ide_ref, sent.interchange_ref)


def test_derived_references_keep_their_formula() -> None:
    """Stored histories hold these references: they must never change."""
    for seed, index in (("9900000001001:LFN1:M1:TX1", 0), ("s", 17)):
        for kind, letter in (("0020", "N"), ("0062", "M")):  # 13 base-32 characters: 65 bits
            raw = hashlib.sha256(f"{seed}|{index}|{kind}".encode()).digest()
            assert derive_ref(seed, index, kind) == letter + base64.b32encode(raw).decode()[:13]  # type: ignore[arg-type]
        for kind, letter in (("1004", "D"), ("IDE", "T")):  # 19 hex digits: 76 bits
            digest = hashlib.sha256(f"{seed}|{index}|{kind}".encode()).hexdigest().upper()
            assert derive_ref(seed, index, kind) == letter + digest[:19]  # type: ignore[arg-type]
        ref = OutboundRef.derive(seed, index, "UTILMD", LFN, "55002")
        assert (ref.interchange_ref, ref.message_ref, ref.document_number, ref.ide_ref) == tuple(
            derive_ref(seed, index, kind) for kind in ("0020", "0062", "1004", "IDE")
        )
    # as computed since the 0020 has 65 bits (before: 52, hex, "N9EE711A26FE86")
    assert derive_ref("CONTRL:9900000001001:LFN1", 0, "0020") == "NT3TRDITP5BXEV"


def test_derived_refs_are_valid_models() -> None:
    for message_type, pid in (("UTILMD", "55002"), ("APERAK", None)):
        ref = OutboundRef.derive("s", 7, message_type, LFN, pid)  # type: ignore[arg-type]
        assert OutboundRef.model_validate(ref.model_dump()) == ref
        assert ref.model_dump() == OutboundRef.model_validate(ref.model_dump()).model_dump()


def test_built_names_missing_and_unknown_fields() -> None:
    with pytest.raises(InvalidArgument, match="'pid' missing"):
        built(UtilmdTransactionPayload, {"ide_ref": "T1"})
    with pytest.raises(InvalidArgument, match=r"unknown fields.*'start_date'"):
        built(UtilmdTransactionPayload, {"ide_ref": "T1", "pid": "55002", "start_date": None})
    with pytest.raises(InvalidArgument, match="unknown fields"):
        UtilmdPayload.build(
            OutboundRef.derive("s", 0, "UTILMD", LFN, "55002"), NB, _INSTANTS[0], validate=False, strat=None
        )
    # a field with a default factory gets its own fresh value, as validation gives it
    first, second = (built(PendingOutbox, {"message_type": "APERAK", "recipient": LFN}) for _ in range(2))
    assert first == PendingOutbox(message_type="APERAK", recipient=LFN) and first.payload == {}
    assert first.payload is not second.payload
    tx = built(UtilmdTransactionPayload, {"pid": "55002", "ide_ref": "T1"})
    assert tx == UtilmdTransactionPayload(ide_ref="T1", pid="55002")
    assert tx.model_dump(exclude_none=True) == {"ide_ref": "T1", "pid": "55002"}
    # every field given (the fast path): the values as given, nothing from a factory
    payload = {"a": 1}
    values = {"message_type": "APERAK", "recipient": LFN, "payload": payload, "not_before": None}
    full = built(PendingOutbox, values)
    assert full == PendingOutbox(**values) and full.payload is payload
    assert full.__pydantic_fields_set__ == PendingOutbox(**values).__pydantic_fields_set__
    with pytest.raises(InvalidArgument, match=r"unknown fields.*'payloads'"):
        built(PendingOutbox, {"message_type": "APERAK", "recipient": LFN, "payloads": {}, "not_before": None})


class _Recording(GpkeNbWorkflow):
    """The workflow, keeping every (state, command, output) it decided."""

    def __init__(self) -> None:
        super().__init__()
        self.decided: list[tuple[GpkeState, Any, WorkflowOutput]] = []

    def handle(self, state: GpkeState, command: Any) -> WorkflowOutput:
        output = super().handle(state, command)
        self.decided.append((state, command, output))
        return output


async def _replayed(tmp_path: Path, defects: float, workflow: GpkeNbWorkflow) -> tuple[list[Any], list[Any]]:
    archive = tmp_path / "archive"
    generate_archive(archive, ArchiveSpec(days=3, processes=150, seed=5, defects=defects, competing=0.1))
    store = tmp_path / "store"
    master = load_master_data(archive / "master.json")
    await replay_directory(archive, store, tenants=[NB], master_data=master, workflow=workflow)
    async with LmdbStore(store) as lmdb:
        return await _all_events(lmdb), await lmdb.outbox_messages(limit=10**6)


@pytest.mark.parametrize("defects", [0.0, 0.2])
def test_what_a_replay_decides_and_stores_is_what_validation_accepts(tmp_path: Path, defects: float) -> None:
    """Replay generated traffic (answers, rejections, competing Anmeldungen, broken messages).

    In memory: every event, outbox entry and output the workflow built without validation
    equals its validated twin, and the states ``apply`` returns equal a fresh fold. Stored:
    every event payload decodes into its event model and dumps back unchanged, every outbox
    payload validates as its payload model and dumps back unchanged.
    """
    recording = _Recording()
    events, outbox = asyncio.run(_replayed(tmp_path, defects, recording))
    payload_models: dict[str, Any] = {"UTILMD": UtilmdPayload, "APERAK": AperakPayload}
    assert len(recording.decided) > 200
    fresh = GpkeNbWorkflow()
    for state, _, output in recording.decided:
        assert WorkflowOutput(**dict(output)) == output
        for event in output.events:
            assert type(event).model_validate(event.model_dump()) == event
        for pending in output.outbox:
            assert PendingOutbox.model_validate(pending.model_dump()) == pending
            # the plain payload is what the model's dump would be, byte for byte
            dumped = _dump(payload_models[pending.message_type].model_validate(pending.payload))
            assert msgpack.packb(dumped) == msgpack.packb(pending.payload)
            # marked plain (its row is stored without a check), so it must be plain data
            assert has_plain_payload(pending) and _is_plain(pending.payload, 0)
        for _, entry in output.journal:
            assert msgpack.packb(_dump(SupplyFact.model_validate(entry))) == msgpack.packb(entry)
        folded = state
        for event in output.events:
            again = fresh.apply(folded, event)
            folded = recording.apply(folded, event)  # the state handle folded, if remembered
            assert folded == again == GpkeState.model_validate(again.model_dump())
    wf = GpkeNbWorkflow()
    streams: dict[Any, list[Any]] = {}
    for envelope in events:
        if envelope.event_type.startswith("gpke."):
            event = wf.decode_event(envelope)
            assert event.model_dump(mode="json") == envelope.payload
            streams.setdefault(envelope.stream_id, []).append(event)
    assert len(streams) > 100
    for stream in streams.values():
        state = wf.initial_state()
        for event in stream:
            state = wf.apply(state, event)
            assert GpkeState.model_validate(state.model_dump()) == state
    models = {"UTILMD": UtilmdPayload, "APERAK": AperakPayload, "CONTRL": ContrlPayload}
    assert {m.message_type for m in outbox} == {"UTILMD", "APERAK", "CONTRL"}
    for message in outbox:
        model = models[message.message_type]
        assert _dump(model.model_validate(message.payload)) == message.payload


def test_apply_returns_the_state_handle_folded_only_for_the_same_objects() -> None:
    wf = GpkeNbWorkflow()
    state = wf.initial_state()
    output = wf.handle(state, anmeldung(current_supplier=LFA))
    first, second = output.events[0], output.events[1]
    after_first = wf.apply(state, first)
    assert after_first.status is Status.NEW and after_first.malo == MALO
    # another (equal) state object is folded afresh, with an equal result
    copy = GpkeState.model_validate(state.model_dump())
    assert wf.apply(copy, first) == after_first and wf.apply(copy, first) is not after_first
    assert wf.apply(after_first, second).status is Status.AWAITING_LFA


@pytest.mark.parametrize("at", _INSTANTS)
def test_journal_entries_dump_as_pydantic_does(at: datetime) -> None:
    """``SupplyFact.to_entry`` builds the journal entry directly; the stored bytes must be
    those of ``model_dump(mode="json", exclude_none=True)``."""
    facts = [
        SupplyFact(kind="claimed", supplier=LFN, at=at, process="s", due=at + timedelta(microseconds=3)),
        SupplyFact(kind="started", supplier=LFN, at=at, process="s"),
        SupplyFact(kind="released", process="s"),
        SupplyFact(kind="assigned", supplier=LFA, until=at),
        built(SupplyFact, {"kind": "ended", "supplier": LFN, "at": at, "process": "p"}),
    ]
    for fact in facts:
        entry = fact.to_entry()
        assert msgpack.packb(entry) == msgpack.packb(_dump(fact)) and entry == _dump(fact)
        # what the workflow writes without building the fact
        given = {name: value for name, value in fact.__dict__.items() if name != "kind" and value is not None}
        direct = fact_entry(fact.kind, **given)
        assert msgpack.packb(direct) == msgpack.packb(entry)


def test_plain_payloads_of_equal_instants_in_other_zones_keep_their_own_offsets() -> None:
    """Headers reuse the dumped instant of the previous payload only for the very same object:
    an equal instant in another zone dumps with its own offset, as the model does."""
    ref = OutboundRef.derive("s", 0, "APERAK", LFN)
    utc = datetime(2025, 6, 5, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "interchange_ref": "LFN1", "referenced_date": utc, "document_number": "D1", "ide_ref": "T1"
    }
    for at in (utc, utc.astimezone(_BERLIN), utc, datetime(2025, 6, 5, 12, 0, tzinfo=UTC)):
        plain = aperak_payload(ref, NB, at, **values)
        assert plain == AperakPayload.build(ref, NB, at, **values).to_payload()
    berlin = aperak_payload(ref, NB, utc.astimezone(_BERLIN), **values)
    assert berlin["document_date"] == "2025-06-05T14:00:00+02:00"
    assert aperak_payload(ref, NB, utc, **values)["document_date"] == "2025-06-05T12:00:00Z"


def test_dumped_instants_are_reused_only_for_the_same_zone_and_fold() -> None:
    """Instants are dumped once and their text reused; equal instants in other zones, and the
    two wall-equal instants of the hour Berlin repeats in October, keep texts of their own."""
    first = datetime(2025, 10, 26, 2, 30, tzinfo=_BERLIN)  # CEST, +02:00
    second = first.replace(fold=1)  # the repeated 02:30, CET, +01:00
    start = datetime(2025, 7, 1, tzinfo=_BERLIN)
    same = [start.astimezone(UTC), start.astimezone(timezone(timedelta(hours=2)))]
    assert all(value == start for value in same)
    values = [first, second, start, *same]
    dumped = [TypeAdapter(datetime).dump_python(value, mode="json") for value in values]
    assert len(set(dumped)) == 4  # +02:00 written by the Berlin zone or a fixed one is one text
    for _ in range(2):  # the second round is answered from the cache
        assert [json_value(value) for value in values] == dumped
