"""Event-time windows, UTC: hour, day, week (Monday 00:00 UTC) and all.

Window starts are epoch milliseconds. `all` starts at 0 (1970-01-01T00:00:00Z).
"""

from __future__ import annotations

from typing import Final, Literal

WindowName = Literal["hour", "day", "week", "all"]
WINDOWS: Final[tuple[WindowName, ...]] = ("hour", "day", "week", "all")

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS
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
