"""No id, org or other input value is ever written into SQL text (DESIGN.md, part 2,
"Bad input and busy clients never stop kudos"), on both backends.

Every statement either backend sends is recorded where it leaves kudos: clickhouse-driver's
`Client.execute` (native protocol: statements, inserts and mutations alike) and the chdb
connection's `query` and `send_insert`. Then every read and write path of sinks/ runs with
maximal ids (256 UTF-8 bytes of quotes, backslashes, `%`, `{}`, multi-byte characters)
and a large key set, and no recorded text may hold any of them, escaped or not: each
planted value carries a marker that every escaping leaves as it is.

The one exception is the named mutation path (`ClickHouse.execute_mutation`): a server
stores a mutation's text and runs it later, so on the native protocol its values are
written in. There the test checks the size bound instead, and that it is the only place.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.directory import DirectoryRecord
from schemas.event import EventType
from schemas.rows import ThanksDecision
from schemas.times import ms_to_dt, now_utc
from schemas.vocabulary import DAY_MS, WEEK_MS, Reason, WindowKey
from sinks import audit, erase, migrate
from sinks.clickhouse import (
    MUTATION_MAX_BYTES,
    ChdbClickHouse,
    ClickHouse,
    NativeClickHouse,
)
from sinks.directory import DirectoryRow, DirectoryStore
from sinks.history import DecisionHistory
from sinks.pagedata import PageData
from sinks.tables import REPLAY_SCORES
from streams.domain.collusion import Change
from streams.domain.rules import RULE_VERSION, Decision, RuleConfig, RulesLookup
from streams.domain.scorebook import BadgeAward, ScoreBook, WindowTotals
from streams.stages.audit import change_rows
from streams.stages.state_store import DeadLetter, StateStore
from tests.streams.factories import event, records

pytestmark = pytest.mark.clickhouse

WEEK = 1_795_132_800_000  # Monday 2026-11-23 00:00 UTC
TOPIC = "collab.events"
# Markers: plain letters and digits, which no escaping changes.
ID_MARK = "Pl4nt"
ORG_MARK = "0rgM4rk"
# What an id may hold after the codec's checks: anything but control characters (and
# `/` in an org).
NASTY = "'\\\"%(x)s%%%s{y:String}{}`é—👍;-- OR '1'='1 ?\\'\\\\"
MANY_USERS = 20_000


def maximal(mark: str, n: int) -> str:
    """Exactly 256 UTF-8 bytes: the marker, a number, then the nasty text over and over."""
    text = f"{mark}{n:06d}"
    for ch in itertools.cycle(NASTY):
        if len((text + ch).encode()) > 256:
            break
        text += ch
    return text + "x" * (256 - len(text.encode()))


class SqlTexts:
    """Every SQL text a backend sent, split by whether the mutation path sent it."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.mutations: list[str] = []
        self.in_mutation = False

    def record(self, sql: str) -> None:
        (self.mutations if self.in_mutation else self.statements).append(sql)


@pytest.fixture
def texts(ch: ClickHouse, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqlTexts]:
    recorded = SqlTexts()

    def wrap(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def send(sql: str, *args: Any, **kwargs: Any) -> Any:
            recorded.record(sql)
            return original(sql, *args, **kwargs)

        monkeypatch.setattr(owner, name, send)

    if isinstance(ch, NativeClickHouse):
        wrap(ch._client, "execute")
    else:
        assert isinstance(ch, ChdbClickHouse)
        wrap(ch._conn, "query")
        wrap(ch._conn, "send_insert")
    mutation = ch.execute_mutation

    def execute_mutation(sql: str, params: Any) -> None:
        recorded.in_mutation = True
        try:
            mutation(sql, params)
        finally:
            recorded.in_mutation = False

    monkeypatch.setattr(ch, "execute_mutation", execute_mutation)
    yield recorded


def _decisions(org: str, users: list[str]) -> list[Decision]:
    events = [
        event(EventType.THANKS, users[i], (users[i + 1], users[i + 2]), org=org,
              at=WEEK + DAY_MS + i, event_id=maximal(ID_MARK, 900_000 + i))
        for i in range(6)
    ]  # fmt: skip
    events += [
        event(EventType.SHARE, users[0], org=org, at=WEEK + DAY_MS + 50),
        event(EventType.REACTION, users[3], (users[0],), org=org, at=WEEK + DAY_MS + 51),
    ]
    out = []
    for rec in records(events, partition=0):
        for recipient in rec.event.recipient_ids or ("",):
            reason = Reason.COUNTED if recipient != users[2] else Reason.PAIR_DAILY_CAP
            out.append(Decision(rec, recipient, reason, rec.event.occurred_at, RULE_VERSION))
    return out


def test_no_input_value_is_written_into_sql_text(ch: ClickHouse, texts: SqlTexts) -> None:
    org = maximal(ORG_MARK, 0)
    users = [maximal(ID_MARK, i) for i in range(MANY_USERS)]
    store = StateStore(ch, leader_depth=5)
    rules = RulesLookup()

    # --- deciding stage -----------------------------------------------------------
    decisions = _decisions(org, users)
    dead = [DeadLetter(TOPIC, 0, 99, "bad_id", maximal(ID_MARK, 999_999), WEEK)]
    store.write_decisions(decisions, dead)
    state = store.load_partition_state(TOPIC, 0, rules)
    assert state.next_offset == 100

    # --- aggregating stage: 20,000 users, in one org, in two windows ---------------
    book = ScoreBook()
    keys: list[WindowKey] = []
    for i, user in enumerate(users):
        for window, start in (("week", WEEK), ("all", 0)):
            key: WindowKey = (org, window, start, user)
            book.totals[key] = WindowTotals(
                thanks_received=i % 9, thankers={users[(i + 1) % 50]}, hwm={0: i}
            )
            keys.append(key)
    rows = store.score_rows(book, keys, rules)
    store.write_score_rows(rows)
    store.write_leader_rows(rows)
    store.write_thankers([(k, t) for k in keys for t in book.totals[k].thankers])
    awards = [BadgeAward(org, users[i], "helper", WEEK, 1, maximal(ID_MARK, i)) for i in range(5)]
    store.write_badges(awards)
    loaded = ScoreBook()
    store.load_keys(keys, loaded)
    assert loaded.totals == book.totals
    assert len(loaded.awarded) == 5
    (board,) = store.load_boards([(org, "week", WEEK)], 5).values()
    assert len(board) == 5
    # The collusion audit takes thankers out: many keys, so several small mutations.
    store.delete_thankers([((org, "week", WEEK, users[i]), users[i + 1]) for i in range(300)])

    # --- directory --------------------------------------------------------------------
    people = DirectoryStore(ch, team_min_size=1)
    teams = [maximal(ID_MARK, 800_000 + t) for t in range(3)]
    people.write(
        [
            DirectoryRow(
                DirectoryRecord(
                    org,
                    users[i],
                    display_name=maximal(ID_MARK, 700_000 + i),
                    team=teams[i % 3],
                    department=teams[(i + 1) % 3],
                    opted_out=i == 9,
                    updated_at=WEEK,
                ),
                0,
                i,
            )
            for i in range(12)
        ]
    )
    assert people.opted_out(org) == [users[9]]
    assert len(people.people(org, users[:50])) == 12
    people.team_board(org, "week", WEEK, "team", 10)
    people.team_board(org, "week", WEEK, "department", 10, offset=1)
    people.bridging(org, WEEK, None)
    people.bridging(org, WEEK, WEEK + WEEK_MS)
    assert people.balance(org, "week", WEEK, users[9]).display_name is None  # opted out
    assert people.balance(org, "week", WEEK, users[0]).display_name is not None

    # --- boards and badges, both read paths of each -------------------------------------
    assert len(store.leaderboard(org, "week", WEEK, 3)) == 3  # leader_rows, hiding one
    assert len(store.leaderboard(org, "week", WEEK, 10)) == 10  # kudos.scores
    assert len(store.badges(org)) == 5
    assert len(store.badges(org, users[0])) == 1
    assert len(store.badges(org, limit=2, offset=1)) == 2
    for depth in (5, 1):  # leader_rows; kudos.scores (one opted-out person fills depth 1)
        ranks = PageData(ch, leader_depth=depth, team_min_size=1).previous_ranks(
            org, "week", WEEK, users[:12]
        )
        assert len(ranks) == 12
    page = PageData(ch, leader_depth=5, team_min_size=1)
    assert len(page.recent_badges(org, 10)) == 5
    assert len(page.recent_badges(org, 10, users[1])) == 1
    assert len(page.recent_badges(org, 10, offset=3)) == 2
    history = page.score_history(org, "week", users[0], [WEEK, WEEK - WEEK_MS])
    assert len(history.points) == 2
    assert page.has_teams(org)
    assert page.has_points(org)

    # --- explain and replay -------------------------------------------------------------
    reads = DecisionHistory(ch)
    assert reads.user_entries(org, users[1], 0, None, 100)
    assert reads.user_entries(org, users[1], WEEK, WEEK + WEEK_MS, 100, offset=1)
    assert reads.user_decision_groups(org, users[1], 0, None)
    last = reads.last_offsets(0, WEEK + WEEK_MS)
    assert last == {(TOPIC, 0): 7}
    assert reads.replay_rows(0, last)
    assert len(reads.stored_totals(keys[:2000])) == 2000
    assert reads.has_replay_table()
    replay = (maximal(ID_MARK, 600_000), now_utc(), ms_to_dt(0), ms_to_dt(WEEK), org, "week",
              ms_to_dt(WEEK), users[0], 1, 0, 5, 0, 0, 5, 0, maximal(ID_MARK, 600_001))  # fmt: skip
    assert len(replay) == len(REPLAY_SCORES.columns)
    reads.write_replay_scores([replay])

    # --- the collusion audit ------------------------------------------------------------
    audit.write_stream_times(ch, [(TOPIC, 0, WEEK + 2 * WEEK_MS)])
    assert audit.watermark(ch, TOPIC) == WEEK + 2 * WEEK_MS
    week = audit.week_decisions(ch, org, WEEK, WEEK + WEEK_MS)
    assert week
    assert audit.next_thanks(ch, {org: 0, "plain-org": 5}, WEEK + WEEK_MS) == {org: WEEK + DAY_MS}
    around = (WEEK - 400 * DAY_MS, WEEK + 400 * DAY_MS)
    assert (
        audit.counted_elsewhere(ch, org, WEEK, WEEK + WEEK_MS, [(users[0], users[1])], around) == {}
    )
    first = week[0]
    thanks = ThanksDecision(org, first.event_id, first.actor_id, first.recipient_id,
                            Reason.COUNTED, first.occurred_at, TOPIC, 0, first.offset)  # fmt: skip
    change = Change(thanks, Reason.COLLUSION, "reciprocal", (users[0], users[1]))
    drops = {(thanks.actor_id, thanks.recipient_id): [("week", WEEK)]}
    rows = change_rows(org, WEEK, [change], drops, RuleConfig(), now_utc())
    assert audit.write_reversals(ch, rows) == 1
    assert len(audit.reversal_rows(ch, org, WEEK)) == 1
    audit.write_step(ch, org, WEEK, WEEK + WEEK_MS, audit.DECIDED)
    assert audit.audited_through(ch) == {org: WEEK + WEEK_MS}
    assert [a.org_id for a in audit.open_audits(ch)] == [org]

    # --- kudos forget --------------------------------------------------------------------
    request = maximal(ID_MARK, 500_000)
    touched = erase.erase_person(ch, org, users[1], erase.new_token())
    assert touched["score_state"] == 2 and touched["decisions"] > 0 and touched["reversals"]
    erase.rebuild_org_boards(ch, org, 5)
    erase.record_erasure(ch, request, org, sum(touched.values()))
    assert erase.erasure_done(ch, request) == sum(touched.values())

    # --- migrations ---------------------------------------------------------------------
    assert migrate.apply_migrations(ch) == []
    assert migrate.pending_migrations(ch) == []
    assert migrate.tracking_engine(ch) == "MergeTree"
    assert migrate._has_column(ch, "decisions", "error")
    with pytest.raises(ValueError, match="not defined"):
        migrate.check_cluster(ch, "no_such_cluster")

    # --- what was sent --------------------------------------------------------------------
    planted = [org, *users[:2000], *teams, request]
    assert len(texts.statements) > 100  # the recorder saw the traffic
    ch.query(f"SELECT '{ID_MARK}'")  # and it would see a value written in
    assert ID_MARK in texts.statements.pop()
    for sql in texts.statements:
        assert ID_MARK not in sql and ORG_MARK not in sql, sql[:300]
    for sql in texts.statements[:: max(1, len(texts.statements) // 50)]:
        assert not any(value in sql for value in planted)
    # The named mutation path: several statements (erase_person, delete_thankers in
    # chunks), each far below max_query_size (256 KiB).
    assert len(texts.mutations) >= 10
    assert all(len(sql.encode()) <= MUTATION_MAX_BYTES for sql in texts.mutations)
    written_in = [sql for sql in texts.mutations if ID_MARK in sql or ORG_MARK in sql]
    if isinstance(ch, NativeClickHouse):  # literals: the values travel inside the text
        assert written_in == texts.mutations
    else:  # chdb binds a mutation's values like any other statement's
        assert written_in == []
