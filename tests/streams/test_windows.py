from streams.windows import day_start, hour_start, week_start, window_start, window_starts
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
        "all": 0,
    }
