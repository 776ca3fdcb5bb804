"""BI isolation (sinks/tenancy.py): a user of org A sees org A's rows in every kudos table
and view, nothing of org B, and cannot write.

* ClickHouse 18.16 (a server of this module's own, with the loopback cluster and users):
  the generated users.d files and DDL, read over the native protocol as the BI user.
* Current ClickHouse (chdb 26.x): chdb refuses CREATE USER / ROW POLICY (asserted exactly,
  so it is noticed when that changes); the generated users.d file (its row policies and
  grants) is tested in a second process whose chdb runs as that user.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from sinks import tenancy
from sinks.clickhouse import ChdbClickHouse, ClickHouse, ClickHouseError, connect
from sinks.migrate import apply_migrations
from tests.services.clickhouse_server import ClickHouseServer

pytestmark = pytest.mark.clickhouse

ORG_A = "it's \\ a 'quoted' org"  # a quote and a backslash: the escaping is exercised
ORG_B = "other"
USER = "bi_acme"
PASSWORD = "bi-secret"
LOOPBACK_PASSWORD = "loop-secret"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
NOT_PER_ORG = {"schema_migrations", "stream_times"}  # no org data: not granted at all


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_two_orgs(ch: ClickHouse) -> list[tenancy.Relation]:
    """Two rows of org A and one of org B in every table with org_id (other columns take
    their defaults); returns the relations."""
    relations = tenancy.kudos_relations(ch)
    for relation in relations:
        if relation.per_org and not relation.view:
            rows = [[ORG_A], [ORG_A], [ORG_B]]
            ch.insert(f"kudos.{relation.name}", ["org_id"], rows)
    return relations


# --- validation and text ----------------------------------------------------------------


@pytest.mark.parametrize("org", ["", "a/b", "a\nb", "a\x00", "a\x7f", "\ud800", "x" * 257])
def test_org_ids_that_cannot_be_are_refused(org: str) -> None:
    with pytest.raises(ValueError):
        tenancy.org_filter(org)


def test_the_org_is_an_escaped_string_literal() -> None:
    assert tenancy.org_filter("it's") == "org_id = 'it\\'s'"
    assert tenancy.org_filter("a\\'b") == "org_id = 'a\\\\\\'b'"
    assert tenancy.org_filter("é ü") == "org_id = 'é ü'"


@pytest.mark.parametrize("user", ["", "Bi", "1bi", "bi-a", "default", "kudos", "acme_rows"])
def test_user_names_that_cannot_be_are_refused(user: str) -> None:
    with pytest.raises(ValueError):
        tenancy.check_user(user)


def test_a_password_hash_is_64_hex_digits() -> None:
    with pytest.raises(ValueError):
        tenancy.row_policy_sql("a", USER, "abc", [])


def test_xml_escapes_the_filter() -> None:
    relation = tenancy.Relation("t", False, (("org_id", "String"),))
    text = tenancy.users_xml("a<&>b", USER, EMPTY_SHA256, [relation])
    assert "<filter>org_id = 'a&lt;&amp;&gt;b'</filter>" in text


# --- the relations come from the database -------------------------------------------------


def test_every_kudos_relation_but_two_has_org_id(ch: ClickHouse) -> None:
    relations = tenancy.kudos_relations(ch)
    assert {r.name for r in relations if not r.per_org} == NOT_PER_ORG
    assert {r.name for r in relations if r.view} == {
        "scores",
        "badge_awards",
        "decayed_scores",
        "value_scores",
    }
    assert len(relations) >= 15


# --- current ClickHouse: chdb --------------------------------------------------------------


def test_chdb_parses_the_statements_and_refuses_them(chdb_session: ChdbClickHouse) -> None:
    chdb_session.execute("DROP DATABASE IF EXISTS kudos SYNC")
    apply_migrations(chdb_session)
    statements = tenancy.row_policy_sql(ORG_A, USER, sha256(PASSWORD), write_two_orgs(chdb_session))
    for sql in statements:  # valid syntax for current ClickHouse
        assert chdb_session.query("SELECT formatQuerySingleLine(%(q)s)", {"q": sql})[0][0]
    # chdb's only user directory is its users.xml (read-only) and its `default` user has
    # no access management: CREATE USER and CREATE ROW POLICY are refused, so GRANT finds
    # no such user. When chdb starts to accept them, test them as on a server.
    refusals = {"CREATE USER": "ACCESS_DENIED", "CREATE ROW POLICY": "ACCESS_DENIED"}
    refusals["GRANT"] = "UNKNOWN_ROLE"
    for sql in statements:
        expected = next(code for head, code in refusals.items() if sql.startswith(head))
        with pytest.raises(ClickHouseError, match=expected):
            chdb_session.execute(sql)


_CHDB_SCRIPT = """
import json, sys
import chdb
from sinks import tenancy
from sinks.clickhouse import ChdbClickHouse
from sinks.migrate import apply_migrations
from tests.sinks.test_tenancy import write_two_orgs
step, path, config = sys.argv[1:4]
if step == "write":
    ch = ChdbClickHouse(path)
    apply_migrations(ch)
    relations = [[r.name, r.view, r.per_org] for r in write_two_orgs(ch)]
    ch.close()
    print(json.dumps(relations))
else:
    conn = chdb.connect(path + "?config-file=" + config)
    out = {}
    for sql in sys.argv[4:]:
        try:
            out[sql] = json.loads(conn.query(sql, "JSONCompact").data())
        except Exception as exc:
            out[sql] = "error: " + str(exc)
    print(json.dumps(out))
"""


def _chdb_process(*args: str) -> object:
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", _CHDB_SCRIPT, *args], capture_output=True, text=True, cwd=root
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_the_users_xml_isolates_an_org_on_chdb(tmp_path: Path) -> None:
    # chdb runs every query as `default`: this process's chdb gets the generated user
    # renamed to `default`, with the hash of chdb's empty password.
    data, users_d = tmp_path / "data", tmp_path / "users.d"
    written = _chdb_process("write", str(data), "")
    users_d.mkdir()
    (tmp_path / "users.xml").write_text(
        "<clickhouse><profiles><default/></profiles><quotas><default/></quotas></clickhouse>"
    )
    assert isinstance(written, list)
    org_column = (("org_id", "String"),)
    per_org = [tenancy.Relation(n, v, org_column) for n, v, p in written if p]
    assert {n for n, _, p in written if not p} == NOT_PER_ORG
    text = tenancy.users_xml(ORG_A, USER, EMPTY_SHA256, per_org)
    (users_d / "bi.xml").write_text(
        text.replace(f"<{USER}>", "<default>").replace(f"</{USER}>", "</default>")
    )
    config = tmp_path / "config.xml"
    config.write_text(f"<clickhouse><users_config>{tmp_path}/users.xml</users_config></clickhouse>")
    reads = [f"SELECT DISTINCT org_id FROM kudos.{r.name}" for r in per_org]
    refused = [f"SELECT * FROM kudos.{n}" for n in sorted(NOT_PER_ORG)] + [
        "INSERT INTO kudos.decisions (org_id) VALUES ('x')",
        "ALTER TABLE kudos.decisions DELETE WHERE 1",
        "DROP TABLE kudos.decisions",
        "SELECT * FROM file('x.csv')",
    ]
    out = _chdb_process("read", str(data), str(config), *reads, *refused)
    assert isinstance(out, dict)
    for sql in reads:
        assert out[sql]["data"] == [[ORG_A]], sql
    for sql in refused:
        assert "ACCESS_DENIED" in out[sql], (sql, out[sql])


# --- ClickHouse 18.16 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def legacy_server() -> Iterator[ClickHouseServer]:
    """An 18.16 server with the loopback cluster and user, and a user with a users.xml
    `<filter>` (which 18.16 ignores)."""
    server = ClickHouseServer()
    ignored = (
        "<yandex><users><bi_filtered><password></password><profile>readonly</profile>"
        "<quota>default</quota><networks><ip>::/0</ip></networks><databases><kudos>"
        f"<decisions><filter>{tenancy.org_filter(ORG_A)}</filter></decisions>"
        "</kudos></databases></bi_filtered></users></yandex>"
    )
    files = {
        "config.d/kudos-bi-loopback.xml": tenancy.loopback_config(LOOPBACK_PASSWORD, server.port),
        "users.d/kudos-bi-loopback.xml": tenancy.loopback_user(sha256(LOOPBACK_PASSWORD)),
        f"users.d/{USER}.xml": tenancy.legacy_users_xml(USER, sha256(PASSWORD)),
        "users.d/bi_filtered.xml": ignored,
    }
    for relative, text in files.items():
        server.add_file(relative, text)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def legacy_relations(legacy_server: ClickHouseServer) -> list[tenancy.Relation]:
    admin = connect(legacy_server.url)
    try:
        apply_migrations(admin)
        relations = write_two_orgs(admin)
        for sql in tenancy.legacy_sql(ORG_A, USER, relations):
            admin.execute(sql)
        for sql in tenancy.legacy_sql(ORG_A, USER, relations):  # again: it is idempotent
            admin.execute(sql)
    finally:
        admin.close()
    return relations


def _bi_client(server: ClickHouseServer, user: str = USER, password: str = PASSWORD) -> Client:
    return Client(host="127.0.0.1", port=server.port, user=user, password=password, database=user)


def test_the_bi_user_sees_only_its_org_on_18_16(
    legacy_server: ClickHouseServer, legacy_relations: list[tenancy.Relation]
) -> None:
    client = _bi_client(legacy_server)
    try:
        visible = {name for (name,) in client.execute(f"SHOW TABLES FROM {USER}")}
        per_org = {r.name for r in legacy_relations if r.per_org}
        assert visible == per_org and len(per_org) == len(legacy_relations) - len(NOT_PER_ORG)
        for name in sorted(per_org):
            rows = client.execute(f"SELECT org_id, count() FROM {USER}.{name} GROUP BY org_id")
            assert [org for org, _ in rows] == [ORG_A], name
    finally:
        client.disconnect()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM kudos.decisions", "Access denied to database kudos"),
        (f"SELECT * FROM {USER}_rows.decisions", f"Access denied to database {USER}_rows"),
        ("SELECT * FROM remote('127.0.0.1', kudos.decisions)", "Table functions are forbidden"),
        (f"INSERT INTO {USER}.decisions (org_id) VALUES ('x')", "Cannot insert into table"),
        (f"ALTER TABLE {USER}.decisions ADD COLUMN x UInt8", "readonly mode"),
        (f"DROP TABLE {USER}.decisions", "Cannot drop table in readonly mode"),
        ("SET prefer_localhost_replica = 1", "Cannot execute SET query in readonly mode"),
        ("CREATE DATABASE x", "Cannot create database in readonly mode"),
    ],
)
def test_the_bi_user_cannot_escape_or_write_on_18_16(
    legacy_server: ClickHouseServer,
    legacy_relations: list[tenancy.Relation],
    sql: str,
    message: str,
) -> None:
    client = _bi_client(legacy_server)
    try:
        with pytest.raises(ServerException, match=message):
            client.execute(sql)
    finally:
        client.disconnect()


def test_18_16_ignores_users_xml_row_filters(
    legacy_server: ClickHouseServer, legacy_relations: list[tenancy.Relation]
) -> None:
    # Why the Distributed construction: `<databases><kudos><decisions><filter>` (row
    # policies in users.xml, ClickHouse 19.x and later) is silently ignored by 18.16.
    client = Client(host="127.0.0.1", port=legacy_server.port, user="bi_filtered")
    try:
        rows = client.execute("SELECT DISTINCT org_id FROM kudos.decisions ORDER BY org_id")
        assert sorted(org for (org,) in rows) == sorted([ORG_A, ORG_B])
    finally:
        client.disconnect()
