"""ClickHouse reads behind the live page (streams/web/static/, streams/web/page.py): the previous
window's ranks, the recent-badges feed, one user's score over consecutive windows, and
whether an org has a team board at all.

Privacy is the directory's (sinks/directory.py): opted-out people are left out of every
read here exactly as `RecognitionStore.leaderboard` and `.badges` leave them out, so the
page can never show them again through a side door (rank history, badge feed, chart); an
opted-out person's own history reads as an unknown id's (zeros, no name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from schemas.times import dt_to_ms, format_rfc3339, ms_to_dt
from sinks.clickhouse import ClickHouse
from sinks.directory import OPTED_OUT_SQL, current_sql, opted_out_users, people

# The previous board is ranked from at most this many of its best rows: a user of the
# current top-N (N <= 1000) who was further down than that has necessarily moved up.
PREVIOUS_DEPTH: Final = 1000
MAX_BADGES: Final = 200
MAX_POINTS: Final = 90


@dataclass(frozen=True, slots=True)
class PreviousRank:
    """Where a user stood on the previous window's board (opted-out people not counted).

    `rank` is None when the user had no points then (`scored` False: new on the board) or
    was below the previous board's first `PREVIOUS_DEPTH` visible rows (`scored` True)."""

    rank: int | None
    scored: bool


@dataclass(frozen=True, slots=True)
class ScorePoint:
    window_start: int
    score: int


@dataclass(frozen=True, slots=True)
class ScoreHistory:
    user_id: str
    display_name: str | None
    points: list[ScorePoint]


class PageData:
    """Typed reads for the live page over any ClickHouse backend (18.16 and 26.x SQL)."""

    def __init__(self, ch: ClickHouse, leader_depth: int, team_min_size: int) -> None:
        self.ch = ch
        self.leader_depth = leader_depth
        self.team_min_size = team_min_size

    def previous_ranks(
        self, org: str, window: str, start_ms: int, users: Sequence[str]
    ) -> dict[str, PreviousRank]:
        """Rank of each of `users` on the board of (org, window, start_ms), ranked as
        /api/leaderboard ranks (score desc, user_id asc, opted-out people skipped)."""
        if not users:
            return {}
        hidden = opted_out_users(self.ch, org, self.leader_depth + 1)
        depth = min(PREVIOUS_DEPTH, self.leader_depth - len(hidden))
        params: dict[str, Any] = {"org": org, "window": window, "start": ms_to_dt(start_ms)}
        if depth >= 1:
            # leader_rows holds every key of any top-D (streams/domain/leaders.py): exact here.
            source, shown = "kudos.leader_rows FINAL", ""
            if hidden:
                shown, params["hidden"] = "AND user_id NOT IN %(hidden)s ", tuple(hidden)
        else:
            depth = PREVIOUS_DEPTH
            source, shown = "kudos.scores", f"AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL}) "
        params["depth"] = depth
        ranked = {
            str(user): i + 1
            for i, (user,) in enumerate(
                self.ch.query(
                    f"SELECT user_id FROM {source} WHERE org_id = %(org)s "
                    "AND window = %(window)s AND window_start = %(start)s "
                    f"{shown}ORDER BY score DESC, user_id ASC LIMIT %(depth)s",
                    params,
                )
            )
        }
        out = {u: PreviousRank(ranked[u], True) for u in users if u in ranked}
        missing = sorted({u for u in users if u not in ranked})
        if missing:
            scored = {
                str(r[0])
                for r in self.ch.query(
                    "SELECT user_id FROM kudos.scores WHERE org_id = %(org)s "
                    "AND window = %(window)s AND window_start = %(start)s "
                    "AND user_id IN %(users)s",
                    {**params, "users": tuple(missing)},
                )
            }
            out.update({u: PreviousRank(None, u in scored) for u in missing})
        return out

    def recent_badges(
        self, org: str, limit: int, user: str | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The newest badge awards of the org (of one user), `limit` of them from `offset`
        on, newest first, with the holder's display name; opted-out people's awards are
        never returned."""
        sql = (
            "SELECT user_id, badge, period_start, awarded_at FROM kudos.badge_awards "
            f"WHERE org_id = %(org)s AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL})"
        )
        params: dict[str, Any] = {
            "org": org,
            "limit": min(max(limit, 1), MAX_BADGES + 1),
            "offset": max(offset, 0),
        }
        if user is not None:
            sql += " AND user_id = %(user)s"
            params["user"] = user
        sql += " ORDER BY awarded_at DESC, user_id, badge, period_start LIMIT %(offset)s, %(limit)s"
        rows = self.ch.query(sql, params)
        names = people(self.ch, org, [str(r[0]) for r in rows]) if rows else {}
        return [
            {
                "org": org,
                "user_id": str(r[0]),
                "display_name": names[r[0]].display_name if r[0] in names else None,
                "badge": str(r[1]),
                "period_start": format_rfc3339(dt_to_ms(r[2])),
                "awarded_at": format_rfc3339(dt_to_ms(r[3])),
            }
            for r in rows
        ]

    def score_history(
        self, org: str, window: str, user: str, starts: Sequence[int]
    ) -> ScoreHistory:
        """The user's score in each window starting at `starts` (0 where they had no
        points). An opted-out user gets what an unknown id gets: zeros, no name."""
        person = people(self.ch, org, [user]).get(user)
        if person is not None and person.opted_out:
            return ScoreHistory(user, None, [ScorePoint(s, 0) for s in starts])
        scores: dict[int, int] = {}
        if starts:
            for start, score in self.ch.query(
                "SELECT window_start, score FROM kudos.scores WHERE org_id = %(org)s "
                "AND window = %(window)s AND user_id = %(user)s "
                "AND window_start IN %(starts)s",
                {
                    "org": org,
                    "window": window,
                    "user": user,
                    "starts": tuple(ms_to_dt(s) for s in starts),
                },
            ):
                scores[dt_to_ms(start)] = int(score)
        return ScoreHistory(
            user,
            person.display_name if person else None,
            [ScorePoint(s, scores.get(s, 0)) for s in starts],
        )

    def has_points(self, org: str) -> bool:
        """Whether the org has any points at all (the live feed starts no poller for an org
        without: streams/web/page.py). One primary-key lookup."""
        rows = self.ch.query(
            "SELECT count() FROM (SELECT 1 FROM kudos.score_state WHERE org_id = %(org)s LIMIT 1)",
            {"org": org},
        )
        return bool(rows and int(rows[0][0]))

    def has_teams(self, org: str) -> bool:
        """Whether any team has enough visible members to be shown on the team board."""
        rows = self.ch.query(
            "SELECT count() FROM (SELECT dir_team, count() AS members FROM "
            f"({current_sql()}) WHERE dir_deleted = 0 AND dir_opted_out = 0 "
            "AND dir_team != '' GROUP BY dir_team) WHERE members >= %(k)s",
            {"org": org, "k": self.team_min_size},
        )
        return bool(rows and int(rows[0][0]))
