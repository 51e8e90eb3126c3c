"""Structured logs: every line logged while handling an interchange carries its correlation id."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

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
