"""Partitioned stores: registry keys a crash left unwritten at their home are repaired; dead
letters of all partitions are read merged.

The host body (``_Host``) runs here in the test's process on real LMDB partitions in
``tmp_path``: the crash between a commit and its post-commit key write is injected by a
``forward_keys`` that never runs, then the host is closed and started again on the same data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mako_actors import ProcessIdentity
from mako_actors.actors._actor import COMMAND, STATE, Op, Outcome
from mako_actors.actors._wire import decode_results, encode_ops
from mako_actors.actors.ray_system import _Host
from mako_actors.partitions import key_home, partition_of
from tests.actors.conftest import LEDGER_ID, TENANT
from tests.workflows import Ledger, Record

COUNT = 4


def host_spec(data_dir: Path) -> dict[str, Any]:
    return {
        "workflows": [Ledger],
        "options": {"snapshot_interval": 100, "max_attempts": 8, "max_batch": 512,
                    "idle_timeout": None, "max_live": None},
        "store_options": None, "clock": None, "pushed_clock": None, "prefix": "repair",
        "namespace": "repair", "inbound": None, "mode": "partitioned", "node": "local",
        "data_dir": str(data_dir), "partitions": list(range(COUNT)), "assignment": ["local"] * COUNT,
    }  # fmt: skip


async def test_a_key_write_lost_between_commit_and_forward_is_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = host_spec(tmp_path / "node")
    identity = ProcessIdentity.new(TENANT, LEDGER_ID)
    own = partition_of(identity.stream_id, COUNT)
    key = next(k for k in (f"vertrag:{i}" for i in range(1000)) if key_home(TENANT, k, COUNT) != own)
    home = key_home(TENANT, key, COUNT)

    async def crashed(self: _Host, partition: int, commits: Any) -> None:
        return None  # the process died after the commit, before the key reached its home

    host = _Host(spec)
    await host.create_partitions(list(range(COUNT)))
    monkeypatch.setattr(_Host, "forward_keys", crashed)
    record = Op(COMMAND, command=Record(amount=1, register_key=key))
    [outcome] = await host.run_batch([(own, identity, record)])
    assert isinstance(outcome, Outcome) and len(outcome.events) == 1
    assert await host.lookup(own, TENANT, key) == identity  # in the commit's own transaction
    assert await host.lookup(home, TENANT, key) is None  # the home never got it
    await host.aclose()
    monkeypatch.undo()

    # Started again on the same directories: the first batch it serves starts the repair.
    host = _Host(spec)
    try:
        data = await host.call_batch(None, encode_ops([(own, identity, Op(STATE))]))
        [state] = decode_results([identity], data)
        assert state.total == 1
        assert host._repairing is not None
        assert await host._repairing == [1, 0, 0]
        assert await host.lookup(home, TENANT, key) == identity
        assert await host.repair_keys() == [0, 0, 0]  # idempotent: nothing left to do
    finally:
        await host.aclose()


async def test_a_key_bound_to_another_process_at_its_home_is_kept_and_counted(tmp_path: Path) -> None:
    spec = host_spec(tmp_path / "node")
    first = ProcessIdentity.new(TENANT, LEDGER_ID)
    # A second process in another partition than ``first`` claims the same key.
    second = next(
        i for i in (ProcessIdentity.new(TENANT, LEDGER_ID) for _ in range(1000))
        if partition_of(i.stream_id, COUNT) != partition_of(first.stream_id, COUNT)
    )  # fmt: skip
    key = next(
        k for k in (f"vertrag:{i}" for i in range(1000))
        if key_home(TENANT, k, COUNT) not in {partition_of(x.stream_id, COUNT) for x in (first, second)}
    )  # fmt: skip
    host = _Host(spec)
    await host.create_partitions(list(range(COUNT)))
    try:
        for identity in (first, second):
            p = partition_of(identity.stream_id, COUNT)
            record = Op(COMMAND, command=Record(amount=1, register_key=key))
            [outcome] = await host.run_batch([(p, identity, record)])
            assert isinstance(outcome, Outcome)
        home = key_home(TENANT, key, COUNT)
        assert await host.lookup(home, TENANT, key) == first  # the first binding wins at the home
        assert await host.repair_keys() == [0, 1, 0]
        assert await host.lookup(home, TENANT, key) == first
    finally:
        await host.aclose()


async def test_dead_letters_of_all_partitions_are_read_merged_by_time(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from mako_actors import DeadLetter
    from stores.partitioned import create_partition, merged_dead_letters, open_partition

    t0 = datetime(2025, 10, 1, 8, tzinfo=UTC)
    nodes = {"a": tmp_path / "a", "b": tmp_path / "b"}
    # partition 0 on node a, 1 and 2 on node b; letters interleaved in time across them
    placed = {0: ("a", [0, 3]), 1: ("b", [1, 4]), 2: ("b", [2])}
    for partition, (node, minutes) in placed.items():
        create_partition(nodes[node], partition, 4)
        store = open_partition(nodes[node], partition, 4)
        try:
            for m in minutes:
                letter = DeadLetter(kind="inbound", reason=f"m{m}", recorded_at=t0 + timedelta(minutes=m))
                await store.add_dead_letter(letter)
        finally:
            await store.aclose()
    (nodes["a"] / "p0003.moved-2").mkdir()  # a moved-away copy is not read

    merged = await merged_dead_letters(list(nodes.values()))
    assert [(p, d.reason) for p, d in merged] == [(0, "m0"), (1, "m1"), (2, "m2"), (0, "m3"), (1, "m4")]
    assert [d.position for _, d in merged] == [1, 1, 1, 2, 2]  # positions count per partition
    assert [d.reason for _, d in await merged_dead_letters(list(nodes.values()), limit=2)] == ["m0", "m1"]
