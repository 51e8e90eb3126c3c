"""Routing is stable across processes, and importing the actor package never imports Ray."""

from __future__ import annotations

import subprocess
import sys

from mako_actors.actors import host_index, stable_hash


def test_stable_hash_is_the_same_in_another_process() -> None:
    key = "process/6b8f2f0e-8a3c-5d61-9a4e-1f0c6a2d7e01/0f3c1d2e-4b5a-5c6d-8e7f-9a0b1c2d3e4f"
    code = f"from mako_actors.actors import stable_hash; print(stable_hash({key!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"})
    assert int(other.stdout) == stable_hash(key)
    assert all(0 <= host_index(f"s{i}", 3) < 3 for i in range(100))
    assert len({host_index(f"s{i}", 3) for i in range(100)}) == 3


def test_importing_actors_does_not_import_ray() -> None:
    code = "import sys, mako_actors.actors; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
