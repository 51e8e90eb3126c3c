"""Identifier checks: MaLo-ID check digit, market partner ids (MP-ID), GS1 GLN.

Pure functions returning booleans or a list of findings, never raising on bad input: a bad id
in an inbound message becomes a negative APERAK or a rejecting answer, not an exception.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = [
    "MpIdCheck",
    "MpIdIssue",
    "check_mp_id",
    "gs1_check_digit",
    "is_valid_gln",
    "is_valid_malo_id",
    "malo_check_digit",
    "mp_id_issue",
    "mp_id_qualifiers",
]

_MALO = re.compile(r"^[1-9]\d{10}$")
_MP_ID = re.compile(r"^\d{13}$")


def malo_check_digit(first_ten: str) -> int:
    """The 11th digit of a MaLo-ID for its first ten digits (BDEW Anwendungshilfe MaLo-ID).

    ``a`` sums the odd positions, ``b`` doubles the *sum* of the even positions (not Luhn).
    ``first_ten`` must be ten digits; raises ``ValueError`` otherwise.
    """
    if len(first_ten) != 10 or not first_ten.isdigit():
        raise ValueError(f"malo_check_digit: expected ten digits, got {first_ten!r}")
    return _malo_rule(first_ten)


def _malo_rule(digits: str) -> int:
    a = sum(int(c) for c in digits[0::2])
    b = 2 * sum(int(c) for c in digits[1::2])
    return (10 - (a + b) % 10) % 10


def is_valid_malo_id(value: str) -> bool:
    """Whether ``value`` is 11 digits, first 1–9, with a correct check digit (always strict)."""
    return bool(_MALO.match(value)) and _malo_rule(value[:10]) == int(value[10])


def gs1_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit for ``body`` (all digits but the last)."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def is_valid_gln(value: str) -> bool:
    """Whether ``value`` is a 13-digit GS1 GLN with a correct mod-10 check digit."""
    return bool(_MP_ID.match(value)) and gs1_check_digit(value[:12]) == int(value[12])


class MpIdCheck(StrEnum):
    """How strictly to test MP-ID check digits; 13 digits are always required.

    ``warn`` reports a bad check digit as a warning only: many public test ids fail it, and the
    BDEW/DVGW rule is observed on real codes, not confirmed in BDEW's documentation †.
    """

    STRICT = "strict"
    WARN = "warn"
    OFF = "off"


class MpIdIssue(StrEnum):
    """What is wrong with a market partner id."""

    MALFORMED = "malformed"
    CHECK_DIGIT = "check_digit"


def mp_id_issue(value: str) -> MpIdIssue | None:
    """The problem with ``value`` as an MP-ID, or ``None`` when it is well-formed and checks.

    BDEW (99…) and DVGW (98…) codes use the MaLo rule over d1…d12 †; others are GS1 GLNs.
    """
    if not _MP_ID.match(value):
        return MpIdIssue.MALFORMED
    if value[:2] in ("99", "98"):
        ok = _malo_rule(value[:12]) == int(value[12])
    else:
        ok = gs1_check_digit(value[:12]) == int(value[12])
    return None if ok else MpIdIssue.CHECK_DIGIT


def check_mp_id(value: str, mode: MpIdCheck | str = MpIdCheck.STRICT) -> tuple[bool, str | None]:
    """``(acceptable, finding)`` for ``value`` under ``mode``.

    ``acceptable`` is False for a malformed id, and for a bad check digit under ``strict``;
    ``finding`` names the problem (also when it is only a warning), else ``None``.
    """
    mode = MpIdCheck(mode)
    issue = mp_id_issue(value)
    if issue is None:
        return True, None
    if issue is MpIdIssue.MALFORMED:
        return False, f"market partner id {value!r} is not 13 digits"
    if mode is MpIdCheck.OFF:
        return True, None
    finding = f"market partner id {value!r} fails its check digit"
    return mode is not MpIdCheck.STRICT, finding


def mp_id_qualifiers(value: str) -> tuple[str, str]:
    """``(UNB qualifier, NAD code list)`` for an MP-ID by its issuer prefix (DOMAIN §1)."""
    if value.startswith("99"):
        return "500", "293"
    if value.startswith("98"):
        return "502", "332"
    return "14", "9"
