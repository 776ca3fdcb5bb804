"""Rolling boards (`last_7d`, `last_30d`, `last_90d`) read from ClickHouse: sums of the
day windows of `kudos.score_state`, `distinct_thankers` distinct over the range from
`kudos.thankers`.

A rolling window of N days is the org-local days ending with the day of `at`
(inclusive; `streams.domain.windows.rolling_days`); every metric is the sum of the user's
day windows over those days, except `distinct_thankers`, distinct over the whole range.
Every metric but the score, and the score when the day boards cannot prove the top, is
ranked over `rolling_relation`: one row per user with points in the range, summed in
ClickHouse. BI tools read the same relation (README, "BI tables": the documented query).

Why the top-N by score can be read from `kudos.leader_rows` (the threshold algorithm of
Fagin, Lotem and Naor, on the day boards; streams/domain/leaders.py says what the rows
hold):

* A day board with fewer than `depth` rows in leader_rows holds every user with points
  that day (its writers' thresholds are 0 until `depth` users are stored). One with at
  least `depth` rows holds every user whose day score is >= its `depth`-th stored score
  `b_d`; anyone missing scores less than `b_d` that day.
* So a user missing from every day board sums to less than `floor = sum(b_d)`, and a user
  seen on some days sums to at least `lower` (their stored day scores) and at most
  `upper` (the sum over the days of max(stored, b_d)). A stored row may be stale, lower
  than the key's score now, but only for a key that stopped being written because it fell
  below its board's threshold, so below `b_d`.
* With `need = offset + top`, let `lambda` be the `need`-th largest `lower` of the visible
  users seen. Whoever has `upper < lambda` ranks below at least `need` people, so only the
  users with `upper >= lambda` (usually a few dozen) need exact sums (`Candidates`).
* A candidate's exact sum is its `lower` when each of its rows on a full day board is
  >= `b_d` (so not stale); only the others are summed from `kudos.day_scores`
  (migration 0020: day windows sorted by user, so a few small reads).
* If the `need`-th exact sum among them is >= `floor`, the unseen rank below too, and the
  board is exact (`settle`). Otherwise (flat boards, a small `depth`), or when too many
  users would need exact sums, the caller sums every user's days instead.

It is exact whenever the day boards are (the same caveat as theirs: after a collusion audit
until the org's boards are rebuilt). ClickHouse computes the bounds and the candidates
(`_CANDIDATES`); tests/sinks/test_rolling.py holds the same computation in plain Python.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from schemas.times import ms_to_dt
from sinks.clickhouse import ClickHouse
from sinks.directory import OPTED_OUT_SQL
from sinks.tables import BOARD_COLUMNS

# More users than this needing exact sums: sum every user's days instead.
MAX_RESOLVE: Final = 20_000


def day_bound(rows: int, kth: int, depth: int) -> int:
    """`b_d` of a day board with `rows` leader rows whose `depth`-th highest score is
    `kth`: more than the day score of anyone missing (module doc); 0 when it holds
    everyone with points."""
    return kth if rows >= depth else 0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A user seen on some day board: `lower` the sum of their stored day scores;
    `exact` when that is their sum (every full day board holds them at >= `b_d`, so their
    rows are not stale, and the others hold every user with points)."""

    user: str
    lower: int
    exact: bool


@dataclass(frozen=True, slots=True)
class Candidates:
    """The users whose exact sums decide a rolling top-`need` (`upper >= lambda`)."""

    users: list[Candidate]
    floor: int  # every user missing from all day boards sums to less
    complete: bool  # no day board is full: every user with points is among `users`
    need: int


def settle(found: Candidates, sums: Mapping[str, int]) -> list[str] | None:
    """The top `need` users, best first (ties by user id), from the candidates' exact
    sums; None when the day boards cannot prove it (module doc)."""
    ranked = sorted((c.user for c in found.users), key=lambda u: (-sums.get(u, 0), u))
    ranked = ranked[: found.need]
    if found.complete:
        return ranked
    if len(ranked) < found.need or sums.get(ranked[-1], 0) < found.floor:
        return None
    return ranked


_SUMMED: Final = tuple(c for c in BOARD_COLUMNS if c != "distinct_thankers")
_DAYS: Final = "org_id = %(org)s AND window = 'day' AND window_start IN %(days)s"


def rolling_relation(users: str = "") -> str:
    """A subquery: (user_id, *BOARD_COLUMNS) of every user with a day window in the range
    (parameters `org`, `days`), or only of `users`, an SQL condition on `user_id`. The
    condition is inside the reads: 18.16 pushes no predicate into a subquery."""
    where = f"{_DAYS} AND user_id {users}" if users else _DAYS
    sums = ", ".join(f"sum({c}) AS sum_{c}" for c in _SUMMED)
    columns = ", ".join(c if c == "distinct_thankers" else f"sum_{c} AS {c}" for c in BOARD_COLUMNS)
    return (
        f"(SELECT user_id, {columns} FROM "
        f"(SELECT user_id, {sums} FROM kudos.score_state FINAL WHERE {where} "
        "GROUP BY user_id) AS sums GLOBAL ANY LEFT JOIN "
        "(SELECT user_id, uniqExact(thanker_id) AS distinct_thankers FROM kudos.thankers "
        f"WHERE {where} GROUP BY user_id) AS thanked USING user_id)"
    )


def visible_relation() -> str:
    """`rolling_relation` without opted-out people: the board that ranks count over."""
    return rolling_relation(f"GLOBAL NOT IN ({OPTED_OUT_SQL})")


def range_params(org: str, days: Sequence[int]) -> dict[str, Any]:
    return {"org": org, "days": tuple(ms_to_dt(d) for d in days)}


def day_bounds(ch: ClickHouse, org: str, days: Sequence[int], depth: int) -> list[tuple[int, bool]]:
    """(`b_d`, whether the board is full) of each day's board in leader_rows, oldest first."""
    found = {
        int(start): (int(rows), int(kth))
        for start, rows, kth in ch.query(
            "SELECT toUInt64(toUnixTimestamp(window_start)) * 1000, count(), "
            "arrayElement(arrayReverseSort(groupArray(score)), %(depth)s) "
            f"FROM kudos.leader_rows FINAL WHERE {_DAYS} GROUP BY window_start",
            range_params(org, days) | {"depth": depth},
        )
    }
    out = []
    for day in days:
        rows, kth = found.get(day, (0, 0))
        out.append((day_bound(rows, kth, depth), rows >= depth))
    return out


# Per user seen on the day boards (parameters: `starts` in seconds, each day's `bounds`
# and `fulls` (0/1), `floor`, `need`, `limit`): the stored sum (`lower`), how many full
# days hold them at >= b_d (`exact_days`), and the summed columns; only users whose
# upper bound, floor + sum(max(0, score - b_d)), reaches the need-th largest lower.
_SEEN: Final = (
    f"FROM kudos.leader_rows FINAL WHERE {_DAYS} AND user_id GLOBAL NOT IN ({OPTED_OUT_SQL})"
)
_BOUND: Final = (
    "transform(toInt64(toUnixTimestamp(window_start)), %(starts)s, %(bounds)s, toInt64(0))"
)
_FULL: Final = (
    "transform(toInt64(toUnixTimestamp(window_start)), %(starts)s, %(fulls)s, toInt64(0))"
)
_CANDIDATES: Final = (
    "SELECT user_id, lower, exact_days, "
    + ", ".join(f"sum_{c}" for c in _SUMMED)
    + " FROM (SELECT user_id, sum(score) AS lower, "
    f"sum(greatest(score - {_BOUND}, toInt64(0))) AS above, "
    f"countIf({_FULL} = 1 AND score >= {_BOUND}) AS exact_days, "
    + ", ".join(f"sum({c}) AS sum_{c}" for c in _SUMMED)
    + f" {_SEEN} GROUP BY user_id) WHERE above + %(floor)s >= "
    "(SELECT if(count() < %(need)s, toInt64(-1), toInt64(min(seen))) FROM "
    f"(SELECT sum(score) AS seen {_SEEN} GROUP BY user_id ORDER BY seen DESC LIMIT %(need)s)) "
    "LIMIT %(limit)s"
)


def candidates(
    ch: ClickHouse, org: str, days: Sequence[int], depth: int, need: int
) -> tuple[Candidates, dict[str, tuple[int, ...]]] | None:
    """The candidates of a rolling top-`need` (streams/domain/rolling.py), and the summed
    columns (`_SUMMED`) of the exact ones; None when there are more than MAX_RESOLVE."""
    bounds = day_bounds(ch, org, days, depth)
    params = range_params(org, days) | {
        "starts": [d // 1000 for d in days],
        "bounds": [b for b, _ in bounds],
        "fulls": [int(full) for _, full in bounds],
        "floor": sum(b for b, _ in bounds),
        "need": need,
        "limit": MAX_RESOLVE + 1,
    }
    rows = ch.query(_CANDIDATES, params)
    if len(rows) > MAX_RESOLVE:
        return None
    fulls = sum(full for _, full in bounds)
    found = [Candidate(str(r[0]), int(r[1]), int(r[2]) == fulls) for r in rows]
    sums = {
        c.user: tuple(int(v) for v in r[3:]) for r, c in zip(rows, found, strict=True) if c.exact
    }
    complete = fulls == 0
    return Candidates(found, params["floor"], complete, need), sums


def thanker_counts(
    ch: ClickHouse, org: str, days: Sequence[int], users: Collection[str]
) -> dict[str, int]:
    """Distinct thankers of each of these users over the range."""
    if not users:
        return {}
    rows = ch.query(
        "SELECT user_id, uniqExact(thanker_id) FROM kudos.thankers "
        f"WHERE {_DAYS} AND user_id IN %(users)s GROUP BY user_id",
        range_params(org, days) | {"users": tuple(users)},
    )
    return {str(u): int(n) for u, n in rows}


def user_rows(
    ch: ClickHouse, org: str, days: Sequence[int], users: Collection[str]
) -> dict[str, tuple[int, ...]]:
    """(user_id -> BOARD_COLUMNS) of a few users over the range (absent: no points), from
    kudos.day_scores (sorted by user: a few small ranges)."""
    if not users:
        return {}
    sums = ", ".join(f"sum({c})" for c in _SUMMED)
    rows = ch.query(
        f"SELECT user_id, {sums} FROM kudos.day_scores FINAL WHERE org_id = %(org)s "
        "AND user_id IN %(users)s AND window_start IN %(days)s GROUP BY user_id",
        range_params(org, days) | {"users": tuple(users)},
    )
    thanked = thanker_counts(ch, org, days, users)
    return {
        str(r[0]): _board_row(
            dict(zip(_SUMMED, map(int, r[1:]), strict=True)), thanked.get(str(r[0]), 0)
        )
        for r in rows
    }


def _board_row(summed: dict[str, int], distinct_thankers: int) -> tuple[int, ...]:
    """BOARD_COLUMNS from the summed ones and the distinct thankers."""
    return tuple(
        distinct_thankers if c == "distinct_thankers" else summed[c] for c in BOARD_COLUMNS
    )


def full_board(
    ch: ClickHouse, org: str, days: Sequence[int], top: int, offset: int, metric: str
) -> list[tuple[Any, ...]]:
    """(user_id, *BOARD_COLUMNS) ranked by `metric`, ties by user id, without opted-out
    people: every user's days summed."""
    return ch.query(
        f"SELECT user_id, {', '.join(BOARD_COLUMNS)} FROM "
        + visible_relation()
        + f" ORDER BY {metric} DESC, user_id ASC LIMIT %(offset)s, %(top)s",
        range_params(org, days) | {"top": top, "offset": offset},
    )


def score_board(
    ch: ClickHouse, org: str, days: Sequence[int], top: int, offset: int, depth: int
) -> list[tuple[Any, ...]]:
    """`full_board` by score, from the day boards' leader rows when they prove it."""
    planned = candidates(ch, org, days, depth, offset + top)
    if planned is not None:
        found, summed = planned
        inexact = [c.user for c in found.users if not c.exact]
        stored = user_rows(ch, org, days, inexact)
        sums = {u: r[0] for u, r in summed.items()} | {u: r[0] for u, r in stored.items()}
        ranked = settle(found, sums)
        if ranked is not None:
            shown = ranked[offset:]
            thanked = thanker_counts(ch, org, days, [u for u in shown if u in summed])
            return [_entry_row(u, summed, stored, thanked) for u in shown]
    return full_board(ch, org, days, top, offset, "score")


def _entry_row(
    user: str,
    summed: dict[str, tuple[int, ...]],
    stored: dict[str, tuple[int, ...]],
    thanked: dict[str, int],
) -> tuple[Any, ...]:
    """(user_id, *BOARD_COLUMNS) of a ranked user, from whichever read summed them."""
    if user in stored:
        return (user, *stored[user])
    return (user, *_board_row(dict(zip(_SUMMED, summed[user], strict=True)), thanked.get(user, 0)))
