"""LMDB specifics: map growth, group commit, durability modes, lifecycle, several OS processes."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from mako_actors import ExpectedVersion, StoreError, VersionConflict
from mako_actors.store import Commit
from mako_actors.testing import envelope, identity
from stores.lmdb import Durability, LmdbStore


async def test_map_grows_when_full_and_the_write_still_commits(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path, map_size=64 * 1024) as store:
        ident = identity()
        big = "x" * 4000
        for n in range(100):
            await store.append(ident.stream_id, ExpectedVersion.exact(n), [envelope(ident, n, blob=big)])
        assert store.stats.map_resizes > 0
        assert await store.stream_version(ident.stream_id) == 100
    async with LmdbStore(tmp_path) as reopened:
        assert len(await reopened.load(ident.stream_id)) == 100


async def test_concurrent_commits_share_transactions_and_fail_alone(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        idents = [identity() for _ in range(200)]
        conflicted = idents[0]
        await store.append(conflicted.stream_id, ExpectedVersion.NO_STREAM, [envelope(conflicted)])
        before = store.stats.transactions
        commits = [
            store.commit(
                Commit(stream_id=i.stream_id, expected=ExpectedVersion.NO_STREAM, events=[envelope(i)])
            )
            for i in idents
        ]
        results = await asyncio.gather(*commits, return_exceptions=True)
        assert isinstance(results[0], VersionConflict)
        assert all(not isinstance(r, BaseException) for r in results[1:])
        used = store.stats.transactions - before
        assert used < 50, f"200 concurrent commits took {used} transactions"
        assert store.stats.largest_batch > 1


@pytest.mark.parametrize("durability", list(Durability))
async def test_every_durability_mode_persists_across_reopen(tmp_path: Path, durability: Durability) -> None:
    ident = identity()
    async with LmdbStore(tmp_path, durability=durability) as store:
        await store.append(ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident)])
    async with LmdbStore(tmp_path) as store:
        assert await store.stream_version(ident.stream_id) == 1


async def test_opening_one_environment_twice_in_a_process_is_refused(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path):
        with pytest.raises(StoreError, match="already open"):
            LmdbStore(tmp_path)
    LmdbStore(tmp_path).close()  # released after close


async def test_a_closed_store_refuses_use(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path)
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.stream_version(identity().stream_id)


def _hammer(
    path: str, stream_plain: dict[str, str], attempts: int, results: multiprocessing.Queue[tuple[int, int]]
) -> None:
    from mako_actors import ProcessIdentity

    ident = ProcessIdentity.model_validate(stream_plain)

    async def run() -> tuple[int, int]:
        ok = conflicts = 0
        async with LmdbStore(path) as store:
            for _ in range(attempts):
                version = await store.stream_version(ident.stream_id)
                try:
                    await store.append(ident.stream_id, ExpectedVersion.exact(version), [envelope(ident)])
                    ok += 1
                except VersionConflict:
                    conflicts += 1
        return ok, conflicts

    results.put(asyncio.run(run()))


def test_two_os_processes_appending_to_one_stream_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    ident = identity()
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
    workers = [
        ctx.Process(target=_hammer, args=(str(tmp_path), ident.model_dump(mode="json"), 150, results))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    committed = sum(ok for ok, _ in outcomes)
    assert sum(ok + c for ok, c in outcomes) == 300

    async def check() -> None:
        async with LmdbStore(tmp_path) as store:
            events = await store.load(ident.stream_id)
            assert [e.sequence for e in events] == list(range(1, committed + 1))
            assert len({e.event_id for e in events}) == committed

    asyncio.run(check())
