"""The rule state a restarted or rebalanced worker rebuilds from stored rows: pure code.

`sinks/store.py` reads the rows; these functions say what they mean to the rules, so that a
worker carries on exactly where the stored data ends (`streams/stages/state_store.py` joins both).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final

from schemas.vocabulary import WEEK_MS, Reason, WindowKey
from streams.domain.pair_counts import PairCounts
from streams.domain.rules import (
    NOT_SEEN,
    STATE_MARGIN_MS,
    PartitionState,
    RulesLookup,
    giver_periods_at,
    remember,
)
from streams.domain.scorebook import WindowTotals

# Reasons after which an event id counts as seen (streams.domain.rules.NOT_SEEN: it passed
# invalid/too_many_recipients/future/late).
SEEN_REASONS: Final = tuple(r.value for r in Reason if r not in NOT_SEEN)

# (org, event, event type, actor, recipient, reason, occurred ms): a stored decision.
SeenDecision = tuple[str, str, str, str, str, str, int]


def seen_since(stream_time_ms: int, rules_for: RulesLookup) -> int:
    """The earliest occurrence time whose decisions the deciding state still needs."""
    horizon = stream_time_ms - rules_for.max_grace_ms() - STATE_MARGIN_MS
    if rules_for.any_weekly_budget():
        horizon -= WEEK_MS  # a week's budget counts from the week's start
    return horizon


def partition_state(
    last_offset: int, stream_time_ms: int, rows: Iterable[SeenDecision], rules_for: RulesLookup
) -> PartitionState:
    """The deciding state of an input partition whose stored decisions end at
    `last_offset`, from its decisions since `seen_since` (SEEN_REASONS only)."""
    state = PartitionState()
    state.next_offset = last_offset + 1
    state.stream_time_ms = stream_time_ms
    # Sets of (event, recipient): a decision stored twice (a replayed insert) counts once.
    counted_pairs: dict[tuple[str, str, str, int], set[str]] = defaultdict(set)
    given: dict[tuple[str, str, str, int], set[tuple[str, str]]] = defaultdict(set)
    for org, event_id, event_type, actor, recipient, reason, at in rows:
        remember(state, org, event_id, at)
        if event_type == "THANKS" and reason == Reason.COUNTED.value:
            rules = rules_for(org)
            day = rules.calendar.day_start(at)
            counted_pairs[(org, actor, recipient, day)].add(event_id)
            for period in giver_periods_at(org, actor, at, rules):
                given[period].add((event_id, recipient))
    state.pair_counts = PairCounts((k, len(v)) for k, v in counted_pairs.items())
    state.giver_counts = {k: len(v) for k, v in given.items()}
    return state


def stored_totals(
    org: str,
    wanted: set[WindowKey],
    state_rows: Iterable[Sequence[Any]],
    thanker_rows: Iterable[Sequence[Any]],
) -> dict[WindowKey, WindowTotals]:
    """The totals of the `wanted` keys of one org: each key's highest stored version of
    `sinks.store.RecognitionStore.score_state_rows`, and its thankers. A wanted key with
    no row starts at zero."""
    best: dict[WindowKey, Sequence[Any]] = {}
    for row in state_rows:
        key: WindowKey = (org, row[0], int(row[1]), row[2])
        if key in wanted and (key not in best or row[9] > best[key][9]):
            best[key] = row
    loaded = {k: WindowTotals() for k in wanted}
    for key, row in best.items():
        t = loaded[key]
        t.shares, t.thanks_given = int(row[3]), int(row[4])
        t.thanks_received, t.reactions_received = int(row[5]), int(row[6])
        t.hwm = {int(p): int(o) for p, o in zip(row[7], row[8], strict=True)}
        t.decay, t.decay_at = float(row[10]), int(row[11])
    for window, start, user, thanker in thanker_rows:
        key = (org, window, int(start), user)
        if key in wanted:
            loaded[key].thankers.add(thanker)
    return loaded
