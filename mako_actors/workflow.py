"""The domain logic of one process type: pure functions over pydantic models.

A workflow is four things (as in Akka typed persistence): a name, an empty state, a command
handler and an event handler::

    class Opened(Event, type="account.opened"):          # stable type name, schema version 1
        owner: str

    class Account(Workflow[OpenCmd, AccountState]):
        name = "account"
        state_schema_version = 1
        events = (Opened,)

        def initial_state(self) -> AccountState: ...
        def handle(self, state, command) -> WorkflowOutput | list[Event]: ...
        def apply(self, state, event) -> AccountState: ...

``handle`` and ``apply`` must be pure: no I/O, no clock, no randomness. Time enters as command
data. ``handle`` refuses a command by raising ``WorkflowError``; it may return a plain list of
events as shorthand for ``WorkflowOutput(events=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from mako_actors.deadlines import Deadline, PendingDeadline
from mako_actors.envelope import EventEnvelope, trusted
from mako_actors.errors import DeserializationError, InvalidArgument
from mako_actors.ids import EventId, StreamId
from mako_actors.outbox import PendingOutbox
from mako_actors.snapshot import Snapshot
from mako_actors.version import check_workflow_name


class Event(BaseModel):
    """Base of every event model: frozen, with a stable ``event_type`` and ``schema_version``.

    Declare both as class keywords: ``class Confirmed(Event, type="gpke.confirmed", version=2)``.
    The type name is what is stored; renaming the class never breaks old streams.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, *, type: str | None = None, version: int = 1, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.event_type = type if type is not None else cls.__name__
        if version < 1:
            raise InvalidArgument(f"{cls.__name__}: schema version must be >= 1, got {version}")
        cls.schema_version = version

    @classmethod
    def payload_dumper(cls) -> Callable[[Any], dict[str, Any]]:
        """The function storing an event of this class calls for its payload: its
        ``model_dump(mode="json")``, pydantic's serializer called directly when the class does
        not override ``model_dump``.

        Called once per class (``event_payload`` keeps the result); a subclass may return a
        faster function giving the same dict.
        """
        if cls.model_dump is _MODEL_DUMP:
            serializer = cls.__pydantic_serializer__
            dump: Callable[[Any], dict[str, Any]] = partial(serializer.to_python, mode="json")
            return dump
        return _json_model_dump


def _json_model_dump(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


class WorkflowOutput(BaseModel):
    """What one command produces: events, plus messages and timers to store with them.

    ``register_keys`` are business keys (e.g. MaLo + transaction reference) to map to this
    process in the registry, in the same write; ``cancel_deadlines`` names labels of this
    process's deadlines that the command discharges; ``journal`` appends ``(key, plain data)``
    to the tenant's journal ``key`` (a read model, e.g. a MaLo's supply assignments) in the
    same write. Registry and journal keys are bounded in UTF-8 bytes (495 and 486: see
    ``mako_actors.store``). Everything but ``events`` is stored with the events: an output
    holding any of it without an event is refused (``WorkflowError``, invalid state), nothing
    is written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    events: tuple[Event, ...] = ()
    outbox: tuple[PendingOutbox, ...] = ()
    deadlines: tuple[PendingDeadline, ...] = ()
    cancel_deadlines: tuple[str, ...] = ()
    register_keys: tuple[str, ...] = ()
    journal: tuple[tuple[str, dict[str, Any]], ...] = ()

    @classmethod
    def of(cls, *events: Event) -> WorkflowOutput:
        """Events only."""
        if cls is WorkflowOutput:
            for event in events:
                if not isinstance(event, Event):
                    break
            else:
                # What validation would build, without it (once per command on the hot path).
                return trusted(cls, {**_EMPTY_OUTPUT, "events": events}, _EVENTS_SET)
        return cls(events=events)  # pydantic names what is not an event

    def with_outbox(self, *messages: PendingOutbox) -> WorkflowOutput:
        return self._with("outbox", self.outbox + messages)

    def with_deadlines(self, *deadlines: PendingDeadline) -> WorkflowOutput:
        return self._with("deadlines", self.deadlines + deadlines)

    def _with(self, name: str, value: tuple[Any, ...]) -> WorkflowOutput:
        """``model_copy(update={name: value})`` (no validation either), without its generic copying."""
        fields = dict(self.__dict__)
        fields[name] = value
        fields_set = self.__pydantic_fields_set__
        return trusted(type(self), fields, fields_set if name in fields_set else fields_set | {name})

    @staticmethod
    def coerce(value: WorkflowOutput | Sequence[Event] | Event) -> WorkflowOutput:
        """Accept the shorthands ``handle`` may return: one event or a list of events."""
        if isinstance(value, WorkflowOutput):
            return value
        if isinstance(value, Event):
            return WorkflowOutput(events=(value,))
        events = tuple(value)
        for item in events:
            if not isinstance(item, Event):
                raise InvalidArgument(
                    f"handle returned {type(item).__name__!r} in its event list; expected Event"
                )
        return WorkflowOutput(events=events)


# ``WorkflowOutput.of``'s template (fields in declaration order) and its shared fields-set.
_EMPTY_OUTPUT: dict[str, Any] = {name: () for name in WorkflowOutput.model_fields}
_EVENTS_SET: set[str] = {"events"}

C = TypeVar("C", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)


class Workflow(Generic[C, S]):
    """Base class of a workflow; subclass it and set ``name``, ``events`` and the methods.

    ``events`` lists every event model the workflow can emit; decoding a stored event looks up
    its type there. ``state_schema_version`` invalidates snapshots when the state model changes.
    """

    name: ClassVar[str]
    state_schema_version: ClassVar[int] = 1
    events: ClassVar[tuple[type[Event], ...]] = ()

    _event_types: ClassVar[dict[str, type[Event]]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        types: dict[str, type[Event]] = {}
        if not isinstance(cls.events, tuple | list):
            raise InvalidArgument(f"{cls.__name__}: events must be a tuple of Event classes: {cls.events!r}")
        for model in cls.events:
            if not (isinstance(model, type) and issubclass(model, Event)):
                raise InvalidArgument(f"{cls.__name__}: events holds {model!r}, which is no Event class")
            if model.event_type in types and types[model.event_type] is not model:
                raise InvalidArgument(f"{cls.__name__}: event type {model.event_type!r} is declared twice")
            types[model.event_type] = model
        cls._event_types = types

    def check_name(self) -> str:
        """The workflow's ``name``; ``InvalidArgument`` if it has none or not one a
        ``WorkflowId`` takes (lower-case letters, digits, '-', '_', '.')."""
        name = getattr(self, "name", None)
        if name is None:
            raise InvalidArgument(f"workflow {type(self).__name__} has no name (its class attribute 'name')")
        check_workflow_name(name, f"workflow {type(self).__name__}")
        return cast(str, name)

    def initial_state(self) -> S:
        """The state of a process with no events."""
        raise NotImplementedError

    def handle(self, state: S, command: C) -> WorkflowOutput | Sequence[Event] | Event:
        """Decide what ``command`` does in ``state``; raise ``WorkflowError`` to refuse it."""
        raise NotImplementedError

    def apply(self, state: S, event: Event) -> S:
        """The state after ``event``; must accept every event ``handle`` ever emitted."""
        raise NotImplementedError

    def on_deadline(self, deadline: Deadline, state: S) -> C | None:
        """The compensation command for a due deadline, or ``None`` to let it pass."""
        return None

    def upcast(self, event_type: str, from_version: int, payload: dict[str, Any]) -> dict[str, Any]:
        """Turn a stored payload of an older schema version into the current one.

        Called on load when a stored event's version is below its model's; the default
        refuses, so an unhandled old version is a clear ``DeserializationError``.
        """
        raise DeserializationError(
            f"{self.name}: no upcaster for event {event_type!r} from schema version {from_version}"
        )

    # -- engine helpers (not for overriding) -------------------------------------------------

    @property
    def state_type(self) -> type[S]:
        """The state model's class (taken from ``initial_state()``)."""
        return type(self.initial_state())

    def event_model(self, event_type: str) -> type[Event]:
        """The model for a stored type name; raises ``DeserializationError`` if unknown."""
        model = self._event_types.get(event_type)
        if model is None:
            raise DeserializationError(
                f"{self.name}: unknown event type {event_type!r}; add it to {type(self).__name__}.events"
            )
        return model

    def decode_event(self, envelope: EventEnvelope) -> Event:
        """The event model of a stored envelope, upcasting old schema versions first."""
        model = self.event_model(envelope.event_type)
        payload: Mapping[str, Any] = envelope.payload
        if envelope.schema_version < model.schema_version:
            payload = self.upcast(envelope.event_type, envelope.schema_version, dict(payload))
        elif envelope.schema_version > model.schema_version:
            raise DeserializationError(
                f"{self.name}: event {envelope.event_type!r} at sequence {envelope.sequence} has "
                f"schema version {envelope.schema_version}, newer than the code's "
                f"{model.schema_version}"
            )
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise DeserializationError(
                f"{self.name}: event {envelope.event_type!r} at sequence {envelope.sequence} of "
                f"{envelope.stream_id} does not fit {model.__name__}: {exc}"
            ) from None

    def decode_state(self, plain: Mapping[str, Any]) -> S:
        """The state model from snapshot data; raises ``DeserializationError`` if it does not fit."""
        try:
            return self.state_type.model_validate(plain)
        except ValidationError as exc:
            raise DeserializationError(f"{self.name}: snapshot state does not fit: {exc}") from None

    def snapshot_of(
        self,
        stream_id: StreamId,
        sequence: int,
        state: S,
        taken_at: datetime,
        *,
        event_id: EventId | None = None,
    ) -> Snapshot:
        """A snapshot of ``state`` after event ``sequence``, stamped with this workflow's versions.

        Pass that event's ``event_id``: without it, the snapshot also counts on a stream that
        reached ``sequence`` with other events (see ``Snapshot``).
        """
        return Snapshot(
            stream_id=stream_id,
            sequence=sequence,
            state_schema_version=self.state_schema_version,
            workflow_name=self.name,
            state=state.model_dump(mode="json"),
            taken_at=taken_at,
            event_id=event_id,
        )

    def accepts_snapshot(self, snapshot: Snapshot | None) -> bool:
        """Whether ``snapshot`` was taken by this workflow at its current state schema version."""
        return (
            snapshot is not None
            and snapshot.workflow_name == self.name
            and snapshot.state_schema_version == self.state_schema_version
        )

    def checked(self, output: WorkflowOutput) -> WorkflowOutput:
        """``output``, after checking that every event's model is declared in ``events``.

        Raises ``InvalidArgument`` otherwise: an undeclared event would be stored and then no
        command could load the stream again (``DeserializationError`` on every replay).
        One dict lookup per event.
        """
        types = self._event_types
        for event in output.events:
            if types.get(event.event_type) is not type(event):
                raise InvalidArgument(
                    f"{self.name}: handle returned {type(event).__name__} (type "
                    f"{event.event_type!r}), which is not in {type(self).__name__}.events; "
                    "nothing was written"
                )
        return output

    def fold(self, state: S, envelopes: Sequence[EventEnvelope]) -> S:
        """Apply stored events in order to ``state``."""
        for envelope in envelopes:
            state = self.apply(state, self.decode_event(envelope))
        return state


def event_payload(event: Event) -> dict[str, Any]:
    """An event as plain data for storage: ``event.model_dump(mode="json")``.

    Through its class's ``payload_dumper``, asked once per class (once per event, so
    ``model_dump``'s keyword wrapper is skipped where the class allows it).
    """
    dump = _PAYLOAD_DUMPERS.get(type(event))
    if dump is None:
        dump = _payload_dumper(type(event))
    return dump(event)


def _payload_dumper(cls: type[Event]) -> Callable[[Any], dict[str, Any]]:
    dump = cls.payload_dumper()
    # A class whose schema is not complete yet (forward references) has a stand-in
    # serializer until it is rebuilt: asked again next time.
    if cls.__pydantic_complete__:
        _PAYLOAD_DUMPERS[cls] = dump
    return dump


_PAYLOAD_DUMPERS: dict[type[Event], Callable[[Any], dict[str, Any]]] = {}
_MODEL_DUMP = BaseModel.model_dump
