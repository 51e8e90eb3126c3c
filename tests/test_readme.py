"""The README's code runs as written: the Python blocks as scripts from any directory, and the
"Run it as a service" shell block (a real `mako-actors serve`, stopped by the block itself)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_readme_python_blocks_run_as_scripts_from_any_directory(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README lost its python blocks"
    for index, block in enumerate(blocks):
        script = tmp_path / f"block{index}.py"
        script.write_text(block)
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"README python block {index} failed:\n{done.stderr}"


def _service_block() -> str:
    text = README.read_text()
    section = text[text.index("## Run it as a service") :]
    match = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert match, "the service section has no sh block"
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README uses curl")
def test_readme_service_block_runs(tmp_path: Path) -> None:
    script = (
        _service_block()
        .replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        .replace("examples/", f"{REPO / 'examples'}/")
        .replace("9464", str(_free_port()))
    )
    process = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        # The block stops its node; if it failed half-way, stop whatever it left running.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, out
    assert 'mako_interchanges_total{status="accepted"} 1.0' in out
    assert 'mako_outbox_delivered_total{message_type="CONTRL"} 1.0' in out
    assert "gpke.anmeldung_received" in out and "confirmed" in out
    assert "drained and closed" in out
    assert not list((tmp_path / "node" / "inbox").iterdir())
