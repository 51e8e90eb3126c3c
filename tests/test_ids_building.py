"""Ids built without their constructor (``new``, ``_from_int``, v5) are the same as constructed ones.

``ids._fast_id`` fills a slots twin and assigns ``__class__``; these tests pin that the result
is indistinguishable from ``cls(text)``: type, value, immutability, hashing, ordering against
plain ``uuid.UUID``, copying, pickling and the stored (text) form.
"""

from __future__ import annotations

import copy
import pickle
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest

from mako_actors import ids
from mako_actors.envelope import EventEnvelope, PlainEnvelopeDecoder
from mako_actors.ids import (
    CausationId,
    ConversationId,
    CorrelationId,
    DeadlineId,
    EventId,
    OutboxMessageId,
    ProcessId,
    StreamId,
    TenantId,
)
from mako_actors.partitions import partition_of, routed_process_id, routing_slot
from mako_actors.version import WorkflowId

_TENANT = TenantId.from_party_id("9904231000007")
_EVENT = EventId("0b7e9d34-1c2a-4f6e-9a8b-7c6d5e4f3a21")

# Every way the engine makes an id without parsing one.
_BUILDERS: list[tuple[str, Callable[[], uuid.UUID]]] = [
    ("new", ProcessId.new),
    ("new-event", EventId.new),
    ("from-int", lambda: CausationId._from_int(0x0123456789ABCDEF0123456789ABCDEF)),
    ("tenant-v5", lambda: TenantId.from_party_id("9904231000014")),
    ("correlation-v5", lambda: CorrelationId.from_interchange_ref("9904231000007:REF1")),
    ("outbox", lambda: OutboxMessageId.for_event(_EVENT, 2)),
    ("deadline", lambda: DeadlineId.for_event(_EVENT, 0)),
    ("routed", lambda: routed_process_id(_TENANT, "DE0001234567890")),
]


def test_the_fast_route_is_the_one_in_use() -> None:
    # If ``uuid.UUID`` ever changes layout the import check falls back to the descriptors;
    # on the supported interpreter the twin route must be taken (else these tests test less).
    assert ids._id_of is ids._fast_id


@pytest.mark.parametrize(("name", "build"), _BUILDERS)
def test_built_ids_equal_constructed_ones(name: str, build: Callable[[], uuid.UUID]) -> None:
    made = build()
    cls = type(made)
    text = str(uuid.UUID(int=made.int))
    parsed = cls(text)
    plain = uuid.UUID(text)
    assert type(made) is cls and cls is not ids._IdSlots and isinstance(made, ids._UuidId)
    assert str(made) == text == made._text and made.hex == plain.hex and made.int == plain.int
    assert made.is_safe is uuid.SafeUUID.unknown is parsed.is_safe
    assert made == parsed == plain and plain == made and hash(made) == hash(parsed) == hash(plain)
    assert repr(made) == f"{cls.__name__}('{text}')"
    assert made.bytes == plain.bytes and made.version == plain.version
    smaller = uuid.UUID(int=max(made.int - 1, 0))
    assert (smaller < made) == (smaller.int < made.int) and not (made < plain) and made <= plain
    assert {made: 1}[plain] == 1


@pytest.mark.parametrize(("name", "build"), _BUILDERS)
def test_built_ids_stay_immutable(name: str, build: Callable[[], uuid.UUID]) -> None:
    made = build()
    for attribute, value in (("int", 1), ("is_safe", uuid.SafeUUID.safe), ("_text", "x"), ("other", 1)):
        with pytest.raises(TypeError, match="immutable"):
            setattr(made, attribute, value)
    assert str(made) == made._text


@pytest.mark.parametrize(("name", "build"), _BUILDERS)
def test_built_ids_copy_pickle_and_weakref_as_constructed_ones(
    name: str, build: Callable[[], uuid.UUID]
) -> None:
    made = build()
    parsed = type(made)(str(made))
    for twin in (copy.copy(made), copy.deepcopy(made), pickle.loads(pickle.dumps(made))):
        assert type(twin) is type(made) and twin == made and str(twin) == str(made)
    assert pickle.dumps(made) == pickle.dumps(parsed)
    assert weakref.ref(made)() is made


def test_the_slow_route_builds_the_same_id() -> None:
    value = 0xFEDCBA9876543210FEDCBA9876543210
    text = str(uuid.UUID(int=value))
    fast, slow = ids._fast_id(ConversationId, value, text), ids._slow_id(ConversationId, value, text)
    assert type(fast) is type(slow) is ConversationId
    assert (fast.int, fast.is_safe, fast._text) == (slow.int, slow.is_safe, slow._text)
    assert pickle.dumps(fast) == pickle.dumps(slow)


def test_routed_process_ids_keep_their_slot_and_randomness() -> None:
    key = "DE0001234567890"
    slot = routing_slot(_TENANT, key)
    made = [routed_process_id(_TENANT, key) for _ in range(50)]
    assert len(set(made)) == 50
    for process_id in made:
        assert type(process_id) is ProcessId and process_id.int & 0xFFF == slot
        assert process_id.version == 7 and str(process_id) == str(uuid.UUID(int=process_id.int))
        stream = StreamId.for_process(_TENANT, process_id)
        assert partition_of(stream, 4096) == slot and partition_of(stream, 16) == slot % 16


def _envelope(event_id: EventId, correlation: CorrelationId) -> EventEnvelope:
    process_id = ProcessId.new()
    return EventEnvelope(
        event_id=event_id,
        stream_id=StreamId.for_process(_TENANT, process_id),
        process_id=process_id,
        tenant_id=_TENANT,
        workflow_id=WorkflowId.parse("gpke.lieferbeginn@FV2504"),
        sequence=1,
        event_type="Started",
        schema_version=1,
        recorded_at=datetime(2025, 4, 1, 12, 0, 0, 500, tzinfo=UTC),
        correlation_id=correlation,
        conversation_id=ConversationId.new(),
        causation_id=CausationId(event_id),
        payload={"a": 1},
    )


def test_built_ids_are_stored_as_the_same_text() -> None:
    built = _envelope(EventId.new(), CorrelationId.from_interchange_ref("9904231000007:REF2"))
    fields: dict[str, Any] = built.__dict__
    dumped = built.model_dump().items()
    parsed = EventEnvelope.from_plain(
        {name: str(value) if isinstance(value, uuid.UUID) else value for name, value in dumped}
    )
    assert built.to_plain() == built.model_dump(mode="json") == parsed.to_plain()
    assert msgpack.packb(built.to_plain()) == msgpack.packb(parsed.to_plain())
    decoded = PlainEnvelopeDecoder()(msgpack.unpackb(msgpack.packb(built.to_plain())))
    assert decoded == built and type(decoded.event_id) is EventId
    typed = [name for name, value in fields.items() if isinstance(value, uuid.UUID)]
    assert all(type(getattr(decoded, name)) is type(fields[name]) for name in typed)
