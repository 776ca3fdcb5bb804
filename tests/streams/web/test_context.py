"""What the API's areas share (streams/web/context.py), without I/O: windows in an org's
calendar, and a request's org, window and window bounds read once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.domain.rules import RuleConfig, RulesLookup
from streams.web.context import org_window_start, previous_window_start, window_scope
from streams.web.params import BadRequest, Params

RULES = RulesLookup(per_org={"nz": RuleConfig(timezone="Pacific/Auckland", week_start="sunday")})


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_previous_window_start_utc() -> None:
    start = ms("2026-03-09T00:00:00")  # a Monday
    assert previous_window_start(RULES, "acme", "week", start) == ms("2026-03-02T00:00:00")
    assert previous_window_start(RULES, "acme", "day", start) == ms("2026-03-08T00:00:00")
    assert previous_window_start(RULES, "acme", "hour", start) == ms("2026-03-08T23:00:00")
    assert previous_window_start(RULES, "acme", "all", 0) is None


def test_previous_window_follows_the_org_calendar() -> None:
    # Auckland leaves daylight saving on 2026-04-05 03:00 local: that local day has 25 h.
    at = ms("2026-04-05T15:00:00")  # Monday 2026-04-06 03:00 NZST (UTC+12)
    day = RULES("nz").calendar.window_start("day", at)
    assert day == ms("2026-04-05T12:00:00")
    assert previous_window_start(RULES, "nz", "day", day) == ms("2026-04-04T11:00:00")
    week = RULES("nz").calendar.window_start("week", at)  # Sunday 2026-04-05 00:00 NZDT
    assert week == ms("2026-04-04T11:00:00")
    assert previous_window_start(RULES, "nz", "week", week) == ms("2026-03-28T11:00:00")


def test_window_scope_is_the_org_window_holding_at() -> None:
    at = ms("2026-04-05T15:00:00")  # Monday 2026-04-06 03:00 NZST
    q = Params([("org", "nz"), ("window", "day"), ("at", str(at))])
    org, window, start, end = window_scope(q, RULES)
    assert (org, window) == ("nz", "day")
    assert start == org_window_start(RULES, "nz", "day", at) == ms("2026-04-05T12:00:00")
    assert end == ms("2026-04-06T12:00:00")
    everything = window_scope(Params([("org", "acme"), ("window", "all")]), RULES)
    assert everything == ("acme", "all", 0, None)


def test_window_scope_reads_org_first() -> None:
    with pytest.raises(BadRequest, match="'org'"):
        window_scope(Params([("window", "decade"), ("at", "x")]), RULES)
    with pytest.raises(BadRequest, match="'window'"):
        window_scope(Params([("org", "acme"), ("window", "decade"), ("at", "x")]), RULES)
    with pytest.raises(BadRequest, match="'at'"):
        window_scope(Params([("org", "acme"), ("at", "x")]), RULES)
