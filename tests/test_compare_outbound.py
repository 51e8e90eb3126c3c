"""``replay --compare-outbound``: what the replay would send differently from what was sent, for
UTILMD answers, APERAKs and CONTRLs, from real rendered bytes, with 1 and 2 workers."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.cli import main
from mako_actors.compare import compare_outbound
from mako_actors.edifact import render_outbound
from mako_actors.replay import load_master_data, replay_directory
from stores.lmdb import LmdbStore

NB = "9900000002009"
Payload = dict[str, Any]
COMPARED = ("UTILMD", "APERAK", "CONTRL")


@pytest.fixture(scope="module")
def archive_and_outbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Payload]]]:
    """A generated archive with rejected files and refused transactions, and what a replay of it
    sent "back then" (its outbox, in the order it was written)."""
    return _sent_back_then(tmp_path_factory.mktemp("compare"), processes=40)


@pytest.fixture(scope="module")
def bundled_archive_and_outbox(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[tuple[str, Payload]]]:
    """As ``archive_and_outbox``, with enough traffic that two workers cut bundles: answers
    bundled in one interchange whose requests' MaLos went to different partitions."""
    return _sent_back_then(tmp_path_factory.mktemp("compare-bundled"), processes=160)


def _sent_back_then(root: Path, processes: int) -> tuple[Path, list[tuple[str, Payload]]]:
    src = root / "in"
    generate_archive(
        src, ArchiveSpec(days=3, processes=processes, seed=11, defects=0.15, duplicates=0.1, suppliers=6)
    )
    master = load_master_data(src / "master.json")
    asyncio.run(replay_directory(src, root / "then", tenants=[NB], master_data=master))
    return src, asyncio.run(outbox(root / "then"))


async def outbox(store_path: Path) -> list[tuple[str, Payload]]:
    async with LmdbStore(store_path) as store:
        pending = await store.pending(1_000_000, datetime.max.replace(tzinfo=UTC))
    return [(m.message_type, m.payload) for m in pending]


def later(instant: object, hours: int) -> str:
    return (datetime.fromisoformat(str(instant)) + timedelta(hours=hours)).isoformat()


def altered(messages: list[tuple[str, Payload]]) -> tuple[list[tuple[str, Payload]], dict[str, Any]]:
    """What the operator sent: the outbox with, per message type, one message dropped, one with
    another code, one sent hours later and one the replay would not send; and what was done."""
    kept = list(messages)
    done: dict[str, Any] = {}

    def pick(kind: str, test: Any, skip: int = 0) -> int:
        return [i for i, (t, p) in enumerate(kept) if t == kind and test(p)][skip]

    to_supplier = ("55002", "55005")
    utilmd = [pick("UTILMD", lambda p: p["transactions"][0]["pid"] in to_supplier, k) for k in range(4)]
    p = kept[utilmd[1]][1]
    kept[utilmd[1]] = ("UTILMD", {**p, "transactions": [{**p["transactions"][0], "answer_code": "A99"}]})
    p = kept[utilmd[2]][1]
    kept[utilmd[2]] = ("UTILMD", {**p, "document_date": later(p["document_date"], 3)})
    p = kept[utilmd[3]][1]
    kept.append(("UTILMD", {**p, "transactions": [{**p["transactions"][0], "request_ref": "NOSUCHIDE"}]}))

    aperak = [pick("APERAK", lambda p: p["positive"], k) for k in range(4)]
    p = kept[aperak[1]][1]
    kept[aperak[1]] = ("APERAK", {**p, "positive": False, "errors": [{"code": "Z18", "text": "recoded"}]})
    done["aperak_recoded"] = p["referenced_transaction_ref"]
    p = kept[aperak[2]][1]
    kept[aperak[2]] = ("APERAK", {**p, "document_date": later(p["document_date"], 5)})
    kept.append(("APERAK", {**kept[aperak[3]][1], "referenced_interchange_ref": "NOSUCHIC"}))
    assert any(t == "APERAK" and not p["positive"] for t, p in kept), "the archive must refuse something"

    contrl = [pick("CONTRL", lambda p: p["action"] == "7", k) for k in range(4)]
    p = kept[contrl[1]][1]
    kept[contrl[1]] = ("CONTRL", {**p, "action": "4", "error_code": "18"})
    done["contrl_recoded"] = p["interchange_ref"]
    p = kept[contrl[2]][1]
    envelope = {**p["envelope"], "prepared_at": later(p["envelope"]["prepared_at"], 2)}
    kept[contrl[2]] = ("CONTRL", {**p, "envelope": envelope})
    kept.append(("CONTRL", {**kept[contrl[3]][1], "interchange_ref": "NOSUCHIC"}))
    assert any(t == "CONTRL" and p["action"] == "4" for t, p in kept), "the archive must reject something"

    dropped = {utilmd[0], aperak[0], contrl[0]}
    done["dropped"] = [messages[i] for i in sorted(dropped)]
    return [m for i, m in enumerate(kept) if i not in dropped], done


def write_sent(directory: Path, messages: list[tuple[str, Payload]]) -> Path:
    directory.mkdir()
    for index, (kind, payload) in enumerate(messages):
        (directory / f"{index:05d}-{kind}.edi").write_bytes(render_outbound(kind, payload))
    return directory


def compare(capsys: pytest.CaptureFixture[str], src: Path, store: Path, sent: Path, *extra: str) -> Any:
    """``replay --json --compare-outbound sent``: the printed report."""
    capsys.readouterr()
    argv = [
        "replay",
        str(src),
        "--store",
        str(store),
        "--tenant",
        NB,
        "--json",
        "--compare-outbound",
        str(sent),
    ]
    assert main([*argv, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def by_kind_and_type(rows: list[dict[str, str]]) -> Counter[tuple[str, str]]:
    return Counter((row["kind"], "UTILMD" if row["pid"].isdigit() else row["pid"]) for row in rows)


def test_differences_in_utilmd_aperak_and_contrl_are_named_per_process_and_interchange(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, messages = archive_and_outbox
    sent_messages, done = altered(messages)
    sent = write_sent(tmp_path / "sent", sent_messages)
    (sent / "notes.txt").write_text("not an interchange")
    csv_file = tmp_path / "diff.csv"
    report = compare(capsys, src, tmp_path / "now", sent, "--compare-csv", str(csv_file))["compare_outbound"]
    rows = report["rows"]
    assert len(report["unreadable"]) == 1 and report["unreadable"][0].startswith("notes.txt")
    expected = {(kind, t): 1 for kind in ("missing", "extra", "other code", "other Frist") for t in COMPARED}
    assert by_kind_and_type(rows) == expected and report["differences"] == 12
    assert report["by_kind"] == {"extra": 3, "missing": 3, "other Frist": 3, "other code": 3}
    named = {(row["kind"], row["pid"] if not row["pid"].isdigit() else "UTILMD"): row for row in rows}
    assert named[("missing", "UTILMD")]["key"].endswith(":TN:NOSUCHIDE")
    assert ":ACE:NOSUCHIC:TN:" in named[("missing", "APERAK")]["key"]
    assert named[("missing", "CONTRL")]["key"].endswith(":UCI:NOSUCHIC")
    recoded = named[("other code", "APERAK")]
    assert recoded["key"].endswith(f":TN:{done['aperak_recoded']}")
    assert recoded["sent"].startswith("APERAK 313 Z18 at") and recoded["replay"].startswith("APERAK 312 at")
    recoded = named[("other code", "CONTRL")]
    assert recoded["key"].endswith(f":UCI:{done['contrl_recoded']}")
    assert recoded["sent"].startswith("CONTRL 4 18 at") and recoded["replay"].startswith("CONTRL 7 at")
    dropped = dict(done["dropped"])  # extra: the replay would send it, it was not sent
    extra = named[("extra", "UTILMD")]
    assert extra["key"].endswith(f":TN:{dropped['UTILMD']['transactions'][0]['request_ref']}")
    assert extra["sent"] == "" and extra["replay"].startswith(dropped["UTILMD"]["transactions"][0]["pid"])
    extra = named[("extra", "APERAK")]
    assert f":ACE:{dropped['APERAK']['referenced_interchange_ref']}:" in extra["key"]
    assert extra["sent"] == "" and extra["replay"].startswith("APERAK 312 at")
    extra = named[("extra", "CONTRL")]
    assert extra["key"].endswith(f":UCI:{dropped['CONTRL']['interchange_ref']}")
    assert extra["sent"] == "" and extra["replay"].startswith("CONTRL 7 at") and extra["process"]
    lines = csv_file.read_text().splitlines()
    assert lines[0] == "kind,key,pid,process,sent,replay" and len(lines) == 13

    only = compare(capsys, src, tmp_path / "now", sent, "--compare-types", "UTILMD")["compare_outbound"]
    assert only["types"] == ["UTILMD"]
    assert by_kind_and_type(only["rows"]) == {key: 1 for key in expected if key[1] == "UTILMD"}


def test_what_was_sent_unaltered_shows_no_difference_with_one_or_two_workers(
    bundled_archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, messages = bundled_archive_and_outbox
    kinds = Counter(kind for kind, _ in messages)
    assert kinds["APERAK"] > 0 and kinds["CONTRL"] > 0
    # Among them a ruhende MaLo's 55010 (its LOC+Z22 alone) and 55002 (the Kundenanlage's LOC+Z16
    # before it): compared as the ruhende MaLo's, not as "missing" beside "extra"
    utilmd = [payload["transactions"][0] for kind, payload in messages if kind == "UTILMD"]
    assert any(tx["pid"] == "55010" and tx.get("malo_qualifier") == "Z22" for tx in utilmd)
    assert any(tx["pid"] == "55002" and tx.get("resting_malo") for tx in utilmd)
    sent = write_sent(tmp_path / "sent", messages)
    one = compare(capsys, src, tmp_path / "one", sent)
    assert one["compare_outbound"]["differences"] == 0, one["compare_outbound"]["rows"][:5]
    # Two workers acknowledge each piece of a split bundle: one CONTRL of the whole interchange.
    two = compare(capsys, src, tmp_path / "two", sent, "--workers", "2")
    assert two["events_appended"] > one["events_appended"]  # bundles were split: a receipt per piece
    # Counted per file of the archive, not per piece (the pieces' statuses summed to more files).
    assert two["statuses"] == one["statuses"] and sum(two["statuses"].values()) == two["files"]
    assert two["rejected"] == one["rejected"]
    # Nothing may differ: no CONTRL per piece, no APERAK, no UTILMD, and a broken retransmission
    # of a split bundle still gets CONTRL 4/26 (mako_actors._partition places it with a piece).
    assert two["compare_outbound"]["differences"] == 0, two["compare_outbound"]["rows"][:5]
    assert two["dead_letters"] == one["dead_letters"]


def test_bad_compare_settings_exit_2_before_anything_is_replayed(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, _ = archive_and_outbox
    (tmp_path / "sent").mkdir()
    for extra, named in (
        (
            ["--compare-outbound", str(tmp_path / "sent"), "--compare-types", "UTILMD,ORDERS"],
            "--compare-types",
        ),
        (["--compare-outbound", str(tmp_path / "nothing")], "is not a directory"),
        (["--compare-outbound", str(tmp_path / "sent"), "--compare-tolerance", "-5"], "--compare-tolerance"),
    ):
        argv = ["replay", str(src), "--store", str(tmp_path / "s"), "--tenant", NB, *extra]
        assert main(argv) == 2
        assert named in capsys.readouterr().err and not (tmp_path / "s").exists()


SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "edifact"


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no shared EDIFACT samples next to the repository")
async def test_acknowledgements_written_by_others_are_keyed_and_coded_from_their_segments(
    tmp_path: Path,
) -> None:
    sent = tmp_path / "sent"
    sent.mkdir()
    names = {
        "mako-edi-energy/aperak_valid_beispiel_29001_verarbeitbarkeitsfehler.edi": "313",
        "edifact_mapper/fv2510_aperak.edi": "312",
        "edifact_mapper/fv2510_contrl.edi": "contrl",
        "pydifact/v4_aperak_rejected.edi": "broken",  # UNT counts 8 segments, the message has 7
    }
    for name in names:
        (sent / Path(name).name).write_bytes((SAMPLES / name).read_bytes())
    unreadable: list[str] = []
    differences = await compare_outbound(sent, [tmp_path / "empty-replay"], unreadable=unreadable)
    rows = {(d.pid, d.sent.split(" at ")[0]): d for d in differences}
    assert {d.kind for d in differences} == {"missing"} and len(differences) == 3  # the replay sends nothing
    refused = rows[("APERAK", "APERAK 313 Z20")]  # BGM+313, ERC+Z20, only RFF+ACW names the message
    assert refused.key == "9907317000007:ACE::ACW:21000000000099" and refused.replay == ""
    acknowledged = rows[("APERAK", "APERAK 312")]
    assert acknowledged.key == "9876543210987:ACE:GENERATED00001:TN:GENERATED00001"
    rejected = rows[("CONTRL", "CONTRL 4 2 GENERATED00001/12")]  # UCI 0083 4, 0085 2; UCM 4, 0085 12
    assert rejected.key == "9876543210987:UCI:GENERATED00001"
    assert "2025-04-01 12:00Z" in rejected.sent  # UNB S004: a CONTRL has no DTM
    assert (
        len(unreadable) == 1
        and unreadable[0].startswith("v4_aperak_rejected.edi")
        and "0085=29" in unreadable[0]
    )


def test_outbox_render_writes_the_folder_compare_outbound_reads(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``outbox render``: a store's answers as EDIFACT files (serve's outbox folder), e.g. what a
    replay under one configuration would send, to compare another replay against."""
    src, messages = archive_and_outbox
    then = src.parent / "then"  # the store the fixture replayed into
    capsys.readouterr()
    assert main(["outbox", "render", str(tmp_path / "sent"), "--store", str(then), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["unrenderable"] == [] and written["written"] == len(messages)
    assert len(list((tmp_path / "sent").glob("*.edi"))) == len(messages)
    assert not [p for p in (tmp_path / "sent").iterdir() if not p.name.endswith(".edi")]
    report = compare(capsys, src, tmp_path / "again", tmp_path / "sent")
    assert report["compare_outbound"]["differences"] == 0, report["compare_outbound"]["rows"][:5]


def test_an_answer_the_replay_leaves_to_an_operator_is_named_so_not_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Back then the operator formed the Tranche of a Geschäftsvorfall 3 and the 55078 went out.
    The replay cannot make that decision: the row says the replay's process awaits an operator
    (and which one), not that the answer is missing."""
    from mako_actors.archive import tranche_id
    from mako_actors.gpke.synthetic import anmeldung

    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=3, processes=20, seed=7))
    lfn = sorted(json.loads((src / "master.json").read_text())["bilanzkreise"])[0]  # holds its own
    at = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
    gv3 = anmeldung(
        lfn=lfn, nb=NB, malo="41234567896", zuordnungsbeginn=datetime(2025, 12, 14, 23, tzinfo=UTC),
        ide_ref="GV3TX1", control_ref="GV3IC1", sent_at=at, pid="55077", detail="ZW2",
    )  # fmt: skip
    (src / "gv3.edi").write_bytes(gv3)
    master = json.loads((src / "master.json").read_text())
    (src / "master.json").write_text(json.dumps({**master, "41234567896": {}}))  # the NB's MaLo
    with (src / "manifest.csv").open("a") as manifest:
        manifest.write(f"gv3.edi,{at.isoformat()}\n")
    then = str(tmp_path / "then")
    assert main(["replay", str(src), "--store", then, "--tenant", NB, "--json"]) == 0
    capsys.readouterr()
    assert main(["processes", "list", "--store", then, "--status", "awaiting_operator", "--json"]) == 0
    [process] = [row["process_id"] for row in json.loads(capsys.readouterr().out)]
    form = ["processes", "form-tranche", process[-8:], "--store", then, "--percent", "30", "--reason", "PV"]
    # (recorded after 11:00, when the store marked its decision overdue: a decision taken in
    # time is dated in time; only what it decides on must come before it)
    assert main([*form, "--tranche", tranche_id("41234567896"), "--at", "2025-11-04T09:40:00+01:00"]) == 0
    messages = asyncio.run(outbox(Path(then)))
    # Also sent back then: a 55037 about the same MaLo to another supplier (an earlier process
    # of it), which the replay would not send: missing, whatever waits on the MaLo now.
    kind, payload = next(
        (kind, payload) for kind, payload in messages
        if kind == "UTILMD" and payload["transactions"][0]["pid"] == "55037"
    )  # fmt: skip
    other = json.loads(json.dumps(payload))
    other["transactions"][0]["malo"] = "41234567896"
    other["envelope"]["recipient_id"] = other["recipient_id"] = "9900000099993"
    sent = write_sent(tmp_path / "sent", [*messages, (kind, other)])
    report = compare(capsys, src, tmp_path / "now", sent)
    rows = report["compare_outbound"]["rows"]
    assert sorted((row["kind"], row["pid"], row["key"]) for row in rows) == [
        ("awaiting operator", "55078", f"{lfn}:TN:GV3TX1"),
        ("missing", "55037", "9900000099993:MaLo:41234567896"),  # before: "awaiting operator"
    ]
    rows = [row for row in rows if row["kind"] == "awaiting operator"]
    now = ["processes", "list", "--store", str(tmp_path / "now"), "--status", "awaiting_operator", "--json"]
    assert main(now) == 0
    assert [row["process_id"] for row in json.loads(capsys.readouterr().out)] == [rows[0]["process"]]


def contrls_of(messages: list[tuple[str, Payload]], ref: str) -> list[int]:
    return [i for i, (kind, p) in enumerate(messages) if kind == "CONTRL" and p["interchange_ref"] == ref]


def test_two_contrls_on_one_interchange_pair_with_their_own_counterparts(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A conflicting retransmission got CONTRL 4/26 beside the first one's CONTRL 7 (same 0020).
    Paired by position in time, dropping the 7 read as "other code" 4/26 vs 7 plus an "extra"
    4/26, and the 7 sent two hours late as two "other code" rows; within a minute both were
    merged into one code on each side, hiding a missing 7. Now each pairs with its own."""
    src, messages = archive_and_outbox
    conflicted = sorted(
        {p["interchange_ref"] for kind, p in messages if kind == "CONTRL" and p.get("error_code") == "26"}
    )
    ref = next(r for r in conflicted if len(contrls_of(messages, r)) == 2)
    [first] = [i for i in contrls_of(messages, ref) if messages[i][1]["action"] == "7"]
    store = tmp_path / "now"  # replayed once; the later runs are re-runs that change nothing
    dropped = [m for i, m in enumerate(messages) if i != first]
    rows = compare(capsys, src, store, write_sent(tmp_path / "dropped", dropped))["compare_outbound"]["rows"]
    assert [(r["kind"], r["key"].split(":UCI:")[1], r["replay"].split(" at ")[0]) for r in rows] == [
        ("extra", ref, "CONTRL 7")
    ]
    late = list(messages)
    payload = late[first][1]
    envelope = {**payload["envelope"], "prepared_at": later(payload["envelope"]["prepared_at"], 2)}
    late[first] = ("CONTRL", {**payload, "envelope": envelope})
    rows = compare(capsys, src, store, write_sent(tmp_path / "late", late))["compare_outbound"]["rows"]
    assert [(r["kind"], r["sent"].split(" at ")[0], r["replay"].split(" at ")[0]) for r in rows] == [
        ("other Frist", "CONTRL 7", "CONTRL 7")
    ]
    wider = compare(capsys, src, store, tmp_path / "late", "--compare-tolerance", "180")["compare_outbound"]
    assert wider["differences"] == 0 and wider["tolerance_minutes"] == 180


def first_utilmd(messages: list[tuple[str, Payload]], pid: str) -> int:
    kinds = [(k, p["transactions"][0]["pid"] if k == "UTILMD" else k) for k, p in messages]
    return kinds.index(("UTILMD", pid))


def test_dates_parties_twice_kept_files_and_foreign_interchanges(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the answer code and the instant were compared: a confirmed Lieferbeginn (DTM+92)
    moved or a 55036 naming another LFA (NAD+VY) showed no difference. A resend kept twice in
    the folder read as a "missing" answer, an interchange we did not send as ours."""
    src, messages = archive_and_outbox
    sent_messages = list(messages)
    i = first_utilmd(messages, "55002")
    p = sent_messages[i][1]
    moved = {**p["transactions"][0], "start": later(p["transactions"][0]["start"], 24)}
    sent_messages[i] = ("UTILMD", {**p, "transactions": [moved]})
    j = first_utilmd(messages, "55036")
    p = sent_messages[j][1]
    other_lfa = {**p["transactions"][0], "other_party_id": "9900000099993"}
    sent_messages[j] = ("UTILMD", {**p, "transactions": [other_lfa]})
    sent = write_sent(tmp_path / "sent", sent_messages)
    # A rejection sent where the replay confirms: one "other answer", not "missing" + "extra"
    confirmed = [(n, p["transactions"][0]) for n, (kind, p) in enumerate(messages) if kind == "UTILMD"]
    k = [n for n, t in confirmed if t["pid"] == "55002" and t["answer_code"] == "A51"][1]
    flipped = sent / f"{k:05d}-UTILMD.edi"
    text = flipped.read_text(encoding="latin-1").replace("RFF+Z13:55002", "RFF+Z13:55003")
    flipped.write_text(text.replace("STS+E01++A51:E_0623", "STS+E01++A05:E_0622"), encoding="latin-1")
    first = sorted(sent.iterdir())[0]
    (sent / f"copy-{first.name}").write_bytes(first.read_bytes())
    (sent / ".DS_Store").write_bytes(b"\x00")
    kind, p = messages[i]
    foreign = {**p, "envelope": {**p["envelope"], "sender_id": "9900000099993"}}
    (sent / "foreign.edi").write_bytes(render_outbound(kind, foreign))
    report = compare(capsys, src, tmp_path / "now", sent)["compare_outbound"]
    rows = sorted(
        (r["kind"], r["pid"], r["sent"].split("[")[-1], r["replay"].split("[")[-1]) for r in report["rows"]
    )
    start = datetime.fromisoformat(p["transactions"][0]["start"]).astimezone(UTC)
    [answer] = [r for r in report["rows"] if r["kind"] == "other answer"]
    rows = [r for r in rows if r[0] != "other answer"]
    assert answer["pid"] == "55003/55002" and " A05 at " in answer["sent"] and " A51 at " in answer["replay"]
    assert [(kind, pid) for kind, pid, _, _ in rows] == [("other content", p) for p in ("55002", "55036")]
    (_, _, sent_55002, replay_55002), (_, _, sent_55036, replay_55036) = rows
    assert f"DTM+92 {start + timedelta(days=1):%Y-%m-%d %H:%M}Z" in sent_55002
    assert f"DTM+92 {start:%Y-%m-%d %H:%M}Z" in replay_55002
    assert "NAD+VY 9900000099993" in sent_55036
    assert f"NAD+VY {messages[j][1]['transactions'][0]['other_party_id']}" in replay_55036
    not_compared = sorted(name.split(":")[0] for name in report["unreadable"])
    assert not_compared == [".DS_Store", f"copy-{first.name}", "foreign.edi"]


def test_a_store_continued_from_an_earlier_archive_compares_this_runs_period(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A store continued month by month holds the earlier runs' messages: every one of them was
    an "extra" of this run. Now both sides are compared over this replay's period."""
    src, messages = archive_and_outbox
    earlier = tmp_path / "october"
    generate_archive(earlier, ArchiveSpec(days=2, processes=15, seed=3, start=date(2025, 10, 6)))
    store = tmp_path / "now"
    # (Its Fristen fired by the end of October: none fires in this run; see the next test.)
    until = ["--until", "2025-10-31T00:00:00+00:00"]
    assert main(["replay", str(earlier), "--store", str(store), "--tenant", NB, "--json", *until]) == 0
    report = compare(capsys, src, store, write_sent(tmp_path / "sent", messages))["compare_outbound"]
    assert report["differences"] == 0, report["rows"][:5]
    assert report["outside_period"]["replay"] > 0 and report["outside_period"]["sent"] == 0


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_sent_folder_that_cannot_be_read_fails_before_the_replay(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Read after the replay, the error named no file, the store held the run and ``--report``
    was not written (a re-run would then report only duplicates)."""
    src, _ = archive_and_outbox
    (tmp_path / "sent").mkdir()
    (tmp_path / "sent" / "zz.edi").symlink_to("/proc/self/mem")  # reading it fails: EIO
    argv = ["replay", str(src), "--store", str(tmp_path / "s"), "--tenant", NB,
            "--compare-outbound", str(tmp_path / "sent"), "--report", str(tmp_path / "r.json")]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    assert "zz.edi" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "r.json").exists()


async def test_codes_are_compared_whatever_order_their_segments_came_in(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]], tmp_path: Path
) -> None:
    """ERC groups were joined in segment order: the same codes in another order were "other
    code" (an operator's system lists them as it likes)."""
    _, messages = archive_and_outbox
    aperak = next(p for kind, p in messages if kind == "APERAK")
    errors = [{"code": "Z39", "text": "a"}, {"code": "Z14", "text": "b"}]
    sent = tmp_path / "sent"
    sent.mkdir()
    for name, listed in (("a.edi", errors), ("b.edi", errors[::-1])):
        payload = {**aperak, "positive": False, "errors": listed, "document_number": name}
        (sent / name).write_bytes(render_outbound("APERAK", payload))
    differences = await compare_outbound(sent, [tmp_path / "empty-replay"])
    assert [d.sent.split(" at ")[0] for d in differences] == ["APERAK 313 Z14 Z39"] * 2


async def test_an_aperak_answering_two_transactions_is_compared_per_transaction(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]], tmp_path: Path
) -> None:
    """An operator's APERAK may hold one ERC group per refused transaction, each with its own
    RFF+TN: it was keyed by the first TN only, with all codes (the second never compared)."""
    from mako_actors.edifact import try_parse_interchange

    _, messages = archive_and_outbox
    aperak = next(p for kind, p in messages if kind == "APERAK" and not p["positive"])
    raw = render_outbound("APERAK", aperak).decode("latin-1")
    parsed = try_parse_interchange(raw.encode("latin-1"))
    tn = aperak["referenced_transaction_ref"]
    group = raw[raw.index("ERC+") : raw.index(f"RFF+TN:{tn}'") + len(f"RFF+TN:{tn}'")]
    second = group.replace("ERC+" + group[4:7], "ERC+Z18").replace(f"RFF+TN:{tn}'", "RFF+TN:OTHERTX'")
    count = str(len(parsed.messages[0].segments) + len(second.split("'")) - 1)  # type: ignore[union-attr]
    unt = raw.index("UNT+")
    body = raw[:unt] + second + "UNT+" + count + raw[raw.index("+", unt + 4) :]
    sent = tmp_path / "sent"
    sent.mkdir()
    (sent / "two.edi").write_bytes(body.encode("latin-1"))
    differences = await compare_outbound(sent, [tmp_path / "empty-replay"])
    codes = sorted((d.key.rsplit(":TN:", 1)[1], d.sent.split(" at ")[0]) for d in differences)
    first = " ".join(["313", *sorted(e["code"] for e in aperak["errors"])])
    assert codes == [("OTHERTX", "APERAK 313 Z18"), (tn, f"APERAK {first}")]


def test_late_answers_to_the_last_file_and_fristen_fired_before_the_first_are_compared(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The period cut both sides at the replay's first and last receipt: a CONTRL to the last
    file sent two hours late was an "extra" (the replay's) beside a sent one left out, and the
    Fristen a continued store's earlier run left pending, fired in this run before its first
    receipt, were counted as the earlier runs' and never compared."""
    src, messages = archive_and_outbox
    earlier = tmp_path / "october"
    generate_archive(earlier, ArchiveSpec(days=2, processes=15, seed=3, start=date(2025, 10, 27)))
    store = tmp_path / "now"
    assert main(["replay", str(earlier), "--store", str(store), "--tenant", NB, "--json"]) == 0
    sent_messages = list(messages)
    last = max(
        (i for i, (kind, _) in enumerate(messages) if kind == "CONTRL"),
        key=lambda i: messages[i][1]["envelope"]["prepared_at"],
    )
    payload = sent_messages[last][1]
    envelope = {**payload["envelope"], "prepared_at": later(payload["envelope"]["prepared_at"], 2)}
    sent_messages[last] = ("CONTRL", {**payload, "envelope": envelope})
    report = compare(capsys, src, store, write_sent(tmp_path / "sent", sent_messages))["compare_outbound"]
    rows = report["rows"]
    assert [r["kind"] for r in rows if r["pid"] == "CONTRL"] == ["other Frist"]
    # What October's processes decided at their Fristen between its last and November's first
    # receipt happened in this run: not sent in the folder (a November-only replay), so "extra".
    gap = [r for r in rows if r["pid"] != "CONTRL"]
    assert gap and {r["kind"] for r in gap} == {"extra"} and all(r["process"] for r in gap)
    assert min(r["replay"].split(" at ")[1] for r in gap) < "2025-11-03"


def test_the_kind_of_malo_and_the_package_a_55002_names_are_compared(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The NB decides a 55002's STS+7 #2 (ZW6 pauschal / ZW7 gemessen, from its master data) and
    the Produktpaket it plans (RFF+Z60): both were left out, a change showed no difference."""
    src, messages = archive_and_outbox
    i = first_utilmd(messages, "55002")
    p = messages[i][1]
    tx0 = p["transactions"][0]
    other = "ZW6" if tx0["transaction_reason_detail"] == "ZW7" else "ZW7"
    changed = {**tx0, "transaction_reason_detail": other, "product_package": "9"}
    sent_messages = list(messages)
    sent_messages[i] = ("UTILMD", {**p, "transactions": [changed]})
    sent = write_sent(tmp_path / "sent", sent_messages)
    [row] = compare(capsys, src, tmp_path / "now", sent)["compare_outbound"]["rows"]
    assert row["kind"] == "other content" and row["pid"] == "55002"
    assert f"STS+7 {tx0['transaction_reason']} {other}" in row["sent"] and "RFF+Z60 9" in row["sent"]
    assert f"STS+7 {tx0['transaction_reason']} {tx0['transaction_reason_detail']}" in row["replay"]


def test_a_late_resend_does_not_take_the_pair_and_an_early_clock_is_no_difference(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 55010 sent with another DTM+93, and its unchanged bytes sent again 4 days later: the
    late copy paired first (an "other Frist" 4 days apart) and the one sent in time was
    "missing". The answers to the first file dated 5 minutes early (an operator's clock) fell
    before the period's start: "extra"."""
    src, messages = archive_and_outbox
    sent_messages = list(messages)
    i = first_utilmd(messages, "55010")
    p = sent_messages[i][1]
    moved = {**p["transactions"][0], "end": later(p["transactions"][0]["end"], 24)}
    sent_messages[i] = ("UTILMD", {**p, "transactions": [moved]})
    envelope = {**p["envelope"], "prepared_at": later(p["envelope"]["prepared_at"], 96)}
    envelope["control_ref"] = "RESEND1"
    resend = {**p, "envelope": envelope, "document_date": later(p["document_date"], 96)}
    sent_messages.append(("UTILMD", resend))
    first = min((n for n, (kind, _) in enumerate(messages) if kind == "CONTRL"),
                key=lambda n: messages[n][1]["envelope"]["prepared_at"])  # fmt: skip
    q = sent_messages[first][1]
    early = {**q["envelope"], "prepared_at": (datetime.fromisoformat(q["envelope"]["prepared_at"])
                                              - timedelta(minutes=5)).isoformat()}  # fmt: skip
    sent_messages[first] = ("CONTRL", {**q, "envelope": early})
    report = compare(capsys, src, tmp_path / "now", write_sent(tmp_path / "sent", sent_messages))
    rows = report["compare_outbound"]["rows"]
    assert [(r["kind"], r["pid"]) for r in rows] == [("other content", "55010")], rows
    assert report["compare_outbound"]["outside_period"]["sent"] == 1  # the late copy, unpaired


def test_answers_sent_after_the_archive_to_what_came_after_it_are_not_missing(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sent folder spans more than an archive (a month's files against the gateway's folder):
    what was sent in the hour after the archive's last receipt, answering the files that came
    after it (among them a retransmission's CONTRL 4/26), was reported "missing". Unpaired after
    the period, it is counted outside; paired, a difference still shows."""
    import csv

    src, messages = archive_and_outbox
    with (src / "manifest.csv").open(newline="") as handle:
        manifest = sorted(csv.DictReader(handle), key=lambda row: row["received_at"])
    instants = [datetime.fromisoformat(row["received_at"]) for row in manifest]
    # Cut where the next file came within half an hour: its CONTRL and APERAK were sent then.
    soon = timedelta(minutes=30)
    middle = len(instants) // 2
    cut = next(i for i in range(middle, len(instants) - 1) if instants[i + 1] - instants[i] < soon)
    part = tmp_path / "part"
    part.mkdir()
    (part / "master.json").write_bytes((src / "master.json").read_bytes())
    with (part / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(manifest[0]))
        writer.writeheader()
        for row in manifest[: cut + 1]:
            writer.writerow(row)
            (part / row["file"]).write_bytes((src / row["file"]).read_bytes())
    sent = write_sent(tmp_path / "sent", messages)
    report = compare(capsys, part, tmp_path / "now", sent)["compare_outbound"]
    assert report["differences"] == 0, report["rows"][:5]
    assert report["outside_period"]["sent"] > 0
    # The CONTRL of the last file, sent late with another code: paired, so still compared.
    last = instants[cut]
    n, p = [
        (n, p) for n, (kind, p) in enumerate(messages)
        if kind == "CONTRL" and datetime.fromisoformat(p["envelope"]["prepared_at"]) <= last
    ][-1]  # fmt: skip
    recoded = {**p, "action": "4", "error_code": "18"}
    recoded["envelope"] = {**p["envelope"], "prepared_at": later(last, 0), "control_ref": "LATE1"}
    # And an APERAK on a transaction of the last file, sent late, which the replay does not send
    # (it acknowledged that interchange, and answered nothing under this key): missing.
    aperak = next(
        q for kind, q in messages
        if kind == "APERAK" and q["referenced_interchange_ref"] == p["interchange_ref"]
    )  # fmt: skip
    late = {**aperak, "referenced_transaction_ref": "NOSUCHTX", "document_date": later(last, 1)}
    late["envelope"] = {**aperak["envelope"], "prepared_at": later(last, 1), "control_ref": "LATE2"}
    sent = write_sent(
        tmp_path / "sent2", [*messages[:n], ("CONTRL", recoded), *messages[n + 1 :], ("APERAK", late)]
    )
    rows = compare(capsys, part, tmp_path / "now2", sent)["compare_outbound"]["rows"]
    partner = p["envelope"]["recipient_id"]
    assert sorted((r["kind"], r["pid"], r["key"]) for r in rows) == [
        ("missing", "APERAK", f"{partner}:ACE:{p['interchange_ref']}:TN:NOSUCHTX"),
        ("other code", "CONTRL", f"{partner}:UCI:{p['interchange_ref']}"),
    ]


def test_a_resend_under_a_new_unb_time_is_compared_once(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A gateway resending an interchange (the same 0020, a new UNB time) left two files: only
    byte-equal copies were compared once, so the resend's answers were each "missing". Other
    content under the same 0020 is no resend: still compared."""
    src, messages = archive_and_outbox
    sent = write_sent(tmp_path / "sent", messages)
    for kind in ("CONTRL", "UTILMD", "APERAK"):
        n = next(n for n, (k, _) in enumerate(messages) if k == kind)
        p = messages[n][1]
        envelope = {**p["envelope"], "prepared_at": later(p["envelope"]["prepared_at"], 30)}
        resend = {**p, "envelope": envelope}
        assert render_outbound(kind, resend) != render_outbound(kind, p)
        # (sorted before the original: the first sending is kept whichever file comes first)
        (sent / f"00000-resend-{kind}.edi").write_bytes(render_outbound(kind, resend))
    report = compare(capsys, src, tmp_path / "now", sent)["compare_outbound"]
    assert report["differences"] == 0, report["rows"][:5]
    resends = sorted(name for name in report["unreadable"] if "a resend of" in name)
    expected = [f"00000-resend-{kind}.edi" for kind in ("APERAK", "CONTRL", "UTILMD")]
    assert [name.split(":")[0] for name in resends] == expected
    p = next(p for kind, p in messages if kind == "CONTRL")
    other = {**p, "action": "4", "error_code": "18"}
    other["envelope"] = {**p["envelope"], "prepared_at": later(p["envelope"]["prepared_at"], 30)}
    (sent / "00000-other.edi").write_bytes(render_outbound("CONTRL", other))
    rows = compare(capsys, src, tmp_path / "now2", sent)["compare_outbound"]["rows"]
    assert [(r["kind"], r["pid"]) for r in rows] == [("missing", "CONTRL")]


def test_a_missing_answer_names_the_process_its_key_belongs_to(
    archive_and_outbox: tuple[Path, list[tuple[str, Payload]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A "missing" row named a process only when it waited for an operator: one process's changed
    decision showed as rows with a process and orphan rows beside them."""
    src, messages = archive_and_outbox
    sent_messages = list(messages)
    for pid in ("55036", "55010"):
        p = messages[first_utilmd(messages, pid)][1]
        envelope = {**p["envelope"], "prepared_at": later(p["envelope"]["prepared_at"], 5)}
        envelope["control_ref"] = f"X{pid}"
        dated = later(p["document_date"], 5)
        sent_messages.append(("UTILMD", {**p, "envelope": envelope, "document_date": dated}))
    report = compare(capsys, src, tmp_path / "now", write_sent(tmp_path / "sent", sent_messages))
    rows = report["compare_outbound"]["rows"]
    assert sorted((r["kind"], r["pid"]) for r in rows) == [("missing", "55010"), ("missing", "55036")]
    [process] = {r["process"] for r in rows}  # the 55036 and the 55010 of one Anmeldung
    assert process
    assert main(["processes", "show", process[-8:], "--store", str(tmp_path / "now"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    ide = messages[first_utilmd(messages, "55036")][1]["transactions"][0]["request_ref"]
    assert ide in json.dumps(shown)


def test_a_missing_message_to_the_lfa_names_the_process_that_consulted_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 55037 of a confirmed process sent again was named with a later Anmeldung of the MaLo that
    was rejected at once (A06: another Anmeldung in Arbeit) and sent the LFA nothing."""
    from mako_actors.gpke.synthetic import anmeldung, lfa_answer

    lfn, other, lfa, malo = "9900000001001", "9900000001002", "9900000003005", "51900000012"
    thu = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    start = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)

    def archive(directory: Path, files: list[tuple[str, bytes, datetime]]) -> Path:
        return small_archive(directory, files, {malo: {"current": lfa}})

    first = anmeldung(lfn=lfn, nb=NB, malo=malo, zuordnungsbeginn=start, ide_ref="P1", control_ref="LFN1",
                      sent_at=thu)  # fmt: skip
    competing = anmeldung(lfn=other, nb=NB, malo=malo, zuordnungsbeginn=start, ide_ref="P2",
                          control_ref="OTH1", sent_at=thu)  # fmt: skip
    # The 55010's reference is derived from its trigger: a replay of the Anmeldungen alone tells it.
    anmeldungen = [("p1.edi", first, thu), ("p2.edi", competing, thu + timedelta(minutes=5))]
    request = request_of(archive(tmp_path / "a", anmeldungen), tmp_path / "early")
    answered = thu + timedelta(minutes=20)
    answer = lfa_answer(lfa=lfa, nb=NB, malo=malo, request_ref=request, ide_ref="A1", control_ref="LFA1",
                        sent_at=answered)  # fmt: skip
    whole = archive(tmp_path / "b", [*anmeldungen, ("a1.edi", answer, answered)])
    assert main(["replay", str(whole), "--store", str(tmp_path / "then"), "--tenant", NB, "--json"]) == 0
    messages = asyncio.run(outbox(tmp_path / "then"))
    [termination] = [q for kind, q in messages if kind == "UTILMD" and q["transactions"][0]["pid"] == "55037"]
    # The 55037 sent a second time, three hours later: one of the two is missing in the replay.
    again = {**termination, "document_date": later(termination["document_date"], 3)}
    again["envelope"] = {**termination["envelope"], "prepared_at": later(answered, 3)}
    again["envelope"]["control_ref"] = "AGAIN"
    sent = write_sent(tmp_path / "sent", [*messages, ("UTILMD", again)])
    report = compare(capsys, whole, tmp_path / "now", sent, "--until", later(answered, 4))
    rows = report["compare_outbound"]["rows"]
    [missing] = [r for r in rows if r["pid"] == "55037"]
    assert missing["kind"] == "missing" and missing["key"] == f"{lfa}:MaLo:{malo}"
    assert main(["processes", "list", "--store", str(tmp_path / "now"), "--json"]) == 0
    processes = {row["process_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert processes[missing["process"]]["status"] == "confirmed"  # not the one rejected with A06


def test_a_process_that_refused_a_later_answer_still_owns_its_messages_to_the_lfa(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process refusing a later message by APERAK (an answer from a supplier not asked) was
    taken for one rejected at once: a missing message to its LFA named no process."""
    from mako_actors.compare import _owners
    from mako_actors.gpke.synthetic import anmeldung, lfa_answer

    lfn, lfa, stranger, malo = "9900000001001", "9900000003005", "9900000004003", "51900000012"
    thu = datetime(2025, 11, 13, 13, 30, tzinfo=UTC)
    start = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)
    first = anmeldung(lfn=lfn, nb=NB, malo=malo, zuordnungsbeginn=start, ide_ref="P1", control_ref="LFN1",
                      sent_at=thu)  # fmt: skip

    def archive(directory: Path, files: list[tuple[str, bytes, datetime]]) -> Path:
        return small_archive(directory, files, {malo: {"current": lfa}})

    request = request_of(archive(tmp_path / "a", [("p1.edi", first, thu)]), tmp_path / "early")
    at = thu + timedelta(minutes=20)
    wrong = lfa_answer(lfa=stranger, nb=NB, malo=malo, request_ref=request, ide_ref="A1", control_ref="STR1",
                       sent_at=at)  # fmt: skip
    whole = archive(tmp_path / "b", [("p1.edi", first, thu), ("a1.edi", wrong, at)])
    assert main(["replay", str(whole), "--store", str(tmp_path / "then"), "--tenant", NB, "--json"]) == 0
    capsys.readouterr()
    owners = asyncio.run(_owners([tmp_path / "then"]))
    [owner] = owners[f"{lfa}:MaLo:{malo}"]  # the process sent the LFA its 55010
    assert owners[f"{lfn}:TN:P1"] == [owner]


def small_archive(directory: Path, files: list[tuple[str, bytes, datetime]], master: dict[str, Any]) -> Path:
    """An archive of ``files`` (name, bytes, receipt instant) with its manifest and master data."""
    directory.mkdir()
    rows = ["file,received_at", *(f"{name},{at.isoformat()}" for name, _, at in files)]
    for name, raw, _ in files:
        (directory / name).write_bytes(raw)
    (directory / "manifest.csv").write_text("\n".join(rows) + "\n")
    (directory / "master.json").write_text(json.dumps(master))
    return directory


def request_of(archive: Path, store: Path) -> str:
    """The IDE of the one 55010 a replay of ``archive`` into ``store`` sends (our references
    derive from the trigger: the same in any replay of it)."""
    assert main(["replay", str(archive), "--store", str(store), "--tenant", NB, "--json"]) == 0
    [request] = [
        q["transactions"][0]["ide_ref"] for kind, q in asyncio.run(outbox(store))
        if kind == "UTILMD" and q["transactions"][0]["pid"] == "55010"
    ]  # fmt: skip
    return str(request)
