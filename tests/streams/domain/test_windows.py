from streams.domain.windows import day_start, hour_start, week_start, window_start, window_starts
from tests.streams.factories import ms


def test_hour_and_day_boundaries_are_utc() -> None:
    assert hour_start(ms("2026-11-23T10:59:59.999")) == ms("2026-11-23T10:00:00")
    assert hour_start(ms("2026-11-23T11:00:00")) == ms("2026-11-23T11:00:00")
    assert day_start(ms("2026-11-23T23:59:59.999")) == ms("2026-11-23T00:00:00")
    assert day_start(ms("2026-11-24T00:00:00")) == ms("2026-11-24T00:00:00")


def test_week_starts_monday_midnight_utc() -> None:
    # 2026-11-23 is a Monday.
    assert week_start(ms("2026-11-23T00:00:00")) == ms("2026-11-23T00:00:00")
    assert week_start(ms("2026-11-29T23:59:59.999")) == ms("2026-11-23T00:00:00")
    assert week_start(ms("2026-11-22T23:59:59.999")) == ms("2026-11-16T00:00:00")
    assert week_start(ms("2026-11-30T00:00:00")) == ms("2026-11-30T00:00:00")


def test_week_before_epoch_and_at_epoch() -> None:
    assert week_start(0) == ms("1969-12-29T00:00:00")
    assert week_start(ms("1970-01-05T00:00:00")) == ms("1970-01-05T00:00:00")


def test_all_window_and_every_window() -> None:
    t = ms("2026-11-25T13:45:00")
    assert window_start("all", t) == 0
    assert dict(window_starts(t)) == {
        "hour": ms("2026-11-25T13:00:00"),
        "day": ms("2026-11-25T00:00:00"),
        "week": ms("2026-11-23T00:00:00"),
        "month": ms("2026-11-01T00:00:00"),
        "quarter": ms("2026-10-01T00:00:00"),
        "year": ms("2026-01-01T00:00:00"),
        "all": 0,
    }


# --- calendars -------------------------------------------------------------------------

import itertools  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

import numpy as np  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from streams.domain.windows import (  # noqa: E402
    WEEKDAYS,
    Calendar,
    calendar,
    rolling_days,
    window_bounds,
)

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # a 30-minute daylight-saving shift
    "America/Sao_Paulo",  # midnight did not exist on DST days (until 2019)
    "Pacific/Apia",  # skipped a whole day (2011-12-30)
]


def _local(ms_: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms_ / 1000, UTC).astimezone(zone)


def _first_instant_of(day: datetime, zone: ZoneInfo, before_ms: int) -> int:
    """Brute force: the smallest minute-aligned instant whose local date is `day`'s."""
    t = before_ms - before_ms % 60_000
    while _local(t - 60_000, zone).date() == day.date():
        t -= 60_000
    return t


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=ms("2010-01-01T00:00:00"), max_value=ms("2030-01-01T00:00:00")),
    st.sampled_from(ZONES),
    st.sampled_from(WEEKDAYS),
    st.integers(min_value=1, max_value=12),
)
def test_calendar_starts_match_local_time_by_brute_force(
    at: int, timezone: str, first: str, year_start: int
) -> None:
    cal = calendar(timezone, first, year_start)
    zone = ZoneInfo(timezone)
    starts = cal.starts(at)
    (_, hour), (_, day), (_, week), (_, month), (_, quarter), (_, year), (_, all_) = starts
    assert all_ == 0 and hour <= at and day <= at and week <= day
    # The hour: the last instant at or before `at` where the local minute and second are 0,
    # or where the offset changed (the local clock jumped).
    local_hour = _local(hour, zone)
    assert hour > at - 2 * 3_600_000
    assert local_hour.minute == 0 or _local(hour - 1, zone).utcoffset() != local_hour.utcoffset()
    assert _local(at, zone).hour == local_hour.hour or hour == at - at % 60_000
    # The day: the first instant of the local date of `at`.
    assert _local(day, zone).date() == _local(at, zone).date()
    assert day == _first_instant_of(_local(at, zone), zone, at)
    # The week: the first instant of the latest `first` weekday on or before that date.
    local_week = _local(week, zone)
    assert local_week.weekday() == WEEKDAYS.index(first) or timezone == "Pacific/Apia"
    assert _local(at, zone).date() - local_week.date() < timedelta(days=7 + 1)
    assert cal.window_start("day", at) == day and cal.day_start(at) == day
    assert cal.window_start("week", at) == week and cal.window_start("hour", at) == hour
    # Month, quarter, year: the first instant of their first local day, which is the 1st
    # of the month, of the quarter's first month, of the year's (counted from year_start).
    local = _local(at, zone)
    for start, months_back in (
        (month, 0),
        (quarter, (local.month - year_start) % 12 % 3),
        (year, (local.month - year_start) % 12),
    ):
        n = local.year * 12 + local.month - 1 - months_back
        first_day = datetime(n // 12, n % 12 + 1, 1, 12, tzinfo=zone)
        assert _local(start, zone).date() == first_day.date(), (start, first_day)
        assert start == _first_instant_of(first_day, zone, int(first_day.timestamp() * 1000))
        assert start <= day
    got = cal.starts_array(np.array([at], dtype=np.int64))
    assert [int(a[0]) for a in got] == [hour, day, week, month, quarter, year]


def test_a_thirty_minute_clock_change_starts_an_hour_of_its_own() -> None:
    # Australia/Lord_Howe, 2015-10-04: at 02:00 (+10:30) the clock went to 02:30 (+11:00);
    # 2016-04-03: at 02:00 (+11:00) back to 01:30 (+10:30). Found by the property above.
    howe = calendar("Australia/Lord_Howe", "monday")
    spring = ms("2015-10-03T15:30:00")  # the jump: 02:30 +11:00
    assert howe.window_start("hour", spring - 1) == ms("2015-10-03T14:30:00")  # 01:00
    assert howe.window_start("hour", spring) == spring
    assert window_bounds("hour", spring, howe) == (spring, ms("2015-10-03T16:00:00"))
    assert window_bounds("hour", spring - 1, howe) == (ms("2015-10-03T14:30:00"), spring)
    autumn = ms("2016-04-02T15:00:00")  # back to 01:30 +10:30
    assert howe.window_start("hour", autumn - 1) == ms("2016-04-02T14:00:00")  # 01:00 +11
    assert window_bounds("hour", autumn, howe) == (autumn, ms("2016-04-02T15:30:00"))
    # Every hour of both days is at most 60 minutes and they tile the time without gaps.
    for day in (ms("2015-10-03T12:00:00"), ms("2016-04-02T12:00:00")):
        start, end = window_bounds("hour", day, howe)
        while start < day + 12 * 3_600_000:
            assert end is not None and 0 < end - start <= 3_600_000
            following, after = window_bounds("hour", end, howe)
            assert following == end
            start, end = following, after


def test_utc_calendar_is_the_v1_windows() -> None:
    at = ms("2026-11-25T13:45:00")
    assert calendar() is calendar("UTC", "monday")
    assert calendar().starts(at) == window_starts(at)


def test_local_days_across_daylight_saving_changes() -> None:
    berlin = calendar("Europe/Berlin", "monday")
    spring = berlin.day_start(ms("2026-03-29T12:00:00"))
    assert spring == ms("2026-03-28T23:00:00")
    assert berlin.shift_days(spring, 1) - spring == 23 * 3_600_000
    autumn = berlin.day_start(ms("2026-10-25T12:00:00"))
    assert berlin.shift_days(autumn, 1) - autumn == 25 * 3_600_000
    # Sao Paulo, 2018-11-04: the day began at 01:00 local (03:00Z), midnight never happened.
    sp = calendar("America/Sao_Paulo", "sunday")
    assert sp.day_start(ms("2018-11-04T12:00:00")) == ms("2018-11-04T03:00:00")
    assert sp.window_start("week", ms("2018-11-04T12:00:00")) == ms("2018-11-04T03:00:00")


def test_a_bad_time_zone_or_weekday_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError):
        Calendar("UTC", "someday")
    with pytest.raises(Exception, match="Mars"):
        Calendar("Mars/Olympus_Mons")


def test_rolling_days_are_local_days_ending_with_the_day_of_at() -> None:
    cal = Calendar("Europe/Berlin")
    at = 1_792_000_000_000 + 20 * 86_400_000  # 2026-11-03; DST ended on 2026-10-25
    days = rolling_days("last_30d", at, cal)
    assert len(days) == 30 and days[-1] == cal.day_start(at)
    assert all(cal.day_start(d) == d for d in days)
    assert [b - a for a, b in itertools.pairwise(days)].count(25 * 3_600_000) == 1
    assert days == sorted(set(days))
