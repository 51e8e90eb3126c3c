"""Local ``replay --workers`` processes run this process's code: the fork server that starts them
(``mako_actors._workers.start_workers``) imports what this process imports, whatever directory
the replay runs in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
    two = await replay_partitions(archive(src), tmp_path / "two", options, 2)  # worker processes
    assert two.decision_digest == one.decision_digest
