"""What the pipeline reads from and writes to ClickHouse, table by table.

Writers take typed rows from the rules and insert them with the driver's column insert; they
never format values into SQL. Loaders rebuild the explicit rule state from what is stored,
which is how a restarted or rebalanced worker carries on exactly where the stored data ends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from sinks.clickhouse import ClickHouse, mutation_chunks
from sinks.erase import mutate
from sinks.tables import BADGE_AWARD_ROWS, DECISIONS, LEADER_ROWS, SCORE_STATE, THANKERS
from streams.leaders import DEPTH, BoardKey
from streams.rules import (
    NOT_SEEN,
    RULE_VERSION,
    STATE_MARGIN_MS,
    Decision,
    PartitionState,
    Reason,
    RulesLookup,
    giver_periods_at,
    remember,
    retained_pair,
)
from streams.scorebook import BadgeAward, ScoreBook, WindowKey, WindowTotals
from streams.windows import WEEK_MS, WindowName

UNDECODABLE: Final = "undecodable"
# Reasons after which an event id counts as seen (streams.rules.NOT_SEEN: it passed
# invalid/too_many_recipients/future/late).
_SEEN_REASONS: Final = tuple(r.value for r in Reason if r not in NOT_SEEN)


def ms_to_dt(ms: int) -> datetime:
    if ms % 1000 == 0:  # window starts, whole seconds: a few distinct values, cached
        return second_to_dt(ms // 1000)
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


@lru_cache(maxsize=65536)
def second_to_dt(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC).replace(tzinfo=None)


def dt_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def now_utc() -> datetime:
    return datetime.now(tz=UTC).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be decoded, recorded beside the batch's decisions."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    stream_time_ms: int


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

    def write_decisions(
        self, decisions: Sequence[Decision], dead: Sequence[DeadLetter] = ()
    ) -> int:
        """One insert per batch; one decided_at, so one part: a batch is stored whole or not."""
        if not decisions and not dead:
            return 0
        decided_at = now_utc()
        rows: list[tuple[Any, ...]] = []
        for d in decisions:
            e = d.record.event
            rows.append(
                (
                    e.org_id,
                    e.event_id,
                    e.event_type.value,
                    e.actor_id,
                    d.recipient_id,
                    1 if d.counted else 0,
                    d.reason.value,
                    d.rule_version,
                    second_to_dt(e.occurred_at // 1000),  # DateTime holds seconds
                    e.occurred_at,
                    d.stream_time_ms,
                    e.source,
                    e.channel or "",
                    e.visibility.value,
                    d.record.topic,
                    d.record.partition,
                    d.record.offset,
                    decided_at,
                    "",
                )
            )
        epoch = ms_to_dt(0)
        for x in dead:
            rows.append(
                (
                    "",
                    "",
                    "",
                    "",
                    "",
                    0,
                    UNDECODABLE,
                    RULE_VERSION,
                    epoch,
                    0,
                    x.stream_time_ms,
                    "",
                    "",
                    "",
                    x.topic,
                    x.partition,
                    x.offset,
                    decided_at,
                    f"{x.reason}: {x.detail}"[:2000],
                )
            )
        return self.ch.insert(DECISIONS.qualified, DECISIONS.columns, rows)

    def load_partition_state(
        self, topic: str, partition: int, rules_for: RulesLookup
    ) -> PartitionState:
        """Rebuild the deciding state of one input partition from its stored decisions."""
        state = PartitionState()
        head = self.ch.query(
            "SELECT max(src_offset), max(stream_time_ms), count() FROM kudos.decisions "
            "WHERE src_topic = %(topic)s AND src_partition = %(p)s",
            {"topic": topic, "p": partition},
        )
        if not head or not head[0][2]:
            return state
        max_offset, stream_time, _ = head[0]
        state.next_offset = int(max_offset) + 1
        state.stream_time_ms = int(stream_time)
        horizon = int(stream_time) - rules_for.max_grace_ms() - STATE_MARGIN_MS
        if rules_for.any_weekly_budget():
            horizon -= WEEK_MS  # a week's budget counts from the week's start
        rows = self.ch.query(
            "SELECT org_id, event_id, event_type, actor_id, recipient_id, reason, occurred_at_ms "
            "FROM kudos.decisions WHERE src_topic = %(topic)s AND src_partition = %(p)s "
            "AND occurred_at_ms >= %(horizon)s AND reason IN %(reasons)s",
            {"topic": topic, "p": partition, "horizon": horizon, "reasons": _SEEN_REASONS},
        )
        # Sets of (event, recipient): a decision stored twice (a replayed insert) counts once.
        counted_pairs: dict[tuple[str, str, str, int], set[str]] = defaultdict(set)
        given: dict[tuple[str, str, str, int], set[tuple[str, str]]] = defaultdict(set)
        for org, event_id, event_type, actor, recipient, reason, occurred in rows:
            at = int(occurred)
            remember(state, org, event_id, at)
            if event_type == "THANKS" and reason == Reason.COUNTED.value:
                rules = rules_for(org)
                day = rules.calendar.day_start(at)
                counted_pairs[(org, actor, recipient, day)].add(event_id)
                for period in giver_periods_at(org, actor, at, rules):
                    given[period].add((event_id, recipient))
        state.pair_counts = {retained_pair(k): len(v) for k, v in counted_pairs.items()}
        state.giver_counts = {k: len(v) for k, v in given.items()}
        return state

    # --- aggregating stage -------------------------------------------------------------

    def load_keys(self, keys: Iterable[WindowKey], book: ScoreBook) -> None:
        """Load the stored totals, thankers and awarded badges of keys not yet in `book`."""
        missing = [k for k in keys if k not in book.totals]
        by_org: dict[str, tuple[set[str], set[int]]] = defaultdict(lambda: (set(), set()))
        for org, _window, start, user in missing:
            users, starts = by_org[org]
            users.add(user)
            starts.add(start)
        wanted = set(missing)
        # Build aside and merge at the end: a failed load leaves `book` untouched for a retry.
        loaded = {k: WindowTotals() for k in missing}
        awarded: set[tuple[str, str, str, int]] = set()
        users_loaded: set[tuple[str, str]] = set()
        for org, (users, starts) in by_org.items():
            # One statement per table and org, whatever the number of users: the ids are
            # bound (sinks/clickhouse.py), not written into the SQL text.
            ordered = sorted(users)
            self._load_org(org, ordered, starts, wanted, loaded)
            new_users = [u for u in ordered if (org, u) not in book.users_loaded]
            if new_users:
                for user, badge, period in self.ch.query(
                    "SELECT user_id, badge, period_start FROM kudos.badge_award_rows "
                    "WHERE org_id = %(org)s AND user_id IN %(users)s",
                    {"org": org, "users": tuple(new_users)},
                ):
                    awarded.add((org, user, str(badge), dt_to_ms(period)))
                users_loaded.update((org, u) for u in new_users)
        book.totals.update(loaded)
        book.awarded |= awarded
        book.users_loaded |= users_loaded

    def _load_org(
        self,
        org: str,
        users: Sequence[str],
        starts: set[int],
        wanted: set[WindowKey],
        loaded: dict[WindowKey, WindowTotals],
    ) -> None:
        params = {
            "org": org,
            "users": tuple(users),
            "starts": tuple(ms_to_dt(s) for s in sorted(starts)),
        }
        best: dict[WindowKey, tuple[int, tuple[Any, ...]]] = {}
        for row in self.ch.query(
            "SELECT window, window_start, user_id, shares, thanks_given, thanks_received, "
            "reactions_received, hwm_partitions, hwm_offsets, version, decay_value, "
            "decay_at_ms FROM kudos.score_state "
            "WHERE org_id = %(org)s AND user_id IN %(users)s AND window_start IN %(starts)s",
            params,
        ):
            key: WindowKey = (org, _window_name(row[0]), dt_to_ms(row[1]), row[2])
            if key in wanted and (key not in best or row[9] > best[key][0]):
                best[key] = (int(row[9]), row)
        for key, (_, row) in best.items():
            t = loaded[key]
            t.shares, t.thanks_given, t.thanks_received, t.reactions_received = (
                int(row[3]),
                int(row[4]),
                int(row[5]),
                int(row[6]),
            )
            t.hwm = {int(p): int(o) for p, o in zip(row[7], row[8], strict=True)}
            t.decay, t.decay_at = float(row[10]), int(row[11])
        for window, start, user, thanker in self.ch.query(
            "SELECT window, window_start, user_id, thanker_id FROM kudos.thankers "
            "WHERE org_id = %(org)s AND user_id IN %(users)s AND window_start IN %(starts)s",
            params,
        ):
            key = (org, _window_name(window), dt_to_ms(start), user)
            if key in wanted:
                loaded[key].thankers.add(thanker)

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

    def write_badges(self, awards: Sequence[BadgeAward]) -> int:
        if not awards:
            return 0
        at = now_utc()
        return self.ch.insert(
            BADGE_AWARD_ROWS.qualified,
            BADGE_AWARD_ROWS.columns,
            [
                (
                    a.org_id,
                    a.user_id,
                    a.badge,
                    ms_to_dt(a.period_start),
                    at,
                    a.rule_version,
                    a.evidence,
                )
                for a in awards
            ],
        )

    def write_scores(
        self, book: ScoreBook, keys: Iterable[WindowKey], rules_for: RulesLookup
    ) -> int:
        return self.write_score_rows(self.score_rows(book, keys, rules_for))

    @staticmethod
    def score_rows(
        book: ScoreBook, keys: Iterable[WindowKey], rules_for: RulesLookup
    ) -> list[tuple[Any, ...]]:
        """`kudos.score_state` rows of these keys as they are now (a snapshot)."""
        at = now_utc()
        rows: list[tuple[Any, ...]] = []
        for key in keys:
            org, window, start, user = key
            t = book.totals[key]
            rules = rules_for(org)
            parts = sorted(t.hwm)
            rows.append(
                (
                    org,
                    window,
                    ms_to_dt(start),
                    user,
                    t.shares,
                    t.thanks_given,
                    t.thanks_received,
                    t.distinct_thankers,
                    t.reactions_received,
                    t.score(rules),
                    parts,
                    [t.hwm[p] for p in parts],
                    t.version,
                    at,
                    t.decay,
                    t.decay_at,
                    rules.decay_half_life_ms / 1000,
                )
            )
        return rows

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
        from sinks.directory import OPTED_OUT_SQL, opted_out_users, people

        # Opted-out users never appear (sinks/directory.py); ranks close up over the rest.
        # leader_rows holds every key that can be in a top-D of the full board, D =
        # leader_depth (streams/leaders.py), so the top-N of the others is exact there
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

    def badges(
        self, org: str, user: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The org's (or one user's) badge awards, newest first, without opted-out people;
        `limit` of them from `offset` on (all when `limit` is None)."""
        from sinks.directory import OPTED_OUT_SQL

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
                "period_start": iso(dt_to_ms(r[2])),
                "awarded_at": iso(dt_to_ms(r[3])),
            }
            for r in self.ch.query(sql, params)
        ]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window_name(value: str) -> WindowName:
    if value in ("hour", "day", "week", "all"):
        return value  # type: ignore[return-value]
    raise ValueError(f"unknown window {value!r}")
