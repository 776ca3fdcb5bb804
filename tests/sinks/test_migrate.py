"""Numbered migrations: shape of the files (no I/O) and applying them on both backends."""

from __future__ import annotations

import re

import pytest

from sinks.clickhouse import ClickHouse
from sinks.migrate import (
    applied_versions,
    apply_migrations,
    load_migrations,
    pending_migrations,
    statement_of,
)

SCORES_COLUMNS = [
    "org_id",
    "window",
    "window_start",
    "user_id",
    "shares",
    "thanks_given",
    "thanks_received",
    "distinct_thankers",
    "reactions_received",
    "score",
]
BADGE_AWARDS_COLUMNS = ["org_id", "user_id", "badge", "period_start", "awarded_at"]


# --- files (unit) ----------------------------------------------------------------------


def test_migrations_are_numbered_without_gaps_and_explain_why() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[4].name == "0005_scores_view"
    assert migrations[5].name == "0006_badge_awards_view"
    from importlib import resources

    for m in migrations:
        text = resources.files("sinks.migrations").joinpath(f"{m.name}.sql").read_text()
        assert text.startswith("-- Why:"), m.name
        # CREATE is guarded; 18.16 cannot guard ALTER ... ADD COLUMN, the runner's record does
        # (and a backfill INSERT run twice only adds rows ReplacingMergeTree collapses).
        assert "IF NOT EXISTS" in m.sql or m.sql.startswith(("ALTER TABLE", "INSERT")), m.name
        assert re.search(r"\bkudos\.", m.sql), m.name
        assert "--" not in m.sql, m.name


def test_statement_of_strips_comments_and_one_trailing_semicolon() -> None:
    assert statement_of("-- Why: x\n  -- more\nSELECT 1;\n") == "SELECT 1"
    assert statement_of("SELECT 1") == "SELECT 1"
    with pytest.raises(ValueError, match="one statement"):
        statement_of("SELECT 1; SELECT 2")
    with pytest.raises(ValueError, match="empty"):
        statement_of("-- only a comment\n")


# --- applying (both backends) ------------------------------------------------------------


def _columns(ch: ClickHouse, table: str) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in ch.query(f"DESCRIBE TABLE {table}")]


@pytest.mark.clickhouse
def test_fixture_database_is_fully_migrated_and_a_rerun_applies_nothing(ch: ClickHouse) -> None:
    names = [m.name for m in load_migrations()]
    assert pending_migrations(ch) == []
    assert applied_versions(ch) == {m.version for m in load_migrations()}
    assert apply_migrations(ch) == []
    assert apply_migrations(ch) == []
    recorded = ch.query("SELECT version, name FROM kudos.schema_migrations ORDER BY version")
    assert [r[1] for r in recorded] == names  # recorded once each, in order


@pytest.mark.clickhouse
def test_apply_on_an_empty_server_creates_everything_in_order(
    ch: ClickHouse, clickhouse_url: str
) -> None:
    sync = " SYNC" if clickhouse_url.startswith("chdb") else ""
    ch.execute("DROP DATABASE kudos" + sync)
    assert pending_migrations(ch) == [m.name for m in load_migrations()]
    assert apply_migrations(ch) == [m.name for m in load_migrations()]
    tables = {
        str(r[0]) for r in ch.query("SELECT name FROM system.tables WHERE database = 'kudos'")
    }
    assert tables == {
        "schema_migrations",
        "decisions",
        "score_state",
        "thankers",
        "badge_award_rows",
        "scores",
        "badge_awards",
        "leader_rows",
        "decayed_scores",
        "directory",
        "replay_scores",
        "erasures",
        "reversals",
        "audits",
        "stream_times",
        "day_scores",
        "day_scores_copy",
        "value_thanks",
        "value_scores",
    }
    # The tables survive a second run untouched (IF NOT EXISTS + tracking).
    ch.insert("kudos.thankers", ["org_id", "user_id"], [("o", "u")])
    assert apply_migrations(ch) == []
    assert ch.query("SELECT count() FROM kudos.thankers") == [(1,)]


@pytest.mark.clickhouse
def test_views_select_exactly_the_columns_their_tables_have(ch: ClickHouse) -> None:
    state = dict(_columns(ch, "kudos.score_state"))
    scores = _columns(ch, "kudos.scores")
    assert [name for name, _ in scores] == SCORES_COLUMNS
    assert all(state[name] == typ for name, typ in scores)

    rows = dict(_columns(ch, "kudos.badge_award_rows"))
    awards = _columns(ch, "kudos.badge_awards")
    assert [name for name, _ in awards] == BADGE_AWARDS_COLUMNS
    assert all(rows[name] == typ for name, typ in awards)


def test_other_database_names_are_refused() -> None:
    class Unused:
        def execute(self, *a: object) -> None:
            raise AssertionError("must not be called")

        query = insert = close = execute

    with pytest.raises(ValueError, match="kudos"):
        apply_migrations(Unused(), database="other")  # type: ignore[arg-type]


def test_leader_rows_backfill_keeps_the_exact_top_1000_of_every_board(ch: ClickHouse) -> None:
    from datetime import datetime

    from sinks.tables import LEADER_ROWS, SCORE_STATE

    start = datetime(2026, 11, 23)
    rows = []
    for i in range(1005):
        for version, score in ((1, 0), (2, i % 700)):  # an older row per key, replaced
            rows.append(
                (
                    "acme",
                    "week",
                    start,
                    f"u{i:04d}",
                    0,
                    0,
                    0,
                    0,
                    0,
                    score,
                    [0],
                    [version],
                    version,
                    start,
                )
            )
    rows.append(("globex", "all", datetime(1970, 1, 1), "x", 0, 0, 0, 0, 0, 5, [0], [1], 1, start))
    ch.insert(SCORE_STATE.qualified, LEADER_ROWS.columns, rows)  # the columns 0009 copies
    (backfill,) = [m for m in load_migrations() if m.name == "0009_leader_rows_backfill"]
    ch.execute(backfill.sql)
    got = ch.query(
        "SELECT user_id, score FROM kudos.leader_rows FINAL WHERE org_id = 'acme' "
        "ORDER BY score DESC, user_id"
    )
    truth = sorted(((f"u{i:04d}", i % 700) for i in range(1005)), key=lambda r: (-r[1], r[0]))
    assert [(str(u), int(s)) for u, s in got] == truth[:1000]
    assert ch.query("SELECT user_id FROM kudos.leader_rows WHERE org_id = 'globex'") == [("x",)]
