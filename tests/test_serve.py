"""`mako-actors serve` end to end: a real subprocess on temporary folders, SIGTERM, restart.

Interchanges are dropped into the inbox the way a gateway does it (written under a dot name,
then renamed), one more is POSTed; CONTRLs and answers must appear in the outbox folder and
on /metrics. SIGTERM arrives while files are still waiting; the restarted node takes the rest,
recognises a retransmission and rejects a broken file: every file is handled exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors.cli import main
from mako_actors.errors import InvalidArgument
from mako_actors.gpke.synthetic import anmeldung
from mako_actors.serve_config import load_config

REPO = Path(__file__).resolve().parents[1]
NB, LFN, LFA = "9900000002009", "9900000001001", "9900000003005"
MALOS = ["51900000012", "41234567896", "20000000016", "31111111113", "60000000004", "70000000011"]


def interchange(index: int) -> bytes:
    now = datetime.now(UTC)
    start = (now + timedelta(days=40)).replace(hour=23, minute=0, second=0, microsecond=0)
    return anmeldung(
        lfn=LFN, nb=NB, malo=MALOS[index], zuordnungsbeginn=start,
        ide_ref=f"TX{index}", control_ref=f"LFN{index}", sent_at=now,
    )  # fmt: skip


def drop(inbox: Path, name: str, raw: bytes) -> None:
    """As a gateway does: write under a dot name, then rename into place."""
    temporary = inbox / f".{name}.part"
    temporary.write_bytes(raw)
    os.replace(temporary, inbox / name)


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def files(directory: Path, prefix: str = "") -> list[str]:
    """The finished files in ``directory``: no ``.tmp`` one, no dot name (a node's inbox lock)."""
    names = (p.name for p in directory.iterdir())
    return sorted(n for n in names if n.startswith(prefix) and not n.endswith(".tmp") and n[0] != ".")


def outbox_empty(store: str) -> bool:
    """Read-only, next to the running node: no message waits to be delivered."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["outbox", "list", "--store", store, "--json"]) == 0
    return json.loads(out.getvalue()) == []


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def node_config(tmp_path: Path, **settings: Any) -> Any:
    """A ``ServeConfig`` on folders under ``tmp_path`` (in, out, done, rejected), no HTTP, fast polls."""
    from mako_actors.serve_config import ServeConfig

    return ServeConfig(
        store=tmp_path / "store", tenants=(NB,), inbox=tmp_path / "in", outbox=tmp_path / "out",
        http_port=None, poll_interval=0.02, **settings,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def in_process(node: Any) -> AsyncIterator[Any]:
    """Run a ``mako_actors.serve.Node`` in this loop until the block ends, then drain it."""
    import asyncio

    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(node.run(stop, lambda _: ready.set()))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        yield node
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)


async def until(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` in this loop (the node runs meanwhile); fail naming ``what``."""
    import asyncio

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Node:
    """One `mako-actors serve` subprocess; always stopped by the test."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mako_actors.cli", "--log-format", "json",
                 "serve", "--config", str(config)],
                cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        watchdog = threading.Timer(90, self.process.kill)  # a hung start must not hang the suite
        watchdog.start()
        try:
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
        finally:
            watchdog.cancel()
        assert "ready (http://127.0.0.1:" in line, f"serve did not start: {line!r}\n{log.read_text()}"
        self.port = int(line.rsplit(":", 1)[1].rstrip(")\n"))

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.kill()


def test_serve_ingests_delivers_drains_on_sigterm_and_resumes(
    tmp_path: Path, nodes: list[Node], capsys: pytest.CaptureFixture[str]
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    done, rejected = tmp_path / "done", tmp_path / "rejected"
    (tmp_path / "masterdata.json").write_text(json.dumps({MALOS[0]: {"current": LFA}}))
    config = tmp_path / "node.toml"
    config.write_text(
        f'store = "store"\ntenants = ["{NB}"]\ninbox = "inbox"\noutbox = "outbox"\n'
        'master_data = "masterdata.json"\nhttp_port = 0\naccept_post = true\npoll_interval = 0.1\n'
    )
    log = tmp_path / "serve.log"
    store = str(tmp_path / "store")

    first = Node(config, log)
    nodes.append(first)
    assert get(first.port, "/healthz")[0] == 200 and get(first.port, "/readyz")[0] == 200
    drop(inbox, "a.edi", interchange(0))
    drop(inbox, "b.edi", interchange(1))
    request = urllib.request.Request(f"http://127.0.0.1:{first.port}/interchanges", data=interchange(2))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        posted = json.loads(response.read())["file"]
    wait_until("three interchanges done", lambda: len(files(done)) == 3)
    wait_until("their answers delivered", lambda: outbox_empty(store))
    assert files(done) == sorted(["a.edi", "b.edi", posted])
    assert len(files(outbox, "CONTRL")) == 3
    assert len(files(outbox, "UTILMD")) >= 3  # 55010 to the old supplier of A, answers to B and C
    text = get(first.port, "/metrics")[1]
    assert metric(text, 'mako_interchanges_total{status="accepted"}') == 3
    assert metric(text, 'mako_messages_total{outcome="started"}') == 3
    assert metric(text, 'mako_outbox_delivered_total{message_type="CONTRL"}') == 3
    assert metric(text, 'mako_outbox_delivered_total{message_type="APERAK"}') == 3
    assert metric(text, "mako_command_duration_seconds_count") >= 3
    assert metric(text, "mako_outbox_delivery_latency_seconds_count") == len(files(outbox))
    assert metric(text, "mako_deadlines_open") == 1  # A waits for its old supplier until 09:00 WT1
    assert "# HELP mako_commit_batch_size" in text and "_created" not in text

    # SIGTERM with files waiting: it drains and exits; what it did not take stays in the inbox.
    drop(inbox, "d.edi", interchange(3))
    drop(inbox, "e.edi", interchange(4))
    assert first.terminate() == 0
    assert "drained and closed" in log.read_text()
    taken = set(files(done))
    assert taken | set(files(inbox)) == {"a.edi", "b.edi", posted, "d.edi", "e.edi"}
    assert not taken & set(files(inbox))

    second = Node(config, log)
    nodes.append(second)
    drop(inbox, "f.edi", interchange(5))
    drop(inbox, "a-again.edi", (done / "a.edi").read_bytes())  # a retransmission
    drop(inbox, "broken.edi", interchange(5).replace(b"UNT+", b"UNT+9").replace(b"LFN5", b"LFN9"))
    wait_until("inbox empty", lambda: not files(inbox))
    wait_until("everything delivered", lambda: outbox_empty(store))
    text = get(second.port, "/metrics")[1]
    assert metric(text, 'mako_interchanges_total{status="duplicate"}') == 1
    assert metric(text, 'mako_interchanges_total{status="rejected"}') == 1
    assert files(rejected) == ["broken.edi"]
    assert files(done) == sorted(["a.edi", "b.edi", posted, "d.edi", "e.edi", "f.edi", "a-again.edi"])
    assert second.terminate() == 0

    # Nothing processed twice, nothing lost: one process per Anmeldung, one receipt per interchange,
    # one CONTRL per distinct interchange (the broken one gets a negative one), an empty outbox.
    capsys.readouterr()
    assert main(["processes", "list", "--store", store, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    gpke = [r for r in rows if r["workflow"] == "gpke-nb"]
    assert sorted(r["malo"] for r in gpke) == sorted(MALOS)
    receipts = sorted(r["status"] for r in rows if r["workflow"] == "mako-inbox")
    assert receipts == ["processed"] * 6 + ["rejected"]
    assert len(files(outbox, "CONTRL")) == 7
    assert len(files(outbox, "APERAK")) == 6
    assert main(["outbox", "list", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_config_file_with_flags_on_top(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(f'store = "db"\ntenants = ["{NB}"]\ninbox = "x/in"\noutbox = "out"\n')
    config = load_config(tmp_path / "node.toml", http_port=8080, poll_interval=None)
    assert config.store == tmp_path / "db"  # relative to the file, not the working directory
    assert config.done_dir == tmp_path / "x" / "done" and config.rejected_dir == tmp_path / "x" / "rejected"
    assert (config.http_port, config.poll_interval, config.tenants) == (8080, 0.5, (NB,))
    with pytest.raises(InvalidArgument, match="missing setting"):
        load_config(None, store=Path("s"))
    with pytest.raises(InvalidArgument, match=r"unknown setting.*colour"):
        load_config(tmp_path / "node.toml", colour="red")
    (tmp_path / "bad.toml").write_text("store = \n")
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(InvalidArgument, match="accept_post must be true or false"):
        load_config(tmp_path / "node.toml", accept_post="yes")
    assert load_config(tmp_path / "node.toml").deadline_grace == 5.0
    assert load_config(tmp_path / "node.toml", deadline_grace="0.5").deadline_grace == 0.5
    with pytest.raises(InvalidArgument, match="deadline_grace must be 0 to 3600 seconds, got -1"):
        load_config(tmp_path / "node.toml", deadline_grace=-1)


async def test_http_endpoints_refuse_what_they_must(tmp_path: Path) -> None:
    import asyncio

    from mako_actors.serve import Node
    from mako_actors.serve_config import ServeConfig

    config = ServeConfig(
        store=tmp_path / "store", tenants=(NB,), inbox=tmp_path / "in", outbox=tmp_path / "out",
        http_port=0, accept_post=True, max_post_bytes=64 * 1024, poll_interval=0.05,
    )  # fmt: skip
    node = Node(config)
    async with in_process(node):
        assert node.http_address is not None
        port = node.http_address[1]

        def post(body: bytes, path: str = "/interchanges") -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        status, body = await asyncio.to_thread(get, port, "/nothing")
        assert status == 404 and "/metrics" in body
        assert await asyncio.to_thread(post, b"") == 400
        assert await asyncio.to_thread(post, b"x" * (64 * 1024 + 1)) == 413
        assert await asyncio.to_thread(post, b"UNA", "/elsewhere") == 404

        def cut_short() -> str:
            """Half the body its Content-Length announces, then the client stops sending."""
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    b"POST /interchanges HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"U" * 50
                )
                sock.shutdown(socket.SHUT_WR)
                return sock.recv(200).decode("latin-1").split("\r\n")[0]

        # Before: 202, and the partner got a CONTRL 4 for an interchange it never finished sending.
        assert (await asyncio.to_thread(cut_short)).endswith(" 400 Bad Request")
        assert not files(tmp_path / "in") and not files(tmp_path / "done")
        assert await asyncio.to_thread(post, b"not EDIFACT at all") == 202

        await until("the garbage in rejected/", lambda: bool(files(tmp_path / "rejected")))  # kept, not lost
        assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
    text = node.metrics.render().decode()
    assert metric(text, 'mako_interchanges_total{status="rejected"}') == 1
    assert metric(text, 'mako_dead_letters_total{source="inbound"}') == 1  # kept with its audit trail
    assert metric(text, "mako_dead_letters_stored") == 1


async def test_a_host_lost_mid_interchange_leaves_the_file_in_the_inbox_for_the_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process command whose outcome is unknown (with --ray: its host died before replying) is
    not the file's fault: it stays in the inbox and the next pass processes it to its end."""
    from mako_actors import CommandOutcomeUnknown, serve
    from mako_actors.serve import Node

    real = serve._TimedHandle.execute_and_enqueue_with
    calls = 0

    async def host_lost_once(self: Any, command: Any, context: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise CommandOutcomeUnknown("the host of node 'b' died before replying")
        return await real(self, command, context)

    monkeypatch.setattr(serve._TimedHandle, "execute_and_enqueue_with", host_lost_once)
    node = Node(node_config(tmp_path))
    async with in_process(node):
        drop(tmp_path / "in", "a.edi", interchange(0))
        await until("the file in done/", lambda: files(tmp_path / "done") == ["a.edi"])
        await until("its answers in the outbox", lambda: len(files(tmp_path / "out")) >= 2)
    # Before: moved to rejected/ with its CONTRL 7 sent and the Anmeldung never answered.
    assert calls == 2 and not files(tmp_path / "rejected") and not files(tmp_path / "in")
    assert len(files(tmp_path / "out", "CONTRL")) == 1
    text = node.metrics.render().decode()
    assert metric(text, 'mako_interchanges_total{status="accepted"}') == 1
    assert metric(text, 'mako_interchanges_total{status="failed"}') == 0


async def test_every_dead_letter_is_counted_by_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mako_dead_letters_total is what an alert watches: a misaddressed interchange (kept as a
    dead letter) and a Frist whose workflow failed count too (before: neither did)."""
    from datetime import timedelta

    from mako_actors.gpke import workflow
    from mako_actors.serve import Node

    def broken(self: Any, deadline: Any, state: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(workflow.GpkeNbWorkflow, "on_deadline", broken)
    (tmp_path / "master.json").write_text(json.dumps({MALOS[0]: {"current": LFA}}))
    node = Node(node_config(tmp_path, deadline_grace=0, master_data=tmp_path / "master.json"))
    sent = datetime.now(UTC) - timedelta(days=3)  # the LFA's Frist for its answer is past
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    start = (sent + timedelta(days=40)).replace(hour=23, minute=0, second=0, microsecond=0)
    late = anmeldung(
        lfn=LFN,
        nb=NB,
        malo=MALOS[0],
        zuordnungsbeginn=start,
        ide_ref="TXL",
        control_ref="LATE1",
        sent_at=sent,
    )
    drop(tmp_path / "in", "late.edi", late)
    os.utime(tmp_path / "in" / "late.edi", (sent.timestamp(), sent.timestamp()))  # received then
    async with in_process(node):
        deadline_letters = 'mako_dead_letters_total{source="deadline"}'
        await until(
            "the Frist's dead letter", lambda: metric(node.metrics.render().decode(), deadline_letters) == 1
        )
        other = anmeldung(
            lfn=LFN, nb="9900000099993", malo=MALOS[1], zuordnungsbeginn=sent + timedelta(days=40),
            ide_ref="TXO", control_ref="OTHER1", sent_at=sent,
        )  # fmt: skip
        drop(tmp_path / "in", "other.edi", other)
        await until(
            "the misaddressed file in rejected/", lambda: files(tmp_path / "rejected") == ["other.edi"]
        )
    text = node.metrics.render().decode()
    assert metric(text, 'mako_dead_letters_total{source="inbound"}') == 1
    assert metric(text, "mako_dead_letters_stored") >= 1


async def test_a_file_the_node_cannot_read_holds_up_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inbox file this node may not read (the gateway wrote it 0600 as another user) is
    skipped and shown on /metrics; the files after it are ingested (before: the node stalled,
    retrying that file first on every pass). Fristen due from its receipt on still wait."""
    from mako_actors.serve import Node

    read = Path.read_bytes
    forbidden = {"a.edi"}

    def read_bytes(self: Path) -> bytes:
        if self.name in forbidden:
            raise PermissionError(13, "Permission denied", str(self))
        return read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    node = Node(node_config(tmp_path))
    async with in_process(node):
        drop(tmp_path / "in", "a.edi", interchange(0))
        os.utime(tmp_path / "in" / "a.edi", (time.time() - 60, time.time() - 60))  # the older one
        drop(tmp_path / "in", "b.edi", interchange(1))
        await until("b.edi in done/", lambda: files(tmp_path / "done") == ["b.edi"])
        await until("the gauge", lambda: metric(node.metrics.render().decode(), "mako_inbox_unreadable") == 1)
        forbidden.clear()  # someone fixed its mode
        await until("a.edi in done/", lambda: "a.edi" in files(tmp_path / "done"))
        await until(
            "the gauge back", lambda: metric(node.metrics.render().decode(), "mako_inbox_unreadable") == 0
        )


async def test_a_scrape_reads_the_levels_from_the_store_not_from_the_last_heartbeat(tmp_path: Path) -> None:
    """/metrics right after a file is handled counts what it stored, however late the heartbeat is."""
    import asyncio

    from mako_actors.serve import Node
    from mako_actors.serve_config import ServeConfig

    class LateHeartbeat(Node):  # a loop too busy to beat: the levels would stay at their start values
        async def _heartbeat(self, store: Any, system: Any, stop: asyncio.Event) -> None:
            await stop.wait()

    config = ServeConfig(
        store=tmp_path / "store", tenants=(NB,), inbox=tmp_path / "in", outbox=tmp_path / "out",
        http_port=0, poll_interval=0.05,
    )  # fmt: skip
    node = LateHeartbeat(config)
    async with in_process(node):
        assert node.http_address is not None
        port = node.http_address[1]
        assert metric((await asyncio.to_thread(get, port, "/metrics"))[1], "mako_dead_letters_stored") == 0
        drop(tmp_path / "in", "junk.edi", b"not EDIFACT at all")  # kept as a dead letter

        await until("the garbage in rejected/", lambda: bool(files(tmp_path / "rejected")))
        text = (await asyncio.to_thread(get, port, "/metrics"))[1]
        assert metric(text, "mako_dead_letters_stored") == 1


def test_a_killed_node_loses_nothing_and_does_nothing_twice(
    tmp_path: Path, nodes: list[Node], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL mid-stream (no drain at all): the restart finishes the rest, exactly once each."""
    config = tmp_path / "node.toml"
    config.write_text(
        f'store = "store"\ntenants = ["{NB}"]\ninbox = "in"\noutbox = "out"\n'
        "http_port = 0\npoll_interval = 0.05\n"
    )
    inbox, done = tmp_path / "in", tmp_path / "done"
    first = Node(config, tmp_path / "serve.log")
    nodes.append(first)
    for index in range(len(MALOS)):
        drop(inbox, f"{index}.edi", interchange(index))
    wait_until("the first file done", lambda: done.exists() and bool(files(done)))
    first.process.kill()
    first.process.wait(timeout=30)

    second = Node(config, tmp_path / "serve.log")
    nodes.append(second)
    store = str(tmp_path / "store")
    wait_until("inbox empty", lambda: not files(inbox))
    wait_until("outbox delivered", lambda: outbox_empty(store))
    assert second.terminate() == 0
    assert files(done) == sorted(f"{index}.edi" for index in range(len(MALOS)))
    capsys.readouterr()
    assert main(["processes", "list", "--store", store, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["malo"] for r in rows if r["workflow"] == "gpke-nb") == sorted(MALOS)  # once each
    assert [r["status"] for r in rows if r["workflow"] == "mako-inbox"] == ["processed"] * len(MALOS)
    assert len(files(tmp_path / "out", "CONTRL")) == len(MALOS)


async def test_a_frist_waits_for_an_answer_received_by_its_instant_that_is_still_in_the_inbox(
    tmp_path: Path,
) -> None:
    """DOMAIN §2 row 7: an LFA objection received (mtime) at 08:59 WT1 counts, however late the
    node takes it: the Frist due at 09:00 waits while a file received by then is in the inbox."""
    import asyncio

    from mako_actors.gpke.synthetic import lfa_answer
    from mako_actors.serve import Node
    from mako_actors.serve_config import ServeConfig

    release = asyncio.Event()

    class Backlog(Node):  # the node is stuck on one file while others wait behind it
        async def _take(self, pipeline: Any, path: Path) -> None:
            if path.name == "busy.edi":
                await release.wait()
            await super()._take(pipeline, path)

    def received(name: str, raw: bytes, at: datetime) -> None:
        """As a gateway does it, keeping the receipt instant as the file's mtime."""
        temporary = tmp_path / "in" / f".{name}.part"
        temporary.write_bytes(raw)
        os.utime(temporary, (at.timestamp(), at.timestamp()))
        os.replace(temporary, tmp_path / "in" / name)

    def sent(pid: str) -> list[str]:
        # (Finished files only: the sender writes under a dot name, then renames.)
        texts = (p.read_text("latin-1") for p in (tmp_path / "out").glob("[!.]*.edi"))
        return [t for t in texts if f"RFF+Z13:{pid}'" in t]

    thu = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    due = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)  # 09:00 WT1 in Berlin, long past on the real clock
    start = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)
    (tmp_path / "in").mkdir()
    (tmp_path / "master.json").write_text(json.dumps({"51900000012": {"current": LFA}}))
    received("anmeldung.edi", anmeldung(
        lfn=LFN, nb=NB, malo="51900000012", zuordnungsbeginn=start, ide_ref="TX1", control_ref="LFN1",
        sent_at=thu,
    ), thu)  # fmt: skip
    received("busy.edi", anmeldung(
        lfn=LFN, nb=NB, malo="41234567896", zuordnungsbeginn=start, ide_ref="TX2", control_ref="LFN2",
        sent_at=due - timedelta(minutes=2),
    ), due - timedelta(minutes=2))  # fmt: skip
    config = ServeConfig(
        store=tmp_path / "store", tenants=(NB,), inbox=tmp_path / "in", outbox=tmp_path / "out",
        master_data=tmp_path / "master.json", http_port=None, poll_interval=0.02, deadline_grace=0,
    )  # fmt: skip
    node = Backlog(config)
    async with in_process(node):
        try:
            await until("the 55010 to the old supplier", lambda: bool(sent("55010")))
            request = sent("55010")[0].split("IDE+24+", 1)[1].split("'", 1)[0]
            objection = lfa_answer(
                lfa=LFA, nb=NB, malo="51900000012", request_ref=request, ide_ref="OBJ1",
                control_ref="LFAOBJ1", sent_at=due - timedelta(minutes=1), confirm=False,
            )  # fmt: skip
            received("objection.edi", objection, due - timedelta(minutes=1))
            await asyncio.sleep(0.5)  # many Fristen polls while the objection waits in the inbox
            assert not sent("55002") and not sent("55003")
            release.set()
            await until("both answers", lambda: len(sent("55002")) + len(sent("55003")) == 2)
        finally:
            release.set()
    (answer,) = sent("55003")  # the objection decided; busy.edi's MaLo had no supplier: 55002
    assert "A50:E_0623" in answer and "RFF+TN:TX1'" in answer
    assert "41234567896" in sent("55002")[0] and not sent("55037")


async def test_done_and_rejected_on_another_filesystem_take_every_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename out of the inbox fails with EXDEV (done/ on another mount): the file is copied
    across instead, keeps its receipt instant, and the inbox moves on to the next file."""
    import errno

    from mako_actors.serve import Node

    inbox, done, rejected = tmp_path / "in", tmp_path / "done", tmp_path / "rejected"
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(src).parent == inbox and Path(dst).parent in (done, rejected):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    node = Node(node_config(tmp_path))
    async with in_process(node):
        received = float(int(time.time()) - 60)
        sent = {"0.edi": interchange(0), "1.edi": interchange(1), "junk.edi": b"no"}
        for name, raw in sent.items():
            drop(inbox, name, raw)
            os.utime(inbox / name, (received, received))

        await until(
            "every file moved out of the inbox",
            lambda: not files(inbox) and len(files(done)) + len(files(rejected)) >= 3,
        )
    assert files(done) == ["0.edi", "1.edi"] and files(rejected) == ["junk.edi"]
    assert not [p.name for p in (*done.iterdir(), *rejected.iterdir()) if p.name.startswith(".")]
    assert (done / "0.edi").read_bytes() == sent["0.edi"]
    assert (done / "0.edi").stat().st_mtime == received  # the receipt instant travels along
    text = node.metrics.render().decode()
    assert metric(text, 'mako_interchanges_total{status="accepted"}') == 2
    assert metric(text, 'mako_interchanges_total{status="duplicate"}') == 0


async def test_a_file_ingested_whose_move_failed_holds_no_frist_and_is_not_ingested_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was decided: the Fristen wait only for the files behind it, the retry only moves it."""
    from mako_actors.inbound import IngestResult
    from mako_actors.serve import Node
    from mako_actors.serve_config import ServeConfig

    inbox, done = tmp_path / "in", tmp_path / "done"
    for directory in (inbox, done, tmp_path / "rejected"):
        directory.mkdir()
    first = datetime(2025, 11, 3, 8, 0, tzinfo=UTC)
    second = first + timedelta(hours=1)
    for name, at in (("a.edi", first), ("b.edi", second)):
        drop(inbox, name, b"UNA")
        os.utime(inbox / name, (at.timestamp(), at.timestamp()))
    ingested: list[str | None] = []

    class Pipeline:
        async def ingest(self, raw: bytes, received_at: datetime, source: str | None = None) -> IngestResult:
            ingested.append(source)
            return IngestResult(source, "accepted", interchange_ref="X1")

    config = ServeConfig(
        store=tmp_path / "store", tenants=(NB,), inbox=inbox, outbox=tmp_path / "out", http_port=None,
        deadline_grace=0,
    )  # fmt: skip
    node = Node(config)
    assert node._fristen_horizon() == first  # a.edi waits: a Frist due from then on waits too
    real_replace = os.replace

    def refused(src: Any, dst: Any) -> None:
        if Path(dst).parent == done:
            raise PermissionError(13, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(PermissionError):
        await node._take(Pipeline(), inbox / "a.edi")
    assert files(inbox) == ["a.edi", "b.edi"]
    assert node._fristen_horizon() == second  # a.edi is decided; b.edi still holds its Fristen
    monkeypatch.setattr(os, "replace", real_replace)
    await node._take(Pipeline(), inbox / "a.edi")
    assert ingested == ["a.edi"] and files(done) == ["a.edi"] and files(inbox) == ["b.edi"]


async def test_a_rejected_file_whose_move_failed_is_rejected_again_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node forgets a failed move when it stops; the file is ingested again, a duplicate.
    Before, every duplicate went to done/: a file answered with CONTRL 4 looked processed."""
    from mako_actors.gpke import GpkeNbWorkflow
    from mako_actors.inbound import DirectHost, InboundPipeline
    from mako_actors.process import system_clock
    from mako_actors.serve import Node
    from stores.lmdb import LmdbStore

    inbox, done, rejected = tmp_path / "in", tmp_path / "done", tmp_path / "rejected"
    for directory in (inbox, done, rejected):
        directory.mkdir()
    drop(inbox, "broken.edi", interchange(0).replace(b"UNT+", b"UNT+9", 1))  # wrong UNT count
    config = node_config(tmp_path)
    real_replace = os.replace

    def refused(src: Any, dst: Any) -> None:
        if Path(dst).parent == rejected:
            raise PermissionError(13, "Permission denied", str(dst))
        real_replace(src, dst)

    async with LmdbStore(config.store) as store:
        host = DirectHost(store, [GpkeNbWorkflow()], system_clock)
        pipeline = InboundPipeline(store, host, tenants=[NB], clock=system_clock)
        monkeypatch.setattr(os, "replace", refused)
        with pytest.raises(PermissionError):
            await Node(config)._take(pipeline, inbox / "broken.edi")
        monkeypatch.setattr(os, "replace", real_replace)
        await Node(config)._take(pipeline, inbox / "broken.edi")  # restarted: the failed move forgotten
        [contrl] = await store.outbox_messages()  # answered once
    assert contrl.payload["action"] == "4"
    assert (files(inbox), files(done), files(rejected)) == ([], [], ["broken.edi"])


def test_a_config_with_a_bad_tenant_or_folders_that_overlap_is_refused(tmp_path: Path) -> None:
    def config(**overrides: Any) -> Any:
        values: dict[str, Any] = {
            "store": tmp_path / "store", "tenants": [NB], "inbox": tmp_path / "in",
            "outbox": tmp_path / "out",
        }  # fmt: skip
        return load_config(None, **(values | overrides))

    with pytest.raises(InvalidArgument, match=r"tenants: '123' is not an MP-ID"):
        config(tenants=[NB, "123"])
    with pytest.raises(InvalidArgument, match=r"inbox and outbox are the same directory"):
        config(outbox=tmp_path / "in")
    with pytest.raises(InvalidArgument, match=r"inbox and done are the same directory"):
        config(done=tmp_path / "x" / ".." / "in")
    with pytest.raises(InvalidArgument, match=r"done and rejected are the same directory"):
        config(done=tmp_path / "d", rejected=tmp_path / "d")
    with pytest.raises(InvalidArgument, match=r"outbox \(.*in/out\) lies inside inbox"):
        config(outbox=tmp_path / "in" / "out")
    with pytest.raises(InvalidArgument, match=r"inbox \(.*out/in\) lies inside outbox"):
        config(inbox=tmp_path / "out" / "in", done=tmp_path / "d", rejected=tmp_path / "r")
    (tmp_path / "link").symlink_to(tmp_path / "in")
    with pytest.raises(InvalidArgument, match=r"inbox and rejected are the same directory"):
        config(rejected=tmp_path / "link")
    # The store as the inbox: before, the node moved its own data.mdb and lock.mdb to rejected/.
    with pytest.raises(InvalidArgument, match=r"store and inbox are the same directory"):
        config(inbox=tmp_path / "store")
    with pytest.raises(InvalidArgument, match=r"done \(.*store/done\) lies inside store"):
        config(done=tmp_path / "store" / "done")
    # A port of 9464.9 was cut to 9464 without a word (TOML reads it as a float)
    with pytest.raises(InvalidArgument, match=r"http_port must be a whole number, not 9464.9"):
        config(http_port=9464.9)
    assert config(http_port=9465.0).http_port == 9465
    assert config(done=tmp_path / "done2").done_dir == tmp_path / "done2"  # apart: fine
    # A store path that is a file: the node's start said only "[Errno 17] File exists".
    (tmp_path / "afile").write_text("")
    with pytest.raises(InvalidArgument, match=r"store .*afile is a file, not a directory"):
        config(store=tmp_path / "afile")
    with pytest.raises(InvalidArgument, match=r"outbox .*afile is a file, not a directory"):
        config(outbox=tmp_path / "afile")
    with pytest.raises(InvalidArgument, match=r"store .*afile/store lies under .*afile, which is not a dir"):
        config(store=tmp_path / "afile" / "store")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidArgument, match=r"inbox .*dangling is a symlink to nothing"):
        config(inbox=tmp_path / "dangling")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dangling", "link"]  # nothing created
    # A share of a replay's MaLos, or a store beside the shares, would decide without their processes.
    (tmp_path / "replay" / "part-0-of-2").mkdir(parents=True)
    with pytest.raises(InvalidArgument, match=r"serve: --store .*part-0-of-2 is part 0 of a replay"):
        config(store=tmp_path / "replay" / "part-0-of-2")
    with pytest.raises(InvalidArgument, match=r"serve: --store .*replay holds the part stores"):
        config(store=tmp_path / "replay")
    # Likewise one partition of a partitioned store, or a node's directory beside its partitions.
    from stores.partitioned import create_partition

    create_partition(tmp_path / "node", 1, 2)
    with pytest.raises(InvalidArgument, match=r"serve: --store .*p0001 is partition 1 of 2 of a partitioned"):
        config(store=tmp_path / "node" / "p0001")
    with pytest.raises(InvalidArgument, match=r"serve: --store .*node is a node's data directory"):
        config(store=tmp_path / "node")


@pytest.mark.parametrize(
    "flags, error",
    [
        (["--tenant", "123"], "tenants: '123' is not an MP-ID"),
        (["--tenant", NB, "--outbox", "in"], "inbox and outbox are the same directory"),
        (["--tenant", NB, "--master-data", "missing.json"], "missing.json"),
    ],
)
def test_serve_refuses_bad_settings_before_it_creates_anything(
    tmp_path: Path, flags: list[str], error: str
) -> None:
    base = ["serve", "--store", "store", "--inbox", "in", "--http-port", "0"]
    if "--outbox" not in flags:
        base += ["--outbox", "out"]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    try:  # a node that accepted them would serve until stopped
        done = subprocess.run(
            [sys.executable, "-m", "mako_actors.cli", *base, *flags],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve {flags} was not refused") from None
    assert done.returncode == 2 and error in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no folder


async def test_a_file_name_that_is_not_utf8_is_answered_and_done(tmp_path: Path) -> None:
    """A Latin-1 ``Müller`` from a Windows gateway: the Anmeldung is answered, not rejected."""
    from mako_actors.serve import Node

    inbox, done = tmp_path / "in", tmp_path / "done"
    node = Node(node_config(tmp_path))
    async with in_process(node):
        drop(inbox, os.fsdecode(b"12-M\xfcller.edi"), interchange(0))

        moved = lambda: not files(inbox) and bool(files(done) or files(tmp_path / "rejected"))  # noqa: E731
        await until("the file moved out of the inbox", moved)
    assert os.listdir(os.fsencode(done)) == [b"12-M\xfcller.edi"]  # under its own name
    text = node.metrics.render().decode()
    assert metric(text, 'mako_interchanges_total{status="accepted"}') == 1
    assert metric(text, 'mako_outbox_delivered_total{message_type="CONTRL"}') == 1


async def test_a_partner_rejecting_one_of_our_messages_is_counted_on_metrics(tmp_path: Path) -> None:
    """The partner counts our message as not received (APERAK 313 / CONTRL 4): the process
    records it, and an operator's alert needs it on /metrics, by type and result."""
    from mako_actors.edifact import parse_interchange, render_outbound
    from mako_actors.serve import Node

    inbox, out, done = tmp_path / "in", tmp_path / "out", tmp_path / "done"
    (tmp_path / "master.json").write_text(json.dumps({MALOS[0]: {"current": LFA}}))
    node = Node(node_config(tmp_path, master_data=tmp_path / "master.json"))
    async with in_process(node):
        drop(inbox, "a.edi", interchange(0))

        def to_lfa() -> list[str]:  # the 0020s of what went to the old supplier (its 55010)
            sent = [parse_interchange((out / name).read_bytes()) for name in files(out)]
            return [i.control_ref for i in sent if i.recipient.id == LFA]

        await until("the 55010 to the old supplier delivered", lambda: bool(to_lfa()))
        [ours] = to_lfa()
        at = datetime.now(UTC)
        rejection = render_outbound(
            "APERAK",
            {
                "reference": "A1",
                "document_number": "AP1",
                "document_date": at,
                "sender_id": LFA,
                "recipient_id": NB,
                "positive": False,
                "referenced_interchange_ref": ours,
                "referenced_date": at,
                "errors": [{"code": "Z35", "text": "Format nicht eingehalten"}],
            },
            envelope={"sender_id": LFA, "recipient_id": NB, "prepared_at": at, "control_ref": "LFAAPK1"},
        )
        receipt = render_outbound(
            "CONTRL",
            {
                "reference": "C1",
                "interchange_ref": ours,
                "interchange_sender_id": NB,
                "interchange_recipient_id": LFA,
                "action": "7",
            },
            envelope={"sender_id": LFA, "recipient_id": NB, "prepared_at": at, "control_ref": "LFACTRL1"},
        )
        drop(inbox, "b.edi", rejection)
        drop(inbox, "c.edi", receipt)
        await until("both acknowledgements done", lambda: len(files(done)) == 3)
    text = node.metrics.render().decode()
    assert metric(text, 'mako_acknowledgements_total{message_type="APERAK",result="rejected"}') == 1
    assert metric(text, 'mako_acknowledgements_total{message_type="CONTRL",result="accepted"}') == 1
    assert metric(text, 'mako_acknowledgements_total{message_type="CONTRL",result="rejected"}') == 0


GAUGE = "mako_processes_awaiting_operator"


async def test_processes_waiting_for_an_operator_are_on_metrics_also_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Geschäftsvorfall 3 waits for the NB to form the Tranche: its LFN gets no answer until an
    operator decides, so an alert needs the count; a restarted node reads it from the store: the
    queue saved with its checkpoint and only the events after it (before, the whole log again,
    ~14 µs of the serving loop per event: minutes for a year's store)."""
    from mako_actors.gpke.awaiting import QUEUE_CHECKPOINT
    from mako_actors.serve import Node
    from stores.lmdb import LmdbStore

    now = datetime.now(UTC)
    start = (now + timedelta(days=40)).replace(hour=23, minute=0, second=0, microsecond=0)
    gv3 = anmeldung(
        lfn=LFN, nb=NB, malo=MALOS[0], zuordnungsbeginn=start, ide_ref="GV3", control_ref="LFNGV3",
        sent_at=now, pid="55077", detail="ZW2",
    )  # fmt: skip
    node = Node(node_config(tmp_path))
    async with in_process(node):
        await until("the store read", lambda: metric(node.metrics.render().decode(), GAUGE) == 0)
        drop(tmp_path / "in", "gv3.edi", gv3)
        drop(tmp_path / "in", "other.edi", interchange(1))  # decided at once: never waits
        await until("the wait counted", lambda: metric(node.metrics.render().decode(), GAUGE) == 1)
    async with LmdbStore(tmp_path / "store") as store:
        position, state = await store.load_checkpoint_state(QUEUE_CHECKPOINT)
    assert position > 0 and isinstance(state, list)  # saved when first caught up
    reads: list[int] = []
    read_all = LmdbStore.read_all

    async def recorded(self: LmdbStore, after_position: int = 0, limit: int = 1000) -> Any:
        reads.append(after_position)
        return await read_all(self, after_position, limit)

    monkeypatch.setattr(LmdbStore, "read_all", recorded)
    again = Node(node_config(tmp_path))
    assert math.isnan(metric(again.metrics.render().decode(), GAUGE))  # not read yet: unknown, not 0
    async with in_process(again):
        await until("the wait read back", lambda: metric(again.metrics.render().decode(), GAUGE) == 1)
    assert reads and reads[0] == position  # not from the first event again
    async with LmdbStore(tmp_path / "store") as store:
        position, state = await store.load_checkpoint_state(QUEUE_CHECKPOINT)
        last = (await read_all(store, 0, 10_000))[-1].global_position
    [waiting] = state  # the GV3's stream, saved with the position it was read up to
    assert waiting.startswith("process/") and position == last


@pytest.mark.parametrize("accept_test", [False, True])
async def test_a_test_system_marks_every_interchange_it_sends_a_test_one(
    tmp_path: Path, accept_test: bool
) -> None:
    """DOMAIN §4: a test interchange never enters production processes. A node that takes them
    (``accept_test``) is a test system: its answers carry UNB 0035 = 1, the 55010 to a third
    party too. Before, they went out as production traffic."""
    from mako_actors.serve import Node

    (tmp_path / "md.json").write_text(json.dumps({MALOS[0]: {"current": LFA}}))
    node = Node(node_config(tmp_path, accept_test=accept_test, master_data=tmp_path / "md.json"))
    for directory in ("in", "out"):
        (tmp_path / directory).mkdir(exist_ok=True)
    async with in_process(node):
        drop(tmp_path / "in", "a.edi", interchange(0))  # a production interchange
        await until("its CONTRL, APERAK, 55036 and 55010 written", lambda: len(files(tmp_path / "out")) == 4)
    written = [(tmp_path / "out" / name).read_bytes() for name in files(tmp_path / "out")]
    unbs = [raw.split(b"'")[1] for raw in written]
    assert all(unb.startswith(b"UNB+") for unb in unbs)
    assert [unb.endswith(b"++++++1") for unb in unbs] == [accept_test] * 4


async def test_a_second_node_on_the_same_store_is_refused(tmp_path: Path) -> None:
    """Two nodes on one store (a failover started while the old node runs) each delivered every
    outbox message, which a gateway sends twice, and on one inbox both took the same file. The
    second is refused, naming the first, and writes nothing; it runs once the first stopped."""
    import asyncio

    from mako_actors.serve import Node

    first = node_config(tmp_path)
    second = dataclasses.replace(node_config(tmp_path / "other"), store=first.store)
    async with in_process(Node(first)):
        served = r"the store .* is in use already \(mako-actors serve, process .*\); one node per store"
        with pytest.raises(InvalidArgument, match=served):
            await Node(second).run(asyncio.Event())
    async with in_process(Node(second)):
        pass


async def test_a_second_node_on_the_same_inbox_is_refused_though_its_store_is_another(
    tmp_path: Path,
) -> None:
    """Only the store was locked: two nodes with two stores on one inbox each ingested and
    answered every interchange (the sender got every CONTRL and APERAK twice) and raced to
    move it to done/ or rejected/. The second is refused, naming the inbox and the first; it
    runs once the first stopped, and the inbox's lock file is no interchange to it."""
    import asyncio

    from mako_actors.serve import Node

    first = node_config(tmp_path)
    second = dataclasses.replace(node_config(tmp_path / "other"), inbox=first.inbox)
    async with in_process(Node(first)):
        served = r"the inbox .*in is in use already \(mako-actors serve, process \d+ on .+\); one node per"
        with pytest.raises(InvalidArgument, match=served):
            await asyncio.wait_for(Node(second).run(asyncio.Event()), 30)  # (not: it serves)
        assert [p.name for p in first.inbox.iterdir()] == [".serve.lock"]
    assert not list(first.inbox.iterdir())  # released and removed on exit
    async with in_process(Node(second)):
        drop(first.inbox, "a.edi", interchange(0))
        await until("a.edi taken", lambda: files(tmp_path / "done") == ["a.edi"])
        assert files(first.inbox) == [] and files(tmp_path / "rejected") == []
    assert len(files(second.outbox, "CONTRL")) == 1 and files(first.outbox) == []
    assert not list(first.inbox.iterdir())


async def test_an_import_or_a_replay_is_refused_on_a_store_a_node_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``masterdata import`` checked a MaLo's journal and appended to it in separate transactions
    while a node could claim the MaLo in between (the import then overrode the Anmeldung's
    decision), and a replay wrote beside the node. Both are refused while it serves, naming it,
    and write nothing; the import runs once the node stopped."""
    import asyncio

    from mako_actors.gpke.supply import supply_key
    from mako_actors.ids import TenantId
    from mako_actors.serve import Node
    from stores.lmdb import LmdbStore

    config = node_config(tmp_path)
    listed = tmp_path / "assignments.csv"
    listed.write_text(f"malo,supplier,from,until\n{MALOS[1]},{LFA},,\n")
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "a.edi").write_bytes(interchange(1))
    importing = ["masterdata", "import", str(listed), "--store", str(config.store), "--tenant", NB]
    replaying = ["replay", str(archive), "--store", str(config.store), "--tenant", NB]
    async with in_process(Node(config)):
        capsys.readouterr()
        assert await asyncio.to_thread(main, importing) == 2
        err = capsys.readouterr().err
        assert "is in use already (mako-actors serve, process" in err and "no node serves" in err
        assert await asyncio.to_thread(main, replaying) == 2
        assert "is in use already (mako-actors serve, process" in capsys.readouterr().err
    async with LmdbStore(config.store) as store:
        assert await store.journal(TenantId.from_party_id(NB), supply_key(MALOS[1])) == []
        assert await store.read_all(0, 10) == []  # the replay decided nothing beside the node
    assert await asyncio.to_thread(main, importing) == 0
    assert not (config.store / "serve.lock").exists()  # released and removed


async def test_a_node_is_refused_on_a_store_a_replay_or_an_import_writes(tmp_path: Path) -> None:
    """A node started while a replay (or an import) writes its store is refused, naming it."""
    import asyncio

    from mako_actors._store_lock import STORE_LOCK, held
    from mako_actors.serve import Node

    config = node_config(tmp_path)
    config.store.mkdir(parents=True)
    refused = r"is in use already \(mako-actors replay, process \d+"
    with (
        held(config.store / STORE_LOCK, "store", "mako-actors replay", "one at a time"),
        pytest.raises(InvalidArgument, match=refused),
    ):
        await asyncio.wait_for(Node(config).run(asyncio.Event()), 30)
    assert not (tmp_path / "out").exists() or files(tmp_path / "out") == []


async def test_a_backlog_is_decided_after_the_fristen_due_among_its_files(tmp_path: Path) -> None:
    """A node starting with files waiting (a restart, a burst) ingested them all before the
    Fristen due among them. The LFA stayed silent past 09:00 on the first Anmeldung; a second
    Anmeldung of the MaLo, received at 10:00, met the first as a running process (55003 A06),
    where a replay (and a node running at 09:00) had already deemed the LFA to agree and asked
    the new supplier, now the MaLo's, about the second (55010)."""
    from mako_actors.edifact import parse_interchange
    from mako_actors.serve import Node
    from tests.inbound.edi import LFA, LFN, LFN2, MALO, THU_1430, berlin
    from tests.inbound.edi import anmeldung as anmeldung_from

    (tmp_path / "master.json").write_text(json.dumps({MALO: {"current": LFA}}))
    inbox = tmp_path / "in"
    inbox.mkdir()
    second_at = berlin(2025, 11, 14, 10)  # the LFA's Frist ended at 09:00
    backlog = {
        "a.edi": (anmeldung_from(LFN), THU_1430),
        "b.edi": (
            anmeldung_from(LFN2, ref="LFN2001", ide="LFN2TX1", start=berlin(2026, 1, 1), sent_at=second_at),
            second_at,
        ),
    }  # fmt: skip
    for name, (raw, at) in backlog.items():
        drop(inbox, name, raw)
        os.utime(inbox / name, (at.timestamp(), at.timestamp()))  # the receipt instant
    async with in_process(Node(node_config(tmp_path, master_data=tmp_path / "master.json"))):
        await until("both decided", lambda: len(files(tmp_path / "done")) == 2)
        await until("the second's answers", lambda: len(files(tmp_path / "out", "UTILMD")) >= 5)

    sent = []
    for name in files(tmp_path / "out", "UTILMD"):
        [message] = parse_interchange((tmp_path / "out" / name).read_bytes()).messages
        sent.append((message.pid, message.recipient.id if message.recipient else None))
    assert ("55003", LFN2) not in sent
    assert ("55010", LFN) in sent and ("55002", LFN) in sent and ("55037", LFA) in sent


async def test_a_file_dated_in_the_future_is_received_now_and_folders_in_the_inbox_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway's clock two days ahead: the file's mtime was taken as its receipt, so it waited
    in the inbox for Fristen not yet due and its CONTRL was dated in the future. A folder or a
    symlink in the inbox stayed there forever, never named in the log."""
    from mako_actors.serve import Node
    from stores.lmdb import LmdbStore

    inbox, done = tmp_path / "in", tmp_path / "done"
    node = Node(node_config(tmp_path))
    with caplog.at_level("WARNING", logger="mako_actors.serve"):
        async with in_process(node):
            (inbox / "sub").mkdir()
            (inbox / "link.edi").symlink_to(tmp_path / "elsewhere.edi")
            (inbox / "UPLOAD.EDI.TMP").write_bytes(interchange(1)[:40])  # a gateway still writing
            drop(inbox, "ahead.edi", interchange(0))
            ahead = time.time() + 2 * 86_400
            os.utime(inbox / "ahead.edi", (ahead, ahead))
            before = datetime.now(UTC)
            await until("the file dated ahead is taken", lambda: files(done) == ["ahead.edi"])
    logged = [r.getMessage() for r in caplog.records]
    assert (inbox / "UPLOAD.EDI.TMP").exists()  # unfinished, whatever its case: not taken
    assert any("ahead.edi" in m and "in the future" in m for m in logged)
    assert any("sub is a folder" in m for m in logged) and any("link.edi is a symlink" in m for m in logged)
    async with LmdbStore(tmp_path / "store") as store:
        [received] = [e for e in await store.read_all(0, 100) if e.event_type == "inbox.interchange_received"]
    assert before <= datetime.fromisoformat(received.payload["received_at"]) <= datetime.now(UTC)


async def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    """Before: "[Errno 98] Address already in use", naming no setting, and after the node had made
    its folders and store directory. Now refused before anything is made; and a node refused on
    a store another serves frees the port it took."""
    import asyncio
    import dataclasses
    import socket

    from mako_actors.serve import Node

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = Node(dataclasses.replace(node_config(tmp_path), http_port=port))
        with pytest.raises(OSError, match=rf"http_port {port}: Address already in use"):
            await node.run(asyncio.Event())
    assert list(tmp_path.iterdir()) == []  # no inbox, outbox, done/rejected or store made
    first = node_config(tmp_path / "first")
    async with in_process(Node(first)):
        second = dataclasses.replace(node_config(tmp_path / "second"), store=first.store, http_port=0)
        refused = Node(second)
        with pytest.raises(InvalidArgument, match="in use already"):
            await refused.run(asyncio.Event())
        assert refused.http_address is not None
        with socket.socket() as again:
            again.bind(refused.http_address)  # released


async def test_the_inbox_gauge_shrinks_as_a_backlog_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mako_inbox_waiting`` was set once per pass: through a backlog of thousands of files it
    showed the pass's starting count until the pass ended. Now each file taken lowers it."""
    from mako_actors.inbound import InboundPipeline
    from mako_actors.serve import Node

    node = Node(node_config(tmp_path))
    seen: list[float] = []
    ingest = InboundPipeline.ingest

    async def counting(self: InboundPipeline, raw: bytes, *args: Any, **kwargs: Any) -> Any:
        seen.append(metric(node.metrics.render().decode(), "mako_inbox_waiting"))
        return await ingest(self, raw, *args, **kwargs)

    monkeypatch.setattr(InboundPipeline, "ingest", counting)
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    for index in range(3):
        drop(tmp_path / "in", f"{index}.edi", interchange(index))
        os.utime(tmp_path / "in" / f"{index}.edi", (time.time() - 60 + index, time.time() - 60 + index))
    async with in_process(node):
        await until("all three in done/", lambda: len(files(tmp_path / "done")) == 3)
        gauge = "mako_inbox_waiting"
        await until("the gauge at 0", lambda: metric(node.metrics.render().decode(), gauge) == 0)
    assert seen == [3, 2, 1]


async def test_dead_letters_an_ingest_wrote_before_it_failed_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misaddressed file holding a second interchange makes two letters; the store failing
    (transiently) on the second left the file in the inbox, and the next pass found the first
    stored already: the node counted one of the two letters it wrote."""
    from mako_actors.errors import StoreError
    from mako_actors.serve import Node
    from stores.lmdb import LmdbStore
    from tests.inbound.test_inbound_limits import FOREIGN
    from tests.inbound.test_inbound_limits import interchange as addressed

    calls = 0
    add = LmdbStore.add_dead_letter

    async def flaky(self: LmdbStore, letter: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreError("a disk hiccup", transient=True)
        return await add(self, letter)

    monkeypatch.setattr(LmdbStore, "add_dead_letter", flaky)
    node = Node(node_config(tmp_path))
    (tmp_path / "in").mkdir(parents=True)
    raw = addressed(nb=FOREIGN) + b"\r\n" + addressed(nb=FOREIGN, control_ref="X2")
    drop(tmp_path / "in", "batch.edi", raw)
    async with in_process(node):
        await until("filed", lambda: files(tmp_path / "rejected") == ["batch.edi"])
        text = node.metrics.render().decode()
    assert calls == 4  # the first letter again (a repeat), then the second
    assert metric(text, 'mako_dead_letters_total{source="inbound"}') == 2
    async with LmdbStore(tmp_path / "store") as store:
        assert len(await store.dead_letters()) == 2


def test_a_copy_a_crash_cut_short_is_not_filed_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between a copy to done/ on another filesystem and the inbox's unlink, the restart
    filed the file again as ``name.1`` beside its own copy. A copy with its bytes and receipt
    instant is taken as done; a file received again under that name is still numbered, and on
    one filesystem (a rename leaves no copy) every receipt is kept."""
    import shutil

    from mako_actors import serve
    from mako_actors.serve import _move

    inbox, done = tmp_path / "in", tmp_path / "done"
    inbox.mkdir()
    done.mkdir()
    raw = interchange(0)
    (inbox / "a.edi").write_bytes(raw)
    shutil.copy2(inbox / "a.edi", done / "a.edi")  # the copy, fsynced and renamed; then killed
    with monkeypatch.context() as across:
        across.setattr(serve, "_one_filesystem", lambda here, there: False)  # done/ elsewhere
        assert _move(inbox / "a.edi", done) == done / "a.edi"
        assert files(inbox) == [] and files(done) == ["a.edi"]
        (inbox / "a.edi").write_bytes(raw)  # the same name and bytes, received again later
        os.utime(inbox / "a.edi", (time.time() + 5, time.time() + 5))
        assert _move(inbox / "a.edi", done) == done / "a.edi.1"
    (inbox / "a.edi").write_bytes(raw)  # one filesystem: the same file received again, kept
    shutil.copystat(done / "a.edi", inbox / "a.edi")
    assert _move(inbox / "a.edi", done) == done / "a.edi.2"


async def test_a_posted_body_a_crash_left_unanswered_is_removed_at_start(tmp_path: Path) -> None:
    """A node killed while it wrote a POSTed body left its temporary file in the inbox for good
    (never answered 202: its sender sends it again); a gateway's own dot files are left alone."""
    from mako_actors.serve import Node

    config = node_config(tmp_path)
    config.inbox.mkdir(parents=True)
    leftover = config.inbox / ".http-20261205T100000000000-0123456789ab.edi.tmp"
    leftover.write_bytes(b"UNA:+.? 'UNB+UN")
    gateway = config.inbox / ".a.edi.part"
    gateway.write_bytes(b"being written")
    async with in_process(Node(config)):
        assert not leftover.exists() and gateway.exists()
