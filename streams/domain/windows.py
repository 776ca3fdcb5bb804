"""Event-time windows: hour, day, week and all; UTC with Monday weeks unless an org's
`Calendar` says otherwise.

Window starts are epoch milliseconds. `all` starts at 0 (1970-01-01T00:00:00Z).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Final

import numpy as np

from schemas.vocabulary import DAY_MS, HOUR_MS, WEEK_MS, WindowName

# 1970-01-01 was a Thursday; the Monday on or before it is 1969-12-29, three days earlier.
_MONDAY_OFFSET_MS: Final = 3 * DAY_MS


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def week_start(ms: int) -> int:
    shifted = ms + _MONDAY_OFFSET_MS
    return shifted - shifted % WEEK_MS - _MONDAY_OFFSET_MS


def window_start(window: WindowName, ms: int) -> int:
    if window == "hour":
        return hour_start(ms)
    if window == "day":
        return day_start(ms)
    if window == "week":
        return week_start(ms)
    return 0


def window_starts(ms: int) -> tuple[tuple[WindowName, int], ...]:
    """Every window an event at `ms` belongs to, as (window, start) pairs."""
    return (("hour", hour_start(ms)), ("day", day_start(ms)), ("week", week_start(ms)), ("all", 0))


# --- calendars: windows in an org's time zone and week start -------------------------------

WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_QUARTER_MS: Final = 15 * 60_000


class Calendar:
    """Where an org's hours, days and weeks begin: its IANA time zone and first weekday.

    Window starts stay UTC epoch milliseconds (the instant the local hour, day or week
    begins), so stored rows and every reader are unchanged; only the boundaries move. A
    local day lasts 23 or 25 hours across a daylight-saving change, and a day whose
    midnight does not exist begins at the first instant it does.

    Fast: every UTC offset and every transition lies on a quarter hour, so each UTC
    quarter hour has one set of starts, computed once and cached.
    """

    __slots__ = ("_cache", "_zone", "timezone", "week_start")

    def __init__(self, timezone: str = "UTC", week_start: str = "monday") -> None:
        from zoneinfo import ZoneInfo

        if week_start not in WEEKDAYS:
            raise ValueError(f"week_start must be one of {', '.join(WEEKDAYS)}: {week_start!r}")
        self.timezone = timezone
        self.week_start = week_start
        self._zone = ZoneInfo(timezone)  # raises ZoneInfoNotFoundError for a bad name
        self._cache: dict[int, tuple[int, int, int]] = {}

    @property
    def is_utc_monday(self) -> bool:
        return self.timezone in ("UTC", "Etc/UTC") and self.week_start == "monday"

    def __repr__(self) -> str:
        return f"Calendar({self.timezone!r}, {self.week_start!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Calendar) and (self.timezone, self.week_start) == (
            other.timezone,
            other.week_start,
        )

    def __hash__(self) -> int:
        return hash((self.timezone, self.week_start))

    def _local_midnight(self, d: date) -> int:
        """The first instant of local date `d`, in epoch ms."""
        local = datetime(d.year, d.month, d.day, tzinfo=self._zone)
        return int(local.timestamp() * 1000)

    def _quarter(self, ms: int) -> tuple[int, int, int]:
        q = ms - ms % _QUARTER_MS
        hit = self._cache.get(q)
        if hit is None:
            if len(self._cache) > 50_000:
                self._cache.clear()
            at = self._local(q)
            offset = at.utcoffset()
            offset_ms = int(offset.total_seconds() * 1000) if offset is not None else 0
            hour = self._since_offset_change(q - (q + offset_ms) % HOUR_MS, q, offset)
            day = self._local_midnight(at.date())
            back = (at.weekday() - WEEKDAYS.index(self.week_start)) % 7
            week = self._local_midnight(at.date() - timedelta(days=back))
            hit = self._cache[q] = (hour, day, week)
        return hit

    def _local(self, ms: int) -> datetime:
        """The org's local time at epoch millis `ms`."""
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone(self._zone)

    def _since_offset_change(self, hour: int, q: int, offset: timedelta | None) -> int:
        """The local hour's start, or the instant the clock jumped if that came later.

        A 30-minute daylight-saving change (Australia/Lord_Howe) moves the clock off the
        local hour: `hour`, computed with the offset at `q`, then falls before the jump, in
        the previous offset's time. The hour begins at the jump instead; zones change their
        offset on a quarter of an hour, so the search goes back by quarters from `q`."""
        if self._local(hour).utcoffset() == offset:
            return hour
        start = q
        while start - _QUARTER_MS > hour and self._local(start - _QUARTER_MS).utcoffset() == offset:
            start -= _QUARTER_MS
        return start

    def starts(self, ms: int) -> tuple[tuple[WindowName, int], ...]:
        """Every window an event at `ms` belongs to, as (window, start) pairs."""
        if self.is_utc_monday:
            return window_starts(ms)
        hour, day, week = self._quarter(ms)
        return (("hour", hour), ("day", day), ("week", week), ("all", 0))

    def starts_array(self, ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`starts` of many instants at once: (hour, day, week) start arrays. The calendar
        is constant within a quarter of an hour (`_quarter`), so each distinct quarter is
        computed once."""
        ms = np.asarray(ms, dtype=np.int64)
        if self.is_utc_monday:
            shifted = ms + _MONDAY_OFFSET_MS
            return (
                ms - ms % HOUR_MS,
                ms - ms % DAY_MS,
                shifted - shifted % WEEK_MS - _MONDAY_OFFSET_MS,
            )
        quarters, inverse = np.unique(ms - ms % _QUARTER_MS, return_inverse=True)
        table = np.array([self._quarter(int(q)) for q in quarters], dtype=np.int64).reshape(-1, 3)
        return table[inverse, 0], table[inverse, 1], table[inverse, 2]

    def window_start(self, window: WindowName, ms: int) -> int:
        if self.is_utc_monday:
            return window_start(window, ms)
        if window == "all":
            return 0
        hour, day, week = self._quarter(ms)
        return hour if window == "hour" else day if window == "day" else week

    def day_start(self, ms: int) -> int:
        return day_start(ms) if self.is_utc_monday else self._quarter(ms)[1]

    def shift_days(self, day: int, n: int) -> int:
        """The start of the local day `n` days after the day starting at `day`."""
        if self.is_utc_monday:
            return day + n * DAY_MS
        local = self._local(day).date()
        return self._local_midnight(local + timedelta(days=n))


UTC_CALENDAR: Final = Calendar()


def window_bounds(window: WindowName, at_ms: int, cal: Calendar) -> tuple[int, int | None]:
    """[start, end) of the window holding `at_ms` in the org's calendar; `all` has no end.

    The end is the next window's start: a local day of 23 or 25 hours ends where the
    org's calendar says (explain, the team boards and replay all take their windows here).
    """
    start = cal.window_start(window, at_ms)
    if window == "hour":  # no local hour is longer than 60 minutes, some are shorter
        return start, cal.window_start("hour", start + HOUR_MS)
    if window == "day":
        return start, cal.shift_days(start, 1)
    if window == "week":
        return start, cal.shift_days(start, 7)
    return 0, None


@lru_cache(maxsize=256)
def calendar(timezone: str = "UTC", week_start: str = "monday") -> Calendar:
    """One shared `Calendar` per (time zone, week start)."""
    if timezone in ("UTC", "Etc/UTC") and week_start == "monday":
        return UTC_CALENDAR
    return Calendar(timezone, week_start)
