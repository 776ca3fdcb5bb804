"""People boards by any metric, their pages and one person's rank
(`RecognitionStore.board`, `RecognitionStore.rank`) on both backends (chdb 26.x,
clickhouse-server 18.16), against a plain-Python ranking of the same random rows: ties,
opted-out people (ranks close up), offsets past the end, people without a row.

leader_rows holds the least the aggregating stage guarantees (the top keys by score down to
the store's depth, streams/domain/leaders.py), so the fast path for `score` is checked
against the same answer as the kudos.scores path, and any read of it past its depth fails."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.directory import DirectoryRecord
from schemas.vocabulary import BOARD_METRICS, BoardMetric, WindowKey
from sinks.clickhouse import ClickHouse
from sinks.directory import DirectoryRow, DirectoryStore
from sinks.store import LeaderboardEntry
from streams.domain.rules import RulesLookup
from streams.domain.scorebook import ScoreBook, WindowTotals
from streams.stages.state_store import StateStore

pytestmark = pytest.mark.clickhouse

WEEK = 1_795_392_000_000  # Monday 2026-11-23 00:00 UTC
DEPTH = 6  # the fast store's leader depth: small, so both read paths are taken
PEOPLE = [f"u{i:02d}" for i in range(12)]
THANKERS = ["t0", "t1", "t2", "t3"]
_orgs = itertools.count()

Totals = dict[str, WindowTotals]


def values(t: WindowTotals) -> dict[str, int]:
    """Every board metric of a person, from the contract's weights (DESIGN.md)."""
    return {
        "score": 3 * t.thanks_received + t.thanks_given + 2 * t.shares + t.reactions_received,
        "thanks_received": t.thanks_received,
        "thanks_given": t.thanks_given,
        "shares": t.shares,
        "reactions_received": t.reactions_received,
        "distinct_thankers": len(t.thankers),
    }


def expected_board(totals: Totals, hidden: set[str], metric: str) -> list[tuple[Any, ...]]:
    """(rank, user, score, shares, given, received, thankers, reactions) of everyone shown."""
    shown = sorted(
        (u for u in totals if u not in hidden), key=lambda u: (-values(totals[u])[metric], u)
    )
    out = []
    for n, u in enumerate(shown):
        v = values(totals[u])
        out.append(
            (
                n + 1,
                u,
                v["score"],
                v["shares"],
                v["thanks_given"],
                v["thanks_received"],
                v["distinct_thankers"],
                v["reactions_received"],
            )
        )
    return out


def as_rows(entries: list[LeaderboardEntry]) -> list[tuple[Any, ...]]:
    return [
        (
            e.rank,
            e.user_id,
            e.score,
            e.shares,
            e.thanks_given,
            e.thanks_received,
            e.distinct_thankers,
            e.reactions_received,
        )
        for e in entries
    ]


def store_board(ch: ClickHouse, org: str, totals: Totals, hidden: set[str]) -> None:
    """score_state rows of `totals` (org's week), leader_rows as admitted at DEPTH, and a
    directory in which `hidden` opted out (and one other person opted out and back in)."""
    store = StateStore(ch)
    book = ScoreBook()
    keys: list[WindowKey] = [(org, "week", WEEK, u) for u in totals]
    for key in keys:
        book.totals[key] = totals[key[3]]
    rows = store.score_rows(book, keys, RulesLookup())
    store.write_score_rows(rows)
    # The least leader_rows can hold: the top DEPTH keys by score, ties by user id.
    store.write_leader_rows(sorted(rows, key=lambda r: (-int(r[9]), r[3]))[:DEPTH])
    directory = DirectoryStore(ch)
    records = [DirectoryRecord(org, u, u.upper(), opted_out=True) for u in sorted(hidden)]
    records += [DirectoryRecord(org, "u00", opted_out=True), DirectoryRecord(org, "u00", "Zero")]
    if "u00" in hidden:
        records.reverse()  # its opt-out last: u00 stays hidden
    directory.write([DirectoryRow(r, 0, n) for n, r in enumerate(records)])


TOTALS = st.dictionaries(
    st.sampled_from(PEOPLE),
    st.builds(
        WindowTotals,
        shares=st.integers(0, 2),
        thanks_given=st.integers(0, 3),
        thanks_received=st.integers(0, 3),
        reactions_received=st.integers(0, 2),
        thankers=st.sets(st.sampled_from(THANKERS)),
        hwm=st.just({0: 1}),
    ),
    max_size=len(PEOPLE),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    totals=TOTALS,
    hidden=st.sets(st.sampled_from(PEOPLE), max_size=3),
    metric=st.sampled_from(BOARD_METRICS),
    top=st.integers(1, 8),
    offset=st.integers(0, 14),
    around=st.integers(0, 3),
    who=st.sampled_from([*PEOPLE, "nobody"]),
)
def test_boards_pages_and_ranks_match_a_plain_ranking(
    ch: ClickHouse,
    totals: Totals,
    hidden: set[str],
    metric: BoardMetric,
    top: int,
    offset: int,
    around: int,
    who: str,
) -> None:
    org = f"b{next(_orgs)}"  # a fresh board per example: nothing to clean up
    store_board(ch, org, totals, hidden)
    want = expected_board(totals, hidden, metric)
    fast, scores_only = StateStore(ch, leader_depth=DEPTH), StateStore(ch, leader_depth=0)
    for store in (fast, scores_only):
        page = store.board(org, "week", WEEK, top, offset, metric)
        assert as_rows(page) == want[offset : offset + top], (store.leader_depth, metric)
    whole = fast.board(org, "week", WEEK, 100, 0, metric)
    assert as_rows(whole) == want
    names = {e.user_id: e.display_name for e in whole if e.display_name is not None}
    assert names == ({"u00": "Zero"} if "u00" in totals and "u00" not in hidden else {})

    got = fast.rank(org, "week", WEEK, who, metric, around)
    assert got.of == len(want) and got.user_id == who
    mine = [row for row in want if row[1] == who]
    if not mine:  # no row in the window, opted out, or unknown
        assert (got.rank, got.value, got.entries) == (None, None, [])
        return
    rank = mine[0][0]
    assert got.rank == rank and got.value == values(totals[who])[metric]
    assert as_rows(got.entries) == want[max(0, rank - 1 - around) : rank + around]
    assert who in [e.user_id for e in got.entries]


def test_default_board_is_the_leaderboard_and_a_bad_metric_never_reaches_sql(
    ch: ClickHouse,
) -> None:
    org = "plain"
    totals = {
        u: WindowTotals(thanks_received=i % 4, shares=i % 3, hwm={0: 1})
        for i, u in enumerate(PEOPLE)
    }
    store_board(ch, org, totals, {"u03"})
    store = StateStore(ch, leader_depth=DEPTH)
    assert store.leaderboard(org, "week", WEEK, 5) == store.board(org, "week", WEEK, 5)
    assert store.board(org, "week", WEEK, 5, offset=50) == []
    with pytest.raises(ValueError, match="not a board metric"):
        store.board(org, "week", WEEK, 5, 0, "score; DROP TABLE kudos.scores")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a board metric"):
        store.rank(org, "week", WEEK, "u01", "version")  # type: ignore[arg-type]
    empty = store.rank("no-such-org", "week", WEEK, "u01", "shares", 2)
    assert (empty.rank, empty.value, empty.of, empty.entries) == (None, None, 0, [])
