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

from schemas.vocabulary import Metric, WindowKey, WindowName
from streams.domain.badges import BadgeRule, streak_ends
from streams.domain.rules import Effect, RuleConfig, RulesLookup
from streams.domain.windows import Calendar


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
    # Time-decayed score: its value as of `decay_at` (epoch ms, the latest point's time).
    decay: float = 0.0
    decay_at: int = 0

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

    def add_decayed(self, points: int, at_ms: int, half_life_ms: float) -> None:
        """Add `points` earned at `at_ms` to the decayed score.

        Kept as the value at the latest point's time, so it stays in range however long a
        key lives; the value at any later time t is decay * 2 ** (-(t - decay_at) / half
        life). Order of points changes the result only by float rounding (~1e-15)."""
        if self.decay == 0.0 and self.decay_at == 0:
            self.decay, self.decay_at = float(points), at_ms
        elif at_ms >= self.decay_at:
            fade = 2.0 ** (-(at_ms - self.decay_at) / half_life_ms)
            self.decay, self.decay_at = self.decay * fade + points, at_ms
        else:
            self.decay += points * 2.0 ** (-(self.decay_at - at_ms) / half_life_ms)

    def decayed_at(self, at_ms: int, half_life_ms: float) -> float:
        """The decayed score as of `at_ms` (not before the latest point)."""
        return float(self.decay * 2.0 ** (-max(at_ms - self.decay_at, 0) / half_life_ms))

    def take_back(self, metric: Metric, actor_id: str, drop_thanker: bool) -> bool:
        """Undo one point (a reversal); returns True when `actor_id` left the thankers."""
        if metric is Metric.THANKS_GIVEN:
            self.thanks_given = max(self.thanks_given - 1, 0)
        elif metric is Metric.THANKS_RECEIVED:
            self.thanks_received = max(self.thanks_received - 1, 0)
            if drop_thanker and actor_id in self.thankers:
                self.thankers.discard(actor_id)
                return True
        return False

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
    badge: str  # a BadgeRule's name (v1: the `Badge` names)
    period_start: int  # epoch ms; 0 for period `all`
    rule_version: int
    evidence: str
    period: WindowName | None = None  # the window period_start refers to (None: v1's)


@dataclass(slots=True)
class ScoreBook:
    """The state of the aggregating stage: totals per key and badges already awarded."""

    totals: dict[WindowKey, WindowTotals] = field(default_factory=dict)
    awarded: set[tuple[str, str, str, int]] = field(default_factory=set)
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
    # Thankers a collusion audit took out of a key's set (deleted from kudos.thankers).
    dropped_thankers: list[tuple[WindowKey, str]] = field(default_factory=list)


def keys_needed(effects: Iterable[Effect], rules_for: RulesLookup) -> set[WindowKey]:
    """Every window key `apply_effects` reads for these effects."""
    keys: set[WindowKey] = set()
    for e in effects:
        rules = rules_for(e.org_id)
        cal = rules.calendar
        for window, start in cal.starts(e.occurred_at):
            keys.add((e.org_id, window, start, e.user_id))
        if e.metric is Metric.SHARES:
            day = cal.day_start(e.occurred_at)
            for rule in rules.badge_rules:
                if rule.kind == "streak":
                    for d in streak_days_around(day, rule, cal):
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
        by_change = rules.badge_index
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
            was_zero_shares = totals.shares == 0
            if totals.add(metric, e.actor_id):
                applied.new_thankers.append((key, e.actor_id))
            totals.add_decayed(rules.weight(metric), e.occurred_at, rules.decay_half_life_ms)
            dirty.add(key)
            badge_rules = by_change.get((window, metric.value))
            if badge_rules:
                _badges_after(key, totals, e, was_zero_shares, badge_rules, book, rules, applied)


def _award(
    book: ScoreBook,
    applied: Applied,
    org: str,
    user: str,
    rule: BadgeRule,
    period: int,
    rules: RuleConfig,
    evidence: str,
) -> None:
    award_once(book.awarded, applied.badges, org, user, rule, period, rules, evidence)


def award_once(
    awarded: set[tuple[str, str, str, int]],
    badges: list[BadgeAward],
    org: str,
    user: str,
    rule: BadgeRule,
    period: int,
    rules: RuleConfig,
    evidence: str,
) -> None:
    """Award `rule` to (org, user) for `period` unless it is in `awarded` already."""
    ident = (org, user, rule.name, period)
    if ident not in awarded:
        awarded.add(ident)
        badges.append(
            BadgeAward(org, user, rule.name, period, rules.version, evidence, rule.period)
        )


def badge_value(totals: WindowTotals, metric: str, rules: RuleConfig) -> int:
    if metric == "distinct_thankers":
        return totals.distinct_thankers
    if metric == "score":
        return totals.score(rules)
    return int(getattr(totals, metric))


def _badges_after(
    key: WindowKey,
    totals: WindowTotals,
    e: Effect,
    was_zero_shares: bool,
    badge_rules: tuple[BadgeRule, ...],
    book: ScoreBook,
    rules: RuleConfig,
    applied: Applied,
) -> None:
    """Badges are monotonic in the totals, so the set awarded does not depend on order."""
    org, _window, start, user = key
    for rule in badge_rules:
        if (org, user, rule.name, 0 if rule.kind == "first" else start) in book.awarded:
            continue
        if rule.kind == "streak":
            if was_zero_shares:
                _streaks_through(org, user, start, book, rules, rule, applied)
            continue
        value = badge_value(totals, rule.metric, rules)
        if rule.kind == "first":
            _award(
                book,
                applied,
                org,
                user,
                rule,
                0,
                rules,
                f"first counted {rule.metric} from event at {e.partition}:{e.offset}",
            )
        elif value >= rule.threshold:
            _award(book, applied, org, user, rule, start, rules, f"{value} {rule.metric}")


def streak_days_around(day: int, rule: BadgeRule, cal: Calendar) -> list[int]:
    """The local days whose shares decide every streak through `day` (centre entry)."""
    span = rule.span_days
    return [cal.shift_days(day, i) for i in range(-(span - 1), span)]


def _streaks_through(
    org: str,
    user: str,
    day: int,
    book: ScoreBook,
    rules: RuleConfig,
    rule: BadgeRule,
    applied: Applied,
) -> None:
    """Award the streak badge for every day that ends a streak through `day`."""
    cal = rules.calendar
    days = streak_days_around(day, rule, cal)
    active = [
        (t := book.totals.get((org, "day", d, user))) is not None and t.shares > 0 for d in days
    ]
    weeks = [cal.window_start("week", d) for d in days]
    for end in streak_ends(active, weeks, rule.span_days - 1, rule):
        freezes = "" if rule.freezes_per_week == 0 else " (with freeze days)"
        _award(
            book,
            applied,
            org,
            user,
            rule,
            days[end],
            rules,
            f"counted shares on {rule.days} days{freezes}",
        )


# The high-water-mark namespace of collusion audits: an audit's adjustments are applied
# once per key, with the week start of the audit as their "offset". Org weeks are audited
# in order, so the marks grow. Far above any real partition number (hwm_partitions is UInt32).
AUDIT_PARTITION = 2**31


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One point a collusion audit takes back (delta -1) or gives (delta +1), for one user.

    `drop_thanker`: the windows in which, for a thanks_received point taken back, the actor
    no longer counts among the user's distinct thankers."""

    org_id: str
    user_id: str
    metric: Metric
    actor_id: str
    occurred_at: int
    delta: int
    drop_thanker: frozenset[str] = frozenset()


def apply_adjustments(
    adjustments: Sequence[Adjustment],
    audit_offset: int,
    book: ScoreBook,
    rules_for: RulesLookup,
    applied: Applied,
) -> None:
    """Apply one audit's adjustments; a key that has applied this audit before skips it.

    A point given back earns badges as any point does; badges already awarded stay."""
    before: dict[WindowKey, int] = {}
    for a in adjustments:
        rules = rules_for(a.org_id)
        for window, start in rules.calendar.starts(a.occurred_at):
            key: WindowKey = (a.org_id, window, start, a.user_id)
            totals = book.totals.get(key)
            if totals is None:
                totals = book.totals[key] = WindowTotals()
            mark = before.get(key)
            if mark is None:
                mark = before[key] = totals.hwm.get(AUDIT_PARTITION, -1)
            if audit_offset <= mark:
                continue  # this audit was applied to the key before
            totals.hwm[AUDIT_PARTITION] = audit_offset
            applied.dirty.add(key)
            totals.add_decayed(
                a.delta * rules.weight(a.metric), a.occurred_at, rules.decay_half_life_ms
            )
            if a.delta < 0:
                if totals.take_back(a.metric, a.actor_id, window in a.drop_thanker):
                    applied.dropped_thankers.append((key, a.actor_id))
                continue
            was_zero_shares = totals.shares == 0
            if totals.add(a.metric, a.actor_id):
                applied.new_thankers.append((key, a.actor_id))
            badge_rules = rules.badge_index.get((window, a.metric.value))
            if badge_rules:
                effect = Effect(
                    a.org_id, a.user_id, a.metric, a.actor_id, a.occurred_at, AUDIT_PARTITION, 0
                )
                _badges_after(
                    key, totals, effect, was_zero_shares, badge_rules, book, rules, applied
                )


# A row of kudos.value_scores: (org, window, start ms, value, user, thanks_received,
# distinct_thankers).
ValueCount = tuple[str, WindowName, int, str, str, int, int]


def value_badges(
    counts: Iterable[ValueCount],
    rules_for: RulesLookup,
    awarded: set[tuple[str, str, str, int]],
) -> list[BadgeAward]:
    """Awards of the badge rules naming a company value (`RuleConfig.value_badge_rules`),
    from the stored counts of the keys a batch changed: a rule's threshold reached in its
    window is awarded once per period (`awarded`, updated). The counts only grow with
    effects, so the set awarded does not depend on the order effects arrive in."""
    out: list[BadgeAward] = []
    for org, window, start, value, user, thanks, thankers in sorted(counts):
        rules = rules_for(org)
        for rule in rules.value_badge_rules:
            if (rule.value, rule.window) != (value, window):
                continue
            got = thanks if rule.metric == "thanks_received" else thankers
            if got >= rule.threshold:
                evidence = f"{got} {rule.metric} carrying the value {value}"
                award_once(awarded, out, org, user, rule, start, rules, evidence)
    return out
