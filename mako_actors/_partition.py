"""Partitioning an archive by routing key, for replays on several OS processes.

Until the store is partitioned itself, each worker replays its share of the archive into a store
of its own. A share must hold everything that can affect one process: every trigger for a MaLo
(tenant + MaLo, its *group*, has one partition, so competing Anmeldungen meet), and the answers
and acknowledgements to what that process sent. Answers name our 55010 only by its IDE (``RFF+TN``),
which the workflow derives from the triggering message's references (``derive_ref(seed, index,
"IDE")`` with ``seed = sender:0020:0062:IDE``); the first ``CANDIDATES`` indices of every
trigger map to its partition (``Predictions``: derived when an answer asks, one index at a
time, so the walk hashes ~1 of 16 references per trigger), so an answer follows its request.
A partner's CONTRL on a negative APERAK the pipeline itself sent (refusing a message or one of
its transactions) names that APERAK's 0020, derived from the refused message and the
transaction's position in it (``inbound.refusal_seed``): each message's possible refusal 0020s
(one per transaction, one for the whole message; ~1.5 SHA-256 per message, in the light scan)
map to its partition, asked only for a CONTRL whose 0020 nothing else names.

Groups. A group gets its partition the first time the walk (receipt order) meets it: the
partition of the first message of its file already placed (by its group or as an answer), else
the partition with the fewest messages so far. So a bundle of new MaLos stays whole and the
partitions stay even; cutting by a hash of the group instead cut ~half of all bundles (each
piece costs a receipt, a CONTRL and an ingest of its own: ~11,100 pieces of 7,340 files on the
benchmark archive, ~8,900 so; what is still cut is mostly answer bundles, whose requests' MaLos
were placed apart before). A file without a group of its own (no trigger) has the group of its
UNB key. A trigger whose sender and IDE an earlier trigger had (its ``tx:`` key) and whose
MaLo is not placed yet goes to that trigger's partition: the pipeline refuses it there as seen
before (Z15) if that trigger bound the key, and decides it there as new if that one was refused
(binding nothing). With its MaLo placed, it follows its MaLo: the walk cannot tell the two
apart, and a refused earlier trigger is the likelier (a limit: after an accepted one, that
partition starts a process where one run answers Z15). A message is the smallest piece: one
carrying several triggers goes where the first of its MaLos with a partition is, and takes all
its new MaLos along; one carrying several answers goes where the first request it names that
the walk knows is. Known limit: a message whose MaLos (or requests, or reused IDEs) were placed
in different partitions before cannot follow them all; the transactions of the others are
decided there without their MaLo's (or request's, or IDE's) history.
An interchange whose messages fall into several partitions is split into one interchange
per partition (same UNB and 0020, the partition's messages, UNZ count adjusted): its messages keep
their references, so every decision is the same; only the receipt and its CONTRL exist once per
piece.

Whole rejections. An interchange the pipeline rejects as a whole is never cut: one run answers
it with one CONTRL 4 (or a dead letter), lists it once as rejected and routes none of its
messages, while its pieces could each pass (a wrong UNZ count or a stray segment between two
messages is not in any piece) or each be answered. ``rejected_as_a_whole`` makes the checks
``InboundPipeline.ingest`` makes before it routes a message (the parser's, a recipient not ours,
a test interchange, no format version in force on the receipt day, a UNH version not in force);
a file that would be cut is judged by it first (a full parse, only for files that could be cut
or whose receipt key repeats: "Two phases") and, if rejected, goes whole to the partition of its
first message.

Receipts. The inbound pipeline keys an interchange's receipt by (sender, recipient, 0020; our
MP-ID as recipient when it answers an interchange for another party); a receipt once accepted
stays so, and other bytes under it are answered with CONTRL 4 / 0085 = 26 and a dead letter; a
rejected one counts as "not received", so other bytes under it are a new interchange. Each piece
of a split interchange is received (and accepted) in its own partition under the same key. The
partitioner follows one run's receipt stream: per key, the last bytes received (a digest),
whether the pipeline accepted them (a file placed whole is judged only when bytes follow under
its key), and where they went: their *home* (the
partition of their first message, which holds an accepted piece when they were accepted) and
their pieces. Then:

- the same bytes again (a retransmission) are placed exactly as before, so each partition sees a
  retransmission of its own piece (a duplicate, as in one run);
- other bytes under an accepted key go whole to its home: CONTRL 4/26 and one dead letter, as in
  one run. This covers a truncated retransmission of a bundle split over several partitions,
  and rejected bytes received again after their corrected version was accepted;
- other bytes under a rejected (or no) key are placed like a new interchange: cut by their
  messages if accepted and readable, else whole to the partition of their first message;
- a file without a readable message (neither the parser nor the scan reads one) goes whole to
  the partition of its key's group (not by file name); a file without a readable UNB (no key at
  all: a dead letter in any partition) to a group of its name and first bytes.

Reading. The scan is a light one (segments and a few values, no validation). When a value it
reads holds the release character (an escaped UNB, UNH, IDE, LOC, RFF or UCI value) or it
cannot read the file, the real parser (``parse_interchange``) gives the values instead, so an
escaped ``RFF+TN`` or ``LOC`` routes like its unescaped value. A file the parser rejects keeps
only its UNB key (read like the pipeline reads it for its CONTRL); one the parser accepts but the
scan cannot cut into messages goes whole to the partition of its first message.

Two phases. Everything above that depends on one file alone is read first (``read_facts``,
``FileFacts``): its receipt key, digest and cut points, per message how it is placed (a
trigger's group and the references it registers, or the reference an answer is looked up
by), and the judge's verdict for each file likely to be cut (readable, with an answer or
acknowledgement among two or more messages: their partitions were fixed by other files) or
whose receipt key occurs again in the files read together (the verdicts a later file under its
key may need). Facts hold no bytes and no parsed interchange,
so ``replay --workers N`` reads them in parallel, each worker 1/N of the files, and hands all of
them to every worker. Then ``Partitioner.place`` walks the receipt stream in order (the only
part that depends on earlier files: the groups' partitions, the reference maps, receipts and
homes); a verdict the facts lack (a bundle of triggers cut after all, a receipt key repeated
across two workers' halves) is judged then, by a parse of that file. ``Partitioner.split`` and
``split_by_partition`` run both phases in one process.

Continued stores. A group's partition depends on the files before it, also those of earlier
runs into the same part stores (January's archive, then February's). So a walk starts from what
the part stores hold (``seeds``, read by ``_placement``): the group of each process a trigger
started (its tenant and MaLo) and its ``tx:`` key in that process's partition, the IDE and
0020 of each request sent in its partition, the stores' sizes as their load. An earlier run's
MaLo then stays with its process and an answer goes to its request, as in one run over both
archives. A file whose
receipt key an earlier run received (``FileFacts.earlier``: the last bytes under it in each
store and whether they were accepted) is placed as the pipeline of one run would answer it:

- accepted before: the same bytes as a bundle split then are cut again into the same pieces when
  each piece's SHA-256 is the one stored where it goes (a duplicate in each); any other file
  goes whole to a store that accepted it (the one that answered these bytes as a conflict
  before, else the one of its first message): a duplicate there if it was received whole, else
  a conflict (CONTRL 4/26 and a dead letter, once per content);
- rejected only: the same bytes as the last ones go whole where those were (answered before);
  other bytes are placed like new ones;
- no receipt, but a dead letter of the same bytes (unreadable, misaddressed): whole to its store,
  where the dead letter is not written twice.

A key received both earlier and in this run is placed by this run's receipt (the newer one).

Known limits: bytes rejected by a check of the receipt day (format or UNH version) and received
again unchanged once they pass are routed by one run without a new receipt or CONTRL (the
pipeline takes them for an interrupted earlier ingest); here they are cut like a new
interchange, so the decisions are the same but each piece is acknowledged with a CONTRL 7 (when
the earlier run received them, they go whole to where they were). A trigger that left nothing
in the store (refused by the pipeline with an APERAK, skipped) does not hold its MaLo's place
for a later run; nothing of it is read by a later message either.
"""

from __future__ import annotations

import hashlib
from collections import ChainMap, Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, NamedTuple, TypeVar

from mako_actors._placement import Earlier, PartSeed
from mako_actors.edifact import EdifactError, Interchange, try_parse_interchange
from mako_actors.errors import InvalidArgument
from mako_actors.gpke.calendar import uet
from mako_actors.gpke.payloads import derive_ref, derive_request_refs, refusal_interchange_ref
from mako_actors.gpke.validation import OBJECT_LOCATIONS
from mako_actors.version import FormatVersion

__all__ = [
    "FileFacts",
    "Partitioner",
    "Placement",
    "Predictions",
    "Scan",
    "our_references",
    "pieces_of",
    "read_facts",
    "rejected_as_a_whole",
    "split_by_partition",
]

CANDIDATES = 8
V = TypeVar("V")
RefKind = Literal["IDE", "0020"]
_ANSWERS = (b"55011", b"55012")
_TRIGGERS = (b"55001", b"55077", b"55004")  # the PIDs whose transactions start a process
# The segments values are read from, and how many of their elements (tag included) are read.
_USED = {b"IDE": 3, b"LOC": 3, b"RFF": 2, b"UCI": 2, b"UNH": 3, b"STS": 5}
_VALUE_TAGS = frozenset((b"IDE", b"LOC", b"RFF", b"UCI", b"STS"))  # what ``Scan._value`` reads
#: The LOC a transaction is for by its STS+7 #2 alone: ``gpke.validation.OBJECT_LOCATIONS``
#: without the PID, which the scan reads only after the LOC (each #2 code there names one LOC
#: whatever the PID; checked here).
_OBJECT_LOCATIONS = {detail.encode(): location.encode() for (_, detail), location in OBJECT_LOCATIONS.items()}
if len({(d, loc) for (_, d), loc in OBJECT_LOCATIONS.items()}) != len(_OBJECT_LOCATIONS):
    raise AssertionError("an STS+7 #2 code names different LOCs for different PIDs: the scan needs the PID")
_LOCATIONS = {b"Z16": b"Z16", b"Z21": b"Z21", b"Z22": b"Z22", "Z16": b"Z16", "Z21": b"Z21", "Z22": b"Z22"}


def _located(tx: dict[bytes, bytes], qualifier: bytes | str, value: bytes) -> None:
    """Note a transaction's ``LOC+<qualifier>`` as its routing object: the one its STS+7 #2 names
    it by (a Tranche's Z21, a ruhende MaLo's Z22) over any other; else, as the parser, the MaLo
    (Z16), else a Tranche's ID (Z21)."""
    location = _LOCATIONS.get(qualifier)
    if location is None:
        return
    if location == _OBJECT_LOCATIONS.get(tx.get(b"GV", b""), b"Z16"):
        tx[b"LOC"] = value
    elif location != b"Z22":
        tx.setdefault(b"LOC", value)


@dataclass
class _Message:
    start: int
    end: int = 0
    kind: bytes = b""
    ref: bytes = b""
    txs: list[dict[bytes, bytes]] = field(default_factory=list)
    ack_ref: bytes = b""
    # Every transaction's IDE 7402 in order, b"" where it has none (``txs`` lists only those
    # with one): what the pipeline's refusal references derive from, by position.
    ides: list[bytes] = field(default_factory=list)


def our_references(sender: str, control_ref: str, message_ref: str, ide_ref: str) -> list[tuple[str, str]]:
    """The IDEs and 0020s the workflow may give the messages it sends for one trigger.

    The workflow's seed is ``sender:0020:0062:IDE`` of the triggering transaction and its
    messages count from 0; the first ``CANDIDATES`` are enough for one supplier change.
    """
    return derive_request_refs(trigger_seed(sender, control_ref, message_ref, ide_ref), CANDIDATES)


class Predictions(Generic[V]):
    """``our_references`` of every trigger added, looked up by (tenant MP-ID, IDE or 0020).

    Equal to deriving all of a trigger's references when it is added and keeping, per
    reference, the value of the last trigger that derives it, but derived lazily: one
    (kind, message index) table at a time, the index answers hit most often first, up to the
    trigger added last. An answer names one kind and (nearly always) one index, so most of
    the SHA-256s are never computed. (Only two different seeds whose references agree at
    different indices could tell the two apart: a SHA-256 prefix collision.)
    """

    def __init__(self) -> None:
        self._triggers: list[tuple[str, str, V]] = []  # (us, seed, value), in the order added
        # (kind, index) -> (reference -> value, how many of ``_triggers`` are in it)
        self._tables: dict[tuple[RefKind, int], tuple[dict[tuple[str, str], V], list[int]]] = {}
        self._hits = [0] * CANDIDATES
        self._order = list(range(CANDIDATES))

    def add(self, us: str, seed: str, value: V) -> None:
        """A trigger with ``seed`` (``sender:0020:0062:IDE``) addressed to ``us``, mapped to ``value``."""
        self._triggers.append((us, seed, value))

    def get(self, kind: RefKind, reference: tuple[str, str]) -> V | None:
        """The value of the last trigger added whose reference of ``kind`` is ``reference``
        (``(us, reference)``), else None. Costs one SHA-256 per trigger added since the last
        look into each index table it searches."""
        order, hits, tables, triggers = self._order, self._hits, self._tables, self._triggers
        for pos, index in enumerate(order):
            entry = tables.get((kind, index))
            if entry is None:
                entry = tables[(kind, index)] = ({}, [0])
            table, done = entry
            if done[0] < len(triggers):
                for us, seed, value in triggers[done[0] :]:
                    table[(us, derive_ref(seed, index, kind))] = value
                done[0] = len(triggers)
            found = table.get(reference)
            if found is not None:
                hits[index] += 1
                # Most hits are on the first index in order, which stays sorted: no sort then.
                if pos and hits[order[pos - 1]] < hits[index]:
                    order.sort(key=lambda i: -hits[i])  # stable: ties keep index order
                return found
        return None


def trigger_seed(sender: str, control_ref: str, message_ref: str, ide_ref: str) -> str:
    """The seed the workflow derives a trigger's outbound references from: ``sender:0020:0062:IDE``."""
    return f"{sender}:{control_ref}:{message_ref}:{ide_ref}"


def _group(*parts: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b"\x00".join(parts), digest_size=8).digest(), "big")


class Scan:
    """Segments of one interchange with the few values routing needs (no validation).

    ``ok``: a UNB, at least one complete UNH..UNT and a UNZ were found; ``escaped``: a value
    read here holds the release character, so it may differ from the parser's; ``second``: the
    offset of a further UNA/UNB before any UNZ (a cut-off interchange and another one in one
    file: not ok, and its values are the first UNB's), else -1.
    """

    def __init__(self, raw: bytes) -> None:
        self.ok = self.escaped = False
        at = len(raw) - len(raw.lstrip(b"\r\n")) if raw[:1] in (b"\r", b"\n") else 0  # (as the parser)
        if raw.startswith(b"UNA", at) and len(raw) >= at + 9:
            self.comp, self.elem, self.rel, self.term = (
                raw[at + 3 : at + 4], raw[at + 4 : at + 5], raw[at + 6 : at + 7], raw[at + 8 : at + 9]
            )
            pos = at + 9
        else:
            self.comp, self.elem, self.rel, self.term = b":", b"+", b"?", b"'"
            pos = 0
        self.head_end = 0
        self.unz_start = -1
        self.second = -1
        self.messages: list[_Message] = []
        self.sender = self.recipient = self.control = b""
        current: _Message | None = None
        # Most files hold no release character after the UNA: then no terminator is escaped,
        # and the per-segment check (a Python call each, ~250k on 7k files) is skipped.
        escapable = raw.find(self.rel, pos) >= 0
        release = self.rel[0]
        while True:
            end = raw.find(self.term, pos)
            # (A terminator not right after a release character is a real one: no call.)
            while escapable and end > 0 and raw[end - 1] == release and self._escaped(raw, end):
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
            if self.head_end and (tag == b"UNB" or tag.startswith(b"UNA")):
                self.second = start
                return
            if tag == b"UNB" and len(elements) > 5:
                self.sender = elements[2].split(self.comp)[0]
                self.recipient = elements[3].split(self.comp)[0]
                self.control = elements[5].split(self.comp)[0]
                self.head_end = end + 1
            elif tag == b"UNH" and len(elements) > 2:
                # (The first component, as the parser reads the 0062.)
                current = _Message(
                    start, kind=elements[2].split(self.comp)[0], ref=elements[1].split(self.comp)[0]
                )
                self.messages.append(current)
            elif current is not None:
                if tag in _VALUE_TAGS:
                    self._value(current, tag, elements)
                elif tag == b"UNT":
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
        if tag == b"IDE":
            ide = elements[2].split(self.comp)[0] if len(elements) > 2 else b""
            message.ides.append(ide)
            if len(elements) > 2:
                message.txs.append({b"IDE": ide, b"7495": second[0]})
        elif tag == b"LOC" and message.txs and len(elements) > 2:
            _located(message.txs[-1], second[0], elements[2].split(self.comp)[0])
        elif tag == b"STS" and second[0] == b"7" and message.txs and len(elements) > 4:
            message.txs[-1][b"GV"] = elements[4].split(self.comp)[0]
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
    ``parsed``: the parser's result, once it was needed (``parse``).
    """

    key: tuple[bytes, bytes, bytes] | None
    messages: list[_Message]
    cut: bool
    scan: Scan
    raw: bytes
    parsed: Interchange | EdifactError | None = None

    def parse(self) -> Interchange | EdifactError:
        if self.parsed is None:
            self.parsed = try_parse_interchange(self.raw)
        return self.parsed


class _Route(NamedTuple):
    """How one message is placed: ``_STATIC`` in the partition of ``group`` (a trigger also maps
    the references its answers will carry, derived from ``seeds``, one per transaction, to it),
    ``_ACK`` / ``_ANSWER`` with the interchange / IDE ``ref`` it answers, or by ``group`` (the
    file's) when unknown. ``refusals``: the 0020s of the APERAKs the pipeline may refuse the
    message or one of its transactions with (none for an acknowledgement). ``keys``: the
    ``sender:IDE`` of each trigger transaction (what its process binds as ``tx:`` key).
    ``more_groups``: a bundled message's further groups (its other triggers' MaLos), every one
    going with the message; ``more_refs``: the further IDEs its other answers name (the
    message goes where the first known one is)."""

    kind: int
    group: int
    ref: bytes = b""
    seeds: tuple[str, ...] = ()
    refusals: tuple[bytes, ...] = ()
    keys: tuple[bytes, ...] = ()
    more_groups: tuple[int, ...] = ()
    more_refs: tuple[bytes, ...] = ()


_STATIC, _ACK, _ANSWER = 0, 1, 2


class FileFacts(NamedTuple):
    """What one file alone says for its placement (module doc, "Two phases"); plain tuples, so a
    list of them pickles small and fast (~0.6 KB and a few µs per file).

    ``key``: the receipt key (None: no readable UNB; ``default`` is then the group of the file's
    name and first bytes); ``default``: the group of the file's UNB key;
    ``routes``: one per message; ``bounds``: each message's start and end offset when ``cut``
    (the file can be split), with the UNB's end (``head_end``) and the separators and 0020 the
    scan read for a piece's UNZ; ``rejected``: the judge's verdict, None when not judged;
    ``earlier``: the receipts earlier runs left under ``key`` in the part stores
    (``_placement.earlier_receipts``; module doc, "Continued stores").
    """

    key: tuple[bytes, bytes, bytes] | None
    digest: bytes
    default: int
    routes: tuple[_Route, ...] = ()
    cut: bool = False
    bounds: tuple[int, ...] = ()
    head_end: int = 0
    separators: bytes = b""
    control: bytes = b""
    rejected: bool | None = None
    earlier: tuple[Earlier, ...] = ()

    def likely_cut(self) -> bool:
        """Whether a walk is likely to cut the file: an answer or acknowledgement among two or
        more messages (a bundle of triggers is cut only when its MaLos were placed apart before)."""
        if not self.cut or len(self.routes) < 2:
            return False
        return any(r.kind != _STATIC for r in self.routes)

    def piece(self, raw: bytes, indices: tuple[int, ...]) -> bytes:
        """The interchange of ``raw``'s messages ``indices``: its UNB, those messages, a UNZ counting them."""
        bounds = self.bounds
        body = b"".join(raw[bounds[2 * i] : bounds[2 * i + 1]] for i in indices)
        elem, term = self.separators[:1], self.separators[1:]
        unz = b"UNZ" + elem + str(len(indices)).encode() + elem + self.control + term
        return raw[: self.head_end] + body + unz


# Where a file goes: partition -> None (the whole file) or the indices of its messages in the piece.
Placement = dict[int, tuple[int, ...] | None]


def pieces_of(raw: bytes, facts: FileFacts, placement: Placement) -> dict[int, bytes]:
    """``{partition: bytes}`` of ``raw`` placed by ``placement`` (``Partitioner.place``)."""
    return {part: raw if at is None else facts.piece(raw, at) for part, at in placement.items()}


@dataclass
class _Receipt:
    """The last bytes received under one receipt key (module doc), and where they went.

    ``home``: the partition of the first message (or of the whole file); ``parts``: one
    partition per message when the file is cut if accepted, else empty. ``accepted`` is known
    once asked (``Partitioner._accepted``): from the facts' verdict, else judged then.
    """

    digest: bytes
    home: int
    parts: list[int]
    facts: FileFacts
    judge: Callable[[], bool]
    accepted: bool | None = None


def _encoded(value: str | None) -> bytes:
    return (value or "").encode("latin-1", "replace")


def _from_parsed(parsed: Interchange) -> list[_Message]:
    """The routing values of a parsed interchange's messages (release characters resolved)."""
    messages: list[_Message] = []
    for each in parsed.messages:
        message = _Message(0, kind=_encoded(each.message_type), ref=_encoded(each.reference))
        for segment in each.segments:
            tag = segment.tag
            if tag == "IDE":
                message.ides.append(_encoded(segment.value(1)))
                if len(segment.elements) > 1:
                    ide_qualifier = _encoded(segment.value(0))
                    message.txs.append({b"IDE": _encoded(segment.value(1)), b"7495": ide_qualifier})
            elif tag == "LOC" and message.txs and len(segment.elements) > 1:
                _located(message.txs[-1], segment.value(0), _encoded(segment.value(1)))
            elif tag == "STS" and segment.value(0) == "7" and message.txs:
                message.txs[-1][b"GV"] = _encoded(segment.value(3))
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
        return _Read((scan.sender, scan.recipient, scan.control), scan.messages, True, scan, raw)
    parsed = try_parse_interchange(raw)
    if isinstance(parsed, EdifactError):
        from mako_actors.inbound import _lenient_header  # the pipeline's own reading of a UNB

        header = _lenient_header(raw)
        key = None if header is None else (_encoded(header[0]), _encoded(header[1]), _encoded(header[2]))
        return _Read(key, [], False, scan, raw, parsed)
    messages = _from_parsed(parsed)
    cut = scan.ok and len(scan.messages) == len(messages)
    if cut:
        for ours, theirs in zip(messages, scan.messages, strict=True):
            ours.start, ours.end = theirs.start, theirs.end
    key = (_encoded(parsed.sender.id), _encoded(parsed.recipient.id), _encoded(parsed.control_ref))
    return _Read(key, messages, cut, scan, raw, parsed)


def rejected_as_a_whole(
    raw: bytes,
    received_at: datetime,
    tenants: Iterable[str],
    *,
    parsed: Interchange | EdifactError | None = None,
) -> bool:
    """Whether the inbound pipeline rejects ``raw``, received at ``received_at``, as a whole.

    The checks ``InboundPipeline.ingest`` makes before it routes any message (in its order):
    the parser's, a recipient that is not one of ``tenants``, a test interchange (the replay's
    pipeline refuses them), no format version in force on the ÜT day, a UNH version not in
    force. ``parsed``: ``try_parse_interchange(raw)`` if the caller has it. Such a file gets
    one CONTRL (or a dead letter) and none of its messages reach a process.
    """
    from mako_actors.inbound import _version_errors  # the pipeline's own UNH check

    if parsed is None:
        parsed = try_parse_interchange(raw)
    if isinstance(parsed, EdifactError) or parsed.recipient.id not in set(tenants) or parsed.test:
        return True
    try:
        fv = FormatVersion.in_force(uet(received_at))
    except InvalidArgument:
        return True
    return bool(_version_errors(parsed, fv))


def _receipt_key(read: _Read, tenants: frozenset[str]) -> tuple[bytes, bytes, bytes]:
    """The key of the receipt stream the pipeline records ``read`` in.

    An interchange for another party, broken or not, is recorded under our MP-ID when we have
    only one (we answer it), so it shares the stream of our own interchanges under its 0020.
    """
    assert read.key is not None
    sender, recipient, control = read.key
    if len(tenants) == 1 and recipient.decode("latin-1") not in tenants:
        return (sender, next(iter(tenants)).encode("latin-1"), control)
    return read.key


def _route(key: tuple[bytes, bytes, bytes], message: _Message, default: int) -> _Route:
    sender_id, recipient, control_ref = key
    if message.ack_ref:
        return _Route(_ACK, default, message.ack_ref)
    sender = sender_id.decode("latin-1")  # the workflow and the pipeline seed with the UNB sender
    control, ref = control_ref.decode("latin-1"), message.ref.decode("latin-1")
    ides = [each[b"IDE"].decode("latin-1") for each in message.txs]
    # The whole message (position 0, no IDE), and each transaction at its position.
    refused = [("", 0), *((ide.decode("latin-1"), k) for k, ide in enumerate(message.ides))]
    refusals = tuple(
        dict.fromkeys(refusal_interchange_ref(sender, control, ref, ide, k).encode() for ide, k in refused)
    )
    if not message.txs:
        return _Route(_STATIC, default, refusals=refusals)
    tx = message.txs[0]
    if tx.get(b"Z13") in _ANSWERS:
        first = tx.get(b"TN", b"")
        answered = (t.get(b"TN", b"") for t in message.txs[1:] if t.get(b"Z13") in _ANSWERS)
        more_refs = tuple(r for r in dict.fromkeys(answered) if r and r != first)
        return _Route(_ANSWER, default, first, refusals=refusals, more_refs=more_refs)
    group = _group(recipient, tx.get(b"LOC", b""))
    seeds = tuple(trigger_seed(sender, control, ref, ide) for ide in ides)
    # (An IDE qualifier other than 24 is refused by the pipeline: it binds no ``tx:`` key.)
    keys = tuple(
        sender_id + b":" + each[b"IDE"]
        for each in message.txs
        if each.get(b"Z13") in _TRIGGERS and each.get(b"7495") == b"24"
    )
    located = (t[b"LOC"] for t in message.txs[1:] if t.get(b"LOC") and t.get(b"Z13") not in _ANSWERS)
    more_groups = tuple(g for g in dict.fromkeys(_group(recipient, loc) for loc in located) if g != group)
    return _Route(_STATIC, group, b"", seeds, refusals, keys, more_groups)


def _facts(name: str, raw: bytes, tenants: frozenset[str]) -> tuple[FileFacts, _Read]:
    """One file's facts (not judged) and what was read of it."""
    read = _read(raw)
    if read.key is None:
        return FileFacts(None, b"", _group(name.encode(), raw[:64])), read
    default = _group(*read.key)
    key = _receipt_key(read, tenants)
    digest = hashlib.blake2b(raw, digest_size=16).digest()
    routes = tuple(_route(read.key, message, default) for message in read.messages)
    if not read.cut:
        return FileFacts(key, digest, default, routes), read
    scan = read.scan
    bounds = tuple(offset for m in read.messages for offset in (m.start, m.end))
    return FileFacts(
        key, digest, default, routes, True, bounds, scan.head_end, scan.elem + scan.term, scan.control
    ), read


def read_facts(files: list[tuple[str, bytes, datetime]], tenants: Iterable[str]) -> list[FileFacts]:
    """The facts of each ``(name, raw, received_at)``, for any number of partitions (module doc,
    "Two phases").

    Judged (a full parse each): every file likely to be cut, and every file whose receipt key
    occurs more than once in ``files``. Cost: a light scan of each file (no SHA-256: a trigger's
    references are derived by the walk, when an answer asks for them).
    """
    ours = frozenset(tenants)
    read = [_facts(name, raw, ours) for name, raw, _ in files]
    keys = Counter(facts.key for facts, _ in read if facts.key is not None)
    judged: list[FileFacts] = []
    for (facts, each), (_, raw, at) in zip(read, files, strict=True):
        if facts.key is not None and (keys[facts.key] > 1 or facts.likely_cut()):
            facts = facts._replace(rejected=rejected_as_a_whole(raw, at, ours, parsed=each.parse()))
        judged.append(facts)
    return judged


class Partitioner:
    """Assigns each message of an archive, in receipt order, to one of ``n`` partitions.

    ``tenants``: our MP-IDs, as the replay's pipeline has them (a file addressed to another
    party is rejected as a whole). ``mine``: see ``split``. ``seeds``: what each partition's
    store holds from earlier runs (``_placement.read_seed``, None: nothing), so the walk goes on
    from there ("Continued stores"); a MaLo or reference two stores hold stays with the first.
    """

    def __init__(
        self, n: int, tenants: Iterable[str], mine: int | None = None, seeds: Sequence[PartSeed | None] = ()
    ) -> None:
        self.n = n
        self._tenants = frozenset(tenants)
        self._mine = mine
        self._ide: dict[bytes, int] = {}
        self._interchange: dict[bytes, int] = {}
        self._groups: dict[int, int] = {}  # group -> its partition (module doc, "Groups")
        self._load = [0] * n  # messages placed in each partition so far
        self._receipts: dict[tuple[bytes, bytes, bytes], _Receipt] = {}
        # Bytes rejected under a key before other bytes came -> the partition that received them:
        # the same bytes again are a duplicate there (its receipt stream holds them).
        self._rejected_at: dict[tuple[tuple[bytes, bytes, bytes], bytes], int] = {}
        # Each trigger's references -> its partition, derived when an answer asks (``Predictions``);
        # the 0020 of each refusal the pipeline may send for a message -> that message's partition.
        self._predicted: Predictions[int] = Predictions()
        self._refusals: dict[bytes, int] = {}
        # ``sender:IDE`` of each trigger placed -> its partition: a trigger reusing one whose MaLo
        # is not placed yet goes there (``_parts``; module doc, "Groups").
        self._transactions: dict[bytes, int] = {}
        for part, seed in enumerate(seeds):
            if seed is None:
                continue
            for recipient, malo in seed.malos:
                self._groups.setdefault(_group(recipient, malo), part)
            for ide in seed.ides:
                self._ide.setdefault(ide, part)
            for interchange in seed.interchanges:
                self._interchange.setdefault(interchange, part)
            for key in seed.transactions:
                self._transactions.setdefault(key, part)
            self._load[part] += seed.load

    def split(self, name: str, raw: bytes, received_at: datetime) -> dict[int, bytes]:
        """``{partition: bytes}`` for one interchange received at ``received_at``: whole, or one
        piece per partition (see the module doc).

        With ``mine`` (a worker's partition), a file that would be cut into pieces none of which
        is ``mine``'s gives ``{}`` without being judged (a parse saved): nothing of it is
        ``mine``'s, whether it is cut or goes whole to its first message's partition.
        """
        facts, read = _facts(name, raw, self._tenants)

        def judge() -> bool:
            return rejected_as_a_whole(raw, received_at, self._tenants, parsed=read.parse())

        return pieces_of(raw, facts, self.place(facts, judge, lambda: raw))

    def place(
        self, facts: FileFacts, judge: Callable[[], bool], raw: Callable[[], bytes] | None = None
    ) -> Placement:
        """Where the next file in receipt order goes, from its ``facts`` (``read_facts``).

        ``judge``: the file's verdict (``rejected_as_a_whole``), asked only when the facts lack
        it and the walk needs it, possibly later (while its receipt is the last under its key).
        ``raw``: the file's bytes, read only for a key an earlier run received (``facts.earlier``).
        """
        if facts.key is None:
            if facts.earlier:  # dead-lettered by an earlier run: once, as in one store
                return {facts.earlier[0][0]: None}
            return {self._group_of(facts.default, 1): None}
        last = self._receipts.get(facts.key)
        if last is None and facts.earlier:
            continued = self._continued(facts, raw)
            if continued is not None:
                return continued
        if last is not None and facts.digest == last.digest:
            # A retransmission: a duplicate of each piece where it was received. The pipeline
            # routes the same bytes again when they were rejected before and pass now (a check
            # that depends on the receipt day): those are placed like new ones (module doc).
            if self._accepted(last):
                return self._pieces(last.home, last.parts)
            if facts.rejected if facts.rejected is not None else judge():
                return {last.home: None}
        elif last is not None and (seen := self._received_before(facts, raw)) is not None:
            return {seen: None}  # rejected before the last ones: a duplicate where received
        elif last is not None and self._accepted(last):
            return {last.home: None}  # other bytes under an accepted reference: a conflict there
        if last is not None and facts.digest != last.digest:  # other bytes after rejected ones
            self._rejected_at[(facts.key, last.digest)] = last.home
        parts = self._parts(facts.routes)
        home = parts[0] if parts else self._group_of(facts.default, 1)
        if len(set(parts)) < 2 or not facts.cut:
            parts = []
        receipt = self._receipts[facts.key] = _Receipt(facts.digest, home, parts, facts, judge)
        if not parts:
            return {home: None}
        if self._mine is not None and self._mine not in parts:
            return {}
        if not self._accepted(receipt):
            return {home: None}  # rejected as a whole: never cut
        return self._pieces(home, parts)

    def _received_before(self, facts: FileFacts, raw: Callable[[], bytes] | None) -> int | None:
        """The partition whose receipt stream holds these bytes as received before the last ones
        under their key (rejected, then other bytes came; in this walk or an earlier run's),
        else None. Reads the file only when an earlier run's stores have such bytes there."""
        assert facts.key is not None  # (a file without one is placed before)
        seen = self._rejected_at.get((facts.key, facts.digest))
        if seen is not None or raw is None or all(each[2] and not each[4] for each in facts.earlier):
            return seen
        sha = hashlib.sha256(raw()).hexdigest()
        return next(
            (each[0] for each in facts.earlier if sha in each[4] or (sha == each[1] and not each[2])), None
        )

    def _continued(self, facts: FileFacts, raw: Callable[[], bytes] | None) -> Placement | None:
        """A file under a key an earlier run received (module doc, "Continued stores"); None:
        placed like new bytes under a rejected key."""
        earlier = facts.earlier
        accepted = [each for each in earlier if each[2]]
        # Cut into pieces as before: each part that holds its piece gets it again (a duplicate),
        # each that lacks it (a run that ended before that part's worker stored it) gets it as
        # new. Sent whole to a part holding a piece only, it would be a conflict there, and
        # the other messages' answers lost.
        parts = self._parts(facts.routes, dry=True) if accepted and facts.routes else []
        cut = bool(parts) and facts.cut
        # Bytes rejected there before other ones came count as received where they were.
        rejected_before = any(not each[2] or each[4] for each in earlier)
        data = raw() if raw is not None and (cut or len(accepted) != 1 or rejected_before) else None
        if cut and data is not None:
            placed = self._pieces(parts[0], parts)
            stored = {each[0]: each[1] for each in accepted}
            if stored.keys() <= placed.keys() and all(
                hashlib.sha256(piece).hexdigest() == stored[part]
                for part, piece in pieces_of(data, facts, placed).items()
                if part in stored
            ):
                return placed
        sha = hashlib.sha256(data).hexdigest() if data is not None else ""
        seen = [each[0] for each in earlier if sha and (sha == each[1] or sha in each[4])]
        if len(accepted) == 1 and not seen:
            return {accepted[0][0]: None}  # received whole: a duplicate or a conflict there
        if accepted:
            # Final, as in one store: the same bytes are a duplicate of each piece where it was
            # received, other bytes a conflict (CONTRL 4/26, a dead letter) where one was accepted:
            # where these bytes were answered so before, else with the first message's piece.
            homes = [each[0] for each in accepted if parts and each[0] == parts[0]]
            return {(seen or homes or [accepted[0][0]])[0]: None}
        # Rejected bytes count as not received: other bytes are new; the same bytes again are a
        # duplicate where they were received (that receipt stream holds them).
        if seen:
            return {seen[0]: None}
        return None

    def _accepted(self, receipt: _Receipt) -> bool:
        """Whether the pipeline accepted the receipt's bytes (judged now if the facts do not say)."""
        if receipt.accepted is None:
            rejected = receipt.facts.rejected
            receipt.accepted = not (rejected if rejected is not None else receipt.judge())
        return receipt.accepted

    @staticmethod
    def _pieces(home: int, parts: list[int]) -> Placement:
        """The whole file to ``home``, or cut by ``parts`` (one partition per message) if they differ."""
        if len(set(parts)) <= 1:
            return {home: None}
        grouped: dict[int, list[int]] = {}
        for index, part in enumerate(parts):
            grouped.setdefault(part, []).append(index)
        return {part: tuple(indices) for part, indices in grouped.items()}

    def _group_of(self, group: int, messages: int) -> int:
        """The partition of ``group`` (the least loaded one if new), counting ``messages`` there."""
        part = self._groups.get(group)
        if part is None:
            part = self._groups[group] = _least_loaded(self._load)
        self._load[part] += messages
        return part

    def _answered(
        self, route: _Route, ides: MutableMapping[bytes, int], interchanges: MutableMapping[bytes, int]
    ) -> int | None:
        """The partition of the request an answer or acknowledgement refers to, if known.

        A trigger of this walk that derives the reference wins over the maps (the earlier
        runs' stores, and in a dry walk this file's own triggers, which come later still).
        """
        kind = route.kind
        if kind == _STATIC:
            return None
        ref = route.ref
        if kind == _ACK:
            known = interchanges.maps[0].get(ref) if isinstance(interchanges, ChainMap) else None
            if known is None:
                known = self._predicted.get("0020", ("", ref.decode("latin-1")))
            if known is None:
                known = interchanges.get(ref)
            if known is None:  # a CONTRL on an APERAK our pipeline refused something with
                known = self._refusals.get(ref)
            return known
        for each in (ref, *route.more_refs):
            known = ides.maps[0].get(each) if isinstance(ides, ChainMap) else None
            if known is None:
                known = self._predicted.get("IDE", ("", each.decode("latin-1")))
            if known is None:
                known = ides.get(each)
            if known is not None:
                return known
        return None

    def _parts(self, routes: tuple[_Route, ...], dry: bool = False) -> list[int]:
        """Each message's partition; a new group goes with its file (module doc, "Groups").

        ``dry``: what they would be, with nothing recorded.
        """
        groups: MutableMapping[int, int] = self._groups
        ides: MutableMapping[bytes, int] = self._ide
        interchanges: MutableMapping[bytes, int] = self._interchange
        transactions: MutableMapping[bytes, int] = self._transactions
        load = self._load
        if dry:
            groups, ides, interchanges = ChainMap({}, groups), ChainMap({}, ides), ChainMap({}, interchanges)
            transactions = ChainMap({}, transactions)
            load = list(load)
        target: int | None = None
        for route in routes:
            target = self._answered(route, ides, interchanges)
            if target is None:
                target = _bound(route, groups)
            if target is None:
                target = _seen(route, transactions)
            if target is not None:
                break
        if target is None:
            target = _least_loaded(load)
        parts: list[int] = []
        for route in routes:  # in order: an answer may follow its request in the same file
            part = self._answered(route, ides, interchanges)
            if part is None:
                # A placed MaLo first: the walk cannot tell whether the earlier trigger with this
                # IDE bound it (then this one is refused, Z15) or was refused itself and bound
                # nothing (then this one is decided on its MaLo's history). A MaLo not placed
                # yet goes with that trigger: right either way for a message of it alone (in a
                # bundle, a placed MaLo of another transaction wins: the limit in the doc).
                part = _bound(route, groups)
                if part is None:
                    part = _seen(route, transactions)
                if part is None:
                    part = target
                # Every MaLo of the message goes with it (a bundled message is never cut), also
                # its further ones: their next Anmeldung meets this one's claim.
                groups.setdefault(route.group, part)
                for group in route.more_groups:
                    groups.setdefault(group, part)
            for key in route.keys:
                transactions.setdefault(key, part)
            if route.kind == _STATIC:
                if dry:  # nothing recorded: this file's own references in the overlay maps
                    for seed in route.seeds:
                        for ide, interchange in derive_request_refs(seed, CANDIDATES):
                            ides[ide.encode()] = part
                            interchanges[interchange.encode()] = part
                else:
                    for seed in route.seeds:
                        self._predicted.add("", seed, part)
            if not dry:  # (an answer may be refused too)
                for refusal in route.refusals:
                    self._refusals[refusal] = part
            load[part] += 1
            parts.append(part)
        return parts


def _seen(route: _Route, transactions: Mapping[bytes, int]) -> int | None:
    """The partition of the first earlier trigger with one of ``route``'s ``sender:IDE`` keys."""
    for key in route.keys:
        part = transactions.get(key)
        if part is not None:
            return part
    return None


def _bound(route: _Route, groups: Mapping[int, int]) -> int | None:
    """The partition of ``route``'s group, else of the first of its further groups that has one."""
    part = groups.get(route.group)
    if part is None:
        part = next((groups[g] for g in route.more_groups if g in groups), None)
    return part


def _least_loaded(load: list[int]) -> int:
    """The partition with the fewest messages so far (the first of equals)."""
    return load.index(min(load))


def split_by_partition(
    n: int, files: list[tuple[str, bytes, datetime]], tenants: Iterable[str], mine: int | None = None
) -> list[dict[int, bytes]]:
    """For each ``(name, raw, received_at)`` in receipt order, its pieces by partition (module doc;
    ``mine``: see ``Partitioner.split``). Both phases in this process."""
    tenants = frozenset(tenants)
    partitioner = Partitioner(n, tenants, mine)
    placed = []
    for facts, (_, raw, at) in zip(read_facts(files, tenants), files, strict=True):

        def judge(raw: bytes = raw, at: datetime = at) -> bool:
            return rejected_as_a_whole(raw, at, tenants)

        def read(raw: bytes = raw) -> bytes:
            return raw

        placed.append(pieces_of(raw, facts, partitioner.place(facts, judge, read)))
    return placed
