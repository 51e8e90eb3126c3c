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

Receipts. The inbound pipeline keys an interchange's receipt by (sender, recipient, 0020) and
answers other bytes under an accepted key with CONTRL 4 / 0085 = 26 and a dead letter. Each
piece of a split interchange is received (and accepted) in its own partition under the same key,
so every partition holding a piece knows the key. The partitioner remembers, per key, the bytes
it placed (a digest) and a *home*: the partition of the first message of the latest interchange
under that key that was split by its messages (or of the whole file). Then:

- the same bytes again (a retransmission) are placed exactly as before, so each partition sees a
  retransmission of its own piece (a duplicate, as in one run);
- other bytes under a key whose last placed file was readable go whole to its home, which holds
  an accepted piece under that key: CONTRL 4/26 and one dead letter, as in one run. This covers a
  truncated retransmission of a bundle split over several partitions;
- other bytes under a key whose files so far were unreadable (rejected there, so "not received"
  for the pipeline) are placed like a new interchange (split by message if readable, else whole
  to the home), and a readable one becomes the new home;
- an unreadable file under an unknown key goes whole to a partition chosen by the key (not by
  file name), so a later retransmission of the same key finds it; a file without a readable UNB
  (no key at all: a dead letter in any partition) goes by a hash of its name and first bytes.

Reading. The scan is a light one (segments and a few values, no validation). When a value it
reads holds the release character (an escaped UNB, UNH, IDE, NAD, LOC, RFF or UCI value) or it
cannot read the file, the real parser (``parse_interchange``) gives the values instead, so an
escaped ``RFF+TN`` or ``LOC`` routes like its unescaped value. A file the parser rejects keeps
only its UNB key (read like the pipeline reads it for its CONTRL); one the parser accepts but the
scan cannot cut into messages goes whole to the partition of its first message.

Known limits: a file the scan reads but the parser rejects is still split by its messages, and
its pieces are judged one by one (one run rejects the whole interchange); other bytes under a key
whose last readable file the parser rejected go whole to the home instead of being split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mako_actors.edifact import EdifactError, Interchange, parse_interchange
from mako_actors.gpke.payloads import derive_ref

__all__ = ["Partitioner", "Scan", "our_references", "split_by_partition"]

_CANDIDATES = 8
_ANSWERS = (b"55011", b"55012")
# The segments values are read from, and how many of their elements (tag included) are read.
_USED = {b"IDE": 3, b"NAD": 3, b"LOC": 3, b"RFF": 2, b"UCI": 2, b"UNH": 3}


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
            used = _USED.get(tag)
            if used is not None and self.rel in segment and self._escapes(segment, elements, used):
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


@dataclass
class _Read:
    """What the partitioner knows of one file: its receipt key, and its messages when readable.

    ``cut``: the messages carry byte offsets (the scan's), so the file can be split.
    """

    key: tuple[bytes, bytes, bytes] | None
    messages: list[_Message]
    cut: bool
    scan: Scan


@dataclass
class _Receipt:
    """What was placed under one receipt key (module doc): its home and its last bytes."""

    home: int
    readable: bool
    placed: dict[bytes, tuple[int, list[int]]] = field(default_factory=dict)  # digest: (whole, per message)


def _encoded(value: str | None) -> bytes:
    return (value or "").encode("latin-1", "replace")


def _from_parsed(parsed: Interchange) -> list[_Message]:
    """The routing values of a parsed interchange's messages (release characters resolved)."""
    messages: list[_Message] = []
    for each in parsed.messages:
        message = _Message(0, kind=_encoded(each.message_type), ref=_encoded(each.reference))
        for segment in each.segments:
            tag = segment.tag
            if tag == "IDE" and len(segment.elements) > 1:
                message.txs.append({b"IDE": _encoded(segment.value(1))})
            elif tag == "NAD" and segment.value(0) == "MS" and len(segment.elements) > 1:
                message.sender = _encoded(segment.value(1))
            elif tag == "LOC" and segment.value(0) == "Z16" and message.txs and len(segment.elements) > 1:
                message.txs[-1][b"LOC"] = _encoded(segment.value(1))
            elif tag == "RFF":
                qualifier = segment.components(0)
                if len(qualifier) > 1:
                    if qualifier[0] in ("Z13", "TN") and message.txs:
                        message.txs[-1][qualifier[0].encode()] = _encoded(qualifier[1])
                    elif qualifier[0] == "ACE":
                        message.ack_ref = _encoded(qualifier[1])
            elif tag == "UCI" and segment.elements:
                message.ack_ref = _encoded(segment.value(0))
        messages.append(message)
    return messages


def _read(raw: bytes) -> _Read:
    """The scan's values, or the parser's where the scan is unsure (module doc)."""
    scan = Scan(raw)
    if scan.ok and not scan.escaped:
        return _Read((scan.sender, scan.recipient, scan.control), scan.messages, True, scan)
    try:
        parsed = parse_interchange(raw)
    except EdifactError:
        from mako_actors.inbound import _lenient_header  # the pipeline's own reading of a UNB

        header = _lenient_header(raw)
        key = None if header is None else (_encoded(header[0]), _encoded(header[1]), _encoded(header[2]))
        return _Read(key, [], False, scan)
    messages = _from_parsed(parsed)
    cut = scan.ok and len(scan.messages) == len(messages)
    if cut:
        for ours, theirs in zip(messages, scan.messages, strict=True):
            ours.start, ours.end = theirs.start, theirs.end
    key = (_encoded(parsed.sender.id), _encoded(parsed.recipient.id), _encoded(parsed.control_ref))
    return _Read(key, messages, cut, scan)


class Partitioner:
    """Assigns each message of an archive, in receipt order, to one of ``n`` partitions."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._ide: dict[bytes, int] = {}
        self._interchange: dict[bytes, int] = {}
        self._receipts: dict[tuple[bytes, bytes, bytes], _Receipt] = {}

    def split(self, name: str, raw: bytes) -> dict[int, bytes]:
        """``{partition: bytes}`` for one interchange: whole, or one piece per partition."""
        read = _read(raw)
        if read.key is None:
            return {_partition(self.n, name.encode(), raw[:64]): raw}
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        known = self._receipts.get(read.key)
        if known is not None and digest in known.placed:
            return self._pieces(read, raw, *known.placed[digest])
        if known is not None and (known.readable or not read.messages):
            known.placed[digest] = (known.home, [])
            return {known.home: raw}
        default = _partition(self.n, *read.key)
        parts = [self._of(read.key, message, default) for message in read.messages]
        home = parts[0] if parts else default
        if known is None:
            known = self._receipts[read.key] = _Receipt(home, bool(parts))
        elif parts:
            known.home, known.readable = home, True
        if not read.cut:
            parts = []
        known.placed[digest] = (home, parts)
        return self._pieces(read, raw, home, parts)

    def _pieces(self, read: _Read, raw: bytes, home: int, parts: list[int]) -> dict[int, bytes]:
        """``raw`` whole to ``home``, or cut by ``parts`` (one partition per message) if they differ."""
        if len(set(parts)) <= 1:
            return {home: raw}
        grouped: dict[int, list[_Message]] = {}
        for message, part in zip(read.messages, parts, strict=True):
            grouped.setdefault(part, []).append(message)
        return {part: self._piece(read.scan, raw, messages) for part, messages in grouped.items()}

    def _of(self, key: tuple[bytes, bytes, bytes], message: _Message, default: int) -> int:
        sender_id, recipient, control_ref = key
        if message.ack_ref:
            return self._interchange.get(message.ack_ref, default)
        if not message.txs:
            return default
        tx = message.txs[0]
        if tx.get(b"Z13") in _ANSWERS:
            return self._ide.get(tx.get(b"TN", b""), default)
        part = _partition(self.n, recipient, tx.get(b"LOC", b""))
        sender = (message.sender or sender_id).decode("latin-1")
        control, ref = control_ref.decode("latin-1"), message.ref.decode("latin-1")
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
