"""The weekly collusion audit (streams/domain/collusion.py): groups, reversals, caps re-decided."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.event import CollaborationEvent, EventType
from schemas.rows import ThanksDecision
from schemas.vocabulary import DAY_MS, HOUR_MS, Reason
from streams.domain.collusion import (
    Change,
    audit_week,
    collusive_groups,
    flagged_pairs,
    recap_changes,
    thanker_drops,
)
from streams.domain.rules import (
    Decision,
    PartitionState,
    RuleConfig,
    RulesLookup,
    SourceRecord,
    decide_batch,
)
from streams.domain.windows import UTC_CALENDAR
from tests.streams.factories import event, ms

WEEK = ms("2026-11-23T00:00:00")  # a Monday: the start of a UTC org week
NOW = WEEK + 8 * DAY_MS
TOPIC = "collab.events"
_offsets = itertools.count()

AUDIT = RuleConfig(collusion_min_each=3)


def td(
    actor: str,
    recipient: str,
    reason: Reason = Reason.COUNTED,
    *,
    at: int = WEEK + 10 * HOUR_MS,
    offset: int | None = None,
    partition: int = 0,
) -> ThanksDecision:
    off = next(_offsets) if offset is None else offset
    return ThanksDecision("acme", f"ev-{off}", actor, recipient, reason, at, TOPIC, partition, off)


def thanks(actor: str, recipient: str, n: int, **kw: int) -> list[ThanksDecision]:
    return [td(actor, recipient, **kw) for _ in range(n)]


def stored(decisions: Iterable[Decision]) -> list[ThanksDecision]:
    """Decisions as the auditor reads them back from kudos.decisions."""
    out = []
    for d in decisions:
        e = d.record.event
        if e.event_type is EventType.THANKS:
            out.append(
                ThanksDecision(
                    e.org_id,
                    e.event_id,
                    e.actor_id,
                    d.recipient_id,
                    d.reason,
                    e.occurred_at,
                    d.record.topic,
                    d.record.partition,
                    d.record.offset,
                )
            )
    return out


def decide_partitions(records: Sequence[SourceRecord], rules: RuleConfig) -> list[Decision]:
    """Decide records as the deciding stage does: one state per input partition."""
    out: list[Decision] = []
    for p in sorted({r.partition for r in records}):
        part = sorted((r for r in records if r.partition == p), key=lambda r: r.offset)
        out.extend(decide_batch(part, PartitionState(), NOW, RulesLookup(rules)))
    return out


def counted_after(
    decisions: Iterable[ThanksDecision], changes: Iterable[Change]
) -> set[tuple[str, int, int, str]]:
    new = {c.decision.key: c.reason for c in changes}
    return {d.key for d in decisions if new.get(d.key, d.reason) is Reason.COUNTED}


# --- unit ------------------------------------------------------------------------------


def test_reciprocal_pair_far_above_outside_thanks_is_flagged() -> None:
    ds = thanks("ann", "bo", 5) + thanks("bo", "ann", 5) + thanks("cy", "ann", 1)
    assert collusive_groups(ds, AUDIT) == [("ann", "bo")]
    changes = audit_week(ds, AUDIT)
    assert len(changes) == 10
    assert {(c.reason, c.rule, c.group, c.delta) for c in changes} == {
        (Reason.COLLUSION, "reciprocal", ("ann", "bo"), -1)
    }
    # cy's genuine thank-you is untouched.
    assert all(c.decision.actor_id != "cy" for c in changes)


def test_same_pair_with_many_outside_thanks_is_not_flagged() -> None:
    ds = thanks("ann", "bo", 5) + thanks("bo", "ann", 5)
    ds += [d for who in ("cy", "di", "ed") for d in thanks(who, "ann", 2)]
    assert collusive_groups(ds, AUDIT) == []
    assert audit_week(ds, AUDIT) == []


def test_inside_must_be_strictly_more_than_ratio_times_outside() -> None:
    base = thanks("ann", "bo", 9) + thanks("bo", "ann", 6)
    # ann: inside 6, outside 2, ratio 3 -> 6 > 6 fails.
    assert collusive_groups(base + thanks("cy", "ann", 2), AUDIT) == []
    assert collusive_groups(base + thanks("cy", "ann", 1), AUDIT) == [("ann", "bo")]


def test_three_clique_is_flagged_as_clique() -> None:
    ds = [d for a, b in itertools.permutations(["ann", "bo", "cy"], 2) for d in thanks(a, b, 3)]
    # Each pair alone is not collusive: half of what each member receives is from the third.
    assert collusive_groups(ds, AUDIT) == [("ann", "bo", "cy")]
    changes = audit_week(ds, AUDIT)
    assert len(changes) == 18
    assert {(c.rule, c.group) for c in changes} == {("clique", ("ann", "bo", "cy"))}


def test_clique_larger_than_max_group_is_not_a_candidate() -> None:
    ds = [d for a, b in itertools.permutations(["ann", "bo", "cy"], 2) for d in thanks(a, b, 3)]
    assert collusive_groups(ds, RuleConfig(collusion_min_each=3, collusion_max_group=2)) == []


def test_pair_below_min_each_is_not_flagged() -> None:
    ds = thanks("ann", "bo", 2) + thanks("bo", "ann", 8)
    assert collusive_groups(ds, AUDIT) == []
    assert collusive_groups(ds, RuleConfig(collusion_min_each=2)) == [("ann", "bo")]


def test_only_counted_thanks_make_a_pair_mutual() -> None:
    ds = thanks("ann", "bo", 3) + thanks("bo", "ann", 2)
    ds.append(td("bo", "ann", Reason.PAIR_DAILY_CAP))
    assert collusive_groups(ds, AUDIT) == []


def test_disabled_when_min_each_is_zero() -> None:
    ds = thanks("ann", "bo", 20) + thanks("bo", "ann", 20)
    off = RuleConfig(collusion_min_each=0)
    assert collusive_groups(ds, off) == []
    assert audit_week(ds, off) == []


def test_duplicate_rows_count_once() -> None:
    ds = thanks("ann", "bo", 2) + thanks("bo", "ann", 3)
    assert collusive_groups(ds + ds, AUDIT) == []  # 2 distinct ann -> bo, not 4
    ds += thanks("ann", "bo", 1)
    assert collusive_groups(ds + ds, AUDIT) == [("ann", "bo")]
    changes = audit_week(ds + list(reversed(ds)), AUDIT)
    assert len(changes) == 6
    assert changes == audit_week(ds, AUDIT)


def test_a_pair_names_its_largest_group_ties_alphabetically() -> None:
    # ann, bo, cy mutual; ann, bo, di mutual; cy and di are not: two 3-cliques share ann-bo.
    rules = RuleConfig(collusion_min_each=1, collusion_ratio=0.0)
    pairs = [("ann", "bo"), ("ann", "cy"), ("bo", "cy"), ("ann", "di"), ("bo", "di")]
    ds = [d for a, b in pairs for d in thanks(a, b, 1) + thanks(b, a, 1)]
    groups = collusive_groups(ds, rules)
    assert groups[:2] == [("ann", "bo", "cy"), ("ann", "bo", "di")]
    assert len(groups) == 2 + len(pairs)
    flagged = flagged_pairs(groups)
    assert flagged[("bo", "ann")] == ("ann", "bo", "cy")
    assert flagged[("di", "bo")] == ("ann", "bo", "di")
    by_pair = {
        (c.decision.actor_id, c.decision.recipient_id): c.group for c in audit_week(ds, rules)
    }
    assert by_pair[("ann", "bo")] == ("ann", "bo", "cy")
    assert by_pair[("ann", "di")] == ("ann", "bo", "di")


def test_change_delta() -> None:
    counted, refused = td("a", "b"), td("a", "b", Reason.GIVER_BUDGET)
    assert Change(counted, Reason.COLLUSION, "reciprocal", ("a", "b")).delta == -1
    assert Change(refused, Reason.COUNTED, "recap", ()).delta == 1
    assert Change(refused, Reason.PAIR_DAILY_CAP, "recap", ()).delta == 0


def test_genuine_thanks_refused_by_the_budget_counts_once_the_fraud_is_reversed() -> None:
    rules = RuleConfig(version=2, giver_daily_budget=3, collusion_min_each=3)
    at = "2026-11-24T09:00:00"
    evs = [event("THANKS", "ann", ("bo",), at=at) for _ in range(3)]
    evs.append(event("THANKS", "ann", ("cy",), at="2026-11-24T10:00:00"))
    evs += [event("THANKS", "bo", ("ann",), at="2026-11-24T11:00:00") for _ in range(3)]
    recs = [SourceRecord(e, TOPIC, 0, i) for i, e in enumerate(evs)]
    ds = stored(decide_partitions(recs, rules))
    genuine = ds[3]
    assert (genuine.recipient_id, genuine.reason) == ("cy", Reason.GIVER_BUDGET)
    changes = audit_week(ds, rules)
    assert [(c.decision.recipient_id, c.reason, c.rule) for c in changes] == [
        ("bo", Reason.COLLUSION, "reciprocal"),
        ("bo", Reason.COLLUSION, "reciprocal"),
        ("bo", Reason.COLLUSION, "reciprocal"),
        ("cy", Reason.COUNTED, "recap"),
        ("ann", Reason.COLLUSION, "reciprocal"),
        ("ann", Reason.COLLUSION, "reciprocal"),
        ("ann", Reason.COLLUSION, "reciprocal"),
    ]
    recap = changes[3]
    assert recap.decision == genuine and recap.group == () and recap.delta == 1


def test_recap_with_nothing_removed_keeps_the_original_order_inside_an_event() -> None:
    # di was counted before bo ran into the budget: re-deciding bo first would swap them.
    rules = RuleConfig(version=2, giver_daily_budget=1, collusion_min_each=1)
    recs = [SourceRecord(event("THANKS", "ann", ("di", "bo")), TOPIC, 0, 0)]
    ds = stored(decide_partitions(recs, rules))
    assert [(d.recipient_id, d.reason) for d in ds] == [
        ("di", Reason.COUNTED),
        ("bo", Reason.GIVER_BUDGET),
    ]
    assert recap_changes(ds, {"ann"}, (), rules) == []


def test_recap_is_per_partition_and_keeps_refusals_of_other_reasons() -> None:
    rules = RuleConfig(version=2, giver_daily_budget=1, collusion_min_each=1)
    ds = [
        td("ann", "bo", offset=0),
        td("ann", "cy", Reason.GIVER_BUDGET, offset=1),
        td("ann", "cy", Reason.PRIVATE, offset=2),
        td("ann", "di", offset=0, partition=1),  # its own partition's budget
        td("bo", "ann", offset=3),
    ]
    changes = audit_week(ds, rules)
    assert [(c.decision.key, c.reason) for c in changes] == [
        ((TOPIC, 0, 0, "bo"), Reason.COLLUSION),
        ((TOPIC, 0, 1, "cy"), Reason.COUNTED),
        ((TOPIC, 0, 3, "ann"), Reason.COLLUSION),
    ]


def test_thanker_drops_per_window() -> None:
    rules = RuleConfig(collusion_min_each=1)
    t = WEEK + DAY_MS + 10 * HOUR_MS
    d1 = td("ann", "bo", at=t)
    d2 = td("ann", "bo", at=t + HOUR_MS)  # same day, next hour: still counted
    d3 = td("ann", "cy", at=t)
    d4 = td("ann", "cy", Reason.GIVER_BUDGET, at=t + 2 * DAY_MS)  # now counted
    ds = [d1, d2, d3, d4]
    changes = [
        Change(d1, Reason.COLLUSION, "reciprocal", ("ann", "bo")),
        Change(d3, Reason.COLLUSION, "reciprocal", ("ann", "cy")),
        Change(d4, Reason.COUNTED, "recap", ()),
    ]
    day = WEEK + DAY_MS
    month, quarter, year = (UTC_CALENDAR.window_start(w, t) for w in ("month", "quarter", "year"))
    assert t + 2 * DAY_MS < UTC_CALENDAR.window_start("month", t + 32 * DAY_MS)  # one month
    assert thanker_drops(ds, changes, rules, {}) == {
        ("ann", "bo"): [("hour", t)],
        ("ann", "cy"): [("day", day), ("hour", t)],
    }
    # Every ann -> bo reversed: all its windows go, unless thanks of other weeks keep them.
    changes.append(Change(d2, Reason.COLLUSION, "reciprocal", ("ann", "bo")))
    drops = thanker_drops(ds, changes, rules, {})
    assert drops[("ann", "bo")] == [
        ("all", 0),
        ("day", day),
        ("hour", t),
        ("hour", t + HOUR_MS),
        ("month", month),
        ("quarter", quarter),
        ("week", WEEK),
        ("year", year),
    ]
    beyond = thanker_drops(ds, changes, rules, {("ann", "bo"): {-1}})  # in another year
    assert beyond[("ann", "bo")] == [w for w in drops[("ann", "bo")] if w != ("all", 0)]
    same_month = thanker_drops(ds, changes, rules, {("ann", "bo"): {month}})  # another week
    assert same_month[("ann", "bo")] == [
        ("day", day),
        ("hour", t),
        ("hour", t + HOUR_MS),
        ("week", WEEK),
    ]
    assert thanker_drops(ds, [changes[2]], rules, {}) == {}


# --- properties ------------------------------------------------------------------------

PEOPLE = ["ann", "bo", "cy", "di", "ed", "flo"]


def reference_groups(ds: Sequence[ThanksDecision], rules: RuleConfig) -> list[tuple[str, ...]]:
    """Every subset of people, tried against the definition."""
    if rules.collusion_min_each == 0:
        return []
    rows = {d.key: d for d in ds}.values()
    n = {(a, b): 0 for a in PEOPLE for b in PEOPLE}
    for d in rows:
        if d.reason is Reason.COUNTED:
            n[(d.actor_id, d.recipient_id)] += 1
    m = rules.collusion_min_each
    out = []
    for size in range(2, rules.collusion_max_group + 1):
        for group in itertools.combinations(PEOPLE, size):
            if not all(
                n[(a, b)] >= m and n[(b, a)] >= m for a, b in itertools.combinations(group, 2)
            ):
                continue
            if all(
                sum(n[(y, x)] for y in group if y != x)
                > rules.collusion_ratio * sum(n[(y, x)] for y in PEOPLE if y not in group)
                for x in group
            ):
                out.append(group)
    return sorted(out, key=lambda g: (-len(g), g))


REASONS = st.sampled_from(
    [Reason.COUNTED] * 6 + [Reason.PAIR_DAILY_CAP, Reason.GIVER_BUDGET, Reason.PRIVATE]
)


@st.composite
def week_of_decisions(draw: st.DrawFn) -> list[ThanksDecision]:
    raw = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PEOPLE),
                st.sampled_from(PEOPLE),
                REASONS,
                st.integers(0, 7 * 24 - 1),
                st.integers(0, 1),
            ),
            max_size=80,
        )
    )
    ds = [
        td(a, b, r, at=WEEK + h * HOUR_MS, offset=i, partition=p)
        for i, (a, b, r, h, p) in enumerate(raw)
        if a != b
    ]
    dupes = draw(st.lists(st.sampled_from(ds), max_size=5)) if ds else []
    return ds + dupes


AUDIT_RULES = st.builds(
    RuleConfig,
    version=st.just(2),
    pair_daily_cap=st.integers(1, 3),
    giver_daily_budget=st.integers(0, 3),
    giver_weekly_budget=st.integers(0, 8),
    collusion_min_each=st.integers(0, 3),
    collusion_ratio=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
    collusion_max_group=st.integers(2, 6),
)


@settings(max_examples=300, deadline=None)
@given(week_of_decisions(), AUDIT_RULES)
def test_groups_match_a_brute_force_over_every_subset(
    ds: list[ThanksDecision], rules: RuleConfig
) -> None:
    assert collusive_groups(ds, rules) == reference_groups(ds, rules)


@settings(max_examples=150, deadline=None)
@given(week_of_decisions(), AUDIT_RULES, st.randoms(use_true_random=False))
def test_audit_does_not_depend_on_the_input_order(
    ds: list[ThanksDecision], rules: RuleConfig, rnd: random.Random
) -> None:
    shuffled = list(ds)
    rnd.shuffle(shuffled)
    expected = audit_week(ds, rules)
    assert audit_week(shuffled, rules) == expected
    assert [c.decision.key for c in expected] == sorted({c.decision.key for c in expected})


@st.composite
def week_of_events(draw: st.DrawFn) -> list[SourceRecord]:
    """THANKS among a few people within one org week, spread over two partitions, not in
    time order, each to 1-3 distinct recipients in any order."""
    raw = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PEOPLE[:4]),
                st.lists(st.sampled_from(PEOPLE[:5]), min_size=1, max_size=3, unique=True),
                st.integers(0, 7 * 24 - 1),
                st.integers(0, 1),
            ),
            max_size=70,
        )
    )
    return [
        SourceRecord(event("THANKS", a, tuple(rs), at=WEEK + h * HOUR_MS), TOPIC, p, i)
        for i, (a, rs, h, p) in enumerate(raw)
    ]


REAL_RULES = st.builds(
    RuleConfig,
    version=st.just(2),
    pair_daily_cap=st.integers(1, 3),
    giver_daily_budget=st.integers(0, 4),
    giver_weekly_budget=st.integers(0, 10),
    collusion_min_each=st.integers(1, 2),
    collusion_ratio=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    collusion_max_group=st.integers(2, 4),
    timezone=st.sampled_from(["UTC", "Asia/Kolkata"]),
)


def without(
    record: SourceRecord,
    removed: Iterable[tuple[str, str]],
    counted: set[tuple[str, int, int, str]],
) -> SourceRecord | None:
    """The event without the removed pairs' recipients, the rest in the order the auditor
    re-decides them: those counted at first, then by recipient id (stored rows do not keep
    the original order)."""
    e = record.event
    key = (record.topic, record.partition, record.offset)
    rs = tuple(
        sorted(
            (r for r in e.recipient_ids if (e.actor_id, r) not in removed),
            key=lambda r: ((*key, r) not in counted, r),
        )
    )
    if not rs:
        return None
    kept = CollaborationEvent(
        e.event_id,
        e.event_type,
        e.org_id,
        e.actor_id,
        rs,
        e.content_id,
        e.channel,
        e.visibility,
        e.occurred_at,
        e.source,
    )
    return SourceRecord(kept, record.topic, record.partition, record.offset)


@settings(max_examples=300, deadline=None)
@given(week_of_events(), REAL_RULES)
def test_caps_recomputed_match_deciding_again_without_the_reversed_thanks(
    recs: list[SourceRecord], rules: RuleConfig
) -> None:
    if rules.timezone != "UTC":  # keep every event inside one week of the org's calendar
        recs = [
            r
            for r in recs
            if rules.calendar.window_start("week", r.event.occurred_at)
            == rules.calendar.window_start("week", WEEK + 3 * DAY_MS)
        ]
    ds = stored(decide_partitions(recs, rules))
    everyone = {d.actor_id for d in ds}
    # Nothing removed: re-deciding reproduces the deciding stage exactly.
    assert recap_changes(ds, everyone, (), rules) == []

    changes = audit_week(ds, rules)
    groups = collusive_groups(ds, rules)
    members = {x for g in groups for x in g}
    flagged = flagged_pairs(groups)
    assert all(c.decision.actor_id in members for c in changes)
    assert all(c.delta != 0 for c in changes)
    for c in changes:
        pair = (c.decision.actor_id, c.decision.recipient_id)
        assert (c.reason is Reason.COLLUSION) == (pair in flagged)

    # Deciding the week again without the flagged pairs' thanks gives the same counted set.
    counted = {d.key for d in ds if d.reason is Reason.COUNTED}
    rest = [r for r in (without(r, flagged, counted) for r in recs) if r is not None]
    again = stored(decide_partitions(rest, rules))
    expected = {d.key for d in again if d.reason is Reason.COUNTED and d.actor_id in members}
    mine = [d for d in ds if d.actor_id in members]
    assert counted_after(mine, changes) == expected
