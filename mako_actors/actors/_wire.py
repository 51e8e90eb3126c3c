"""The wire format of batched Ray calls: a batch of operations, and its results, as one ``bytes``.

Ray pickles call arguments with ``cloudpickle``, whose Python-level hook runs for every object:
a batch of commands with their ``ProcessIdentity``\\ s cost ~60-90 µs per command to pickle and
their ``Outcome``\\ s ~50 µs, more than deciding and committing the command. Here a batch is
msgpack of plain values: ids as 16 raw bytes, the tenant and workflow ids (the same few in
every batch) once per batch, events as their stored plain form (``EventEnvelope.to_plain``,
without the ids the receiver knows). What has no plain form (commands, contexts, deadlines,
states, errors) goes into one ``pickle`` of the whole batch (C pickler, one memo for the batch),
``cloudpickle`` only if that fails (e.g. a class defined in a function).

Internal to ``ray_system``; both ends run the same code (one repository on every node).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
from pydantic import BaseModel
from ray import cloudpickle

from mako_actors.actors._actor import Op, Outcome
from mako_actors.envelope import EventEnvelope, ProcessIdentity, trusted
from mako_actors.ids import CausationId, ConversationId, CorrelationId, EventId, ProcessId, StreamId, TenantId
from mako_actors.version import WorkflowId

_NONE = -1
_OUTCOME = 0
_OBJECT = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Frozen models copy their fields-set before changing it (``model_copy``), so one may be shared.
_IDENTITY_FIELDS = set(ProcessIdentity.model_fields)
_MICROSECOND = timedelta(microseconds=1)
_CACHE_LIMIT = 4096  # distinct tenants/workflows kept decoded per host; cleared when exceeded


def _pickle(objects: list[Any]) -> bytes:
    try:
        return pickle.dumps(objects, protocol=5)
    except Exception:  # not importable by name (a local class, a lambda): Ray's own way
        return bytes(cloudpickle.dumps(objects, protocol=5))  # type: ignore[no-untyped-call]


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


def encode_ops(items: Sequence[tuple[int, ProcessIdentity, Op]]) -> bytes:
    """A batch of ``(partition, identity, op)`` as bytes; raises what pickling raises."""
    tenants: dict[str, int] = {}
    workflows: dict[str, int] = {}
    objects = _Objects()
    rows = []
    for partition, identity, op in items:
        tenant = str(identity.tenant_id)
        workflow = str(identity.workflow_id)
        rows.append((
            partition,
            tenants.setdefault(tenant, len(tenants)),
            workflows.setdefault(workflow, len(workflows)),
            identity.process_id.bytes,
            op.kind,
            objects.add_model(op.command),
            objects.add(op.ctx),
            objects.add(op.deadline),
            op.enqueue,
            op.max_attempts,
            op.snapshot_interval,
            op.sequence,
        ))  # fmt: skip
    return msgpack.packb(  # type: ignore[no-any-return]
        (list(tenants), list(workflows), rows, _pickle(objects.items) if objects.items else b"")
    )


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
        for (partition, t, w, process, kind, command, ctx, deadline, enqueue, attempts,
             interval, sequence) in rows:  # fmt: skip
            tenant = tenants[t]
            process_id = ProcessId(process)
            identity = trusted(
                ProcessIdentity,
                {
                    "stream_id": StreamId.for_process(tenant, process_id),
                    "process_id": process_id,
                    "tenant_id": tenant,
                    "workflow_id": workflows[w],
                },
            )
            # A live actor keeps its identity: one shared fields-set, not a set each (216 B).
            object.__setattr__(identity, "__pydantic_fields_set__", _IDENTITY_FIELDS)
            op = Op(
                kind,
                command=_object(objects, command),
                ctx=objects[ctx] if ctx != _NONE else None,
                enqueue=enqueue,
                max_attempts=attempts,
                snapshot_interval=interval,
                deadline=objects[deadline] if deadline != _NONE else None,
                sequence=sequence,
            )
            out.append((partition, identity, op))
        return out


def encode_results(identities: Sequence[ProcessIdentity], results: Sequence[Any]) -> bytes:
    """The results of a batch (``Outcome``\\ s, reads, per-operation failures) as bytes.

    An ``Outcome``'s events travel without the ids the receiver already has (the process's
    stream, process, tenant and workflow ids: ``identities[i]`` is the identity of
    ``results[i]``), other ids as 16 raw bytes, ``recorded_at`` as microseconds since 1970.
    """
    objects = _Objects()
    rows: list[Any] = []
    for identity, result in zip(identities, results, strict=True):
        if type(result) is Outcome and all(e.stream_id == identity.stream_id for e in result.events):
            rows.append((
                _OUTCOME,
                [_event_row(event) for event in result.events],
                objects.add(result.outbox or None),
                result.snapshot_taken,
                result.no_command,
            ))  # fmt: skip
        else:
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
    return (
        event.event_id.bytes,
        event.sequence,
        event.global_position,
        event.event_type,
        event.schema_version,
        (event.recorded_at - _EPOCH) // _MICROSECOND,
        event.correlation_id.bytes,
        event.conversation_id.bytes,
        None if causation is None else causation.bytes,
        event.payload,
    )


_ENVELOPE_FIELDS = frozenset(EventEnvelope.model_fields)


def decode_results(identities: Sequence[ProcessIdentity], data: bytes) -> list[Any]:
    """``encode_results``'s input again; ``identities`` as given there."""
    rows, pickled = msgpack.unpackb(data)
    objects = pickle.loads(pickled) if pickled else []
    out: list[Any] = []
    for identity, row in zip(identities, rows, strict=True):
        if row[0] == _OUTCOME:
            _, events, outbox, snapshot_taken, no_command = row
            out.append(Outcome(
                events=tuple(_envelope(identity, event) for event in events),
                outbox=tuple(objects[outbox]) if outbox != _NONE else (),
                snapshot_taken=snapshot_taken,
                no_command=no_command,
            ))  # fmt: skip
        else:
            out.append(objects[row[1]] if row[1] != _NONE else None)
    return out


def _envelope(identity: ProcessIdentity, row: list[Any]) -> EventEnvelope:
    (
        event_id,
        sequence,
        position,
        event_type,
        version,
        micros,
        correlation,
        conversation,
        causation,
        payload,
    ) = row
    return trusted(
        EventEnvelope,
        {
            "event_id": EventId(event_id),
            "stream_id": identity.stream_id,
            "process_id": identity.process_id,
            "tenant_id": identity.tenant_id,
            "workflow_id": identity.workflow_id,
            "sequence": sequence,
            "global_position": position,
            "event_type": event_type,
            "schema_version": version,
            "recorded_at": _EPOCH + micros * _MICROSECOND,
            "correlation_id": CorrelationId(correlation),
            "conversation_id": ConversationId(conversation),
            "causation_id": None if causation is None else CausationId(causation),
            "payload": payload,
        },
    )
