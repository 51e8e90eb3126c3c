"""Ids, format versions, workflow ids and errors: determinism and clear errors on bad input."""

from __future__ import annotations

import pickle
import uuid

import pytest
from pydantic import BaseModel

from mako_actors import (
    ConversationId,
    CorrelationId,
    EngineError,
    EventId,
    FormatVersion,
    InvalidArgument,
    ProcessId,
    StoreError,
    StreamId,
    TenantId,
    VersionConflict,
    WorkflowError,
    WorkflowId,
)


def test_tenant_id_is_uuid5_of_the_party_id() -> None:
    a = TenantId.from_party_id("9904231000007")
    assert a == TenantId.from_party_id("9904231000007")
    assert a.version == 5
    assert a != TenantId.from_party_id("9900000002009")


@pytest.mark.parametrize("bad", ["990423100000", "99042310000071", "99O4231000007", ""])
def test_tenant_id_rejects_malformed_party_ids(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="13-digit"):
        TenantId.from_party_id(bad)


def test_correlation_id_is_deterministic_per_interchange_ref() -> None:
    ref = "9900000001001:LFN0605143001"
    assert CorrelationId.from_interchange_ref(ref) == CorrelationId.from_interchange_ref(ref)
    assert CorrelationId.from_interchange_ref(ref).version == 5
    with pytest.raises(InvalidArgument):
        CorrelationId.from_interchange_ref("  ")


def test_random_ids_and_malformed_ids() -> None:
    assert ProcessId.new() != ProcessId.new()
    assert ProcessId.new().version == 7
    with pytest.raises(InvalidArgument, match="ProcessId"):
        ProcessId("not-a-uuid")
    pid = ProcessId.new()
    assert pickle.loads(pickle.dumps(pid)) == pid
    assert type(pickle.loads(pickle.dumps(pid))) is ProcessId


def test_stream_id_shape() -> None:
    tenant, process = TenantId.from_party_id("9900000002009"), ProcessId.new()
    stream = StreamId.for_process(tenant, process)
    assert stream == f"process/{tenant}/{process}"
    assert stream.tenant_id == tenant and stream.process_id == process
    with pytest.raises(InvalidArgument, match="StreamId"):
        StreamId("process/abc/def")


def test_ids_in_pydantic_models_round_trip_as_strings() -> None:
    class M(BaseModel):
        p: ProcessId
        s: StreamId
        w: WorkflowId
        f: FormatVersion

    tenant, process = TenantId.from_party_id("9900000002009"), ProcessId.new()
    m = M(p=process, s=StreamId.for_process(tenant, process), w=WorkflowId.new("gpke", "FV2510"), f="FV2504")
    plain = m.model_dump(mode="json")
    assert plain["p"] == str(process) and plain["w"] == "gpke@FV2025-10-01" and plain["f"] == "FV2025-06-06"
    again = M.model_validate(plain)
    assert again == m and type(again.p) is ProcessId


def test_known_releases_resolve_to_their_go_live_date() -> None:
    from datetime import date

    assert FormatVersion.parse("FV2504") == FormatVersion.parse("FV2025-06-06")
    assert FormatVersion.parse("FV2025-06-06").short == "FV2504"
    assert FormatVersion.in_force(date(2025, 6, 6)).short == "FV2504"
    assert FormatVersion.in_force(date(2025, 9, 30)).short == "FV2504"
    assert FormatVersion.in_force(date(2025, 10, 1)).short == "FV2510"
    with pytest.raises(InvalidArgument, match="no known format version"):
        FormatVersion.in_force(date(2024, 1, 1))


def test_format_versions_parse_and_order() -> None:
    assert FormatVersion.parse("FV2510") == FormatVersion.parse("FV2025-10-01")
    assert FormatVersion.parse("FV2504") < FormatVersion.parse("FV2510") < FormatVersion.parse("FV2026-04-01")
    assert str(FormatVersion.parse("FV2510")) == "FV2025-10-01"
    assert FormatVersion.parse("FV2025-10-01").short == "FV2510"


@pytest.mark.parametrize("bad", ["2025-10-01", "FV25-10", "FV2025-13-01", "FV2513", "fv2510", "FV2025-02-30"])
def test_malformed_format_versions_are_named_in_the_error(bad: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        FormatVersion.parse(bad)
    assert repr(bad) in str(info.value)


def test_workflow_id_parse_and_errors() -> None:
    wf = WorkflowId.parse("gpke-lfw24@FV2510")
    assert wf.name == "gpke-lfw24" and str(wf) == "gpke-lfw24@FV2025-10-01"
    for bad in ("gpke", "Gpke@FV2510", "gpke@FV25", "a@b@c"):
        with pytest.raises(InvalidArgument):
            WorkflowId.parse(bad)


@pytest.mark.parametrize(
    "err",
    [
        VersionConflict("process/x", "no_stream", 3),
        WorkflowError.rejected("negative amount"),
        StoreError("disk full", transient=True),
        InvalidArgument("bad"),
    ],
)
def test_errors_survive_plain_data_and_pickling_as_the_same_class(err: EngineError) -> None:
    for again in (EngineError.from_plain(err.to_plain()), pickle.loads(pickle.dumps(err))):
        assert type(again) is type(err)
        assert str(again) == str(err)
        assert again.transient == err.transient


def test_version_conflict_is_transient_workflow_error_is_not() -> None:
    assert VersionConflict("s", 1, 2).transient
    assert not WorkflowError.rejected("no").transient
    assert isinstance(InvalidArgument("x"), ValueError)
    assert uuid.UUID(str(ProcessId.new()))


def test_fresh_ids_carry_uuids_canonical_string_across_pools() -> None:
    # ``new()`` draws from a pool of 256 whose strings are built all at once: every one must
    # be exactly what ``uuid`` prints for the value (and the value a version-7 UUID).
    for cls in (EventId, CorrelationId, ConversationId, ProcessId):
        for made in [cls.new() for _ in range(700)]:
            assert str(made) == str(uuid.UUID(int=made.int))
            assert made.version == 7 and made.variant == uuid.RFC_4122
            assert cls(str(made)) == made
