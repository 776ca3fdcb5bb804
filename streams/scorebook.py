"""Window totals per user and the badges they earn: the aggregating stage, as pure code.

The aggregating stage owns every (org, user) that hashes to its partitions of
`kudos.effects`, so the totals it holds are complete and absolute. Effects are applied at
most once per key: each key remembers, per deciding partition, the highest source offset
it has applied (its high-water marks), and skips anything at or below. That makes a replay
of the effects topic, or a re-sent effects message, change nothing.

The caller loads the keys an effects batch needs (`keys_needed`) before `apply_effects`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from streams.rules import Effect, Metric, RuleConfig, RulesLookup
from streams.windows import UTC_CALENDAR, Calendar, WindowName

WindowKey = tuple[str, WindowName, int, str]  # org, window, window start ms, user


class Badge(StrEnum):
    FIRST_THANKS = "first_thanks"
    HELPER = "helper"
    SHARER = "sharer"
    STREAK_5 = "streak_5"


@dataclass(slots=True)
class WindowTotals:
    """Absolute totals of one (org, window, window_start, user)."""

    shares: int = 0
    thanks_given: int = 0
    thanks_received: int = 0
    reactions_received: int = 0
    thankers: set[str] = field(default_factory=set)
    hwm: dict[int, int] = field(default_factory=dict)

    @property
    def distinct_thankers(self) -> int:
        return len(self.thankers)

    @property
    def version(self) -> int:
        """Grows with every applied effect; equal states have equal versions."""
        return sum(o + 1 for o in self.hwm.values())

    def score(self, rules: RuleConfig) -> int:
        return rules.score(
            self.shares, self.thanks_given, self.thanks_received, self.reactions_received
        )

    def add(self, metric: Metric, actor_id: str) -> bool:
        """Apply one point; returns True when a new distinct thanker appeared."""
        if metric is Metric.SHARES:
            self.shares += 1
        elif metric is Metric.THANKS_GIVEN:
            self.thanks_given += 1
        elif metric is Metric.REACTIONS_RECEIVED:
            self.reactions_received += 1
        else:
            self.thanks_received += 1
            if actor_id not in self.thankers:
                self.thankers.add(actor_id)
                return True
        return False


@dataclass(frozen=True, slots=True)
class BadgeAward:
    org_id: str
    user_id: str
    badge: Badge
    period_start: int  # epoch ms; 0 for period `all`
    rule_version: int
    evidence: str


@dataclass(slots=True)
class ScoreBook:
    """The state of the aggregating stage: totals per key and badges already awarded."""

    totals: dict[WindowKey, WindowTotals] = field(default_factory=dict)
    awarded: set[tuple[str, str, Badge, int]] = field(default_factory=set)
    # Users whose awarded badges have been loaded (badges are loaded per user).
    users_loaded: set[tuple[str, str]] = field(default_factory=set)


@dataclass(slots=True)
class Applied:
    """What one `apply_effects` call changed: keys to write, new thankers, new badges."""

    dirty: set[WindowKey] = field(default_factory=set)
    new_thankers: list[tuple[WindowKey, str]] = field(default_factory=list)
    badges: list[BadgeAward] = field(default_factory=list)
    replayed: int = 0
    # occurred_at of every effect applied for the first time (for the freshness metric).
    event_times: list[int] = field(default_factory=list)


def streak_days_needed(day_ms: int, streak: int, cal: Calendar = UTC_CALENDAR) -> list[int]:
    """Days whose shares decide every streak that a share on `day_ms` can complete."""
    return [cal.shift_days(day_ms, i) for i in range(-(streak - 1), streak)]


def keys_needed(effects: Iterable[Effect], rules_for: RulesLookup) -> set[WindowKey]:
    """Every window key `apply_effects` reads for these effects."""
    keys: set[WindowKey] = set()
    for e in effects:
        rules = rules_for(e.org_id)
        cal = rules.calendar
        for window, start in cal.starts(e.occurred_at):
            keys.add((e.org_id, window, start, e.user_id))
        if e.metric is Metric.SHARES:
            for d in streak_days_needed(cal.day_start(e.occurred_at), rules.streak_days, cal):
                keys.add((e.org_id, "day", d, e.user_id))
    return keys


def apply_effects(
    effects: Sequence[Effect], book: ScoreBook, rules_for: RulesLookup, applied: Applied
) -> None:
    """Apply one effects message (all effects of some source batch for these users).

    Effects of one source offset arrive together, so the high-water check uses the marks as
    they were before this message.
    """
    before: dict[tuple[WindowKey, int], int] = {}
    all_totals = book.totals
    dirty = applied.dirty
    for e in effects:
        rules = rules_for(e.org_id)
        partition, offset, metric = e.partition, e.offset, e.metric
        badge_relevant = metric is Metric.THANKS_RECEIVED or metric is Metric.SHARES
        for window, start in rules.calendar.starts(e.occurred_at):
            key: WindowKey = (e.org_id, window, start, e.user_id)
            totals = all_totals.get(key)
            if totals is None:
                totals = all_totals[key] = WindowTotals()
            hwm = totals.hwm
            mark = before.get((key, partition))
            if mark is None:
                mark = before[(key, partition)] = hwm.get(partition, -1)
            if offset <= mark:
                if window == "all":
                    applied.replayed += 1
                continue  # applied before: a replay
            if window == "all":
                applied.event_times.append(e.occurred_at)
            if hwm.get(partition, -1) < offset:
                hwm[partition] = offset
            was_zero_thanks = totals.thanks_received == 0
            was_zero_shares = totals.shares == 0
            if totals.add(metric, e.actor_id):
                applied.new_thankers.append((key, e.actor_id))
            dirty.add(key)
            if badge_relevant:
                _badges_after(
                    key, totals, e, was_zero_thanks, was_zero_shares, book, rules, applied
                )


def _award(
    book: ScoreBook,
    applied: Applied,
    org: str,
    user: str,
    badge: Badge,
    period: int,
    rules: RuleConfig,
    evidence: str,
) -> None:
    ident = (org, user, badge, period)
    if ident in book.awarded:
        return
    book.awarded.add(ident)
    applied.badges.append(BadgeAward(org, user, badge, period, rules.version, evidence))


def _badges_after(
    key: WindowKey,
    totals: WindowTotals,
    e: Effect,
    was_zero_thanks: bool,
    was_zero_shares: bool,
    book: ScoreBook,
    rules: RuleConfig,
    applied: Applied,
) -> None:
    """Badges are monotonic in the totals, so the set awarded does not depend on order."""
    org, window, start, user = key
    if e.metric is Metric.THANKS_RECEIVED:
        if window == "all" and was_zero_thanks:
            _award(
                book,
                applied,
                org,
                user,
                Badge.FIRST_THANKS,
                0,
                rules,
                f"first counted thanks from event at {e.partition}:{e.offset}",
            )
        if window == "week" and totals.distinct_thankers >= rules.helper_distinct_thankers:
            _award(
                book,
                applied,
                org,
                user,
                Badge.HELPER,
                start,
                rules,
                f"{totals.distinct_thankers} distinct thankers",
            )
    elif e.metric is Metric.SHARES:
        if window == "week" and totals.shares >= rules.sharer_weekly_shares:
            _award(book, applied, org, user, Badge.SHARER, start, rules, f"{totals.shares} shares")
        if window == "day" and was_zero_shares:
            _streaks_through(org, user, start, book, rules, applied)


def _streaks_through(
    org: str, user: str, day: int, book: ScoreBook, rules: RuleConfig, applied: Applied
) -> None:
    """Award streak_5 for every day E such that days E-4..E all have a counted share."""
    n = rules.streak_days
    days = streak_days_needed(day, n, rules.calendar)
    active = [
        (t := book.totals.get((org, "day", d, user))) is not None and t.shares > 0 for d in days
    ]
    for end in range(n - 1, len(days)):
        if all(active[end - n + 1 : end + 1]):
            _award(
                book,
                applied,
                org,
                user,
                Badge.STREAK_5,
                days[end],
                rules,
                f"counted shares on {n} consecutive days",
            )
