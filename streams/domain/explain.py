"""Every point of a user's score, with the event, the rule and the rule version behind it.

`GET /api/users/{user}/explain?org=ORG&window=hour|day|week|all[&at=RFC3339][&limit=N]
[&offset=K]` answers from `kudos.decisions` (sinks/history.py). A decision touches a user
in up to two roles, each an *entry* feeding one metric:

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
Entries are listed newest first, `limit` (1,000; at most 10,000) of them from `offset`
(0); `next_offset` is the offset of the next page, null on the last (`truncated` says the
same as a boolean). `count` is the number of entries of the whole window.

The weekly collusion audit (streams/domain/collusion.py) changes decisions afterwards, one
kudos.reversals row each. Such an entry is shown as the audit left it: its new `reason`
('collusion' for a reversed thank-you; 'counted' for one a giver budget had refused and
that counts once the colluding thanks are gone), `counted` and `points`, and an `audit`
object with the audit's `rule` and `rule_version`, the reason it `was` and the
`group_size` (never who else was in the group). `audit` is null on every other entry;
`rule_version` stays that of the rules that decided the event. The response's `audit`
counts the entries the audit reversed and reinstated. Reversals lead the leaderboard until
the aggregating stages have applied them (kudos.audits, step 'applied').

Privacy (DESIGN.md, part 2), which no login changes:

* An opted-out person gets the answer of an unknown id: every total 0, no entries.
* An opted-out person is never named in anyone else's explain: their id is null where
  they were the actor or the recipient.
* A PRIVATE decision never names the other person: its entries have `private: true`,
  `actor_id` and `recipient_id` null, `event_id` and `lineage` null, and `occurred_at`
  the start of its UTC hour (the order of the list does not give the exact time away
  either: sinks.history.ENTRY_ORDER). Every other entry has `private: false`. Totals,
  `score`, `count` and `refused` still count every decision.

Pure functions here; the one reading function takes a `DecisionHistory`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from schemas.times import format_rfc3339
from schemas.vocabulary import Metric, Reason, WindowName
from streams.domain.rules import RuleConfig
from streams.domain.windows import hour_start

if TYPE_CHECKING:
    from schemas.rows import DecisionGroup, DecisionRow


@dataclass(frozen=True, slots=True)
class Page:
    """`limit` items starting at `offset` of a list (0 is the first)."""

    limit: int
    offset: int

    def next_offset(self, more: bool) -> int | None:
        """The offset of the next page, None when this one is the last."""
        return self.offset + self.limit if more else None


DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000
METRICS: Final = (
    Metric.SHARES,
    Metric.THANKS_GIVEN,
    Metric.THANKS_RECEIVED,
    Metric.REACTIONS_RECEIVED,
)


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


def entry(
    row: DecisionRow, metric: Metric, rules: RuleConfig, hidden: Collection[str] = ()
) -> dict[str, Any]:
    """The entry of `row` for `metric`, as the privacy rules (module doc) show it;
    `hidden` holds the opted-out ids among the decision's people."""
    counted = row.reason == Reason.COUNTED.value
    private = row.visibility == "PRIVATE"
    audit = row.audit

    def shown(person: str) -> str | None:
        return None if private or not person or person in hidden else person

    return {
        "event_id": None if private else row.event_id,
        "event_type": row.event_type,
        "occurred_at": format_rfc3339(
            hour_start(row.occurred_at_ms) if private else row.occurred_at_ms
        ),
        "actor_id": shown(row.actor_id),
        "recipient_id": shown(row.recipient_id),
        "private": private,
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
        "lineage": None
        if private
        else {"topic": row.src_topic, "partition": row.src_partition, "offset": row.src_offset},
    }


def entries_of(
    row: DecisionRow, user: str, rules: RuleConfig, hidden: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The entries one stored decision gives `user` (none when it does not touch them)."""
    roles = metrics_for(row.event_type, row.actor_id == user, row.recipient_id == user)
    return [entry(row, metric, rules, hidden) for metric in roles]


def explain_payload(
    org: str,
    user: str,
    window: WindowName,
    bounds: tuple[int, int | None],
    rules: RuleConfig,
    entries: Sequence[dict[str, Any]],
    groups: list[DecisionGroup],
    page: Page,
) -> dict[str, Any]:
    """The explain response from one page of entries (up to `page.limit` + 1 of them, the
    extra one telling whether more follow) and the per-kind counts of all decisions."""
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
    start, end = bounds
    next_offset = page.next_offset(len(entries) > page.limit)
    return {
        "org": org,
        "user_id": user,
        "window": window,
        "window_start": format_rfc3339(start),
        "window_end": format_rfc3339(end) if end is not None else None,
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
        "limit": page.limit,
        "offset": page.offset,
        "next_offset": next_offset,
        "truncated": next_offset is not None,
        "entries": list(entries[: page.limit]),
    }
