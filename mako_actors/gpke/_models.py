"""Models of already-checked values, built without pydantic validation.

The workflow builds its events, references and payloads from values that were validated once
on the way in (the command) or derived by our own code: validating them again costs more
than the decision itself. ``built`` skips that. Inbound data never goes through here:
commands are validated by ``commands``/``router``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from mako_actors.errors import InvalidArgument

__all__ = ["built", "json_value", "unvalidated", "updated", "without_none"]

M = TypeVar("M", bound=BaseModel)

# The slots every model instance has, and its ``__dict__``, set through their descriptors
# (cheaper than ``object.__setattr__`` by name); ``BaseModel`` has no ``__new__`` of its own.
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
assert BaseModel.__new__ is object.__new__


@functools.cache
def _template(
    cls: type[BaseModel],
) -> tuple[dict[str, Any], frozenset[str], tuple[tuple[str, Callable[[], Any]], ...]]:
    """Every field of ``cls`` with its default, in declaration order (``PydanticUndefined`` for a
    required one or one with a default factory), the names of the required ones, and the
    fields with a default factory (each built instance gets its own value from it).

    A plain default is shared by every built instance, as it is by validated ones.
    """
    template: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, info in cls.model_fields.items():
        template[name] = info.default
        if info.default_factory is not None:
            template[name] = PydanticUndefined
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
    made = {name for name, _ in factories}
    required = frozenset(
        name for name, value in template.items() if value is PydanticUndefined and name not in made
    )
    return template, required, tuple(factories)


def built(cls: type[M], values: dict[str, Any]) -> M:
    """A ``cls`` holding ``values`` as they are: no validation, defaults filled in, fields in
    declaration order (so it dumps and compares like a validated one).

    Every value must already have its field's type; wrong types are not caught. Raises
    ``InvalidArgument`` naming a missing or unknown field.
    """
    make: Callable[[dict[str, Any]], M] = _maker(cls)  # ``functools.cache`` hides the type
    return make(values)


@functools.cache
def _maker(cls: type[M]) -> Callable[[dict[str, Any]], M]:
    """``built`` for one class, its template looked up once (tens of thousands of calls per
    replay: events, references, outbox entries)."""
    make: Callable[..., M] = _keyword_maker(cls)  # ``functools.cache`` hides the type

    def make_from(values: dict[str, Any]) -> M:
        return make(**values)

    return make_from


@functools.cache
def _keyword_maker(cls: type[M]) -> Callable[..., M]:
    """``built`` for one class, the values as keyword arguments: the form ``unvalidated`` hands
    out, so each of the ~12 models a message builds costs one call, not two."""
    template, required, factories = _template(cls)
    size = len(template)
    # Every field set: one set for all instances of a frozen model. Nothing adds to it (no
    # ``__setattr__``; ``model_copy`` and ``updated`` give the copy a set of its own).
    every_field = set(template) if cls.model_config.get("frozen") else None

    def make(**values: Any) -> M:
        fields = {**template, **values}  # keeps the template's order; unknown names come last
        if len(fields) != size:
            raise InvalidArgument(f"{cls.__name__}: unknown fields {sorted(set(fields) - set(template))}")
        # Every field given (the usual case) leaves nothing to check or to make.
        if len(values) != size:
            if not values.keys() >= required:
                for name in template:  # the first missing one, in declaration order
                    if name in required and name not in values:
                        raise InvalidArgument(f"{cls.__name__}: field {name!r} missing")
            for name, factory in factories:
                if fields[name] is PydanticUndefined:
                    fields[name] = factory()
            fields_set = set(values)
        else:
            fields_set = every_field or set(values)
        model = _new(cls)
        _set_dict(model, fields)
        _set_fields_set(model, fields_set)
        _set_extra(model, None)
        _set_private(model, None)
        return model

    make.__name__ = f"unvalidated({cls.__name__})"
    return make


def updated(model: M, update: dict[str, Any]) -> M:
    """``model.model_copy(update=update)`` in one step: a new instance, ``model`` unchanged.

    As with ``model_copy``, the updated values are not validated; names must be fields.
    """
    new = _new(type(model))
    _set_dict(new, {**model.__dict__, **update})
    _set_fields_set(new, model.__pydantic_fields_set__ | update.keys())
    _set_extra(new, model.__pydantic_extra__)
    _set_private(new, model.__pydantic_private__)
    return new


if TYPE_CHECKING:

    def unvalidated(cls: type[M]) -> type[M]:
        """``cls`` itself to the type checker, so ``unvalidated(Event)(field=...)`` is checked
        against the model's fields like ``Event(field=...)``; at run time it is ``built`` taking
        the values as keywords (one call per model, the maker cached per class)."""
        ...

else:
    unvalidated = _keyword_maker


_DATETIME_JSON = TypeAdapter(datetime).serializer
_DATE_JSON = TypeAdapter(date).serializer
# The text of the instants dumped lately: a process's dates (Zuordnungsbeginn, its Fristen) are
# dumped again in every message and journal entry that names them. Keyed by the instant with
# its ``tzinfo`` and ``fold``: equal keys have the same wall time and UTC offset, hence the same
# text, while an equal instant in another zone is another key (it keeps its own offset).
_DATETIME_TEXT: dict[tuple[datetime, object, int], str] = {}


def _datetime_text(value: datetime) -> str:
    """``value`` (exactly a ``datetime``) as pydantic dumps it in JSON mode, cached."""
    key = (value, value.tzinfo, value.fold)
    text = _DATETIME_TEXT.get(key)
    if text is None:
        text = _DATETIME_JSON.to_python(value, mode="json")
        if len(_DATETIME_TEXT) >= 4096:
            _DATETIME_TEXT.clear()
        _DATETIME_TEXT[key] = text
    return text


def json_value(value: Any) -> Any:
    """``value`` as pydantic's ``model_dump(mode="json")`` dumps a field of its type, for the
    types our payloads and journal entries hold: str, bool, int, datetime and date (serialised
    by pydantic itself), tuples of those (as lists). Raises ``InvalidArgument`` for others."""
    kind = type(value)
    if kind is str or kind is bool or kind is int:
        return value
    if kind is datetime:
        return _datetime_text(value)
    if kind is tuple:
        return [json_value(item) for item in value]
    if isinstance(value, datetime):
        return _DATETIME_JSON.to_python(value, mode="json")
    if isinstance(value, date):
        return _DATE_JSON.to_python(value, mode="json")
    if isinstance(value, str):
        return str.__str__(value)  # the plain text, as pydantic dumps a str subclass (StrEnum)
    raise InvalidArgument(f"value {value!r} of type {kind.__name__} has no plain JSON form here")


def without_none(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data`` (a model's dump) without the key ``name`` when its value is None: a field added
    later is left out of stored bytes until it says something."""
    if name in data and data[name] is None:
        del data[name]
    return data
