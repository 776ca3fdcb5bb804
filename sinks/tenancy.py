"""BI isolation: a read-only ClickHouse user that sees one org's rows, and nothing else.

Generated, never written by hand: the relations (tables and views) come from the migrated
database itself (`kudos_relations`, system.tables and system.columns). Every relation
with an `org_id` column is granted and filtered to the org; one without (the migrations'
bookkeeping, per-partition stream times: no org data) is not granted at all, so a table a
later migration adds stays invisible until this is generated again.

* Current ClickHouse, SQL (`row_policy_sql`): CREATE USER, one CREATE ROW POLICY per
  relation, GRANT SELECT per relation. Or the same as a users.d file (`users_xml`):
  `<databases><kudos><T><filter>` is how users.xml declares row policies.
* ClickHouse 18.16 (`legacy_users_xml`, `legacy_sql`, `loopback_config`, `loopback_user`):
  it has no row policies and ignores `<filter>` in users.xml (verified on 18.16.1). The
  user gets a database of its own, named like the user, holding one Distributed table per
  relation. Each reads, through a loopback cluster whose user may read everything, a view
  `<user>_rows.T` = `SELECT * FROM kudos.T WHERE org_id = '<org>'`. The BI user may open
  only its own database; `readonly = 1` forbids writes, SET and table functions (remote()),
  and `prefer_localhost_replica = 0` (which it cannot change) keeps the Distributed table
  from reading the view as itself.

DDL and XML take no query parameters, so this is the one place an org id is written into
text: `check_org` refuses what no org id contains ('/', control characters), and the id is
written as an escaped string literal (`quote_string`), XML-escaped again in XML.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape

from sinks.clickhouse import ClickHouse, quote_identifier, quote_string
from sinks.tables import DATABASE

ORG_COLUMN: Final = "org_id"
LOOPBACK_CLUSTER: Final = "kudos_bi_loopback"
LOOPBACK_USER: Final = "kudos_bi_loopback"
PROFILE: Final = "kudos_bi"
ORG_MAX_BYTES: Final = 256
_USER: Final = re.compile(r"^[a-z][a-z0-9_]{0,58}$")
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]*$")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RESERVED: Final = frozenset({"default", "system", DATABASE, LOOPBACK_USER, "readonly"})


@dataclass(frozen=True, slots=True)
class Relation:
    """A table or view of database `kudos`: its name and its (column, type) pairs."""

    name: str
    view: bool
    columns: tuple[tuple[str, str], ...]

    @property
    def per_org(self) -> bool:
        return any(column == ORG_COLUMN for column, _ in self.columns)


def check_org(org: str) -> str:
    """`org` if it can be an org id: not empty, at most 256 UTF-8 bytes, no '/' and no
    control character; else ValueError."""
    try:
        size = len(org.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError("an org id must be valid UTF-8") from exc
    if not org or size > ORG_MAX_BYTES:
        raise ValueError(f"an org id has 1 to {ORG_MAX_BYTES} bytes")
    if "/" in org or _CONTROL.search(org):
        raise ValueError("an org id cannot contain '/' or control characters")
    return org


def check_user(user: str) -> str:
    """`user` if it is a plain lowercase name that is not a built-in one; else ValueError.
    (It also names the user's database and `<user>_rows` on 18.16.)"""
    if not _USER.match(user) or user in _RESERVED or user.endswith("_rows"):
        raise ValueError(
            f"not a BI user name: {user!r} (a-z, 0-9, _; starting with a letter; not "
            f"{', '.join(sorted(_RESERVED))}; not ending in _rows)"
        )
    return user


def check_sha256(password_sha256: str) -> str:
    """A password's SHA-256 as 64 lowercase hex digits (`echo -n PW | sha256sum`)."""
    if not _SHA256.match(password_sha256):
        raise ValueError("the password hash is 64 lowercase hex digits (sha256sum)")
    return password_sha256


def kudos_relations(ch: ClickHouse) -> list[Relation]:
    """Every table and view of `kudos`, by name, each with its columns in table order."""
    engines = dict(
        ch.query(
            # A materialized view only copies rows into a table, which is listed itself.
            "SELECT name, engine FROM system.tables WHERE database = %(db)s "
            "AND engine != 'MaterializedView'",
            {"db": DATABASE},
        )
    )
    columns: dict[str, list[tuple[str, str]]] = {name: [] for name in engines}
    rows = ch.query(
        "SELECT table, name, type FROM system.columns WHERE database = %(db)s", {"db": DATABASE}
    )
    for table, column, column_type in rows:
        if table in columns:
            columns[table].append((column, column_type))
    return [
        Relation(name, engines.get(name) == "View", tuple(columns[name]))
        for name in sorted(columns)
    ]


def org_filter(org: str) -> str:
    """The row condition: `org_id = '<org>'`, the org as an escaped string literal."""
    return f"{ORG_COLUMN} = {quote_string(check_org(org))}"


def _per_org(relations: Sequence[Relation]) -> list[Relation]:
    chosen = [r for r in relations if r.per_org]
    for relation in chosen:  # they become XML element names and unquoted names in <grants>
        if not _NAME.match(relation.name):
            raise ValueError(f"not a plain table name: {relation.name!r}")
    if not chosen:
        raise ValueError(f"no relation of {DATABASE} has {ORG_COLUMN}: migrate first")
    return chosen


def _qualified(database: str, name: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(name)}"


def row_policy_sql(
    org: str, user: str, password_sha256: str, relations: Sequence[Relation]
) -> list[str]:
    """Current ClickHouse: the statements, in order, that (re)create `user` reading only
    `org`'s rows. Idempotent (OR REPLACE); run as a user with access management."""
    condition, name = org_filter(org), quote_identifier(check_user(user))
    statements = [
        f"CREATE USER OR REPLACE {name} IDENTIFIED WITH sha256_hash BY "
        f"'{check_sha256(password_sha256)}' DEFAULT DATABASE {DATABASE} "
        "SETTINGS readonly = 1"
    ]
    chosen = _per_org(relations)
    for relation in chosen:
        statements.append(
            f"CREATE ROW POLICY OR REPLACE {name} ON {_qualified(DATABASE, relation.name)} "
            f"FOR SELECT USING {condition} TO {name}"
        )
    for relation in chosen:
        statements.append(f"GRANT SELECT ON {_qualified(DATABASE, relation.name)} TO {name}")
    return statements


def _user_head(user: str, password_sha256: str, profile: str, networks: str) -> list[str]:
    return [
        f"    <{user}>",
        f"      <password_sha256_hex>{check_sha256(password_sha256)}</password_sha256_hex>",
        f"      <profile>{profile}</profile>",
        "      <quota>default</quota>",
        f"      <networks>{networks}</networks>",
    ]


def users_xml(org: str, user: str, password_sha256: str, relations: Sequence[Relation]) -> str:
    """Current ClickHouse: the same user as a users.d file (row policies from users.xml:
    `<databases>`; SELECT grants: `<grants>`, ClickHouse 22.x or later)."""
    condition, user = escape(org_filter(org)), check_user(user)
    chosen = _per_org(relations)
    lines = [
        "<clickhouse>",
        f"  <profiles><{PROFILE}><readonly>1</readonly></{PROFILE}></profiles>",
        "  <users>",
        *_user_head(user, password_sha256, PROFILE, "<ip>::/0</ip>"),
        "      <grants>",
        *(f"        <query>GRANT SELECT ON {DATABASE}.{r.name}</query>" for r in chosen),
        "      </grants>",
        f"      <databases><{DATABASE}>",
        *(f"        <{r.name}><filter>{condition}</filter></{r.name}>" for r in chosen),
        f"      </{DATABASE}></databases>",
        f"    </{user}>",
        "  </users>",
        "</clickhouse>",
    ]
    return "\n".join(lines) + "\n"


# --- ClickHouse 18.16 -------------------------------------------------------------------


def rows_database(user: str) -> str:
    """18.16: the database of `user`'s filtered views, which only the loopback user reads."""
    return f"{check_user(user)}_rows"


def legacy_sql(org: str, user: str, relations: Sequence[Relation]) -> list[str]:
    """18.16: the statements, in order, that (re)create `user`'s database: per relation a
    view `<user>_rows.T` of the org's rows and a Distributed table `<user>.T` over it. Run
    as an admin; again after a migration changes columns (each object is replaced)."""
    condition, rows = org_filter(org), rows_database(user)
    statements = [
        f"CREATE DATABASE IF NOT EXISTS {quote_identifier(rows)}",
        f"CREATE DATABASE IF NOT EXISTS {quote_identifier(user)}",
    ]
    for relation in _per_org(relations):
        view, table = _qualified(rows, relation.name), _qualified(user, relation.name)
        columns = ", ".join(f"{quote_identifier(c)} {t}" for c, t in relation.columns)
        statements += [
            f"DROP TABLE IF EXISTS {table}",
            f"DROP TABLE IF EXISTS {view}",
            f"CREATE VIEW {view} AS SELECT * FROM {_qualified(DATABASE, relation.name)} "
            f"WHERE {condition}",
            f"CREATE TABLE {table} ({columns}) ENGINE = Distributed({LOOPBACK_CLUSTER}, "
            f"{quote_identifier(rows)}, {quote_identifier(relation.name)})",
        ]
    return statements


def legacy_users_xml(user: str, password_sha256: str) -> str:
    """18.16: the users.d file of `user`: read-only, its own database only, and
    Distributed reads always through the loopback user."""
    user = check_user(user)
    lines = [
        "<yandex>",
        "  <profiles>",
        f"    <{PROFILE}>",
        "      <readonly>1</readonly>",
        "      <prefer_localhost_replica>0</prefer_localhost_replica>",
        f"    </{PROFILE}>",
        "  </profiles>",
        "  <users>",
        *_user_head(user, password_sha256, PROFILE, "<ip>::/0</ip>"),
        f"      <allow_databases><database>{user}</database></allow_databases>",
        f"    </{user}>",
        "  </users>",
        "</yandex>",
    ]
    return "\n".join(lines) + "\n"


def loopback_config(password: str, port: int = 9000) -> str:
    """18.16, once per server (config.d): the cluster the BI users' Distributed tables read
    through. 18.16 wants the loopback user's password here in plain text."""
    if not password or _CONTROL.search(password):
        raise ValueError("the loopback password must be non-empty, without control characters")
    return (
        "<yandex>\n  <remote_servers>\n"
        f"    <{LOOPBACK_CLUSTER}>\n      <shard>\n        <replica>\n"
        f"          <host>127.0.0.1</host>\n          <port>{int(port)}</port>\n"
        f"          <user>{LOOPBACK_USER}</user>\n"
        f"          <password>{escape(password)}</password>\n"
        f"        </replica>\n      </shard>\n    </{LOOPBACK_CLUSTER}>\n"
        "  </remote_servers>\n</yandex>\n"
    )


def loopback_user(password_sha256: str) -> str:
    """18.16, once per server (users.d): the loopback user. It reads every database (the
    `<user>_rows` views and `kudos` beneath them), read-only, from this host only."""
    lines = [
        "<yandex>",
        "  <users>",
        *_user_head(LOOPBACK_USER, password_sha256, "readonly", "<ip>127.0.0.1</ip><ip>::1</ip>"),
        f"    </{LOOPBACK_USER}>",
        "  </users>",
        "</yandex>",
    ]
    return "\n".join(lines) + "\n"
