"""Synthetic, syntactically valid LFW24 UTILMD interchanges for tests, demos and benchmarks.

:func:`synthetic_utilmd` builds a 55001-style Anmeldung (or any PID) interchange with any number
of messages and transactions, chosen delimiters, charset and line breaks; with ``tricky=True``
the customer names contain every service character, umlauts and the release character so the
writer's escaping and the parser's unescaping are exercised. Deterministic per ``seed``. The
IDs are synthetic (MaLo-IDs carry a valid check digit); the content is not AHB-complete.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from mako_actors.edifact.outbound import UtilmdMessage, UtilmdTransaction, build_utilmd
from mako_actors.edifact.render import OutboundEnvelope, render_interchange

__all__ = ["malo_check_digit", "synthetic_malo", "synthetic_utilmd"]

_NAMES = ["Müller", "Schäfer", "Größe", "Özdemir", "Beispiel", "Weiß"]
_TRICKY = ["O'Brien", "A+B GmbH", "Meier: Süd", "Frage?", "Mix?+:'", "Ärger & Übel"]


def malo_check_digit(first10: str) -> str:
    """The check digit of a MaLo-ID from its first 10 digits (BDEW rule)."""
    odd = sum(int(c) for c in first10[0::2])
    even = sum(int(c) for c in first10[1::2]) * 2
    return str((10 - (odd + even) % 10) % 10)


def synthetic_malo(rng: random.Random) -> str:
    """A random 11-digit MaLo-ID with a valid check digit."""
    first = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(9))
    return first + malo_check_digit(first)


def synthetic_utilmd(
    *,
    messages: int = 1,
    transactions: int = 1,
    seed: int = 0,
    pid: str = "55001",
    sender_id: str = "9900000001001",
    recipient_id: str = "9900000002009",
    control_ref: str | None = None,
    prepared_at: datetime = datetime(2025, 6, 5, 12, 30, tzinfo=UTC),
    una: str = "UNA:+.? '",
    syntax_id: str = "UNOC",
    line_break: str = "",
    tricky: bool = False,
    with_una: bool = True,
) -> bytes:
    """A valid UTILMD interchange as bytes (UNT/UNZ counts and references correct).

    Each transaction carries IDE+24, DTM+92, STS+7++E03, LOC+Z16, RFF+Z13 and NAD+Z09. Raises
    ``InvalidArgument`` if a name cannot be encoded in ``syntax_id`` (use UNOC for umlauts).
    """
    rng = random.Random(seed)
    names = _TRICKY + _NAMES if tricky else _NAMES
    if syntax_id in ("UNOA", "UNOB"):
        names = [n.encode("ascii", "replace").decode("ascii").replace("?", "ae") for n in names]
    env = OutboundEnvelope(
        sender_id=sender_id,
        recipient_id=recipient_id,
        prepared_at=prepared_at,
        control_ref=control_ref or f"LFN{seed % 10**10:010d}",
        syntax_id=syntax_id,
        una=una,
        line_break=line_break,
    )
    start = datetime(2025, 6, 30, 22, 0, tzinfo=UTC)
    msgs = []
    for m in range(messages):
        txs = tuple(
            UtilmdTransaction(
                ide_ref=f"TX{seed}-{m}-{t}",
                pid=pid,
                malo=synthetic_malo(rng),
                start=start + timedelta(days=rng.randint(0, 60)),
                transaction_reason="E03",
                customer_name=(rng.choice(names), rng.choice(names)),
            )
            for t in range(transactions)
        )
        msgs.append(
            build_utilmd(
                UtilmdMessage(
                    reference=f"M{m + 1}",
                    document_number=f"DOC{seed}-{m + 1}",
                    document_date=prepared_at,
                    sender_id=sender_id,
                    recipient_id=recipient_id,
                    transactions=txs,
                )
            )
        )
    return render_interchange(env, msgs, with_una=with_una)
