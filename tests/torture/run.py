"""``make torture``: crash, fuzz and exhaustion runs with checked invariants; prints a table.

Not part of ``make test`` (minutes, not seconds). Every scenario is bounded by its counts:

- **SIGKILL on Process / on LocalActorSystem**: a forked writer runs commands (each with an
  outbox row, snapshots every 7 events) on 8 streams under load and reports every acknowledged
  command; it is killed with SIGKILL at a random moment, a new one continues on the same
  store, ``--kills`` times. Then: no acknowledged command lost, sequences without gaps, global
  positions without gaps, every event with its outbox row, snapshot + tail == full replay.
- **two OS processes on one stream**: two forked writers, each with its own actor system,
  hammer one stream; every acknowledged command is stored exactly once.
- **map growth from a tiny map**: a 64 KiB map grows (by doubling) to hold everything.
- **disk full** (needs root for a small tmpfs; skipped otherwise): writes until the store
  reports ``StoreDiskFull``, then the file system grows and the store goes on; nothing
  acknowledged is lost.
- **fuzzed interchanges**: ``--fuzz`` mutated interchanges (real samples when present, else
  synthetic) through the inbound pipeline; ``ingest`` must never raise, and after every batch
  the store is checked (positions contiguous, every new event decodes, every answer renders:
  an answer that cannot be rendered would be dead-lettered at delivery, never sent).
- **Ray host killed mid-command**: ``--ray-kills`` times a host actor is killed while commands
  are in flight; acknowledged commands survive, and a command is acknowledged after each kill.

Run: ``python -m tests.torture.run [--kills 100] [--fuzz 100000] [--ray-kills 5]``.
Exit code 1 when any invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mako_actors import ExpectedVersion, Process, ProcessIdentity, StreamId, TenantId, WorkflowId
from tests.workflows import Ledger, Record

TENANT = TenantId.from_party_id("9900000002009")
LEDGER = WorkflowId.new("ledger", "FV2510")
LFN = "9900000001001"
STREAMS = 8
SNAPSHOT_EVERY = 7
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass
class Row:
    """One line of the result table."""

    scenario: str
    runs: int = 0
    operations: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


# -- SIGKILL under load ------------------------------------------------------------------------


def _writer(kind: str, path: str, idents: list[dict[str, Any]], conn: Connection) -> None:
    """A child process: commands on every stream until killed; sends (stream, sequence) per ack."""
    from mako_actors import VersionConflict
    from mako_actors.actors import LocalActorSystem
    from stores.lmdb import LmdbStore

    identities = [ProcessIdentity.model_validate(plain) for plain in idents]

    async def on_process() -> None:
        async with LmdbStore(path) as store:

            async def loop(ident: ProcessIdentity) -> None:
                process = Process.from_identity(Ledger(), store, ident)
                while True:
                    try:
                        events, _ = await process.execute_and_enqueue_with_snapshot_and_retry(
                            Record(amount=1, notify=LFN), 20, snapshot_interval=SNAPSHOT_EVERY
                        )
                    except VersionConflict:
                        continue
                    conn.send((str(ident.stream_id), events[-1].sequence))

            # Two handles per stream: they conflict, retry, and group-commit with the others.
            await asyncio.gather(*(loop(ident) for ident in identities for _ in range(2)))

    async def on_actors() -> None:
        store = LmdbStore(path)
        async with LocalActorSystem(
            store, [Ledger], snapshot_interval=SNAPSHOT_EVERY, close_store=True
        ) as system:
            refs = [system.resume(ident) for ident in identities]

            async def loop(ref: Any) -> None:
                while True:
                    events = await ref.execute_and_enqueue(Record(amount=1, notify=LFN))
                    conn.send((str(ref.stream_id), events[-1].sequence))

            await asyncio.gather(*(loop(ref) for ref in refs for _ in range(4)))

    conn.send(("started", 0))
    asyncio.run(on_process() if kind == "process" else on_actors())


def _verify(path: str, idents: list[dict[str, Any]], acked: dict[str, int], conn: Connection) -> None:
    """A child process: open the store and check every invariant; sends a list of failures."""
    from stores.lmdb import LmdbStore

    async def check() -> list[str]:
        failures: list[str] = []
        async with LmdbStore(path) as store:
            rows = await store.pending(10**8, FAR_FUTURE)
            caused = {m.causation_event_id for m in rows}
            for plain in idents:
                ident = ProcessIdentity.model_validate(plain)
                events = await store.load(ident.stream_id)
                count = len(events)
                if [e.sequence for e in events] != list(range(1, count + 1)):
                    failures.append(f"{ident.stream_id}: sequence gap")
                if acked.get(str(ident.stream_id), 0) > count:
                    failures.append(f"{ident.stream_id}: {acked[str(ident.stream_id)]} acked, {count} stored")
                missing = [e.sequence for e in events if e.event_id not in caused]
                if missing:
                    failures.append(f"{ident.stream_id}: events without their outbox row: {missing[:5]}")
                process = Process.from_identity(Ledger(), store, ident)
                full, snapped = await process.state(), await process.state_with_snapshot()
                if full != snapped or full.total != count:
                    failures.append(f"{ident.stream_id}: snapshot + tail {snapped} != replay {full}")
            position = 0
            while True:
                page = await store.read_all(position, 5000)
                if not page:
                    break
                if [e.global_position for e in page] != list(range(position + 1, position + len(page) + 1)):
                    failures.append(f"global position gap after {position}")
                    break
                position = page[-1].global_position
        return failures

    conn.send(asyncio.run(check()))


def _in_child(target: Callable[..., None], *args: Any, timeout: float = 300) -> Any:
    """Run ``target(*args, conn)`` in a forked child and return what it sent."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=target, args=(*args, sender))
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise TimeoutError(f"{target.__name__} sent nothing in {timeout} s")
        return receiver.recv()
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()


def sigkill(kind: str, kills: int, rng: random.Random) -> Row:
    row = Row(f"SIGKILL under load ({'Process' if kind == 'process' else 'LocalActorSystem'})")
    started = time.monotonic()
    path = tempfile.mkdtemp(prefix=f"torture-{kind}-")
    idents = [ProcessIdentity.new(TENANT, LEDGER).to_plain() for _ in range(STREAMS)]
    acked: dict[str, int] = {}
    ctx = multiprocessing.get_context("fork")
    try:
        for _ in range(kills):
            receiver, sender = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_writer, args=(kind, path, idents, sender))
            child.start()
            sender.close()
            kill_at = None
            while True:
                if kill_at is not None and time.monotonic() >= kill_at:
                    break
                if not receiver.poll(0.01):
                    if not child.is_alive():
                        row.failures.append(f"writer died by itself (exit {child.exitcode})")
                        break
                    continue
                stream, sequence = receiver.recv()
                if stream == "started":
                    continue
                if kill_at is None:  # under load: kill somewhere in the next 20-300 ms
                    kill_at = time.monotonic() + rng.uniform(0.02, 0.3)
                acked[stream] = max(acked.get(stream, 0), sequence)
                row.operations += 1
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
            while receiver.poll(0):  # acknowledgements already in the pipe when it died
                try:
                    stream, sequence = receiver.recv()
                except EOFError:
                    break
                if stream != "started":
                    acked[stream] = max(acked.get(stream, 0), sequence)
                    row.operations += 1
            row.runs += 1
        row.failures += _in_child(_verify, path, idents, acked)
        row.notes = (
            f"{sum(acked.values())} events in {STREAMS} streams, an outbox row each, "
            f"snapshot every {SNAPSHOT_EVERY}"
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)
    row.seconds = time.monotonic() - started
    return row


# -- two OS processes on one stream -----------------------------------------------------------


def _hammer(path: str, ident: dict[str, Any], side: int, commands: int, conn: Connection) -> None:
    from mako_actors import VersionConflict
    from mako_actors.actors import LocalActorSystem
    from stores.lmdb import LmdbStore

    async def main() -> list[int]:
        acked: list[int] = []
        async with LocalActorSystem(LmdbStore(path), [Ledger], max_attempts=1000, close_store=True) as system:
            ref = system.resume(ProcessIdentity.model_validate(ident))

            async def one(amount: int) -> None:
                try:
                    await ref.execute(Record(amount=amount))
                except VersionConflict:
                    return
                acked.append(amount)

            for chunk in range(0, commands, 25):
                await asyncio.gather(*(one(side * 1_000_000 + i) for i in range(chunk, chunk + 25)))
        return acked

    conn.send(asyncio.run(main()))


def two_processes(commands: int) -> Row:
    row = Row("two OS processes on one stream")
    started = time.monotonic()
    path = tempfile.mkdtemp(prefix="torture-two-")
    ident = ProcessIdentity.new(TENANT, LEDGER).to_plain()
    ctx = multiprocessing.get_context("fork")
    try:
        pipes = []
        for side in (1, 2):
            receiver, sender = ctx.Pipe(duplex=False)
            ctx.Process(target=_hammer, args=(path, ident, side, commands, sender)).start()
            sender.close()
            pipes.append(receiver)
        acked = [amount for receiver in pipes for amount in receiver.recv()]
        stored = _in_child(_amounts, path, ident)
        row.runs, row.operations = 2, len(acked)
        if sorted(stored) != sorted(acked):
            row.failures.append(f"stored {len(stored)} != acknowledged {len(acked)}")
        if len(set(stored)) != len(stored):
            row.failures.append("a command stored twice")
        row.notes = f"{len(acked)} of {2 * commands} acknowledged (rest lost every retry), all stored once"
    finally:
        shutil.rmtree(path, ignore_errors=True)
    row.seconds = time.monotonic() - started
    return row


def _amounts(path: str, ident: dict[str, Any], conn: Connection) -> None:
    from stores.lmdb import LmdbStore

    async def read() -> list[int]:
        async with LmdbStore(path) as store:
            events = await store.load(StreamId(ident["stream_id"]))
        return [e.payload["amount"] for e in events]

    conn.send(asyncio.run(read()))


# -- map growth and disk full -----------------------------------------------------------------


def _grow(path: str, events: int, conn: Connection) -> None:
    from mako_actors.testing import envelope, identity
    from stores.lmdb import Durability, LmdbStore

    async def main() -> tuple[int, int, int]:
        # No fsync: the map's growth is under test here, not durability (the kills test that).
        async with LmdbStore(path, map_size=64 * 1024, durability=Durability.NO_SYNC) as store:
            idents = [identity() for _ in range(16)]

            async def write(ident: Any) -> None:
                for version in range(events // len(idents)):
                    await store.append(
                        ident.stream_id, ExpectedVersion.exact(version), [envelope(ident, blob="m" * 200)]
                    )

            await asyncio.gather(*(write(i) for i in idents))
            stored = sum([len(await store.load(i.stream_id)) for i in idents])
            return stored, store.stats.map_resizes, os.path.getsize(os.path.join(path, "data.mdb"))

    conn.send(asyncio.run(main()))


def map_growth(events: int) -> Row:
    row = Row("map growth from a 64 KiB map")
    started = time.monotonic()
    path = tempfile.mkdtemp(prefix="torture-map-")
    try:
        stored, resizes, size = _in_child(_grow, path, events)
        row.runs, row.operations = 1, stored
        if stored != events // 16 * 16:
            row.failures.append(f"stored {stored} of {events}")
        if resizes < 5:
            row.failures.append(f"only {resizes} map resizes")
        row.notes = f"{resizes} resizes, data file {size // 1024} KiB"
    finally:
        shutil.rmtree(path, ignore_errors=True)
    row.seconds = time.monotonic() - started
    return row


def _fill(path: str, mount: str, conn: Connection) -> None:
    from mako_actors.testing import envelope, identity
    from stores.lmdb import LmdbStore, StoreDiskFull

    async def main() -> tuple[int, int, str]:
        ident = identity()
        acked = 0
        error = ""
        async with LmdbStore(path, map_size=1 << 20) as store:
            try:
                while True:
                    await store.append(
                        ident.stream_id, ExpectedVersion.exact(acked), [envelope(ident, blob="d" * 20_000)]
                    )
                    acked += 1
            except StoreDiskFull as exc:
                error = type(exc).__name__
            subprocess.run(["mount", "-o", "remount,size=32m", mount], check=True)
            for _ in range(20):  # the store goes on once there is space again
                await store.append(ident.stream_id, ExpectedVersion.exact(acked), [envelope(ident)])
                acked += 1
        async with LmdbStore(path) as store:
            return acked, len(await store.load(ident.stream_id)), error

    conn.send(asyncio.run(main()))


def disk_full() -> Row:
    row = Row("disk full (4 MiB tmpfs)")
    started = time.monotonic()
    mount = tempfile.mkdtemp(prefix="torture-full-")
    command = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        row.notes = "skipped: cannot mount a tmpfs (needs root)"
        return row
    try:
        acked, stored, error = _in_child(_fill, os.path.join(mount, "store"), mount)
        row.runs, row.operations = 1, acked
        if error != "StoreDiskFull":
            row.failures.append(f"full disk reported as {error!r}")
        if stored != acked:
            row.failures.append(f"acknowledged {acked}, stored {stored}")
        row.notes = "StoreDiskFull, nothing acknowledged lost, writes resume after growing"
    finally:
        subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(mount, ignore_errors=True)
    row.seconds = time.monotonic() - started
    return row


# -- fuzzed interchanges through the inbound pipeline -----------------------------------------


def _seeds() -> list[bytes]:
    from mako_actors.gpke.synthetic import anmeldung

    samples = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "edifact"
    seeds = [
        p.read_bytes()
        for p in sorted(samples.rglob("*"))
        if p.is_file() and p.suffix in (".edi", ".txt") and not p.name.upper().startswith("LICENSE")
    ] if samples.is_dir() else []
    t0 = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    for i in range(20):
        seeds.append(
            anmeldung(
                lfn=LFN, nb="9900000002009", malo="51900000012", zuordnungsbeginn=t0 + timedelta(days=17 + i),
                ide_ref=f"LFNTX{i:06d}", control_ref=f"LFN{i:010d}", sent_at=t0,
            )
        )
    return seeds


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        kind = rng.randrange(8)
        at = rng.randrange(len(data))
        if kind == 0:
            data[at] = rng.randrange(256)
        elif kind == 1:
            del data[at : at + rng.randint(1, 30)]
        elif kind == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        elif kind == 3:
            end = data.find(b"'", at)
            data[at:at] = data[at : end + 1 if end >= 0 else at + 10]  # repeat a segment's tail
        elif kind == 4:
            data[at:at] = rng.choice([b"'", b"+", b":", b"?", b"\r\n", b"UNH+", b"UNT+", "²".encode()])
        elif kind == 5:
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == 6:
            data[at:at] = rng.choice([b"9" * 40, b"1" * 4400, b"A" * 15])
        else:
            start = data.find(b"'", at)
            end = data.find(b"'", start + 1)
            if 0 <= start < end:
                del data[start + 1 : end + 1]  # drop a whole segment
    return bytes(data)


async def _fuzz(count: int, batch: int, rng: random.Random, row: Row) -> None:
    from mako_actors.edifact import render_outbound
    from mako_actors.gpke import GpkeNbWorkflow
    from mako_actors.inbound import DirectHost, InboundPipeline
    from mako_actors.scheduler import VirtualClock
    from stores.lmdb import Durability, LmdbStore

    seeds = _seeds()
    path = tempfile.mkdtemp(prefix="torture-fuzz-")
    clock = VirtualClock(datetime(2025, 11, 13, 13, 30, tzinfo=UTC))
    unrenderable = 0
    outcomes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    try:
        async with LmdbStore(path, durability=Durability.NO_SYNC) as store:
            pipeline = InboundPipeline(
                store, DirectHost(store, [GpkeNbWorkflow()], clock), tenants=["9900000002009"], clock=clock
            )
            position, seen = 0, set()
            for done in range(0, count, batch):
                for _ in range(min(batch, count - done)):
                    raw = _mutate(rng.choice(seeds), rng)
                    clock.advance(timedelta(seconds=7))
                    try:
                        result = await pipeline.ingest(raw, clock())
                    except Exception as exc:  # ingest must never raise for bad input
                        row.failures.append(f"ingest raised {exc!r} for {raw[:80]!r}")
                        continue
                    outcomes[result.status] = outcomes.get(result.status, 0) + 1
                    row.operations += 1
                while page := await store.read_all(position, 5000):  # every new event decodes
                    expected = list(range(position + 1, position + len(page) + 1))
                    if [e.global_position for e in page] != expected:
                        row.failures.append(f"global position gap after {position}")
                    position = page[-1].global_position
                for message in await store.pending(10**7, FAR_FUTURE):
                    if message.message_id in seen:
                        continue
                    seen.add(message.message_id)
                    try:
                        render_outbound(message.message_type, message.payload)
                    except Exception as exc:
                        unrenderable += 1
                        why = " / ".join(str(exc).split("\n")[:3])[:160]
                        reasons[why] = reasons.get(why, 0) + 1
                row.runs += 1
            row.notes = (
                ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
                + f"; {len(seen)} answers, {unrenderable} unrenderable; {len(seeds)} seeds"
            )
            for why, times in sorted(reasons.items(), key=lambda item: -item[1])[:3]:
                row.failures.append(f"{times} answers decided that cannot be rendered: {why}")
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fuzz(count: int, rng: random.Random) -> Row:
    row = Row("fuzzed interchanges via InboundPipeline")
    started = time.monotonic()
    asyncio.run(_fuzz(count, 1000, rng, row))
    row.seconds = time.monotonic() - started
    return row


# -- Ray: a host killed mid-command -----------------------------------------------------------


async def _ray_kills(kills: int, row: Row) -> None:
    import ray

    from mako_actors.actors import CommandOutcomeUnknown, RayActorSystem
    from stores.lmdb import LmdbStore

    path = Path(tempfile.mkdtemp(prefix="torture-ray-"))
    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="mako-torture"
    )
    acked = 0
    try:
        async with RayActorSystem(path / "db", workflows=[Ledger], placement="hosted", hosts=2) as actors:
            ref = actors.spawn("ledger", TENANT, LEDGER)
            for _ in range(kills):
                in_flight = [asyncio.ensure_future(ref.execute(Record(amount=1))) for _ in range(20)]
                await asyncio.sleep(0.02)
                ray.kill(actors.host_for(ref.stream_id), no_restart=False)
                for outcome in await asyncio.gather(*in_flight, return_exceptions=True):
                    if not isinstance(outcome, BaseException):
                        acked += 1
                after = False
                for _ in range(300):
                    try:
                        await ref.execute(Record(amount=1))
                        acked += 1
                        after = True
                        break
                    except CommandOutcomeUnknown:
                        await asyncio.sleep(0.1)
                if not after:
                    row.failures.append("no command acknowledged after the kill")
                row.runs += 1
            count = await ref.event_count()
        async with LmdbStore(path / "db") as store:
            events = await store.load(ref.stream_id)
        if [e.sequence for e in events] != list(range(1, len(events) + 1)):
            row.failures.append("sequence gap")
        if count < acked or len(events) < acked:
            row.failures.append(f"acknowledged {acked}, stored {len(events)}")
        row.operations = acked
        row.notes = f"{acked} acknowledged, {len(events)} stored (unknown outcomes may be stored)"
    finally:
        ray.shutdown()
        shutil.rmtree(path, ignore_errors=True)


def ray_kills(kills: int) -> Row:
    row = Row("Ray host killed mid-command")
    started = time.monotonic()
    asyncio.run(_ray_kills(kills, row))
    row.seconds = time.monotonic() - started
    return row


# -- the table --------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = f"| {'scenario':<42} | {'runs':>5} | {'acked ops':>9} | {'result':<6} | {'seconds':>7} | notes"
    lines = [head, "|" + "|".join("-" * width for width in (44, 7, 11, 8, 9, 7))]
    for r in rows:
        result = "ok" if r.ok else "FAIL"
        if not r.runs and r.ok:
            result = "skip"
        lines.append(
            f"| {r.scenario:<42} | {r.runs:>5} | {r.operations:>9} | {result:<6} | {r.seconds:>7.1f} "
            f"| {r.notes}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make torture", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs per runtime (default 100)")
    parser.add_argument("--fuzz", type=int, default=100_000, help="fuzzed interchanges (default 100,000)")
    parser.add_argument("--ray-kills", type=int, default=5, help="Ray host kills (0: skip)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the pipeline logs every rejection; the table says enough
    rng = random.Random(args.seed)
    scenarios: list[Callable[[], Row]] = [
        lambda: sigkill("process", args.kills, rng),
        lambda: sigkill("actors", args.kills, rng),
        lambda: two_processes(500),
        lambda: map_growth(20_000),
        disk_full,
        lambda: fuzz(args.fuzz, rng),
    ]
    if args.ray_kills:
        scenarios.append(lambda: ray_kills(args.ray_kills))
    rows: list[Row] = []
    for scenario in scenarios:
        try:
            row = scenario()
        except Exception as exc:  # a crashed scenario is a failed row; the others still count
            row = Row(getattr(scenario, "__name__", "scenario"), failures=[f"crashed: {exc!r}"])
        rows.append(row)
        print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)  # progress, row by row
    print(table(rows))
    for row in rows:
        for failure in row.failures[:10]:
            print(f"FAIL {row.scenario}: {failure}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
