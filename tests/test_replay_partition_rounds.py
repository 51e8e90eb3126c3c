"""``replay --workers N`` reads the archive in two rounds (``mako_actors._workers``): the facts of
1/N of the files per worker (``read_facts``), then every worker's walk over all of them
(``Partitioner.place``). Wherever the rounds' boundaries fall, each worker gets exactly the
pieces one reading of the whole archive gives it; a verdict the facts lack (a receipt key
repeated across two workers' files) is judged when the walk needs it; real worker processes
report an unreadable file once and decide like one worker.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mako_actors._partition import (
    FileFacts,
    Partitioner,
    Scan,
    pieces_of,
    read_facts,
    rejected_as_a_whole,
    split_by_partition,
)
from mako_actors._workers import replay_partitions
from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.replay import ArchivedInterchange, _Options, _replay_items, archive, load_master_data
from stores.lmdb import Durability
from tests.test_replay_partitions import NB, received
from tests.test_replay_whole_rejections import _split_bundles, build_defect_archive, bundles_archive, primed

File = tuple[str, bytes, datetime]


def _files(src: Path) -> list[File]:
    return [(item.path.name, item.path.read_bytes(), item.received_at) for item in archive(src)]


def _facts_in_runs(files: list[File], bounds: list[int]) -> list[FileFacts]:
    """Round 1: ``read_facts`` on each run of ``files`` between ``bounds``, through pickle as the
    workers hand them on."""
    runs = zip([0, *bounds], [*bounds, len(files)], strict=True)
    shares = [pickle.dumps(read_facts(files[start:end], [NB])) for start, end in runs]
    return [each for share in shares for each in pickle.loads(share)]


def _walk(n: int, k: int, files: list[File], facts: list[FileFacts], judged: list[str]) -> list[bytes | None]:
    """Round 2 for worker ``k``: its piece of each file (None: nothing); ``judged`` gets the names
    of the files the walk had to judge itself."""
    partitioner = Partitioner(n, [NB], k)
    mine: list[bytes | None] = []
    for (name, raw, at), each in zip(files, facts, strict=True):

        def judge(name: str = name, raw: bytes = raw, at: datetime = at) -> bool:
            judged.append(name)
            return rejected_as_a_whole(raw, at, [NB])

        mine.append(pieces_of(raw, each, partitioner.place(each, judge)).get(k))
    return mine


def _defects(src: Path) -> None:
    generate_archive(src, ArchiveSpec(processes=300, defects=0.1, seed=3))


def _whole_rejections(src: Path) -> None:
    build_defect_archive(src)


@pytest.mark.parametrize(("build", "walk_judges"), [(_defects, True), (_whole_rejections, False)])
def test_every_worker_gets_the_pieces_of_one_reading_wherever_the_rounds_cut_the_archive(
    tmp_path: Path, build: Callable[[Path], None], walk_judges: bool
) -> None:
    """``walk_judges``: the archive holds a retransmission of a file that cannot be cut (a
    duplicate of one message), whose verdict only the walk asks for when each file is read alone;
    the other archive's retransmissions are all of bundles that could be cut, judged in round 1."""
    build(tmp_path / "in")
    files = _files(tmp_path / "in")
    for n in (2, 3):
        expected = split_by_partition(n, files, [NB])
        size = -(-len(files) // n)
        layouts = {
            "the workers' runs": [k * size for k in range(1, n)],
            "a run per file": list(range(1, len(files))),
        }
        for layout, bounds in layouts.items():
            facts = _facts_in_runs(files, bounds)
            judged: list[str] = []
            for k in range(n):
                assert _walk(n, k, files, facts, judged) == [p.get(k) for p in expected], (n, k, layout)
            if layout == "a run per file":  # no run sees a key twice: the walk judges what needs it
                assert bool(judged) == walk_judges, n
    # The archives hold what makes the walk judge: retransmissions and conflicts under one key.
    assert any(len(p) > 1 for p in expected)


def test_a_verdict_missing_from_the_facts_is_judged_when_the_walk_needs_it(tmp_path: Path) -> None:
    """A bundle's truncated bytes (unreadable, not cut, so not judged in round 1) and then its
    full bytes under the same key, each read by another worker: the walk must learn that the
    truncated ones were rejected to cut the full ones; the other way round, the truncated bytes
    after the accepted bundle are a conflict at its home, with nothing left to judge. The files
    received before the bundle come first (they place its MaLos and requests apart)."""
    src = tmp_path / "in"
    bundles_archive(src)
    (path,) = _split_bundles(src, 1)
    before = _files(src)
    before = before[: [name for name, _, _ in before].index(path.name)]
    ours = ("truncated.edi", "good.edi")
    good = path.read_bytes()
    truncated = good[: len(good) // 2]
    at = received(src)[path.name]
    later = at + timedelta(minutes=10)
    for n in (2, 3):
        files = [*before, ("truncated.edi", truncated, at), ("good.edi", good, later)]
        facts = _facts_in_runs(files, [len(files) - 1])
        assert [f.rejected for f in facts[-2:]] == [None, False]  # likely to be cut: judged in round 1
        judged: list[str] = []
        pieces = [_walk(n, k, files, facts, judged) for k in range(n)]
        # each worker asks once, when the bundle follows
        assert [name for name in judged if name in ours] == ["truncated.edi"] * n
        expected = split_by_partition(n, files, [NB])
        assert len(expected[-1]) > 1  # cut: the truncated bytes before were rejected
        assert pieces == [[p.get(k) for p in expected] for k in range(n)]

        files = [*before, ("good.edi", good, at), ("truncated.edi", truncated, later)]
        facts = _facts_in_runs(files, [len(files) - 1])
        judged = []
        pieces = [_walk(n, k, files, facts, judged) for k in range(n)]
        assert [name for name in judged if name in ours] == []
        message = Scan(good).messages[0]
        cut = primed(n, src, path).split("good.edi", good, at)
        (first,) = [part for part, piece in cut.items() if good[message.start : message.end] in piece]
        assert [k for k in range(n) if pieces[k][-1] is not None] == [first]
        assert pieces[first][-1] == truncated  # whole, to the home of the bundle's first message


async def test_worker_processes_report_an_unreadable_file_once_and_decide_like_one(tmp_path: Path) -> None:
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=60, defects=0.1, seed=5))
    items = archive(src)
    (src / "x.edi").symlink_to("/proc/self/mem")  # a read fails with EIO, also for root
    items.insert(len(items) // 2, ArchivedInterchange(src / "x.edi", items[len(items) // 2].received_at))
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, False, 512)
    one, _ = await _replay_items(items, tmp_path / "one", options, None)
    two = await replay_partitions(items, tmp_path / "two", options, 2)  # spawned processes
    assert one.failures == two.failures == ["x.edi: cannot read: Input/output error"]
    assert two.decision_digest == one.decision_digest
    assert (two.messages, two.files) == (one.messages, one.files)
