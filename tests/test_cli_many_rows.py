"""The inspection commands on a store with more rows than one read returns: nothing left out.

``outbox render``, ``outbox retry`` and ``processes show`` used to read the first 10,000 outbox
rows by due time and go on as if that were all (a replay's 64,191 answers rendered as 10,000
files; a message due later could not be retried, "no outbox message matches"); tables said
"10000 outbox message(s)". Now they page through everything, and a table that shows fewer
rows than there are says so.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import (
    CorrelationId,
    Deadline,
    DeadlineId,
    EventId,
    OutboxMessage,
    OutboxMessageId,
    ProcessIdentity,
    TenantId,
    WorkflowId,
)
from mako_actors.cli import main
from mako_actors.edifact import parse_interchange
from mako_actors.ids import ConversationId
from mako_actors.process import Process
from stores.lmdb import LmdbStore
from tests.test_cli_store import run, run_json
from tests.workflows import Ledger, Record

Capture = pytest.CaptureFixture[str]
T0 = datetime(2025, 11, 13, 8, tzinfo=UTC)
TENANT = TenantId.from_party_id("9900000002009")
BUSY = ProcessIdentity.new(TENANT, WorkflowId.new("gpke-nb", "FV2510"))
LEDGER = WorkflowId.new("ledger", "FV2025-10-01")
LATER = datetime(2030, 1, 1, tzinfo=UTC)  # after every CONTRL's due time
MANY = 10_050  # more than the 10,000 rows the old commands read


def contrl(n: int, identity: ProcessIdentity, due: datetime) -> OutboxMessage:
    """A CONTRL answering interchange ``n``: renders, like a replay's."""
    cause = EventId.new()
    payload = {
        "envelope": {
            "sender_id": "9900000002009", "sender_qualifier": "500", "recipient_id": "9900000010044",
            "recipient_qualifier": "500", "prepared_at": "2025-11-03T00:40:47Z", "control_ref": f"N{n:013d}",
        },
        "reference": f"M{n:013d}", "interchange_ref": f"AN{n:011d}", "interchange_sender_id": "9900000010044",
        "interchange_sender_qualifier": "500", "interchange_recipient_id": "9900000002009",
        "interchange_recipient_qualifier": "500", "action": "7", "messages": [], "format_version": "FV2510",
    }  # fmt: skip
    return OutboxMessage(
        message_id=OutboxMessageId.for_event(cause, 0), idempotency_key=f"k-{n}",
        stream_id=identity.stream_id, process_id=identity.process_id, tenant_id=identity.tenant_id,
        causation_event_id=cause, correlation_id=CorrelationId.new(), conversation_id=ConversationId.new(),
        message_type="CONTRL", recipient="9900000010044", payload=payload, created_at=T0, next_attempt_at=due,
    )  # fmt: skip


def deadline(n: int) -> Deadline:
    return Deadline(
        deadline_id=DeadlineId.for_event(EventId.new(), 0), stream_id=BUSY.stream_id,
        process_id=BUSY.process_id, tenant_id=BUSY.tenant_id, workflow_id=BUSY.workflow_id,
        label=f"frist-{n}", due_at=T0 + timedelta(days=n),
    )  # fmt: skip


def build(path: Path, messages: list[OutboxMessage], deadlines: list[Deadline]) -> OutboxMessage:
    """A store with ``messages`` and ``deadlines``, and a ledger process whose one outbox message
    is due at ``LATER``: that message."""

    async def go() -> OutboxMessage:
        async with LmdbStore(path) as store:
            await store.enqueue(messages)
            for d in deadlines:
                await store.register_deadline(d)
            ledger = Process(Ledger(), store, TENANT, LEDGER, clock=lambda: LATER)
            await ledger.execute_and_enqueue(Record(amount=1, notify="9900000000010"))
            (late,) = [
                m for m in await store.outbox_messages(len(messages) + 1) if m.stream_id == ledger.stream_id
            ]
            return late

    return asyncio.run(go())


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OutboxMessage]:
    """MANY messages due a minute apart, and a process's message due after all of them."""
    path = tmp_path_factory.mktemp("big") / "store"
    late = build(
        path,
        [contrl(n, BUSY, T0 + timedelta(minutes=n)) for n in range(MANY)],
        [deadline(n) for n in range(3)],
    )
    return path, late


def test_json_lists_every_row_and_a_table_says_how_many_it_leaves_out(
    capsys: Capture, big: tuple[Path, OutboxMessage]
) -> None:
    store, late = big
    s = str(store)
    rows = run_json(capsys, "outbox", "list", "--store", s)
    assert len(rows) == MANY + 1 and rows[-1]["message_id"] == str(late.message_id)
    assert [r["next_attempt_at"] for r in rows] == sorted(r["next_attempt_at"] for r in rows)
    assert len(run_json(capsys, "outbox", "list", "--store", s, "--limit", "3")) == 3

    code, out, _ = run(capsys, "outbox", "list", "--store", s)
    assert code == 0 and f"{MANY + 1} outbox message(s), the first 1000 shown" in out
    code, out, _ = run(capsys, "outbox", "list", "--store", s, "--due", "--at", "2025-11-13T08:02:30+00:00")
    assert code == 0 and "3 outbox message(s) due" in out and "shown" not in out  # 08:00, :01, :02

    code, out, _ = run(capsys, "deadlines", "list", "--store", s, "--limit", "1")
    assert code == 0 and "3 open deadline(s), the first 1 shown" in out and "frist-0" in out
    assert "frist-1" not in out
    code, out, _ = run(capsys, "deadlines", "list", "--store", s, "--overdue", "--at", "2025-11-14T09:00:00Z")
    assert code == 0 and "2 open deadline(s) overdue" in out and "shown" not in out

    assert main(["outbox", "list", "--store", s, "--limit", "-1"]) == 2  # a usage error
    assert "-1 is negative" in capsys.readouterr().err


def test_retry_and_show_find_a_message_behind_the_first_ten_thousand(
    capsys: Capture, big: tuple[Path, OutboxMessage], tmp_path: Path
) -> None:
    store, late = big
    detail = run_json(capsys, "processes", "show", str(late.process_id), "--store", str(store))
    assert [m["message_id"] for m in detail["outbox"]] == [str(late.message_id)]

    copy = tmp_path / "store"
    copy.mkdir()
    (copy / "data.mdb").write_bytes((store / "data.mdb").read_bytes())
    retried = run_json(capsys, "outbox", "retry", str(late.message_id)[-12:], "--store", str(copy))
    assert retried["message_id"] == str(late.message_id) and retried["next_attempt_at"] < "2030"


def test_render_writes_every_message_across_pages(capsys: Capture, tmp_path: Path) -> None:
    build(tmp_path / "store", [contrl(n, BUSY, T0 + timedelta(minutes=n)) for n in range(1_050)], [])
    out_dir = tmp_path / "out"
    code, out, _ = run(capsys, "outbox", "render", "--store", str(tmp_path / "store"), str(out_dir), "--json")
    result = json.loads(out)
    # The ledger's message has no EDIFACT form: named (and exit code 1), not counted as written.
    assert code == 1 and result["written"] == 1_050 and len(result["unrenderable"]) == 1
    files = sorted(out_dir.iterdir())
    assert len(files) == 1_050
    refs = {parse_interchange(f.read_bytes()).messages[0].segments[0].value(0) for f in files}
    assert refs == {f"M{n:013d}" for n in range(1_050)}


def test_dead_letters_list_is_a_table_of_the_first_ones_like_the_others(
    capsys: Capture, tmp_path: Path
) -> None:
    """README: tables show the first 1,000 rows and say how many there are (--limit N, 0: all).
    Before, dead-letters list had no --limit and printed every row."""
    from mako_actors import DeadLetter

    async def build() -> None:
        async with LmdbStore(tmp_path / "s") as store:
            for n in range(1_005):
                await store.add_dead_letter(DeadLetter(kind="inbound", reason=f"r{n}", recorded_at=T0))

    asyncio.run(build())
    s = str(tmp_path / "s")
    code, out, _ = run(capsys, "dead-letters", "list", "--store", s)
    assert code == 0 and "1005 dead letter(s), the first 1000 shown" in out
    assert len(run_json(capsys, "dead-letters", "list", "--store", s)) == 1_005
    first = run_json(capsys, "dead-letters", "list", "--store", s, "--limit", "2")
    assert [r["reason"] for r in first] == ["r0", "r1"]
