"""``mako-actors serve``: a long-running node between a gateway's folders and the processes.

What it runs, on one asyncio loop:

- **Inbox.** A gateway (AS4) renames each finished interchange into ``inbox`` (names starting
  with ``.`` or ending in ``.tmp``/``.part``/``.partial``, in any case, are ignored as
  unfinished; a folder or symlink is named in the log and not read). Files are taken oldest
  first, one at a time, through ``InboundPipeline.ingest`` (received at: the file's mtime), then
  moved to ``done/`` (accepted) or ``rejected/`` (rejected, conflict), a duplicate by the verdict
  its receipt stored, also to another filesystem (copied, fsynced, then unlinked). A crash
  between ingest and move is harmless: the file is ingested again on restart, recognised as a
  duplicate and filed as it was decided; a move that fails is retried without ingesting the
  file again, and the file no longer holds the Fristen back.
  With ``accept_post``, ``POST /interchanges`` writes the body into the inbox (atomically, fsynced)
  and answers ``202``: the same path as a file. One node per inbox and per store: each holds a
  ``flock`` (``.serve.lock`` in the inbox, ``serve.lock`` in the store), and a second node on
  either is refused, also one with a store of its own; ``replay`` and ``masterdata import``
  take the store's too (``_store_lock``), so neither writes a store a node serves.
- **Processes** on a ``LocalActorSystem`` over the LMDB store, or on Ray host actors (``--ray``).
- **Outbox.** ``OutboxWorker`` with ``DirectorySender`` renders every due message into ``outbox``
  (woken after each interchange, else every ``poll_interval``). A message the folder does not
  take (gone, full) is retried with backoff, at most ten minutes apart, for six hours
  (``OUTBOX_RETRY``) before it becomes a dead letter: an outage is waited out, not counted.
- **Fristen.** ``DeadlineScheduler`` on the real clock. What is received by a Frist's due
  instant is in time (an LFA's answer at 08:59 counts though the node takes it at 09:01), so a
  Frist fires only ``deadline_grace`` seconds after its due instant and only once every inbox
  file received (mtime) by then is ingested: a backlog holds the Fristen behind it. And a file
  is taken only after the Fristen due before its receipt fired (as a replay orders them).
- **HTTP** (one small port, stdlib): ``/healthz`` (the loop is alive), ``/readyz`` (started and not
  draining), ``/metrics`` (Prometheus text).

SIGTERM (or SIGINT) drains: readiness goes to 503 and POSTs are refused, no new file is taken,
the file in hand and the commands in flight finish, the delivery in progress finishes and the
outbox is delivered once more, the Fristen loop ends after its current run, the actors and the
store close. A restart continues where it stopped: files left in the inbox, messages left in
the outbox and open Fristen are all in the directories and the store.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import filecmp
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mako_actors._durable import fsync_directory
from mako_actors._store_lock import INBOX_LOCK, STORE_LOCK, held
from mako_actors.actors import ActorStats
from mako_actors.delivery import DirectorySender, OutboxWorker, RetryPolicy
from mako_actors.envelope import CommandContext, EventEnvelope, ProcessIdentity
from mako_actors.errors import EngineError, InvalidArgument
from mako_actors.ids import TenantId
from mako_actors.metrics import CONTENT_TYPE, Metrics
from mako_actors.outbox import OutboxMessage
from mako_actors.process import system_clock
from mako_actors.scheduler import _TICK
from mako_actors.serve_config import MASTER_DATA_HELP, ServeConfig, load_config
from mako_actors.store import Commit, CommitResult
from mako_actors.version import WorkflowId

__all__ = ["Node", "register", "serve"]

if TYPE_CHECKING:
    from mako_actors.gpke.awaiting import OperatorQueue

log = logging.getLogger(__name__)

_UNFINISHED = (".tmp", ".part", ".partial")
_SCRAPE_WAIT = 2.0  # seconds a /metrics scrape waits for the loop to read the store's levels
_FUTURE_SKEW = 60.0  # seconds an inbox file's mtime may lie ahead of now without a warning
_HOLD_WARNING = 60.0  # seconds an inbox file may hold the Fristen back before a warning names it
_QUEUE_SAVE_EVERY = 30.0  # seconds between saves of the operator queue with its checkpoint


# -- instrumentation ---------------------------------------------------------------------------


class _UnreadableFile(Exception):
    """An inbox file this node cannot read (``__cause__`` says why): skipped, not moved."""


class _TimedHandle:
    """A process handle whose commands are timed into ``mako_command_duration_seconds``."""

    def __init__(self, handle: Any, metrics: Metrics) -> None:
        self._handle = handle
        self._metrics = metrics

    def identity(self) -> ProcessIdentity:
        return self._handle.identity()  # type: ignore[no-any-return]

    def context_for_inbound(
        self, interchange_ref: str, *, recorded_at: datetime | None = None
    ) -> CommandContext:
        return self._handle.context_for_inbound(  # type: ignore[no-any-return]
            interchange_ref, recorded_at=recorded_at
        )

    async def state(self) -> Any:
        return await self._handle.state()

    async def execute_and_enqueue_with(self, command: Any, ctx: CommandContext) -> list[EventEnvelope]:
        with self._metrics.time_command():
            return await self._handle.execute_and_enqueue_with(command, ctx)  # type: ignore[no-any-return]


class _TimedHost:
    """The actor system as the pipeline's ``ProcessHost``, with timed handles."""

    def __init__(self, system: Any, metrics: Metrics) -> None:
        self._system = system
        self._metrics = metrics

    def spawn(self, workflow: str, tenant_id: TenantId, workflow_id: WorkflowId) -> _TimedHandle:
        return _TimedHandle(self._system.spawn(workflow, tenant_id, workflow_id), self._metrics)

    def resume(self, identity: ProcessIdentity) -> _TimedHandle:
        return _TimedHandle(self._system.resume(identity), self._metrics)


class _MeasuredSender:
    """``DirectorySender`` that counts deliveries and their latency since the message became due."""

    def __init__(self, directory: Path, metrics: Metrics, *, test: bool = False) -> None:
        self._inner = DirectorySender(directory, test=test, on_rewritten=metrics.redelivered.inc)
        self._metrics = metrics

    async def send(self, message: OutboxMessage) -> None:
        await self._inner.send(message)
        self._metrics.observe_delivery(message.message_type, message.due_since, system_clock())


def _measured_store(path: Path, durability: str, metrics: Metrics) -> Any:
    from stores.lmdb import LmdbStore

    class MeasuredLmdbStore(LmdbStore):
        """Observes the size of every group commit (``commit_many``) the actor system makes."""

        async def commit_many(self, commits: Sequence[Commit]) -> list[CommitResult | EngineError]:
            metrics.commit_batch.observe(len(commits))
            return await super().commit_many(commits)

    return MeasuredLmdbStore(path, durability=durability)


# -- HTTP --------------------------------------------------------------------------------------


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    node: Node


class _Handler(BaseHTTPRequestHandler):
    server: _Http
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # access log: debug only
        log.debug("http %s", format % args)

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        node = self.server.node
        if self.path == "/healthz":
            alive = node.alive()
            self._reply(200 if alive else 503, b"ok\n" if alive else b"event loop stalled\n")
        elif self.path == "/readyz":
            self._reply(200 if node.ready else 503, b"ready\n" if node.ready else b"not ready\n")
        elif self.path == "/metrics":
            self._reply(200, node.render_metrics(), CONTENT_TYPE)
        else:
            self._reply(404, b"not found: /healthz, /readyz, /metrics" + b", POST /interchanges\n")

    def do_POST(self) -> None:
        node = self.server.node
        if self.path != "/interchanges" or not node.config.accept_post:
            self._reply(404, b"POST /interchanges is not enabled (accept_post)\n")
            return
        if not node.ready:
            self._reply(503, b"draining: send it again later\n")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, b"Content-Length required\n")
            return
        if length <= 0 or length > node.config.max_post_bytes:
            self._reply(413 if length > 0 else 400, b"body must be 1 byte to max_post_bytes\n")
            return
        raw = self.rfile.read(length)
        if len(raw) != length:  # the client went away mid-upload: not the interchange it sent
            self._reply(400, f"body ended after {len(raw)} of {length} bytes: send it again\n".encode())
            return
        name = node.accept_bytes(raw)
        body = json.dumps({"file": name, "sha256": hashlib.sha256(raw).hexdigest()}).encode()
        self._reply(202, body + b"\n", "application/json")


# -- the node ----------------------------------------------------------------------------------


class Node:
    """One serving node; ``await Node(config).run(stop)`` until ``stop`` is set, then drain."""

    def __init__(self, config: ServeConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.ready = False
        self._beat = time.monotonic()
        self._wake_outbox = asyncio.Event()
        self._http: _Http | None = None
        self._bound: _Http | None = None  # the HTTP port taken, not served yet
        self._ray_stats: Any = ActorStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: Any = None  # set while the store is open: /metrics reads its levels
        self.http_address: tuple[str, int] | None = None
        self._held_by: str | None = None  # the inbox file the last "Fristen wait" warning named
        # Inbox files ingested whose move failed: name -> (mtime in ns, destination). They were
        # decided, so they hold no Frist back, and a retry moves them without ingesting again.
        self._unmoved: dict[str, tuple[int, Path]] = {}
        # Inbox entries that are no regular file (a folder, a symlink), named once each.
        self._not_files: set[str] = set()
        self._future: set[str] = set()  # inbox files dated ahead, named once each
        self._letters_counted = 0  # the pipeline's dead letters counted on /metrics so far
        # (scheduler, store) while serving: each file fires the Fristen due before it first
        self._fristen: Any = None
        # This pass's oldest inbox file left waiting (unreadable, or held for a Frist's grace):
        # the files after it fire no Frist due after its receipt (``_fristen_before``).
        self._older_waiting: datetime | None = None
        self._unreadable: set[str] = set()  # inbox files the last full pass could not read

    # -- called from HTTP threads ----------------------------------------------------------

    def alive(self) -> bool:
        """Whether the event loop ran its heartbeat recently."""
        return time.monotonic() - self._beat < 5.0 + 10 * self.config.poll_interval

    def render_metrics(self) -> bytes:
        """The Prometheus text, with the store's levels read now, on the loop.

        So a scrape counts every commit that finished before it (the heartbeat alone lags by up
        to ``poll_interval``, more on a busy machine). If the loop does not answer within
        ``_SCRAPE_WAIT`` seconds, or the store is closing, the levels of the last heartbeat.
        """
        loop, store = self._loop, self._store
        if loop is not None and store is not None:
            try:
                future = asyncio.run_coroutine_threadsafe(self._store_levels(store), loop)
            except RuntimeError:  # the loop is closed
                pass
            else:
                try:
                    future.result(timeout=_SCRAPE_WAIT)
                except (TimeoutError, EngineError, concurrent.futures.CancelledError):
                    future.cancel()  # a stale level beats a failed scrape
        return self.metrics.render()

    def accept_bytes(self, raw: bytes) -> str:
        """Write ``raw`` into the inbox atomically (fsynced); returns the file name."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"http-{stamp}-{hashlib.sha256(raw).hexdigest()[:12]}.edi"
        temporary = self.config.inbox / f".{name}.tmp"
        with temporary.open("wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.config.inbox / name)
        fsync_directory(self.config.inbox)  # answered 202 next: the file must be there after a crash
        return name

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_ready: Callable[[Node], None] | None = None) -> None:
        """Serve until ``stop`` is set, then drain and close everything (see the module docs)."""
        config = self.config
        master = self._master_data()  # a bad file is refused before any folder or store exists
        self._bind_http()  # and a port in use (``_start_http`` serves it)
        try:
            for directory in (config.inbox, config.outbox, config.done_dir, config.rejected_dir):
                directory.mkdir(parents=True, exist_ok=True)
            config.store.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Two nodes on one store would deliver every outbox message twice; two on one inbox
            # (each with its own store) would each ingest and answer every file and race to move it.
            by, alone = "mako-actors serve", "one node per store, and no import or replay while it serves"
            with (
                held(config.store / STORE_LOCK, "store", by, alone),
                held(config.inbox / INBOX_LOCK, "inbox", by, "one node per inbox"),
            ):
                _forget_unanswered_posts(config.inbox)
                await self._run_locked(stop, on_ready, master)
        finally:
            bound, self._bound = self._bound, None
            if bound is not None:  # (refused before it served)
                bound.server_close()

    async def _run_locked(
        self, stop: asyncio.Event, on_ready: Callable[[Node], None] | None, master: Any
    ) -> None:
        config = self.config
        self._start_http()
        try:
            store = _measured_store(config.store, config.durability, self.metrics)
        except BaseException:
            self._stop_http()
            raise
        system: Any = None
        try:
            system = await self._actor_system(store)
            pipeline = self._pipeline(store, system, master)
            self._letters_counted = 0  # (its ``dead_letters_written`` starts at 0)
            sender = _MeasuredSender(config.outbox, self.metrics, test=config.accept_test)
            worker = OutboxWorker(store, sender, clock=system_clock, policy=OUTBOX_RETRY)
            scheduler = self._scheduler(store, system)
            self._fristen = (scheduler, store)
            self.metrics.watch(
                {
                    "store": lambda: store.stats,
                    "deadlines": lambda: scheduler.stats,
                    # Ray hosts are asked by the heartbeat (an async call), local actors directly.
                    "actors": (lambda: self._ray_stats) if config.ray else (lambda: system.stats),
                },
                config.labels,
            )
            await self._levels(store, system)
            self._loop, self._store = asyncio.get_running_loop(), store
            inbox = asyncio.create_task(self._inbox_loop(pipeline, stop), name="inbox")
            fristen = asyncio.create_task(self._deadline_loop(scheduler, stop), name="fristen")
            outbox_done = asyncio.Event()
            outbox = asyncio.create_task(self._outbox_loop(worker, outbox_done), name="outbox")
            beat = asyncio.create_task(self._heartbeat(store, system, stop), name="heartbeat")
            waiting = asyncio.create_task(self._operator_loop(store, stop), name="operator-queue")
            self.ready = True
            log.info("serving: inbox %s, outbox %s, store %s", config.inbox, config.outbox, config.store)
            if on_ready is not None:
                on_ready(self)
            await stop.wait()
            self.ready = False
            log.info("draining: no new files; finishing commands in flight and deliveries")
            await asyncio.gather(inbox, fristen)
            outbox_done.set()
            self._wake_outbox.set()
            await outbox
            beat.cancel()
            waiting.cancel()
            await asyncio.gather(beat, waiting, return_exceptions=True)
            await self._levels(store, system)
        finally:
            self.ready = False
            self._store = None
            if system is not None:
                await system.aclose()
            await store.aclose()
            self._stop_http()
        log.info("drained and closed")

    async def _actor_system(self, store: Any) -> Any:
        from mako_actors.gpke import GpkeNbWorkflow

        if not self.config.ray:
            from mako_actors.actors import LocalActorSystem

            return LocalActorSystem(store, [GpkeNbWorkflow], clock=system_clock)
        import ray

        from mako_actors.actors import RayActorSystem

        if not ray.is_initialized():
            ray.init(address=self.config.ray_address, include_dashboard=False, log_to_driver=False)
        return RayActorSystem(
            self.config.store,
            [GpkeNbWorkflow],
            placement="hosted",
            hosts=self.config.hosts,
            name_prefix=self.config.node,
            store_options={"durability": self.config.durability},
        )

    def _master_data(self) -> Any:
        """The ``master_data`` file read, or ``None``; ``InvalidArgument`` naming what is wrong with it."""
        if self.config.master_data is None:
            return None
        from mako_actors.gpke.supply import check_master_tenants
        from mako_actors.replay import load_master_data

        master = load_master_data(self.config.master_data)
        check_master_tenants(master, self.config.tenants, "serve")
        return master

    def _pipeline(self, store: Any, system: Any, master: Any) -> Any:
        from mako_actors.inbound import InboundPipeline

        return InboundPipeline(
            store,
            _TimedHost(system, self.metrics),
            tenants=self.config.tenants,
            master_data=master,
            accept_test=self.config.accept_test,
            clock=system_clock,
        )

    def _scheduler(self, store: Any, system: Any) -> Any:
        from mako_actors.scheduler import DeadlineScheduler, identity_of

        async def fire(deadline: Any) -> object:
            with self.metrics.time_command():
                return await system.resume(identity_of(deadline)).execute_timeout(deadline)

        return DeadlineScheduler(store, fire, system_clock)

    # -- loops -----------------------------------------------------------------------------

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def _inbox_files(self) -> list[tuple[int, str, Path]]:
        """The finished files in the inbox as (mtime in ns, name, path), oldest first."""
        files: list[tuple[int, str, Path]] = []
        with os.scandir(self.config.inbox) as entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name.lower().endswith(_UNFINISHED):
                    continue
                if entry.is_file(follow_symlinks=False):
                    files.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
                elif entry.name not in self._not_files:
                    self._not_files.add(entry.name)
                    what = "a symlink" if entry.is_symlink() else "a folder" if entry.is_dir() else "no file"
                    log.warning(
                        "inbox %s is %s and is not read: only files placed in the inbox itself are "
                        "ingested", entry.name, what,
                    )  # fmt: skip
        files.sort()
        return files

    def _waiting_files(self) -> list[Path]:
        return [path for _, _, path in self._inbox_files()]

    def _fristen_horizon(self) -> datetime | None:
        """Fristen due before this instant may fire; ``None``: none may (the inbox is unreadable).

        ``deadline_grace`` before now, or the receipt instant of the oldest file still in the
        inbox if earlier: a file leaves the inbox only after it was ingested, so an answer
        received by a Frist's due instant is always decided before the Frist fires. A file
        ingested whose move failed (``_unmoved``) was decided and holds nothing back.
        """
        horizon = datetime.now(UTC) - timedelta(seconds=self.config.deadline_grace)
        try:
            files = self._inbox_files()
        except OSError:  # the inbox loop says so; a Frist fired too early cannot be taken back
            return None
        unmoved = self._unmoved
        waiting = [f for f in files if f[1] not in unmoved or unmoved[f[1]][0] != f[0]] if unmoved else files
        if waiting:
            oldest_ns, name, _ = waiting[0]
            oldest = datetime.fromtimestamp(oldest_ns / 1e9, UTC)
            if oldest < horizon:
                horizon = oldest
                if name != self._held_by and time.time() - oldest_ns / 1e9 > _HOLD_WARNING:
                    self._held_by = name
                    log.warning(
                        "Fristen due from %s on wait until inbox file %s (received then) is ingested",
                        oldest.isoformat(), name,
                    )  # fmt: skip
        return horizon

    async def _fristen_before(self, received_at: datetime) -> bool:
        """Fire the Fristen due before ``received_at`` that may fire, as a replay fires them
        before each file; False (the file waits a pass) while one of them is in its grace.

        A backlog (a restart, a burst) was decided before the Fristen due among its files: an
        LFA's silence at 09:00 was not yet deemed agreement when a later Anmeldung of the MaLo
        came, which then met a competing process that a replay had confirmed already. The
        bound is ``_fristen_horizon``'s, without its inbox scan (files come oldest first: only
        one left waiting earlier in this pass is older).
        """
        if self._fristen is None:
            return True
        scheduler, store = self._fristen
        grace = datetime.now(UTC) - timedelta(seconds=self.config.deadline_grace)
        horizon = grace if self._older_waiting is None else min(grace, self._older_waiting)
        before = min(received_at, horizon)
        if await scheduler.run_due(before=before):
            self._wake_outbox.set()
        if received_at <= before:
            return True  # every Frist due before it could fire
        # One due before it may not fire yet: held by the grace (a file received by then may
        # still come), or by an older file still waiting (that one holds the Fristen, as ever).
        pending = await store.due_deadlines(received_at - _TICK, 1)
        if pending and pending[0].due_at >= grace:
            self._older_waiting = min(self._older_waiting or received_at, received_at)
            return False
        return True

    async def _inbox_loop(self, pipeline: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                files = self._waiting_files()
            except OSError as exc:  # the folder went away or is unreadable: say so, keep trying
                log.error("inbox %s cannot be read: %s", self.config.inbox, exc)
                files = []
            self.metrics.inbox_waiting.set(len(files))
            if self._unmoved:  # forget files someone took out of the inbox meanwhile
                names = {path.name for path in files}
                self._unmoved = {k: v for k, v in self._unmoved.items() if k in names}
            unreadable: set[str] = set()
            self._older_waiting = None
            waiting = len(files)
            for index, path in enumerate(files):
                if stop.is_set():  # draining: the rest waits in the inbox for the next start
                    return
                try:
                    await self._take(pipeline, path)
                    if not path.exists():  # taken (a file held back for a Frist stays waiting)
                        waiting -= 1
                        self.metrics.inbox_waiting.set(waiting)  # a backlog shows it shrink
                except _UnreadableFile as exc:  # this file only (its mode, say): the others go on
                    unreadable.add(path.name)
                    with contextlib.suppress(OSError):
                        at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                        self._older_waiting = min(self._older_waiting or at, at)
                    if path.name not in self._unreadable:  # said once, not every pass
                        why = exc.__cause__
                        log.error("inbox %s cannot be read, skipped until it can: %s", path.name, why)
                except (EngineError, OSError) as exc:  # not the file's fault: leave it, retry later
                    log.error("inbox %s: left in the inbox, will retry: %s", path.name, exc)
                    # The files not looked at in this pass keep what the last pass found.
                    later = self._unreadable.intersection(p.name for p in files[index + 1 :])
                    self.metrics.inbox_unreadable.set(len(unreadable | later))
                    await self._pause(stop, self.config.poll_interval * 4)
                    break
            else:
                self._unreadable = unreadable
                self.metrics.inbox_unreadable.set(len(unreadable))
            await self._pause(stop, self.config.poll_interval)

    async def _take(self, pipeline: Any, path: Path) -> None:
        try:
            stat = path.stat()
            decided = self._unmoved.get(path.name)
            if decided is not None and decided[0] == stat.st_mtime_ns:
                self._move_decided(path, stat.st_mtime_ns, decided[1])  # only its move failed
                return
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise _UnreadableFile(path.name) from exc
            received_at = datetime.fromtimestamp(stat.st_mtime, UTC)
            now = datetime.now(UTC)
            if received_at > now:
                # A clock that is wrong (the gateway's, a copy keeping its source's time): the
                # file is here now. Taken as its receipt, it would wait for Fristen not yet due
                # and date its CONTRL in the future.
                if received_at - now > timedelta(seconds=_FUTURE_SKEW) and path.name not in self._future:
                    self._future.add(path.name)  # (once: a file held back is looked at every pass)
                    log.warning(
                        "inbox %s: modified at %s, in the future: taken as received now (%s)",
                        path.name, received_at.isoformat(), now.isoformat(),
                    )  # fmt: skip
                received_at = now
        except FileNotFoundError:
            return  # taken away meanwhile
        if not await self._fristen_before(received_at):
            return  # a Frist due before its receipt is still in its grace: the next pass takes it
        try:
            result = await pipeline.ingest(raw, received_at, source=path.name)
        except Exception as exc:
            self._count_letters(pipeline)  # written before it raised: stored all the same
            if isinstance(exc, EngineError) and (exc.transient or exc.operational):
                # The store (or a Ray host) failed, not the file: the caller leaves it in the
                # inbox for later. Ingesting it again is safe: an accepted receipt that was not
                # processed to its end is processed again, transactions routed already are not.
                raise
            # A bug must not stop the node or lose the file: keep it for a person.
            log.exception("inbox %s: ingest failed unexpectedly; moved to rejected/", path.name)
            self.metrics.observe_ingest("failed", {})
            self._move_decided(path, stat.st_mtime_ns, self.config.rejected_dir)
            return
        acks = [(m.detail, m.ack) for m in result.messages if m.ack is not None]
        self.metrics.observe_ingest(result.status, result.counts(), acknowledgements=acks)
        self._count_letters(pipeline)
        self._wake_outbox.set()  # its answers are stored, whether or not the move below works
        # A duplicate keeps its first verdict: a rejected file whose move failed before a
        # restart, or before a crash, is ingested again and must not end in done/.
        ok = result.status == "accepted" or (result.status == "duplicate" and not result.rejected_before)
        self._move_decided(path, stat.st_mtime_ns, self.config.done_dir if ok else self.config.rejected_dir)

    def _count_letters(self, pipeline: Any) -> None:
        """Count the dead letters ``pipeline`` wrote since the last count (its running total)."""
        written: int = getattr(pipeline, "dead_letters_written", 0)  # (a test's stand-in has none)
        if written > self._letters_counted:
            self.metrics.dead_letters.labels(source="inbound").inc(written - self._letters_counted)
        self._letters_counted = written

    def _move_decided(self, path: Path, mtime_ns: int, directory: Path) -> None:
        """Move an ingested inbox file into ``directory``; ``OSError`` if that fails.

        A failed move is remembered (``_unmoved``), so the file holds no Frist back and the
        next try only moves it: ingesting it again would count a duplicate (after a restart it
        does, and the receipt's verdict files it).
        """
        try:
            _move(path, directory)
        except OSError:
            self._unmoved[path.name] = (mtime_ns, directory)
            raise
        self._unmoved.pop(path.name, None)

    async def _outbox_loop(self, worker: OutboxWorker, done: asyncio.Event) -> None:
        while True:
            final = done.is_set()
            self._wake_outbox.clear()  # before the run: a wake-up during it is not lost
            try:
                report = await worker.run_once()  # a delivery in progress always finishes
            except EngineError as exc:  # the store failed; the messages stay in the outbox
                log.error("outbox: %s; retrying", exc)
                if final:
                    return
                await asyncio.sleep(self.config.poll_interval * 4)
                continue
            self.metrics.delivery_retries.inc(report.retried)
            self.metrics.outbox_held.set(report.held)
            if report.dead_lettered:
                self.metrics.dead_letters.labels(source="outbox").inc(report.dead_lettered)
            if final and not report.delivered:
                return
            if report.delivered or report.retried or report.dead_lettered:
                continue  # there may be more due than one batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_outbox.wait(), self.config.poll_interval)

    async def _deadline_loop(self, scheduler: Any, stop: asyncio.Event) -> None:
        failed = scheduler.stats.failed
        while not stop.is_set():
            try:
                horizon = self._fristen_horizon()
                if horizon is not None and await scheduler.run_due(before=horizon):
                    self._wake_outbox.set()
            except EngineError as exc:
                log.error("deadline scheduler: %s; retrying", exc)
            except Exception:  # never end the loop: every later Frist would wait for a restart
                log.exception("deadline scheduler failed unexpectedly; retrying")
            if scheduler.stats.failed > failed:  # each one dead-lettered
                self.metrics.dead_letters.labels(source="deadline").inc(scheduler.stats.failed - failed)
                failed = scheduler.stats.failed
            await self._pause(stop, self.config.poll_interval)

    async def _heartbeat(self, store: Any, system: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._beat = time.monotonic()
            with contextlib.suppress(EngineError):
                await self._levels(store, system)
            await self._pause(stop, self.config.poll_interval)

    async def _operator_loop(self, store: Any, stop: asyncio.Event) -> None:
        """Follow the store's events for the processes waiting for an operator's decision
        (``gpke.awaiting``; the gauge ``mako_processes_awaiting_operator``).

        From the set saved with its checkpoint (``QUEUE_CHECKPOINT``; the first time, and for a
        saved state it cannot read, from the first event), a page at a time with the loop free
        between pages (an LMDB read runs on the loop's thread), then every poll interval. Caught
        up, it saves set and position together, at most every ``_QUEUE_SAVE_EVERY`` seconds: a
        restart reads only what came after, not the whole log again.
        """
        from mako_actors.gpke.awaiting import QUEUE_CHECKPOINT

        queue: OperatorQueue | None = None
        position = saved = 0
        saved_at = -math.inf
        while not stop.is_set():
            try:
                if queue is None:
                    position, state = await store.load_checkpoint_state(QUEUE_CHECKPOINT)
                    queue, saved = _operator_queue(state, position)
                    position = saved
                events = await store.read_all(position, 500)
                if not events and position != saved and time.monotonic() - saved_at >= _QUEUE_SAVE_EVERY:
                    await store.save_checkpoint(QUEUE_CHECKPOINT, position, queue.state())
                    saved, saved_at = position, time.monotonic()
            except Exception:  # tried again next interval; the gauge keeps its last count meanwhile
                log.exception("following the store's events for %s failed", "the operator queue")
                await self._pause(stop, self.config.poll_interval)
                continue
            if events:
                for event in events:
                    queue.handle(event)
                position = events[-1].global_position
                await asyncio.sleep(0)
                continue
            self.metrics.awaiting_operator.set(len(queue))  # caught up
            await self._pause(stop, self.config.poll_interval)

    async def _levels(self, store: Any, system: Any) -> None:
        await self._store_levels(store)
        if self.config.ray:
            self._ray_stats = await system.get_stats()

    async def _store_levels(self, store: Any) -> None:
        clear = getattr(store, "clear_stale_readers", None)
        if clear is not None:  # a reader beside the node (CLI, notebook) killed mid-read
            self.metrics.stale_readers.inc(clear())
        self.metrics.outbox_pending.set(await store.outbox_count())
        counts = await store.table_counts()
        self.metrics.deadlines_open.set(counts["deadlines"])
        self.metrics.dead_letters_stored.set(counts["dead_letters"])

    # -- HTTP ------------------------------------------------------------------------------

    def _bind_http(self) -> None:
        """Take the HTTP port, not serving it yet; ``OSError`` naming the settings if it is in use."""
        if self.config.http_port is None:
            return
        try:
            server = _Http((self.config.http_host, self.config.http_port), _Handler)
        except OSError as exc:  # (a port in use: the bare "[Errno 98]" named no setting)
            raise OSError(
                exc.errno, f"serve: http_host {self.config.http_host!r} / http_port "
                f"{self.config.http_port}: {exc.strerror}"
            ) from None
        server.node = self
        self._bound = server
        host, port = server.server_address[:2]
        self.http_address = (str(host), int(port))

    def _start_http(self) -> None:
        server, self._bound = self._bound, None
        if server is None:
            return
        self._http = server
        threading.Thread(target=server.serve_forever, name="mako-http", daemon=True).start()

    def _stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _move(path: Path, directory: Path) -> Path:
    """Move ``path`` into ``directory`` under its name (numbered if that is taken); the new path.

    A rename, or across filesystems (``EXDEV``) a copy under a dot name in ``directory``,
    fsynced with the file's times and mode and renamed into place, then ``path`` unlinked: a
    crash in between leaves the file in both places (ingested again: a duplicate, whose move
    then finds its copy there and only unlinks it), never in neither. Raises ``OSError``; a
    failed copy leaves no temporary file behind.
    """
    target = directory / path.name
    counter = 1
    while target.exists():
        if _copied_before(path, target):
            # A copy across filesystems a crash cut short before the inbox lost the file: it
            # is there already (same bytes, same receipt instant), not a second one to number.
            path.unlink()
            return target
        target = directory / f"{path.name}.{counter}"
        counter += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(path, target)
    return target


def _forget_unanswered_posts(inbox: Path) -> None:
    """Remove what a node killed while it wrote a POSTed body left in ``inbox`` (``accept_bytes``'s
    dot-named temporary files): never answered 202, so its sender sends it again."""
    for leftover in inbox.glob(".http-*.edi.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _copied_before(path: Path, target: Path) -> bool:
    """Whether ``target`` is ``_copy_across``'s copy of ``path``: on another filesystem (a rename
    on one leaves no copy behind), its mtime (the receipt instant the copy keeps, to the
    filesystem's precision: FAT's 2 s) and its bytes. A file received again under that name is
    another receipt, kept beside it."""
    try:
        here, there = path.stat(), target.stat()
        if _one_filesystem(here, there) or here.st_size != there.st_size:
            return False
        if abs(here.st_mtime_ns - there.st_mtime_ns) > _COPIED_MTIME_NS:
            return False
        return filecmp.cmp(path, target, shallow=False)
    except OSError:
        return False


_COPIED_MTIME_NS = 2_000_000_000


def _one_filesystem(here: os.stat_result, there: os.stat_result) -> bool:
    return here.st_dev == there.st_dev


def _copy_across(path: Path, target: Path) -> None:
    """``_move`` to another filesystem: copy, fsync, rename into place, fsync the directory, unlink."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, path.open("rb") as source:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            shutil.copystat(path, temporary)  # the mtime is the receipt instant: keep it
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(target.parent)  # the new name is durable before the inbox loses the file
    try:
        path.unlink()
    except OSError:  # the file stays in the inbox: without its copy, or each retry adds one
        with contextlib.suppress(OSError):
            target.unlink()
        raise


# -- the command -------------------------------------------------------------------------------


async def serve(config: ServeConfig, on_ready: Callable[[Node], None] | None = None) -> None:
    """Run a node until SIGTERM or SIGINT, then drain (see the module docs)."""
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created timestamp series are noise on a dashboard
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def drain_on_signals() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    def ready(node: Node) -> None:
        # ``ray.init`` (``--ray``) installs its own SIGTERM handler, which kills the process
        # without a drain: take the signals back once everything has started.
        drain_on_signals()
        if on_ready is not None:
            on_ready(node)

    drain_on_signals()
    try:
        await Node(config).run(stop, ready)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def register(sub: Any) -> None:
    """Add ``serve`` to the CLI's subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run a node: inbox folder (and HTTP) in, outbox folder out, Fristen on the real clock",
        description=(
            "Watch an inbox directory (files renamed in by a gateway), run every interchange through the "
            "inbound pipeline on process actors, deliver the outbox as EDIFACT files, fire Fristen on the "
            "real clock; /healthz, /readyz and /metrics on one HTTP port. SIGTERM drains and stops. "
            "Settings come from --config (TOML) with the flags on top."
        ),
    )
    p.add_argument("--config", type=Path, help="TOML file with the settings below (flags override it)")
    p.add_argument("--store", type=Path, help="LMDB store directory (created if missing)")
    p.add_argument("--tenant", action="append", help="our MP-ID (repeatable)")
    p.add_argument("--inbox", type=Path, help="directory the gateway renames interchanges into")
    p.add_argument("--outbox", type=Path, help="directory rendered outbound interchanges are written to")
    p.add_argument("--done", type=Path, help="where processed files go (default: beside the inbox)")
    p.add_argument("--rejected", type=Path, help="where rejected files go (default: beside the inbox)")
    p.add_argument(
        "--master-data", type=Path, help=MASTER_DATA_HELP
    )
    p.add_argument("--http-host", help="address of the health/metrics port (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, help="health/metrics port (default 9464; 0: any free port)")
    p.add_argument("--accept-post", action="store_true", default=None, help="accept POST /interchanges")
    p.add_argument("--poll-interval", type=float, help="seconds between inbox, outbox and Fristen polls")
    p.add_argument(
        "--deadline-grace", type=float,
        help="seconds a Frist waits past its due instant for files received by then (default 5)",
    )  # fmt: skip
    p.add_argument("--durability", choices=("fsync", "no_meta_sync", "no_sync"), help="LMDB durability")
    p.add_argument("--ray", action="store_true", default=None, help="run the processes on Ray host actors")
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--hosts", type=int, help="Ray host actors (default 2)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(
            args.config,
            store=args.store,
            tenants=args.tenant,
            inbox=args.inbox,
            outbox=args.outbox,
            done=args.done,
            rejected=args.rejected,
            master_data=args.master_data,
            http_host=args.http_host,
            http_port=args.http_port,
            accept_post=args.accept_post,
            poll_interval=args.poll_interval,
            deadline_grace=args.deadline_grace,
            durability=args.durability,
            ray=args.ray,
            ray_address=args.ray_address,
            hosts=args.hosts,
        )
    except InvalidArgument as exc:
        print(f"mako-actors serve: {exc}", file=sys.stderr)
        return 2

    def announce(node: Node) -> None:
        where = f"http://{node.http_address[0]}:{node.http_address[1]}" if node.http_address else "no HTTP"
        print(f"mako-actors serve: ready ({where})", flush=True)

    try:
        asyncio.run(serve(config, announce))
    except (EngineError, OSError) as exc:
        print(f"mako-actors serve: {exc}", file=sys.stderr)
        return 2
    return 0


#: How the node retries a message its outbox folder did not take: by age alone (the default's
#: eight attempts were spent within four minutes of an unmounted or full folder, every answer a
#: dead letter to requeue by hand).
OUTBOX_RETRY = RetryPolicy(max_attempts=1_000_000)

def _operator_queue(state: Any, position: int) -> tuple[OperatorQueue, int]:
    """The operator queue saved with checkpoint ``position``, or (logged) an empty one from the
    first event when the saved state is not one."""
    from mako_actors.gpke.awaiting import OperatorQueue

    try:
        return OperatorQueue(state), position
    except InvalidArgument as exc:
        log.warning("the saved operator queue is not readable (%s); reading every event again", exc)
        return OperatorQueue(), 0
