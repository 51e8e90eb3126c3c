"""``replay --message-types``: an operator's archive holds MSCONS, INVOIC, ... beside the GPKE
traffic. Replayed as they are, each is answered with a negative APERAK (Z31) and kept as a dead
letter; with the types the GPKE workflows read, they are skipped, counted by type, and what was
sent about them back then is not compared."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mako_actors import InvalidArgument
from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.cli import main
from mako_actors.replay import load_master_data, parse_message_types, replay_directory
from tests.edifact.edifact_support import SAMPLES
from tests.test_compare_outbound import outbox, write_sent
from tests.test_replay_partitions import received, with_manifest

NB, MSB = "9900000002009", "9900000050008"
GPKE = frozenset({"UTILMD", "CONTRL", "APERAK"})


def mscons(control_ref: str, at: datetime) -> bytes:
    """A small MSCONS of the MSB to us (a meter reading: no GPKE process reads it)."""
    stamp = at.strftime("%y%m%d:%H%M")
    segments = [
        f"UNB+UNOC:3+{MSB}:500+{NB}:500+{stamp}+{control_ref}", "UNH+1+MSCONS:D:04B:UN:2.4c",
        f"BGM+7+{control_ref}M+9", f"DTM+137:{at:%Y%m%d%H%M}?+00:303", f"NAD+MS+{MSB}::293",
        f"NAD+MR+{NB}::293", "UNS+D", "NAD+DP", "LOC+172+51238696781", "LIN+1", "PIA+5+1-1?:1.8.0:SRW",
        "QTY+220:1234.5", "UNT+12+1", f"UNZ+1+{control_ref}",
    ]  # fmt: skip
    return ("UNA:+.? '" + "'".join(segments) + "'").encode()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated archive (``plain``), and the same with MSCONS files received among it (``mixed``)."""
    root = tmp_path_factory.mktemp("types")
    plain = root / "plain"
    generate_archive(plain, ArchiveSpec(days=2, processes=40, seed=4, suppliers=6))
    mixed = root / "mixed"
    shutil.copytree(plain, mixed)
    at = datetime.fromisoformat("2025-11-03T12:00:00+00:00")
    instants = [at + timedelta(hours=i) for i in range(3)]
    extra = [(f"MS{i}.edi", mscons(f"MS{i}", when), when) for i, when in enumerate(instants)]
    sample = SAMPLES / "mscons-restify" / "mscons-message-example-simple.txt"
    if sample.is_file():  # written by others: another UNB, a test flag
        extra.append(("sample.edi", sample.read_bytes(), at))
    with_manifest(mixed, extra)
    return plain, mixed


async def test_other_message_types_are_skipped_and_counted_not_answered(
    archives: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, mixed = archives
    master = load_master_data(plain / "master.json")
    alone = await replay_directory(plain, tmp_path / "plain", tenants=[NB], master_data=master)
    as_is = await replay_directory(mixed, tmp_path / "as-is", tenants=[NB], master_data=master)
    only = await replay_directory(
        mixed, tmp_path / "only", tenants=[NB], master_data=master, message_types=GPKE
    )
    # As they are: three more dead letters, each MSCONS answered (CONTRL, APERAK Z31)
    assert as_is.dead_letters >= alone.dead_letters + 3 and as_is.outbox > alone.outbox
    # Skipped: the run is the run without them, and the report says what it left out
    mscons_files = 4 if (SAMPLES / "mscons-restify").is_dir() else 3
    assert dict(only.skipped_by_type) == {"MSCONS": mscons_files}
    assert only.to_plain()["skipped"] == mscons_files
    assert ("9900000050008", "MS0") in only.skipped_interchanges
    assert {"MS0.edi", "MS1.edi", "MS2.edi"} <= set(only.to_plain()["skipped_files"])  # each named
    for name in ("decision_digest", "dead_letters", "outbox", "files", "messages", "events_appended"):
        assert getattr(only, name) == getattr(alone, name), name


async def test_a_skipped_file_received_last_still_moves_the_clock(
    archives: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, _ = archives
    master = load_master_data(plain / "master.json")
    # The first day of the archive: Anmeldungen whose Fristen are still open at its end.
    times = received(plain)
    cut = min(times.values()) + timedelta(days=1)
    head = tmp_path / "head"
    head.mkdir()
    shutil.copy(plain / "master.json", head / "master.json")
    (head / "manifest.csv").write_text("file,received_at\n")
    early = sorted((at, name) for name, at in times.items() if at < cut)
    with_manifest(head, [(name, (plain / name).read_bytes(), at) for at, name in early])
    late = tmp_path / "late"
    shutil.copytree(head, late)
    at = cut + timedelta(days=4)  # they fall due meanwhile
    with_manifest(late, [("MS9.edi", mscons("MS9", at), at)])
    alone = await replay_directory(head, tmp_path / "alone", tenants=[NB], master_data=master)
    clocked = await replay_directory(head, tmp_path / "until", tenants=[NB], master_data=master, until=at)
    only = await replay_directory(
        late, tmp_path / "only", tenants=[NB], master_data=master, message_types=GPKE
    )
    assert clocked.deadlines_fired > alone.deadlines_fired  # the case is there
    # Before: the run ended at the last UTILMD, as if the MSCONS had never been received.
    assert (only.deadlines_fired, only.decision_digest) == (clocked.deadlines_fired, clocked.decision_digest)


def test_the_cli_skips_them_and_does_not_compare_what_was_sent_about_them(
    archives: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Back then every interchange was answered (the MSCONS too: a CONTRL, an APERAK); a replay
    that skips them must not report those answers as missing."""
    _, mixed = archives
    base = ["replay", str(mixed), "--tenant", NB, "--json"]
    assert main([*base, "--store", str(tmp_path / "then")]) == 0
    sent = write_sent(tmp_path / "sent", asyncio.run(outbox(tmp_path / "then")))
    capsys.readouterr()
    argv = [*base, "--store", str(tmp_path / "now"), "--message-types", "utilmd, CONTRL,APERAK"]
    assert main([*argv, "--compare-outbound", str(sent)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped_by_type"]["MSCONS"] >= 3
    assert report["compare_outbound"]["differences"] == 0, report["compare_outbound"]["rows"][:5]


def test_a_continued_replay_does_not_compare_what_was_sent_about_files_an_earlier_run_skipped(
    archives: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, mixed = archives
    then = ["replay", str(mixed), "--tenant", NB, "--json", "--store", str(tmp_path / "then")]
    assert main(then) == 0
    sent = write_sent(tmp_path / "sent", asyncio.run(outbox(tmp_path / "then")))
    cut = datetime.fromisoformat("2025-11-03T18:00:00+00:00")  # after the MSCONS
    halves = {name: tmp_path / name for name in ("first", "second")}
    for half in halves.values():
        half.mkdir()
        shutil.copy(mixed / "master.json", half / "master.json")
        (half / "manifest.csv").write_text("file,received_at\n")
    for name, at in received(mixed).items():
        with_manifest(halves["first" if at < cut else "second"], [(name, (mixed / name).read_bytes(), at)])
    store = [
        "--tenant",
        NB,
        "--json",
        "--store",
        str(tmp_path / "now"),
        "--message-types",
        "UTILMD,CONTRL,APERAK",
    ]
    assert main(["replay", str(halves["first"]), *store]) == 0
    capsys.readouterr()
    assert main(["replay", str(halves["second"]), *store, "--compare-outbound", str(sent)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == 0  # the MSCONS were in the first half
    # Before: what was sent about the first run's MSCONS (CONTRL, APERAK Z31) was "missing".
    assert report["compare_outbound"]["differences"] == 0, report["compare_outbound"]["rows"][:5]


@pytest.mark.parametrize("text", ["", "UTILMD,MSCONS1", "UTIL-D"])
def test_a_bad_type_list_is_refused_before_anything_is_written(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InvalidArgument, match="six-letter EDIFACT types"):
        parse_message_types(text)
    store = tmp_path / "store"
    argv = ["replay", str(tmp_path), "--store", str(store), "--tenant", NB, "--message-types", text]
    assert main(argv) == 2
    assert "six-letter EDIFACT types" in capsys.readouterr().err
    assert not store.exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sequential_run_with_nothing_to_replay_ends_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    """Every file skipped by type (or a worker's share without a file). Before, --sequential
    ended in an IndexError traceback, exit 1 (the --strict code), another part written."""
    only = tmp_path / "only-mscons"
    only.mkdir()
    (only / "manifest.csv").write_text("file,received_at\n")
    at = datetime.fromisoformat("2025-11-03T12:00:00+00:00")
    with_manifest(only, [("MS0.edi", mscons("MS0", at), at)])
    argv = ["replay", str(only), "--store", str(tmp_path / "s"), "--tenant", NB, "--sequential", "--json"]
    code = main([*argv, "--workers", workers, "--message-types", "UTILMD,CONTRL,APERAK"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["skipped_by_type"] == {"MSCONS": 1} and report["processes_created"] == 0
