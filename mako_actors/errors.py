"""The one error hierarchy of the engine.

Every failure a caller can see is an :class:`EngineError`. Each subclass is named for what the
caller can do about it, carries a readable message, and a ``transient`` flag that says whether
trying the same thing again may succeed::

    EngineError
    ├── VersionConflict        transient: a concurrent writer won; reload and retry
    ├── WorkflowError          the workflow rejected the command (kind says why); not transient
    ├── InvalidArgument        a malformed id, format version or option (also a ValueError)
    ├── NotFound               a stream, process or registry key does not exist
    ├── RegistryConflict       a business key is already registered to another process
    ├── InboxConflict          an inbound key seen before arrived with different content
    ├── StoreError             the store failed (I/O, LMDB); transient where the backend says so
    ├── OutboxError            delivering or bookkeeping an outbox message failed
    ├── SerializationError     a value could not be encoded to plain data
    └── DeserializationError   stored data could not be decoded (schema migration needed)

LMDB and Ray errors are translated into these once, where they occur; no backend exception type
ever crosses a public signature. Errors are plain data (``to_plain``/``from_plain``) so they can
cross a Ray boundary and arrive as the same subclass.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class EngineError(Exception):
    """Base class of every error the engine raises on purpose.

    ``transient``: a retry may succeed. ``operational``: the system failed (a store that cannot
    write, an actor system closing), not the data it was given: never answered to a market
    partner as a refusal, never dead-lettered as the data's fault; the work is left to be done
    again (a file stays in the inbox, a replay ends with exit 2 and is run again).
    """

    transient: bool = False
    operational: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_plain(self) -> dict[str, Any]:
        """The error as plain data (for Ray and logs); ``from_plain`` rebuilds the subclass.

        ``bases`` and ``transient`` let a receiver that never imported the subclass (a driver
        without ``stores.lmdb``, say) rebuild its nearest known base, still transient or not.
        """
        bases = [c.__name__ for c in type(self).__mro__[1:] if issubclass(c, EngineError)]
        return {
            "error": type(self).__name__, "message": self.message, "args": self._plain_args(),
            "bases": bases, "transient": self.transient,
        }  # fmt: skip

    def _plain_args(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_args(cls, message: str, args: dict[str, Any]) -> EngineError:
        err = cls.__new__(cls)
        EngineError.__init__(err, message)
        return err

    @staticmethod
    def from_plain(data: dict[str, Any]) -> EngineError:
        """Rebuild an error from ``to_plain`` output: its class, else the nearest registered base
        it names (``EngineError`` at last), with its ``transient`` flag."""
        names = [str(data.get("error")), *(str(b) for b in data.get("bases") or ())]
        cls = next((_ERROR_CLASSES[n] for n in names if n in _ERROR_CLASSES), EngineError)
        err = cls._from_args(str(data.get("message", "")), dict(data.get("args") or {}))
        if "transient" in data and bool(data["transient"]) != err.transient:
            err.transient = bool(data["transient"])
        return err

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions with custom __init__ signatures do not pickle by default; Ray pickles them.
        return (EngineError.from_plain, (self.to_plain(),))


class VersionConflict(EngineError):
    """A concurrent writer appended first: the stream is at ``actual``, not ``expected``.

    Nothing of the failed write was stored. Reload the state and retry the command.
    """

    transient = True

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        super().__init__(
            f"version conflict on stream {stream_id}: expected {expected}, stream is at {actual}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual

    def _plain_args(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "expected": str(self.expected), "actual": self.actual}

    @classmethod
    def _from_args(cls, message: str, args: dict[str, Any]) -> EngineError:
        return cls(str(args.get("stream_id")), args.get("expected"), int(args.get("actual", -1)))


class WorkflowErrorKind(StrEnum):
    """Why a workflow refused a command."""

    REJECTED = "rejected"
    INVALID_STATE = "invalid_state"
    VALIDATION_FAILED = "validation_failed"
    NOT_IMPLEMENTED = "not_implemented"


class WorkflowError(EngineError):
    """The workflow refused the command; nothing was written.

    Raise it from ``Workflow.handle`` with one of the constructors (``rejected``,
    ``invalid_state``, ``validation_failed``, ``not_implemented``).
    """

    def __init__(self, kind: WorkflowErrorKind | str, message: str) -> None:
        self.kind = WorkflowErrorKind(kind)
        super().__init__(f"{self.kind.value}: {message}")
        self.reason = message

    @classmethod
    def rejected(cls, message: str) -> WorkflowError:
        return cls(WorkflowErrorKind.REJECTED, message)

    @classmethod
    def invalid_state(cls, message: str) -> WorkflowError:
        return cls(WorkflowErrorKind.INVALID_STATE, message)

    @classmethod
    def validation_failed(cls, message: str) -> WorkflowError:
        return cls(WorkflowErrorKind.VALIDATION_FAILED, message)

    @classmethod
    def not_implemented(cls, message: str) -> WorkflowError:
        return cls(WorkflowErrorKind.NOT_IMPLEMENTED, message)

    def _plain_args(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "reason": self.reason}

    @classmethod
    def _from_args(cls, message: str, args: dict[str, Any]) -> EngineError:
        return cls(str(args.get("kind", "rejected")), str(args.get("reason", message)))


class InvalidArgument(EngineError, ValueError):
    """A malformed id, format version, option or input value; names what was wrong."""


class NotFound(EngineError):
    """The stream, process, message or registry key asked for does not exist."""


class RegistryConflict(EngineError):
    """A business key is already registered to a different process; nothing was written."""


class InboxConflict(EngineError):
    """An inbound message key was accepted before with different content; raise an alarm."""


class DeadlineGone(EngineError):
    """The deadline a timeout's commit discharges is no longer stored: fired (by another
    scheduler or actor) or cancelled meanwhile. Nothing was written; it fires once."""


class StoreError(EngineError):
    """The store failed to read or write; ``transient`` is set where a retry may succeed."""

    operational = True

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def _plain_args(self) -> dict[str, Any]:
        return {"transient": self.transient}

    @classmethod
    def _from_args(cls, message: str, args: dict[str, Any]) -> EngineError:
        return cls(message, transient=bool(args.get("transient", False)))


class OutboxError(EngineError):
    """Delivering or bookkeeping an outbox message failed."""


class SerializationError(EngineError):
    """A value could not be encoded to plain data for storage or transport."""


class DeserializationError(EngineError):
    """Stored data could not be decoded into the current models (upcaster or migration needed)."""


_ERROR_CLASSES: dict[str, type[EngineError]] = {}


def register_error(cls: type[EngineError]) -> type[EngineError]:
    """Make an ``EngineError`` subclass rebuildable by ``EngineError.from_plain`` (use as decorator)."""
    _ERROR_CLASSES[cls.__name__] = cls
    return cls


for _cls in (
    EngineError,
    VersionConflict,
    WorkflowError,
    InvalidArgument,
    NotFound,
    RegistryConflict,
    InboxConflict,
    DeadlineGone,
    StoreError,
    OutboxError,
    SerializationError,
    DeserializationError,
):
    register_error(_cls)
