import pytest

from schemas.vocabulary import DAY_MS, HOUR_MS, Metric, Reason
from streams.domain.rules import (
    DEFAULT_RULES,
    PartitionState,
    RuleConfig,
    RulesLookup,
    decide_batch,
    effects_of,
    seen_key,
)
from tests.streams.factories import event, ms, records

NOW = ms("2026-11-23T12:00:00")
RULES = RulesLookup()


def decide(events, state=None, now=NOW, rules=RULES):  # type: ignore[no-untyped-def]
    state = state if state is not None else PartitionState()
    return decide_batch(records(events), state, now, rules), state


def reasons(decisions):  # type: ignore[no-untyped-def]
    return [(d.recipient_id, d.reason) for d in decisions]


def test_counted_thanks_gives_both_sides_a_point() -> None:
    ds, _ = decide([event("THANKS", "alice", ("bob",))])
    assert reasons(ds) == [("bob", Reason.COUNTED)]
    assert {(e.user_id, e.metric, e.actor_id) for e in effects_of(ds)} == {
        ("bob", Metric.THANKS_RECEIVED, "alice"),
        ("alice", Metric.THANKS_GIVEN, "alice"),
    }


def test_thanks_received_carry_the_values_the_org_lists_once_each() -> None:
    rules = RulesLookup(RuleConfig(values=("ownership", "care")))
    ds, _ = decide(
        [
            event("THANKS", "alice", ("bob", "cy"), values=("speed", "care", "ownership", "care")),
            event("SHARE", "alice", values=("care",)),
        ],
        rules=rules,
    )
    got = [(e.user_id, e.metric, e.values) for e in effects_of(ds, rules)]
    assert got == [
        ("bob", Metric.THANKS_RECEIVED, ("care", "ownership")),
        ("alice", Metric.THANKS_GIVEN, ()),
        ("cy", Metric.THANKS_RECEIVED, ("care", "ownership")),
        ("alice", Metric.THANKS_GIVEN, ()),
        ("alice", Metric.SHARES, ()),
    ]
    assert all(e.values == () for e in effects_of(ds))  # without rules: none
    unlisted = RulesLookup()
    assert all(e.values == () for e in effects_of(ds, unlisted))


@pytest.mark.parametrize("values", [("a", "a"), ("",), ("x" * 257,), ("a\nb",)])
def test_bad_org_values_are_refused(values: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        RuleConfig(values=values)


def test_thanks_to_several_recipients_counts_per_recipient() -> None:
    ds, _ = decide([event("THANKS", "alice", ("bob", "carol", "bob"))])
    assert reasons(ds) == [("bob", Reason.COUNTED), ("carol", Reason.COUNTED)]
    given = [e for e in effects_of(ds) if e.metric is Metric.THANKS_GIVEN]
    assert len(given) == 2


def test_share_and_reaction() -> None:
    ds, _ = decide([event("SHARE", "alice"), event("REACTION", "bob", ("alice",))])
    assert [(e.user_id, e.metric) for e in effects_of(ds)] == [
        ("alice", Metric.SHARES),
        ("alice", Metric.REACTIONS_RECEIVED),
    ]


def test_duplicate_event_id_counts_once() -> None:
    ds, _ = decide([event(event_id="x"), event(event_id="x")])
    assert [d.reason for d in ds] == [Reason.COUNTED, Reason.DUPLICATE]


def test_same_event_id_in_two_orgs_is_not_a_duplicate() -> None:
    ds, _ = decide([event(event_id="x", org="a"), event(event_id="x", org="b")])
    assert [d.reason for d in ds] == [Reason.COUNTED, Reason.COUNTED]


def test_self_thanks_and_self_reaction_refused_per_recipient() -> None:
    ds, _ = decide(
        [
            event("THANKS", "alice", ("alice", "bob")),
            event("REACTION", "alice", ("alice",)),
        ]
    )
    assert reasons(ds) == [("alice", Reason.SELF), ("bob", Reason.COUNTED), ("alice", Reason.SELF)]
    assert {e.user_id for e in effects_of(ds)} == {"bob", "alice"}
    assert [e.metric for e in effects_of(ds) if e.user_id == "alice"] == [Metric.THANKS_GIVEN]


def test_private_events_give_nothing() -> None:
    ds, _ = decide([event(private=True), event("SHARE", private=True)])
    assert [d.reason for d in ds] == [Reason.PRIVATE, Reason.PRIVATE]
    assert effects_of(ds) == []


def test_pair_daily_cap_after_three_counted_thanks() -> None:
    day1 = [event(at=f"2026-11-23T0{h}:00:00") for h in range(5)]
    day2 = [event(at="2026-11-24T01:00:00")]
    other_pair = [event(recipients=("carol",))]
    ds, _ = decide(day1 + other_pair + day2, now=ms("2026-11-24T02:00:00"))
    assert [d.reason for d in ds] == [Reason.COUNTED] * 3 + [Reason.PAIR_DAILY_CAP] * 2 + [
        Reason.COUNTED,
        Reason.COUNTED,
    ]
    # Capped ones give neither side anything.
    assert len(effects_of(ds)) == 2 * 5


def test_self_thanks_do_not_use_the_cap() -> None:
    ds, _ = decide([event(recipients=("alice", "bob")) for _ in range(4)])
    assert [d.reason for d in ds if d.recipient_id == "bob"] == [Reason.COUNTED] * 3 + [
        Reason.PAIR_DAILY_CAP
    ]


def test_late_is_relative_to_partition_stream_time_with_7_day_grace() -> None:
    t = ms("2026-11-23T10:00:00")
    ds, state = decide(
        [
            event(at=t),
            event(at=t - 7 * DAY_MS),  # exactly at the grace edge: on time
            event(at=t - 7 * DAY_MS - 1),  # older than stream time - grace: late
        ]
    )
    assert [d.reason for d in ds] == [Reason.COUNTED, Reason.COUNTED, Reason.LATE]
    assert state.stream_time_ms == t


def test_future_is_five_minutes_ahead_of_the_wall_clock_and_does_not_move_stream_time() -> None:
    ds, state = decide(
        [
            event(at=NOW + 5 * 60_000),
            event(at=NOW + 5 * 60_000 + 1),
            event(at=NOW - DAY_MS),
        ]
    )
    assert [d.reason for d in ds] == [Reason.COUNTED, Reason.FUTURE, Reason.COUNTED]
    assert state.stream_time_ms == NOW + 5 * 60_000


def test_invalid_events() -> None:
    ds, _ = decide(
        [
            event(event_id=""),
            event(actor=""),
            event(org=""),
            event("THANKS", recipients=()),
            event("REACTION", recipients=()),
            event("THANKS", recipients=("bob", "")),
        ]
    )
    assert all(d.reason is Reason.INVALID for d in ds)
    assert effects_of(ds) == []


def test_too_many_recipients_is_refused_whole_with_one_decision() -> None:
    crowd = tuple(f"u-{i}" for i in range(10_000))
    state = PartitionState()
    ds, _ = decide(
        [event("THANKS", "alice", crowd, event_id="x"), event("REACTION", "bob", crowd)], state
    )
    assert reasons(ds) == [("", Reason.TOO_MANY_RECIPIENTS), ("", Reason.TOO_MANY_RECIPIENTS)]
    assert effects_of(ds) == []
    # Refused whole, like an invalid event: not seen, stream time and pair counts untouched.
    assert len(state.seen) == 0 and state.pair_counts == {} and state.stream_time_ms is None
    retried = decide_batch(records([event(event_id="x")], first=5), state, NOW, RULES)
    assert retried[0].reason is Reason.COUNTED


def test_max_recipients_counts_distinct_people_and_is_per_org() -> None:
    fifty = tuple(f"u-{i}" for i in range(50))
    ds, _ = decide([event("THANKS", "alice", fifty + fifty)])
    assert len(ds) == 50 and {d.reason for d in ds} == {Reason.COUNTED}
    lookup = RulesLookup(DEFAULT_RULES, {"small": RuleConfig(max_recipients_per_event=2)})
    ds, _ = decide(
        [
            event(org="small", recipients=("a", "b", "a")),
            event(org="small", recipients=("a", "b", "c")),
        ],
        rules=lookup,
    )
    assert reasons(ds) == [
        ("a", Reason.COUNTED),
        ("b", Reason.COUNTED),
        ("", Reason.TOO_MANY_RECIPIENTS),
    ]
    # A SHARE has no recipients that count, whatever it carries.
    assert DEFAULT_RULES.max_recipients_per_event == 50


def test_refused_event_id_is_not_seen() -> None:
    # A future event refused now, then the producer retries it when it is no longer future.
    state = PartitionState()
    ds, _ = decide([event(event_id="x", at=NOW + DAY_MS)], state)
    assert ds[0].reason is Reason.FUTURE
    retried = decide_batch(records([event(event_id="x", at=NOW)], first=5), state, NOW, RULES)
    assert retried[0].reason is Reason.COUNTED


def test_replayed_offsets_are_skipped() -> None:
    state = PartitionState()
    evs = [event(), event()]
    first = decide_batch(records(evs), state, NOW, RULES)
    again = decide_batch(records(evs), state, NOW, RULES)
    assert len(first) == 2 and again == []
    assert state.next_offset == 2


def test_per_org_rule_overrides() -> None:
    lookup = RulesLookup(DEFAULT_RULES, {"strict": RuleConfig(pair_daily_cap=1)})
    ds, _ = decide([event(org="strict"), event(org="strict"), event(), event()], rules=lookup)
    assert [d.reason for d in ds] == [
        Reason.COUNTED,
        Reason.PAIR_DAILY_CAP,
        Reason.COUNTED,
        Reason.COUNTED,
    ]


def test_prune_forgets_only_what_cannot_matter() -> None:
    state = PartitionState()
    t = ms("2026-11-23T10:00:00")
    # Ids are kept until the end of their hour passes the horizon (t - grace - 2 days).
    kept, gone = t - 9 * DAY_MS - HOUR_MS + 1, t - 9 * DAY_MS - HOUR_MS
    events = [event(event_id="kept", at=kept), event(event_id="gone", at=gone), event(at=t)]
    decide_batch(records(events), state, t, RULES)
    state.prune(DEFAULT_RULES.grace_ms)
    assert seen_key("acme", "gone") not in state.seen and seen_key("acme", "kept") in state.seen
    assert len(state.seen) == 2


def test_score_formula() -> None:
    assert DEFAULT_RULES.score(shares=2, thanks_given=1, thanks_received=3, reactions=4) == (
        3 * 3 + 1 + 2 * 2 + 4
    )


# --- giver budgets and org calendars (rules v2 options) -------------------------------

from collections import Counter  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def test_giver_daily_budget_refuses_thanks_past_the_budget() -> None:
    rules = RulesLookup(RuleConfig(version=2, giver_daily_budget=2))
    ds, state = decide(
        [
            event("THANKS", "alice", ("bob", "carol")),  # 2 counted: the budget is spent
            event("THANKS", "alice", ("dave",)),  # refused
            event("THANKS", "alice", ("alice",)),  # self: refused as self, costs nothing
            event("THANKS", "erin", ("dave",)),  # another giver: counted
            event("THANKS", "alice", ("dave",), at="2026-11-24T01:00:00"),  # next day
        ],
        rules=rules,
        now=ms("2026-11-24T02:00:00"),
    )
    assert reasons(ds) == [
        ("bob", Reason.COUNTED),
        ("carol", Reason.COUNTED),
        ("dave", Reason.GIVER_BUDGET),
        ("alice", Reason.SELF),
        ("dave", Reason.COUNTED),
        ("dave", Reason.COUNTED),
    ]
    assert {d.rule_version for d in ds} == {2}
    # A refused thank-you gives no points to either side: alice gives 3 (2 + 1 next day).
    given = [e for e in effects_of(ds) if e.metric is Metric.THANKS_GIVEN and e.user_id == "alice"]
    assert len(given) == 3
    assert sum(e.user_id == "dave" for e in effects_of(ds)) == 2  # from erin, and next day
    assert state.giver_counts == {
        ("acme", "alice", "day", ms("2026-11-23T00:00:00")): 2,
        ("acme", "alice", "day", ms("2026-11-24T00:00:00")): 1,
        ("acme", "erin", "day", ms("2026-11-23T00:00:00")): 1,
    }


def test_pair_cap_refusals_do_not_spend_the_giver_budget() -> None:
    rules = RulesLookup(RuleConfig(version=2, pair_daily_cap=1, giver_daily_budget=2))
    ds, _ = decide(
        [event("THANKS", "alice", ("bob",)) for _ in range(3)]
        + [event("THANKS", "alice", ("carol",))],
        rules=rules,
    )
    assert [r for _, r in reasons(ds)] == [
        Reason.COUNTED,
        Reason.PAIR_DAILY_CAP,
        Reason.PAIR_DAILY_CAP,
        Reason.COUNTED,
    ]


def test_giver_weekly_budget_follows_the_org_week() -> None:
    # Weeks start on Sunday in New York: Sat 2026-11-28 and Sun 2026-11-29 (local) differ.
    rules = RulesLookup(
        RuleConfig(
            version=2, giver_weekly_budget=1, timezone="America/New_York", week_start="sunday"
        )
    )
    sat = ms("2026-11-29T03:00:00")  # Saturday 22:00 in New York
    sun = ms("2026-11-29T06:00:00")  # Sunday 01:00 in New York
    ds, _ = decide(
        [
            event("THANKS", "alice", ("bob",), at=sat),
            event("THANKS", "alice", ("carol",), at=sat + 1),
            event("THANKS", "alice", ("carol",), at=sun),
        ],
        rules=rules,
        now=sun,
    )
    assert [r for _, r in reasons(ds)] == [Reason.COUNTED, Reason.GIVER_BUDGET, Reason.COUNTED]


def test_pair_cap_day_is_the_org_day() -> None:
    # 23:30 and 00:30 UTC are the same day in New York (18:30, 19:30): cap 1 applies.
    ny = RulesLookup(RuleConfig(version=2, pair_daily_cap=1, timezone="America/New_York"))
    evs = [
        event("THANKS", "alice", ("bob",), at="2026-11-23T23:30:00"),
        event("THANKS", "alice", ("bob",), at="2026-11-24T00:30:00"),
    ]
    ds, _ = decide(evs, rules=ny, now=ms("2026-11-24T01:00:00"))
    assert [r for _, r in reasons(ds)] == [Reason.COUNTED, Reason.PAIR_DAILY_CAP]
    utc = RulesLookup(RuleConfig(pair_daily_cap=1))
    ds, _ = decide(evs, rules=utc, now=ms("2026-11-24T01:00:00"))
    assert [r for _, r in reasons(ds)] == [Reason.COUNTED, Reason.COUNTED]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ann", "bo", "cy"]),
            st.lists(st.sampled_from(["ann", "bo", "cy", "di"]), min_size=1, max_size=3),
            st.integers(min_value=0, max_value=20 * 24),  # hours after the start
        ),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=6),
    st.sampled_from(["UTC", "Asia/Kolkata", "America/Los_Angeles"]),
)
def test_budgets_and_caps_match_a_brute_force_count(
    raw: list[tuple[str, list[str], int]],
    cap: int,
    daily: int,
    weekly: int,
    timezone: str,
) -> None:
    config = RuleConfig(
        version=2,
        pair_daily_cap=cap,
        giver_daily_budget=daily,
        giver_weekly_budget=weekly,
        timezone=timezone,
        grace_ms=60 * DAY_MS,
    )
    start = ms("2026-11-01T00:00:00")
    evs = sorted(
        (event("THANKS", a, tuple(rs), at=start + h * HOUR_MS) for a, rs, h in raw),
        key=lambda e: e.occurred_at,
    )
    ds, _ = decide(evs, rules=RulesLookup(config), now=start + 30 * DAY_MS)
    # Brute force with the standard library's calendar, in event order.
    zone = ZoneInfo(timezone)

    def local(at: int) -> datetime:
        return datetime.fromtimestamp(at / 1000, UTC).astimezone(zone)

    pairs: Counter[tuple[str, str, object]] = Counter()
    days: Counter[tuple[str, object]] = Counter()
    weeks: Counter[tuple[str, object]] = Counter()
    expected = []
    for e in evs:
        d = local(e.occurred_at).date()
        week = d.isocalendar()[:2]
        for r in dict.fromkeys(e.recipient_ids):
            if r == e.actor_id:
                expected.append(Reason.SELF)
            elif pairs[(e.actor_id, r, d)] >= cap:
                expected.append(Reason.PAIR_DAILY_CAP)
            elif (daily and days[(e.actor_id, d)] >= daily) or (
                weekly and weeks[(e.actor_id, week)] >= weekly
            ):
                expected.append(Reason.GIVER_BUDGET)
            else:
                expected.append(Reason.COUNTED)
                pairs[(e.actor_id, r, d)] += 1
                days[(e.actor_id, d)] += 1
                weeks[(e.actor_id, week)] += 1
    assert [d.reason for d in ds] == expected


def test_a_negative_grace_or_future_tolerance_is_refused_at_start() -> None:
    import pytest

    from streams.domain.rules import RuleConfig

    for bad in ({"grace_ms": -1}, {"future_tolerance_ms": -1}):
        with pytest.raises(ValueError, match="must not be negative"):
            RuleConfig(**bad)  # type: ignore[arg-type]


def test_org_values_are_configured_like_any_rule() -> None:
    from pydantic import ValidationError

    from streams.settings import RuleOverrides

    listed = RuleOverrides(values=["ownership", "care"]).apply(DEFAULT_RULES)
    assert listed.values == ("ownership", "care")
    assert listed.listed_values(("care", "speed", "care")) == ("care",)
    assert DEFAULT_RULES.values == () and DEFAULT_RULES.listed_values(("care",)) == ()
    with pytest.raises((ValueError, ValidationError)):
        RuleOverrides(values=["care", "care"]).apply(DEFAULT_RULES)


def test_badge_rules_may_name_a_listed_value() -> None:
    from streams.domain.badges import BadgeRule
    from streams.domain.scorebook import value_badges

    care = BadgeRule("carer", "threshold", "thanks_received", "week", 2, value="care")
    liked = BadgeRule("liked", "threshold", "distinct_thankers", "all", 2, value="care")
    plain = BadgeRule("star", "threshold", "thanks_received", "week", 1)
    rules = RuleConfig(values=("care",), badges=(care, liked, plain))
    assert rules.badge_rules == (plain,) and rules.value_badge_rules == (care, liked)
    with pytest.raises(ValueError, match="not in values"):
        RuleConfig(values=("own",), badges=(care,))
    with pytest.raises(ValueError, match="threshold"):
        BadgeRule("x", "first", "thanks_received", value="care")
    with pytest.raises(ValueError, match="threshold"):
        BadgeRule("x", "threshold", "shares", value="care")
    lookup = RulesLookup(rules)
    awarded: set[tuple[str, str, str, int]] = {("acme", "cy", "carer", 7)}
    counts = [
        ("acme", "week", 7, "care", "bob", 2, 1),  # carer
        ("acme", "week", 7, "care", "ann", 1, 1),  # below
        ("acme", "week", 7, "care", "cy", 5, 5),  # awarded before
        ("acme", "all", 0, "care", "bob", 2, 1),  # one thanker: not liked
        ("acme", "all", 0, "care", "dee", 2, 2),  # liked
        ("acme", "week", 7, "own", "eve", 9, 9),  # another value
    ]
    got = value_badges(counts, lookup, awarded)
    assert [(a.user_id, a.badge, a.period_start, a.period) for a in got] == [
        ("dee", "liked", 0, "all"),  # in key order
        ("bob", "carer", 7, "week"),
    ]
    assert value_badges(counts, lookup, awarded) == []  # once per period
