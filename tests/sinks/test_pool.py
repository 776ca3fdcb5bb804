"""`ClickHousePool` on both backends (chdb 26.x, clickhouse-server 18.16): its connections
run statements at the same time (a quick read answers while a long one runs), ClickHouse
stops a reader's statement after its time limit, and a pool with no idle connection
refuses after `wait_s` instead of queueing for ever."""

from __future__ import annotations

import threading
import time

import pytest

from sinks.clickhouse import ClickHouseError, ClickHousePool, ClickHouseUnavailable

pytestmark = pytest.mark.clickhouse

# Seconds of work for either engine on two cores, far beyond any limit below.
LONG = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 3"


def run_long(pool: ClickHousePool, outcome: dict[str, object]) -> threading.Thread:
    def long() -> None:
        started = time.monotonic()
        try:
            outcome["rows"] = pool.query(LONG)
        except (ClickHouseError, ClickHouseUnavailable) as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=long)
    thread.start()
    time.sleep(0.3)  # the long statement is running
    return thread


def test_reads_run_side_by_side_and_a_time_limit_stops_the_long_one(clickhouse_url: str) -> None:
    pool = ClickHousePool(ClickHousePool.reader(clickhouse_url, 2), 2)
    try:
        setting = "SELECT value FROM system.settings WHERE name = 'max_execution_time'"
        assert pool.query(setting) == [("2",)]
        outcome: dict[str, object] = {}
        thread = run_long(pool, outcome)
        started = time.monotonic()
        assert pool.query("SELECT 1") == [(1,)]
        assert time.monotonic() - started < 1.0  # did not wait for the long statement
        thread.join(30)
        assert "rows" not in outcome and "Code: 159" in str(outcome["error"])  # TIMEOUT_EXCEEDED
        assert float(str(outcome["seconds"])) < 6
        assert pool.query("SELECT 2") == [(2,)]  # the stopped connection is usable again
    finally:
        pool.close()


def test_no_idle_connection_is_refused_after_wait_s(clickhouse_url: str) -> None:
    pool = ClickHousePool(ClickHousePool.reader(clickhouse_url, 2), 1, wait_s=0.2)
    try:
        outcome: dict[str, object] = {}
        thread = run_long(pool, outcome)
        started = time.monotonic()
        with pytest.raises(ClickHouseUnavailable, match="no idle ClickHouse connection"):
            pool.query("SELECT 1")
        assert time.monotonic() - started < 1.0
        thread.join(30)
    finally:
        pool.close()
    with pytest.raises(ClickHouseUnavailable, match="closed"):
        pool.query("SELECT 1")
