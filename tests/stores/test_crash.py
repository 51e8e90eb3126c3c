"""Crash safety: a writer killed with SIGKILL mid-stream loses no acknowledged commit."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path

from mako_actors import ExpectedVersion, ProcessIdentity
from mako_actors.testing import envelope, identity
from stores.lmdb import LmdbStore


def _writer(path: str, plain: dict[str, str], acks: multiprocessing.connection.Connection) -> None:
    ident = ProcessIdentity.model_validate(plain)

    async def run() -> None:
        async with LmdbStore(path) as store:
            # Many concurrent appenders to many streams: group commits of varying size.
            async def one(stream: ProcessIdentity) -> None:
                version = 0
                while True:
                    await store.append(stream.stream_id, ExpectedVersion.exact(version), [envelope(stream)])
                    version += 1
                    acks.send((str(stream.stream_id), version))  # sent only after the commit

            others = [identity() for _ in range(7)]
            await asyncio.gather(one(ident), *(one(o) for o in others))

    asyncio.run(run())


def test_sigkill_mid_writes_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ident = identity()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_writer, args=(str(tmp_path), ident.model_dump(mode="json"), sender))
    child.start()
    acknowledged: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while sum(acknowledged.values()) < 400 and time.monotonic() < deadline:
        if receiver.poll(0.5):
            stream, version = receiver.recv()
            acknowledged[stream] = max(acknowledged.get(stream, 0), version)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    while receiver.poll(0):  # acks already in the pipe when the writer died
        stream, version = receiver.recv()
        acknowledged[stream] = max(acknowledged.get(stream, 0), version)
    assert sum(acknowledged.values()) >= 400, "the writer made too little progress to test anything"

    async def check() -> None:
        async with LmdbStore(tmp_path) as store:
            for stream, version in acknowledged.items():
                events = await store.load(stream)  # type: ignore[arg-type]
                assert len(events) >= version, f"{stream}: acknowledged {version}, found {len(events)}"
                assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            positions = [e.global_position for e in await store.read_all(0, 1_000_000)]
            assert positions == list(range(1, len(positions) + 1))

    asyncio.run(check())
