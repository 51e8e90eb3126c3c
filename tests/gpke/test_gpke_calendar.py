"""Werktag arithmetic, the Fristen table and the ack windows (DOMAIN §2, §3)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo

import pytest

from mako_actors.errors import EngineError, InvalidArgument
from mako_actors.gpke.calendar import (
    BERLIN,
    calendar_version,
    end_of_werktag,
    is_midnight_berlin,
    is_werktag,
    last_werktag_before,
    latest_uet_for,
    next_werktag,
    next_werktag_at,
    uet,
    vorlauffrist_met,
)
from mako_actors.gpke.errors import UnsupportedFormatVersion
from mako_actors.gpke.fristen import DEFAULT_ACK_WINDOWS, DEFAULT_FRISTEN, AckWindows, FristenTable


def berlin(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("day", "werktag"),
    [
        ("2025-06-05", True),
        ("2025-06-06", False),  # BDEW special day: LFW24 / FV2504 go-live
        ("2025-06-09", False),  # Pfingstmontag
        ("2025-06-19", False),  # Fronleichnam (some states)
        ("2025-08-15", False),  # Mariä Himmelfahrt (some states)
        ("2025-08-08", True),  # Augsburger Friedensfest is city-only
        ("2025-10-31", False),  # Reformationstag
        ("2025-11-19", False),  # Buß- und Bettag
        ("2024-03-08", False),  # Frauentag (BE, MV)
        ("2024-09-20", False),  # Weltkindertag (TH)
        ("2025-05-08", False),  # one-off Berlin holiday
        ("2025-12-24", False),
        ("2025-12-31", False),
        ("2026-01-06", False),  # Heilige Drei Könige
    ],
)
def test_werktag_table_of_domain_3_2(day: str, werktag: bool) -> None:
    assert is_werktag(date.fromisoformat(day)) is werktag


def test_next_werktag_after_thursday_before_pentecost_is_tuesday() -> None:
    assert next_werktag(date(2025, 6, 5)) == date(2025, 6, 10)


def test_uet_is_the_berlin_date_of_the_receipt_instant() -> None:
    assert uet(datetime(2025, 6, 5, 23, 30, tzinfo=UTC)) == date(2025, 6, 6)
    assert uet(datetime(2025, 12, 5, 22, 59, tzinfo=UTC)) == date(2025, 12, 5)
    assert uet(datetime(2025, 12, 5, 23, 0, tzinfo=UTC)) == date(2025, 12, 6)


def test_naive_receipt_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        uet(datetime(2025, 6, 5, 12, 0))


@pytest.mark.parametrize(
    ("label", "hour"),
    [("info_existing_assignment", 7), ("lfa_answer", 9), ("decision", 11), ("termination", 12),
     ("future_cancellation", 12)],
)
def test_worked_example_thursday_afternoon(label: str, hour: int) -> None:
    record = DEFAULT_FRISTEN.compute("FV2504", "55001", berlin(2025, 6, 5, 14, 30))
    assert record.due[label] == berlin(2025, 6, 10, hour, 0)
    assert record.uet == date(2025, 6, 5)


def test_decision_at_11_berlin_is_09_utc_in_summer() -> None:
    due = next_werktag_at(berlin(2025, 6, 5, 14, 30), time(11))
    assert due.astimezone(UTC) == datetime(2025, 6, 10, 9, 0, tzinfo=UTC)


def test_receipt_after_midnight_berlin_on_a_non_werktag_still_gives_tuesday() -> None:
    received = datetime(2025, 6, 5, 23, 30, tzinfo=UTC)  # 01:30 CEST on Fri 06.06
    record = DEFAULT_FRISTEN.compute("FV2510", "55001", received)
    assert record.uet == date(2025, 6, 6)
    assert record.due["decision"] == berlin(2025, 6, 10, 11, 0)


def test_friday_before_pentecost_monday_answers_on_tuesday() -> None:
    assert next_werktag_at(berlin(2026, 5, 22, 16, 0), time(11)) == berlin(2026, 5, 26, 11, 0)


def test_ordinary_friday_answers_on_monday() -> None:
    assert next_werktag_at(berlin(2025, 12, 19, 15, 0), time(11)) == berlin(2025, 12, 22, 11, 0)


def test_christmas_receipt_on_23rd_answers_on_the_29th() -> None:
    # 24.12 is no WT, 25./26.12 are holidays, 27./28.12 a weekend.
    assert next_werktag_at(berlin(2025, 12, 23, 10, 0), time(11)) == berlin(2025, 12, 29, 11, 0)
    assert next_werktag_at(berlin(2025, 12, 30, 10, 0), time(6)) == berlin(2026, 1, 2, 6, 0)


def test_end_of_werktag_is_midnight_after_wt_n() -> None:
    assert end_of_werktag(berlin(2025, 6, 5, 14, 30)) == berlin(2025, 6, 11, 0, 0)
    assert end_of_werktag(berlin(2025, 6, 5, 14, 30), 2) == berlin(2025, 6, 12, 0, 0)


def test_vorlauffrist_worked_example() -> None:
    start = berlin(2025, 6, 18, 0, 0)
    assert last_werktag_before(date(2025, 6, 18)) == date(2025, 6, 17)
    assert latest_uet_for(start) == date(2025, 6, 16)
    assert vorlauffrist_met(berlin(2025, 6, 16, 23, 59), start)
    assert not vorlauffrist_met(berlin(2025, 6, 17, 0, 1), start)
    assert not vorlauffrist_met(berlin(2025, 6, 20, 9, 0), start)  # back-dating


def test_abmeldung_answer_due_at_six() -> None:
    record = DEFAULT_FRISTEN.compute("FV2510", "55004", berlin(2025, 6, 5, 14, 30))
    assert record.due == {"decision": berlin(2025, 6, 10, 6, 0)}


def test_record_names_table_and_calendar_versions() -> None:
    record = DEFAULT_FRISTEN.compute("FV2504", "55001", berlin(2025, 6, 5, 14, 30))
    assert record.table_version == DEFAULT_FRISTEN.version
    assert record.calendar_version == calendar_version()
    assert "bdew-datetimes==" in record.calendar_version and "holidays==" in record.calendar_version


def test_fv2604_reuses_fv2510_and_unknown_fv_is_a_typed_error() -> None:
    assert DEFAULT_FRISTEN.rules_for("FV2604", "55001") == DEFAULT_FRISTEN.rules_for("FV2510", "55001")
    with pytest.raises(UnsupportedFormatVersion) as info:
        DEFAULT_FRISTEN.rules_for("FV2310", "55001")
    assert isinstance(info.value, EngineError)


def test_table_is_configuration_loadable_from_plain_data() -> None:
    table = FristenTable.model_validate(
        {
            "version": "test-1",
            "source": "unit test",
            "rules": {"FV2510": {"55001": [{"label": "decision", "kind": "next_werktag_at",
                                             "at": "10:30"}]}},
        }
    )
    assert table.compute("FV2510", "55001", berlin(2025, 6, 5, 14, 30)).due == {
        "decision": berlin(2025, 6, 10, 10, 30)
    }


def test_every_trigger_of_one_uet_gets_the_deadlines_its_rules_give_and_a_dict_of_its_own() -> None:
    # Werktag rules depend on the ÜT alone; a duration counts from the instant itself.
    table = FristenTable.model_validate(
        {
            "version": "test-2",
            "source": "unit test",
            "rules": {"FV2510": {
                "55001": [{"label": "decision", "kind": "next_werktag_at", "at": "11:00"},
                          {"label": "end", "kind": "end_of_werktag", "n": 2}],
                "55004": [{"label": "decision", "kind": "next_werktag_at", "at": "06:00"},
                          {"label": "soon", "kind": "duration", "minutes": 30}],
            }},
        }
    )
    for pid in ("55001", "55004"):
        rules = table.rules_for("FV2510", pid)
        for received in (berlin(2025, 6, 5, 0, 0), berlin(2025, 6, 5, 14, 30), berlin(2025, 6, 5, 23, 59)):
            first = table.compute("FV2510", pid, received)
            again = table.compute("FV2510", pid, received)
            assert first.due == again.due == {r.label: r.due(received) for r in rules}
            assert first.due is not again.due
            first.due.clear()  # a record's dict is its own: the next trigger's is whole
            assert table.compute("FV2510", pid, received).due == again.due
    soon = table.compute("FV2510", "55004", berlin(2025, 6, 5, 14, 30)).due["soon"]
    assert soon == berlin(2025, 6, 5, 15, 0)
    after_whitsun = table.compute("FV2510", "55001", berlin(2025, 6, 6, 9, 0)).due["decision"]
    assert after_whitsun == berlin(2025, 6, 10, 11, 0)  # Friday; Monday 9 June is Pfingstmontag


def test_contrl_window_from_configuration() -> None:
    received = datetime(2025, 6, 5, 12, 30, tzinfo=UTC)
    assert DEFAULT_ACK_WINDOWS.contrl_due(received) == datetime(2025, 6, 5, 18, 30, tzinfo=UTC)
    custom = AckWindows(version="x", source="y", contrl_minutes=120)
    assert custom.contrl_due(received) == datetime(2025, 6, 5, 14, 30, tzinfo=UTC)


def test_aperak_window_on_werktag_saturday_and_other_messages() -> None:
    assert DEFAULT_ACK_WINDOWS.aperak_due(berlin(2025, 6, 5, 14, 30)) == berlin(2025, 6, 5, 15, 15)
    assert DEFAULT_ACK_WINDOWS.aperak_due(berlin(2025, 6, 7, 9, 0)) == berlin(2025, 6, 8, 12, 0)
    assert DEFAULT_ACK_WINDOWS.aperak_due(
        berlin(2025, 6, 5, 14, 30), utilmd_or_orders=False
    ) == berlin(2025, 6, 10, 12, 0)
    custom = AckWindows(version="x", source="y", aperak_minutes=30)
    assert custom.aperak_due(berlin(2025, 6, 5, 14, 30)) == berlin(2025, 6, 5, 15, 0)


def test_ack_windows_are_elapsed_time_across_a_dst_change() -> None:
    """DOMAIN §2: CONTRL within 6 h of receipt, APERAK 45 min after it: elapsed time. Before, a
    receipt given in Berlin time had the minutes added to the wall clock, 1 h off across DST."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Berlin")
    received = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST; at 01:00Z clocks go back
    for given in (received, received.astimezone(zone)):
        assert DEFAULT_ACK_WINDOWS.aperak_due(given) == datetime(2026, 10, 25, 1, 15, tzinfo=UTC)
        assert DEFAULT_ACK_WINDOWS.contrl_due(given) == datetime(2026, 10, 25, 6, 30, tzinfo=UTC)
    spring = datetime(2026, 3, 28, 22, 0, tzinfo=UTC).astimezone(zone)  # 23:00 CET, Saturday
    assert DEFAULT_ACK_WINDOWS.contrl_due(spring) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)


def test_dtm_102_and_203_are_german_wall_time_both_ways() -> None:
    """parse_dtm reads the zone-less formats as Europe/Berlin; format_dtm wrote them in UTC, so
    the 00:00 Berlin a day begins at came back as the day before."""
    from mako_actors.edifact import format_dtm, parse_dtm

    for value in ("20250701", "20260101"):
        assert format_dtm(parse_dtm(value, "102"), "102") == value
    assert format_dtm(parse_dtm("202510261230", "203"), "203") == "202510261230"
    assert format_dtm(datetime(2025, 6, 30, 22, 0, tzinfo=UTC), "303") == "202506302200+00"


class _RepeatedMidnight(tzinfo):
    """A zone whose 00:00–01:00 is repeated: +01:00 the first time (fold 0), +02:00 the second."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=2 if dt is not None and dt.fold else 1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


def test_uet_is_the_berlin_date_of_the_instant_also_for_equal_wall_times() -> None:
    """``uet`` is cached by instant; two wall-equal datetimes of one zone that differ only in
    ``fold`` compare equal in Python but are two instants, here on two Berlin dates."""
    zone = _RepeatedMidnight()
    first = datetime(2025, 1, 15, 0, 30, tzinfo=zone)  # 23:30 UTC, 00:30 in Berlin (CET)
    second = first.replace(fold=1)  # 22:30 UTC, 23:30 in Berlin the day before
    assert first == second and first.astimezone(UTC) != second.astimezone(UTC)
    for _ in range(2):  # the second round is answered from the cache
        assert uet(first) == date(2025, 1, 15)
        assert uet(second) == date(2025, 1, 14)
        assert uet(first.astimezone(UTC)) == date(2025, 1, 15)
    with pytest.raises(InvalidArgument):
        uet(datetime(2025, 1, 15, 0, 30))


def test_day_boundary_is_judged_by_instant_also_for_equal_wall_times() -> None:
    """``is_midnight_berlin`` is cached by instant as ``uet``: 23:00 UTC is 00:00 in Berlin in
    winter whatever zone writes it, and the wall-equal ``fold=1`` twin (22:00 UTC) is not."""
    zone = _RepeatedMidnight()
    midnight = datetime(2025, 1, 15, 0, 0, tzinfo=zone)  # 23:00 UTC
    twin = midnight.replace(fold=1)  # 22:00 UTC: 23:00 in Berlin
    for _ in range(2):  # the second round is answered from the cache
        assert is_midnight_berlin(midnight) and not is_midnight_berlin(twin)
        assert is_midnight_berlin(midnight.astimezone(UTC)) and is_midnight_berlin(berlin(2025, 1, 15, 0, 0))
        assert not is_midnight_berlin(berlin(2025, 1, 15, 0, 1))
    with pytest.raises(InvalidArgument, match="value must be timezone-aware"):
        is_midnight_berlin(datetime(2025, 1, 15))


def test_vorlauffrist_names_a_naive_zuordnungsbeginn() -> None:
    start = berlin(2025, 6, 20, 0, 0)
    assert latest_uet_for(start) == latest_uet_for(start.astimezone(UTC)) == date(2025, 6, 17)
    with pytest.raises(InvalidArgument, match="zuordnungsbeginn must be timezone-aware"):
        vorlauffrist_met(berlin(2025, 6, 16, 9, 0), datetime(2025, 6, 20))
    with pytest.raises(InvalidArgument, match="zuordnungsbeginn must be timezone-aware"):
        latest_uet_for(datetime(2025, 6, 20))
