"""Numbered, append-only ClickHouse migrations: `sinks/migrations/NNNN_name.sql`.

Each file holds one statement, starts with a `-- Why:` comment and is idempotent on its
own (`IF NOT EXISTS`). The files name their tables `kudos.<table>`: the database name is
fixed. Applied versions are recorded in `kudos.schema_migrations`, so a second run
applies nothing. The same SQL runs on ClickHouse 18.16 (Debian's server) and on chdb
(ClickHouse 26.x); the tests apply every migration on both.

`apply_migrations(ch, cluster="NAME")` (`kudos migrate --cluster NAME`) applies the same
migrations to a ClickHouse cluster instead: replicated `<table>_local` tables, Distributed
tables under the original names, every statement `ON CLUSTER NAME` (sinks/cluster.py,
deploy/clickhouse/README.md). The single-node path runs exactly the statements above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Final

from sinks import cluster as clustering
from sinks.clickhouse import ClickHouse, quote_identifier

MIGRATIONS_PACKAGE: Final = "sinks.migrations"
DATABASE: Final = "kudos"
TRACKING_TABLE: Final = "schema_migrations"

_FILE_NAME: Final = re.compile(r"^(?P<version>\d{4})_(?P<slug>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name without .sql, e.g. "0005_scores_view"
    sql: str  # the statement as executed: comment lines and a trailing `;` removed


def statement_of(text: str) -> str:
    """The one statement of a migration file: without its `--` comment lines.

    Both engines accept leading comments; dropping them keeps the statement shown in
    server logs and errors short, and lets a file end with or without `;`.
    """
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statement = "\n".join(lines).strip()
    if statement.endswith(";"):
        statement = statement[:-1].rstrip()
    if not statement:
        raise ValueError("empty migration")
    if ";" in statement:
        raise ValueError("a migration holds exactly one statement")
    return statement


def load_migrations() -> list[Migration]:
    """Every migration shipped in `sinks.migrations`, in version order."""
    migrations: dict[int, Migration] = {}
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match["version"])
        name = entry.name.removesuffix(".sql")
        if version in migrations:
            raise ValueError(
                f"two migrations numbered {version}: {migrations[version].name}, {name}"
            )
        try:
            sql = statement_of(entry.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"migration {name}: {exc}") from exc
        migrations[version] = Migration(version, name, sql)
    return [migrations[v] for v in sorted(migrations)]


def _check_database(database: str) -> str:
    if database != DATABASE:
        raise ValueError(f"the migrations are written for database {DATABASE!r}, not {database!r}")
    return f"{quote_identifier(database)}.{quote_identifier(TRACKING_TABLE)}"


def applied_versions(ch: ClickHouse, database: str = DATABASE) -> set[int]:
    """Versions recorded as applied; empty when the tracking table does not exist yet."""
    table = _check_database(database)
    exists = ch.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": database, "t": TRACKING_TABLE},
    )
    if not exists or not exists[0][0]:
        return set()
    return {int(row[0]) for row in ch.query(f"SELECT version FROM {table}")}


def pending_migrations(ch: ClickHouse, database: str = DATABASE) -> list[str]:
    """Names of the migrations not applied yet, in order."""
    done = applied_versions(ch, database)
    return [m.name for m in load_migrations() if m.version not in done]


def tracking_engine(ch: ClickHouse, database: str = DATABASE) -> str | None:
    """Engine of the tracking table (`MergeTree` single-node, `ReplicatedMergeTree` on a
    cluster), None before the first migration."""
    _check_database(database)
    rows = ch.query(
        "SELECT engine FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": database, "t": TRACKING_TABLE},
    )
    return str(rows[0][0]) if rows else None


def cluster_plan(cluster: str) -> list[tuple[Migration, list[clustering.Step]]]:
    """Every migration with the statements that apply it to `cluster` (no I/O)."""
    plan = []
    for migration in load_migrations():
        try:
            plan.append((migration, clustering.cluster_steps(migration.sql, cluster)))
        except ValueError as exc:
            raise ValueError(f"migration {migration.name}: {exc}") from exc
    return plan


def check_cluster(ch: ClickHouse, cluster: str) -> None:
    """Refuses (ValueError) a cluster the connected server cannot migrate: the cluster
    must be defined with this server in it, the `shard` and `replica` macros set, and
    inserts into Distributed tables synchronous (kudos reads what it has just written)."""
    clustering.check_cluster_name(cluster)
    hosts = ch.query(
        "SELECT max(is_local), count() FROM system.clusters WHERE cluster = %(c)s",
        {"c": cluster},
    )
    if not hosts or not hosts[0][1]:
        raise ValueError(
            f"cluster {cluster!r} is not defined on this server (remote_servers; see "
            "deploy/clickhouse/README.md)"
        )
    if not hosts[0][0]:
        raise ValueError(f"this server is not a host of cluster {cluster!r}: connect to one")
    macros = {str(r[0]) for r in ch.query("SELECT macro FROM system.macros")}
    missing = {"shard", "replica"} - macros
    if missing:
        raise ValueError(f"macros {sorted(missing)} are not set on this server (<macros>)")
    sync = ch.query(
        "SELECT value FROM system.settings WHERE name IN "
        "('insert_distributed_sync', 'distributed_foreground_insert')"
    )
    if not any(str(r[0]) == "1" for r in sync):
        raise ValueError(
            "insert_distributed_sync is not 1 for this user: set it in the users' profile "
            "(deploy/clickhouse/users.d/kudos-profile.xml)"
        )


def _check_mode(ch: ClickHouse, database: str, cluster: str | None) -> None:
    engine = tracking_engine(ch, database)
    if engine is None:
        return
    replicated = engine.startswith("Replicated")
    if cluster is None and replicated:
        raise ValueError(
            f"{database} was migrated on a cluster: run `kudos migrate --cluster NAME`"
        )
    if cluster is not None and not replicated:
        raise ValueError(
            f"{database} was migrated as a single node ({TRACKING_TABLE} is {engine}); "
            "a cluster needs a fresh database (see deploy/clickhouse/README.md)"
        )


def apply_migrations(
    ch: ClickHouse, database: str = DATABASE, *, cluster: str | None = None
) -> list[str]:
    """Creates the database and tracking table, applies what is missing, in order.

    Returns the names applied (empty when everything was applied before). A migration
    is recorded only after its statement succeeded; since every statement is idempotent,
    a run interrupted between the two simply applies it again.

    With `cluster`, everything is created on that cluster (module docstring); the
    connected server must be one of its hosts. A database migrated one way refuses the
    other (ValueError).
    """
    table = _check_database(database)
    _check_mode(ch, database, cluster)
    if cluster is not None:
        return _apply_on_cluster(ch, cluster)
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    ch.execute(
        f"CREATE TABLE IF NOT EXISTS {table} "
        "(version UInt32, name String, applied_at DateTime) "
        "ENGINE = MergeTree() ORDER BY version"
    )
    done = applied_versions(ch, database)
    applied: list[str] = []
    for migration in load_migrations():
        if migration.version in done:
            continue
        ch.execute(migration.sql)
        _record(ch, migration)
        applied.append(migration.name)
    return applied


def _record(ch: ClickHouse, migration: Migration) -> None:
    ch.insert(
        f"{DATABASE}.{TRACKING_TABLE}",
        ("version", "name", "applied_at"),
        [(migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None))],
    )


def _has_column(ch: ClickHouse, table: str, column: str) -> bool:
    rows = ch.query(
        "SELECT count() FROM system.columns "
        "WHERE database = %(db)s AND table = %(t)s AND name = %(c)s",
        {"db": DATABASE, "t": table, "c": column},
    )
    return bool(rows and rows[0][0])


def _apply_on_cluster(ch: ClickHouse, cluster: str) -> list[str]:
    plan = cluster_plan(cluster)  # before any DDL: a migration without a cluster form
    check_cluster(ch, cluster)
    ch.execute(clustering.database_statement(cluster))
    ch.execute(clustering.tracking_table_statement(cluster, TRACKING_TABLE))
    done = applied_versions(ch)
    applied: list[str] = []
    for migration, steps in plan:
        if migration.version in done:
            continue
        for step in steps:
            if step.unless_column is not None and _has_column(ch, *step.unless_column):
                continue
            ch.execute(step.sql)
        # The tracking table is replicated to every host: one insert records it everywhere.
        _record(ch, migration)
        applied.append(migration.name)
    return applied
