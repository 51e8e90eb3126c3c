"""LMDB specifics: map growth, group commit, durability modes, lifecycle, several OS processes."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mako_actors import (
    ExpectedVersion,
    InvalidArgument,
    ProcessIdentity,
    RegistryConflict,
    StoreError,
    VersionConflict,
)
from mako_actors.store import Commit, CommitResult
from mako_actors.testing import TENANT, envelope, identity
from stores._kv import KvTxn
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


ONE = (1).to_bytes(8, "big")  # a stored checkpoint position


def _commit(ident: ProcessIdentity, expected: ExpectedVersion, **kw: Any) -> Commit:
    return Commit(stream_id=ident.stream_id, expected=expected, events=[envelope(ident)], **kw)


def _nested(store: LmdbStore) -> tuple[int, int]:
    extra = store.stats.extra
    return extra.get("nested_transactions", 0), extra.get("redone_batches", 0)


async def test_a_batch_without_failures_opens_no_nested_transaction(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        idents = [identity() for _ in range(100)]
        results = await store.commit_many([_commit(i, ExpectedVersion.NO_STREAM) for i in idents])
        assert all(r.version == 1 for r in results if not isinstance(r, BaseException))
        assert store.stats.commits == 100 and _nested(store) == (0, 0)
        for i in idents:
            assert await store.stream_version(i.stream_id) == 1


async def test_a_conflict_found_before_writing_fails_alone_without_redo(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        a, b, c = identity(), identity(), identity()
        await store.commit(_commit(b, ExpectedVersion.NO_STREAM))
        results = await store.commit_many(
            [
                _commit(a, ExpectedVersion.NO_STREAM),
                _commit(b, ExpectedVersion.NO_STREAM),  # b is at 1: conflicts
                _commit(c, ExpectedVersion.NO_STREAM),
                _commit(a, ExpectedVersion.exact(1)),  # sees the first commit of this batch
            ]
        )
        assert isinstance(results[1], VersionConflict)
        assert [r.version for r in (results[0], results[2], results[3])] == [1, 1, 2]  # type: ignore[union-attr]
        assert _nested(store) == (0, 0)
        assert [await store.stream_version(i.stream_id) for i in (a, b, c)] == [2, 1, 1]


async def test_a_commit_whose_first_row_does_not_encode_fails_alone_without_redo(tmp_path: Path) -> None:
    """Its rows are encoded before the commit takes the tables' writers: nothing was written."""
    async with LmdbStore(tmp_path) as store:
        a, b, c = identity(), identity(), identity()
        unencodable = [envelope(b, x=object())]
        bad = Commit(stream_id=b.stream_id, expected=ExpectedVersion.NO_STREAM, events=unencodable)
        results = await store.commit_many(
            [_commit(a, ExpectedVersion.NO_STREAM), bad, _commit(c, ExpectedVersion.NO_STREAM)]
        )
        assert isinstance(results[1], StoreError)
        assert all(isinstance(r, CommitResult) for i, r in enumerate(results) if i != 1)
        assert _nested(store) == (0, 0)
        assert [await store.stream_version(i.stream_id) for i in (a, b, c)] == [1, 0, 1]
        assert [e.global_position for e in await store.read_all()] == [1, 2]


async def test_a_commit_failing_half_way_is_isolated_and_its_neighbours_land(tmp_path: Path) -> None:
    """A registry conflict is found after the events were written: the batch is redone with
    that commit in a nested transaction, which leaves nothing of it behind."""
    async with LmdbStore(tmp_path) as store:
        owner, loser, x, y = identity(), identity(), identity(), identity()
        await store.commit(_commit(owner, ExpectedVersion.NO_STREAM, registry=(("malo:1", owner),)))
        results = await store.commit_many(
            [
                _commit(x, ExpectedVersion.NO_STREAM),
                _commit(loser, ExpectedVersion.NO_STREAM, registry=(("malo:1", loser),)),
                _commit(y, ExpectedVersion.NO_STREAM, registry=(("malo:2", y),)),
                _commit(x, ExpectedVersion.exact(1)),
            ]
        )
        assert isinstance(results[1], RegistryConflict)
        assert all(isinstance(r, CommitResult) for i, r in enumerate(results) if i != 1)
        assert await store.stream_version(loser.stream_id) == 0 and await store.load(loser.stream_id) == []
        assert await store.stream_version(x.stream_id) == 2
        assert (await store.lookup(TENANT, "malo:1")) == owner
        assert (await store.lookup(TENANT, "malo:2")) == y
        positions = [e.global_position for e in await store.read_all()]
        assert positions == list(range(1, 5))  # owner, x, y, x: no gap where loser's event was


async def test_writes_failing_half_way_are_each_isolated_once(tmp_path: Path) -> None:
    """At the writer level, independent of what the schema checks up front."""
    async with LmdbStore(tmp_path) as store:

        def write(key: bytes, fail: bool) -> Callable[[KvTxn], bytes]:
            def fn(txn: KvTxn) -> bytes:
                txn.put("checkpoints", key, ONE)
                if fail:
                    raise InvalidArgument(f"{key!r} is bad")
                return key

            return fn

        def refuse(txn: KvTxn) -> None:
            raise InvalidArgument("refused before writing")

        fns = [write(b"a", False), write(b"b", True), refuse, write(b"c", False), write(b"d", True)]
        results = await store._write_batch(fns)
        assert results[0] == b"a" and results[3] == b"c"
        assert all(isinstance(results[i], InvalidArgument) for i in (1, 2, 4))
        assert _nested(store) == (3, 2)  # b, then b and d isolated; refuse never needed it
        assert [await store.load_checkpoint(k) for k in "abcd"] == [1, 0, 1, 0]
        assert store.stats.transactions == 1


async def test_an_unexpected_error_half_way_is_a_store_error_of_that_write_only(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:

        def broken(txn: KvTxn) -> None:
            txn.put("checkpoints", b"broken", ONE)
            raise RuntimeError("bug")

        def fine(txn: KvTxn) -> str:
            txn.put("checkpoints", b"fine", ONE)
            return "ok"

        results = await store._write_batch([broken, fine])
        assert isinstance(results[0], StoreError) and "bug" in str(results[0]) and results[1] == "ok"
        assert await store.load_checkpoint("broken") == 0 and await store.load_checkpoint("fine") == 1


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
