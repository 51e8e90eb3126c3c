"""Where an earlier ``replay --workers N`` into the same store put things: read from its part stores.

``Partitioner`` places a MaLo where the walk first meets it, and an answer with its request. A
walk over *other* files (February's archive after January's) knows none of the earlier run's
MaLos, requests or receipts, so on its own it would give a MaLo a second process in another part
store (a competing Anmeldung not seen as one), send an answer where its request is unknown, and
take a retransmission of January's interchange for a new one. So every run first reads what the
part stores already hold and starts its walk from that (``PartSeed``, ``earlier_receipts``):

- a MaLo's partition: the store holding a process started by a trigger for it (the ``tx:`` key
  the workflow registers for every trigger it takes, and that process's first event, which
  names the MaLo and the recipient: the walk's group of tenant + MaLo);
- a request's partition: the store holding its ``ide:`` key (answers' ``RFF+TN``) and its
  interchange's ``ic:`` key (CONTRL / APERAK);
- a receipt key's partitions: the stores holding its receipt stream, with the last bytes received
  there (SHA-256), whether they were accepted and the other bytes answered there as a conflict
  (``_partition``, "Continued stores"); for a file without a receipt (unreadable, misaddressed),
  the store holding the dead letter of its bytes;
- each store's size (its streams), so new MaLos keep the partitions even.

Why read the stores rather than keep a placement map beside them: the stores are what the
pipeline decides by, so a seed read from them cannot disagree with them. A map written next to
them could: a run that crashes after some workers committed and before the map is written (or
the other way round) would leave a map that names partitions where nothing is, or misses what
is. Here a crashed run is just a shorter earlier run; re-running places its files where their
MaLos' processes now are. The cost is one read transaction per part store, once per run (round
1 of ``_workers``: worker k reads store k, and looks up its own share of the files' receipt keys
in every store); a fresh store has no part stores and costs nothing, and its placement is the
same as without this module.

The layout is fixed by the first run: a store replayed with ``--workers N`` holds
``part-<k>-of-<N>`` and can only be continued with N workers, a plain one only with one, and a
part store is never a ``--store`` of its own (``check_layout``): a MaLo's process must stay in
the one store that has it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from mako_actors.errors import InvalidArgument

__all__ = [
    "Earlier",
    "PartSeed",
    "check_layout",
    "check_not_partitioned",
    "check_not_replay_parts",
    "earlier_receipts",
    "existing_parts",
    "missing_parts",
    "part_of",
    "read_seed",
]

_PART = re.compile(r"^part-(\d+)-of-(\d+)$")
_SEQ_ONE = (1).to_bytes(8, "big")
_RECEIVED = "inbox.interchange_received"
_CONFLICTED = "inbox.interchange_conflicted"


class PartSeed(NamedTuple):
    """What one part store holds that placement depends on (module doc).

    ``malos``: ``(recipient, MaLo)`` of each process a trigger started (as the walk reads them:
    UNB recipient, ``LOC+Z16``; an empty MaLo for a trigger without one); ``ides`` /
    ``interchanges``: the references of the requests sent; ``load``: the store's streams;
    ``transactions``: ``sender:IDE`` of each trigger a process was started for (its ``tx:`` key).
    """

    malos: list[tuple[bytes, bytes]]
    ides: list[bytes]
    interchanges: list[bytes]
    load: int
    transactions: tuple[bytes, ...] = ()


# One earlier receipt under a file's key: (partition, SHA-256 hex of the last bytes received there,
# whether they were accepted, when they were received (ISO 8601), the SHA-256 of other bytes
# answered there: as a conflict, or rejected before the last ones came).
Earlier = tuple[int, str, bool, str, tuple[str, ...]]


def existing_parts(store_path: Path) -> list[tuple[int, int, Path]]:
    """``(k, n, directory)`` of the ``part-<k>-of-<n>`` directories in ``store_path``, sorted."""
    found: list[tuple[int, int, Path]] = []
    if store_path.is_dir():
        for entry in store_path.iterdir():
            match = _PART.match(entry.name)
            if match is not None and entry.is_dir():
                found.append((int(match.group(1)), int(match.group(2)), entry))
    found.sort()
    return found


def part_of(store_path: Path) -> tuple[int, int] | None:
    """``(k, N)`` when ``store_path`` (or what it links to) is named ``part-<k>-of-<N>``, N > 1.

    A part store holds only its share of the MaLos; its name is all that marks it (the store
    commands and ``existing_parts`` know parts by it too).
    """
    for name in dict.fromkeys((store_path.name, store_path.resolve().name)):
        part = _PART.match(name)
        if part is not None and int(part.group(2)) > 1:
            return int(part.group(1)), int(part.group(2))
    return None


def missing_parts(store_path: Path) -> list[str]:
    """Names of the ``part-<k>-of-<N>`` stores ``store_path`` lacks (none: no parts at all).

    A part without its ``data.mdb``, or with an empty one (LMDB would start it over), counts as
    missing: a run makes every part, so only a lost one is missing, and making it again empty
    would forget its MaLos' processes.
    """
    parts = existing_parts(store_path)
    held = {(k, n) for k, n, directory in parts if _holds_data(directory)}
    counts = sorted({n for _, n, _ in parts})
    return [f"part-{k}-of-{n}" for n in counts for k in range(n) if (k, n) not in held]


def _holds_data(directory: Path) -> bool:
    data = directory / "data.mdb"
    return data.is_file() and data.stat().st_size > 0


def check_layout(store_path: Path, n: int) -> None:
    """``InvalidArgument`` unless ``store_path`` can take a replay with ``n`` workers (module doc).

    A store holds either one LMDB store (a one-worker replay's) or ``part-<k>-of-<N>`` part
    stores of one N; continuing it with another worker count would put a MaLo's later messages
    into another store than its process. A part store itself (``part_of``) is refused with any
    count: it holds only its share of the MaLos. So is a store one of whose N parts is missing
    (``missing_parts``), and a partitioned store's partition or node directory
    (``check_not_partitioned``). Checked before anything is written.
    """
    why = "a MaLo's process must stay in the store that holds it"
    check_not_partitioned(store_path, "replay")
    # A run into a part would give the other parts' MaLos a second process.
    part = part_of(store_path)
    if part is not None:
        k, of = part
        raise InvalidArgument(
            f"replay: --store {store_path} is part {k} of a replay with --workers {of} "
            f"(part-<k>-of-<N>), not a store of its own; continue the store that holds it, "
            f"{store_path.parent}, with --workers {of} ({why})"
        )
    counts = sorted({n for _, n, _ in existing_parts(store_path)})
    if (store_path / "data.mdb").exists() and n > 1:
        raise InvalidArgument(
            f"replay: --store {store_path} holds a one-worker replay's store (data.mdb); continue it "
            f"with --workers 1, not {n} ({why})"
        )
    if any(count != n for count in counts):
        raise InvalidArgument(
            f"replay: --store {store_path} holds the part stores (part-<k>-of-<N>) of a replay with "
            f"--workers {', '.join(map(str, counts))}; continue it with that many workers, not {n} ({why})"
        )
    missing = missing_parts(store_path)
    if missing:
        raise InvalidArgument(
            f"replay: --store {store_path} lacks {', '.join(missing)} (no data.mdb, or an empty one) "
            f"of its replay with --workers {n}; the processes of the MaLos it held would start again empty. "
            "Restore it from a copy; if an earlier run stopped before it made it, replay into a "
            "fresh --store"
        )


def check_not_partitioned(store_path: Path, command: str) -> None:
    """``InvalidArgument`` if ``store_path`` is one partition of a partitioned store (its
    ``PARTITION`` marker), or a node's data directory holding partitions: ``command`` would write
    into a share of the MaLos (a MaLo's journal outside the partition its processes read), or
    into a new store beside the partitions that none of their hosts reads."""
    from stores.partitioned import MARKER, read_marker

    marker = store_path / MARKER
    if marker.is_file():
        plain = read_marker(marker)
        raise InvalidArgument(
            f"{command}: --store {store_path} is partition {plain['partition']} of "
            f"{plain.get('count')} of a partitioned store (its {MARKER} marker): it holds only a "
            f"share of the MaLos, so {command} would decide the others without their processes; "
            "use a store of its own"
        )
    held = sorted(d.name for d in store_path.glob("p[0-9][0-9][0-9][0-9]") if (d / MARKER).is_file())
    if held:
        raise InvalidArgument(
            f"{command}: --store {store_path} is a node's data directory of a partitioned store "
            f"(it holds {', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); a store beside "
            "its partitions would know none of their processes, and none of their hosts would read "
            "it; use a store of its own"
        )


#: In a replay's store while a run writes to it (removed when the run has ended and is durable).
RUNNING_MARKER = "replay-running"


def unfinished_replay(store_path: Path) -> bool:
    """Whether the store at ``store_path`` was left by a replay that did not end (killed, a store
    error): it holds ``RUNNING_MARKER`` and data. Its last interchanges may be half-processed
    (receipts follow routing in a replay), so a replay refuses it, and so do ``serve`` and
    ``masterdata import``; the CLI's views warn."""
    return (store_path / RUNNING_MARKER).is_file() and (store_path / "data.mdb").is_file()


def unfinished_note(store_path: Path) -> str:
    """What a store's ``RUNNING_MARKER`` says (when the replay started, its process id), for a
    message: the replay may also still be running, which only the operator can tell."""
    try:
        said = (store_path / RUNNING_MARKER).read_text(errors="replace").strip()
    except OSError:
        said = ""
    return f"{RUNNING_MARKER}: {said[:200]!r}" if said else RUNNING_MARKER


def check_not_replay_parts(store_path: Path, command: str) -> None:
    """``InvalidArgument`` if ``store_path`` is one part of a ``replay --workers N`` store, or holds
    such parts: ``command`` (``serve``, ``masterdata import``) would write into a share of the
    MaLos, or into a new store beside them, and decide without the processes the others hold.
    Likewise for a partitioned store's partition or node directory (``check_not_partitioned``),
    and for a store a replay left unfinished (``unfinished_replay``)."""
    check_not_partitioned(store_path, command)
    if unfinished_replay(store_path):
        raise InvalidArgument(
            f"{command}: --store {store_path} was left by a replay that did not end, or one is still "
            f"writing to it ({unfinished_note(store_path)}): its last interchanges may be half-processed "
            "(answers to them never sent, or decided again by what comes next); replay the archive "
            "into a new store"
        )
    part = part_of(store_path)
    if part is not None:
        raise InvalidArgument(
            f"{command}: --store {store_path} is part {part[0]} of a replay with --workers "
            f"{part[1]}: it holds only a share of the MaLos, so {command} would decide the "
            "others without their processes; use a store of its own"
        )
    parts = existing_parts(store_path)
    if parts:
        raise InvalidArgument(
            f"{command}: --store {store_path} holds the part stores of a replay with --workers "
            f"{parts[0][1]} ({parts[0][2].name}, ...); a store beside them would know none of their "
            "processes; use a store of its own"
        )


def read_seed(path: Path) -> PartSeed | None:
    """What the part store at ``path`` holds for placement (module doc); None if there is none.

    One read transaction: the registry (``tx:``, ``ide:``, ``ic:`` keys) and the first event of
    each trigger's process.
    """
    if not (path / "data.mdb").is_file():
        return None
    from stores.lmdb_readonly import ReadOnlyLmdbStore

    store = ReadOnlyLmdbStore(path)
    try:
        return store.read_sync(_seed)
    finally:
        store.close()


def _seed(txn: Any) -> PartSeed:
    ides: list[bytes] = []
    interchanges: list[bytes] = []
    triggered: list[bytes] = []
    transactions: list[bytes] = []
    for raw_key, raw in txn.scan("registry", b""):
        key = raw_key[16:]  # after the tenant
        if key.startswith(b"ide:"):
            ides.append(key[4:])
        elif key.startswith(b"ic:"):
            interchanges.append(key[3:])
        elif key.startswith(b"tx:"):
            transactions.append(key[3:])
            triggered.append(msgpack.unpackb(raw)["stream_id"].encode())
    malos: list[tuple[bytes, bytes]] = []
    for stream in dict.fromkeys(triggered):
        first = txn.get("events", stream + b"\x00" + _SEQ_ONE)
        inbound = None if first is None else msgpack.unpackb(first).get("payload", {}).get("inbound")
        if isinstance(inbound, dict):
            malos.append((_latin(inbound.get("recipient")), _latin(inbound.get("malo"))))
    load = sum(1 for _ in txn.scan("streams", b""))
    return PartSeed(malos, ides, interchanges, load, tuple(transactions))


def _latin(value: object) -> bytes:
    return str(value or "").encode("latin-1", "replace")


def earlier_receipts(
    parts: Sequence[tuple[int, Path]], files: Iterable[tuple[tuple[bytes, bytes, bytes] | None, bytes]]
) -> list[tuple[Earlier, ...]]:
    """For each file ``(receipt key, raw)`` (``FileFacts.key``), the receipts the part stores
    ``parts`` hold under its key; none, but a dead letter of these very bytes (an unreadable or
    misaddressed file: no receipt), then that store as if it held a rejected receipt of them.

    One read transaction per store for all ``files``; a file none of them knows gets ``()``.
    """
    from mako_actors.inbound import receipt_identity
    from stores.lmdb_readonly import ReadOnlyLmdbStore

    files = list(files)
    streams = [
        None
        if key is None
        else receipt_identity(_text(key[1]), _text(key[0]), _text(key[2])).stream_id.encode()
        for key, _ in files
    ]
    found: list[list[Earlier]] = [[] for _ in files]
    dead: dict[str, int] = {}
    for k, path in parts:
        if not (path / "data.mdb").is_file():
            continue
        store = ReadOnlyLmdbStore(path)

        def read(txn: Any, k: int = k) -> None:
            _receipts(txn, k, streams, found)
            for _, raw in txn.scan("dead_letters", b""):
                digest = (msgpack.unpackb(raw).get("payload") or {}).get("sha256")
                if isinstance(digest, str):
                    dead.setdefault(digest, k)

        try:
            store.read_sync(read)
        finally:
            store.close()
    if dead:
        for each, (_, raw) in zip(found, files, strict=True):
            if not each and (digest := hashlib.sha256(raw).hexdigest()) in dead:
                each.append((dead[digest], digest, False, "", ()))
    return [tuple(each) for each in found]


def _receipts(txn: Any, k: int, streams: list[bytes | None], found: list[list[Earlier]]) -> None:
    for index, stream in enumerate(streams):
        if stream is None or txn.get("streams", stream) is None:
            continue
        last: tuple[str, bool, str] | None = None
        conflicts: list[str] = []
        for _, raw in txn.scan("events", stream + b"\x00", stream + b"\x01"):
            event = msgpack.unpackb(raw)
            kind, payload = event.get("event_type"), event.get("payload") or {}
            if kind == _RECEIVED:
                if last is not None and not last[1]:
                    # Rejected, then other bytes: these were answered here too (a duplicate now).
                    conflicts.append(last[0])
                last = (str(payload["sha256"]), bool(payload["accepted"]), str(payload["received_at"]))
            elif kind == _CONFLICTED:
                conflicts.append(str(payload["sha256"]))
        if last is not None:
            found[index].append((k, *last, tuple(conflicts)))


def _text(value: bytes) -> str:
    return value.decode("latin-1")
