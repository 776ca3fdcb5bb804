"""`kudos bi-user` prints what sinks/tenancy.py generates for the migrated database, and
refuses an org id or user name that cannot be, before it connects anywhere."""

from __future__ import annotations

import hashlib

import pytest

from sinks import tenancy
from sinks.clickhouse import connect
from sinks.migrate import apply_migrations
from streams.cli.bi_user import FORMATS, render
from tests.services.clickhouse_server import ClickHouseServer
from tests.streams.cli.runner import run_kudos

ORG = "it's acme"
HASH = hashlib.sha256(b"change-me").hexdigest()


@pytest.mark.clickhouse
@pytest.mark.parametrize("fmt", FORMATS)
def test_it_prints_the_generated_text(clickhouse_server: ClickHouseServer, fmt: str) -> None:
    admin = connect(clickhouse_server.url)
    try:
        admin.execute("DROP DATABASE IF EXISTS kudos")
        apply_migrations(admin)
        relations = tenancy.kudos_relations(admin)
    finally:
        admin.close()
    args = ("bi-user", "--org", ORG, "--user", "bi_acme", "--password-sha256", HASH)
    out = run_kudos(*args, "--format", fmt, env={"KUDOS_CLICKHOUSE": clickhouse_server.url})
    assert out.returncode == 0, out.stderr
    assert out.stdout == render(fmt, ORG, "bi_acme", HASH, relations)
    assert "'it\\'s acme'" in out.stdout or fmt == "legacy-xml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--org", "a/b", "--user", "bi_acme", "--password-sha256", HASH), "cannot contain '/'"),
        (("--org", "a", "--user", "default", "--password-sha256", HASH), "not a BI user name"),
        (("--org", "a", "--user", "bi_acme"), "64 lowercase hex digits"),
    ],
)
def test_it_refuses_what_cannot_be(args: tuple[str, ...], message: str) -> None:
    # The URL names no server that exists: the command must stop before connecting.
    out = run_kudos("bi-user", *args, env={"KUDOS_CLICKHOUSE": "clickhouse://127.0.0.1:1/kudos"})
    assert out.returncode == 2
    assert message in out.stderr
