"""Typed errors of the GPKE package; all ``EngineError``s, registered for ``from_plain``.

The caller (ingestion, router) turns them into dead letters with audit context: none of them
may drop a message silently.
"""

from __future__ import annotations

from mako_actors.errors import EngineError, register_error

__all__ = ["GasNotSupported", "UnknownAnswerCode", "UnknownPid", "UnsupportedFormatVersion"]


@register_error
class UnknownPid(EngineError):
    """No workflow is registered for this Prüfidentifikator; dead-letter the message."""


@register_error
class GasNotSupported(UnknownPid):
    """A gas PID (44xxx, GeLi Gas): out of scope here, never run on the electricity clock."""


@register_error
class UnsupportedFormatVersion(EngineError):
    """No Fristen or code table exists for this format version; dead-letter the message."""


@register_error
class UnknownAnswerCode(EngineError):
    """An answer code or reason is not in the code table for (FV, EBD); a configuration gap."""
