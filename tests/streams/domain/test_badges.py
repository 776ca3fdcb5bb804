"""Badge rules as configuration: thresholds on any metric and window, first-time badges,
and streaks with freeze days; each checked against a brute-force model."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.vocabulary import DAY_MS, Metric
from streams.domain.badges import BadgeRule, streak_ends
from streams.domain.rules import Effect, RuleConfig, RulesLookup
from streams.domain.scorebook import Applied, ScoreBook, apply_effects
from tests.streams.factories import ms

MONDAY = date(2026, 11, 2)


def _weeks(n: int) -> list[int]:
    return [(MONDAY + timedelta(days=i) - MONDAY).days // 7 for i in range(n)]


def test_a_streak_needs_consecutive_days_without_freezes() -> None:
    rule = BadgeRule("s3", "streak", "shares", days=3)
    active = [True, True, False, True, True, True]
    assert streak_ends(active, _weeks(6), 0, rule) == []  # none runs through day 0
    assert streak_ends(active, _weeks(6), 3, rule) == [5]


def test_one_freeze_per_week_bridges_one_missing_day_and_does_not_count() -> None:
    rule = BadgeRule("s3f", "streak", "shares", days=3, freezes_per_week=1)
    # Mon Tue (Wed off) Thu: 3 share days with one freeze -> ends Thursday.
    assert streak_ends([True, True, False, True], _weeks(4), 0, rule) == [3]
    # Two missing days in one week: the second cannot be frozen.
    assert streak_ends([True, False, False, True, True], _weeks(5), 0, rule) == []
    # Missing days in two different weeks: one freeze each (Sun of week 1, Tue of week 2).
    days = [True] * 6 + [False] + [True] + [False] + [True]  # Mon..Sat, Sun off, Mon, Tue off, Wed
    ends = streak_ends(days, _weeks(len(days)), 0, rule)
    assert ends == [2, 3, 4, 5, 7, 9]


def _brute_streak_ends(active: list[bool], weeks: list[int], rule: BadgeRule) -> set[int]:
    """Every (start, end) span: ends active, inside only share days or freezes within the
    per-week allowance, and at least `days` share days."""
    out = set()
    for start, end in itertools.combinations_with_replacement(range(len(active)), 2):
        if not (active[start] and active[end]):
            continue
        span = range(start, end + 1)
        off: dict[int, int] = {}
        for i in span:
            if not active[i]:
                off[weeks[i]] = off.get(weeks[i], 0) + 1
        frozen_ok = all(n <= rule.freezes_per_week for n in off.values())
        if frozen_ok and sum(active[i] for i in span) >= rule.days:
            out.add(end)
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=30),
    st.integers(1, 6),
    st.integers(0, 2),
)
def test_streak_ends_match_brute_force(active: list[bool], days: int, freezes: int) -> None:
    rule = BadgeRule("s", "streak", "shares", days=days, freezes_per_week=freezes)
    weeks = _weeks(len(active))
    got: set[int] = set()
    for center in range(len(active)):
        got |= set(streak_ends(active, weeks, center, rule))
    assert got == _brute_streak_ends(active, weeks, rule)


CONFIGURED = (
    BadgeRule("reactor", "threshold", "reactions_received", "day", 3),
    BadgeRule("scorer", "threshold", "score", "week", 10),
    BadgeRule("first_share", "first", "shares"),
    BadgeRule("streak_4f", "streak", "shares", days=4, freezes_per_week=1),
)


def _effects(raw: list[tuple[str, str, int]]) -> list[Effect]:
    start = ms("2026-11-02T09:00:00")  # a Monday
    metrics = {"s": Metric.SHARES, "r": Metric.REACTIONS_RECEIVED, "t": Metric.THANKS_RECEIVED}
    return [
        Effect("acme", user, metrics[m], "x", start + day * DAY_MS, 0, i)
        for i, (user, m, day) in enumerate(raw)
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["ann", "bo"]), st.sampled_from("srt"), st.integers(0, 20)),
        max_size=50,
    ),
    st.randoms(use_true_random=False),
)
def test_configured_badges_are_the_same_in_any_order_and_match_a_model(raw, rnd) -> None:  # type: ignore[no-untyped-def]
    rules = RulesLookup(RuleConfig(version=2, badges=CONFIGURED))
    awarded = []
    # Any arrival order (offsets follow arrival, as the deciding stage assigns them).
    for order in (_effects(raw), _effects(rnd.sample(raw, len(raw)))):
        book = ScoreBook()
        for i in range(0, len(order), 5):
            apply_effects(order[i : i + 5], book, rules, Applied())
        awarded.append(book.awarded)
    assert awarded[0] == awarded[1]
    # Model: counts per user and day / week.
    start = datetime(2026, 11, 2, tzinfo=UTC)
    expected = set()
    for user in ("ann", "bo"):
        mine = [(m, d) for u, m, d in raw if u == user]
        for d in range(21):
            if sum(1 for m, dd in mine if m == "r" and dd == d) >= 3:
                expected.add(("reactor", d * DAY_MS))
        for w in range(3):
            score = sum({"s": 2, "r": 1, "t": 3}[m] for m, dd in mine if dd // 7 == w)
            if score >= 10:
                expected.add(("scorer", w * 7 * DAY_MS))
        if any(m == "s" for m, _ in mine):
            expected.add(("first_share", None))
        share_days = {d for m, d in mine if m == "s"}
        active = [d in share_days for d in range(21)]
        for end in _brute_streak_ends(active, [d // 7 for d in range(21)], CONFIGURED[3]):
            expected.add(("streak_4f", end * DAY_MS))
        base = int(start.timestamp() * 1000)
        got = {
            (name, None if name == "first_share" else period - base)
            for org, u, name, period in awarded[0]
            if u == user
        }
        want = {(n, p) for n, p in expected}
        assert got == want
        expected.clear()


def test_bad_badge_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        BadgeRule("x", "threshold", "karma")
    with pytest.raises(ValueError):
        BadgeRule("x", "streak", freezes_per_week=5)
    with pytest.raises(ValueError):
        BadgeRule("a/b")
