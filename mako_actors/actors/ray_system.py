"""``RayActorSystem``: the actor API on a Ray cluster, with every actor on the shared LMDB store.

Two placements, one API (``spawn``, ``resume``, ``lookup``, ``aclose``; handles are
``ProcessRef``):

- ``hosted`` (default): ``hosts`` named async Ray actors, each running a ``LocalActorSystem``
  over its own ``LmdbStore`` on the shared directory (LMDB serializes writers across OS
  processes). A process is routed to host ``blake2b(stream id) % hosts``, so it has exactly one
  live actor in the cluster, and a host group-commits the writes of all its processes.
- ``dedicated``: each live process is its own named Ray actor (found again with
  ``get_if_exists``); idle ones are passivated by ending the Ray actor. A Ray actor is a whole
  OS process (~80 MB, ~0.3 s to start): for hundreds of hot processes, not for 100k.

Commands cross Ray pickled (pydantic models pickle; workflow and command classes must be
importable on the workers). Errors come back as plain data and are re-raised as the same
``EngineError`` subclass. Command calls are never retried by Ray (``max_task_retries=0``)
unless the command carries an ``idempotency_key``: a lost reply must not run a command twice,
so a host dying mid-call raises ``CommandOutcomeUnknown``. Hosts restart (``max_restarts``)
and re-activate their processes from the store on the next message.

``ray`` is imported by this module only; ``ray.init`` must have run before a system is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Literal

import ray
from ray.exceptions import RayActorError, RayTaskError

from mako_actors.actors._actor import COMMAND, TIMEOUT, ActorStats, Op
from mako_actors.actors._handles import HandleFactory, WorkflowsArg, workflow_registry
from mako_actors.actors._routing import host_index
from mako_actors.actors.local import LocalActorSystem
from mako_actors.actors.ref import ProcessRef
from mako_actors.envelope import ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument, register_error
from mako_actors.ids import StreamId, TenantId
from mako_actors.workflow import Workflow

Placement = Literal["hosted", "dedicated"]
_READ_RETRIES = 20


@register_error
class CommandOutcomeUnknown(EngineError):
    """The actor running a command died before replying: it may or may not have been stored.

    Not retried automatically (that could run it twice). Read the process's state or event
    count to find out, or resend a command the workflow recognizes as a repeat.
    """

    transient = True


@dataclass(frozen=True, slots=True)
class _Failure:
    """An ``EngineError`` as plain data, the way errors travel back from a host."""

    plain: dict[str, Any]


class _Host:
    """The body of a host (or dedicated) Ray actor: a ``LocalActorSystem`` on its own store.

    Constructed by Ray in the actor's process; a restart constructs it again, so every process
    re-activates from the store on its next message.
    """

    def __init__(self, path: str, workflows: list[type[Workflow[Any, Any]]], options: dict[str, Any]) -> None:
        from stores.lmdb import LmdbStore  # the worker opens its own environment

        store_options = dict(options.pop("store_options", None) or {})
        store = LmdbStore(path, **store_options)
        self._system = LocalActorSystem(store, workflows, close_store=True, **options)

    async def call(self, identity: ProcessIdentity, op: Op) -> Any:
        try:
            return await self._system.dispatch(identity, op)
        except EngineError as exc:
            return _Failure(exc.to_plain())

    async def lookup(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        return await self._system.store.lookup(tenant_id, key)

    async def stats(self) -> ActorStats:
        return self._system.stats

    async def passivate_idle(self, older_than: float) -> int:
        return await self._system.passivate_idle(older_than)

    async def aclose(self) -> None:
        await self._system.aclose()

    def rss_bytes(self) -> int:
        """Resident memory of this actor's OS process (Linux ``/proc``), for measurements."""
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_remote_host: Any = None


def _host_class() -> Any:
    global _remote_host
    if _remote_host is None:
        _remote_host = ray.remote(_Host)
    return _remote_host


class RayActorSystem(HandleFactory):
    """Process actors on Ray over the LMDB directory ``path``; same API as ``LocalActorSystem``.

    ``placement``: ``"hosted"`` (``hosts`` host actors, default ``os.cpu_count()``) or
    ``"dedicated"`` (one Ray actor per live process, at most ``max_live``, passivated after
    ``idle_timeout`` seconds). ``namespace`` and ``name_prefix`` name the Ray actors; two systems
    with the same names share actors. ``num_cpus``: CPUs each Ray actor reserves (0: actors do
    not take scheduling slots, they mostly wait on I/O). ``max_restarts``: how often Ray
    restarts a dead host (-1: always). Other keywords (``snapshot_interval``, ``max_attempts``,
    ``max_batch``, and for hosts ``idle_timeout``/``max_live``) configure each host's
    ``LocalActorSystem``; ``store_options`` go to each ``LmdbStore``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        workflows: WorkflowsArg,
        *,
        placement: Placement = "hosted",
        hosts: int | None = None,
        namespace: str = "mako_actors",
        name_prefix: str = "mako",
        snapshot_interval: int = 100,
        idle_timeout: float | None = 300.0,
        max_live: int | None = None,
        max_attempts: int = 8,
        max_batch: int = 512,
        num_cpus: float = 0,
        max_restarts: int = -1,
        max_concurrency: int = 10_000,
        store_options: dict[str, Any] | None = None,
        kill_on_close: bool = True,
    ) -> None:
        if not ray.is_initialized():
            raise InvalidArgument("RayActorSystem needs ray.init() to have run in this process")
        if placement not in ("hosted", "dedicated"):
            raise InvalidArgument(f"placement must be 'hosted' or 'dedicated', got {placement!r}")
        self.path = str(os.fspath(path))
        self.workflows = workflow_registry(workflows)
        self.placement: Placement = placement
        self.hosts = hosts or os.cpu_count() or 1
        self.namespace = namespace
        self.name_prefix = name_prefix
        self.idle_timeout = idle_timeout
        self.max_live = max_live
        self._classes = [type(w) for w in self.workflows.values()]
        self._host_options: dict[str, Any] = {
            "snapshot_interval": snapshot_interval,
            "max_attempts": max_attempts,
            "max_batch": max_batch,
            "store_options": store_options,
        }
        if placement == "hosted":
            self._host_options.update(idle_timeout=idle_timeout, max_live=max_live)
        else:
            # One process per actor: the Ray actor itself is what gets passivated.
            self._host_options.update(idle_timeout=None, max_live=None)
        self._actor_options: dict[str, Any] = {
            "namespace": namespace,
            "get_if_exists": True,
            "max_restarts": max_restarts,
            "max_task_retries": 0,
            "max_concurrency": max_concurrency,
            "num_cpus": num_cpus,
        }
        self._host_handles: list[Any] = []
        self._registry: Any = None
        # dedicated placement: stream → handle in LRU order, in-flight calls, last use
        self._dedicated: OrderedDict[StreamId, Any] = OrderedDict()
        self._inflight: dict[StreamId, int] = {}
        self._last_used: dict[StreamId, float] = {}
        self._passivating: dict[StreamId, asyncio.Task[None]] = {}
        self._slot_freed: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._calls = 0
        self._idle_calls: asyncio.Event | None = None
        self._kill_on_close = kill_on_close
        self._closed = False
        self._passivations = 0

    async def __aenter__(self) -> RayActorSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- actors ----------------------------------------------------------------------------

    def _new_actor(self, name: str) -> Any:
        return (
            _host_class()
            .options(name=name, **self._actor_options)
            .remote(self.path, self._classes, dict(self._host_options))
        )

    def host_handles(self) -> list[Any]:
        """The hosted placement's host actors (created on first use), index = routing slot."""
        if self.placement != "hosted":
            raise InvalidArgument("host_handles: only the hosted placement has hosts")
        if not self._host_handles:
            self._host_handles = [self._new_actor(f"{self.name_prefix}-host-{i}") for i in range(self.hosts)]
        return self._host_handles

    def host_for(self, stream_id: StreamId) -> Any:
        """The host actor that owns ``stream_id`` (hosted placement)."""
        handles = self.host_handles()
        return handles[host_index(str(stream_id), len(handles))]

    def _registry_actor(self) -> Any:
        if self.placement == "hosted":
            return self.host_handles()[0]
        if self._registry is None:
            self._registry = self._new_actor(f"{self.name_prefix}-registry")
        return self._registry

    async def _dedicated_actor(self, stream_id: StreamId) -> Any:
        while True:
            passivating = self._passivating.get(stream_id)
            if passivating is not None:  # never two actors for one stream: let the old one end
                await asyncio.shield(passivating)
                continue
            handle = self._dedicated.get(stream_id)
            if handle is not None:
                self._dedicated.move_to_end(stream_id)
                return handle
            if self.max_live is not None and len(self._dedicated) >= self.max_live:
                victim = next((s for s in self._dedicated if not self._inflight.get(s)), None)
                if victim is not None:
                    await self._passivate(victim)
                else:
                    if self._slot_freed is None:
                        self._slot_freed = asyncio.Event()
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                continue
            handle = self._new_actor(self._proc_name(stream_id))
            self._dedicated[stream_id] = handle
            return handle

    def _proc_name(self, stream_id: StreamId) -> str:
        return f"{self.name_prefix}-proc-{stream_id}"

    async def _passivate(self, stream_id: StreamId) -> None:
        handle = self._dedicated.pop(stream_id, None)
        if handle is None:
            return

        async def end() -> None:
            try:
                with contextlib.suppress(RayActorError):  # already gone: nothing to drain
                    await handle.aclose.remote()
                ray.kill(handle, no_restart=True)
                # ``ray.kill`` only *sends* the kill to the GCS: until the GCS has processed it,
                # the name still resolves to the dying actor, and ``get_if_exists`` would hand
                # the next call that dead handle ("actor died before replying").
                await self._name_released(self._proc_name(stream_id), handle)
                self._passivations += 1
            finally:
                # Popped here, before any waiter wakes: a waiter must find the stream free.
                self._passivating.pop(stream_id, None)

        task = asyncio.get_running_loop().create_task(end())
        self._passivating[stream_id] = task
        await asyncio.shield(task)

    async def _name_released(self, name: str, killed: Any) -> None:
        """Wait until the Ray name ``name`` no longer resolves to the killed actor ``killed``."""
        delay = 0.005
        deadline = time.monotonic() + 30.0
        while True:
            try:
                current = ray.get_actor(name, namespace=self.namespace)
            except ValueError:  # no actor of that name: released
                return
            if current._actor_id != killed._actor_id:  # another system already made a new one
                return
            if time.monotonic() > deadline:
                raise CommandOutcomeUnknown(f"Ray actor {name!r} was killed but its name is still taken")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def passivate_idle(self, older_than: float = 0.0) -> int:
        """Passivate idle actors unused for ``older_than`` seconds; returns how many (dedicated:
        Ray actors ended; hosted: process actors dropped inside the hosts)."""
        if self.placement == "hosted":
            counts = await asyncio.gather(*(h.passivate_idle.remote(older_than) for h in self.host_handles()))
            return int(sum(counts))
        now = time.monotonic()
        idle = [
            s
            for s in list(self._dedicated)
            if not self._inflight.get(s) and now - self._last_used.get(s, now) >= older_than
        ]
        for stream_id in idle:
            await self._passivate(stream_id)
        return len(idle)

    async def _reap_idle(self) -> None:
        assert self.idle_timeout is not None
        period = min(max(self.idle_timeout / 2, 0.05), 30.0)
        while not self._closed:
            await asyncio.sleep(period)
            await self.passivate_idle(self.idle_timeout)

    # -- handles ---------------------------------------------------------------------------

    def _ref(self, workflow: Workflow[Any, Any], identity: ProcessIdentity) -> ProcessRef[Any, Any]:
        return ProcessRef(workflow, identity, self)

    async def _lookup_identity(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        identity: ProcessIdentity | None = await self._reply(
            self._registry_actor().lookup.remote(tenant_id, key), write=False
        )
        return identity

    # -- dispatch --------------------------------------------------------------------------

    async def dispatch(self, identity: ProcessIdentity, op: Op) -> Any:
        """Send ``op`` to the process's actor and return its result (errors re-raised as sent)."""
        if self._closed:
            from mako_actors.actors.local import ActorSystemClosed

            raise ActorSystemClosed("actor system is closed")
        write = op.kind in (COMMAND, TIMEOUT)
        stream_id = identity.stream_id
        self._calls += 1
        try:
            if self.placement == "hosted":
                return await self._call(self.host_for(stream_id), identity, op, write)
            if self._reaper is None and self.idle_timeout is not None:
                self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())
            handle = await self._dedicated_actor(stream_id)
            self._inflight[stream_id] = self._inflight.get(stream_id, 0) + 1
            try:
                return await self._call(handle, identity, op, write)
            finally:
                self._inflight[stream_id] -= 1
                self._last_used[stream_id] = time.monotonic()
                if not self._inflight[stream_id]:
                    del self._inflight[stream_id]
                    if self._slot_freed is not None:
                        self._slot_freed.set()
        finally:
            self._calls -= 1
            if not self._calls and self._idle_calls is not None:
                self._idle_calls.set()

    async def _call(self, handle: Any, identity: ProcessIdentity, op: Op, write: bool) -> Any:
        """One call to an actor. Reads are retried while the actor restarts (they change nothing);
        writes never are, unless the command carries an ``idempotency_key`` (then Ray retries)."""
        retries = 3 if write and getattr(op.command, "idempotency_key", None) else 0
        for attempt in range(_READ_RETRIES):
            try:
                return await self._reply(
                    handle.call.options(max_task_retries=retries).remote(identity, op), write
                )
            except CommandOutcomeUnknown:
                if write or attempt == _READ_RETRIES - 1:
                    raise
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable: the loop returns or raises")

    async def _reply(self, ref: Any, write: bool) -> Any:
        """Await a Ray reply: ``_Failure`` → the ``EngineError`` subclass; Ray errors translated."""
        try:
            result = await ref
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, EngineError):
                raise cause from None
            raise
        except RayActorError as exc:
            raise CommandOutcomeUnknown(
                f"the actor died before replying ({type(exc).__name__}); "
                + ("the command may or may not have been stored" if write else "retry the read")
            ) from None
        if isinstance(result, _Failure):
            raise EngineError.from_plain(result.plain)
        return result

    # -- stats and lifecycle ---------------------------------------------------------------

    async def get_stats(self) -> ActorStats:
        """Counters summed over all hosts (dedicated: over the live Ray actors)."""
        handles = self.host_handles() if self.placement == "hosted" else list(self._dedicated.values())
        total = ActorStats()
        for stats in await asyncio.gather(*(h.stats.remote() for h in handles)):
            for f in fields(ActorStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(stats, f.name))
        if self.placement == "dedicated":
            total.live = len(self._dedicated)
            total.passivations += self._passivations
        return total

    async def rss_bytes(self) -> list[int]:
        """Resident memory of each host actor's OS process (hosted placement)."""
        return list(await asyncio.gather(*(h.rss_bytes.remote() for h in self.host_handles())))

    async def aclose(self) -> None:
        """Refuse new operations, wait for this driver's in-flight calls, close every actor.

        Hosts drain their mailboxes and close their stores; with ``kill_on_close`` (default)
        the Ray actors are then ended (dedicated actors always are).
        """
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        while self._calls:
            self._idle_calls = self._idle_calls or asyncio.Event()
            self._idle_calls.clear()
            await self._idle_calls.wait()
        for stream_id in list(self._dedicated):
            await self._passivate(stream_id)
        others = list(self._host_handles) + ([self._registry] if self._registry is not None else [])
        for handle in others:
            with contextlib.suppress(RayActorError):
                await handle.aclose.remote()
            if self._kill_on_close:
                ray.kill(handle, no_restart=True)
        self._host_handles = []
        self._registry = None
