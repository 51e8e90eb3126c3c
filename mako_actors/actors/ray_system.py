"""``RayActorSystem``: the actor API on a Ray cluster, over one shared or many partitioned LMDB stores.

Three layouts, one API (``spawn``, ``resume``, ``lookup``, ``aclose``; handles are
``ProcessRef``):

- ``hosted`` (default): ``hosts`` named async Ray actors, each running a ``LocalActorSystem``
  over its own ``LmdbStore`` on the shared directory (LMDB serializes writers across OS
  processes, so all hosts must be on one machine). A process is routed to host
  ``blake2b(stream id) % hosts``, so it has exactly one live actor in the cluster, and a host
  group-commits the writes of all its processes.
- ``partitions=PartitionMap(...)``: the store is a fixed set of partitions, each its own LMDB
  environment in its own directory on the node that owns it (``mako_actors.partitions``). One
  host per node, pinned there with ``NodeAffinitySchedulingStrategy``, runs one
  ``LocalActorSystem`` per partition it owns. A partition whose node is gone raises
  ``PartitionUnavailable``; ``rebalance`` moves a partition explicitly (pause, consistent copy,
  switch, resume). With ``inbound={...}``, ``ingest(raw, received_at)`` runs the
  ``InboundPipeline`` on the host of the interchange's first MaLo (``_Host.ingest``).
- ``dedicated``: each live process is its own named Ray actor (found again with
  ``get_if_exists``); idle ones are passivated by ending the Ray actor. A Ray actor is a whole
  OS process (~80 MB, ~0.3 s to start): for hundreds of hot processes, not for 100k.

Calls are batched: every operation for one host that is ready while its previous call is in
flight travels in one Ray call (``call_batch``, one in flight per host by default) and comes
back as one list of per-operation results; the host hands them to the actors' mailboxes in
list order, and batches in arrival order, so calls to one process are ordered as they arrive
at the host, from any caller. Batches cross Ray as msgpack bytes (``_wire``; what has no plain
form is pickled: workflow and command classes must be importable on the workers, or be
``__main__``'s, which travel by value). Errors come back as plain
data and are re-raised as the same ``EngineError`` subclass. A write is never resent after a
host died mid-call unless its command carries an ``idempotency_key``: a lost reply must not run
a command twice, so the caller gets ``CommandOutcomeUnknown``. The key is the caller's promise
that a second run is harmless (its workflow recognises a key it handled); nothing here stores
or checks it. Reads are resent, ahead of
what was queued for the host meanwhile (a caller's order per process holds across a resend;
with dedicated placement, later operations of the process wait for its resends: ``_Resending``).

``ray`` is imported by this module only; ``ray.init`` must have run before a system is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import pickle
import secrets
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, cast

import ray
from ray import cloudpickle
from ray.exceptions import RayActorError, RayTaskError

from mako_actors._durable import fsync_directory
from mako_actors.actors._actor import _WRITES, ActorStats, Op, RunningLoop, check_actor_settings
from mako_actors.actors._handles import HandleFactory, WorkflowsArg, workflow_registry
from mako_actors.actors._routing import host_index, stable_hash
from mako_actors.actors._wire import OpDecoder, _pickle, decode_results, encode_ops, encode_results
from mako_actors.actors.local import ActorSystemClosed, LocalActorSystem
from mako_actors.actors.ref import ProcessRef
from mako_actors.envelope import EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument, RegistryConflict, register_error
from mako_actors.ids import StreamId, TenantId
from mako_actors.partitions import (
    PartitionMap,
    PartitionNotOpen,
    PartitionUnavailable,
    journal_home,
    key_home,
    partition_of,
    routing_slot,
)
from mako_actors.store import Commit
from mako_actors.workflow import Workflow

Placement = Literal["hosted", "dedicated"]
_READ_RETRIES = 20
_IDEMPOTENT_RETRIES = 3
_NODE_RESOURCE = "mako-node:"
# A host's refusal of an operation for a partition it does not hold (``PartitionNotOpen``), and
# how often one operation is sent again (after 0.05, 0.1, ... 1 s: ~2.5 s for another driver's
# rebalance to copy the partition) before its caller gets the refusal
_NOT_OPEN = PartitionNotOpen.__name__
_MOVED_RETRIES = 6
# A registry key homed in a partition being moved is written there after up to this many more
# tries (~5 s); a home not reached (moving longer, its host gone) again every _FORWARD_AGAIN_S
# in the background, at a move's end and when the driver made a host again.
_FORWARD_RETRIES = 9
_FORWARD_AGAIN_S = 2.0
_CLOSED = ActorSystemClosed.__name__
# How often a host frees its stores' reader slots of processes that died mid-read (seconds)
_STALE_READERS_EVERY = 30.0
_log = logging.getLogger(__name__)


@register_error
class CommandOutcomeUnknown(EngineError):
    """The actor running a command died before replying: it may or may not have been stored.

    Not retried automatically (that could run it twice). Read the process's state or event
    count to find out, or resend a command the workflow recognizes as a repeat.
    """

    transient = True


@register_error
class HostStartFailed(EngineError):
    """A host (or dedicated) Ray actor failed in its constructor, e.g. a store path it cannot
    open: nothing ran on it, so nothing was stored. The message is the constructor's error."""

    operational = True


def _start_failure(exc: BaseException) -> HostStartFailed | None:
    """``HostStartFailed`` with the constructor's error for a Ray actor that died starting."""
    if not getattr(exc, "actor_init_failed", False):
        return None
    lines = [line.strip() for line in str(getattr(exc, "error_msg", exc)).splitlines() if line.strip()]
    return HostStartFailed(f"the Ray actor could not start: {lines[-1] if lines else exc}")


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What ``RayActorSystem.repair_keys`` did: keys written at their home partition, keys
    bound to another process there (kept, logged), and homes it could not reach (retry)."""

    written: int
    conflicts: int
    unreachable: int


@dataclass(frozen=True, slots=True)
class _Failure:
    """An ``EngineError`` as plain data, the way errors travel back from a host."""

    plain: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Raised:
    """Any other exception of one operation in a batch (the others are unaffected)."""

    exc: BaseException


class PushedClock:
    """A host's clock when the driver's is a ``VirtualClock``: the latest time the driver sent.

    Every batch carries the driver's clock reading; the host keeps the latest (it never goes
    back), so commands are stamped with the virtual time at which they were sent (a command
    queued behind a later batch gets that batch's time).
    """

    def __init__(self, start: datetime) -> None:
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def push(self, now: datetime) -> None:
        if now > self._now:
            self._now = now


class _ForwardingStore:
    """A partition's store that also writes registry keys homed elsewhere after each commit.

    A commit's registry entries go into the process's own partition in its transaction (the
    competing-process check of one MaLo stays atomic); an entry whose ``key_home`` is another
    partition is also written there, before the command is acknowledged, so a lookup asks
    exactly one partition.
    """

    def __init__(self, store: Any, host: _Host, partition: int) -> None:
        self._store = store
        self._host = host
        self._partition = partition

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    # Defined on the class, not left to ``__getattr__``: the actors' runner asks the store's
    # class whether it reads activations inside the loop turn (a caching wrapper must not be
    # bypassed). Reads go to the partition's own store unchanged; only commits forward keys.
    def load_activation_now(self, stream_id: StreamId, workflow_name: str, state_schema_version: int) -> Any:
        return self._store.load_activation_now(stream_id, workflow_name, state_schema_version)

    def load_activations_now(self, requests: Sequence[tuple[StreamId, str, int]]) -> Any:
        return self._store.load_activations_now(requests)

    async def commit(self, commit: Commit) -> Any:
        result = await self._store.commit(commit)
        await self._host.forward_keys(self._partition, [commit])
        return result

    async def commit_many(self, commits: Sequence[Commit]) -> list[Any]:
        results: list[Any] = await self._store.commit_many(commits)
        done = [
            c for c, r in zip(commits, results, strict=True) if c.registry and not isinstance(r, EngineError)
        ]
        if done:
            await self._host.forward_keys(self._partition, done)
        return results


def _served(spec: dict[str, Any]) -> str:
    """What an actor of ``spec`` serves: the shared store's directory, or a node's data directory."""
    return str(spec["path"] if spec["mode"] == "shared" else spec["data_dir"])


class _Host:
    """The body of a host (or dedicated) Ray actor: ``LocalActorSystem``\\ s on local stores.

    Constructed by Ray in the actor's process; a restart constructs it again, so every process
    re-activates from the store on its next message. ``spec`` is plain data (see
    ``RayActorSystem._spec``); a partitioned host opens only partitions whose data is here.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        from mako_actors.process import system_clock

        self._spec = spec
        if spec.get("gc_threshold"):
            _tune_gc(spec["gc_threshold"])
        pushed = spec.get("pushed_clock")
        self._pushed = PushedClock(pushed) if pushed is not None else None
        self._clock: Callable[[], datetime] = self._pushed or spec.get("clock") or system_clock
        self._systems: dict[int, LocalActorSystem] = {}
        self._stores: dict[int, Any] = {}
        # ``hand_over`` awaits its actors' drain; a ``reopen`` of a move given up meanwhile must
        # wait for it (else the copy it fences would be the one just reopened).
        self._moving = asyncio.Lock()
        self._peers: dict[str, Any] = {}
        self._router: _HostRouter | None = None
        self._peer_batches: dict[str, list[tuple[int, ProcessIdentity, Op, Any]]] = {}
        self._peer_sends: set[asyncio.Task[None]] = set()
        self._decode = OpDecoder()
        # Interchanges being ingested here: copies of one (its bytes pick one partition, so one
        # host) take turns across this host's per-call pipelines (``InboundPipeline``).
        self._ingesting: dict[tuple[str, str, str], asyncio.Event] = {}
        # Registry keys committed here whose write at their home partition failed (moving, its
        # host dead): written again by ``_forward_later`` until done.
        self._unforwarded: dict[int, dict[str, ProcessIdentity]] = {}  # home -> key -> identity
        self._forwarding: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._repairing: asyncio.Task[list[int]] | None = None
        self.forward_failures = 0
        self._readers_every = float(spec.get("stale_readers_every", _STALE_READERS_EVERY))
        self._readers_due = time.monotonic() + self._readers_every  # (opening cleared them)
        if spec["mode"] == "shared":
            from stores.lmdb import LmdbStore  # the worker opens its own environment

            store = LmdbStore(spec["path"], **(spec.get("store_options") or {}))
            self._stores[0] = store
            self._systems[0] = self._system(store)
            self._count = 1
        else:
            self._count = len(spec["assignment"])
            for p in spec["partitions"]:
                with contextlib.suppress(PartitionUnavailable):  # reported per call, not at start
                    self._open(p)

    def _system(self, store: Any) -> LocalActorSystem:
        return LocalActorSystem(
            store, self._spec["workflows"], close_store=True, clock=self._clock, **self._spec["options"]
        )

    def _open(self, partition: int) -> None:
        from stores.partitioned import open_partition

        store = open_partition(
            self._spec["data_dir"], partition, self._count, **(self._spec.get("store_options") or {})
        )
        self._stores[partition] = store
        self._systems[partition] = self._system(_ForwardingStore(store, self, partition))

    # -- calls -----------------------------------------------------------------------------

    async def call_batch(self, now: datetime | None, data: bytes) -> bytes:
        """Run a batch (``_wire.encode_ops``); each operation reaches its actor's mailbox in list order.

        Returns ``_wire.encode_results`` of one result per operation: its value, or its error
        as ``_Failure``/``_Raised`` (the others are unaffected).
        """
        if now is not None and self._pushed is not None:
            self._pushed.push(now)
        if self._repairing is None:
            self._repair_once()
        self._readers_if_due()
        items = self._decode(data)
        return encode_results([identity for _, identity, _ in items], await self.run_batch(items))

    async def run_batch(self, items: list[tuple[int, ProcessIdentity, Op]]) -> list[Any]:
        """``call_batch`` on decoded operations; per-operation results, errors as plain data.

        An operation for a live actor goes straight into its mailbox (no task); the others
        (activation, reads from the store) run as ``dispatch`` tasks, created in list order.
        """
        pending: list[Any] = []
        for partition, identity, op in items:
            system = self._systems.get(partition)
            if system is None:
                pending.append(PartitionNotOpen(
                    f"partition {partition} is not open on this host ({self._where()})"
                ))  # fmt: skip
                continue
            waiter: Any
            try:
                waiter = system.submit_live(identity, op)
                if waiter is None:
                    waiter = asyncio.ensure_future(
                        system.dispatch_new(identity, op) if op.new else system.dispatch(identity, op)
                    )
            except Exception as exc:
                waiter = exc
            pending.append(waiter)
        results: list[Any] = []
        for waiter in pending:
            if isinstance(waiter, BaseException):
                results.append(_as_result(waiter))
                continue
            try:
                results.append(await waiter)
            except Exception as exc:
                results.append(_as_result(exc))
        return results

    async def _dispatch(self, partition: int, identity: ProcessIdentity, op: Op) -> Any:
        system = self._systems.get(partition)
        if system is None:
            raise PartitionNotOpen(f"partition {partition} is not open on this host ({self._where()})")
        return await system.dispatch(identity, op)

    def _where(self) -> str:
        return str(self._spec.get("node") or self._spec.get("path"))

    async def call(self, identity: ProcessIdentity, op: Op) -> Any:
        """One operation (kept for callers that hold a host handle)."""
        [result] = await self.run_batch([(0, identity, op)])
        return result

    async def lookup(self, partition: int, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        if partition not in self._stores:
            raise PartitionNotOpen(f"partition {partition} is not open on this host ({self._where()})")
        return cast(ProcessIdentity | None, await self._stores[partition].lookup(tenant_id, key))

    # -- registry keys homed in other partitions -------------------------------------------

    def _peer(self, node: str) -> Any:
        """The host actor of another node (cached; dropped again when a call to it fails)."""
        peer = self._peers.get(node)
        if peer is None:
            peer = ray.get_actor(f"{self._spec['prefix']}-node-{node}", namespace=self._spec["namespace"])
            self._peers[node] = peer
        return peer

    async def journal(self, partition: int, tenant_id: TenantId, key: str) -> list[dict[str, Any]]:
        return list(await self._store_of(partition).journal(tenant_id, key))

    async def load_from(
        self, partition: int, stream_id: StreamId, after_seq: int, upto: int | None
    ) -> list[EventEnvelope]:
        return list(await self._store_of(partition).load_from(stream_id, after_seq, upto=upto))

    async def forward_keys(self, partition: int, commits: Sequence[Commit]) -> None:
        """Write the commits' registry keys homed in other partitions there (after the commit).

        Not atomic with the commit: a crash or a failed call in between leaves a key missing
        at its home, and a lookup of it misses until ``repair_keys`` completes the write (the
        entry in ``partition``, written in the commit's transaction, is what it repairs from).
        """
        entries = [entry for commit in commits for entry in commit.registry]
        await self._complete_elsewhere(partition, entries)

    async def _complete_elsewhere(
        self,
        partition: int,
        entries: Sequence[tuple[str, ProcessIdentity]],
        tries: int = _FORWARD_RETRIES + 1,
    ) -> list[int]:
        """Write ``entries`` of ``partition`` homed elsewhere at their homes; [written, conflicts].

        A home that cannot be written ``tries`` times over is left to ``_forward_later``."""
        by_home: dict[int, list[tuple[str, ProcessIdentity]]] = {}
        for key, identity in entries:
            home = key_home(identity.tenant_id, key, self._count)
            if home != partition:
                by_home.setdefault(home, []).append((key, identity))
        totals = [0, 0]
        for home, batch in by_home.items():
            counts = await self._complete_at_home(home, batch, tries)
            if counts is None:  # the commit is durable: retried in the background, and by repair_keys
                self.forward_failures += 1
                _log.error(
                    "registry keys %s not written to their home partition %d yet (retried later, "
                    "and by repair_keys)", [k for k, _ in batch], home,
                )  # fmt: skip
                self._keep_unforwarded(home, batch)
                continue
            totals[0] += counts[0]
            totals[1] += counts[1]
        return totals

    def _keep_unforwarded(self, home: int, batch: Sequence[tuple[str, ProcessIdentity]]) -> None:
        """Keep keys for ``_forward_later`` (once each: a repair pass during an outage offers the
        same ones again) and make sure it runs."""
        self._unforwarded.setdefault(home, {}).update(batch)
        if self._forwarding is None or self._forwarding.done():
            self._forwarding = asyncio.get_running_loop().create_task(self._forward_later())

    async def _complete_at_home(
        self, home: int, batch: list[tuple[str, ProcessIdentity]], tries: int = _FORWARD_RETRIES + 1
    ) -> list[int] | None:
        """``complete_keys`` of ``batch`` in ``home``, here or on its node's host; None if it
        failed. Tried again (``tries`` in all, ~5 s by default) only while ``home`` is being
        moved (``PartitionNotOpen``: off its host until the copy opens on the new node, which
        ``set_assignment`` then names); a home whose host is gone is not waited for, the
        commit's other commands would wait with it."""
        for attempt in range(tries):
            node = self._spec["assignment"][home]
            try:
                if home in self._stores:
                    return await self.complete_keys(home, batch)
                return cast(list[int], await self._peer(node).complete_keys.remote(home, batch))
            except Exception as exc:
                self._peers.pop(node, None)
                moving = isinstance(exc, PartitionNotOpen) or (
                    isinstance(exc, RayTaskError) and isinstance(_unwrap(exc), PartitionNotOpen)
                )
                if attempt == tries - 1 or not moving:
                    _log.info("registry keys homed in partition %d not written: %s", home, exc)
                    return None
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        return None

    async def _forward_later(self) -> None:
        """Write the keys ``_complete_elsewhere`` could not at their homes, every few seconds
        until all are (a home whose node is down waits for it); ends with the host."""
        while self._unforwarded:
            await asyncio.sleep(_FORWARD_AGAIN_S)
            await self._flush_unforwarded()

    async def _flush_unforwarded(self) -> None:
        """One try for each home's keys not written there yet; the failed ones wait on. One
        flush at a time: a caller waits for one under way (its keys are out of the table)."""
        async with self._flushing:
            pending, self._unforwarded = self._unforwarded, {}
            for home, keys in pending.items():
                if await self._complete_at_home(home, list(keys.items()), tries=1) is None:
                    self._keep_unforwarded(home, list(keys.items()))

    async def flush_keys(self) -> int:
        """Write now the registry keys waiting for their homes (a host was made again); how many
        still wait."""
        await self._flush_unforwarded()
        return sum(len(keys) for keys in self._unforwarded.values())

    async def complete_keys(self, partition: int, entries: list[tuple[str, ProcessIdentity]]) -> list[int]:
        """Register ``entries`` in ``partition`` where missing; [written, conflicts].

        Idempotent (an entry already bound to the same stream is left alone). A key bound to
        another stream here is a conflict between processes of two partitions: counted and
        logged, the existing binding kept (the competing-process check is only atomic inside
        one partition).
        """
        store = self._store_of(partition)
        written = conflicts = 0
        for key, identity in entries:
            if await store.lookup(identity.tenant_id, key) is not None:
                try:
                    await store.register(identity.tenant_id, key, identity)  # checks the binding
                except RegistryConflict as exc:
                    conflicts += 1
                    _log.error("registry key %r homed in partition %d: %s", key, partition, exc)
                continue
            await store.register(identity.tenant_id, key, identity)
            written += 1
        return [written, conflicts]

    async def repair_keys(self) -> list[int]:
        """Complete every registry key of this host's partitions that is missing at its home.

        Scans each open partition's registry (cost: every entry) and writes the entries homed
        elsewhere that their home lacks, the writes a crash between a commit and its
        ``forward_keys`` left undone. Returns [written, conflicts, unreachable homes]. Runs
        once when a host starts serving (``call_batch``, ``ingest``) and on demand.
        """
        from stores.partitioned import registry_entries

        failures = self.forward_failures
        totals = [0, 0, 0]
        for p in sorted(self._stores):
            # (one try per home: a node that is down is not waited for here, for every batch)
            counts = await self._complete_elsewhere(p, await registry_entries(self._stores[p]), tries=1)
            totals[0] += counts[0]
            totals[1] += counts[1]
        totals[2] = self.forward_failures - failures
        return totals

    def clear_stale_readers(self) -> int:
        """Free the reader slots of processes that died mid-read in this host's stores; how many.

        A host keeps its stores open for long, beside other readers (a CLI on the node): one
        killed mid-read keeps its snapshot, and the store grows with every write until reopened
        (``stores.lmdb.clear_stale_readers``). The host has no timer of its own: the first
        call that may write (``call_batch``, ``ingest``, an outbox delivery or deadline run:
        a host may get only those for long) after ``_STALE_READERS_EVERY`` seconds asks (a
        clock read per call, not per command); a failure is logged, never the call's.
        """
        self._readers_due = time.monotonic() + self._readers_every
        cleared = 0
        for partition, store in list(self._stores.items()):
            try:
                cleared += int(store.clear_stale_readers())
            except Exception:
                _log.exception("partition %d: freeing stale LMDB reader slots failed", partition)
        return cleared

    def _readers_if_due(self) -> None:
        if time.monotonic() >= self._readers_due:
            self.clear_stale_readers()

    def _repair_once(self) -> None:
        """Start ``repair_keys`` in the background the first time this host serves."""
        if self._repairing is None and self._spec["mode"] == "partitioned":
            self._repairing = asyncio.get_running_loop().create_task(self.repair_keys())
            self._repairing.add_done_callback(_log_repair_failure)

    # -- inbound traffic, ingested here ---------------------------------------------------

    async def ingest(
        self, partition: int, now: datetime | None, raw: bytes, received_at: datetime, source: str | None
    ) -> Any:
        """Run the ``InboundPipeline`` here for one interchange assigned to ``partition``.

        Processes and the receipt stream run on their partitions' actors (here, or through the
        owning node's host); lookups and journal reads ask the key's home partition; dead
        letters are written to ``partition``.
        """
        from mako_actors.inbound import InboundPipeline

        if now is not None and self._pushed is not None:
            self._pushed.push(now)
        if self._repairing is None:
            self._repair_once()
        self._readers_if_due()
        options = self._spec.get("inbound")
        if options is None:
            raise InvalidArgument("this host was started without inbound=...; it cannot ingest")
        if self._router is None:
            self._router = _HostRouter(self)
        reads = _IngestReads(self, partition)
        pipeline = InboundPipeline(
            cast(Any, reads), self._router, receipts=self._router, clock=self._clock,
            in_flight=self._ingesting, **options,
        )  # fmt: skip
        return await pipeline.ingest(raw, received_at, source)

    async def dispatch_anywhere(self, identity: ProcessIdentity, op: Op) -> Any:
        """``op`` on the process's actor: in its partition here, or through its node's host."""
        partition = partition_of(identity.stream_id, self._count)
        system = self._systems.get(partition)
        if system is not None:
            return await system.dispatch(identity, op)
        # Operations for one node that are ready in the same loop turn travel in one Ray call.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        node = self._spec["assignment"][partition]
        batch = self._peer_batches.get(node)
        if batch is None:
            batch = self._peer_batches[node] = []
            loop.call_soon(self._flush_peer, node)
        batch.append((partition, identity, op, future))
        return await future

    def _flush_peer(self, node: str) -> None:
        items = self._peer_batches.pop(node, [])
        task = asyncio.get_running_loop().create_task(self._send_peer(node, items))
        self._peer_sends.add(task)
        task.add_done_callback(self._peer_sends.discard)

    async def _send_peer(
        self, node: str, items: list[tuple[int, ProcessIdentity, Op, Any]], attempt: int = 0
    ) -> None:
        """One ``call_batch`` on ``node``'s host; a lost reply is never resent (no retry of a write).

        An operation the host refused unrun (``PartitionNotOpen``: its partition is being moved)
        is sent again a little later where the assignment then names (``_resend_peer``).
        """
        now = self._clock() if self._pushed is not None else None
        try:
            data = encode_ops([(p, i, o) for p, i, o, _ in items])
            reply = await self._peer(node).call_batch.remote(now, data)
            results = decode_results([i for _, i, _, _ in items], reply)
        except RayActorError:
            self._peers.pop(node, None)
            lost = CommandOutcomeUnknown(f"the host of node {node!r} died before replying")
            for *_, future in items:
                _fail(future, lost)
            return
        except ValueError:  # no actor of that name: its node is not up
            for p, _, _, future in items:
                _fail(future, PartitionUnavailable(f"partition {p}: no host on node {node!r}"))
            return
        except BaseException as exc:  # e.g. an operation that does not pickle: all fail alike
            for *_, future in items:
                _fail(future, _unwrap(exc))
            return
        refused: list[tuple[int, ProcessIdentity, Op, Any]] = []
        for item, result in zip(items, results, strict=True):
            future = item[3]
            if isinstance(result, _Failure):
                if result.plain.get("error") == _NOT_OPEN and attempt < _MOVED_RETRIES:
                    refused.append(item)
                    continue
                _fail(future, EngineError.from_plain(result.plain))
            elif isinstance(result, _Raised):
                _fail(future, result.exc)
            elif not future.done():
                future.set_result(result)
        if refused:
            await self._resend_peer(refused, attempt + 1)

    async def _resend_peer(self, items: list[tuple[int, ProcessIdentity, Op, Any]], attempt: int) -> None:
        """Operations a host refused unrun during a move, after a pause: here where their
        partition opened here, else to the node the assignment names now (~2.5 s in all)."""
        await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
        by_node: dict[str, list[tuple[int, ProcessIdentity, Op, Any]]] = {}
        for item in items:
            partition, identity, op, future = item
            system = self._systems.get(partition)
            if system is None:
                by_node.setdefault(self._spec["assignment"][partition], []).append(item)
            elif not future.done():
                try:
                    future.set_result(await system.dispatch(identity, op))
                except Exception as exc:
                    _fail(future, exc)
        for node, group in by_node.items():
            await self._send_peer(node, group, attempt)

    async def read_anywhere(self, partition: int, method: str, *args: Any) -> Any:
        """A store read (``lookup``, ``journal``) in ``partition``: here or on its node's host;
        during a move of ``partition`` read again where it opens (~2.5 s in all)."""
        for attempt in range(_MOVED_RETRIES + 1):
            try:
                return await self._read_once(partition, method, *args)
            except PartitionNotOpen:
                if attempt == _MOVED_RETRIES:
                    raise
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable")  # (the loop returns or raises)

    async def _read_once(self, partition: int, method: str, *args: Any) -> Any:
        if partition in self._stores:
            return await getattr(self, method)(partition, *args)
        node = self._spec["assignment"][partition]
        try:
            return await getattr(self._peer(node), method).remote(partition, *args)
        except RayTaskError as exc:
            raise _unwrap(exc) from None
        except RayActorError:
            self._peers.pop(node, None)
            raise PartitionUnavailable(f"partition {partition}: the host of node {node!r} died") from None
        except ValueError:
            raise PartitionUnavailable(f"partition {partition}: no host on node {node!r}") from None

    # -- partitions: creation and moves ----------------------------------------------------

    async def create_partitions(self, partitions: list[int]) -> None:
        """Create (only while the map is not ``created``) and open the given partitions."""
        from stores.partitioned import create_partition

        for p in partitions:
            create_partition(self._spec["data_dir"], p, self._count)
            if p not in self._systems:
                self._open(p)

    async def hand_over(self, partition: int) -> bytes:
        """Close the partition here (its actors drain first) and return a consistent copy of it."""
        from stores.partitioned import export_partition, open_partition

        async with self._moving:
            system = self._systems.pop(partition, None)
            store = self._stores.pop(partition, None)
            if system is not None:
                await system.aclose()  # drains every mailbox, then closes the store
            store = open_partition(self._spec["data_dir"], partition, self._count)
            try:
                # No write on this copy from now on, by any process (another driver's dedicated
                # actor): what is in the copy below is all that was ever acknowledged here.
                store.fence(True)
                return export_partition(store)
            finally:
                await store.aclose()

    async def reopen(self, partition: int) -> None:
        """Open ``partition`` here (if it is not open) with its fence lifted: the copy ``adopt``
        installed, once the map names this node; the old copy again after a move that failed;
        a fence a move left behind when it stopped midway (open or not). Waits for a
        ``hand_over`` under way here."""
        async with self._moving:
            if partition not in self._systems:
                self._open(partition)
            self._stores[partition].fence(False)

    async def adopt(self, partition: int, data: bytes, move: str) -> None:
        """Install the copy ``hand_over`` made, unopened and fenced as it came, marked with the
        ``move`` token: ``reopen`` opens it once the map names this node, ``discard`` sets it
        aside if the move fails before."""
        from stores.partitioned import import_partition

        import_partition(self._spec["data_dir"], partition, self._count, data, move)

    async def discard(self, partition: int, epoch: int, move: str) -> None:
        """Set aside the copy ``adopt`` installed for ``move`` (to ``epoch``), which failed: renamed
        ``p0007.abandoned-<epoch>-<ns>``, never opened. Refused for a partition open here; a
        partition directory ``move`` did not install (none installed yet, or a copy an operator
        restored here) is left as it is: it may be the partition's only copy."""
        from stores.partitioned import installed_by, partition_dir

        if partition in self._systems:
            raise InvalidArgument(f"partition {partition} is open on this host: not discarded")
        directory = partition_dir(self._spec["data_dir"], partition)
        if installed_by(self._spec["data_dir"], partition, move):
            os.replace(directory, directory.with_name(f"{directory.name}.abandoned-{epoch}-{time.time_ns()}"))
        elif directory.exists():
            _log.warning(
                "partition %d: %s was not installed by the failed move to epoch %d; left as it is",
                partition, directory, epoch,
            )  # fmt: skip

    async def retire(self, partition: int, epoch: int) -> None:
        from stores.partitioned import retire_partition

        retire_partition(self._spec["data_dir"], partition, epoch)

    async def set_assignment(self, assignment: list[str]) -> None:
        """Follow a move (the driver's ``rebalance``, once the partition is open where it went):
        registry keys that could not be written at their homes meanwhile are written now."""
        self._spec["assignment"] = assignment
        self._peers.clear()
        await self._flush_unforwarded()

    async def open_partitions(self) -> list[int]:
        return sorted(self._systems)

    # -- beside the actors: outbox, deadlines, projections, per partition ------------------

    def _store_of(self, partition: int) -> Any:
        store = self._stores.get(partition)
        if store is None:
            raise PartitionNotOpen(f"partition {partition} is not open on this host ({self._where()})")
        return store

    async def read_all(self, partition: int, after: int, limit: int) -> list[Any]:
        return list(await self._store_of(partition).read_all(after, limit))

    async def load_checkpoint(self, partition: int, name: str) -> int:
        return int(await self._store_of(partition).load_checkpoint(name))

    async def save_checkpoint(self, partition: int, name: str, position: int) -> None:
        await self._store_of(partition).save_checkpoint(name, position)

    async def deliver_outbox(self, sender: Any, policy: Any, now: datetime | None) -> list[int]:
        """One ``OutboxWorker.run_once`` per open partition; [delivered, retried, dead-lettered]."""
        from mako_actors.delivery import OutboxWorker

        if now is not None and self._pushed is not None:
            self._pushed.push(now)
        self._readers_if_due()
        totals = [0, 0, 0]
        for p in sorted(self._stores):
            report = await OutboxWorker(self._stores[p], sender, self._clock, policy).run_once()
            for i, n in enumerate((report.delivered, report.retried, report.dead_lettered)):
                totals[i] += n
        return totals

    async def fire_due_deadlines(self, now: datetime | None) -> int:
        """One ``DeadlineScheduler.run_due`` per open partition, firing through its actors."""
        from mako_actors.scheduler import DeadlineScheduler, identity_of

        if now is not None and self._pushed is not None:
            self._pushed.push(now)
        self._readers_if_due()
        fired = 0
        slot, slots = self._spec.get("slot"), self._spec.get("slots")
        # A host of a shared store fires the deadlines of the processes it owns (through their
        # live actors: the state its next read answers from); the other hosts fire theirs.
        mine = (lambda d: host_index(str(d.stream_id), slots) == slot) if slots else None
        for p in sorted(self._systems):
            system = self._systems[p]

            async def fire(deadline: Any, system: LocalActorSystem = system) -> object:
                ref = system.resume(identity_of(deadline))
                return await ref.execute_timeout_with_retry(deadline, 5)

            fired += await DeadlineScheduler(self._stores[p], fire, self._clock, select=mine).run_due()
        return fired

    # -- stats and lifecycle ---------------------------------------------------------------

    async def serves(self) -> str:
        """The store this actor serves (``_served`` of its spec)."""
        return _served(self._spec)

    async def stats(self) -> ActorStats:
        total = ActorStats()
        for system in self._systems.values():
            stats = system.stats
            for f in fields(ActorStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(stats, f.name))
        return total

    async def passivate_idle(self, older_than: float) -> int:
        return sum([await s.passivate_idle(older_than) for s in self._systems.values()])

    async def aclose(self) -> None:
        # The start-up repair pass and the keys' background writes read the stores closed
        # below: stop them first. Whatever they have not completed, the next start's pass does.
        for task in (self._repairing, self._forwarding):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for system in self._systems.values():
            await system.aclose()

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def rss_bytes(self) -> int:
        """Resident memory of this actor's OS process (Linux ``/proc``), for measurements."""
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _tune_gc(threshold: int) -> None:
    """Garbage collection for a host's OS process (a Ray worker that runs nothing else).

    With Python's default (a young collection every 700 allocations), every object of a
    batch in flight (decoded operations, futures, decided commits, results: they live for a
    whole commit) is promoted to the oldest generation and dies there, and full collections,
    which walk every live actor's state, ran every few thousand commands: ~25 µs of CPU per
    command in the hosts of ``benchmarks/bench_ray_hosted.py``. With a young generation of
    ``threshold`` allocations a batch dies young. What the host holds at start (modules, Ray's
    objects) is frozen out of the collector's walks. Cyclic garbage waits at most ``threshold``
    allocations longer.
    """
    import gc

    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)


def _log_repair_failure(task: asyncio.Task[list[int]]) -> None:
    """A failed start-up repair pass is logged, not left as an unretrieved task exception."""
    if not task.cancelled() and task.exception() is not None:
        _log.error("registry repair pass failed (run repair_keys() again)", exc_info=task.exception())


class _HostRouter(HandleFactory):
    """The ``ProcessHost`` of a host-side ``InboundPipeline``: handles that reach any partition.

    A process in one of this node's partitions runs on its local actor; any other through the
    owning node's host (operations for one node ready in one loop turn share one Ray call).
    """

    def __init__(self, host: _Host) -> None:
        self._host = host
        self.workflows = workflow_registry(host._spec["workflows"])

    def _ref(
        self, workflow: Workflow[Any, Any], identity: ProcessIdentity, new: bool = False
    ) -> ProcessRef[Any, Any]:
        return ProcessRef(workflow, identity, self)

    async def dispatch(self, identity: ProcessIdentity, op: Op) -> Any:
        return await self._host.dispatch_anywhere(identity, op)

    async def _lookup_identity(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        home = key_home(tenant_id, key, self._host._count)
        return cast(ProcessIdentity | None, await self._host.read_anywhere(home, "lookup", tenant_id, key))


class _IngestReads:
    """What a host-side pipeline reads and writes besides commands: one hop per key, no scan.

    A registry key is read in its ``key_home`` partition (after a local read of the
    interchange's own), a journal in its ``journal_home``
    partition; dead letters go to ``partition`` (the interchange's, on this node).
    """

    def __init__(self, host: _Host, partition: int) -> None:
        self._host = host
        self._partition = partition

    async def lookup(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        """The key's binding: in the interchange's own partition first, where its trigger's
        process binds it in its commit (its home has it a moment later, ``forward_keys``: a
        concurrent copy of the trigger asking there first would not yet find it), then at home."""
        store = self._host._stores.get(self._partition)
        if store is not None:
            found = await store.lookup(tenant_id, key)
            if found is not None:
                return cast(ProcessIdentity, found)
        home = key_home(tenant_id, key, self._host._count)
        return cast(ProcessIdentity | None, await self._host.read_anywhere(home, "lookup", tenant_id, key))

    async def journal(self, tenant_id: TenantId, key: str) -> list[dict[str, Any]]:
        home = journal_home(tenant_id, key, self._host._count)
        return cast(list[dict[str, Any]], await self._host.read_anywhere(home, "journal", tenant_id, key))

    async def load_from(
        self, stream_id: StreamId, after_seq: int, *, upto: int | None = None
    ) -> list[EventEnvelope]:
        """A stream's events in its partition (a re-routed interchange asks who started a process)."""
        partition = partition_of(stream_id, self._host._count)
        events = await self._host.read_anywhere(partition, "load_from", stream_id, after_seq, upto)
        return cast(list[EventEnvelope], events)

    async def add_dead_letter(self, letter: Any) -> Any:
        stores = self._host._stores
        store = stores.get(self._partition) or next(iter(stores.values()), None)
        if store is None:
            raise PartitionUnavailable(f"no partition is open on this host ({self._host._where()})")
        return await store.add_dead_letter(letter)


_remote_host: Any = None


def _host_class() -> Any:
    global _remote_host
    if _remote_host is None:
        _remote_host = ray.remote(_Host)
    return _remote_host


# An operation waiting for (or in) its host's call: (partition, identity, op, future, attempt).
# A tuple, not a class: one is made per command, and lives until the command's reply.
_Queued = tuple[int, ProcessIdentity, Op, "asyncio.Future[Any]", int]
_ROUTES_LIMIT = 65_536  # stream → host entries cached by the driver; cleared when exceeded


@dataclass(slots=True)
class _Batcher:
    """The operations for one host waiting to be sent, and its calls in flight.

    At most ``max_inflight_calls`` calls per host are in flight: what arrives meanwhile waits
    and leaves in one call when one returns. A Ray call costs ~1 ms of CPU on both ends
    whatever it carries, and the host's commit of a batch costs less per command the more
    commands it carries (their B-tree pages are written once per transaction), so by default
    one call is in flight: with 500 callers and two hosts a call carries ~250 commands (two
    in flight split them into calls of ~100-125, for ~15-20 % more CPU per command on a
    loaded 2-core machine, ``benchmarks/bench_ray_hosted.py``). A second call in flight lets
    a host decide one batch while the one before it commits: worth it when the cores are not
    all busy and the callers are few.
    """

    items: list[_Queued] = field(default_factory=list)
    scheduled: bool = False
    inflight: int = 0


@dataclass(slots=True)
class _Resending:
    """A stream's dedicated operations being resent after its actor died (or was ended unrun).

    ``before`` counts the stream's operations that entered ``dispatch`` before the first
    resend: until all of them are done, later ones wait (``done``). Resends go one at a time,
    in the order they failed (``turns``, the head's done): each is sent ahead of what is
    queued for the new actor, so none is overtaken by an operation sent after it.
    """

    before: int
    turns: deque[asyncio.Future[None]] = field(default_factory=deque)
    done: asyncio.Event = field(default_factory=asyncio.Event)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _counted_op(
    method: Callable[Concatenate[RayActorSystem, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[RayActorSystem, _P], Coroutine[Any, Any, _R]]:
    """An operation that is not a process's: refused once the system is closed
    (``ActorSystemClosed``), and waited for by ``aclose`` like every call in flight (a firing of
    deadlines cut short by the close would dead-letter what it was firing)."""

    @functools.wraps(method)
    async def counted(system: RayActorSystem, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if system._closed:
            raise ActorSystemClosed("actor system is closed")
        system._calls += 1
        try:
            return await method(system, *args, **kwargs)
        finally:
            system._calls -= 1
            if not system._calls and not system._open and system._idle_calls is not None:
                system._idle_calls.set()

    return counted


class RayActorSystem(HandleFactory):
    """Process actors on Ray; same API as ``LocalActorSystem``.

    ``path``: the shared LMDB directory (hosted, dedicated), or with ``partitions`` the file
    that durably records the partition map (created from ``partitions`` on first use, then
    loaded; a different ``partitions`` for an existing file is refused). ``placement``:
    ``"hosted"`` (``hosts`` host actors, default ``os.cpu_count()``) or ``"dedicated"`` (one
    Ray actor per live process, at most ``max_live``, passivated after ``idle_timeout``
    seconds). ``clock``: what hosts stamp events with; a ``VirtualClock`` is read here and its
    time pushed with every batch, any other callable must pickle (it runs on the hosts).
    ``namespace`` and ``name_prefix`` name the Ray actors; two systems with the same names
    share actors. ``num_cpus``: CPUs each Ray actor reserves. ``max_restarts``: how often Ray
    restarts a dead host (-1: always; partitioned hosts are re-created on their node instead).
    ``max_call_batch`` caps the operations in one Ray call, ``max_inflight_calls`` the calls
    in flight per host (what arrives meanwhile leaves in the next call; see ``_Batcher``).
    ``calls_sent`` counts the batched Ray calls made (operations per call = commands / calls). Other keywords
    (``snapshot_interval``, ``max_attempts``, ``max_batch``, and for hosts
    ``idle_timeout``/``max_live``) configure each host's ``LocalActorSystem``s;
    ``store_options`` go to each ``LmdbStore``. ``host_gc_threshold``: the garbage collector's
    youngest-generation threshold in each host's OS process (``_tune_gc``; None: Python's 700).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        workflows: WorkflowsArg,
        *,
        placement: Placement = "hosted",
        hosts: int | None = None,
        partitions: PartitionMap | None = None,
        clock: Callable[[], datetime] | None = None,
        namespace: str = "mako_actors",
        name_prefix: str = "mako",
        snapshot_interval: int = 100,
        idle_timeout: float | None = 300.0,
        max_live: int | None = None,
        max_attempts: int = 8,
        max_batch: int = 512,
        max_call_batch: int = 4096,
        max_inflight_calls: int = 1,
        num_cpus: float = 0,
        max_restarts: int = -1,
        max_concurrency: int = 10_000,
        host_gc_threshold: int | None = 50_000,
        store_options: dict[str, Any] | None = None,
        kill_on_close: bool = True,
        inbound: dict[str, Any] | None = None,
    ) -> None:
        from mako_actors.scheduler import VirtualClock

        if not ray.is_initialized():
            raise InvalidArgument("RayActorSystem needs ray.init() to have run in this process")
        if placement not in ("hosted", "dedicated"):
            raise InvalidArgument(f"placement must be 'hosted' or 'dedicated', got {placement!r}")
        check_actor_settings(snapshot_interval, max_attempts, max_batch)
        if max_call_batch < 1:
            raise InvalidArgument(f"max_call_batch must be at least 1, got {max_call_batch}")
        if max_inflight_calls < 1:
            raise InvalidArgument(f"max_inflight_calls must be at least 1, got {max_inflight_calls}")
        # Absolute: hosts open it in their own OS processes, whose working directory may differ.
        self.path = os.path.abspath(os.fspath(path))
        self.workflows = workflow_registry(workflows)
        if inbound is not None:
            inbound = _inbound_options(inbound, partitions, placement)
            from mako_actors.inbound import ReceiptWorkflow

            self.workflows.setdefault(ReceiptWorkflow.name, ReceiptWorkflow())
        self._inbound = inbound
        self.placement: Placement = placement
        self.hosts = hosts or os.cpu_count() or 1
        self.namespace = namespace
        self.name_prefix = name_prefix
        self.idle_timeout = idle_timeout
        self.max_live = max_live
        self.max_call_batch = max_call_batch
        self.max_inflight_calls = max_inflight_calls
        self._virtual = clock if isinstance(clock, VirtualClock) else None
        host_clock = None if self._virtual is not None else clock
        if host_clock is not None:
            try:
                cloudpickle.dumps(host_clock)  # type: ignore[no-untyped-call]
            except Exception as exc:
                raise InvalidArgument(
                    f"clock {host_clock!r} must pickle (it runs on the hosts): {exc}"
                ) from None
        self.partition_map: PartitionMap | None = None
        self._started = partitions is None  # a partitioned system starts before its first operation
        if partitions is not None:
            self.partition_map = self._load_or_create_map(partitions)
        options: dict[str, Any] = {
            "snapshot_interval": snapshot_interval,
            "max_attempts": max_attempts,
            "max_batch": max_batch,
        }
        if placement == "hosted":
            options.update(idle_timeout=idle_timeout, max_live=max_live)
        else:
            # One process per actor: the Ray actor itself is what gets passivated.
            options.update(idle_timeout=None, max_live=None)
        self._base_spec: dict[str, Any] = {
            "workflows": [type(w) for w in self.workflows.values()],
            "options": options,
            "store_options": store_options,
            "clock": host_clock,
            "pushed_clock": self._virtual() if self._virtual is not None else None,
            "prefix": name_prefix,
            "namespace": namespace,
            "inbound": inbound,
            "gc_threshold": host_gc_threshold,
        }
        self._actor_options: dict[str, Any] = {
            "namespace": namespace,
            "get_if_exists": True,
            "max_restarts": max_restarts if partitions is None else 0,
            "max_task_retries": 0,
            "max_concurrency": max_concurrency,
            "num_cpus": num_cpus,
        }
        self._host_handles: list[Any] = []
        self._verified: set[str] = set()  # names of actors found serving this store (or made)
        self._node_hosts: dict[str, Any] = {}
        self._registry: Any = None
        self._batchers: dict[Any, _Batcher] = {}
        self._loop = RunningLoop()  # asked once per operation (a future each)
        self._starting: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # partitioned: partitions paused for a rebalance, operations in flight per partition
        self._paused: dict[int, asyncio.Event] = {}
        self._partition_calls: dict[int, int] = {}
        self._partition_idle: dict[int, asyncio.Event] = {}
        self.unavailable_errors = 0
        # dedicated placement: stream → handle in LRU order, in-flight calls, last use
        self._dedicated: OrderedDict[StreamId, Any] = OrderedDict()
        self._inflight: dict[StreamId, int] = {}
        self._last_used: dict[StreamId, float] = {}
        self._passivating: dict[StreamId, asyncio.Task[None]] = {}
        self._resending: dict[StreamId, _Resending] = {}
        self._slot_freed: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._calls = 0  # operations on their way to a batch (waiting for a start, a gate, an actor)
        self._open = 0  # operations in a batch, sent or not, without their result yet
        self._idle_calls: asyncio.Event | None = None
        self._direct = partitions is None and placement == "hosted"
        self._host_keys: list[Any] = []
        self._routes: dict[StreamId, Any] = {}
        self.calls_sent = 0
        self._kill_on_close = kill_on_close
        self._closed = False
        self._passivations = 0

    async def __aenter__(self) -> RayActorSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the partition map -----------------------------------------------------------------

    def _load_or_create_map(self, given: PartitionMap) -> PartitionMap:
        """The saved map, or ``given`` saved as the map if there is none yet (its partitions not
        made yet: ``created`` False until ``start`` has made them on every node).

        Creating takes the map's lock and looks again: two drivers starting at once with
        different maps would otherwise both save theirs and run on their own, the later file
        the one every other driver reads. (An existing map is read without the lock: a
        rebalance holds it for seconds, possibly in this very process.)
        """
        if not os.path.exists(self.path):
            with _map_locked(self.path):
                if not os.path.exists(self.path):
                    fresh = replace(given, created=False)
                    fresh.save(self.path)
                    return fresh
        stored = PartitionMap.load(self.path)
        if (stored.count, stored.data_dirs) != (given.count, given.data_dirs):
            raise InvalidArgument(
                f"{self.path} records {stored.count} partitions on {sorted(stored.data_dirs)}; "
                f"got {given.count} on {sorted(given.data_dirs)} (change it by rebalance only)"
            )
        return stored

    async def _create_partitions(self) -> None:
        """Make the partitions of a map saved before they were made, on every node, then record
        that in the map (``created``): whichever driver saved it (it may have stopped, or its
        start failed, before it made them). Under the map's lock, from the map as saved (no move
        runs meanwhile); a partition made already is kept (``create_partition`` is idempotent).
        """
        async with _map_lock(self.path):
            stored = PartitionMap.load(self.path)
            if not stored.created:
                await asyncio.gather(*(
                    self._node_host(n).create_partitions.remote(stored.partitions_of(n)) for n in stored.nodes
                ))  # fmt: skip
                stored = replace(stored, created=True)
                stored.save(self.path)
            self.partition_map = stored

    # -- actors ----------------------------------------------------------------------------

    def _new_actor(self, name: str, spec: dict[str, Any], **extra: Any) -> Any:
        return _host_class().options(name=name, **self._actor_options, **extra).remote(spec)

    def _serving_actor(self, name: str, spec: dict[str, Any], **extra: Any) -> Any:
        """``_new_actor`` for a host, registry or node host: one that exists already under
        ``name`` must serve the same store, else ``InvalidArgument`` names both.

        Two systems with the same names share actors; on two stores, the second one's commands
        would be written into the first one's (acknowledged, and lost from its own). One name
        lookup per such actor (and one call when it exists), never per process.
        """
        if name in self._verified:  # looked up again after a death: checked the first time
            return self._new_actor(name, spec, **extra)
        try:
            existing = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            existing = None
        if existing is not None:
            try:
                served: str | None = cast(str, ray.get(existing.serves.remote(), timeout=5))
            except Exception:
                served = None
            ours = _served(spec)
            if served is not None and served != ours:
                raise InvalidArgument(
                    f"the Ray actor {self.namespace}/{name} serves {served}, not {ours}: give one "
                    "of the two systems another name_prefix (or namespace)"
                )
        self._verified.add(name)
        return self._new_actor(name, spec, **extra)

    def _shared_spec(self) -> dict[str, Any]:
        return {**self._base_spec, "mode": "shared", "path": self.path}

    def host_handles(self) -> list[Any]:
        """The hosted placement's host actors (created on first use), index = routing slot.

        With partitions: the live node hosts (one per node that owns partitions and is up).
        """
        if self.partition_map is None and self.placement != "hosted":
            raise InvalidArgument("host_handles: only the hosted placement has hosts")
        if self.partition_map is not None:
            handles = []
            for node in self.partition_map.nodes:
                with contextlib.suppress(PartitionUnavailable):
                    handles.append(self._node_host(node))
            return handles
        if not self._host_handles:
            self._host_handles = [
                self._serving_actor(
                    f"{self.name_prefix}-host-{i}", {**self._shared_spec(), "slot": i, "slots": self.hosts}
                )
                for i in range(self.hosts)
            ]
        return self._host_handles

    def host_for(self, stream_id: StreamId) -> Any:
        """The host actor that owns ``stream_id`` (hosted placement)."""
        if self.partition_map is not None:
            return self._node_host(
                self.partition_map.node_of(partition_of(stream_id, self.partition_map.count))
            )
        handles = self.host_handles()
        return handles[host_index(str(stream_id), len(handles))]

    def _ray_node_id(self, node: str) -> str | None:
        """The Ray node id of the live node carrying resource ``mako-node:<node>``."""
        for info in ray.nodes():  # type: ignore[no-untyped-call]
            if info.get("Alive") and f"{_NODE_RESOURCE}{node}" in info.get("Resources", {}):
                return str(info["NodeID"])
        return None

    def _node_host(self, node: str) -> Any:
        """The host of ``node``, pinned there; ``PartitionUnavailable`` when the node is down."""
        handle = self._node_hosts.get(node)
        if handle is not None:
            return handle
        assert self.partition_map is not None
        node_id = self._ray_node_id(node)
        if node_id is None:
            self.unavailable_errors += 1
            raise PartitionUnavailable(f"node {node!r} is not part of the Ray cluster")
        # A host made now opens the partitions the map names for its node: the map as it is on
        # disk, not as this driver last saw it (another driver may have moved some since; a host
        # made from a stale map would lack the partitions moved here, for every driver).
        self._follow_map()
        handle = self._pinned(
            node, node_id, f"{self.name_prefix}-node-{node}", self.partition_map.partitions_of(node)
        )
        self._node_hosts[node] = handle
        return handle

    def _pinned(self, node: str, node_id: str, name: str, partitions: list[int]) -> Any:
        """A Ray actor named ``name`` on Ray node ``node_id`` opening ``partitions`` of ``node``."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        assert self.partition_map is not None
        self._claim_names()
        spec = {
            **self._base_spec,
            "mode": "partitioned",
            "node": node,
            "data_dir": self.partition_map.data_dirs[node],
            "partitions": partitions,
            "assignment": list(self.partition_map.assignment),
        }
        strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        if name.startswith(f"{self.name_prefix}-proc-"):
            return self._new_actor(name, spec, scheduling_strategy=strategy)  # (one per process)
        return self._serving_actor(name, spec, scheduling_strategy=strategy)

    async def start(self) -> None:
        """Start every host now (otherwise on first use); a new partition map creates its partitions.

        Concurrent callers share one start; a start that failed (a node not up yet, a host that
        died while starting) is tried again by the next call instead of failing every call after.
        """
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
            self._starting.add_done_callback(self._start_done)
        await asyncio.shield(self._starting)

    def _start_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._starting = None

    async def _start(self) -> None:
        handles = self.host_handles()
        if self.partition_map is not None and not self.partition_map.created:
            await self._create_partitions()
        elif self.partition_map is not None:
            # Every live node's host exists before the first operation: hosts call each other
            # by name (a registry key forwarded to its home partition, an ingested interchange
            # handed on), and only a driver creates hosts. A node down now gets its host when
            # it is first used; a host failing to answer is the business of that use.
            await asyncio.gather(*(h.stats.remote() for h in handles), return_exceptions=True)
        else:
            await asyncio.gather(*(h.stats.remote() for h in handles))
        self._started = True

    def _registry_actor(self) -> Any:
        if self.placement == "hosted":
            return self.host_handles()[0]
        if self._registry is None:
            self._registry = self._serving_actor(f"{self.name_prefix}-registry", self._shared_spec())
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
            if self.partition_map is None:
                handle = self._new_actor(self._proc_name(stream_id), self._shared_spec())
            else:  # on the node of its partition, opening only that partition
                self._follow_map()  # (where it is now: another driver may have moved it)
                partition = partition_of(stream_id, self.partition_map.count)
                node = self.partition_map.node_of(partition)
                node_id = self._ray_node_id(node)
                if node_id is None:
                    raise self._unavailable(partition)
                handle = self._pinned(node, node_id, self._proc_name(stream_id), [partition])
            self._dedicated[stream_id] = handle
            return handle

    def _proc_name(self, stream_id: StreamId) -> str:
        return f"{self.name_prefix}-proc-{stream_id}"

    async def _passivate(self, stream_id: StreamId) -> None:
        handle = self._dedicated.pop(stream_id, None)
        self._last_used.pop(stream_id, None)  # (else one entry per process ever used stays)
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

    def _claim_names(self) -> None:
        """Record the Ray names of the actors serving this partitioned store (``<map file>.names``:
        namespace/name_prefix), or check that they are this system's, before its first actor.

        Every system on one partitioned store shares its hosts and actors by name: a second set
        of hosts would open the same partitions beside them, and a ``rebalance`` ends only the
        actors of its own names, so the others would go on writing to a moved partition's old
        copy. Other names are taken over once no actor of the recorded ones is alive; while one
        is, ``InvalidArgument`` names both.

        Asked before every actor this system makes (a small file read): another system may have
        taken the record over while none of this one's actors lived. Reading, checking and
        writing take turns on ``<map file>.names.lock``, held only within this call (never
        across an ``await``: another system in this process may wait for it).
        """
        with _file_locked(f"{self.path}.names.lock"):
            self._claim_names_locked()

    def _claim_names_locked(self) -> None:
        names = f"{self.namespace}/{self.name_prefix}"
        record = f"{self.path}.names"
        try:
            with open(record, encoding="utf-8") as handle:
                recorded = handle.read().strip()
        except FileNotFoundError:
            recorded = ""
        if recorded == names:
            return
        if recorded:
            namespace, _, prefix = recorded.partition("/")
            alive = sorted(
                entry["name"]
                for entry in ray.util.list_named_actors(all_namespaces=True)
                if entry["namespace"] == namespace and entry["name"].startswith(f"{prefix}-")
            )
            if alive:
                raise InvalidArgument(
                    f"the partitioned store of {self.path} is served by Ray actors named "
                    f"{recorded!r} (namespace/name_prefix; alive: {', '.join(alive[:3])}), not "
                    f"{names!r}: every system on it must use those names"
                )
        _write_durably(record, names + "\n")

    async def _end_dedicated_of_others(self, partition: int, count: int) -> None:
        """End the dedicated actors of ``partition`` that other drivers of these names started
        (found by name in Ray's list of named actors): each drains its mailbox and closes the
        partition's environment, as this driver's own do, before the partition is copied.

        Left alive on the old node, such an actor would go on writing to the old copy: its
        driver's acknowledged commands would be lost with it. Its driver's next call finds it
        gone (``CommandOutcomeUnknown`` for a write in flight) and starts another where the
        map says. An actor another driver starts while this one copies is not covered.
        """
        prefix = f"{self.name_prefix}-proc-"
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != self.namespace or not name.startswith(prefix):
                continue
            try:
                stream_id = StreamId(name[len(prefix) :])
            except InvalidArgument:
                continue
            if partition_of(stream_id, count) != partition or stream_id in self._dedicated:
                continue
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:  # ended meanwhile
                continue
            with contextlib.suppress(RayActorError):
                await handle.aclose.remote()
            ray.kill(handle, no_restart=True)
            await self._name_released(name, handle)
            self._passivations += 1

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

    @_counted_op
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

    def _ref(
        self, workflow: Workflow[Any, Any], identity: ProcessIdentity, new: bool = False
    ) -> ProcessRef[Any, Any]:
        return ProcessRef(workflow, identity, self, None, new)

    def dispatch_new(self, identity: ProcessIdentity, op: Op) -> Awaitable[Any]:
        """``dispatch`` of the first op of ``spawn``'s handle: its host may start the new
        process without a store read (``LocalActorSystem.dispatch_new``)."""
        return self.dispatch(identity, op.as_new())

    @_counted_op
    async def _lookup_identity(self, tenant_id: TenantId, key: str) -> ProcessIdentity | None:
        if self.partition_map is None:
            return cast(
                ProcessIdentity | None,
                await self._reply(self._registry_actor().lookup.remote(0, tenant_id, key)),
            )
        if not self._started:
            await self.start()
        home = key_home(tenant_id, key, self.partition_map.count)
        await self._await_resumed(home)
        try:
            found = await self._on_partition(home, lambda host: host.lookup.remote(home, tenant_id, key))
            return cast(ProcessIdentity | None, found)
        except CommandOutcomeUnknown:
            raise self._unavailable(home) from None

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, identity: ProcessIdentity, op: Op) -> Awaitable[Any]:
        """Send ``op`` to the process's actor; await the result (errors re-raised as sent).

        Hosted on a shared directory, the operation joins its host's next batch right here
        and the caller awaits its future (no coroutine, no task per operation); the other
        layouts may first have to wait (partitions created, a rebalance, an actor slot).
        """
        if self._closed:
            raise ActorSystemClosed("actor system is closed")
        if self._direct:
            return self._submit(self._host_key(identity.stream_id), 0, identity, op)
        return self._dispatch(identity, op)

    async def _dispatch(self, identity: ProcessIdentity, op: Op) -> Any:
        write = op.kind in _WRITES
        stream_id = identity.stream_id
        self._calls += 1
        try:
            if self.partition_map is None:
                if self.placement == "hosted":
                    return await self._submit(self._host_key(stream_id), 0, identity, op)
                return await self._dedicated_dispatch(identity, op, write, 0)
            if not self._started:  # partitions created, hosts of every live node up: once
                await self.start()
            partition = partition_of(stream_id, self.partition_map.count)
            await self._await_resumed(partition)
            self._partition_calls[partition] = self._partition_calls.get(partition, 0) + 1
            try:
                if self.placement == "hosted":
                    return await self._submit(None, partition, identity, op)
                return await self._dedicated_dispatch(identity, op, write, partition)
            finally:
                self._partition_calls[partition] -= 1
                if not self._partition_calls[partition] and partition in self._partition_idle:
                    self._partition_idle[partition].set()
        finally:
            self._calls -= 1
            if not self._calls and self._idle_calls is not None:
                self._idle_calls.set()

    async def _dedicated_dispatch(
        self, identity: ProcessIdentity, op: Op, write: bool, partition: int
    ) -> Any:
        stream_id = identity.stream_id
        if self._reaper is None and self.idle_timeout is not None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())
        self._inflight[stream_id] = self._inflight.get(stream_id, 0) + 1
        waited: _Resending | None = None
        turn: asyncio.Future[None] | None = None
        try:
            if self._resending:  # (empty unless an actor died: no await on the normal path)
                waited = self._resending.get(stream_id)
                if waited is not None:  # sent after operations being resent: runs after them
                    await waited.done.wait()
            attempt = 0
            while True:
                handle = await self._dedicated_actor(stream_id)
                try:
                    if turn is None:
                        return await self._submit(("proc", stream_id), partition, identity, op)
                    return await self._submit_first(("proc", stream_id), partition, identity, op)
                except PartitionNotOpen:
                    # Its copy is fenced (moved, or being moved, by another driver) and it ran
                    # nothing: end this actor and start one where the map says (later on).
                    if self.partition_map is None or attempt >= _MOVED_RETRIES:
                        raise
                    if turn is None:
                        turn = self._resend_turn(stream_id)
                    if self._dedicated.get(stream_id) is handle:  # not a successor another call made
                        await self._passivate(stream_id)
                    attempt += 1
                    await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                    await turn
                    continue
                except (ActorSystemClosed, CommandOutcomeUnknown) as exc:
                    # ActorSystemClosed: another system passivated this actor and nothing
                    # ran. A dead actor: reads (and idempotent writes) go to a new one, and
                    # so does the next call after a write's outcome is unknown (the dead
                    # handle is forgotten first: kept, it failed every later call too).
                    if self._dedicated.get(stream_id) is handle:
                        del self._dedicated[stream_id]
                    if isinstance(exc, CommandOutcomeUnknown):
                        idempotent = getattr(op.command, "idempotency_key", None)
                        limit = _IDEMPOTENT_RETRIES if idempotent else 0 if write else _READ_RETRIES - 1
                        if attempt >= limit:
                            raise
                        if turn is None:
                            turn = self._resend_turn(stream_id)
                        attempt += 1
                        await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                    elif turn is None:
                        turn = self._resend_turn(stream_id)
                    await turn
        finally:
            if self._resending:
                self._resent(stream_id, waited, turn)
            self._inflight[stream_id] -= 1
            self._last_used[stream_id] = time.monotonic()
            if not self._inflight[stream_id]:
                del self._inflight[stream_id]
                if self._slot_freed is not None:
                    self._slot_freed.set()

    def _resend_turn(self, stream_id: StreamId) -> asyncio.Future[None]:
        """A place in the line of ``stream_id``'s resends (done when it is this one's turn).

        Taken when the operation fails, before any await: the line is in the order they failed,
        which is the order they were sent (one batch, or batches one after another, per actor).
        """
        resending = self._resending.get(stream_id)
        if resending is None:
            resending = self._resending[stream_id] = _Resending(self._inflight[stream_id])
        turn: asyncio.Future[None] = self._loop().create_future()
        if not resending.turns:
            turn.set_result(None)
        resending.turns.append(turn)
        return turn

    def _resent(
        self, stream_id: StreamId, waited: _Resending | None, turn: asyncio.Future[None] | None
    ) -> None:
        """An operation of ``stream_id`` is done: pass its turn on; the last one sent before the
        resends began lets the operations waiting behind them go."""
        resending = self._resending.get(stream_id)
        if resending is None or resending is waited:  # (sent after they began: not counted)
            return
        if turn is not None:
            head = resending.turns[0] is turn
            resending.turns.remove(turn)
            if head and resending.turns and not resending.turns[0].done():  # (done: cancelled)
                resending.turns[0].set_result(None)
        resending.before -= 1
        if not resending.before:
            del self._resending[stream_id]
            resending.done.set()

    def _host_key(self, stream_id: StreamId) -> Any:
        # Cached: a stream's host is a blake2b of its id (~1 µs), asked once per command.
        key = self._routes.get(stream_id)
        if key is None:
            keys = self._host_keys
            if not keys:
                keys = self._host_keys = [("host", i) for i in range(len(self.host_handles()))]
            if len(self._routes) >= _ROUTES_LIMIT:
                self._routes.clear()
            # The owner the hosts agree on.
            key = self._routes[stream_id] = keys[host_index(stream_id, len(keys))]
        return key

    def _handle_of(self, key: Any, partition: int) -> Any:
        if key is None:
            assert self.partition_map is not None
            return self._node_host(self.partition_map.node_of(partition))
        if key[0] == "host":
            return self.host_handles()[key[1]]
        handle = self._dedicated.get(key[1])
        if handle is None:
            # Passivated while these waited behind an earlier call (its copy was fenced, or it
            # died): they ran nowhere; ``_dedicated_dispatch`` starts a new actor for them.
            raise ActorSystemClosed(f"the actor of {key[1]} was ended before this call left")
        return handle

    def _submit(self, key: Any, partition: int, identity: ProcessIdentity, op: Op) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop().create_future()
        self._open += 1
        self._enqueue(key, (partition, identity, op, future, 0))
        return future

    def _submit_first(
        self, key: Any, partition: int, identity: ProcessIdentity, op: Op
    ) -> asyncio.Future[Any]:
        """``_submit`` ahead of what is queued for ``key``: a resend, sent before what came after it."""
        future: asyncio.Future[Any] = self._loop().create_future()
        self._open += 1
        self._requeue_first(key, [(partition, identity, op, future, 0)], 0.0)
        return future

    def _answered(self, count: int) -> None:
        """``count`` submitted operations got their result or error (``aclose`` waits for all)."""
        self._open -= count
        if not self._open and not self._calls and self._idle_calls is not None:
            self._idle_calls.set()

    def _enqueue(self, key: Any, item: _Queued) -> None:
        if key is None:  # partitioned: one batch per node host
            assert self.partition_map is not None
            key = ("node", self.partition_map.node_of(item[0]))
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = _Batcher()
        batcher.items.append(item)
        if not batcher.scheduled and batcher.inflight < self.max_inflight_calls:
            batcher.scheduled = True
            self._loop().call_soon(self._flush, key, batcher)

    def _flush(self, key: Any, batcher: _Batcher) -> None:
        batcher.scheduled = False
        loop = asyncio.get_running_loop()
        while batcher.items and batcher.inflight < self.max_inflight_calls:
            items = batcher.items[: self.max_call_batch]
            del batcher.items[: self.max_call_batch]
            batcher.inflight += 1
            task = loop.create_task(self._send(key, items, batcher))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, key: Any, items: list[_Queued], batcher: _Batcher) -> None:
        """One Ray call for ``items``; then the next waiting batch for this host may leave."""
        try:
            await self._call(key, items)
        finally:
            batcher.inflight -= 1
            if batcher.items and not batcher.scheduled:
                batcher.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush, key, batcher)

    async def _call(self, key: Any, items: list[_Queued]) -> None:
        """One Ray call for ``items``; per-item results, per-item retry or error on a dead host."""
        partition = items[0][0]
        try:
            handle = self._handle_of(None if key[0] == "node" else key, partition)
            now = self._virtual() if self._virtual is not None else None
            data = encode_ops(items)
            self.calls_sent += 1
            results = decode_results([i[1] for i in items], await handle.call_batch.remote(now, data))
        except PartitionUnavailable as exc:
            for item in items:
                _fail(item[3], exc)
            self._answered(len(items))
            return
        except RayActorError as exc:
            self._host_died(key)
            again = [a for item in items if (a := self._retry_or_fail(key, item, exc)) is not None]
            self._answered(len(items) - len(again))
            if again:
                delay = min(0.05 * 2 ** (max(a[4] for a in again) - 1), 1.0)
                self._requeue_first(None if key[0] == "node" else key, again, delay)
            return
        except BaseException as exc:  # e.g. a command that does not pickle: every item fails alike
            for item in items:
                _fail(item[3], _unwrap(exc))
            self._answered(len(items))
            return
        answered = len(items)
        map_read = False
        refused: list[_Queued] = []
        closed: list[_Queued] = []
        for item, result in zip(items, results, strict=True):
            future = item[3]
            if future.done():  # the caller gave up (cancelled)
                continue
            kind = type(result)
            if kind is _Failure:
                if result.plain.get("error") == _NOT_OPEN and key[0] == "node" and item[4] < _MOVED_RETRIES:
                    # The host refused it unrun: its partition is not open there. Another driver
                    # may be moving it: resend it where the map says (now, or a little later).
                    if not map_read:  # (once per call)
                        map_read = True
                        self._follow_map()
                    refused.append(item)
                    answered -= 1
                    continue
                if (
                    result.plain.get("error") == _CLOSED and key[0] != "proc"  # (``dispatch`` resends those)
                    and not self._closed and item[4] < _MOVED_RETRIES
                ):
                    # Another driver sharing the hosts by name closed them (its ``aclose``) and
                    # this ran nothing: resend it to the hosts looked up again (made anew once
                    # that driver's kill has ended them), instead of failing a system not closed.
                    closed.append((*item[:4], item[4] + 1))
                    answered -= 1
                    continue
                future.set_exception(EngineError.from_plain(result.plain))
            elif kind is _Raised:
                future.set_exception(result.exc)
            else:
                future.set_result(result)
        self._answered(answered)
        if refused:
            self._resend_refused(key[1], refused)
        if closed:
            self._host_died(key)
            delay = min(0.05 * 2 ** (max(a[4] for a in closed) - 1), 1.0)
            self._requeue_first(None if key[0] == "node" else key, closed, delay)

    async def _on_partition(self, partition: int, call: Callable[[Any], Any]) -> Any:
        """``call(host)`` on the host of ``partition``'s node, replied (``_reply``); where that host
        refuses it unrun (``PartitionNotOpen``) and another driver has moved the partition, once
        more on its new node. Only for calls that are safe to make twice."""
        assert self.partition_map is not None
        node = self.partition_map.node_of(partition)
        try:
            return await self._reply(call(self._node_host(node)))
        except PartitionNotOpen:
            # The map may have been read again already (by a concurrent call that was refused
            # too): what counts is whether it now names another node.
            self._follow_map()
            if self.partition_map.node_of(partition) == node:
                raise
        except PartitionUnavailable:
            # The host could not reach another node's host: one that died (killed, out of
            # memory) on a node that is up is made again here (hosts only look each other up).
            if not self._remake_dead_hosts():
                raise
            # The keys the live hosts could not write there meanwhile go first: an answer
            # ingested next looks them up.
            for host in self.host_handles():
                with contextlib.suppress(Exception):
                    await self._reply(host.flush_keys.remote())
        return await self._reply(call(self._node_host(self.partition_map.node_of(partition))))

    def _remake_dead_hosts(self) -> bool:
        """Make the node hosts again whose actor is gone while their node is up; whether any was."""
        assert self.partition_map is not None
        remade = False
        for node in self.partition_map.nodes:
            name = f"{self.name_prefix}-node-{node}"
            try:
                ray.get_actor(name, namespace=self.namespace)
                continue
            except ValueError:  # no live actor of that name
                pass
            if self._ray_node_id(node) is None:
                continue  # the node is down: its partitions stay unavailable
            self._node_hosts.pop(node, None)
            self._verified.discard(name)
            with contextlib.suppress(PartitionUnavailable):
                self._node_host(node)
                remade = True
        return remade

    def _follow_map(self) -> bool:
        """Load the map file again; True when it records a later epoch (another driver's rebalance).

        Each driver pauses only its own calls during its ``rebalance``; the others learn of the
        move when the old host refuses their operations, and follow the durable map.
        """
        assert self.partition_map is not None
        try:
            stored = PartitionMap.load(self.path)
        except (OSError, ValueError, InvalidArgument) as exc:
            _log.error("partition map %s not readable to follow a move: %s", self.path, exc)
            return False
        if stored.epoch <= self.partition_map.epoch:
            return False
        _log.info("partition map %s is at epoch %d now (another driver's rebalance)", self.path, stored.epoch)
        self.partition_map = stored
        return True

    def _resend_refused(self, node: str, items: list[_Queued]) -> None:
        """Queue ``items`` again, which the host of ``node`` refused unrun, before anything queued
        since: at once where the map now names another node, else after a pause (a rebalance
        elsewhere may be copying it; at the last attempt the caller gets the refusal)."""
        assert self.partition_map is not None
        moved: list[_Queued] = []
        stay: list[_Queued] = []
        for partition, identity, op, future, attempt in items:
            again: _Queued = (partition, identity, op, future, attempt + 1)
            (stay if self.partition_map.node_of(partition) == node else moved).append(again)
        if moved:
            self._requeue_first(None, moved, 0.0)
        if stay:
            self._requeue_first(None, stay, min(0.05 * 2 ** (max(a[4] for a in stay) - 1), 1.0))

    def _requeue_first(self, key: Any, items: list[_Queued], delay: float) -> None:
        """Put ``items`` (in their order) before every operation queued for their host since they
        left, and send that host nothing for ``delay`` seconds (``key`` None: by partition).

        Why before: a caller's later operations on the same process may be waiting there (or
        arrive during the pause); resent behind them, an operation would be overtaken, and
        each caller's order per process is kept across a resend.
        """
        groups: dict[Any, list[_Queued]] = {}
        for item in items:
            if key is None:
                assert self.partition_map is not None
                target = ("node", self.partition_map.node_of(item[0]))
            else:
                target = key
            groups.setdefault(target, []).append(item)
        loop = asyncio.get_running_loop()
        for target, group in groups.items():
            batcher = self._batchers.get(target)
            if batcher is None:
                batcher = self._batchers[target] = _Batcher()
            batcher.items[:0] = group
            if not batcher.scheduled:
                batcher.scheduled = True
                if delay > 0:
                    loop.call_later(delay, self._flush, target, batcher)
                else:
                    loop.call_soon(self._flush, target, batcher)

    def _host_died(self, key: Any) -> None:
        if key[0] == "node":  # re-created on its node (if the node is up) by the next call
            self._node_hosts.pop(key[1], None)
        elif key[0] == "host":
            self._forget_handles()

    def _forget_handles(self) -> None:
        """Drop the cached handles of hosts and the registry: the next call looks each up by
        name again. A host restarted by Ray is the same actor; one ended for good (another
        driver's ``aclose`` killed it) is made anew, instead of every call failing from now on."""
        self._host_handles = []
        self._node_hosts = {}
        self._registry = None

    def _retry_or_fail(self, key: Any, item: _Queued, exc: RayActorError) -> _Queued | None:
        """Reads are resent while the host restarts; writes only with an ``idempotency_key``.

        None when ``item`` got its error; else the item to send again (``_requeue_first``).
        """
        partition, identity, op, future, attempt = item
        failed_start = _start_failure(exc)
        if failed_start is not None:  # it never ran: the cause, not "outcome unknown"
            _fail(future, failed_start)
            return None
        write = op.kind in _WRITES
        idempotent = write and getattr(op.command, "idempotency_key", None)
        limit = _IDEMPOTENT_RETRIES if idempotent else 0 if write else _READ_RETRIES - 1
        if key[0] == "proc":  # a dedicated actor: ``dispatch`` resends to the actor found anew
            limit = 0
        if key[0] == "node" and self._ray_node_id(key[1]) is None:
            exc_out: EngineError = self._unavailable(partition)
            if write:
                exc_out = CommandOutcomeUnknown(
                    f"node {key[1]!r} died before replying; the command may or may not have been stored"
                )
            _fail(future, exc_out)
            return None
        if attempt >= limit:
            _fail(future, CommandOutcomeUnknown(
                f"the actor died before replying ({type(exc).__name__}); "
                + ("the command may or may not have been stored" if write else "retry the read")
            ))  # fmt: skip
            return None
        return (partition, identity, op, future, attempt + 1)

    def _unavailable(self, partition: int) -> PartitionUnavailable:
        self.unavailable_errors += 1
        node = self.partition_map.node_of(partition) if self.partition_map is not None else "?"
        gone = self.partition_map is not None and self._ray_node_id(node) is None
        return PartitionUnavailable(
            f"partition {partition}: its node {node!r} is gone; retry when it is back"
            if gone
            else f"partition {partition}: the host on node {node!r} died before replying; retry"
        )

    async def _reply(self, ref: Any) -> Any:
        """Await a single Ray reply: ``_Failure`` → the ``EngineError`` subclass; Ray errors translated."""
        try:
            result = await ref
        except RayActorError as exc:
            if not self._closed:
                self._forget_handles()  # (which one died is not known here)
            failed_start = _start_failure(exc)
            if failed_start is not None:
                raise failed_start from None
            raise CommandOutcomeUnknown(f"the actor died before replying ({type(exc).__name__})") from None
        except RayTaskError as exc:
            raise _unwrap(exc) from None
        if isinstance(result, _Failure):
            raise EngineError.from_plain(result.plain)
        return result

    # -- inbound traffic, ingested on the hosts ---------------------------------------------

    async def ingest(self, raw: bytes, received_at: datetime, source: str | None = None) -> Any:
        """Ingest one interchange on the host of its partition (``InboundPipeline.ingest`` there).

        Only the bytes and the ``IngestResult`` cross Ray between driver and host; parsing, the
        receipt with its CONTRL (one transaction), deduplication, routing and dead letters run
        on the host. The interchange's partition is its first transaction's MaLo's (its process
        and the MaLo's journal are then local), else (CONTRL, APERAK, unreadable) the partition
        of its receipt stream. Needs ``inbound=`` at construction. Raises what the pipeline
        raises (store failures, ``PartitionUnavailable`` for a partition it needs that is down
        or being moved): re-ingesting the same bytes is then safe.
        """
        if self._inbound is None or self.partition_map is None:
            raise InvalidArgument("ingest needs RayActorSystem(partitions=..., inbound={...})")
        if self._closed:
            raise ActorSystemClosed("actor system is closed")
        if not self._started:
            await self.start()
        partition = ingest_partition(raw, self.partition_map.count)
        await self._await_resumed(partition)
        now = self._virtual() if self._virtual is not None else None
        self._calls += 1
        try:
            # (ingested again on the partition's new node: the same bytes where they were taken
            # are a duplicate)
            return await self._on_partition(
                partition, lambda host: host.ingest.remote(partition, now, raw, received_at, source)
            )
        finally:
            self._calls -= 1
            if not self._calls and self._idle_calls is not None:
                self._idle_calls.set()

    # -- rebalance -------------------------------------------------------------------------

    async def _await_resumed(self, partition: int) -> None:
        gate = self._paused.get(partition)
        while gate is not None:
            await gate.wait()
            gate = self._paused.get(partition)

    async def rebalance(self, partition: int, node: str) -> None:
        """Move ``partition`` to ``node``: pause it, drain it, copy it consistently, switch, resume.

        Operations for the partition wait meanwhile (nothing is refused or lost); its old host
        closes it (draining every mailbox) before the new one opens the copy, so no process is
        live on two nodes. The new assignment is saved to the map file before the partition
        resumes; the old directory is renamed ``p0007.moved-<epoch>``. The pause covers this
        driver's calls; another driver sharing the hosts and the map file learns of the move
        when the old host refuses its operations unrun (``PartitionNotOpen``): it reads the map
        file again and sends them to the new node (waiting up to ~2.5 s for the copy). Moves by
        drivers on this machine take turns (``flock`` on ``<map file>.lock``), each starting from
        the map the one before saved. A move that fails (or is cancelled) before the map is
        saved is undone: the partition opens again on its old node. ``rebalance`` to the node
        the map names lifts a fence a move left when its driver died midway (writes refused).
        """
        if self.partition_map is None:
            raise InvalidArgument("rebalance needs a partitioned system")
        if not 0 <= partition < self.partition_map.count:
            raise InvalidArgument(f"no partition {partition} (there are {self.partition_map.count})")
        if node not in self.partition_map.data_dirs:
            raise InvalidArgument(f"unknown node {node!r}")
        async with _map_lock(self.path):
            # Under the lock: the map as another driver's move may have left it
            self._follow_map()
            await self._rebalance_locked(partition, node)

    async def _rebalance_locked(self, partition: int, node: str) -> None:
        assert self.partition_map is not None
        current = self.partition_map
        old = current.node_of(partition)
        if old == node:
            # No move is under way (this holds the lock): a fence on the partition is one a move
            # left when it stopped midway (its driver died), and it refuses every write. Lifted.
            await self._reply(self._node_host(node).reopen.remote(partition))
            for host in self.host_handles():  # (what could not reach it meanwhile goes now)
                try:
                    await self._reply(host.set_assignment.remote(list(self.partition_map.assignment)))
                except EngineError as exc:  # a host gone: made again with the map on its next use
                    _log.warning("partition %d reopened; a host missed the assignment: %s", partition, exc)
            return
        gate = asyncio.Event()
        self._paused[partition] = gate
        try:
            while self._partition_calls.get(partition):
                idle = self._partition_idle.setdefault(partition, asyncio.Event())
                idle.clear()
                await idle.wait()
            for stream_id in [s for s in self._dedicated if partition_of(s, current.count) == partition]:
                await self._passivate(stream_id)  # dedicated actors close the partition's environment
            await self._end_dedicated_of_others(partition, current.count)
            source, target = self._node_host(old), self._node_host(node)
            moved = current.moved(partition, node)
            # Marks the copy this move installs: undoing it sets aside that copy and nothing
            # else (a partition directory restored on the target by an operator stays).
            move = f"{moved.epoch}-{secrets.token_hex(8)}"
            try:
                data = await self._reply(source.hand_over.remote(partition))
                # Installed unopened and fenced: were this call given up (cancelled) while the
                # host installs it, the copy still accepts no write.
                await self._reply(target.adopt.remote(partition, data, move))
                moved.save(self.path)
            except BaseException:
                await self._undo_move(partition, old, node, moved.epoch, move)
                raise
            self.partition_map = moved
            try:
                await self._reply(target.reopen.remote(partition))
            except Exception:
                _log.error(
                    "partition %d moved to node %r, but its host did not open it; "
                    "rebalance(%d, %r) again opens it and lifts its fence", partition, node, partition, node,
                )  # fmt: skip
                raise
            await self._reply(source.retire.remote(partition, moved.epoch))
            for host in self.host_handles():
                await self._reply(host.set_assignment.remote(list(moved.assignment)))
        finally:
            del self._paused[partition]
            gate.set()

    async def _undo_move(self, partition: int, old: str, node: str, epoch: int, move: str) -> None:
        """After a move that failed before the map named ``node``: set aside the copy ``node``
        may have installed for ``move`` (only that one), and open the partition on ``old`` again
        with its fence lifted.

        Each step is tried (a dead host is made anew); what fails is logged: the caller raises
        the move's own error. Until the old copy is open again it refuses writes (fenced).
        """
        steps: list[tuple[str, str, Callable[[Any], Any]]] = [
            ("set aside the new copy on", node, lambda host: host.discard.remote(partition, epoch, move)),
            ("open the partition again on", old, lambda host: host.reopen.remote(partition)),
        ]
        for step, where, call in steps:
            try:
                await self._reply(call(self._node_host(where)))
            except Exception as exc:
                _log.error(
                    "move of partition %d failed; could not %s node %r: %s; rebalance(%d, %r) "
                    "retries", partition, step, where, exc, partition, old,
                )  # fmt: skip

    @_counted_op
    async def repair_keys(self) -> RepairReport:
        """Complete registry keys missing at their home partition, on every reachable host.

        A command's registry keys are written in its own partition's transaction; those homed
        in another partition are copied there right after the commit. A crash (or a failed
        call) in between leaves the copy undone: each host repairs its partitions once when it
        starts serving, and this runs the same pass now. Idempotent; unavailable partitions are
        skipped (their host repairs them when it is back).
        """
        if self.partition_map is None:
            raise InvalidArgument("repair_keys needs a partitioned system")
        if not self._started:
            await self.start()
        counts = await asyncio.gather(
            *(self._reply(host.repair_keys.remote()) for host, _ in self._store_hosts())
        )
        return RepairReport(*(sum(c[i] for c in counts) for i in range(3)))

    @_counted_op
    async def partition_status(self) -> dict[int, str]:
        """Partition → ``"up"`` or ``"unavailable"`` (its node is not in the cluster or its host is down)."""
        if self.partition_map is None:
            raise InvalidArgument("partition_status needs a partitioned system")
        status: dict[int, str] = {}
        for node in self.partition_map.nodes:
            try:
                open_parts = set(await self._reply(self._node_host(node).open_partitions.remote()))
            except (PartitionUnavailable, CommandOutcomeUnknown):
                self._node_hosts.pop(node, None)
                open_parts = set()
            for p in self.partition_map.partitions_of(node):
                status[p] = "up" if p in open_parts else "unavailable"
        return dict(sorted(status.items()))

    # -- beside the actors: outbox, deadlines, projections -----------------------------------

    def _store_hosts(self) -> list[tuple[Any, list[int]]]:
        """(host, its partitions) for every reachable store; a shared directory is asked once."""
        if self.partition_map is None:
            return [(self._registry_actor(), [0])]
        found = []
        for node in self.partition_map.nodes:
            try:
                found.append((self._node_host(node), self.partition_map.partitions_of(node)))
            except PartitionUnavailable:
                continue  # counted; its outbox, deadlines and events wait for the node
        return found

    @_counted_op
    async def deliver_outbox(self, sender: Any, policy: Any = None) -> Any:
        """Deliver due outbox messages where they are stored: one worker per partition, on its host.

        ``sender`` (a ``Sender``) must pickle: it runs on the hosts, e.g. a ``DirectorySender``
        into a gateway's pickup directory on each node. Unavailable partitions are skipped.
        Returns the summed ``DeliveryReport``.
        """
        from mako_actors.delivery import DeliveryReport

        if not self._started:
            await self.start()
        now = self._virtual() if self._virtual is not None else None
        reports = await asyncio.gather(
            *(self._reply(host.deliver_outbox.remote(sender, policy, now)) for host, _ in self._store_hosts())
        )
        return DeliveryReport(*(sum(r[i] for r in reports) for i in range(3)))

    @_counted_op
    async def fire_due_deadlines(self) -> int:
        """Fire every due deadline, one scheduler per partition on its host, through the actors.

        With a ``VirtualClock``, "due" is the driver's clock reading. Returns how many fired.
        """
        if not self._started:
            await self.start()
        now = self._virtual() if self._virtual is not None else None
        # Hosted on a shared store: every host, each for the processes it owns (else one host
        # would fire through a second live actor of another host's process: a stale state
        # there until its next write).
        shared_hosts = self.partition_map is None and self.placement == "hosted"
        hosts = [(h, [0]) for h in self.host_handles()] if shared_hosts else self._store_hosts()
        counts = await asyncio.gather(
            *(self._reply(host.fire_due_deadlines.remote(now)) for host, _ in hosts)
        )
        return int(sum(counts))

    @_counted_op
    async def run_projection(self, projection: Any, batch: int = 500) -> int:
        """Feed ``projection`` every new event of every partition; one checkpoint per partition.

        Checkpoints are named ``<projection.name>@p0007`` and stored in their partition. Events
        of one partition (so of one process) arrive in commit order; partitions are read one
        after the other, so a read model must not rely on an order *across* partitions. An
        exception in ``handle`` saves the partition's checkpoint before the failing event and
        propagates. Unavailable partitions are skipped (they keep their checkpoint).
        Returns how many events were handled.
        """
        import inspect

        if not self._started:
            await self.start()
        handled = 0
        for host, partitions in self._store_hosts():
            for p in partitions:
                name = f"{projection.name}@p{p:04d}"
                try:
                    position = int(await self._reply(host.load_checkpoint.remote(p, name)))
                    while events := await self._reply(host.read_all.remote(p, position, batch)):
                        try:
                            for event in events:
                                result = projection.handle(event)
                                if inspect.isawaitable(result):
                                    await result
                                position = event.global_position
                                handled += 1
                        finally:
                            await self._reply(host.save_checkpoint.remote(p, name, position))
                except PartitionUnavailable:
                    # Its host could not open it, or it is being moved: it keeps its checkpoint
                    # (saved up to its last handled event), and the next run goes on there.
                    self.unavailable_errors += 1
                    continue
        return handled

    # -- stats and lifecycle ---------------------------------------------------------------

    @_counted_op
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
        while self._calls or self._open:
            self._idle_calls = self._idle_calls or asyncio.Event()
            self._idle_calls.clear()
            await self._idle_calls.wait()
        for stream_id in list(self._dedicated):
            await self._passivate(stream_id)
        others = list(self._host_handles) + list(self._node_hosts.values())
        others += [self._registry] if self._registry is not None else []
        for handle in others:
            with contextlib.suppress(RayActorError):
                await handle.aclose.remote()
            if self._kill_on_close:
                ray.kill(handle, no_restart=True)
        self._host_handles = []
        self._node_hosts = {}
        self._registry = None


def _inbound_options(
    options: dict[str, Any], partitions: PartitionMap | None, placement: Placement
) -> dict[str, Any]:
    """``InboundPipeline`` keywords for the hosts, checked here (GPKE's family built once)."""
    from mako_actors.gpke.family import GpkeFamily
    from mako_actors.inbound import DirectHost, InboundPipeline

    if partitions is None or placement != "hosted":
        raise InvalidArgument("inbound= needs a partitioned system with hosted placement")
    allowed = {"tenants", "families", "router", "master_data", "accept_test"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidArgument(f"inbound: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    options = dict(options)
    options["tenants"] = list(options.get("tenants") or ())
    InboundPipeline(cast(Any, None), DirectHost(cast(Any, None), []), **options)  # same checks as there
    if options.get("families") is None:
        options["families"] = [GpkeFamily(options.pop("router", None), options.pop("master_data", None))]
    try:
        cloudpickle.dumps(options)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise InvalidArgument(f"inbound options must pickle (they run on the hosts): {exc}") from None
    return options


def ingest_partition(raw: bytes, count: int) -> int:
    """The partition an interchange is ingested in: its first transaction's MaLo's, else its receipt's.

    A light scan (``_partition.Scan``), no validation: the host's parser decides the rest. Bytes
    without a readable UNB go to a partition by their hash (the pipeline only dead-letters them).
    """
    from mako_actors._partition import Scan
    from mako_actors.inbound import _tenant_or_placeholder, receipt_identity

    try:
        scan = Scan(raw)
        sender, recipient, ref = (v.decode("latin-1") for v in (scan.sender, scan.recipient, scan.control))
    except Exception:  # the scan reads anything; this only guards against what it cannot
        return stable_hash(raw[:256].hex()) % count
    if not (sender and recipient and ref):
        return stable_hash(raw[:256].hex()) % count
    for message in scan.messages:
        for tx in message.txs:
            malo = tx.get(b"LOC")
            if malo:
                return routing_slot(_tenant_or_placeholder(recipient), malo.decode("latin-1")) % count
    return partition_of(receipt_identity(recipient, sender, ref).stream_id, count)


def _write_durably(path: str, text: str) -> None:
    """``text`` into ``path``: a temporary file beside it, fsynced, renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".names.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


@contextlib.asynccontextmanager
async def _map_lock(path: str) -> AsyncIterator[None]:
    """An exclusive lock on the map file's ``.lock`` beside it (``flock``), for one rebalance.

    Drivers on this machine move partitions one at a time, each from the map the one before it
    saved: two moves of one partition at once would both copy it and open it on two nodes.
    The wait for the lock runs in a thread (a move elsewhere takes seconds).
    """
    import fcntl

    with open(f"{path}.lock", "a+b") as handle:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _map_locked(path: str) -> Iterator[None]:
    """``_map_lock`` for a caller that may block its thread: creating the map (no rebalance can
    hold the lock of a map that does not exist yet)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # as ``PartitionMap.save`` does
    with _file_locked(f"{path}.lock"):
        yield


@contextlib.contextmanager
def _file_locked(path: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), waited for in this thread."""
    import fcntl

    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _unwrap(exc: BaseException) -> BaseException:
    """The ``EngineError`` inside a ``RayTaskError``; another failure of a host's call (a batch
    it could not read: a class not importable on its worker) as an ``EngineError`` naming it, so
    no Ray type reaches a caller; any other exception as itself."""
    if not isinstance(exc, RayTaskError):
        return exc
    cause = getattr(exc, "cause", None)
    if isinstance(cause, EngineError):
        return cause
    if cause is None:
        return EngineError(f"a Ray worker failed: {str(exc).strip().splitlines()[-1][:500]}")
    return EngineError(f"a Ray worker failed: {type(cause).__name__}: {cause}")


def _as_result(exc: BaseException) -> _Failure | _Raised:
    """One operation's error as it travels back in a batch's results.

    Another exception travels as itself if it survives pickling both ways. One that does not
    (a workflow's exception whose constructor takes other arguments than it stores, say) would
    make the whole batch's results unreadable at the driver, the other operations' committed
    commands included: it travels as an ``EngineError`` naming its class and message instead.
    """
    if isinstance(exc, EngineError):
        return _Failure(exc.to_plain())
    try:
        pickle.loads(_pickle([exc]))  # as the results travel (a notebook's class by value)
    except Exception as unpicklable:
        text = f"{type(exc).__qualname__}: {exc} (not sent back as itself: {unpicklable!r})"
        return _Failure(EngineError(text).to_plain())
    return _Raised(exc)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
