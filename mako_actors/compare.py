"""What a replay would send differently from what the operator actually sent (UTILMD, APERAK, CONTRL).

``compare_outbound(sent_dir, stores)`` reads every interchange in ``sent_dir`` (the operator's
outbound archive; ``read_sent`` reads it ahead of a long replay) and the messages waiting in
the replay's outbox(es), rendered to EDIFACT and parsed back, so both sides are read by the
same code, and pairs them by what they answer:

- UTILMD (per process): an answer to a supplier (55002/55003, 55078/55080, 55005/55006, 55036)
  by its recipient and ``RFF+TN`` (the request's IDE), a message to the old or a future supplier
  (55010, 55037, 55038) by its recipient and MaLo (a Tranche's ID for a Tranche); the code is
  the answer code (STS+E01), the instant the document date (DTM+137), the content its other
  dates as instants, further STS codes (the LFA's answer a 55003 repeats) and NAD+VY.
- APERAK (per received transaction): by its recipient, ``RFF+ACE`` (the answered interchange)
  and ``RFF+TN`` (the answered IDE; ``RFF+ACW``, the message, when there is none); the code is
  ``312`` or ``313`` with its ERC codes, sorted (``313 Z17``), the instant DTM+137.
- CONTRL (per received interchange): by its recipient and ``UCI`` 0020; the code is the UCI
  action with its 0085 and the rejected UCM lines, sorted (``4 26``, ``4 M3/29``), the instant
  UNB S004 (minutes, UTC), as a CONTRL has no DTM.

Several messages under one pair key and PID (a CONTRL 7 and a CONTRL 4/26 for other content
under the same 0020; two processes' 55010 about one MaLo) are matched best first: equal ones
within ``tolerance``, then equal ones further apart, then equal codes, then the rest, nearest
in time first. Per pair and PID (``APERAK``/``CONTRL`` for those):

- ``missing``: sent back then, the replay would not send it;
- ``awaiting operator``: sent back then; in the replay its process waits for an operator's
  decision (a Geschäftsvorfall 3's Tranche, an LFA our 55010 did not reach): the replay cannot
  make that decision, so nothing is sent yet (``processes list --status awaiting_operator``);
- ``extra``: the replay would send it, it was not sent;
- ``other code``: the same PID with another code;
- ``other answer``: the request answered the other way (a 55003 for a 55002, 55080 for 55078,
  55006 for 55005; the PID column names both, sent first);
- ``other content``: the same code, other dates, repeated codes or parties (``_detail``);
- ``other Frist``: sent at a time more than ``tolerance`` away from the replay's decision.

``types`` limits the comparison (e.g. to UTILMD when the archive holds no acknowledgements).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mako_actors.edifact import (
    Delimiters,
    Interchange,
    Message,
    Transaction,
    parse_dtm,
    render_outbound,
    try_parse_interchange,
)
from mako_actors.errors import EngineError, InvalidArgument
from mako_actors.outbox import OutboxMessage
from stores.lmdb import LmdbStore

__all__ = ["COMPARED_TYPES", "Difference", "SentArchive", "compare_outbound", "differences_csv", "read_sent"]

COMPARED_TYPES = ("UTILMD", "APERAK", "CONTRL")
_TO_SUPPLIER = ("55002", "55003", "55078", "55080", "55005", "55006", "55036")
_FAR = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Sent:
    key: str
    pid: str
    code: str | None
    at: datetime
    process: str = ""
    detail: str = ""  # a UTILMD transaction's other decided content (``_detail``)


@dataclass(frozen=True)
class Difference:
    """One way the replay's outbound differs: what, for which pair key and PID, both sides."""

    kind: str  # missing | awaiting operator | extra | other code | other answer | other content | other Frist
    key: str
    pid: str
    process: str
    sent: str
    replay: str

    def to_plain(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "key": self.key,
            "pid": self.pid,
            "process": self.process,
            "sent": self.sent,
            "replay": self.replay,
        }


@dataclass
class SentArchive:
    """The compared messages of an operator's outbound folder, read once (``read_sent``).

    ``unreadable`` names each file left out, with the reason: no interchange (the parser's
    reason), a directory, a hidden name, the same bytes as an earlier file, not sent by one of
    ``senders``.
    """

    directory: Path
    items: list[_Sent]
    unreadable: list[str]


def _key(pid: str, recipient: str, malo: str | None, request_ref: str | None) -> str:
    if pid in _TO_SUPPLIER and request_ref:
        return f"{recipient}:TN:{request_ref}"
    return f"{recipient}:MaLo:{malo}"


def _about(key: str) -> str:
    """``<partner>:UCI|ACE:<0020>`` of a CONTRL's or APERAK's key: the interchange it answers."""
    return ":".join(key.split(":", 3)[:3])


def _aperak_key(recipient: str, interchange_ref: str, ide_ref: str | None, message_ref: str | None) -> str:
    answered = f":TN:{ide_ref}" if ide_ref else f":ACW:{message_ref}" if message_ref else ""
    return f"{recipient}:ACE:{interchange_ref}{answered}"


def _aperak_code(positive: bool, codes: list[str]) -> str:
    # Sorted: the order of ERC groups says nothing about the decision.
    return "312" if positive else " ".join(["313", *sorted(codes)])


def _contrl_code(action: str, error_codes: list[str], lines: list[tuple[str, str, str | None]]) -> str:
    """``action`` [0085 …] and each rejected UCM line as ``<0062>/<0085>``, in a fixed order."""
    parts = [action, *sorted(set(error_codes))]
    rejected = sorted((ref, code or "") for ref, line_action, code in lines if line_action == "4")
    parts += [f"{ref}/{code or '-'}" for ref, code in rejected]
    return " ".join(parts)


def _detail(tx: Transaction) -> str:
    """What a UTILMD transaction decides besides its answer code, as comparable text: its dates
    (DTM except 137 and Z08, as instants), the STS+7 codes (a 55002's kind of MaLo, ZW6/ZW7),
    further STS codes (the LFA's answer a 55003 repeats), the package planned (RFF+Z60) and the
    other parties it names (NAD+VY, e.g. the LFA in a 55036). Not DTM+Z08 of an A06/A45: when
    the NB takes Anmeldungen again, the time of its processing, not a decision."""
    parts: list[str] = []
    for segment in tx.segments:
        tag = segment.tag
        if tag == "DTM":
            qualifier = segment.value(0, 0)
            if qualifier in ("137", "Z08"):
                continue
            value, fmt = segment.value(0, 1), segment.value(0, 2)
            try:
                shown = f"{parse_dtm(value, fmt).astimezone(UTC):%Y-%m-%d %H:%M}Z"
            except EngineError:
                shown = f"{value}:{fmt}"  # (102 dates and the like: as written)
            parts.append(f"DTM+{qualifier} {shown}")
        elif tag == "STS" and segment.value(0) == "7":
            codes = (segment.value(2, 0), segment.value(3, 0), segment.value(4, 0))  # C556 #1 #2 #3
            parts.append(f"STS+7 {' '.join(code for code in codes if code)}")
        elif tag == "STS" and segment.value(0) != "E01":
            parts.append(f"STS+{segment.value(0)} {segment.value(2, 0)}")
        elif tag == "RFF" and segment.value(0, 0) == "Z60":
            parts.append(f"RFF+Z60 {segment.value(0, 1)}")
        elif tag == "NAD" and segment.value(0) == "VY":
            parts.append(f"NAD+VY {segment.value(1, 0)}")
    return "; ".join(sorted(parts))


@dataclass(frozen=True)
class _Contrl:
    store: int
    action: str
    error_code: str | None
    lines: list[tuple[str, str, str | None]]
    process: str

    @property
    def conflict(self) -> bool:
        """A CONTRL 4/26: other content under an 0020 already received (not a piece's answer)."""
        return self.action == "4" and self.error_code == "26"


def _entries(
    parsed: Interchange, types: frozenset[str], process: str, store: int
) -> tuple[list[_Sent], list[tuple[str, datetime, _Contrl]]]:
    """The compared messages of one interchange (UTILMD per transaction); CONTRLs apart."""
    out: list[_Sent] = []
    contrls: list[tuple[str, datetime, _Contrl]] = []
    recipient = parsed.recipient.id
    for message in parsed.messages:
        if message.message_type not in types:
            continue
        at = message.document_date or parsed.prepared_at
        if message.message_type == "UTILMD":
            for tx in message.transactions:
                pid = tx.pid or message.pid or ""
                # a ruhende MaLo's ID (LOC+Z22) first: the process's object where present
                key = _key(pid, recipient, tx.location("Z22") or tx.malo, tx.request_ref)
                out.append(_Sent(key, pid, tx.answer_code, at, process, _detail(tx)))
        elif message.message_type == "APERAK":
            out.extend(_aperaks(recipient, message, at, process))
        elif message.message_type == "CONTRL":
            uci = next((segment for segment in message.segments if segment.tag == "UCI"), None)
            if uci is None:
                continue
            lines = [(s.value(0), s.value(2), s.value(3) or None) for s in message.segments if s.tag == "UCM"]
            contrl = _Contrl(store, uci.value(3), uci.value(4) or None, lines, process)
            # UNB S004: a CONTRL has no DTM; minutes on both sides (both are rendered bytes)
            contrls.append((f"{recipient}:UCI:{uci.value(0)}", parsed.prepared_at, contrl))
    return out, contrls


def _aperaks(recipient: str, message: Message, at: datetime, process: str) -> list[_Sent]:
    """An APERAK's entries, one per answered transaction: each ERC group (SG4) with the RFF+TN /
    RFF+ACW after it, the message's own RFFs (SG2: ACE, and TN in a 312) where it names none.
    Several groups answering one transaction are one entry with all their codes."""
    top: dict[str, str] = {}
    groups: list[tuple[str, dict[str, str]]] = []
    for segment in message.segments:
        if segment.tag == "ERC":
            groups.append((segment.value(0), {}))
        elif segment.tag == "RFF":
            (groups[-1][1] if groups else top).setdefault(segment.value(0, 0), segment.value(0, 1))
    positive = message.document_code == "312"
    codes: dict[str, list[str]] = {}
    for code, refs in groups or [("", {})]:
        # A 312 names the transaction only (RFF+TN); RFF+ACW is rendered on a 313.
        key = _aperak_key(
            recipient,
            top.get("ACE") or refs.get("ACE", ""),
            refs.get("TN") or top.get("TN"),
            None if positive else refs.get("ACW") or top.get("ACW"),
        )
        codes.setdefault(key, []).extend([code] if code else [])
    return [_Sent(key, "APERAK", _aperak_code(positive, found), at, process) for key, found in codes.items()]


def read_sent(
    sent_dir: Path, types: Iterable[str] = COMPARED_TYPES, senders: Iterable[str] | None = None
) -> SentArchive:
    """The messages of ``sent_dir`` (the operator's outbound folder) to compare, read at once.

    Call it before a replay that may take hours: a folder that cannot be read fails here.
    A file holding the same bytes as an earlier one (a resend kept twice) counts once, and so
    does a resend of one interchange under a new UNB time (the same parties, 0020 and all after
    its UNB), at its first sending; with
    ``senders`` (our MP-IDs), an interchange from another sender is left out. Raises
    ``OSError`` naming the file that cannot be read, ``InvalidArgument`` for a type outside
    ``COMPARED_TYPES``.
    """
    wanted = _types(types)
    ours = frozenset(senders) if senders is not None else None
    unreadable: list[str] = []
    seen: dict[bytes, str] = {}
    # Per interchange (parties, 0020, test flag and what follows its UNB): its file's name, its
    # UNB time and its entries; a resend under a new UNB time counts once, at its first sending.
    sendings: dict[tuple[str, str, str, bool, bytes], tuple[datetime, str, list[_Sent]]] = {}
    for path in sorted(sent_dir.iterdir()):
        if path.name.startswith("."):
            unreadable.append(f"{path.name}: a hidden name (not read)")
            continue
        if path.is_dir():
            unreadable.append(f"{path.name}: a directory (not read)")
            continue
        if not path.is_file():
            unreadable.append(f"{path.name}: not a file")
            continue
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise OSError(exc.errno, f"{exc.strerror or exc} reading the sent folder", str(path)) from None
        digest = hashlib.sha256(raw).digest()
        if digest in seen:
            unreadable.append(f"{path.name}: the same bytes as {seen[digest]} (compared once)")
            continue
        seen[digest] = path.name
        parsed = try_parse_interchange(raw, source=path.name)
        if not isinstance(parsed, Interchange):
            unreadable.append(str(parsed))  # names the file
            continue
        if ours is not None and parsed.sender.id not in ours:
            unreadable.append(f"{path.name}: sent by {parsed.sender.id}, not by us")
            continue
        found, contrls = _entries(parsed, wanted, "", 0)
        # Each CONTRL the operator sent is one (a conflict's 4/26 beside the first one's 7 too).
        found.extend(_Sent(key, "CONTRL", _one_contrl_code(contrl), at) for key, at, contrl in contrls)
        body = hashlib.sha256(_after_unb(raw, parsed.delimiters)).digest()
        sending = (parsed.sender.id, parsed.recipient.id, parsed.control_ref, parsed.test, body)
        earlier = sendings.get(sending)
        if earlier is not None:
            first, again = (earlier[1], path.name)
            if parsed.prepared_at < earlier[0]:
                first, again = again, first
            unreadable.append(
                f"{again}: a resend of {first} (the same interchange, another UNB time; compared once)"
            )
            if first == earlier[1]:
                continue
        sendings[sending] = (parsed.prepared_at, path.name, found)
    items = [entry for _, _, found in sendings.values() for entry in found]
    return SentArchive(sent_dir, items, unreadable)


def _after_unb(raw: bytes, delimiters: Delimiters) -> bytes:
    """``raw`` after its UNB segment: what a resend of the same interchange repeats (the UNB's
    S004, when it was prepared, may be new); all of ``raw`` if it has no UNB."""
    terminator = delimiters.terminator.encode("latin-1", "replace")
    release = delimiters.release.encode("latin-1", "replace")
    at = raw.find(b"UNB")
    while at >= 0:
        at = raw.find(terminator, at + 1)
        if at < 0:
            break
        escapes = 0
        while at - escapes > 0 and raw[at - escapes - 1 : at - escapes] == release:
            escapes += 1
        if escapes % 2 == 0:  # (an odd run of release characters escapes the terminator)
            return raw[at + 1 :]
    return raw


def _types(types: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(types)
    unknown = sorted(wanted - set(COMPARED_TYPES))
    if unknown or not wanted:
        raise InvalidArgument(
            f"compare: message types must be some of {', '.join(COMPARED_TYPES)}, got {unknown}"
        )
    return wanted


async def _from_outbox(
    stores: list[Path],
    types: frozenset[str],
    unreadable: list[str],
    made: tuple[datetime, datetime] | None = None,
    counts: dict[str, int] | None = None,
) -> list[_Sent]:
    """The replay's messages, read as the sent ones are: rendered to EDIFACT and parsed back.

    ``made``: only those decided (``created_at``, the instant stamped in the replay) or dated
    (``_dated``: an operator's decision stored later) in it; the others are counted in
    ``counts["replay"]``."""
    out: list[_Sent] = []
    contrls: dict[tuple[str, datetime], list[_Contrl]] = {}
    for index, store_path in enumerate(stores):
        async with LmdbStore(store_path) as store:
            for message in await store.pending(10**9, _FAR):
                if message.message_type not in types:
                    continue
                if made is not None and not (
                    made[0] <= message.created_at <= made[1] or made[0] <= _dated(message) <= made[1]
                ):
                    if counts is not None:
                        counts["replay"] += 1
                    continue
                try:
                    raw = render_outbound(message.message_type, message.payload)
                except EngineError as exc:
                    unreadable.append(f"replay outbox message {message.message_id}: {exc}")
                    continue
                parsed = try_parse_interchange(raw, source=str(message.message_id))
                if not isinstance(parsed, Interchange):
                    unreadable.append(f"replay outbox message {message.message_id}: {parsed}")
                    continue
                found, pieces = _entries(parsed, types, str(message.process_id), index)
                out.extend(found)
                for key, at, contrl in pieces:
                    contrls.setdefault((key, at), []).append(contrl)
    for (key, at), entries in contrls.items():
        out.extend(_Sent(key, "CONTRL", code, at, process) for code, process in _contrl_codes(entries))
    return out


def _dated(message: OutboxMessage) -> datetime:
    """The instant an outbox message is dated (DTM+137, a CONTRL's UNB S004): its decision's,
    also where it was stored later (an operator's decision dated by ``--at``)."""
    payload = message.payload
    text = payload.get("document_date") or (payload.get("envelope") or {}).get("prepared_at")
    try:
        at = datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        at = None
    return at if at is not None and at.tzinfo is not None else message.created_at


def _contrl_codes(entries: list[_Contrl]) -> list[tuple[str, str]]:
    """The codes (and processes) of the replay's CONTRLs on one received interchange at one instant.

    With several partition stores, a bundle split over them was acknowledged once per piece:
    those CONTRLs (one per store) are one CONTRL of the whole interchange, rejected if any piece
    was, with every piece's codes and rejected lines. A conflict's CONTRL 4/26 answers other
    bytes: never merged with the first one's. CONTRLs of one store are never merged.
    """
    out: list[tuple[str, str]] = []
    for group in ([e for e in entries if not e.conflict], [e for e in entries if e.conflict]):
        if len(group) > 1 and len({entry.store for entry in group}) == len(group):
            action = "4" if any(entry.action == "4" for entry in group) else "7"
            errors = [entry.error_code for entry in group if entry.error_code]
            lines = [line for entry in group for line in entry.lines]
            out.append((_contrl_code(action, errors, lines), group[0].process))
            continue
        out.extend((_one_contrl_code(entry), entry.process) for entry in group)
    return out


def _one_contrl_code(contrl: _Contrl) -> str:
    return _contrl_code(contrl.action, [contrl.error_code] if contrl.error_code else [], contrl.lines)


def _describe(sent: _Sent | None) -> str:
    if sent is None:
        return ""
    text = f"{sent.pid} {sent.code or '-'} at {sent.at.astimezone(UTC):%Y-%m-%d %H:%M}Z"
    return f"{text} [{sent.detail}]" if sent.detail else text


#: How two messages under one pair key and PID are matched, in this order (each stage pairs what
#: the earlier ones left, nearest in time first), and what a pair of that stage is.
def _alike(a: _Sent, b: _Sent) -> bool:
    return a.pid == b.pid and a.code == b.code and a.detail == b.detail


def _near(a: _Sent, b: _Sent, tolerance: timedelta) -> bool:
    return abs(a.at - b.at) <= tolerance


# Within ``tolerance`` first, whatever differs, then further apart: a message sent days later
# (a resend) must not take the pair of one sent in time with other content.
_STAGES: tuple[tuple[str | None, Callable[[_Sent, _Sent, timedelta], bool]], ...] = (
    (None, lambda a, b, t: _alike(a, b) and _near(a, b, t)),
    ("other content", lambda a, b, t: a.pid == b.pid and a.code == b.code and _near(a, b, t)),
    ("other code", lambda a, b, t: a.pid == b.pid and _near(a, b, t)),
    ("other answer", lambda a, b, t: _near(a, b, t)),  # (of one family: a rejection for a confirmation)
    ("other Frist", lambda a, b, t: _alike(a, b)),
    ("other content", lambda a, b, t: a.pid == b.pid and a.code == b.code),
    ("other code", lambda a, b, t: a.pid == b.pid),
    ("other answer", lambda a, b, t: True),
)
#: A confirmation and the rejection that answers the same request instead: paired as "other
#: answer" (not a "missing" beside an "extra").
_FAMILY = {"55003": "55002", "55080": "55078", "55006": "55005"}
#: How long after the replay's period a sent message is still paired with the replay's (a late
#: answer to one of the last files); later ones are left out before pairing.
_SENT_LAG = timedelta(days=7)


def _pairs(
    sent: list[_Sent], would: list[_Sent], tolerance: timedelta
) -> list[tuple[str | None, _Sent | None, _Sent | None]]:
    """Pairs of ``sent`` and ``would`` (one key and PID), best matches first, with their kind;
    what is left unpaired on either side is paired with None."""
    out: list[tuple[str | None, _Sent | None, _Sent | None]] = []
    free_a, free_b = set(range(len(sent))), set(range(len(would)))
    for kind, fits in _STAGES:
        candidates = sorted(
            (abs(sent[i].at - would[j].at), sent[i].at, i, j)
            for i in free_a for j in free_b if fits(sent[i], would[j], tolerance)
        )  # fmt: skip
        for _, _, i, j in candidates:
            if i in free_a and j in free_b:
                free_a.discard(i)
                free_b.discard(j)
                out.append((kind, sent[i], would[j]))
    out.extend((None, sent[i], None) for i in sorted(free_a))
    out.extend((None, None, would[j]) for j in sorted(free_b))
    return out


async def compare_outbound(
    sent_dir: Path | SentArchive,
    stores: list[Path],
    tolerance: timedelta = timedelta(hours=1),
    types: Iterable[str] = COMPARED_TYPES,
    unreadable: list[str] | None = None,
    skipped: Iterable[tuple[str, str]] = (),
    period: tuple[datetime, datetime] | None = None,
    outside: dict[str, int] | None = None,
    since: datetime | None = None,
) -> list[Difference]:
    """The differences between ``sent_dir`` and the replay stores' outboxes (see the module doc).

    Sorted by pair key, PID and instant. ``sent_dir``: the folder, or what ``read_sent`` read of
    it (before the replay). A file left out is named in ``unreadable`` with its reason.
    ``skipped``: interchanges (UNB sender, 0020) the replay left out
    (``replay_directory(message_types=...)``): the CONTRL and APERAK sent about them are not
    compared. ``period``: the replay's first receipt and its last receipt or ``until``;
    ``since``: the instant a continued store's earlier runs had fired Fristen up to (this run's
    clock began there, when before its first receipt). The replay's messages decided outside
    (``since``, or the first receipt, .. the end; by the instant they were decided or are
    dated) are the earlier runs' and not compared (a re-run of the same files compares from its
    first receipt: what the first run fired before it is counted outside), nor sent ones before
    it (a sent folder may span more); a sent one a little before its start or up to
    ``_SENT_LAG`` after its end is compared with the replay's it pairs with (an answer to the
    last files sent late, an operator's clock), else not; one left unpaired after the end is
    reported only as ``_answers_period`` says (it may answer what came after the archive).
    Those left out are counted in
    ``outside`` (``{"sent": entries, "replay": outbox messages}``). Raises ``InvalidArgument``
    for a type outside ``COMPARED_TYPES``, ``OSError`` when ``sent_dir`` cannot be read and
    ``StoreError`` for a bad store.
    """
    wanted = _types(types)
    archive = sent_dir if isinstance(sent_dir, SentArchive) else read_sent(sent_dir, wanted)
    if unreadable is not None:
        unreadable.extend(archive.unreadable)
    counts = {"sent": 0, "replay": 0}
    made = begin = end = report_from = report_until = None
    if period is not None:
        end = period[1] + tolerance  # (a late answer to one of the last files)
        # Left unpaired, a message sent after the last receipt may answer what came after the
        # archive (a sent folder spans more: the next month's files, a retransmission's CONTRL,
        # an LFA's answer, a Frist): "missing" only as ``_answers_period`` says.
        report_until = period[1]
        # The replay's own stamps are exact: its messages are decided after ``since`` (a Frist
        # due then fired in the run before) or from the first receipt on. A sent message's
        # instant holds minutes only (UNB S004, DTM 303): kept for pairing from a little before
        # (an operator's clock), one left unpaired is reported only from the period's start on
        # (from the minute after ``since``'s: that minute's may be the earlier run's).
        gap = since is not None and since < period[0]  # (not so in a re-run of the same files)
        start = since if gap and since is not None else period[0]
        made = (start + timedelta(microseconds=1) if gap else start, end)
        minute = start.replace(second=0, microsecond=0)
        report_from = minute + timedelta(minutes=1) if gap else minute
        begin = minute - tolerance - timedelta(minutes=1)
    notes = unreadable if unreadable is not None else []
    replay_items = await _from_outbox(stores, wanted, notes, made, counts)
    left_out = {f"{partner}:{qualifier}:{ref}" for partner, ref in skipped for qualifier in ("UCI", "ACE")}
    actual: dict[tuple[str, str], list[_Sent]] = {}  # by key and PID family
    replay: dict[tuple[str, str], list[_Sent]] = {}
    last = end + _SENT_LAG if end is not None else None  # a sent one may follow what it answers
    for item in archive.items:
        if left_out and _about(item.key) in left_out:
            continue
        if begin is not None and last is not None and not begin <= item.at <= last:
            counts["sent"] += 1
            continue
        actual.setdefault((item.key, _FAMILY.get(item.pid, item.pid)), []).append(item)
    acknowledged: set[str] = set()  # the interchanges the replay sent a CONTRL on
    for item in replay_items:
        if not (left_out and _about(item.key) in left_out):
            replay.setdefault((item.key, _FAMILY.get(item.pid, item.pid)), []).append(item)
            if item.pid == "CONTRL":
                acknowledged.add(_about(item.key))
    owners: dict[str, list[_Owner]] | None = None  # read when a message is missing
    out: list[tuple[datetime, Difference]] = []
    for key, family in sorted(set(actual) | set(replay)):
        for kind, a, b in _pairs(actual.get((key, family), []), replay.get((key, family), []), tolerance):
            pid = _pid_of(a, b)
            process = b.process if b is not None else ""
            if b is None:
                apart = a is not None and not _reported(a.at, report_from, end)
                if a is not None and not apart and report_until is not None and a.at > report_until:
                    apart = not _answers_period(a, acknowledged, (key, family) in replay)
                if apart:
                    counts["sent"] += 1  # outside the replay's period, and nothing of it to pair with
                    continue
                if owners is None:
                    owners = await _owners(stores)
                owner = _owner(owners, key, a.at) if a is not None else None
                process = owner.process if owner is not None else ""
                kind = "awaiting operator" if owner is not None and owner.waiting else "missing"
            elif a is None:
                kind = "extra"
            elif kind is None:
                continue
            at = (a or b).at  # type: ignore[union-attr]  # (one of them is there)
            out.append((at, Difference(kind, key, pid, process, _describe(a), _describe(b))))
    if outside is not None:
        outside.update(counts)
    out.sort(key=lambda row: (row[1].key, row[1].pid, row[0]))
    return [difference for _, difference in out]


def _answers_period(sent: _Sent, acknowledged: set[str], replayed: bool) -> bool:
    """Whether ``sent``, sent after the replay's period and paired with none of its messages,
    answers something in the period: a CONTRL or APERAK names the interchange it answers, and
    if the replay acknowledged that one (``acknowledged``: ``<partner>:UCI:<0020>``) and sent
    nothing under ``sent``'s key (``replayed``: else this one answers a copy received after
    the period, a retransmission's CONTRL 4/26), it is missing. A UTILMD's cause may lie after
    the period (an LFA's answer received then, a Frist) whatever its key: not missing."""
    if sent.pid not in ("CONTRL", "APERAK") or replayed:
        return False
    partner, _, reference = _about(sent.key).split(":")
    return f"{partner}:UCI:{reference}" in acknowledged


def _reported(at: datetime, first: datetime | None, last: datetime | None) -> bool:
    return first is None or last is None or first <= at <= last


def _pid_of(a: _Sent | None, b: _Sent | None) -> str:
    """The PID column of a pair: both where they differ (an "other answer"), sent first."""
    if a is not None and b is not None and a.pid != b.pid:
        return f"{a.pid}/{b.pid}"
    return a.pid if a is not None else b.pid if b is not None else ""


#: Events of a process that refused its trigger at once: it sent its sender an answer only. (A
#: trigger refused by APERAK names no LFA; a later ``gpke.inbound_rejected`` refused an answer.)
_REFUSED_AT_ONCE = frozenset({"gpke.anmeldung_rejected_at_once"})


@dataclass(frozen=True)
class _Owner:
    """A replayed process a pair key's messages may belong to (``_owners``)."""

    since: datetime | None  # its trigger's receipt (what was sent before it answers something else)
    process: str
    waiting: bool  # it waits for an operator's decision


async def _owners(stores: list[Path]) -> dict[str, list[_Owner]]:
    """The replay's processes by the pair keys their answers have: ``<LFN>:TN:<IDE>`` of their
    trigger, ``<LFA>:MaLo:<MaLo>`` and ``<LFZ>:MaLo:<MaLo>`` (the 55010, 55037 and 55038), each
    list in the order of the triggers' receipt. Reads every event of the stores (by type; the
    trigger's first event)."""
    from mako_actors.gpke.awaiting import OperatorQueue

    out: dict[str, list[_Owner]] = {}
    for store_path in stores:
        queue = OperatorQueue()
        triggers: dict[str, dict[str, Any]] = {}
        refused: set[str] = set()  # processes that answered their trigger's sender only
        async with LmdbStore(store_path) as store:
            position = 0
            while events := await store.read_all(position, 5_000):
                for event in events:
                    queue.handle(event)
                    fields = event.__dict__
                    payload = fields["payload"]
                    first = fields["sequence"] == 1 and isinstance(payload, dict)
                    if first and isinstance(payload.get("inbound"), dict):
                        triggers[fields["stream_id"]] = payload
                    elif fields["event_type"] in _REFUSED_AT_ONCE:
                        refused.add(fields["stream_id"])
                position = events[-1].global_position
        for stream, payload in triggers.items():
            inbound = payload["inbound"]
            since = _instant(inbound.get("received_at"))
            owner = _Owner(since, stream.rsplit("/", 1)[1], stream in queue.waiting)
            keys = {f"{inbound.get('sender')}:TN:{inbound.get('ide_ref')}"}
            if stream not in refused:  # (one rejected at once sent nothing to the LFA or an LFZ)
                parties = [payload.get("lfa"), payload.get("lfz")]
                later = payload.get("lfz_more") or ()
                parties += [supply.get("supplier") for supply in later if isinstance(supply, dict)]
                keys.update(f"{party}:MaLo:{inbound.get('malo')}" for party in parties if party)
            for key in keys:
                out.setdefault(key, []).append(owner)
    for owners in out.values():
        owners.sort(key=lambda owner: owner.since or _FAR)
    return out


def _owner(owners: dict[str, list[_Owner]], key: str, at: datetime) -> _Owner | None:
    """The process a sent message under ``key`` belongs to: by the transaction it answers
    (``TN``, also an APERAK's), else (a MaLo's) the last one whose trigger came by ``at`` (in
    minutes, as a sent message's instant): a message sent before a trigger answers another."""
    if ":ACE:" in key and ":TN:" in key:
        partner, _, rest = key.partition(":ACE:")
        key = f"{partner}:TN:{rest.split(':TN:', 1)[1]}"
    candidates = owners.get(key, [])
    if ":TN:" in key:
        return candidates[-1] if candidates else None  # (an IDE names one trigger)
    found = None
    for owner in candidates:
        if owner.since is not None and owner.since.replace(second=0, microsecond=0) > at:
            break
        found = owner
    return found


def _instant(value: object) -> datetime | None:
    """An event payload's instant (ISO text, or a datetime); None if it holds none."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def differences_csv(differences: list[Difference]) -> str:
    """The differences as CSV (``kind,key,pid,process,sent,replay``), for a notebook."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["kind", "key", "pid", "process", "sent", "replay"])
    writer.writeheader()
    for difference in differences:
        writer.writerow(difference.to_plain())
    return buffer.getvalue()
