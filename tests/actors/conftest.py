"""Fixtures of the actor suites: a real LMDB store in ``tmp_path``, ids, and one Ray cluster per session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mako_actors import TenantId, WorkflowId
from stores.lmdb import LmdbStore

TENANT = TenantId.from_party_id("9900000000003")
LEDGER_ID = WorkflowId.new("ledger", "FV2025-10-01")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LmdbStore]:
    s = LmdbStore(tmp_path / "db")
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the whole session (startup costs seconds), shut down at the end.

    Workers import workflow and command classes by module path, so the repository root goes on
    their ``PYTHONPATH`` (they inherit the environment of the raylet started here).
    """
    import ray

    root = str(Path(__file__).resolve().parents[2])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    # Two logical nodes ("local", "other") on this one Ray node, so partitioned systems can pin
    # their hosts here too, and hosts of two nodes call each other.
    # address="local": always a fresh instance of our own, never another cluster on this machine.
    ray.init(
        address="local", num_cpus=2, resources={"mako-node:local": 1, "mako-node:other": 1},
        include_dashboard=False, log_to_driver=False, namespace="mako-actors-tests",
    )  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
