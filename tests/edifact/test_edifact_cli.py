"""``mako-actors inspect``: summary on success, typed error and exit code 1 on rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mako_actors.cli import main
from mako_actors.edifact import synthetic_utilmd


def test_inspect_prints_envelope_and_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    f = tmp_path / "in.edi"
    f.write_bytes(synthetic_utilmd(messages=2, control_ref="LFN42"))
    assert main(["inspect", str(f)]) == 0
    out = capsys.readouterr().out
    assert "LFN42" in out and "9900000001001" in out and "55001" in out and "UTILMD" in out


def test_inspect_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "in.edi"
    f.write_bytes(synthetic_utilmd(messages=2, transactions=3, control_ref="LFN42"))
    assert main(["inspect", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["control_ref"] == "LFN42"
    assert data["correlation_ref"] == "9900000001001:LFN42"
    assert [m["pid"] for m in data["messages"]] == ["55001", "55001"]
    assert [m["segment_count"] for m in data["messages"]] == [4 + 6 * 3 + 2] * 2
    assert data["messages"][0]["mig_version"] == "S2.1"


def test_inspect_rejection_exit_1_with_the_defect(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.edi"
    f.write_bytes(synthetic_utilmd().replace(b"UNT+12+", b"UNT+9+"))
    assert main(["inspect", str(f)]) == 1
    out = capsys.readouterr().out
    assert "ControlCountMismatch" in out and "bad.edi" in out and "segment 13" in out
    assert main(["inspect", str(f), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["error"] == "ControlCountMismatch" and data["args"]["expected"] == "12"


def test_inspect_missing_file_is_exit_2(tmp_path: Path) -> None:
    assert main(["inspect", str(tmp_path / "nope.edi")]) == 2
