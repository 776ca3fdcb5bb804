"""The kudos tables the pipeline writes: each one's name and columns, in insert order.

Adding a column: a numbered migration (sinks/migrations/) + this module. Every writer, the
erasure's `INSERT ... SELECT`, the benchmarks and the tests take their column lists from
here, and tests/sinks/test_tables.py checks each table below against the migrated
database's `system.columns`.

Imports nothing of kudos: any layer (sinks, streams, bench, tests) can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

DATABASE: Final = "kudos"
_IDENTIFIER: Final = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Table:
    """A table of database `kudos`: its name and its writable columns in insert order."""

    name: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        # Plain lowercase identifiers only: backquoting them (column_list) needs no escaping.
        for identifier in (self.name, *self.columns):
            if not _IDENTIFIER.match(identifier):
                raise ValueError(f"not a plain identifier: {identifier!r}")
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise ValueError(f"{self.name}: columns must be distinct and not empty")

    @property
    def qualified(self) -> str:
        """`kudos.<name>`, as `ClickHouse.insert` and SQL text name it."""
        return f"{DATABASE}.{self.name}"

    def column_list(self) -> str:
        """The columns for SQL text, each backquoted (`window` is a keyword in current
        ClickHouse), comma-separated: `org_id`, `window`, ..."""
        return ", ".join(f"`{c}`" for c in self.columns)


DECISIONS: Final = Table(
    "decisions",
    (
        "org_id",
        "event_id",
        "event_type",
        "actor_id",
        "recipient_id",
        "counted",
        "reason",
        "rule_version",
        "occurred_at",
        "occurred_at_ms",
        "stream_time_ms",
        "source",
        "channel",
        "visibility",
        "src_topic",
        "src_partition",
        "src_offset",
        "decided_at",
        "error",  # 0007
    ),
)

# A window key's totals and high-water marks (0002): all of kudos.leader_rows (0008), and
# the first columns of kudos.score_state. The aggregating stage cuts its score_state rows
# to these for leader_rows, and migration 0009 and `sinks.erase.rebuild_org_boards` copy
# them by name from score_state to leader_rows.
_WINDOW_TOTALS: Final = (
    "org_id",
    "window",
    "window_start",
    "user_id",
    "shares",
    "thanks_given",
    "thanks_received",
    "distinct_thankers",
    "reactions_received",
    "score",
    "hwm_partitions",
    "hwm_offsets",
    "version",
    "updated_at",
)
SCORE_STATE: Final = Table(
    "score_state",
    (*_WINDOW_TOTALS, "decay_value", "decay_at_ms", "decay_half_life_s"),  # 0011-0013
)
LEADER_ROWS: Final = Table("leader_rows", _WINDOW_TOTALS)
THANKERS: Final = Table("thankers", ("org_id", "window", "window_start", "user_id", "thanker_id"))
BADGE_AWARD_ROWS: Final = Table(
    "badge_award_rows",
    ("org_id", "user_id", "badge", "period_start", "awarded_at", "rule_version", "evidence"),
)
DIRECTORY: Final = Table(
    "directory",
    (
        "org_id",
        "user_id",
        "display_name",
        "team",
        "department",
        "opted_out",
        "deleted",
        "updated_at_ms",
        "version",
        "src_partition",
        "src_offset",
        "stored_at",
    ),
)
REPLAY_SCORES: Final = Table(
    "replay_scores",
    (
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
    ),
)
ERASURES: Final = Table("erasures", ("request_id", "org_id", "rows_touched", "erased_at"))
REVERSALS: Final = Table(
    "reversals",
    (
        "org_id",
        "week_start",
        "event_id",
        "actor_id",
        "recipient_id",
        "src_topic",
        "src_partition",
        "src_offset",
        "occurred_at_ms",
        "was",
        "now",
        "delta",
        "rule",
        "group_members",
        "rule_version",
        "drop_thanker",
        "audited_at",
    ),
)
AUDITS: Final = Table(
    "audits",
    (
        "org_id",
        "week_start",
        "week_end_ms",
        "step",
        "part",
        "reversed",
        "reinstated",
        "groups",
        "at",
    ),
)
DAY_SCORES: Final = Table(  # 0020: day windows sorted by user, for rolling boards
    "day_scores",
    (
        "org_id",
        "user_id",
        "window_start",
        "shares",
        "thanks_given",
        "thanks_received",
        "distinct_thankers",
        "reactions_received",
        "score",
        "version",
    ),
)
STREAM_TIMES: Final = Table("stream_times", ("src_topic", "src_partition", "stream_time_ms", "at"))
# One row per counted thanks received, value it carried and window (0023); kudos.value_scores
# (0024) counts them.
VALUE_THANKS: Final = Table(
    "value_thanks",
    (
        "org_id",
        "window",
        "window_start",
        "value",
        "user_id",
        "thanker_id",
        "src_partition",
        "src_offset",
    ),
)

# What a people board's entries show of each person, after user_id (LeaderboardEntry's
# order): columns of kudos.scores, and of every rolling relation (sinks/rolling.py).
BOARD_COLUMNS: Final = (
    "score",
    "shares",
    "thanks_given",
    "thanks_received",
    "distinct_thankers",
    "reactions_received",
)

# Every table above, for the schema test.
ALL: Final = (
    DECISIONS,
    SCORE_STATE,
    LEADER_ROWS,
    THANKERS,
    BADGE_AWARD_ROWS,
    DIRECTORY,
    REPLAY_SCORES,
    ERASURES,
    REVERSALS,
    AUDITS,
    STREAM_TIMES,
    DAY_SCORES,
    VALUE_THANKS,
)
