"""The store writes each row as msgpack of its model's ``model_dump(mode="json")``, byte for byte.

``stores/_schema.py`` encodes some rows without pydantic (registry identities) and packs with a
reused packer; stored data must not drift from the declared models, or old stores would stop
matching new writes. Also: registry and label-cancel fast paths fail as typed as before and a
failed commit writes nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import msgpack
import pytest

from mako_actors import (
    Deadline,
    DeadlineId,
    DeserializationError,
    EventId,
    ExpectedVersion,
    InvalidArgument,
    ProcessIdentity,
    RegistryConflict,
    SerializationError,
)
from mako_actors.snapshot import Snapshot
from mako_actors.store import Commit, JournalEntry
from mako_actors.testing import OTHER_TENANT, T0, TENANT, deadline, envelope, identity, outbox_row
from stores import _schema
from stores._base import StoreBase
from stores._kv import KvTxn
from stores.lmdb import LmdbStore
from stores.memory import InMemoryStore


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.fixture(params=["lmdb", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBase]:
    opened: StoreBase = LmdbStore(tmp_path / "s") if request.param == "lmdb" else InMemoryStore()
    async with opened:
        yield opened


async def _rows(store: StoreBase, db: str) -> dict[bytes, bytes]:
    return await store._read(lambda txn: dict(txn.scan(db, b"")))


def test_pack_gives_packbs_bytes_on_every_thread_and_after_a_failure() -> None:
    values: list[Any] = [
        {"a": 1, "b": [1.5, None, True], "c": {"d": "ü" * 40}},
        {"bin": b"\x00\xff", "big": 2**63, "neg": -(2**63), "s": "x" * 70_000},
        [],
        "",
    ]
    for value in values:
        assert _schema.pack(value) == _packb(value)
    with pytest.raises(SerializationError, match="cannot encode dict"):
        _schema.pack({"when": object()})
    with pytest.raises(SerializationError):
        _schema.pack({"too big": 2**64})
    for value in values:  # the failed packs left nothing behind in the reused packer
        assert _schema.pack(value) == _packb(value)
    huge = {"state": "s" * (2 * 1024 * 1024)}
    assert _schema.pack(huge) == _packb(huge)
    assert not hasattr(_schema._PACKERS, "packer")  # its grown buffer is not kept
    assert _schema.pack(values[0]) == _packb(values[0])
    seen: list[bool] = []

    def other_thread() -> None:
        seen.extend(_schema.pack(v) == _packb(v) for v in values * 50)

    threads = [threading.Thread(target=other_thread) for _ in range(4)]
    for t in threads:
        t.start()
    for value in values * 50:
        assert _schema.pack(value) == _packb(value)
    for t in threads:
        t.join()
    assert seen == [True] * len(values) * 50 * 4


async def test_every_row_of_a_commit_is_its_models_json_dump(store: StoreBase) -> None:
    ident = identity()
    twin = ProcessIdentity.model_validate(ident.to_plain())  # equal, another object
    first, second = envelope(ident, 1, text="Grüße"), envelope(ident, 2)
    snap = Snapshot(
        stream_id=ident.stream_id, sequence=2, state_schema_version=3,
        workflow_name="contract", state={"n": [1, 2]}, taken_at=T0,
    )
    message = outbox_row(ident, first.event_id, T0)
    frist = deadline(ident, "frist", T0 + timedelta(days=1))
    result = await store.commit(
        Commit(
            stream_id=ident.stream_id,
            expected=ExpectedVersion.NO_STREAM,
            events=[first, second],
            outbox=[message],
            deadlines=[frist],
            snapshot=snap,
            registry=[("malo:51900000012", ident), ("tx:LFN1", ident), ("tx:LFN2", twin)],
            journal=[JournalEntry(tenant_id=TENANT, key="supply:5190", data={"from": "2025-06-05"})],
        )
    )
    stream = ident.stream_id.encode()
    events = await _rows(store, "events")
    assert events == {
        stream + b"\x00" + e.sequence.to_bytes(8, "big"): _packb(e.model_dump(mode="json"))
        for e in result.events
    }
    registry = await _rows(store, "registry")
    row = _packb(ident.model_dump(mode="json"))
    assert registry == {TENANT.bytes + k: row for k in (b"malo:51900000012", b"tx:LFN1", b"tx:LFN2")}
    [outbox] = (await _rows(store, "outbox")).values()
    assert outbox == _packb(message.model_copy(update={"position": 1}).model_dump(mode="json"))
    deadlines = await _rows(store, "deadlines")
    assert deadlines == {frist.deadline_id.bytes: _packb(frist.model_dump(mode="json"))}
    assert (await _rows(store, "snapshots")) == {stream: _packb(snap.model_dump(mode="json"))}
    [journal] = (await _rows(store, "journal")).values()
    assert journal == _packb({"from": "2025-06-05"})


async def test_a_registry_conflict_fails_the_whole_commit(store: StoreBase) -> None:
    theirs, mine = identity(), identity()
    await store.register(TENANT, "malo:51900000012", theirs)
    commit = Commit(
        stream_id=mine.stream_id,
        expected=ExpectedVersion.NO_STREAM,
        events=[envelope(mine)],
        outbox=[outbox_row(mine, envelope(mine).event_id, T0)],
        registry=[("tx:new", mine), ("malo:51900000012", mine)],
    )
    with pytest.raises(RegistryConflict, match=f"bound to {theirs.stream_id}, not {mine.stream_id}"):
        await store.commit(commit)
    assert await store.stream_version(mine.stream_id) == 0
    assert await store.outbox_count() == 0
    assert await store.lookup(TENANT, "tx:new") is None
    assert await store.lookup(TENANT, "malo:51900000012") == theirs
    # Binding a key to the process it is bound to already is a no-op, also twice in one commit.
    await store.commit(
        Commit(
            stream_id=theirs.stream_id, expected=ExpectedVersion.ANY, events=[envelope(theirs)],
            registry=[("malo:51900000012", theirs), ("malo:51900000012", theirs)],
        )
    )
    assert await store.lookup(TENANT, "malo:51900000012") == theirs
    other = identity(OTHER_TENANT)  # another tenant's key of the same name is its own
    await store.commit(
        Commit(
            stream_id=other.stream_id, expected=ExpectedVersion.ANY, events=[envelope(other)],
            registry=[("malo:51900000012", other)],
        )
    )
    assert await store.lookup(OTHER_TENANT, "malo:51900000012") == other


async def test_cancelling_by_label_removes_only_those_rows(store: StoreBase) -> None:
    ident, neighbour = identity(), identity()
    keep = deadline(ident, "aperak", T0)
    drop = [deadline(ident, "lfa-answer", T0 + timedelta(hours=h)) for h in (1, 2)]
    theirs = deadline(neighbour, "lfa-answer", T0)
    for d in (keep, *drop, theirs):
        await store.register_deadline(d)
    before = {db: await _rows(store, db) for db in ("deadlines", "deadlines_due", "deadlines_stream")}
    await store.commit(
        Commit(
            stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM, events=[envelope(ident)],
            cancel_deadline_labels=["lfa-answer", "unknown"],
        )
    )
    gone = {d.deadline_id.bytes for d in drop}
    after = {db: await _rows(store, db) for db in ("deadlines", "deadlines_due", "deadlines_stream")}
    assert after["deadlines"] == {k: v for k, v in before["deadlines"].items() if k not in gone}
    assert after["deadlines_due"] == {k: v for k, v in before["deadlines_due"].items() if k[-16:] not in gone}
    assert after["deadlines_stream"] == {
        k: v for k, v in before["deadlines_stream"].items() if k[-16:] not in gone
    }
    assert [d.label for d in await store.deadlines_for_stream(ident.stream_id)] == ["aperak"]
    assert [d.deadline_id for d in await store.deadlines_for_stream(neighbour.stream_id)] == [
        theirs.deadline_id
    ]


async def test_an_unreadable_deadline_row_fails_a_label_cancel_and_it_writes_nothing(
    store: StoreBase,
) -> None:
    ident = identity()
    bad = deadline(ident, "lfa-answer", T0)
    await store.register_deadline(bad)

    def corrupt(txn: KvTxn) -> None:
        txn.put("deadlines", bad.deadline_id.bytes, b"\xc1 not msgpack")

    await store._write(corrupt)
    with pytest.raises(DeserializationError, match="not valid msgpack"):
        await store.commit(
            Commit(
                stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM,
                events=[envelope(ident)], cancel_deadline_labels=["lfa-answer"],
            )
        )
    assert await store.stream_version(ident.stream_id) == 0
    # A row that is msgpack but not a deadline is reported when its label would match.
    await store._write(lambda txn: txn.put("deadlines", bad.deadline_id.bytes, _packb({"label": 3})))
    with pytest.raises(DeserializationError, match="stored deadline does not decode"):
        await store.commit(
            Commit(
                stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM,
                events=[envelope(ident)], cancel_deadline_labels=["lfa-answer"],
            )
        )
    assert await store.stream_version(ident.stream_id) == 0


def test_a_stream_ids_owner_is_read_as_uuid_parsing_reads_it() -> None:
    for _ in range(200):
        tenant, process = uuid.uuid4(), uuid.uuid4()
        for text in (f"process/{tenant}/{process}", f"process/{str(tenant).upper()}/{process.hex}"):
            assert _schema._owner(text) == (tenant.int, process.int)
    for _ in range(200):
        # A first event's ids spare the parse only when they spell the stream id; any other
        # event (another process's, a non-canonical stream id's) leaves it to the parse.
        ident, other = identity(), identity()
        tenant, process = ident.tenant_id, ident.process_id
        upper = f"process/{str(tenant).upper()}/{process}"
        for text, event in (
            (ident.stream_id, envelope(ident)), (other.stream_id, envelope(ident)), (upper, envelope(ident))
        ):
            owner = (tenant.int, process.int) if text != other.stream_id else (
                other.tenant_id.int, other.process_id.int
            )
            assert _schema._owner(text, event.__dict__) == owner
    for bad in ("process/x/y", f"process/{uuid.uuid4()}", f"process/{uuid.uuid4()}/{'g' * 32}"):
        with pytest.raises(InvalidArgument, match="is not a stream id"):
            _schema._owner(bad)


async def test_deadline_rows_are_their_models_json_dump(store: StoreBase) -> None:
    ident = identity()
    berlin = timezone(timedelta(hours=2))
    rows = [
        deadline(ident, "frist", T0 + timedelta(microseconds=250_000)),
        Deadline(
            deadline_id=DeadlineId.new(), stream_id=ident.stream_id, process_id=ident.process_id,
            tenant_id=TENANT, workflow_id=ident.workflow_id, label="lfa", due_at=T0.astimezone(berlin),
            payload={"at": T0, "n": [1, 2.5], "id": ident.process_id}, causation_event_id=EventId.new(),
        ),
        # Built without validation (a due time left in Berlin time): dumped through pydantic.
        Deadline.model_construct(
            deadline_id=DeadlineId.new(), stream_id=ident.stream_id, process_id=ident.process_id,
            tenant_id=TENANT, workflow_id=ident.workflow_id, label="raw", due_at=T0.astimezone(berlin),
            payload={}, causation_event_id=None,
        ),
    ]
    for d in rows:
        await store.register_deadline(d)
    stored = await _rows(store, "deadlines")
    assert stored == {d.deadline_id.bytes: _packb(d.model_dump(mode="json")) for d in rows}


async def test_a_deadline_row_in_another_stored_form_is_cancelled_by_label_too(store: StoreBase) -> None:
    ident = identity()
    frist = deadline(ident, "lfa-answer", T0 + timedelta(microseconds=500_000))
    await store.register_deadline(frist)
    variant = {**frist.to_plain(), "due_at": "2025-06-05T14:30:00.5+02:00"}  # same instant
    await store._write(lambda txn: txn.put("deadlines", frist.deadline_id.bytes, _packb(variant)))
    await store.commit(
        Commit(
            stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM, events=[envelope(ident)],
            cancel_deadline_labels=["lfa-answer"],
        )
    )
    for db in ("deadlines", "deadlines_due", "deadlines_stream"):
        assert await _rows(store, db) == {}, db


async def test_cancelling_and_replacing_deadlines_by_id_leaves_no_index_rows(store: StoreBase) -> None:
    ident, other = identity(), identity()
    first = deadline(ident, "lfa-answer", T0)
    theirs = deadline(other, "lfa-answer", T0)
    await store.register_deadline(first)
    await store.register_deadline(theirs)
    moved = first.model_copy(update={"due_at": T0 + timedelta(days=2, microseconds=7)})
    await store.register_deadline(moved)  # same id, new due time: the old index rows go
    assert [d.due_at for d in await store.deadlines_for_stream(ident.stream_id)] == [moved.due_at]
    assert len(await _rows(store, "deadlines_due")) == 2
    with pytest.raises(InvalidArgument, match=f"belongs to {other.stream_id}, not {ident.stream_id}"):
        await store.commit(
            Commit(
                stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM,
                events=[envelope(ident)], cancel_deadline_ids=[theirs.deadline_id],
            )
        )
    await store.commit(
        Commit(
            stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM,
            events=[envelope(ident)], cancel_deadline_ids=[moved.deadline_id],
        )
    )
    theirs_id = theirs.deadline_id.bytes
    assert await _rows(store, "deadlines") == {theirs_id: _packb(theirs.model_dump(mode="json"))}
    assert [k[-16:] for k in await _rows(store, "deadlines_due")] == [theirs_id]
    assert [k[-16:] for k in await _rows(store, "deadlines_stream")] == [theirs_id]


class _Text(str):
    """A ``str`` subclass in a payload: not exactly ``str``, so pydantic dumps the payload."""


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"total": 7, "text": "Grüße", "ok": True, "none": None, "neg": -(2**63)},
        {"nested": {"list": [1, "a", None, False, {"deep": [[], {}]}]}},
        {"float": 1.5, "list": [0.25, -3.0]},
        {"at": T0, "day": T0.date(), "id": uuid.UUID(int=7), "tuple": (1, "a")},
        {"sub": _Text("x"), "list": [T0]},
        {"deep": [[[[[[[[[[1]]]]]]]]]]},
    ],
)
async def test_an_outbox_rows_payload_is_stored_as_pydantic_dumps_it(
    store: StoreBase, payload: dict[str, Any]
) -> None:
    # ``OutboxMessage.to_plain`` keeps a plain payload as it is and lets pydantic dump any
    # other: the stored row must be the model's JSON dump byte for byte either way.
    ident = identity()
    event = envelope(ident, 1)
    message = outbox_row(ident, event.event_id, T0).model_copy(update={"payload": payload})
    commit = Commit(
        stream_id=ident.stream_id, expected=ExpectedVersion.NO_STREAM, events=[event], outbox=[message]
    )
    await store.commit(commit)
    [row] = (await _rows(store, "outbox")).values()
    assert row == _packb(message.model_copy(update={"position": 1}).model_dump(mode="json"))
    assert _packb(message.to_plain()) == _packb(message.model_dump(mode="json"))


_COUNTED = [b"a", b"a\x00", b"a\x00\x01", b"a\x01", b"ab", b"b"]
_RANGES = [
    (b"a", b"b"), (b"a\x00", b"a\x01"), (b"", b"\xff"), (b"c", b"d"),
    (b"a\x00\x01", b"a\x00\x02"), (b"b", b"a"),
]


async def test_count_range_counts_what_scan_yields_in_write_and_read_transactions(
    store: StoreBase,
) -> None:
    def expected(keys: list[bytes]) -> list[int]:
        return [sum(1 for k in keys if start <= k < stop) for start, stop in _RANGES]

    def write(txn: KvTxn) -> list[list[int]]:
        for key in _COUNTED:
            txn.put("journal", key, b"")
        counted = [txn.count_range("journal", start, stop) for start, stop in _RANGES]
        txn.put("journal", b"a\x00\x00", b"")  # a write after a count (LMDB: through its cursor)
        return [counted, [txn.count_range("journal", start, stop) for start, stop in _RANGES]]

    assert await store._write(write) == [expected(_COUNTED), expected([*_COUNTED, b"a\x00\x00"])]
    read = await store._read(lambda txn: [txn.count_range("journal", a, b) for a, b in _RANGES])
    assert read == expected([*_COUNTED, b"a\x00\x00"])
    assert read == [
        await store._read(lambda txn, a=a, b=b: sum(1 for _ in txn.scan("journal", a, b)))
        for a, b in _RANGES
    ]
