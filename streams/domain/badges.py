"""Badge rules: which badges an org awards, as data (rules v1's four are the default).

Three kinds, each monotonic in the totals (a total only grows), so the set of badges
awarded never depends on the order effects arrive in:

* `threshold`: `metric` over one `window` reaches `threshold` (period: that window);
* `first`: `metric` becomes non-zero for the first time ever (period: all);
* `streak`: counted shares on `days` local days, consecutive except for at most
  `freezes_per_week` days without a share per (org) week that keep the streak alive
  without counting towards it (period: the streak's last day).

A threshold rule may name a company `value` (one of the org's `values`): then `metric`
(`thanks_received` or `distinct_thankers`) counts only the counted thanks received that
carried it, as kudos.value_scores does. The aggregating stage checks those rules against
the stored value rows after writing them (`scorebook.value_badges`), not in its totals.

Configured per org in kudos.toml:

    [[org_rules.acme.badges]]
    name = "reactor"
    kind = "threshold"
    metric = "reactions_received"
    window = "day"
    threshold = 10
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from schemas.vocabulary import WINDOWS, WindowName

BadgeKind = Literal["threshold", "first", "streak"]
# What a badge can be measured on: the four totals, distinct thankers and the score.
BADGE_METRICS: Final = (
    "shares",
    "thanks_given",
    "thanks_received",
    "reactions_received",
    "distinct_thankers",
    "score",
)
# What a badge naming a company value can be measured on (kudos.value_scores' counts).
VALUE_BADGE_METRICS: Final = ("thanks_received", "distinct_thankers")
# Which effect metrics can change each badge metric.
_CHANGED_BY: Final = {
    "shares": ("shares",),
    "thanks_given": ("thanks_given",),
    "thanks_received": ("thanks_received",),
    "reactions_received": ("reactions_received",),
    "distinct_thankers": ("thanks_received",),
    "score": ("shares", "thanks_given", "thanks_received", "reactions_received"),
}


@dataclass(frozen=True, slots=True)
class BadgeRule:
    name: str
    kind: BadgeKind = "threshold"
    metric: str = "thanks_received"
    window: WindowName = "week"
    threshold: int = 1
    days: int = 5
    freezes_per_week: int = 0
    value: str | None = None  # a company value: the metric counts thanks that carried it

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"badge name must be non-empty without '/': {self.name!r}")
        if self.kind not in ("threshold", "first", "streak"):
            raise ValueError(f"badge {self.name}: kind must be threshold, first or streak")
        if self.metric not in BADGE_METRICS:
            raise ValueError(f"badge {self.name}: metric must be one of {BADGE_METRICS}")
        if self.window not in WINDOWS:
            raise ValueError(f"badge {self.name}: window must be one of {WINDOWS}")
        if self.threshold < 1 or self.days < 1:
            raise ValueError(f"badge {self.name}: threshold and days must be at least 1")
        if not 0 <= self.freezes_per_week <= 3:
            raise ValueError(f"badge {self.name}: freezes_per_week must be 0 to 3")
        if self.value is not None and (
            self.kind != "threshold" or self.metric not in VALUE_BADGE_METRICS
        ):
            raise ValueError(
                f"badge {self.name}: a badge naming a value is a threshold on "
                + " or ".join(VALUE_BADGE_METRICS)
            )

    @property
    def period(self) -> WindowName:
        """The window a badge's period_start refers to."""
        if self.kind == "first":
            return "all"
        if self.kind == "streak":
            return "day"
        return self.window

    @property
    def span_days(self) -> int:
        """The most calendar days a streak of `days` share days can span with its freezes."""
        span = self.days
        while True:
            longer = self.days + self.freezes_per_week * (span // 7 + 2)
            if self.freezes_per_week == 0 or longer == span:
                return span
            span = longer


def v1_badges(
    helper_distinct_thankers: int, sharer_weekly_shares: int, streak_days: int
) -> tuple[BadgeRule, ...]:
    """DESIGN.md's badges v1, from the v1 rule parameters."""
    return (
        BadgeRule("first_thanks", "first", "thanks_received"),
        BadgeRule("helper", "threshold", "distinct_thankers", "week", helper_distinct_thankers),
        BadgeRule("sharer", "threshold", "shares", "week", sharer_weekly_shares),
        BadgeRule("streak_5", "streak", "shares", "day", 1, streak_days),
    )


def badges_by_change(badges: tuple[BadgeRule, ...]) -> dict[tuple[str, str], tuple[BadgeRule, ...]]:
    """(window, effect metric) -> the badge rules an effect there can newly satisfy."""
    out: dict[tuple[str, str], list[BadgeRule]] = {}
    for rule in badges:
        if rule.kind == "streak":
            out.setdefault(("day", "shares"), []).append(rule)
            continue
        window = "all" if rule.kind == "first" else rule.window
        for metric in _CHANGED_BY[rule.metric]:
            out.setdefault((window, metric), []).append(rule)
    return {k: tuple(v) for k, v in out.items()}


def streak_ends(active: list[bool], weeks: list[int], center: int, rule: BadgeRule) -> list[int]:
    """Indexes E of `active` (one entry per consecutive local day, `weeks` the start of each
    day's week) where a streak of `rule.days` share days ends, that includes day `center`.

    Walking back from an active day E, each day without a share is frozen if its week has
    a freeze left; the walk stops at the first one that cannot be. Every day inside the
    span must be either active or frozen, so the walk has no choices to make."""
    out: list[int] = []
    for end in range(center, len(active)):
        if not active[end]:
            continue
        count = 0
        used: dict[int, int] = {}
        i = end
        reached_center = False
        while i >= 0:
            if active[i]:
                count += 1
                reached_center |= i <= center
                if count >= rule.days and reached_center:
                    out.append(end)
                    break
            else:
                if used.get(weeks[i], 0) >= rule.freezes_per_week:
                    break
                used[weeks[i]] = used.get(weeks[i], 0) + 1
            i -= 1
    return out
