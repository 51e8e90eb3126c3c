"""Structured logging: correlation ids on every log line, JSON lines for machines.

The engine logs through the standard ``logging`` module. Where it handles one interchange or
one command it opens a ``log_context`` (correlation id, interchange reference, process id, ...);
``ContextFilter`` copies those fields onto every record logged inside it, by any logger, and
``JsonFormatter`` writes one JSON object per line. The package itself only adds a
``NullHandler`` (a library does not decide where logs go); ``configure_logging()`` wires the
filter and a JSON or human formatter to stderr for a service, the CLI or a notebook, once no
matter how often it is called; applications can attach the filter and formatters to their own
handlers instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

_FIELDS: ContextVar[dict[str, str]] = ContextVar("mako_log_fields", default={})  # noqa: B039


class log_context(contextlib.ContextDecorator):  # lower case: it was a function, and is used as one
    """Add ``fields`` (e.g. ``correlation_id=...``) to every record logged inside the block.

    Nested blocks add to the outer fields; ``None`` values are left out. Safe across asyncio
    tasks (each task sees the fields of the context it was created in). Also a decorator.
    (A class rather than ``contextlib.contextmanager``: entered once per interchange, command
    and delivery, and a generator-based one costs a generator and two more Python calls.)
    """

    def __init__(self, **fields: object) -> None:
        self._fields = fields
        self._tokens: list[Token[dict[str, str]]] = []  # one per entry not yet left

    def __enter__(self) -> None:
        fields = self._fields
        merged = {**_FIELDS.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
        self._tokens.append(_FIELDS.set(merged))

    def __exit__(self, *exc_info: object) -> None:
        _FIELDS.reset(self._tokens.pop())

    def _recreate_cm(self) -> log_context:
        # As a decorator, a fresh context per call: calls in several threads at once must not
        # share one stack of tokens (a token is reset in the thread's context that set it).
        return log_context(**self._fields)


def current_fields() -> dict[str, str]:
    """The fields of the innermost ``log_context``."""
    return dict(_FIELDS.get())


class ContextFilter(logging.Filter):
    """Copies the ``log_context`` fields onto each record (as attributes and ``record.context``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _FIELDS.get()
        record.context = fields
        for key, value in fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, context fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context", _FIELDS.get()),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` with the context fields at the end."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "context", _FIELDS.get())
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure_logging(
    level: int | str = logging.INFO, *, json_lines: bool = True, stream: IO[str] | None = None
) -> logging.Handler:
    """Log ``mako_actors`` records to stderr (or ``stream``), with context fields.

    Idempotent: the ``mako_actors`` logger has at most one handler of ours; a later call changes
    its level, format and stream instead of adding another, so no line is ever written twice.
    Returns the handler (remove it with ``logger.removeHandler``).
    """
    logger = logging.getLogger("mako_actors")
    ours = [h for h in logger.handlers if getattr(h, "_mako_configured", False)]
    handler = ours[0] if ours else None
    for extra in ours[1:]:
        logger.removeHandler(extra)
    if handler is None or isinstance(handler, _StderrHandler) != (stream is None):
        if handler is not None:
            logger.removeHandler(handler)
        handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
        setattr(handler, "_mako_configured", True)  # noqa: B010  (marks the one handler of ours)
        handler.addFilter(ContextFilter())
        logger.addHandler(handler)
    elif stream is not None and isinstance(handler, logging.StreamHandler):
        handler.setStream(stream)
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter())
    logger.setLevel(level)
    return handler
