"""Every file of the external sample corpus is parsed correctly or rejected for its known defect.

The corpus lives outside the repository (DOMAIN.md §6); it is read in place, never copied.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from edifact_support import SAMPLES, sample_files

from mako_actors.edifact import ControlCountMismatch, EdifactError, InvalidValue, try_parse_interchange

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="external sample corpus absent")

# Known defects (DOMAIN.md §6): files whose UNT count is wrong must be rejected with 0085 = 29.
UNT_WRONG = re.compile(
    r"(fv2510_utilmd_550(03|04|05|16|17|18)\.edi|mscons-message-example.*\.txt|v[34]_aperak.*)$"
)


def _expected_pid(name: str) -> str | None:
    m = re.search(r"(?:pid|beispiel|utilmd)_(\d{5})", name)
    return m.group(1) if m else None


# edifact_mapper's UNH placeholders: S010 0070 'X' is no sequence number (n..2), 0085 = 12.
PLACEHOLDER = b"+X+X:C'"


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.parent.name + "/" + p.name)
def test_sample_is_parsed_or_rejected_for_its_known_defect(path: Path) -> None:
    raw = path.read_bytes()
    result = try_parse_interchange(raw, source=path.name)
    if UNT_WRONG.search(path.name):
        assert isinstance(result, ControlCountMismatch), result
        assert result.segment_tag == "UNT" and result.syntax_error_code == "29"
        assert path.name in str(result) and result.segment_number is not None
        assert result.expected != result.found
        return
    if PLACEHOLDER in raw:
        assert isinstance(result, InvalidValue) and "S010" in str(result), result
        assert (result.segment_tag, result.syntax_error_code) == ("UNH", "12")
        result = try_parse_interchange(raw.replace(PLACEHOLDER, b"'"), source=path.name)  # the rest
    assert not isinstance(result, EdifactError), str(result)
    (message,) = result.messages
    kind = re.search(r"(utilmd|aperak|contrl|mscons)", path.name, re.IGNORECASE)
    assert message.message_type == (kind.group(1).upper() if kind else "UTILMD")
    assert result.sender.id and result.recipient.id and result.control_ref
    pid = _expected_pid(path.name)
    if message.message_type == "UTILMD" and pid is not None:
        # Some mako-edi-energy files carry the PID in BGM 1004 instead of RFF+Z13 (known defect).
        assert pid in (message.pid, (message.document_number or "").lstrip("0"))
    if path.parent.name == "edifact_mapper":
        assert result.control_ref == "GENERATED00001" and message.association_code
        if message.message_type == "UTILMD":
            assert message.pid == pid and len(message.transactions) == 1
    if path.parent.name == "TransformerBeeClient.py":
        assert (message.pid, message.association_code) == ("55001", "S1.1")
        assert result.delimiters.decimal == ","


def test_the_iso_8859_1_aperak_decodes_its_umlauts() -> None:
    path = SAMPLES / "mako-edi-energy" / "aperak_valid_beispiel_29001_verarbeitbarkeitsfehler.edi"
    if not path.is_file():
        pytest.skip("file not in corpus")
    ic = try_parse_interchange(path.read_bytes())
    assert not isinstance(ic, EdifactError)
    ftx = next(s for s in ic.messages[0].segments if s.tag == "FTX")
    assert "ü" in ftx.value(3)
