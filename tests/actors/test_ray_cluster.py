"""The 3-node Ray cluster suite (``cluster_suite.py``), run in its own pytest subprocess.

A ``ray.cluster_utils.Cluster`` needs a Ray instance of its own, so it cannot run in this
session's process next to the single-node ``ray_cluster`` fixture; the subprocess starts the
cluster, runs the suite and shuts everything down before it exits (nothing is left running).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_partitioned_store_on_a_three_node_ray_cluster(tmp_path: Path) -> None:
    suite = Path(__file__).with_name("cluster_suite.py")
    command = [sys.executable, "-m", "pytest", str(suite), "-o", "addopts=", "-q", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [*command, f"--basetemp={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert re.search(r"^8 passed", run.stdout, re.MULTILINE), run.stdout[-2000:]
