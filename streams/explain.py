"""Every point of a user's score, with the event, the rule and the rule version behind it.

`GET /api/users/{user}/explain?org=ORG&window=hour|day|week|all[&at=RFC3339][&limit=N]`
answers from `kudos.decisions` (sinks/history.py). A decision touches a user in up to two
roles, each an *entry* feeding one metric:

| decision                        | user is   | metric               |
|---------------------------------|-----------|----------------------|
| THANKS                          | recipient | `thanks_received`    |
| THANKS                          | actor     | `thanks_given`       |
| REACTION                        | recipient | `reactions_received` |
| SHARE                           | actor     | `shares`             |

A counted entry gives the org's weight for its metric; a refused one gives 0 and names the
rule that refused it (`reason`). A self-thank-you is therefore listed twice, once per
role, both refused as `self`. Totals and the score are taken over every entry of the
window (not only the listed ones), so `score` equals the sum of every entry's points and
the user's row of `/api/leaderboard` for the same org, window and `at` -- once the
aggregating stage has applied what the deciding stage stored (decisions lead scores by
the pipeline's freshness, about a second) and what the collusion audit stored (see below).

The weekly collusion audit (streams/collusion.py) changes decisions afterwards, one
kudos.reversals row each. Such an entry is shown as the audit left it: its new `reason`
('collusion' for a reversed thank-you; 'counted' for one a giver budget had refused and
that counts once the colluding thanks are gone), `counted` and `points`, and an `audit`
object with the audit's `rule` and `rule_version`, the reason it `was` and the
`group_size` (never who else was in the group). `audit` is null on every other entry;
`rule_version` stays that of the rules that decided the event. The response's `audit`
counts the entries the audit reversed and reinstated. Reversals lead the leaderboard until
the aggregating stages have applied them (kudos.audits, step 'applied').

Pure functions here; the one reading function takes a `DecisionHistory`.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from streams.rules import Metric, Reason, RuleConfig, RulesLookup
from streams.windows import HOUR_MS, Calendar, WindowName

if TYPE_CHECKING:
    from sinks.history import DecisionGroup, DecisionHistory, DecisionRow

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000
METRICS: Final = (
    Metric.SHARES,
    Metric.THANKS_GIVEN,
    Metric.THANKS_RECEIVED,
    Metric.REACTIONS_RECEIVED,
)


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ValueError(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def metrics_for(event_type: str, as_actor: bool, as_recipient: bool) -> tuple[Metric, ...]:
    """The metrics a decision feeds for a user in these roles (table in the module doc)."""
    out: list[Metric] = []
    if as_recipient and event_type == "THANKS":
        out.append(Metric.THANKS_RECEIVED)
    if as_recipient and event_type == "REACTION":
        out.append(Metric.REACTIONS_RECEIVED)
    if as_actor and event_type == "THANKS":
        out.append(Metric.THANKS_GIVEN)
    if as_actor and event_type == "SHARE":
        out.append(Metric.SHARES)
    return tuple(out)


def weight(rules: RuleConfig, metric: Metric) -> int:
    if metric is Metric.SHARES:
        return rules.weight_shares
    if metric is Metric.THANKS_GIVEN:
        return rules.weight_thanks_given
    if metric is Metric.THANKS_RECEIVED:
        return rules.weight_thanks_received
    return rules.weight_reactions_received


def window_bounds(window: WindowName, at_ms: int, cal: Calendar) -> tuple[int, int | None]:
    """[start, end) of the window holding `at_ms` in the org's calendar; `all` has no end."""
    start = cal.window_start(window, at_ms)
    if window == "hour":
        return start, start + HOUR_MS
    if window == "day":
        return start, cal.shift_days(start, 1)
    if window == "week":
        return start, cal.shift_days(start, 7)
    return 0, None


def rfc3339(ms: int) -> str:
    """Epoch millis as RFC 3339 UTC, with milliseconds when there are any."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def entries_of(row: DecisionRow, user: str, rules: RuleConfig) -> list[dict[str, Any]]:
    """The entries one stored decision gives `user` (none when it does not touch them)."""
    out: list[dict[str, Any]] = []
    counted = row.reason == Reason.COUNTED.value
    audit = row.audit
    for metric in metrics_for(row.event_type, row.actor_id == user, row.recipient_id == user):
        out.append(
            {
                "event_id": row.event_id,
                "event_type": row.event_type,
                "occurred_at": rfc3339(row.occurred_at_ms),
                "actor_id": row.actor_id,
                "recipient_id": row.recipient_id or None,
                "metric": metric.value,
                "points": weight(rules, metric) if counted else 0,
                "counted": counted,
                "reason": row.reason,
                "rule_version": row.rule_version,
                "audit": None
                if audit is None
                else {
                    "rule": audit.rule,
                    "rule_version": audit.rule_version,
                    "was": audit.was,
                    "group_size": audit.group_size,
                },
                "lineage": {
                    "topic": row.src_topic,
                    "partition": row.src_partition,
                    "offset": row.src_offset,
                },
            }
        )
    return out


def explain_payload(
    org: str,
    user: str,
    window: WindowName,
    bounds: tuple[int, int | None],
    rules: RuleConfig,
    rows: list[DecisionRow],
    groups: list[DecisionGroup],
    limit: int,
) -> dict[str, Any]:
    """The explain response from the listed decisions (newest first, up to `limit` + 1
    rows) and the per-kind counts of all of them."""
    totals: Counter[Metric] = Counter()
    refused: Counter[str] = Counter()
    audited: Counter[str] = Counter()
    thankers = 0
    count = 0
    for g in groups:
        for metric in metrics_for(g.event_type, g.as_actor, g.as_recipient):
            count += g.decisions
            audited["reversed"] += g.reversed
            audited["reinstated"] += g.reinstated
            if g.reason == Reason.COUNTED.value:
                totals[metric] += g.decisions
                if metric is Metric.THANKS_RECEIVED:
                    thankers += g.distinct_actors
            else:
                refused[g.reason] += g.decisions
    entries = [e for row in rows for e in entries_of(row, user, rules)]
    start, end = bounds
    return {
        "org": org,
        "user_id": user,
        "window": window,
        "window_start": rfc3339(start),
        "window_end": rfc3339(end) if end is not None else None,
        "score": rules.score(
            totals[Metric.SHARES],
            totals[Metric.THANKS_GIVEN],
            totals[Metric.THANKS_RECEIVED],
            totals[Metric.REACTIONS_RECEIVED],
        ),
        "totals": {
            "shares": totals[Metric.SHARES],
            "thanks_given": totals[Metric.THANKS_GIVEN],
            "thanks_received": totals[Metric.THANKS_RECEIVED],
            "distinct_thankers": thankers,
            "reactions_received": totals[Metric.REACTIONS_RECEIVED],
        },
        "weights": {m.value: weight(rules, m) for m in METRICS},
        "refused": dict(sorted(refused.items())),
        "audit": {"reversed": audited["reversed"], "reinstated": audited["reinstated"]},
        "count": count,
        "limit": limit,
        "truncated": len(entries) > limit,
        "entries": entries[:limit],
    }


def explain_user(
    history: DecisionHistory,
    rules_for: RulesLookup,
    org: str,
    user: str,
    window: WindowName,
    at_ms: int,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Read and assemble one explain response (blocking: run it off the event loop)."""
    rules = rules_for(org)
    bounds = window_bounds(window, at_ms, rules.calendar)
    start, end = bounds
    # One row more than asked: a self-thank-you gives two entries, so `limit` rows can
    # hold more than `limit` entries, and limit + 1 rows always tell whether any are left.
    rows = history.user_decisions(org, user, start, end, limit + 1)
    groups = history.user_decision_groups(org, user, start, end)
    return explain_payload(org, user, window, bounds, rules, rows, groups, limit)
