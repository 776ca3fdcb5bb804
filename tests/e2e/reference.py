"""An independent model of rules v1 for end-to-end checks.

Written from DESIGN.md, deliberately without importing the pipeline's rules, windows or
scorebook: if both agree on a scenario, the pipeline matches the contract, not itself.
Events are given in the order one partition would see them, which holds here because the
scenarios keep late events behind recent events of the same actor.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DAY = 86_400_000
HOUR = 3_600_000
GRACE = 7 * DAY
FUTURE = 5 * 60_000


def starts(ms: int) -> dict[str, int]:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    hour = dt.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    week = day - timedelta(days=day.weekday())
    month = day.replace(day=1)
    quarter = month.replace(month=(month.month - 1) // 3 * 3 + 1)
    year = month.replace(month=1)
    return {
        "hour": int(hour.timestamp() * 1000),
        "day": int(day.timestamp() * 1000),
        "week": int(week.timestamp() * 1000),
        "month": int(month.timestamp() * 1000),
        "quarter": int(quarter.timestamp() * 1000),
        "year": int(year.timestamp() * 1000),
        "all": 0,
    }


@dataclass
class Model:
    totals: dict[tuple[str, str, int, str], dict[str, Any]]
    badges: set[tuple[str, str, str, int]]
    refused: Counter[str]
    # Company values: (org, window, start, value, user) -> counted thanks received that
    # carried a value the org lists, and their thankers.
    values: dict[tuple[str, str, int, str, str], dict[str, Any]] = field(default_factory=dict)


MAX_RECIPIENTS = 50


def run(
    events: list[dict[str, Any]],
    now_ms: int,
    pair_cap: int = 3,
    org_values: dict[str, list[str]] | None = None,
) -> Model:
    """`org_values`: the values each org's rules list (none when absent)."""
    seen: set[tuple[str, str]] = set()
    stream_time: dict[str, int] = {}  # per actor: a lower bound of the partition's stream time
    pairs: Counter[tuple[str, str, str, int]] = Counter()
    totals: dict[tuple[str, str, int, str], dict[str, Any]] = defaultdict(
        lambda: {
            "shares": 0,
            "thanks_given": 0,
            "thanks_received": 0,
            "reactions_received": 0,
            "thankers": set(),
        }
    )
    refused: Counter[str] = Counter()
    values: ValueTotals = defaultdict(lambda: {"thanks_received": 0, "thankers": set()})

    def point(org: str, user: str, metric: str, at: int, thanker: str | None = None) -> None:
        for window, start in starts(at).items():
            t = totals[(org, window, start, user)]
            t[metric] += 1
            if thanker is not None:
                t["thankers"].add(thanker)

    for e in events:
        org, actor, kind, at = e["org_id"], e["actor_id"], e["event_type"], e["occurred_at"]
        recips = list(dict.fromkeys(e.get("recipient_ids") or []))
        n_targets = 1 if kind == "SHARE" else max(1, len(recips))
        if (
            not e["event_id"]
            or not org
            or not actor
            or "" in recips
            or (kind != "SHARE" and not recips)
        ):
            refused["invalid"] += n_targets
            continue
        if kind != "SHARE" and len(recips) > MAX_RECIPIENTS:
            refused["too_many_recipients"] += 1  # one decision for the whole event
            continue
        if at > now_ms + FUTURE:
            refused["future"] += n_targets
            continue
        if actor in stream_time and at < stream_time[actor] - GRACE:
            refused["late"] += n_targets
            continue
        stream_time[actor] = max(stream_time.get(actor, at), at)
        if (org, e["event_id"]) in seen:
            refused["duplicate"] += n_targets
            continue
        seen.add((org, e["event_id"]))
        if e.get("visibility", "PUBLIC") == "PRIVATE":
            refused["private"] += n_targets
            continue
        if kind == "SHARE":
            point(org, actor, "shares", at)
            continue
        for r in recips:
            if r == actor:
                refused["self"] += 1
                continue
            if kind == "REACTION":
                point(org, r, "reactions_received", at)
                continue
            day = at - at % DAY
            if pairs[(org, actor, r, day)] >= pair_cap:
                refused["pair_daily_cap"] += 1
                continue
            pairs[(org, actor, r, day)] += 1
            point(org, r, "thanks_received", at, thanker=actor)
            point(org, actor, "thanks_given", at)
            listed = (org_values or {}).get(org, [])
            valued(values, org, r, at, actor, [v for v in e.get("values") or [] if v in listed])

    badges: set[tuple[str, str, str, int]] = set()
    share_days: dict[tuple[str, str], set[int]] = defaultdict(set)
    for (org, window, start, user), t in totals.items():
        if window == "all" and t["thanks_received"] > 0:
            badges.add((org, user, "first_thanks", 0))
        if window == "week" and len(t["thankers"]) >= 5:
            badges.add((org, user, "helper", start))
        if window == "week" and t["shares"] >= 10:
            badges.add((org, user, "sharer", start))
        if window == "day" and t["shares"] > 0:
            share_days[(org, user)].add(start)
    for (org, user), days in share_days.items():
        for d in days:
            if all(d - i * DAY in days for i in range(5)):
                badges.add((org, user, "streak_5", d))
    return Model(dict(totals), badges, refused, dict(values))


ValueTotals = dict[tuple[str, str, int, str, str], dict[str, Any]]


def valued(
    values: ValueTotals, org: str, user: str, at: int, thanker: str, listed: list[str]
) -> None:
    """A counted thanks received that carried the org's `listed` values (each once)."""
    for value in set(listed):
        for window, start in starts(at).items():
            v = values[(org, window, start, value, user)]
            v["thanks_received"] += 1
            v["thankers"].add(thanker)


def score(t: dict[str, Any]) -> int:
    return 3 * t["thanks_received"] + t["thanks_given"] + 2 * t["shares"] + t["reactions_received"]


def leaderboard(model: Model, org: str, window: str, start: int, top: int) -> list[dict[str, Any]]:
    rows = [
        (user, t)
        for (o, w, s, user), t in model.totals.items()
        if o == org and w == window and s == start
    ]
    rows.sort(key=lambda r: (-score(r[1]), r[0]))
    return [
        {
            "rank": i + 1,
            "user_id": user,
            "display_name": None,  # no user directory in these scenarios
            "score": score(t),
            "shares": t["shares"],
            "thanks_given": t["thanks_given"],
            "thanks_received": t["thanks_received"],
            "distinct_thankers": len(t["thankers"]),
            "reactions_received": t["reactions_received"],
        }
        for i, (user, t) in enumerate(rows[:top])
    ]


def value_board(
    model: Model, org: str, window: str, start: int, value: str, top: int, weight: int = 3
) -> list[dict[str, Any]]:
    """`/api/leaderboard?value=`: people by counted thanks received carrying `value`."""
    rows = [
        (user, v)
        for (o, w, s, val, user), v in model.values.items()
        if (o, w, s, val) == (org, window, start, value)
    ]
    rows.sort(key=lambda r: (-r[1]["thanks_received"], r[0]))
    return [
        {
            "rank": i + 1,
            "user_id": user,
            "display_name": None,
            "score": weight * v["thanks_received"],
            "shares": 0,
            "thanks_given": 0,
            "thanks_received": v["thanks_received"],
            "distinct_thankers": len(v["thankers"]),
            "reactions_received": 0,
        }
        for i, (user, v) in enumerate(rows[:top])
    ]
