"""Local ``replay --workers`` processes run this process's code: forked from a single-threaded
process, or started by a fork server (``mako_actors._workers.start_workers``) that imports what
this process imports, whatever directory the replay runs in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mako_actors import _workers
from mako_actors._workers import replay_partitions
from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.replay import _Options, _replay_items, archive, load_master_data
from stores.lmdb import Durability
from tests.test_replay_partitions import NB

_DECOY = "def _read_share(*args):\n    raise RuntimeError('decoy')\n\n\n_worker = _read_share\n"


async def test_workers_run_this_code_from_a_directory_holding_another_mako_actors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "elsewhere" / "mako_actors"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    (decoy / "_workers.py").write_text(_DECOY)
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=40, defects=0.0, seed=6))
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, False, 512)
    one, _ = await _replay_items(archive(src), tmp_path / "one", options, None)
    monkeypatch.chdir(decoy.parent)
    monkeypatch.setattr(_workers, "_single_threaded", lambda: False)  # the fork server, not fork
    two = await replay_partitions(archive(src), tmp_path / "two", options, 2)  # worker processes
    assert two.decision_digest == one.decision_digest


_FORKED = """
import asyncio, json, sys, threading
from pathlib import Path
from mako_actors import _workers
from mako_actors.replay import _Options, _replay_items, archive, load_master_data
from stores.lmdb import Durability

if __name__ == "__main__":
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    master = load_master_data(src / "master.json")
    options = _Options([sys.argv[3]], master, None, Durability.NO_SYNC, False, 512)
    alone = _workers._context().get_start_method()
    one, _ = asyncio.run(_replay_items(archive(src), out / "one", options, None))
    two = asyncio.run(_workers.replay_partitions(archive(src), out / "two", options, 2))
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    beside_a_thread = _workers._context().get_start_method()
    _workers.stop_workers()
    release.set()
    other.join()
    print(json.dumps([alone, beside_a_thread, one.decision_digest, two.decision_digest, two.messages]))
"""


def run_script(script: Path, text: str, src: Path, store: Path) -> subprocess.CompletedProcess[str]:
    """``text`` as a script of its own OS process (no threads of pytest's), given the archive,
    the store and our MP-ID; its output."""
    script.write_text(text)
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, str(script), str(src), str(store), NB],
        capture_output=True, text=True, timeout=120, cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
    )  # fmt: skip


def test_a_single_threaded_process_forks_its_workers_and_one_with_threads_does_not(tmp_path: Path) -> None:
    """Fork saves each worker the replay's imports, but a child forked beside another thread can
    inherit a lock nobody releases: with a second thread the fork server starts them."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=40, defects=0.0, seed=7))
    done = run_script(tmp_path / "forked.py", _FORKED, src, tmp_path)
    assert done.returncode == 0, done.stderr
    alone, beside_a_thread, one, two, messages = json.loads(done.stdout.splitlines()[-1])
    assert (alone, beside_a_thread) == ("fork", "forkserver")
    assert two == one and messages > 40


_DYING = """
import multiprocessing, os, sys
from mako_actors import _workers
from mako_actors.cli import main

def _die(*args):
    os._exit(3)  # a worker killed mid-run (OOM killer, SIGKILL)

_workers._worker = _die
_workers._context = lambda: multiprocessing.get_context("fork")
src, store, tenant = sys.argv[1:4]
print("rc", main(["replay", src, "--store", store, "--tenant", tenant, "--workers", "2"]))
"""


def test_a_worker_that_dies_is_an_operational_failure_exit_2(tmp_path: Path) -> None:
    """replay --help: '2 operational failure (a failed worker included)'. Before, a killed worker
    ended the run in a BrokenProcessPool traceback, exit 1: the code of a finished --strict run
    that rejected something."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=20, defects=0.0, seed=7))
    done = run_script(tmp_path / "dying.py", _DYING, src, tmp_path / "store")
    assert done.stdout.strip().splitlines()[-1:] == ["rc 2"], done.stdout[-2000:] + done.stderr[-2000:]
    assert "a replay worker process died" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_the_parts_directory_of_a_workers_replay_is_private(tmp_path: Path) -> None:
    """README: store directories are 0700. Before, --store of a --workers replay took the
    umask's mode (0755 here); only its part stores were 0700."""
    import os
    import stat

    from mako_actors.cli import main

    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=10, defects=0.0, seed=7))
    old = os.umask(0o022)
    try:
        argv = ["replay", str(src), "--store", str(tmp_path / "s"), "--tenant", NB, "--workers", "2"]
        assert main([*argv, "--json"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
