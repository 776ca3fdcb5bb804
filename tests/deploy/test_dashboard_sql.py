"""Every ClickHouse query in the Grafana dashboards runs against the real schema.

The numbered migrations are applied to the session's chdb engine (ClickHouse 26.x, as in
tests/conftest.py), a small known data set is inserted through the base tables, and each
panel's SQL (and each ClickHouse template variable's) is executed after replacing the
Grafana variables and the ClickHouse data source's macros the way Grafana and the plugin
do (grafana/clickhouse-datasource pkg/macros). A column or table that does not exist, a
function ClickHouse does not know, or a macro the plugin does not expand fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sinks.clickhouse import ChdbClickHouse, ClickHouseError
from sinks.migrate import apply_migrations
from sinks.tables import BADGE_AWARD_ROWS, LEADER_ROWS, SCORE_STATE
from tests.deploy.test_deploy import DASHBOARDS, all_panels, clickhouse_queries

CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
LEADERBOARDS = next(p for p in DASHBOARDS if p.name == "leaderboards.json")

# The dashboard's time range in these tests: the 7 days up to Wednesday 2024-05-15 12:34:56Z.
NOW = datetime(2024, 5, 15, 12, 34, 56, tzinfo=UTC)
FROM = NOW - timedelta(days=7)
INTERVAL_S = 3600
ORG = "acme"

# Window starts that hold NOW (UTC; weeks start on Monday).
HOUR = datetime(2024, 5, 15, 12, tzinfo=UTC)
DAY = datetime(2024, 5, 15, tzinfo=UTC)
WEEK = datetime(2024, 5, 13, tzinfo=UTC)
MONTH = datetime(2024, 5, 1, tzinfo=UTC)
QUARTER = datetime(2024, 4, 1, tzinfo=UTC)
YEAR = datetime(2024, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# acme's users in every window that holds NOW, by score; ties are broken by user_id.
SCORES = {"ana": 9, "bo": 7, "cy": 7, "di": 3}


# --- Grafana variables and the ClickHouse data source's macros ------------------------------


def _dt(t: datetime) -> str:
    return f"toDateTime({int(t.timestamp())})"


def _dt64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(t.timestamp() * 1000)})"


def _date(t: datetime) -> str:
    return f"toDate('{t:%Y-%m-%d}')"


def _between(column: str, lo: str, hi: str) -> str:
    return f"{column} >= {lo} AND {column} <= {hi}"


# What the plugin's macros expand to (pkg/macros/macros.go), for the range FROM .. NOW.
MACROS: dict[str, Any] = {
    "fromTime": lambda: _dt(FROM),
    "toTime": lambda: _dt(NOW),
    "fromTime_ms": lambda: _dt64(FROM),
    "toTime_ms": lambda: _dt64(NOW),
    "timeFilter": lambda c: _between(c, _dt(FROM), _dt(NOW)),
    "timeFilter_ms": lambda c: _between(c, _dt64(FROM), _dt64(NOW)),
    "dateFilter": lambda c: _between(c, _date(FROM), _date(NOW)),
    "dateTimeFilter": lambda d, t: (
        f"({_between(d, _date(FROM), _date(NOW))}) AND ({_between(t, _dt(FROM), _dt(NOW))})"
    ),
    "dt": lambda d, t: MACROS["dateTimeFilter"](d, t),
    "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {INTERVAL_S} second)",
    "timeInterval_ms": lambda c: (
        f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {INTERVAL_S * 1000} millisecond)"
    ),
    "interval_s": lambda: str(INTERVAL_S),
}
# Grafana's own global variables (interpolated before the plugin sees the query).
GLOBALS = {
    "__from": str(int(FROM.timestamp() * 1000)),
    "__to": str(int(NOW.timestamp() * 1000)),
    "__interval_ms": str(INTERVAL_S * 1000),
    "__range_s": str(int((NOW - FROM).total_seconds())),
}

_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")


def interpolate(sql: str, variables: dict[str, str]) -> str:
    """`sql` as ClickHouse receives it: dashboard variables first, then the plugin's macros."""
    values = {**variables, **GLOBALS}

    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        if name.startswith("__") and name not in GLOBALS:
            return m.group(0)  # a macro: the plugin expands it below
        if name not in values:
            raise AssertionError(f"unknown variable ${name} in {sql!r}")
        fmt = m.group(2)
        value = values[name]
        if fmt in (None, "raw", "text"):
            return value
        if fmt == "singlequote":
            return "'" + value.replace("'", "\\'") + "'"
        if fmt == "sqlstring":
            return "'" + value.replace("'", "''") + "'"
        raise AssertionError(f"variable format {fmt!r} is not handled here: {m.group(0)}")

    def macro(m: re.Match[str]) -> str:
        name, args = m.group(1), m.group(2)
        if name not in MACROS:
            raise AssertionError(f"the ClickHouse data source has no macro $__{name}: {sql!r}")
        arguments = [a.strip() for a in args.split(",")] if args else []
        return str(MACROS[name](*arguments))

    return _MACRO.sub(macro, _VARIABLE.sub(variable, sql))


def test_interpolate_expands_variables_and_macros() -> None:
    sql = interpolate(
        "SELECT $__timeInterval(t) FROM x WHERE org = '${org}' AND $__timeFilter(t) "
        "AND w = '$window' AND u IN (${users:singlequote}) LIMIT ${top}",
        {"org": "acme", "window": "week", "users": "a", "top": "10"},
    )
    f, n = int(FROM.timestamp()), int(NOW.timestamp())
    assert sql == (
        "SELECT toStartOfInterval(toDateTime(t), INTERVAL 3600 second) FROM x WHERE "
        f"org = 'acme' AND t >= toDateTime({f}) AND t <= toDateTime({n}) "
        "AND w = 'week' AND u IN ('a') LIMIT 10"
    )
    with pytest.raises(AssertionError, match="no macro"):
        interpolate("SELECT $__timeFilterr(t)", {})
    with pytest.raises(AssertionError, match="unknown variable"):
        interpolate("SELECT '${orgg}'", {"org": "acme"})


# --- the dashboards' ClickHouse queries -------------------------------------------------


def _dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def variable_options(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Values each template variable can take: custom options, or the data's org for `org`."""
    options: dict[str, list[str]] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        if variable["type"] == "custom":
            options[name] = [o["value"] for o in variable["options"]]
            assert variable["current"]["value"] in options[name], name
        elif (variable.get("datasource") or {}).get("type") == "prometheus":
            continue  # a Prometheus variable: SQL that used it fails as an unknown variable
        elif variable["type"] == "query" and name == "org":
            options[name] = [ORG]
        elif variable["type"] in ("query", "constant", "textbox"):
            value = variable.get("current", {}).get("value") or variable.get("query")
            assert isinstance(value, str) and value, f"${name}: no value to test with"
            options[name] = [value]
    return options


def clickhouse_cases() -> Iterator[Any]:
    """(dashboard, where, SQL, variables) for every ClickHouse query and variable value."""
    for path in DASHBOARDS:
        dashboard = _dashboard(path)
        options = variable_options(dashboard)
        for where, sql in clickhouse_queries(dashboard):
            used = [n for n in options if re.search(rf"\$\{{?{n}\b|\[\[{n}\]\]", sql)]
            # Every value of the variables a query uses (one at a time), the defaults otherwise.
            defaults = {n: options[n][0] for n in options}
            if "window" in options:
                defaults["window"] = "week"
            combos = [defaults] + [
                {**defaults, n: v} for n in used for v in options[n] if v != defaults[n]
            ]
            for variables in combos:
                label = ",".join(f"{n}={variables[n]}" for n in used)
                yield pytest.param(
                    path.name, where, sql, variables, id=f"{path.stem}:{where}[{label}]"
                )


def _timeseries(dashboard: dict[str, Any]) -> set[str]:
    return {
        t["rawSql"]
        for p in all_panels(dashboard)
        for t in p.get("targets", [])
        if t.get("rawSql") is not None and t.get("format") == 0
    }


# --- a migrated ClickHouse with known data -----------------------------------------------


def _ts(t: datetime) -> str:
    return f"'{t:%Y-%m-%d %H:%M:%S}'"


@pytest.fixture(scope="module")
def leaderboard_db(chdb_session: ChdbClickHouse) -> ChdbClickHouse:
    ch = chdb_session
    ch.execute("DROP DATABASE IF EXISTS kudos SYNC")
    apply_migrations(ch)

    def state(org: str, window: str, start: datetime, user: str, score: int, version: int) -> str:
        # shares, thanks_given, thanks_received, distinct_thankers, reactions_received, score
        counts = f"{score % 2}, 1, {score // 3}, {score // 3}, 0, {score}"
        return (
            f"('{org}', '{window}', {_ts(start)}, '{user}', {counts}, [0], [{version}], "
            f"{version}, {_ts(NOW)})"
        )

    rows = []
    holding_now = (
        ("hour", HOUR),
        ("day", DAY),
        ("week", WEEK),
        ("month", MONTH),
        ("quarter", QUARTER),
        ("year", YEAR),
        ("all", EPOCH),
    )
    for window, start in holding_now:
        for user, score in SCORES.items():
            # An older version of the row first: kudos.scores must show only the newest.
            rows.append(state(ORG, window, start, user, score - 1, 1))
            rows.append(state(ORG, window, start, user, score, 2))
        rows.append(state("other", window, start, "zed", 100, 1))
    for days_ago in range(1, 7):
        start = DAY - timedelta(days=days_ago)
        for user, score in SCORES.items():
            rows.append(state(ORG, "day", start, user, score + days_ago, 1))
        rows.append(state(ORG, "hour", start + timedelta(hours=9), "ana", days_ago, 1))
    rows.append(state(ORG, "week", WEEK - timedelta(days=7), "bo", 40, 1))
    ch.execute(
        f"INSERT INTO {SCORE_STATE.qualified} ({LEADER_ROWS.column_list()}) VALUES "
        + ", ".join(rows)
    )

    awards = []
    for user, badge, period, when in (
        ("ana", "first_thanks", EPOCH, NOW - timedelta(days=5)),
        ("bo", "first_thanks", EPOCH, NOW - timedelta(days=3)),
        ("ana", "helper", WEEK, NOW - timedelta(hours=2)),
        ("cy", "streak_5", DAY, NOW - timedelta(hours=1)),
        ("di", "sharer", WEEK - timedelta(days=7), NOW - timedelta(days=30)),  # out of range
    ):
        for delay in (0, 60):  # a replayed award: the view keeps the first awarded_at
            awards.append(
                f"('{ORG}', '{user}', '{badge}', {_ts(period)}, "
                f"{_ts(when + timedelta(seconds=delay))}, 1, '')"
            )
    ch.execute(
        f"INSERT INTO {BADGE_AWARD_ROWS.qualified} ({BADGE_AWARD_ROWS.column_list()}) VALUES "
        + ", ".join(awards)
    )
    return ch


# --- tests -------------------------------------------------------------------------------


def test_the_dashboards_hold_clickhouse_queries() -> None:
    dashboard = _dashboard(LEADERBOARDS)
    queries = list(clickhouse_queries(dashboard))
    assert len(queries) >= 8, queries
    panels = [p for p in all_panels(dashboard) if p.get("targets")]
    for panel in panels:
        for target in panel["targets"]:
            ds = target.get("datasource") or panel.get("datasource")
            assert ds == {"type": CLICKHOUSE_TYPE, "uid": "clickhouse"}, panel["title"]
            assert target.get("editorType") == "sql" and target.get("format") in (0, 1)
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"org", "window"} <= names
    sql = "\n".join(sql for _, sql in queries)
    assert "kudos.scores" in sql and "kudos.badge_awards" in sql


def test_a_wrong_column_fails_the_harness(leaderboard_db: ChdbClickHouse) -> None:
    """The check is only as good as ClickHouse's refusal of a name that does not exist."""
    with pytest.raises(ClickHouseError):
        leaderboard_db.query("SELECT thanks FROM kudos.scores")
    with pytest.raises(ClickHouseError):
        leaderboard_db.query("SELECT user_id FROM kudos.badges")


@pytest.mark.parametrize(("dashboard", "where", "sql", "variables"), list(clickhouse_cases()))
def test_clickhouse_query_runs_on_the_migrated_schema(
    leaderboard_db: ChdbClickHouse,
    dashboard: str,
    where: str,
    sql: str,
    variables: dict[str, str],
) -> None:
    statement = interpolate(sql, variables)
    try:
        rows = leaderboard_db.query(statement)
    except ClickHouseError as exc:
        pytest.fail(f"{dashboard}: {where}: {exc}\n{statement}")
    assert rows, f"{dashboard}: {where}: no rows from the test data\n{statement}"
    if sql in _timeseries(_dashboard(next(p for p in DASHBOARDS if p.name == dashboard))):
        # The data source builds time series from a DateTime column, `time` by convention.
        columns = leaderboard_db.query(f"DESCRIBE ({statement})")
        name, type_ = columns[0][0], columns[0][1]
        assert name == "time" and type_.startswith("DateTime"), (where, columns)


def _panel_sql(title_start: str) -> str:
    for title, sql in clickhouse_queries(_dashboard(LEADERBOARDS)):
        if title.startswith(title_start):
            return sql
    raise AssertionError(f"no panel titled {title_start!r}...")


def _run(ch: ChdbClickHouse, sql: str, **variables: str) -> list[tuple[Any, ...]]:
    values = {"org": ORG, "window": "week", "top": "10", **variables}
    return ch.query(interpolate(sql, values))


@pytest.mark.parametrize("window", ["hour", "day", "week", "all"])
def test_leaderboard_panel_ranks_the_window_that_holds_the_range_end(
    leaderboard_db: ChdbClickHouse, window: str
) -> None:
    rows = _run(leaderboard_db, _panel_sql("Leaderboard"), window=window)
    ranked = sorted(SCORES, key=lambda u: (-SCORES[u], u))
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (i + 1, u, SCORES[u]) for i, u in enumerate(ranked)
    ]
    assert len(_run(leaderboard_db, _panel_sql("Leaderboard"), window=window, top="2")) == 2


def test_fixed_window_boards_and_org_variable(leaderboard_db: ChdbClickHouse) -> None:
    expected = [("ana", 9), ("bo", 7), ("cy", 7), ("di", 3)]
    assert _run(leaderboard_db, _panel_sql("Top ${top} this week")) == expected
    assert _run(leaderboard_db, _panel_sql("Top ${top} today")) == expected
    assert _run(leaderboard_db, _panel_sql("$org")) == [("acme",), ("other",)]


def test_badge_panels_count_each_award_once_within_the_range(
    leaderboard_db: ChdbClickHouse,
) -> None:
    assert _run(leaderboard_db, _panel_sql("Badges awarded in the time range")) == [(4,)]
    latest = _run(leaderboard_db, _panel_sql("Latest badge awards"))
    assert [(r[1], r[2]) for r in latest] == [
        ("cy", "streak_5"),
        ("ana", "helper"),
        ("bo", "first_thanks"),
        ("ana", "first_thanks"),
    ]
    per_badge = _run(leaderboard_db, _panel_sql("Badges awarded by badge"))
    assert sum(r[2] for r in per_badge) == 4
