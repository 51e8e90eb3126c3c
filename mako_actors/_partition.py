"""Partitioning an archive by routing key, for replays on several OS processes.

Until the store is partitioned itself, each worker replays its share of the archive into a store
of its own. A share must hold everything that can affect one process: every trigger for a MaLo
(tenant + MaLo decides the partition, so competing Anmeldungen meet), and the answers and
acknowledgements to what that process sent. Answers name our 55010 only by its IDE (``RFF+TN``),
which the workflow derives from the triggering message's references (``derive_ref(seed, index,
"IDE")`` with ``seed = sender:0020:0062:IDE``); the first ``_CANDIDATES`` indices of every
trigger are mapped to its partition, so an answer follows its request. An interchange whose
messages fall into several partitions is split into one interchange per partition (same UNB and
0020, the partition's messages, UNZ count adjusted): its messages keep their references, so every
decision is the same; only the receipt and its CONTRL exist once per piece.

The scan is a light one (segments and a few values, no validation); a file it cannot read is
given to one partition whole and rejected there by the real parser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mako_actors.gpke.payloads import derive_ref

__all__ = ["Partitioner", "Scan", "our_references", "split_by_partition"]

_CANDIDATES = 8
_ANSWERS = (b"55011", b"55012")
# The segments values are read from, and how many of their elements (tag included) are read.
_USED = {b"IDE": 3, b"NAD": 3, b"LOC": 3, b"RFF": 2, b"UCI": 2}


@dataclass
class _Message:
    start: int
    end: int = 0
    kind: bytes = b""
    sender: bytes = b""
    ref: bytes = b""
    txs: list[dict[bytes, bytes]] = field(default_factory=list)
    ack_ref: bytes = b""


def our_references(sender: str, control_ref: str, message_ref: str, ide_ref: str) -> list[tuple[str, str]]:
    """The IDEs and 0020s the workflow may give the messages it sends for one trigger.

    The workflow's seed is ``sender:0020:0062:IDE`` of the triggering transaction and its
    messages count from 0; the first ``_CANDIDATES`` are enough for one supplier change.
    """
    seed = f"{sender}:{control_ref}:{message_ref}:{ide_ref}"
    return [(derive_ref(seed, i, "IDE"), derive_ref(seed, i, "0020")) for i in range(_CANDIDATES)]


def _partition(n: int, *parts: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b"\x00".join(parts), digest_size=8).digest(), "big") % n


class Scan:
    """Segments of one interchange with the few values routing needs (no validation).

    ``ok``: a UNB, at least one complete UNH..UNT and a UNZ were found; ``escaped``: a value
    read here holds the release character, so it may differ from the parser's.
    """

    def __init__(self, raw: bytes) -> None:
        self.ok = self.escaped = False
        if raw.startswith(b"UNA") and len(raw) >= 9:
            self.comp, self.elem, self.rel, self.term = raw[3:4], raw[4:5], raw[6:7], raw[8:9]
            pos = 9
        else:
            self.comp, self.elem, self.rel, self.term = b":", b"+", b"?", b"'"
            pos = 0
        self.head_end = 0
        self.unz_start = -1
        self.messages: list[_Message] = []
        self.sender = self.recipient = self.control = b""
        current: _Message | None = None
        while True:
            end = raw.find(self.term, pos)
            while end > 0 and self._escaped(raw, end):
                end = raw.find(self.term, end + 1)
            if end < 0:
                return
            start = pos
            while start < end and raw[start] in b"\r\n\t ":
                start += 1
            segment = raw[start:end]
            elements = segment.split(self.elem)
            tag = elements[0]
            if tag == b"UNB" and self.rel in segment:
                self.escaped = True
            if tag == b"UNB" and len(elements) > 5:
                self.sender = elements[2].split(self.comp)[0]
                self.recipient = elements[3].split(self.comp)[0]
                self.control = elements[5].split(self.comp)[0]
                self.head_end = end + 1
            elif tag == b"UNH" and len(elements) > 2:
                current = _Message(start, kind=elements[2].split(self.comp)[0], ref=elements[1])
                self.messages.append(current)
            elif current is not None:
                used = _USED.get(tag)
                if used is not None and self.rel in segment and self._escapes(segment, elements, used):
                    self.escaped = True
                self._value(current, tag, elements)
                if tag == b"UNT":
                    current.end, current = end + 1, None
            if tag == b"UNZ":
                self.unz_start = start
                self.ok = bool(self.head_end and self.messages and all(m.end for m in self.messages))
                return
            pos = end + 1

    def _escapes(self, segment: bytes, elements: list[bytes], used: int) -> bool:
        """Whether the release character falls in the first ``used`` elements (the ones read).

        A release character after them (a NAD name, a DTM offset) changes nothing read here.
        """
        return segment.find(self.rel) < len(self.elem.join(elements[:used]))

    def _escaped(self, raw: bytes, index: int) -> bool:
        count = 0
        while index - count - 1 >= 0 and raw[index - count - 1 : index - count] == self.rel:
            count += 1
        return count % 2 == 1

    def _value(self, message: _Message, tag: bytes, elements: list[bytes]) -> None:
        second = elements[1].split(self.comp) if len(elements) > 1 else [b""]
        if tag == b"IDE" and len(elements) > 2:
            message.txs.append({b"IDE": elements[2]})
        elif tag == b"NAD" and second[0] == b"MS" and len(elements) > 2:
            message.sender = elements[2].split(self.comp)[0]
        elif tag == b"LOC" and second[0] == b"Z16" and message.txs and len(elements) > 2:
            message.txs[-1][b"LOC"] = elements[2].split(self.comp)[0]
        elif tag == b"RFF" and len(second) > 1:
            if second[0] in (b"Z13", b"TN") and message.txs:
                message.txs[-1][second[0]] = second[1]
            elif second[0] == b"ACE":
                message.ack_ref = second[1]
        elif tag == b"UCI" and len(elements) > 1:
            message.ack_ref = elements[1]


class Partitioner:
    """Assigns each message of an archive, in receipt order, to one of ``n`` partitions."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._ide: dict[bytes, int] = {}
        self._interchange: dict[bytes, int] = {}

    def split(self, name: str, raw: bytes) -> dict[int, bytes]:
        """``{partition: bytes}`` for one interchange: whole, or one piece per partition."""
        scan = Scan(raw)
        if not scan.ok:
            return {_partition(self.n, name.encode(), raw[:64]): raw}
        default = _partition(self.n, scan.sender, scan.recipient, scan.control)
        parts: dict[int, list[_Message]] = {}
        for message in scan.messages:
            parts.setdefault(self._of(scan, message, default), []).append(message)
        if len(parts) == 1:
            return {next(iter(parts)): raw}
        return {part: self._piece(scan, raw, messages) for part, messages in parts.items()}

    def _of(self, scan: Scan, message: _Message, default: int) -> int:
        if message.ack_ref:
            return self._interchange.get(message.ack_ref, default)
        if not message.txs:
            return default
        tx = message.txs[0]
        if tx.get(b"Z13") in _ANSWERS:
            return self._ide.get(tx.get(b"TN", b""), default)
        part = _partition(self.n, scan.recipient, tx.get(b"LOC", b""))
        sender = (message.sender or scan.sender).decode("latin-1")
        control, ref = scan.control.decode("latin-1"), message.ref.decode("latin-1")
        for each in message.txs:
            for ide, interchange in our_references(sender, control, ref, each[b"IDE"].decode("latin-1")):
                self._ide[ide.encode()] = part
                self._interchange[interchange.encode()] = part
        return part

    def _piece(self, scan: Scan, raw: bytes, messages: list[_Message]) -> bytes:
        body = b"".join(raw[m.start : m.end] for m in messages)
        unz = b"UNZ" + scan.elem + str(len(messages)).encode() + scan.elem + scan.control + scan.term
        return raw[: scan.head_end] + body + unz


def split_by_partition(n: int, files: list[tuple[str, bytes]]) -> list[dict[int, bytes]]:
    """For each ``(name, raw)`` in receipt order, its pieces by partition (see the module doc)."""
    partitioner = Partitioner(n)
    return [partitioner.split(name, raw) for name, raw in files]
