"""Metrics in the Prometheus text exposition format, from the stats objects the engine keeps.

``prometheus_text({"store": store.stats, "actors": system.stats, "deadlines": scheduler.stats})``
renders every int or float field of each stats dataclass as ``mako_<group>_<field>``, and
dict-of-int fields as one series per key (``label="..."``). Serve it from any HTTP endpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(groups: Mapping[str, Any], *, labels: Mapping[str, str] | None = None) -> str:
    """The text exposition of every numeric field of each dataclass in ``groups``.

    ``labels`` (e.g. ``{"node": "host-1"}``) are added to every series. Non-dataclass values
    that are plain numbers are rendered as a single series named by their key.
    """
    base = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted((labels or {}).items()))
    lines: list[str] = []

    def emit(name: str, value: float, extra: str = "") -> None:
        both = ",".join(part for part in (base, extra) if part)
        lines.append(f"{name}{{{both}}} {value}" if both else f"{name} {value}")

    for group, stats in groups.items():
        fields: dict[str, Any]
        if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
            fields = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
        elif isinstance(stats, int | float):
            fields = {"": stats}
        else:
            raise TypeError(f"metrics group {group!r}: expected a stats dataclass or a number")
        for field, value in fields.items():
            name = f"mako_{group}_{field}".rstrip("_")
            if isinstance(value, bool) or not isinstance(value, int | float | dict):
                continue
            lines.append(f"# TYPE {name} gauge")
            if isinstance(value, dict):
                for key, item in sorted(value.items()):
                    if isinstance(item, int | float):
                        emit(name, item, f'label="{_escape(str(key))}"')
            else:
                emit(name, value)
    return "\n".join(lines) + "\n"
