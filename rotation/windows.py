"""Rotation windows (tag ``rotation-window``): when a rotation may change things.

Grammar, parts separated by spaces::

    [days] HH:MM-HH:MM [zone]

- ``days``: ``Mon``..``Sun`` (or the full English names, any case), comma-separated, with
  ranges: ``Mon-Fri``, ``Sat,Sun``, ``Mon,Wed-Fri``; a range may wrap (``Fri-Mon``). ``daily``
  or nothing: every day. A day names the day the window *opens*.
- ``HH:MM-HH:MM``: 24-hour local times; the end is exclusive. An end at or before the start
  crosses midnight (``22:00-04:00`` opens at 22:00 and closes at 04:00 the next day);
  ``00:00-24:00`` is the whole day; ``24:00`` may only end a window.
- ``zone``: an IANA time zone (``Europe/Berlin``), default ``UTC``. Zones come from the
  ``tzdata`` package only, so every machine (and every replay of an orchestration) uses the
  same zone database, whatever the operating system ships.

Local times follow the zone's offset on that date (DST included): each occurrence of a window
runs from the first instant the zone's clock reads its start to the first instant it reads
its end. A time in the hour skipped when clocks go forward is reached when the clock jumps
(``02:30`` on a spring-forward day opens at ``03:00``); a time in the hour repeated when clocks
go back means its first pass. An occurrence that falls entirely in a skipped hour does not open.

Everything here is pure and deterministic, so an orchestrator may call it during replay.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS = {name.lower(): i for i, name in enumerate(DAY_NAMES)} | {
    name: i for i, name in enumerate(_FULL_DAY_NAMES)
}
EVERY_DAY = "daily"
DEFAULT_ZONE = "UTC"
MINUTES_PER_DAY = 24 * 60
# A weekly window is closed for at most a week, or two when a DST jump swallows one occurrence
# whole (a 30-minute window inside the skipped hour), plus the offset change itself.
LONGEST_WAIT = timedelta(days=15)

_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


class InvalidWindow(ValueError):
    """The window's text does not follow the grammar; the message says what is wrong."""


@dataclass(frozen=True)
class Window:
    """Days (0 = Monday), start and end in minutes after local midnight, the zone's IANA key."""

    days: frozenset[int]
    start: int
    end: int
    zone_key: str = DEFAULT_ZONE

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise InvalidWindow(f"days must be a non-empty set of 0 (Monday) to 6, got {sorted(self.days)}")
        if not (0 <= self.start < MINUTES_PER_DAY and 0 <= self.end <= MINUTES_PER_DAY):
            raise InvalidWindow(f"start {self.start} and end {self.end} must be minutes within a day")
        if self.start == self.end:
            raise InvalidWindow(f"the window is empty: it starts and ends at {_format_time(self.start)}")
        object.__setattr__(self, "zone_key", _zone_key(self.zone_key))  # raises for an unknown zone

    @property
    def zone(self) -> ZoneInfo:
        return zone_named(self.zone_key)

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def __str__(self) -> str:
        """The canonical text (``Mon-Fri 09:00-17:00 Europe/Berlin``); it parses back to this window."""
        return (
            f"{_format_days(self.days)} {_format_time(self.start)}-{_format_time(self.end)} {self.zone_key}"
        )

    def occurrence(self, day: date) -> tuple[datetime, datetime]:
        """The window opening on local ``day`` (whether or not it is a listed day), as UTC instants.

        Both are equal when the whole occurrence lies in a skipped hour."""
        midnight = datetime(day.year, day.month, day.day)
        end = self.end + (MINUTES_PER_DAY if self.crosses_midnight else 0)
        return (
            _first_instant_reading(midnight + timedelta(minutes=self.start), self.zone),
            _first_instant_reading(midnight + timedelta(minutes=end), self.zone),
        )


def parse_window(text: str) -> Window:
    """Parse ``[days] HH:MM-HH:MM [zone]`` (module docstring).

    Raises:
        InvalidWindow: an unknown day, a bad time, an unknown zone, an empty window or parts
            out of place; the message names the part at fault.
    """
    # Spaces around ',' and '-' are typing noise ("Mon - Fri 09:00 - 17:00").
    parts = re.sub(r"\s*([,-])\s*", r"\1", text.strip()).split()
    if not parts:
        raise InvalidWindow("the window is empty: expected '[days] HH:MM-HH:MM [zone]'")
    # The time range is the one part that starts with a digit (no day name or zone does).
    times = [i for i, part in enumerate(parts) if part[0].isdigit()]
    if not times:
        raise InvalidWindow(f"{text.strip()!r} has no time range HH:MM-HH:MM")
    if len(times) > 1 or times[0] > 1 or len(parts) - times[0] > 2:
        raise InvalidWindow(f"{text.strip()!r} is not of the form '[days] HH:MM-HH:MM [zone]'")
    at = times[0]
    days = _parse_days(parts[0]) if at == 1 else frozenset(range(7))
    start, end = _parse_times(parts[at])
    zone_key = _trailing_zone(parts[at + 1]) if len(parts) > at + 1 else DEFAULT_ZONE
    return Window(days=days, start=start, end=end, zone_key=zone_key)


def _trailing_zone(text: str) -> str:
    try:
        return _zone_key(text)
    except InvalidWindow:
        try:
            _parse_days(text)
        except InvalidWindow:
            raise InvalidWindow(
                f"unknown time zone {text!r} (an IANA name such as Europe/Berlin, or UTC)"
            ) from None
        raise InvalidWindow(f"the days ({text!r}) come before the time range") from None


def next_opening(window: Window, now_utc: datetime) -> datetime | None:
    """When ``window`` next opens after ``now_utc`` (an aware UTC datetime), or None if it is open now.

    A naive ``now_utc`` is taken as UTC; the answer is an aware UTC datetime."""
    now = now_utc.replace(tzinfo=UTC) if now_utc.tzinfo is None else now_utc.astimezone(UTC)
    today = now.astimezone(window.zone).date()
    earliest: datetime | None = None
    # From yesterday (an occurrence crossing midnight may still be open) to beyond LONGEST_WAIT.
    for offset in range(-1, LONGEST_WAIT.days + 2):
        day = today + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        opens, closes = window.occurrence(day)
        if opens >= closes:
            continue
        if opens <= now < closes:
            return None
        if now < opens and (earliest is None or opens < earliest):
            earliest = opens
    if earliest is None:  # days is never empty, so an occurrence always opens within the range
        raise AssertionError(f"window {window} never opens")
    return earliest


def is_open(window: Window, now_utc: datetime) -> bool:
    return next_opening(window, now_utc) is None


@functools.cache
def _zone_keys() -> dict[str, str]:
    """Every IANA key tzdata ships, by its lower-case spelling."""
    listing = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return {key.lower(): key for key in listing.split()}


@functools.cache
def zone_named(key: str) -> ZoneInfo:
    """The zone from the tzdata package (never the operating system's database).

    Raises:
        InvalidWindow: tzdata has no such zone.
    """
    canonical = _zone_key(key)
    with resources.files("tzdata").joinpath("zoneinfo", *canonical.split("/")).open("rb") as data:
        return ZoneInfo.from_file(data, key=canonical)


def _zone_key(text: str) -> str:
    canonical = _zone_keys().get(text.lower())
    if canonical is None:
        raise InvalidWindow(f"unknown time zone {text!r} (an IANA name such as Europe/Berlin, or UTC)")
    return canonical


def _parse_days(text: str) -> frozenset[int]:
    if text.lower() == EVERY_DAY:
        return frozenset(range(7))
    days: set[int] = set()
    for item in text.split(","):
        if not item:
            raise InvalidWindow(f"the day list {text!r} has an empty entry")
        first, _, last = item.partition("-")
        a = _day(first, text)
        b = _day(last, text) if last else a
        # A range may wrap around the week end: Fri-Mon is Fri, Sat, Sun, Mon.
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str, context: str) -> int:
    if name.lower() == EVERY_DAY:
        raise InvalidWindow(f"'{EVERY_DAY}' stands alone, not in a day list ({context!r})")
    try:
        return _DAYS[name.lower()]
    except KeyError:
        raise InvalidWindow(
            f"unknown day {name!r} in {context!r} (use {', '.join(DAY_NAMES)}, ranges such as "
            f"Mon-Fri, or '{EVERY_DAY}')"
        ) from None


def _parse_times(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not sep or "-" in last:
        raise InvalidWindow(f"bad time range {text!r} (expected HH:MM-HH:MM, e.g. 09:00-17:00)")
    start, end = _minutes(first), _minutes(last)
    if start == MINUTES_PER_DAY:
        raise InvalidWindow(f"bad time range {text!r}: 24:00 can only end a window")
    if start == end:
        raise InvalidWindow(f"the window {text!r} is empty: it starts and ends at {first}")
    return start, end


def _minutes(text: str) -> int:
    match = _TIME.match(text)
    if match:
        hours, minutes = int(match[1]), int(match[2])
        if (hours < 24 and minutes < 60) or (hours == 24 and minutes == 0):
            return hours * 60 + minutes
    raise InvalidWindow(f"bad time {text!r} (HH:MM in 24 hours, 00:00 to 24:00)")


def _format_time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _format_days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return EVERY_DAY
    runs: list[tuple[int, int]] = []
    for day in sorted(days):
        if runs and runs[-1][1] == day - 1:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    # A run that ends on Sunday and one that starts on Monday are one run across the week end.
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][1] == 6:
        runs = [(runs[-1][0], runs[0][1]), *runs[1:-1]]
    return ",".join(DAY_NAMES[a] if a == b else f"{DAY_NAMES[a]}-{DAY_NAMES[b]}" for a, b in runs)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _first_instant_reading(local: datetime, zone: ZoneInfo) -> datetime:
    """The first UTC instant at which the zone's clock reads ``local`` or later."""
    # fold=0: a repeated time means its first pass, and a skipped time is mapped with the offset
    # before the jump, which lands after the jump.
    after = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(after, zone) == local:
        return after
    # ``local`` lies in a skipped hour: with fold=1 it maps before the jump; the clock first
    # reads ``local`` or later at the jump itself, found to the second between the two.
    before = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= local:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
