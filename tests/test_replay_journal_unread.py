"""The journal entries the replay's view keeps unread until their journal is read."""

from __future__ import annotations

from pathlib import Path

from mako_actors import TenantId
from mako_actors.replay import _RunView
from stores.lmdb import LmdbStore

TENANT = TenantId.from_party_id("9900000002009")


async def test_unread_journal_entries_read_back_as_the_store_reads_them(tmp_path: Path) -> None:
    async with LmdbStore(tmp_path / "store") as store:
        view = _RunView(store, lambda _: None)
        view.fresh = view.fresh_journals = True
        key = "supply:51238696788"
        await view.append_journal(TENANT, key, [{"kind": "assigned", "at": ("x", 1)}])
        first = await view.journal(TENANT, key)  # the round trip happens here: a list for the tuple
        await view.append_journal(TENANT, key, [{"kind": "released", "at": ("y", 2)}])
        assert first == [{"kind": "assigned", "at": ["x", 1]}]
        assert await view.journal(TENANT, key) == await store.journal(TENANT, key)
        assert [e["kind"] for e in await view.journal(TENANT, key)] == ["assigned", "released"]
