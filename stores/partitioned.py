"""Partition directories on one node: create once, open only what exists, copy consistently.

Partition ``p`` of a node lives in ``<data_dir>/p0007`` as its own LMDB environment, with a
``PARTITION`` marker (msgpack: partition number, count) written when the partition is created,
together with its LMDB environment. ``open_partition`` refuses a directory without the marker,
or with the marker but no data file: a node that lost its disk (or the file), or a partition
that was moved away, reports ``PartitionUnavailable`` instead of starting over on a fresh,
empty environment (which would silently "lose" every process in it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack

from mako_actors._durable import fsync_directory
from mako_actors.dead_letters import DeadLetter
from mako_actors.envelope import ProcessIdentity
from mako_actors.errors import InvalidArgument
from mako_actors.partitions import PartitionUnavailable
from stores._kv import KvTxn
from stores._schema import unpack
from stores.lmdb import LmdbStore

MARKER = "PARTITION"


def partition_dir(data_dir: str | os.PathLike[str], partition: int) -> Path:
    """The directory of ``partition`` under a node's ``data_dir``."""
    return Path(data_dir) / f"p{partition:04d}"


def _write_marker(directory: Path, partition: int, count: int, move: str | None = None) -> None:
    tmp = directory / (MARKER + ".tmp")
    plain: dict[str, Any] = {"partition": partition, "count": count}
    if move is not None:
        plain["move"] = move
    with open(tmp, "wb") as out:
        out.write(msgpack.packb(plain))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, directory / MARKER)


def create_partition(data_dir: str | os.PathLike[str], partition: int, count: int) -> None:
    """Make an empty partition (idempotent for an existing one of the same number and count).

    The LMDB environment is made with the marker, in a staging directory renamed into place:
    a marked partition always had its data file, so one without it (``open_partition``) lost it.
    """
    directory = partition_dir(data_dir, partition)
    marker = directory / MARKER
    if marker.exists():
        _check_marker(marker, partition, count)
        return
    if directory.exists() and any(directory.iterdir()):
        raise InvalidArgument(f"{directory} holds data but no {MARKER} marker; refusing to claim it")
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".p{partition:04d}-", dir=Path(data_dir)))
    try:
        LmdbStore(staging).close()  # data.mdb with its tables, synced
        _write_marker(staging, partition, count)
        os.replace(staging, directory)  # over an empty directory, if one is there
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(Path(data_dir))


def read_marker(marker: Path) -> dict[str, Any]:
    """A partition's ``PARTITION`` marker as plain data; ``InvalidArgument`` naming the file when
    it is not one (garbage, another format)."""
    try:
        plain = msgpack.unpackb(marker.read_bytes())
        if not isinstance(plain, dict) or not isinstance(plain.get("partition"), int):
            raise TypeError("no partition number in it")
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidArgument(f"{marker} is no readable partition marker: {exc}") from None
    return plain


def _check_marker(marker: Path, partition: int, count: int) -> None:
    plain = read_marker(marker)
    if (plain.get("partition"), plain.get("count")) != (partition, count):
        raise InvalidArgument(
            f"{marker} is partition {plain.get('partition')} of {plain.get('count')}, "
            f"not {partition} of {count}"
        )


def open_partition(data_dir: str | os.PathLike[str], partition: int, count: int, **options: Any) -> LmdbStore:
    """The store of an existing partition; ``PartitionUnavailable`` if its data is not here.

    Its marker without a non-empty ``data.mdb`` beside it is a partition whose data file was
    lost (both are made at once): unavailable too, never opened as a fresh, empty store.
    """
    directory = partition_dir(data_dir, partition)
    marker = directory / MARKER
    if not marker.exists():
        raise PartitionUnavailable(
            f"partition {partition}: no data at {directory} (never created here, or moved)"
        )
    _check_marker(marker, partition, count)
    data = directory / "data.mdb"
    if not data.is_file() or data.stat().st_size == 0:
        raise PartitionUnavailable(
            f"partition {partition}: its data file {data} is {'empty' if data.is_file() else 'missing'} "
            "(lost, or a copy cut short); nothing written. Restore the directory from a copy"
        )
    return LmdbStore(directory, **options)  # a move fences the old copy (every write looks)


def export_partition(store: LmdbStore) -> bytes:
    """A consistent, compacted copy of the partition's LMDB data file (``env.copy(compact=True)``).

    Taken in one read transaction, so it is consistent even with writers running; the caller
    pauses the partition first so that no acknowledged command is missing from the copy.
    """
    with tempfile.TemporaryDirectory(prefix="mako-copy-") as tmp:
        store._env.copy(tmp, compact=True)
        return (Path(tmp) / "data.mdb").read_bytes()


def import_partition(
    data_dir: str | os.PathLike[str], partition: int, count: int, data: bytes, move: str | None = None
) -> None:
    """Install a copy made by ``export_partition`` as ``partition`` here; refuses to overwrite one.

    ``move`` (a token unique to one move) is recorded in the marker: undoing that move sets
    aside only the copy it finds there (``installed_by``), never one that came another way.
    """
    directory = partition_dir(data_dir, partition)
    if (directory / MARKER).exists():
        raise InvalidArgument(f"{directory} already holds partition {partition}; retire it first")
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".p{partition:04d}-", dir=Path(data_dir)))
    try:
        with open(staging / "data.mdb", "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        _write_marker(staging, partition, count, move)
        if directory.exists():
            shutil.rmtree(directory)  # no marker: leftovers of an interrupted copy
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def installed_by(data_dir: str | os.PathLike[str], partition: int, move: str) -> bool:
    """Whether ``partition`` here is the copy ``import_partition`` installed for ``move``.

    False when there is none, or it was created here, restored by an operator, or installed
    by another move: a failed move must not set aside what it did not put there.
    """
    marker = partition_dir(data_dir, partition) / MARKER
    return marker.is_file() and read_marker(marker).get("move") == move


def retire_partition(data_dir: str | os.PathLike[str], partition: int, epoch: int) -> Path:
    """Rename a moved-away partition to ``p0007.moved-<epoch>`` so it can never be opened again."""
    directory = partition_dir(data_dir, partition)
    target = directory.with_name(f"{directory.name}.moved-{epoch}")
    os.replace(directory, target)
    return target


async def registry_entries(store: LmdbStore) -> list[tuple[str, ProcessIdentity]]:
    """Every registry entry of one partition as ``(key, identity)``, in key order.

    A read-only scan of the whole registry table (one read transaction): for the repair pass
    of registry keys homed in other partitions, not for the command path.
    """

    def read(txn: KvTxn) -> list[tuple[str, ProcessIdentity]]:
        return [
            (raw_key[16:].decode(), ProcessIdentity.model_validate(unpack(raw)))
            for raw_key, raw in txn.scan("registry", b"")
        ]

    return await store._read(read)


async def merged_dead_letters(
    data_dirs: Sequence[str | os.PathLike[str]], limit: int = 10_000
) -> list[tuple[int, DeadLetter]]:
    """The dead letters of every partition found under ``data_dirs``, merged, read-only.

    Each partition keeps its own dead letters (``position`` counts per partition); this reads
    them from every ``p0007`` directory with a ``PARTITION`` marker (moved-away copies are
    skipped) through read-only environments, and returns ``(partition, letter)`` pairs ordered
    by ``recorded_at``, then partition, then position; at most ``limit``, the oldest first.
    For inspection (CLI views, reports): it sees what is committed when each partition is read,
    not one snapshot across partitions. A partition that cannot be opened raises ``StoreError``.
    """
    found: list[tuple[int, Path]] = []
    for data_dir in data_dirs:
        for directory in sorted(Path(data_dir).glob("p[0-9][0-9][0-9][0-9]")):
            marker = directory / MARKER
            if directory.is_dir() and marker.is_file():
                found.append((int(read_marker(marker)["partition"]), directory))
    return await dead_letters_of(found, limit)


async def dead_letters_of(
    partitions: Sequence[tuple[int, str | os.PathLike[str]]], limit: int = 10_000
) -> list[tuple[int, DeadLetter]]:
    """The dead letters of the given ``(partition, LMDB directory)`` pairs, merged, read-only.

    Ordered and limited as ``merged_dead_letters`` says; for any set of stores read as one
    (a node's partitions, or the ``part-<k>-of-<n>`` stores of ``replay --workers n``). A
    directory that cannot be opened raises ``StoreError``.
    """
    from stores.lmdb_readonly import ReadOnlyLmdbStore

    found: list[tuple[int, DeadLetter]] = []
    for partition, directory in partitions:
        store = ReadOnlyLmdbStore(directory)
        try:
            after = 0
            while batch := await store.dead_letters(1000, after):
                found.extend((partition, letter) for letter in batch)
                after = batch[-1].position
        finally:
            await store.aclose()
    found.sort(key=lambda pair: (pair[1].recorded_at, pair[0], pair[1].position))
    return found[:limit]
