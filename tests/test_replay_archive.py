"""Generated archives replayed: the LFA's answers find their 55010, pipelined = sequential, re-runs
change nothing, and the replay CLI's edges (bad store, odd names, unreadable files, bad tenants)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mako_actors import InvalidArgument
from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.cli import main
from mako_actors.edifact import parse_interchange
from mako_actors.replay import archive, decision_digest, decisions_in, load_master_data, replay_directory
from stores.lmdb import LmdbStore

NB = "9900000002009"


def generated(directory: Path, **spec: float) -> Path:
    values = {"days": 3, "processes": 40, "seed": 7} | spec
    generate_archive(directory, ArchiveSpec(**values))  # type: ignore[arg-type]
    return directory


def test_generated_archive_is_deterministic_and_answers_carry_only_rff_tn(tmp_path: Path) -> None:
    a, b = generated(tmp_path / "a"), generated(tmp_path / "b")
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    assert all((a / p.name).read_bytes() == p.read_bytes() for p in b.iterdir())
    items = archive(a)
    assert len(items) == len(list(a.glob("*.edi"))) and items == sorted(items, key=lambda i: i.received_at)
    answers = [
        tx
        for item in items
        if item.path.name.startswith("LA") and "-" not in item.path.name
        for message in parse_interchange(item.path.read_bytes()).messages
        for tx in message.transactions
    ]
    assert answers and {tx.pid for tx in answers} <= {"55011", "55012"}
    assert all(tx.malo is None and tx.request_ref for tx in answers)  # AHB: no LOC+Z16 since FV2504
    with pytest.raises(InvalidArgument, match="already holds"):
        generated(a)


async def test_every_answer_reaches_the_process_whose_55010_it_names(tmp_path: Path) -> None:
    clean = generated(tmp_path / "in", defects=0.0, duplicates=0.0, competing=0.0)
    master = load_master_data(clean / "master.json")
    report = await replay_directory(clean, tmp_path / "s", tenants=[NB], master_data=master)
    answers = sum(1 for p in clean.glob("LA*.edi") for m in parse_interchange(p.read_bytes()).messages)
    assert answers > 10
    assert report.outcomes["routed"] == answers and report.outcomes.get("dead_letter", 0) == 0
    assert report.statuses == {"accepted": report.files}


async def test_pipelined_and_sequential_runs_decide_the_same_and_reruns_change_nothing(
    tmp_path: Path,
) -> None:
    messy = generated(tmp_path / "in", processes=60, defects=0.3, duplicates=0.2, competing=0.2)
    master = load_master_data(messy / "master.json")
    piped = await replay_directory(messy, tmp_path / "p", tenants=[NB], master_data=master, window=64)
    plain = await replay_directory(messy, tmp_path / "s", tenants=[NB], master_data=master, sequential=True)
    assert piped.statuses["rejected"] > 0 and piped.dead_letters > 0 and piped.deadlines_fired > 0
    for name in ("decision_digest", "statuses", "outcomes", "events_appended", "outbox_enqueued"):
        assert getattr(piped, name) == getattr(plain, name), name
    # The pipelined run gathered its decisions as it committed them; the store holds the same.
    assert decision_digest(await decisions_in(tmp_path / "p")) == piped.decision_digest
    assert (piped.deadlines_fired, piped.dead_letters) == (plain.deadlines_fired, plain.dead_letters)
    # The pipelined run reads up to 64 files ahead of what runs (its clock with them), yet
    # stamps each event, answer and dead letter as the sequential run does: an interchange's
    # at its receipt instant, a deadline's at its due instant.
    piped_stamps, plain_stamps = await stamps(tmp_path / "p"), await stamps(tmp_path / "s")
    assert piped_stamps == plain_stamps
    receipt_instants = {item.received_at for item in archive(messy)}
    received = [at for (kind, at) in piped_stamps[0] if kind == "gpke.anmeldung_received"]
    assert received and set(received) <= receipt_instants
    deemed = [at for (kind, at) in piped_stamps[0] if kind == "gpke.lfa_deemed_to_agree"]
    assert deemed and not set(deemed) & receipt_instants  # fired at Fristen, between receipts
    async with LmdbStore(tmp_path / "p") as store:
        before = (len(await store.read_all(0, 100_000)), len(await store.dead_letters(limit=10_000)))
    again = await replay_directory(messy, tmp_path / "p", tenants=[NB], master_data=master)
    assert (again.events_appended, again.outbox_enqueued, again.dead_letters, again.deadlines_fired) == (
        0,
        0,
        0,
        0,
    )
    assert again.decision_digest == piped.decision_digest
    async with LmdbStore(tmp_path / "p") as store:
        after = (len(await store.read_all(0, 100_000)), len(await store.dead_letters(limit=10_000)))
    assert after == before


async def stamps(path: Path) -> tuple[Counter[tuple[str, datetime]], ...]:
    """How many events, outbox messages and dead letters the store holds per (kind, instant)."""
    async with LmdbStore(path) as store:
        events = Counter((e.event_type, e.recorded_at) for e in await store.read_all(0, 100_000))
        outbox = Counter((m.message_type, m.created_at) for m in await store.outbox_messages(100_000))
        letters = Counter((d.kind, d.recorded_at) for d in await store.dead_letters(limit=10_000))
    return events, outbox, letters


def test_two_workers_decide_like_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = generated(tmp_path / "in", processes=150, seed=1, suppliers=6)
    one = tmp_path / "one.json"
    two = tmp_path / "two.json"
    assert (
        main(["replay", str(src), "--store", str(tmp_path / "s1"), "--tenant", NB, "--report", str(one)]) == 0
    )
    argv = ["replay", str(src), "--store", str(tmp_path / "s2"), "--tenant", NB, "--workers", "2"]
    assert main([*argv, "--report", str(two)]) == 0
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["decision_digest"] == b["decision_digest"] and b["mode"] == "pipelined x2"
    # (statuses and rejected files per file of the archive, also for a file cut into pieces)
    for key in ("messages", "processes_created", "deadlines_fired", "outcomes", "statuses", "rejected"):
        assert a[key] == b[key], key
    assert sorted(p.name for p in (tmp_path / "s2").iterdir()) == ["part-0-of-2", "part-1-of-2"]
    assert b["events_appended"] > a["events_appended"]  # bundles were split: a receipt per piece


def test_generate_archive_cli_and_replay_report_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate-archive", str(tmp_path / "in"), "--days", "2", "--processes", "15", "--seed", "3"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == len(list((tmp_path / "in").glob("*.edi")))
    assert main([*argv[:2], "--days", "0"]) == 2
    report_file = tmp_path / "report.json"
    argv = ["replay", str(tmp_path / "in"), "--store", str(tmp_path / "s"), "--tenant", NB, "--json"]
    assert (
        main([*argv, "--master-data", str(tmp_path / "in" / "master.json"), "--report", str(report_file)])
        == 0
    )
    printed, written = json.loads(capsys.readouterr().out), json.loads(report_file.read_text())
    assert printed == written
    for key in (
        "files", "messages", "events_appended", "outbox_enqueued", "processes_created", "deadlines_fired",
        "dead_letters", "errors", "duration_s", "messages_per_s", "decision_digest",
    ):  # fmt: skip
        assert key in written, key
    assert written["messages"] == summary["messages"] + summary["kinds"].get("duplicate", 0)
    # --start: another month's traffic, e.g. to continue the store just replayed
    argv = ["generate-archive", str(tmp_path / "jan"), "--days", "1", "--processes", "5"]
    argv += ["--start", "2026-01-05"]
    assert main(argv) == 0
    capsys.readouterr()
    instants = [row.split(",")[1] for row in (tmp_path / "jan" / "manifest.csv").read_text().splitlines()[1:]]
    assert instants and all(i.startswith("2026-01-0") for i in instants) and min(instants) >= "2026-01-05"
    # refused by argparse, before anything is written
    assert main([*argv[:-1], "2026-13-01"]) == 2
    assert "is not a day YYYY-MM-DD" in capsys.readouterr().err


# -- the edges (issue 11) ----------------------------------------------------------------------


def replay_cli(directory: Path, store: Path, *extra: str) -> int:
    return main(["replay", str(directory), "--store", str(store), "--tenant", NB, *extra])


def test_replay_cli_refuses_a_store_that_is_a_file_or_cannot_be_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = generated(tmp_path / "in", processes=3)
    (tmp_path / "file").write_text("not a store")
    assert replay_cli(src, tmp_path / "file") == 2
    assert "is not a directory" in capsys.readouterr().err
    assert replay_cli(src, Path("/proc/self/no-store-here")) == 2  # cannot be created
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--tenant", "99000000020"], "'99000000020' is not a 13-digit market-partner id"),
        (["--workers", "0"], "window and workers must be >= 1, got 512 and 0"),
        (["--window", "0"], "window and workers must be >= 1, got 0 and 1"),
        (["MISSING"], "is not a directory"),
    ],
)
def test_replay_cli_refuses_bad_arguments_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    src = generated(tmp_path / "in", processes=3)
    store = tmp_path / "store"
    if argv == ["MISSING"]:
        args = ["replay", str(tmp_path / "missing"), "--store", str(store), "--tenant", NB]
    elif argv[0] == "--tenant":
        args = ["replay", str(src), "--store", str(store), *argv]
    else:
        args = ["replay", str(src), "--store", str(store), "--tenant", NB, *argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    # One line naming the problem: no progress bar was started, no store was created.
    assert err.count("\n") == 1 and named in err and err.startswith("mako-actors replay: InvalidArgument")
    assert not store.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_replay_cli_reports_a_store_directory_without_write_permission(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = generated(tmp_path / "in", processes=3)
    (tmp_path / "ro").mkdir(mode=0o500)
    assert replay_cli(src, tmp_path / "ro" / "store") == 2
    assert "Traceback" not in capsys.readouterr().err


def test_replay_cli_takes_directory_names_with_rich_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = generated(tmp_path / "in [/bold] [red]", processes=3)
    (odd / "[red]x.edi").write_bytes(b"[/bold] not edifact")
    rows = (odd / "manifest.csv").read_text() + "[red]x.edi,2025-11-03T12:00:00+00:00\n"
    (odd / "manifest.csv").write_text(rows)
    assert replay_cli(odd, tmp_path / "[/bold]store") == 0  # with the progress bar
    capsys.readouterr()
    assert replay_cli(odd, tmp_path / "[/bold]store2", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert "[red]x.edi" in report["rejected"]
    assert replay_cli(tmp_path / "missing [/bold]", tmp_path / "s3") == 2
    assert "missing [/bold]" in capsys.readouterr().err


def test_replay_cli_names_an_unreadable_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.edi").symlink_to("/proc/self/mem")  # a file whose read fails with EIO, also for root
    assert replay_cli(src, tmp_path / "s", "--json") == 2
    report = json.loads(capsys.readouterr().out)
    assert report["failures"] and report["failures"][0].startswith("x.edi: cannot read")


def test_replay_refuses_tenants_that_are_no_mp_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = generated(tmp_path / "in", processes=3)
    assert main(["replay", str(src), "--store", str(tmp_path / "s"), "--tenant", "abc"]) == 2
    assert "'abc' is not a 13-digit market-partner id" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("name", ["../outside.edi", "/etc/hostname", "sub/../../outside.edi", "."])
def test_a_manifest_naming_files_outside_the_archive_is_refused(tmp_path: Path, name: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (tmp_path / "outside.edi").write_bytes(b"UNA:+.? '")
    (src / "manifest.csv").write_text(f"file,received_at\n{name},2025-11-03T12:00:00+00:00\n")
    with pytest.raises(InvalidArgument, match="outside the archive"):
        archive(src)
    assert replay_cli(src, tmp_path / "s") == 2


@pytest.mark.parametrize("again", ["a.edi", "./a.edi"])
def test_a_manifest_listing_one_file_twice_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], again: str
) -> None:
    """Which of its two instants is the file's receipt? Before, it was replayed at the first and
    was a silent duplicate at the second."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.edi").write_bytes(b"UNA:+.? '")
    (src / "manifest.csv").write_text(
        f"file,received_at\na.edi,2025-11-03T12:00:00+00:00\n{again},2025-11-04T12:00:00+00:00\n"
    )
    expected = rf"manifest.csv:3: '{re.escape(again)}' is listed again \(line 2\)"
    with pytest.raises(InvalidArgument, match=expected):
        archive(src)
    assert replay_cli(src, tmp_path / "s") == 2
    assert "listed again" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("pid", "detail"), [("55001", "ZW4"), ("55077", "ZW0"), ("55077", "ZW1")])
def test_the_generator_answers_every_anmeldung_the_workflow_asks_the_lfa_about(pid: str, detail: str) -> None:
    """The generator asks the workflow whether it sends a 55010 (to answer it by RFF+TN). It
    asked with a command lacking the 55077's Geschäftsvorfall and the 55001's customer, both
    Muss: every generating Anmeldung went unanswered (the LFA always silent). The Produktpaket
    (SG8 SEQ+Z79) is Muss as well."""
    from mako_actors.archive import _Tx, lfa_request_ide
    from mako_actors.edifact import UtilmdTransaction
    from mako_actors.gpke.synthetic import bilanzkreis_of

    at = datetime.fromisoformat("2025-11-13T14:30:00+01:00")
    start = datetime.fromisoformat("2026-02-01T00:00:00+01:00")
    gv2 = detail == "ZW1"  # for a Tranche: its ID in LOC+Z21, its MaLo in the master data
    where = {"tranche": "51000000912"} if gv2 else {"malo": "51238696781"}
    tx = _Tx(
        "anmeldung", "9900000001001", at,
        UtilmdTransaction(
            ide_ref="T1", pid=pid, start=start, transaction_reason="E03",
            transaction_reason_detail=detail, customer_name=("Beispiel", "Paula"), **where,
            product_packages=(("1", bilanzkreis_of("9900000001001")),),
        ),
        interchange_ref="LFN1", message_ref="M1", document_number="D1", lfa="9900000003005",
        tranche_of="51238696781" if gv2 else None,
    )  # fmt: skip
    assert lfa_request_ide(tx, NB) is not None


async def test_generated_defects_reach_the_master_data_steps_of_e_0622(tmp_path: Path) -> None:
    """The generator's master data name each consuming MaLo's MSB and Messlokation (the 55002 names
    them), register each supplier's Bilanzkreis, and among its defects are Anmeldungen with a
    foreign Bilanzkreis (A05), for a stillgelegte MaLo (A02) and for a Neuanlage (A04)."""
    from datetime import UTC

    from mako_actors.edifact import render_outbound
    from tests.conftest import outbound_problems

    src = generated(tmp_path / "in", processes=400, defects=0.2, duplicates=0.0, competing=0.0, seed=3)
    master = load_master_data(src / "master.json")
    await replay_directory(src, tmp_path / "s", tenants=[NB], master_data=master)
    async with LmdbStore(tmp_path / "s") as store:
        sent = await store.pending(10**6, datetime(2030, 1, 1, tzinfo=UTC))
    utilmd = [m for m in sent if m.message_type == "UTILMD"]
    codes = Counter(m.payload["transactions"][0].get("answer_code") for m in utilmd)
    assert codes["A05"] and codes["A02"] and codes["A04"] and codes["A51"]
    confirmations = [m for m in utilmd if m.payload["transactions"][0]["pid"] == "55002"]
    assert all(m.payload["transactions"][0]["messlokationen"] for m in confirmations)
    assert all(outbound_problems(render_outbound("UTILMD", m.payload)) == [] for m in confirmations)


def test_the_report_counts_processes_left_for_an_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Geschäftsvorfall 3 waits for the Tranche the NB forms: its answer is not sent, and the
    report says how many such processes the run left (on 1 and 2 workers alike)."""
    from datetime import UTC

    from mako_actors.gpke.synthetic import anmeldung

    src = generated(tmp_path / "in", processes=20)
    lfn = sorted(json.loads((src / "master.json").read_text())["bilanzkreise"])[0]  # holds its own
    at = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    start = datetime(2025, 12, 14, 23, tzinfo=UTC)  # 15.12., not the 1st: the lead time is kept
    gv3 = anmeldung(
        lfn=lfn, nb=NB, malo="41234567896", zuordnungsbeginn=start, ide_ref="GV3TX1", control_ref="GV3IC1",
        sent_at=at, pid="55077", detail="ZW2",
    )  # fmt: skip
    (src / "gv3.edi").write_bytes(gv3)
    master = json.loads((src / "master.json").read_text())
    (src / "master.json").write_text(json.dumps({**master, "41234567896": {}}))  # the NB's MaLo
    with (src / "manifest.csv").open("a") as manifest:
        manifest.write(f"gv3.edi,{at.isoformat()}\n")
    for workers, store in (("1", "one"), ("2", "two")):
        report = tmp_path / f"{store}.json"
        code = replay_cli(src, tmp_path / store, "--workers", workers, "--report", str(report))
        assert code == 0, capsys.readouterr().err
        assert json.loads(report.read_text())["awaiting_operator"] == 1
        assert "1 process(es) await an operator's decision" in capsys.readouterr().err


async def test_generated_traffic_reaches_the_eeg_ruhende_malo_and_esv_steps(tmp_path: Path) -> None:
    """The generator sends what a grid operator receives beyond plain changes: EEG/KWKG MaLos'
    Anmeldungen (on the 1st of a month, their late ones not), ruhende MaLos in a Kundenanlage
    (STS+7 ZAP, Anmeldungen and Abmeldungen), Geschäftsvorfall 3 and Abmeldungen ending an
    Ersatz-/Grundversorgung (Z41), with the master data the NB holds for them. Replayed, each
    reaches its steps: every confirmed EEG/KWKG Anmeldung starts on a month's 1st, late ones are
    rejected by the EEG codes, ZAP Anmeldungen are confirmed or refused by E_0622 steps 25/26
    (A08/A37), Z41 Abmeldungen by step 80 (A05), a GV3 waits for the operator."""
    from datetime import UTC

    from mako_actors.edifact import render_outbound
    from mako_actors.gpke.calendar import is_month_start
    from tests.conftest import outbound_problems

    src = generated(tmp_path / "in", processes=1500, defects=0.6, duplicates=0.0, competing=0.0, seed=2)
    entries = json.loads((src / "master.json").read_text())
    master = load_master_data(src / "master.json")
    report = await replay_directory(src, tmp_path / "s", tenants=[NB], master_data=master)
    assert report.awaiting_operator > 0  # Geschäftsvorfall 3: the NB forms the Tranche
    async with LmdbStore(tmp_path / "s") as store:
        sent = await store.pending(10**6, datetime(2030, 1, 1, tzinfo=UTC))
    utilmd = [m.payload["transactions"][0] for m in sent if m.message_type == "UTILMD"]

    # The object of each generated Anmeldung by its IDE (an answer names it in RFF+Z13/IDE ref)
    anmeldungen = [
        tx
        for path in src.glob("AN*.edi")
        if "-" not in path.name
        for message in parse_interchange(path.read_bytes()).messages
        for tx in message.transactions
    ]
    objects = {tx.ide_ref: tx.malo for tx in anmeldungen}
    zap = {tx.ide_ref for tx in anmeldungen if "ZAP" in tx.transaction_reasons[1:2]}
    zap_abmeldungen = {
        tx.ide_ref
        for path in src.glob("AB*.edi")
        if "-" not in path.name
        for message in parse_interchange(path.read_bytes()).messages
        for tx in message.transactions
        if "ZAP" in tx.transaction_reasons[1:2]
    }

    def eeg(tx: dict[str, Any]) -> bool:
        entry = entries.get(objects.get(tx["request_ref"]), {})
        return bool(entry.get("eeg_kwkg") or entries.get(entry.get("tranche_of"), {}).get("eeg_kwkg"))

    generating = [tx for tx in utilmd if tx["pid"] in ("55078", "55080")]
    confirmed = [tx for tx in generating if tx["pid"] == "55078" and eeg(tx)]
    assert confirmed and all(is_month_start(datetime.fromisoformat(tx["start"])) for tx in confirmed)
    eeg_rejections = Counter(tx["answer_code"] for tx in generating if tx["pid"] == "55080" and eeg(tx))
    # (the month start and lead time of steps 410-440/620-630, never the Nicht-EEG lead time)
    assert {"A27", "A28", "A29", "A31", "A32"} & set(eeg_rejections)
    assert not {"A30", "A34"} & set(eeg_rejections)
    resting = Counter(
        tx["answer_code"] for tx in utilmd if tx["pid"] in ("55002", "55003") and tx["request_ref"] in zap
    )
    assert resting["A51"] and resting["A08"] and resting["A37"]
    esv = Counter((tx["pid"], tx["answer_code"]) for tx in utilmd if tx.get("transaction_reason") == "Z41")
    assert esv[("55005", "A11")] and esv[("55006", "A05")]
    # a ruhende MaLo's Abmeldung (LOC+Z22 alone) reaches its MaLo's process: confirmed, as the
    # master data's supply is not the journal's (E_0607 steps 20/30 not checked)
    zap_answers = [
        (tx["pid"], tx["answer_code"]) for tx in utilmd if tx.get("request_ref") in zap_abmeldungen
    ]
    assert zap_answers and set(zap_answers) == {("55005", "A11")}
    answers = [m for m in sent if m.message_type == "UTILMD"]
    assert all(outbound_problems(render_outbound("UTILMD", m.payload)) == [] for m in answers)
