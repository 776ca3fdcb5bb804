"""The columnar aggregation (streams/domain/tally.py) against the per-event oracle
(streams/domain/scorebook.py): the same totals, marks, thankers, decay and badges."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.vocabulary import DAY_MS, HOUR_MS, WINDOWS, Metric
from streams.domain.badges import BadgeRule
from streams.domain.effects import effects_to_batch
from streams.domain.rules import Effect, RuleConfig, RulesLookup
from streams.domain.scorebook import Applied, ScoreBook, WindowTotals, apply_effects
from streams.domain.tally import (
    ColumnApplied,
    ColumnBook,
    apply_effects_batch,
    in_order_runs,
)

BASE = 1_764_000_000_000  # 2025-11-24
RULES = RulesLookup(
    RuleConfig(helper_distinct_thankers=2, sharer_weekly_shares=2, streak_days=2),
    {
        "zed": RuleConfig(
            timezone="Australia/Lord_Howe",
            week_start="sunday",
            weight_thanks_received=0,
            weight_shares=5,
            decay_half_life_days=0.5,
            badges=(
                BadgeRule("busy", "threshold", "score", "day", 6),
                BadgeRule("firstshare", "first", "shares"),
                BadgeRule("liked", "threshold", "distinct_thankers", "all", 2),
                BadgeRule("streak3", "streak", "shares", "day", 1, 3, freezes_per_week=1),
            ),
        ),
        "ny": RuleConfig(timezone="America/New_York", pair_daily_cap=1),
    },
)
USERS = ("a", "b", "c", "d")

event_st = st.tuples(
    st.integers(0, 2),  # deciding partition
    st.sampled_from(("SHARE", "THANKS", "REACTION")),
    st.sampled_from(("acme", "zed", "ny")),
    st.sampled_from(USERS),
    st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
    st.integers(0, 10 * 24 * 4),  # quarter hours after BASE
)


def effects_of_event(ev: tuple[Any, ...], offset: int) -> list[Effect]:
    p, kind, org, actor, recipients, q = ev
    at = BASE + q * 15 * 60_000 + 1234
    if kind == "SHARE":
        return [Effect(org, actor, Metric.SHARES, actor, at, p, offset)]
    out = []
    for r in recipients:
        if kind == "THANKS":
            out.append(Effect(org, r, Metric.THANKS_RECEIVED, actor, at, p, offset))
            out.append(Effect(org, actor, Metric.THANKS_GIVEN, actor, at, p, offset))
        else:
            out.append(Effect(org, r, Metric.REACTIONS_RECEIVED, actor, at, p, offset))
    return out


def messages_of(
    events: list[tuple[Any, ...]], cuts: list[int], resend: list[int]
) -> list[list[Effect]]:
    next_offset = [0, 0, 0]
    effects: list[list[Effect]] = []
    for ev in events:
        effects.append(effects_of_event(ev, next_offset[ev[0]]))
        next_offset[ev[0]] += 1
    messages, start = [], 0
    for cut in sorted({c % (len(effects) + 1) for c in cuts} | {len(effects)}):
        if cut > start:
            messages.append([e for es in effects[start:cut] for e in es])
            start = cut
    for i, r in enumerate(resend):  # a message sent again later (a replay or a resend)
        if messages:
            at = min(len(messages), r % (len(messages) + 1) + 1)
            messages.insert(at + i % 2, messages[r % len(messages)])
    return messages


def same_totals(a: WindowTotals, b: WindowTotals | None) -> None:
    assert b is not None
    assert (a.shares, a.thanks_given, a.thanks_received, a.reactions_received) == (
        b.shares,
        b.thanks_given,
        b.thanks_received,
        b.reactions_received,
    )
    assert a.thankers == b.thankers and a.hwm == b.hwm
    assert a.decay_at == b.decay_at
    assert math.isclose(a.decay, b.decay, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(event_st, max_size=40),
    st.lists(st.integers(0, 60), max_size=6),
    st.lists(st.integers(0, 60), max_size=3),
    st.booleans(),
)
def test_columns_equal_the_per_event_oracle(
    events: list[tuple[Any, ...]], cuts: list[int], resend: list[int], one_by_one: bool
) -> None:
    messages = messages_of(events, cuts, resend)
    book, applied = ScoreBook(), Applied()
    for m in messages:
        apply_effects(m, book, RULES, applied)
    columns, out = ColumnBook(), ColumnApplied()
    batches = [effects_to_batch(m) for m in messages]
    for run in [b for b in batches if b.num_rows] if one_by_one else in_order_runs(batches):
        apply_effects_batch(run, columns, RULES, out)
    assert set(columns.held_keys()) == set(book.totals)
    for key, totals in book.totals.items():
        same_totals(totals, columns.totals(key))
    assert columns.awarded == book.awarded
    assert sorted(out.badges, key=repr) == sorted(applied.badges, key=repr)
    assert {columns.key_of(int(s)) for s in out.dirty_slots()} == applied.dirty
    new = {
        (columns.key_of(int(p) >> 32), str(columns.users.name[int(p) & 0xFFFFFFFF]))
        for p in out.thanker_pairs()
    }
    assert new == set(applied.new_thankers)
    assert out.replayed == applied.replayed
    times = sorted(t for ts in out.event_times for t in ts.tolist())
    assert times == sorted(applied.event_times)


def test_keys_loaded_as_objects_carry_on_as_the_oracle() -> None:
    """A key put in from storage (its marks included) skips what it has applied."""
    t = BASE + 3 * HOUR_MS
    stored = WindowTotals(
        thanks_received=4, thankers={"x", "y"}, hwm={0: 9, 2: 1}, decay=3.0, decay_at=t - DAY_MS
    )
    key = ("acme", "all", 0, "a")
    effects = [
        Effect("acme", "a", Metric.THANKS_RECEIVED, "x", t, 0, 9),
        Effect("acme", "a", Metric.THANKS_RECEIVED, "z", t, 0, 10),
        Effect("acme", "a", Metric.THANKS_RECEIVED, "x", t, 2, 2),
    ]
    book = ScoreBook()
    book.totals[key] = WindowTotals(
        thanks_received=4, thankers={"x", "y"}, hwm={0: 9, 2: 1}, decay=3.0, decay_at=t - DAY_MS
    )
    apply_effects(effects, book, RULES, Applied())
    columns = ColumnBook()
    columns.put({key: stored})
    apply_effects_batch(effects_to_batch(effects), columns, RULES, ColumnApplied())
    same_totals(book.totals[key], columns.totals(key))


def test_eviction_and_forgetting_keep_the_rest_intact() -> None:
    effects = [
        effects_of_event((0, "THANKS", "acme", u, ["a", "b"], i), i) for i, u in enumerate("abcd")
    ]
    flat = [e for es in effects for e in es]
    book, columns = ScoreBook(), ColumnBook()
    apply_effects(flat, book, RULES, Applied())
    apply_effects_batch(effects_to_batch(flat), columns, RULES, ColumnApplied())
    columns.forget_user("acme", "b")
    keep = {k: v for k, v in book.totals.items() if k[3] != "b"}
    assert set(columns.held_keys()) == set(keep)
    for key, totals in keep.items():
        same_totals(totals, columns.totals(key))
    columns.evict_coldest(5)
    assert len(columns) == 5
    for key in columns.held_keys():
        same_totals(book.totals[key], columns.totals(key))


def test_streak_keys_are_the_days_around_each_share() -> None:
    from streams.domain.scorebook import streak_days_around
    from streams.domain.tally import batch_keys, streak_keys

    effects = [
        Effect("zed", "a", Metric.SHARES, "a", BASE + 5 * DAY_MS, 0, 1),
        Effect("acme", "b", Metric.SHARES, "b", BASE, 0, 2),
        Effect("acme", "b", Metric.THANKS_GIVEN, "b", BASE + DAY_MS, 0, 3),
    ]
    batch = effects_to_batch(effects)
    book = ColumnBook()
    got = streak_keys(batch, batch_keys(batch, book, RULES), book)
    expected = set()
    for e in effects[:2]:
        rules = RULES(e.org_id)
        day = rules.calendar.day_start(e.occurred_at)
        for rule in rules.badge_rules:
            if rule.kind == "streak":
                for d in streak_days_around(day, rule, rules.calendar):
                    expected.add((e.org_id, "day", d, e.user_id))
    assert {book.key_of_packed(int(p)) for p in got} == expected


def test_ids_of_users_no_longer_held_are_dropped_and_the_rest_carry_on() -> None:
    """Eviction renumbers the user ids once most are unused; held keys and thankers keep
    their values, and later effects apply to them as the oracle applies them."""
    first = [
        Effect("acme", f"u{i}", Metric.THANKS_RECEIVED, f"g{i % 7}", BASE + i, 0, i)
        for i in range(3000)
    ]
    later = [
        Effect("acme", f"u{i}", Metric.THANKS_RECEIVED, f"g{i % 5}", BASE + 4000 + i, 0, 4000 + i)
        for i in range(2990, 3000)
    ]
    book, columns = ScoreBook(), ColumnBook()
    apply_effects(first, book, RULES, Applied())
    apply_effects_batch(effects_to_batch(first), columns, RULES, ColumnApplied())
    columns.evict_coldest(10 * len(WINDOWS))  # the last 10 users' keys
    assert len(columns.users) < 100
    apply_effects(later, book, RULES, Applied())
    apply_effects_batch(effects_to_batch(later), columns, RULES, ColumnApplied())
    for key in columns.held_keys():
        same_totals(book.totals[key], columns.totals(key))
    assert {k[3] for k in columns.held_keys()} >= {f"u{i}" for i in range(2990, 3000)}


# --- company values: kudos.value_thanks rows ------------------------------------------------

valued_event_st = st.tuples(
    event_st, st.lists(st.sampled_from(("care", "own", "speed")), max_size=2, unique=True)
)


def with_values(effects: list[Effect], values: list[str]) -> list[Effect]:
    return [
        Effect(*astuple_effect(e)[:7], tuple(values)) if e.metric is Metric.THANKS_RECEIVED else e
        for e in effects
    ]


def astuple_effect(e: Effect) -> tuple[Any, ...]:
    return (e.org_id, e.user_id, e.metric, e.actor_id, e.occurred_at, e.partition, e.offset)


def reference_value_scores(
    messages: list[list[Effect]],
) -> dict[tuple[str, str, int, str, str], tuple[int, set[str]]]:
    """Per (org, window, start ms, value, user): counted thanks received carrying the value
    and their thankers, each effect counted once (the first delivery of its lineage)."""
    seen: set[tuple[str, int, int]] = set()
    out: dict[tuple[str, str, int, str, str], tuple[int, set[str]]] = {}
    for e in (e for m in messages for e in m):
        if e.metric is not Metric.THANKS_RECEIVED or (e.user_id, e.partition, e.offset) in seen:
            continue
        seen.add((e.user_id, e.partition, e.offset))
        for window, start in RULES(e.org_id).calendar.starts(e.occurred_at):
            for value in e.values:
                n, thankers = out.get((e.org_id, window, start, value, e.user_id), (0, set()))
                out[(e.org_id, window, start, value, e.user_id)] = (n + 1, thankers | {e.actor_id})
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(valued_event_st, max_size=30),
    st.lists(st.integers(0, 60), max_size=6),
    st.lists(st.integers(0, 60), max_size=3),
)
def test_value_thanks_rows_count_each_valued_thanks_once_per_window(
    events: list[tuple[Any, ...]], cuts: list[int], resend: list[int]
) -> None:
    plain = messages_of([ev for ev, _ in events], cuts, [])
    # Values by (partition, offset): the event's, on its thanks received.
    values, next_offset = {}, [0, 0, 0]
    for ev, vs in events:
        values[(ev[0], next_offset[ev[0]])] = vs
        next_offset[ev[0]] += 1
    valued = [
        [e2 for e in m for e2 in with_values([e], values[(e.partition, e.offset)])] for m in plain
    ]
    for i, r in enumerate(resend):  # resent messages: a replay
        if valued:
            valued.insert(min(len(valued), r % len(valued) + 1 + i % 2), valued[r % len(valued)])
    columns, out = ColumnBook(), ColumnApplied()
    for run in in_order_runs([effects_to_batch(m) for m in valued]):
        apply_effects_batch(run, columns, RULES, out)
    org, window, start, value, user, thanker, part, offset = out.value_thanks_columns()
    starts_ms = (start * 1000).tolist()
    rows = list(zip(org, window, starts_ms, value, user, thanker, part, offset, strict=True))
    assert len(rows) == len(set(rows))  # nothing applied twice: one row per lineage
    got: dict[tuple[str, str, int, str, str], tuple[int, set[str]]] = {}
    for o, w, s, v, u, t, _, _ in rows:
        n, thankers = got.get((o, w, s, v, u), (0, set()))
        got[(o, w, s, v, u)] = (n + 1, thankers | {t})
    assert got == reference_value_scores(valued)
