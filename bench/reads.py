"""Leaderboard read latency of `/api/leaderboard` with a large history, against a baseline.

Generates, straight into ClickHouse, the `kudos.score_state` rows that 100,000,000 events
by 1,000,000 users of one org over 28 days leave behind (a long tail: the busiest user
has ~15,000x the events of the quietest; every user is on the all-time and weekly boards,
a third on each day's, 5% on each of the last 48 hours'), then fills `kudos.leader_rows`
with the backfill migration's statement (and kudos.day_scores through its materialized
view). A `kudos worker` then serves `GET /api/leaderboard?top=10` for hour/day/week/all
and the rolling last_7d/last_30d/last_90d (sums of the 28 days; no kudos.thankers rows
are generated) to 1 and to 10 concurrent clients (keep-alive HTTP, each sending its next
request when the last is answered).

Three workers in turn on the same data: kudos as shipped (leader_rows and the 100 ms read
cache); leader_rows without the cache (`KUDOS_READ_CACHE_MS=0`); and the baseline, the
`kudos.scores` view (FINAL over the whole board) read on every request, as before
leader_rows (`KUDOS_READ_CACHE_MS=0 KUDOS_LEADER_DEPTH=1`).

Runs on chdb, and on Debian's ClickHouse server when `clickhouse-server` is installed.

    .venv/bin/python -m bench.reads [SECONDS_PER_CELL=5] [USERS=1000000] [EVENTS=100000000]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from schemas.vocabulary import DAY_MS, HOUR_MS
from sinks.clickhouse import ClickHouse, connect
from sinks.migrate import apply_migrations, load_migrations
from sinks.tables import LEADER_ROWS, SCORE_STATE
from streams.domain.windows import window_start
from streams.kafka.broker import EmbeddedBroker
from tests.e2e.worker import WorkerProcess

ORG = "bench"
# kudos as shipped; leader_rows without the read cache; baseline: the kudos.scores view
# (FINAL over the whole board) read on every request, as before leader_rows.
CONFIGS: dict[str, dict[str, str]] = {
    "kudos": {},
    "leader_rows uncached": {"KUDOS_READ_CACHE_MS": "0"},
    "baseline": {"KUDOS_READ_CACHE_MS": "0", "KUDOS_LEADER_DEPTH": "1"},
}
WINDOWS = ("hour", "day", "week", "all", "last_7d", "last_30d", "last_90d")
ZIPF = 0.7
DAYS = 28
HOURS = 48


def generate(ch: ClickHouse, users: int, events: int, now_ms: int) -> int:
    """score_state rows for `events` events by `users` users; returns the row count."""
    norm = sum((i + 1) ** -ZIPF for i in range(users))
    per_user = f"({events} / {norm} * pow(number + 1, -{ZIPF}))"
    boards: list[tuple[str, int, float, str]] = [("all", 0, 1.0, "1")]
    weeks = {window_start("week", now_ms - d * DAY_MS) for d in range(DAYS)}
    boards += [("week", w, 1 / len(weeks), "1") for w in sorted(weeks)]
    today = window_start("day", now_ms)
    boards += [("day", today - d * DAY_MS, 3 / DAYS, f"number % 3 = {d % 3}") for d in range(DAYS)]
    hour = window_start("hour", now_ms)
    boards += [
        ("hour", hour - h * HOUR_MS, 20 / (DAYS * 24), f"number % 20 = {h % 20}")
        for h in range(HOURS)
    ]
    at = datetime.fromtimestamp(now_ms // 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    for window, start_ms, share, active in boards:
        start = datetime.fromtimestamp(start_ms // 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        n = f"toUInt64({per_user} * {share} + cityHash64(number, {start_ms}) % 3)"
        ch.execute(
            # leader_rows' columns: score_state's first ones (the decayed score's default)
            f"INSERT INTO {SCORE_STATE.qualified} ({LEADER_ROWS.column_list()}) "
            "SELECT org_id, `window`, window_start, user_id, "
            "shares, thanks_given, thanks_received, least(thanks_received, 40), "
            "reactions_received, 2 * shares + thanks_given + 3 * thanks_received "
            "+ reactions_received, [0], [toInt64(n)], n, toDateTime('" + at + "', 'UTC') "
            f"FROM (SELECT '{ORG}' AS org_id, '{window}' AS `window`, "
            f"toDateTime('{start}', 'UTC') AS window_start, "
            "concat('u', toString(1000000 + number)) AS user_id, "
            f"{n} AS n, toUInt64(n * 3 / 10) AS shares, toUInt64(n * 3 / 10) AS thanks_given, "
            "toUInt64(n * 3 / 10) AS thanks_received, n - 3 * toUInt64(n * 3 / 10) "
            "AS reactions_received FROM (SELECT number FROM system.numbers "
            f"LIMIT {users}) WHERE {active})"
        )
    (backfill,) = [m for m in load_migrations() if m.name == "0009_leader_rows_backfill"]
    ch.execute(backfill.sql)
    return int(ch.query("SELECT count() FROM kudos.score_state")[0][0])


async def load(base: str, window: str, clients: int, seconds: float, at: str) -> list[float]:
    url = f"{base}/api/leaderboard?org={ORG}&window={window}&top=10&at={at}"
    latencies: list[float] = []
    refused: list[float] = []  # answers 429/503, not in the latencies (printed when any)
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with session.get(url) as r:
                body = await r.json()
            if r.status in (429, 503):  # the API's admission (slow baseline reads): retry
                refused.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
                continue
            latencies.append(time.perf_counter() - started)
            assert r.status == 200 and len(body["entries"]) == 10, body

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await client(session)  # one request to warm up, not counted
        latencies.clear()
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(client(session) for _ in range(clients)))
    if refused:
        print(f"  {window} x{clients}: {len(refused)} requests refused (429/503), retried")
    return latencies


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def measure(
    bootstrap: str, url: str, work: Path, name: str, env: dict[str, str], seconds: float, at: str
) -> dict[tuple[str, int], tuple[float, float, int]]:
    worker = WorkerProcess(
        bootstrap, url, work / f"worker-{name}.log", KUDOS_LOG_LEVEL="warning", **env
    )
    worker.start(migrate=False)
    out: dict[tuple[str, int], tuple[float, float, int]] = {}
    try:
        worker.wait_ready(120)
        for clients in (1, 10):
            for window in WINDOWS:
                lat = asyncio.run(load(worker.base, window, clients, seconds, at))
                out[(window, clients)] = (
                    quantile(lat, 0.5) * 1000,
                    quantile(lat, 0.99) * 1000,
                    len(lat),
                )
    finally:
        worker.stop()
    return out


def run_backend(name: str, url: str, work: Path, users: int, events: int, seconds: float) -> None:
    now = int(time.time() * 1000)
    at = datetime.fromtimestamp(now / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ch = connect(url)
    try:
        apply_migrations(ch)
        started = time.perf_counter()
        rows = generate(ch, users, events, now)
        print(
            f"[{name}] generated {rows:,} score_state rows ({users:,} users, "
            f"{events:,} events, {DAYS} days) in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
    finally:
        ch.close()
    with EmbeddedBroker(log_path=work / f"tansu-{name}.log") as broker:
        runs = {
            label: measure(broker.bootstrap, url, work, label, env, seconds, at)
            for label, env in CONFIGS.items()
        }
    print(f"[{name}] GET /api/leaderboard top=10: p50 / p99 ms (requests)")
    print(f"  {'window':<8} {'clients':>7}" + "".join(f"{label:>30}" for label in CONFIGS))
    for cell in runs["kudos"]:
        window, clients = cell
        line = f"  {window:<8} {clients:>7}"
        for label in CONFIGS:
            p50, p99, n = runs[label][cell]
            line += f"{p50:11.2f} /{p99:8.2f} ({n:6d})"
        base_p99, kudos_p99 = runs["baseline"][cell][1], runs["kudos"][cell][1]
        print(f"{line}   baseline/kudos p99 {base_p99 / kudos_p99:5.0f}x", flush=True)


def main(seconds: float, users: int, events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_backend("chdb", f"chdb://{work / 'chdb'}", work, users, events, seconds)
        if shutil.which("clickhouse-server"):
            from tests.services.clickhouse_server import ClickHouseServer

            with ClickHouseServer(work / "server") as server:
                run_backend("server", server.url, work, users, events, seconds)
        else:
            print("clickhouse-server is not installed: server figures skipped")


if __name__ == "__main__":
    main(
        float(sys.argv[1]) if len(sys.argv) > 1 else 5.0,
        int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000,
        int(sys.argv[3]) if len(sys.argv) > 3 else 100_000_000,
    )
