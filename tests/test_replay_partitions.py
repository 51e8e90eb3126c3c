"""``replay --workers N`` treats every file exactly as one worker does: the same decisions, dead
letters and CONTRL/APERAK/UTILMD answers, for generated archives with defects and for hand-made
edge files (escaped routing values, a truncated retransmission of a bundle split over partitions).

The N-worker runs go through ``replay_partitions`` with an in-process runner (each partition's
worker on a thread of its own), so no process is spawned; the CLI's ``--workers`` path is
tested in ``test_replay_archive`` and ``test_compare_outbound``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors._partition import Partitioner, Scan
from mako_actors._workers import part_path, replay_partitions
from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.compare import compare_outbound
from mako_actors.edifact import render_outbound
from mako_actors.gpke.synthetic import bilanzkreis_of
from mako_actors.replay import _Options, _replay_items, archive, decisions_in, load_master_data
from stores.lmdb import Durability, LmdbStore
from tests.inbound.edi import LFA, LFN, LFN2, dtm, interchange, kind, package_segments

NB = "9900000002009"


@dataclass
class Run:
    digest: str
    dead_letters: Counter[str]
    stores: list[Path]
    report: Any


@pytest.fixture(autouse=True)
def _keep_log_level() -> Iterator[None]:
    """The workers quieten the package logger (their own process's, normally): restore it."""
    logger = logging.getLogger("mako_actors")
    level = logger.level
    yield
    logger.setLevel(level)


async def _in_threads(worker: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    return [await asyncio.to_thread(worker, *call) for call in calls]


async def replay(src: Path, store: Path, n: int) -> Run:
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, False, 512)
    if n == 1:
        report, _ = await _replay_items(archive(src), store, options, None)
    else:
        report = await replay_partitions(archive(src), store, options, n, runner=_in_threads)
    stores = [part_path(store, k, n) for k in range(n)]
    dead: Counter[str] = Counter()
    for path in stores:
        async with LmdbStore(path) as lmdb:
            dead.update(letter.kind for letter in await lmdb.dead_letters(limit=10**6))
    assert report.dead_letters == sum(dead.values())
    return Run(report.decision_digest, dead, stores, report)


async def outbox_as_sent(store: Path, directory: Path) -> Path:
    """What a run enqueued, rendered as files (what the operator "sent")."""
    async with LmdbStore(store) as lmdb:
        pending = await lmdb.pending(10**6, datetime.max.replace(tzinfo=UTC))
    directory.mkdir()
    for index, message in enumerate(pending):
        (directory / f"{index:05d}-{message.message_type}.edi").write_bytes(
            render_outbound(message.message_type, message.payload)
        )
    return directory


async def assert_workers_answer_like_one(src: Path, tmp_path: Path, workers: tuple[int, ...] = (2, 3)) -> Run:
    one = await replay(src, tmp_path / "one", 1)
    sent = await outbox_as_sent(tmp_path / "one", tmp_path / "sent")
    assert await compare_outbound(sent, one.stores) == []  # the comparison itself sees no noise
    for n in workers:
        many = await replay(src, tmp_path / f"x{n}", n)
        assert many.digest == one.digest, n
        assert many.dead_letters == one.dead_letters, n
        differences = await compare_outbound(sent, many.stores)
        assert differences == [], (n, differences[:5])
    return one


def with_manifest(src: Path, extra: list[tuple[str, bytes, datetime]]) -> None:
    """Add files to a generated archive, each received at the given instant."""
    with (src / "manifest.csv").open("a", newline="") as handle:
        writer = csv.writer(handle)
        for name, raw, at in extra:
            (src / name).write_bytes(raw)
            writer.writerow([name, at.isoformat()])


def received(src: Path) -> dict[str, datetime]:
    return {item.path.name: item.received_at for item in archive(src)}


@pytest.mark.parametrize(("seed", "workers"), [(3, (2, 3)), (8, (2,)), (13, (3,))])
async def test_generated_archives_with_defects_answer_alike_on_one_two_and_three_workers(
    tmp_path: Path, seed: int, workers: tuple[int, ...]
) -> None:
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=300, defects=0.1, seed=seed))
    broken = [p for p in src.iterdir() if p.name.endswith("-broken.edi")]
    assert broken, "the archive must hold truncated retransmissions"
    one = await assert_workers_answer_like_one(src, tmp_path, workers)
    assert one.dead_letters["inbound-conflict"] >= len(broken)  # each one answered CONTRL 4/26


def _escape_last_char(raw: bytes, prefix: bytes) -> tuple[bytes, int]:
    """``raw`` with the release character before the last character of every ``prefix`` value."""
    out, count, pos = bytearray(), 0, 0
    while (found := raw.find(prefix, pos)) >= 0:
        end = raw.find(b"'", found)
        value_end = min(i for i in (raw.find(b":", found + len(prefix)), end) if i >= 0)
        out += raw[pos : value_end - 1] + b"?" + raw[value_end - 1 : value_end]
        pos, count = value_end, count + 1
    return bytes(out + raw[pos:]), count


async def test_escaped_rff_tn_and_loc_values_route_like_their_plain_values(tmp_path: Path) -> None:
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=120, defects=0.0, seed=5, suppliers=6))
    plain = {item.path.name: item.path.read_bytes() for item in archive(src)}
    answers = locs = 0
    for name, raw in plain.items():
        escaped, tn = _escape_last_char(raw, b"RFF+TN:")
        escaped, loc = _escape_last_char(escaped, b"LOC+Z16+")
        answers, locs = answers + tn, locs + loc
        if tn or loc:
            assert Scan(escaped).escaped
            (src / name).write_bytes(escaped)
    assert answers > 20 and locs > 20
    # The escaped archive goes, file by file, where the plain one goes.
    for n in (2, 3):
        ours, theirs = Partitioner(n, [NB]), Partitioner(n, [NB])
        for item in archive(src):
            split = ours.split(item.path.name, item.path.read_bytes(), item.received_at)
            assert (
                split.keys() == theirs.split(item.path.name, plain[item.path.name], item.received_at).keys()
            ), item.path.name
    await assert_workers_answer_like_one(src, tmp_path, workers=(2,))


async def test_a_tranche_anmeldung_naming_its_malo_too_is_placed_with_its_tranche(tmp_path: Path) -> None:
    """A 55077 of Geschäftsvorfall 2 is for its Tranche (LOC+Z21); the workflow decides it so even
    when the sender adds the MaLo's LOC+Z16. The split must place it by the Tranche as well: a
    second Anmeldung of the Tranche naming only LOC+Z21 must meet the first one's claim (55080
    A45) on any worker count, not land in another partition and be consulted on."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=60, defects=0.0, seed=11, suppliers=4))
    tranche, malo = "51000000912", "51900000012"
    master = json.loads((src / "master.json").read_text())
    # supplied by another (LFA): the first Anmeldung waits for its answer, its claim open
    master[tranche] = {"tranche_of": malo, "tranche_percent": "50", "current": LFA}
    for supplier in (LFN, LFN2):  # Zuordnungsermächtigungen for their own Bilanzkreise
        master["bilanzkreise"][supplier] = [bilanzkreis_of(supplier)]
    (src / "master.json").write_text(json.dumps(master))
    first_at = datetime(2025, 11, 3, 5, 0, tzinfo=UTC)  # before the archive's first file
    start = dtm("92", datetime(2025, 12, 31, 23, 0, tzinfo=UTC))
    gv2 = ["STS+7++E03+ZW1", f"LOC+Z21+{tranche}", "RFF+Z13:55077"]
    with_malo = ["IDE+24+GV2TX1", start, gv2[0], f"LOC+Z16+{malo}", *gv2[1:]]
    with_malo += package_segments((("1", bilanzkreis_of(LFN)),))  # each its own Bilanzkreis
    both = interchange(LFN, NB, "GV2BOTH", first_at, with_malo)
    by_rival = ["IDE+24+GV2TX2", start, *gv2, *package_segments((("1", bilanzkreis_of(LFN2)),))]
    rival = interchange(LFN2, NB, "GV2RIVAL", first_at, by_rival)
    files = [("gv2-both.edi", both, first_at), ("gv2-rival.edi", rival, first_at + timedelta(minutes=5))]
    with_manifest(src, files)
    partitioner = Partitioner(2, [NB])
    placed = [set(partitioner.split(name, raw, at)) for name, raw, at in files]
    assert placed[0] == placed[1]  # the MaLo's LOC+Z16 beside the Tranche's does not place it
    one = await assert_workers_answer_like_one(src, tmp_path, workers=(2,))
    async with LmdbStore(one.stores[0]) as store:
        outbox = await store.pending(10**6, datetime(2030, 1, 1, tzinfo=UTC))
    answers = [m.payload["transactions"][0] for m in outbox if m.message_type == "UTILMD"]
    assert [(a["pid"], a["answer_code"]) for a in answers if a.get("request_ref") == "GV2TX2"] == [
        ("55080", "A45")
    ]


async def test_a_truncated_retransmission_of_a_split_bundle_gets_contrl_4_26_on_any_worker_count(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=150, defects=0.0, duplicates=0.0, seed=4, suppliers=4))
    at = received(src)
    partitioner = Partitioner(2, [NB])
    split_bundles = []
    for item in archive(src):
        pieces = partitioner.split(item.path.name, item.path.read_bytes(), item.received_at)
        if len(pieces) > 1:
            split_bundles.append((item.path, pieces))
    assert len(split_bundles) >= 4
    extra = []
    for path, _ in split_bundles[:4]:
        raw = path.read_bytes()
        cut = raw[: len(raw) * 2 // 3]  # UNB intact, cut off mid-message
        assert not Scan(cut).ok
        extra.append((f"{path.stem}-cut.edi", cut, at[path.name] + timedelta(minutes=7)))
    with_manifest(src, extra)
    # Placed where a piece of its bundle was received, so that partition knows the 0020.
    for n in (2, 3):
        partitioner = Partitioner(n, [NB])
        placed: dict[str, set[int]] = {}
        for item in archive(src):
            placed[item.path.name] = set(
                partitioner.split(item.path.name, item.path.read_bytes(), item.received_at)
            )
        for name, _, _ in extra:
            (part,) = placed[name]
            assert part in placed[name.replace("-cut", "")], (n, name)
    one = await assert_workers_answer_like_one(src, tmp_path)
    assert one.dead_letters["inbound-conflict"] == len(extra)


def anmeldungen(control_ref: str, malos: list[str]) -> bytes:
    """An interchange of one Anmeldung (55001) per MaLo."""
    lines = []
    for k, malo in enumerate(malos):
        lines += [
            f"UNH+M{k}+UTILMD:D:11A:UN:S2.1",
            f"BGM+E01+D{control_ref}{k}",
            "NAD+MS+9900000010002::293",
            f"IDE+24+T{control_ref}{k}",
            f"LOC+Z16+{malo}",
            "RFF+Z13:55001",
            f"UNT+7+M{k}",
        ]
    unb = f"UNA:+.? 'UNB+UNOC:3+9900000010002:500+9900000002009:500+251103:0713+{control_ref}'"
    return (unb + "'".join(lines) + f"'UNZ+{len(malos)}+{control_ref}'").encode()


def test_the_same_bytes_again_are_placed_as_before_and_other_readable_bytes_go_home() -> None:
    """An exact retransmission of a split bundle is split the same way (each piece a duplicate
    where it was received); other readable bytes under the key go whole to one piece's partition."""
    malos = ["34719742207", "51238696781", "50000000001", "50000000002", "50000000003"]
    partitioner = Partitioner(2, [NB])
    at = datetime(2025, 11, 3, 7, 13, tzinfo=UTC)
    placed = [partitioner.split(f"{k}.edi", anmeldungen(f"AN00{k}", malos[k : k + 1]), at) for k in range(2)]
    assert placed[0].keys() != placed[1].keys(), "the first two MaLos must be placed apart"
    raw = anmeldungen("AN009", malos)
    first = partitioner.split("a.edi", raw, at)
    assert len(first) == 2
    assert partitioner.split("again.edi", raw, at) == first
    other = raw.replace(b"BGM+E01+DAN0090", b"BGM+E01+X0")
    (home,) = partitioner.split("other.edi", other, at)
    assert home in first and partitioner.split("other.edi", other, at) == {home: other}


def _refused(control_ref: str, kind: int) -> bytes:
    """An interchange the pipeline refuses (negative APERAKs of its own, not a process's):
    ``kind`` 0, an Anmeldung whose transaction has no reference (``IDE+24``, Z29); 1, ten such
    transactions in one message (refused at positions 0-9); 2, a transaction of a PID nobody
    handles (Z31) whose 0062 and 7402 carry a stray second component (read as the first)."""
    unh, body = "M1", ["IDE+24", "LOC+Z16+51238696788", "RFF+Z13:55001"]
    if kind == 1:
        body *= 10
    elif kind == 2:
        unh, body = "M1:X", [f"IDE+24+T{control_ref}:Z1", "LOC+Z16+51238696788", "RFF+Z13:55999"]
    lines = [
        f"UNH+{unh}+UTILMD:D:11A:UN:S2.1", f"BGM+E01+D{control_ref}", "NAD+MS+9900000010002::293",
        *body, f"UNT+{len(body) + 4}+{unh}",
    ]  # fmt: skip
    unb = f"UNA:+.? 'UNB+UNOC:3+9900000010002:500+9900000002009:500+251103:0713+{control_ref}'"
    return (unb + "'".join(lines) + f"'UNZ+1+{control_ref}'").encode()


def _contrl_on(control_ref: str, ours: str) -> bytes:
    """The partner's positive CONTRL (UCI 0083 7) on our interchange ``ours``."""
    return (
        f"UNA:+.? 'UNB+UNOC:3+9900000010002:500+{NB}:500+251103:0800+{control_ref}'"
        f"UNH+1+CONTRL:D:3:UN:2.0b'UCI+{ours}+{NB}:500+9900000010002:500+7'UNT+3+1'UNZ+1+{control_ref}'"
    ).encode()


async def test_the_partners_contrl_on_our_refusal_reaches_the_part_that_refused(tmp_path: Path) -> None:
    """Our refusal APERAK's 0020 derives from the refused message and the transaction's position
    in it (not from a trigger the walk maps), so the walk did not know it: the CONTRL on it went
    to the least loaded part and was a dead letter "unknown interchange" there, where one worker
    records it on the receipt stream that sent the refusal. The walk now maps each message's
    possible refusal references to its part (every position, values read as the parser reads
    them), so every worker count records it as one worker does."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=60, defects=0.0, duplicates=0.0, seed=5))
    times = sorted(received(src).values())
    refused = [(f"refused-{k}.edi", _refused(f"RZ{k}", k % 3), times[10 * k + 5]) for k in range(9)]
    with_manifest(src, refused)
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, False, 512)
    await _replay_items(archive(src), tmp_path / "scratch", options, None)
    async with LmdbStore(tmp_path / "scratch") as lmdb:
        pending = await lmdb.pending(10**6, datetime.max.replace(tzinfo=UTC))
    ours: dict[str, list[str]] = {}  # our refusals' 0020s by the interchange they refuse, as sent
    for m in pending:
        if m.message_type == "APERAK" and not m.payload["positive"]:
            refused_ref, ref = m.payload["referenced_interchange_ref"], m.payload["envelope"]["control_ref"]
            ours.setdefault(refused_ref, []).append(ref)
    assert [len(ours[f"RZ{k}"]) for k in range(9)] == [1, 10, 1] * 3
    contrls = [
        (f"contrl-{k}-{n}.edi", _contrl_on(f"CZ{k}{n}", ref), at + timedelta(minutes=20))
        for k, (_, _, at) in enumerate(refused)
        for n, ref in enumerate(ours[f"RZ{k}"])
        if n in (0, 8, 9)  # (the first, and those past the eight a trigger's answers use)
    ]
    with_manifest(src, contrls)
    one = await assert_workers_answer_like_one(src, tmp_path)
    refusals = sum(len(ours[f"RZ{k}"]) for k in range(9))
    assert one.dead_letters["inbound"] == refusals  # the refusals' own; each CONTRL recorded


def _original(reused: bytes, originals: dict[bytes, str]) -> str:
    """The name of the file whose Anmeldung ``reused`` (``with_reused_ides``) copies (its IDE)."""
    import re

    ide = re.search(rb"IDE\+24\+(\w+)", reused)
    assert ide is not None
    return next(name for raw, name in originals.items() if b"IDE+24+" + ide.group(1) + b"'" in raw)


def with_reused_ides(src: Path, count: int) -> list[tuple[str, bytes, datetime]]:
    """Add ``count`` Anmeldungen to the generated archive ``src``, each under the IDE (and sender)
    of one of its Anmeldungen, for a MaLo no other file names, received 30 minutes after
    another Anmeldung (some before the one whose IDE they take, some after)."""
    import re

    at = received(src)
    triggers = sorted(name for name in at if name.startswith("AN"))
    extra = []
    for k in range(count):
        raw = (src / triggers[k]).read_bytes()
        control = re.search(rb"UNB\+[^']*\+(AN\d+)'", raw)
        assert control is not None
        reused = re.sub(rb"LOC\+Z16\+\d+", f"LOC+Z16+5999999990{k}".encode(), raw, count=1)
        reused = reused.replace(control.group(1), f"RU{k:011d}".encode())
        extra.append((f"reused-{k}.edi", reused, at[triggers[-1 - k]] + timedelta(minutes=30)))
    with_manifest(src, extra)
    return extra


async def test_an_ide_a_sender_used_before_for_another_malo_is_refused_on_any_worker_count(
    tmp_path: Path,
) -> None:
    """A supplier sends a new Anmeldung under an IDE it used before, for another MaLo. One worker
    finds the IDE's ``tx:`` key and refuses it (Z15, a dead letter). The walk placed it by its
    MaLo, often in another part, which did not know the IDE and started a process for it: the
    decisions differed with the worker count. The walk now places a trigger whose sender and
    IDE an earlier trigger had with that trigger, unless its MaLo is placed already (then it
    cannot tell whether that trigger bound the IDE: a limit). And the pipelined schedule
    decided as the sequential one does only once it kept the first trigger's dependency."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=60, defects=0.0, duplicates=0.0, seed=5))
    extra = with_reused_ides(src, 6)
    one = await assert_workers_answer_like_one(src, tmp_path)
    # Each one received after the Anmeldung whose IDE it takes is refused (Z15, "seen before");
    # one received before is decided first (its unknown MaLo: refused, binding nothing).
    at = received(src)
    first = {raw: name for name in at if name.startswith("AN") for raw in [(src / name).read_bytes()]}
    after = sum(1 for name, raw, when in extra if when > at[_original(raw, first)])
    assert after and one.dead_letters["inbound-conflict"] == after
    # The pipelined schedule reads the reusing file ahead: it keyed the first trigger's process
    # by the reusing one's MaLo, and that process's Frist fired before its LFA's answer.
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, True, 512)
    sequential, _ = await _replay_items(archive(src), tmp_path / "sequential", options, None)
    assert sequential.decision_digest == one.digest


async def test_a_reused_ide_under_another_nad_ms_is_refused_by_every_schedule(tmp_path: Path) -> None:
    """The pipelined schedule keyed a trigger's ``tx:`` dependency by its NAD+MS, while the
    family binds and looks up ``tx:<UNB sender>:<IDE>``: a later trigger reusing the IDE under
    another NAD+MS did not wait for the first one's binding and started a process, where the
    sequential schedule refuses it (Z15). Every schedule and worker count now refuses it."""
    import re

    gen = tmp_path / "gen"
    generate_archive(gen, ArchiveSpec(processes=20, defects=0.0, duplicates=0.0, seed=7))
    at = received(gen)
    first_name, second_name = sorted(name for name in at if name.startswith("AN"))[:2]
    first, second = (gen / first_name).read_bytes(), (gen / second_name).read_bytes()
    unb_sender = re.compile(rb"UNB\+UNOC:3\+(\d+):500")
    sender = unb_sender.search(first).group(1)  # type: ignore[union-attr]
    other = sender[:-1] + (b"8" if sender[-1:] != b"8" else b"7")  # another MP-ID, as NAD+MS only

    def reused(raw: bytes, control: bytes) -> bytes:
        old_control = re.search(rb"\+(AN\d+)'", raw).group(1)  # type: ignore[union-attr]
        raw = re.sub(rb"IDE\+24\+\w+", b"IDE+24+REUSED1", raw).replace(old_control, control)
        return unb_sender.sub(b"UNB+UNOC:3+" + sender + b":500", raw)

    second = re.sub(rb"NAD\+MS\+\d+", b"NAD+MS+" + other, reused(second, b"F2CTRL"))
    second = re.sub(rb"CAV\+ZV4:::\w+", b"CAV+ZV4:::" + bilanzkreis_of(sender.decode()).encode(), second)
    src = _archive_dir(tmp_path, json.loads((gen / "master.json").read_text()))
    t0 = at[first_name]
    files = [("F1.edi", reused(first, b"F1CTRL"), t0), ("F2.edi", second, t0 + timedelta(hours=1))]
    with_manifest(src, files)
    one = await assert_workers_answer_like_one(src, tmp_path, (2,))
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, True, 512)
    sequential, _ = await _replay_items(archive(src), tmp_path / "sequential", options, None)
    assert sequential.decision_digest == one.digest
    assert one.dead_letters["inbound-conflict"] == 1  # F2: "transaction REUSED1 ... seen before"


def _segments(raw: bytes) -> list[str]:
    """The segments of a generated interchange (UNA stripped; ``'`` terminated, escaped as ``?'``)."""
    import re

    return [s for s in re.split(r"(?<!\?)'", raw.decode("latin-1").removeprefix("UNA:+.? '")) if s]


def _interchange_of(sender: str, control: str, messages: list[list[str]]) -> bytes:
    unb = f"UNB+UNOC:3+{sender}:500+{NB}:500+251103:0700+{control}"
    body = [s for message in messages for s in message]
    return ("UNA:+.? '" + "'".join([unb, *body, f"UNZ+{len(messages)}+{control}"]) + "'").encode("latin-1")


def _as_sent_by(message: list[str], sender: str) -> list[str]:
    """``message`` (UNH..UNT) with NAD+MS and the Bilanzkreis of ``sender``."""
    eic = bilanzkreis_of(sender)
    out = []
    for s in message:
        if s.startswith("NAD+MS+"):
            s = f"NAD+MS+{sender}::293"
        elif s.startswith("CAV+ZV4:::"):
            s = f"CAV+ZV4:::{eic}"
        out.append(s)
    return out


async def test_every_malo_of_a_bundled_message_is_placed_with_it(tmp_path: Path) -> None:
    """One UTILMD message carrying two Anmeldungen (two IDEs, two MaLos), then a competing
    Anmeldung from another supplier for the second MaLo. One run refuses it (A06: that MaLo's
    Anmeldung is being worked on). The walk gave the message's partition to its first MaLo
    only, so the second MaLo's next Anmeldung went wherever its own group fell: another part,
    which knew no claim on it and consulted the LFA. Every MaLo of the message now goes with it."""
    gen = tmp_path / "gen"
    generate_archive(gen, ArchiveSpec(processes=60, defects=0.0, duplicates=0.0, seed=1))
    master = json.loads((gen / "master.json").read_text())
    messages = []
    for name in sorted(n for n in received(gen) if n.startswith("AN")):
        segments = _segments((gen / name).read_bytes())
        if "RFF+Z13:55001" in segments and not any(s.startswith("LOC+Z22") for s in segments):
            unh = next(k for k, s in enumerate(segments) if s.startswith("UNH"))
            messages.append((segments[0].split("+")[2].split(":")[0], segments[unh:-1]))
    (sender, first), (_, second) = messages[:2]
    other = next(s for s in master["bilanzkreise"] if s != sender)
    tail = [s for s in _as_sent_by(second, sender) if not s.startswith(("UNH", "UNT"))]
    tail = tail[next(k for k, s in enumerate(tail) if s.startswith("IDE+")) :]
    bundled = [*_as_sent_by(first[:-1], sender), *tail]
    bundled.append(f"UNT+{len(bundled) + 1}+{bundled[0].split('+')[1]}")
    competing = [
        "IDE+24+COMPETE1" if s.startswith("IDE+24+") else s for s in _as_sent_by(second, other)
    ]
    src = _archive_dir(tmp_path, master)
    t0 = datetime(2025, 11, 3, 7, 0, tzinfo=UTC)
    with_manifest(src, [
        ("F1.edi", _interchange_of(sender, "F1CTRL", [bundled]), t0),
        ("F2.edi", _interchange_of(other, "F2CTRL", [competing]), t0 + timedelta(minutes=5)),
    ])  # fmt: skip
    one = await assert_workers_answer_like_one(src, tmp_path, (2, 3))
    decisions = await decisions_in(one.stores[0])
    [refused] = [d for seed, d in decisions.items() if seed.endswith(":COMPETE1")]
    assert (refused[1][0], refused[1][2]) == ("gpke.anmeldung_rejected_at_once", "A06")


async def test_an_answer_message_goes_where_a_request_it_answers_is(tmp_path: Path) -> None:
    """An LFA answers in one UTILMD message two transactions, the first naming no request of ours
    (RFF+TN unknown: one run refuses it, Z10), the second one of our 55010s. The walk followed
    the first RFF+TN only: unknown, the message went to the least loaded part, and the second
    answer was a dead letter there. It now goes where the first request it knows is. (A
    message is never cut: one answering requests of two parts still lacks one, a limit.)"""
    import csv

    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=60, defects=0.0, duplicates=0.0, seed=1))
    received_at = received(src)
    answers = [
        name for name in sorted(received_at)
        if name.startswith("LA") and b"UNH" not in (src / name).read_bytes().split(b"UNH", 1)[1]
    ]  # fmt: skip
    merged = []
    rows = [row for row in csv.reader((src / "manifest.csv").read_text().splitlines())]
    for k, name in enumerate(answers[:6]):
        segments = _segments((src / name).read_bytes())
        ide = next(i for i, s in enumerate(segments) if s.startswith("IDE+"))
        tx = segments[ide:-2]
        unknown = [f"IDE+24+BOGUS{k}" if s.startswith("IDE+") else s for s in tx]
        unknown = ["RFF+TN:T0000000000000000000" if s.startswith("RFF+TN:") else s for s in unknown]
        body = [*segments[1:ide], *unknown, *tx]
        body.append(f"UNT+{len(body) + 1}+{body[0].split('+')[1]}")
        sender = segments[0].split("+")[2].split(":")[0]
        merged.append((f"merged-{k}.edi", _interchange_of(sender, f"LAM{k}", [body]), received_at[name]))
        (src / name).unlink()
        rows = [row for row in rows if row[0] != name]
    (src / "manifest.csv").write_text("\n".join(",".join(row) for row in rows) + "\n")
    with_manifest(src, merged)
    one = await assert_workers_answer_like_one(src, tmp_path, (2, 3))
    assert one.report.outcomes["routed"] >= len(merged)


def _archive_dir(tmp_path: Path, master: dict[str, Any]) -> Path:
    """An archive directory with ``master`` and an empty manifest (``with_manifest`` adds files)."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "master.json").write_text(json.dumps(master))
    (src / "manifest.csv").write_text("file,received_at\n")
    return src


def _anmeldung_of(by: str, control: str, ide: str, malo: str) -> bytes:
    """A 55001 of ``by`` (its Bilanzkreis) for ``malo``, starting 2025-12-12."""
    return _utilmd(by, control, "202511030700", [
        f"IDE+24+{ide}", "DTM+92:202512112300?+00:303", "STS+7++E03+ZW4", f"LOC+Z16+{malo}",
        "RFF+Z13:55001", "SEQ+Z79+1", "PIA+5+9991000002082:Z11", "CCI+Z66",
        f"CAV+ZV4:::{bilanzkreis_of(by)}", "SEQ+ZH0+1", "CCI+Z65+++Z01", "NAD+Z09+++Muster:Max::::Z01",
    ])  # fmt: skip


def _abmeldung_of(by: str, control: str, ide: str, malo: str) -> bytes:
    """A 55004 of ``by`` for ``malo``, ending 2026-01-01."""
    return _utilmd(by, control, "202511030700", [
        f"IDE+24+{ide}", "DTM+93:202512312300?+00:303", "STS+7++Z33+ZW4", f"LOC+Z16+{malo}", "RFF+Z13:55004",
    ], bgm="E02")  # fmt: skip


def _utilmd(sender: str, control: str, at: str, transaction: list[str], bgm: str = "E01") -> bytes:
    """One UTILMD of ``sender`` to us with one ``transaction`` (IDE onwards), prepared ``at``."""
    body = [
        "UNH+M1+UTILMD:D:11A:UN:S2.1", f"BGM+{bgm}+D{control}", f"DTM+137:{at}?+00:303",
        f"NAD+MS+{sender}::293", f"NAD+MR+{NB}::293", *transaction,
    ]  # fmt: skip
    body.append(f"UNT+{len(body) + 1}+M1")
    return _interchange_of(sender, control, [body])


async def test_a_trigger_reusing_the_ide_of_a_refused_one_is_keyed_by_its_own_malo(tmp_path: Path) -> None:
    """A supplier's Abmeldung is refused (not the MaLo's supplier: Z17) and binds nothing; its
    Anmeldung for another MaLo reuses the IDE and starts a process. The pipelined schedule kept
    the first trigger read ahead as the IDE's dependency, so that process was keyed by the
    Abmeldung's MaLo, and its LFA Frist fired ahead of the LFA's answer received in time
    (deemed agreement instead of A36, where the sequential schedule records the answer). And
    ``--workers`` placed the Anmeldung with the refused Abmeldung instead of with its MaLo,
    deciding it without that MaLo's claims."""
    gen = tmp_path / "gen"
    generate_archive(gen, ArchiveSpec(processes=60, defects=0.0, duplicates=0.0, seed=1))
    master = json.loads((gen / "master.json").read_text())
    malos = [k for k, v in master.items() if isinstance(v, dict) and v.get("current")][:2]
    lfa = master[malos[0]]["current"]
    sender = next(s for s in master["bilanzkreise"] if s not in {master[m]["current"] for m in malos})
    abmeldung = _abmeldung_of(sender, "F2CTRL", "IDEX0001", malos[1])
    anmeldung = _anmeldung_of(sender, "F3CTRL", "IDEX0001", malos[0])
    t0 = datetime(2025, 11, 3, 7, 0, tzinfo=UTC)
    src = _archive_dir(tmp_path, master)
    with_manifest(src, [
        ("F2.edi", abmeldung, t0 + timedelta(minutes=5)), ("F3.edi", anmeldung, t0 + timedelta(minutes=10)),
    ])  # fmt: skip
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, True, 512)
    await _replay_items(archive(src), tmp_path / "scratch", options, None)
    async with LmdbStore(tmp_path / "scratch") as lmdb:
        pending = await lmdb.pending(10**6, datetime.max.replace(tzinfo=UTC))
    [request] = [m for m in pending if m.message_type == "UTILMD" and kind(m) == "55010"]
    ours = request.payload["transactions"][0]["ide_ref"]
    answer = _utilmd(lfa, "F4CTRL", "202511040730", [
        "IDE+24+LF4CTRL", "DTM+93:202512022300?+00:303", "STS+7++E01", "STS+E01++A36:E_0624", "RFF+Z13:55011",
        f"RFF+TN:{ours}",
    ], bgm="E02")  # fmt: skip
    later = _utilmd(sender, "F5CTRL", "202511050900", [
        "IDE+24+IDEZ0001", "DTM+92:202512112300?+00:303", "STS+7++E03+ZW4", f"LOC+Z16+{malos[1]}",
        "RFF+Z13:55001",
    ])  # fmt: skip
    with_manifest(src, [
        ("F4.edi", answer, datetime(2025, 11, 4, 7, 30, tzinfo=UTC)),
        ("F5.edi", later, datetime(2025, 11, 5, 9, 0, tzinfo=UTC)),
    ])  # fmt: skip
    sequential, _ = await _replay_items(archive(src), tmp_path / "sequential", options, None)
    one = await assert_workers_answer_like_one(src, tmp_path, (2, 3))
    assert sequential.decision_digest == one.digest
    decided = (await decisions_in(one.stores[0]))[f"{sender}:F3CTRL:M1:IDEX0001"]
    assert [d[0] for d in decided][2:4] == ["gpke.lfa_answered", "gpke.anmeldung_decided"]


async def test_a_trigger_reusing_a_refused_ones_ide_for_a_placed_malo_follows_its_malo(
    tmp_path: Path,
) -> None:
    """Another supplier claims MaLo M; then a supplier's Abmeldung for M2 is refused (Z17, binds
    nothing) and its Anmeldung for M reuses that IDE. One run refuses the Anmeldung as competing
    (A06). The walk placed it with the refused Abmeldung (its IDE), away from M's claim: that
    part consulted the LFA. A MaLo already placed now wins over the IDE's part."""
    gen = tmp_path / "gen"
    generate_archive(gen, ArchiveSpec(processes=60, defects=0.0, duplicates=0.0, seed=1))
    master = json.loads((gen / "master.json").read_text())
    malos = [k for k, v in master.items() if isinstance(v, dict) and v.get("current")][:2]
    holders = {master[m]["current"] for m in malos}
    claimant, sender = [s for s in master["bilanzkreise"] if s not in holders][:2]

    abmeldung = _abmeldung_of(sender, "F2CTRL", "IDEX0001", malos[1])
    t0 = datetime(2025, 11, 3, 7, 0, tzinfo=UTC)
    src = _archive_dir(tmp_path, master)
    with_manifest(src, [
        ("F1.edi", _anmeldung_of(claimant, "F1CTRL", "IDEC0001", malos[0]), t0),
        ("F2.edi", abmeldung, t0 + timedelta(minutes=5)),
        ("F3.edi", _anmeldung_of(sender, "F3CTRL", "IDEX0001", malos[0]), t0 + timedelta(minutes=10)),
    ])  # fmt: skip
    one = await assert_workers_answer_like_one(src, tmp_path, (2, 3))
    decided = (await decisions_in(one.stores[0]))[f"{sender}:F3CTRL:M1:IDEX0001"]
    assert (decided[1][0], decided[1][2]) == ("gpke.anmeldung_rejected_at_once", "A06")
