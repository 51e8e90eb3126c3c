"""Benchmark: CPU per file of ``try_parse_interchange`` over every ``*.edi`` of an archive.

Usage: ``PYTHONPATH=. python benchmarks/bench_parse_archive.py ARCHIVE [--repeat 5]``, e.g. on
``mako-actors generate-archive`` output. Prints files, messages and the best of ``--repeat``
passes as CPU µs per file and per message (``time.process_time``, so other load on the machine
matters less than for wall time). To compare two checkouts, run it with each one's
``PYTHONPATH`` alternately on the same machine and compare the ratio, not absolute figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mako_actors.edifact import Interchange, try_parse_interchange


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archive", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    files = [p.read_bytes() for p in sorted(args.archive.glob("*.edi"))]
    results = [try_parse_interchange(raw) for raw in files]
    parsed = [r for r in results if isinstance(r, Interchange)]
    messages = sum(len(r.messages) for r in parsed)
    best = float("inf")
    for _ in range(args.repeat):
        start = time.process_time()
        for raw in files:
            try_parse_interchange(raw)
        best = min(best, time.process_time() - start)
    rejected = len(files) - len(parsed)
    print(
        f"{len(files)} files ({rejected} rejected), {messages} messages: best {best:.3f} s CPU"
        f" = {best / len(files) * 1e6:.1f} µs/file, {best / max(messages, 1) * 1e6:.1f} µs/message"
    )


if __name__ == "__main__":
    main()
