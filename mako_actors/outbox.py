"""Outbound messages: what a workflow asks to send, and what the store keeps until it is sent.

Why an outbox: an answer (APERAK, UTILMD) must leave if and only if the events that decided it
were stored. The workflow returns ``PendingOutbox`` entries; ``execute_and_enqueue`` writes them
as ``OutboxMessage`` rows in the same write transaction as the events. A worker delivers them
later, at least once, with a stable ``idempotency_key`` the receiver can deduplicate on.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticSerializationError, to_jsonable_python

from mako_actors.envelope import AwareUtc, PlainModel, iso_utc, trusted
from mako_actors.ids import (
    ConversationId,
    CorrelationId,
    EventId,
    OutboxMessageId,
    ProcessId,
    StreamId,
    TenantId,
)


class PendingOutbox(PlainModel):
    """A message the workflow wants sent, once the command's events are stored.

    ``payload`` is plain data (dicts, lists, str, int, float, bool, None) or a pydantic model,
    which is dumped to plain data; other values are turned into their JSON form here (a tuple
    into a list, a datetime into ISO text), as the store keeps them, so ``execute_and_collect``
    returns what ``execute_and_enqueue`` stores. A value with no JSON form, or a NaN or infinite
    float, is a ``ValidationError`` naming it (a command deciding one fails with
    ``WorkflowError``, nothing written). ``not_before`` delays the first delivery attempt.
    """

    message_type: str
    recipient: str
    payload: dict[str, Any] = Field(default_factory=dict)
    not_before: AwareUtc | None = None

    @field_validator("payload", mode="before")
    @classmethod
    def _plain_payload(cls, value: Any) -> Any:
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    @field_validator("payload")
    @classmethod
    def _finite_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A NaN or infinity would be stored as such and leave as text no JSON or EDIFACT
        # reader takes: refused while the command is decided, so nothing is written.
        # A value with no JSON form failed only at the commit, as the store's own failure
        # (operational: a Frist deciding it was retried forever, never dead-lettered).
        try:
            plain = plain_payload(value)
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise ValueError(f"payload has a value with no JSON form: {exc}") from None
        _check_finite(plain, "payload")  # (in its JSON form: also inside sets, models, dataclasses)
        return plain

    @classmethod
    def of_plain(cls, message_type: str, recipient: str, payload: dict[str, Any]) -> PendingOutbox:
        """A message whose ``payload`` our own code built as plain JSON data, unchecked.

        For the engine's and the workflows' payload builders only: ``payload`` must be what
        ``plain_payload`` keeps as it is (``str`` keys; ``str``, ``int``, ``bool``, ``None``,
        such dicts and lists; no floats) and the strings must be valid ``str`` values. Its
        outbox row is stored without walking the payload again (once per message sent).
        """
        fields: dict[str, Any] = {"message_type": message_type, "recipient": recipient, "payload": payload}
        fields["not_before"] = None
        return trusted(cls, fields, _PLAIN_PENDING)


class OutboxMessage(PlainModel):
    """A persisted outbound message, stamped with the event that caused it.

    ``message_id`` and ``idempotency_key`` derive from ``causation_event_id`` and the message's
    index in the command's output, so they never change across delivery retries.
    ``position`` is assigned by the store when the message is first enqueued (0 before): due
    messages come back by ``next_attempt_at``, then in enqueue order, so the messages of one
    command leave in the order ``handle`` returned them. ``not_before`` is the delay the
    workflow asked for (``PendingOutbox.not_before``; None in rows stored before it was kept).
    """

    message_id: OutboxMessageId
    idempotency_key: str
    stream_id: StreamId
    process_id: ProcessId
    tenant_id: TenantId
    causation_event_id: EventId
    correlation_id: CorrelationId
    conversation_id: ConversationId
    message_type: str
    recipient: str
    payload: dict[str, Any]
    created_at: AwareUtc
    not_before: AwareUtc | None = None
    next_attempt_at: AwareUtc
    attempts: int = 0
    last_error: str | None = None
    position: int = 0

    def to_plain(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, written out: same keys, order and values, several times cheaper.

        (Every id and datetime serializes through a Python function in pydantic; here each is
        one call. The datetime fields are aware UTC by their type.)
        """
        # Fields read from ``__dict__``: a model attribute goes through ``BaseModel``'s
        # ``__getattr__`` lookup hook, which a dict item skips.
        return outbox_plain(self.__dict__, self.__pydantic_fields_set__)

    @property
    def due_since(self) -> datetime:
        """When the message first became due: created, or its ``not_before`` if that is later.

        Its age counts from here (``RetryPolicy.max_age``, the delivery latency): a message the
        workflow delayed by a day is no older for it.
        """
        if self.not_before is None or self.not_before < self.created_at:
            return self.created_at
        return self.not_before


def outbox_plain(fields: dict[str, Any], fields_set: set[str]) -> dict[str, Any]:
    """``OutboxMessage.to_plain`` of a message's ``__dict__`` and ``__pydantic_fields_set__``.

    For the store's writer, which reads ``__dict__`` anyway: the method and its own reads of
    the model would cost three more trips through pydantic's ``__getattr__`` hook per row.
    """
    # ``_text``: the canonical string every typed id carries from birth (``ids._UuidId``).
    return {
        "message_id": fields["message_id"]._text,
        "idempotency_key": fields["idempotency_key"],
        "stream_id": str(fields["stream_id"]),
        "process_id": fields["process_id"]._text,
        "tenant_id": fields["tenant_id"]._text,
        "causation_event_id": fields["causation_event_id"]._text,
        "correlation_id": fields["correlation_id"]._text,
        "conversation_id": fields["conversation_id"]._text,
        "message_type": fields["message_type"],
        "recipient": fields["recipient"],
        "payload": (
            fields["payload"] if fields_set is PLAIN_ROW else plain_payload(fields["payload"])
        ),
        "created_at": iso_utc(fields["created_at"]),
        "not_before": None if fields["not_before"] is None else iso_utc(fields["not_before"]),
        "next_attempt_at": iso_utc(fields["next_attempt_at"]),
        "attempts": fields["attempts"],
        "last_error": fields["last_error"],
        "position": fields["position"],
    }


# The fields-sets that mark a payload built as plain data by our own code (``of_plain``): their
# identity, not their content (every field, as any fully built model's), so marked models
# compare, copy and dump like others. A copy (``model_copy``) gets a set of its own and loses
# the mark, which only costs the check again. ``_command`` stamps a marked message's row with
# ``PLAIN_ROW`` and ``to_plain`` keeps such a row's payload as it is.
_PLAIN_PENDING: set[str] = set(PendingOutbox.model_fields)
PLAIN_ROW: set[str] = set(OutboxMessage.model_fields)


def has_plain_payload(pending: PendingOutbox) -> bool:
    """Whether ``pending`` was made by ``PendingOutbox.of_plain``."""
    return pending.__pydantic_fields_set__ is _PLAIN_PENDING


_ATOMIC = frozenset({str, int, bool, type(None)})


def _check_finite(value: Any, path: str) -> None:
    """``ValueError`` naming the first NaN or infinite float in ``value`` by its path."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{path} is {value!r}: outbox payloads hold finite numbers only (no NaN or Infinity)"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(item) not in _ATOMIC:
                _check_finite(item, f"{path}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if type(item) not in _ATOMIC:
                _check_finite(item, f"{path}[{index}]")


def plain_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """``to_jsonable_python(payload)``: ``payload`` itself when it is plain JSON data already.

    A dict whose keys are ``str`` and whose values are ``str``, ``int``, ``bool``, ``None``
    (exact types, no subclasses) or such dicts and lists, is what ``to_jsonable_python``
    returns an equal copy of (same keys in the same order, same values), so it packs to the
    same bytes. Anything else (floats, datetimes, models, tuples, subclasses) goes through
    pydantic. Saves a copy and a serializer call per outbox row (most payloads are a few
    strings and numbers).
    """
    if _is_plain(payload, 0):
        return payload
    plain: dict[str, Any] = to_jsonable_python(payload)
    return plain


def _is_plain(value: Any, depth: int) -> bool:
    kind = type(value)
    if kind in _ATOMIC:
        return True
    if depth >= 8:  # deeper payloads are rare: let pydantic copy them
        return False
    # Atomic items are checked here, not in a call each (most of a payload is strings and
    # numbers; a MaKo answer's payload has a few dozen of them, checked once per row).
    atomic = _ATOMIC
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            if type(item) not in atomic and not _is_plain(item, depth + 1):
                return False
        return True
    if kind is list:
        for item in value:  # noqa: SIM110 (a loop, not all(): no generator per list)
            if type(item) not in atomic and not _is_plain(item, depth + 1):
                return False
        return True
    return False
