"""What a replay would send differently from what the operator actually sent (UTILMD answers).

``compare_outbound(sent_dir, stores)`` reads every interchange in ``sent_dir`` (the operator's
outbound archive) and the UTILMD messages waiting in the replay's outbox(es), and pairs them by
what they answer: an answer to a supplier (55002/55003, 55078/55080, 55005/55006, 55036) by its
recipient and ``RFF+TN`` (the request's IDE), a message to the old or a future supplier
(55010, 55037, 55038) by its recipient and MaLo. Per pair and PID:

- ``missing``: sent back then, the replay would not send it;
- ``extra``: the replay would send it, it was not sent;
- ``other code``: the same PID with another answer code (STS+E01);
- ``other Frist``: sent at a time more than ``tolerance`` away from the replay's decision.

CONTRL and APERAK are not compared (they follow the interchange, not the decision).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mako_actors.edifact import Interchange, try_parse_interchange
from stores.lmdb import LmdbStore

__all__ = ["Difference", "compare_outbound", "differences_csv"]

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

    kind: str  # missing | extra | other code | other Frist
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


def _from_archive(sent_dir: Path) -> list[_Sent]:
    out: list[_Sent] = []
    for path in sorted(sent_dir.iterdir()):
        if not path.is_file():
            continue
        parsed = try_parse_interchange(path.read_bytes(), source=path.name)
        if not isinstance(parsed, Interchange):
            continue
        for message in parsed.messages:
            if message.message_type != "UTILMD":
                continue
            at = message.document_date or parsed.prepared_at
            for tx in message.transactions:
                pid = tx.pid or message.pid or ""
                out.append(
                    _Sent(_key(pid, parsed.recipient.id, tx.malo, tx.request_ref), pid, tx.answer_code, at)
                )
    return out


async def _from_outbox(stores: list[Path]) -> list[_Sent]:
    out: list[_Sent] = []
    for store_path in stores:
        async with LmdbStore(store_path) as store:
            for message in await store.pending(10**9, _FAR):
                if message.message_type != "UTILMD":
                    continue
                payload: dict[str, Any] = message.payload
                at = datetime.fromisoformat(payload["document_date"])
                for tx in payload.get("transactions", ()):
                    pid = tx["pid"]
                    key = _key(pid, message.recipient, tx.get("malo"), tx.get("request_ref"))
                    out.append(_Sent(key, pid, tx.get("answer_code"), at, str(message.process_id)))
    return out


def _describe(sent: _Sent | None) -> str:
    return (
        "" if sent is None else f"{sent.pid} {sent.code or '-'} at {sent.at.astimezone(UTC):%Y-%m-%d %H:%M}Z"
    )


async def compare_outbound(
    sent_dir: Path, stores: list[Path], tolerance: timedelta = timedelta(hours=1)
) -> list[Difference]:
    """The differences between ``sent_dir`` and the replay stores' outboxes (see the module doc).

    Raises ``OSError`` when ``sent_dir`` cannot be read and ``StoreError`` for a bad store.
    """
    actual: dict[tuple[str, str], list[_Sent]] = {}
    for item in _from_archive(sent_dir):
        actual.setdefault((item.key, item.pid), []).append(item)
    replay: dict[tuple[str, str], list[_Sent]] = {}
    for item in await _from_outbox(stores):
        replay.setdefault((item.key, item.pid), []).append(item)
    out: list[Difference] = []
    for key, pid in sorted(set(actual) | set(replay)):
        sent, would = actual.get((key, pid), []), replay.get((key, pid), [])
        for index in range(max(len(sent), len(would))):
            a = sent[index] if index < len(sent) else None
            b = would[index] if index < len(would) else None
            process = b.process if b is not None else ""
            if b is None:
                kind = "missing"
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


def differences_csv(differences: list[Difference]) -> str:
    """The differences as CSV (``kind,key,pid,process,sent,replay``), for a notebook."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["kind", "key", "pid", "process", "sent", "replay"])
    writer.writeheader()
    for difference in differences:
        writer.writerow(difference.to_plain())
    return buffer.getvalue()
