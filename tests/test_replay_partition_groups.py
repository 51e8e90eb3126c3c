"""``replay --workers N`` gives each MaLo (tenant + MaLo: its group) the partition where the walk
first meets it: that of its file's messages already placed, else the one with the fewest
messages so far (``mako_actors._partition``, "Groups"). So a bundle of new MaLos is never cut
(each piece would cost a receipt, a CONTRL and an ingest of its own), every message about a MaLo
meets the others in one partition, and the workers get even shares.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

from mako_actors._partition import Partitioner, Scan, split_by_partition
from mako_actors.archive import ArchiveSpec, generate_archive
from mako_actors.replay import archive
from tests.test_replay_partitions import NB, anmeldungen

AT = datetime(2025, 11, 3, 7, 13, tzinfo=UTC)


def _malos(piece: bytes) -> list[bytes]:
    return [m.txs[0][b"LOC"] for m in Scan(piece).messages if m.txs and b"LOC" in m.txs[0]]


def test_new_malos_stay_with_their_bundle_and_placed_ones_keep_their_partition() -> None:
    m1, m2, m3, m4, m5 = "51238696781", "34719742207", "50000000001", "50000000002", "50000000003"
    partitioner = Partitioner(2, [NB])
    (home,) = partitioner.split("a.edi", anmeldungen("AN001", [m1, m2, m3]), AT)
    (other,) = partitioner.split("b.edi", anmeldungen("AN002", [m4]), AT)
    assert other != home  # the partition with fewer messages
    mixed = partitioner.split("c.edi", anmeldungen("AN003", [m4, m5, m1]), AT)
    assert sorted(_malos(mixed[other])) == sorted([m4.encode(), m5.encode()])  # m5 joins m4
    assert _malos(mixed[home]) == [m1.encode()]
    assert partitioner.split("d.edi", anmeldungen("AN004", [m5, m2]), AT).keys() == {other, home}


def test_every_message_about_a_malo_meets_the_others_in_one_partition_and_shares_are_even(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in"
    generate_archive(src, ArchiveSpec(processes=400, defects=0.0, duplicates=0.0, seed=2))
    files = [(item.path.name, item.path.read_bytes(), item.received_at) for item in archive(src)]
    for n in (2, 3):
        where: defaultdict[bytes, set[int]] = defaultdict(set)
        messages: Counter[int] = Counter()
        new_bundles = 0
        for (_, raw, _), pieces in zip(files, split_by_partition(n, files, [NB]), strict=True):
            malos = _malos(raw)
            if len(malos) > 1 and not any(malo in where for malo in malos):
                assert len(pieces) == 1, "a bundle of new MaLos is placed whole"
                new_bundles += 1
            for part, piece in pieces.items():
                for malo in _malos(piece):
                    where[malo].add(part)
                messages[part] += len(Scan(piece).messages)
        assert new_bundles > 20
        assert all(len(parts) == 1 for parts in where.values()), n
        mean = sum(messages.values()) / n
        assert len(messages) == n and all(abs(count - mean) < 0.05 * mean for count in messages.values()), (
            messages
        )
