"""The wire format of batched Ray calls: a batch of operations, and its results, as one ``bytes``.

Ray pickles call arguments with ``cloudpickle``, whose Python-level hook runs for every object:
a batch of commands with their ``ProcessIdentity``\\ s cost ~60-90 µs per command to pickle and
their ``Outcome``\\ s ~50 µs, more than deciding and committing the command. Here a batch is
msgpack of plain values: the tenant and workflow ids (the same few in every batch) once per
batch, ids as their 16 raw bytes *and* their canonical text (rebuilding an id from both costs a
third of formatting its text again, and every id is written as text later), commands whose
fields are all ``str``/``int``/``float``/``bool``/``None`` as their field dict, events as their
plain fields (without the ids the receiver knows). What has no plain form (other commands,
contexts, deadlines, states, errors, command classes) goes into one ``pickle`` of the whole
batch (C pickler, one memo for the batch), ``cloudpickle`` only if that fails (e.g. a class
defined in a function).

Internal to ``ray_system``; both ends run the same code (one repository on every node), so
values are rebuilt without validation: they were valid on the sender.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import msgpack
from pydantic import BaseModel
from ray import cloudpickle

from mako_actors.actors._actor import Op, Outcome
from mako_actors.envelope import EventEnvelope, ProcessIdentity, trusted
from mako_actors.ids import (
    CausationId,
    ConversationId,
    CorrelationId,
    EventId,
    ProcessId,
    StreamId,
    TenantId,
    _id_of,
    _UuidId,
)
from mako_actors.version import WorkflowId

_NONE = -1
_OUTCOME = 0
_OBJECT = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Frozen models copy their fields-set before changing it (``model_copy``), so one may be shared.
_IDENTITY_FIELDS = set(ProcessIdentity.model_fields)
_ENVELOPE_FIELDS = set(EventEnvelope.model_fields)
# Exactly these types pack in msgpack as themselves and come back equal and of the same type.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_new = object.__new__
_stream = functools.partial(str.__new__, StreamId)
IdT = TypeVar("IdT", bound=_UuidId)
_MICROSECOND = timedelta(microseconds=1)
_CACHE_LIMIT = 4096  # distinct tenants/workflows kept decoded per host; cleared when exceeded


def _pickle(objects: list[Any]) -> bytes:
    try:
        data = pickle.dumps(objects, protocol=5)
    except Exception:  # not importable by name (a local class, a lambda): Ray's own way
        return bytes(cloudpickle.dumps(objects, protocol=5))  # type: ignore[no-untyped-call]
    if _MAIN in data:
        # A class of a script or notebook (``__main__``) pickles by name, and a worker's own
        # ``__main__`` has no such class: ``cloudpickle`` sends it by value, as Ray does.
        # (A mere string "__main__" among the values takes this way too: slower, as valid.)
        return bytes(cloudpickle.dumps(objects, protocol=5))  # type: ignore[no-untyped-call]
    return data


_MAIN = b"__main__"


class _Objects:
    """The objects of one batch that travel pickled; rows refer to them by index."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, value: Any) -> int:
        if value is None:
            return _NONE
        self.items.append(value)
        return len(self.items) - 1

    def add_model(self, model: BaseModel | None) -> int:
        """A pydantic model as (class, field values, fields set if not all): rebuilt without
        ``__setstate__`` (~10 µs a command). Models with extra or private values go whole."""
        if model is None or model.__pydantic_extra__ or model.__pydantic_private__:
            return self.add(model)
        values = model.__dict__
        fields_set = model.__pydantic_fields_set__
        return self.add(
            _ModelParts(type(model), values, None if len(fields_set) == len(values) else fields_set)
        )


class _ModelParts:
    """A pydantic model taken apart for the batch pickle (see ``_Objects.add_model``)."""

    __slots__ = ("cls", "fields_set", "values")

    def __init__(self, cls: type[BaseModel], values: dict[str, Any], fields_set: set[str] | None) -> None:
        self.cls = cls
        self.values = values
        self.fields_set = fields_set

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ModelParts, (self.cls, self.values, self.fields_set))

    def build(self) -> BaseModel:
        model = trusted(self.cls, self.values)
        if self.fields_set is not None:
            object.__setattr__(model, "__pydantic_fields_set__", self.fields_set)
        return model


def _object(objects: list[Any], index: int) -> Any:
    if index == _NONE:
        return None
    value = objects[index]
    return value.build() if type(value) is _ModelParts else value


def _plain_values(values: dict[str, Any]) -> bool:
    """Whether every field value packs as itself in msgpack and unpacks as the same value."""
    for value in values.values():  # noqa: SIM110 (a loop: no generator per command)
        if type(value) not in _PLAIN_TYPES:
            return False
    return True


def encode_ops(items: Sequence[tuple[Any, ...]]) -> bytes:
    """A batch of ``(partition, identity, op, ...)`` as bytes; raises what pickling raises.

    Only the first three elements of each item are read (the driver queues its futures in
    the same tuples).

    A command whose field values are all ``str``/``int``/``float``/``bool``/``None`` (and
    without extra or private values) travels as its class's index and its field dict in the
    msgpack; any other goes into the batch's pickle. An int msgpack cannot hold sends the
    whole batch the pickled way.
    """
    try:
        return _encode_ops(items, plain=True)
    except (OverflowError, ValueError):  # an int beyond 64 bits, a lone surrogate in a str
        return _encode_ops(items, plain=False)


def _encode_ops(items: Sequence[tuple[Any, ...]], plain: bool) -> bytes:
    # Interned by object first: the few tenant and workflow ids are shared by many identities,
    # and ``str`` of a ``WorkflowId`` formats a date. The items keep them alive, so ``id`` is safe.
    tenant_of: dict[int, int] = {}
    tenants: dict[str, int] = {}
    workflow_of: dict[int, int] = {}
    workflows: dict[str, int] = {}
    classes: dict[type, int] = {}
    objects = _Objects()
    rows = []
    add = objects.add
    for item in items:
        identity = item[1]
        op = item[2]
        tenant_id = identity.tenant_id
        t = tenant_of.get(id(tenant_id))
        if t is None:
            t = tenant_of[id(tenant_id)] = tenants.setdefault(str(tenant_id), len(tenants))
        workflow_id = identity.workflow_id
        w = workflow_of.get(id(workflow_id))
        if w is None:
            w = workflow_of[id(workflow_id)] = workflows.setdefault(str(workflow_id), len(workflows))
        process_id = identity.process_id
        command = op.command
        row: Any
        if command is None:
            row = None
        elif (
            plain
            and not command.__pydantic_extra__
            and not command.__pydantic_private__
            and _plain_values(command.__dict__)
        ):
            cls = type(command)
            c = classes.get(cls)
            if c is None:
                c = classes[cls] = add(cls)
            values = command.__dict__
            fields_set = command.__pydantic_fields_set__
            row = (c, values, None if len(fields_set) == len(values) else list(fields_set))
        else:
            row = add(command)
        ctx = op.ctx
        deadline = op.deadline
        rows.append((
            item[0],
            t,
            w,
            process_id.bytes,
            process_id._text,
            op.kind,
            row,
            _NONE if ctx is None else add(ctx),
            _NONE if deadline is None else add(deadline),
            op.enqueue,
            op.max_attempts,
            op.snapshot_interval,
            op.sequence,
            op.new,
        ))  # fmt: skip
    return msgpack.packb(  # type: ignore[no-any-return]
        (list(tenants), list(workflows), rows, _pickle(objects.items) if objects.items else b"")
    )


def _uuid_id(cls: type[IdT], raw: bytes, text: str) -> IdT:
    """An id from its 16 bytes and canonical text as the sender had them (no parsing, no formatting)."""
    return _id_of(cls, int.from_bytes(raw, "big"), text)


class OpDecoder:
    """Decodes batches of operations on a host, keeping the few tenant and workflow ids it saw.

    Identities are rebuilt without validation (``trusted``): they were valid ``ProcessIdentity``
    values on the sender, and the stream id is derived here from tenant and process, as
    ``ProcessIdentity.of_process`` does.
    """

    __slots__ = ("_tenants", "_workflows")

    def __init__(self) -> None:
        self._tenants: dict[str, TenantId] = {}
        self._workflows: dict[str, WorkflowId] = {}

    def _tenant(self, text: str) -> TenantId:
        tenant = self._tenants.get(text)
        if tenant is None:
            if len(self._tenants) >= _CACHE_LIMIT:
                self._tenants.clear()
            tenant = self._tenants[text] = TenantId(text)
        return tenant

    def _workflow(self, text: str) -> WorkflowId:
        workflow = self._workflows.get(text)
        if workflow is None:
            if len(self._workflows) >= _CACHE_LIMIT:
                self._workflows.clear()
            workflow = self._workflows[text] = WorkflowId.parse(text)
        return workflow

    def __call__(self, data: bytes) -> list[tuple[int, ProcessIdentity, Op]]:
        tenant_texts, workflow_texts, rows, pickled = msgpack.unpackb(data)
        tenants = [self._tenant(t) for t in tenant_texts]
        workflows = [self._workflow(w) for w in workflow_texts]
        objects = pickle.loads(pickled) if pickled else []
        out = []
        for (partition, t, w, process, process_text, kind, command, ctx, deadline, enqueue, attempts,
             interval, sequence, new) in rows:  # fmt: skip
            process_id = _uuid_id(ProcessId, process, process_text)
            # A live actor keeps its identity: one shared fields-set, not a set each (216 B).
            identity = trusted(
                ProcessIdentity,
                {
                    "stream_id": _stream(f"process/{tenant_texts[t]}/{process_text}"),
                    "process_id": process_id,
                    "tenant_id": tenants[t],
                    "workflow_id": workflows[w],
                },
                _IDENTITY_FIELDS,
            )
            if command is None or type(command) is int:
                value = _object(objects, command) if command is not None else None
            else:
                c, values, fields_set = command
                value = trusted(objects[c], values, None if fields_set is None else set(fields_set))
            op = Op(
                kind,
                value,
                objects[ctx] if ctx != _NONE else None,
                enqueue,
                attempts,
                interval,
                objects[deadline] if deadline != _NONE else None,
                sequence,
                new,
            )
            out.append((partition, identity, op))
        return out


def encode_results(identities: Sequence[ProcessIdentity], results: Sequence[Any]) -> bytes:
    """The results of a batch (``Outcome``\\ s, reads, per-operation failures) as bytes.

    An ``Outcome``'s events travel without the ids the receiver already has (the process's
    stream, process, tenant and workflow ids: ``identities[i]`` is the identity of
    ``results[i]``), other ids as 16 raw bytes and their text (building an id from both is a
    third of formatting its text again), ``recorded_at`` as microseconds since 1970.
    """
    objects = _Objects()
    rows: list[Any] = []
    for identity, result in zip(identities, results, strict=True):
        if type(result) is Outcome:
            stream_id = identity.stream_id
            events = []
            for event in result.events:
                if event.stream_id != stream_id:
                    break
                events.append(_event_row(event))
            else:
                outbox = result.outbox
                rows.append((
                    _OUTCOME,
                    events,
                    objects.add(outbox) if outbox else _NONE,
                    result.snapshot_taken,
                    result.no_command,
                ))  # fmt: skip
                continue
        rows.append((_OBJECT, objects.add(result)))
    return msgpack.packb(  # type: ignore[no-any-return]
        (rows, _pickle(objects.items) if objects.items else b""), default=_plain
    )


def _plain(value: Any) -> Any:
    """What msgpack cannot pack in an event payload, as ``EventEnvelope.to_plain`` stores it."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def _event_row(event: EventEnvelope) -> tuple[Any, ...]:
    causation = event.causation_id
    correlation = event.correlation_id
    conversation = event.conversation_id
    event_id = event.event_id
    return (
        event_id.bytes,
        event_id._text,
        event.sequence,
        event.global_position,
        event.event_type,
        event.schema_version,
        (event.recorded_at - _EPOCH) // _MICROSECOND,
        correlation.bytes,
        correlation._text,
        conversation.bytes,
        conversation._text,
        None if causation is None else causation.bytes,
        None if causation is None else causation._text,
        event.payload,
    )


def decode_results(identities: Sequence[ProcessIdentity], data: bytes) -> list[Any]:
    """``encode_results``'s input again; ``identities`` as given there.

    An ``Outcome``'s events are built when its ``events`` is first read (``_WireOutcome``).
    """
    rows, pickled = msgpack.unpackb(data)
    objects = pickle.loads(pickled) if pickled else []
    out: list[Any] = []
    for identity, row in zip(identities, rows, strict=True):
        if row[0] == _OUTCOME:
            _, events, outbox, snapshot_taken, no_command = row
            # Plain stores (``Outcome`` is not frozen): calling a slot descriptor's ``__set__``
            # costs ~800 instructions (its arguments are packed into a tuple); a store ~30.
            outcome = _new(_WireOutcome)
            outcome._rows = events
            outcome._identity = identity
            outcome.outbox = tuple(objects[outbox]) if outbox != _NONE else ()
            outcome.snapshot_taken = snapshot_taken
            outcome.no_command = no_command
            out.append(outcome)
        else:
            out.append(objects[row[1]] if row[1] != _NONE else None)
    return out


_events_slot = Outcome.__dict__["events"]


class _WireOutcome(Outcome):
    """An ``Outcome`` from a host whose events are built from their wire rows on first read.

    A batch's replies reach the driver together, but each caller reads its own outcome later,
    in its own task: built at once, every batch's envelopes (a model, its dict and three ids
    per event) would be alive together and promoted by the garbage collector's young
    collections; built on first read, a caller that drops them frees them young. Otherwise an
    ``Outcome``: ``events`` is read (and set) like the field it replaces, it compares equal to
    an ``Outcome`` of equal fields and prints as one.
    """

    __slots__ = ("_identity", "_rows")
    _identity: ProcessIdentity
    _rows: list[Any] | None

    @property
    def events(self) -> tuple[EventEnvelope, ...]:
        rows = self._rows
        if rows is None:
            return cast(tuple[EventEnvelope, ...], _events_slot.__get__(self))
        identity = self._identity
        built = tuple([_envelope(identity, row) for row in rows])
        _events_slot.__set__(self, built)
        self._rows = None
        return built

    @events.setter
    def events(self, value: tuple[EventEnvelope, ...]) -> None:
        _events_slot.__set__(self, value)
        self._rows = None

    def _fields(self) -> tuple[Any, ...]:
        return (self.events, self.outbox, self.snapshot_taken, self.no_command)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Outcome):
            return self._fields() == (other.events, other.outbox, other.snapshot_taken, other.no_command)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as Outcome's: mutable, compared by value

    def __repr__(self) -> str:
        events, outbox, snapshot_taken, no_command = self._fields()
        return (
            f"Outcome(events={events!r}, outbox={outbox!r}, snapshot_taken={snapshot_taken!r}, "
            f"no_command={no_command!r})"
        )


def _envelope(identity: ProcessIdentity, row: list[Any]) -> EventEnvelope:
    (
        event_id,
        event_text,
        sequence,
        position,
        event_type,
        version,
        micros,
        correlation,
        correlation_text,
        conversation,
        conversation_text,
        causation,
        causation_text,
        payload,
    ) = row
    return trusted(
        EventEnvelope,
        {
            "event_id": _uuid_id(EventId, event_id, event_text),
            "stream_id": identity.stream_id,
            "process_id": identity.process_id,
            "tenant_id": identity.tenant_id,
            "workflow_id": identity.workflow_id,
            "sequence": sequence,
            "global_position": position,
            "event_type": event_type,
            "schema_version": version,
            "recorded_at": _EPOCH + micros * _MICROSECOND,
            "correlation_id": _uuid_id(CorrelationId, correlation, correlation_text),
            "conversation_id": _uuid_id(ConversationId, conversation, conversation_text),
            "causation_id": None if causation is None else _uuid_id(CausationId, causation, causation_text),
            "payload": payload,
        },
        _ENVELOPE_FIELDS,
    )
