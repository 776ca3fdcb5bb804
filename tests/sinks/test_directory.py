"""The user directory on both backends (chdb 26.x, clickhouse-server 18.16): opted-out
people vanish from leaderboards and badges with ranks closing up, the leader_rows path and
the kudos.scores fallback agree, team and department boards honour k, bridging thanks and
give/receive balance. Every expectation is computed here in plain Python."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.directory import DirectoryRecord
from schemas.vocabulary import DAY_MS, WindowKey
from sinks.clickhouse import ClickHouse
from sinks.directory import DirectoryRow, DirectoryStore, opted_out_users, people
from sinks.tables import DECISIONS, REVERSALS
from streams.domain.rules import RulesLookup
from streams.domain.scorebook import Badge, BadgeAward, ScoreBook, WindowTotals
from streams.stages.state_store import StateStore

pytestmark = pytest.mark.clickhouse

WEEK = 1_795_392_000_000  # Monday 2026-11-23 00:00 UTC
ORG = "acme"


class Directory:
    """Writes records as the stage would: each message of a person at a later offset."""

    def __init__(self, store: DirectoryStore) -> None:
        self.store = store
        self.offset = 0

    def put(self, user: str, *, org: str = ORG, **fields: Any) -> None:
        self._write(DirectoryRecord(org, user, updated_at=WEEK, **fields))

    def tombstone(self, user: str, org: str = ORG) -> None:
        self._write(DirectoryRecord(org, user, deleted=True))

    def _write(self, record: DirectoryRecord) -> None:
        self.offset += 1
        row = DirectoryRow(record, 0, self.offset)
        self.store.write([row])
        self.store.write([row])  # a replay: same key, same version, collapses


def write_scores(ch: ClickHouse, totals: dict[WindowKey, WindowTotals], leaders: int) -> None:
    """score_state for every key; leader_rows for each board's `leaders` best keys, as
    the aggregating stage keeps them (streams/domain/leaders.py)."""
    store = StateStore(ch)
    book = ScoreBook()
    book.totals.update(totals)
    rules = RulesLookup()
    rows = store.score_rows(book, list(totals), rules)
    store.write_score_rows(rows)
    boards: dict[tuple[str, str, int], list[Any]] = {}
    for row, key in zip(rows, totals, strict=True):
        boards.setdefault(key[:3], []).append(row)
    for board_rows in boards.values():
        board_rows.sort(key=lambda r: (-r[9], r[3]))
        store.write_leader_rows(board_rows[:leaders])


def score(t: WindowTotals) -> int:
    return 3 * t.thanks_received + t.thanks_given + 2 * t.shares + t.reactions_received


def test_opted_out_users_leave_every_board_and_ranks_close_up(ch: ClickHouse) -> None:
    users = [f"u{i:02d}" for i in range(20)]
    totals: dict[WindowKey, WindowTotals] = {
        (ORG, "week", WEEK, u): WindowTotals(
            thanks_received=i // 2, thanks_given=i % 3, shares=1, hwm={0: i}
        )
        for i, u in enumerate(users)
    }
    totals[("other", "week", WEEK, "u19")] = WindowTotals(thanks_received=9, hwm={0: 1})
    write_scores(ch, totals, leaders=8)
    directory = Directory(DirectoryStore(ch))
    directory.put("u19", display_name="Nineteen", opted_out=True)  # top of the board
    directory.put("u16", display_name="Sixteen", opted_out=True)
    directory.tombstone("u16")  # a tombstone does not lift an opt-out
    directory.put("u17", opted_out=True)
    directory.put("u17", display_name="Seventeen", opted_out=False)  # opted in again
    directory.put("u18", display_name="Eighteen")
    directory.put("u15", display_name="Fifteen")
    directory.tombstone("u15")  # removed: shown, without a name
    directory.put("u19", org="other", opted_out=False)  # nothing crosses orgs

    assert sorted(opted_out_users(ch, ORG)) == ["u16", "u19"]
    assert opted_out_users(ch, "other") == []
    hidden = {"u16", "u19"}
    names = {"u17": "Seventeen", "u18": "Eighteen"}
    board = sorted(
        ((u, score(t)) for (o, _, _, u), t in totals.items() if o == ORG and u not in hidden),
        key=lambda r: (-r[1], r[0]),
    )
    fast = StateStore(ch, leader_depth=8)
    scores_only = StateStore(ch, leader_depth=0)  # always kudos.scores
    for top in (1, 3, 6, 7, 18, 25):  # 6 + 2 opt-outs = 8: the deepest leader_rows read
        want = [(n + 1, u, s, names.get(u)) for n, (u, s) in enumerate(board[:top])]
        for store in (fast, scores_only):
            got = store.leaderboard(ORG, "week", WEEK, top)
            assert [(e.rank, e.user_id, e.score, e.display_name) for e in got] == want, (
                top,
                store.leader_depth,
            )
    # The other org still shows its u19.
    assert [e.user_id for e in fast.leaderboard("other", "week", WEEK, 5)] == ["u19"]

    awards = [BadgeAward(ORG, u, Badge.HELPER, WEEK, 1, "") for u in ("u19", "u18", "u16")]
    fast.write_badges(awards)
    assert {b["user_id"] for b in fast.badges(ORG)} == {"u18"}
    assert fast.badges(ORG, "u19") == []
    assert [b["user_id"] for b in fast.badges(ORG, "u18")] == ["u18"]
    more = [BadgeAward(ORG, f"u{i:02d}", Badge.SHARER, WEEK, 1, "") for i in range(5)]
    fast.write_badges(more)
    every = fast.badges(ORG)
    assert len(every) == 6
    pages = [fast.badges(ORG, None, 4, offset) for offset in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 2, 0] and pages[0] + pages[1] == every


def test_people_reads_the_latest_record_of_each_person(ch: ClickHouse) -> None:
    directory = Directory(DirectoryStore(ch))
    directory.put("ann", display_name="Ann", team="red", department="eng")
    directory.put("ann", display_name="Ann B", team="blue", department="eng")
    directory.put("bob", display_name="Bob", opted_out=True)
    directory.tombstone("bob")
    got = people(ch, ORG, ["ann", "bob", "cid"])
    assert set(got) == {"ann", "bob"}
    ann, bob = got["ann"], got["bob"]
    assert (ann.display_name, ann.team, ann.department, ann.opted_out) == (
        "Ann B",
        "blue",
        "eng",
        False,
    )
    assert (bob.display_name, bob.team, bob.opted_out, bob.deleted) == (None, None, True, True)


def _team_setup(ch: ClickHouse) -> tuple[dict[str, tuple[str, str]], dict[str, WindowTotals]]:
    """red: 5 visible; blue: 5 members, one opted out (4 visible); green: 6 members, one
    tombstoned (5 visible), one without points. Departments: eng = red + blue, ops = green."""
    directory = Directory(DirectoryStore(ch))
    members: dict[str, tuple[str, str]] = {}
    for team, department, n in (("red", "eng", 5), ("blue", "eng", 5), ("green", "ops", 6)):
        for i in range(n):
            user = f"{team}{i}"
            members[user] = (team, department)
            directory.put(user, display_name=user.title(), team=team, department=department)
    directory.put("blue0", team="blue", department="eng", opted_out=True)
    directory.tombstone("green5")
    directory.put("loner", display_name="Loner")  # no team, no department
    totals: dict[str, WindowTotals] = {}
    for i, user in enumerate([*sorted(members), "loner"]):
        if user == "green4":
            continue  # a member without points in the window
        totals[user] = WindowTotals(
            thanks_received=i % 4, thanks_given=i % 3, shares=i % 2, reactions_received=i % 5
        )
    keys = {(ORG, "week", WEEK, u): t for u, t in totals.items()}
    keys[(ORG, "week", WEEK - 7 * DAY_MS, "red0")] = WindowTotals(shares=50)  # other week
    write_scores(ch, keys, leaders=100)
    del members["green5"], members["blue0"]
    return members, totals


@pytest.mark.parametrize("by", ["team", "department"])
def test_group_boards_sum_visible_members_and_hide_groups_below_k(ch: ClickHouse, by: str) -> None:
    members, totals = _team_setup(ch)
    store = DirectoryStore(ch, team_min_size=5)
    groups: dict[str, list[str]] = {}
    for user, (team, department) in members.items():
        groups.setdefault(team if by == "team" else department, []).append(user)
    want = []
    for group, users in groups.items():
        if len(users) < 5:
            continue
        ts = [totals.get(u, WindowTotals()) for u in users]
        want.append(
            (
                group,
                len(users),
                sum(score(t) for t in ts),
                sum(t.shares for t in ts),
                sum(t.thanks_given for t in ts),
                sum(t.thanks_received for t in ts),
                sum(t.reactions_received for t in ts),
            )
        )
    want.sort(key=lambda r: (-r[2], r[0]))
    got = store.team_board(ORG, "week", WEEK, by, 10)  # type: ignore[arg-type]
    assert [
        (
            e.group,
            e.members,
            e.score,
            e.shares,
            e.thanks_given,
            e.thanks_received,
            e.reactions_received,
        )
        for e in got
    ] == want
    assert [e.rank for e in got] == list(range(1, len(want) + 1))
    # red (5) and green (5 visible of 6) are shown, blue (4 visible) is not; departments:
    # eng (red + blue, 9 visible) and ops (green).
    assert {e.group for e in got} == ({"red", "green"} if by == "team" else {"eng", "ops"})
    assert store.team_board(ORG, "week", WEEK, by, 1) == got[:1]  # type: ignore[arg-type]
    second = store.team_board(ORG, "week", WEEK, by, 1, offset=1)  # type: ignore[arg-type]
    assert second == got[1:2] and second[0].rank == 2  # ranks count from the top
    assert DirectoryStore(ch, team_min_size=7).team_board(ORG, "week", WEEK, by, 10) == (  # type: ignore[arg-type]
        [e for e in got if e.members >= 7]
    )


def _decision(
    n: int, actor: str, recipient: str, at: int, *, counted: int = 1, kind: str = "THANKS"
) -> tuple[Any, ...]:
    """A kudos.decisions row (`DECISIONS.columns`); what the reads here ignore is empty."""
    when = datetime.fromtimestamp(at // 1000, tz=UTC).replace(tzinfo=None)
    return (ORG, f"e{n}", kind, actor, recipient, counted, "counted" if counted else "self",
            0, when, at, 0, "", "", "", "", 0, n, when, "")  # fmt: skip


def test_bridging_counts_counted_thanks_across_visible_teams(ch: ClickHouse) -> None:
    members, _ = _team_setup(ch)
    at = WEEK + DAY_MS
    thanks = [
        ("red1", "green1"),  # across: red gives, green receives
        ("red1", "green1"),
        ("green2", "red3"),
        ("red2", "blue1"),  # blue is below k: red's count, blue not listed
        ("red2", "red3"),  # same team
        ("blue0", "red1"),  # opted out: not counted on either side
        ("red4", "loner"),  # recipient without a team
        ("red4", "green5"),  # tombstoned: no team any more
        ("nobody", "green0"),  # not in the directory
    ]
    rows = [_decision(i, a, r, at + i) for i, (a, r) in enumerate(thanks)]
    rows.append(rows[0])  # a replayed insert of the same decision
    rows.append(_decision(90, "red0", "green0", at, counted=0))  # refused
    rows.append(_decision(91, "red0", "green0", at, kind="REACTION"))
    rows.append(_decision(92, "red0", "green0", WEEK - 1))  # the week before
    ch.insert(DECISIONS.qualified, DECISIONS.columns, rows)

    expected: dict[str, list[int]] = {}
    for actor, recipient in thanks:
        a, r = members.get(actor), members.get(recipient)
        if a and r and a[0] != r[0]:
            expected.setdefault(a[0], [0, 0])[0] += 1
            expected.setdefault(r[0], [0, 0])[1] += 1
    store = DirectoryStore(ch, team_min_size=5)
    got = store.bridging(ORG, WEEK, WEEK + 7 * DAY_MS)
    assert {e.team: [e.given_across, e.received_across] for e in got} == {
        t: v for t, v in expected.items() if t in ("red", "green")
    }
    assert {e.team: e.members for e in got} == {"red": 5, "green": 5}
    assert got[0].team == "red"  # 3 + 1 across, before green's 1 + 2
    # `all` has no end; the week before adds the one red -> green thanks there.
    everything = {e.team: e.given_across for e in store.bridging(ORG, 0, None)}
    assert everything["red"] == expected["red"][0] + 1


def _reversal(decision: tuple[Any, ...], now: str, delta: int, org: str = ORG) -> tuple[Any, ...]:
    """A kudos.reversals row (`REVERSALS.columns`) of a `_decision` row (same lineage)."""
    d = dict(zip(DECISIONS.columns, decision, strict=True))
    actor, recipient = d["actor_id"], d["recipient_id"]
    rule = "reciprocal" if delta < 0 else "recap"
    return (org, datetime(2026, 11, 23), d["event_id"], actor, recipient, d["src_topic"],
            d["src_partition"], d["src_offset"], d["occurred_at_ms"], d["reason"], now, delta,
            rule, [actor, recipient], 2, [], datetime(2026, 12, 1))  # fmt: skip


def test_bridging_counts_thanks_as_the_collusion_audit_left_them(ch: ClickHouse) -> None:
    members, _ = _team_setup(ch)
    at = WEEK + DAY_MS
    # (actor, recipient, decided counted, audit's delta: -1 reversed, +1 reinstated, 0 none)
    thanks = [
        ("red1", "green1", 1, -1),  # reversed: no longer across
        ("red1", "green1", 1, 0),  # same pair, not reversed: still counts
        ("green2", "red3", 1, -1),
        ("green2", "red3", 1, -1),  # both of this pair's thanks reversed
        ("red2", "green3", 0, 1),  # a budget refused it; counts once reinstated
        ("green0", "red4", 0, 0),  # refused, not audited
        ("red0", "green4", 1, 0),
    ]
    rows = [_decision(i, a, r, at + i, counted=c) for i, (a, r, c, _) in enumerate(thanks)]
    reversals = [
        _reversal(row, "collusion" if delta < 0 else "counted", delta)
        for row, (*_, delta) in zip(rows, thanks, strict=True)
        if delta
    ]
    # Another org's reversal with the same lineage changes nothing here.
    reversals.append(_reversal(rows[-1], "collusion", -1, org="other"))
    ch.insert(DECISIONS.qualified, DECISIONS.columns, rows + rows[:3])  # retried inserts
    ch.insert(REVERSALS.qualified, REVERSALS.columns, reversals + reversals[:2])  # a re-run

    expected: dict[str, list[int]] = {}
    for actor, recipient, counted, delta in thanks:
        if not (delta > 0 or (counted and delta == 0)):
            continue
        a, r = members[actor], members[recipient]
        if a[0] != r[0]:
            expected.setdefault(a[0], [0, 0])[0] += 1
            expected.setdefault(r[0], [0, 0])[1] += 1
    got = DirectoryStore(ch, team_min_size=5).bridging(ORG, WEEK, WEEK + 7 * DAY_MS)
    assert {e.team: [e.given_across, e.received_across] for e in got if e.team in expected} == (
        expected
    )
    assert expected == {"red": [3, 0], "green": [0, 3]}  # the scenario is what it says
    assert {e.team for e in got} == {"red", "green"}


def test_balance_is_given_minus_received_and_an_opted_out_id_reads_as_unknown(
    ch: ClickHouse,
) -> None:
    _, totals = _team_setup(ch)
    store = DirectoryStore(ch)
    red1 = store.balance(ORG, "week", WEEK, "red1")
    assert red1 is not None
    t = totals["red1"]
    assert (red1.user_id, red1.display_name, red1.team) == ("red1", "Red1", "red")
    assert (red1.thanks_given, red1.thanks_received) == (t.thanks_given, t.thanks_received)
    assert red1.balance == t.thanks_given - t.thanks_received
    stranger = store.balance(ORG, "week", WEEK, "stranger")
    assert (stranger.display_name, stranger.team, stranger.balance) == (None, None, 0)
    # Opted out: the answer of an unknown id, though blue0 has thanks in the window.
    write_scores(
        ch, {(ORG, "week", WEEK, "blue0"): WindowTotals(thanks_given=2, thanks_received=1)}, 100
    )
    hidden = store.balance(ORG, "week", WEEK, "blue0")
    assert replace(hidden, user_id="stranger") == stranger
