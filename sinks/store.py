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
from typing import Any, Final

from schemas.times import dt_to_ms, format_rfc3339, ms_to_dt
from schemas.vocabulary import (
    BOARD_METRICS,
    DEPTH,
    BoardKey,
    BoardMetric,
    BoardWindow,
    WindowKey,
    WindowName,
)
from sinks import rolling
from sinks.clickhouse import ClickHouse, mutation_chunks
from sinks.directory import OPTED_OUT_SQL, opted_out_users, people
from sinks.erase import mutate
from sinks.tables import (
    BADGE_AWARD_ROWS,
    BOARD_COLUMNS,
    DECISIONS,
    LEADER_ROWS,
    SCORE_STATE,
    THANKERS,
)


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


@dataclass(frozen=True, slots=True)
class UserRank:
    """One person's place on a people board (`RecognitionStore.rank`)."""

    user_id: str
    rank: int | None  # None: not on the board (no points, opted out, unknown)
    value: int | None  # the user's value of the board's metric; None when not ranked
    of: int  # how many people the board ranks
    entries: list[LeaderboardEntry]  # the user's neighbours and the user, best first


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
        """The top `top` by score (`board` with its defaults)."""
        return self.board(org, window, start_ms, top)

    def board(
        self,
        org: str,
        window: BoardWindow,
        start_ms: int,
        top: int,
        offset: int = 0,
        metric: BoardMetric = "score",
        days: Sequence[int] | None = None,
    ) -> list[LeaderboardEntry]:
        """Ranks `offset` + 1 to `offset` + `top` of the window's people board by `metric`
        (descending, ties by user id ascending), without opted-out people: ranks count
        from 1 over the people shown, so opted-out people close up. Empty past the end.
        A rolling window gives its `days` (their starts) and is read by sinks/rolling.py."""
        if days is not None:
            return self._entries(org, self._rolling_rows(org, days, top, offset, metric), offset)
        # Opted-out users never appear (sinks/directory.py); ranks close up over the rest.
        # leader_rows holds every key that can be in a top-D of the full board by score,
        # D = leader_depth (streams/domain/leaders.py), so ranks down to offset + top of the
        # others are exact there while offset + top + (opted-out users of the org) <= D;
        # else, and for any other metric (leader_rows is admitted by score), read
        # kudos.scores.
        order = _metric_column(metric)
        hidden = opted_out_users(self.ch, org, self.leader_depth + 1)
        params = _board_params(org, window, start_ms) | {"top": top, "offset": offset}
        if metric == "score" and offset + top + len(hidden) <= self.leader_depth:
            source, shown = "kudos.leader_rows FINAL", ""
            if hidden:
                shown, params["hidden"] = "AND user_id NOT IN %(hidden)s ", tuple(hidden)
        else:
            source, shown = "kudos.scores", f"AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL}) "
        rows = self.ch.query(
            f"SELECT {_ENTRY_COLUMNS} FROM {source} WHERE {_BOARD} {shown}"
            f"ORDER BY {order} DESC, user_id ASC LIMIT %(offset)s, %(top)s",
            params,
        )
        return self._entries(org, rows, offset)

    def _rolling_rows(
        self, org: str, days: Sequence[int], top: int, offset: int, metric: BoardMetric
    ) -> list[tuple[Any, ...]]:
        order = _metric_column(metric)
        if order == "score":
            return rolling.score_board(self.ch, org, days, top, offset, self.leader_depth)
        return rolling.full_board(self.ch, org, days, top, offset, order)

    def rank(
        self,
        org: str,
        window: BoardWindow,
        start_ms: int,
        user: str,
        metric: BoardMetric = "score",
        around: int = 0,
        days: Sequence[int] | None = None,
    ) -> UserRank:
        """Where `user` stands on the board `board` reads: rank (people with a higher
        `metric`, or an equal one and a smaller user id, plus one; opted-out people not
        counted), the user's value of `metric`, how many people are ranked, and the
        entries of ranks rank - `around` to rank + `around`. A user without a row in the
        window (no points), opted out, or unknown is not ranked: rank and value None, no
        entries. Each read is exact; under live writes they are moments apart."""
        order = _metric_column(metric)
        if days is None:
            visible = f"kudos.scores WHERE {_BOARD} AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL})"
            params = _board_params(org, window, start_ms) | {"user": user}
        else:
            visible = rolling.visible_relation() + " AS board WHERE 1"
            params = rolling.range_params(org, days) | {"user": user}
        mine = self.ch.query(f"SELECT {order} FROM {visible} AND user_id = %(user)s", params)
        if not mine:
            ranked = self.ch.query(f"SELECT count() FROM {visible}", params)
            return UserRank(user, None, None, _first_count(ranked), [])
        value = int(mine[0][0])
        ((ranked, above),) = self.ch.query(
            f"SELECT count(), countIf({order} > %(value)s OR ({order} = %(value)s "
            f"AND user_id < %(user)s)) FROM {visible}",
            params | {"value": value},
        )
        rank = int(above) + 1
        first = max(1, rank - around)
        entries = self.board(
            org, window, start_ms, rank + around - first + 1, first - 1, metric, days
        )
        return UserRank(user, rank, value, int(ranked), entries)

    def _entries(
        self, org: str, rows: Sequence[tuple[Any, ...]], offset: int
    ) -> list[LeaderboardEntry]:
        """Board rows (`_ENTRY_COLUMNS`) as entries ranked from `offset` + 1, with names."""
        names = people(self.ch, org, [r[0] for r in rows]) if rows else {}
        return [
            LeaderboardEntry(
                offset + i + 1,
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
        self,
        org: str,
        window: WindowName,
        start_ms: int,
        value: str,
        top: int,
        weight: int,
        offset: int = 0,
        metric: str = "score",
    ) -> list[LeaderboardEntry]:
        """The board of one company value: people ranked by counted thanks received that
        carried `value` (`score` = those thanks x `weight`, the org's thanks weight), by
        `metric` (ties by user id; a metric a value board does not have, such as shares,
        is 0 for everyone), `top` from rank `offset` + 1; from kudos.value_thanks as
        kudos.value_scores counts it. Opted-out people never appear. Entries have the
        leaderboard's shape: thanks_received and distinct_thankers are the value's, the
        other metrics 0."""
        column = _VALUE_ORDER.get(_metric_column(metric))
        order = "user_id ASC" if column is None else f"{column} DESC, user_id ASC"
        rows = self.ch.query(
            "SELECT user_id, count() * %(weight)s AS score, count() AS n, "
            "uniqExact(thanker_id) AS thankers FROM kudos.value_thanks FINAL "
            "WHERE org_id = %(org)s AND window = %(window)s AND window_start = %(start)s "
            f"AND `value` = %(value)s AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL}) "
            f"AND {_NOT_REVERSED} "
            f"GROUP BY user_id ORDER BY {order} LIMIT %(offset)s, %(top)s",
            {
                "org": org,
                "window": window,
                "start": ms_to_dt(start_ms),
                "value": value,
                "top": top,
                "offset": offset,
                "weight": weight,
            },
        )
        # As _ENTRY_COLUMNS: the value's thanks and thankers, the other metrics 0.
        return self._entries(org, [(r[0], r[1], 0, 0, r[2], r[3], 0) for r in rows], offset)

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


# What a value board ranks by, per board metric (value_board); any other metric is 0 there.
_VALUE_ORDER: Final = {"score": "score", "thanks_received": "n", "distinct_thankers": "thankers"}

# A value_thanks row whose thank-you the collusion audit took back does not count
# (migration 0024, kudos.value_scores, says the same).
_NOT_REVERSED = (
    "(org_id, user_id, src_partition, src_offset) GLOBAL NOT IN (SELECT org_id, "
    "recipient_id, src_partition, src_offset FROM kudos.reversals "
    "WHERE org_id = %(org)s AND delta < 0)"
)

# One people board's rows, and the columns of its entries (LeaderboardEntry's order).
_BOARD: Final = "org_id = %(org)s AND window = %(window)s AND window_start = %(start)s"
_ENTRY_COLUMNS: Final = ", ".join(("user_id", *BOARD_COLUMNS))


def _metric_column(metric: str) -> str:
    """The kudos.scores column a board ranks by: only a name of BOARD_METRICS reaches SQL."""
    if metric not in BOARD_METRICS:
        raise ValueError(f"not a board metric: {metric!r}")
    return metric


def _first_count(rows: Sequence[tuple[Any, ...]]) -> int:
    """A count() query's answer (0 when a stub backend answers no row)."""
    return int(rows[0][0]) if rows else 0


def _board_params(org: str, window: BoardWindow, start_ms: int) -> dict[str, Any]:
    return {"org": org, "window": window, "start": ms_to_dt(start_ms)}


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
