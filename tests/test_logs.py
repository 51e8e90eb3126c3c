"""Structured logs: every line logged while handling an interchange carries its correlation id."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import CorrelationId, DirectHost, InboundPipeline, VirtualClock
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.gpke.synthetic import anmeldung
from mako_actors.logs import ContextFilter, JsonFormatter, log_context
from stores.lmdb import LmdbStore

NB, LFN = "9900000002009", "9900000001001"
THU = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)


async def test_ingest_logs_json_lines_with_the_interchange_correlation_id(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mako_actors")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with LmdbStore(tmp_path) as store:
            clock = VirtualClock(THU)
            pipeline = InboundPipeline(
                store, DirectHost(store, [GpkeNbWorkflow()], clock), tenants=[NB], clock=clock
            )
            raw = anmeldung(
                lfn=LFN, nb=NB, malo="51900000012", zuordnungsbeginn=datetime(2025, 11, 30, 23, tzinfo=UTC),
                ide_ref="TX1", control_ref="LFN0001", sent_at=THU, pid="55555",
            )  # fmt: skip
            await pipeline.ingest(raw, THU, source="unknown-pid.edi")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING"]
    expected = str(CorrelationId.from_interchange_ref(f"{LFN}:LFN0001"))
    assert all(line["correlation_id"] == expected and line["source"] == "unknown-pid.edi" for line in lines)
    assert "dead-lettered" in lines[1]["message"] and "55555" in lines[1]["message"]


def test_log_context_nests_and_restores() -> None:
    from mako_actors.logs import current_fields

    with log_context(correlation_id="c1"):
        with log_context(process_id="p1", skipped=None):
            assert current_fields() == {"correlation_id": "c1", "process_id": "p1"}
        assert current_fields() == {"correlation_id": "c1"}
    assert current_fields() == {}


def test_the_library_only_adds_a_null_handler() -> None:
    import mako_actors

    logger = logging.getLogger(mako_actors.__name__)
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def test_configure_logging_is_idempotent_and_switches_format() -> None:
    from mako_actors.logs import configure_logging

    logger = logging.getLogger("mako_actors")
    before, old_level = list(logger.handlers), logger.level
    stream = io.StringIO()
    try:
        first = configure_logging("INFO", json_lines=True, stream=stream)
        again = configure_logging("INFO", json_lines=False, stream=stream)
        assert first is again
        assert [h for h in logger.handlers if not isinstance(h, logging.NullHandler)] == [first]
        with log_context(correlation_id="c-1"):
            logging.getLogger("mako_actors.test").info("hello %s", "world")
        (line,) = stream.getvalue().splitlines()  # once, not once per call
        assert line.endswith("INFO    mako_actors.test: hello world correlation_id=c-1")
        configure_logging("WARNING", json_lines=True, stream=stream)
        logging.getLogger("mako_actors.test").info("hidden")
        logging.getLogger("mako_actors.test").warning("shown")
        assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "shown"
    finally:
        logger.handlers[:] = before
        logger.setLevel(old_level)


def test_cli_replay_reports_a_conflict_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The pipeline logs the conflict as a warning; the CLI's report says it: not both."""
    from mako_actors.cli import main

    archive = tmp_path / "archive"
    archive.mkdir()
    start = datetime(2025, 11, 30, 23, tzinfo=UTC)
    for name, malo in (("a.edi", "51900000012"), ("b.edi", "41234567896")):  # same 0020, other bytes
        raw = anmeldung(
            lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=start, ide_ref="TX1", control_ref="LFN0001",
            sent_at=THU,
        )  # fmt: skip
        (archive / name).write_bytes(raw)
    (archive / "manifest.csv").write_text(
        f"file,received_at\na.edi,{THU.isoformat()}\nb.edi,{(THU + timedelta(minutes=5)).isoformat()}\n"
    )
    logger = logging.getLogger("mako_actors")
    before, old_level = list(logger.handlers), logger.level
    try:
        code = main(["replay", str(archive), "--store", str(tmp_path / "store"), "--tenant", NB, "--strict"])
    finally:
        logger.handlers[:] = before
        logger.setLevel(old_level)
    out, err = capsys.readouterr()
    assert code == 1  # --strict: the second file is rejected (without it a rejection is a result, exit 0)
    assert (out + err).count("was received before with other content") == 1


def test_log_context_as_a_decorator_and_entered_again_inside_itself() -> None:
    from mako_actors.logs import current_fields

    seen: list[dict[str, str]] = []
    context = log_context(process_id="p1")

    @context
    def record(depth: int) -> None:
        seen.append(current_fields())
        if depth:
            with context:  # the same object, entered again before it is left
                record(depth - 1)
            seen.append(current_fields())

    record(1)
    assert seen == [{"process_id": "p1"}] * 3 and current_fields() == {}


def test_log_context_as_a_decorator_in_two_threads_at_once() -> None:
    """Calls of one decorated function in two threads, the first in also the first out: each
    sees its fields and leaves its own context as it found it."""
    import threading

    from mako_actors.logs import current_fields

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[dict[str, str]] = []
    after: list[dict[str, str]] = []
    failures: list[BaseException] = []

    @log_context(process_id="p1")
    def record(first: bool) -> None:
        seen.append(current_fields())
        if first:
            first_in.set()
            second_in.wait(timeout=10)  # leave only once the second call has entered
        else:
            second_in.set()
            first_out.wait(timeout=10)

    def run(first: bool) -> None:
        try:
            if not first:
                first_in.wait(timeout=10)
            record(first)
            after.append(current_fields())
        except BaseException as exc:
            failures.append(exc)
        finally:
            if first:
                first_out.set()

    threads = [threading.Thread(target=run, args=(first,)) for first in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert failures == [] and seen == [{"process_id": "p1"}] * 2 and after == [{}, {}]


def test_logging_options_go_before_or_after_the_subcommand() -> None:
    """README: `--log-format json` for a log collector, also as `serve ... --log-format json`."""
    from mako_actors.cli import build_parser

    parser = build_parser()
    after = parser.parse_args(["serve", "--store", "s", "--log-format", "json", "--log-level", "debug"])
    assert (after.log_format, after.log_level) == ("json", "debug")
    before = parser.parse_args(["--log-format", "json", "processes", "list", "--store", "s"])
    assert before.log_format == "json"  # a subcommand that does not repeat it keeps the top-level value
    nested = parser.parse_args(["processes", "list", "--store", "s", "--log-format", "json"])
    assert nested.log_format == "json"
    assert parser.parse_args(["stats", "--store", "s"]).log_format is None
