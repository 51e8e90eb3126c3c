"""Models of already-checked values, built without pydantic validation.

The workflow builds its events, references and payloads from values that were validated once
on the way in (the command) or derived by our own code: validating them again costs more
than the decision itself. ``built`` skips that. Inbound data never goes through here:
commands are validated by ``commands``/``router``.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from mako_actors.envelope import trusted
from mako_actors.errors import InvalidArgument

__all__ = [
    "PlainDump",
    "built",
    "json_value",
    "plain_dump",
    "plain_dumper",
    "positional",
    "unvalidated",
    "updated",
    "without_none",
]

M = TypeVar("M", bound=BaseModel)

# For ``updated``, which copies a model's extra and private values too (``envelope.trusted``,
# which the makers use, sets them to None): the slots every model instance has, and its
# ``__dict__``, set through their descriptors; ``BaseModel`` has no ``__new__`` of its own.
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
        return trusted(cls, fields, fields_set)

    make.__name__ = f"unvalidated({cls.__name__})"
    return make


@functools.cache
def _positional_maker(cls: type[M]) -> Callable[..., M]:
    """``built`` for a frozen model whose every field is given, as positional arguments in
    declaration order: one generated function, no keyword dict to merge (~3k instructions less
    than ``unvalidated``'s). Raises ``InvalidArgument`` for a model that is not frozen.

    Nothing is checked per call: mypy does not see the argument order, so callers pass every
    field, each of its field's type.
    """
    if not cls.model_config.get("frozen"):
        raise InvalidArgument(f"{cls.__name__}: a positional maker shares one fields-set: frozen models only")
    names = tuple(cls.model_fields)
    params = ", ".join(f"v{index}" for index in range(len(names)))
    values = ", ".join(f"{name!r}: v{index}" for index, name in enumerate(names))
    source = (
        f"def make({params}):\n"
        f"    return trusted(cls, {{{values}}}, every_field)\n"
    )
    namespace: dict[str, Any] = {
        "cls": cls,
        "every_field": set(names),  # shared, as ``_keyword_maker``'s: nothing adds to it
        "trusted": trusted,
    }
    exec(compile(source, f"<positional maker of {cls.__qualname__}>", "exec"), namespace)
    make: Callable[..., M] = namespace["make"]
    return make


def updated(model: M, update: dict[str, Any]) -> M:
    """``model.model_copy(update=update)`` in one step: a new instance, ``model`` unchanged.

    As with ``model_copy``, the updated values are not validated; names must be fields.
    """
    cls = type(model)
    shares = _shares_fields_set.get(cls)
    if shares is None:
        shares = _shares_fields_set[cls] = _may_share_fields_set(cls)
    if shares:
        # A workflow's state changes a few fields it has set before: the copy shares the
        # (equal) fields set then, and ``trusted`` sets the slots for less than the descriptors.
        fields_set = model.__pydantic_fields_set__
        if not fields_set.issuperset(update):
            fields_set = fields_set | update.keys()
        return trusted(cls, {**model.__dict__, **update}, fields_set)
    new = _new(cls)
    _set_dict(new, {**model.__dict__, **update})
    _set_fields_set(new, model.__pydantic_fields_set__ | update.keys())
    _set_extra(new, model.__pydantic_extra__)
    _set_private(new, model.__pydantic_private__)
    return new


# Per model class: whether ``updated`` may share a fields set between copies and leave
# ``__pydantic_extra__``/``__pydantic_private__`` None (see ``_may_share_fields_set``).
_shares_fields_set: dict[type[BaseModel], bool] = {}


def _may_share_fields_set(cls: type[BaseModel]) -> bool:
    """Whether copies of ``cls`` may share one fields set (frozen: pydantic copies the set
    before it changes one, as ``trusted`` says) and hold no extra or private values (so both
    are always None, as ``trusted`` sets them)."""
    config = cls.model_config
    return bool(config.get("frozen")) and config.get("extra") != "allow" and not cls.__private_attributes__


if TYPE_CHECKING:

    def unvalidated(cls: type[M]) -> type[M]:
        """``cls`` itself to the type checker, so ``unvalidated(Event)(field=...)`` is checked
        against the model's fields like ``Event(field=...)``; at run time it is ``built`` taking
        the values as keywords (one call per model, the maker cached per class)."""
        ...

    def positional(cls: type[M]) -> Callable[..., M]:
        """``_positional_maker`` (see there): the maker generated once per class."""
        ...

else:
    unvalidated = _keyword_maker
    positional = _positional_maker


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


# -- ``model_dump(mode="json")`` written out ------------------------------------------------------
#
# Each model class gets one generated function that builds its dump as a single dict display:
# a value that is its own JSON form is read from ``__dict__`` as it is, an instant's text comes
# from the ``_DATETIME_TEXT`` cache inline (no call when cached), a nested model is one call of
# its own function. pydantic's serializer costs about twice as much per event (it asks the
# zone for every instant's offset again), and a generic loop over the fields in Python more.


_AS_IT_IS = (str, bool, int)  # field types whose values are their own JSON form


def _value_expr(annotation: Any, value: str, depth: int) -> str | None:
    """The source of the JSON form of ``value`` (an expression read once) for a field of type
    ``annotation``, or None for a type the written-out dump does not cover."""
    origin = get_origin(annotation)
    name = f"_v{depth}"
    if origin is Union or origin is types.UnionType:
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(options) != 1:
            return None
        inner = _value_expr(options[0], name, depth + 1)
        if inner is None or inner == name:  # not covered, or None and values as they are
            return None if inner is None else value
        return f"(None if ({name} := {value}) is None else {inner})"
    if origin is Literal:
        return value if all(type(arg) in _AS_IT_IS for arg in get_args(annotation)) else None
    if annotation in _AS_IT_IS:
        return value
    if annotation is datetime:
        # The cached text without a call; ``_DATETIME_TEXT``'s key (instant, zone, fold).
        return f"(_text_get((({name} := {value}), {name}.tzinfo, {name}.fold)) or _datetime_text({name}))"
    if annotation is date:
        return f"_json_value({value})"
    args = get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _value_expr(args[0], name, depth + 1)
        if item is None:
            return None
        return f"list({value})" if item == name else f"[{item} for {name} in {value}]"
    if origin is dict and args and args[0] is str:
        item = _value_expr(args[1], name, depth + 1)
        if item is None:
            return None
        return f"dict({value})" if item == name else f"{{_k: {item} for _k, {name} in {value}.items()}}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        nested = _dumper(annotation)
        return None if nested is None else f"_dumpers[{_DUMPER_INDEX[annotation]}]({value})"
    return None


_DUMPERS: list[Callable[[BaseModel], dict[str, Any]]] = []  # by ``_DUMPER_INDEX`` of their class
_DUMPER_INDEX: dict[type[BaseModel], int] = {}


@functools.cache
def _dumper(cls: type[BaseModel]) -> Callable[[BaseModel], dict[str, Any]] | None:
    """The written-out dump of ``cls``, or None when pydantic must dump it: a field of a type
    not covered, or a class that serializes in its own way (serializer decorators, computed
    fields, aliases, excluded fields)."""
    decorators = cls.__pydantic_decorators__
    if decorators.model_serializers or decorators.field_serializers or cls.model_computed_fields:
        return None
    entries = []
    for name, info in cls.model_fields.items():
        if info.alias is not None or info.serialization_alias is not None or info.exclude:
            return None
        expr = _value_expr(info.annotation, f"_values[{name!r}]", 0)
        if expr is None:
            return None
        entries.append(f"{name!r}: {expr}")
    source = (
        "def dump(model):\n"
        "    _values = model.__dict__\n"  # every field of a model instance is in it
        f"    return {{{', '.join(entries)}}}\n"
    )
    namespace: dict[str, Any] = {
        "_text_get": _DATETIME_TEXT.get,
        "_datetime_text": _datetime_text,
        "_json_value": json_value,
        "_dumpers": _DUMPERS,
    }
    exec(compile(source, f"<plain dump of {cls.__qualname__}>", "exec"), namespace)
    dump: Callable[[BaseModel], dict[str, Any]] = namespace["dump"]
    _DUMPER_INDEX[cls] = len(_DUMPERS)
    _DUMPERS.append(dump)
    return dump


def plain_dumper(cls: type[BaseModel]) -> Callable[[Any], dict[str, Any]] | None:
    """The function ``plain_dump`` calls for a model of ``cls``, or None for pydantic's dump."""
    return _dumper(cls)


def plain_dump(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")``, written out: the same keys, order and values, from
    one generated function per class (pydantic's serializer for a class it does not cover).

    Every value must have its field's type, as for ``built`` (a str subclass stays as it is).
    """
    cls = type(model)
    dump = _dumper(cls)
    if dump is None:
        plain: dict[str, Any] = cls.__pydantic_serializer__.to_python(model, mode="json")
        return plain
    return dump(model)


class PlainDump(BaseModel):
    """A model whose ``model_dump(mode="json")`` without other options is ``plain_dump``: what
    storing an event asks (``workflow.event_payload``), once per event. Any other call is
    pydantic's own."""

    def model_dump(
        self, *, mode: Literal["json", "python"] | str = "python", **options: Any
    ) -> dict[str, Any]:
        # ``**options`` rather than pydantic's fourteen keywords with defaults: binding those
        # would cost a tenth of the dump.
        if mode == "json" and not options:
            dump = _dumper(type(self))  # ``plain_dump`` inline: one call less per event
            if dump is not None:
                return dump(self)
        return super().model_dump(mode=mode, **options)
