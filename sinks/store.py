"""What the pipeline reads from and writes to ClickHouse, table by table.

Rows in, rows out: writers take rows (tuples in the tables' column order) and insert them with
the driver's column insert; they never format values into SQL. Readers return rows. What the
rows mean to the rules (decisions, window totals, the state a restarted worker rebuilds from
them) is the stages' business: `streams/stages/state_store.py` maps, and
`streams/domain/state.py` rebuilds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.times import dt_to_ms, format_rfc3339, ms_to_dt
from schemas.vocabulary import DEPTH, BoardKey, WindowKey, WindowName
from sinks.clickhouse import ClickHouse, mutation_chunks
from sinks.directory import OPTED_OUT_SQL, opted_out_users, people
from sinks.erase import mutate
from sinks.tables import BADGE_AWARD_ROWS, DECISIONS, LEADER_ROWS, SCORE_STATE, THANKERS


@dataclass(frozen=True, slots=True)
class LeaderboardEntry:
    rank: int
    user_id: str
    score: int
    shares: int
    thanks_given: int
    thanks_received: int
    distinct_thankers: int
    reactions_received: int
    display_name: str | None = None  # from the user directory; None when unknown


class RecognitionStore:
    """Typed access to the kudos tables over any ClickHouse backend."""

    def __init__(self, ch: ClickHouse, leader_depth: int = DEPTH) -> None:
        self.ch = ch
        # Boards in leader_rows hold every key of any top-N with N <= leader_depth.
        self.leader_depth = leader_depth

    # --- deciding stage ----------------------------------------------------------------

    def write_decision_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """One insert per batch (rows with one decided_at): a batch is stored whole or not."""
        return self.ch.insert(DECISIONS.qualified, DECISIONS.columns, rows) if rows else 0

    def write_decision_column_data(self, columns: Sequence[Any]) -> int:
        """`write_decision_rows` for columns in DECISIONS.columns order: one insert."""
        if not len(columns[0]):
            return 0
        return self.ch.insert_columns(DECISIONS.qualified, DECISIONS.columns, columns)

    def decisions_head(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(highest stored offset, its stream time) of an input partition; None if none."""
        head = self.ch.query(
            "SELECT max(src_offset), max(stream_time_ms), count() FROM kudos.decisions "
            "WHERE src_topic = %(topic)s AND src_partition = %(p)s",
            {"topic": topic, "p": partition},
        )
        if not head or not head[0][2]:
            return None
        return int(head[0][0]), int(head[0][1])

    def seen_decisions(
        self, topic: str, partition: int, since_ms: int, reasons: Sequence[str]
    ) -> list[tuple[str, str, str, str, str, str, int]]:
        """(org, event, type, actor, recipient, reason, occurred ms) of a partition's
        decisions with these reasons about events since `since_ms`."""
        rows = self.ch.query(
            "SELECT org_id, event_id, event_type, actor_id, recipient_id, reason, occurred_at_ms "
            "FROM kudos.decisions WHERE src_topic = %(topic)s AND src_partition = %(p)s "
            "AND occurred_at_ms >= %(horizon)s AND reason IN %(reasons)s",
            {"topic": topic, "p": partition, "horizon": since_ms, "reasons": tuple(reasons)},
        )
        return [
            (str(o), str(e), str(t), str(a), str(r), str(x), int(at))
            for o, e, t, a, r, x, at in rows
        ]

    # --- aggregating stage -------------------------------------------------------------

    def score_state_rows(
        self, orgs: Sequence[str], users: Sequence[str], starts: Iterable[int]
    ) -> list[tuple[Any, ...]]:
        """Every stored version of the score_state rows of these users in these orgs, in
        windows starting at `starts`: (org, window, start ms, user, shares, thanks_given,
        thanks_received, reactions_received, hwm_partitions, hwm_offsets, version,
        decay_value, decay_at_ms). One statement for every org: each user is looked up in
        each org, so a caller keeps the (org, user) pairs it asked for. As the driver
        returns them: ClickHouse computes the start in ms (`_START_MS`)."""
        return self.ch.query(
            f"SELECT org_id, window, {_START_MS}, user_id, shares, thanks_given, "
            "thanks_received, reactions_received, hwm_partitions, hwm_offsets, version, "
            "decay_value, decay_at_ms FROM kudos.score_state WHERE org_id IN %(orgs)s "
            "AND user_id IN %(users)s AND window_start IN %(starts)s",
            _user_windows(orgs, users, starts),
        )

    def users_with_state(self, orgs: Sequence[str], users: Sequence[str]) -> set[tuple[str, str]]:
        """The (org, user) of these orgs and users that have any stored score_state row
        (each user looked up in each org, as `score_state_rows`): every point reaches a
        user's `all` window, so they are the users with a stored `all` key."""
        rows = self.ch.query(
            "SELECT DISTINCT org_id, user_id FROM kudos.score_state WHERE org_id IN %(orgs)s "
            "AND window = 'all' AND user_id IN %(users)s",
            {"orgs": tuple(orgs), "users": tuple(users)},
        )
        return {(str(r[0]), str(r[1])) for r in rows}

    def thanker_rows(
        self, orgs: Sequence[str], users: Sequence[str], starts: Iterable[int]
    ) -> list[tuple[Any, ...]]:
        """(org, window, start ms, user, thanker) of these users in these orgs (each user
        in each org, as `score_state_rows`), in windows starting at `starts`."""
        return self.ch.query(
            f"SELECT org_id, window, {_START_MS}, user_id, thanker_id FROM kudos.thankers "
            "WHERE org_id IN %(orgs)s AND user_id IN %(users)s AND window_start IN %(starts)s",
            _user_windows(orgs, users, starts),
        )

    def awarded_badges(
        self, orgs: Sequence[str], users: Sequence[str]
    ) -> list[tuple[str, str, str, int]]:
        """(org, user, badge, period start ms) of every badge these users were awarded in
        these orgs (each user in each org, as `score_state_rows`)."""
        return [
            (str(org), str(user), str(badge), dt_to_ms(period))
            for org, user, badge, period in self.ch.query(
                "SELECT org_id, user_id, badge, period_start FROM kudos.badge_award_rows "
                "WHERE org_id IN %(orgs)s AND user_id IN %(users)s",
                {"orgs": tuple(orgs), "users": tuple(users)},
            )
        ]

    def write_thankers(self, rows: Sequence[tuple[WindowKey, str]]) -> int:
        if not rows:
            return 0
        return self.ch.insert(
            THANKERS.qualified,
            THANKERS.columns,
            [(org, w, ms_to_dt(s), user, thanker) for (org, w, s, user), thanker in rows],
        )

    def delete_thankers(self, rows: Sequence[tuple[WindowKey, str]]) -> None:
        """Delete (key, thanker) rows a collusion audit took out, and wait for it."""
        by_org: dict[str, set[str]] = defaultdict(set)
        for (org, window, start, user), thanker in rows:
            by_org[org].add(f"{user}\x00{thanker}\x00{window}\x00{start // 1000}")
        for org, keys in by_org.items():
            # A mutation's values are written into its text (sinks.erase.mutate): a few
            # dozen KiB of keys per statement, far below max_query_size.
            for chunk in mutation_chunks(sorted(keys)):
                mutate(
                    self.ch,
                    "thankers",
                    "DELETE WHERE org_id = %(org)s AND concat(user_id, '\\0', thanker_id, "
                    "'\\0', `window`, '\\0', toString(toUInt32(window_start))) IN %(keys)s",
                    {"org": org, "keys": tuple(chunk)},
                )

    def write_badge_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return (
            self.ch.insert(BADGE_AWARD_ROWS.qualified, BADGE_AWARD_ROWS.columns, rows)
            if rows
            else 0
        )

    def write_score_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        return self.ch.insert(SCORE_STATE.qualified, SCORE_STATE.columns, rows)

    def write_leader_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """score_state rows of keys at or above their board's threshold (streams/leaders)."""
        if not rows:
            return 0
        n = len(LEADER_ROWS.columns)  # score_state's first columns (sinks/tables.py)
        return self.ch.insert(LEADER_ROWS.qualified, LEADER_ROWS.columns, [r[:n] for r in rows])

    def load_boards(
        self, boards: Iterable[BoardKey], depth: int
    ) -> dict[BoardKey, list[tuple[str, int]]]:
        """The top `depth` (user, score) of each board as stored in `leader_rows`."""
        out: dict[BoardKey, list[tuple[str, int]]] = {}
        for org, window, start in boards:
            out[(org, window, start)] = [
                (str(user), int(score))
                for user, score in self.ch.query(
                    "SELECT user_id, score FROM kudos.leader_rows FINAL "
                    "WHERE org_id = %(org)s AND window = %(window)s "
                    "AND window_start = %(start)s ORDER BY score DESC LIMIT %(depth)s",
                    {"org": org, "window": window, "start": ms_to_dt(start), "depth": depth},
                )
            ]
        return out

    # --- reads -------------------------------------------------------------------------

    def leaderboard(
        self, org: str, window: WindowName, start_ms: int, top: int
    ) -> list[LeaderboardEntry]:
        # Opted-out users never appear (sinks/directory.py); ranks close up over the rest.
        # leader_rows holds every key that can be in a top-D of the full board, D =
        # leader_depth (streams/domain/leaders.py), so the top-N of the others is exact there
        # while N + (opted-out users of the org) <= D; else read kudos.scores.
        hidden = opted_out_users(self.ch, org, self.leader_depth + 1)
        params = {"org": org, "window": window, "start": ms_to_dt(start_ms), "top": top}
        if top + len(hidden) <= self.leader_depth:
            source, shown = "kudos.leader_rows FINAL", ""
            if hidden:
                shown, params["hidden"] = "AND user_id NOT IN %(hidden)s ", tuple(hidden)
        else:
            source, shown = "kudos.scores", f"AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL}) "
        rows = self.ch.query(
            "SELECT user_id, score, shares, thanks_given, thanks_received, distinct_thankers, "
            f"reactions_received FROM {source} "
            "WHERE org_id = %(org)s AND window = %(window)s AND window_start = %(start)s "
            f"{shown}ORDER BY score DESC, user_id ASC LIMIT %(top)s",
            params,
        )
        names = people(self.ch, org, [r[0] for r in rows]) if rows else {}
        return [
            LeaderboardEntry(
                i + 1,
                r[0],
                int(r[1]),
                int(r[2]),
                int(r[3]),
                int(r[4]),
                int(r[5]),
                int(r[6]),
                names[r[0]].display_name if r[0] in names else None,
            )
            for i, r in enumerate(rows)
        ]

    def value_board(
        self, org: str, window: WindowName, start_ms: int, value: str, top: int, weight: int
    ) -> list[LeaderboardEntry]:
        """The board of one company value: people ranked by counted thanks received that
        carried `value` (`score` = those thanks x `weight`, the org's thanks weight; ties
        by user id), from kudos.value_thanks as kudos.value_scores counts it. Opted-out
        people never appear. Entries have the leaderboard's shape: thanks_received and
        distinct_thankers are the value's, the other metrics 0."""
        rows = self.ch.query(
            "SELECT user_id, count() * %(weight)s AS score, count() AS n, "
            "uniqExact(thanker_id) AS thankers FROM kudos.value_thanks FINAL "
            "WHERE org_id = %(org)s AND window = %(window)s AND window_start = %(start)s "
            f"AND `value` = %(value)s AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL}) "
            f"AND {_NOT_REVERSED} "
            "GROUP BY user_id ORDER BY score DESC, n DESC, user_id ASC LIMIT %(top)s",
            {
                "org": org,
                "window": window,
                "start": ms_to_dt(start_ms),
                "value": value,
                "top": top,
                "weight": weight,
            },
        )
        names = people(self.ch, org, [r[0] for r in rows]) if rows else {}
        return [
            LeaderboardEntry(
                i + 1,
                r[0],
                int(r[1]),
                0,
                0,
                int(r[2]),
                int(r[3]),
                0,
                names[r[0]].display_name if r[0] in names else None,
            )
            for i, r in enumerate(rows)
        ]

    def value_counts(
        self, org: str, window: WindowName, value: str, users: Sequence[str], starts: Iterable[int]
    ) -> list[tuple[str, int, int, int]]:
        """(user, start ms, thanks_received, distinct_thankers) of these users in windows
        starting at `starts`, for one value, as kudos.value_scores counts them (every user
        in every start: a caller keeps the pairs it asked for)."""
        rows = self.ch.query(
            f"SELECT user_id, {_START_MS}, count(), uniqExact(thanker_id) "
            "FROM kudos.value_thanks FINAL WHERE org_id = %(org)s AND window = %(window)s "
            "AND `value` = %(value)s AND user_id IN %(users)s AND window_start IN %(starts)s "
            f"AND {_NOT_REVERSED} GROUP BY user_id, window_start",
            {
                "org": org,
                "window": window,
                "value": value,
                "users": tuple(users),
                "starts": tuple(ms_to_dt(s) for s in sorted(starts)),
            },
        )
        return [(str(u), int(s), int(n), int(d)) for u, s, n, d in rows]

    def badges(
        self, org: str, user: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The org's (or one user's) badge awards, newest first, without opted-out people;
        `limit` of them from `offset` on (all when `limit` is None)."""
        sql = (
            "SELECT user_id, badge, period_start, awarded_at FROM kudos.badge_awards "
            f"WHERE org_id = %(org)s AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL})"
        )
        params: dict[str, Any] = {"org": org, "offset": offset}
        if user is not None:
            sql += " AND user_id = %(user)s"
            params["user"] = user
        sql += " ORDER BY awarded_at DESC, user_id, badge, period_start"
        if limit is not None:
            sql += " LIMIT %(offset)s, %(limit)s"
            params["limit"] = limit
        return [
            {
                "org": org,
                "user_id": r[0],
                "badge": r[1],
                "period_start": format_rfc3339(dt_to_ms(r[2])),
                "awarded_at": format_rfc3339(dt_to_ms(r[3])),
            }
            for r in self.ch.query(sql, params)
        ]


# A value_thanks row whose thank-you the collusion audit took back does not count
# (migration 0024, kudos.value_scores, says the same).
_NOT_REVERSED = (
    "(org_id, user_id, src_partition, src_offset) GLOBAL NOT IN (SELECT org_id, "
    "recipient_id, src_partition, src_offset FROM kudos.reversals "
    "WHERE org_id = %(org)s AND delta < 0)"
)

# A window's start as epoch ms, computed by ClickHouse: rows of a reload need no Python
# datetime per row (the aggregating stage reads thousands of them per batch).
_START_MS = "toUInt64(toUnixTimestamp(window_start)) * 1000"


def _user_windows(
    orgs: Sequence[str], users: Sequence[str], starts: Iterable[int]
) -> dict[str, Any]:
    return {
        "orgs": tuple(orgs),
        "users": tuple(users),
        "starts": tuple(ms_to_dt(s) for s in sorted(starts)),
    }
