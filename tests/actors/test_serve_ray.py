"""`serve` with `ray = true`: the node's processes run on Ray host actors, files in, answers out."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors.gpke.synthetic import anmeldung
from mako_actors.serve import Node
from mako_actors.serve_config import ServeConfig

pytestmark = pytest.mark.usefixtures("ray_cluster")
NB, LFN = "9900000002009", "9900000001001"


async def test_a_ray_node_answers_an_interchange_and_drains(tmp_path: Path) -> None:
    config = ServeConfig(
        store=tmp_path / "store", tenants=(NB,), inbox=tmp_path / "inbox", outbox=tmp_path / "outbox",
        http_port=None, poll_interval=0.05, ray=True, hosts=2, node=f"serve-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    node = Node(config)
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(node.run(stop, lambda _: ready.set()))
    try:
        await asyncio.wait_for(ready.wait(), 120)
        now = datetime.now(UTC)
        raw = anmeldung(
            lfn=LFN, nb=NB, malo="51900000012", ide_ref="TX1", control_ref="RAY1", sent_at=now,
            zuordnungsbeginn=(now + timedelta(days=40)).replace(hour=23, minute=0, second=0, microsecond=0),
        )  # fmt: skip
        (tmp_path / "inbox" / ".a.part").write_bytes(raw)
        (tmp_path / "inbox" / ".a.part").rename(tmp_path / "inbox" / "a.edi")

        # The outbox loop may deliver the APERAK (committed on a host) before ingest returns and
        # the file is moved: the two are not ordered, so wait for both.
        async def answered() -> None:
            while (
                not any(p.name.startswith("APERAK") for p in (tmp_path / "outbox").iterdir())
                or not (tmp_path / "done" / "a.edi").exists()
            ):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(answered(), 120)
        assert [p.name for p in (tmp_path / "done").iterdir()] == ["a.edi"]
        assert [p.name for p in (tmp_path / "inbox").iterdir()] == [".serve.lock"]  # the node's lock
    finally:
        stop.set()
        await asyncio.wait_for(running, 120)
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "outbox").iterdir())
    assert names.count("CONTRL") == 1 and names.count("APERAK") == 1 and "UTILMD" in names
    assert not node.ready
    text = node.metrics.render().decode()
    assert "mako_actors_commands_total 1.0" in text  # summed over the Ray hosts
    assert 'mako_interchanges_total{status="accepted"} 1.0' in text


def test_a_ray_node_drains_on_sigterm(tmp_path: Path) -> None:
    """`serve --ray` drains on SIGTERM like a local node: `ray.init` installs its own SIGTERM
    handler, which killed the process (exit -15) before its commands and deliveries finished."""
    import os
    import signal
    import subprocess
    import sys

    import ray

    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "mako_actors.cli", "serve", "--ray", "--hosts", "1",
             "--ray-address", ray.get_runtime_context().gcs_address, "--store", str(tmp_path / "store"),
             "--tenant", NB, "--inbox", str(tmp_path / "in"), "--outbox", str(tmp_path / "out"),
             "--http-port", "0"],
            cwd=root, stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "ready" in line, f"serve did not start: {line!r}\n{log.read_text()}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert "drained" in log.read_text()
