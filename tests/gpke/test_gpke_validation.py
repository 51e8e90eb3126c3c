"""MaLo-ID, MP-ID and GLN checks (DOMAIN §1)."""

from __future__ import annotations

import pytest

from mako_actors.gpke.validation import (
    MpIdCheck,
    check_mp_id,
    is_valid_gln,
    is_valid_malo_id,
    malo_check_digit,
    mp_id_qualifiers,
)


def test_domain_malo_example() -> None:
    assert malo_check_digit("5190000001") == 2
    assert is_valid_malo_id("51900000012")


@pytest.mark.parametrize("malo", ["51900000013", "01900000012", "5190000001", "519000000123", "5190000001x"])
def test_bad_malo_ids_are_refused(malo: str) -> None:
    assert not is_valid_malo_id(malo)


def test_sample_corpus_malo_fails_its_check_digit() -> None:
    assert not is_valid_malo_id("78889918283")


def test_gln_gs1_mod10() -> None:
    assert is_valid_gln("4012345000009")
    assert not is_valid_gln("4012345000008")


@pytest.mark.parametrize("mode", list(MpIdCheck))
def test_mp_id_must_always_have_13_digits(mode: MpIdCheck) -> None:
    ok, finding = check_mp_id("990000000100", mode)
    assert not ok and finding is not None


def test_mp_id_check_digit_setting() -> None:
    assert check_mp_id("9900000001001", "strict") == (True, None)
    assert check_mp_id("9900000001002", "strict")[0] is False
    ok, finding = check_mp_id("9900000001002", "warn")
    assert ok and finding is not None
    assert check_mp_id("9900000001002", "off") == (True, None)
    assert check_mp_id("4012345000009", "strict") == (True, None)


def test_qualifiers_by_issuer() -> None:
    assert mp_id_qualifiers("9900000001001") == ("500", "293")
    assert mp_id_qualifiers("9800000001001") == ("502", "332")
    assert mp_id_qualifiers("4012345000009") == ("14", "9")


def test_synthetic_malo_ids_pass_the_strict_check() -> None:
    import random

    from mako_actors.gpke.synthetic import synthetic_malo

    rng = random.Random(7)
    assert all(is_valid_malo_id(synthetic_malo(rng)) for _ in range(500))
