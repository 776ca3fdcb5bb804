"""The words that the topics, the tables, the rules and the API share, defined once.

A decision's `reason` is stored in `kudos.decisions` and shown by explain; a metric names
a column of `kudos.score_state` and an effect; a window name is a value of the `window`
column and of the API's `window=`. Everything above `schemas/` takes them from here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal, get_args


class Reason(StrEnum):
    """Why a decision gave a point or did not (`kudos.decisions.reason`)."""

    COUNTED = "counted"
    DUPLICATE = "duplicate"
    SELF = "self"
    PRIVATE = "private"
    PAIR_DAILY_CAP = "pair_daily_cap"
    GIVER_BUDGET = "giver_budget"
    LATE = "late"
    FUTURE = "future"
    INVALID = "invalid"
    # A THANKS or REACTION to more distinct people than the org's max_recipients_per_event:
    # refused whole (one decision, recipient ''), nothing counted for anyone.
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    # Never decided by the deciding stage: a counted THANKS reversed by the weekly
    # collusion audit (streams/domain/collusion.py), recorded in kudos.reversals.
    COLLUSION = "collusion"


# The reason of a kudos.decisions row that holds no event: a message that could not be
# decoded, or a poison message (its `error` says which).
UNDECODABLE: Final = "undecodable"


class Metric(StrEnum):
    """What one point adds to: a column of the window totals."""

    SHARES = "shares"
    THANKS_GIVEN = "thanks_given"
    THANKS_RECEIVED = "thanks_received"
    REACTIONS_RECEIVED = "reactions_received"


WindowName = Literal["hour", "day", "week", "month", "quarter", "year", "all"]
WINDOWS: Final[tuple[WindowName, ...]] = (
    "hour",
    "day",
    "week",
    "month",
    "quarter",
    "year",
    "all",
)

# Rolling boards: the org-local days ending with the day of `at`, inclusive
# (sinks/rolling.py). Not windows of kudos.score_state: sums of its day windows.
RollingName = Literal["last_7d", "last_30d", "last_90d"]
ROLLING_DAYS: Final[dict[RollingName, int]] = {"last_7d": 7, "last_30d": 30, "last_90d": 90}
BoardWindow = WindowName | RollingName
# What `window=` takes on the people boards (/api/leaderboard, /rank, `kudos leaderboard`).
BOARD_WINDOWS: Final[tuple[BoardWindow, ...]] = (*WINDOWS, *ROLLING_DAYS)

# What a people board ranks by (`metric=` of /api/leaderboard and /api/users/{user}/rank,
# `kudos leaderboard --metric`): a column of kudos.scores; ties by user id ascending.
BoardMetric = Literal[
    "score",
    "thanks_received",
    "thanks_given",
    "shares",
    "reactions_received",
    "distinct_thankers",
]
BOARD_METRICS: Final[tuple[BoardMetric, ...]] = get_args(BoardMetric)

# A user's score over time (/api/users/{user}/history) steps through closed windows.
HISTORY_WINDOWS: Final[tuple[WindowName, ...]] = WINDOWS[:-1]

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS

# One window of one user: (org, window, window start in epoch ms, user) -- a row of
# kudos.score_state, and what the aggregating stage holds totals for.
WindowKey = tuple[str, WindowName, int, str]
# One board: (org, window, window start in epoch ms).
BoardKey = tuple[str, WindowName, int]

# The API's largest `top`; the boards in kudos.leader_rows hold every key of any top-N with
# N <= DEPTH (streams/domain/leaders.py).
DEPTH: Final = 1000
