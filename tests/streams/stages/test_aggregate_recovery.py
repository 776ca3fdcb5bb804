"""The aggregating stage's write order against real ClickHouse (both backends): a crash
between any two of a batch's writes, then a restart that replays the batch, leaves every
total and every leader row exactly as one uninterrupted run does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from schemas.vocabulary import WINDOWS, Metric
from sinks.clickhouse import ClickHouse
from streams.domain.rules import Effect, RulesLookup
from streams.domain.tally import ScoreColumns
from streams.stages.aggregate import AggregateStage
from streams.stages.flush import Blocking, RawMessage
from streams.stages.state_store import StateStore
from streams.stages.transport import encode_effects
from tests.streams.factories import ms

pytestmark = pytest.mark.clickhouse

AT = ms("2026-11-23T10:00:00")


class Crash(BaseException):
    """SIGKILL between two writes: nothing after it runs, nothing is acked."""


class CrashingStore(StateStore):
    """Dies at the `n`-th write call of a batch (counting only non-empty writes)."""

    def __init__(self, ch: ClickHouse, n: int) -> None:
        super().__init__(ch, leader_depth=3)
        self.calls = 0
        self.n = n

    def _count(self) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise Crash(f"killed before write {self.n}")

    def write_thanker_columns(self, columns: Sequence[Any]) -> int:
        if len(columns[0]):
            self._count()
        return super().write_thanker_columns(columns)

    def write_badges(self, awards: Sequence[Any]) -> int:
        if awards:
            self._count()
        return super().write_badges(awards)

    def write_score_columns(self, rows: ScoreColumns, leaders: bool = False) -> int:
        if len(rows):  # leader rows, then score_state rows
            self._count()
        return super().write_score_columns(rows, leaders)


class Sink:
    async def publish(self, topic: str, messages: Sequence[tuple[Any, ...]]) -> None:
        pass


def batch() -> list[RawMessage]:
    effects = [
        Effect("acme", f"u-{i}", Metric.THANKS_RECEIVED, f"giver-{i}", AT, 0, 10 + i)
        for i in range(6)
    ]
    return [RawMessage("kudos.effects", 0, 5, None, encode_effects(effects))]


def run(store: StateStore, messages: list[RawMessage]) -> None:
    blocking = Blocking()
    stage = AggregateStage(
        store, RulesLookup(), Sink(), blocking, badges_topic="recognition.badges", leader_depth=3
    )
    try:
        asyncio.run(stage.process(messages))
    finally:
        blocking.shutdown()


def snapshot(ch: ClickHouse) -> tuple[list[Any], list[Any], list[Any]]:
    scores = ch.query(
        "SELECT window, user_id, thanks_received, distinct_thankers FROM kudos.scores "
        "ORDER BY window, user_id"
    )
    leaders = ch.query(
        "SELECT window, user_id, score FROM kudos.leader_rows FINAL ORDER BY window, user_id"
    )
    badges = ch.query("SELECT user_id, badge FROM kudos.badge_awards ORDER BY user_id, badge")
    return scores, leaders, badges


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_a_crash_between_writes_and_a_replay_equal_one_clean_run(
    ch: ClickHouse, crash_at: int
) -> None:
    with pytest.raises(Crash):
        run(CrashingStore(ch, crash_at), batch())
    run(StateStore(ch, leader_depth=3), batch())  # the restart replays the batch
    crashed = snapshot(ch)
    ch.execute("TRUNCATE TABLE kudos.score_state")
    ch.execute("TRUNCATE TABLE kudos.leader_rows")
    ch.execute("TRUNCATE TABLE kudos.thankers")
    ch.execute("TRUNCATE TABLE kudos.badge_award_rows")
    run(StateStore(ch, leader_depth=3), batch())
    clean = snapshot(ch)
    assert crashed == clean
    assert len(clean[1]) == len(WINDOWS) * 6  # every window of every user is on its board
