"""Segment order and presence of the messages we send, per message type and PID, as a table.

``check_structure(raw)`` parses a rendered interchange and returns what deviates from the table
(empty list = conformant): a required segment missing, a segment the PID does not carry, or one
out of order. The renderer uses the same table (``allowed_segments``, ``BGM_DOCUMENT_CODE``) to
leave out what a PID does not carry, so old stored payloads render conformant too. A key is the
segment tag plus its first qualifier (``DTM+92``, ``LOC+Z16``, ``STS+7``). Sources: AHB-FACTS
§1 (BGM), §2 (SG5/SG6), §3 (STS, SG4 dates), §5 (APERAK), §6 (CONTRL).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mako_actors.edifact._tokenizer import Segment
from mako_actors.edifact.interchange import Interchange, Message, parse_interchange

__all__ = [
    "BGM_DOCUMENT_CODE",
    "UTILMD_SG4",
    "UTILMD_SG8",
    "SegmentRule",
    "allowed_segments",
    "check_message",
    "check_structure",
    "segment_key",
]

# AHB-FACTS §1 (S1 FV2504, H; FV2510/FV2604 same AHB 2.1 line, M/H): E01 Anmeldungen for the
# Anmeldung family and 55036, E02 Abmeldungen for the Abmeldung/Beendigung family.
BGM_DOCUMENT_CODE: dict[str, str] = {
    **dict.fromkeys(("55001", "55002", "55003", "55077", "55078", "55080", "55036"), "E01"),
    **dict.fromkeys(
        ("55004", "55005", "55006", "55010", "55011", "55012", "55037", "55038"), "E02"
    ),
}


@dataclass(frozen=True, slots=True)
class SegmentRule:
    """One segment of a group: ``M`` must be there, ``C`` may (its condition is in ``note``)."""

    key: str
    presence: Literal["M", "C"]
    note: str = ""


def _r(key: str, presence: Literal["M", "C"] = "M", note: str = "") -> SegmentRule:
    return SegmentRule(key, presence, note)


_STS7_ANSWER = "Muss (S1 FV2504, e.g. 55002/55003 rows 75-76); #1 is the trigger's"

_PLANNED_PACKAGE = (
    "S1 FV2504 Muss: the Produktpaket the NB plans, one the Anmeldung asked for (an Anmeldung "
    "stored before packages were read names none)"
)

_MALO_OR_TRANCHE = "S1 FV2504 [348]/[347]: LOC+Z16, or LOC+Z21 for a Tranche; one of them is Muss"

# SG4 (IDE+24 group) per PID, in MIG order (IDE, DTM, STS, FTX, SG5 LOC, SG6 RFF, SG12 NAD).
# Only the segments our builders write; anything else is "not carried" for the check. The SG8
# groups follow in ``UTILMD_SG8``.
UTILMD_SG4: dict[str, tuple[SegmentRule, ...]] = {
    "55002": (
        _r("IDE+24"), _r("DTM+92"), _r("DTM+93", "C", "S1 FV2504 Muss [10] with STS+7 #3 (befristet)"),
        _r("STS+7", note=_STS7_ANSWER), _r("STS+E01"),
        _r("LOC+Z18", "C", "S1 FV2504 Muss [96] ∧ [688] with ZAP: the Kundenanlage's Netzlokationen"),
        _r("LOC+Z16", note="§2 Muss [2061]"),
        _r("LOC+Z22", "C", "S1 FV2504 Muss [2003] ∧ [96] with ZAP: the ruhende MaLo"),
        _r("LOC+Z17", "C", "S1 FV2504 Muss ([96] ⊻ [483]) with ZAP/ZW7: each Messlokation, from master data"),
        _r("RFF+Z13"), _r("RFF+TN", note="§2"), _r("RFF+Z60", "C", _PLANNED_PACKAGE),
    ),
    "55003": (
        _r("IDE+24"), _r("DTM+Z07", "C", "§3 Muss [358] if A06"),
        _r("DTM+Z08", "C", "§3 Muss [358] if A06"), _r("STS+7", note=_STS7_ANSWER),
        _r("STS+E01"), _r("STS+Z35", "C", "§3 Muss [356] if A50"),
        _r("FTX+ACB", "C", "S1 FV2504 Muss [23] if A05/A99"),
        _r("RFF+Z13"), _r("RFF+TN", note="§2"), _r("NAD+VY", "C", "S1 FV2504 Muss [363] if A50: the LFA"),
    ),  # §2: no SG5
    "55005": (
        _r("IDE+24"), _r("DTM+92", "C", "S1 FV2504 Muss [7] with ZG9/ZH1/ZH2: the cancelled start"),
        _r("DTM+93", "C", "S1 FV2504 Muss [11] unless ZG9/ZH1/ZH2"),
        _r("STS+7", note=_STS7_ANSWER), _r("STS+E01"),
        _r("RFF+Z13"), _r("RFF+TN", note="§2"),
    ),  # §2: no SG5
    "55006": (
        _r("IDE+24"), _r("STS+7", note=_STS7_ANSWER), _r("STS+E01"), _r("RFF+Z13"),
        _r("RFF+TN", note="§2"),
    ),  # §2: no SG5; §3: no SG4 date
    "55010": (
        _r("IDE+24"), _r("DTM+93", note="§3 Ende zum"),
        _r("DTM+154", note="§3 ÜT der Lieferanmeldung, format 102"),
        _r("STS+7", note="§3 E01|E03 + ZW3|ZW4|ZW5|ZAP"), _r("LOC+Z16", "C", "§2 Muss for ZW3/ZW4"),
        _r("LOC+Z22", "C", "§2 Muss for ZAP (ruhende MaLo)"),
        _r("LOC+Z21", "C", "S1 FV2504 Muss [481] for ZW5 (Tranche)"), _r("RFF+Z13"),
        _r("NAD+Z09", "C", "S1 FV2504: Muss [279] with ZW4/ZAP, the customer name of the 55001"),
        _r("NAD+VY", note="S1 FV2504: Muss [567], the LFN"),
    ),
    "55036": (
        _r("IDE+24"), _r("STS+7", note="§3 Z26"), _r("LOC+Z16", "C", _MALO_OR_TRANCHE),
        _r("LOC+Z21", "C", _MALO_OR_TRANCHE), _r("RFF+Z13"), _r("RFF+TN", note="§2 Muss in 55036"),
        _r("NAD+VY", note="S1 FV2504: Muss [518] [566], the LFA"),
    ),  # §3: no SG4 date
    "55037": (
        _r("IDE+24"), _r("DTM+93", note="§3 [474] with ZC8"),
        _r("STS+7", note="§3 ZC8|ZD9|ZG6 + ZW3|ZW4"), _r("LOC+Z16", "C", _MALO_OR_TRANCHE),
        _r("LOC+Z21", "C", _MALO_OR_TRANCHE), _r("RFF+Z13"),
    ),  # §2: no RFF+TN
    "55038": (
        _r("IDE+24"), _r("DTM+92", note="§3 Muss [507]"),
        _r("STS+7", note="§3 ZG5|ZG9|ZH0|ZH1 + ZW3|ZW4"), _r("LOC+Z16", "C", _MALO_OR_TRANCHE),
        _r("LOC+Z21", "C", _MALO_OR_TRANCHE), _r("RFF+Z13"),
        _r("NAD+VY", "C", "S1 FV2504: Muss [206] ∧ [579] unless ZG5: LFN for ZH0"),
    ),  # §2: no RFF+TN
    "55078": (
        _r("IDE+24"), _r("DTM+92"), _r("STS+7", note=_STS7_ANSWER), _r("STS+E01"),
        _r("LOC+Z16", note="§2 Muss [2061]"),
        _r("LOC+Z21", "C", "S1 FV2504 Muss [477] with ZW1 (GV2: the Tranche), [478] with ZW2"),
        _r("LOC+Z17", "C", "S1 FV2504 Muss [623]: each Messlokation, from master data"),
        _r("RFF+Z13"), _r("RFF+TN", note="§2"), _r("RFF+Z60", "C", _PLANNED_PACKAGE),
    ),
    "55080": (
        _r("IDE+24"), _r("DTM+Z07", "C", "§3 Muss [355] if A45"),
        _r("DTM+Z08", "C", "§3 Muss [355] if A45"), _r("STS+7", note=_STS7_ANSWER),
        _r("STS+E01"), _r("STS+Z35", "C", "§3 Muss [84] if A57"),
        _r("FTX+ACB", "C", "S1 FV2504 Muss [24] if A25/A99"),
        _r("RFF+Z13"), _r("RFF+TN", note="§2"), _r("NAD+VY", "C", "S1 FV2504 Muss [84] if A57: the LFA"),
        _r("RFF+Z18", "C", "S1 FV2504 Muss [84] if A57: the MaLo, in NAD+VY's SG12"),
        _r("RFF+Z20", "C", "S1 FV2504 Muss [84] if A57: the Tranche instead of the MaLo"),
    ),  # §2: no SG5 (the MaLo or Tranche travels in STS+Z35 DE9012)
}

# Segments of which one is Muss whatever the codes ("A|B": A or B).
_ONE_OF: dict[str, tuple[str, ...]] = dict.fromkeys(("55036", "55037", "55038"), ("LOC+Z16|LOC+Z21",))

# Conditional requirements (§3): answer code in STS+E01 → segments that become Muss ("A|B": A or B).
_REQUIRED_IF_ANSWER: dict[tuple[str, str], tuple[str, ...]] = {
    ("55003", "A06"): ("DTM+Z07", "DTM+Z08"),
    ("55003", "A50"): ("STS+Z35", "NAD+VY"),
    ("55080", "A45"): ("DTM+Z07", "DTM+Z08"),
    ("55080", "A57"): ("STS+Z35", "NAD+VY", "RFF+Z18|RFF+Z20"),
    ("55003", "A05"): ("FTX+ACB",),
    ("55003", "A99"): ("FTX+ACB",),
    ("55080", "A25"): ("FTX+ACB",),
    ("55080", "A99"): ("FTX+ACB",),
}
# Conditional requirements on STS+7 C556 #1 / #2 (S1 FV2504 55010 [279], 55038 [206]).
_REQUIRED_IF_REASON: dict[tuple[str, str], tuple[str, ...]] = {
    ("55010", "ZW3"): ("LOC+Z16",),
    ("55010", "ZW4"): ("LOC+Z16", "NAD+Z09"),
    ("55010", "ZAP"): ("LOC+Z22", "NAD+Z09"),
    ("55010", "ZW5"): ("LOC+Z21",),
    ("55002", "ZAP"): ("LOC+Z22",),
    ("55078", "ZW1"): ("LOC+Z21",),
    ("55078", "ZW2"): ("LOC+Z21",),  # [478]: the Tranche the NB formed (GV3)
    ("55038", "ZH0"): ("NAD+VY",),
    ("55038", "ZG9"): ("NAD+VY",),
    ("55038", "ZH1"): ("NAD+VY",),
    ("55005", "ZG9"): ("DTM+92",),
    ("55005", "ZH1"): ("DTM+92",),
    ("55005", "ZH2"): ("DTM+92",),
}

_MSB_FROM_MASTER_DATA = "S1 FV2504 Muss ([483] with ZW7 in 55002): the MSB, from the MaLo's master data"
# SG8 groups (each opened by its SEQ, in this order; a group may repeat where the AHB says "for
# each"), per PID, after the SG4/SG5/SG6 segments above. 55002: "Daten der Marktlokation" (Muss
# [2061]) with the MSB in SG10 (Muss [483] with ZW7), then one "Daten der Messlokation" per
# LOC+Z17 ([2284]) with its MSB and the gMSB; before them one "Daten der Netzlokation" per LOC+Z18
# ([294] ∧ [2356]) with its MSB. Not modelled: ZF1 (steuerbare Ressource, [205] with LOC+Z19),
# which we never name.
UTILMD_SG8: dict[str, dict[str, tuple[SegmentRule, ...]]] = {
    "55002": {
        "ZD7": (_r("SEQ+ZD7"), _r("RFF+Z32"), _r("CCI"), _r("CAV+Z91")),
        "Z98": (
            _r("SEQ+Z98"), _r("CCI", "C", _MSB_FROM_MASTER_DATA), _r("CAV+Z91", "C", _MSB_FROM_MASTER_DATA)
        ),
        "ZF3": (_r("SEQ+ZF3"), _r("RFF+Z19"), _r("CCI"), _r("CAV+Z91"), _r("CAV+ZF0")),
    },
}
# 55078: the same groups, and between them "Daten der Tranche" (Muss [477] for GV2: how the
# Tranche's size is formed, CCI+Z37 ZD1 percentage / ZD2 Aufteilungsfaktor, with the percentage
# in SG9 QTY+11, Muss [384] with ZD1); for GV3 ([478]) the Tranche the NB formed. ZD7/ZF1 are not
# modelled.
UTILMD_SG8["55078"] = {
    "Z98": UTILMD_SG8["55002"]["Z98"],
    "Z15": (_r("SEQ+Z15"), _r("QTY", "C", "S1 FV2504 55078 Muss [384] with CCI+Z37++ZD1"), _r("CCI")),
    "ZF3": UTILMD_SG8["55002"]["ZF3"],
}
# SG4/SG5 segments that may repeat, one after another (one LOC+Z17 per Messlokation, [623]).
_REPEATS: dict[str, frozenset[str]] = {
    "55002": frozenset({"LOC+Z17", "LOC+Z18"}), "55078": frozenset({"LOC+Z17"}),
}  # fmt: skip
# SG8 groups a PID must carry once ([2061]), and those that may repeat ([2284]).
_SG8_REQUIRED: dict[str, tuple[str, ...]] = {"55002": ("Z98",), "55078": ("Z98",)}
_SG8_REPEATS: frozenset[tuple[str, str]] = frozenset({("55002", "ZF3"), ("55078", "ZF3"), ("55002", "ZD7")})
# SG8 groups required by STS+7 C556 #2 (S1 FV2504 55078 [477]/[478]: a Tranche's data with
# GV2 and GV3).
_SG8_REQUIRED_IF_REASON: dict[tuple[str, str], tuple[str, ...]] = {
    ("55078", "ZW1"): ("Z15",),
    ("55078", "ZW2"): ("Z15",),
}

_UTILMD_HEADER = (_r("BGM"), _r("DTM+137"), _r("NAD+MS"), _r("NAD+MR"))
_APERAK_312 = (
    _r("BGM+312"), _r("DTM+137"), _r("RFF+ACE"), _r("DTM+171"), _r("RFF+AGO"),
    _r("RFF+TN", "C", "§5 Soll [16] for UTILMD"), _r("NAD+MS"), _r("NAD+MR"),
)
_APERAK_313 = (_r("BGM+313"), _r("DTM+137"), _r("RFF+ACE"), _r("DTM+171"), _r("NAD+MS"), _r("NAD+MR"))
_APERAK_ERROR = (
    _r("ERC"), _r("FTX+ABO"), _r("RFF+ACW"), _r("RFF+AGO"), _r("RFF+TN", "C"),
    _r("FTX+AAO"), _r("FTX+Z02", "C", "§5 [5] Muss with ERC+Z29"),
)


def segment_key(segment: Segment) -> str:
    """``TAG+qualifier`` (first component of the first element), or the bare tag."""
    q = segment.value(0) if segment.elements else ""
    if segment.tag in ("BGM", "DTM", "RFF", "LOC", "NAD", "STS", "FTX", "IDE", "SEQ", "CAV") and q:
        return f"{segment.tag}+{q}"
    return segment.tag


def allowed_segments(pid: str) -> frozenset[str] | None:
    """The SG4 segment keys ``pid`` carries in our messages (its SG8 groups' included); ``None``
    for a PID not in the table."""
    rules = UTILMD_SG4.get(pid)
    if rules is None:
        return None
    groups = UTILMD_SG8.get(pid, {})
    return frozenset(r.key for r in rules) | {r.key for group in groups.values() for r in group}


def _match(
    keys: Sequence[str], rules: Sequence[SegmentRule], where: str, repeats: frozenset[str] = frozenset()
) -> list[str]:
    """Deviations of ``keys`` from ``rules`` (each rule at most once but those in ``repeats``, in
    rule order)."""
    problems: list[str] = []
    position = {r.key: i for i, r in enumerate(rules)}
    seen: set[str] = set()
    last = -1
    for key in keys:
        i = position.get(key)
        if i is None:
            problems.append(f"{where}: {key} is not carried here")
            continue
        if key in seen and (key not in repeats or i != last):
            problems.append(f"{where}: {key} repeats")
        elif i < last:
            problems.append(f"{where}: {key} out of order (after {rules[last].key})")
        seen.add(key)
        last = max(last, i)
    problems.extend(
        f"{where}: required {r.key} missing" for r in rules if r.presence == "M" and r.key not in seen
    )
    return problems


def _utilmd(message: Message) -> list[str]:
    body = message.segments[1:-1]
    first_ide = next((i for i, s in enumerate(body) if s.tag == "IDE"), len(body))
    header = [segment_key(s) for s in body[:first_ide]]
    where = f"UTILMD {message.reference}"
    problems = _match([k if not k.startswith("BGM") else "BGM" for k in header], _UTILMD_HEADER, where)
    if not message.transactions:
        problems.append(f"{where}: no IDE+24 transaction")
    pids = {t.pid for t in message.transactions}
    for t in message.transactions:
        tx_where = f"{where} IDE {t.ide_ref} (PID {t.pid})"
        rules = UTILMD_SG4.get(t.pid or "")
        if rules is None:
            problems.append(f"{tx_where}: PID not in the structure table")
            continue
        first_seq = next((i for i, s in enumerate(t.segments) if s.tag == "SEQ"), len(t.segments))
        keys = [segment_key(s) for s in t.segments[:first_seq]]
        problems.extend(_match(keys, rules, tx_where, _REPEATS.get(t.pid or "", frozenset())))
        problems.extend(_groups(t.pid or "", t.segments[first_seq:], tx_where))
        problems.extend(f"{tx_where}: {k} required" for k in _missing(_ONE_OF.get(t.pid or "", ()), keys))
        for (pid, code), needed in _REQUIRED_IF_ANSWER.items():
            if t.pid == pid and t.answer_code == code:
                problems.extend(
                    f"{tx_where}: {k} required with answer {code} (AHB-FACTS §3)"
                    for k in _missing(needed, keys)
                )
        sts7 = next((s for s in t.segments if s.tag == "STS" and s.value(0) == "7"), None)
        reasons = {sts7.value(2), sts7.value(3)} if sts7 is not None else set()
        for (pid, reason), needed in _REQUIRED_IF_REASON.items():
            if t.pid == pid and reason in reasons:
                problems.extend(
                    f"{tx_where}: {k} required with STS+7 {reason} (S1 AHB)"
                    for k in _missing(needed, keys)
                )
        sequences = {s.value(0) for s in t.segments[first_seq:] if s.tag == "SEQ"}
        for (pid, reason), groups in _SG8_REQUIRED_IF_REASON.items():
            if t.pid == pid and reason in reasons:
                problems.extend(
                    f"{tx_where}: SG8 SEQ+{q} required with STS+7 {reason} (S1 AHB)"
                    for q in groups
                    if q not in sequences
                )
    if len(pids) == 1:
        (only,) = pids
        expected = BGM_DOCUMENT_CODE.get(only or "")
        if expected is not None and message.document_code != expected:
            problems.append(f"{where}: BGM {message.document_code} for PID {only}, expected {expected} (§1)")
    return problems


def _groups(pid: str, segments: Sequence[Segment], where: str) -> list[str]:
    """Deviations of a transaction's SG8 groups (from its first SEQ on) from ``UTILMD_SG8``."""
    table = UTILMD_SG8.get(pid, {})
    order = list(table)
    problems: list[str] = []
    seen: list[str] = []
    groups: list[list[Segment]] = []
    for segment in segments:
        if segment.tag == "SEQ":
            groups.append([])
        groups[-1].append(segment)
    for group in groups:
        qualifier = group[0].value(0)
        rules = table.get(qualifier)
        if rules is None:
            problems.append(f"{where}: SG8 SEQ+{qualifier} is not carried here")
            continue
        if qualifier in seen and (pid, qualifier) not in _SG8_REPEATS:
            problems.append(f"{where}: SG8 SEQ+{qualifier} repeats")
        elif seen and order.index(qualifier) < order.index(seen[-1]):
            problems.append(f"{where}: SG8 SEQ+{qualifier} out of order (after SEQ+{seen[-1]})")
        seen.append(qualifier)
        keys = [segment_key(s) for s in group]
        problems.extend(_match(keys, rules, f"{where} SG8 SEQ+{qualifier}"))
        # a Tranche sized by percentage names it ([384]: QTY+11 with CCI+Z37++ZD1)
        by_percent = any(s.tag == "CCI" and s.value(2) == "ZD1" for s in group)
        if qualifier == "Z15" and by_percent and "QTY" not in keys:
            problems.append(f"{where} SG8 SEQ+Z15: QTY+11 required with CCI+Z37++ZD1")
    problems.extend(
        f"{where}: required SG8 SEQ+{q} missing" for q in _SG8_REQUIRED.get(pid, ()) if q not in seen
    )
    return problems


def _missing(needed: Sequence[str], keys: Sequence[str]) -> list[str]:
    """The entries of ``needed`` none of whose ``|``-separated keys is in ``keys``."""
    return [k for k in needed if not any(alternative in keys for alternative in k.split("|"))]


def _aperak(message: Message) -> list[str]:
    body = message.segments[1:-1]
    where = f"APERAK {message.reference}"
    first_erc = next((i for i, s in enumerate(body) if s.tag == "ERC"), len(body))
    head = [segment_key(s) for s in body[:first_erc]]
    negative = message.document_code == "313"
    problems = _match(head, _APERAK_313 if negative else _APERAK_312, where)
    groups: list[list[Segment]] = []
    for s in body[first_erc:]:
        if s.tag == "ERC":
            groups.append([])
        groups[-1].append(s)
    if negative and not groups:
        problems.append(f"{where}: a 313 needs at least one ERC")
    if not negative and groups:
        problems.append(f"{where}: a 312 carries no ERC")
    for n, group in enumerate(groups, 1):
        keys = [segment_key(s) for s in group]
        problems.extend(_match(keys, _APERAK_ERROR, f"{where} error {n}"))
        if group[0].value(0) == "Z29" and "FTX+Z02" not in keys:
            problems.append(f"{where} error {n}: FTX+Z02 required with ERC+Z29 (§5 [5])")
    return problems


def _contrl(message: Message) -> list[str]:
    body = message.segments[1:-1]
    where = f"CONTRL {message.reference}"
    tags = [s.tag for s in body]
    problems: list[str] = []
    # UCI, then per message UCM [UCS [UCD...]...] (AHB-FACTS §6).
    shape = "".join({"UCI": "I", "UCM": "M", "UCS": "S", "UCD": "D"}.get(t, "?") for t in tags)
    if re.fullmatch(r"I(M(SD*)*)*", shape) is None:
        problems.append(f"{where}: expected UCI then UCM lines with their UCS/UCD, got {'/'.join(tags)}")
        return problems
    uci = body[0]
    if uci.value(3) not in ("4", "7"):
        problems.append(f"{where}: UCI 0083 {uci.value(3)!r} is neither 4 nor 7 (§6)")
    ucms = [s for s in body[1:] if s.tag == "UCM"]
    if any(s.value(2) == "4" for s in ucms) and uci.value(3) != "4":
        problems.append(f"{where}: a rejected message (UCM 4) needs UCI 0083 = 4 (§6)")
    for s in ucms:
        if s.value(2) == "4" and s.value(3) and s.value(4) not in ("UNH", "UNT", ""):
            problems.append(f"{where}: UCM 0013 {s.value(4)!r} is neither UNH nor UNT (§6)")
    for k, t in enumerate(tags):
        if t == "UCS" and (k + 1 >= len(tags) or tags[k + 1] != "UCD") and not body[k].value(1):
            problems.append(f"{where}: UCS+{body[k].value(0)} names neither a 0085 nor a UCD (§6)")
    return problems


def check_message(message: Message) -> list[str]:
    """Deviations of one parsed message from the table (empty = conformant)."""
    if message.message_type == "UTILMD":
        return _utilmd(message)
    if message.message_type == "APERAK":
        return _aperak(message)
    if message.message_type == "CONTRL":
        return _contrl(message)
    return [f"{message.message_type} {message.reference}: no structure table for this type"]


def check_structure(raw: bytes | Interchange) -> list[str]:
    """Deviations of a rendered interchange from the table, one line each (empty = conformant).

    Raises ``EdifactError`` when ``raw`` does not even parse.
    """
    interchange = raw if isinstance(raw, Interchange) else parse_interchange(raw)
    problems: list[str] = []
    for message in interchange.messages:
        problems.extend(check_message(message))
    return problems
