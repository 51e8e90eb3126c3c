"""Both stores refuse the same arguments with ``InvalidArgument``: keys too long for LMDB's
511-byte keys, negative positions.

Without the checks LMDB failed on a long key with ``MDB_BAD_VALSIZE`` (a ``StoreError``,
retried by callers as if the disk were at fault) where the memory store accepted it, and a
negative position raised a raw ``OverflowError`` on both.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest

from mako_actors import DeadLetter, ExpectedVersion, InvalidArgument, Process, WorkflowId
from mako_actors.store import Commit, JournalEntry
from mako_actors.testing import T0, TENANT, envelope, identity
from stores import _schema
from stores._base import StoreBase
from stores.lmdb import LmdbStore
from stores.memory import InMemoryStore
from tests.workflows import Ledger, Record


@pytest.fixture(params=["lmdb", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBase]:
    opened: StoreBase = LmdbStore(tmp_path / "s") if request.param == "lmdb" else InMemoryStore()
    async with opened:
        yield opened


def test_the_limit_is_lmdbs() -> None:
    with tempfile.TemporaryDirectory() as path, lmdb.open(path) as env:
        assert env.max_key_size() == _schema.MAX_KEY_BYTES


def _key(size: int) -> str:
    """A key of ``size`` UTF-8 bytes, mostly two-byte characters (bytes count, not characters)."""
    return "ü" * (size // 2) + "k" * (size % 2)


Use = Callable[[StoreBase, str], Awaitable[Any]]
_USES: dict[str, tuple[int, Use, Use]] = {
    # kind: (limit, a write naming the key, a read naming it)
    "registry key": (
        _schema.MAX_REGISTRY_KEY,
        lambda s, k: s.register(TENANT, k, identity()),
        lambda s, k: s.lookup(TENANT, k),
    ),
    "journal key": (
        _schema.MAX_JOURNAL_KEY,
        lambda s, k: s.append_journal(TENANT, k, [{"n": 1}]),
        lambda s, k: s.journal(TENANT, k),
    ),
    "inbox key": (_schema.MAX_INBOX_KEY, lambda s, k: s.accept(k, "d"), lambda s, k: s.accept(k, "d")),
    "checkpoint name": (
        _schema.MAX_CHECKPOINT_NAME,
        lambda s, k: s.save_checkpoint(k, 5, {"state": 1}),
        lambda s, k: s.load_checkpoint_state(k),
    ),
    "dead letter key": (
        _schema.MAX_DEAD_LETTER_KEY,
        lambda s, k: s.add_dead_letter(DeadLetter(kind="x", reason="r", recorded_at=T0, key=k)),
        lambda s, k: s.add_dead_letter(DeadLetter(kind="x", reason="r", recorded_at=T0, key=k)),
    ),
}


@pytest.mark.parametrize("kind", list(_USES))
async def test_a_key_one_byte_too_long_is_refused_by_every_store(store: StoreBase, kind: str) -> None:
    limit, write, read = _USES[kind]
    await write(store, _key(limit))  # the longest that fits is stored and read back
    await read(store, _key(limit))
    before = await store.table_counts()
    for use in (write, read):
        with pytest.raises(InvalidArgument, match=rf"^{kind} .* is {limit + 1} bytes .* at most {limit} "):
            await use(store, _key(limit + 1))
    assert await store.table_counts() == before


async def test_a_commit_with_a_too_long_key_writes_nothing(store: StoreBase) -> None:
    p = Process(Ledger(), store, TENANT, WorkflowId.new("ledger", "FV2510"))
    await p.execute_and_enqueue(Record(amount=1))
    before = await store.table_counts()
    with pytest.raises(InvalidArgument, match=r"registry key"):
        await p.execute_and_enqueue(
            Record(amount=2, notify="9900000001001", register_key=_key(_schema.MAX_REGISTRY_KEY + 1))
        )
    ident = identity()
    with pytest.raises(InvalidArgument, match=r"journal key"):
        await store.commit(
            Commit(
                stream_id=ident.stream_id,
                expected=ExpectedVersion.NO_STREAM,
                events=[envelope(ident)],
                journal=[JournalEntry(TENANT, _key(_schema.MAX_JOURNAL_KEY + 1), {"n": 1})],
            )
        )
    assert await store.table_counts() == before
    assert (await p.state()).total == 1



@pytest.mark.parametrize("position", [-1, -2])
async def test_a_negative_position_is_an_invalid_argument_as_for_load_from(
    store: StoreBase, position: int
) -> None:
    with pytest.raises(InvalidArgument, match=rf"read_all: after_position must be >= 0, got {position}"):
        await store.read_all(position, 10)
    with pytest.raises(InvalidArgument, match=rf"dead_letters: after_position must be >= 0, got {position}"):
        await store.dead_letters(10, position)
