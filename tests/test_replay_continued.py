"""A store replayed with ``--workers N`` can be continued with another archive and N workers: the
result is that of one run over both archives (same decisions, dead letters and answers, every
MaLo's processes in one part store), and a store is refused, with nothing written, when asked to
continue with another worker count.
"""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors._partition import Partitioner
from mako_actors._workers import part_path, replay_partitions
from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.cli import main
from mako_actors.compare import compare_outbound
from mako_actors.errors import InvalidArgument
from mako_actors.replay import (
    ArchivedInterchange,
    ReplayReport,
    _all_events,
    _Options,
    _replay_items,
    archive,
    decision_digest,
    load_master_data,
    process_decisions,
    replay_directory,
)
from stores.lmdb import Durability, LmdbStore
from tests.inbound.edi import THU_1430, anmeldung
from tests.test_replay_partitions import NB, _in_threads, outbox_as_sent, with_manifest, with_reused_ides

_OTHER = "51238696781"  # another MaLo


def split_by_receipt(src: Path, first: Path, second: Path) -> None:
    """``src``'s files received before its middle instant into ``first``, the rest into ``second``,
    each a directory with its own ``manifest.csv`` and ``master.json``."""
    items = archive(src)
    middle = items[len(items) // 2].received_at
    for target, share in (
        (first, [i for i in items if i.received_at < middle]),
        (second, [i for i in items if i.received_at >= middle]),
    ):
        target.mkdir()
        shutil.copy(src / "master.json", target / "master.json")
        with (target / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "received_at"])
            for item in share:
                shutil.copy(item.path, target / item.path.name)
                writer.writerow([item.path.name, item.received_at.isoformat()])


def split_and_whole(
    src: Path,
) -> tuple[list[ArchivedInterchange], list[ArchivedInterchange], list[ArchivedInterchange]]:
    """A generated archive in ``src`` (bundles of several MaLos), its files, and which of them two
    partitions cut into pieces and which they keep whole."""
    generate_archive(src, ArchiveSpec(processes=150, defects=0.0, duplicates=0.0, seed=4, suppliers=4))
    items = archive(src)
    partitioner = Partitioner(2, [NB])
    split: list[ArchivedInterchange] = []
    whole: list[ArchivedInterchange] = []
    for item in items:
        pieces = partitioner.split(item.path.name, item.path.read_bytes(), item.received_at)
        (split if len(pieces) > 1 else whole).append(item)
    return items, split, whole


async def replay(src: Path, store: Path, n: int) -> tuple[ReplayReport, list[Path]]:
    """One run of ``src`` into ``store`` (new or continued) with ``n`` workers (threads)."""
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, False, 512)
    if n == 1:
        report, _ = await _replay_items(archive(src), store, options, None)
    else:
        report = await replay_partitions(archive(src), store, options, n, runner=_in_threads)
    return report, [part_path(store, k, n) for k in range(n)]


async def dead_letters(stores: list[Path]) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in stores:
        async with LmdbStore(path) as store:
            found.update(letter.kind for letter in await store.dead_letters(limit=10**6))
    return found


async def malos_by_store(stores: list[Path]) -> dict[tuple[str, str], set[int]]:
    """``(recipient, MaLo)`` of every process a trigger started -> the part stores holding one."""
    found: dict[tuple[str, str], set[int]] = defaultdict(set)
    for k, path in enumerate(stores):
        async with LmdbStore(path) as store:
            for event in await _all_events(store):
                inbound = event.payload.get("inbound")
                if isinstance(inbound, dict) and inbound.get("malo"):
                    found[(inbound["recipient"], inbound["malo"])].add(k)
    return found


async def union_digest(stores: list[Path]) -> str:
    decisions: dict[str, list[list[object]]] = {}
    for path in stores:
        async with LmdbStore(path) as store:
            decisions |= process_decisions(await _all_events(store))
    return decision_digest(decisions)


@pytest.mark.parametrize(("seed", "n"), [(3, 2), (8, 3)])
async def test_two_archives_replayed_one_after_the_other_into_part_stores_decide_like_one_run(
    tmp_path: Path, seed: int, n: int
) -> None:
    src = tmp_path / "all"
    generate_archive(src, ArchiveSpec(days=6, processes=300, defects=0.1, seed=seed))
    split_by_receipt(src, tmp_path / "jan", tmp_path / "feb")
    one, whole = await replay(src, tmp_path / "one", 1)
    sent = await outbox_as_sent(tmp_path / "one", tmp_path / "sent")

    await replay(tmp_path / "jan", tmp_path / "parts", n)
    report, stores = await replay(tmp_path / "feb", tmp_path / "parts", n)

    assert await union_digest(stores) == one.decision_digest
    assert report.decision_digest == one.decision_digest  # the report covers what the stores hold
    malos = await malos_by_store(stores)
    assert malos, "the archive must start processes"
    assert {malo: parts for malo, parts in malos.items() if len(parts) > 1} == {}
    assert await dead_letters(stores) == await dead_letters(whole)
    assert await compare_outbound(sent, stores) == []


async def test_an_ide_an_earlier_run_took_is_refused_where_that_run_started_its_process(
    tmp_path: Path,
) -> None:
    """January's archive started a process under a supplier's IDE; February's reuses it for
    another MaLo. One run over both refuses it (Z15). Continued part stores place it where the
    ``tx:`` key is (read from the stores, as the MaLos and references are), not by its MaLo."""
    src = tmp_path / "all"
    generate_archive(src, ArchiveSpec(processes=60, defects=0.0, duplicates=0.0, seed=5))
    with_reused_ides(src, 6)
    split_by_receipt(src, tmp_path / "jan", tmp_path / "feb")
    one, whole = await replay(src, tmp_path / "one", 1)
    await replay(tmp_path / "jan", tmp_path / "parts", 2)
    report, stores = await replay(tmp_path / "feb", tmp_path / "parts", 2)
    assert report.decision_digest == one.decision_digest
    assert await dead_letters(stores) == await dead_letters(whole)


def _listing(path: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.mark.parametrize(
    ("first", "then", "named"),
    [(2, 3, "--workers 2"), (2, 1, "--workers 2"), (1, 2, "one-worker")],
)
def test_a_store_is_continued_only_with_the_worker_count_it_was_made_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: int, then: int, named: str
) -> None:
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=2, processes=20, defects=0.0, seed=5))
    store = tmp_path / "store"
    asyncio.run(replay(src, store, first))
    before = _listing(store)
    capsys.readouterr()
    argv = ["replay", str(src), "--store", str(store), "--tenant", NB, "--workers", str(then), "--json"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and f"not {then}" in err and str(store) in err
    assert _listing(store) == before  # nothing written


def test_the_library_call_refuses_a_store_of_another_worker_count(tmp_path: Path) -> None:
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=2, processes=20, defects=0.0, seed=5))
    store = tmp_path / "store"
    asyncio.run(replay(src, store, 2))
    before = _listing(store)
    with pytest.raises(InvalidArgument, match="--workers 2"):
        asyncio.run(replay_directory(src, store, tenants=[NB], workers=1))
    assert _listing(store) == before  # nothing written, no data.mdb beside the parts


@pytest.mark.parametrize("then", [1, 2])
def test_a_part_store_given_as_the_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], then: int
) -> None:
    """``STORE/part-0-of-2`` is a share of the MaLos, not a store of its own: a replay into it
    would give the other part's MaLos a second process (CLI and library alike)."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=2, processes=20, defects=0.0, seed=5))
    store = tmp_path / "store"
    asyncio.run(replay(src, store, 2))
    part = part_path(store, 0, 2)
    before = _listing(store)
    capsys.readouterr()
    argv = ["replay", str(src), "--store", str(part), "--tenant", NB, "--workers", str(then), "--json"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "part 0 of a replay with --workers 2" in err and str(store) in err
    with pytest.raises(InvalidArgument, match="part 0 of a replay with --workers 2"):
        asyncio.run(replay_directory(src, part, tenants=[NB], workers=then))
    assert _listing(store) == before  # nothing written


@pytest.mark.parametrize("lost", ["directory", "data.mdb", "empty data.mdb"])
def test_a_store_missing_one_of_its_parts_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lost: str
) -> None:
    """A lost ``part-1-of-2`` would be made again, empty, and its MaLos' next messages would start
    processes that know nothing of the old ones: refused, naming the part, nothing written."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=2, processes=20, defects=0.0, seed=5))
    store = tmp_path / "store"
    asyncio.run(replay(src, store, 2))
    part = part_path(store, 1, 2)
    if lost == "directory":
        shutil.rmtree(part)
    elif lost == "data.mdb":
        (part / "data.mdb").unlink()
    else:  # cut to nothing (a copy cut short): LMDB would start it over, empty
        (part / "data.mdb").write_bytes(b"")
    before = _listing(store)
    capsys.readouterr()
    assert main(["replay", str(src), "--store", str(store), "--tenant", NB, "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lacks part-1-of-2" in err and "start again empty" in err
    with pytest.raises(InvalidArgument, match="lacks part-1-of-2"):
        asyncio.run(replay_directory(src, store, tenants=[NB], workers=2))
    assert _listing(store) == before  # nothing written, the part not made again


async def test_interchanges_of_an_earlier_run_received_again_are_answered_as_in_one_run(
    tmp_path: Path,
) -> None:
    """Retransmissions in the later archive of interchanges the earlier run received (bundles it
    split over part stores, and whole ones): the same bytes are duplicates, truncated ones get
    CONTRL 4/26 and a dead letter, exactly as in one run over both archives."""
    jan = tmp_path / "jan"
    items, split, whole = split_and_whole(jan)
    assert len(split) >= 4 and len(whole) >= 2
    later = items[-1].received_at
    again = [(f"{i.path.stem}-again.edi", i.path.read_bytes()) for i in split[:2] + whole[:2]]
    cut = [
        (f"{i.path.stem}-cut.edi", i.path.read_bytes()[: i.path.stat().st_size * 2 // 3])
        for i in split[2:4] + whole[2:3]
    ]
    extra = [(name, raw, later + timedelta(minutes=k + 1)) for k, (name, raw) in enumerate(again + cut)]
    feb = tmp_path / "feb"
    feb.mkdir()
    shutil.copy(jan / "master.json", feb / "master.json")
    (feb / "manifest.csv").write_text("file,received_at\n")
    with_manifest(feb, extra)
    union = tmp_path / "union"
    shutil.copytree(jan, union)
    with_manifest(union, extra)

    one, whole_store = await replay(union, tmp_path / "one", 1)
    sent = await outbox_as_sent(tmp_path / "one", tmp_path / "sent")
    await replay(jan, tmp_path / "parts", 2)
    report, stores = await replay(feb, tmp_path / "parts", 2)

    assert report.decision_digest == one.decision_digest
    expected = await dead_letters(whole_store)
    assert expected["inbound-conflict"] == len(cut)
    assert await dead_letters(stores) == expected
    assert await compare_outbound(sent, stores) == []


@pytest.mark.parametrize("n", [1, 2])
async def test_a_rerun_over_broken_copies_sent_before_their_corrections_writes_nothing(
    tmp_path: Path, n: int
) -> None:
    """A truncated copy of an interchange arrives first (rejected, CONTRL 4), its complete
    resend under the same 0020 after it (accepted). Before, the receipt stream kept only the
    last bytes, so running the same replay again took the truncated copy for other bytes under
    an accepted reference: a new CONTRL 4/26 to the partner, a dead letter and events per
    such file. Bytes received before are a duplicate now, wherever they came in the walk."""
    src = tmp_path / "in"
    _, split, whole = split_and_whole(src)
    broken = [
        (f"{i.path.stem}-cut.edi", i.path.read_bytes()[: i.path.stat().st_size * 2 // 3],
         i.received_at - timedelta(minutes=2))
        for i in split[:3] + whole[:3]
    ]  # fmt: skip
    with_manifest(src, broken)

    first, _ = await replay(src, tmp_path / "store", n)
    assert first.statuses["rejected"] >= len(broken) and "conflict" not in first.statuses
    again, _ = await replay(src, tmp_path / "store", n)
    written = (again.events_appended, again.outbox_enqueued, again.dead_letters)
    assert written == (0, 0, 0) and "conflict" not in again.statuses, again.statuses
    assert again.decision_digest == first.decision_digest


def _files(target: Path, files: list[bytes], offset: int) -> None:
    """An archive of ``files`` (one interchange each), received a minute apart from ``offset``."""
    target.mkdir()
    rows = ["file,received_at"]
    for i, raw in enumerate(files):
        name = f"f{offset + i:02d}.edi"
        (target / name).write_bytes(raw)
        rows.append(f"{name},{(THU_1430 + timedelta(minutes=offset + i)).isoformat()}")
    (target / "manifest.csv").write_text("\n".join(rows) + "\n")


async def _answers(stores: list[Path]) -> tuple[list[tuple[str, str]], list[str]]:
    """Each CONTRL's (0083, 0085) and each dead letter's kind, over ``stores``, sorted."""
    contrls: list[tuple[str, str]] = []
    letters: list[str] = []
    for path in stores:
        async with LmdbStore(path) as store:
            due = await store.pending(1000, THU_1430 + timedelta(days=999))
            contrls += [(m.payload["action"], m.payload.get("error_code") or "") for m in due
                        if m.message_type == "CONTRL"]  # fmt: skip
            letters += [letter.kind for letter in await store.dead_letters(limit=100)]
    return sorted(contrls), sorted(letters)


@pytest.mark.parametrize(("first", "second"), [("tw", "gtw"), ("tw", "wgt"), ("ftw", "gwto")])
async def test_bytes_an_earlier_run_rejected_are_a_duplicate_on_one_and_two_workers(
    tmp_path: Path, first: str, second: str
) -> None:
    """A truncated (t) and a wrong-version (w) copy rejected by a first archive, its good bytes
    (g) accepted in the second and the rejected ones sent again: a duplicate each, as in one
    store; other bytes (o) a conflict. Before, with two workers each part store knew only the
    bytes it received, and the walk placed rejected bytes by the accepted ones: a conflict,
    CONTRL 4/26 and a dead letter that one worker does not send."""
    good = anmeldung()
    kinds = {
        "t": good[: good.index(b"RFF+Z13")], "w": anmeldung(version="UTILMD:D:11A:UN:S9.9"), "g": good,
        "o": anmeldung(version="UTILMD:D:11A:UN:S9.8"),
        "f": anmeldung(ref="LFN100", ide="LFNTX10", malo=_OTHER),  # another interchange first
    }  # fmt: skip
    _files(tmp_path / "a", [kinds[k] for k in first], 0)
    _files(tmp_path / "b", [kinds[k] for k in second], 100)
    seen = []
    for n in (1, 2):
        store = tmp_path / f"store-{n}"
        statuses = [
            dict((await replay_directory(tmp_path / a, store, tenants=[NB], workers=n)).statuses)
            for a in ("a", "b")
        ]
        stores = [store] if n == 1 else [part_path(store, k, n) for k in range(n)]
        seen.append((statuses, await _answers(stores)))
    assert seen[1] == seen[0]
    assert seen[0][0][1].get("conflict", 0) == second.count("o")


def first_files(src: Path, target: Path, count: int) -> None:
    """The first ``count`` files of ``src`` by receipt instant into ``target`` (an archive)."""
    target.mkdir()
    shutil.copy(src / "master.json", target / "master.json")
    (target / "manifest.csv").write_text("file,received_at\n")
    with_manifest(target, [(i.path.name, i.path.read_bytes(), i.received_at) for i in archive(src)[:count]])


@pytest.mark.parametrize("sequential", [False, True])
async def test_a_store_continued_with_an_overlapping_archive_decides_like_one_run(
    tmp_path: Path, sequential: bool
) -> None:
    """The first run leaves LFA Fristen pending whose answers the second archive holds (received
    before they are due), beside its own triggers again (duplicates): each answer is in time,
    so the Frist never fires, as in one run over the whole archive."""
    src = tmp_path / "all"
    generate_archive(src, ArchiveSpec(days=1, processes=150, defects=0.05, seed=1))
    first_files(src, tmp_path / "first", 100)
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, sequential, 512)
    one, _ = await _replay_items(archive(src), tmp_path / "one", options, None)
    first, _ = await _replay_items(archive(tmp_path / "first"), tmp_path / "store", options, None)
    async with LmdbStore(tmp_path / "store") as store:
        left = await store.due_deadlines(datetime.max.replace(tzinfo=UTC), 10**6)
    assert left, "the first run must leave Fristen pending"

    continued, _ = await _replay_items(archive(src), tmp_path / "store", options, None)

    assert continued.decision_digest == one.decision_digest
    assert first.deadlines_fired + continued.deadlines_fired == one.deadlines_fired


@pytest.mark.parametrize("n", [1, 2])
async def test_a_file_received_before_the_stores_fired_fristen_but_not_replayed_is_refused(
    tmp_path: Path, n: int
) -> None:
    """A continued archive may repeat what the store took (duplicates) but not add a file
    received before the store's last run fired its Fristen: decided now, an LFA's answer that
    was in time would come after the Frist that deemed it agreed (or refused). Before, such a
    file was decided after them, silently unlike one run. Refused, nothing written; the same
    archive without it continues the store."""
    src = tmp_path / "all"
    generate_archive(src, ArchiveSpec(days=1, processes=150, defects=0.0, seed=1))
    items = archive(src)
    missed = items[40]
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(src / "master.json", first / "master.json")
    (first / "manifest.csv").write_text("file,received_at\n")
    kept = [i for i in items[:100] if i != missed]
    with_manifest(first, [(i.path.name, i.path.read_bytes(), i.received_at) for i in kept])
    await replay(first, tmp_path / "store", n)
    data = sorted((tmp_path / "store").rglob("data.mdb"))
    before = [path.read_bytes() for path in data]

    # Through replay_directory: with --workers, every part is checked before any starts (a part
    # refusing alone left the others to run on, in their own OS processes).
    master = load_master_data(src / "master.json")
    with pytest.raises(InvalidArgument, match=rf"1 file\(s\) .* are not in it \({missed.path.name}\)"):
        await replay_directory(src, tmp_path / "store", tenants=[NB], master_data=master, workers=n)
    assert [path.read_bytes() for path in data] == before
    assert not list((tmp_path / "store").rglob("replay-running"))

    later = tmp_path / "later"
    first_files(src, later, len(items))
    (later / missed.path.name).unlink()
    rows = (later / "manifest.csv").read_text().splitlines(True)
    (later / "manifest.csv").write_text("".join(row for row in rows if missed.path.name not in row))
    report, _ = await replay(later, tmp_path / "store", n)
    assert report.statuses["duplicate"] >= 99


async def test_a_misaddressed_file_of_a_multi_tenant_store_does_not_block_its_continuation(
    tmp_path: Path,
) -> None:
    """With several tenants a misaddressed interchange leaves only a dead letter, no receipt:
    the continuation check took it for a file no run had taken and refused the same archive."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=1, processes=40, defects=0.0, seed=2))
    last = archive(src)[-1].received_at
    raw = (src / archive(src)[0].path.name).read_bytes().replace(NB.encode(), b"9900000099993", 1)
    with_manifest(src, [("zz-misaddressed.edi", raw, last - timedelta(hours=1))])
    master = load_master_data(src / "master.json")
    master.tenant = NB  # (the file is NB's: with two tenants a file must say whose it is)
    options = _Options([NB, "9900000003007"], master, None, Durability.NO_SYNC, False, 512)
    first, _ = await _replay_items(archive(src), tmp_path / "store", options, None)
    assert first.statuses["rejected"] == 1
    again, _ = await _replay_items(archive(src), tmp_path / "store", options, None)
    assert again.statuses["rejected"] == 1 and again.decision_digest == first.decision_digest


async def test_a_run_whose_worker_died_is_completed_by_running_it_again(tmp_path: Path) -> None:
    """One worker finished its part, the other died before storing any: running the same
    replay again must decide as an uninterrupted run. Before, a bundle cut between the parts was
    sent whole to the part holding its one piece: a conflict there (CONTRL 4/26, a dead letter),
    the other piece's answers never processed, and LFAs deemed to agree where they objected."""
    from mako_actors import _workers

    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=3, processes=300, defects=0.05, seed=5))
    clean, _ = await replay(src, tmp_path / "clean", 2)

    async def second_dies(worker: Any, calls: list[tuple[Any, ...]]) -> list[Any]:
        out = []
        for call in calls:
            if worker is _workers._worker and call[4] == 1:
                async with LmdbStore(Path(call[2])):
                    pass  # its store made, then the worker is killed
                raise RuntimeError("worker 1 killed")
            out.append(await asyncio.to_thread(worker, *call))
        return out

    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, False, 512)
    with pytest.raises(RuntimeError, match="worker 1 killed"):
        await replay_partitions(archive(src), tmp_path / "again", options, 2, runner=second_dies)
    report, stores = await replay(src, tmp_path / "again", 2)
    assert report.statuses["conflict"] == clean.statuses["conflict"]
    assert await union_digest(stores) == clean.decision_digest


def worker_1_dies(opened: bool) -> Any:
    """A runner of the workers' calls one after the other whose worker 1 is killed (the OOM
    killer) in round 2, having stored nothing: after opening its store, or before."""
    from mako_actors import _workers

    async def run(worker: Any, calls: list[tuple[Any, ...]]) -> list[Any]:
        out = []
        for call in calls:
            if worker is _workers._worker and call[4] == 1:
                if opened:
                    async with LmdbStore(Path(call[2])):
                        pass
                raise RuntimeError("worker 1 killed")
            out.append(await asyncio.to_thread(worker, *call))
        return out

    return run


@pytest.mark.parametrize("opened", [True, False])
async def test_running_the_same_replay_again_completes_a_store_whose_worker_died(
    tmp_path: Path, opened: bool
) -> None:
    """The worker-died error says: run the same replay again to complete it. Before, that run
    (``replay_directory``, as the CLI) was refused: the files of the part whose worker died
    counted as late against the instant up to which the other part had fired its Fristen (or,
    its store never made, the store lacked a part). Each part's Fristen are its own: the run
    decides as an uninterrupted one."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=2, processes=200, seed=3))
    master = load_master_data(src / "master.json")
    clean = await replay_directory(src, tmp_path / "clean", tenants=[NB], master_data=master, workers=2)
    options = _Options([NB], master, None, Durability.NO_SYNC, False, 512)
    with pytest.raises(RuntimeError, match="worker 1 killed"):
        await replay_partitions(archive(src), tmp_path / "again", options, 2, runner=worker_1_dies(opened))

    report = await replay_directory(src, tmp_path / "again", tenants=[NB], master_data=master, workers=2)

    assert report.decision_digest == clean.decision_digest
    parts = [part_path(tmp_path / "again", k, 2) for k in range(2)]
    assert await union_digest(parts) == clean.decision_digest


async def test_a_late_file_of_the_part_that_finished_is_refused_when_the_other_part_died(
    tmp_path: Path,
) -> None:
    """A file received before its own part fired its Fristen, and not in it, is still refused,
    naming it alone (the files of the part whose worker died are not late), nothing written
    in either part."""
    src = tmp_path / "all"
    generate_archive(src, ArchiveSpec(days=2, processes=200, defects=0.0, seed=3))
    items = archive(src)
    partitioner = Partitioner(2, [NB])
    placed = [partitioner.split(i.path.name, i.path.read_bytes(), i.received_at) for i in items]
    later = list(zip(items, placed, strict=True))[len(items) // 2 :]
    # An LFA's answer, placed with its request (a new MaLo's trigger would go to the emptier part).
    missed = next(item for item, parts in later if set(parts) == {0} and item.path.name.startswith("LA"))
    first = tmp_path / "first"
    first_files(src, first, 0)
    with_manifest(first, [(i.path.name, i.path.read_bytes(), i.received_at) for i in items if i != missed])
    options = _Options([NB], load_master_data(src / "master.json"), None, Durability.NO_SYNC, False, 512)
    store = tmp_path / "store"
    with pytest.raises(RuntimeError, match="worker 1 killed"):
        await replay_partitions(archive(first), store, options, 2, runner=worker_1_dies(True))
    data = sorted(store.rglob("data.mdb"))
    before = [path.read_bytes() for path in data]

    master = load_master_data(src / "master.json")
    refused = rf"1 file\(s\) .*\(part-0-of-2 by .*\), but are not in it \({missed.path.name}\)"
    with pytest.raises(InvalidArgument, match=refused):
        await replay_directory(src, store, tenants=[NB], master_data=master, workers=2)
    assert [path.read_bytes() for path in data] == before
    assert not list(store.rglob("replay-running"))


async def test_a_store_a_replay_left_half_done_is_refused_not_decided_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipelined replay writes receipts after routing: stopped mid-run (kill -9, Ctrl-C, a
    store error), what it routed last lacks its receipt. Before, a run on that store decided it
    again (LFA answers applied twice, a second APERAK, refusals of triggers that started before).
    Now the store carries a mark while a run writes to it, and a store with the mark and data is
    refused (exit 2) with nothing written; a run that ends removes it."""
    from mako_actors.inbound import InboundPipeline
    from mako_actors.replay import RUNNING_MARKER

    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=1, processes=60, defects=0.0, seed=3))
    report, _ = await replay(src, tmp_path / "done", 1)
    assert report.files > 20 and not (tmp_path / "done" / RUNNING_MARKER).exists()

    real = InboundPipeline.ingest
    calls = 0

    async def stops_midway(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 20:
            raise RuntimeError("stopped midway")  # as a kill -9 or a store error would
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(InboundPipeline, "ingest", stops_midway)
    with pytest.raises(RuntimeError, match="stopped midway"):
        await replay(src, tmp_path / "cut", 1)
    monkeypatch.setattr(InboundPipeline, "ingest", real)
    assert (tmp_path / "cut" / RUNNING_MARKER).exists()
    before = (tmp_path / "cut" / "data.mdb").read_bytes()
    with pytest.raises(InvalidArgument, match="left by a replay that did not end"):
        await replay(src, tmp_path / "cut", 1)
    assert (tmp_path / "cut" / "data.mdb").read_bytes() == before


def test_a_store_a_replay_left_half_done_is_neither_served_nor_shown_as_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only ``replay`` looked for the mark: ``serve`` started on such a store, fired its overdue
    Fristen and delivered answers without a word, and ``stats`` or ``processes list`` showed
    its counts as a store's. Now serve and ``masterdata import`` refuse it, the views warn."""
    from mako_actors.replay import RUNNING_MARKER
    from mako_actors.serve_config import ServeConfig

    store = tmp_path / "cut"
    asyncio.run(LmdbStore(store).aclose())  # data.mdb, as a killed replay leaves it
    (store / RUNNING_MARKER).write_text("replay started 2026-12-05T12:00:00+00:00 by process 4242\n")
    before = (store / "data.mdb").read_bytes()
    with pytest.raises(InvalidArgument, match=r"serve: --store .* left by a replay that did not end"):
        ServeConfig(store=store, tenants=(NB,), inbox=tmp_path / "in", outbox=tmp_path / "o", http_port=None)
    master = tmp_path / "master.csv"
    master.write_text("malo,supplier,from,until\n")
    assert main(["masterdata", "import", str(master), "--store", str(store), "--tenant", NB]) == 2
    assert "left by a replay that did not end" in capsys.readouterr().err
    assert main(["stats", "--store", str(store)]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    # (A replay may also still be running: the mark names when it began and its process.)
    assert f"{store} was left by a replay that did not end, or one is still writing" in err
    assert "by process 4242" in err
    assert (store / "data.mdb").read_bytes() == before


async def test_a_split_stores_outbox_as_what_was_sent_compares_equal_to_the_same_replay(
    tmp_path: Path,
) -> None:
    """README: what was sent may be a store's answers written out (``outbox render``). From a
    --workers store, a bundle split between the parts has one CONTRL per part there. Before,
    only the replay side merged them: the same replay compared against itself reported
    'missing CONTRL'."""
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(days=3, processes=300, defects=0.05, seed=5))
    _, first = await replay(src, tmp_path / "first", 2)
    sent = tmp_path / "sent"
    sent.mkdir()
    for k, store in enumerate(first):
        for path in (await outbox_as_sent(store, tmp_path / f"part{k}")).iterdir():
            path.rename(sent / f"{k}-{path.name}")
    _, second = await replay(src, tmp_path / "second", 2)
    assert await compare_outbound(sent, second) == []


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_store_continued_on_another_werktag_calendar_says_so(
    tmp_path: Path, workers: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each run records the Werktag calendar it computed Fristen on; a run into a store whose
    earlier runs used another one (a ``holidays`` release raised between January's archive and
    February's) warns and reports both, since a Frist they left pending fires as they computed
    it and the new ones follow this calendar. Before, nothing told them apart."""
    from mako_actors.gpke.calendar import calendar_version
    from mako_actors.replay import FIRED_UNTIL

    src = tmp_path / "src"
    generate_archive(src, ArchiveSpec(processes=30, defects=0.0, seed=11))
    first, second = tmp_path / "first", tmp_path / "second"
    split_by_receipt(src, first, second)
    store = tmp_path / "store"
    report, stores = await replay(first, store, workers)
    assert report.calendar_changed is None and report.to_plain()["calendar"] == calendar_version()
    older = "bdew-datetimes==0.11.0;holidays==0.100"
    for path in stores:
        async with LmdbStore(path) as lmdb:
            _, state = await lmdb.load_checkpoint_state(FIRED_UNTIL)
            assert state is not None and state["calendar"] == calendar_version()
            await lmdb.save_checkpoint(FIRED_UNTIL, 0, {**state, "calendar": older})
    report, _ = await replay(second, store, workers)
    assert report.calendar_changed == f"{older} -> {calendar_version()}"
    argv = ["replay", str(second), "--store", str(store), "--tenant", NB, "--json"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    for path in stores:  # (the run above recorded this calendar again)
        async with LmdbStore(path) as lmdb:
            _, state = await lmdb.load_checkpoint_state(FIRED_UNTIL)
            assert state is not None and state["calendar"] == calendar_version()
            await lmdb.save_checkpoint(FIRED_UNTIL, 0, {**state, "calendar": older})
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()  # the warning goes to stderr (stdout is the JSON report)
    assert "warning: Werktag calendar changed" in captured.err and older in captured.err
    assert json.loads(captured.out)["calendar_changed"] == f"{older} -> {calendar_version()}"
