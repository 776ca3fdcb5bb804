"""The columnar rules (streams/domain/batch_rules.py) against the per-event oracle
(`rules.decide_batch` + `rules.effects_of`): the same decisions, effects and state, on
random batches, consecutive batches, a restart midway and a forgotten person."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import CollaborationEvent, EventColumns, EventType, Visibility
from schemas.vocabulary import DAY_MS, HOUR_MS
from streams.domain.batch_rules import decide_columns
from streams.domain.effects import batch_to_effects
from streams.domain.rules import (
    PartitionState,
    RuleConfig,
    RulesLookup,
    decide_batch,
    effects_of,
    scrub_person,
)
from streams.domain.state import SEEN_REASONS, partition_state
from tests.streams.factories import ms, records

NOW = ms("2026-11-23T12:00:00")
RULES = RulesLookup(
    RuleConfig(pair_daily_cap=2, max_recipients_per_event=4, values=("ownership", "care")),
    {
        "lord": RuleConfig(
            version=2, timezone="Australia/Lord_Howe", pair_daily_cap=1, grace_ms=6 * HOUR_MS
        ),
        "ny": RuleConfig(
            version=3,
            timezone="America/New_York",
            week_start="sunday",
            giver_daily_budget=2,
            giver_weekly_budget=3,
            pair_daily_cap=2,
        ),
        "tight": RuleConfig(
            grace_ms=HOUR_MS, future_tolerance_ms=0, max_recipients_per_event=1, values=("care",)
        ),
    },
)
ORGS = ["acme", "lord", "ny", "tight"]
PEOPLE = ["ann", "bob", "cy", "dee", ""]
SLOW = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
# Listed by some orgs, not by others; repeated within an event now and then.
event_values = st.lists(st.sampled_from(["ownership", "care", "speed"]), max_size=4).map(tuple)

people = st.sampled_from(PEOPLE[:4] * 8 + [""])  # '' (invalid) now and then
events = st.builds(
    CollaborationEvent,
    event_id=st.sampled_from([f"e{i}" for i in range(40)] + [""]),
    event_type=st.sampled_from(EventType),
    org_id=st.sampled_from(ORGS),
    actor_id=people,
    recipient_ids=st.lists(people, max_size=6).map(tuple),
    content_id=st.none(),
    channel=st.none() | st.just("#c"),
    visibility=st.sampled_from([Visibility.PUBLIC] * 4 + [Visibility.PRIVATE]),
    # Around the stream: hours back and forth over several days, sometimes ahead of now.
    occurred_at=st.integers(-30 * HOUR_MS, 10 * 60_000).map(lambda d: NOW + d)
    | st.integers(-4 * DAY_MS, 0).map(lambda d: NOW + d)
    | st.integers(-20, 2).map(lambda h: NOW + h * HOUR_MS + 1),
    source=st.just("test"),
    values=event_values,
)
# Thanks between few people within hours: pair caps and budgets.
hot_events = st.builds(
    CollaborationEvent,
    event_id=st.uuids().map(str),
    event_type=st.just(EventType.THANKS),
    org_id=st.sampled_from(ORGS),
    actor_id=st.sampled_from(PEOPLE[:2]),
    recipient_ids=st.lists(st.sampled_from(PEOPLE[:3]), min_size=1, max_size=3).map(tuple),
    content_id=st.none(),
    channel=st.none(),
    visibility=st.just(Visibility.PUBLIC),
    occurred_at=st.integers(-3 * HOUR_MS, 0).map(lambda d: NOW - 10 * HOUR_MS + d),
    source=st.just("test"),
    values=event_values,
)
batches = st.lists(st.lists(events | hot_events, max_size=24), min_size=1, max_size=4)


class Pair:
    """The oracle and the columnar rules, side by side on their own states."""

    def __init__(self) -> None:
        self.oracle = PartitionState()
        self.columns = PartitionState()
        self.offset = 0
        self.stored: list[Any] = []  # the oracle's decisions, as a store would hold them

    def run(self, batch: list[CollaborationEvent], now: int = NOW) -> None:
        recs = records(batch, partition=3, first=self.offset)
        want = decide_batch(recs, self.oracle, now, RULES)
        cols = EventColumns.from_events(batch, range(len(batch)))
        offsets = np.arange(self.offset, self.offset + len(batch), dtype=np.int64)
        got, effects = decide_columns(cols, offsets, "collab.events", 3, self.columns, now, RULES)
        assert got.decisions() == want
        assert batch_to_effects(effects) == effects_of(want, RULES)
        self.offset += len(batch)
        self.stored.extend(want)
        for state in (self.oracle, self.columns):
            state.prune(RULES.max_grace_ms())
        self.check_states()

    def check_states(self) -> None:
        a, b = self.oracle, self.columns
        assert (a.stream_time_ms, a.next_offset) == (b.stream_time_ms, b.next_offset)
        assert set(a.seen) == set(b.seen)
        assert a.pair_counts == b.pair_counts
        assert a.giver_counts == b.giver_counts

    def restart(self) -> None:
        """Both rebuild their state from the stored decisions, as a restarted worker."""
        if not self.stored:
            self.oracle, self.columns = PartitionState(), PartitionState()
            return
        rows = [
            (
                d.record.event.org_id,
                d.record.event.event_id,
                d.record.event.event_type.value,
                d.record.event.actor_id,
                d.recipient_id,
                d.reason.value,
                d.record.event.occurred_at,
            )
            for d in self.stored
            if d.reason.value in SEEN_REASONS
        ]
        last = max(d.record.offset for d in self.stored)
        stream_time = max(d.stream_time_ms for d in self.stored)
        self.oracle = partition_state(last, stream_time, rows, RULES)
        self.columns = partition_state(last, stream_time, rows, RULES)


@SLOW
@given(batches)
def test_batches_decide_as_the_oracle(batch_list: list[list[CollaborationEvent]]) -> None:
    pair = Pair()
    for batch in batch_list:
        pair.run(batch)


@SLOW
@given(batches, batches)
def test_a_restart_midway_decides_as_the_oracle(
    before: list[list[CollaborationEvent]], after: list[list[CollaborationEvent]]
) -> None:
    pair = Pair()
    for batch in before:
        pair.run(batch)
    pair.restart()
    pair.check_states()
    for batch in after:
        pair.run(batch)


@SLOW
@given(batches, batches, st.sampled_from(ORGS), st.sampled_from(PEOPLE[:4]))
def test_a_forgotten_person_between_batches(
    before: list[list[CollaborationEvent]],
    after: list[list[CollaborationEvent]],
    org: str,
    user: str,
) -> None:
    pair = Pair()
    for batch in before:
        pair.run(batch)
    for state in (pair.oracle, pair.columns):
        scrub_person(state, org, user, "erased-1", RULES(org))
    pair.check_states()
    for batch in after:
        pair.run(batch)


@SLOW
@given(st.lists(events, max_size=30), st.integers(0, 30))
def test_offsets_already_decided_are_skipped(batch: list[CollaborationEvent], cut: int) -> None:
    pair = Pair()
    pair.run(batch[:cut])
    # The whole batch again, as after a replay from an older commit: only the rest counts.
    recs = records(batch, partition=3)
    want = decide_batch(recs, pair.oracle, NOW, RULES)
    got, effects = decide_columns(
        EventColumns.from_events(batch, range(len(batch))),
        np.arange(len(batch), dtype=np.int64),
        "collab.events",
        3,
        pair.columns,
        NOW,
        RULES,
    )
    assert got.decisions() == want
    assert batch_to_effects(effects) == effects_of(want, RULES)
    pair.check_states()


def test_an_empty_batch() -> None:
    pair = Pair()
    pair.run([])
    assert pair.columns.stream_time_ms is None


@SLOW
@given(st.lists(events | hot_events, max_size=30))
def test_decision_columns_are_the_decision_rows(batch: list[CollaborationEvent]) -> None:
    from datetime import datetime

    from schemas.times import second_to_dt
    from streams.stages.state_store import (
        DeadLetter,
        dead_letter_row,
        decision_columns,
        decision_row,
    )

    got, _ = decide_columns(
        EventColumns.from_events(batch, range(len(batch))),
        np.arange(len(batch), dtype=np.int64) + 100,
        "collab.events",
        3,
        PartitionState(),
        NOW,
        RULES,
    )
    dead = [DeadLetter("collab.events", 3, 7, "poison", "PlantedPoison: x", 5)]
    at = 1_790_000_000
    columns = decision_columns([got, got], dead, at)
    rows = [decision_row(d, second_to_dt(at)) for d in got.decisions()] * 2
    rows += [dead_letter_row(x, second_to_dt(at)) for x in dead]

    def plain(v: Any) -> Any:
        return int(v.timestamp()) if isinstance(v, datetime) else v

    values = [c.to_pylist() if hasattr(c, "to_pylist") else c.tolist() for c in columns]
    assert [tuple(col[i] for col in values) for i in range(len(rows))] == [
        tuple(plain(v) for v in row) for row in rows
    ]


def test_the_seen_set_merges_its_tiers_keeps_the_latest_hour_and_prunes() -> None:
    from streams.domain.rules import SeenSet, seen_key

    seen = SeenSet()
    keys = [seen_key("acme", f"e{i}") for i in range(10_000)]
    for start in range(0, 10_000, 1000):  # batches: `recent` fills, then merges into `main`
        chunk = np.frombuffer(b"".join(keys[start : start + 1000]), dtype="S16")
        seen.add(chunk, np.full(len(chunk), start, dtype=np.int64))
    assert len(seen) == 10_000 and set(seen) == set(keys)
    seen[keys[0]] = 9_999  # a single add of a known key: its hour moves on
    seen[seen_key("acme", "new")] = 0
    assert keys[5] in seen and seen_key("acme", "new") in seen
    assert seen_key("acme", "never") not in seen and b"short" not in seen
    probe = np.frombuffer(keys[3] + seen_key("x", "y"), dtype="S16")
    assert seen.contains(probe).tolist() == [True, False]
    seen.prune(5000)
    assert len(seen) == 5001 and keys[0] in seen and keys[1] not in seen and keys[5000] in seen
