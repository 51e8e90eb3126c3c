"""A reader killed inside a read transaction must not pin the store's pages for good.

LMDB keeps such a reader's slot, with its snapshot, until asked to check: no page freed after
it is reused, so a long-running node's store grows with every write. Before, nothing asked:
a CLI or notebook reader beside ``serve`` killed mid-read grew the node's store ~40-fold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from mako_actors.dead_letters import DeadLetter
from stores.lmdb import LmdbStore

ROOT = Path(__file__).resolve().parents[2]

_READ_AND_WAIT = """
import sys, time
from stores.lmdb_readonly import ReadOnlyLmdbStore
store = ReadOnlyLmdbStore(sys.argv[1])
with store._env.begin():
    print("reading", flush=True)
    time.sleep(60)
"""

_OPEN_AND_CLOSE = """
import sys
from stores.lmdb_readonly import ReadOnlyLmdbStore
ReadOnlyLmdbStore(sys.argv[1]).close()
"""


def _killed_mid_read(path: Path) -> int:
    """The pid of a reader of ``path`` killed (SIGKILL) inside its read transaction."""
    child = subprocess.Popen(
        [sys.executable, "-c", _READ_AND_WAIT, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "reading\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return child.pid


_LETTER = DeadLetter(kind="test", reason="x", payload={}, recorded_at=datetime(2025, 1, 1, tzinfo=UTC))


def _readers(store: LmdbStore) -> str:
    return str(store._env.readers())


async def test_a_node_clears_the_slot_of_a_reader_killed_mid_read(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = LmdbStore(path)
    try:
        await store.add_dead_letter(_LETTER)
        pid = _killed_mid_read(path)
        assert f"{pid} " in _readers(store)  # the slot stays, with its snapshot
        assert store.clear_stale_readers() == 1
        assert f"{pid} " not in _readers(store)
        assert store.clear_stale_readers() == 0
    finally:
        await store.aclose()


async def test_opening_the_store_elsewhere_clears_it_too(tmp_path: Path) -> None:
    """The next CLI call beside the node frees the slot a killed one left."""
    path = tmp_path / "db"
    store = LmdbStore(path)
    try:
        await store.add_dead_letter(_LETTER)
        pid = _killed_mid_read(path)
        subprocess.run([sys.executable, "-c", _OPEN_AND_CLOSE, str(path)], cwd=ROOT, check=True)
        assert f"{pid} " not in _readers(store)
    finally:
        await store.aclose()
