"""Typed identifiers: UUID-backed ids and the stream id.

Each id is its own type so a ``TenantId`` cannot be passed where a ``ProcessId`` is expected
(mypy catches it). All ids validate on construction and raise ``InvalidArgument`` naming the
id type and the bad value. They serialize as their canonical string (pydantic, msgpack).

``TenantId.from_party_id`` and ``CorrelationId.from_interchange_ref`` are UUID v5 under fixed
namespaces, so the same market-partner id or interchange reference always gives the same id,
across processes, machines and replays. The namespaces must never change.

Fresh ids (``new()``) are version 7 (RFC 9562): a millisecond time stamp first, so ids made
later sort after ids made earlier. Stores key streams by process id and outbox rows and
deadlines by ids derived from an event id (which keep its time stamp, version 8): new rows
then land at the end of their B-tree instead of at random places in it, so a write
transaction touches a few pages at the tree's edge rather than one page per new row (with
10,000 new processes, ~40 % less writer CPU per command; ``benchmarks/README.md``).
"""

from __future__ import annotations

import os
import re
import struct
import time
import uuid
from collections.abc import Iterator
from operator import lshift, or_
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from mako_actors.errors import InvalidArgument

if TYPE_CHECKING:
    from hashlib import sha1
else:
    try:
        # CPython's own SHA-1: for the few dozen bytes of a v5 name it costs less than
        # OpenSSL's (``hashlib``), which sets up and wipes a context per hash. Same digests;
        # every outbox row and deadline derives its id with one (``payloads`` does the same).
        from _sha1 import sha1
    except ImportError:  # an interpreter built without it
        from hashlib import sha1

# Fixed once; changing either re-keys every tenant or correlation root ever derived.
_TENANT_NAMESPACE = uuid.UUID("6b8f2f0e-8a3c-5d61-9a4e-1f0c6a2d7e01")
_CORRELATION_NAMESPACE = uuid.UUID("0f3c1d2e-4b5a-5c6d-8e7f-9a0b1c2d3e4f")
_OUTBOX_NAMESPACE = uuid.UUID("3a9d7c51-2e64-5b80-9f13-6c4e8a0b2d75")
_DEADLINE_NAMESPACE = uuid.UUID("8d2e4f60-1a3b-5c7d-9e0f-2b4c6d8e0a13")

_MP_ID = re.compile(r"^\d{13}$")
_CANONICAL_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Read once: a member lookup on an Enum class runs Python code (``enum.property``) on 3.11.
_UNKNOWN = uuid.SafeUUID.unknown

# Random ids come from a pool of ready (int, canonical string) pairs, made 256 at a time from
# one ``os.urandom`` call: masking, hex-formatting and splitting run in C-level operations over
# the whole pool instead of per id (``uuid4()`` plus re-parsing its result was ~2.5 µs, a tenth
# of the command path; the pool now costs ~3.3k instructions per id). ``next`` on the pool's
# iterator is one C call, so two threads never draw the same pair. The pool is dropped in a
# forked child, so parent and child never hand out the same ids.
_POOL_IDS = 256
_POOL_BYTES = 16 * _POOL_IDS
# Version 7 and the RFC 4122 variant: the high nibble of byte 6 becomes 7, the top two bits of
# byte 8 become 10 (byte tables for ``bytes.translate``).
_VERSION_7 = bytes((b & 0x0F) | 0x70 for b in range(256))
_RFC_4122 = bytes((b & 0x3F) | 0x80 for b in range(256))
_pool: Iterator[tuple[int, str]] = iter(())
_ALL_U64 = struct.Struct(f">{2 * _POOL_IDS}Q")
_SHIFT_64 = (64,) * _POOL_IDS


def _canonical(text: str) -> bool:
    """Whether a string ``UUID()`` parsed is already its canonical form (lower case, 8-4-4-4-12)."""
    return (
        len(text) == 36
        and text[8] == "-" == text[13] == text[18] == text[23]
        and text.count("-") == 4
        and text.lower() == text
    )


def _fresh_pool() -> Iterator[tuple[int, str]]:
    """``_POOL_IDS`` version-7 UUIDs as (int, canonical string) pairs, in ascending order.

    All carry the time the pool is made (Unix milliseconds, the first 48 bits) and 74 random
    bits; sorted, so a pool hands out ids in order, as a later pool (a later time stamp)
    does after it.
    """
    raw = bytearray(os.urandom(_POOL_BYTES))
    stamp = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    for place in range(6):  # the time stamp into bytes 0-5 of every id, one strided copy each
        raw[place::16] = stamp[place : place + 1] * _POOL_IDS
    # The version and variant bits of every id with two strided byte copies.
    raw[6::16] = raw[6::16].translate(_VERSION_7)
    raw[8::16] = raw[8::16].translate(_RFC_4122)
    raw = bytearray(b"".join(sorted(raw[at : at + 16] for at in range(0, _POOL_BYTES, 16))))
    # Each id's int from its two 64-bit halves, by C-level ``map``s over one unpacked tuple
    # (no interpreter loop, no tuple per id).
    halves = _ALL_U64.unpack(raw)
    values = list(map(or_, map(lshift, halves[::2], _SHIFT_64), halves[1::2]))
    # The canonical strings of all ids at once: each of the 32 hex digits of an id goes to
    # its place among the 36 characters of its text with one strided copy for the whole pool
    # (32 C-level copies instead of five slices and an f-string per id: ~3x cheaper). Each
    # text is followed by a space, so one ``split`` cuts them apart.
    digits = raw.hex().encode()
    out = bytearray(_POOL_LAYOUT)
    for place, digit in _TEXT_PLACES:
        out[place::37] = digits[digit::32]
    return zip(values, out.decode().split(), strict=True)


# (place in the 36-character text, hex digit 0-31) of every digit of a UUID: 8-4-4-4-12.
_TEXT_PLACES = tuple(
    (place, digit)
    for digit, place in enumerate(
        [*range(0, 8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)]
    )
)
# The pool's texts before their digits go in: 36 characters and a space per id.
_POOL_LAYOUT = b"------------------------------------ " * _POOL_IDS


def _forget_pool() -> None:
    global _pool
    _pool = iter(())


os.register_at_fork(after_in_child=_forget_pool)

# The slots of an id, set through their descriptors: ``UUID.__setattr__`` refuses (immutable),
# and a descriptor's ``__set__`` skips the attribute lookup ``object.__setattr__`` does.
_new_object = object.__new__
_set_int = uuid.UUID.__dict__["int"].__set__
_set_safe = uuid.UUID.__dict__["is_safe"].__set__


class _UuidId(uuid.UUID):
    """A UUID with its own type; ``new()`` makes a fresh, time-ordered (v7) one.

    The canonical string is computed once, when the id is made, and kept (``_text``): every
    stored record holds several ids as strings, and a process's own ids are written with each
    of its events. The engine's writers read ``_text`` directly.
    """

    __slots__ = ("_text",)
    _text: str

    def __init__(self, value: str | uuid.UUID | bytes) -> None:
        if type(value) is str and _CANONICAL_TEXT.fullmatch(value) is not None:
            # The hot case (ids read back from storage): the canonical form, kept as it is.
            _set_int(self, int(value.replace("-", ""), 16))
            _set_safe(self, _UNKNOWN)
            _set_text(self, value)
            return
        text = None
        try:
            if type(value) is bytes and len(value) == 16:
                # No need for UUID.__init__'s parsing.
                object.__setattr__(self, "int", int.from_bytes(value, "big"))
                object.__setattr__(self, "is_safe", _UNKNOWN)
            elif isinstance(value, uuid.UUID):
                # ``UUID.__init__(int=value.int)`` without its argument checks: a UUID's int is
                # valid (a routed process id per new process is built from one).
                _set_int(self, value.int)
                _set_safe(self, _UNKNOWN)
            elif isinstance(value, bytes):
                super().__init__(bytes=value)
            else:
                text = str(value)
                super().__init__(text)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidArgument(
                f"{type(self).__name__}: {value!r} is not a UUID ({exc})"
            ) from None
        if not (text is not None and _canonical(text)):
            h = "%032x" % self.int  # noqa: UP031 (twice as fast as f"{self.int:032x}" on 3.11)
            text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        object.__setattr__(self, "_text", text)

    @classmethod
    def new(cls) -> Self:
        """A fresh id: version 7, ordered after the ids of earlier milliseconds (module doc)."""
        global _pool
        try:
            value, text = next(_pool)
        except StopIteration:
            _pool = _fresh_pool()
            value, text = next(_pool)
        return _id_of(cls, value, text)

    @classmethod
    def _from_int(cls, value: int) -> Self:
        """An id of a known-valid 128-bit value, skipping ``UUID.__init__``'s argument parsing.

        Sets the two slots ``UUID.__init__`` sets and the canonical string right away: every
        id made on the command path (event, correlation, conversation, outbox ids) is written
        as a string, and a cached string spares ``__str__`` the missing-slot ``AttributeError``
        it would raise and catch once. ~4x cheaper than ``cls(int=...)``.
        """
        h = "%032x" % value  # noqa: UP031 (twice as fast as f"{value:032x}" on 3.11)
        return _id_of(cls, value, f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")

    def __str__(self) -> str:
        try:
            return self._text
        except AttributeError:
            pass
        # As UUID.__str__, with one f-string instead of five %-formats (~1.5x faster).
        h = "%032x" % self.int  # noqa: UP031 (twice as fast as f"{self.int:032x}" on 3.11)
        text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        object.__setattr__(self, "_text", text)
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self}')"

    # UUID's own __reduce__ would rebuild a plain UUID; keep the subtype across pickling (Ray).
    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, when_used="always"
            ),
            json_schema_input_schema=core_schema.str_schema(),
        )

    @classmethod
    def _coerce(cls, value: Any) -> Self:
        if type(value) is cls:
            return value
        if isinstance(value, str | uuid.UUID | bytes):
            return cls(value)
        raise InvalidArgument(f"{cls.__name__}: expected a UUID string, got {value!r}")


_set_text = _UuidId.__dict__["_text"].__set__
_D = TypeVar("_D", bound=_UuidId)


class _IdSlots(uuid.UUID):
    """An id being built: the slots of ``_UuidId``, with ``object``'s own ``__setattr__``.

    ``_fast_id`` fills one with plain attribute stores (which the interpreter specializes for
    slots), then makes it the id it is by assigning ``__class__`` (Python allows that between
    classes of the same layout). Setting the three slots through their descriptors instead
    costs ~3.3k instructions per id (each ``__set__`` call packs its arguments into a tuple);
    this ~1.6k. The result is an ordinary id: its class's immutability, equality, hashing and
    pickling are untouched. Never handed out.
    """

    __slots__ = _UuidId.__slots__
    __setattr__ = object.__setattr__  # type: ignore[assignment]
    __init__ = object.__init__  # not UUID's (argument parsing): ``_IdSlots()`` is bare


def _fast_id(cls: type[_D], value: int, text: str) -> _D:
    obj = _IdSlots()
    obj.int = value
    obj.is_safe = _UNKNOWN
    obj._text = text
    obj.__class__ = cls
    return obj  # type: ignore[no-any-return]


def _slow_id(cls: type[_D], value: int, text: str) -> _D:
    obj = _new_object(cls)
    _set_int(obj, value)
    _set_safe(obj, _UNKNOWN)
    _set_text(obj, text)
    return obj


def _builds_ids() -> bool:
    """Whether ``_fast_id`` makes what the constructor makes (else ``_slow_id`` is used).

    Checked once at import: a ``uuid.UUID`` of another layout (new slots) would refuse the
    ``__class__`` assignment, or leave a slot unset that the constructor sets.
    """
    text = "12345678-9abc-4def-8123-456789abcdef"
    try:
        built = _fast_id(EventId, int(text.replace("-", ""), 16), text)
    except TypeError:  # ``__class__`` refused: the layouts differ
        return False
    expected = EventId(text)
    slots = [name for name in uuid.UUID.__slots__ if name != "__weakref__"]
    return (
        type(built) is EventId
        and slots == ["int", "is_safe"]
        and all(getattr(built, name) == getattr(expected, name) for name in slots)
        and built._text == text
        and built == expected
    )




class TenantId(_UuidId):
    """The company (market partner) a process belongs to; every key is tenant-scoped."""

    __slots__ = ()

    @classmethod
    def from_party_id(cls, party_id: str) -> TenantId:
        """UUID v5 of a 13-digit market-partner id (MP-ID); raises ``InvalidArgument`` otherwise."""
        if not isinstance(party_id, str) or not _MP_ID.match(party_id):
            raise InvalidArgument(
                f"TenantId.from_party_id: {party_id!r} is not a 13-digit market-partner id"
            )
        return _v5(cls, _TENANT_NAMESPACE_BYTES, party_id)


class ProcessId(_UuidId):
    """One process instance (one supplier change, one Abmeldung, ...)."""

    __slots__ = ()


class EventId(_UuidId):
    """One persisted event."""

    __slots__ = ()


class CorrelationId(_UuidId):
    """The root of a chain of commands and events; shared by retransmissions of one interchange."""

    __slots__ = ()

    @classmethod
    def from_interchange_ref(cls, interchange_ref: str) -> CorrelationId:
        """UUID v5 of an interchange reference (pass it sender-qualified, ``"<MP-ID>:<0020>"``)."""
        if not isinstance(interchange_ref, str) or not interchange_ref.strip():
            raise InvalidArgument(
                f"CorrelationId.from_interchange_ref: empty interchange reference {interchange_ref!r}"
            )
        return _v5(cls, _CORRELATION_NAMESPACE_BYTES, interchange_ref)


class CausationId(_UuidId):
    """The event (or message) that caused a command; ``CausationId(event_id)`` converts."""

    __slots__ = ()


class ConversationId(_UuidId):
    """A business conversation spanning several exchanges (a UTILMD and its APERAK)."""

    __slots__ = ()


class DeadlineId(_UuidId):
    """One persisted deadline (Frist); derived from the event that set it."""

    __slots__ = ()

    @classmethod
    def for_event(cls, event_id: EventId, index: int) -> DeadlineId:
        """The deterministic id of the ``index``-th deadline set with ``event_id``."""
        return _derived(cls, _DEADLINE_NAMESPACE_BYTES, event_id, index)


class OutboxMessageId(_UuidId):
    """One persisted outbound message; derived from its causing event, so retries reuse it."""

    __slots__ = ()

    @classmethod
    def for_event(cls, event_id: EventId, index: int) -> OutboxMessageId:
        """The deterministic id of the ``index``-th message caused by ``event_id``."""
        return _derived(cls, _OUTBOX_NAMESPACE_BYTES, event_id, index)


# An id of a known-valid value and its canonical string (``new``, ``_from_int``); chosen once
# the id classes exist (the check builds an ``EventId``).
_id_of = _fast_id if _builds_ids() else _slow_id

_TENANT_NAMESPACE_BYTES = _TENANT_NAMESPACE.bytes
_CORRELATION_NAMESPACE_BYTES = _CORRELATION_NAMESPACE.bytes
_DEADLINE_NAMESPACE_BYTES = _DEADLINE_NAMESPACE.bytes
_OUTBOX_NAMESPACE_BYTES = _OUTBOX_NAMESPACE.bytes
# Version 5 and the RFC 4122 variant, as ``uuid.uuid5`` sets them.
_V5_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_V5_BITS = (0x5000 << 64) | (0x8000 << 48)
# A derived id (version 8): the first 48 bits of its event's id, the rest of a v5's bits.
_STAMP_BITS = ((1 << 48) - 1) << 80
_V8_MASK = _V5_MASK & ~_STAMP_BITS
_V8_BITS = (0x8000 << 64) | (0x8000 << 48)


def _name_bits(namespace: bytes, name: str) -> int:
    """The 128 bits a v5 id of ``name`` is made of, before its version and variant are set."""
    return int.from_bytes(sha1(namespace + name.encode()).digest()[:16], "big")


def _v5(cls: type[_D], namespace: bytes, name: str) -> _D:
    """``cls(uuid.uuid5(namespace, name))`` without ``uuid``'s argument parsing (hot paths)."""
    return cls._from_int((_name_bits(namespace, name) & _V5_MASK) | _V5_BITS)


def _derived(cls: type[_D], namespace: bytes, event_id: uuid.UUID, index: int) -> _D:
    """The ``index``-th id derived from ``event_id`` (once per outbox row and deadline).

    Version 8: the first 48 bits are the event id's (its time stamp when it is a ``new()``
    one, so rows of later events sort after earlier ones: module doc), the other 74 those
    ``uuid5(namespace, f"{event_id}:{index}")`` has. The same event and index give the same
    id everywhere; another event or index another id.
    """
    text = event_id._text if type(event_id) is EventId else str(event_id)
    hashed = _name_bits(namespace, f"{text}:{index}")
    return cls._from_int((event_id.int & _STAMP_BITS) | (hashed & _V8_MASK) | _V8_BITS)


class StreamId(str):
    """The event stream of one process: ``process/{tenant}/{process}``.

    Keys built from it sort by tenant, then process; the fixed-width UUIDs keep one stream's
    key range from overlapping another's.
    """

    __slots__ = ()
    _PATTERN = re.compile(
        r"^process/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )

    def __new__(cls, value: str) -> Self:
        if not isinstance(value, str) or not cls._PATTERN.match(value):
            raise InvalidArgument(
                f"StreamId: {value!r} is not of the form process/<tenant uuid>/<process uuid>"
            )
        return super().__new__(cls, value)

    @classmethod
    def for_process(cls, tenant_id: TenantId, process_id: ProcessId) -> StreamId:
        """The stream of ``process_id`` under ``tenant_id``."""
        if isinstance(tenant_id, _UuidId) and isinstance(process_id, _UuidId):
            # Typed ids print as canonical lower-case UUIDs (their ``str``, kept from birth):
            # the pattern holds, skip the regex.
            return str.__new__(cls, f"process/{tenant_id._text}/{process_id._text}")
        return cls(f"process/{tenant_id}/{process_id}")

    @property
    def tenant_id(self) -> TenantId:
        return TenantId(self.split("/")[1])

    @property
    def process_id(self) -> ProcessId:
        return ProcessId(self.split("/")[2])

    @classmethod
    def tenant_prefix(cls, tenant_id: TenantId) -> str:
        """The prefix shared by every stream of one tenant (for ``list_streams``)."""
        return f"process/{tenant_id}/"

    def __repr__(self) -> str:
        return f"StreamId('{self}')"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            lambda v: v if type(v) is cls else cls(v),
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, when_used="always"
            ),
        )
