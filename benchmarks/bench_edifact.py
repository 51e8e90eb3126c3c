"""Benchmark: our EDIFACT tokenizer/parser against pydifact on the same files, in one run.

Usage: ``PYTHONPATH=. python benchmarks/bench_edifact.py [--messages 2000] [--repeat 3]``.
Corpus: the external samples (if ``../shared/samples/edifact`` exists) plus generated UTILMD
interchanges (one message each, every third with release characters and umlauts). Prints
messages/s, MB/s and the ratio per implementation; the best of ``--repeat`` runs counts.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from mako_actors.edifact import decode, synthetic_utilmd, tokenize, try_parse_interchange

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "edifact"


def corpus(messages: int) -> list[bytes]:
    files: list[bytes] = []
    if SAMPLES.is_dir():
        files += [
            p.read_bytes()
            for p in sorted(SAMPLES.rglob("*"))
            if p.suffix in (".edi", ".txt") and not p.name.upper().startswith("LICENSE")
        ]
    files += [
        synthetic_utilmd(seed=i, tricky=i % 3 == 0, transactions=1 + i % 2,
                         line_break="\n" if i % 2 else "")
        for i in range(messages)
    ]
    return files


def count_messages(files: list[bytes]) -> int:
    return sum(sum(1 for s in tokenize(d.text, d.delimiters) if s.tag == "UNH")
               for d in map(decode, files))


def ours_tokenize(files: list[bytes]) -> None:
    for raw in files:
        d = decode(raw)
        tokenize(d.text, d.delimiters)


def ours_parse(files: list[bytes]) -> None:
    for raw in files:
        # Samples with known defects come back as EdifactError after a full tokenize.
        try_parse_interchange(raw)


def pydifact_parse(files: list[bytes]) -> None:
    from pydifact.parser import Parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for raw in files:
            d = decode(raw)
            text = d.delimiters.una + d.text if d.una_present else d.text
            list(Parser().parse(text))


def best_of(fn: Callable[[list[bytes]], None], files: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(files)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    files = corpus(args.messages)
    n_msgs = count_messages(files)
    size = sum(len(f) for f in files) / 1e6
    print(f"corpus: {len(files)} interchanges, {n_msgs} messages, {size:.2f} MB")
    rows = [
        ("pydifact Parser (tokenize)", best_of(pydifact_parse, files, max(1, args.repeat - 2))),
        ("ours decode+tokenize", best_of(ours_tokenize, files, args.repeat)),
        ("ours parse_interchange (+checks, models)", best_of(ours_parse, files, args.repeat)),
    ]
    base = rows[0][1]
    print(f"{'implementation':<42} {'seconds':>8} {'msgs/s':>10} {'MB/s':>8} {'x pydifact':>10}")
    for name, secs in rows:
        print(f"{name:<42} {secs:8.3f} {n_msgs / secs:10.0f} {size / secs:8.2f} {base / secs:10.1f}")


if __name__ == "__main__":
    main()
