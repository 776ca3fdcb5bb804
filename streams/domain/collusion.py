"""The weekly collusion audit (rules option; off unless `collusion_min_each` > 0).

Pure code: no I/O, no clock. Once an org's week (`rules.calendar.window_start("week", t)`)
has closed, the auditor reads every stored THANKS decision of that org whose `occurred_at`
lies in the week and calls `audit_week`; it returns the decisions whose outcome changes.

The rule
--------
Input. Decisions of one org and one week. A decision is one recipient of one THANKS,
identified by (topic, partition, offset, recipient_id); a row stored twice (a retried insert)
is used once. n(a, b) is the number of such decisions a -> b whose stored reason is
`counted`.

Off. With `collusion_min_each` = 0 (the default) nothing is ever flagged or changed.

Mutual pairs. With m = `collusion_min_each`, two different people a and b are mutual when
n(a, b) >= m and n(b, a) >= m: each gave the other at least m counted thanks that week.

Candidate groups. Every group G of 2 to `collusion_max_group` people (default 4) in which
every two members are mutual.

Collusive groups. For a member x of G:
  inside(x, G)  = counted thanks x received that week from the other members of G,
  outside(x, G) = counted thanks x received that week from everyone not in G.
G is collusive when every member x has inside(x, G) > `collusion_ratio` x outside(x, G)
(default ratio 3.0). So a pair that thank each other often but are also thanked by plenty
of other people is not collusive; a pair or small clique that mostly thanks itself is.
Every candidate group is tested on its own: a collusive group may contain smaller
collusive groups, and a larger clique may fail where one of its pairs passes.

Reversals. Every counted thank-you a -> b between two members of one collusive group
(in either direction) becomes `collusion`: it no longer gives points to either side. The
change names the largest collusive group that contains both a and b (ties: the
alphabetically first list of members) and its rule: "reciprocal" for a group of two,
"clique" for a larger one.

Caps recomputed ("recap"). A thank-you that was refused by the pair's daily cap or by the
giver's budget because of the reversed ones may count now, as if the reversed ones had
never been given. For every member of a collusive group, all their thanks of the week that
were counted, `pair_daily_cap` or `giver_budget` -- except those to people they colluded
with -- are decided again, per input partition (deciding state is per partition), from an
empty state, in offset order (within one event: the recipients that were counted first,
then by recipient id), with the deciding stage's own rule (`rules.target_reason`): pair
cap per (giver, recipient, org day), then the giver's daily and weekly budgets. Caps and
budgets never reach outside one org week (a day lies within its week), so the week's
decisions are the whole state they need. Only a change between counted and not counted is
reported (rule "recap"); a refusal whose reason changes (say from the budget to the pair
cap) is not. Thanks refused for any other reason (self, private, duplicate, late, ...)
are never re-decided.

Thankers. `thanker_drops` says in which windows (hour, day, ..., all) a giver whose
thanks were reversed no longer counts among the recipient's distinct thankers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from schemas.event import CollaborationEvent, EventType, Visibility
from schemas.rows import DecisionKey, ThanksDecision
from schemas.vocabulary import Reason
from streams.domain.rules import PartitionState, RuleConfig, target_reason

# Reasons the recap re-decides: the outcomes of the pair cap and giver budget checks.
_RECAP_REASONS = frozenset({Reason.COUNTED, Reason.PAIR_DAILY_CAP, Reason.GIVER_BUDGET})


@dataclass(frozen=True, slots=True)
class Change:
    """A stored decision whose outcome the audit changes."""

    decision: ThanksDecision
    reason: Reason  # the new reason: COLLUSION, COUNTED, PAIR_DAILY_CAP or GIVER_BUDGET
    rule: str  # "reciprocal" | "clique" (collusion) or "recap" (caps re-decided)
    group: tuple[str, ...]  # sorted members of the collusive group; () for recap

    @property
    def delta(self) -> int:
        """+1 if it now counts (it did not), -1 if it no longer counts."""
        return int(self.reason is Reason.COUNTED) - int(self.decision.counted)


def _distinct(decisions: Iterable[ThanksDecision]) -> list[ThanksDecision]:
    """Each decision once, in key order; of two rows with one key the first by content wins
    (so the result does not depend on the input order)."""
    by_key: dict[DecisionKey, ThanksDecision] = {}
    for d in decisions:
        kept = by_key.get(d.key)
        if kept is None or _content(d) < _content(kept):
            by_key[d.key] = d
    return [by_key[k] for k in sorted(by_key)]


def _content(d: ThanksDecision) -> tuple[str, str, str, str, int]:
    return (d.reason.value, d.org_id, d.event_id, d.actor_id, d.occurred_at)


def _counted_pairs(decisions: Iterable[ThanksDecision]) -> dict[tuple[str, str], int]:
    """n(a, b): counted decisions a -> b."""
    n: dict[tuple[str, str], int] = defaultdict(int)
    for d in decisions:
        if d.counted:
            n[(d.actor_id, d.recipient_id)] += 1
    return n


def _cliques(adjacent: dict[str, set[str]], max_size: int) -> Iterator[tuple[str, ...]]:
    """Every clique of 2..max_size people, once each, as a sorted tuple. Grows only along
    edges, so the work follows the (sparse) mutual graph, not the number of people."""
    for first in sorted(adjacent):
        stack: list[tuple[tuple[str, ...], list[str]]] = [
            ((first,), sorted(u for u in adjacent[first] if u > first))
        ]
        while stack:
            clique, candidates = stack.pop()
            for i, u in enumerate(candidates):
                grown = (*clique, u)
                yield grown
                if len(grown) < max_size:
                    further = [w for w in candidates[i + 1 :] if w in adjacent[u]]
                    if further:
                        stack.append((grown, further))


def _groups(decisions: list[ThanksDecision], rules: RuleConfig) -> list[tuple[str, ...]]:
    m = rules.collusion_min_each
    if m == 0:
        return []
    n = _counted_pairs(decisions)
    adjacent: dict[str, set[str]] = defaultdict(set)
    for (a, b), count in n.items():
        if a != b and count >= m and n.get((b, a), 0) >= m:
            adjacent[a].add(b)
    received: dict[str, int] = defaultdict(int)
    for (_, b), count in n.items():
        received[b] += count
    out: list[tuple[str, ...]] = []
    for group in _cliques(adjacent, rules.collusion_max_group):
        if all(_inside_dominates(x, group, n, received, rules) for x in group):
            out.append(group)
    out.sort(key=lambda g: (-len(g), g))
    return out


def _inside_dominates(
    x: str,
    group: tuple[str, ...],
    n: dict[tuple[str, str], int],
    received: dict[str, int],
    rules: RuleConfig,
) -> bool:
    inside = sum(n.get((y, x), 0) for y in group if y != x)
    outside = received[x] - inside - n.get((x, x), 0)
    return inside > rules.collusion_ratio * outside


def collusive_groups(
    decisions: Iterable[ThanksDecision], rules: RuleConfig
) -> list[tuple[str, ...]]:
    """The week's collusive groups (see the module docstring), each a sorted tuple of
    members; larger groups first, then alphabetically."""
    return _groups(_distinct(decisions), rules)


def flagged_pairs(
    groups: Sequence[tuple[str, ...]],
) -> dict[tuple[str, str], tuple[str, ...]]:
    """(a, b) -> the largest collusive group holding both (ties: the first tuple), for every
    ordered pair of different members of one group. `groups` as `collusive_groups` orders
    them, so the first group seen for a pair is the one."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for group in sorted(groups, key=lambda g: (-len(g), g)):
        for a in group:
            for b in group:
                if a != b:
                    out.setdefault((a, b), group)
    return out


def recap_changes(
    decisions: Sequence[ThanksDecision],
    actors: Collection[str],
    removed: Collection[tuple[str, str]],
    rules: RuleConfig,
) -> list[Change]:
    """Re-decide the pair cap and giver budgets of `actors`' thanks without the pairs in
    `removed` (the reversed ones), per input partition from an empty state, with the
    deciding stage's own rule. Returns the decisions whose counted-ness changes (rule
    "recap"), in key order. With nothing removed it returns nothing: the order used
    reproduces the deciding stage's outcome."""
    by_partition: dict[tuple[str, int], list[ThanksDecision]] = defaultdict(list)
    for d in _distinct(decisions):
        if (
            d.actor_id in actors
            and d.reason in _RECAP_REASONS
            and (d.actor_id, d.recipient_id) not in removed
        ):
            by_partition[(d.topic, d.partition)].append(d)
    out: list[Change] = []
    for part in sorted(by_partition):
        rows = sorted(
            by_partition[part], key=lambda d: (d.offset, 0 if d.counted else 1, d.recipient_id)
        )
        state = PartitionState()
        for d in rows:
            now = target_reason(_as_event(d), d.recipient_id, state, rules)
            if (now is Reason.COUNTED) != d.counted:
                out.append(Change(d, now, "recap", ()))
    out.sort(key=lambda c: c.decision.key)
    return out


def _as_event(d: ThanksDecision) -> CollaborationEvent:
    """The parts of the THANKS the pair cap and giver budget read."""
    return CollaborationEvent(
        event_id=d.event_id,
        event_type=EventType.THANKS,
        org_id=d.org_id,
        actor_id=d.actor_id,
        recipient_ids=(d.recipient_id,),
        content_id=None,
        channel=None,
        visibility=Visibility.PUBLIC,
        occurred_at=d.occurred_at,
        source="collusion-audit",
    )


def audit_week(decisions: Sequence[ThanksDecision], rules: RuleConfig) -> list[Change]:
    """Every change the audit makes to one org week: reversals of the collusive groups'
    counted thanks, then the caps of their members re-decided without them. Sorted by
    (topic, partition, offset, recipient_id); the same for any order of the input."""
    rows = _distinct(decisions)
    groups = _groups(rows, rules)
    if not groups:
        return []
    flagged = flagged_pairs(groups)
    out: list[Change] = []
    for d in rows:
        group = flagged.get((d.actor_id, d.recipient_id))
        if group is not None and d.counted:
            rule = "reciprocal" if len(group) == 2 else "clique"
            out.append(Change(d, Reason.COLLUSION, rule, group))
    members = {x for g in groups for x in g}
    out.extend(recap_changes(rows, members, flagged.keys(), rules))
    out.sort(key=lambda c: c.decision.key)
    return out


def thanker_drops(
    decisions: Sequence[ThanksDecision],
    changes: Sequence[Change],
    rules: RuleConfig,
    counted_elsewhere: Mapping[tuple[str, str], Collection[int]],
) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(actor, recipient) -> the windows (name, start ms), sorted, in which the actor no
    longer counts among the recipient's distinct thankers after `changes`.

    Only pairs with a change that stops a decision counting are considered, and only the
    windows of those changed decisions. A window drops the actor when no decision
    actor -> recipient in it counts after the changes. Hour, day and week windows lie
    within the audited week; months, quarters, years and "all" reach beyond it, so the
    pair's thanks counted in other weeks keep them too: `counted_elsewhere` holds their
    times within the years of the audited week (and -1 for any beyond, which keeps
    "all"). Pairs that lose no window are left out."""
    rows = _distinct(decisions)
    new_reason = {c.decision.key: c.reason for c in changes}
    lost: dict[tuple[str, str], set[tuple[str, int]]] = defaultdict(set)
    for c in changes:
        if c.delta == -1:
            d = c.decision
            lost[(d.actor_id, d.recipient_id)].update(rules.calendar.starts(d.occurred_at))
    if not lost:
        return {}
    still: dict[tuple[str, str], set[tuple[str, int]]] = defaultdict(set)
    for d in rows:
        pair = (d.actor_id, d.recipient_id)
        if pair in lost and new_reason.get(d.key, d.reason) is Reason.COUNTED:
            still[pair].update(rules.calendar.starts(d.occurred_at))
    for pair, times in counted_elsewhere.items():
        for at in times:
            still[pair].update(rules.calendar.starts(at) if at >= 0 else (("all", 0),))
    out: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for pair, windows in lost.items():
        dropped = sorted(w for w in windows if w not in still[pair])
        if dropped:
            out[pair] = dropped
    return out
