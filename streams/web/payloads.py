"""The bodies the API and the live page share: people boards (with rank changes), team
boards and pages of badge awards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.times import format_rfc3339
from schemas.vocabulary import BoardMetric, BoardWindow, WindowName
from sinks.pagedata import PreviousRank
from sinks.store import LeaderboardEntry, UserRank
from streams.domain.explain import Page

Movement = str  # "up" | "down" | "same" | "new"


def entry_payload(e: LeaderboardEntry) -> dict[str, Any]:
    """One entry of a people board (/api/leaderboard, /rank, the live page)."""
    return {
        "rank": e.rank,
        "user_id": e.user_id,
        "display_name": e.display_name,
        "score": e.score,
        "shares": e.shares,
        "thanks_given": e.thanks_given,
        "thanks_received": e.thanks_received,
        "distinct_thankers": e.distinct_thankers,
        "reactions_received": e.reactions_received,
    }


def leaderboard_payload(
    org: str, window: BoardWindow, start_ms: int, entries: list[LeaderboardEntry]
) -> dict[str, Any]:
    return {
        "org": org,
        "window": window,
        "window_start": format_rfc3339(start_ms),
        "entries": [entry_payload(e) for e in entries],
    }


def rank_payload(
    org: str, window: BoardWindow, start_ms: int, metric: BoardMetric, place: UserRank
) -> dict[str, Any]:
    """/api/users/{user}/rank: `score` is the user's value of `metric` (their score for
    metric=score); `rank` and `score` are null when the user is not on the board."""
    return {
        "org": org,
        "window": window,
        "window_start": format_rfc3339(start_ms),
        "metric": metric,
        "user_id": place.user_id,
        "rank": place.rank,
        "score": place.value,
        "of": place.of,
        "entries": [entry_payload(e) for e in place.entries],
    }


def value_board_payload(
    org: str, window: BoardWindow, start_ms: int, value: str, entries: list[LeaderboardEntry]
) -> dict[str, Any]:
    """`leaderboard_payload` of a company value's board: the same, with `value`."""
    body = leaderboard_payload(org, window, start_ms, entries)
    return {
        "org": org,
        "window": window,
        "window_start": body["window_start"],
        "value": value,
        "entries": body["entries"],
    }


def movement(rank: int, previous: PreviousRank | None) -> Movement | None:
    """How a rank moved since the previous window: None when there is no previous window."""
    if previous is None:
        return None
    if previous.rank is None:
        # Below the previous board's depth (>= this rank): up; no points then: new.
        return "up" if previous.scored else "new"
    return "up" if previous.rank > rank else "down" if previous.rank < rank else "same"


def changes_payload(
    org: str,
    window: WindowName,
    start_ms: int,
    previous_start: int | None,
    entries: list[LeaderboardEntry],
    previous: dict[str, PreviousRank],
) -> dict[str, Any]:
    """/api/leaderboard's body, plus where each entry stood in the previous window."""
    body = leaderboard_payload(org, window, start_ms, entries)
    body["previous_window_start"] = (
        None if previous_start is None else format_rfc3339(previous_start)
    )
    for entry in body["entries"]:
        before = previous.get(entry["user_id"]) if previous_start is not None else None
        entry["previous_rank"] = before.rank if before else None
        entry["movement"] = movement(entry["rank"], before)
    return body


def team_board_payload(
    org: str,
    window: WindowName,
    start_ms: int,
    by: str,
    min_members: int,
    entries: Sequence[Any],
    offset: int = 0,
    next_offset: int | None = None,
) -> dict[str, Any]:
    """The body of /api/teams/leaderboard (also the live page's team board)."""
    return {
        "org": org,
        "window": window,
        "window_start": format_rfc3339(start_ms),
        "by": by,
        "min_members": min_members,
        "offset": offset,
        "next_offset": next_offset,
        "entries": [
            {
                "rank": e.rank,
                "group": e.group,
                "members": e.members,
                "score": e.score,
                "shares": e.shares,
                "thanks_given": e.thanks_given,
                "thanks_received": e.thanks_received,
                "reactions_received": e.reactions_received,
            }
            for e in entries
        ],
    }


def badges_payload(
    org: str, user: str | None, rows: Sequence[dict[str, Any]], page: Page
) -> dict[str, Any]:
    """/api/badges and /api/badges/recent: one page of awards (`rows` holds up to
    `page.limit` + 1 of them: the extra one says that more follow)."""
    return {
        "org": org,
        "user": user,
        "badges": list(rows[: page.limit]),
        "limit": page.limit,
        "offset": page.offset,
        "next_offset": page.next_offset(len(rows) > page.limit),
    }
