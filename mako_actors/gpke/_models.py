"""Models of already-checked values, built without pydantic validation.

The workflow builds its events, references and payloads from values that were validated once
on the way in (the command) or derived by our own code: validating them again costs more
than the decision itself. ``built`` skips that. Inbound data never goes through here:
commands are validated by ``commands``/``router``.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mako_actors.errors import InvalidArgument

__all__ = ["built"]

M = TypeVar("M", bound=BaseModel)


_setattr = object.__setattr__


@functools.cache
def _template(cls: type[BaseModel]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Every field of ``cls`` with its default, in declaration order (``PydanticUndefined`` for a
    required one), and the names of the required ones.

    Only immutable defaults are allowed here: a default is shared by every built instance.
    """
    template: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            raise TypeError(f"built({cls.__name__}): field {name} has a default factory")
        template[name] = info.default
    return template, tuple(name for name, default in template.items() if default is PydanticUndefined)


def built(cls: type[M], values: dict[str, Any]) -> M:
    """A ``cls`` holding ``values`` as they are: no validation, defaults filled in, fields in
    declaration order (so it dumps and compares like a validated one).

    Every value must already have its field's type; wrong types are not caught. Raises
    ``InvalidArgument`` naming a missing or unknown field.
    """
    template, required = _template(cls)
    fields = {**template, **values}  # keeps the template's order; unknown names come last
    if len(fields) != len(template):
        raise InvalidArgument(f"{cls.__name__}: unknown fields {sorted(set(fields) - set(template))}")
    for name in required:
        if fields[name] is PydanticUndefined:
            raise InvalidArgument(f"{cls.__name__}: field {name!r} missing")
    model = cls.__new__(cls)
    _setattr(model, "__dict__", fields)
    _setattr(model, "__pydantic_fields_set__", set(values))
    _setattr(model, "__pydantic_extra__", None)
    _setattr(model, "__pydantic_private__", None)
    return model
