"""Identifier checks (MaLo-ID, MP-ID, GLN) and the per-PID AHB rules of UTILMD Strom.

Pure functions returning booleans or a list of findings, never raising on bad input: a bad id
in an inbound message becomes a negative APERAK or a rejecting answer, not an exception.

``AHB_RULES`` holds, per Prüfidentifikator, what the UTILMD AHB Strom 2.1 (FV2504/FV2510/FV2604)
requires of one transaction; ``check_transaction`` checks a message against the rules of *its
own* PID, never against a trigger's (an answer such as 55011 has no SG5 since FV2504).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

__all__ = [
    "AHB_RULES",
    "AUFHEBUNG_REASONS",
    "E_0624_CLUSTERS",
    "OBJECT_LOCATIONS",
    "AhbFinding",
    "AhbRule",
    "MpIdCheck",
    "MpIdIssue",
    "abmeldung_date",
    "check_mp_id",
    "check_transaction",
    "eic_check_char",
    "fixed_term_end",
    "gs1_check_digit",
    "is_tranche",
    "is_valid_eic",
    "is_valid_gln",
    "is_valid_malo_id",
    "lfa_objects",
    "malo_check_digit",
    "mp_id_issue",
    "mp_id_qualifiers",
    "object_location",
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
    a = sum(map(int, digits[0::2]))
    b = 2 * sum(map(int, digits[1::2]))
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


_EIC = re.compile(r"^[0-9A-Z-]{16}$")
_EIC_VALUES = {c: i for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-")}


def eic_check_char(first_fifteen: str) -> str:
    """The 16th character of an EIC (Energy Identification Code, e.g. a Bilanzkreis) for its first
    fifteen: weights 16…2, values 0-9, A-Z 10-35, ``-`` 36, check ``36 - (sum - 1) mod 37`` (ENTSO-E
    EIC reference manual). Raises ``ValueError`` unless fifteen characters of ``0-9 A-Z -``."""
    if len(first_fifteen) != 15 or any(c not in _EIC_VALUES for c in first_fifteen):
        raise ValueError(f"eic_check_char: expected fifteen of 0-9, A-Z or '-', got {first_fifteen!r}")
    total = sum(_EIC_VALUES[c] * (16 - i) for i, c in enumerate(first_fifteen))
    return "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"[36 - (total - 1) % 37]


def is_valid_eic(value: str) -> bool:
    """Whether ``value`` is 16 characters of ``0-9 A-Z -`` with a correct check character."""
    return bool(_EIC.match(value)) and eic_check_char(value[:15]) == value[15]


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


@functools.lru_cache(maxsize=4096)
def check_mp_id(value: str, mode: MpIdCheck | str = MpIdCheck.STRICT) -> tuple[bool, str | None]:
    """``(acceptable, finding)`` for ``value`` under ``mode`` (cached: a pure function, asked
    twice per inbound message for the same few market partners).

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


# -- per-PID AHB rules (../shared/spec/AHB-FACTS.md §2–§4) ---------------------------------------

Cluster = Literal["Zustimmung", "Ablehnung"]


@dataclass(frozen=True, slots=True)
class AhbRule:
    """What the AHB requires of one PID's transaction (SG4 and its SG5/SG6).

    ``bgm``: the BGM document code of the PID (§1). ``malo``: SG5 ``LOC+Z16`` is Muss
    (``"required"``) or the PID has no SG5 at all (``"absent"``; AHB-FACTS §2).
    ``request_ref``: SG6 ``RFF+TN`` is Muss (§2, last paragraph). ``dates``: SG4 ``DTM``
    qualifiers that are Muss (§3). ``reasons``: allowed ``STS+7``
    Transaktionsgrund codes (C556#1; empty: no STS+7 check). ``details``: the C556#2 codes
    (Geschäftsvorfall / kind of location), one of which is Muss where the decision depends on it
    (a 55077's GV, a 55004's E_0607 step 10; empty: not checked). ``answer_ebd``/``answer_cluster``:
    the ``STS+E01`` answer is Muss with a code of that EBD from that cluster (§3, §4).
    ``dates_by_reason``: the Muss dates instead of ``dates`` for a Transaktionsgrund (a 55004
    that cancels a future assignment carries DTM+92, not DTM+93). ``fixed_term_reasons``: the
    STS+7 #3 codes of a befristete Anmeldung, which makes DTM+93 Muss (55001 [10]; empty: a #3
    is not the PID's and is ignored with a warning). ``customer``: SG12 ``NAD+Z09`` (Kunde des
    Lieferanten) with a name is Muss (55001; the 55010 repeats it, S1 55010 [279]).
    ``packages``: SG8 ``SEQ+Z79`` (Bestandteil eines Produktpakets) is Muss (55001, 55077);
    ``packages_for``: only with one of these C556#2 codes (55001: Muss [480], "Wenn SG4
    STS+7++xxx+ZW4 vorhanden", S1 FV2504 55001.csv: not for a ruhende MaLo's ZAP); None: always.
    """

    pid: str
    malo: Literal["required", "absent"]
    bgm: str = "E01"  # BGM 1001 (AHB-FACTS §1)
    request_ref: bool = False
    dates: tuple[str, ...] = ()
    reasons: frozenset[str] = frozenset()
    details: frozenset[str] = frozenset()
    answer_ebd: str | None = None
    answer_cluster: Cluster | None = None
    dates_by_reason: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fixed_term_reasons: frozenset[str] = frozenset()
    customer: bool = False
    packages: bool = False
    packages_for: frozenset[str] | None = None


#: E_0624 (LFA: Anfrage zur Beendigung der Zuordnung prüfen) codes by cluster, AHB-FACTS §4 (S3,
#: EBD 4.1; same code sets in FV2604/FV2610).
E_0624_CLUSTERS: Mapping[str, Cluster] = {
    "A43": "Ablehnung",  # Fristüberschreitung (step 5, checked first by the LFA)
    "A30": "Ablehnung",  # supply already ended, Abmeldung confirmed (verbr.): no objection for the NB
    "A41": "Ablehnung",  # the same for a generating MaLo
    "A32": "Ablehnung",
    "A33": "Ablehnung",
    "A35": "Ablehnung",
    "A39": "Ablehnung",
    "A31": "Zustimmung",
    "A42": "Zustimmung",
    "A34": "Zustimmung",
    "A38": "Zustimmung",
    "A36": "Zustimmung",
    "A40": "Zustimmung",
}

_ANMELDUNG_REASONS = frozenset({"E01", "E03"})
# 55004 STS+7 #1 (§3); ZZD is in FV2510's code list but valid from 01.04.2026 00:00 (Berlin) only.
_ABMELDUNG_REASONS = frozenset({"E01", "Z33", "Z41", "ZG9", "ZH1", "ZH2", "ZT4", "ZT5", "ZZD"})
_ZZD_FROM = datetime(2026, 3, 31, 22, 0, tzinfo=UTC)
#: 55004 STS+7 #1 "Aufhebung einer zukünftigen Zuordnung" wegen Auszug des Kunden (ZG9), wegen
#: Stilllegung (ZH1), wegen aufgehobenem Vertragsverhältnis (ZH2): the LF cancels an assignment
#: that has not begun. Such a 55004 (and its 55005) carries DTM+92, the start the NB confirmed,
#: and no DTM+93 (AHB UTILMD 55004/55005 FV2504 [7], [11], [577]).
AUFHEBUNG_REASONS = frozenset({"ZG9", "ZH1", "ZH2"})
_AUFHEBUNG_DATES = dict.fromkeys(AUFHEBUNG_REASONS, ("92",))


#: (PID, STS+7 #2) → the LOC naming the object of a transaction, where that is not LOC+Z16
#: (S1 FV2504): a ruhende MaLo LOC+Z22 (55001/55004 ZAP, [96]), a Tranche LOC+Z21 (55077 ZW1
#: [477], 55004 ZW5 [481]).
OBJECT_LOCATIONS: Mapping[tuple[str, str], str] = {
    ("55001", "ZAP"): "Z22",
    ("55004", "ZAP"): "Z22",
    ("55077", "ZW1"): "Z21",
    ("55004", "ZW5"): "Z21",
}
#: How a finding names a missing object, by its LOC qualifier.
_OBJECT_NAMES = {
    "Z16": "MaLo-ID (SG5 LOC+Z16)",
    "Z21": "Tranche-ID (SG5 LOC+Z21)",
    "Z22": "ID der ruhenden MaLo (SG5 LOC+Z22)",
}


def object_location(pid: str, transaction_detail: str | None) -> str:
    """The LOC qualifier naming what a trigger is for: ``Z22`` a ruhende MaLo (a 55001/55004 with
    STS+7 #2 ZAP), ``Z21`` a Tranche (a 55077 of GV2, ZW1; a 55004 with ZW5), else ``Z16``."""
    return OBJECT_LOCATIONS.get((pid, transaction_detail or ""), "Z16")


def is_tranche(pid: str, transaction_detail: str | None) -> bool:
    """Whether an Anmeldung is for a Tranche: a 55077 of Geschäftsvorfall 2 (STS+7 #2 ZW1), whose
    object is then named by LOC+Z21, not LOC+Z16 (S1 FV2504 55077 [476]/[477])."""
    return pid == "55077" and transaction_detail == "ZW1"


def abmeldung_date(
    transaction_reason: str | None, zuordnungsbeginn: datetime | None, zuordnungsende: datetime | None
) -> datetime | None:
    """The instant a 55004 ends its sender's supply at: DTM+93, or for an Aufhebung einer
    zukünftigen Zuordnung (``AUFHEBUNG_REASONS``) DTM+92, the start it cancels (it never begins)."""
    return zuordnungsbeginn if transaction_reason in AUFHEBUNG_REASONS else zuordnungsende


def fixed_term_end(
    pid: str, fixed_term_reason: str | None, zuordnungsende: datetime | None
) -> datetime | None:
    """Where the supply an Anmeldung asks for ends: its DTM+93 when it is befristet (an STS+7 #3
    of its PID's ``AhbRule.fixed_term_reasons``), else ``None`` (open-ended; a DTM+93 is ignored)."""
    rule = AHB_RULES.get(pid)
    return zuordnungsende if rule is not None and fixed_term_reason in rule.fixed_term_reasons else None


#: The rules per PID: what we receive (55001, 55077, 55004, 55011, 55012) and what we send.
AHB_RULES: Mapping[str, AhbRule] = {
    rule.pid: rule
    for rule in (
        AhbRule("55001", "required", dates=("92",), reasons=_ANMELDUNG_REASONS,
                fixed_term_reasons=_ANMELDUNG_REASONS, customer=True, packages=True,
                # AHB-FACTS §3: #2 ZW4|ZAP, one of them Muss (S1 FV2504 55001.csv rows 80/83 "X")
                packages_for=frozenset({"ZW4"}), details=frozenset({"ZW4", "ZAP"})),
        AhbRule("55077", "required", dates=("92",), reasons=frozenset({"E03"}),
                details=frozenset({"ZW0", "ZW1", "ZW2"}), packages=True),
        AhbRule("55004", "required", "E02", dates=("93",), reasons=_ABMELDUNG_REASONS,
                details=frozenset({"ZW3", "ZW4", "ZW5", "ZAP"}), dates_by_reason=_AUFHEBUNG_DATES),
        # STS+7 (#1 E01|E03) is Muss in 55011/55012 (S2 schema C601.9015=7 Muss; S1 FV2504
        # 55011.csv rows 57-58)
        AhbRule("55011", "absent", "E02", request_ref=True, dates=("93",), answer_ebd="E_0624",
                answer_cluster="Zustimmung", reasons=frozenset({"E01", "E03"})),
        AhbRule("55012", "absent", "E02", request_ref=True, answer_ebd="E_0624", answer_cluster="Ablehnung",
                reasons=frozenset({"E01", "E03"})),
        AhbRule("55002", "required", request_ref=True, answer_ebd="E_0623", answer_cluster="Zustimmung"),
        AhbRule("55078", "required", request_ref=True, answer_ebd="E_0623", answer_cluster="Zustimmung"),
        AhbRule("55003", "absent", request_ref=True),
        AhbRule("55080", "absent", request_ref=True),
        AhbRule("55005", "absent", "E02", request_ref=True, answer_ebd="E_0607", answer_cluster="Zustimmung"),
        AhbRule("55006", "absent", "E02", request_ref=True, answer_ebd="E_0607", answer_cluster="Ablehnung"),
        AhbRule("55010", "required", "E02", dates=("93",)),
        AhbRule("55036", "required", request_ref=True),
        AhbRule("55037", "required", "E02", dates=("93",)),
        AhbRule("55038", "required", "E02", dates=("92",)),
    )
}


class AhbFinding(StrEnum):
    """What kind of AHB violation a finding is (the workflow maps it to an APERAK ERC code)."""

    MISSING = "missing"  # a Muss field is absent (ERC Z29)
    CODE_NOT_ALLOWED = "code_not_allowed"  # a code outside the allowed set (ERC Z39)
    FORMAT = "format"  # a Muss field sent in a shape its format does not allow (ERC Z35)


def check_transaction(
    pid: str,
    *,
    malo: str | None,
    request_ref: str | None,
    dates: Mapping[str, datetime | None],
    transaction_reason: str | None = None,
    answer_code: str | None = None,
    answer_ebd: str | None = None,
    document_code: str | None = None,
    received_at: datetime | None = None,
    transaction_detail: str | None = None,
    malformed_dates: Mapping[str, str] | None = None,
    fixed_term_reason: str | None = None,
    customer: bool | None = None,
    location: str = "Z16",
    packages: bool | None = None,
) -> tuple[list[tuple[AhbFinding, str]], list[str]]:
    """``(errors, warnings)`` of one transaction against the AHB rule of its own ``pid``.

    A segment the PID does not have (``LOC+Z16`` in a 55011 since FV2504) and a BGM code other
    than the PID's (§1) are warnings, not errors: they change nothing the message means. An
    unknown PID has no rule and yields nothing (the router decides about it). ``received_at``
    decides codes valid only from a date on (55004's ZZD); without it they are not checked.
    ``malformed_dates`` (qualifier → ``"value:format"`` as sent) tells a required date that was
    sent in a wrong shape (``FORMAT``) from one that is absent (``MISSING``).
    ``fixed_term_reason``: STS+7 #3 (befristete Anmeldung), see ``AhbRule.fixed_term_reasons``.
    ``customer``: whether NAD+Z09 names the customer (``None``: not checked). ``location``: the
    LOC qualifier the object's ID is Muss under (``object_location``). ``packages``: whether the
    transaction names a Produktpaket (SG8 SEQ+Z79; ``None``: not checked).
    """
    rule = AHB_RULES.get(pid)
    errors: list[tuple[AhbFinding, str]] = []
    warnings: list[str] = []
    if rule is None:
        return errors, warnings
    if rule.malo == "required" and not malo:
        what = _OBJECT_NAMES.get(location, _OBJECT_NAMES["Z16"])
        errors.append((AhbFinding.MISSING, f"PID {pid}: {what} missing"))
    elif rule.malo == "absent" and malo:
        warnings.append(f"PID {pid} has no SG5 since FV2504 (AHB-FACTS §2); LOC+Z16 {malo} ignored")
    if document_code is not None and document_code != rule.bgm:
        warnings.append(f"PID {pid}: BGM {document_code}, the AHB has {rule.bgm} (AHB-FACTS §1)")
    if rule.request_ref and not request_ref:
        errors.append((AhbFinding.MISSING, f"PID {pid}: RFF+TN (reference of the request) missing"))
    if rule.customer and customer is False:
        errors.append((AhbFinding.MISSING, f"PID {pid}: NAD+Z09 (Kunde des Lieferanten) missing"))
    if rule.packages and packages is False and (
        rule.packages_for is None or transaction_detail in rule.packages_for
    ):
        text = f"PID {pid}: SG8 SEQ+Z79 (Bestandteil eines Produktpakets) missing"
        errors.append((AhbFinding.MISSING, text))
    required = rule.dates_by_reason.get(transaction_reason or "", rule.dates)
    if fixed_term_reason and rule.fixed_term_reasons:
        if fixed_term_reason in rule.fixed_term_reasons:
            required = (*required, "93")  # the end of a befristete Anmeldung (55001 [10])
        else:
            errors.append((
                AhbFinding.CODE_NOT_ALLOWED,
                f"PID {pid}: STS+7 #3 (befristete Anmeldung) {fixed_term_reason} not in "
                f"{sorted(rule.fixed_term_reasons)}",
            ))
    elif fixed_term_reason:
        warnings.append(f"PID {pid} has no STS+7 #3 (befristete Anmeldung); {fixed_term_reason} ignored")
    elif rule.fixed_term_reasons and dates.get("93") is not None:
        warnings.append(f"PID {pid}: DTM+93 without STS+7 #3 (befristete Anmeldung); ignored")
    for qualifier in rule.dates:
        if qualifier not in required and dates.get(qualifier) is not None:
            warnings.append(f"PID {pid}: DTM+{qualifier} has no use with STS+7 {transaction_reason}; ignored")
    for qualifier in required:
        if dates.get(qualifier) is None:
            sent = malformed_dates.get(qualifier) if malformed_dates else None
            if sent is not None:
                text = f"PID {pid}: DTM+{qualifier}:{sent} is not format 303 in UTC (CCYYMMDDHHMM?+00:303)"
                errors.append((AhbFinding.FORMAT, text))
            else:
                errors.append((AhbFinding.MISSING, f"PID {pid}: DTM+{qualifier} missing"))
    if rule.reasons:
        if not transaction_reason:
            errors.append((AhbFinding.MISSING, f"PID {pid}: STS+7 Transaktionsgrund missing"))
        elif transaction_reason not in rule.reasons:
            errors.append((
                AhbFinding.CODE_NOT_ALLOWED,
                f"PID {pid}: Transaktionsgrund {transaction_reason} not in {sorted(rule.reasons)}",
            ))
        elif transaction_reason == "ZZD" and received_at is not None and received_at < _ZZD_FROM:
            errors.append((
                AhbFinding.CODE_NOT_ALLOWED,
                f"PID {pid}: Transaktionsgrund ZZD is valid from 2026-04-01 only (AHB-FACTS §3)",
            ))
    if rule.details:
        if not transaction_detail:
            codes = "|".join(sorted(rule.details))
            errors.append((AhbFinding.MISSING, f"PID {pid}: STS+7 C556#2 ({codes}) missing"))
        elif transaction_detail not in rule.details:
            errors.append((
                AhbFinding.CODE_NOT_ALLOWED,
                f"PID {pid}: STS+7 C556#2 {transaction_detail} not in {sorted(rule.details)}",
            ))
    if rule.answer_ebd is not None:
        if not answer_code:
            text = f"PID {pid}: STS+E01 answer code of {rule.answer_ebd} missing"
            errors.append((AhbFinding.MISSING, text))
        elif not answer_ebd:  # (C556 DE1131 'X' [E_0624]: a code means something only in its EBD)
            text = f"PID {pid}: STS+E01 answer code {answer_code} without its EBD ({rule.answer_ebd})"
            errors.append((AhbFinding.MISSING, text))
        elif answer_ebd != rule.answer_ebd:
            errors.append((
                AhbFinding.CODE_NOT_ALLOWED,
                f"PID {pid}: answer code {answer_code} names EBD {answer_ebd}, expected {rule.answer_ebd}",
            ))
        elif rule.answer_ebd == "E_0624" and E_0624_CLUSTERS.get(answer_code) != rule.answer_cluster:
            errors.append((
                AhbFinding.CODE_NOT_ALLOWED,
                f"PID {pid}: {answer_code} is not an E_0624 code of the cluster {rule.answer_cluster}",
            ))
    return errors, warnings


def lfa_objects(answer_code: str | None, *, generating: bool, new_tranche: bool = False) -> bool:
    """Whether an LFA's E_0624 ``Ablehnung`` code counts as an objection for E_0623 (§4).

    A43 (Fristüberschreitung) is looked at first and always stands. A30 (consuming) and A41
    (generating): the supply already ended by a confirmed Abmeldung, so E_0623 treats it as
    no objection (steps 50 / 440). Every other Ablehnung code is an objection, and every one
    in a Geschäftsvorfall 3 (``new_tranche``: step 510 asks for an agreement, A41 is none).
    """
    if answer_code == "A43" or new_tranche:
        return True
    return answer_code != ("A41" if generating else "A30")
