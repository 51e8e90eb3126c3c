"""``masterdata import`` says what it does not import: a MaLo's measurement (ZW6/ZW7) and every
other field of master data (EEG/KWKG, MSB, Tranche, ...), the Bilanzkreis register."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mako_actors.cli import main
from mako_actors.errors import InvalidArgument
from mako_actors.gpke.masterdata import import_assignments
from mako_actors.gpke.supply import supply_key
from mako_actors.ids import TenantId
from stores.lmdb import LmdbStore

NB = "9900000002009"
MALO, OTHER = "51238696781", "10081768204"
LFA = "9900000010078"


async def test_measurements_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    shaped = tmp_path / "master.json"
    shaped.write_text(json.dumps({
        MALO: {"current": LFA, "measurement": "ZW7"},
        OTHER: {"measurement": "ZW6"},  # no assignment at all: nothing for the journal
    }))
    async with LmdbStore(tmp_path / "db") as store:
        report = await import_assignments(store, NB, shaped)
        assert (report.rows, report.appended, report.malos, report.measurements_not_imported) == (1, 1, 1, 2)
        tenant = TenantId.from_party_id(NB)
        assert [e["supplier"] for e in await store.journal(tenant, supply_key(MALO))] == [LFA]
        assert await store.journal(tenant, supply_key(OTHER)) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"malo,supplier,from,until,measurement\n{MALO},{LFA},,,ZW6\n{OTHER},{LFA},,,ZW9\n",
         r"line 3: field 'measurement' is 'ZW9'"),
        (f"malo,supplier,from,until\n{MALO},{LFA},,\n{OTHER},{LFA},,,ZW6\n",
         r"line 3: more values than the header has columns"),
    ],
)  # fmt: skip
async def test_a_bad_row_is_refused_and_nothing_written(tmp_path: Path, text: str, error: str) -> None:
    listed = tmp_path / "assignments.csv"
    listed.write_text(text)
    async with LmdbStore(tmp_path / "db") as store:
        with pytest.raises(InvalidArgument, match=error):
            await import_assignments(store, NB, listed)
        assert await store.journal(TenantId.from_party_id(NB), supply_key(MALO)) == []


def test_the_cli_says_the_measurement_was_not_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = tmp_path / "assignments.csv"
    listed.write_text(f"malo,supplier,from,until,measurement\n{MALO},{LFA},,,ZW6\n{OTHER},{LFA},,,\n")
    assert main(["masterdata", "import", str(listed), "--store", str(tmp_path / "db"), "--tenant", NB]) == 0
    out, err = capsys.readouterr()
    assert "2 imported" in out
    assert "not imported" in err and "the measurement (ZW6/ZW7) of 1 MaLo(s)" in err
    plain = tmp_path / "plain.csv"
    plain.write_text(f"malo,supplier,from,until\n{MALO},{LFA},,\n")
    capsys.readouterr()
    assert main(["masterdata", "import", str(plain), "--store", str(tmp_path / "db3"), "--tenant", NB]) == 0
    assert "not imported" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, tenant, error",
    [
        ("latin1.csv", f"malo,supplier,from,until,comment\n{MALO},{LFA},,,M\xfcller\n".encode("latin-1"), NB,
         "latin1.csv: not UTF-8 (byte 0xfc at offset"),
        ("ok.csv", f"malo,supplier\n{MALO},{LFA}\n".encode(), "123", "'123' is not a 13-digit"),
        ("bad.csv", f"malo,supplier\n{MALO},123\n".encode(), NB, "bad.csv: line 2: supplier '123'"),
        # A misspelt field: before, a note said serve and replay take it; both refuse the file.
        ("typo.json", json.dumps({MALO: {"current": LFA, "eeg_kwgk": True}}).encode(), NB,
         "unknown field(s) 'eeg_kwgk' (did you mean 'eeg_kwkg'?)"),
    ],
)  # fmt: skip
def test_a_refused_import_says_why_and_leaves_no_store_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, tenant: str, error: str
) -> None:
    (tmp_path / name).write_bytes(content)
    store = tmp_path / "db"
    argv = ["masterdata", "import", str(tmp_path / name), "--store", str(store), "--tenant", tenant]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and error in err and "Traceback" not in err and err.count("\n") == 1
    assert not store.exists()


def test_a_utf8_file_with_a_byte_order_mark_is_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbf" + f"malo,supplier,from,until,comment\n{MALO},{LFA},,,Müller\n".encode())
    assert main(["masterdata", "import", str(excel), "--store", str(tmp_path / "db"), "--tenant", NB]) == 0
    assert "1 imported" in capsys.readouterr().out


@pytest.mark.parametrize("store", ["replay/part-1-of-2", "replay"])
def test_an_import_into_a_replay_part_store_or_beside_its_parts_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    """A part of a ``replay --workers 2`` store holds only a share of the MaLos; a store beside the
    parts knows none of their processes: either import would feed decisions half the picture."""
    for k in range(2):
        (tmp_path / "replay" / f"part-{k}-of-2").mkdir(parents=True)
    ok = tmp_path / "ok.csv"
    ok.write_text(f"malo,supplier\n{MALO},{LFA}\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["masterdata", "import", str(ok), "--store", str(tmp_path / store), "--tenant", NB]) == 2
    err = capsys.readouterr().err
    assert "replay with --workers 2" in err and "use a store of its own" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


async def test_every_field_of_master_data_the_journal_does_not_take_is_counted(tmp_path: Path) -> None:
    shaped = tmp_path / "master.json"
    shaped.write_text(json.dumps({
        MALO: {"current": LFA, "eeg_kwkg": True, "msb": LFA, "quarter_hour_metering": False},
        OTHER: {"current": LFA, "eeg_kwkg": False, "esv_from": None},  # null: not given
        "bilanzkreise": {LFA: ["11XBKA---------I"]},
    }))
    async with LmdbStore(tmp_path / "db") as store:
        report = await import_assignments(store, NB, shaped)
    assert (report.rows, report.appended) == (2, 2)
    assert report.not_imported == {"bilanzkreise": 1, "eeg_kwkg": 2, "msb": 1, "quarter_hour_metering": 1}


def test_the_cli_names_the_fields_it_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = tmp_path / "assignments.csv"
    listed.write_text(f"malo,supplier,from,until,eeg_kwkg\n{MALO},{LFA},,,true\n{OTHER},{LFA},,,\n")
    assert main(["masterdata", "import", str(listed), "--store", str(tmp_path / "db"), "--tenant", NB]) == 0
    assert "'eeg_kwkg' of 1 MaLo(s)" in capsys.readouterr().err


async def test_empty_values_past_the_header_are_no_data(tmp_path: Path) -> None:
    trailing = tmp_path / "trailing.csv"  # a trailing comma, as spreadsheets write one
    trailing.write_text(f"malo,supplier,from,until\n{MALO},{LFA},,,\n")
    async with LmdbStore(tmp_path / "db") as store:
        assert (await import_assignments(store, NB, trailing)).appended == 1


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_store_directory_that_cannot_be_made_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store's directory (and its lock) are made before the store opens: an OS error there
    was a traceback and exit 1 (found by re-review)."""
    ok = tmp_path / "ok.csv"
    ok.write_text(f"malo,supplier\n{MALO},{LFA}\n")
    assert main(["masterdata", "import", str(ok), "--store", "/proc/mako-store", "--tenant", NB]) == 2
    assert "--store /proc/mako-store: No such file or directory" in capsys.readouterr().err
