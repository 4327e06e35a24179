"""Rotation windows (rotation/windows.py): the grammar, its errors, zones, DST and midnight.

Instants are written in UTC and checked against what the zone's clock reads, from the tzdata
package (Europe/Berlin: CET +01:00 in winter, CEST +02:00 from the last Sunday of March at
02:00 local to the last Sunday of October at 03:00 local; America/New_York: EST -05:00, EDT
-04:00 from the second Sunday of March to the first Sunday of November, both at 02:00 local).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rotation.errors import InvalidRequest
from rotation.metadata import WINDOW, parse_tags
from rotation.windows import (
    InvalidWindow,
    Window,
    is_open,
    next_opening,
    parse_window,
    zone_named,
)

BERLIN = "Europe/Berlin"
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
WEEKDAYS = frozenset({MON, TUE, WED, THU, FRI})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def minutes(hhmm: str) -> int:
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


# -- grammar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days", "start", "end", "zone"),
    [
        pytest.param(
            "Mon-Fri 09:00-17:00 Europe/Berlin", WEEKDAYS, "09:00", "17:00", BERLIN, id="the-example"
        ),
        pytest.param("Sat,Sun 10:00-12:00", {SAT, SUN}, "10:00", "12:00", "UTC", id="list-default-utc"),
        pytest.param(
            "Mon,Wed-Fri 08:30-09:45 UTC", {MON, WED, THU, FRI}, "08:30", "09:45", "UTC", id="list-and-range"
        ),
        pytest.param(
            "daily 22:00-04:00 Asia/Tokyo", set(range(7)), "22:00", "04:00", "Asia/Tokyo", id="daily"
        ),
        pytest.param("06:00-07:00", set(range(7)), "06:00", "07:00", "UTC", id="days-omitted"),
        pytest.param(
            "00:00-24:00 America/New_York",
            set(range(7)),
            "00:00",
            "24:00",
            "America/New_York",
            id="whole-day",
        ),
        pytest.param("Fri-Mon 20:00-23:00", {FRI, SAT, SUN, MON}, "20:00", "23:00", "UTC", id="range-wraps"),
        pytest.param("mon-FRI 9:00-17:00 europe/berlin", WEEKDAYS, "09:00", "17:00", BERLIN, id="any-case"),
        pytest.param("Monday,Friday 09:00-10:00", {MON, FRI}, "09:00", "10:00", "UTC", id="full-names"),
        pytest.param(
            "  Mon - Fri ,Sun  09:00 - 17:00  Europe/Berlin ",
            {*WEEKDAYS, SUN},
            "09:00",
            "17:00",
            BERLIN,
            id="stray-spaces",
        ),
        pytest.param("Tue,Tue,Mon-Tue 01:00-02:00", {MON, TUE}, "01:00", "02:00", "UTC", id="repeats-merge"),
    ],
)
def test_the_grammar(text: str, days: set[int], start: str, end: str, zone: str) -> None:
    window = parse_window(text)

    assert window == Window(frozenset(days), minutes(start), minutes(end), zone)
    assert window.zone.key == zone
    # The canonical text parses back to the same window.
    assert parse_window(str(window)) == window


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "Mon-Fri 09:00-17:00 Europe/Berlin"),
        ("Sat,Sun 9:00-17:00", "Sat-Sun 09:00-17:00 UTC"),
        ("Sun,Mon,Wed 22:00-04:00 utc", "Sun-Mon,Wed 22:00-04:00 UTC"),
        ("Mon-Sun 00:00-24:00", "daily 00:00-24:00 UTC"),
    ],
)
def test_the_canonical_text(text: str, canonical: str) -> None:
    assert str(parse_window(text)) == canonical


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("", "the window is empty", id="blank"),
        pytest.param("Mon-Fri", "has no time range HH:MM-HH:MM", id="no-times"),
        pytest.param("Mon-Fry 09:00-17:00", "unknown day 'Fry'", id="unknown-day"),
        pytest.param("Mon,,Fri 09:00-17:00", "has an empty entry", id="empty-day-entry"),
        pytest.param("daily,Sat 09:00-17:00", "'daily' stands alone", id="daily-in-a-list"),
        pytest.param("Mon 25:00-26:00", "bad time '25:00'", id="hour-25"),
        pytest.param("Mon 09:60-10:00", "bad time '09:60'", id="minute-60"),
        pytest.param("Mon 0900-1700", "bad time '0900'", id="no-colon"),
        pytest.param("Mon 9h-17h", "bad time '9h'", id="hours-only"),
        pytest.param("Mon 09:00-17:00-18:00", "bad time range", id="three-times"),
        pytest.param("Mon 09:00", "bad time range '09:00'", id="one-time"),
        pytest.param("Mon 24:00-02:00", "24:00 can only end a window", id="starts-at-24"),
        pytest.param("Mon 24:30-02:00", "bad time '24:30'", id="past-24"),
        pytest.param("Mon 09:00-09:00", "is empty: it starts and ends at 09:00", id="empty-window"),
        pytest.param("09:00-17:00 Europe/Berln", "unknown time zone 'Europe/Berln'", id="unknown-zone"),
        pytest.param("09:00-17:00 +02:00", "unknown time zone '+02:00'", id="offset-not-a-zone"),
        pytest.param("09:00-17:00 ../../etc/passwd", "unknown time zone", id="path-not-a-zone"),
        pytest.param(
            "09:00-17:00 Mon-Fri", "the days ('Mon-Fri') come before the time range", id="days-last"
        ),
        pytest.param("Mon 09:00 17:00", "is not of the form", id="two-times"),
        pytest.param("Mon Tue 09:00-17:00", "is not of the form", id="two-day-parts"),
        pytest.param("Mon 09:00-17:00 UTC extra", "is not of the form", id="trailing-part"),
    ],
)
def test_bad_windows_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidWindow, match=None) as raised:
        parse_window(text)

    assert says in str(raised.value)


def test_the_tag_is_validated_with_the_other_tags_and_its_error_names_it() -> None:
    base = {
        "rotation-target": "postgresql-login",
        "rotation-provider": "db.example.com/appdb",
        "rotation-credential": "app_user",
    }
    assert parse_tags("db-password", base).window is None
    assert parse_tags("db-password", base | {WINDOW: "  "}).window is None
    meta = parse_tags("db-password", base | {WINDOW: "Mon-Fri 09:00-17:00 Europe/Berlin"})
    assert meta.window == Window(WEEKDAYS, 9 * 60, 17 * 60, BERLIN)

    with pytest.raises(InvalidRequest) as raised:
        parse_tags("db-password", base | {WINDOW: "Mon-Fri 09:00-17:00 Mars/Olympus"})
    assert raised.value.detail == (
        "rotation-window 'Mon-Fri 09:00-17:00 Mars/Olympus' is not a valid window: "
        "unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Berlin, or UTC)"
    )


def test_a_window_built_by_hand_is_checked_too() -> None:
    with pytest.raises(InvalidWindow, match="non-empty"):
        Window(frozenset(), 60, 120)
    with pytest.raises(InvalidWindow, match="minutes within a day"):
        Window(WEEKDAYS, 60, 1441)
    with pytest.raises(InvalidWindow, match="empty"):
        Window(WEEKDAYS, 60, 60)
    with pytest.raises(InvalidWindow, match="unknown time zone"):
        Window(WEEKDAYS, 60, 120, "Nowhere/Town")


def test_zones_come_from_the_tzdata_package_not_the_operating_system() -> None:
    zone = zone_named("europe/berlin")
    assert zone.key == "Europe/Berlin"
    assert zone is zone_named("europe/berlin")  # loaded once
    assert zone.utcoffset(datetime(2026, 7, 1)) == timedelta(hours=2)
    assert zone.utcoffset(datetime(2026, 1, 1)) == timedelta(hours=1)
    # Files of the operating system's zone directory that are no zone of tzdata's list.
    for not_a_zone in ("posixrules", "zone.tab", "tzdata.zi", "leapseconds"):
        with pytest.raises(InvalidWindow, match="unknown time zone"):
            zone_named(not_a_zone)


# -- next_opening ----------------------------------------------------------------------------------

OFFICE = parse_window("Mon-Fri 09:00-17:00 Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        # Thursday 3 December 2026, CET (+01:00): open 08:00-16:00 UTC.
        pytest.param(utc(2026, 12, 3, 7, 59), utc(2026, 12, 3, 8, 0), id="before-opening"),
        pytest.param(utc(2026, 12, 3, 8, 0), None, id="at-opening"),
        pytest.param(utc(2026, 12, 3, 15, 59, 59), None, id="just-before-close"),
        pytest.param(utc(2026, 12, 3, 16, 0), utc(2026, 12, 4, 8, 0), id="at-close"),
        # Friday after work: Monday 7 December, 09:00 CET.
        pytest.param(utc(2026, 12, 4, 16, 30), utc(2026, 12, 7, 8, 0), id="friday-evening"),
        pytest.param(utc(2026, 12, 5, 12, 0), utc(2026, 12, 7, 8, 0), id="saturday"),
        # In summer (CEST, +02:00) the same local hours are an hour earlier in UTC.
        pytest.param(utc(2026, 7, 1, 6, 30), utc(2026, 7, 1, 7, 0), id="summer"),
        pytest.param(utc(2026, 7, 1, 7, 0), None, id="summer-open"),
        pytest.param(utc(2026, 7, 1, 15, 0), utc(2026, 7, 2, 7, 0), id="summer-closed"),
    ],
)
def test_next_opening_of_office_hours(now: datetime, opens: datetime | None) -> None:
    assert next_opening(OFFICE, now) == opens
    assert is_open(OFFICE, now) is (opens is None)


def test_next_opening_follows_the_offset_of_the_date_across_a_dst_change() -> None:
    # Friday 27 March 2026 after work (CET); Berlin springs forward on Sunday 29 March, so
    # Monday's 09:00 is CEST: 07:00 UTC, not 08:00.
    assert next_opening(OFFICE, utc(2026, 3, 27, 17, 0)) == utc(2026, 3, 30, 7, 0)
    # And back on Sunday 25 October: Monday 26 October 09:00 is CET again, 08:00 UTC.
    assert next_opening(OFFICE, utc(2026, 10, 23, 17, 0)) == utc(2026, 10, 26, 8, 0)


def test_a_window_on_the_spring_forward_day_keeps_its_local_hours() -> None:
    # Sunday 29 March 2026: 01:00 UTC is 02:00 CET, when Berlin's clock jumps to 03:00 CEST.
    window = parse_window("Sun 01:00-05:00 Europe/Berlin")
    opens, closes = window.occurrence(date(2026, 3, 29))
    assert opens == utc(2026, 3, 29, 0, 0)  # 01:00 CET
    assert closes == utc(2026, 3, 29, 3, 0)  # 05:00 CEST: three hours, not four
    assert next_opening(window, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 0, 0)
    assert next_opening(window, utc(2026, 3, 29, 2, 59)) is None
    assert next_opening(window, utc(2026, 3, 29, 3, 0)) == utc(2026, 4, 4, 23, 0)  # 01:00 CEST


def test_a_start_in_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    # 02:30 never shows on Berlin's clocks on 29 March 2026: the window opens at 03:00 CEST.
    window = parse_window("Sun 02:30-05:00 Europe/Berlin")

    assert next_opening(window, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert next_opening(window, utc(2026, 3, 29, 0, 59, 59)) == utc(2026, 3, 29, 1, 0)
    assert next_opening(window, utc(2026, 3, 29, 1, 0)) is None
    # The Sunday after, 02:30 CEST exists again: 00:30 UTC.
    assert next_opening(window, utc(2026, 3, 29, 3, 0)) == utc(2026, 4, 5, 0, 30)


def test_a_window_wholly_in_the_skipped_hour_does_not_open_that_day() -> None:
    window = parse_window("Sun 02:10-02:50 Europe/Berlin")
    opens, closes = window.occurrence(date(2026, 3, 29))
    assert opens == closes == utc(2026, 3, 29, 1, 0)

    # The next Sunday's occurrence instead, 02:10 CEST.
    assert next_opening(window, utc(2026, 3, 28, 12, 0)) == utc(2026, 4, 5, 0, 10)
    # From the Sunday before, the skipped occurrence makes the wait two weeks long.
    assert next_opening(window, utc(2026, 3, 22, 2, 0)) == utc(2026, 4, 5, 0, 10)


def test_a_time_in_the_repeated_hour_means_its_first_pass() -> None:
    # Sunday 25 October 2026: Berlin's clock reads 02:00-03:00 twice (CEST, then CET).
    window = parse_window("Sun 02:30-04:00 Europe/Berlin")
    opens, closes = window.occurrence(date(2026, 10, 25))
    assert opens == utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert closes == utc(2026, 10, 25, 3, 0)  # 04:00 CET: two and a half hours
    assert next_opening(window, utc(2026, 10, 25, 0, 0)) == utc(2026, 10, 25, 0, 30)
    assert next_opening(window, utc(2026, 10, 25, 1, 45)) is None  # 02:45 CET, second pass


def test_new_york_changes_on_other_dates_than_berlin() -> None:
    window = parse_window("Mon-Fri 09:00-17:00 America/New_York")
    # Friday 6 March 2026 after work (EST); New York springs forward on Sunday 8 March:
    # Monday 9 March 09:00 EDT is 13:00 UTC.
    assert next_opening(window, utc(2026, 3, 6, 23, 0)) == utc(2026, 3, 9, 13, 0)
    # Berlin is still on CET that Monday: its office opens at 08:00 UTC.
    assert next_opening(OFFICE, utc(2026, 3, 6, 23, 0)) == utc(2026, 3, 9, 8, 0)


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        # "Fri 22:00-04:00 UTC": open from Friday 22:00 to Saturday 04:00.
        pytest.param(utc(2026, 12, 4, 21, 0), utc(2026, 12, 4, 22, 0), id="friday-before"),
        pytest.param(utc(2026, 12, 4, 23, 30), None, id="friday-night"),
        pytest.param(utc(2026, 12, 5, 3, 59), None, id="saturday-early-still-friday-s"),
        pytest.param(utc(2026, 12, 5, 4, 0), utc(2026, 12, 11, 22, 0), id="saturday-closed"),
        # Friday before 04:00 belongs to Thursday's occurrence, which is not listed.
        pytest.param(utc(2026, 12, 4, 2, 0), utc(2026, 12, 4, 22, 0), id="friday-early"),
    ],
)
def test_a_window_crossing_midnight_belongs_to_the_day_it_opens(
    now: datetime, opens: datetime | None
) -> None:
    assert next_opening(parse_window("Fri 22:00-04:00"), now) == opens


def test_a_whole_day_window_is_open_all_day_and_closed_on_the_others() -> None:
    window = parse_window("Sat 00:00-24:00 Europe/Berlin")
    assert next_opening(window, utc(2026, 12, 4, 23, 0)) is None  # Saturday 00:00 CET
    assert next_opening(window, utc(2026, 12, 5, 22, 59)) is None
    assert next_opening(window, utc(2026, 12, 5, 23, 0)) == utc(2026, 12, 11, 23, 0)
    assert next_opening(parse_window("00:00-24:00"), utc(2026, 12, 5, 23, 59, 59)) is None


def test_next_opening_is_deterministic_and_takes_naive_times_as_utc() -> None:
    now = utc(2026, 12, 4, 16, 30)
    answers = {next_opening(OFFICE, now) for _ in range(5)}
    assert answers == {utc(2026, 12, 7, 8, 0)}
    assert next_opening(OFFICE, now.replace(tzinfo=None)) == utc(2026, 12, 7, 8, 0)
    # An aware time in another zone is the same instant.
    assert next_opening(OFFICE, now.astimezone(ZoneInfo("Asia/Tokyo"))) == utc(2026, 12, 7, 8, 0)


def test_the_answer_is_always_an_opening_in_the_future_and_open() -> None:
    # Every 7 hours over a year, for windows of several shapes: the opening returned is later
    # than now, the window is open then, and it was closed a second before.
    shapes = [
        "Mon-Fri 09:00-17:00 Europe/Berlin",
        "Sun 02:30-03:30 Europe/Berlin",
        "Sat,Sun 22:00-04:00 America/New_York",
        "Wed 00:00-24:00 Australia/Lord_Howe",
        "daily 01:15-01:45 America/Sao_Paulo",
    ]
    for text in shapes:
        window = parse_window(text)
        now = utc(2026, 1, 1)
        while now < utc(2027, 1, 1):
            opens = next_opening(window, now)
            if opens is not None:
                assert opens > now, (text, now)
                assert is_open(window, opens), (text, now, opens)
                assert not is_open(window, opens - timedelta(seconds=1)), (text, now, opens)
                assert opens - now <= timedelta(days=15), (text, now, opens)
            now += timedelta(hours=7)
