"""Event-time windows: hour, day, week, month, quarter, year and all; UTC with Monday weeks
and calendar years unless an org's `Calendar` says otherwise.

Window starts are epoch milliseconds. `all` starts at 0 (1970-01-01T00:00:00Z). Months,
quarters and years begin at local midnight on the first day of a month; quarters and
years count from the org's `year_start_month` (1-12, default 1): with 4 (a fiscal year
from April), Q1 is April-June and the year 2026 window starts on 2026-04-01.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Final

import numpy as np

from schemas.vocabulary import DAY_MS, HOUR_MS, ROLLING_DAYS, WEEK_MS, RollingName, WindowName

# 1970-01-01 was a Thursday; the Monday on or before it is 1969-12-29, three days earlier.
_MONDAY_OFFSET_MS: Final = 3 * DAY_MS


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def week_start(ms: int) -> int:
    shifted = ms + _MONDAY_OFFSET_MS
    return shifted - shifted % WEEK_MS - _MONDAY_OFFSET_MS


def month_back(window: WindowName, month: int, year_start_month: int = 1) -> int:
    """Months from `month` (1-12) back to the first month of its `window` (month,
    quarter or year) in a year that begins in `year_start_month`."""
    place = (month - year_start_month) % 12  # 0: the year's first month
    return 0 if window == "month" else place % 3 if window == "quarter" else place


def first_day(d: date, window: WindowName, year_start_month: int = 1) -> date:
    """The first day of the month, quarter or year holding `d`."""
    months = d.year * 12 + d.month - 1 - month_back(window, d.month, year_start_month)
    return date(months // 12, months % 12 + 1, 1)


def _utc_first_day(ms: int, window: WindowName) -> int:
    d = datetime.fromtimestamp(ms // 1000, UTC).date()
    start = first_day(d, window)
    return int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()) * 1000


def window_start(window: WindowName, ms: int) -> int:
    if window == "hour":
        return hour_start(ms)
    if window == "day":
        return day_start(ms)
    if window == "week":
        return week_start(ms)
    if window == "all":
        return 0
    return _utc_first_day(ms, window)


def window_starts(ms: int) -> tuple[tuple[WindowName, int], ...]:
    """Every window an event at `ms` belongs to, as (window, start) pairs."""
    return (
        ("hour", hour_start(ms)),
        ("day", day_start(ms)),
        ("week", week_start(ms)),
        ("month", _utc_first_day(ms, "month")),
        ("quarter", _utc_first_day(ms, "quarter")),
        ("year", _utc_first_day(ms, "year")),
        ("all", 0),
    )


def _utc_month_starts(ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Month, calendar quarter and calendar year starts of UTC instants (numpy's months)."""
    months = ms.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
    quarter = months - months % 3  # month 0 is 1970-01, a January
    year = months - months % 12

    def to_ms(m: np.ndarray) -> np.ndarray:
        return np.asarray(m.astype("datetime64[M]").astype("datetime64[ms]").astype(np.int64))

    return to_ms(months), to_ms(quarter), to_ms(year)


# --- calendars: windows in an org's time zone, week start and year start -------------------

WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_QUARTER_MS: Final = 15 * 60_000
Starts = tuple[int, int, int, int, int, int]  # hour, day, week, month, quarter, year


class Calendar:
    """Where an org's hours, days, weeks, months, quarters and years begin: its IANA time
    zone, first weekday and first month of the (fiscal) year.

    Window starts stay UTC epoch milliseconds (the instant the local hour, day, ... begins),
    so stored rows and every reader are unchanged; only the boundaries move. A local day
    lasts 23 or 25 hours across a daylight-saving change, and a day whose midnight does
    not exist begins at the first instant it does; months, quarters and years begin at
    their first day's start.

    Fast: UTC offsets and their changes lie on a quarter hour almost always, so each such
    UTC quarter hour has one set of starts, computed once and cached. The few quarters
    that do not (an offset like Monrovia's -00:44:30 until 1972, changes at 00:01 local
    in Newfoundland until 2011 and at Casey in 2020-2022) are computed per instant.
    """

    __slots__ = ("_cache", "_irregular", "_zone", "timezone", "week_start", "year_start_month")

    def __init__(
        self, timezone: str = "UTC", week_start: str = "monday", year_start_month: int = 1
    ) -> None:
        from zoneinfo import ZoneInfo

        if week_start not in WEEKDAYS:
            raise ValueError(f"week_start must be one of {', '.join(WEEKDAYS)}: {week_start!r}")
        if not 1 <= year_start_month <= 12:
            raise ValueError(f"year_start_month must be 1 to 12: {year_start_month!r}")
        self.timezone = timezone
        self.week_start = week_start
        self.year_start_month = year_start_month
        self._zone = ZoneInfo(timezone)  # raises ZoneInfoNotFoundError for a bad name
        self._cache: dict[int, Starts] = {}
        self._irregular: set[int] = set()  # quarters whose starts change within them

    @property
    def is_utc_monday(self) -> bool:
        """UTC, Monday weeks and calendar years: the module's fast functions apply."""
        return (
            self.timezone in ("UTC", "Etc/UTC")
            and self.week_start == "monday"
            and self.year_start_month == 1
        )

    def _key(self) -> tuple[str, str, int]:
        return (self.timezone, self.week_start, self.year_start_month)

    def __repr__(self) -> str:
        return f"Calendar{self._key()!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Calendar) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _local_midnight(self, d: date) -> int:
        """The first instant of local date `d`, in epoch ms."""
        local = datetime(d.year, d.month, d.day, tzinfo=self._zone)
        return int(local.timestamp() * 1000)

    def _quarter(self, ms: int) -> Starts:
        q = ms - ms % _QUARTER_MS
        hit = self._cache.get(q)
        if hit is None:
            if q in self._irregular:
                return self._compute(ms)
            if len(self._cache) > 50_000:
                self._cache.clear()
                self._irregular.clear()
            if not self._regular(q):
                self._irregular.add(q)
                return self._compute(ms)
            hit = self._cache[q] = self._compute(q)
        return hit

    def _regular(self, q: int) -> bool:
        """Whether the local clock runs on, unchanged, from one local quarter hour to the
        next through the UTC quarter hour at `q`: then every instant in it has `q`'s starts."""
        offset = self._local(q).utcoffset()
        return (
            offset is not None
            and offset.total_seconds() % (_QUARTER_MS // 1000) == 0
            and self._local(q + _QUARTER_MS - 1).utcoffset() == offset
        )

    def _compute(self, at_ms: int) -> Starts:
        at = self._local(at_ms)
        offset = at.utcoffset()
        offset_ms = int(offset.total_seconds() * 1000) if offset is not None else 0
        hour = self._since_offset_change(at_ms - (at_ms + offset_ms) % HOUR_MS, at_ms, offset)
        today = at.date()
        back = (at.weekday() - WEEKDAYS.index(self.week_start)) % 7
        firsts = [first_day(today, w, self.year_start_month) for w in ("month", "quarter", "year")]
        return (
            hour,
            self._local_midnight(today),
            self._local_midnight(today - timedelta(days=back)),
            *(self._local_midnight(d) for d in firsts),
        )  # type: ignore[return-value]

    def _local(self, ms: int) -> datetime:
        """The org's local time at epoch millis `ms`."""
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone(self._zone)

    def _since_offset_change(self, hour: int, at_ms: int, offset: timedelta | None) -> int:
        """The local hour's start, or the instant the clock jumped if that came later.

        A 30-minute daylight-saving change (Australia/Lord_Howe) moves the clock off the
        local hour: `hour`, computed with the offset at `at_ms`, then falls before the
        jump, in the previous offset's time. The hour begins at the jump instead, found by
        bisection to the millisecond (a few zones changed at 00:01 local, off the quarter
        hour); no zone changes its offset twice within an hour."""
        if self._local(hour).utcoffset() == offset:
            return hour
        before, since = hour, at_ms  # the offset differs at `before`, is `offset` at `since`
        while since - before > 1:
            mid = (before + since) // 2
            before, since = (
                (before, mid) if self._local(mid).utcoffset() == offset else (mid, since)
            )
        return since

    def starts(self, ms: int) -> tuple[tuple[WindowName, int], ...]:
        """Every window an event at `ms` belongs to, as (window, start) pairs."""
        if self.is_utc_monday:
            return window_starts(ms)
        hour, day, week, month, quarter, year = self._quarter(ms)
        return (
            ("hour", hour),
            ("day", day),
            ("week", week),
            ("month", month),
            ("quarter", quarter),
            ("year", year),
            ("all", 0),
        )

    def starts_array(self, ms: np.ndarray) -> tuple[np.ndarray, ...]:
        """`starts` of many instants at once: hour, day, week, month, quarter and year
        start arrays. The calendar is constant within a quarter of an hour (`_quarter`),
        so each distinct quarter is computed once."""
        ms = np.asarray(ms, dtype=np.int64)
        if self.is_utc_monday:
            shifted = ms + _MONDAY_OFFSET_MS
            return (
                ms - ms % HOUR_MS,
                ms - ms % DAY_MS,
                shifted - shifted % WEEK_MS - _MONDAY_OFFSET_MS,
                *_utc_month_starts(ms),
            )
        quarters, inverse = np.unique(ms - ms % _QUARTER_MS, return_inverse=True)
        table = np.array([self._quarter(int(q)) for q in quarters], dtype=np.int64).reshape(-1, 6)
        columns = tuple(table[inverse, k] for k in range(6))
        if self._irregular:
            for i in np.flatnonzero(np.isin(ms - ms % _QUARTER_MS, list(self._irregular))):
                for column, start in zip(columns, self._compute(int(ms[i])), strict=True):
                    column[i] = start
        return columns

    def window_start(self, window: WindowName, ms: int) -> int:
        if self.is_utc_monday:
            return window_start(window, ms)
        if window == "all":
            return 0
        return self._quarter(ms)[_STARTS.index(window)]

    def day_start(self, ms: int) -> int:
        return day_start(ms) if self.is_utc_monday else self._quarter(ms)[1]

    def shift_days(self, day: int, n: int) -> int:
        """The start of the local day `n` days after the day starting at `day`."""
        if self.is_utc_monday:
            return day + n * DAY_MS
        local = self._local(day).date()
        return self._local_midnight(local + timedelta(days=n))


_STARTS: Final[tuple[WindowName, ...]] = ("hour", "day", "week", "month", "quarter", "year")
UTC_CALENDAR: Final = Calendar()
# Days from the first day of a month, quarter or year that surely lie in the next one (a
# month has at most 31 days, a quarter 92, a year 366) and not beyond it.
_INTO_NEXT: Final = {"month": 32, "quarter": 93, "year": 367}


def window_bounds(window: WindowName, at_ms: int, cal: Calendar) -> tuple[int, int | None]:
    """[start, end) of the window holding `at_ms` in the org's calendar; `all` has no end.

    The end is the next window's start: a local day of 23 or 25 hours ends where the
    org's calendar says (explain, the team boards and replay all take their windows here).
    """
    start = cal.window_start(window, at_ms)
    if window == "all":
        return 0, None
    if window == "hour":  # no local hour is longer than 60 minutes, some are shorter
        end = cal.window_start("hour", start + HOUR_MS)
    elif window == "day":
        end = cal.shift_days(start, 1)
    elif window == "week":
        end = cal.shift_days(start, 7)
    else:
        end = cal.window_start(window, cal.shift_days(start, _INTO_NEXT[window]))
    # A window can end sooner: an hour cut short by a clock change at 00:01, or a week
    # whose first day was skipped (Pacific/Apia, 2011-12-30), so that `start` reads the
    # next day and seven days on is a day too far. Then a window begins before `end`.
    while (inner := cal.window_start(window, end - 1)) > start:
        end = inner
    return start, end


def rolling_days(window: RollingName, at_ms: int, cal: Calendar) -> list[int]:
    """Starts of the org-local days of a rolling window holding `at_ms`, oldest first."""
    last = cal.day_start(at_ms)
    return [cal.shift_days(last, -k) for k in range(ROLLING_DAYS[window] - 1, -1, -1)]


@lru_cache(maxsize=256)
def calendar(
    timezone: str = "UTC", week_start: str = "monday", year_start_month: int = 1
) -> Calendar:
    """One shared `Calendar` per (time zone, week start, year start)."""
    if timezone in ("UTC", "Etc/UTC") and week_start == "monday" and year_start_month == 1:
        return UTC_CALENDAR
    return Calendar(timezone, week_start, year_start_month)
