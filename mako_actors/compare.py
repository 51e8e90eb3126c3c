"""What a replay would send differently from what the operator actually sent (UTILMD, APERAK, CONTRL).

``compare_outbound(sent_dir, stores)`` reads every interchange in ``sent_dir`` (the operator's
outbound archive) and the messages waiting in the replay's outbox(es), and pairs them by what
they answer:

- UTILMD (per process): an answer to a supplier (55002/55003, 55078/55080, 55005/55006, 55036)
  by its recipient and ``RFF+TN`` (the request's IDE), a message to the old or a future supplier
  (55010, 55037, 55038) by its recipient and MaLo (a Tranche's ID for a Tranche); the code is
  the answer code (STS+E01), the instant the document date (DTM+137).
- APERAK (per received transaction): by its recipient, ``RFF+ACE`` (the answered interchange)
  and ``RFF+TN`` (the answered IDE; ``RFF+ACW``, the message, when there is none); the code is
  ``312`` or ``313`` with its ERC codes (``313 Z17``), the instant DTM+137.
- CONTRL (per received interchange): by its recipient and ``UCI`` 0020; the code is the UCI
  action with its 0085 and the rejected UCM lines (``4 26``, ``4 M3/29``), the instant UNB S004
  (minutes, UTC), as a CONTRL has no DTM.

Several messages under one pair key (a CONTRL 7 and a CONTRL 4/26 for other content under the
same 0020) pair in the order of their instants. Per pair and PID (``APERAK``/``CONTRL`` for those):

- ``missing``: sent back then, the replay would not send it;
- ``awaiting operator``: sent back then; in the replay its process waits for an operator's
  decision (a Geschäftsvorfall 3's Tranche, an LFA our 55010 did not reach): the replay cannot
  make that decision, so nothing is sent yet (``processes list --status awaiting_operator``);
- ``extra``: the replay would send it, it was not sent;
- ``other code``: the same PID with another code;
- ``other Frist``: sent at a time more than ``tolerance`` away from the replay's decision.

``types`` limits the comparison (e.g. to UTILMD when the archive holds no acknowledgements).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mako_actors.edifact import Interchange, Message, try_parse_interchange
from mako_actors.errors import InvalidArgument
from stores.lmdb import LmdbStore

__all__ = ["COMPARED_TYPES", "Difference", "compare_outbound", "differences_csv"]

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


@dataclass(frozen=True)
class Difference:
    """One way the replay's outbound differs: what, for which pair key and PID, both sides."""

    kind: str  # missing | awaiting operator | extra | other code | other Frist
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
    return "312" if positive else " ".join(["313", *codes])


def _contrl_code(action: str, error_code: str | None, lines: list[tuple[str, str, str | None]]) -> str:
    """``action`` [0085] and each rejected UCM line as ``<0062>/<0085>`` (lines: ref, action, code)."""
    parts = [action, *([error_code] if error_code else [])]
    parts += [f"{ref}/{code or '-'}" for ref, line_action, code in lines if line_action == "4"]
    return " ".join(parts)


def _from_archive(sent_dir: Path, types: frozenset[str], unreadable: list[str]) -> list[_Sent]:
    out: list[_Sent] = []
    contrls: dict[tuple[str, datetime], list[_Contrl]] = {}
    for index, path in enumerate(sorted(sent_dir.iterdir())):
        if not path.is_file() or path.name.startswith("."):
            continue
        parsed = try_parse_interchange(path.read_bytes(), source=path.name)
        if not isinstance(parsed, Interchange):
            unreadable.append(str(parsed))  # names the file
            continue
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
                    out.append(_Sent(key, pid, tx.answer_code, at))
            elif message.message_type == "APERAK":
                out.append(_sent_aperak(recipient, message, at))
            elif message.message_type == "CONTRL":
                sent = _sent_contrl(recipient, message, index)
                if sent is not None:
                    contrls.setdefault((sent[0], parsed.prepared_at), []).append(sent[1])
    for (key, at), entries in contrls.items():
        out.extend(_Sent(key, "CONTRL", code, at) for code, _ in _contrl_codes(entries))
    return out


def _sent_aperak(recipient: str, message: Message, at: datetime) -> _Sent:
    refs: dict[str, str] = {}
    for segment in message.segments:
        if segment.tag == "RFF":
            refs.setdefault(segment.value(0, 0), segment.value(0, 1))
    codes = [segment.value(0) for segment in message.segments if segment.tag == "ERC"]
    key = _aperak_key(recipient, refs.get("ACE", ""), refs.get("TN"), refs.get("ACW"))
    return _Sent(key, "APERAK", _aperak_code(message.document_code == "312", codes), at)


def _sent_contrl(recipient: str, message: Message, index: int) -> tuple[str, _Contrl] | None:
    """The pair key and the CONTRL of a sent CONTRL message (``index``: its file's)."""
    uci = next((segment for segment in message.segments if segment.tag == "UCI"), None)
    if uci is None:
        return None
    lines = [(s.value(0), s.value(2), s.value(3) or None) for s in message.segments if s.tag == "UCM"]
    return f"{recipient}:UCI:{uci.value(0)}", _Contrl(index, uci.value(3), uci.value(4) or None, lines, "")


async def _from_outbox(stores: list[Path], types: frozenset[str]) -> list[_Sent]:
    out: list[_Sent] = []
    contrls: dict[tuple[str, datetime], list[_Contrl]] = {}
    for index, store_path in enumerate(stores):
        async with LmdbStore(store_path) as store:
            for message in await store.pending(10**9, _FAR):
                if message.message_type not in types:
                    continue
                payload: dict[str, Any] = message.payload
                process = str(message.process_id)
                if message.message_type == "UTILMD":
                    at = datetime.fromisoformat(payload["document_date"])
                    for tx in payload.get("transactions", ()):
                        pid = tx["pid"]
                        # As the sent ones are read: a ruhende MaLo's ID (LOC+Z22, beside its
                        # Kundenanlage's LOC+Z16 in a 55002), else the MaLo, else a Tranche's ID
                        malo = tx.get("resting_malo") or tx.get("malo") or tx.get("tranche")
                        key = _key(pid, message.recipient, malo, tx.get("request_ref"))
                        out.append(_Sent(key, pid, tx.get("answer_code"), at, process))
                elif message.message_type == "APERAK":
                    positive = bool(payload.get("positive"))
                    # A 312 names the transaction only (RFF+TN); RFF+ACW is rendered on a 313.
                    key = _aperak_key(
                        message.recipient,
                        payload["referenced_interchange_ref"],
                        payload.get("referenced_transaction_ref"),
                        None if positive else payload.get("referenced_message_ref"),
                    )
                    codes = [str(error["code"]) for error in payload.get("errors", ())]
                    at = datetime.fromisoformat(payload["document_date"])
                    out.append(_Sent(key, "APERAK", _aperak_code(positive, codes), at, process))
                elif message.message_type == "CONTRL":
                    lines = [
                        (str(m["reference"]), str(m["action"]), m.get("error_code"))
                        for m in payload.get("messages", ())
                    ]
                    # UNB S004 holds minutes only: the sent side's instant is truncated too.
                    at = datetime.fromisoformat(payload["envelope"]["prepared_at"]).replace(
                        second=0, microsecond=0
                    )
                    key = f"{message.recipient}:UCI:{payload['interchange_ref']}"
                    entry = _Contrl(index, str(payload["action"]), payload.get("error_code"), lines, process)
                    contrls.setdefault((key, at), []).append(entry)
    for (key, at), entries in contrls.items():
        out.extend(_Sent(key, "CONTRL", code, at, process) for code, process in _contrl_codes(entries))
    return out


@dataclass(frozen=True)
class _Contrl:
    store: int
    action: str
    error_code: str | None
    lines: list[tuple[str, str, str | None]]
    process: str


def _contrl_codes(entries: list[_Contrl]) -> list[tuple[str, str]]:
    """The codes (and processes) of the CONTRLs on one received interchange at one instant.

    With several partition stores, a bundle split over them was acknowledged once per piece:
    those CONTRLs are one CONTRL of the whole interchange, rejected if any piece was, with every
    piece's codes and rejected lines. Both sides are read so (the sent folder may be a split
    store's outbox rendered): every CONTRL on one interchange at one instant is one entry, also
    a conflict's beside the first one's, on either side alike.
    """
    if len(entries) < 2:
        return [(_contrl_code(e.action, e.error_code, e.lines), e.process) for e in entries]
    action = "4" if any(entry.action == "4" for entry in entries) else "7"
    errors = " ".join(dict.fromkeys(entry.error_code for entry in entries if entry.error_code))
    lines = sorted(
        (line for entry in entries for line in entry.lines),
        key=lambda line: (line[0], line[1], line[2] or ""),
    )
    return [(_contrl_code(action, errors or None, lines), entries[0].process)]


def _describe(sent: _Sent | None) -> str:
    return (
        "" if sent is None else f"{sent.pid} {sent.code or '-'} at {sent.at.astimezone(UTC):%Y-%m-%d %H:%M}Z"
    )


async def compare_outbound(
    sent_dir: Path,
    stores: list[Path],
    tolerance: timedelta = timedelta(hours=1),
    types: Iterable[str] = COMPARED_TYPES,
    unreadable: list[str] | None = None,
    skipped: Iterable[tuple[str, str]] = (),
) -> list[Difference]:
    """The differences between ``sent_dir`` and the replay stores' outboxes (see the module doc).

    Sorted by pair key and PID. A file of ``sent_dir`` that is no interchange is left out and,
    with ``unreadable`` given, named there with the parser's reason. ``skipped``: interchanges
    (UNB sender, 0020) the replay left out (``replay_directory(message_types=...)``): the CONTRL
    and APERAK sent about them are not compared. Raises ``InvalidArgument``
    for a type outside ``COMPARED_TYPES``, ``OSError`` when ``sent_dir`` cannot be read and
    ``StoreError`` for a bad store.
    """
    wanted = frozenset(types)
    unknown = sorted(wanted - set(COMPARED_TYPES))
    if unknown or not wanted:
        raise InvalidArgument(
            f"compare: message types must be some of {', '.join(COMPARED_TYPES)}, got {unknown}"
        )
    actual: dict[tuple[str, str], list[_Sent]] = {}
    left_out = {f"{partner}:{qualifier}:{ref}" for partner, ref in skipped for qualifier in ("UCI", "ACE")}
    for item in _from_archive(sent_dir, wanted, unreadable if unreadable is not None else []):
        if left_out and _about(item.key) in left_out:
            continue
        actual.setdefault((item.key, item.pid), []).append(item)
    replay: dict[tuple[str, str], list[_Sent]] = {}
    for item in await _from_outbox(stores, wanted):
        replay.setdefault((item.key, item.pid), []).append(item)
    for groups in (actual, replay):
        for group in groups.values():
            group.sort(key=lambda sent: (sent.at, sent.code or ""))
    waiting: dict[str, tuple[str, datetime | None]] | None = None  # read when a message is missing
    out: list[Difference] = []
    for key, pid in sorted(set(actual) | set(replay)):
        sent, would = actual.get((key, pid), []), replay.get((key, pid), [])
        for index in range(max(len(sent), len(would))):
            a = sent[index] if index < len(sent) else None
            b = would[index] if index < len(would) else None
            process = b.process if b is not None else ""
            if b is None:
                if waiting is None:
                    waiting = await _waiting(stores)
                process, since = waiting.get(key, ("", None))
                if since is not None and a is not None and a.at < since:
                    process = ""  # sent before the waiting process's trigger: not its answer
                kind = "awaiting operator" if process else "missing"
            elif a is None:
                kind = "extra"
            elif a.code != b.code:
                kind = "other code"
            elif abs(a.at - b.at) > tolerance:
                kind = "other Frist"
            else:
                continue
            out.append(Difference(kind, key, pid, process, _describe(a), _describe(b)))
    return out


async def _waiting(stores: list[Path]) -> dict[str, tuple[str, datetime | None]]:
    """The replay's processes that wait for an operator, by the pair keys their answers would
    have: ``<LFN>:TN:<IDE>`` of their trigger, ``<LFA>:MaLo:<MaLo>`` and ``<LFZ>:MaLo:<MaLo>``
    (the 55037 and 55038 an operator's decision sends); the value is the process id and the
    instant its trigger was received (what was sent before it answers something else). Reads
    every event of the stores (by type; the trigger's first event)."""
    from mako_actors.gpke.awaiting import OperatorQueue

    out: dict[str, tuple[str, datetime | None]] = {}
    for store_path in stores:
        queue = OperatorQueue()
        triggers: dict[str, dict[str, Any]] = {}
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
                position = events[-1].global_position
        for stream in queue.waiting:
            payload = triggers.get(stream)
            if payload is None:
                continue
            inbound = payload["inbound"]
            process = stream.rsplit("/", 1)[1]
            since = _instant(inbound.get("received_at"))
            out[f"{inbound.get('sender')}:TN:{inbound.get('ide_ref')}"] = (process, None)
            for party in (payload.get("lfa"), payload.get("lfz")):
                if party:
                    out[f"{party}:MaLo:{inbound.get('malo')}"] = (process, since)
    return out


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
