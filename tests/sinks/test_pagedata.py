"""The live page's reads on both backends (chdb 26.x, clickhouse-server 18.16): previous
ranks equal a ranking computed here (opted-out people skipped, on the leader_rows path and
the kudos.scores fallback), the badge feed is newest first, limited and without opted-out
people, the history fills missing windows with zeros and reads an opted-out person as an
unknown id, and a
team board exists only with k visible members."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.vocabulary import DAY_MS, WEEK_MS, WindowKey
from sinks.clickhouse import ClickHouse
from sinks.directory import DirectoryStore
from sinks.pagedata import PageData, PreviousRank
from sinks.tables import BADGE_AWARD_ROWS
from streams.domain.scorebook import WindowTotals
from tests.sinks.test_directory import ORG, WEEK, Directory, score, write_scores

pytestmark = pytest.mark.clickhouse

PREV = WEEK - WEEK_MS


def test_previous_ranks_skip_opted_out_people(ch: ClickHouse) -> None:
    users = [f"u{i:02d}" for i in range(12)]
    totals: dict[WindowKey, WindowTotals] = {
        (ORG, "week", PREV, u): WindowTotals(thanks_received=i, shares=i % 2, hwm={0: i})
        for i, u in enumerate(users)
    }
    write_scores(ch, totals, leaders=8)
    directory = Directory(DirectoryStore(ch))
    directory.put("u11", opted_out=True)  # first last week: everyone else moves up one
    board = sorted(
        ((u, score(t)) for (_, _, _, u), t in totals.items() if u != "u11"),
        key=lambda r: (-r[1], r[0]),
    )
    rank = {u: i + 1 for i, (u, _) in enumerate(board)}
    asked = ["u10", "u05", "u01", "u00", "new"]
    for depth in (8, 1):  # 8: leader_rows; 1 (one opt-out fills it): kudos.scores
        pages = PageData(ch, leader_depth=depth, team_min_size=5)
        got = pages.previous_ranks(ORG, "week", PREV, asked)
        if depth == 8:  # the best 7 visible of leader_rows' 8; deeper ones: "was below"
            want = {u: PreviousRank(rank[u], True) for u in ("u10", "u05")}
            want |= {"u01": PreviousRank(None, True), "u00": PreviousRank(None, True)}
        else:
            want = {u: PreviousRank(rank[u], True) for u in ("u10", "u05", "u01", "u00")}
        want["new"] = PreviousRank(None, False)
        assert got == want, depth
    assert PageData(ch, 8, 5).previous_ranks(ORG, "week", PREV, []) == {}


def test_recent_badges_newest_first_without_opted_out_people(ch: ClickHouse) -> None:
    directory = Directory(DirectoryStore(ch))
    directory.put("ann", display_name="Ann")
    directory.put("oz", display_name="Oz", opted_out=True)
    rows = [("ann", "first_thanks", 0, WEEK), ("oz", "first_thanks", 0, WEEK)]
    rows += [(u, "helper", WEEK, WEEK + DAY_MS) for u in ("bob", "oz", "ann")]
    ch.insert(
        BADGE_AWARD_ROWS.qualified,
        BADGE_AWARD_ROWS.columns,
        [(ORG, u, b, _dt(p), _dt(at), 1, "") for u, b, p, at in rows],
    )
    pages = PageData(ch, 1000, 5)
    feed = pages.recent_badges(ORG, 10)
    assert [(b["user_id"], b["badge"], b["display_name"]) for b in feed] == [
        ("ann", "helper", "Ann"),
        ("bob", "helper", None),
        ("ann", "first_thanks", "Ann"),
    ]
    assert feed[0]["awarded_at"] == _dt(WEEK + DAY_MS).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [b["user_id"] for b in pages.recent_badges(ORG, 2)] == ["ann", "bob"]
    assert [b["badge"] for b in pages.recent_badges(ORG, 10, "ann")] == ["helper", "first_thanks"]
    assert pages.recent_badges(ORG, 10, "oz") == []
    # Pages: offset skips the newest; together they are the whole feed.
    assert pages.recent_badges(ORG, 2, offset=1) == feed[1:3]
    assert pages.recent_badges(ORG, 2, offset=2) == feed[2:]
    assert pages.recent_badges(ORG, 2, offset=3) == []


def test_score_history_and_teams(ch: ClickHouse) -> None:
    days = [WEEK + i * DAY_MS for i in range(4)]
    totals: dict[WindowKey, WindowTotals] = {
        (ORG, "day", days[1], "ann"): WindowTotals(thanks_received=2, hwm={0: 1}),
        (ORG, "day", days[3], "ann"): WindowTotals(shares=1, hwm={0: 2}),
        (ORG, "day", days[3], "oz"): WindowTotals(shares=5, hwm={0: 3}),
        ("other", "day", days[0], "ann"): WindowTotals(shares=9, hwm={0: 4}),
    }
    write_scores(ch, totals, leaders=10)
    directory = Directory(DirectoryStore(ch))
    directory.put("ann", display_name="Ann", team="red")
    directory.put("oz", team="red", opted_out=True)
    pages = PageData(ch, 1000, team_min_size=5)
    got = pages.score_history(ORG, "day", "ann", days)
    assert got is not None and got.display_name == "Ann"
    assert [(p.window_start, p.score) for p in got.points] == list(
        zip(days, [0, 6, 0, 2], strict=True)
    )
    unknown = pages.score_history(ORG, "day", "nobody", days[:2])
    assert unknown is not None and [p.score for p in unknown.points] == [0, 0]
    # Opted out: the answer of an unknown id (zeros, no name), though oz has points.
    hidden = pages.score_history(ORG, "day", "oz", days)
    nobody = pages.score_history(ORG, "day", "nobody", days)
    assert (hidden.display_name, hidden.points) == (nobody.display_name, nobody.points)
    assert [p.score for p in hidden.points] == [0, 0, 0, 0]
    assert not pages.has_teams(ORG)
    assert pages.has_points(ORG) and pages.has_points("other")
    assert not pages.has_points("made-up") and not pages.has_points("")
    for i in range(4):
        directory.put(f"r{i}", team="red")
    assert pages.has_teams(ORG)  # ann + r0..r3 = 5 visible; oz does not count
    directory.put("r3", team="red", opted_out=True)
    assert not pages.has_teams(ORG)
    assert not pages.has_teams("other")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)
