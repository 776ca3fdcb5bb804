"""Runs the pure pipeline (decide -> effects -> totals) in memory, as tests' reference harness."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.event import CollaborationEvent
from streams.domain.rules import PartitionState, RulesLookup, decide_batch, effects_of
from streams.domain.scorebook import Applied, ScoreBook, apply_effects

RULES = RulesLookup()


def run_pure(
    events: Sequence[CollaborationEvent], now_ms: int, batch: int = 7, rules: RulesLookup = RULES
) -> tuple[dict[tuple[str, str, int, str], tuple[int, ...]], set[tuple[str, str, str, int]]]:
    state = PartitionState()
    book = ScoreBook()
    from tests.streams.factories import records

    recs = records(list(events))
    for i in range(0, len(recs), batch):
        decisions = decide_batch(recs[i : i + batch], state, now_ms, rules)
        apply_effects(effects_of(decisions), book, rules, Applied())
    totals = {
        k: (t.shares, t.thanks_given, t.thanks_received, t.distinct_thankers, t.reactions_received)
        for k, t in book.totals.items()
        if (t.shares, t.thanks_given, t.thanks_received, t.reactions_received) != (0, 0, 0, 0)
    }
    return totals, {(a[0], a[1], str(a[2]), a[3]) for a in book.awarded}
