"""Ray hosted (c) against LocalActorSystem (b) and ``eventsourcing`` (d), with CPU per command.

Run from the repository root: ``.venv/bin/python benchmarks/bench_ray_hosted.py [--sizes 100,10000]``.
Same ledger workload and driver as ``bench_actors.py`` (imported from there): commands
round-robin over N processes from 500 concurrent callers, every commit fsynced. For (c) it also
reports the CPU time per command of the driver and of the two host actors (from ``/proc`` of
their OS processes) and the part of it spent in the garbage collector (``gc.callbacks``), with
``--threads`` the CPU per command of each busy thread (event loop, LMDB writer, Ray's own), and
with ``--profile`` the top functions of the driver and of one host (``cProfile``), with
``--floor`` first the CPU a bare async Ray actor call costs on both ends (what every batched
call costs before our code runs).
``--option max_inflight_calls=2`` passes a keyword to ``RayActorSystem``; commands per Ray call
are reported when the system counts its calls (``calls_sent``). It uses only the
public ``RayActorSystem`` API and Ray's ``__ray_call__``, so the same script measures an older
checkout (``PYTHONPATH=<checkout> <its python> bench_ray_hosted.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_ROOT", HERE.parent)).resolve()
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_actors import LEDGER_ID, TENANT, bench_eventsourcing, bench_local, drive  # noqa: E402

from tests.workflows import Ledger, Record  # noqa: E402


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_of(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of process ``pid``, by thread name (+ ``#tid`` if busy)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                text = stat.read()
        except FileNotFoundError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if used > 0.5:  # one of the few busy threads: on its own
            name = f"{name}#{tid}"
        out[name] = out.get(name, 0.0) + used
    return out


def _host_pid(_host: Any) -> int:
    return os.getpid()


def _host_heap(_host: Any, start: bool) -> int:
    """Start tracing the host's Python heap (``start``), or stop and return the bytes traced."""
    import gc
    import tracemalloc

    gc.collect()
    if start:
        tracemalloc.start()
        return 0
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return size


async def hosted_memory(system: Any, refs: list[Any]) -> tuple[float, float]:
    """Bytes per live hosted process (heap, RSS), measured as ``bench_actors`` does locally.

    Every process is passivated, then all are re-activated from the store (a state read each,
    in batches as the callers send them): the memory the hosts gain is the live actors'
    (actor, identity, state, table entries), not the store's growth during a write load.
    """
    hosts = system.host_handles()
    await system.passivate_idle(0)
    await asyncio.gather(*(h.__ray_call__.remote(_host_heap, True) for h in hosts))
    rss = sum(await system.rss_bytes())
    for start in range(0, len(refs), 1000):
        await asyncio.gather(*(r.state() for r in refs[start : start + 1000]))
    rss = sum(await system.rss_bytes()) - rss
    heap = sum(await asyncio.gather(*(h.__ray_call__.remote(_host_heap, False) for h in hosts)))
    live = (await system.get_stats()).live
    return heap / live, rss / live


class GcMeter:
    """CPU time spent in the garbage collector of this process (all generations) while on."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._start
            self.collections[info["generation"]] += 1

    def on(self) -> None:
        import gc

        gc.callbacks.append(self)

    def off(self) -> tuple[float, list[int]]:
        import gc

        gc.callbacks.remove(self)
        return self.seconds, self.collections


def _host_gc(_host: Any, start: bool) -> tuple[float, list[int]]:
    """Start (``start``) or stop metering the host's garbage collector; (CPU seconds, collections)."""
    if start:
        _host.bench_gc = GcMeter()
        _host.bench_gc.on()
        return 0.0, [0, 0, 0]
    result: tuple[float, list[int]] = _host.bench_gc.off()
    return result


def _running_loop() -> asyncio.AbstractEventLoop:
    """The event loop running in one of this process's threads (found on the threads' stacks)."""
    import sys

    for frame in sys._current_frames().values():
        at: Any = frame
        while at is not None:
            candidate = at.f_locals.get("self")
            if isinstance(candidate, asyncio.AbstractEventLoop) and candidate.is_running():
                return candidate
            at = at.f_back
    raise RuntimeError("no running event loop in this process")


def _host_profile(_host: Any, start: bool) -> str:
    """Start (``start``) or stop a cProfile of the host's event-loop thread; the top entries.

    ``__ray_call__`` runs outside the actor's event-loop thread, so the profiler is switched on
    and off by a callback on that loop (found once on the threads' stacks). State is kept on the host object:
    this function is pickled by value, its module globals are not shared between calls.
    """
    import threading

    loop = getattr(_host, "bench_loop", None)
    if loop is None:
        loop = _host.bench_loop = _running_loop()
    done = threading.Event()

    def switch() -> None:
        if start:
            _host.bench_profile = cProfile.Profile()
            _host.bench_profile.enable()
        else:
            _host.bench_profile.disable()
        done.set()

    loop.call_soon_threadsafe(switch)
    done.wait()
    if start:
        return ""
    out = io.StringIO()
    pstats.Stats(_host.bench_profile, stream=out).sort_stats("tottime").print_stats(30)
    return out.getvalue()


async def ray_floor(calls: int = 2000, size: int = 20_000) -> tuple[float, float]:
    """CPU µs per call of a bare async Ray actor method (bytes in, the same bytes back), driver
    and actor, ``calls`` calls one after the other: what any batched call costs before our code."""
    import ray

    @ray.remote(num_cpus=0, max_concurrency=1000)
    class Echo:
        async def echo(self, data: bytes) -> bytes:
            return data

        def pid(self) -> int:
            return os.getpid()

    echo = Echo.remote()  # type: ignore[attr-defined]
    pid = await echo.pid.remote()
    payload = b"x" * size
    for _ in range(200):
        await echo.echo.remote(payload)
    actor_cpu, driver_cpu = _cpu_of(pid), time.process_time()
    for _ in range(calls):
        await echo.echo.remote(payload)
    driver = (time.process_time() - driver_cpu) / calls * 1e6
    actor = (_cpu_of(pid) - actor_cpu) / calls * 1e6
    ray.kill(echo)
    return driver, actor


async def bench_ray(
    path: Path, n: int, total: int, outbox: bool, profile: bool, options: dict[str, Any]
) -> dict[str, Any]:
    from mako_actors.actors import RayActorSystem

    prefix = f"bench{n}-{time.time_ns()}"
    async with RayActorSystem(path, workflows=[Ledger], hosts=2, name_prefix=prefix, **options) as system:
        refs = [system.spawn("ledger", TENANT, LEDGER_ID) for _ in range(n)]
        await asyncio.gather(*(system.spawn("ledger", TENANT, LEDGER_ID).execute(Record(amount=1))
                               for _ in range(20)))  # start the hosts, warm up
        hosts = system.host_handles()
        pids = [await h.__ray_call__.remote(_host_pid) for h in hosts]
        rss_before = sum(await system.rss_bytes())
        if profile:
            await hosts[0].__ray_call__.remote(_host_profile, True)
            driver_prof = cProfile.Profile()
            driver_prof.enable()
        await asyncio.gather(*(h.__ray_call__.remote(_host_gc, True) for h in hosts))
        driver_gc = GcMeter()
        driver_gc.on()
        host_cpu = [_cpu_of(p) for p in pids]
        threads = [_threads_of(p) for p in pids] + [_threads_of(os.getpid())]
        calls = getattr(system, "calls_sent", 0)  # an older checkout may not count them
        driver_cpu = time.process_time()
        seconds = await drive(refs, total, outbox)
        driver_cpu = time.process_time() - driver_cpu
        calls = getattr(system, "calls_sent", 0) - calls
        host_cpu = [_cpu_of(p) - c for p, c in zip(pids, host_cpu, strict=True)]
        by_thread: dict[str, float] = {}
        for k, (pid, before) in enumerate(zip([*pids, os.getpid()], threads, strict=True)):
            side = "driver" if k == len(pids) else "hosts"
            for name, used in _threads_of(pid).items():
                key = f"{side}:{name}"
                by_thread[key] = by_thread.get(key, 0.0) + used - before.get(name, 0.0)
        driver_gc_s, driver_collections = driver_gc.off()
        host_gc = await asyncio.gather(*(h.__ray_call__.remote(_host_gc, False) for h in hosts))
        report = ""
        if profile:
            driver_prof.disable()
            out = io.StringIO()
            pstats.Stats(driver_prof, stream=out).sort_stats("tottime").print_stats(25)
            report = "DRIVER\n" + out.getvalue()
            report += "HOST 0\n" + await hosts[0].__ray_call__.remote(_host_profile, False)
        rss_after = sum(await system.rss_bytes())
        live = (await system.get_stats()).live
        heap_live, rss_live = await hosted_memory(system, refs) if n >= 1000 else (0.0, 0.0)
    return {
        "heap_live": heap_live,
        "rss_live": rss_live,
        "rate": total / seconds,
        "per_call": total / calls if calls else 0.0,
        "driver_us": driver_cpu / total * 1e6,
        "host_us": sum(host_cpu) / total * 1e6,
        "driver_gc_us": driver_gc_s / total * 1e6,
        "threads": {k: v / total * 1e6 for k, v in sorted(by_thread.items()) if v / total * 1e6 >= 1},
        "driver_gc_full": driver_collections[2],
        "host_gc_us": sum(g[0] for g in host_gc) / total * 1e6,
        "host_gc_full": sum(g[1][2] for g in host_gc),
        "rss_per_live": (rss_after - rss_before) / max(1, live),
        "profile": report,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,10000", metavar="N,N,...")
    parser.add_argument("--commands", type=int, default=20000, help="commands for (b) and (c)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of (c) per N (each reported)")
    parser.add_argument("--outbox", action="store_true", help="every command also emits an outbox message")
    parser.add_argument("--profile", action="store_true", help="cProfile the driver and one host")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=INT",
                        help="a RayActorSystem keyword for (c), e.g. max_inflight_calls=2")
    parser.add_argument("--threads", action="store_true", help="CPU per command by thread name")
    parser.add_argument("--skip-local", action="store_true", help="(c) only")
    parser.add_argument("--floor", action="store_true",
                        help="also the CPU of a bare async Ray actor call (driver and actor), per call")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    options = {k: int(v) for k, v in (o.split("=", 1) for o in args.option)}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        local: dict[int, tuple[float, float, float]] = {}
        if not args.skip_local:
            for n in sizes:
                b, _, b_cpu = await bench_local(base / f"b{n}", n, max(args.commands, n), args.outbox)
                d = bench_eventsourcing(base / f"d{n}.sqlite", n, 2000, args.outbox)
                local[n] = (b, b_cpu, d)
                print(f"N={n}: b={b:,.0f}/s ({b_cpu:.0f} µs CPU/cmd)  d={d:,.0f}/s", flush=True)
        import ray

        os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 namespace="bench-ray-hosted")
        try:
            if args.floor:
                driver, actor = await ray_floor()
                print(f"Ray floor: a bare async actor call (20 kB each way) costs {driver:.0f} µs CPU in "
                      f"the driver and {actor:.0f} µs in the actor", flush=True)
            for n in sizes:
                for k in range(args.repeat):
                    total = max(args.commands, n)
                    r = await bench_ray(base / f"c{n}-{k}", n, total, args.outbox, args.profile, options)
                    line = (f"N={n}: c={r['rate']:,.0f}/s  CPU/cmd driver {r['driver_us']:.0f} µs, "
                            f"hosts {r['host_us']:.0f} µs (GC: driver {r['driver_gc_us']:.0f} µs, "
                            f"{r['driver_gc_full']} full, hosts "
                            f"{r['host_gc_us']:.0f} µs, {r['host_gc_full']} full)  "
                            f"RSS delta during load/live "
                            f"{r['rss_per_live'] / 1024:.1f} KiB")
                    if r["per_call"]:
                        line += f"  {r['per_call']:.0f} cmds/call"
                    if r["rss_live"]:
                        line += (f"  re-activated: heap {r['heap_live'] / 1024:.2f} KiB, "
                                 f"RSS {r['rss_live'] / 1024:.2f} KiB per live process")
                    if n in local:
                        b, _, d = local[n]
                        line += f"  c/b={r['rate'] / b:.2f}  c/d={r['rate'] / d:.1f}"
                    print(line, flush=True)
                    if args.threads:
                        busy = ", ".join(f"{k} {v:.0f}" for k, v in r["threads"].items())
                        print(f"  CPU µs/cmd by thread: {busy}", flush=True)
                    if r["profile"]:
                        print(r["profile"], flush=True)
        finally:
            ray.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
