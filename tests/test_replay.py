"""Batch re-processing: archive order, historic Fristen, idempotent re-runs, the CLI."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors import InvalidArgument
from mako_actors.cli import main
from mako_actors.gpke.synthetic import anmeldung
from mako_actors.replay import archive, replay_directory
from stores.lmdb import LmdbStore

NB, LFN, LFA = "9900000002009", "9900000001001", "9900000003005"
THU = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)  # Thu 14:30 CET
START = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)


def write_archive(directory: Path) -> None:
    """Two Anmeldungen, a broken interchange and a retransmission, listed out of receipt order."""
    directory.mkdir()

    def first(malo: str, ref: str) -> bytes:
        return anmeldung(
            lfn=LFN,
            nb=NB,
            malo=malo,
            zuordnungsbeginn=START,
            ide_ref=ref,
            control_ref=f"LFN{ref}",
            sent_at=THU,
        )

    a = first("51900000012", "A")
    broken = f"UNB+UNOC:3+{LFN}:500+{NB}:500+251113:1500+X1'UNZ+1+X1'".encode()
    files = {
        "broken.edi": (broken, THU + timedelta(hours=2)),
        "a-again.edi": (a, THU + timedelta(days=2)),
        "b.edi": (first("41234567896", "B"), THU + timedelta(hours=1)),
        "a.edi": (a, THU),
    }
    rows = ["file,received_at"]
    for name, (raw, when) in files.items():
        (directory / name).write_bytes(raw)
        rows.append(f"{name},{when.isoformat()}")
    (directory / "manifest.csv").write_text("\n".join(rows) + "\n")
    (directory / "master.json").write_text(json.dumps({"51900000012": {"current": LFA}}))


def test_archive_orders_by_receipt_instant(tmp_path: Path) -> None:
    write_archive(tmp_path / "in")
    assert [item.path.name for item in archive(tmp_path / "in")] == [
        "a.edi",
        "b.edi",
        "broken.edi",
        "a-again.edi",
    ]
    (tmp_path / "in" / "manifest.csv").write_text("file,received_at\na.edi,2025-11-13T14:30:00\n")
    with pytest.raises(InvalidArgument, match="no time zone"):
        archive(tmp_path / "in")
    # As a spreadsheet saves it: a byte order mark is no part of the header; semicolons are refused
    # by naming the header (not as "'' lies outside the archive").
    (tmp_path / "in" / "manifest.csv").write_text("\ufefffile,received_at\na.edi,2025-11-13T14:30:00+01:00\n")
    assert [item.path.name for item in archive(tmp_path / "in")] == ["a.edi"]
    (tmp_path / "in" / "manifest.csv").write_text("file;received_at\na.edi;2025-11-13T14:30:00+01:00\n")
    with pytest.raises(InvalidArgument, match="header must name the columns file,received_at"):
        archive(tmp_path / "in")


async def test_replay_fires_fristen_at_historic_times_and_reruns_are_idempotent(tmp_path: Path) -> None:
    from mako_actors.replay import load_master_data

    write_archive(tmp_path / "in")
    master = load_master_data(tmp_path / "in" / "master.json")
    report = await replay_directory(
        tmp_path / "in", tmp_path / "store", tenants=[NB], master_data=master, sequential=True
    )
    assert report.interchanges == 4
    assert dict(report.statuses) == {"accepted": 2, "rejected": 1, "duplicate": 1}
    assert dict(report.outcomes) == {"started": 2}
    assert report.deadlines_fired == 1  # a.edi's LFA stayed silent: 09:00 Fri, before a-again arrived
    async with LmdbStore(tmp_path / "store") as store:
        events = await store.read_all(0, 10_000)
        silence = [e for e in events if e.event_type == "gpke.lfa_deemed_to_agree"]
        assert [e.recorded_at for e in silence] == [datetime(2025, 11, 14, 8, 0, tzinfo=UTC)]
        count = len(events)
    again = await replay_directory(tmp_path / "in", tmp_path / "store", tenants=[NB], master_data=master)
    assert dict(again.statuses) == {"duplicate": 4}
    assert (again.events_appended, again.outbox_enqueued, again.dead_letters) == (0, 0, 0)
    assert again.decision_digest == report.decision_digest
    async with LmdbStore(tmp_path / "store") as store:
        assert len(await store.read_all(0, 10_000)) == count


async def test_pipelined_replay_fires_the_frist_at_its_instant_like_a_sequential_one(tmp_path: Path) -> None:
    from mako_actors.replay import load_master_data

    write_archive(tmp_path / "in")
    master = load_master_data(tmp_path / "in" / "master.json")
    piped = await replay_directory(tmp_path / "in", tmp_path / "p", tenants=[NB], master_data=master)
    plain = await replay_directory(
        tmp_path / "in", tmp_path / "s", tenants=[NB], master_data=master, sequential=True
    )
    assert piped.decision_digest == plain.decision_digest
    assert (piped.deadlines_fired, piped.events_appended, piped.outbox_enqueued) == (
        plain.deadlines_fired,
        plain.events_appended,
        plain.outbox_enqueued,
    )
    async with LmdbStore(tmp_path / "p") as store:
        events = await store.read_all(0, 10_000)
        silence = [e for e in events if e.event_type == "gpke.lfa_deemed_to_agree"]
        assert [e.payload["due_at"] for e in silence] == ["2025-11-14T08:00:00Z"]


async def test_an_lfa_objection_received_at_the_frist_instant_is_in_time(tmp_path: Path) -> None:
    """DOMAIN §2 row 7: answers *later* than 09:00 WT1 are ignored, so one received at 09:00:00
    is in time: the replay ingests it before the Frist due at that instant fires (both modes)."""
    from mako_actors.gpke.synthetic import lfa_answer
    from mako_actors.replay import load_master_data

    write_archive(tmp_path / "in")
    master = load_master_data(tmp_path / "in" / "master.json")
    # The 55010's IDE is derived from its trigger, so a first run tells the answer what to name.
    await replay_directory(tmp_path / "in", tmp_path / "probe", tenants=[NB], master_data=master)
    async with LmdbStore(tmp_path / "probe") as store:
        sent = await store.pending(1_000, datetime(2030, 1, 1, tzinfo=UTC))
    (request,) = [
        m.payload["transactions"][0]["ide_ref"]
        for m in sent
        if m.message_type == "UTILMD" and m.payload["transactions"][0]["pid"] == "55010"
    ]
    due = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)  # 09:00 WT1 (Berlin)
    objection = lfa_answer(
        lfa=LFA, nb=NB, malo="51900000012", request_ref=request, ide_ref="OBJ1",
        control_ref="LFAOBJ1", sent_at=due, confirm=False,
    )  # fmt: skip
    (tmp_path / "in" / "objection.edi").write_bytes(objection)
    with (tmp_path / "in" / "manifest.csv").open("a") as manifest:
        manifest.write(f"objection.edi,{due.isoformat()}\n")
    for name, sequential in (("p", False), ("s", True)):
        report = await replay_directory(
            tmp_path / "in", tmp_path / name, tenants=[NB], master_data=master, sequential=sequential
        )
        assert report.deadlines_fired == 0, name  # the objection discharged the Frist
        async with LmdbStore(tmp_path / name) as store:
            kinds = [e.event_type for e in await store.read_all(0, 10_000)]
            answers = [
                (m.payload["transactions"][0]["pid"], m.payload["transactions"][0].get("answer_code"))
                for m in await store.pending(1_000, datetime(2030, 1, 1, tzinfo=UTC))
                if m.message_type == "UTILMD"
                and m.recipient == LFN
                and m.payload["transactions"][0].get("malo") == "51900000012"
            ]
        assert "gpke.lfa_deemed_to_agree" not in kinds, name
        assert "gpke.late_lfa_answer_ignored" not in kinds, name
        assert answers == [("55036", None), ("55003", "A50")], name


async def test_a_frist_due_at_the_last_instant_fires_after_its_traffic_in_both_modes(tmp_path: Path) -> None:
    from mako_actors.replay import load_master_data

    due = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)  # the Frist of a.edi's Anmeldung
    (tmp_path / "in").mkdir()
    for name, malo, ref, at in (("a.edi", "51900000012", "A", THU), ("b.edi", "41234567896", "B", due)):
        raw = anmeldung(
            lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=ref, control_ref=f"LFN{ref}",
            sent_at=at,
        )  # fmt: skip
        (tmp_path / "in" / name).write_bytes(raw)
    (tmp_path / "in" / "manifest.csv").write_text(
        f"file,received_at\na.edi,{THU.isoformat()}\nb.edi,{due.isoformat()}\n"
    )
    (tmp_path / "in" / "master.json").write_text(json.dumps({"51900000012": {"current": LFA}}))
    master = load_master_data(tmp_path / "in" / "master.json")
    piped = await replay_directory(tmp_path / "in", tmp_path / "p", tenants=[NB], master_data=master)
    plain = await replay_directory(
        tmp_path / "in", tmp_path / "s", tenants=[NB], master_data=master, sequential=True
    )
    assert piped.deadlines_fired == plain.deadlines_fired == 1
    assert piped.decision_digest == plain.decision_digest


def test_replay_cli_reports_json_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_archive(tmp_path / "in")
    argv = ["replay", str(tmp_path / "in"), "--store", str(tmp_path / "s"), "--tenant", NB, "--json"]
    code = main([*argv, "--master-data", str(tmp_path / "in" / "master.json")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0  # completed: the rejected interchange is a result, listed in the report
    assert report["statuses"]["rejected"] == 1 and report["deadlines_fired"] == 1
    assert report["rejected"] == ["broken.edi"] and len(report["decision_digest"]) == 64
    assert main([*argv, "--strict"]) == 0  # a re-run: the broken file is a known duplicate now
    strict = ["replay", str(tmp_path / "in"), "--store", str(tmp_path / "t"), "--tenant", NB, "--strict"]
    assert main([*strict, "--json"]) == 1  # a fresh store: rejected, and --strict says so
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "nope"), "--store", str(tmp_path / "s"), "--tenant", NB]) == 2


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
async def test_a_keyed_dead_letter_is_stored_once(tmp_path: Path, kind: str) -> None:
    from mako_actors.dead_letters import DeadLetter
    from stores.memory import InMemoryStore

    store = InMemoryStore() if kind == "memory" else LmdbStore(tmp_path / "s")
    letter = DeadLetter(kind="inbound", reason="unreadable", payload={"sha256": "ab"}, recorded_at=THU)
    later = letter.model_copy(update={"recorded_at": THU + timedelta(days=1)})
    try:
        first = await store.add_dead_letter(letter.keyed())
        again = await store.add_dead_letter(later.keyed())  # the same letter, found again later
        other = await store.add_dead_letter(letter.model_copy(update={"reason": "other"}).keyed())
        unkeyed = [await store.add_dead_letter(letter) for _ in range(2)]  # no key: every one kept
        assert again.position == first.position == 1 and again.recorded_at == THU
        assert [other.position, *(u.position for u in unkeyed)] == [2, 3, 4]
        assert len(await store.dead_letters()) == 4
    finally:
        await store.aclose()


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_report_lists_rejected_files_in_receipt_order(tmp_path: Path, workers: int) -> None:
    """A file rejected with a CONTRL finishes when the run's next write transaction is written, an
    unreadable one when its dead letter is (the store's writer thread): a pipelined run finished
    them out of order, and ``--workers`` listed them part by part. The report lists them, and
    their errors, as they were received."""
    from mako_actors.replay import replay_directory

    directory = tmp_path / "in"
    directory.mkdir()
    rows = ["file,received_at"]
    for k in range(12):
        name, at = f"{k:02d}.edi", THU + timedelta(minutes=k)
        if k % 2:
            raw = b"not EDIFACT"
        else:
            raw = f"UNB+UNOC:3+{LFN}:500+{NB}:500+251113:1500+X{k}'UNZ+1+X{k}'".encode()
        (directory / name).write_bytes(raw)
        rows.append(f"{name},{at.isoformat()}")
    (directory / "manifest.csv").write_text("\n".join(rows) + "\n")
    report = await replay_directory(directory, tmp_path / "s", tenants=[NB], workers=workers)
    assert report.rejected == [f"{k:02d}.edi" for k in range(12)]
    erred = [line.partition(": ")[0] for line in report.errors]
    assert erred and erred == sorted(erred)  # (the names sort as they were received)


def test_file_names_that_are_not_utf8_are_stored_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Windows gateway's Latin-1 ``Müller`` is no UTF-8: its bytes are kept as ``\\xfc``, the
    replay stores and reports the files instead of aborting on the name."""
    import os

    directory = tmp_path / "in"
    directory.mkdir()
    broken = f"UNB+UNOC:3+{LFN}:500+{NB}:500+251113:1500+X1'UNZ+1+X1'".encode()
    valid = anmeldung(
        lfn=LFN, nb=NB, malo="51900000012", zuordnungsbeginn=START, ide_ref="A", control_ref="LFNA",
        sent_at=THU,
    )  # fmt: skip
    for name, raw, at in (
        (b"12-M\xfcller.edi", valid, THU),
        (b"13-K\xf6ln.edi", broken, THU + timedelta(hours=1)),
        (b"14-\xe4.edi", b"not EDIFACT", THU + timedelta(hours=2)),
    ):
        path = os.path.join(os.fsencode(directory), name)
        with open(path, "wb") as handle:
            handle.write(raw)
        os.utime(path, (at.timestamp(), at.timestamp()))
    argv = ["replay", str(directory), "--store", str(tmp_path / "s"), "--tenant", NB, "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["statuses"] == {"accepted": 1, "rejected": 2} and report["processes_created"] >= 1
    assert report["rejected"] == ["13-K\\xf6ln.edi", "14-\\xe4.edi"]
    assert main(["dead-letters", "list", "--store", str(tmp_path / "s"), "--json"]) == 0
    (letter,) = json.loads(capsys.readouterr().out)
    assert letter["payload"]["source"] == "14-\\xe4.edi" and "14-\\xe4.edi" in letter["reason"]
    assert main(argv) == 0  # a re-run: what had a receipt is a known duplicate; the garbage again
    captured = capsys.readouterr()
    assert json.loads(captured.out)["statuses"] == {"duplicate": 2, "rejected": 1}
    # Said, also with --json: a re-run under other settings decided nothing again.
    assert "nothing was decided again: 2 interchange(s) were received before" in captured.err

    from mako_actors.inbound import storable_name

    assert storable_name("a.edi") == "a.edi" and storable_name("Müller.edi") == "Müller.edi"
    assert storable_name(os.fsdecode(b"12-M\xfcller.edi")) == "12-M\\xfcller.edi"
    assert storable_name("x\ud800.edi") == "x\\ud800.edi"  # no file system makes it; still storable


@pytest.mark.parametrize(
    "flags, error",
    [
        (["--report", "{tmp}/missing/report.json"], "--report {tmp}/missing/report.json: no directory"),
        (["--report", "{tmp}"], "--report {tmp} is a directory"),
        (
            ["--compare-outbound", "{tmp}/in", "--compare-csv", "{tmp}/missing/diff.csv"],
            "--compare-csv {tmp}/missing/diff.csv: no directory",
        ),
        (["--compare-csv", "{tmp}/diff.csv"], "--compare-csv needs --compare-outbound"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], error: str
) -> None:
    write_archive(tmp_path / "in")
    store = tmp_path / "s"
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main(["replay", str(tmp_path / "in"), "--store", str(store), "--tenant", NB, *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert error.format(tmp=tmp_path) in captured.err
    assert not store.exists()  # nothing replayed, nothing written


def test_interchange_files_the_manifest_does_not_list_are_named_not_dropped_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_archive(tmp_path / "in")
    (tmp_path / "in" / "zz-new.edi").write_bytes((tmp_path / "in" / "b.edi").read_bytes())
    (tmp_path / "in" / "late.EDIFACT").write_bytes(b"UNA")
    (tmp_path / "in" / "notes.csv").write_text("not an interchange\n")
    argv = ["replay", str(tmp_path / "in"), "--store", str(tmp_path / "s"), "--tenant", NB]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["files"] == 4  # what the manifest lists is what is replayed
    assert report["not_in_manifest"] == 2
    assert report["not_in_manifest_files"] == ["late.EDIFACT", "zz-new.edi"]
    assert "warning: 2 interchange file(s)" in captured.err and "late.EDIFACT, zz-new.edi" in captured.err
    assert main(argv) == 0
    assert "not_in_manifest: 2" in capsys.readouterr().out
    (tmp_path / "in" / "manifest.csv").unlink()  # without a manifest every interchange file is replayed
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 6 and report["not_in_manifest"] == 0


def test_master_data_that_is_an_assignment_list_points_to_the_import(tmp_path: Path) -> None:
    """The CSV (or JSON list) of `masterdata import` belongs in the store; --master-data says so."""
    from mako_actors.replay import load_master_data

    (tmp_path / "a.csv").write_text("malo,supplier,from,until,measurement\n51900000012,9900000003005,,,ZW6\n")
    (tmp_path / "a.json").write_text('[{"malo": "51900000012", "supplier": "9900000003005"}]')
    for name in ("a.csv", "a.json"):
        with pytest.raises(InvalidArgument, match="goes into the store with `mako-actors masterdata import`"):
            load_master_data(tmp_path / name)
    by_malo = '{"51900000012": {"current": "9900000003005", "measurement": "ZW6"}}'
    (tmp_path / "m.json").write_text("\ufeff" + by_malo, encoding="utf-8")
    master = load_master_data(tmp_path / "m.json")  # a byte order mark is no data
    assert master.suppliers(NB, "51900000012", THU).measurement == "ZW6"


async def test_a_frist_whose_workflow_fails_is_reported_alike_in_both_modes(tmp_path: Path) -> None:
    """A Frist whose workflow fails for good is dead-lettered. The pipelined run counted it as
    a dead letter only, the sequential one also as fired (the scheduler counted every Frist it
    took off the schedule): the two reports of one archive differed in ``deadlines_fired``."""
    from mako_actors.deadlines import Deadline
    from mako_actors.gpke import GpkeNbWorkflow
    from mako_actors.replay import load_master_data

    class FailsAtNine(GpkeNbWorkflow):
        def on_deadline(self, deadline: Deadline, state: Any) -> Any:
            if deadline.label == "lfa_answer":
                raise KeyError("a bug")
            return super().on_deadline(deadline, state)

    write_archive(tmp_path / "in")
    master = load_master_data(tmp_path / "in" / "master.json")
    reports = []
    for name, sequential in (("p", False), ("s", True)):
        report = await replay_directory(
            tmp_path / "in", tmp_path / name, tenants=[NB], master_data=master, sequential=sequential,
            workflow=FailsAtNine(), until=THU + timedelta(days=5),
        )  # fmt: skip
        reports.append(report)
    assert [(r.deadlines_fired, r.dead_letters) for r in reports] == [(reports[0].deadlines_fired, 1)] * 2
    # (The process ids are each run's own.)
    errors = [sorted(re.sub(r"process/[^:]+", "process", e) for e in r.errors) for r in reports]
    assert errors[0] == errors[1] and "deadline lfa_answer of process: KeyError: 'a bug'" in errors[0]
    assert reports[0].decision_digest == reports[1].decision_digest
    for name in ("p", "s"):
        async with LmdbStore(tmp_path / name) as store:
            [letter] = [d for d in await store.dead_letters() if d.kind == "deadline"]
            assert "a bug" in letter.reason


@pytest.mark.parametrize("sequential", [False, True])
async def test_a_bug_in_the_runs_bookkeeping_on_a_frists_commit_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sequential: bool
) -> None:
    """The run's view failing on a Frist's commit (the Frist fired and is stored) must end the
    run. Taken for a failure of the Frist's workflow, the run went on and dead-lettered a Frist
    that had fired (``dead-letters requeue`` would fire it again); sequential, the scheduler
    found it gone and the Frist vanished from the report."""
    from mako_actors import replay as replay_module
    from mako_actors.replay import load_master_data

    observe = replay_module._RunView._observe

    def buggy(self: Any, commit: Any, result: Any) -> None:
        if commit.fired_deadline_id is not None:
            raise RuntimeError("a bug in the view")
        observe(self, commit, result)

    monkeypatch.setattr(replay_module._RunView, "_observe", buggy)
    write_archive(tmp_path / "in")
    master = load_master_data(tmp_path / "in" / "master.json")
    with pytest.raises(RuntimeError, match="a bug in the view"):
        await replay_directory(
            tmp_path / "in", tmp_path / "s", tenants=[NB], master_data=master, sequential=sequential,
            until=THU + timedelta(days=5),
        )  # fmt: skip


def test_a_replay_with_workers_is_refused_whole_on_a_store_another_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only each part store was locked: a second run with --workers failed on the part another
    run held, after its other part was written (and round 1 had read the parts unlocked). The
    whole run holds the store's lock now: refused before anything is written (found by review)."""
    from mako_actors._store_lock import STORE_LOCK, held

    write_archive(tmp_path / "in")
    store = tmp_path / "s"
    store.mkdir()
    argv = ["replay", str(tmp_path / "in"), "--store", str(store), "--tenant", NB, "--workers", "2"]
    with held(store / STORE_LOCK, "store", "mako-actors replay", "one at a time"):
        assert main(argv) == 2
    assert "is in use already (mako-actors replay, process" in capsys.readouterr().err
    assert [p.name for p in store.iterdir()] == []  # no part made, nothing written, lock removed
    assert main(argv) == 0  # (once the other run ended)
    assert sorted(p.name for p in store.iterdir()) == ["part-0-of-2", "part-1-of-2"]


def test_two_files_of_one_name_in_two_folders_are_two_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report counted files by name and receipt instant: two of one name in two folders of
    the archive, received at once, were one file in its statuses."""
    src = tmp_path / "in"
    for folder, malo, ref in (("p1", "51900000012", "A"), ("p2", "41234567896", "B")):
        (src / folder).mkdir(parents=True)
        raw = anmeldung(lfn=LFN, nb=NB, malo=malo, zuordnungsbeginn=START, ide_ref=ref,
                        control_ref=f"LFN{ref}", sent_at=THU)  # fmt: skip
        (src / folder / "x.edi").write_bytes(raw)
    at = THU.isoformat()
    (src / "manifest.csv").write_text(f"file,received_at\np1/x.edi,{at}\np2/x.edi,{at}\n")
    assert main(["replay", str(src), "--store", str(tmp_path / "s"), "--tenant", NB, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 2 and report["statuses"] == {"accepted": 2}
