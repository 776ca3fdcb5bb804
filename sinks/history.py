"""Reads of what the pipeline decided, for `/api/users/{user}/explain` and `kudos replay`.

`kudos.decisions` is a ReplacingMergeTree: a retried insert stores a batch's rows again
(with a later `decided_at`) until a merge collapses them, and the copies may sit in
different monthly partitions, where merges never meet. Every read here therefore groups
by the table's dedup key (org, event, recipient, source position) and takes the newest
copy's values (`argMax(..., decided_at)`): exact before and after merges, on ClickHouse
18.16 and on chdb 26.x alike, without relying on FINAL's cross-partition behaviour.

Nothing here writes to the tables the workers own; `write_replay_scores` writes only
`kudos.replay_scores`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sinks.clickhouse import ClickHouse
from sinks.store import dt_to_ms, ms_to_dt
from streams.scorebook import WindowKey

# The dedup key of kudos.decisions (its ORDER BY), plus src_topic, which one source
# position needs to be unique across topics.
_KEY: Final = "org_id, event_id, recipient_id, src_topic, src_partition, src_offset"
_DEDUPED: Final = (
    "SELECT org_id, event_id, recipient_id, src_topic, src_partition, src_offset, "
    "argMax(event_type, decided_at) AS d_type, argMax(actor_id, decided_at) AS d_actor, "
    "argMax(counted, decided_at) AS d_counted, argMax(reason, decided_at) AS d_reason, "
    "argMax(rule_version, decided_at) AS d_version, "
    "argMax(occurred_at_ms, decided_at) AS d_at, "
    "argMax(visibility, decided_at) AS d_visibility, argMax(channel, decided_at) AS d_channel, "
    "argMax(source, decided_at) AS d_source, max(decided_at) AS d_decided "
    "FROM kudos.decisions WHERE {where} GROUP BY " + _KEY
)
_ROW_COLUMNS: Final = (
    "org_id, event_id, d_type, d_actor, recipient_id, d_counted, d_reason, d_version, d_at, "
    "d_visibility, d_channel, d_source, src_topic, src_partition, src_offset, d_decided"
)
# Reasons of rows that hold no event (messages that could not be decoded).
UNDECODABLE: Final = "undecodable"
REPLAY_COLUMNS: Final = (
    "replay_id",
    "replayed_at",
    "range_from",
    "range_to",
    "org_id",
    "window",
    "window_start",
    "user_id",
    "whole",
    "old_score",
    "score",
    "shares",
    "thanks_given",
    "thanks_received",
    "reactions_received",
    "rules",
)

# What `kudos replay --apply` writes to: kudos.replay_scores (migration 0015).


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One stored decision (one event x one target), deduplicated."""

    org_id: str
    event_id: str
    event_type: str
    actor_id: str
    recipient_id: str
    counted: bool
    reason: str
    rule_version: int
    occurred_at_ms: int
    visibility: str
    channel: str
    source: str
    src_topic: str
    src_partition: int
    src_offset: int
    decided_at_ms: int


@dataclass(frozen=True, slots=True)
class DecisionGroup:
    """How many decisions of one kind touch a user (see `user_decision_groups`)."""

    event_type: str
    reason: str
    as_recipient: bool
    as_actor: bool
    decisions: int
    distinct_actors: int


@dataclass(frozen=True, slots=True)
class StoredTotals:
    shares: int
    thanks_given: int
    thanks_received: int
    reactions_received: int
    score: int


def _row(r: Sequence[Any]) -> DecisionRow:
    return DecisionRow(
        str(r[0]),
        str(r[1]),
        str(r[2]),
        str(r[3]),
        str(r[4]),
        bool(r[5]),
        str(r[6]),
        int(r[7]),
        int(r[8]),
        str(r[9]),
        str(r[10]),
        str(r[11]),
        str(r[12]),
        int(r[13]),
        int(r[14]),
        dt_to_ms(r[15]),
    )


def _chunks(items: Sequence[str], size: int = 2000) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class DecisionHistory:
    """Typed reads of kudos.decisions and kudos.score_state for explain and replay."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch

    # --- explain -----------------------------------------------------------------------

    @staticmethod
    def _user_filter(start_ms: int, end_ms: int | None) -> str:
        where = (
            "org_id = %(org)s AND (recipient_id = %(user)s OR actor_id = %(user)s) "
            "AND occurred_at_ms >= %(start)s"
        )
        if end_ms is not None:
            where += " AND occurred_at_ms < %(end)s"
        return where

    def user_decisions(
        self, org: str, user: str, start_ms: int, end_ms: int | None, limit: int
    ) -> list[DecisionRow]:
        """Decisions in [start, end) where `user` is the recipient or the actor, newest
        first (then by source position), at most `limit` rows."""
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM ("
            + _DEDUPED.format(where=self._user_filter(start_ms, end_ms))
            + ") ORDER BY d_at DESC, src_topic, src_partition, src_offset DESC, recipient_id "
            "LIMIT %(limit)s"
        )
        params = {"org": org, "user": user, "start": start_ms, "end": end_ms, "limit": limit}
        return [_row(r) for r in self.ch.query(sql, params)]

    def user_decision_groups(
        self, org: str, user: str, start_ms: int, end_ms: int | None
    ) -> list[DecisionGroup]:
        """Every decision in [start, end) touching `user`, counted per (event type, reason,
        user is recipient, user is actor), with the distinct actors of each group."""
        sql = (
            "SELECT d_type, d_reason, recipient_id = %(user)s AS as_recipient, "
            "d_actor = %(user)s AS as_actor, count(), uniqExact(d_actor) FROM ("
            + _DEDUPED.format(where=self._user_filter(start_ms, end_ms))
            + ") GROUP BY d_type, d_reason, as_recipient, as_actor"
        )
        params = {"org": org, "user": user, "start": start_ms, "end": end_ms}
        return [
            DecisionGroup(str(r[0]), str(r[1]), bool(r[2]), bool(r[3]), int(r[4]), int(r[5]))
            for r in self.ch.query(sql, params)
        ]

    # --- replay ------------------------------------------------------------------------

    def last_offsets(self, start_ms: int, end_ms: int) -> dict[tuple[str, int], int]:
        """Per source partition, the highest offset of an event that occurred in [start, end)."""
        rows = self.ch.query(
            "SELECT src_topic, src_partition, max(src_offset) FROM kudos.decisions "
            "WHERE occurred_at_ms >= %(start)s AND occurred_at_ms < %(end)s "
            "AND reason != %(undecodable)s GROUP BY src_topic, src_partition",
            {"start": start_ms, "end": end_ms, "undecodable": UNDECODABLE},
        )
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def replay_rows(self, since_ms: int, last: dict[tuple[str, int], int]) -> list[DecisionRow]:
        """Decisions of events that occurred at or after `since_ms` at source positions up to
        `last` (per partition), in source order: the input of a replay."""
        out: list[DecisionRow] = []
        for (topic, partition), offset in sorted(last.items()):
            where = (
                "occurred_at_ms >= %(since)s AND reason != %(undecodable)s "
                "AND src_topic = %(topic)s AND src_partition = %(p)s AND src_offset <= %(o)s"
            )
            sql = (
                f"SELECT {_ROW_COLUMNS} FROM ("
                + _DEDUPED.format(where=where)
                + ") ORDER BY src_offset, recipient_id"
            )
            params = {
                "since": since_ms,
                "undecodable": UNDECODABLE,
                "topic": topic,
                "p": partition,
                "o": offset,
            }
            out.extend(_row(r) for r in self.ch.query(sql, params))
        return out

    def stored_totals(self, keys: Iterable[WindowKey]) -> dict[WindowKey, StoredTotals]:
        """The stored totals of these keys (kudos.score_state, newest version per key, which
        is what kudos.scores shows); keys without a row are absent."""
        wanted = set(keys)
        by_org: dict[str, tuple[set[str], set[int]]] = {}
        for org, _window, start, user in wanted:
            users, starts = by_org.setdefault(org, (set(), set()))
            users.add(user)
            starts.add(start)
        best: dict[WindowKey, tuple[int, StoredTotals]] = {}
        for org, (users, starts) in by_org.items():
            for chunk in _chunks(sorted(users)):
                for row in self.ch.query(
                    "SELECT window, window_start, user_id, shares, thanks_given, "
                    "thanks_received, reactions_received, score, version "
                    "FROM kudos.score_state WHERE org_id = %(org)s AND user_id IN %(users)s "
                    "AND window_start IN %(starts)s",
                    {
                        "org": org,
                        "users": tuple(chunk),
                        "starts": tuple(ms_to_dt(s) for s in sorted(starts)),
                    },
                ):
                    key: WindowKey = (org, row[0], dt_to_ms(row[1]), str(row[2]))
                    version = int(row[8])
                    if key in wanted and (key not in best or version > best[key][0]):
                        totals = StoredTotals(*(int(v) for v in row[3:8]))
                        best[key] = (version, totals)
        return {k: t for k, (_, t) in best.items()}

    def has_replay_table(self) -> bool:
        rows = self.ch.query(
            "SELECT count() FROM system.tables WHERE database = 'kudos' AND name = 'replay_scores'"
        )
        return bool(rows and rows[0][0])

    def write_replay_scores(self, rows: Sequence[Sequence[Any]]) -> int:
        """Rows in `REPLAY_COLUMNS` order (datetimes as naive UTC) into kudos.replay_scores."""
        if not rows:
            return 0
        return self.ch.insert("kudos.replay_scores", REPLAY_COLUMNS, rows)
