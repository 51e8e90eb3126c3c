"""The store inspection commands, on a store the demo built: every command as a table and as JSON.

The demo runs with a gateway that refuses CONTRLs for good and fails APERAKs for now, and
stops its virtual clock on Thursday afternoon, so the store has dead-lettered and retrying
outbox messages and an open LFA-answer Frist to look at.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors.cli import main
from mako_actors.delivery import DirectorySender, OutboxWorker, PermanentDeliveryError, RetryPolicy
from mako_actors.outbox import OutboxMessage
from mako_actors.scheduler import DeadlineScheduler, VirtualClock

Capture = pytest.CaptureFixture[str]
NB = "9900000002009"
MALO_SILENT = "41234567896"  # the old supplier never answers: its Frist stays open


class FlakyGateway(DirectorySender):
    async def send(self, message: OutboxMessage) -> None:
        if message.message_type == "CONTRL":
            raise PermanentDeliveryError("gateway refuses CONTRL")
        if message.message_type == "APERAK":
            raise ConnectionError("gateway down")
        await super().send(message)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import asyncio

    import examples.demo as demo

    thursday_evening = demo.at(16, 30)

    class StopsThursday(DeadlineScheduler):
        async def advance_to(self, clock: VirtualClock, instant: datetime) -> int:
            return await super().advance_to(clock, min(instant, thursday_evening))

    class PatientWorker(OutboxWorker):  # the demo delivers at 2100: keep retrying, never "too old"
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, policy=RetryPolicy(max_age=timedelta(days=400 * 365)), **kwargs)

    data = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "DATA", data)
        patch.setattr(demo, "DirectorySender", FlakyGateway)
        patch.setattr(demo, "DeadlineScheduler", StopsThursday)
        patch.setattr(demo, "OutboxWorker", PatientWorker)
        asyncio.run(demo.main())
    yield data / "store"


@pytest.fixture
def store(demo_store: Path, tmp_path: Path) -> Path:
    """A private copy, for the commands that write."""
    shutil.copytree(demo_store, tmp_path / "store")
    return tmp_path / "store"


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: Capture, *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def digest(store: Path) -> str:
    return hashlib.sha256((store / "data.mdb").read_bytes()).hexdigest()


def silent_process(capsys: Capture, store: Path) -> dict[str, Any]:
    (row,) = run_json(capsys, "processes", "list", "--store", str(store), "--malo", MALO_SILENT)
    return row  # type: ignore[no-any-return]


def test_processes_list_filters_and_prints_a_table(capsys: Capture, demo_store: Path) -> None:
    before = digest(demo_store)
    s = str(demo_store)
    gpke = run_json(capsys, "processes", "list", "--store", s, "--workflow", "gpke-nb")
    assert len(gpke) == 8
    assert {r["status"] for r in gpke} == {"confirmed", "rejected", "not_received", "awaiting_lfa"}
    assert silent_process(capsys, demo_store)["status"] == "awaiting_lfa"
    confirmed = run_json(capsys, "processes", "list", "--store", s, "--status", "confirmed")
    assert confirmed and all(r["status"] == "confirmed" and r["workflow"] == "gpke-nb" for r in confirmed)
    receipts = run_json(capsys, "processes", "list", "--store", s, "--workflow", "mako-inbox")
    assert len(receipts) == 12  # one receipt log per distinct interchange (the retransmission is not new)
    assert len(run_json(capsys, "processes", "list", "--store", s, "--tenant", NB)) == 20
    assert run_json(capsys, "processes", "list", "--store", s, "--tenant", "9900000001001") == []

    code, out, _ = run(capsys, "processes", "list", "--store", s, "--workflow", "gpke-nb")
    assert code == 0
    assert "8 process(es)" in out and MALO_SILENT in out and "awaiting_lfa" in out
    assert silent_process(capsys, demo_store)["process_id"][-8:] in out
    oldest = run_json(capsys, "processes", "list", "--store", s, "--limit", "2")
    assert oldest == run_json(capsys, "processes", "list", "--store", s)[:2]
    code, out, _ = run(capsys, "processes", "list", "--store", s, "--limit", "2")
    assert code == 0 and f"20 process(es) in {s}, the first 2 shown (--limit 0 shows every one)" in out
    assert oldest[0]["process_id"][-8:] in out and oldest[1]["process_id"][-8:] in out
    # A filter nothing can match is named (before: an empty list, exit 0, read as "none")
    for flag, value, said in (
        ("--status", "awaiting-operator", "is no status; one of: ?, awaiting_lfa, awaiting_operator"),
        ("--workflow", "gpke_nb", "is no workflow; one of: gpke-nb, mako-inbox"),
        ("--malo", "abc", "is no MaLo-ID (11 digits)"),
        ("--tenant", "xyz", "neither an MP-ID (13 digits) nor a tenant id prefix"),
    ):
        code, _, err = run(capsys, "processes", "list", "--store", s, flag, value)
        assert code == 1 and said in err, (flag, err)
    assert digest(demo_store) == before  # read-only


def test_processes_show_has_state_deadlines_and_outbox(
    capsys: Capture, demo_store: Path
) -> None:
    s = str(demo_store)
    printed = silent_process(capsys, demo_store)["process_id"][-8:]
    detail = run_json(capsys, "processes", "show", printed, "--store", s)
    assert detail["state"]["malo"] == MALO_SILENT and detail["state"]["status"] == "awaiting_lfa"
    assert [d["label"] for d in detail["deadlines"]] == ["lfa_answer"]
    # the APERAK retrying, the UTILMDs its process sent after it held behind it
    assert {m["message_type"] for m in detail["outbox"]} == {"APERAK", "UTILMD"}

    code, out, _ = run(capsys, "processes", "show", printed, "--store", s)
    assert code == 0
    assert "1 open deadline(s)" in out and "lfa_answer" in out and "waiting to leave" in out


def test_process_ids_resolve_by_a_unique_end_or_beginning_only(capsys: Capture, demo_store: Path) -> None:
    s = str(demo_store)
    code, _, err = run(capsys, "processes", "show", "", "--store", s)
    assert code == 1 and "empty process id" in err
    code, _, err = run(capsys, "processes", "show", "zzzz", "--store", s)
    assert code == 1 and "no process matches" in err
    full = silent_process(capsys, demo_store)["stream_id"]
    assert run_json(capsys, "processes", "show", full, "--store", s)["stream_id"] == full
    process = silent_process(capsys, demo_store)["process_id"]
    assert run_json(capsys, "processes", "show", process[:-1], "--store", s)["stream_id"] == full
    # Fresh ids begin with their time stamp: processes made within a minute share their first 8.
    every = [row["process_id"] for row in run_json(capsys, "processes", "list", "--store", s)]
    sharing = [each for each in every if each.startswith(process[:8])]
    code, _, err = run(capsys, "processes", "show", process[:8], "--store", s)
    if len(sharing) > 1:
        assert code == 1 and f"matches {len(sharing)} processes" in err and "give more of the id" in err
    else:
        assert code == 0


def test_processes_timeline_names_the_causing_interchange(
    capsys: Capture, demo_store: Path
) -> None:
    s = str(demo_store)
    printed = silent_process(capsys, demo_store)["process_id"][-8:]
    entries = run_json(capsys, "processes", "timeline", printed, "--store", s)
    assert [e["event_type"] for e in entries] == ["gpke.anmeldung_received", "gpke.lfa_consulted"]
    assert {e["interchange"] for e in entries} == {"9900000004001:LFN2000001"}
    assert [e["status"] for e in entries] == ["new", "awaiting_lfa"]
    code, out, _ = run(capsys, "processes", "timeline", printed, "--store", s)
    assert code == 0 and "9900000004001:LFN2000001" in out and "gpke.lfa_consulted" in out


def test_outbox_list_due_dead_and_retry(capsys: Capture, store: Path) -> None:
    s = str(store)
    every = run_json(capsys, "outbox", "list", "--store", s)
    rows = [m for m in every if m["attempts"]]
    assert rows and {m["message_type"] for m in rows} == {"APERAK"}
    assert all(m["attempts"] == 1 and "gateway down" in m["last_error"] for m in rows)
    # backed off into 2100; what their processes sent after them waits, due, never attempted
    held = run_json(capsys, "outbox", "list", "--due", "--store", s)
    assert held and all(not m["attempts"] for m in held) and len(held) + len(rows) == len(every)
    assert "UTILMD" in {m["message_type"] for m in held}
    dead = run_json(capsys, "outbox", "list", "--dead", "--store", s)
    assert dead and {d["payload"]["message_type"] for d in dead} == {"CONTRL"}
    code, out, _ = run(capsys, "outbox", "list", "--store", s)
    assert code == 0 and f"{len(every)} outbox message(s)" in out and "gateway down" in out

    retried = run_json(capsys, "outbox", "retry", rows[0]["message_id"][-8:], "--store", s)
    assert retried["message_id"] == rows[0]["message_id"] and retried["attempts"] == 1
    due = run_json(capsys, "outbox", "list", "--due", "--store", s)
    assert [m["message_id"] for m in due if m["attempts"]] == [rows[0]["message_id"]]
    code, out, _ = run(capsys, "outbox", "retry", rows[1]["message_id"][-8:], "--store", s)
    assert code == 0 and f"outbox message {rows[1]['message_id']} (APERAK to" in out and "due now" in out
    code, _, err = run(capsys, "outbox", "retry", "ffffffffffff", "--store", s)
    assert code == 1 and "no outbox message matches" in err
    assert retried["held_behind"] == [] and all(m["stream_id"] != rows[0]["stream_id"] for m in rows[1:])
    # One held behind its process's retrying APERAK: "due now" alone left the operator waiting
    # for a delivery the node never attempts.
    waiting = next(m for m in held if m["stream_id"] in {r["stream_id"] for r in rows[1:]})
    blocker = next(r for r in rows[1:] if r["stream_id"] == waiting["stream_id"])
    told = run_json(capsys, "outbox", "retry", waiting["message_id"], "--store", s)
    assert told["held_behind"] == [blocker["message_id"]]
    code, out, _ = run(capsys, "outbox", "retry", waiting["message_id"], "--store", s)
    assert code == 0 and f"held behind {blocker['message_id']} (APERAK to" in out.replace("\n", " ")


def test_deadlines_list_overdue(capsys: Capture, demo_store: Path) -> None:
    s = str(demo_store)
    (deadline,) = run_json(capsys, "deadlines", "list", "--store", s)
    assert deadline["label"] == "lfa_answer" and deadline["due_at"].startswith("2025-11-14T08:00")
    assert run_json(capsys, "deadlines", "list", "--overdue", "--store", s) == [deadline]  # it is 2026+
    thursday = "2025-11-13T18:00:00+00:00"
    assert run_json(capsys, "deadlines", "list", "--overdue", "--at", thursday, "--store", s) == []
    code, out, _ = run(capsys, "deadlines", "list", "--store", s)
    assert code == 0 and "lfa_answer" in out and "2025-11-14 08:00:00Z" in out and "yes" in out


def test_dead_letters_list_and_requeue(capsys: Capture, store: Path) -> None:
    s = str(store)
    letters = run_json(capsys, "dead-letters", "list", "--store", s)
    kinds = [d["kind"] for d in letters]
    assert "inbound" in kinds and "outbox" in kinds
    outbox_letter = next(d for d in letters if d["kind"] == "outbox")
    inbound_letter = next(d for d in letters if d["kind"] == "inbound")
    code, out, _ = run(capsys, "dead-letters", "list", "--store", s)
    assert code == 0 and f"{len(letters)} dead letter(s)" in out and "UnhandledPid" in out
    assert "55555" in inbound_letter["reason"]  # the unknown PID, named

    requeued = run_json(capsys, "dead-letters", "requeue", str(outbox_letter["position"]), "--store", s)
    assert requeued["requeued_at"] is not None
    original = outbox_letter["payload"]
    due = run_json(capsys, "outbox", "list", "--due", "--store", s)
    [back] = [m for m in due if m["message_type"] == "CONTRL"]
    assert back["message_id"] == original["message_id"] and back["attempts"] == 0
    assert back["idempotency_key"] == original["idempotency_key"]

    code, _, err = run(capsys, "dead-letters", "requeue", str(outbox_letter["position"]), "--store", s)
    assert code == 1 and "requeued already" in err
    other = next(d for d in letters if d["kind"] == "outbox" and d["position"] != outbox_letter["position"])
    code, out, _ = run(capsys, "dead-letters", "requeue", str(other["position"]), "--store", s)
    assert code == 0 and f"dead letter {other['position']} (outbox) is back in the outbox" in out
    code, _, err = run(capsys, "dead-letters", "requeue", str(inbound_letter["position"]), "--store", s)
    assert code == 1 and "send the interchange again" in err
    code, _, err = run(capsys, "dead-letters", "requeue", "999", "--store", s)
    assert code == 1 and "no dead letter at position 999" in err
    listed = run_json(capsys, "dead-letters", "list", "--kind", "outbox", "--store", s)
    assert [d["requeued_at"] is not None for d in listed].count(True) == 2
    code, _, err = run(capsys, "dead-letters", "list", "--kind", "inbound_conflict", "--store", s)
    assert code == 1 and "--kind 'inbound_conflict' is no dead letter kind; one of: deadline, inbound" in err
    # A kind this package writes that the store holds none of: an empty list ("any deadline
    # letters?" asked by a monitoring check), not an error.
    assert run_json(capsys, "dead-letters", "list", "--kind", "deadline", "--store", s) == []


def test_stats_counts_tables_and_map_usage(capsys: Capture, demo_store: Path) -> None:
    s = str(demo_store)
    stats = run_json(capsys, "stats", "--store", s)
    assert stats["tables"]["streams"] == 20 and stats["tables"]["events"] >= 30
    assert stats["tables"]["deadlines"] == 1
    assert 0 < stats["map_used_bytes"] <= stats["file_bytes"] and 0 < stats["map_used_fraction"] < 1
    code, out, _ = run(capsys, "stats", "--store", s)
    assert code == 0 and "streams" in out and "map" in out


def test_a_missing_store_is_a_clear_error(capsys: Capture, tmp_path: Path) -> None:
    code, _, err = run(capsys, "stats", "--store", str(tmp_path / "nothing"))
    assert code == 2 and "no LMDB store" in err
    # A command that writes says the same, with the same exit code (2: usage/IO). Before: 1.
    code, _, err = run(capsys, "outbox", "retry", "abc", "--store", str(tmp_path / "nothing"))
    assert code == 2 and "no LMDB store" in err
    assert not (tmp_path / "nothing").exists()
    code, _, err = run(capsys, "--log-level", "verbose", "stats", "--store", str(tmp_path / "nothing"))
    assert code == 2 and "'verbose' is not one of debug" in err


def test_processes_of_a_workflow_of_ones_own_are_listed_by_its_name(
    capsys: Capture, tmp_path: Path
) -> None:
    """A store of an application's own workflow: its name and statuses are not this package's,
    and are no misspelling (the filters that name what cannot exist compare with the store)."""
    import asyncio

    from mako_actors import Process, TenantId, WorkflowId
    from stores.lmdb import LmdbStore
    from tests.workflows import Ledger, Record

    async def write() -> None:
        async with LmdbStore(tmp_path / "own") as s:
            workflow_id = WorkflowId.new("ledger", "FV2025-10-01")
            ledger = Process(Ledger(), s, TenantId.from_party_id(NB), workflow_id)
            await ledger.execute(Record(amount=5))

    asyncio.run(write())
    s = str(tmp_path / "own")
    [row] = run_json(capsys, "processes", "list", "--store", s, "--workflow", "ledger")
    assert row["workflow"] == "ledger"
    assert run_json(capsys, "processes", "list", "--store", s, "--status", row["status"]) == [row]
    code, _, err = run(capsys, "processes", "list", "--store", s, "--workflow", "ledgr")
    assert code == 1 and "--workflow 'ledgr' is no workflow; one of: gpke-nb, ledger, mako-inbox" in err


def test_a_write_is_refused_while_a_replay_writes_the_store_not_while_a_node_serves_it(
    capsys: Capture, store: Path
) -> None:
    """An operator's decision or a requeue written while a replay runs on the store was missed by
    it (it reads its Fristen and receipts once, when it starts). Beside a serving node it is the
    normal case (found by review)."""
    from mako_actors._store_lock import STORE_LOCK, held

    s = str(store)
    letters = run_json(capsys, "dead-letters", "list", "--store", s)
    position = str(next(d["position"] for d in letters if d["kind"] == "outbox"))
    before = digest(store)
    with held(store / STORE_LOCK, "store", "mako-actors replay", "one at a time"):
        code, _, err = run(capsys, "dead-letters", "requeue", position, "--store", s)
    assert code == 2 and "is in use (mako-actors replay, process" in err
    assert digest(store) == before
    with held(store / STORE_LOCK, "store", "mako-actors serve", "one node per store"):
        code, out, _ = run(capsys, "dead-letters", "requeue", position, "--store", s)
    assert code == 0 and "is back in the outbox" in out


def test_a_lock_file_that_cannot_be_read_is_named_exit_2(
    capsys: Capture, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking who holds the store's lock met a file it may not read: a traceback, exit 1."""
    from mako_actors._store_lock import STORE_LOCK

    lock = store / STORE_LOCK
    lock.write_text("")
    opened = Path.open

    def refused(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == lock:
            raise PermissionError(13, "Permission denied")
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refused)
    code, _, err = run(capsys, "outbox", "retry", "1", "--store", str(store))
    assert code == 2 and f"cannot read {lock}" in err and "Permission denied" in err
