"""The store's lock (``_store_lock``): a lock held for an instant is waited for, not taken for a
command holding it (found by review: a probe's instant refused a node's start, and a start's
instant between its lock and its name made a probe name "another process")."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from mako_actors import _store_lock
from mako_actors._store_lock import held, holder
from mako_actors.errors import InvalidArgument


def test_a_lock_held_for_an_instant_is_waited_for_one_held_on_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "serve.lock"
    path.write_text("")
    with path.open() as probe:
        fcntl.flock(probe.fileno(), fcntl.LOCK_SH)  # as ``holder`` asks
        # The probe lets go while the starting command waits its first pause.
        monkeypatch.setattr(_store_lock, "sleep", lambda _: fcntl.flock(probe.fileno(), fcntl.LOCK_UN))
        with held(path, "store", "mako-actors serve", "one node per store"):
            assert (holder(path) or "").startswith("mako-actors serve, process")
    waits: list[float] = []
    monkeypatch.setattr(_store_lock, "sleep", waits.append)
    with path.open("a+") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        refused = pytest.raises(InvalidArgument, match=r"in use already \(another process\)")
        with refused, held(path, "store", "mako-actors replay", "one at a time"):
            pass
    assert 0 < sum(waits) <= 0.2  # held on: refused after a short wait


def test_a_holder_naming_itself_just_after_it_locked_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "serve.lock"
    with path.open("a+") as starting:
        fcntl.flock(starting.fileno(), fcntl.LOCK_EX)

        def name(_: float) -> None:  # the holder writes its name while the probe waits
            starting.write("mako-actors serve, process 1 on here\n")
            starting.flush()

        monkeypatch.setattr(_store_lock, "sleep", name)
        assert holder(path) == "mako-actors serve, process 1 on here"
