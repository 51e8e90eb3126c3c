"""Models of already-checked values, built without pydantic validation, and their plain data.

The workflow builds its events, references and payloads from values that were validated once
on the way in (the command) or derived by our own code: validating them again costs more
than the decision itself. ``built`` skips that; ``plain`` is ``model_dump(mode="json",
exclude_none=True)`` for the plain types these models hold. Inbound data never goes through
here: commands are validated by ``commands``/``router``.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from mako_actors.errors import InvalidArgument

__all__ = ["built", "iso", "plain"]

M = TypeVar("M", bound=BaseModel)


@functools.cache
def _fields(cls: type[BaseModel]) -> tuple[tuple[str, Any], ...]:
    """``(name, default)`` of each field in declaration order (``PydanticUndefined``: required).

    Only immutable defaults are allowed here: a default is shared by every built instance.
    """
    fields = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            raise TypeError(f"built({cls.__name__}): field {name} has a default factory")
        fields.append((name, info.default))
    return tuple(fields)


def built(cls: type[M], values: dict[str, Any]) -> M:
    """A ``cls`` holding ``values`` as they are: no validation, defaults filled in, fields in
    declaration order (so it dumps and compares like a validated one).

    Every value must already have its field's type; wrong types are not caught. ``values`` is
    consumed. Raises ``InvalidArgument`` naming a missing or unknown field.
    """
    fields: dict[str, Any] = {}
    for name, default in _fields(cls):
        value = values.pop(name, default)
        if value is PydanticUndefined:
            raise InvalidArgument(f"{cls.__name__}: field {name!r} missing")
        fields[name] = value
    if values:
        raise InvalidArgument(f"{cls.__name__}: unknown fields {sorted(values)}")
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(fields))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


def iso(value: datetime) -> str:
    """A datetime as pydantic's JSON mode writes it (``+00:00`` as ``Z``)."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def plain(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json", exclude_none=True)`` for models of str, bool, int,
    datetime, date, tuples and nested such models (anything else goes through pydantic)."""
    out: dict[str, Any] = {}
    for name, value in model.__dict__.items():
        if value is not None:
            out[name] = _json(value)
    return out


def _json(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bool or kind is int:
        return value
    if kind is datetime:
        return iso(value)
    if kind is tuple:
        return [_json(item) for item in value]
    if kind is date:
        return value.isoformat()
    if isinstance(value, BaseModel):
        return plain(value)
    return to_jsonable_python(value)
