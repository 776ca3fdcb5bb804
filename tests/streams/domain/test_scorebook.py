from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.event import EventType
from schemas.vocabulary import DAY_MS, WINDOWS, Metric
from streams.domain.rules import Effect, RulesLookup
from streams.domain.scorebook import (
    Adjustment,
    Applied,
    Badge,
    ScoreBook,
    apply_adjustments,
    apply_effects,
    keys_needed,
)
from streams.domain.windows import week_start
from tests.streams.factories import event, ms
from tests.streams.reference import run_pure

NOW = ms("2026-11-29T23:00:00")
RULES = RulesLookup()


def test_window_totals_and_distinct_thankers() -> None:
    evs = [
        event("THANKS", "a", ("bob",), at="2026-11-23T10:00:00"),
        event("THANKS", "a", ("bob",), at="2026-11-23T10:30:00"),
        event("THANKS", "c", ("bob",), at="2026-11-24T09:00:00"),
        event("SHARE", "bob", at="2026-11-24T09:10:00"),
        event("REACTION", "a", ("bob",), at="2026-11-24T09:20:00"),
    ]
    totals, _ = run_pure(evs, NOW)
    assert totals[("acme", "week", ms("2026-11-23T00:00:00"), "bob")] == (1, 0, 3, 2, 1)
    assert totals[("acme", "day", ms("2026-11-23T00:00:00"), "bob")] == (0, 0, 2, 1, 0)
    assert totals[("acme", "hour", ms("2026-11-24T09:00:00"), "bob")] == (1, 0, 1, 1, 1)
    assert totals[("acme", "all", 0, "a")] == (0, 2, 0, 0, 0)


def test_replayed_effects_change_nothing() -> None:
    effects = [Effect("acme", "bob", Metric.THANKS_RECEIVED, "a", ms("2026-11-23T10:00:00"), 0, 5)]
    book = ScoreBook()
    apply_effects(effects, book, RULES, Applied())
    again = Applied()
    apply_effects(effects, book, RULES, again)
    assert book.totals[("acme", "all", 0, "bob")].thanks_received == 1
    assert again.dirty == set() and again.replayed == 1


def test_effects_of_one_offset_apply_together() -> None:
    t = ms("2026-11-23T10:00:00")
    effects = [
        Effect("acme", "a", Metric.THANKS_GIVEN, "a", t, 0, 5),
        Effect("acme", "a", Metric.THANKS_GIVEN, "a", t, 0, 5),
    ]
    book = ScoreBook()
    apply_effects(effects, book, RULES, Applied())
    assert book.totals[("acme", "all", 0, "a")].thanks_given == 2


def test_badges_first_thanks_helper_sharer() -> None:
    evs = [event("THANKS", f"t{i}", ("bob",), at="2026-11-24T10:00:00") for i in range(5)]
    evs += [event("SHARE", "carol", at=f"2026-11-24T1{i}:00:00") for i in range(10)]
    _, awarded = run_pure(evs, NOW)
    week = week_start(ms("2026-11-24T00:00:00"))
    assert ("acme", "bob", Badge.FIRST_THANKS, 0) in awarded
    assert ("acme", "bob", Badge.HELPER, week) in awarded
    assert ("acme", "carol", Badge.SHARER, week) in awarded
    assert len(awarded) == 3


def test_helper_needs_five_distinct_thankers() -> None:
    evs = [event("THANKS", "t1", ("bob",), at="2026-11-24T10:00:00") for _ in range(3)]
    evs += [event("THANKS", f"t{i}", ("bob",), at="2026-11-24T11:00:00") for i in range(2, 5)]
    _, awarded = run_pure(evs, NOW)
    assert {a[2] for a in awarded} == {"first_thanks"}


def test_streak_five_consecutive_days_in_any_order() -> None:
    days = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24"]
    for order in (days, list(reversed(days)), [days[2], days[0], days[4], days[1], days[3]]):
        evs = [event("SHARE", "dan", at=f"{d}T12:00:00") for d in order]
        _, awarded = run_pure(evs, NOW, batch=1)
        assert ("acme", "dan", "streak_5", ms("2026-11-24T00:00:00")) in awarded
        assert [a for a in awarded if a[2] == "streak_5"] == [
            ("acme", "dan", "streak_5", ms("2026-11-24T00:00:00"))
        ]


def test_no_streak_with_a_gap() -> None:
    evs = [event("SHARE", "dan", at=f"2026-11-{d}T12:00:00") for d in (20, 21, 22, 24, 25)]
    _, awarded = run_pure(evs, NOW)
    assert not [a for a in awarded if a[2] == "streak_5"]


def test_keys_needed_covers_streak_neighbourhood() -> None:
    t = ms("2026-11-24T12:00:00")
    keys = keys_needed([Effect("acme", "dan", Metric.SHARES, "dan", t, 0, 1)], RULES)
    days = sorted(k[2] for k in keys if k[1] == "day")
    assert days[0] == ms("2026-11-20T00:00:00") and days[-1] == ms("2026-11-28T00:00:00")
    assert len(days) == 9


# --- properties -------------------------------------------------------------------------

USERS = ["u1", "u2", "u3", "u4", "u5", "u6"]
BASE = ms("2026-11-23T00:00:00")


@st.composite
def events_within_grace(draw: st.DrawFn) -> list:  # type: ignore[type-arg]
    n = draw(st.integers(min_value=1, max_value=40))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(list(EventType)))
        actor = draw(st.sampled_from(USERS))
        recips = tuple(draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=3)))
        at = BASE + draw(st.integers(min_value=0, max_value=6 * DAY_MS))
        private = draw(st.booleans().filter(lambda _: True)) and draw(st.integers(0, 9)) == 0
        dup_of = draw(st.integers(min_value=0, max_value=i)) if i and draw(st.booleans()) else None
        if dup_of is not None and dup_of < len(out):
            out.append(out[dup_of])
            continue
        out.append(event(kind, actor, recips, at=at, private=private))
    return out


@settings(max_examples=150, deadline=None)
@given(events_within_grace(), st.randoms(use_true_random=False), st.integers(1, 10))
def test_any_order_within_grace_gives_same_totals(evs, rnd, batch) -> None:  # type: ignore[no-untyped-def]
    now = BASE + 8 * DAY_MS
    expected_totals, expected_badges = run_pure(evs, now)
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    totals, badges = run_pure(shuffled, now, batch=batch)
    # Day, week and all totals, distinct thankers and badges never depend on order.
    assert badges == expected_badges
    assert _not_hourly(totals) == _not_hourly(expected_totals)
    # Hour totals do too, unless a pair passes its daily cap: rules v1 count the first
    # three thanks of a pair-day in arrival order, and which three it is decides the hour
    # they land in. Known limit of v1 (see README "Known limits"); exercised below.
    if not _pair_over_cap(evs):
        assert totals == expected_totals


def _not_hourly(totals: dict) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in totals.items() if k[1] != "hour"}


def _pair_over_cap(evs: list) -> bool:  # type: ignore[type-arg]
    per_pair_day: dict[tuple[str, str, str, int], set[str]] = {}
    for e in evs:
        if e.event_type is not EventType.THANKS or e.visibility.value == "PRIVATE":
            continue
        for r in set(e.recipient_ids) - {e.actor_id}:
            key = (e.org_id, e.actor_id, r, e.occurred_at - e.occurred_at % DAY_MS)
            per_pair_day.setdefault(key, set()).add(e.event_id)
    return any(len(ids) > RULES.default.pair_daily_cap for ids in per_pair_day.values())


def test_hour_totals_follow_arrival_order_when_a_pair_passes_its_cap() -> None:
    """The known limit, pinned: four thanks of one pair on one day, in two hours."""
    evs = [event("THANKS", "a", ("b",), at=f"2026-11-24T10:0{i}:00") for i in range(3)]
    evs.append(event("THANKS", "a", ("b",), at="2026-11-24T11:00:00"))
    in_order, _ = run_pure(evs, NOW)
    reversed_, _ = run_pure(list(reversed(evs)), NOW)
    day = ms("2026-11-24T00:00:00")
    assert in_order[("acme", "day", day, "b")] == reversed_[("acme", "day", day, "b")]
    assert in_order[("acme", "hour", ms("2026-11-24T10:00:00"), "b")][2] == 3
    assert reversed_[("acme", "hour", ms("2026-11-24T10:00:00"), "b")][2] == 2


@settings(max_examples=150, deadline=None)
@given(events_within_grace(), st.data())
def test_feeding_any_event_twice_changes_nothing(evs, data) -> None:  # type: ignore[no-untyped-def]
    now = BASE + 8 * DAY_MS
    expected = run_pure(evs, now)
    i = data.draw(st.integers(0, len(evs) - 1))
    j = data.draw(st.integers(i, len(evs)))
    twice = [*evs[:j], evs[i], *evs[j:]]
    assert run_pure(twice, now) == expected


# --- time-decayed score ----------------------------------------------------------------

from streams.domain.rules import RuleConfig  # noqa: E402
from streams.domain.scorebook import WindowTotals  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(0, 400 * DAY_MS)), min_size=1, max_size=40),
    st.floats(min_value=0.5, max_value=60),
    st.randoms(use_true_random=False),
)
def test_decayed_score_is_the_sum_of_halved_points_in_any_order(points, half_life_days, rnd):  # type: ignore[no-untyped-def]
    half_life = half_life_days * DAY_MS
    at = max(t for _, t in points) + 3 * DAY_MS
    truth = sum(p * 2.0 ** (-(at - t) / half_life) for p, t in points)
    for order in (points, rnd.sample(points, len(points))):
        totals = WindowTotals()
        for p, t in order:
            totals.add_decayed(p, t, half_life)
        assert abs(totals.decayed_at(at, half_life) - truth) <= 1e-9 * max(truth, 1e-300)


def test_decayed_score_follows_the_orgs_weights_and_half_life() -> None:
    rules = RulesLookup(RuleConfig(), {"fast": RuleConfig(version=2, decay_half_life_days=1)})
    t0 = ms("2026-11-20T12:00:00")
    effects = [
        Effect("acme", "bob", Metric.THANKS_RECEIVED, "ann", t0, 0, 1),  # weight 3
        Effect("acme", "bob", Metric.SHARES, "bob", t0 + DAY_MS, 0, 2),  # weight 2
        Effect("fast", "bob", Metric.THANKS_RECEIVED, "ann", t0, 0, 3),
    ]
    book = ScoreBook()
    apply_effects(effects, book, rules, Applied())
    week = 7 * DAY_MS
    acme = book.totals[("acme", "all", 0, "bob")]
    assert acme.decay_at == t0 + DAY_MS
    assert abs(acme.decayed_at(t0 + DAY_MS, week) - (3 * 2 ** (-1 / 7) + 2)) < 1e-12
    fast = book.totals[("fast", "all", 0, "bob")]
    assert abs(fast.decayed_at(t0 + 2 * DAY_MS, DAY_MS) - 3 / 4) < 1e-12
    # A replayed effect changes nothing, the decayed score included.
    before = (acme.decay, acme.decay_at)
    apply_effects(effects[:1], book, rules, Applied())
    assert (acme.decay, acme.decay_at) == before


def _thanks(actor: str, recipient: str, at: int, offset: int) -> list[Effect]:
    return [
        Effect("acme", recipient, Metric.THANKS_RECEIVED, actor, at, 0, offset),
        Effect("acme", actor, Metric.THANKS_GIVEN, actor, at, 0, offset),
    ]


def _adjust(actor: str, recipient: str, at: int, delta: int, drop: frozenset[str]) -> list[Any]:
    return [
        Adjustment("acme", recipient, Metric.THANKS_RECEIVED, actor, at, delta, drop),
        Adjustment("acme", actor, Metric.THANKS_GIVEN, actor, at, delta),
    ]


def _state(book: ScoreBook) -> dict[Any, tuple[Any, ...]]:
    return {
        k: (t.shares, t.thanks_given, t.thanks_received, sorted(t.thankers), round(t.decay, 9))
        for k, t in book.totals.items()
    }


def test_an_audit_takes_points_back_once_and_gives_refused_ones() -> None:
    """Reversing m->b (three times) and reinstating m->g equals applying only what counts
    after the audit; applying the audit again changes nothing."""
    at = ms("2026-11-23T10:00:00")
    audited = ScoreBook()
    for i in range(3):
        apply_effects(_thanks("m", "b", at + i, i), audited, RULES, Applied())
    apply_effects(_thanks("m", "c", at + 3, 3), audited, RULES, Applied())
    drop = frozenset(WINDOWS)
    adjustments = [a for i in range(3) for a in _adjust("m", "b", at + i, -1, drop)]
    adjustments += _adjust("m", "g", at + 4, +1, frozenset())
    applied = Applied()
    apply_adjustments(adjustments, week_start(at), audited, RULES, applied)
    assert sorted(t for _, t in applied.dropped_thankers) == ["m"] * len(WINDOWS)  # b's windows
    assert sorted(t for _, t in applied.new_thankers) == ["m"] * len(WINDOWS)  # g's windows

    plain = ScoreBook()
    apply_effects(_thanks("m", "c", at + 3, 3), plain, RULES, Applied())
    apply_effects(_thanks("m", "g", at + 4, 4), plain, RULES, Applied())
    got = {k: v for k, v in _state(audited).items() if k[3] != "b"}
    assert got == _state(plain)
    assert all(
        v[:4] == (0, 0, 0, []) and v[4] == 0 for k, v in _state(audited).items() if k[3] == "b"
    )

    again = Applied()
    before = _state(audited)
    apply_adjustments(adjustments, week_start(at), audited, RULES, again)
    assert _state(audited) == before and not again.dirty
