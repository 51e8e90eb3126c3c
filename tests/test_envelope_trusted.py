"""Models built by ``envelope.trusted`` are ordinary instances of their class.

``trusted`` fills a slots twin (``_ModelSlots``) and assigns ``__class__``; these tests pin
that the result is what ``model_construct`` makes: type, fields, fields-set, frozenness,
equality, copying, pickling and the stored (plain) form; and that a model class of another
layout still gets a correct instance.
"""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mako_actors import envelope
from mako_actors.envelope import (
    CommandContext,
    EventEnvelope,
    PlainEnvelopeDecoder,
    ProcessIdentity,
    trusted,
)
from mako_actors.ids import CausationId, EventId, OutboxMessageId, ProcessId, StreamId, TenantId
from mako_actors.outbox import OutboxMessage, PendingOutbox
from mako_actors.version import WorkflowId

_TENANT = TenantId.from_party_id("9904231000007")
_WORKFLOW = WorkflowId.parse("gpke.lieferbeginn@FV2504")
_NOW = datetime(2025, 4, 1, 12, 0, 0, 500, tzinfo=UTC)


def test_the_fast_route_is_the_one_in_use() -> None:
    assert envelope._BUILDS_MODELS


def _context_fields() -> dict[str, Any]:
    context = CommandContext.new(_TENANT, ProcessId.new(), _WORKFLOW)
    return dict(context.__dict__)


def _models() -> list[tuple[type[BaseModel], dict[str, Any]]]:
    process_id = ProcessId.new()
    stream_id = StreamId.for_process(_TENANT, process_id)
    event = EventEnvelope(
        event_id=EventId.new(),
        stream_id=stream_id,
        process_id=process_id,
        tenant_id=_TENANT,
        workflow_id=_WORKFLOW,
        sequence=3,
        event_type="Started",
        schema_version=1,
        recorded_at=_NOW,
        correlation_id=_context_fields()["correlation_id"],
        conversation_id=_context_fields()["conversation_id"],
        causation_id=CausationId.new(),
        payload={"a": [1, "x", None]},
    )
    message_id = OutboxMessageId.for_event(event.event_id, 0)
    row = OutboxMessage(
        message_id=message_id,
        idempotency_key=str(message_id),
        stream_id=stream_id,
        process_id=process_id,
        tenant_id=_TENANT,
        causation_event_id=event.event_id,
        correlation_id=event.correlation_id,
        conversation_id=event.conversation_id,
        message_type="APERAK",
        recipient="9904231000014",
        payload={"b": 2},
        created_at=_NOW,
        next_attempt_at=_NOW,
    )
    return [
        (CommandContext, _context_fields()),
        (ProcessIdentity, dict(ProcessIdentity.of_process(_TENANT, process_id, _WORKFLOW).__dict__)),
        (EventEnvelope, dict(event.__dict__)),
        (OutboxMessage, dict(row.__dict__)),
        (PendingOutbox, {"message_type": "APERAK", "recipient": "x", "payload": {}, "not_before": None}),
    ]


@pytest.mark.parametrize("index", range(5))
def test_trusted_models_are_what_model_construct_makes(index: int) -> None:
    cls, fields = _models()[index]
    shared = set(fields)
    built = trusted(cls, dict(fields), shared)
    constructed = cls.model_construct(**fields)
    assert type(built) is cls and not isinstance(built, envelope._ModelSlots)
    assert built == constructed and built.__dict__ == constructed.__dict__
    assert built.__pydantic_fields_set__ is shared
    assert built.__pydantic_extra__ is None and built.__pydantic_private__ is None
    assert built.model_dump() == constructed.model_dump()
    assert built.model_dump(mode="json") == constructed.model_dump(mode="json")
    if hasattr(cls, "to_plain"):
        assert built.to_plain() == constructed.to_plain()  # type: ignore[attr-defined]
    assert trusted(cls, dict(fields)).__pydantic_fields_set__ == shared  # a set of its own


@pytest.mark.parametrize("index", range(5))
def test_trusted_models_stay_frozen_and_copy_as_constructed_ones(index: int) -> None:
    cls, fields = _models()[index]
    built = trusted(cls, dict(fields), set(fields))
    name = next(iter(fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(built, name, fields[name])
    with pytest.raises(ValidationError, match="frozen"):
        delattr(built, name)
    for twin in (copy.copy(built), copy.deepcopy(built), pickle.loads(pickle.dumps(built))):
        assert type(twin) is cls and twin == built
    changed = built.model_copy(update={name: fields[name]})
    assert type(changed) is cls and changed == built


def test_stamping_and_decoding_keep_their_marks() -> None:
    _, fields = _models()[2]
    placeholder = EventEnvelope._placeholder({**fields, "global_position": 0})
    stamped = placeholder.stamped(4, 9)
    assert stamped is placeholder and (stamped.sequence, stamped.global_position) == (4, 9)
    again = stamped.stamped(5, 10)
    assert again is not stamped and type(again) is EventEnvelope and again.sequence == 5
    assert again.__pydantic_fields_set__ == set(EventEnvelope.model_fields)
    decoded = PlainEnvelopeDecoder()(stamped.to_plain())
    assert type(decoded) is EventEnvelope and decoded == stamped
    assert decoded.to_plain() == stamped.to_plain() == stamped.model_dump(mode="json")


class _Slotted(BaseModel):
    """A model class with slots of its own: ``__class__`` cannot be switched to it."""

    __slots__ = ("_note",)
    a: int
    b: str = "x"


def test_a_model_of_another_layout_is_still_built() -> None:
    built = trusted(_Slotted, {"a": 1, "b": "y"})
    assert type(built) is _Slotted and built == _Slotted(a=1, b="y")
    assert built.__pydantic_fields_set__ == {"a", "b"}


def test_the_builder_class_has_the_generic_setter() -> None:
    # The point of ``_ModelSlots``: plain stores, no pydantic ``__setattr__``/``__delattr__``.
    assert envelope._ModelSlots.__setattr__ is object.__setattr__
    assert envelope._ModelSlots.__delattr__ is object.__delattr__
    assert not envelope._ModelSlots.model_fields
