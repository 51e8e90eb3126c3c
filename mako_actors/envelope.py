"""What travels with a command and what is stored around an event.

``ProcessIdentity`` (the four ids of a process, for routing tables), ``CommandContext`` (the
ids one command carries into its events) and ``EventEnvelope`` (a persisted event). All are
frozen, keyword-only pydantic models that serialize to plain values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Protocol, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python

from mako_actors.errors import InvalidArgument
from mako_actors.ids import (
    CausationId,
    ConversationId,
    CorrelationId,
    EventId,
    ProcessId,
    StreamId,
    TenantId,
)
from mako_actors.version import WorkflowId


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=False)


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; naive datetimes are rejected (ambiguous in Berlin)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no time zone; pass an aware one")
    return value.astimezone(UTC)


AwareUtc = Annotated[datetime, AfterValidator(utc)]
"""A datetime field that must be aware and is stored as UTC."""


M = TypeVar("M", bound=BaseModel)


def trusted(cls: type[M], fields: dict[str, Any], fields_set: set[str] | None = None) -> M:
    """A ``cls`` of already-typed, already-checked ``fields`` (every field, in declaration order).

    For the engine's hot paths only, where each value already has its field's type (ids of
    their id types, datetimes aware UTC): it skips validation, doing what ``model_construct``
    does without its per-field Python loop. Wrong values are not caught here.

    ``fields_set``: a set of the names in ``fields`` that many instances may share (one
    tracked object less per model for the garbage collector). Sharing is safe for frozen
    models only: pydantic copies the set before it changes one (``model_copy``).
    """
    if fields_set is None:
        fields_set = set(fields)
    if _BUILDS_MODELS:
        model = _ModelSlots()
        model.__dict__ = fields
        model.__pydantic_fields_set__ = fields_set
        model.__pydantic_extra__ = None
        model.__pydantic_private__ = None
        try:
            model.__class__ = cls
            return model  # type: ignore[no-any-return]
        except TypeError:  # a model class of another layout (its own ``__slots__``)
            pass
    return _by_descriptors(cls, fields, fields_set)


class _ModelSlots(BaseModel):
    """A model being built (``trusted``): ``BaseModel``'s slots, with ``object``'s own ``__setattr__``.

    ``trusted`` fills one with plain attribute stores (which the interpreter specializes for
    slots), then makes it the model it is by assigning ``__class__`` (Python allows that
    between classes of the same layout: every model class without ``__slots__`` of its own).
    Setting the four slots through their descriptors instead costs ~4.2k instructions per
    model (each ``__set__`` call packs its arguments into a tuple); this ~2.2k. The result is
    an ordinary instance of the model class. Never handed out; has no fields.
    """

    # Both, so that the class gets the generic setter the interpreter can specialize for.
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__
    __init__ = object.__init__  # not validation: ``_ModelSlots()`` is bare


def _by_descriptors(cls: type[M], fields: dict[str, Any], fields_set: set[str]) -> M:
    """What ``trusted`` builds, with each slot set through its descriptor (the fallback)."""
    model = _new_object(cls)
    _set_dict(model, fields)
    _set_fields_set(model, fields_set)
    _set_extra(model, None)
    _set_private(model, None)
    return model


# ``BaseModel``'s four slots, set through their descriptors (as ``object.__setattr__`` does,
# without looking each one up in the model class's MRO first).
_new_object = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
# ``trusted`` sets exactly these; a pydantic with other slots gets the descriptor route.
_BUILDS_MODELS = BaseModel.__slots__ == (
    "__dict__",
    "__pydantic_fields_set__",
    "__pydantic_extra__",
    "__pydantic_private__",
)


class PlainModel(BaseModel):
    """A frozen, strict model that round-trips through plain data (msgpack-ready dicts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


class _OfProcess(Protocol):
    """Anything stored for one process: an ``EventEnvelope``, a ``Deadline``."""

    @property
    def stream_id(self) -> StreamId: ...
    @property
    def process_id(self) -> ProcessId: ...
    @property
    def tenant_id(self) -> TenantId: ...
    @property
    def workflow_id(self) -> WorkflowId: ...


class ProcessIdentity(_Frozen):
    """The stream, process, tenant and workflow ids of one process, as one serializable value.

    Persist it in a routing table and pass it to ``Process.from_identity`` to re-attach. The
    stream id must be the stream of the process under the tenant (``InvalidArgument``
    otherwise): a forged identity would write one tenant's events into another's stream.
    """

    stream_id: StreamId
    process_id: ProcessId
    tenant_id: TenantId
    workflow_id: WorkflowId

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidArgument(f"invalid ProcessIdentity: {exc}") from None

    @model_validator(mode="after")
    def _stream_of_process(self) -> Self:
        if self.stream_id != StreamId.for_process(self.tenant_id, self.process_id):
            raise InvalidArgument(
                f"ProcessIdentity: stream {self.stream_id} is not the stream of process "
                f"{self.process_id} of tenant {self.tenant_id}"
            )
        return self

    @classmethod
    def new(cls, tenant_id: TenantId, workflow_id: WorkflowId) -> ProcessIdentity:
        """The identity of a brand-new process (random process id)."""
        return cls.of_process(tenant_id, ProcessId.new(), workflow_id)

    @classmethod
    def of_process(
        cls, tenant_id: TenantId, process_id: ProcessId, workflow_id: WorkflowId
    ) -> ProcessIdentity:
        """The identity of ``process_id`` of ``tenant_id`` (its stream id follows from both)."""
        if (
            cls is ProcessIdentity
            and type(tenant_id) is TenantId
            and type(process_id) is ProcessId
            and type(workflow_id) is WorkflowId
        ):
            # Typed ids are valid by construction and the stream is derived from them, so
            # there is nothing left to validate (``spawn`` runs this once per new process).
            return trusted(
                cls,
                {
                    "stream_id": StreamId.for_process(tenant_id, process_id),
                    "process_id": process_id,
                    "tenant_id": tenant_id,
                    "workflow_id": workflow_id,
                },
                _IDENTITY_FIELDS,
            )
        return cls(
            stream_id=StreamId.for_process(tenant_id, process_id),
            process_id=process_id,
            tenant_id=tenant_id,
            workflow_id=workflow_id,
        )

    @classmethod
    def of(cls, record: _OfProcess) -> ProcessIdentity:
        """The identity of the process a stored event or deadline belongs to."""
        return cls(
            stream_id=record.stream_id,
            process_id=record.process_id,
            tenant_id=record.tenant_id,
            workflow_id=record.workflow_id,
        )

    def to_plain(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, written out: same keys, order and values, several times cheaper.

        (Written once per registry key a command binds.)
        """
        if type(self) is not ProcessIdentity:  # a subclass may add fields
            return self.model_dump(mode="json")
        try:
            return {
                "stream_id": str(self.stream_id),
                "process_id": self.process_id._text,
                "tenant_id": self.tenant_id._text,
                "workflow_id": workflow_text(self.workflow_id),
            }
        except AttributeError:  # built without validation from other values (``model_construct``)
            return self.model_dump(mode="json")


class CommandContext(_Frozen):
    """The ids one command carries into every event it produces.

    ``correlation_id`` is the root of the chain (shared by retransmissions of one interchange),
    ``conversation_id`` groups a business conversation, ``causation_id`` names the event or
    message that caused this command, if any. ``recorded_at``: the instant the command's events,
    outbox messages and snapshot are stamped with instead of the clock's reading when it is
    decided (``with_recorded_at``): for historic input, e.g. a replay stamps each interchange's
    commands with its receipt instant, whenever the pipeline gets to them. Order stays the
    store's ``global_position``; nothing decides by this stamp.
    """

    tenant_id: TenantId
    process_id: ProcessId
    workflow_id: WorkflowId
    correlation_id: CorrelationId
    conversation_id: ConversationId
    causation_id: CausationId | None = None
    recorded_at: AwareUtc | None = None

    @classmethod
    def new(cls, tenant_id: TenantId, process_id: ProcessId, workflow_id: WorkflowId) -> CommandContext:
        """A context with fresh random correlation and conversation ids."""
        # Built without re-validation: the arguments are typed ids (mypy checks callers) and
        # this runs once per command, where validating it cost a tenth of the actor path.
        return trusted(
            cls,
            {
                "tenant_id": tenant_id,
                "process_id": process_id,
                "workflow_id": workflow_id,
                "correlation_id": CorrelationId.new(),
                "conversation_id": ConversationId.new(),
                "causation_id": None,
                "recorded_at": None,
            },
            _CONTEXT_FIELDS,
        )

    def require_process(self, identity: ProcessIdentity) -> None:
        """Raise ``InvalidArgument`` unless this context was made for ``identity``'s process.

        A context carries its tenant, process and workflow into the events; one made for
        another process must not be used to write into this one.
        """
        # A context made for ``identity`` (``context_for_inbound``, ``new_context``) holds its
        # very id objects: checked by identity first, from ``__dict__`` (a model attribute
        # goes through pydantic's ``__getattr__`` hook; once per command).
        mine, theirs = self.__dict__, identity.__dict__
        if (
            mine["process_id"] is theirs["process_id"]
            and mine["tenant_id"] is theirs["tenant_id"]
            and mine["workflow_id"] is theirs["workflow_id"]
        ):
            return
        if (
            self.process_id != identity.process_id
            or self.tenant_id != identity.tenant_id
            or self.workflow_id != identity.workflow_id
        ):
            raise InvalidArgument(
                f"command context of process {self.process_id} (tenant {self.tenant_id}, "
                f"workflow {self.workflow_id}) used for process {identity.process_id} "
                f"(tenant {identity.tenant_id}, workflow {identity.workflow_id})"
            )

    def with_causation(self, causation: CausationId | EventId) -> CommandContext:
        """A copy caused by ``causation`` (an event id converts)."""
        return self._with("causation_id", CausationId(causation))

    def with_conversation(self, conversation_id: ConversationId) -> CommandContext:
        """A copy in the business conversation ``conversation_id``."""
        return self._with("conversation_id", conversation_id)

    def with_correlation(self, correlation_id: CorrelationId) -> CommandContext:
        """A copy with the correlation root ``correlation_id``."""
        return self._with("correlation_id", correlation_id)

    def with_recorded_at(self, instant: datetime) -> CommandContext:
        """A copy whose command is stamped at ``instant`` (aware; stored as UTC), not at the
        clock's reading. ``ValueError`` for a naive ``instant``."""
        return self._with("recorded_at", utc(instant))

    def _with(self, name: str, value: Any) -> CommandContext:
        """``model_copy(update={name: value})`` (no validation either), without its generic copying.

        Same values and fields-set as ``model_copy``; a context whose fields-set already holds
        ``name`` (every ``new`` one) shares it (frozen, see ``trusted``).
        """
        if type(self) is not CommandContext:  # a subclass may carry private or extra data
            return self.model_copy(update={name: value})
        fields = dict(self.__dict__)
        fields[name] = value
        fields_set = self.__pydantic_fields_set__
        return trusted(CommandContext, fields, fields_set if name in fields_set else fields_set | {name})


class EventEnvelope(_Frozen):
    """A persisted event with everything needed to route, audit and replay it.

    ``sequence`` counts from 1 within the stream; ``global_position`` counts from 1 across the
    whole store, in commit order (projections read by it). ``payload`` is the event model as
    plain data at ``schema_version``; ``Workflow.decode_event`` turns it back into the model.
    """

    event_id: EventId
    stream_id: StreamId
    process_id: ProcessId
    tenant_id: TenantId
    workflow_id: WorkflowId
    sequence: int
    global_position: int = 0
    event_type: str
    schema_version: int
    recorded_at: datetime
    correlation_id: CorrelationId
    conversation_id: ConversationId
    causation_id: CausationId | None = None
    payload: dict[str, Any]

    @field_validator("recorded_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return utc(value)

    @classmethod
    def _trusted(cls, fields: dict[str, Any], fields_set: set[str]) -> EventEnvelope:
        """An envelope of already-typed, already-checked ``fields`` (every field, in order).

        For the engine's command path only (``_command.prepare``, the store's sequence
        stamping), where each value already has its field's type: ``recorded_at`` aware UTC,
        ids of their id types. It skips validation, which costs more than the rest of building
        an event; it does what ``model_construct`` does, without its per-field Python loop.
        ``fields_set`` may be shared by many envelopes (they are frozen).
        """
        return trusted(cls, fields, fields_set)

    @classmethod
    def _placeholder(cls, fields: dict[str, Any]) -> EventEnvelope:
        """An engine-made envelope of a commit not yet written (``_command.prepare`` only).

        The store stamps a placeholder in place instead of copying it (``stamped``): nothing
        but the commit holds it before the commit is written, and the copy was three objects
        per event for the garbage collector. Its ``payload`` is plain JSON data already.
        """
        return cls._trusted(fields, _PLACEHOLDER_FIELDS)

    def stamped(self, sequence: int, global_position: int) -> EventEnvelope:
        """This event with the store-assigned ``sequence`` and ``global_position`` (no re-validation).

        A copy, except for an engine-made placeholder (``_placeholder``), which is stamped in
        place once and returned: only the writing store sees it until the commit is answered.
        Stamping it again (a batch re-run after an abort) copies, with the new values.
        """
        if self.__pydantic_fields_set__ is _PLACEHOLDER_FIELDS:
            _stamp_in_place(self, self.__dict__, sequence, global_position)
            return self
        fields = dict(self.__dict__)
        fields["sequence"] = sequence
        fields["global_position"] = global_position
        return EventEnvelope._trusted(fields, self.__pydantic_fields_set__ | _STAMPED)

    def to_plain(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, written out: same keys, order and values, ~3x cheaper.

        (Every id serializes through a Python function in pydantic; here it is one ``str``.)
        """
        # The fields are read from ``__dict__`` (where pydantic keeps them): an attribute of a
        # model goes through ``BaseModel.__getattr__``'s lookup hook (a Python-level
        # ``__getattr__`` disables the interpreter's attribute caches): a dict item costs less.
        return _envelope_plain(self.__dict__, self.__pydantic_fields_set__)

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> EventEnvelope:
        return cls.model_validate(data)


def stamped_plain(
    envelope: EventEnvelope, fields: dict[str, Any], sequence: int, global_position: int
) -> tuple[EventEnvelope, dict[str, Any]]:
    """``(stamped, stamped.to_plain())`` for ``stamped = envelope.stamped(sequence, global_position)``.

    For the store's writer: ``fields`` must be ``envelope.__dict__`` (which it read already). An
    engine-made placeholder is stamped in place and dumped from the same dict: each attribute
    of a model (``__dict__``, a method) goes through pydantic's ``__getattr__`` hook, ~5 of
    them per event saved. Anything else is stamped and dumped by its methods.
    """
    if envelope.__pydantic_fields_set__ is _PLACEHOLDER_FIELDS:
        _stamp_in_place(envelope, fields, sequence, global_position)
        return envelope, _envelope_plain(fields, _ALL_FIELDS)
    stamped = envelope.stamped(sequence, global_position)
    return stamped, stamped.to_plain()


def _stamp_in_place(
    envelope: EventEnvelope, fields: dict[str, Any], sequence: int, global_position: int
) -> None:
    """Stamp an engine-made placeholder (``fields``: its ``__dict__``); it is a placeholder no more."""
    fields["sequence"] = sequence
    fields["global_position"] = global_position
    _set_fields_set(envelope, _ALL_FIELDS)


def _envelope_plain(fields: dict[str, Any], fields_set: set[str]) -> dict[str, Any]:
    """``EventEnvelope.to_plain`` of an envelope's ``__dict__`` and ``__pydantic_fields_set__``."""
    causation = fields["causation_id"]
    payload = fields["payload"]
    # ``_text``: the canonical string every typed id carries from birth (``ids._UuidId``).
    return {
        "event_id": fields["event_id"]._text,
        "stream_id": str(fields["stream_id"]),
        "process_id": fields["process_id"]._text,
        "tenant_id": fields["tenant_id"]._text,
        "workflow_id": workflow_text(fields["workflow_id"]),
        "sequence": fields["sequence"],
        "global_position": fields["global_position"],
        "event_type": fields["event_type"],
        "schema_version": fields["schema_version"],
        "recorded_at": iso_utc(fields["recorded_at"]),
        "correlation_id": fields["correlation_id"]._text,
        "conversation_id": fields["conversation_id"]._text,
        "causation_id": None if causation is None else causation._text,
        # Engine-made payloads are ``model_dump(mode="json")`` output already.
        "payload": payload
        if fields_set is _PLACEHOLDER_FIELDS or fields_set is _ALL_FIELDS
        else to_jsonable_python(payload),
    }


class PlainEnvelopeDecoder:
    """``EventEnvelope.from_plain`` for many stored envelopes, typically one stream's.

    The stream, process, tenant and workflow ids (and often the correlation ids) repeat in
    every event of a stream; parsing a UUID or workflow id string dominates decoding, so each
    distinct string is parsed once per decoder. Records in the canonical stored form take a
    checked fast path; anything else goes through ``model_validate``, which accepts or
    rejects exactly as ``from_plain`` does.
    """

    __slots__ = ("_parsed",)

    def __init__(self) -> None:
        self._parsed: dict[tuple[Any, str], Any] = {}

    def _typed(self, kind: Any, text: Any) -> Any:
        if type(text) is not str:
            raise TypeError("not a string")
        key = (kind, text)
        value = self._parsed.get(key)
        if value is None:
            value = kind(text)
            self._parsed[key] = value
        return value

    def __call__(self, data: dict[str, Any]) -> EventEnvelope:
        try:
            return self._fast(data)
        except Exception:  # not in the canonical form: let pydantic decide (and explain)
            return EventEnvelope.model_validate(data)

    def _fast(self, data: dict[str, Any]) -> EventEnvelope:
        if type(data) is not dict or data.keys() != _FIELDS:
            raise TypeError("not a canonical envelope")
        sequence, position, version = data["sequence"], data["global_position"], data["schema_version"]
        event_type, recorded, payload = data["event_type"], data["recorded_at"], data["payload"]
        if not (
            type(sequence) is int
            and type(position) is int
            and type(version) is int
            and type(event_type) is str
            and type(payload) is dict
            and all(type(key) is str for key in payload)
            # What ``iso_utc`` writes: YYYY-MM-DDTHH:MM:SS[.ffffff]Z
            and type(recorded) is str
            and len(recorded) in (20, 27)
            and recorded[10] == "T"
            and recorded[-1] == "Z"
        ):
            raise TypeError("not a canonical envelope")
        causation = data["causation_id"]
        typed = self._typed
        return EventEnvelope._trusted(
            {
                "event_id": EventId(data["event_id"]),
                "stream_id": typed(StreamId, data["stream_id"]),
                "process_id": typed(ProcessId, data["process_id"]),
                "tenant_id": typed(TenantId, data["tenant_id"]),
                "workflow_id": typed(WorkflowId.parse, data["workflow_id"]),
                "sequence": sequence,
                "global_position": position,
                "event_type": event_type,
                "schema_version": version,
                "recorded_at": datetime.fromisoformat(recorded),
                "correlation_id": typed(CorrelationId, data["correlation_id"]),
                "conversation_id": typed(ConversationId, data["conversation_id"]),
                "causation_id": None if causation is None else typed(CausationId, causation),
                "payload": payload,
            },
            _DECODED_FIELDS,
        )


_FIELDS = frozenset(EventEnvelope.model_fields)
_STAMPED = frozenset({"sequence", "global_position"})
# Shared fields-sets of engine-built models (one set object for all, not one per instance).
# Envelopes tell by identity which set they carry: ``_PLACEHOLDER_FIELDS`` marks a placeholder
# of ``prepare``, ``_ALL_FIELDS`` one the store stamped in place; decoded envelopes carry
# ``_DECODED_FIELDS`` (equal to ``_ALL_FIELDS``, but their payload came from storage).
_PLACEHOLDER_FIELDS: set[str] = set(_FIELDS - {"global_position"})
_ALL_FIELDS: set[str] = set(_FIELDS)
_DECODED_FIELDS: set[str] = set(_FIELDS)
_CONTEXT_FIELDS: set[str] = set(CommandContext.model_fields)
_IDENTITY_FIELDS: set[str] = set(ProcessIdentity.model_fields)


def iso_utc(value: datetime) -> str:
    """An aware UTC datetime as pydantic's JSON mode writes it (``...T12:00:00.5Z``).

    The last ``UTC`` result is kept: a command's event and outbox rows carry the same instant.
    So is the last whole second's text: consecutive commands differ in their microseconds
    only, and ``isoformat`` of an aware datetime costs twice the rest.
    """
    global _last_iso, _last_second
    last = _last_iso  # one tuple, swapped whole: safe with the store's writer thread
    if value.tzinfo is not UTC:
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if last[0] == value:
        return last[1]
    micros = value.microsecond
    second = (value.second, value.minute, value.hour, value.day, value.month, value.year)
    cached = _last_second
    if cached[0] == second:
        prefix = cached[1]
    else:
        prefix = "%04d-%02d-%02dT%02d:%02d:%02d" % second[::-1]  # noqa: UP031 (isoformat's digits)
        _last_second = (second, prefix)
    text = f"{prefix}.{micros:06d}Z" if micros else prefix + "Z"
    _last_iso = (value, text)
    return text


_last_iso: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "0001-01-01T00:00:00Z")
_last_second: tuple[tuple[int, ...], str] = ((), "")


def workflow_text(workflow_id: WorkflowId) -> str:
    """``str(workflow_id)``, remembered per ``WorkflowId`` object (every stored record holds one).

    ``WorkflowId`` is immutable and few distinct objects exist (one per workflow and format
    version, plus those decoded from storage), so the string is built once per object. Keyed
    by identity: hashing the dataclass runs Python code. The entry holds the object, so its
    ``id`` cannot be reused while the entry exists; the table is emptied at 1,024 entries.
    """
    entry = _WORKFLOW_TEXTS.get(id(workflow_id))
    if entry is not None and entry[0] is workflow_id:
        return entry[1]
    text = str(workflow_id)
    if len(_WORKFLOW_TEXTS) >= 1024:
        _WORKFLOW_TEXTS.clear()
    _WORKFLOW_TEXTS[id(workflow_id)] = (workflow_id, text)
    return text


_WORKFLOW_TEXTS: dict[int, tuple[WorkflowId, str]] = {}
