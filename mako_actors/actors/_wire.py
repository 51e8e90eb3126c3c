"""The wire format of batched Ray calls: a batch of operations, and its results, as one ``bytes``.

Ray pickles call arguments with ``cloudpickle``, whose Python-level hook runs for every object:
a batch of commands with their ``ProcessIdentity``\\ s cost ~60-90 µs per command to pickle and
their ``Outcome``\\ s ~50 µs, more than deciding and committing the command. Here a batch is
msgpack of plain values: ids as 16 raw bytes, the tenant and workflow ids (the same few in
every batch) once per batch, events as their stored plain form (``EventEnvelope.to_plain``,
decoded with ``PlainEnvelopeDecoder``). What has no plain form (commands, contexts, deadlines,
states, errors) goes into one ``pickle`` of the whole batch (C pickler, one memo for the batch),
``cloudpickle`` only if that fails (e.g. a class defined in a function).

Internal to ``ray_system``; both ends run the same code (one repository on every node).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import msgpack
from ray import cloudpickle

from mako_actors.actors._actor import Op, Outcome
from mako_actors.envelope import PlainEnvelopeDecoder, ProcessIdentity, trusted
from mako_actors.ids import ProcessId, StreamId, TenantId
from mako_actors.version import WorkflowId

_NONE = -1
_OUTCOME = 0
_OBJECT = 1
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
            objects.add(op.command),
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
            op = Op(
                kind,
                command=objects[command] if command != _NONE else None,
                ctx=objects[ctx] if ctx != _NONE else None,
                enqueue=enqueue,
                max_attempts=attempts,
                snapshot_interval=interval,
                deadline=objects[deadline] if deadline != _NONE else None,
                sequence=sequence,
            )
            out.append((partition, identity, op))
        return out


def encode_results(results: Sequence[Any]) -> bytes:
    """The results of a batch (``Outcome``\\ s, reads, per-operation failures) as bytes."""
    objects = _Objects()
    rows: list[Any] = []
    for result in results:
        if type(result) is Outcome:
            rows.append((
                _OUTCOME,
                [event.to_plain() for event in result.events],
                objects.add(result.outbox or None),
                result.snapshot_taken,
                result.no_command,
            ))  # fmt: skip
        else:
            rows.append((_OBJECT, objects.add(result)))
    return msgpack.packb(  # type: ignore[no-any-return]
        (rows, _pickle(objects.items) if objects.items else b"")
    )


def decode_results(data: bytes) -> list[Any]:
    """``encode_results``'s input again (events as decoded from their stored form)."""
    rows, pickled = msgpack.unpackb(data)
    objects = pickle.loads(pickled) if pickled else []
    decode = PlainEnvelopeDecoder()
    out: list[Any] = []
    for row in rows:
        if row[0] == _OUTCOME:
            _, events, outbox, snapshot_taken, no_command = row
            out.append(Outcome(
                events=tuple(decode(event) for event in events),
                outbox=tuple(objects[outbox]) if outbox != _NONE else (),
                snapshot_taken=snapshot_taken,
                no_command=no_command,
            ))  # fmt: skip
        else:
            out.append(objects[row[1]] if row[1] != _NONE else None)
    return out
