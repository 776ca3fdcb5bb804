"""The user directory in ClickHouse (`kudos.directory`): writes, and the reads of people,
team and department boards, bridging thanks and give/receive balance.

A person's current state is the row with the highest `version` (their latest message on
`directory.users`), taken with ``argMax(..., version)`` per (org_id, user_id): exact before
merges, on ClickHouse 18.16 and 26.x alike, and on a cluster, where every row of a person is
on one shard. Privacy rules, stated once here and relied on by every reader:

* **Opted out** means: the latest record that is not a tombstone says ``opted_out``. A
  tombstone removes name, team and department but does not lift an opt-out (deleting a
  record is not consent to be shown); only a later record with ``opted_out = false`` does.
  So the table keeps a person's latest record beside their latest tombstone (``deleted``
  is in the sorting key, merges cannot collapse the two); erasing it is `kudos forget`'s.
* Opted-out people appear on no board: not on leaderboards (ranks close up), not in badges,
  not in team or department totals, not in the member counts that decide whether a group
  is shown, and not in bridging counts (on either side). Their thanks still count for the
  people they thanked: the stream is unchanged; only what is shown is filtered.
* An opted-out person's own reads (balance, history, explain) answer exactly as an
  unknown id's do (zeros, no name, no team), so no answer tells who opted out; and they
  are never named in anyone else's explain (streams/domain/explain.py).
* A group (team or department) is shown only with at least `min_size` visible members in
  the directory now (tombstoned and opted-out people are not members).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from schemas.directory import DirectoryRecord
from schemas.times import ms_to_dt, now_utc
from sinks.clickhouse import ClickHouse
from sinks.history import audited_decisions
from sinks.tables import DIRECTORY

DEFAULT_TEAM_MIN_SIZE: Final = 5
GroupBy = Literal["team", "department"]
_NO_END: Final = 2**63 - 1


def current_sql(extra_where: str = "") -> str:
    """Each person's current state in org ``%(org)s``: one row per user_id with
    ``dir_name, dir_team, dir_department, dir_deleted, dir_opted_out`` (prefixed: an alias
    named like a column would shadow it inside the other aggregates)."""
    return (
        "SELECT user_id, argMax(display_name, version) AS dir_name, "
        "argMax(team, version) AS dir_team, argMax(department, version) AS dir_department, "
        "argMax(deleted, version) AS dir_deleted, "
        "argMaxIf(opted_out, version, deleted = 0) AS dir_opted_out "
        f"FROM kudos.directory WHERE org_id = %(org)s {extra_where} GROUP BY user_id"
    )


# The opted-out user ids of org %(org)s. Only people with an opted_out row at all are
# aggregated, so the cost follows the number of opt-outs, not the size of the directory.
# GLOBAL: on a cluster both sides are Distributed tables (a plain IN would be refused).
OPTED_OUT_SQL: Final = (
    "SELECT user_id FROM (SELECT user_id, "
    "argMaxIf(opted_out, version, deleted = 0) AS dir_opted_out FROM kudos.directory "
    "WHERE org_id = %(org)s AND user_id GLOBAL IN "
    "(SELECT user_id FROM kudos.directory WHERE org_id = %(org)s AND opted_out = 1) "
    "GROUP BY user_id) WHERE dir_opted_out = 1"
)
_VISIBLE: Final = "dir_deleted = 0 AND dir_opted_out = 0"
# THANKS decisions of org %(org)s in [%(start)s, %(end)s), one row per decision, with
# `e_counted`: whether each counts after the collusion audit (sinks/history.py).
_AUDITED_THANKS: Final = (
    "SELECT event_id, d_actor AS actor_id, recipient_id, e_counted FROM ("
    + audited_decisions(
        "org_id = %(org)s AND occurred_at_ms >= %(start)s AND occurred_at_ms < %(end)s"
    )
    + ") WHERE d_type = 'THANKS'"
)


@dataclass(frozen=True, slots=True)
class DirectoryRow:
    """A decoded directory message and where it came from."""

    record: DirectoryRecord
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Person:
    user_id: str
    display_name: str | None
    team: str | None
    department: str | None
    opted_out: bool
    deleted: bool

    @property
    def visible(self) -> bool:
        return not self.opted_out


@dataclass(frozen=True, slots=True)
class TeamEntry:
    rank: int
    group: str
    members: int
    score: int
    shares: int
    thanks_given: int
    thanks_received: int
    reactions_received: int


@dataclass(frozen=True, slots=True)
class BridgingEntry:
    team: str
    members: int
    given_across: int
    received_across: int


@dataclass(frozen=True, slots=True)
class Balance:
    user_id: str
    display_name: str | None
    team: str | None
    thanks_given: int
    thanks_received: int

    @property
    def balance(self) -> int:
        """Positive: gives more thanks than they receive."""
        return self.thanks_given - self.thanks_received


def opted_out_users(ch: ClickHouse, org: str, limit: int | None = None) -> list[str]:
    """Opted-out user ids of `org` (at most `limit`, when given)."""
    sql = OPTED_OUT_SQL + (f" LIMIT {int(limit)}" if limit is not None else "")
    return [str(r[0]) for r in ch.query(sql, {"org": org})]


def people(ch: ClickHouse, org: str, users: Sequence[str]) -> dict[str, Person]:
    """Current directory state of these users (those the directory has ever had)."""
    out: dict[str, Person] = {}
    if not users:
        return out
    for user, name, team, department, deleted, opted in ch.query(
        current_sql("AND user_id IN %(users)s"), {"org": org, "users": tuple(sorted(set(users)))}
    ):
        gone = bool(deleted)
        out[str(user)] = Person(
            str(user),
            None if gone else (str(name) or None),
            None if gone else (str(team) or None),
            None if gone else (str(department) or None),
            bool(opted),
            gone,
        )
    return out


class DirectoryStore:
    """Typed access to `kudos.directory` and the boards built on it."""

    def __init__(self, ch: ClickHouse, team_min_size: int = DEFAULT_TEAM_MIN_SIZE) -> None:
        self.ch = ch
        self.team_min_size = team_min_size

    def write(self, rows: Sequence[DirectoryRow]) -> int:
        """One insert; a replay writes the same (key, version) rows again, which collapse."""
        if not rows:
            return 0
        at = now_utc()
        return self.ch.insert(
            DIRECTORY.qualified,
            DIRECTORY.columns,
            [
                (
                    r.record.org_id,
                    r.record.user_id,
                    r.record.display_name or "",
                    r.record.team or "",
                    r.record.department or "",
                    1 if r.record.opted_out else 0,
                    1 if r.record.deleted else 0,
                    r.record.updated_at,
                    r.offset,
                    r.partition,
                    r.offset,
                    at,
                )
                for r in rows
            ],
        )

    def opted_out(self, org: str) -> list[str]:
        return opted_out_users(self.ch, org)

    def people(self, org: str, users: Sequence[str]) -> dict[str, Person]:
        return people(self.ch, org, users)

    def _group_sizes(self, org: str, by: GroupBy) -> dict[str, int]:
        column = "dir_team" if by == "team" else "dir_department"
        return {
            str(g): int(n)
            for g, n in self.ch.query(
                f"SELECT {column}, count() FROM ({current_sql()}) "
                f"WHERE {_VISIBLE} AND {column} != '' GROUP BY {column}",
                {"org": org},
            )
        }

    def team_board(
        self, org: str, window: str, start_ms: int, by: GroupBy, top: int, offset: int = 0
    ) -> list[TeamEntry]:
        """Groups of at least `team_min_size` visible members, ranked by the sum of their
        members' scores in the window (ties by group name), `top` of them from rank
        `offset` + 1 on. Members without points count as members with zeros."""
        column = "dir_team" if by == "team" else "dir_department"
        rows = self.ch.query(
            "SELECT grp, count() AS members, sum(t_score) AS g_score, "
            "sum(t_shares) AS g_shares, sum(t_given) AS g_given, "
            "sum(t_received) AS g_received, sum(t_reactions) AS g_reactions FROM "
            f"(SELECT user_id, {column} AS grp FROM ({current_sql()}) "
            f"WHERE {_VISIBLE} AND grp != '') AS members "
            "ANY LEFT JOIN "
            "(SELECT user_id, argMax(score, version) AS t_score, "
            "argMax(shares, version) AS t_shares, argMax(thanks_given, version) AS t_given, "
            "argMax(thanks_received, version) AS t_received, "
            "argMax(reactions_received, version) AS t_reactions FROM kudos.score_state "
            "WHERE org_id = %(org)s AND window = %(window)s AND window_start = %(start)s "
            "GROUP BY user_id) AS points USING user_id "
            "GROUP BY grp HAVING members >= %(k)s "
            "ORDER BY g_score DESC, grp ASC LIMIT %(offset)s, %(top)s",
            {
                "org": org,
                "window": window,
                "start": ms_to_dt(start_ms),
                "k": self.team_min_size,
                "top": top,
                "offset": offset,
            },
        )
        return [
            TeamEntry(offset + i + 1, str(r[0]), *(int(v) for v in r[1:]))
            for i, r in enumerate(rows)
        ]

    def bridging(self, org: str, start_ms: int, end_ms: int | None) -> list[BridgingEntry]:
        """Counted THANKS in [start_ms, end_ms) between visible people of two different
        known teams, per team: given across and received across. Teams below
        `team_min_size` visible members are not listed (their thanks still count on the
        other side). Ordered by given + received, then team. Thanks count as the collusion
        audit left them (kudos.reversals): reversed ones do not, reinstated ones do."""
        visible_team = f"{_VISIBLE} AND dir_team != ''"
        # ANY LEFT JOIN, then '' for "no visible team": one right row per left row on both
        # engines (current ClickHouse's ANY INNER JOIN also keeps one left row per key).
        pairs = self.ch.query(
            "SELECT a_team, r_team, sum(n) FROM "
            "(SELECT a_team, user_id, n FROM "
            "(SELECT actor_id, recipient_id AS user_id, n FROM "
            "(SELECT actor_id, recipient_id, uniqExact(event_id) AS n FROM "
            f"({_AUDITED_THANKS}) WHERE e_counted = 1 "
            "GROUP BY actor_id, recipient_id)) AS pairs "
            "ANY LEFT JOIN "
            f"(SELECT user_id AS actor_id, dir_team AS a_team FROM ({current_sql()}) "
            f"WHERE {visible_team}) AS actors USING actor_id) AS given "
            "ANY LEFT JOIN "
            f"(SELECT user_id, dir_team AS r_team FROM ({current_sql()}) "
            f"WHERE {visible_team}) AS recipients USING user_id "
            "WHERE a_team != '' AND r_team != '' AND a_team != r_team "
            "GROUP BY a_team, r_team",
            {"org": org, "start": start_ms, "end": _NO_END if end_ms is None else end_ms},
        )
        given: dict[str, int] = {}
        received: dict[str, int] = {}
        for a_team, r_team, n in pairs:
            given[str(a_team)] = given.get(str(a_team), 0) + int(n)
            received[str(r_team)] = received.get(str(r_team), 0) + int(n)
        sizes = self._group_sizes(org, "team")
        entries = [
            BridgingEntry(team, size, given.get(team, 0), received.get(team, 0))
            for team, size in sizes.items()
            if size >= self.team_min_size
        ]
        entries.sort(key=lambda e: (-(e.given_across + e.received_across), e.team))
        return entries

    def balance(self, org: str, window: str, start_ms: int, user: str) -> Balance:
        """Thanks given and received in the window. An opted-out user gets what an unknown
        id gets (zeros, no name, no team): the answer must not tell them apart. Read from
        kudos.score_state, the leaderboard's totals, which hold the collusion audit's
        reversals once the aggregating stage has applied them."""
        person = people(self.ch, org, [user]).get(user)
        if person is not None and person.opted_out:
            return Balance(user, None, None, 0, 0)
        rows = self.ch.query(
            "SELECT argMax(thanks_given, version), argMax(thanks_received, version), count() "
            "FROM kudos.score_state WHERE org_id = %(org)s AND window = %(window)s "
            "AND window_start = %(start)s AND user_id = %(user)s",
            {"org": org, "window": window, "start": ms_to_dt(start_ms), "user": user},
        )
        given, received = (int(rows[0][0]), int(rows[0][1])) if rows and rows[0][2] else (0, 0)
        return Balance(
            user,
            person.display_name if person else None,
            person.team if person else None,
            given,
            received,
        )


def entries_payload(entries: Sequence[Any]) -> list[dict[str, Any]]:
    """Dataclass entries as JSON-ready dicts, fields in declaration order."""
    return [{f: getattr(e, f) for f in e.__slots__} for e in entries]
