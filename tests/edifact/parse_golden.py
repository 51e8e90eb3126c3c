"""Golden results of ``parse_interchange``: the corpus, the canonical form and the generator.

The golden file (``parse_golden.json``) holds, per input, a digest of what the parser of base
commit a159abf returned for it: every field of the Interchange, its messages, transactions and
segments, or the error class and its full message (file, segment number, expected/found,
0085). ``test_edifact_equivalence`` checks today's parser against it, so a faster parser must
give the same values and the same errors on every input.

Regenerate (only when a behaviour change is intended) with the parser that defines the truth::

    PYTHONPATH=/path/to/that/checkout python tests/edifact/parse_golden.py tests/edifact/parse_golden.json

Entries changed on purpose since: an invalid byte after a released terminator (``?'``) is
now counted in the right segment (the reference counted the released terminator); the
UnsupportedCharset message lists UNOA/UNOB/UNOC only (UNOD..UNOF are refused since); and an
input with a control character in its data (a mutation's NUL, CR or LF; not a line break after
a terminator) is refused with ``InvalidCharacter`` (0085 21) before it is split, since also one
with a C1 control (0x80-0x9F); and a UNH S010 whose 0070 is no number of at most 2 digits (a
generator's ``+X+X:C``) or whose 0073 is neither C nor F is refused with ``InvalidValue`` (0085
12); and a transaction's DTM+92/93 in another format than 303 in UTC (a 102 date) is no
instant (``Transaction.start``/``end`` None, named in ``malformed_dates``): only those entries
changed, and each other one still has the reference's result.

Fields added after the reference (``_LATER_FIELDS``) are left out of the canonical form: they
say more about the same input, and their own tests check them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from mako_actors.edifact import EdifactError, parse_interchange, synthetic_utilmd

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "edifact"
_KEY = 12


#: ``Transaction.malformed_dates`` (which DTM+92/93 was sent but malformed, for APERAK Z35):
#: tested in ``test_edifact_equivalence`` against the messages' ``problems``.
_LATER_FIELDS = frozenset({"malformed_dates", "repeated", "ide_qualifier", "malformed_header_dates"})


def canonical(value: Any) -> Any:
    """A JSON-able form of a parse result: dataclass fields by name, segments as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [type(value).__name__] + [
            [f.name, canonical(getattr(value, f.name))]
            for f in dataclasses.fields(value)
            if f.name not in _LATER_FIELDS
        ]
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def outcome(raw: bytes) -> str:
    """Digest of what ``parse_interchange`` makes of ``raw`` (a result or a typed error)."""
    try:
        result: Any = canonical(parse_interchange(raw, source="input.edi"))
    except EdifactError as err:
        result = ["error", type(err).__name__, str(err)]
    text = json.dumps(result, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY]


def key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:_KEY]


def edge_cases() -> list[bytes]:
    """Hand-made inputs around the receiver checks (PID placement, lengths, counts, UNA)."""
    base = synthetic_utilmd(messages=2, transactions=2)
    one = synthetic_utilmd()
    cases = [
        base,
        one,
        one.replace(b"RFF+Z13:55001", b"RFF+Z13"),
        one.replace(b"RFF+Z13:55001", b"RFF+Z13:"),
        one.replace(b"RFF+Z13:55001", b"RFF+Z13:'RFF+Z13:55002").replace(b"UNT+12", b"UNT+13"),
        one.replace(b"BGM+", b"RFF+Z13:55077'BGM+").replace(b"UNT+12", b"UNT+13"),
        one.replace(b"BGM+", b"RFF+Z13'BGM+").replace(b"UNT+12", b"UNT+13"),
        one.replace(b"IDE+24", b"RFF+Z13:55078'IDE+24").replace(b"UNT+12", b"UNT+13"),
        base.replace(b"RFF+Z13:55001", b"RFF+Z13", 1),
        base.replace(b"RFF+Z13:55001", b"RFF+TN:X", 2),
        base.replace(b"M2", b"M1"),
        one.replace(b"UNH+", b"UNH+" + b"1" * 14, 1),
        one.replace(b"UNH+", b"UNH+" + b"1" * 15, 1),
        one.replace(b"IDE+24+", b"IDE+24+" + b"X" * 36),
        one.replace(b"BGM+E01+", b"BGM+E01+" + b"X" * 36),
        one.replace(b"UTILMD:D:11A", b"UTILMDXX:D:11A"),
        one.replace(b"DTM+137:", b"DTM+137:1"),
        one.replace(b"DTM+92:", b"DTM+92:x"),
        one.replace(b"NAD+MS+", b"NAD+MS+1"),
        one.replace(b"::293", b"::9", 1),
        one.replace(b"IDE+24", b"IDE+24'IDE+24", 1),
        one.replace(b"STS+7++", b"STS+7+++++"),
        one.replace(b"STS+7++", b"STS+E01++A01:E_0401'STS+7++"),
        one.replace(b"UNA:+.? '", b"UNA:+.? '\r\n"),
        one.replace(b"'", b"'\n"),
        one.replace(b"'", b"'\r\n"),
        one[9:],
        one.replace(b"UNA:+.? '", b"UNA:+.?'"),
        one.replace(b"UNA:+.? '", b"UNA::.? '"),
        one.replace(b"UNOC", b"UNOX"),
        one.replace(b"UNOC", b"UNOA"),
        one + b"UNZ+1+X'",
        one[:-1],
        one[:-1] + b"?",
        one.replace(b"'", b"?'", 3),
        one.replace(b"'", b"??'", 3),
        one.replace(b"+", b"?x+", 5),
    ]
    for body in (synthetic_utilmd(tricky=True, messages=3, seed=s) for s in range(4)):
        cases.append(body)
    return cases


def synthetic_inputs() -> list[bytes]:
    out: list[bytes] = []
    for una in ("UNA:+.? '", "UNA|*.# ~", 'UNA;=.! "', "UNA:+,? '"):
        for line_break in ("", "\n", "\r\n"):
            for tricky in (False, True):
                out.append(synthetic_utilmd(una=una, line_break=line_break, tricky=tricky,
                                            messages=3, transactions=2, seed=len(out)))
    out.append(synthetic_utilmd(with_una=False, tricky=True))
    out.append(synthetic_utilmd(syntax_id="UNOA"))
    return out


_SPECIALS = list(b"UNAUNBUNHUNTUNZ:+.? '?\r\n\xfc0123456789|*#~;=!\"\x00")
_UNAS = [b"UNA:+.? '", b"UNA|*.# ~", b'UNA;=.! "', b"UNA:+.?  ", b"UNA::.? '", b"UNA:+.?'",
         b"UNA:+.\n '", b"UNA\xff+.? '"]


def mutations(bases: list[bytes], n: int, seed: int) -> Iterator[bytes]:
    """``n`` seeded mutations: truncation, byte flips, inserted release characters and
    separators, deletions, other UNA strings, release characters before a terminator or
    line break, added line breaks."""
    rnd = random.Random(seed)
    for _ in range(n):
        raw = bytearray(rnd.choice(bases))
        op = rnd.randrange(8)
        if op == 0:
            del raw[rnd.randrange(len(raw) + 1):]
        elif op == 1:
            for _ in range(rnd.randint(1, 4)):
                raw[rnd.randrange(len(raw))] = rnd.choice(_SPECIALS)
        elif op == 2:
            for _ in range(rnd.randint(1, 4)):
                raw.insert(rnd.randrange(len(raw) + 1), rnd.choice(b"??:+'\r\n"))
        elif op == 3:
            for _ in range(rnd.randint(1, 3)):
                del raw[rnd.randrange(len(raw))]
        elif op == 4:
            raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        elif op == 5:
            una = rnd.choice(_UNAS)
            if raw.startswith(b"UNA"):
                raw[:9] = una
            else:
                raw[:0] = una
        elif op == 6:
            i = rnd.randrange(len(raw) + 1)
            raw[i:i] = b"?" * rnd.randint(1, 3)
            raw[rnd.randrange(len(raw))] = rnd.choice(b"'\n\r")
        else:
            raw = raw.replace(b"'", b"'\r\n", rnd.randint(1, 20))
            if rnd.random() < 0.5:
                raw = raw.replace(b"?+", b"?'", 1)
        yield bytes(raw)


def archive_inputs() -> list[bytes]:
    """A generated archive with 10 % defects (every file), plus seeded mutations of it."""
    from mako_actors.archive import ArchiveSpec, generate_archive

    with tempfile.TemporaryDirectory() as tmp:
        generate_archive(Path(tmp), ArchiveSpec(days=2, processes=300, seed=11, defects=0.1))
        files = [p.read_bytes() for p in sorted(Path(tmp).glob("*.edi"))]
    return files + list(mutations(files, 800, seed=12))


def sample_inputs() -> list[bytes]:
    if not SAMPLES.is_dir():
        return []
    return [
        p.read_bytes()
        for p in sorted(SAMPLES.rglob("*"))
        if p.is_file() and p.suffix in (".edi", ".txt") and not p.name.upper().startswith("LICENSE")
    ]


def corpora() -> dict[str, list[bytes]]:
    own = edge_cases() + synthetic_inputs()
    samples = sample_inputs()
    return {
        "own": own + list(mutations(own, 1500, seed=7)),
        "archive": archive_inputs(),
        "samples": samples + (list(mutations(samples, 300, seed=9)) if samples else []),
    }


def main() -> None:
    golden = {name: {key(raw): outcome(raw) for raw in inputs} for name, inputs in corpora().items()}
    Path(sys.argv[1]).write_text(json.dumps(golden, indent=0, sort_keys=True) + "\n")
    print({name: len(v) for name, v in golden.items()})


if __name__ == "__main__":
    main()
