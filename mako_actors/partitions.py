"""Partitions: which LMDB environment a process lives in, and which node holds that environment.

A partitioned store is a fixed number of partitions (a power of two, 1 .. 4096), each its own
LMDB environment in its own directory on the node that owns it. Three rules make every lookup
at most one hop, with no scan over partitions:

- **A process's partition is in its id.** ``routed_process_id(tenant, routing_key)`` draws a
  fresh (v7) UUID whose low 12 bits, random in any v7, become
  ``stable_hash(tenant/routing_key) % 4096``; the partition is those bits modulo the partition
  count (``partition_of``). Any stream id therefore names its partition, on every machine, with
  no directory; ids drawn without a routing key end in uniform random bits, so they spread
  evenly too. Because 4096 is a multiple of every allowed count, the rule holds for any count a
  store is created with.
- **MaKo routing key = tenant + MaLo.** The competing-process check (the ``malo:`` registry
  key) and the supply assignment of one MaLo are then decided in one partition, in one LMDB
  transaction; ``key_home`` sends a ``malo:<MaLo>#<gen>`` key to that same partition, and
  ``journal_home`` a ``supply:<MaLo>`` journal.
- **Other business keys live where their own hash says** (``key_home``): a ``tx:``, ``ide:``
  or ``ic:`` key is looked up in exactly one partition. The process's own commit writes it
  atomically when that is its partition; otherwise its host writes the entry to the key's home
  partition right after the commit, before the command is acknowledged.

``PartitionMap`` records partition → node durably (msgpack, written to a temporary file,
fsynced, renamed); it changes only by an explicit rebalance, which bumps ``epoch``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack

from mako_actors._durable import fsync_directory
from mako_actors.actors._routing import stable_hash
from mako_actors.errors import EngineError, InvalidArgument, register_error
from mako_actors.ids import ProcessId, StreamId, TenantId

MAX_PARTITIONS = 4096
_LOW_BITS = MAX_PARTITIONS - 1
_FORMAT = 1


@register_error
class PartitionUnavailable(EngineError):
    """The partition's node is gone (or its data is missing there): nothing was run or written.

    Retry once the node, or a copy of the partition's data, is back. Never answered by writing
    to a fresh, empty directory.
    """

    transient = True


@register_error
class PartitionNotOpen(PartitionUnavailable):
    """A host was asked for a partition it does not hold open and refused the operation unrun.

    A ``RayActorSystem`` that gets it reads the map file again: when another driver has moved
    the partition meanwhile (a later epoch), it sends the operation where the map now says;
    otherwise the caller gets it as a ``PartitionUnavailable``.
    """


def check_partition_count(count: int) -> int:
    """``count`` if it is a power of two in 1 .. 4096, else ``InvalidArgument``."""
    if not isinstance(count, int) or count < 1 or count > MAX_PARTITIONS or count & (count - 1):
        raise InvalidArgument(f"partitions must be a power of two from 1 to {MAX_PARTITIONS}, got {count!r}")
    return count


def routing_slot(tenant_id: TenantId, routing_key: str) -> int:
    """The 12-bit slot (0 .. 4095) of a routing key: the same on every machine."""
    return stable_hash(f"{tenant_id}/{routing_key}") & _LOW_BITS


def routed_process_id(tenant_id: TenantId, routing_key: str) -> ProcessId:
    """A new process id (v7) whose partition is the routing key's, for every partition count."""
    drawn = ProcessId.new().int  # v7; its low 12 bits are random bits, not version or time bits
    # A valid 128-bit value (only random bits changed): no need for ``UUID``'s argument parsing.
    return ProcessId._from_int((drawn & ~_LOW_BITS) | routing_slot(tenant_id, routing_key))


def partition_of(stream_id: StreamId, count: int) -> int:
    """The partition (0 .. count-1) of a stream: low bits of its process id; ``count`` a power of two."""
    return int(stream_id.rsplit("-", 1)[1], 16) & (count - 1)


def malo_of_key(key: str) -> str | None:
    """The MaLo of a ``malo:<MaLo>#<gen>`` (or ``malo:<MaLo>:…``) registry key, else ``None``.

    GPKE's competing-process key is ``malo:<MaLo>#<generation>`` (``gpke.keys.malo_key``).
    """
    if key.startswith("malo:"):
        malo = key[5:].split(":", 1)[0].split("#", 1)[0]
        return malo or None
    return None


def journal_home(tenant_id: TenantId, key: str, count: int) -> int:
    """The partition that holds journal ``key`` (``<kind>:<routing key>``, e.g. ``supply:<MaLo>``).

    A journal is appended in the commits of the processes that decide it, so it lives in their
    partition: the routing key's, named after the first colon of the journal key.
    """
    routing_key = key.split(":", 1)[1] if ":" in key else key
    return routing_slot(tenant_id, routing_key) & (count - 1)


def key_home(tenant_id: TenantId, key: str, count: int) -> int:
    """The partition that answers a lookup of ``key``: the MaLo's for ``malo:`` keys, else the key's hash."""
    malo = malo_of_key(key)
    return routing_slot(tenant_id, malo if malo is not None else f"key:{key}") & (count - 1)


@dataclass(frozen=True)
class PartitionMap:
    """Partition → node, with each node's data directory; ``epoch`` counts explicit changes.

    ``assignment[p]`` names the node that owns partition ``p``; ``data_dirs[node]`` is where
    that node keeps its partitions (``<data_dir>/p0007``), made absolute against the working
    directory of whoever makes the map: hosts, drivers and the CLI read it from others (a map
    saved by an earlier version with relative directories is read against the reader's, as
    then, and saved absolute by its next change). Node names are logical (a Ray node carries
    the custom resource ``mako-node:<name>``), so a node that restarts with a new Ray node id
    still owns its partitions.
    """

    assignment: tuple[str, ...]
    data_dirs: dict[str, str] = field(default_factory=dict)
    epoch: int = 0
    #: Whether every node has made the partitions the map gives it. A driver saves a new map
    #: with ``False`` and sets it once they are made; until then any driver starting on the map
    #: makes them (after that, a partition missing on its node was lost, never made again).
    created: bool = True

    def __post_init__(self) -> None:
        check_partition_count(len(self.assignment))
        absolute = {node: os.path.abspath(os.fspath(d)) for node, d in self.data_dirs.items()}
        object.__setattr__(self, "data_dirs", absolute)  # frozen: this is its construction
        missing = sorted(set(self.assignment) - set(self.data_dirs))
        if missing:
            raise InvalidArgument(f"PartitionMap: no data directory for node(s) {missing}")

    @classmethod
    def spread(cls, partitions: int, data_dirs: dict[str, str | os.PathLike[str]]) -> PartitionMap:
        """``partitions`` partitions dealt round-robin over the nodes of ``data_dirs`` (in order)."""
        check_partition_count(partitions)
        if not data_dirs:
            raise InvalidArgument("PartitionMap.spread: at least one node is needed")
        nodes = list(data_dirs)
        return cls(
            tuple(nodes[p % len(nodes)] for p in range(partitions)),
            {n: os.fspath(d) for n, d in data_dirs.items()},
        )

    @property
    def count(self) -> int:
        return len(self.assignment)

    @property
    def nodes(self) -> list[str]:
        """The nodes that own at least one partition, in first-seen order."""
        return list(dict.fromkeys(self.assignment))

    def partitions_of(self, node: str) -> list[int]:
        return [p for p, n in enumerate(self.assignment) if n == node]

    def node_of(self, partition: int) -> str:
        return self.assignment[partition]

    def moved(self, partition: int, node: str) -> PartitionMap:
        """This map with ``partition`` on ``node`` and the epoch bumped."""
        if node not in self.data_dirs:
            raise InvalidArgument(f"PartitionMap: unknown node {node!r}")
        assignment = list(self.assignment)
        assignment[partition] = node
        return replace(self, assignment=tuple(assignment), epoch=self.epoch + 1)

    def to_plain(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "epoch": self.epoch,
            "assignment": list(self.assignment),
            "data_dirs": self.data_dirs,
            "created": self.created,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> PartitionMap:
        if plain.get("format") != _FORMAT:
            raise InvalidArgument(f"PartitionMap: unknown format {plain.get('format')!r}")
        # A map saved before ``created`` existed: its driver made the partitions when it started.
        created = bool(plain.get("created", True))
        return cls(tuple(plain["assignment"]), dict(plain["data_dirs"]), int(plain["epoch"]), created)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write durably: a temporary file in the same directory, fsync, rename, fsync the directory."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partition-map.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(msgpack.packb(self.to_plain()))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PartitionMap:
        """The map saved at ``path``; ``NotFound``-like ``InvalidArgument`` when there is none."""
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise InvalidArgument(f"no partition map at {path}") from None
        try:
            plain = msgpack.unpackb(raw)
            if not isinstance(plain, dict):
                raise TypeError(f"a {type(plain).__name__}, not a map of fields")
            return cls.from_plain(plain)
        except InvalidArgument:
            raise
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            raise InvalidArgument(f"{path} holds no partition map: {exc}") from None
