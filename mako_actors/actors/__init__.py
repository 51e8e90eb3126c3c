"""The actor runtime: one live actor per process, in-process (asyncio) or on Ray.

- ``LocalActorSystem``: actors on one asyncio loop over one store (tests, notebooks,
  single-node services); group commit comes from the LMDB store batching concurrent writes.
- ``RayActorSystem``: the same API on a Ray cluster, ``placement="hosted"`` (fixed host
  actors, processes routed by a stable hash) or ``"dedicated"`` (one Ray actor per process).
  Imported lazily: importing this package never imports ``ray``.
- ``ProcessRef``: the handle both return, with the methods of ``Process``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mako_actors.actors._actor import ActorStats
from mako_actors.actors._routing import host_index, stable_hash
from mako_actors.actors.local import ActorSystemClosed, LocalActorSystem
from mako_actors.actors.ref import ProcessRef

if TYPE_CHECKING:
    from mako_actors.actors.ray_system import CommandOutcomeUnknown, HostStartFailed, RayActorSystem

__all__ = [
    "ActorStats",
    "ActorSystemClosed",
    "CommandOutcomeUnknown",
    "HostStartFailed",
    "LocalActorSystem",
    "ProcessRef",
    "RayActorSystem",
    "host_index",
    "stable_hash",
]


def __getattr__(name: str) -> Any:
    if name in ("RayActorSystem", "CommandOutcomeUnknown", "HostStartFailed"):
        from mako_actors.actors import ray_system

        return getattr(ray_system, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
