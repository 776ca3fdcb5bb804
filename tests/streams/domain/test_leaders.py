"""The leaderboard table holds every key a top-N can show, whatever the order of updates,
the number of workers, and boards dropped and reloaded on the way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.leaders import Board, Boards, select_rows

DEPTH = 4
BOARD = ("acme", "all", 0)


def top(scores: dict[str, int], n: int) -> list[tuple[str, int]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def stored_top(table: dict[str, int], depth: int) -> list[tuple[str, int]]:
    return sorted(table.items(), key=lambda kv: -kv[1])[:depth]


# Steps: (user, points gained, drop the boards of the user's worker first?)
steps = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3), st.booleans()), max_size=300)


@settings(max_examples=300, deadline=None)
@given(steps, st.dictionaries(st.integers(0, 30), st.integers(0, 5), max_size=20))
def test_every_top_n_read_from_the_table_is_exact(
    history: list[tuple[int, int, bool]], before: dict[int, int]
) -> None:
    truth = {f"u{u}": s for u, s in before.items()}
    # What a backfill leaves: the exact top DEPTH of what was there.
    table = dict(top(truth, DEPTH))  # ORDER BY score DESC, user_id LIMIT DEPTH BY board
    workers = [Boards(depth=DEPTH) for _ in range(3)]
    for user_no, gained, drop in history:
        user = f"u{user_no}"
        # Each user belongs to one worker (its effects partition), as in the pipeline.
        if drop:
            workers[user_no % 3] = Boards(depth=DEPTH)
        worker = workers[user_no % 3]
        truth[user] = truth.get(user, 0) + gained
        if worker.missing([BOARD]):
            worker.add(BOARD, stored_top(table, DEPTH))
        if worker.admit(BOARD, user, truth[user]):
            table[user] = max(table.get(user, 0), truth[user])
        for n in range(1, DEPTH + 1):
            assert top(table, n) == top(truth, n)


def test_threshold_rises_and_forgets_what_cannot_raise_it() -> None:
    board = Board()
    for i in range(8):
        assert board.admit(f"u{i}", 10 + i, depth=4)
    # 8 seen, prune: the 4th highest (14) is the threshold; those at it are not kept.
    assert board.threshold == 14
    assert set(board.scores) == {"u5", "u6", "u7"}
    assert not board.admit("u0", 13, depth=4)
    assert board.admit("u0", 14, depth=4)


def test_ties_at_the_threshold_do_not_make_pruning_quadratic() -> None:
    board = Board()
    for i in range(10_000):
        board.admit(f"u{i}", 3, depth=100)
    assert len(board.scores) < 200 and board.threshold == 3


def test_loaded_board_starts_at_the_stored_depth_th_score() -> None:
    board = Board.loaded([("a", 9), ("b", 7), ("c", 7), ("d", 5)], depth=3)
    assert board.threshold == 7
    assert Board.loaded([("a", 9)], depth=3).threshold == 0


def test_select_rows_keeps_rows_aligned_with_keys() -> None:
    boards = Boards(depth=2)
    boards.add(BOARD, [("x", 10), ("y", 8)])
    keys = [("acme", "all", 0, "a"), ("acme", "all", 0, "b")]
    rows = [("a", 9), ("b", 7)]
    assert select_rows(boards, keys, rows, lambda r: r[1]) == [("a", 9)]


def test_least_recently_used_boards_are_dropped() -> None:
    boards = Boards(max_boards=2)
    for start in (0, 1, 2):
        boards.add(("acme", "hour", start), [])
    assert len(boards) == 2 and boards.missing([("acme", "hour", 0)])
