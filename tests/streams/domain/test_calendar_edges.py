"""Calendar edges, property-tested against an oracle that shares no code with windows.py.

`test_windows.py` checks window starts by stepping back minute by minute. Here every
window's [start, end) is found another way: the local calendar decides which local dates
and months a window covers (ordinal arithmetic for weekdays, month counting for quarters
and fiscal years), and a binary search over UTC milliseconds, asking zoneinfo only for
the local date, hour and offset of an instant, finds the first instant of each. Instants
are drawn from the whole range and close to every UTC offset change of the zone, so
starts that fall in a daylight-saving gap or overlap, 30-minute changes and skipped
days are all visited.
"""

from __future__ import annotations

import calendar as gregorian
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.vocabulary import HOUR_MS, WindowName
from streams.domain.windows import WEEKDAYS, calendar, window_bounds
from tests.streams.factories import ms

FINITE: Final[tuple[WindowName, ...]] = ("hour", "day", "week", "month", "quarter", "year")
MONTHS_IN: Final = {"month": 1, "quarter": 3, "year": 12}
ZONES: Final = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # +10:30/+11: a 30-minute daylight-saving change
    "America/Sao_Paulo",  # the clock jumped at midnight until 2019: no 00:00 on those days
    "Pacific/Apia",  # -10 to +14 at the end of 2011-12-29: there was no 2011-12-30
    "Asia/Kathmandu",  # +05:45, and +05:30 before 1986 (a 15-minute jump at midnight)
    "Pacific/Kiritimati",  # +14, and -10 before 1995: 1994-12-31 never happened
    "Pacific/Pago_Pago",  # -11
    "Antarctica/Casey",  # 2020-2022: changes at 00:01 local, off the quarter hour
)
# Instants from before Kathmandu's +05:45 (1986-01-01) to the end of 2100 (not leap).
LOW: Final = ms("1985-12-01T00:00:00")
HIGH: Final = ms("2101-01-01T00:00:00")
# Where a zone once set its clock back across midnight, a local date came twice (Casey,
# 2010-03-05 02:00 back to 03-04 23:00; Newfoundland and Labrador at 00:01 until 2010),
# so that day is not one interval of time: not a window `window_bounds` can describe.
# Instants there are left out, zone by zone.
SINCE: Final = {"Antarctica/Casey": ms("2011-01-01T00:00:00")}


# --- the oracle -------------------------------------------------------------------------


def _local(at: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at / 1000, UTC).astimezone(zone)


def _first(holds: Callable[[int], bool], lo: int, hi: int) -> int:
    """The first millisecond in (lo, hi] where `holds`, which is false at lo, true at hi
    and never false again once true."""
    assert not holds(lo) and holds(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if holds(mid) else (mid, hi)
    return hi


def first_instant_on_or_after(d: date, zone: ZoneInfo) -> int:
    """The first instant whose local date is `d` or later: the start of day `d`, or of the
    next day that exists if `d` was skipped."""
    naive = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
    return _first(lambda t: _local(t, zone).date() >= d, naive - 2 * 86_400_000, naive + 86_400_000)


def _hour_key(at: int, zone: ZoneInfo) -> tuple[date, int, timedelta | None]:
    local = _local(at, zone)
    return local.date(), local.hour, local.utcoffset()


def _months(d: date) -> int:
    return d.year * 12 + d.month - 1


def _month_date(months: int) -> date:
    return date(months // 12, months % 12 + 1, 1)


def expected_bounds(
    window: str, at: int, zone: ZoneInfo, week_start: int, year_start: int
) -> tuple[int, int]:
    """[start, end) of `window` at `at`: an hour is a run of one local (date, hour, offset);
    the other windows run from the first instant of their first local date to that of the
    next window's first date."""
    if window == "hour":
        key = _hour_key(at, zone)
        start = _first(lambda t: _hour_key(t, zone) == key, at - HOUR_MS - 1, at)
        end = _first(lambda t: _hour_key(t, zone) != key, at, at + HOUR_MS + 1)
        return (start, end)
    today = _local(at, zone).date()
    if window == "day":
        first, following = today, today + timedelta(days=1)
    elif window == "week":
        monday_based = (today.toordinal() - 1) % 7  # date.fromordinal(1) was a Monday
        first = today - timedelta(days=(monday_based - week_start) % 7)
        following = first + timedelta(days=7)
    else:
        span = MONTHS_IN[window]
        since_year_start = (today.month - year_start) % 12
        first_month = _months(today) - since_year_start % span
        first, following = _month_date(first_month), _month_date(first_month + span)
    return first_instant_on_or_after(first, zone), first_instant_on_or_after(following, zone)


# --- instants to try: anywhere, and next to each change of UTC offset ------------------


@cache
def offset_changes(timezone: str) -> tuple[int, ...]:
    """Every instant from LOW to HIGH where the zone's UTC offset changes (found by
    stepping six hours at a time, then bisecting)."""
    zone = ZoneInfo(timezone)
    out, step = [], 6 * HOUR_MS
    for lo in range(SINCE.get(timezone, LOW), HIGH, step):
        before = _local(lo, zone).utcoffset()
        if _local(lo + step, zone).utcoffset() != before:
            out.append(_first(lambda t, b=before: _local(t, zone).utcoffset() != b, lo, lo + step))
    return tuple(out)


@st.composite
def zone_and_instant(draw: st.DrawFn, zones: tuple[str, ...] = ZONES) -> tuple[str, int]:
    timezone = draw(st.sampled_from(zones))
    changes = offset_changes(timezone)
    if changes and draw(st.booleans()):
        near = draw(st.sampled_from(changes))
        # the change itself, the ms around it, or anything within two days of it
        around = draw(st.sampled_from([-1, 0, 1]) | st.integers(-2 * 86_400_000, 2 * 86_400_000))
        return timezone, max(near + around, SINCE.get(timezone, LOW))
    return timezone, draw(st.integers(SINCE.get(timezone, LOW), HIGH - 1))


calendars = st.tuples(st.sampled_from(WEEKDAYS), st.integers(1, 12))


# --- properties -------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(zone_and_instant(), calendars, st.sampled_from(FINITE))
@example(("Pacific/Apia", ms("2011-12-31T12:00:00")), ("friday", 1), "week")  # a skipped Friday
@example(("Antarctica/Casey", ms("2022-10-01T16:00:30")), ("monday", 1), "hour")  # 00:00-00:01
@example(("Antarctica/Casey", ms("2022-10-01T16:05:00")), ("monday", 1), "hour")  # 03:01-04:00
@example(("America/Sao_Paulo", ms("2018-11-04T03:00:00")), ("sunday", 11), "quarter")
@example(("Asia/Kathmandu", ms("1985-12-31T18:40:00")), ("monday", 1), "year")  # 00:00 skipped
def test_bounds_are_the_local_calendars(
    zone_at: tuple[str, int], cal_args: tuple[str, int], window: str
) -> None:
    timezone, at = zone_at
    first, year_start = cal_args
    cal = calendar(timezone, first, year_start)
    start, end = window_bounds(window, at, cal)
    assert (start, end) == expected_bounds(
        window, at, ZoneInfo(timezone), WEEKDAYS.index(first), year_start
    )
    assert end is not None and start <= at < end
    # A window's start is its own start; its end is the start of the next one, and the
    # instant before the end is still in it.
    assert cal.window_start(window, start) == start
    assert cal.window_start(window, end) == end
    assert cal.window_start(window, end - 1) == start
    assert window_bounds(window, end, cal)[0] == end


# hour in day in month in quarter in year, and day in week; a week can span two months,
# quarters or years, so nothing holds the week but `all`.
NESTED: Final = (
    ("hour", "day"),
    ("day", "month"),
    ("month", "quarter"),
    ("quarter", "year"),
    ("day", "week"),
)


@settings(max_examples=400, deadline=None)
@given(zone_and_instant(), calendars)
def test_windows_nest(zone_at: tuple[str, int], cal_args: tuple[str, int]) -> None:
    timezone, at = zone_at
    cal = calendar(timezone, *cal_args)
    bounds = {w: window_bounds(w, at, cal) for w in FINITE}
    for inner, outer in NESTED:
        (i0, i1), (o0, o1) = bounds[inner], bounds[outer]
        assert i1 is not None and o1 is not None
        assert o0 <= i0 < i1 <= o1, (inner, outer)
    assert window_bounds("all", at, cal) == (0, None)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        zone_and_instant(("Antarctica/Casey", "Australia/Lord_Howe")), min_size=1, max_size=30
    ),
    calendars,
)
def test_starts_of_many_instants_are_the_starts_of_each(
    zone_ats: list[tuple[str, int]], cal_args: tuple[str, int]
) -> None:
    for timezone in {z for z, _ in zone_ats}:
        cal = calendar(timezone, *cal_args)
        ats = [at for z, at in zone_ats if z == timezone]
        arrays = cal.starts_array(np.array(ats, dtype=np.int64))
        for k, at in enumerate(ats):
            assert [int(a[k]) for a in arrays] == [s for _, s in cal.starts(at)[:6]], at


# --- fiscal years -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(zone_and_instant(), st.integers(1, 12))
def test_four_quarters_from_the_fiscal_years_first_month_tile_the_year(
    zone_at: tuple[str, int], year_start: int
) -> None:
    timezone, at = zone_at
    zone, cal = ZoneInfo(timezone), calendar(timezone, "monday", year_start)
    year, year_end = window_bounds("year", at, cal)
    edge = year
    for k in range(4):
        q_start, q_end = window_bounds("quarter", edge, cal)
        assert q_start == edge and q_end is not None
        # every quarter begins on the 1st of month year_start + 3k, at the day's first instant
        month = (year_start - 1 + 3 * k) % 12 + 1
        first_day = _local(q_start, zone).date()
        assert (first_day.month, first_day.day) == (month, 1)
        edge = q_end
    assert edge == year_end


@pytest.mark.parametrize("year_start", range(1, 13))
def test_fiscal_year_of_every_first_month(year_start: int) -> None:
    cal = calendar("UTC", "monday", year_start)
    if year_start == 1:
        assert cal is calendar()  # the fast UTC functions
    at = ms("2026-06-15T12:00:00")
    year, end = window_bounds("year", at, cal)
    begins = 2026 if year_start <= 6 else 2025
    assert year == ms(f"{begins}-{year_start:02d}-01T00:00:00")
    assert end == ms(f"{begins + 1}-{year_start:02d}-01T00:00:00")
    quarter, _ = window_bounds("quarter", at, cal)
    months_in = (6 - year_start) % 3  # June's place in its fiscal quarter
    first = 6 - months_in
    assert quarter == ms(f"2026-{first:02d}-01T00:00:00")


# --- weeks ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.dates(date(1986, 1, 1), date(2100, 12, 31)), st.integers(0, 86_399_999))
def test_monday_weeks_are_iso_weeks(d: date, ms_of_day: int) -> None:
    at = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000) + ms_of_day
    iso_year, iso_week, _ = d.isocalendar()
    monday = date.fromisocalendar(iso_year, iso_week, 1)
    for cal in (calendar(), calendar("UTC", "monday", 4)):  # the fast path and the general one
        start, end = window_bounds("week", at, cal)
        assert datetime.fromtimestamp(start / 1000, UTC).date() == monday
        assert end == start + 7 * 86_400_000


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York", "Asia/Kathmandu"])
@pytest.mark.parametrize("iso_year", [2020, 2026])
def test_iso_week_53_spans_the_year_end(timezone: str, iso_year: int) -> None:
    assert date(iso_year, 12, 31).isocalendar()[1] == 53
    cal, zone = calendar(timezone, "monday"), ZoneInfo(timezone)
    new_year = int(datetime(iso_year + 1, 1, 1, 12, tzinfo=zone).timestamp() * 1000)
    start, end = window_bounds("week", new_year, cal)
    assert _local(start, zone).replace(tzinfo=None) == datetime(iso_year, 12, 28)
    assert end is not None and _local(end, zone).replace(tzinfo=None) == datetime(
        iso_year + 1, 1, 4
    )
    # the week is in two years, so neither year holds it
    year, year_end = window_bounds("year", new_year, cal)
    assert start < year < end and window_bounds("year", start, cal)[1] == year
    assert year_end is not None and end < year_end


# --- leap days ----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(1986, 2100), st.sampled_from(("UTC", "Europe/Berlin", "Pacific/Kiritimati")))
def test_february_and_the_year_hold_the_leap_day_only_in_leap_years(
    year: int, timezone: str
) -> None:
    cal, zone = calendar(timezone, "monday", 3), ZoneInfo(timezone)  # fiscal years from March
    mid_feb = int(datetime(year, 2, 15, 12, tzinfo=zone).timestamp() * 1000)
    feb, march = window_bounds("month", mid_feb, cal)
    assert march is not None
    days = round(
        (_local(march, zone).replace(tzinfo=None) - _local(feb, zone).replace(tzinfo=None)).days
    )
    assert days == (29 if gregorian.isleap(year) else 28)
    # The fiscal year from March of year-1 ends with this February.
    fy, fy_end = window_bounds("year", mid_feb, cal)
    assert _local(fy, zone).date() == date(year - 1, 3, 1) and fy_end == march
    last_day = window_bounds("day", march - 1, cal)[0]
    assert _local(last_day, zone).date() == date(year, 2, 29 if gregorian.isleap(year) else 28)


def test_leap_day_2024_and_no_leap_day_in_2100() -> None:
    cal = calendar("UTC", "sunday", 2)
    assert window_bounds("day", ms("2024-02-29T23:59:59.999"), cal) == (
        ms("2024-02-29T00:00:00"),
        ms("2024-03-01T00:00:00"),
    )
    assert window_bounds("day", ms("2100-02-28T12:00:00"), cal)[1] == ms("2100-03-01T00:00:00")
    assert window_bounds("year", ms("2024-02-29T12:00:00"), cal) == (
        ms("2024-02-01T00:00:00"),
        ms("2025-02-01T00:00:00"),
    )
    for y, days in ((2024, 366), (2100, 365)):
        start, end = window_bounds("year", ms(f"{y}-06-01T00:00:00"), calendar())
        assert end is not None and end - start == days * 86_400_000


# --- far east and far west of UTC ----------------------------------------------------------


def test_one_instant_is_in_two_quarters_and_two_years_across_the_date_line() -> None:
    at = ms("2025-12-31T12:00:00")  # 2026-01-01 02:00 in Kiritimati, 2025-12-31 01:00 in Pago Pago
    east, west = calendar("Pacific/Kiritimati", "monday"), calendar("Pacific/Pago_Pago", "monday")
    assert window_bounds("quarter", at, east) == (
        ms("2025-12-31T10:00:00"),
        ms("2026-03-31T10:00:00"),
    )
    assert window_bounds("year", at, east) == (ms("2025-12-31T10:00:00"), ms("2026-12-31T10:00:00"))
    assert window_bounds("quarter", at, west) == (
        ms("2025-10-01T11:00:00"),
        ms("2026-01-01T11:00:00"),
    )
    assert window_bounds("year", at, west) == (ms("2025-01-01T11:00:00"), ms("2026-01-01T11:00:00"))
    # Fiscal years from July: 2026-07-01 begins 25 hours apart in the two zones.
    east, west = (
        calendar("Pacific/Kiritimati", "monday", 7),
        calendar("Pacific/Pago_Pago", "monday", 7),
    )
    july = ms("2026-07-01T00:00:00")
    assert window_bounds("year", july, east)[0] == ms("2026-06-30T10:00:00")
    assert window_bounds("year", july, west)[1] == ms("2026-07-01T11:00:00")


# --- regressions found by the properties above ---------------------------------------------


def test_the_week_after_a_skipped_week_start_day_begins_on_time() -> None:
    # Pacific/Apia went from 2011-12-29 23:59:59 (-10) to 2011-12-31 00:00 (+14). With
    # Friday weeks, the week of Friday 2011-12-30 begins at the first instant that exists,
    # Saturday 00:00, and ends on Friday 2012-01-06, not a day later.
    apia = calendar("Pacific/Apia", "friday")
    start, end = window_bounds("week", ms("2011-12-31T12:00:00"), apia)
    assert start == ms("2011-12-30T10:00:00")  # 2011-12-31 00:00 +14
    assert end == ms("2012-01-05T10:00:00") == apia.window_start("week", ms("2012-01-05T10:00:00"))


def test_a_clock_change_off_the_quarter_hour_ends_and_starts_hours_there() -> None:
    # Antarctica/Casey, 2022-10-02 00:01 (+08) became 03:01 (+11), 16:01 UTC: the hour
    # 00:00 lasted one minute and the hour 03 began at 03:01.
    casey = calendar("Antarctica/Casey", "monday")
    jump = ms("2022-10-01T16:01:00")
    assert window_bounds("hour", jump - 1, casey) == (ms("2022-10-01T16:00:00"), jump)
    for at in (jump, jump + 1, ms("2022-10-01T16:14:00"), ms("2022-10-01T16:20:00")):
        assert window_bounds("hour", at, casey) == (jump, ms("2022-10-01T17:00:00")), at
    assert window_bounds("day", jump, casey)[0] == ms("2022-10-01T16:00:00")


@pytest.mark.xfail(strict=True, reason="a local date that comes twice is not one window")
def test_a_day_that_comes_back_after_midnight_holds_its_instants() -> None:
    # Antarctica/Casey, 2010-03-05 02:00 (+11) went back to 03-04 23:00 (+08) at 15:00 UTC:
    # 03-04 23:30 (+08) lies after the day 03-04's end as `window_bounds` gives it (03-05
    # 00:00 +11). Its events count in day 03-04 (`window_start` is that day's start);
    # only the day's [start, end) leaves them out. Known, left as it is (see SINCE).
    casey = calendar("Antarctica/Casey", "monday")
    at = ms("2010-03-04T15:30:00")
    start, end = window_bounds("day", at, casey)
    assert end is not None and start <= at < end
