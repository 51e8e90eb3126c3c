"""The one command path: decide (pure) → stamp → a ``Commit`` ready for the store.

``Process`` and the actor runtime both turn a command into a commit here, so every API variant
(plain, with context, with snapshot, with outbox, with retry, on actors) shares one body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from mako_actors._frozen import positional_maker
from mako_actors.deadlines import Deadline
from mako_actors.envelope import (
    _PLACEHOLDER_FIELDS,
    CommandContext,
    EventEnvelope,
    ProcessIdentity,
    trusted,
    utc,
)
from mako_actors.errors import InvalidArgument, WorkflowError
from mako_actors.ids import (
    CausationId,
    ConversationId,
    CorrelationId,
    DeadlineId,
    EventId,
    OutboxMessageId,
)
from mako_actors.outbox import PLAIN_ROW, OutboxMessage, PendingOutbox, has_plain_payload
from mako_actors.snapshot import Snapshot
from mako_actors.store import Commit, JournalEntry
from mako_actors.version import ExpectedVersion
from mako_actors.workflow import Event, Workflow, WorkflowOutput, event_payload

C = TypeVar("C", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)

# Every outbox row of ``prepare`` shares one fields-set (frozen models; see ``trusted``).
_OUTBOX_FIELDS: set[str] = set(OutboxMessage.model_fields)
# ``ExpectedVersion.exact(v)`` for the versions most commits expect: immutable, so shared.
_EXACT = tuple(ExpectedVersion.exact(v) for v in range(4096))
_EXACT_MAX = len(_EXACT)
# Read once: an attribute of a model class goes through its metaclass's ``__getattr__`` hook
# (~1k instructions each); once per command.
_coerce = WorkflowOutput.coerce
# What an output may hold only with an event: its field, and its name in ``prepare``'s refusal.
_CAUSED = (
    ("outbox", "outbox messages"),
    ("deadlines", "deadlines"),
    ("cancel_deadlines", "deadline cancellations"),
    ("register_keys", "registry keys"),
    ("journal", "journal entries"),
)
_deadline_of = Deadline.of_pending


@dataclass(frozen=True, slots=True)
class CommandOptions:
    """What a command path persists and how it loads.

    ``enqueue``: persist outbox messages and deadlines (set and cancelled) with the events.
    ``use_snapshot``: start state reconstruction from the latest snapshot.
    ``snapshot_interval``: write a snapshot in the same transaction whenever the stream's
    version crosses a multiple of it (0: never). ``max_attempts``: retries on
    ``VersionConflict``, reloading state each time. ``deadline``: a deadline this command
    discharges (removed in the same transaction). ``fold``: apply the events to get the state
    after them; False for a caller that never reads ``Prepared.state`` (it is then the state
    before them), unless ``snapshot_interval`` asks for a snapshot of it.
    """

    enqueue: bool = False
    use_snapshot: bool = False
    snapshot_interval: int = 0
    max_attempts: int = 1
    deadline: Deadline | None = None
    fold: bool = True


@dataclass(slots=True)
class Prepared(Generic[S]):
    """A decided command: the commit to write and what follows once it is written.

    Never changed once made (not ``frozen``: ``prepare`` builds one per command, and a frozen
    dataclass's fields can only be set through ``object.__setattr__`` or their descriptors).
    ``state`` is the state after the events, or before them without ``CommandOptions.fold``.
    """

    commit: Commit | None
    events: tuple[EventEnvelope, ...]
    outbox: tuple[OutboxMessage, ...]
    state: S
    snapshot: Snapshot | None


# ``Commit`` and ``Prepared`` of ``prepare`` (once per command), built without the dataclass
# ``__init__``: a frozen dataclass's sets each field with ``object.__setattr__`` (~9k
# instructions for ``Commit``'s ten, against ~3.5k for ``positional_maker``'s plain stores).
# Every field is given, in declaration order; ``positional_maker`` refuses (at import) a
# ``Commit`` whose slots are not exactly its fields.
_new_object = object.__new__
_commit = positional_maker(Commit)


def _prepared(
    commit: Commit | None,
    events: tuple[EventEnvelope, ...],
    outbox: tuple[OutboxMessage, ...],
    state: S,
    snapshot: Snapshot | None,
) -> Prepared[S]:
    # (``Prepared(...)`` without the class call and ``__init__`` frame: once per command.)
    prepared: Prepared[S] = _new_object(Prepared)
    prepared.commit = commit
    prepared.events = events
    prepared.outbox = outbox
    prepared.state = state
    prepared.snapshot = snapshot
    return prepared


def decide(workflow: Workflow[Any, S], state: S, command: BaseModel) -> WorkflowOutput:
    """Run the pure handler; pydantic validation failures become ``WorkflowError``."""
    try:
        return workflow.checked(_coerce(workflow.handle(state, command)))
    except ValidationError as exc:
        raise WorkflowError.validation_failed(f"{type(command).__name__}: {exc}") from None


def prepare(
    workflow: Workflow[Any, S],
    identity: ProcessIdentity,
    state: S,
    version: int,
    output: WorkflowOutput,
    ctx: CommandContext | None,
    now: datetime,
    options: CommandOptions,
) -> Prepared[S]:
    """Stamp a workflow's output into envelopes and rows, and the ``Commit`` that stores them.

    Pure apart from fresh ids: the outbox and deadline ids derive from the first event's id,
    so they are stable once the commit is written. ``ctx`` None: fresh correlation and
    conversation ids, no causation (what ``CommandContext.new`` would give, without the
    object). A ``ctx`` with ``recorded_at`` stamps everything at that instant, not at ``now``.
    Raises ``WorkflowError`` (invalid state) when the output holds outbox messages, deadlines,
    deadline cancellations, registry keys or journal entries but no event to cause them:
    without an event there is nothing to commit them with, and dropping them would lose them.
    """
    # Fields of the models read from their ``__dict__``: a model attribute goes through
    # pydantic's ``__getattr__`` lookup hook, which a dict item skips (once per command).
    out = output.__dict__
    ident = identity.__dict__
    pending_events = out["events"]
    if not pending_events:
        returned = [what for field, what in _CAUSED if out[field]]
        if returned:
            raise WorkflowError.invalid_state(
                f"{workflow.name}: handle returned {', '.join(returned)} but no event to store them with"
            )
        return _prepared(None, (), (), state, None)
    # Every value below already has its field's type (identity and context are validated
    # models, ``event_payload`` is plain data), so the envelopes skip pydantic validation.
    if ctx is None:
        correlation, conversation, causation = CorrelationId.new(), ConversationId.new(), None
    else:
        context = ctx.__dict__
        correlation, conversation = context["correlation_id"], context["conversation_id"]
        causation = context["causation_id"]
        at = context.get("recorded_at")
        if at is not None:  # historic input (``CommandContext.with_recorded_at``): UTC already
            now = at
    recorded_at = now if now.tzinfo is UTC else utc(now)
    interval = options.snapshot_interval
    # Not folded when the caller never reads the new state: ``apply`` is pure and accepts
    # every event ``handle`` emits (the workflow's contract), so skipping it changes nothing.
    fold = options.fold or interval > 0
    new_state = state
    if len(pending_events) == 1:  # most commands: no list, no loop
        event = pending_events[0]
        if fold:
            new_state = workflow.apply(state, event)
        first = _envelope(ident, version + 1, event, recorded_at, correlation, conversation, causation)
        events: tuple[EventEnvelope, ...] = (first,)
    else:
        apply = workflow.apply
        envelopes = []
        for offset, event in enumerate(pending_events, start=1):
            if fold:
                new_state = apply(new_state, event)
            envelopes.append(
                _envelope(
                    ident, version + offset, event, recorded_at, correlation, conversation, causation
                )
            )
        events = tuple(envelopes)
        first = events[0]
    cause: EventId = first.__dict__["event_id"]
    # (The ``if`` guards skip building empty generators: most commands have no outbox,
    # deadlines or registry keys, and this runs once per command.)
    pending_outbox = out["outbox"]
    outbox: tuple[OutboxMessage, ...] = ()
    if len(pending_outbox) == 1:  # most answers: one message, no generator
        outbox = (
            _stamp_outbox(ident, correlation, conversation, cause, 0, pending_outbox[0], recorded_at),
        )
    elif pending_outbox:
        outbox = tuple(
            _stamp_outbox(ident, correlation, conversation, cause, index, pending, recorded_at)
            for index, pending in enumerate(pending_outbox)
        )
    new_version = version + len(events)
    snapshot = None
    if interval > 0 and version // interval != new_version // interval:
        snapshot = workflow.snapshot_of(
            ident["stream_id"], new_version, new_state, now, event_id=events[-1].__dict__["event_id"]
        )
    enqueue = options.enqueue
    deadlines: tuple[Deadline, ...] = ()
    if enqueue and out["deadlines"]:
        deadlines = tuple(
            _deadline_of(pending, DeadlineId.for_event(cause, index), identity, cause)
            for index, pending in enumerate(out["deadlines"])
        )
    discharged = options.deadline
    register_keys = out["register_keys"]
    journal = out["journal"]
    commit = _commit(
        ident["stream_id"],
        _EXACT[version] if version < _EXACT_MAX else ExpectedVersion.exact(version),
        events,
        outbox if enqueue else (),
        deadlines,
        out["cancel_deadlines"] if enqueue else (),
        (),
        snapshot,
        tuple((key, identity) for key in register_keys) if register_keys else (),
        tuple(JournalEntry(ident["tenant_id"], key, data) for key, data in journal) if journal else (),
        discharged.deadline_id if discharged is not None else None,
    )
    return _prepared(commit, events, outbox, new_state, snapshot)


def _envelope(
    identity: dict[str, Any],
    sequence: int,
    event: Event,
    recorded_at: datetime,
    correlation: CorrelationId,
    conversation: ConversationId,
    causation: CausationId | None,
) -> EventEnvelope:
    """The placeholder envelope of one decided event: ``EventEnvelope._placeholder``, inline.

    ``identity``: the fields (``__dict__``) of the process's ``ProcessIdentity``.
    """
    # ``_PLACEHOLDER_FIELDS`` as its fields-set marks it a placeholder (see ``stamped``).
    return trusted(
        EventEnvelope,
        {
            "event_id": EventId.new(),
            "stream_id": identity["stream_id"],
            "process_id": identity["process_id"],
            "tenant_id": identity["tenant_id"],
            "workflow_id": identity["workflow_id"],
            "sequence": sequence,
            "global_position": 0,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "recorded_at": recorded_at,
            "correlation_id": correlation,
            "conversation_id": conversation,
            "causation_id": causation,
            "payload": event_payload(event),
        },
        _PLACEHOLDER_FIELDS,
    )


def _stamp_outbox(
    identity: dict[str, Any],
    correlation: CorrelationId,
    conversation: ConversationId,
    cause: EventId,
    index: int,
    pending: PendingOutbox,
    now: datetime,
) -> OutboxMessage:
    """The stored row of one ``PendingOutbox`` (``now`` aware UTC), built without re-validation.

    ``identity``: the fields (``__dict__``) of the process's ``ProcessIdentity``.

    Every value already has its field's type: the ids come from validated models or are
    derived here, ``pending`` is a validated ``PendingOutbox`` (``not_before`` UTC, ``payload``
    plain data) and ``now`` was normalized to UTC by the caller.
    """
    message_id = OutboxMessageId.for_event(cause, index)
    message = pending.__dict__
    # A payload built as plain data by our own code keeps its mark (``PendingOutbox.of_plain``).
    return trusted(
        OutboxMessage,
        {
            "message_id": message_id,
            "idempotency_key": message_id._text,
            "stream_id": identity["stream_id"],
            "process_id": identity["process_id"],
            "tenant_id": identity["tenant_id"],
            "causation_event_id": cause,
            "correlation_id": correlation,
            "conversation_id": conversation,
            "message_type": message["message_type"],
            "recipient": message["recipient"],
            "payload": message["payload"],
            "created_at": now,
            "not_before": message["not_before"],
            "next_attempt_at": message["not_before"] or now,
            "attempts": 0,
            "last_error": None,
            "position": 0,  # assigned by the store on enqueue
        },
        PLAIN_ROW if has_plain_payload(pending) else _OUTBOX_FIELDS,
    )


def require_command(command: object) -> None:
    """``InvalidArgument`` for a missing command (``None``): ``Process`` took it for a deadline's
    "nothing to do" and wrote nothing, an actor failed on an ``AssertionError``."""
    if command is None:
        raise InvalidArgument("a command is needed, got None")
