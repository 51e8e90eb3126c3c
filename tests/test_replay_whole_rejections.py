"""``replay --workers N`` rejects a whole interchange exactly where one worker does.

An interchange the pipeline rejects as a whole (the parser refuses it, or it is accepted by the
parser but refused before routing: a UNH version not in force, a test interchange, another
recipient, no format version on the receipt day) must not be cut into pieces that are judged
one by one: one run answers it with one CONTRL, lists it once as rejected and routes none of
its messages. These tests build such files from a generated archive (real EDIFACT bytes, each
a bundle whose messages fall into several partitions after the files before it), replay it on
1, 2 and 3 workers into
real LMDB stores and compare every answer about those interchanges, the dead letters, the
rejected files and the decision digest.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mako_actors._partition import Partitioner, Scan, rejected_as_a_whole
from mako_actors.archive import ArchiveSpec, generate_archive, mp_id
from mako_actors.compare import compare_outbound
from mako_actors.gpke import GpkeNbWorkflow
from mako_actors.inbound import DirectHost, InboundPipeline, ReceiptWorkflow
from mako_actors.replay import archive
from mako_actors.scheduler import VirtualClock
from stores.lmdb import LmdbStore
from tests.test_replay_partitions import NB, Run, outbox_as_sent, received, replay, with_manifest

_OTHER_RECIPIENT = mp_id(4711)


def _unz_count(raw: bytes) -> bytes:
    """The UNZ message count one too high (ControlCountMismatch, the whole interchange)."""
    head, _, tail = raw.rpartition(b"UNZ+")
    count, rest = tail.split(b"+", 1)
    return head + b"UNZ+" + str(int(count) + 1).encode() + b"+" + rest


def _unb_date(raw: bytes) -> bytes:
    """UNB S004 with month 13 (InvalidValue in the UNB: every piece would be rejected too)."""
    start = raw.index(b"UNB+")
    end = raw.index(b"'", start)
    elements = raw[start:end].split(b"+")
    elements[4] = elements[4][:2] + b"13" + elements[4][4:]
    return raw[:start] + b"+".join(elements) + raw[end:]


def _between_messages(raw: bytes) -> bytes:
    """A segment between the first UNT and the next UNH (UnexpectedSegment)."""
    end = raw.index(b"'", raw.index(b"UNT+")) + 1
    return raw[:end] + b"FTX+ACB+++stray'" + raw[end:]


def _last_unt_count(raw: bytes) -> bytes:
    """The last message's UNT count one too low (a message-level defect: UCM line, whole rejected)."""
    start = raw.rindex(b"UNT+")
    count_end = raw.index(b"+", start + 4)
    count = int(raw[start + 4 : count_end])
    return raw[: start + 4] + str(count - 1).encode() + raw[count_end:]


def _last_unh_version(raw: bytes) -> bytes:
    """The last message in UTILMD S2.2, not in force in 2025 (UCM 12 on UNH, whole rejected)."""
    start = raw.rindex(b"UNH+")
    end = raw.index(b"'", start)
    return raw[:start] + raw[start:end].replace(b":S2.1", b":S2.2") + raw[end:]


def _test_flag(raw: bytes) -> bytes:
    """UNB 0035 = 1: a test interchange, refused in production."""
    end = raw.index(b"'", raw.index(b"UNB+"))
    return raw[:end] + b"++++++1" + raw[end:]


def _misaddressed(raw: bytes) -> bytes:
    """UNB recipient another MP-ID than ours (CONTRL 4/7 from us, a dead letter)."""
    start = raw.index(b"UNB+")
    end = raw.index(b"'", start)
    return raw[:start] + raw[start:end].replace(NB.encode(), _OTHER_RECIPIENT.encode()) + raw[end:]


def _unknown_pid_in_last(raw: bytes) -> bytes:
    """The last message's PID unknown (refused alone with APERAK Z31; the others are routed)."""
    start = raw.rindex(b"UNH+")
    tail = raw[start:]
    for pid in (
        b"RFF+Z13:55001'",
        b"RFF+Z13:55077'",
        b"RFF+Z13:55011'",
        b"RFF+Z13:55012'",
        b"RFF+Z13:55004'",
    ):
        tail = tail.replace(pid, b"RFF+Z13:55999'")
    return raw[:start] + tail


DEFECTS: dict[str, Callable[[bytes], bytes]] = {
    "unz-count": _unz_count,
    "unb-date": _unb_date,
    "between": _between_messages,
    "unt-count": _last_unt_count,
    "unh-version": _last_unh_version,
    "test-flag": _test_flag,
    "misaddressed": _misaddressed,
    "unknown-pid": _unknown_pid_in_last,
}


def bundles_archive(src: Path) -> None:
    """A generated archive without defects or duplicates, with bundles cut on 2 and 3 workers."""
    generate_archive(src, ArchiveSpec(processes=240, defects=0.0, duplicates=0.0, seed=4, suppliers=4))


def primed(n: int, src: Path, path: Path) -> Partitioner:
    """A partitioner that walked the files of ``src`` received before ``path``: it places
    ``path``'s MaLos and answers as a walk of the archive does (a fresh one keeps new MaLos together)."""
    partitioner = Partitioner(n, [NB])
    for item in archive(src):
        if item.path == path:
            return partitioner
        partitioner.split(item.path.name, item.path.read_bytes(), item.received_at)
    raise AssertionError(f"{path} is not in {src}")


def _split_bundles(src: Path, count: int) -> list[Path]:
    """Bundles of >= 2 messages (no escapes) that 2 and 3 workers both cut into pieces when
    walking ``src`` (``primed``)."""
    two, three = Partitioner(2, [NB]), Partitioner(3, [NB])
    found = []
    for item in archive(src):
        raw = item.path.read_bytes()
        pieces = (
            two.split(item.path.name, raw, item.received_at),
            three.split(item.path.name, raw, item.received_at),
        )
        if all(len(p) > 1 for p in pieces) and not Scan(raw).escaped:
            found.append(item.path)
    assert len(found) >= count, f"only {len(found)} bundles split on 2 and 3 workers"
    return found[:count]


def _control_ref(raw: bytes) -> str:
    return Scan(raw).control.decode()


def build_defect_archive(src: Path) -> dict[str, str]:
    """A generated archive whose split bundles carry the defects above; ``{defect: 0020}``.

    Besides, the ``unz-count`` bundle is received again (the same bytes: a duplicate), then
    corrected (its original bytes: accepted, routed), then its broken bytes once more (received
    and answered before: a duplicate too), then broken otherwise (other bytes under an accepted
    reference: CONTRL 4/26 and a dead letter). The ``unh-version``
    bundle is corrected later. Another bundle is received first a year early, when no format
    version was in force (rejected), then at its time (other bytes: accepted).
    """
    bundles_archive(src)
    at = received(src)
    bundles = _split_bundles(src, len(DEFECTS) + 1)
    refs: dict[str, str] = {}
    extra: list[tuple[str, bytes, datetime]] = []
    for (defect, broken), path in zip(DEFECTS.items(), bundles, strict=False):
        original = path.read_bytes()
        bad = broken(original)
        assert bad != original and Scan(bad).ok, defect
        path.write_bytes(bad)
        refs[defect] = _control_ref(original)
        if defect == "unz-count":
            base = at[path.name]
            extra += [
                (f"{path.stem}-again.edi", bad, base + timedelta(minutes=5)),
                (f"{path.stem}-fixed.edi", original, base + timedelta(minutes=10)),
                (f"{path.stem}-broken-again.edi", bad, base + timedelta(minutes=20)),
                (f"{path.stem}-other.edi", DEFECTS["unh-version"](original), base + timedelta(minutes=30)),
            ]
        if defect == "unh-version":
            extra.append((f"{path.stem}-fixed.edi", original, at[path.name] + timedelta(minutes=10)))
    early = bundles[len(DEFECTS)]
    refs["no-format-version"] = _control_ref(early.read_bytes())
    prepared_early = early.read_bytes().replace(b"+25", b"+24", 1)  # UNB S004 a year earlier
    extra.append((f"{early.stem}-early.edi", prepared_early, datetime(2024, 11, 4, 9, tzinfo=UTC)))
    with_manifest(src, extra)
    return refs


async def _outbox(stores: list[Path]) -> list[Any]:
    messages = []
    for path in stores:
        async with LmdbStore(path) as lmdb:
            messages += await lmdb.pending(10**6, datetime.max.replace(tzinfo=UTC))
    return messages


def _answered_ref(payload: dict[str, Any]) -> str | None:
    return payload.get("referenced_interchange_ref") or payload.get("interchange_ref")


async def answers_on(run: Run, refs: set[str]) -> Counter[str]:
    """Every CONTRL and APERAK on the interchanges ``refs``, as its full payload (all stores).

    A positive CONTRL counts once: an accepted bundle split over partitions is acknowledged
    by each partition with a piece, with the same CONTRL (the known cost of splitting).
    """
    answers: Counter[str] = Counter()
    for m in await _outbox(run.stores):
        if m.message_type in ("CONTRL", "APERAK") and _answered_ref(m.payload) in refs:
            text = json.dumps([m.message_type, m.recipient, m.payload], sort_keys=True)
            if m.message_type == "CONTRL" and m.payload["action"] == "7":
                answers[text] = 1
            else:
                answers[text] += 1
    return answers


def _without_stored_digest(text: str) -> str:
    return re.sub(r"\(sha256 [^,]*,", "(sha256 …,", text)


async def dead_letters(run: Run) -> Counter[str]:
    """Every dead letter by kind, reason and payload (not its instant or position).

    Digests and segment numbers are left out: a partition that received a piece of a split
    bundle knows that piece's digest and numbers (a conflict's reason names the digest).
    """
    out: Counter[str] = Counter()
    for path in run.stores:
        async with LmdbStore(path) as lmdb:
            for letter in await lmdb.dead_letters(limit=10**6):
                payload = {k: v for k, v in letter.payload.items() if k not in ("sha256", "first_segment")}
                reason = _without_stored_digest(letter.reason)
                out[json.dumps([letter.kind, reason, payload], sort_keys=True, default=str)] += 1
    return out


async def test_whole_interchange_rejections_answer_alike_on_one_two_and_three_workers(tmp_path: Path) -> None:
    src = tmp_path / "in"
    refs = build_defect_archive(src)
    whole = set(refs.values()) - {refs["unknown-pid"]}
    one = await replay(src, tmp_path / "one", 1)
    # The defects are what they claim: each rejected as a whole by one worker (the unknown PID
    # only refuses its transaction), the retransmissions a duplicate, a fix and a conflict.
    assert one.report.statuses["conflict"] == 1
    assert one.dead_letters["inbound-conflict"] == 1 and one.dead_letters["inbound-misaddressed"] == 1
    answers = await answers_on(one, set(refs.values()))
    contrls = Counter(json.loads(a)[2]["interchange_ref"] for a in answers if json.loads(a)[0] == "CONTRL")
    assert contrls[refs["unz-count"]] == 3  # 4/29, 7 for the fix, 4/26 for the bytes broken otherwise
    assert contrls[refs["unh-version"]] == 2 and contrls[refs["test-flag"]] == 1
    assert any(json.loads(a)[0] == "APERAK" for a in answers)  # the unknown PID's Z31
    assert len(one.report.rejected) == len(whole) + 1  # + the conflict
    sent = await outbox_as_sent(tmp_path / "one", tmp_path / "sent")
    for n in (2, 3):
        many = await replay(src, tmp_path / f"x{n}", n)
        assert many.digest == one.digest, n
        assert await dead_letters(many) == await dead_letters(one), n
        assert await answers_on(many, set(refs.values())) == answers, n
        assert sorted(many.report.rejected) == sorted(one.report.rejected), n
        errors = sorted(map(_without_stored_digest, many.report.errors))
        assert errors == sorted(map(_without_stored_digest, one.report.errors)), n
        assert (
            many.report.statuses["conflict"] == 1
            and many.report.statuses["duplicate"] == one.report.statuses["duplicate"]
        )
        assert await compare_outbound(sent, many.stores) == [], n


@pytest.mark.parametrize("defect", [d for d in DEFECTS if d != "unknown-pid"])
def test_a_file_rejected_as_a_whole_goes_whole_to_one_partition(tmp_path: Path, defect: str) -> None:
    src = tmp_path / "in"
    bundles_archive(src)
    (path,) = _split_bundles(src, 1)
    at = received(src)[path.name]
    bad = DEFECTS[defect](path.read_bytes())
    for n in (2, 3):
        partitioner = primed(n, src, path)
        assert len(copy.deepcopy(partitioner).split(path.name, path.read_bytes(), at)) > 1
        assert len(partitioner.split(path.name, bad, at)) == 1, (n, defect)


def test_rejected_then_corrected_then_rejected_bytes_again_go_where_one_run_answers_them(
    tmp_path: Path,
) -> None:
    """The placement follows the receipt stream of one run: the same rejected bytes again go to
    their partition (a duplicate there); a corrected interchange is split by its messages; the
    rejected bytes after it are still a duplicate where they were received, other broken bytes
    a conflict, so they go to the corrected one's home."""
    src = tmp_path / "in"
    bundles_archive(src)
    (path,) = _split_bundles(src, 1)
    at = received(src)[path.name]
    good = path.read_bytes()
    bad = _unz_count(good)
    for n in (2, 3):
        partitioner = primed(n, src, path)
        (first,) = partitioner.split("bad.edi", bad, at)
        assert partitioner.split("again.edi", bad, at) == {first: bad}
        fixed = partitioner.split("fixed.edi", good, at)
        assert len(fixed) > 1
        assert partitioner.split("bad-again.edi", bad, at) == {first: bad}
        (home,) = partitioner.split("other.edi", DEFECTS["unh-version"](good), at)
        first_message = Scan(good).messages[0]
        assert fixed[home].find(good[first_message.start : first_message.end]) > 0
        assert partitioner.split("good-again.edi", good, at) == fixed  # a duplicate of each piece


async def test_the_partitioners_verdict_is_the_pipelines(tmp_path: Path) -> None:
    """Each file is rejected as a whole by the partitioner exactly when the inbound pipeline
    rejects it, ingested alone into a fresh store (one of our tenants, or two)."""
    src = tmp_path / "in"
    bundles_archive(src)
    (path,) = _split_bundles(src, 1)
    at = received(src)[path.name]
    good = path.read_bytes()
    cases = [(defect, broken(good), at) for defect, broken in DEFECTS.items()]
    cases += [("good", good, at), ("no-format-version", good, datetime(2024, 11, 4, 9, tzinfo=UTC))]
    verdicts: Counter[bool] = Counter()
    for tenants in ([NB], [NB, _OTHER_RECIPIENT]):
        for index, (defect, raw, when) in enumerate(cases):
            async with LmdbStore(tmp_path / f"s-{len(tenants)}-{index}") as store:
                clock = VirtualClock(when)
                host = DirectHost(store, [GpkeNbWorkflow(), ReceiptWorkflow()], clock)
                pipeline = InboundPipeline(store, host, tenants=tenants, clock=clock)
                result = await pipeline.ingest(raw, when, source=defect)
            whole = rejected_as_a_whole(raw, when, tenants)
            assert whole == (result.status == "rejected"), (defect, tenants, result.status, result.error)
            verdicts[whole] += 1
    assert verdicts == {True: 15, False: 5}  # misaddressed is ours with two tenants


def test_a_worker_gets_the_same_share_when_it_judges_only_the_files_it_shares(tmp_path: Path) -> None:
    """``Partitioner(mine=k)`` leaves the files none of whose pieces is k's unjudged; k's share
    of every file is the one a partitioner that judges every file gives it."""
    src = tmp_path / "in"
    build_defect_archive(src)
    files = [(item.path.name, item.path.read_bytes(), item.received_at) for item in archive(src)]
    for n in (2, 3):
        full = Partitioner(n, [NB])
        everything = [full.split(*file) for file in files]
        for k in range(n):
            partial = Partitioner(n, [NB], mine=k)
            for file, expected in zip(files, everything, strict=True):
                assert partial.split(*file).get(k) == expected.get(k), (n, k, file[0])
