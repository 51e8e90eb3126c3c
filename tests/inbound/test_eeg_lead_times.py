"""End to end on LMDB: an EEG/KWKG MaLo's lead times come from the NB's master data (E_0622
steps 405-440, 605-630, 805-810; machine-readable trees FV2504-FV2610): a 55077 for the middle of
a month gets 55080 A27, one less than a month ahead A28, and leaving the Ausfallvergütung takes 5
Werktage. The same Anmeldungen of a MaLo not marked EEG/KWKG are taken as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mako_actors.errors import InvalidArgument
from mako_actors.inbound import Suppliers
from mako_actors.replay import load_master_data
from stores.lmdb import LmdbStore
from tests.inbound.edi import (
    LFA,
    LFN,
    MALO,
    START,
    TRANCHE_OF,
    anmeldung,
    decide,
    dtm,
    kind,
    outbox,
    store,
    tx,
)

__all__ = ["store"]

MID_DECEMBER = dtm("92", START).replace("2025113023", "2025121423").encode()  # 15 December, 00:00 CET


async def decide_for(
    store: LmdbStore, raw: bytes, malo: Suppliers, **more: Suppliers
) -> list[tuple[str, str | None]]:
    """``decide`` (received Thursday 13 November) with ``malo`` as the MaLo's master data."""
    return await decide(store, raw, **{MALO: malo}, **more)


def gv1(start: bytes | None = None) -> bytes:
    raw = anmeldung(pid="55077", gv="ZW0", customer=None)
    return raw if start is None else raw.replace(dtm("92", START).encode(), start)


async def test_an_eeg_malo_starts_on_the_first_of_a_month(store: LmdbStore) -> None:
    eeg = Suppliers(current=LFA, eeg_kwkg=True)
    assert await decide_for(store, gv1(MID_DECEMBER), eeg) == [("55080", "A27")]
    [answer] = [tx(m) for m in await outbox(store) if kind(m) == "55080"]
    assert answer["answer_ebd"] == "E_0622"


async def test_an_eeg_malo_needs_a_month_of_lead_time(store: LmdbStore) -> None:
    """1 December needs the Anmeldung by 1 November; 13 November is too late."""
    assert await decide_for(store, gv1(), Suppliers(current=LFA, eeg_kwkg=True)) == [("55080", "A28")]


async def test_leaving_the_ausfallverguetung_takes_5_werktage(store: LmdbStore) -> None:
    leaving = Suppliers(current=LFA, eeg_kwkg=True, ausfallverguetung=True)
    assert await decide_for(store, gv1(), leaving) == [("55036", None), ("55010", None)]


@pytest.mark.parametrize("eeg", [False, None])
async def test_a_malo_not_marked_eeg_keeps_the_short_lead_time(store: LmdbStore, eeg: bool | None) -> None:
    assert await decide_for(store, gv1(MID_DECEMBER), Suppliers(current=LFA, eeg_kwkg=eeg)) == [
        ("55036", None), ("55010", None)
    ]  # fmt: skip


@pytest.mark.parametrize(("tranche", "of_malo", "answer"), [
    (None, True, [("55080", "A31")]),  # a Tranche's entry without the flag takes its MaLo's word
    (False, True, [("55036", None), ("55010", None)]),  # its own word counts first
    (True, None, [("55080", "A31")]),
])  # fmt: skip
async def test_a_tranche_of_an_eeg_malo_starts_on_the_first_of_a_month(
    store: LmdbStore, tranche: bool | None, of_malo: bool | None, answer: list[tuple[str, str | None]]
) -> None:
    """Geschäftsvorfall 2 (a Tranche, LOC+Z21 = MALO, of TRANCHE_OF) for 15 December: E_0622 620."""
    raw = anmeldung(pid="55077", gv="ZW1").replace(dtm("92", START).encode(), MID_DECEMBER)
    entry = Suppliers(current=LFA, tranche_of=TRANCHE_OF, tranche_percent="50", eeg_kwkg=tranche)
    assert await decide_for(store, raw, entry, **{TRANCHE_OF: Suppliers(eeg_kwkg=of_malo)}) == answer


def test_master_data_read_the_eeg_flags_and_refuse_ausfallverguetung_without_eeg(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    path.write_text(json.dumps({MALO: {"eeg_kwkg": True, "ausfallverguetung": True}}))
    read = load_master_data(path).suppliers(LFN, MALO, START)
    assert (read.eeg_kwkg, read.ausfallverguetung) == (True, True)
    path.write_text(json.dumps({MALO: {"ausfallverguetung": True}}))
    with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: 'ausfallverguetung' .* needs 'eeg_kwkg': true"):
        load_master_data(path)
    path.write_text(json.dumps({MALO: {"eeg_kwkg": "yes"}}))
    with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: field 'eeg_kwkg' is 'yes'"):
        load_master_data(path)


def test_a_misspelt_field_is_refused_not_ignored(tmp_path: Path) -> None:
    """A flag nobody reads would switch its check off without a word: refused, with a hint."""
    path = tmp_path / "master.json"
    path.write_text(json.dumps({MALO: {"current": LFA, "eeg_kwk": True}}))
    hint = f"MaLo {MALO}: unknown field.*'eeg_kwk' .*did you mean 'eeg_kwkg'"
    with pytest.raises(InvalidArgument, match=hint):
        load_master_data(path)
    path.write_text(json.dumps({MALO: "9900000003007"}))
    with pytest.raises(InvalidArgument, match=f"MaLo {MALO}: expected an object of fields"):
        load_master_data(path)
