"""``LmdbStore.commit_many_now``: a batch job's commits in one transaction on its own thread."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mako_actors import Commit, ExpectedVersion, StoreError, VersionConflict
from mako_actors.testing import T0, envelope, identity, outbox_row
from stores.lmdb import LmdbStore


class _Unencodable:
    """Not msgpack-able: the commit carrying it fails while being written."""


async def test_commit_many_now_writes_one_transaction_and_fails_a_bad_commit_alone(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        ident, other, bad = identity(), identity(), identity()
        row = outbox_row(bad, envelope(bad).event_id, T0)
        commits = [
            Commit(stream_id=ident.stream_id, expected=ExpectedVersion.exact(v), events=[envelope(ident)])
            for v in (0, 1, 1)
        ] + [
            Commit(
                stream_id=bad.stream_id,
                expected=ExpectedVersion.NO_STREAM,
                events=[envelope(bad)],
                outbox=[row.model_copy(update={"payload": {"bad": _Unencodable()}})],
            ),
            Commit(stream_id=other.stream_id, expected=ExpectedVersion.NO_STREAM, events=[envelope(other)]),
        ]
        before = store.stats.transactions
        results = store.commit_many_now(commits)
        assert [type(r) for r in results][2:4] == [VersionConflict, StoreError]
        assert store.stats.transactions - before == 1
        assert [e.sequence for e in await store.load(ident.stream_id)] == [1, 2]
        assert await store.stream_version(bad.stream_id) == 0 and await store.outbox_count() == 0
        assert [e.global_position for e in await store.read_all(0, 100)] == [1, 2, 3]
        # Writes queued to the writer thread and inline ones take turns, never interleave.
        queued = await store.append(other.stream_id, ExpectedVersion.exact(1), [envelope(other)])
        (last,) = store.commit_many_now(
            [Commit(stream_id=other.stream_id, expected=ExpectedVersion.exact(2), events=[envelope(other)])]
        )
        assert queued[0].sequence == 2
        assert not isinstance(last, BaseException) and last.events[0].sequence == 3
        assert store.stats.commits >= 5


async def test_inline_commits_and_the_writer_thread_grow_the_map_without_failing_each_other(
    tmp_path: Path,
) -> None:
    """A replay commits on its loop's thread while the writer thread writes its dead letters: a
    map resize by one of them while the other's transaction was open failed that transaction
    ("mdb_txn_begin: Invalid argument", seen once in three replays of a 20,000-message archive)."""
    async with LmdbStore(tmp_path, map_size=64 * 1024) as store:
        inline, queued = identity(), identity()
        blob = "x" * 3000

        async def through_the_writer() -> None:
            for n in range(1000):
                event = envelope(queued, n, blob=blob)
                await store.append(queued.stream_id, ExpectedVersion.exact(n), [event])

        writer = asyncio.ensure_future(through_the_writer())
        done = 0
        try:
            while not writer.done():
                (result,) = store.commit_many_now(
                    [
                        Commit(
                            stream_id=inline.stream_id,
                            expected=ExpectedVersion.exact(done),
                            events=[envelope(inline, done, blob=blob)],
                        )
                    ]
                )
                assert not isinstance(result, BaseException), result
                done += 1
                await asyncio.sleep(0)  # the writer's next append is queued meanwhile
            await writer
        finally:
            writer.cancel()
        assert store.stats.map_resizes >= 5
        assert await store.stream_version(queued.stream_id) == 1000
        assert await store.stream_version(inline.stream_id) == done > 0
