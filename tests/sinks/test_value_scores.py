"""Company values on both backends (chdb 26.x, clickhouse-server 18.16): the rows the
aggregating stage writes to kudos.value_thanks, written again as a replay would, give
kudos.value_scores and `RecognitionStore.value_board` exactly the counts computed here in
plain Python; forgetting a person takes their rows and leaves others' counts as they were."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from schemas.directory import DirectoryRecord
from schemas.times import dt_to_ms, ms_to_dt
from schemas.vocabulary import Metric
from sinks.clickhouse import ClickHouse
from sinks.directory import DirectoryRow, DirectoryStore
from sinks.erase import erase_person
from sinks.tables import REVERSALS
from streams.domain.effects import effects_to_batch
from streams.domain.rules import Effect, RuleConfig, RulesLookup
from streams.domain.tally import ColumnApplied, ColumnBook, apply_effects_batch
from streams.stages.state_store import StateStore

pytestmark = pytest.mark.clickhouse

WEEK = 1_795_392_000_000  # Monday 2026-11-23 00:00 UTC
RULES = RulesLookup(RuleConfig(values=("care", "own")))
TOKEN = "erased:00112233aabbccdd"
Key = tuple[str, str, int, str, str]


def thanks(offset: int, actor: str, recipient: str, values: tuple[str, ...]) -> list[Effect]:
    at = WEEK + offset * 3_600_000
    return [
        Effect("acme", recipient, Metric.THANKS_RECEIVED, actor, at, 0, offset, values),
        Effect("acme", actor, Metric.THANKS_GIVEN, actor, at, 0, offset),
    ]


EFFECTS = [
    *thanks(1, "ann", "bob", ("care",)),
    *thanks(2, "cy", "bob", ("care", "own")),
    *thanks(3, "ann", "bob", ("care",)),
    *thanks(4, "bob", "ann", ("own",)),
    *thanks(5, "vic", "cy", ("care",)),
    *thanks(6, "bob", "vic", ("care",)),
    *thanks(30, "dee", "cy", ()),
]


def reference(effects: list[Effect]) -> dict[Key, tuple[int, int]]:
    counts: dict[Key, int] = defaultdict(int)
    thankers: dict[Key, set[str]] = defaultdict(set)
    for e in effects:
        if e.metric is not Metric.THANKS_RECEIVED:
            continue
        for window, start in RULES(e.org_id).calendar.starts(e.occurred_at):
            for value in e.values:
                key = (e.org_id, window, start, value, e.user_id)
                counts[key] += 1
                thankers[key].add(e.actor_id)
    return {k: (n, len(thankers[k])) for k, n in counts.items()}


def value_scores(ch: ClickHouse) -> dict[Key, tuple[int, int]]:
    rows = ch.query(
        "SELECT org_id, window, window_start, value, user_id, thanks_received, "
        "distinct_thankers FROM kudos.value_scores"
    )
    out = {(o, w, dt_to_ms(s), v, u): (int(n), int(d)) for o, w, s, v, u, n, d in rows}
    assert len(out) == len(rows)  # one row per key
    return out


def stored(ch: ClickHouse, effects: list[Effect], times: int = 2) -> None:
    """The stage's rows for `effects`, written `times` times (a crash and a replay)."""
    out = ColumnApplied()
    apply_effects_batch(effects_to_batch(effects), ColumnBook(), RULES, out)
    for _ in range(times):
        StateStore(ch).write_value_thanks_columns(out.value_thanks_columns())


def test_value_scores_are_exact_after_a_replay(ch: ClickHouse) -> None:
    stored(ch, EFFECTS)
    want = reference(EFFECTS)
    assert value_scores(ch) == want
    assert want[("acme", "week", WEEK, "care", "bob")] == (3, 2)
    board = StateStore(ch).value_board("acme", "week", WEEK, "care", 10, weight=3)
    assert [
        (e.rank, e.user_id, e.score, e.thanks_received, e.distinct_thankers) for e in board
    ] == [
        (1, "bob", 9, 3, 2),
        (2, "cy", 3, 1, 1),
        (3, "vic", 3, 1, 1),
    ]
    assert {e.shares + e.thanks_given + e.reactions_received for e in board} == {0}
    assert StateStore(ch).value_board("acme", "week", WEEK, "care", 1, weight=3)[0].user_id == "bob"
    assert StateStore(ch).value_board("acme", "week", WEEK, "speed", 10, weight=3) == []
    assert StateStore(ch).value_board("other", "week", WEEK, "care", 10, weight=3) == []


def test_opted_out_people_are_on_no_value_board(ch: ClickHouse) -> None:
    stored(ch, EFFECTS, times=1)
    record = DirectoryRecord("acme", "bob", updated_at=WEEK, opted_out=True)
    DirectoryStore(ch).write([DirectoryRow(record, 0, 1)])
    board = StateStore(ch).value_board("acme", "all", 0, "care", 10, weight=3)
    assert [(e.rank, e.user_id) for e in board] == [(1, "cy"), (2, "vic")]


def test_forget_takes_their_value_rows_and_keeps_others_counts(ch: ClickHouse) -> None:
    stored(ch, EFFECTS)
    touched = erase_person(ch, "acme", "vic", TOKEN)
    assert touched["value_thanks"] > 0
    want = {k: v for k, v in reference(EFFECTS).items() if k[4] != "vic"}
    assert value_scores(ch) == want  # cy's distinct thankers still count vic (as the token)
    named = ch.query(
        "SELECT count() FROM kudos.value_thanks WHERE user_id = 'vic' OR thanker_id = 'vic'"
    )
    assert named == [(0,)]
    assert erase_person(ch, "acme", "vic", TOKEN)["value_thanks"] == 0


def test_thanks_the_collusion_audit_took_back_leave_the_value_boards(ch: ClickHouse) -> None:
    stored(ch, EFFECTS)
    row = dict.fromkeys(REVERSALS.columns, "")
    row.update(
        org_id="acme",
        week_start=ms_to_dt(WEEK),
        event_id="e2",
        actor_id="cy",
        recipient_id="bob",
        src_topic="collab.events",
        src_partition=0,
        src_offset=2,
        occurred_at_ms=WEEK + 2 * 3_600_000,
        was="counted",
        now="collusion",
        delta=-1,
        rule="reciprocal",
        group_members=["bob", "cy"],
        rule_version=1,
        drop_thanker=[],
        audited_at=ms_to_dt(WEEK + 8 * 86_400_000),
    )
    ch.insert(REVERSALS.qualified, REVERSALS.columns, [tuple(row.values())])
    kept = [e for e in EFFECTS if (e.offset, e.metric) != (2, Metric.THANKS_RECEIVED)]
    assert value_scores(ch) == reference(kept)
    board = StateStore(ch).value_board("acme", "week", WEEK, "care", 10, weight=3)
    top = board[0]
    assert (top.user_id, top.thanks_received, top.distinct_thankers) == ("bob", 2, 1)


def test_value_boards_page_and_rank_by_metric(ch: ClickHouse) -> None:
    more = [*EFFECTS, *thanks(7, "dee", "vic", ("care",)), *thanks(8, "eve", "vic", ("care",))]
    stored(ch, more, times=1)
    store = StateStore(ch)

    def board(**kw: Any) -> list[tuple[int, str, int]]:
        got = store.value_board("acme", "all", 0, "care", kw.pop("top", 10), 3, **kw)
        return [(e.rank, e.user_id, e.distinct_thankers) for e in got]

    # bob: 3 thanks from 2 people; vic: 3 from 3; cy: 1.
    assert board() == [(1, "bob", 2), (2, "vic", 3), (3, "cy", 1)]  # score, then user id
    assert board(metric="distinct_thankers") == [(1, "vic", 3), (2, "bob", 2), (3, "cy", 1)]
    assert board(metric="shares") == [(1, "bob", 2), (2, "cy", 1), (3, "vic", 3)]  # all 0
    assert board(top=1, offset=1) == [(2, "vic", 3)]
    assert board(offset=5) == []
