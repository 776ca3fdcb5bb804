"""Rolling boards (sinks/rolling.py). First the plan against brute force: day boards
filled the way the aggregating stage fills leader_rows (streams/domain/leaders.py), stale
rows included; `model_candidates` is the plain-Python form of the candidates computed in
ClickHouse. Then the reads on both backends, against sums computed here, with day windows
and leader rows written as the aggregating stage writes them."""

from __future__ import annotations

import heapq
import random
from collections.abc import Collection, Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.vocabulary import DAY_MS, WindowKey
from sinks import rolling
from sinks.clickhouse import ClickHouse
from sinks.rolling import BOARD_COLUMNS
from streams.domain.leaders import Board, Boards
from streams.domain.rules import RuleConfig, RulesLookup
from streams.domain.scorebook import ScoreBook, WindowTotals
from streams.stages.state_store import StateStore

Updates = list[tuple[int, int, int]]  # (day, user, points)


def model_candidates(
    days: Sequence[Mapping[str, int]], depth: int, need: int, hidden: Collection[str]
) -> rolling.Candidates:
    """The module doc's candidates, from each day's leader rows (user -> stored score)."""
    bounds = [
        rolling.day_bound(len(d), heapq.nlargest(depth, d.values())[-1] if d else 0, depth)
        for d in days
    ]
    lower: dict[str, int] = {}
    above: dict[str, int] = {}
    exact_days: dict[str, int] = {}
    for day, bound in zip(days, bounds, strict=True):
        for user, score in day.items():
            lower[user] = lower.get(user, 0) + score
            above[user] = above.get(user, 0) + max(0, score - bound)
            exact_days[user] = exact_days.get(user, 0) + (len(day) >= depth and score >= bound)
    floor, fulls = sum(bounds), sum(len(d) >= depth for d in days)
    visible = [u for u in lower if u not in hidden]
    best = heapq.nlargest(need, (lower[u] for u in visible))
    cut = best[-1] if len(best) == need else -1
    users = [
        rolling.Candidate(u, lower[u], exact_days[u] == fulls)
        for u in visible
        if floor + above[u] >= cut
    ]
    return rolling.Candidates(users, floor, fulls == 0, need)


def day_boards(
    updates: Updates, days: int, depth: int
) -> tuple[list[dict[str, int]], dict[str, int]]:
    """What leader_rows holds of each day after these updates (one writer per day), and
    every user's true sum."""
    boards = [Board() for _ in range(days)]
    scores: list[dict[str, int]] = [{} for _ in range(days)]
    stored: list[dict[str, int]] = [{} for _ in range(days)]
    for day, user, points in updates:
        name = f"u{user:02d}"
        scores[day][name] = scores[day].get(name, 0) + points
        if boards[day].admit(name, scores[day][name], depth):
            stored[day][name] = scores[day][name]
    sums: dict[str, int] = {}
    for day_scores in scores:
        for name, score in day_scores.items():
            sums[name] = sums.get(name, 0) + score
    return stored, sums


def brute(sums: dict[str, int], hidden: Collection[str], need: int) -> list[str]:
    return sorted((u for u in sums if u not in hidden), key=lambda u: (-sums[u], u))[:need]


@settings(max_examples=400, deadline=None)
@given(
    updates=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 30), st.integers(0, 9)), max_size=300
    ),
    depth=st.integers(1, 6),
    need=st.integers(1, 8),
    hidden=st.sets(st.integers(0, 30), max_size=4),
    stars=st.integers(0, 4),
)
def test_a_proven_board_is_the_brute_force_board(
    updates: Updates, depth: int, need: int, hidden: set[int], stars: int
) -> None:
    # The first `stars` users earn ten times as much: skewed boards, which prove more.
    updates = [(d, u, p * 10 if u < stars else p) for d, u, p in updates]
    stored, sums = day_boards(updates, 7, depth)
    names = {f"u{h:02d}" for h in hidden}
    found = model_candidates(stored, depth, need, names)
    for c in found.users:  # an exact candidate's stored sum is its sum
        assert not c.exact or c.lower == sums[c.user]
    ranked = rolling.settle(found, sums)
    if ranked is not None:  # else the caller sums every user's days
        assert ranked == brute(sums, names, need)


def test_a_skewed_board_is_proven_from_few_exact_candidates() -> None:
    """Steady leaders over a long tail: the usual board needs no other read."""
    updates = [(d, u, 100 // (u + 1)) for d in range(7) for u in range(30)]
    stored, sums = day_boards(updates, 7, 5)
    found = model_candidates(stored, 5, 3, set())
    assert len(found.users) < 10 and all(c.exact for c in found.users[:3])
    assert rolling.settle(found, sums) == brute(sums, set(), 3)


# --- the reads, on both backends ---------------------------------------------------

DAY0 = 1_795_392_000_000  # Monday 2026-11-23 00:00 UTC
DAYS = [DAY0 + i * DAY_MS for i in range(7)]
RULES = RulesLookup(RuleConfig())


def fill(ch: ClickHouse, depth: int, seed: int, stars: int = 0) -> dict[str, list[int]]:
    """Random day windows of 40 users in 20 rounds (each round's rows written, and the
    admitted ones to leader_rows), the first `stars` users sharing 20 times as much;
    returns each user's (score, ..., reactions) over the days."""
    rng = random.Random(seed)
    store, book, boards = StateStore(ch), ScoreBook(), Boards(depth=depth)
    for step in range(20):
        keys: list[WindowKey] = []
        for _ in range(30):
            n = min(rng.randrange(40), rng.randrange(40))
            user = f"u{n:02d}"
            key: WindowKey = ("acme", "day", rng.choice(DAYS), user)
            t = book.totals.setdefault(key, WindowTotals())
            t.shares += rng.randrange(3) * (20 if n < stars else 1)
            t.thanks_received += rng.randrange(2)
            t.thanks_given += rng.randrange(2)
            t.thankers.add(f"t{rng.randrange(6)}")
            t.hwm[0] = step
            keys.append(key)
        keys = sorted(set(keys))
        rows = store.score_rows(book, keys, RULES)
        store.write_score_rows(rows)
        for key in {(k[0], k[1], k[2]) for k in keys}:
            if not boards.missing([key]):
                continue
            boards.add(key, [])
        admitted = [
            r for k, r in zip(keys, rows, strict=True) if boards.admit(k[:3], k[3], int(r[9]))
        ]
        store.write_leader_rows(admitted)
        store.write_thankers([(k, t) for k in keys for t in book.totals[k].thankers])
    return expected(book)


def expected(book: ScoreBook) -> dict[str, list[int]]:
    rules = RuleConfig()
    sums: dict[str, list[int]] = {}
    thankers: dict[str, set[str]] = {}
    for (_, _, _, user), t in book.totals.items():
        row = [t.score(rules), t.shares, t.thanks_given, t.thanks_received, 0, t.reactions_received]
        sums[user] = [a + b for a, b in zip(sums.get(user, [0] * 6), row, strict=True)]
        thankers.setdefault(user, set()).update(t.thankers)
    for user, row in sums.items():
        row[4] = len(thankers[user])
    return sums


def ranked(sums: dict[str, list[int]], metric: str, top: int, offset: int) -> list[tuple[str, ...]]:
    i = BOARD_COLUMNS.index(metric)
    order = sorted(sums, key=lambda u: (-sums[u][i], u))[offset : offset + top]
    return [(u, *sums[u]) for u in order]


def test_rolling_boards_equal_sums_of_the_days(ch: ClickHouse) -> None:
    sums = fill(ch, depth=3, seed=7)
    for top, offset in ((1, 0), (5, 0), (4, 3), (10, 35), (50, 0)):
        got = rolling.score_board(ch, "acme", DAYS, top, offset, depth=3)
        assert [tuple(r) for r in got] == ranked(sums, "score", top, offset), (top, offset)
    for metric in BOARD_COLUMNS:
        got = rolling.full_board(ch, "acme", DAYS, 8, 2, metric)
        assert [tuple(r) for r in got] == ranked(sums, metric, 8, 2), metric
    # Three of the seven days: only those days' windows count.
    part = rolling.full_board(ch, "acme", DAYS[2:5], 100, 0, "score")
    assert sum(r[1] for r in part) < sum(r[0] for r in sums.values())


def stored_days(ch: ClickHouse) -> list[dict[str, int]]:
    """Each day's leader rows as the model reads them (user -> stored score)."""
    out: list[dict[str, int]] = [{} for _ in DAYS]
    for start, user, score in ch.query(
        "SELECT toUInt64(toUnixTimestamp(window_start)) * 1000, user_id, score "
        "FROM kudos.leader_rows FINAL WHERE org_id = 'acme' AND window = 'day'"
    ):
        out[DAYS.index(int(start))][str(user)] = int(score)
    return out


def test_candidates_computed_in_clickhouse_are_the_models(ch: ClickHouse) -> None:
    """The fast path is taken on a skewed board: few candidates, the top ones exact."""
    sums = fill(ch, depth=3, seed=11, stars=3)
    for need in (1, 2, 5, 40):
        planned = rolling.candidates(ch, "acme", DAYS, 3, need)
        assert planned is not None
        found, summed = planned
        model = model_candidates(stored_days(ch), 3, need, set())
        assert sorted(found.users, key=lambda c: c.user) == sorted(
            model.users, key=lambda c: c.user
        )
        assert (found.floor, found.complete) == (model.floor, model.complete)
        assert all(summed[c.user][0] == sums[c.user][0] for c in found.users if c.exact)
    found, _ = rolling.candidates(ch, "acme", DAYS, 3, 2) or (None, None)
    assert found is not None and len(found.users) < len(sums)
    assert rolling.settle(found, {u: s[0] for u, s in sums.items()}) == [
        r[0] for r in ranked(sums, "score", 2, 0)
    ]
