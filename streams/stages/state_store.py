"""The stages' state in ClickHouse: rules objects to table rows and back.

`sinks.store.RecognitionStore` speaks rows; `StateStore` adds what the stages write and
load in the rules' terms (decisions, window totals, badge awards, the deciding state),
mapping them to rows here and rebuilding state with `streams/domain/state.py`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.event import EVENT_TYPE_CODES, VISIBILITY_CODES
from schemas.times import ms_to_dt, now_utc, second_to_dt
from schemas.vocabulary import UNDECODABLE, Metric, WindowKey
from sinks.store import RecognitionStore
from sinks.tables import LEADER_ROWS, SCORE_STATE, THANKERS, VALUE_THANKS
from streams.domain.batch_rules import COUNTED_CODE, REASON_CODES, BatchDecisions
from streams.domain.effects import METRIC_CODE
from streams.domain.rules import RULE_VERSION, Decision, PartitionState, RulesLookup
from streams.domain.scorebook import BadgeAward, ScoreBook, WindowTotals
from streams.domain.state import SEEN_REASONS, partition_state, seen_since, stored_totals
from streams.domain.tally import ColumnBook, ScoreColumns


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be decoded, recorded beside the batch's decisions."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    stream_time_ms: int


def decision_row(d: Decision, decided_at: datetime) -> tuple[Any, ...]:
    e = d.record.event
    return (
        e.org_id,
        e.event_id,
        e.event_type.value,
        e.actor_id,
        d.recipient_id,
        1 if d.counted else 0,
        d.reason.value,
        d.rule_version,
        second_to_dt(e.occurred_at // 1000),  # DateTime holds seconds
        e.occurred_at,
        d.stream_time_ms,
        e.source,
        e.channel or "",
        e.visibility.value,
        d.record.topic,
        d.record.partition,
        d.record.offset,
        decided_at,
        "",
    )


def dead_letter_row(x: DeadLetter, decided_at: datetime) -> tuple[Any, ...]:
    detail = f"{x.reason}: {x.detail}"[:2000]
    empty = ("", "", "", "", "", 0, UNDECODABLE, RULE_VERSION, ms_to_dt(0), 0)
    return (
        *empty,
        x.stream_time_ms,
        "",
        "",
        "",
        x.topic,
        x.partition,
        x.offset,
        decided_at,
        detail,
    )


_TYPE_NAMES = pa.array([t.value for t in EVENT_TYPE_CODES], pa.string())
_VISIBILITY_NAMES = pa.array([v.value for v in VISIBILITY_CODES], pa.string())
_REASON_NAMES = pa.array([r.value for r in REASON_CODES], pa.string())


def decision_columns(
    batches: Sequence[BatchDecisions], dead: Sequence[DeadLetter], decided_at_s: int
) -> list[Any]:
    """The kudos.decisions columns (DECISIONS.columns order) of these decisions and dead
    letters: the rows `decision_row` and `dead_letter_row` give, as columns (strings as
    Arrow arrays, numbers as numpy arrays, DateTime as epoch seconds)."""
    parts = [_batch_columns(d, decided_at_s) for d in batches if len(d)]
    if dead:
        parts.append(_dead_columns(dead, decided_at_s))
    if not parts:
        return [[] for _ in range(19)]
    return [
        np.concatenate(cols) if isinstance(cols[0], np.ndarray) else pa.concat_arrays(cols)
        for cols in zip(*parts, strict=True)
    ]


def _batch_columns(d: BatchDecisions, decided_at_s: int) -> list[Any]:
    e = d.events
    rows = pa.array(d.event)
    n = len(d)
    occurred = e.occurred_at[d.event]
    return [
        e.org_id.take(rows),
        e.event_id.take(rows),
        _TYPE_NAMES.take(pa.array(e.event_type[d.event])),
        e.actor_id.take(rows),
        d.recipient,
        (d.reason == COUNTED_CODE).astype(np.uint8),
        _REASON_NAMES.take(pa.array(d.reason)),
        d.rule_version,
        occurred // 1000,  # DateTime holds seconds
        occurred,
        d.stream_time_ms,
        e.source.take(rows),
        pc.fill_null(e.channel.take(rows), ""),
        _VISIBILITY_NAMES.take(pa.array(e.visibility[d.event])),
        pa.array([d.topic] * n, pa.string()),
        np.full(n, d.partition, dtype=np.int64),
        d.offsets[d.event],
        np.full(n, decided_at_s, dtype=np.int64),
        pa.array([""] * n, pa.string()),
    ]


def _dead_columns(dead: Sequence[DeadLetter], decided_at_s: int) -> list[Any]:
    n = len(dead)
    blank = pa.array([""] * n, pa.string())
    zeros = np.zeros(n, dtype=np.int64)
    return [
        *(blank,) * 5,
        zeros.astype(np.uint8),
        pa.array([UNDECODABLE] * n, pa.string()),
        np.full(n, RULE_VERSION, dtype=np.int64),
        zeros,
        zeros,
        np.array([x.stream_time_ms for x in dead], dtype=np.int64),
        *(blank,) * 3,
        pa.array([x.topic for x in dead], pa.string()),
        np.array([x.partition for x in dead], dtype=np.int64),
        np.array([x.offset for x in dead], dtype=np.int64),
        np.full(n, decided_at_s, dtype=np.int64),
        pa.array([f"{x.reason}: {x.detail}"[:2000] for x in dead], pa.string()),
    ]


def score_row(
    key: WindowKey, t: WindowTotals, rules_for: RulesLookup, at: datetime
) -> tuple[Any, ...]:
    """A `kudos.score_state` row of one key as it is now (a snapshot)."""
    org, window, start, user = key
    rules = rules_for(org)
    parts = sorted(t.hwm)
    return (
        org,
        window,
        ms_to_dt(start),
        user,
        t.shares,
        t.thanks_given,
        t.thanks_received,
        t.distinct_thankers,
        t.reactions_received,
        t.score(rules),
        parts,
        [t.hwm[p] for p in parts],
        t.version,
        at,
        t.decay,
        t.decay_at,
        rules.decay_half_life_ms / 1000,
    )


class StateStore(RecognitionStore):
    """RecognitionStore in the rules' terms, for the stages."""

    # --- deciding stage ----------------------------------------------------------------

    def write_decisions(
        self, decisions: Sequence[Decision], dead: Sequence[DeadLetter] = ()
    ) -> int:
        """One insert per batch; one decided_at, so one part: a batch is stored whole or not."""
        at = now_utc()
        rows = [decision_row(d, at) for d in decisions] + [dead_letter_row(x, at) for x in dead]
        return self.write_decision_rows(rows)

    def write_decision_columns(
        self, batches: Sequence[BatchDecisions], dead: Sequence[DeadLetter] = ()
    ) -> int:
        """`write_decisions` for columnar decisions: one insert, one decided_at."""
        at = int(now_utc().timestamp())
        return self.write_decision_column_data(decision_columns(batches, dead, at))

    def load_partition_state(
        self, topic: str, partition: int, rules_for: RulesLookup
    ) -> PartitionState:
        """Rebuild the deciding state of one input partition from its stored decisions."""
        head = self.decisions_head(topic, partition)
        if head is None:
            return PartitionState()
        last_offset, stream_time = head
        since = seen_since(stream_time, rules_for)
        rows = self.seen_decisions(topic, partition, since, SEEN_REASONS)
        return partition_state(last_offset, stream_time, rows, rules_for)

    # --- aggregating stage -------------------------------------------------------------

    def load_keys(self, keys: Iterable[WindowKey], book: ScoreBook) -> None:
        """Load the stored totals, thankers and awarded badges of keys not yet in `book`
        (the per-key book: tests and benchmarks; the stage uses `load_into`)."""
        loaded, awarded, users_loaded = self._load(
            {k for k in keys if k not in book.totals}, book.users_loaded, only_stored=False
        )
        book.totals.update(loaded)
        book.awarded |= awarded
        book.users_loaded |= users_loaded

    def users_stored(self, users: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (org, user) have stored keys: one small query for every org, before
        loading anything (most users a batch meets for the first time have none)."""
        asked = set(users)
        if not asked:
            return set()
        orgs, names = sorted({o for o, _ in asked}), sorted({u for _, u in asked})
        return self.users_with_state(orgs, names) & asked

    def load_into(self, keys: Iterable[WindowKey], book: ColumnBook) -> set[WindowKey]:
        """Load the stored totals, thankers and awarded badges of `keys`, which `book` does
        not hold, into it (keys without stored rows as zero keys); returns the keys that
        had stored rows."""
        wanted = set(keys)
        loaded, awarded, users_loaded = self._load(wanted, book.users_loaded, only_stored=True)
        book.put(loaded)
        book.hold(k for k in wanted if k not in loaded)
        book.awarded |= awarded
        book.users_loaded |= users_loaded
        return set(loaded)

    def _load(
        self, keys: set[WindowKey], users_loaded: set[tuple[str, str]], only_stored: bool
    ) -> tuple[dict[WindowKey, WindowTotals], set[tuple[str, str, str, int]], set[tuple[str, str]]]:
        """What storage holds of `keys` (with `only_stored`, just the keys it has rows of),
        and the awarded badges of users not in `users_loaded`. Built aside: a failed load
        leaves the caller's book untouched for a retry."""
        by_org: dict[str, set[WindowKey]] = defaultdict(set)
        for k in keys:
            by_org[k[0]].add(k)
        loaded: dict[WindowKey, WindowTotals] = {}
        if not by_org:
            return loaded, set(), set()
        # One statement per table for every org and user: a batch touches most orgs, and
        # each statement costs more than its rows (the ids are bound, sinks/clickhouse.py).
        orgs = sorted(by_org)
        users = sorted({k[3] for k in keys})
        starts = {k[2] for k in keys}
        states = _by_org(self.score_state_rows(orgs, users, starts))
        thankers = _by_org(self.thanker_rows(orgs, users, starts))
        for org, wanted in by_org.items():
            org_states, org_thankers = states.get(org, []), thankers.get(org, [])
            if only_stored:  # the others start at zero, made in bulk by the book
                stored = {(org, r[0], int(r[1]), r[2]) for r in (*org_states, *org_thankers)}
                wanted = stored & wanted
            loaded.update(stored_totals(org, wanted, org_states, org_thankers))
        new_users = {(k[0], k[3]) for k in keys} - users_loaded
        awarded: set[tuple[str, str, str, int]] = set()
        if new_users:
            new_orgs, new_ids = sorted({o for o, _ in new_users}), sorted({u for _, u in new_users})
            for org, user, badge, period in self.awarded_badges(new_orgs, new_ids):
                if (org, user) in new_users:
                    awarded.add((org, user, badge, period))
        return loaded, awarded, new_users

    def write_score_columns(self, rows: ScoreColumns, leaders: bool = False) -> int:
        """`kudos.score_state` (or, `leaders`, `kudos.leader_rows`) rows by column."""
        if not len(rows):
            return 0

        def count(metric: Metric) -> np.ndarray:
            return np.asarray(rows.counts[:, METRIC_CODE[metric]])

        data = [
            rows.org,
            rows.window,
            rows.start_s,
            rows.user,
            count(Metric.SHARES),
            count(Metric.THANKS_GIVEN),
            count(Metric.THANKS_RECEIVED),
            rows.distinct,
            count(Metric.REACTIONS_RECEIVED),
            rows.score,
            rows.hwm_partitions,
            rows.hwm_offsets,
            rows.version,
            np.full(len(rows), int(now_utc().timestamp()), dtype=np.int64),
            rows.decay,
            rows.decay_at,
            rows.half_life_s,
        ]
        table = LEADER_ROWS if leaders else SCORE_STATE
        return self.ch.insert_columns(table.qualified, table.columns, data[: len(table.columns)])

    def write_thanker_columns(self, columns: Sequence[np.ndarray]) -> int:
        if not len(columns[0]):
            return 0
        return self.ch.insert_columns(THANKERS.qualified, THANKERS.columns, columns)

    def write_value_thanks_columns(self, columns: Sequence[np.ndarray]) -> int:
        """`kudos.value_thanks` rows (`ColumnApplied.value_thanks_columns`): a set, so a
        replay that writes them again changes nothing."""
        if not len(columns[0]):
            return 0
        return self.ch.insert_columns(VALUE_THANKS.qualified, VALUE_THANKS.columns, columns)

    def write_badges(self, awards: Sequence[BadgeAward]) -> int:
        at = now_utc()
        return self.write_badge_rows(
            [
                (
                    a.org_id,
                    a.user_id,
                    a.badge,
                    ms_to_dt(a.period_start),
                    at,
                    a.rule_version,
                    a.evidence,
                )
                for a in awards
            ]
        )

    def write_scores(
        self, book: ScoreBook, keys: Iterable[WindowKey], rules_for: RulesLookup
    ) -> int:
        return self.write_score_rows(self.score_rows(book, keys, rules_for))

    @staticmethod
    def score_rows(
        book: ScoreBook, keys: Iterable[WindowKey], rules_for: RulesLookup
    ) -> list[tuple[Any, ...]]:
        """`kudos.score_state` rows of these keys as they are now (a snapshot)."""
        at = now_utc()
        return [score_row(key, book.totals[key], rules_for, at) for key in keys]


def _by_org(rows: Iterable[Sequence[Any]]) -> dict[str, list[Sequence[Any]]]:
    """Rows led by their org, as the rest of each row per org."""
    out: dict[str, list[Sequence[Any]]] = defaultdict(list)
    for row in rows:
        out[str(row[0])].append(row[1:])
    return out
