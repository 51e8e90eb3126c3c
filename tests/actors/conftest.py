"""Fixtures of the actor suites: a real LMDB store in ``tmp_path``, ids, and one Ray cluster per session."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
