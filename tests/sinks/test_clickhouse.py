"""The ClickHouse backends: one contract, checked on chdb 26.x and clickhouse-server 18.16."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from sinks.clickhouse import (
    MUTATION_SET_BYTES,
    ChdbClickHouse,
    ClickHouse,
    ClickHouseError,
    ClickHouseUnavailable,
    ClickHouseUrl,
    NativeClickHouse,
    connect,
    mutation_chunks,
    mutation_statement,
    quote_string,
)
from sinks.tables import BADGE_AWARD_ROWS, DECISIONS, LEADER_ROWS, THANKERS
from tests.services.clickhouse_server import free_port

TRICKY = "it's \\ a \"quote\"\nnew line\ttab — ünïcödé 👍 ' \\' %s %(x)s"
PLUS_TWO = timezone(timedelta(hours=2))

WEEK = datetime(2024, 1, 1)  # a Monday, naive UTC
WEEK_BOARD = "SELECT user_id, score FROM kudos.scores WHERE window = 'week' ORDER BY user_id"


def _select(ch: ClickHouse, table: str, columns: tuple[str, ...], order: str) -> list[Any]:
    cols = ", ".join(f"`{c}`" for c in columns)
    return ch.query(f"SELECT {cols} FROM {table} ORDER BY {order}")


def _state_row(user: str, version: int, score: int, window: str = "week") -> tuple[Any, ...]:
    """A kudos.score_state row of `LEADER_ROWS.columns`, score_state's first columns (the
    decayed score, 0011-0013, takes its defaults)."""
    return (
        "org",
        window,
        WEEK,
        user,
        version,
        0,
        score,
        1,
        0,
        score,
        [0],
        [version],
        version,
        WEEK,
    )


# --- round trips -----------------------------------------------------------------------


@pytest.mark.clickhouse
def test_decisions_round_trip_every_column_type(ch: ClickHouse) -> None:
    occurred = datetime(2024, 2, 29, 23, 59, 58, tzinfo=PLUS_TWO)  # aware, not UTC
    decided = datetime(2024, 3, 1, 0, 0, 1)  # naive = UTC
    row = (
        "org-ü",
        TRICKY,
        "THANKS",
        "alice",
        "",
        1,
        "counted",
        65535,
        occurred,
        -1_234_567_890_123,
        2**63 - 1,
        "chat",
        "",
        "PUBLIC",
        "collab.events",
        4_294_967_295,
        2**64 - 1,
        decided,
        "",
    )
    assert ch.insert("kudos.decisions", DECISIONS.columns, [row]) == 1
    [back] = _select(ch, "kudos.decisions", DECISIONS.columns, "event_id")
    expected = list(row)
    expected[8] = datetime(2024, 2, 29, 21, 59, 58)  # returned as naive UTC
    assert list(back) == expected
    assert [type(v) for v in back] == [type(v) for v in expected]
    # The stored instant and its rendering are UTC on both engines.
    assert ch.query(
        "SELECT toUnixTimestamp(occurred_at), toString(occurred_at), toYYYYMM(decided_at) "
        "FROM kudos.decisions"
    ) == [(int(occurred.timestamp()), "2024-02-29 21:59:58", 202403)]


@pytest.mark.clickhouse
def test_score_state_round_trips_arrays_and_extremes(ch: ClickHouse) -> None:
    rows = [
        ("o", "all", datetime(1970, 1, 1), "u1", 0, 0, 0, 0, 0, -(2**63), [], [], 0, WEEK),
        (
            "o",
            "week",
            WEEK.replace(tzinfo=UTC),
            TRICKY,
            2**64 - 1,
            1,
            2,
            3,
            4,
            2**63 - 1,
            (0, 7, 4_294_967_295),  # tuples are accepted for arrays too
            [-(2**63), 0, 2**63 - 1],
            2**64 - 1,
            datetime(2106, 2, 7, 6, 28, 15),  # the last second DateTime can hold
        ),
    ]
    assert ch.insert("kudos.score_state", LEADER_ROWS.columns, rows) == 2
    back = _select(ch, "kudos.score_state", LEADER_ROWS.columns, "`window`")
    assert back[0] == rows[0]
    assert back[1][:10] == ("o", "week", WEEK, *rows[1][3:10])
    assert back[1][10:] == ([0, 7, 4_294_967_295], [-(2**63), 0, 2**63 - 1], *rows[1][12:])
    assert isinstance(back[1][10], list)


@pytest.mark.clickhouse
def test_thankers_and_badge_rows_round_trip(ch: ClickHouse) -> None:
    ch.insert(THANKERS.qualified, THANKERS.columns, [("o", "day", WEEK, "u", TRICKY)])
    assert ch.query("SELECT thanker_id, window FROM kudos.thankers") == [(TRICKY, "day")]
    award = ("o", "u", "helper", WEEK, datetime(2024, 1, 3, 12), 1, '{"thankers": 5}')
    ch.insert("kudos.badge_award_rows", BADGE_AWARD_ROWS.columns, [award])
    assert _select(ch, "kudos.badge_award_rows", BADGE_AWARD_ROWS.columns, "user_id") == [award]


@pytest.mark.clickhouse
def test_bulk_insert_is_one_statement(ch: ClickHouse) -> None:
    def row(i: int) -> tuple[Any, ...]:
        event = ("o", f"e{i}", "SHARE", f"a{i % 97}", "", 1, "counted", 1, WEEK, i, i)
        return (*event, "wiki", "", "PUBLIC", "t", i % 4, i, WEEK, "")

    rows = [row(i) for i in range(20_000)]
    assert ch.insert("kudos.decisions", DECISIONS.columns, rows) == 20_000
    totals = "SELECT count(), uniqExact(event_id), sum(src_offset) FROM kudos.decisions"
    assert ch.query(totals) == [(20_000, 20_000, sum(range(20_000)))]
    assert ch.insert("kudos.decisions", DECISIONS.columns, []) == 0


@pytest.mark.clickhouse
def test_insert_columns_takes_lists_numpy_and_arrow(ch: ClickHouse) -> None:
    """Columns of any kind insert as the same rows as `insert`; DateTime columns may hold
    epoch seconds; columns of different lengths are refused."""
    import numpy as np
    import pyarrow as pa

    week_s = int(WEEK.replace(tzinfo=UTC).timestamp())
    data = [
        pa.array(["o", "o"]),
        ["week", "all"],
        np.array([week_s, 0], dtype=np.int64),
        np.array([TRICKY, "u2"], dtype=object),
        np.array([2**64 - 1, 1], dtype=np.uint64),
        *([np.array([1, 2])] * 5),
        [[0, 7], []],
        [[-(2**63), 3], []],
        np.array([5, 6], dtype=np.uint64),
        np.array([week_s, week_s], dtype=np.int64),
    ]
    assert ch.insert_columns("kudos.score_state", LEADER_ROWS.columns, data) == 2
    back = _select(ch, "kudos.score_state", LEADER_ROWS.columns, "`window` DESC")
    assert back[0] == (
        "o",
        "week",
        WEEK,
        TRICKY,
        2**64 - 1,
        1,
        1,
        1,
        1,
        1,
        [0, 7],
        [-(2**63), 3],
        5,
        WEEK,
    )
    assert back[1][:4] == ("o", "all", datetime(1970, 1, 1), "u2")
    assert ch.insert_columns("kudos.score_state", LEADER_ROWS.columns, [[]] * 14) == 0
    with pytest.raises(ClickHouseError):
        ch.insert_columns("kudos.score_state", LEADER_ROWS.columns, [["o"], []] + [["x"]] * 12)


# --- views -----------------------------------------------------------------------------


@pytest.mark.clickhouse
def test_scores_view_shows_the_highest_version_once_before_any_merge(ch: ClickHouse) -> None:
    # Separate inserts = separate parts; the newest state arrives in the middle, and
    # a replay re-inserts an older state and an exact duplicate of the newest one.
    # chdb merges small parts within milliseconds: hold merges to see the unmerged state.
    ch.execute("SYSTEM STOP MERGES kudos.score_state")
    for version, score in [(1, 10), (3, 30), (2, 20), (3, 30), (1, 10)]:
        ch.insert("kudos.score_state", LEADER_ROWS.columns, [_state_row("alice", version, score)])
    ch.insert("kudos.score_state", LEADER_ROWS.columns, [_state_row("bob", 5, 7)])
    ch.insert("kudos.score_state", LEADER_ROWS.columns, [_state_row("alice", 9, 99, window="day")])
    assert ch.query("SELECT count() FROM kudos.score_state") == [(7,)]  # not merged

    assert ch.query("SELECT * FROM kudos.scores ORDER BY window, user_id") == [
        ("org", "day", WEEK, "alice", 9, 0, 99, 1, 0, 99),
        ("org", "week", WEEK, "alice", 3, 0, 30, 1, 0, 30),
        ("org", "week", WEEK, "bob", 5, 0, 7, 1, 0, 7),
    ]
    assert sorted(ch.query("SELECT window FROM kudos.scores")) == [("day",), ("week",), ("week",)]
    assert ch.query(
        "SELECT user_id, score FROM kudos.scores WHERE window = 'week' ORDER BY user_id"
    ) == [
        ("alice", 30),
        ("bob", 7),
    ]
    # A filter on a non-key column must not see an older state of the key.
    assert ch.query("SELECT user_id FROM kudos.scores WHERE score < 25 ORDER BY user_id") == [
        ("bob",)
    ]
    assert ch.query(
        "SELECT user_id, score FROM kudos.scores "
        "WHERE org_id = %(org)s AND window = %(w)s AND window_start = %(start)s "
        "ORDER BY score DESC, user_id LIMIT %(top)s",
        {"org": "org", "w": "week", "start": WEEK.replace(tzinfo=UTC), "top": 1},
    ) == [("alice", 30)]
    ch.execute("SYSTEM START MERGES kudos.score_state")
    ch.execute("OPTIMIZE TABLE kudos.score_state FINAL")
    assert ch.query("SELECT count() FROM kudos.score_state") == [(3,)]
    assert ch.query(
        "SELECT user_id, score FROM kudos.scores WHERE window = 'week' ORDER BY user_id"
    ) == [
        ("alice", 30),
        ("bob", 7),
    ]


@pytest.mark.clickhouse
def test_badge_awards_view_has_one_row_per_award_with_the_first_time(ch: ClickHouse) -> None:
    first = datetime(2024, 1, 3, 9)
    ch.execute("SYSTEM STOP MERGES kudos.badge_award_rows")
    for hours in (5, 0, 2):  # the replays insert the same award later
        ch.insert(
            "kudos.badge_award_rows",
            BADGE_AWARD_ROWS.columns,
            [("o", "u", "helper", WEEK, first + timedelta(hours=hours), 1, "")],
        )
    ch.insert(
        "kudos.badge_award_rows",
        BADGE_AWARD_ROWS.columns,
        [("o", "u", "sharer", WEEK, first, 1, "")],
    )
    assert ch.query("SELECT count() FROM kudos.badge_award_rows") == [(4,)]
    assert ch.query("SELECT * FROM kudos.badge_awards ORDER BY badge") == [
        ("o", "u", "helper", WEEK, first),
        ("o", "u", "sharer", WEEK, first),
    ]
    assert (
        ch.query("SELECT badge FROM kudos.badge_awards WHERE awarded_at > %(t)s", {"t": first})
        == []
    )


# --- parameters ------------------------------------------------------------------------
#
# No value is written into SQL text (sinks/clickhouse.py): chdb binds query parameters,
# the native protocol sends external tables. tests/sinks/test_sql_text.py checks the
# text itself; these check what ClickHouse sees.

# Text that escaping has to get right in both of ClickHouse's text formats.
EDGES = [
    "",
    "'",
    "\\",
    "\\'",
    "''",
    "\\\\'",
    "ab\\",
    "\t",
    "\n",
    "\r\n",
    "\0",
    "a\0b",
    "\x01\x07\x08\x0b\x0c\x1b\x1f\x7f",
    "\\N",
    "\\x41",
    "%s %(x)s %% %",
    "{x:String} {y} }{",
    "?",
    "😀 𝄞 — ü",
    "\u2028\u2029\ufeff",
    TRICKY,
]
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=120)
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _hex(value: str) -> str:
    return value.encode().hex().upper()


@pytest.mark.clickhouse
def test_parameters_are_bound_values_not_sql(ch: ClickHouse) -> None:
    value = "o'brien \\' \\\\ '; DROP TABLE kudos.decisions; --"
    assert ch.query("SELECT %(v)s, length(%(v)s)", {"v": value}) == [(value, len(value))]
    assert ch.query("SELECT %(v)s", {"v": TRICKY}) == [(TRICKY,)]
    ch.insert("kudos.thankers", ("org_id", "user_id", "thanker_id"), [(value, "u", TRICKY)])
    assert ch.query(
        "SELECT thanker_id FROM kudos.thankers WHERE org_id = %(org)s AND thanker_id IN %(t)s",
        {"org": value, "t": (TRICKY, "x")},
    ) == [(TRICKY,)]
    assert ch.query(
        "SELECT %(n)s + 1, %(f)s, %(a)s, toUnixTimestamp(%(naive)s), toUnixTimestamp(%(aware)s)",
        {
            "n": -(2**62),
            "f": 0.5,
            "a": ["x'", "y"],
            "naive": datetime(2024, 1, 1),
            "aware": datetime(2024, 1, 1, 2, tzinfo=PLUS_TWO),
        },
    ) == [(-(2**62) + 1, 0.5, ["x'", "y"], 1704067200, 1704067200)]
    # Without parameters the statement is sent as written (no %-formatting).
    assert ch.query("SELECT '100%'") == [("100%",)]
    # What looks like a placeholder of either backend inside a value is just text.
    assert ch.query("SELECT %(a)s, %(b)s", {"a": "{b:String}", "b": "%(a)s"}) == [
        ("{b:String}", "%(a)s")
    ]


@pytest.mark.clickhouse
def test_every_parameter_type(ch: ClickHouse) -> None:
    naive, aware = datetime(2024, 2, 29, 23, 59, 58), datetime(2024, 3, 1, 1, 59, 58, 999_999)
    row = ch.query(
        "SELECT %(s)s, %(d)s, %(aware)s, %(lo)s, %(hi)s, %(f)s, %(t)s, %(false)s, "
        "%(strs)s, %(dates)s, %(ints)s, %(floats)s, %(empty)s",
        {
            "s": "ü",
            "d": naive,
            "aware": aware.replace(tzinfo=PLUS_TWO),  # = naive + 0.999999 s, in UTC
            "lo": -(2**63),
            "hi": 2**64 - 1,
            "f": -1.5e-300,
            "t": True,
            "false": False,
            "strs": ["a'", "", "\\"],
            "dates": [naive, datetime(1970, 1, 1), datetime(2106, 2, 7, 6, 28, 15)],
            "ints": [-(2**63), 0, 2**63 - 1],
            "floats": [0.25, -2.0],
            "empty": [],
        },
    )
    assert row == [
        (
            "ü",
            naive,
            naive,  # DateTime holds whole seconds
            -(2**63),
            2**64 - 1,
            -1.5e-300,
            1,
            0,
            ["a'", "", "\\"],
            [naive, datetime(1970, 1, 1), datetime(2106, 2, 7, 6, 28, 15)],
            [-(2**63), 0, 2**63 - 1],
            [0.25, -2.0],
            [],
        )
    ]
    assert ch.query("SELECT %(big)s", {"big": [2**64 - 1, 0]}) == [([2**64 - 1, 0],)]
    # A negative number right after a minus is no `--` comment.
    assert ch.query(
        "SELECT 1-%(n)s, 2-%(f)s, toTypeName(%(lo)s)", {"n": -1, "f": -0.5, "lo": -(2**63)}
    ) == [(2, 2.5, "Int64")]
    inf, nan = ch.query("SELECT %(inf)s, %(nan)s", {"inf": float("-inf"), "nan": float("nan")})[0]
    assert inf == float("-inf") and math.isnan(nan)
    # Tuples are sets for IN: of strings, of datetimes (bound), of numbers (literals, so
    # that they match any integer column, as 18.16 compares IN set types exactly).
    count = "SELECT count() FROM numbers(10) WHERE "
    assert ch.query(count + "toString(number) IN %(t)s", {"t": ("1", "3", "x")}) == [(2,)]
    assert ch.query(count + "toString(number) NOT IN %(t)s", {"t": ("1",)}) == [(9,)]
    seconds = (datetime(1970, 1, 1, 0, 0, 3), datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC))
    assert ch.query(count + "toDateTime(number) IN %(t)s", {"t": seconds}) == [(2,)]
    assert ch.query(count + "number IN %(t)s", {"t": (1, 2, 2**64 - 1)}) == [(2,)]
    assert ch.query(count + "toUInt8(number) IN %(t)s", {"t": (True,)}) == [(1,)]
    # One parameter used several times, at several depths of subqueries.
    assert ch.query(
        "SELECT %(v)s, (SELECT count() FROM numbers(3) WHERE toString(number) != %(v)s) "
        "FROM system.one WHERE %(v)s IN (SELECT toString(number) FROM numbers(3) "
        "WHERE toString(number) = %(v)s)",
        {"v": "2"},
    ) == [("2", 2)]


@pytest.mark.clickhouse
def test_percent_signs(ch: ClickHouse) -> None:
    assert ch.query("SELECT '100%%', %(v)s LIKE 'a%%'", {"v": "abc"}) == [("100%", 1)]
    assert ch.query("SELECT '%%%%(v)s'", {}) == [("%%(v)s",)]
    for bad in ("SELECT '100%', %(v)s", "SELECT %(v)d", "SELECT %s"):
        with pytest.raises(ClickHouseError, match="%"):
            ch.query(bad, {"v": 1})


@pytest.mark.clickhouse
def test_unsupported_values_are_refused(ch: ClickHouse) -> None:
    from datetime import date
    from decimal import Decimal

    bad: list[Any] = [
        None,
        b"bytes",
        {"a": 1},
        {"a"},
        date(2024, 1, 1),
        Decimal("1.5"),
        ["a", 1],
        [["nested"]],
        ("a", None),
        (),  # no element type, and `IN ()` is no SQL on 18.16
        "\ud800",  # a lone surrogate has no UTF-8 form
        2**64,
        -(2**63) - 1,
        datetime(1969, 12, 31, 23, 59, 59),
        datetime(2106, 2, 7, 6, 28, 16),
    ]
    for value in bad:
        with pytest.raises(ClickHouseError, match="parameter v"):
            ch.query("SELECT %(v)s", {"v": value})
    with pytest.raises(ClickHouseError, match="not given"):
        ch.query("SELECT %(missing)s", {"other": 1})
    with pytest.raises(ClickHouseError, match="parameter name"):
        ch.query("SELECT %(a-b)s", {"a-b": 1})
    # Parameters the statement does not name are not looked at (as with %-formatting).
    assert ch.query("SELECT %(a)s", {"a": 1, "unused": None}) == [(1,)]
    assert ch.query("SELECT 1") == [(1,)]  # still usable


@pytest.mark.clickhouse
def test_big_values_round_trip_without_max_query_size(ch: ClickHouse) -> None:
    """ClickHouse parses at most max_query_size (256 KiB) of SQL text; bound values are
    not SQL text: a 300,000-character id and a 50,000-element set go through."""
    huge = "x'\\" * 100_000
    ids = [f"user-{i}-é'" for i in range(50_000)]
    ch.insert(
        "kudos.thankers",
        ("org_id", "user_id", "thanker_id"),
        [("o", huge, "t"), ("o", ids[7], "t"), ("o", "other", "t")],
    )
    assert ch.query(
        "SELECT length(%(u)s), count() FROM kudos.thankers WHERE user_id = %(u)s", {"u": huge}
    ) == [(300_000, 1)]
    assert ch.query(
        "SELECT user_id FROM kudos.thankers WHERE org_id = %(o)s AND user_id IN %(ids)s "
        "ORDER BY user_id",
        {"o": "o", "ids": (*ids, huge)},
    ) == [(ids[7],), (huge,)]
    assert ch.query(
        "SELECT user_id FROM kudos.thankers WHERE user_id NOT IN %(ids)s", {"ids": (*ids, huge)}
    ) == [("other",)]
    assert ch.query("SELECT length(%(a)s)", {"a": ids}) == [(50_000,)]


@pytest.mark.clickhouse
def test_a_set_of_megabytes_is_a_hash_set(ch: ClickHouse) -> None:
    """chdb 4.4 compares `x IN <constant array>` of more than 1 MiB element by element (a
    100,000-id set over 200,000 rows took 138 s); bound sets are read as subqueries, whose
    sets are hashed at any size. Generous bound: well under a second here."""
    ch.execute(
        "INSERT INTO kudos.thankers (org_id, user_id, thanker_id) "
        "SELECT 'o', concat('user-', toString(number)), 't' FROM numbers(50000)"
    )
    ids = tuple(f"user-{i * 2}" for i in range(100_000))  # 1.3 MB of set
    start = time.monotonic()
    assert ch.query(
        "SELECT count() FROM kudos.thankers WHERE org_id = %(o)s AND user_id IN %(ids)s",
        {"o": "o", "ids": ids},
    ) == [(25_000,)]
    assert time.monotonic() - start < 20


@PROPERTY
@given(value=ANY_TEXT, values=st.lists(ANY_TEXT, min_size=1, max_size=6))
@example(value="a" * 70_000, values=EDGES)
@example(value="\\" * 1000 + "'" * 1000, values=["\\" * 1000, "\n" * 1000])
def test_any_text_round_trips_as_string_array_and_set(
    ch: ClickHouse, value: str, values: list[str]
) -> None:
    """What ClickHouse sees (hex of its bytes) is the value's UTF-8, whatever the text."""
    rows = ch.query(
        "SELECT hex(%(v)s), %(v)s, length(%(v)s), arrayMap(x -> hex(x), %(a)s), %(a)s, "
        "%(v)s IN %(t)s, %(first)s IN %(t)s",
        {"v": value, "a": values, "t": tuple(values), "first": values[0]},
    )
    assert rows == [
        (
            _hex(value),
            value,
            len(value.encode()),
            [_hex(x) for x in values],
            values,
            int(value in values),
            1,
        )
    ]


@PROPERTY
@given(values=st.lists(ANY_TEXT, min_size=1, max_size=6))
@example(values=EDGES)
def test_literals_of_the_mutation_path_round_trip(ch: ClickHouse, values: list[str]) -> None:
    """`quote_string`, the one escaping that writes values into SQL text (mutations on
    the native protocol), read back exactly by 18.16 and 26.x."""
    literals = ", ".join(quote_string(v) for v in values)
    assert ch.query(f"SELECT arrayMap(x -> hex(x), [{literals}])") == [([_hex(v) for v in values],)]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(ANY_TEXT | st.sampled_from(EDGES), min_size=1, max_size=8))
def test_arrays_are_escaped_as_their_elements_one_by_one(values: list[str]) -> None:
    """chdb's Array text is escaped in one pass over the joined values (fast for 10k ids);
    it equals quoting them one by one, which the round trips above check on ClickHouse."""
    from sinks.clickhouse import _quoted_strings

    assert _quoted_strings(values) == ",".join(quote_string(v) for v in values)


# --- mutations: the one path that writes values into SQL text -------------------------


@pytest.mark.clickhouse
def test_mutations_take_their_own_named_path(ch: ClickHouse) -> None:
    from sinks.erase import mutate

    rows = [("o'rg", "u", t) for t in (TRICKY, "x", "\\", "keep")]
    ch.insert("kudos.thankers", ("org_id", "user_id", "thanker_id"), rows)
    mutate(
        ch,
        "thankers",
        "DELETE WHERE org_id = %(org)s AND thanker_id IN %(t)s",
        {"org": "o'rg", "t": (TRICKY, "x", "\\")},
    )
    assert ch.query("SELECT thanker_id FROM kudos.thankers") == [("keep",)]
    # A mutation with parameters anywhere else is refused (on the native protocol the
    # server would look for an external table the stored mutation cannot have).
    delete = "ALTER TABLE kudos.thankers DELETE WHERE org_id = %(org)s"
    with pytest.raises(ClickHouseError, match="execute_mutation"):
        ch.execute(delete, {"org": "x"})
    with pytest.raises(ClickHouseError, match="ALTER TABLE"):
        ch.execute_mutation("SELECT %(org)s", {"org": "x"})
    # Its text stays far below max_query_size: a larger key set is refused, whole.
    keys = tuple("k" * 250 + str(i) for i in range(300))
    with pytest.raises(ClickHouseError, match="bytes"):
        ch.execute_mutation(delete + " AND thanker_id IN %(keys)s", {"org": "o'rg", "keys": keys})
    assert ch.query("SELECT count() FROM kudos.thankers") == [(1,)]


def test_mutation_chunks_keep_each_statement_small() -> None:
    keys = [f"{i}-" + "é'\\" * 80 for i in range(2000)]
    chunks = list(mutation_chunks(keys))
    assert [k for c in chunks for k in c] == keys
    for chunk in chunks:
        sql = "ALTER TABLE kudos.thankers DELETE WHERE thanker_id IN %(keys)s"
        statement = mutation_statement(sql, {"keys": tuple(chunk)})
        assert len(statement.encode()) <= MUTATION_SET_BYTES + len(sql)
    assert len(chunks) > 1


# --- per-connection settings and time limits -------------------------------------------


@pytest.mark.clickhouse
def test_settings_apply_to_their_connection_only(clickhouse_url: str) -> None:
    setting = "SELECT value FROM system.settings WHERE name = 'max_execution_time'"
    limited = connect(clickhouse_url, settings={"max_execution_time": 5})
    plain = connect(clickhouse_url)
    try:
        assert limited.query(setting) == [("5",)]
        assert plain.query(setting) == [("0",)]
    finally:
        limited.close()
        plain.close()
    for bad in ({"max_execution_time; DROP": 1}, {"max_execution_time": None}):
        with pytest.raises(ClickHouseError, match="setting"):
            connect(clickhouse_url, settings=bad)


@pytest.mark.clickhouse
def test_a_query_over_its_time_limit_is_unavailable(clickhouse_url: str) -> None:
    ch = connect(clickhouse_url, settings={"max_execution_time": 1})
    try:
        with pytest.raises(ClickHouseUnavailable, match=r"159|[Tt]imeout"):
            ch.query(
                "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = %(n)s",
                {"n": 0},
            )
        assert ch.query("SELECT 1") == [(1,)]
    finally:
        ch.close()


# --- errors and concurrency ------------------------------------------------------------


@pytest.mark.clickhouse
def test_bad_statements_and_bad_values_raise_clickhouse_error(ch: ClickHouse) -> None:
    with pytest.raises(ClickHouseError):
        ch.query("SELECT no_such_column FROM kudos.decisions")
    with pytest.raises(ClickHouseError):
        ch.execute("CREATE TABLE")
    with pytest.raises(ClickHouseError):
        ch.insert("kudos.no_such_table", ("a",), [(1,)])
    bad_rows: list[tuple[Any, ...]] = [
        ("o", "u", -1),  # negative into UInt32 src_partition
        (None, "u", 1),  # None into a non-Nullable String
        ("o", "u", "1"),  # str into an integer column
    ]
    for bad in bad_rows:
        with pytest.raises(ClickHouseError):
            ch.insert("kudos.decisions", ("org_id", "event_id", "src_partition"), [bad])
    with pytest.raises(ClickHouseError):
        ch.insert("kudos.decisions", ("org_id", "event_id"), [("o",)])
    with pytest.raises(ClickHouseError):
        ch.query("SELECT %(missing)s", {"other": 1})
    # The connection is still usable after every failure.
    assert ch.query("SELECT count() FROM kudos.decisions") == [(0,)]


@pytest.mark.clickhouse
def test_one_backend_is_safe_to_share_between_threads(ch: ClickHouse) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                ch.insert(
                    "kudos.thankers", ("org_id", "user_id", "thanker_id"), [(f"t{n}", f"{i}", "x")]
                )
                assert ch.query("SELECT %(n)s", {"n": n}) == [(n,)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ch.query("SELECT count() FROM kudos.thankers") == [(60,)]


def test_unreachable_server_raises_unavailable() -> None:
    ch = NativeClickHouse("127.0.0.1", free_port(), connect_timeout=1)
    with pytest.raises(ClickHouseUnavailable):
        ch.query("SELECT 1")
    with pytest.raises(ClickHouseUnavailable):
        ch.insert("kudos.thankers", ("org_id",), [("o",)])
    ch.close()


@pytest.mark.clickhouse
def test_outage_is_unavailable_then_the_same_backend_recovers(clickhouse_server: Any) -> None:
    ch = connect(clickhouse_server.url)
    assert ch.query("SELECT 1") == [(1,)]
    clickhouse_server.kill()
    try:
        with pytest.raises(ClickHouseUnavailable):
            ch.query("SELECT 1")
    finally:
        clickhouse_server.start()
    assert ch.query("SELECT 1") == [(1,)]
    ch.close()


# --- URLs ------------------------------------------------------------------------------


def test_chdb_urls() -> None:
    assert ClickHouseUrl.parse("chdb:///var/lib/kudos/chdb").path == "/var/lib/kudos/chdb"
    assert ClickHouseUrl.parse("chdb://data/chdb").path == "data/chdb"
    assert repr(ClickHouseUrl.parse("chdb:///x")) == "ClickHouseUrl('chdb:///x')"
    for bad in ("chdb://", "chdb:///x?y=1", "mysql://h/db", "clickhouse:///kudos"):
        with pytest.raises(ValueError):
            ClickHouseUrl.parse(bad)


def test_native_urls_and_the_password_never_shows() -> None:
    url = ClickHouseUrl.parse("clickhouse://ingest:s%40cr3t@ch.example:9001/kudos")
    assert (url.scheme, url.host, url.port, url.user, url.database, url.secure) == (
        "clickhouse",
        "ch.example",
        9001,
        "ingest",
        "kudos",
        False,
    )
    assert url.password.get_secret_value() == "s@cr3t"
    for text in (repr(url), str(url), url.redacted(), f"{url}", repr([url])):
        assert "cr3t" not in text
    assert repr(url) == "ClickHouseUrl('clickhouse://ingest:***@ch.example:9001/kudos')"

    tls = ClickHouseUrl.parse(SecretStr("clickhouses://u:p@h/kudos"))
    assert (tls.port, tls.secure) == (9440, True)
    plain = ClickHouseUrl.parse("clickhouse://h")
    assert (plain.port, plain.user, plain.password.get_secret_value(), plain.database) == (
        9000,
        "default",
        "",
        "kudos",
    )
    assert ClickHouseUrl.parse("clickhouse://h?secure=true&verify=false").secure
    with pytest.raises(ValueError, match="unknown"):
        ClickHouseUrl.parse("clickhouse://u:p@h/kudos?password=x")


def test_connect_picks_the_backend_without_connecting(chdb_dir: Any) -> None:
    native = connect("clickhouses://u:hunter2@127.0.0.1:1/kudos")
    assert isinstance(native, NativeClickHouse)
    assert native.secure
    assert "hunter2" not in repr(native)
    native.close()
    embedded = connect(f"chdb://{chdb_dir}")
    assert isinstance(embedded, ChdbClickHouse)
    assert isinstance(embedded, ClickHouse)
    embedded.close()


def test_chdb_allows_one_directory_per_process(chdb_dir: Any, tmp_path: Any) -> None:
    with pytest.raises(ClickHouseUnavailable, match="path"):
        ChdbClickHouse(tmp_path / "other")
