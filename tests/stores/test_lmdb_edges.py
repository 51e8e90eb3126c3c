"""LMDB store edges: failed opens, read-only and full file systems, private file modes.

The file-system cases mount a small tmpfs (needs root, as in the CI container) and are skipped
where mounting is not allowed.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mako_actors import ExpectedVersion, StoreError
from mako_actors.testing import envelope, identity
from stores.lmdb import LmdbStore, StoreDiskFull, StoreOpenError


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    target = tmp_path / "small"
    _mount(target, "size=2m,mode=0700")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def read_only_fs(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "ro"
    _mount(target, "size=1m,ro")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_path_that_is_a_file_is_refused_and_not_left_marked_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.write_text("not a directory")
    for _ in range(2):  # the second attempt gets the same cause, not "already open"
        with pytest.raises(StoreOpenError, match="not a directory"):
            LmdbStore(path)
    path.unlink()
    store = LmdbStore(path)  # the path is usable once it is fixed
    store.close()


def test_a_parent_that_is_a_file_is_refused_with_its_cause(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreOpenError, match=r"ENOTDIR|EEXIST"):
        LmdbStore(tmp_path / "file" / "store")


def test_store_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = LmdbStore(tmp_path / "a" / "store")
        store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "store").stat().st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE((tmp_path / "a" / "store" / name).stat().st_mode) == 0o600


def test_a_read_only_file_system_is_a_typed_error(read_only_fs: Path) -> None:
    for path in (read_only_fs / "store", read_only_fs):
        for _ in range(2):
            with pytest.raises(StoreOpenError, match="Read-only file system"):
                LmdbStore(path)


async def test_a_full_disk_is_reported_as_such_and_loses_nothing_acknowledged(small_fs: Path) -> None:
    path = small_fs / "store"
    ident = identity()
    acknowledged = 0
    async with LmdbStore(path, map_size=1 << 20) as store:
        with pytest.raises(StoreDiskFull, match="file system is full") as info:
            while True:
                await store.append(
                    ident.stream_id, ExpectedVersion.exact(acknowledged), [envelope(ident, blob="x" * 20_000)]
                )
                acknowledged += 1
        assert isinstance(info.value, StoreError) and info.value.transient
        assert acknowledged > 10
        assert await store.stream_version(ident.stream_id) == acknowledged  # the failed one left nothing
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
        more = [envelope(ident, blob="y" * 20_000)]
        await store.append(ident.stream_id, ExpectedVersion.exact(acknowledged), more)
    async with LmdbStore(path) as store:
        events = await store.load(ident.stream_id)
        assert [e.sequence for e in events] == list(range(1, acknowledged + 2))


async def test_a_caller_that_gives_up_on_a_queued_write_leaves_the_writer_running(tmp_path: Path) -> None:
    """A write whose caller was cancelled (a timeout) while it waited in the writer's queue is
    dropped unwritten; before, the writer wrote it, then failed to answer the cancelled future
    (InvalidStateError) and its thread ended: every later write waited forever."""
    import asyncio

    async with LmdbStore(tmp_path) as store:
        first, second, third = (identity() for _ in range(3))
        store._write_lock.acquire()  # the writer takes the next batch, then waits here
        try:
            taken = asyncio.ensure_future(
                store.append(first.stream_id, ExpectedVersion.exact(0), [envelope(first)])
            )
            await asyncio.sleep(0.2)
            queued = asyncio.ensure_future(
                store.append(second.stream_id, ExpectedVersion.exact(0), [envelope(second)])
            )
            await asyncio.sleep(0.05)
            queued.cancel()
        finally:
            store._write_lock.release()
        await taken
        await asyncio.wait_for(
            store.append(third.stream_id, ExpectedVersion.exact(0), [envelope(third)]), 10
        )
        assert store._writer.is_alive()
        assert await store.stream_version(second.stream_id) == 0  # given up on before it ran
        assert await store.stream_version(third.stream_id) == 1
