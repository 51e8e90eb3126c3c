"""Cheap construction of frozen slots dataclasses on hot paths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import TypeVar

_T = TypeVar("_T")


def positional_maker(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor (fields in declaration order) for a frozen slots dataclass.

    A frozen ``__init__`` pays a slow ``object.__setattr__`` per field. So a twin class with
    the same ``__slots__`` fills them with plain (specialised) slot stores and then becomes
    ``cls`` by ``__class__`` assignment, which Python allows between classes of identical
    layout. The result is an ordinary ``cls`` instance with the same values; for hot paths
    that give every field (the parser, inbound, the store's commit results). Raises
    ``TypeError`` for a class with extra slots or without slots.
    """
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    if getattr(cls, "__slots__", None) != names:
        raise TypeError(f"{cls.__name__} must be a slots dataclass without extra slots")
    params = "".join(f", v_{i}" for i in range(len(names)))
    body = "".join(f"    self.{name} = v_{i}\n" for i, name in enumerate(names))
    scope: dict[str, object] = {"target": cls}
    exec(f"def __init__(self{params}):\n{body}    self.__class__ = target\n", scope)
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": names, "__init__": scope["__init__"]})
    return twin
