"""Reads of what the pipeline decided, for `/api/users/{user}/explain` and `kudos replay`.

`kudos.decisions` is a ReplacingMergeTree: a retried insert stores a batch's rows again
(with a later `decided_at`) until a merge collapses them, and the copies may sit in
different monthly partitions, where merges never meet. Every read here therefore groups
by the table's dedup key (org, event, recipient, source position) and takes the newest
copy's values (`argMax(..., decided_at)`): exact before and after merges, on ClickHouse
18.16 and on chdb 26.x alike, without relying on FINAL's cross-partition behaviour.

The weekly collusion audit (streams/domain/collusion.py) changes decisions after the fact: each
change is one row of `kudos.reversals` (migration 0017) naming the decision by its lineage
(src_topic, src_partition, src_offset, recipient_id) and saying what it is now. The explain
reads join those in (`REVERSALS` below), so a decision shows what the aggregating stage
counted for it; `replay_rows` does not: a replay re-decides events from what the deciding
stage stored. Reversal rows are deduplicated the same way, by the decision they reference,
newest `audited_at` first.

Nothing here writes to the tables the workers own; `write_replay_scores` writes only
`kudos.replay_scores`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

from schemas.rows import Audit, DecisionGroup, DecisionRow, StoredTotals
from schemas.times import dt_to_ms, ms_to_dt
from schemas.vocabulary import UNDECODABLE, WindowKey
from sinks.clickhouse import ClickHouse
from sinks.tables import REPLAY_SCORES

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

# What the collusion audit made of each decision it changed (kudos.reversals, migration
# 0017): one row per referenced decision (`REVERSAL_KEY`), whichever of its copies -- a
# re-run audit stores the same rows again -- was audited last. `r_copies` is 0 on the
# right side of a LEFT JOIN that found nothing (ClickHouse fills defaults, join_use_nulls
# is off on both engines), so `r_copies > 0` tells a changed decision. `{where}` may use
# org_id, actor_id, recipient_id and occurred_at_ms, which the row copies from its decision.
# Group members are reduced to their number: readers never show who else was in a group.
REVERSAL_KEY: Final = "org_id, src_topic, src_partition, src_offset, recipient_id"
REVERSALS: Final = (
    "SELECT " + REVERSAL_KEY + ", count() AS r_copies, "
    "argMax(`now`, audited_at) AS r_now, argMax(was, audited_at) AS r_was, "
    "argMax(delta, audited_at) AS r_delta, argMax(rule, audited_at) AS r_rule, "
    "argMax(rule_version, audited_at) AS r_version, "
    "argMax(length(group_members), audited_at) AS r_group "
    "FROM kudos.reversals WHERE {where} GROUP BY " + REVERSAL_KEY
)


def counted_after_audit(counted: str) -> str:
    """SQL: whether a decision counts once its reversal (joined from `REVERSALS`) is
    applied: delta +1 counts, -1 does not, anything else (or no reversal) keeps `counted`."""
    return f"if(r_copies > 0 AND r_delta != 0, r_delta > 0, {counted})"


def reason_after_audit(reason: str) -> str:
    """SQL: a decision's reason once its reversal is applied (the reversal's `now`)."""
    return f"if(r_copies > 0, r_now, {reason})"


# Deduplicated decisions with their reversals applied: `e_counted`, `e_reason`, and the
# reversal's r_* columns (r_copies = 0 when the audit did not change the decision).
_AUDITED_COLUMNS: Final = (
    "org_id, event_id, d_type, d_actor, recipient_id, e_counted, e_reason, d_version, d_at, "
    "d_visibility, d_channel, d_source, src_topic, src_partition, src_offset, d_decided, "
    "r_copies, r_was, r_rule, r_version, r_group, r_delta"
)
_AUDITED: Final = (
    "SELECT org_id, event_id, d_type, d_actor, recipient_id, "
    + counted_after_audit("d_counted")
    + " AS e_counted, "
    + reason_after_audit("d_reason")
    + " AS e_reason, d_version, d_at, d_visibility, d_channel, d_source, src_topic, "
    "src_partition, src_offset, d_decided, r_copies, r_was, r_rule, r_version, r_group, "
    "r_delta FROM ("
    + _DEDUPED
    + ") AS decided ANY LEFT JOIN ("
    + REVERSALS
    + ") AS reversed USING ("
    + REVERSAL_KEY
    + ")"
)


def deduped_decisions(where: str) -> str:
    """SQL: kudos.decisions one row per decision, the newest copy's values (d_* columns),
    of the rows `where` selects (it may use any column of kudos.decisions)."""
    return _DEDUPED.format(where=where)


def audited_decisions(where: str) -> str:
    """SQL: `deduped_decisions` with the collusion audit applied (e_counted, e_reason and
    the r_* columns); `where` may only use what both tables have (see `REVERSALS`)."""
    return _AUDITED.format(where=where)


# Explain's entries (streams/domain/explain.py): a decision gives `user` one entry per metric it
# feeds for them, numbered in this order (a self-thank-you gives two: received, given); a
# reaction the user gave feeds nothing and is no entry.
ENTRY_METRICS: Final = ("thanks_received", "reactions_received", "thanks_given", "shares")
_ENTRY_METRIC: Final = (
    "arrayJoin(arrayFilter(m -> m > 0, ["
    "if(d_type = 'THANKS' AND recipient_id = %(user)s, 1, 0), "
    "if(d_type = 'REACTION' AND recipient_id = %(user)s, 2, 0), "
    "if(d_type = 'THANKS' AND d_actor = %(user)s, 3, 0), "
    "if(d_type = 'SHARE' AND d_actor = %(user)s, 4, 0)]))"
)
# Newest first. A PRIVATE decision sorts by the start of its hour and, within it, after the
# public ones and by a hash of its identity: its place in the list gives away neither its
# exact time nor its source position (explain shows neither; DESIGN.md, part 2).
ENTRY_ORDER: Final = (
    "if(d_visibility = 'PRIVATE', intDiv(d_at, 3600000) * 3600000, d_at) DESC, "
    "d_visibility = 'PRIVATE', "
    "if(d_visibility = 'PRIVATE', cityHash64(event_id, recipient_id), 0), "
    "src_topic, src_partition, src_offset DESC, recipient_id, e_metric"
)


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


def _audited_row(r: Sequence[Any]) -> DecisionRow:
    """A row of `_AUDITED_COLUMNS`."""
    base = _row(r[:16])
    if not int(r[16]):
        return base
    return replace(base, audit=Audit(str(r[17]), str(r[18]), int(r[19]), int(r[20]), int(r[21])))


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

    def user_entries(
        self, org: str, user: str, start_ms: int, end_ms: int | None, limit: int, offset: int = 0
    ) -> list[tuple[DecisionRow, str]]:
        """Explain's entries in [start, end): one per (decision, metric it feeds for `user`),
        the metric as a name of `ENTRY_METRICS`, as the audit left them; `limit` of them
        from `offset` on, in `ENTRY_ORDER` (so paging is exact and stable)."""
        sql = (
            f"SELECT {_AUDITED_COLUMNS}, {_ENTRY_METRIC} AS e_metric FROM ("
            + _AUDITED.format(where=self._user_filter(start_ms, end_ms))
            + f") ORDER BY {ENTRY_ORDER} LIMIT %(offset)s, %(limit)s"
        )
        params = {
            "org": org,
            "user": user,
            "start": start_ms,
            "end": end_ms,
            "limit": limit,
            "offset": offset,
        }
        return [
            (_audited_row(r[:-1]), ENTRY_METRICS[int(r[-1]) - 1])
            for r in self.ch.query(sql, params)
        ]

    def user_decision_groups(
        self, org: str, user: str, start_ms: int, end_ms: int | None
    ) -> list[DecisionGroup]:
        """Every decision in [start, end) touching `user`, counted per (event type, reason,
        user is recipient, user is actor) as the audit left them, with the distinct actors
        of each group and how many of them the audit reversed or reinstated."""
        sql = (
            "SELECT d_type, e_reason, recipient_id = %(user)s AS as_recipient, "
            "d_actor = %(user)s AS as_actor, count(), uniqExact(d_actor), "
            "countIf(r_copies > 0 AND r_delta < 0), countIf(r_copies > 0 AND r_delta > 0) "
            "FROM ("
            + _AUDITED.format(where=self._user_filter(start_ms, end_ms))
            + ") GROUP BY d_type, e_reason, as_recipient, as_actor"
        )
        params = {"org": org, "user": user, "start": start_ms, "end": end_ms}
        return [
            DecisionGroup(str(r[0]), str(r[1]), bool(r[2]), bool(r[3]), *(int(n) for n in r[4:8]))
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
            for row in self.ch.query(
                "SELECT window, window_start, user_id, shares, thanks_given, "
                "thanks_received, reactions_received, score, version "
                "FROM kudos.score_state WHERE org_id = %(org)s AND user_id IN %(users)s "
                "AND window_start IN %(starts)s",
                {
                    "org": org,
                    "users": tuple(sorted(users)),
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
        """Rows in `REPLAY_SCORES.columns` order (datetimes as naive UTC) into
        kudos.replay_scores."""
        if not rows:
            return 0
        return self.ch.insert(REPLAY_SCORES.qualified, REPLAY_SCORES.columns, rows)
