"""The replay reads each archived file whole, whatever its size, and reports unreadable ones."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mako_actors.replay import ArchivedInterchange, ReplayReport, _read


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 300_000])
def test_read_returns_every_byte_of_the_file(tmp_path: Path, size: int) -> None:
    content = os.urandom(size)
    path = tmp_path / "big.edi"
    path.write_bytes(content)
    report = ReplayReport()
    assert _read(ArchivedInterchange(path, datetime(2025, 11, 3, tzinfo=UTC)), report) == content
    assert report.failures == []


def test_unreadable_file_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    report = ReplayReport()
    missing = ArchivedInterchange(tmp_path / "gone.edi", datetime(2025, 11, 3, tzinfo=UTC))
    assert _read(missing, report) is None
    assert len(report.failures) == 1 and report.failures[0].startswith("gone.edi: cannot read")


def test_bytes_already_held_are_not_read_again(tmp_path: Path) -> None:
    held = ArchivedInterchange(tmp_path / "gone.edi", datetime(2025, 11, 3, tzinfo=UTC), raw=b"UNB+")
    assert _read(held, ReplayReport()) == b"UNB+"
