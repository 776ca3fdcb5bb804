"""Numbered, append-only ClickHouse migrations: `sinks/migrations/NNNN_name.sql`.

Each file holds one statement, starts with a `-- Why:` comment and is idempotent on its
own (`IF NOT EXISTS`). The files name their tables `kudos.<table>`: the database name is
fixed. Applied versions are recorded in `kudos.schema_migrations`, so a second run
applies nothing. The same SQL runs on ClickHouse 18.16 (Debian's server) and on chdb
(ClickHouse 26.x); the tests apply every migration on both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Final

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


def apply_migrations(ch: ClickHouse, database: str = DATABASE) -> list[str]:
    """Creates the database and tracking table, applies what is missing, in order.

    Returns the names applied (empty when everything was applied before). A migration
    is recorded only after its statement succeeded; since every statement is idempotent,
    a run interrupted between the two simply applies it again.
    """
    table = _check_database(database)
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
        ch.insert(
            f"{database}.{TRACKING_TABLE}",
            ("version", "name", "applied_at"),
            [(migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None))],
        )
        applied.append(migration.name)
    return applied
