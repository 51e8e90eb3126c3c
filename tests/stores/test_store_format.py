"""The on-disk format version: recorded in a new store, refused when later than this code reads,
added to a store made before formats were recorded (read-write opens only)."""

from __future__ import annotations

from pathlib import Path

import lmdb
import msgpack
import pytest

from mako_actors import ExpectedVersion
from mako_actors.cli import main
from mako_actors.testing import envelope, identity
from stores._schema import FORMAT_KEY, FORMAT_VERSION
from stores.lmdb import LmdbStore, StoreOpenError
from stores.lmdb_readonly import ReadOnlyLmdbStore
from stores.partitioned import create_partition, merged_dead_letters, open_partition, partition_dir

LATER = FORMAT_VERSION + 1
REFUSED = (
    rf"cannot open LMDB store at .*: it is in store format {LATER}, and this version of "
    rf"mako_actors reads store format.* 1\b.*nothing written"
)


def _recorded(path: Path) -> bytes | None:
    """The raw format row of the (closed) store at ``path``."""
    with lmdb.open(str(path), max_dbs=32, readonly=True, lock=False) as env:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            raw = txn.get(FORMAT_KEY, db=meta)
    return None if raw is None else bytes(raw)


def _set_format(path: Path, version: int | None) -> None:
    """Record ``version`` (None: remove the row, as in a store made by earlier code)."""
    with lmdb.open(str(path), max_dbs=32) as env:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            if version is None:
                txn.delete(FORMAT_KEY, db=meta)
            else:
                txn.put(FORMAT_KEY, msgpack.packb(version), db=meta)


async def _store_with_an_event(path: Path) -> None:
    ident = identity()
    async with LmdbStore(path) as store:
        await store.append(ident.stream_id, ExpectedVersion.NO_STREAM, [envelope(ident)])


async def test_a_new_store_and_a_new_partition_record_the_format(tmp_path: Path) -> None:
    await _store_with_an_event(tmp_path / "store")
    assert _recorded(tmp_path / "store") == msgpack.packb(FORMAT_VERSION)
    create_partition(tmp_path / "node", 0, 2)
    assert _recorded(partition_dir(tmp_path / "node", 0)) == msgpack.packb(FORMAT_VERSION)


def _later_stores(tmp_path: Path) -> tuple[Path, Path]:
    """A store and partition 1 of 2 of a node (beside partition 0 of this format), both of a
    later format."""
    path = tmp_path / "store"
    LmdbStore(path).close()
    _set_format(path, LATER)
    create_partition(tmp_path / "node", 0, 2)
    create_partition(tmp_path / "node", 1, 2)
    part = partition_dir(tmp_path / "node", 1)
    _set_format(part, LATER)
    return path, part


async def test_a_store_of_a_later_format_is_refused_on_every_open_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    path, part = _later_stores(tmp_path)
    before = {p: (p / "data.mdb").read_bytes() for p in (path, part)}

    for _ in range(2):  # the path is not left marked open: the second open gets the same error
        with pytest.raises(StoreOpenError, match=REFUSED) as info:
            LmdbStore(path)
        assert str(path.resolve()) in str(info.value)
        with pytest.raises(StoreOpenError, match=REFUSED):
            ReadOnlyLmdbStore(path)
    with pytest.raises(StoreOpenError, match=REFUSED) as info:
        open_partition(tmp_path / "node", 1, 2)
    assert str(part.resolve()) in str(info.value)
    with pytest.raises(StoreOpenError, match=REFUSED):
        await merged_dead_letters([tmp_path / "node"])  # read-only, every partition
    async with open_partition(tmp_path / "node", 0, 2):  # its sibling opens
        pass
    assert {p: (p / "data.mdb").read_bytes() for p in (path, part)} == before


def test_the_inspection_commands_refuse_a_store_of_a_later_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, part = _later_stores(tmp_path)
    before = {p: (p / "data.mdb").read_bytes() for p in (path, part)}
    for store in (path, tmp_path / "node"):
        for argv in (["stats"], ["dead-letters", "list"]):
            assert main([*argv, "--store", str(store)]) == 2
            assert f"it is in store format {LATER}" in capsys.readouterr().err
    assert {p: (p / "data.mdb").read_bytes() for p in (path, part)} == before


async def test_a_store_made_before_formats_were_recorded_opens_and_gets_the_row_read_write_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    await _store_with_an_event(path)
    _set_format(path, None)
    before = (path / "data.mdb").read_bytes()
    store = ReadOnlyLmdbStore(path)
    try:
        assert len(await store.read_all(0, 10)) == 1
    finally:
        store.close()
    assert _recorded(path) is None and (path / "data.mdb").read_bytes() == before
    async with LmdbStore(path) as rw:
        assert len(await rw.read_all(0, 10)) == 1
    # Upgraded: this code writes rows of its format from now on (a rolled-back version that
    # checks formats refuses it at open, not on a row with a field it does not know).
    assert _recorded(path) == msgpack.packb(FORMAT_VERSION)


async def test_a_store_of_an_earlier_format_is_read_and_upgraded_read_write_only(tmp_path: Path) -> None:
    path = tmp_path / "store"
    await _store_with_an_event(path)
    _set_format(path, 1)
    store = ReadOnlyLmdbStore(path)
    try:
        assert len(await store.read_all(0, 10)) == 1
    finally:
        store.close()
    assert _recorded(path) == msgpack.packb(1)
    async with LmdbStore(path) as rw:
        assert len(await rw.read_all(0, 10)) == 1
    assert _recorded(path) == msgpack.packb(FORMAT_VERSION) and FORMAT_VERSION > 1


async def test_a_fenced_copy_made_before_formats_were_recorded_gets_no_row(tmp_path: Path) -> None:
    """The fence of a partition being moved refuses every write: the format row's too."""
    create_partition(tmp_path / "node", 0, 1)
    async with open_partition(tmp_path / "node", 0, 1) as store:
        store.fence(True)
    part = partition_dir(tmp_path / "node", 0)
    _set_format(part, None)
    open_partition(tmp_path / "node", 0, 1).close()
    assert _recorded(part) is None
