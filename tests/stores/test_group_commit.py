"""Group commit in the LMDB writer: shared transactions, failures alone, ``max_batch`` respected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mako_actors import Commit, EngineError, ExpectedVersion, StoreError, VersionConflict
from mako_actors.testing import T0, envelope, identity, outbox_row
from stores.lmdb import LmdbStore


class _Unencodable:
    """Not msgpack-able: the commit carrying it fails while being written."""


async def test_a_bad_commit_fails_alone_inside_a_shared_transaction(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        idents = [identity() for _ in range(120)]
        commits = []
        for index, ident in enumerate(idents):
            event = envelope(ident)
            row = outbox_row(ident, event.event_id, T0)
            if index == 60:  # fails in the middle of the batch, after its event was put
                row = row.model_copy(update={"payload": {"bad": _Unencodable()}})
            new = ExpectedVersion.NO_STREAM
            commits.append(Commit(stream_id=ident.stream_id, expected=new, events=[event], outbox=[row]))
        before = store.stats.transactions
        results = await asyncio.gather(*(store.commit(c) for c in commits), return_exceptions=True)
        used = store.stats.transactions - before
        assert isinstance(results[60], StoreError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 60)
        assert used < 40, f"120 concurrent commits took {used} transactions"
        assert await store.stream_version(idents[60].stream_id) == 0  # nothing of it, not even its event
        assert await store.outbox_count() == 119
        positions = [e.global_position for e in await store.read_all(0, 10_000)]
        assert positions == list(range(1, 120))  # no gap where the failed commit was


async def test_max_batch_caps_the_writes_per_transaction(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path, max_batch=8) as store:
        idents = [identity() for _ in range(100)]
        results = await asyncio.gather(
            *(store.append(i.stream_id, ExpectedVersion.NO_STREAM, [envelope(i)]) for i in idents)
        )
        assert all(len(r) == 1 for r in results)
        assert 1 < store.stats.largest_batch <= 8
        assert store.stats.transactions >= 100 // 8


async def test_commit_many_on_one_stream_stops_at_its_first_conflict(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path) as store:
        ident = identity()
        commits = [
            Commit(stream_id=ident.stream_id, expected=ExpectedVersion.exact(v), events=[envelope(ident)])
            for v in (0, 1, 1, 2)
        ]
        results = await store.commit_many(commits)
        kinds = [type(r).__name__ for r in results]
        # The fourth matches the stream's version, but follows a failed one: a chain
        # (``test_commits_of_one_stream_in_one_request_are_a_chain``).
        assert kinds == ["CommitResult", "CommitResult", "VersionConflict", "VersionConflict"]
        assert isinstance(results[2], VersionConflict) and isinstance(results[2], EngineError)
        assert [e.sequence for e in await store.load(ident.stream_id)] == [1, 2]


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
async def test_commits_of_one_stream_in_one_request_are_a_chain(tmp_path: Path, kind: str) -> None:
    """After a commit of a stream fails, the later commits of that stream in the same request
    fail too (they were decided on the state it would have left), nothing of them written;
    other streams' commits stand."""
    from stores.memory import InMemoryStore

    store = InMemoryStore() if kind == "memory" else LmdbStore(tmp_path)
    try:
        chained, other = identity(), identity()
        await store.append(chained.stream_id, ExpectedVersion.NO_STREAM, [envelope(chained)])

        # Decided on version 1, but another writer made it 3: the first conflicts, and the
        # ones after it (expecting 2, then 3: the third matches the stream) must not slip in.
        def chain(version: int) -> Commit:
            return Commit(
                stream_id=chained.stream_id, expected=ExpectedVersion.exact(version),
                events=[envelope(chained, version + 1)],
            )  # fmt: skip

        await store.append(
            chained.stream_id, ExpectedVersion.exact(1), [envelope(chained, 2), envelope(chained, 3)]
        )
        alone = Commit(
            stream_id=other.stream_id, expected=ExpectedVersion.NO_STREAM, events=[envelope(other)]
        )
        results = await store.commit_many([chain(1), chain(2), chain(3), alone])
        assert [type(r) for r in results[:3]] == [VersionConflict] * 3
        assert not isinstance(results[3], EngineError)
        assert await store.stream_version(chained.stream_id) == 3
        assert await store.stream_version(other.stream_id) == 1
    finally:
        await store.aclose()
