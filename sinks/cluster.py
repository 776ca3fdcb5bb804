"""The cluster form of the numbered migrations: `kudos migrate --cluster NAME`.

The single-node SQL in `sinks/migrations/` stays the one source of truth; this module
derives, statement by statement, what a cluster (shards x replicas, ZooKeeper) needs:

* `CREATE TABLE kudos.T (...) ENGINE = E(args) ...` becomes
  - `kudos.T_local ON CLUSTER NAME`, same columns and clauses, engine
    `ReplicatedE('/clickhouse/tables/{shard}/kudos/T', '{replica}'[, args])`: the data,
    one copy per replica of a shard;
  - `kudos.T ON CLUSTER NAME AS kudos.T_local ENGINE = Distributed(NAME, kudos, T_local,
    KEY)`: the table under the original name, which workers, views and BI tools read and
    write, on every host.
* `CREATE VIEW kudos.V AS ...` gets `ON CLUSTER NAME`; it reads the Distributed tables.
* `ALTER TABLE kudos.T ...` runs on `T_local ON CLUSTER`; when it changes columns, the
  Distributed `T` (it holds no data) is dropped and created again `AS T_local`, because
  ClickHouse (18.16 at least) refuses an ALTER ON CLUSTER of a non-replicated table on a
  cluster whose shards use internal replication.
* `INSERT INTO kudos.T SELECT ...` (a backfill) runs once, unchanged, on the host
  `kudos migrate` connects to: it reads and writes the Distributed tables.

Anything else has no cluster form yet and raises `ValueError` when the migrations load,
so a new migration that needs one cannot be shipped without it (tests/sinks).

Sharding keys (`SHARDING_KEYS`): every table that is deduplicated by ReplacingMergeTree
(read with FINAL, argMax or GROUP BY over its key) is sharded by columns of its sorting
key, so all rows of one key land on one shard, where merges and FINAL can see them all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

DATABASE: Final = "kudos"
LOCAL_SUFFIX: Final = "_local"
# `{shard}` and `{replica}` are the server's macros (config `<macros>`); see deploy/clickhouse.
ZOOKEEPER_PATH: Final = "/clickhouse/tables/{shard}/kudos/"
REPLICA_NAME: Final = "{replica}"

# Why each key (deploy/clickhouse/README.md says the same for operators):
# * score_state, leader_rows: ReplacingMergeTree(version) over (org_id, window,
#   window_start, user_id), read with FINAL (kudos.scores, the leaderboard) and by
#   "highest version per key" (load_keys). One user's rows of every window on one shard.
# * thankers: a set per (org, window, window_start, user); same shard as that user's score.
# * badge_award_rows: one award per (org, user, badge, period); kudos.badge_awards groups
#   by that key, load_keys reads a user's awards.
# * decisions: deduplicated on (org_id, event_id, recipient_id, src_partition, src_offset)
#   and read per source partition (load_partition_state). Sharding by src_partition keeps
#   each partition's rows of a batch in one insert block on one shard, so "the stored
#   decisions of a partition are a prefix of its offsets" still holds after a crash, and
#   partitions spread round-robin over the shards.
# * directory: ReplacingMergeTree(version) over (org_id, user_id), read by argMax per person;
#   on the same shard as that person's scores.
# * value_thanks: a set per (org, window, window_start, value, user), counted by
#   kudos.value_scores with FINAL; same shard as that user's score.
SHARDING_KEYS: Final[Mapping[str, str]] = {
    "decisions": "src_partition",
    "score_state": "cityHash64(org_id, user_id)",
    "thankers": "cityHash64(org_id, user_id)",
    "badge_award_rows": "cityHash64(org_id, user_id)",
    "leader_rows": "cityHash64(org_id, user_id)",
    "day_scores": "cityHash64(org_id, user_id)",
    "replay_scores": "cityHash64(org_id, user_id)",
    "erasures": "cityHash64(org_id, request_id)",
    "directory": "cityHash64(org_id, user_id)",
    "reversals": "src_partition",
    "audits": "cityHash64(org_id)",
    "stream_times": "src_partition",
    "value_thanks": "cityHash64(org_id, user_id)",
}

_CLUSTER_NAME: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CREATE_TABLE: Final = re.compile(
    r"^CREATE TABLE IF NOT EXISTS kudos\.(?P<table>[a-z_][a-z0-9_]*)\s*\(", re.IGNORECASE
)
_ENGINE: Final = re.compile(
    r"^\s*ENGINE\s*=\s*(?P<engine>(?:Replacing|Summing|Aggregating|Collapsing|"
    r"VersionedCollapsing)?MergeTree)\s*\(",
    re.IGNORECASE,
)
_CREATE_VIEW: Final = re.compile(
    r"^CREATE VIEW IF NOT EXISTS kudos\.(?P<view>[a-z_][a-z0-9_]*)\s+AS\b", re.IGNORECASE
)
_CREATE_COPY: Final = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS kudos\.(?P<view>[a-z_][a-z0-9_]*)\s+"
    r"TO kudos\.(?P<target>[a-z_][a-z0-9_]*)\s+AS\s+(?P<select>SELECT\b.*?)"
    r"\bFROM kudos\.(?P<source>[a-z_][a-z0-9_]*)\b(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_ALTER: Final = re.compile(
    r"^ALTER TABLE kudos\.(?P<table>[a-z_][a-z0-9_]*)\s+(?P<actions>.+)$",
    re.IGNORECASE | re.DOTALL,
)
_ADD_COLUMN: Final = re.compile(
    r"^ADD COLUMN\s+`?(?P<column>[A-Za-z_][A-Za-z0-9_]*)`?\s", re.IGNORECASE
)
_COLUMN_ACTION: Final = re.compile(r"\b(ADD|DROP|MODIFY|RENAME|CLEAR)\s+COLUMN\b", re.IGNORECASE)
_INSERT_SELECT: Final = re.compile(r"^INSERT INTO kudos\.[a-z_][a-z0-9_]*\s", re.IGNORECASE)


@dataclass(frozen=True)
class Step:
    """One statement of a migration's cluster form.

    `unless_column` = (table, column): skip the statement when the connected host already
    has that column (an `ADD COLUMN` cannot say `IF NOT EXISTS` on ClickHouse 18.16, and a
    cluster migration interrupted after it must be able to run again).
    """

    sql: str
    unless_column: tuple[str, str] | None = None


def check_cluster_name(cluster: str) -> str:
    if not _CLUSTER_NAME.match(cluster):
        raise ValueError(f"not a cluster name: {cluster!r}")
    return cluster


def on_cluster(cluster: str) -> str:
    return f"ON CLUSTER `{check_cluster_name(cluster)}`"


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def _closing_paren(text: str, open_at: int) -> int:
    """Index of the `)` matching the `(` at `open_at` (quotes and backquotes respected)."""
    depth = 0
    quote: str | None = None
    i = open_at
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced parentheses")


def database_statement(cluster: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {DATABASE} {on_cluster(cluster)}"


def tracking_table_statement(cluster: str, table: str) -> str:
    """The bookkeeping table: ONE replicated table across every host of the cluster.

    Its ZooKeeper path has no `{shard}`, so every replica of every shard holds every
    record and any host answers "what is applied"; the replica name joins both macros
    to be unique cluster-wide.
    """
    return (
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.{table} {on_cluster(cluster)} "
        "(version UInt32, name String, applied_at DateTime) "
        f"ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/kudos/{table}', "
        "'{shard}-{replica}') ORDER BY version"
    )


def distributed_statement(cluster: str, table: str) -> str:
    key = SHARDING_KEYS.get(table)
    if key is None:
        raise ValueError(
            f"table kudos.{table} has no sharding key: add it to sinks.cluster.SHARDING_KEYS"
        )
    return (
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.{table} {on_cluster(cluster)} "
        f"AS {DATABASE}.{local_name(table)} "
        f"ENGINE = Distributed('{cluster}', '{DATABASE}', '{local_name(table)}', {key})"
    )


def _create_table(sql: str, table: str, cluster: str) -> list[Step]:
    head = _CREATE_TABLE.match(sql)
    assert head is not None
    columns_end = _closing_paren(sql, head.end() - 1)
    columns = sql[head.end() - 1 : columns_end + 1]
    rest = sql[columns_end + 1 :]
    engine = _ENGINE.match(rest)
    if engine is None:
        raise ValueError(f"kudos.{table}: only *MergeTree tables have a cluster form")
    args_open = engine.end() - 1
    args_close = _closing_paren(rest, args_open)
    args = rest[args_open + 1 : args_close].strip()
    replicated = [f"'{ZOOKEEPER_PATH}{table}'", f"'{REPLICA_NAME}'"] + ([args] if args else [])
    local = (
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.{local_name(table)} {on_cluster(cluster)}\n"
        f"{columns}\nENGINE = Replicated{engine['engine']}({', '.join(replicated)})"
        f"{rest[args_close + 1 :]}"
    )
    return [Step(local), Step(distributed_statement(cluster, table))]


def _copy_statement(m: re.Match[str], cluster: str) -> str:
    """A materialized view that copies rows of one table into another: on every host, from
    the local table to the local table (each shard copies the rows it stores, and the
    target's replication does the rest)."""
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {DATABASE}.{m['view']} {on_cluster(cluster)} "
        f"TO {DATABASE}.{local_name(m['target'])} AS {m['select']}"
        f"FROM {DATABASE}.{local_name(m['source'])}{m['rest']}"
    )


def cluster_steps(sql: str, cluster: str) -> list[Step]:
    """The statements that apply one single-node migration statement to `cluster`."""
    check_cluster_name(cluster)
    sql = sql.strip()
    if (m := _CREATE_TABLE.match(sql)) is not None:
        return _create_table(sql, m["table"], cluster)
    if (m := _CREATE_VIEW.match(sql)) is not None:
        at = m.end() - 2  # before "AS"
        return [Step(f"{sql[:at].rstrip()} {on_cluster(cluster)} {sql[at:]}")]
    if (m := _CREATE_COPY.match(sql)) is not None:
        return [Step(_copy_statement(m, cluster))]
    if (m := _ALTER.match(sql)) is not None:
        table, actions = m["table"], m["actions"]
        add = _ADD_COLUMN.match(actions)
        steps = [
            Step(
                f"ALTER TABLE {DATABASE}.{local_name(table)} {on_cluster(cluster)} {actions}",
                (local_name(table), add["column"]) if add and "," not in actions else None,
            )
        ]
        if _COLUMN_ACTION.search(actions):
            steps += [
                Step(f"DROP TABLE IF EXISTS {DATABASE}.{table} {on_cluster(cluster)}"),
                Step(distributed_statement(cluster, table)),
            ]
        return steps
    if _INSERT_SELECT.match(sql) is not None:
        return [Step(sql)]
    raise ValueError(f"no cluster form for this statement: {sql[:80]!r}")
