"""The wire format of batched Ray calls: what the driver sends is what the host gets, and back.

No Ray here: ``_wire`` turns batches into ``bytes`` and back; both ends run this code.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from mako_actors import CommandContext, EventEnvelope, ProcessIdentity, WorkflowError
from mako_actors.actors._actor import COMMAND, STATE, TIMEOUT, Op, Outcome
from mako_actors.actors._wire import OpDecoder, decode_results, encode_ops, encode_results
from mako_actors.deadlines import Deadline
from mako_actors.ids import CausationId, ConversationId, CorrelationId, DeadlineId, EventId, TenantId
from mako_actors.version import WorkflowId
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import LedgerState, Record

AT = datetime(2025, 11, 13, 13, 30, 0, 123456, tzinfo=UTC)


class Huge(BaseModel):
    """A command with an int msgpack cannot hold: the batch travels pickled."""

    model_config = ConfigDict(frozen=True)
    value: int


def roundtrip(items: list[tuple[int, ProcessIdentity, Op]]) -> list[tuple[int, ProcessIdentity, Op]]:
    return OpDecoder()(encode_ops(items))


def test_operations_arrive_as_sent() -> None:
    first = ProcessIdentity.new(TENANT, LEDGER_ID)
    other_tenant = TenantId.from_party_id("9900000000027")
    second = ProcessIdentity.new(other_tenant, WorkflowId.new("ledger", "FV2026-04-01"))
    ctx = CommandContext.new(first.tenant_id, first.process_id, first.workflow_id)
    deadline = Deadline(
        deadline_id=DeadlineId.new(), stream_id=first.stream_id, process_id=first.process_id,
        tenant_id=first.tenant_id, workflow_id=first.workflow_id, label="reminder", due_at=AT,
    )  # fmt: skip
    items = [
        (3, first, Op(COMMAND, command=Record(amount=1), enqueue=True, new=True)),  # plain fields
        (3, first, Op(COMMAND, command=Record(amount=2, remind_at=AT), ctx=ctx, max_attempts=4)),
        (3, first, Op(COMMAND, command=Record(amount=3), ctx=ctx.with_recorded_at(AT), enqueue=True)),
        (1, second, Op(COMMAND, command=Record(amount=-7, notify="x", register_key="k"), max_attempts=2)),
        (1, second, Op(TIMEOUT, deadline=deadline, enqueue=True)),
        (0, first, Op("take_snapshot", snapshot_interval=5)),
        (0, first, Op(STATE)),
        (2, second, Op("state_at", sequence=9)),
    ]
    got = roundtrip(items)
    assert [(p, i) for p, i, _ in got] == [(p, i) for p, i, _ in items]
    for (_, identity, op), (_, sent_identity, sent) in zip(got, items, strict=True):
        assert op == sent
        assert type(identity.stream_id) is type(sent_identity.stream_id)
        assert str(identity.process_id) == str(sent_identity.process_id)
        if op.command is not None:
            assert type(op.command) is type(sent.command)
            assert op.command.model_fields_set == sent.command.model_fields_set  # type: ignore[union-attr]
            assert op.command.model_dump(exclude_unset=True) == sent.command.model_dump(exclude_unset=True)  # type: ignore[union-attr]


def test_a_command_msgpack_cannot_hold_travels_pickled() -> None:
    identity = ProcessIdentity.new(TENANT, LEDGER_ID)
    items = [
        (0, identity, Op(COMMAND, command=Huge(value=2**70))),
        (0, identity, Op(COMMAND, command=Record(amount=1))),
    ]
    got = roundtrip(items)
    assert [op for _, _, op in got] == [op for _, _, op in items]


def _event(identity: ProcessIdentity, sequence: int, causation: bool) -> EventEnvelope:
    return EventEnvelope(
        event_id=EventId.new(), stream_id=identity.stream_id, process_id=identity.process_id,
        tenant_id=identity.tenant_id, workflow_id=identity.workflow_id, sequence=sequence,
        global_position=40 + sequence, event_type="ledger.recorded", schema_version=2,
        recorded_at=AT, correlation_id=CorrelationId.new(), conversation_id=ConversationId.new(),
        causation_id=CausationId.new() if causation else None,
        payload={"amount": 1, "unit": "kWh", "at": AT.isoformat()},
    )  # fmt: skip


def test_results_arrive_as_sent() -> None:
    a, b = ProcessIdentity.new(TENANT, LEDGER_ID), ProcessIdentity.new(TENANT, LEDGER_ID)
    outcome = Outcome(events=(_event(a, 1, False), _event(a, 2, True)), snapshot_taken=True)
    foreign = Outcome(events=(_event(b, 1, False),))  # not the identity's stream: sent whole
    error = WorkflowError.rejected("negative amount")
    results = [outcome, foreign, Outcome(no_command=True), LedgerState(total=3), None, 7, error]
    identities = [a, a, a, b, b, b, b]
    got = decode_results(identities, encode_results(identities, results))
    assert got[:6] == results[:6]
    assert results[:3] == got[:3]  # either side of ==
    assert repr(got[0]) == repr(outcome) and got[0].events is got[0].events  # built once, on first read
    assert isinstance(got[6], WorkflowError) and str(got[6]) == str(error)
    for sent, back in zip(outcome.events, got[0].events, strict=True):
        assert back.to_plain() == sent.to_plain()  # ids with their text, times to the microsecond
        assert back.recorded_at == AT and back.recorded_at.tzinfo is not None


def test_as_new_copies_every_field_of_an_op_and_sets_new() -> None:
    """``dispatch_new`` marks the first op of a spawned handle with ``as_new``; a field it forgot
    would be lost on the way to the host."""
    first = ProcessIdentity.new(TENANT, LEDGER_ID)
    ctx = CommandContext.new(first.tenant_id, first.process_id, first.workflow_id)
    deadline = Deadline(
        deadline_id=DeadlineId.new(), stream_id=first.stream_id, process_id=first.process_id,
        tenant_id=first.tenant_id, workflow_id=first.workflow_id, label="reminder", due_at=AT,
    )  # fmt: skip
    op = Op(COMMAND, Record(amount=3), ctx, True, 4, 7, deadline, 9)
    new = op.as_new()
    assert new == replace(op, new=True) and new is not op
    assert not op.new


def test_an_error_class_the_receiver_does_not_know_arrives_as_its_nearest_known_base() -> None:
    """A host raises an error class registered in a module the driver never imported (e.g.
    ``stores.lmdb``'s). Before, it arrived as a bare EngineError that was never transient, so a
    driver-side scheduler dead-lettered a deadline a retry would have fired."""
    from mako_actors.errors import EngineError, StoreError

    class DiskWasFull(StoreError):  # (not registered: unknown to the receiver)
        def __init__(self, message: str) -> None:
            super().__init__(message, transient=True)

    plain = DiskWasFull("no space left").to_plain()
    error = EngineError.from_plain(plain)
    assert type(error) is StoreError and error.transient and "no space left" in str(error)
    # What older senders wrote (no bases, no flag) still reads as before.
    old = EngineError.from_plain({"error": "DiskWasFull", "message": "m", "args": {}})
    assert type(old) is EngineError and not old.transient


def test_a_command_class_of_a_script_or_notebook_travels_by_value(monkeypatch: Any) -> None:
    """A class defined in a notebook or script lives in ``__main__``: pickled by name, a Ray
    worker (whose ``__main__`` is its own) could not read the batch, and every command in it
    failed with a raw ``RayTaskError``. It travels by value (``cloudpickle``), as Ray sends it."""
    main = sys.modules["__main__"]

    class NotebookPay(BaseModel):
        amount: int

    NotebookPay.__module__, NotebookPay.__qualname__ = "__main__", "NotebookPay"
    monkeypatch.setattr(main, "NotebookPay", NotebookPay, raising=False)
    identity = ProcessIdentity.new(TENANT, LEDGER_ID)
    data = encode_ops([(0, identity, Op(COMMAND, command=NotebookPay(amount=5)))])
    monkeypatch.delattr(main, "NotebookPay")  # the worker's ``__main__`` has no such class
    [(_, _, op)] = OpDecoder()(data)
    assert type(op.command).__name__ == "NotebookPay" and op.command.amount == 5


def test_a_notebooks_exception_class_travels_back_as_itself() -> None:
    """A workflow's exception class of a notebook or script (``__main__``) cannot be pickled by
    name on a worker: it came back as an ``EngineError`` naming it. It travels by value now."""
    from mako_actors.actors.ray_system import _as_result, _Raised

    class NotebookError(Exception):
        pass

    NotebookError.__module__, NotebookError.__qualname__ = "__main__", "NotebookError"
    result = _as_result(NotebookError("mine"))
    assert isinstance(result, _Raised) and str(result.exc) == "mine"
