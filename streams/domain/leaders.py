"""Which score rows the leaderboard table needs: a per-board admission threshold.

`/api/leaderboard` must answer a top-N (N <= `DEPTH`) in milliseconds, even for a board
with a million users, where sorting `kudos.score_state FINAL` takes hundreds. So the
aggregating stage also writes a row to `kudos.leader_rows` (same columns as score_state)
when a key's new score reaches its board's threshold `T`, and the API reads the top-N
from that small table.

Why that is exact. In rules v1 scores never decrease, and a key's stored row only moves
up. The threshold of a board is the `DEPTH`-th highest of the scores it has seen written
to `leader_rows` (lower bounds of what is stored there, for `DEPTH` distinct users), or 0
while it has seen fewer. So at any time at least `DEPTH` users are stored with a score
>= T, and those stored scores only grow. A key that is not written has a score < T: it
ranks below `DEPTH` stored users for as long as it is not written, whatever anyone's
score becomes, and no top-N with N <= DEPTH can include it. A key that reaches T is
written with its exact score. The boards need no state of their own to be correct:
dropping one (rebalance, memory bound) and loading it again from `leader_rows` gives a
threshold that is just as valid, because the facts it rests on are facts about the table.

What would break it: a score that decreases or a stored row that is deleted. `kudos
forget` deletes rows, so it rebuilds the org's boards from score_state
(sinks/erase.rebuild_org_boards) and has every worker drop its boards of the org and
rewrite its keys' leader rows (control `reset_boards`, streams/stages/aggregate.py). A collusion
audit lowers scores: every key it changes gets its leader row rewritten at once (a lower
score is never left standing on a board), and once every partition has applied the audit
the org's boards are rebuilt the same way (streams/stages/audit.py); until then a board may miss
someone who rose into its top-N because others fell.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from schemas.vocabulary import DEPTH, BoardKey, WindowName

R = TypeVar("R")


@dataclass(slots=True)
class Board:
    """What one worker knows of one board: lower bounds of stored scores, and T."""

    scores: dict[str, int] = field(default_factory=dict)
    threshold: int = 0

    def admit(self, user: str, score: int, depth: int = DEPTH) -> bool:
        """Whether a key at `score` must be written; records it if so."""
        if score < self.threshold:
            return False
        if self.scores.get(user, -1) < score:
            self.scores[user] = score
        if len(self.scores) >= 2 * depth:
            self._prune(depth)
        return True

    def _prune(self, depth: int) -> None:
        # At least `depth` users are stored at >= kth from now on (scores only grow), so
        # kth is a valid threshold; users at exactly kth can be forgotten, since only
        # scores above it can ever raise the threshold further.
        kth = heapq.nlargest(depth, self.scores.values())[-1]
        self.scores = {u: s for u, s in self.scores.items() if s > kth}
        self.threshold = max(self.threshold, kth)

    @classmethod
    def loaded(cls, stored: Iterable[tuple[str, int]], depth: int = DEPTH) -> Board:
        """From the top rows of the board as stored in `leader_rows`."""
        board = cls({u: s for u, s in stored})
        if len(board.scores) >= depth:
            board._prune(depth)
        return board


class Boards:
    """The boards a worker has touched, least recently used dropped past `max_boards`."""

    def __init__(self, max_boards: int = 4096, depth: int = DEPTH) -> None:
        self.max_boards = max_boards
        self.depth = depth
        self._boards: OrderedDict[BoardKey, Board] = OrderedDict()

    def missing(self, keys: Iterable[BoardKey]) -> set[BoardKey]:
        return {k for k in keys if k not in self._boards}

    def add(self, key: BoardKey, stored: Iterable[tuple[str, int]]) -> None:
        self._boards[key] = Board.loaded(stored, self.depth)
        while len(self._boards) > self.max_boards:
            self._boards.popitem(last=False)

    def admit(self, key: BoardKey, user: str, score: int) -> bool:
        board = self._boards[key]
        self._boards.move_to_end(key)
        return board.admit(user, score, self.depth)

    def admit_many(self, key: BoardKey, users: Sequence[str], scores: np.ndarray) -> np.ndarray:
        """`admit` of each (user, score) in order; rows below the threshold are refused
        without a look at them, which is what `admit` does too."""
        board = self._boards[key]
        self._boards.move_to_end(key)
        out = np.asarray(scores >= board.threshold)
        for i in np.flatnonzero(out).tolist():
            out[i] = board.admit(users[i], int(scores[i]), self.depth)
        return out

    def drop_org(self, org: str) -> None:
        """Forget an org's boards: they reload from leader_rows when next needed."""
        for key in [k for k in self._boards if k[0] == org]:
            del self._boards[key]

    def __len__(self) -> int:
        return len(self._boards)


def select_rows(
    boards: Boards,
    keys: Iterable[tuple[str, WindowName, int, str]],
    rows: Iterable[R],
    score_of: Callable[[R], int],
) -> list[R]:
    """The rows (aligned with their keys) that must also go to `leader_rows`."""
    return [
        row
        for (org, window, start, user), row in zip(keys, rows, strict=True)
        if boards.admit((org, window, start), user, score_of(row))
    ]
