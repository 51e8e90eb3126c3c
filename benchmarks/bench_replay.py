"""Batch re-processing throughput: messages/s for 1 and 2 workers, pipelined and sequential.

Run from the repository root: ``.venv/bin/python benchmarks/bench_replay.py [--processes N]
[--archive DIR] [--baseline OLD_WORKTREE]``.

Workload: ``generate-archive`` traffic (default 12,000 supplier changes over 10 days: >= 20,000
UTILMD messages with bundles, duplicates, late and missing LFA answers, competing Anmeldungen
and broken files), replayed end to end (read, parse, route, decide, commit, Fristen on the
virtual clock; the store synced at the end) into a fresh store per configuration. Each row is
one run (``--repeat`` for the best of several) in a fresh interpreter, as ``mako-actors replay``
runs (``--in-process``: all in this one); all rows of one invocation see the same machine load,
so compare ratios; ``cpu µs/msg`` (CPU of this process and its worker processes per
message) is the figure least disturbed by other load on the machine. Every configuration must
give the same decision digest; the script exits 1 if not. ``--baseline DIR`` also replays the
archive with another worktree's code (the code before this work; it needs its own ``.venv``)
in the same harness, pipelined with one worker, in a separate process right after this one's
rows, and prints both side by side. The last line also gives the machine's own ceiling for two
processes (``parallel_ceiling``: a CPU-bound loop alone vs. two at once, before and after the
rows): on a VM whose two cores are not two idle cores of their own it is well below 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mako_actors.archive import ArchiveSpec, generate_archive  # noqa: E402
from mako_actors.replay import ReplayReport, load_master_data, replay_directory  # noqa: E402

NB = "9900000002009"
CONFIGS = ((1, False), (1, True), (2, False), (2, True))


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _spin(rounds: int) -> None:
    """A fixed CPU-bound pure-Python loop (dict, string and int work, as a replay does)."""
    table: dict[str, int] = {}
    for i in range(rounds):
        key = f"k{i & 0xFFF}"
        table[key] = table.get(key, 0) + len(key) * i


def parallel_ceiling(workers: int = 2, rounds: int = 2_000_000) -> float:
    """How much faster ``workers`` processes can be than one on this machine right now.

    The same loop once alone, then once in each of ``workers`` processes at the same time:
    ``workers × alone / together``. 2.0 on two idle cores of their own; less where the VM's
    cores share a physical core or a host with other load. The 2-worker replay row cannot beat it.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")

    def timed(count: int) -> float:
        jobs = [context.Process(target=_spin, args=(rounds,)) for _ in range(count)]
        started = time.perf_counter()
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
        return time.perf_counter() - started

    return workers * timed(1) / timed(workers)


def replay(archive: Path, store: Path, workers: int, sequential: bool) -> dict[str, Any]:
    """One row in this process (``--in-process``): it inherits what the rows before it left."""
    master = load_master_data(archive / "master.json")
    cpu = _cpu()
    report: ReplayReport = asyncio.run(
        replay_directory(
            archive, store, tenants=[NB], master_data=master, workers=workers, sequential=sequential
        )
    )
    return {
        "messages": report.messages,
        "duration_s": report.duration_s,
        "cpu_s": _cpu() - cpu,
        "decision_digest": report.decision_digest,
    }


# One row in a fresh interpreter, as ``mako-actors replay`` runs: the rows before it leave nothing
# behind (a process that has replayed before forks its workers from a fragmented ~300 MB heap,
# and they ran ~10-25 % slower).
_ROW = """
import asyncio, gc, json, logging, resource, sys
from pathlib import Path
from mako_actors.replay import load_master_data, replay_directory
logging.disable(logging.WARNING)
gc.set_threshold(int(sys.argv[3]) or 700)
archive = Path(sys.argv[1])
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
master = load_master_data(archive / "master.json")
start = cpu()
report = asyncio.run(replay_directory(archive, Path(sys.argv[2]), tenants=[sys.argv[4]], master_data=master,
                                      workers=int(sys.argv[5]), sequential=sys.argv[6] == "1"))
print(json.dumps({"messages": report.messages, "duration_s": report.duration_s, "cpu_s": cpu() - start,
                  "decision_digest": report.decision_digest}))
"""


def fresh_row(
    archive: Path, store: Path, workers: int, sequential: bool, gc_threshold: int
) -> dict[str, Any]:
    """One row replayed by a new interpreter on this checkout's code; its messages, seconds, CPU."""
    argv = [sys.executable, "-c", _ROW, str(archive), str(store), str(gc_threshold), NB, str(workers)]
    argv.append("1" if sequential else "0")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def baseline(worktree: Path, archive: Path, store: Path, gc_threshold: int) -> dict[str, float | str]:
    """The other worktree's pipelined one-worker replay of ``archive``, in this harness (``_ROW``
    run by that worktree's python with that worktree first on the path)."""
    python = str(worktree / ".venv/bin/python")
    argv = [python, "-c", _ROW, str(archive), str(store), str(gc_threshold), NB, "1", "0"]
    env = {**os.environ, "PYTHONPATH": str(worktree)}
    done = subprocess.run(argv, cwd=worktree, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=12_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--archive", type=Path, help="use (or create) the archive here")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--gc-threshold", type=int, default=200_000, help="gen-0 GC threshold (0: default; as the CLI)"
    )
    parser.add_argument("--baseline", type=Path, help="another worktree to time on the same archive")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="replay every row in this process (the rounds before 2026-12-04): later rows inherit its heap",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every rejected file logs a line; not what is measured
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        archive = args.archive or Path(tmp) / "archive"
        if not (archive / "manifest.csv").exists():
            started = time.perf_counter()
            summary = generate_archive(archive, ArchiveSpec(days=args.days, processes=args.processes, seed=1))
            print(
                f"archive: {summary.files} files, {summary.messages} messages, "
                f"generated in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        rows: list[dict[str, Any]] = []
        ceiling_before = parallel_ceiling()
        print(
            f"{'workers':>7} {'mode':>10} {'messages':>9} {'wall s':>8} {'msg/s':>8} {'cpu s':>7} "
            f"{'cpu µs/msg':>10}  digest"
        )
        for workers, sequential in CONFIGS:
            best: dict[str, Any] | None = None
            for attempt in range(args.repeat):
                store = Path(tmp) / f"store-{workers}-{sequential}-{attempt}"
                if args.in_process:
                    result = replay(archive, store, workers, sequential)
                else:
                    result = fresh_row(archive, store, workers, sequential, args.gc_threshold)
                if best is None or result["duration_s"] < best["duration_s"]:
                    best = result
            assert best is not None
            messages, seconds, cpu = int(best["messages"]), float(best["duration_s"]), float(best["cpu_s"])
            mode = "sequential" if sequential else "pipelined"
            print(
                f"{workers:>7} {mode:>10} {messages:>9} {seconds:>8.1f} "
                f"{messages / seconds:>8.0f} {cpu:>7.1f} {cpu / messages * 1e6:>10.0f}  "
                f"{best['decision_digest'][:16]}",
                flush=True,
            )
            rows.append(
                {
                    "workers": workers,
                    "mode": mode,
                    "messages": messages,
                    "duration_s": round(seconds, 2),
                    "messages_per_s": round(messages / seconds, 1),
                    "cpu_s": round(cpu, 2),
                    "cpu_us_per_message": round(cpu / messages * 1e6),
                    "decision_digest": best["decision_digest"],
                }
            )
        if args.baseline is not None:
            old = baseline(args.baseline, archive, Path(tmp) / "store-baseline", args.gc_threshold)
            messages, seconds, cpu = int(old["messages"]), float(old["duration_s"]), float(old["cpu_s"])
            digest = str(old["decision_digest"])[:16]
            print(
                f"baseline {args.baseline} (1 x pipelined): {seconds:.1f} s, {messages / seconds:.0f} msg/s, "
                f"{cpu:.1f} s CPU = {cpu / messages * 1e6:.0f} µs/msg, digest {digest}"
            )
            rate, per_message = float(rows[0]["messages_per_s"]), float(rows[0]["cpu_us_per_message"])
            print(
                f"  now vs baseline: {rate / (messages / seconds):.2f}x msg/s, "
                f"{cpu / messages * 1e6 / per_message:.2f}x less CPU per message"
            )
            rows.append({"baseline": str(args.baseline), **old})
        base = rows[0]["messages_per_s"]
        for row in rows[:4]:
            ratio = row["messages_per_s"] / base
            print(f"  {row['workers']} x {row['mode']}: {ratio:.2f}x one pipelined worker")
        ceiling = (ceiling_before, parallel_ceiling())
        print(
            f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
            f"2 processes at most {ceiling[0]:.2f}x / {ceiling[1]:.2f}x one (a CPU-bound loop alone "
            f"vs. two at once, before / after the rows)"
        )
        rows.append({"parallel_ceiling": [round(each, 2) for each in ceiling]})
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        digests = {row["decision_digest"] for row in rows if "decision_digest" in row}
        if len(digests) != 1:
            print(f"DECISION DIGESTS DIFFER: {digests}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
