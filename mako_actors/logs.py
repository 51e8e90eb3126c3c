"""Structured logging: correlation ids on every log line, JSON lines for machines.

The engine logs through the standard ``logging`` module. Where it handles one interchange or
one command it opens a ``log_context`` (correlation id, interchange reference, process id, ...);
``ContextFilter`` copies those fields onto every record logged inside it, by any logger, and
``JsonFormatter`` writes one JSON object per line. ``configure_logging()`` wires both to
stderr for a service or a notebook; libraries embedding the engine can attach the filter and
formatter to their own handlers instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_FIELDS: ContextVar[dict[str, str]] = ContextVar("mako_log_fields", default={})  # noqa: B039


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` (e.g. ``correlation_id=...``) to every record logged inside the block.

    Nested blocks add to the outer fields; ``None`` values are left out. Safe across asyncio
    tasks (each task sees the fields of the context it was created in).
    """
    merged = {**_FIELDS.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _FIELDS.set(merged)
    try:
        yield
    finally:
        _FIELDS.reset(token)


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


def configure_logging(level: int | str = logging.INFO, *, json_lines: bool = True) -> logging.Handler:
    """Log ``mako_actors`` records to stderr, with context fields (JSON lines by default).

    Returns the handler so callers can remove it again; idempotent per call site is the
    caller's business (each call adds one handler).
    """
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(context)s %(message)s")
    )
    logger = logging.getLogger("mako_actors")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
