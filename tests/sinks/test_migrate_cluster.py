"""`kudos migrate --cluster NAME`: the cluster form of the migrations.

* unit: every migration has a cluster form, engines keep their parameters, every table's
  sharding key lies within its deduplication key, and the single-node path still runs
  exactly the migration files' statements;
* current ClickHouse (chdb 26.x): every generated statement parses (`formatQuery`);
* a real cluster: ZooKeeper plus two clickhouse-server 18.16 processes forming 2 shards x
  1 replica (tests/services/clickhouse_cluster.py). `kudos migrate --cluster` runs there,
  then the store's own writers and readers go through the Distributed tables and must
  read back exactly, from either host, with every key's rows on one shard.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.event import EventType
from schemas.vocabulary import Reason, WindowKey, WindowName
from sinks import rolling
from sinks.clickhouse import ChdbClickHouse, ClickHouse, connect
from sinks.cluster import SHARDING_KEYS, cluster_steps, tracking_table_statement
from sinks.migrate import (
    TRACKING_TABLE,
    apply_migrations,
    cluster_plan,
    load_migrations,
    pending_migrations,
)
from streams.domain.rules import RULE_VERSION, Decision, RuleConfig, RulesLookup
from streams.domain.scorebook import Badge, BadgeAward, ScoreBook, WindowTotals
from streams.stages.state_store import StateStore
from tests.services.clickhouse_cluster import CLUSTER, ClickHouseCluster
from tests.streams.factories import event, records

WEEK = 1_795_132_800_000  # Monday 2026-11-23 00:00 UTC

# --- unit (no I/O) ------------------------------------------------------------------------


def _created_tables() -> dict[str, str]:
    """table -> its single-node CREATE statement."""
    out = {}
    for m in load_migrations():
        found = re.match(r"CREATE TABLE IF NOT EXISTS kudos\.(\w+)", m.sql)
        if found:
            out[found[1]] = m.sql
    return out


def test_every_migration_has_a_cluster_form_with_on_cluster_everywhere() -> None:
    plan = cluster_plan("prod")
    assert [m.name for m, _ in plan] == [m.name for m in load_migrations()]
    for migration, steps in plan:
        assert steps, migration.name
        for step in steps:
            if step.sql.startswith("INSERT"):
                assert step.sql == migration.sql  # runs once, through Distributed tables
            else:
                assert "ON CLUSTER `prod`" in step.sql, (migration.name, step.sql)


def test_tables_become_replicated_local_tables_plus_distributed_ones() -> None:
    (local, dist) = (s.sql for s in cluster_steps(_created_tables()["score_state"], "prod"))
    assert local.startswith("CREATE TABLE IF NOT EXISTS kudos.score_state_local ON CLUSTER `prod`")
    assert (
        "ENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/{shard}/kudos/score_state', '{replica}', version)"
    ) in local
    assert local.endswith(
        "PARTITION BY `window`\nORDER BY (org_id, `window`, window_start, user_id)"
    )
    assert dist == (
        "CREATE TABLE IF NOT EXISTS kudos.score_state ON CLUSTER `prod` AS "
        "kudos.score_state_local ENGINE = Distributed('prod', 'kudos', 'score_state_local', "
        "cityHash64(org_id, user_id))"
    )
    (local,) = (s.sql for s in cluster_steps(_created_tables()["thankers"], "prod")[:1])
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/kudos/thankers', " in local
    assert "'{replica}')" in local
    assert "ReplicatedMergeTree('/clickhouse/tables/all/kudos/schema_migrations', " in (
        tracking_table_statement("prod", TRACKING_TABLE)
    )


def test_every_sharding_key_lies_within_the_tables_dedup_key() -> None:
    """Rows that ReplacingMergeTree (and FINAL, argMax, GROUP BY) must see together share
    their sorting key; a sharding key made of sorting-key columns puts them on one shard."""
    tables = _created_tables()
    assert set(SHARDING_KEYS) == set(tables)
    for table, sql in tables.items():
        order_by = re.search(r"ORDER BY \(([^)]*)\)", sql)
        assert order_by is not None, table
        sort_columns = {c.strip().strip("`") for c in order_by[1].split(",")}
        # identifiers that are not function names (cityHash64 has a capital letter)
        key_columns = set(re.findall(r"\b([a-z_]+)\b(?!\()", SHARDING_KEYS[table]))
        assert key_columns and key_columns <= sort_columns, (table, key_columns)


def test_alter_runs_on_local_tables_and_rebuilds_the_distributed_one() -> None:
    (migration,) = [m for m in load_migrations() if m.name == "0007_decisions_error"]
    steps = cluster_steps(migration.sql, "prod")
    assert [s.sql for s in steps] == [
        "ALTER TABLE kudos.decisions_local ON CLUSTER `prod` ADD COLUMN error String DEFAULT ''",
        "DROP TABLE IF EXISTS kudos.decisions ON CLUSTER `prod`",
        "CREATE TABLE IF NOT EXISTS kudos.decisions ON CLUSTER `prod` AS kudos.decisions_local "
        "ENGINE = Distributed('prod', 'kudos', 'decisions_local', src_partition)",
    ]
    assert steps[0].unless_column == ("decisions_local", "error")


def test_statements_without_a_cluster_form_and_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="no cluster form"):
        cluster_steps("CREATE MATERIALIZED VIEW kudos.x TO kudos.y AS SELECT 1", "prod")
    with pytest.raises(ValueError, match="sharding key"):
        cluster_steps(
            "CREATE TABLE IF NOT EXISTS kudos.new (a String) ENGINE = MergeTree() ORDER BY a",
            "prod",
        )
    with pytest.raises(ValueError, match="not a cluster name"):
        cluster_plan("prod`; DROP")


class _Recorder:
    """A ClickHouse that records statements: an empty server as far as queries go."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.statements.append(sql)

    def execute_mutation(self, sql: str, params: Mapping[str, Any]) -> None:
        self.statements.append(sql)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [(0,)] if sql.startswith("SELECT count()") else []

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        return len(rows)

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        return len(data[0]) if data else 0

    def close(self) -> None:
        pass


def test_the_single_node_path_runs_exactly_the_migration_files() -> None:
    recorder = _Recorder()
    assert isinstance(recorder, ClickHouse)
    apply_migrations(recorder)
    assert recorder.statements == [
        "CREATE DATABASE IF NOT EXISTS `kudos`",
        "CREATE TABLE IF NOT EXISTS `kudos`.`schema_migrations` "
        "(version UInt32, name String, applied_at DateTime) ENGINE = MergeTree() ORDER BY version",
        *(m.sql for m in load_migrations()),
    ]


# --- current ClickHouse: the statements parse ------------------------------------------------


@pytest.mark.clickhouse
def test_every_cluster_statement_parses_on_current_clickhouse(
    chdb_session: ChdbClickHouse,
) -> None:
    """chdb cannot run Replicated or Distributed tables (no ZooKeeper, no cluster), but its
    parser is current ClickHouse's: formatQuery fails on anything it cannot parse."""
    statements = [tracking_table_statement("kudos-prod", TRACKING_TABLE)]
    statements += [s.sql for _, steps in cluster_plan("kudos-prod") for s in steps]
    for sql in statements:
        (formatted,) = chdb_session.query("SELECT formatQuerySingleLine(%(q)s)", {"q": sql})[0]
        assert str(formatted).split()[:2] == sql.split()[:2]
        if "ON CLUSTER" in sql:
            assert "ON CLUSTER `kudos-prod`" in str(formatted)


# --- a real cluster: ZooKeeper + 2 shards of clickhouse-server 18.16 -------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClickHouseCluster]:
    """Migrated through the real CLI, `kudos migrate --cluster`, on the first host."""
    with ClickHouseCluster() as running:
        result = _kudos_migrate(running.urls[0], "--cluster", CLUSTER)
        assert result.returncode == 0, result.stderr
        names = ", ".join(m.name for m in load_migrations())
        assert result.stdout.strip() == f"applied: {names}"
        yield running


def _kudos_migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUDOS_CLICKHOUSE": url}
    return subprocess.run(
        [str(Path(sys.executable).with_name("kudos")), "migrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def hosts(cluster: ClickHouseCluster) -> Iterator[list[ClickHouse]]:
    backends = [connect(url) for url in cluster.urls]
    try:
        yield backends
    finally:
        for backend in backends:
            backend.close()


@pytest.mark.clickhouse
def test_migrate_creates_replicated_and_distributed_tables_on_every_host(
    cluster: ClickHouseCluster, hosts: list[ClickHouse]
) -> None:
    expected = {
        "schema_migrations": "ReplicatedMergeTree",
        "scores": "View",
        "badge_awards": "View",
        "decayed_scores": "View",
        "day_scores_copy": "MaterializedView",
        "value_scores": "View",
        **{t: "Distributed" for t in SHARDING_KEYS},
        **{f"{t}_local": "ReplicatedReplacingMergeTree" for t in SHARDING_KEYS},
    }
    for ch in hosts:
        tables = ch.query("SELECT name, engine FROM system.tables WHERE database = 'kudos'")
        assert dict((str(n), str(e)) for n, e in tables) == expected
        assert _settled_pending(ch) == []
        assert apply_migrations(ch, cluster=CLUSTER) == []
        local = ch.query("DESCRIBE TABLE kudos.decisions_local")
        assert [tuple(r[:2]) for r in ch.query("DESCRIBE TABLE kudos.decisions")] == [
            tuple(r[:2]) for r in local
        ]
        with pytest.raises(ValueError, match="migrated on a cluster"):
            apply_migrations(ch)
    refused = _kudos_migrate(cluster.urls[1])
    assert refused.returncode == 2
    assert "kudos migrate --cluster NAME" in refused.stderr
    unknown = _kudos_migrate(cluster.urls[1], "--cluster", "nope")
    assert unknown.returncode == 2
    assert "cluster 'nope' is not defined" in unknown.stderr


def _settled_pending(ch: ClickHouse) -> list[str]:
    """pending_migrations once the replicated bookkeeping has reached this host (it is
    copied asynchronously, usually within milliseconds)."""
    deadline = time.monotonic() + 10
    while (pending := pending_migrations(ch)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pending


def _keys_per_shard(hosts: list[ClickHouse], sql: str, org: str) -> list[set[tuple[Any, ...]]]:
    return [{tuple(r) for r in ch.query(sql, {"org": org})} for ch in hosts]


def _assert_sharded(shards: list[set[tuple[Any, ...]]]) -> None:
    """Both shards hold rows, and no key is on both."""
    assert all(shards), [len(s) for s in shards]
    assert not shards[0] & shards[1]


@pytest.mark.clickhouse
def test_scores_written_through_distributed_tables_read_back_exactly_from_any_host(
    hosts: list[ClickHouse],
) -> None:
    writer, other = hosts
    users = [f"user-{i:03d}" for i in range(60)]
    book = ScoreBook()
    keys: list[WindowKey] = []
    windows: tuple[tuple[WindowName, int], ...] = (("week", WEEK), ("day", WEEK), ("all", 0))
    for i, user in enumerate(users):
        for window, start in windows:
            key: WindowKey = ("acme", window, start, user)
            book.totals[key] = WindowTotals(
                shares=i % 4, thanks_received=i % 9, thankers={f"t{i % 3}", "z"}, hwm={0: i + 1}
            )
            keys.append(key)
    store = StateStore(writer, leader_depth=5)
    stale = ScoreBook(
        totals={k: WindowTotals(shares=99, hwm={0: 0}) for k in keys}  # older versions
    )
    store.write_scores(stale, keys, RulesLookup())
    store.write_scores(book, keys, RulesLookup())
    StateStore(other).write_scores(stale, keys[:30], RulesLookup())  # late, old rows
    rows = store.score_rows(book, keys, RulesLookup())
    store.write_leader_rows([r for r in rows if r[9] >= 25])
    store.write_thankers([(k, t) for k in keys for t in book.totals[k].thankers])
    award = BadgeAward("acme", users[7], Badge.HELPER, WEEK, 1, "five thankers")
    store.write_badges([award])
    StateStore(other).write_badges([award])  # a replayed award, from another worker

    # Every key on exactly one shard, and both shards used.
    _assert_sharded(
        _keys_per_shard(
            hosts,
            "SELECT DISTINCT user_id FROM kudos.score_state_local WHERE org_id = %(org)s",
            "acme",
        )
    )
    _assert_sharded(
        _keys_per_shard(
            hosts,
            "SELECT DISTINCT user_id FROM kudos.thankers_local WHERE org_id = %(org)s",
            "acme",
        )
    )
    rules = RulesLookup()
    truth = sorted(
        ((k[3], book.totals[k].score(rules("acme"))) for k in keys if k[1] == "week"),
        key=lambda r: (-r[1], r[0]),
    )
    for ch in hosts:
        reader = StateStore(ch, leader_depth=5)
        # kudos.scores (FINAL over the Distributed table): one row per key, the newest.
        got = ch.query(
            "SELECT user_id, score, shares FROM kudos.scores WHERE org_id = 'acme' "
            "AND window = 'week' ORDER BY user_id"
        )
        assert [(u, s) for u, s, _ in got] == sorted(truth)
        assert all(int(shares) != 99 for _, _, shares in got)
        # Day windows reach day_scores on the shard that stores them (0021), newest wins.
        days = rolling.user_rows(ch, "acme", [WEEK], users)
        assert sorted((u, r[0]) for u, r in days.items()) == sorted(truth)
        assert all(r[4] == 2 for r in days.values())  # distinct thankers
        for top in (5, 60):  # leader_rows FINAL, then kudos.scores
            board = reader.leaderboard("acme", "week", WEEK, top)
            assert [(e.rank, e.user_id, e.score) for e in board] == [
                (n + 1, u, s) for n, (u, s) in enumerate(truth[:top])
            ]
            assert board[0].distinct_thankers == 2
        # Pages past leader_rows' depth and ranks read kudos.scores across the shards.
        page = reader.board("acme", "week", WEEK, 4, 3)
        assert [(e.rank, e.user_id) for e in page] == [
            (n + 4, u) for n, (u, _) in enumerate(truth[3:7])
        ]
        for i in range(0, len(truth), 9):
            user, value = truth[i]
            place = reader.rank("acme", "week", WEEK, user, "score", 1)
            assert (place.rank, place.value, place.of) == (i + 1, value, len(truth))
            assert [e.user_id for e in place.entries] == [
                u for u, _ in truth[max(0, i - 1) : i + 2]
            ]
        # load_boards orders by score only: which of two tied users comes 5th is open.
        (board_rows,) = reader.load_boards([("acme", "week", WEEK)], 5).values()
        assert [s for _, s in board_rows] == [s for _, s in truth[:5]]
        assert set(board_rows) <= set(truth)
        loaded = ScoreBook()
        reader.load_keys(keys, loaded)
        assert loaded.totals == {k: book.totals[k] for k in keys}
        assert loaded.awarded == {("acme", users[7], Badge.HELPER, WEEK)}
        badges = reader.badges("acme")
        assert [(b["user_id"], b["badge"]) for b in badges] == [(users[7], "helper")]


@pytest.mark.clickhouse
def test_decisions_keep_each_source_partition_on_one_shard(hosts: list[ClickHouse]) -> None:
    writer, other = hosts
    decisions = []
    for partition in range(4):
        events = [event(EventType.THANKS, f"a{i}", (f"r{i}",), org="initech") for i in range(5)]
        for n, rec in enumerate(records(events, partition=partition, first=100 * partition)):
            decisions.append(
                Decision(rec, f"r{n}", Reason.COUNTED, rec.event.occurred_at, RULE_VERSION)
            )
    assert StateStore(writer).write_decisions(decisions) == 20
    shards = _keys_per_shard(
        hosts,
        "SELECT DISTINCT src_partition FROM kudos.decisions_local WHERE org_id = %(org)s",
        "initech",
    )
    _assert_sharded(shards)
    assert shards[0] | shards[1] == {(p,) for p in range(4)}
    for ch in (other, writer):
        for partition in range(4):
            state = StateStore(ch).load_partition_state(
                "collab.events", partition, RulesLookup(RuleConfig(grace_ms=0))
            )
            assert state.next_offset == 100 * partition + 5
            assert sum(state.pair_counts.values()) == 5


@pytest.mark.clickhouse
def test_tracking_rows_are_on_every_host(hosts: list[ClickHouse]) -> None:
    versions = [m.version for m in load_migrations()]
    for ch in hosts:
        _settled_pending(ch)
        rows = ch.query("SELECT version, applied_at FROM kudos.schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == versions
        assert all(isinstance(r[1], datetime) for r in rows)


def test_shipped_example_config_names_what_kudos_needs() -> None:
    import xml.etree.ElementTree as ET

    base = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
    cluster = ET.parse(base / "config.d" / "kudos-cluster.xml").getroot()
    shards = cluster.findall("remote_servers/kudos/shard")
    assert len(shards) == 2
    assert all(s.findtext("internal_replication") == "true" for s in shards)
    assert cluster.find("zookeeper/node/host") is not None
    assert cluster.findtext("distributed_ddl/path")
    macros = ET.parse(base / "config.d" / "kudos-macros.xml").getroot()
    assert {m.tag for m in macros.findall("macros/*")} == {"shard", "replica"}
    profile = ET.parse(base / "users.d" / "kudos-profile.xml").getroot()
    assert profile.findtext("profiles/default/insert_distributed_sync") == "1"


@pytest.mark.clickhouse
def test_a_person_is_erased_on_every_shard(hosts: list[ClickHouse]) -> None:
    """`kudos forget` on a cluster: mutations ON CLUSTER on the local tables of every host,
    waited for everywhere; nothing of the person is left on any shard."""
    from sinks.erase import erase_person, rebuild_org_boards

    writer = hosts[0]
    users = [f"gdpr-{i:02d}" for i in range(30)]
    victim = users[3]
    book = ScoreBook()
    keys: list[WindowKey] = []
    for i, user in enumerate(users):
        key: WindowKey = ("erase", "all", 0, user)
        book.totals[key] = WindowTotals(
            thanks_received=i + 1, thankers={victim, "z"}, hwm={0: i + 1}
        )
        keys.append(key)
    store = StateStore(writer, leader_depth=5)
    store.write_scores(book, keys, RulesLookup())
    rows = store.score_rows(book, keys, RulesLookup())
    store.write_leader_rows(rows)
    store.write_thankers([(k, t) for k in keys for t in book.totals[k].thankers])
    decisions = [
        Decision(r, "x", Reason.COUNTED, 1, RULE_VERSION)
        for r in records([event(actor=victim, recipients=("x",), org="erase")], partition=1)
    ]
    store.write_decisions(decisions, [])

    touched = erase_person(writer, "erase", victim, "erased:t")
    rebuild_org_boards(writer, "erase", 5)
    # Their own set (2 rows) and their name in everyone's set (30, their own included).
    assert touched["score_state"] == 1 and touched["thankers"] == 2 + len(users)
    for ch in hosts:
        for table, column in (
            ("score_state_local", "user_id"),
            ("leader_rows_local", "user_id"),
            ("thankers_local", "user_id"),
            ("thankers_local", "thanker_id"),
            ("decisions_local", "actor_id"),
        ):
            n = ch.query(f"SELECT count() FROM kudos.{table} WHERE {column} = %(u)s", {"u": victim})
            assert n == [(0,)], (table, column)
        board = StateStore(ch, leader_depth=5).leaderboard("erase", "all", 0, 5)
        assert [e.user_id for e in board] == users[::-1][:5]  # victim was not on top
        # Everyone keeps their distinct thankers (the victim became the token).
        assert board[0].distinct_thankers == 2


@pytest.mark.clickhouse
def test_reversals_are_read_and_erased_through_distributed_tables(
    hosts: list[ClickHouse],
) -> None:
    """Explain and bridging join kudos.reversals into kudos.decisions across shards (both
    sharded by source partition, spread over both shards here); `kudos forget` rewrites
    the reversals' local tables on every host."""
    from dataclasses import replace

    from schemas.directory import DirectoryRecord
    from schemas.vocabulary import DAY_MS
    from sinks.directory import DirectoryRow, DirectoryStore
    from sinks.erase import erase_person
    from sinks.history import DecisionHistory
    from streams.web.explain import explain_user
    from tests.sinks import test_history as h

    org = "audited"
    ds, rs = h.scenario()
    moved = {d: replace(d, org=org, partition=d.offset % 2) for d in ds if d.org == h.ORG}
    ds = list(moved.values())
    rs = [replace(r, d=moved[r.d]) for r in rs if r.d in moved]
    writer = hosts[0]
    h.store(writer, ds, rs)
    teams = {"alice": "t1", "bob": "t2", "carol": "t1", "dave": "t3", "erin": "t3"}
    DirectoryStore(writer).write(
        [
            DirectoryRow(DirectoryRecord(org, user, team=team, updated_at=h.WEEK), 0, i)
            for i, (user, team) in enumerate(teams.items())
        ]
    )
    counted = {r.d: r.delta > 0 for r in rs}
    across: dict[str, list[int]] = {}
    for d in ds:
        if d.kind != "THANKS" or not h.WEEK <= d.at < h.WEEK + 7 * DAY_MS:
            continue
        a, b = teams.get(d.actor), teams.get(d.recipient)
        if counted.get(d, d.reason == "counted") and a and b and a != b:
            across.setdefault(a, [0, 0])[0] += 1
            across.setdefault(b, [0, 0])[1] += 1
    assert across  # the scenario has thanks across teams after the audit
    rules = RulesLookup()
    at = h.WEEK + 2 * DAY_MS
    for ch in hosts:
        for user in ("bob", "alice", "carol"):
            body = explain_user(DecisionHistory(ch), rules, org, user, "week", at)
            want = h.expected(ds, rs, user, h.WEEK, h.WEEK + 7 * DAY_MS, rules(org), org=org)
            assert (body["totals"], body["score"], body["refused"], body["audit"]) == (
                want["totals"],
                want["score"],
                want["refused"],
                want["audit"],
            ), (ch, user)
        got = DirectoryStore(ch, team_min_size=1).bridging(org, h.WEEK, h.WEEK + 7 * DAY_MS)
        assert {e.team: [e.given_across, e.received_across] for e in got if e.team in across} == (
            across
        )

    touched = erase_person(writer, org, "alice", "erased:a")
    assert touched["reversals"] > 0
    for ch in hosts:
        rows = ch.query(
            "SELECT count() FROM kudos.reversals_local WHERE org_id = %(org)s AND "
            "(actor_id = %(u)s OR recipient_id = %(u)s OR has(group_members, %(u)s))",
            {"org": org, "u": "alice"},
        )
        assert rows == [(0,)]
    assert {
        (int(o), str(a))
        for o, a in writer.query(
            "SELECT src_offset, actor_id FROM kudos.reversals WHERE org_id = %(org)s "
            "AND actor_id = 'erased:a'",
            {"org": org},
        )
    } == {(r.d.offset, "erased:a") for r in rs if r.d.actor == "alice" and r.d.recipient != "alice"}


@pytest.mark.clickhouse
def test_collusion_audit_on_a_cluster(hosts: list[ClickHouse]) -> None:
    """The collusion audit of tests/e2e/test_collusion.py through the Distributed tables:
    watermark, reversal rows, audit steps, thanker deletions ON CLUSTER, board rebuild;
    every board (both read paths, read on the other host) equals the independent model."""
    import asyncio
    import time

    from tests.e2e import test_collusion as tc

    now = int(time.time() * 1000)
    events = tc.plan(now)
    want = tc.model(events, now)
    pipe = tc.Pipeline(hosts[0], topic="collab.events.cluster-audit")

    async def go() -> None:
        await pipe.publish(events)
        await pipe.settle()

    try:
        asyncio.run(go())
    finally:
        pipe.blocking.shutdown()
    at = events[0]["occurred_at"]
    reader = StateStore(hosts[1], leader_depth=tc.DEPTH)
    deep, shallow = tc.boards(reader, at, 1000), tc.boards(reader, at, tc.DEPTH)
    for window, expected in want.items():
        assert deep[window] == expected, window
        assert shallow[window] == tc.top(expected, tc.DEPTH), window
