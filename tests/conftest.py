"""Services the test session starts itself. A service that cannot start fails the tests
that need it (the fixture raises with the service's log tail); nothing is skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.clickhouse import ChdbClickHouse, ClickHouse, connect
from sinks.migrate import apply_migrations
from streams.kafka.broker import EmbeddedBroker
from tests.services.clickhouse_server import ClickHouseServer
from tests.services.tansu import start_tansu

# --- ClickHouse ------------------------------------------------------------------------
#
# Two backends, every ClickHouse test runs on both:
# * "server": Debian's clickhouse-server 18.16, one process per test session.
# * "chdb": embedded ClickHouse 26.x. chdb hosts ONE engine per process, bound to ONE
#   directory: every chdb user in the test session must use `chdb_dir` (a second path
#   raises). `chdb_dir` keeps a connection open for the whole session so the engine is
#   not shut down and restarted between tests.
#
# `clickhouse_url` gives each test a freshly dropped and migrated database `kudos` (the
# name is fixed by the migrations), `ch` a connected backend for it.


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[ClickHouseServer]:
    """A running clickhouse-server 18.16 (UTC, 127.0.0.1, free ports) for the session."""
    server = ClickHouseServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbClickHouse]:
    """The one chdb engine of this process, kept open for the whole session."""
    anchor = ChdbClickHouse(tmp_path_factory.mktemp("chdb"))
    try:
        yield anchor
    finally:
        anchor.close()


@pytest.fixture(scope="session")
def chdb_dir(chdb_session: ChdbClickHouse) -> Path:
    """The directory of the session's chdb engine (the only one this process may use)."""
    return chdb_session.path


def _fresh_kudos(ch: ClickHouse, *, sync: bool) -> None:
    # Atomic databases (chdb 26.x) drop tables lazily unless told SYNC; 18.16 has no SYNC.
    ch.execute("DROP DATABASE IF EXISTS kudos" + (" SYNC" if sync else ""))
    apply_migrations(ch)


@pytest.fixture(params=["chdb", "server"])
def clickhouse_url(request: pytest.FixtureRequest) -> str:
    """URL of a freshly migrated, empty `kudos` database, on each backend in turn."""
    if request.param == "chdb":
        anchor: ChdbClickHouse = request.getfixturevalue("chdb_session")
        _fresh_kudos(anchor, sync=True)
        return f"chdb://{request.getfixturevalue('chdb_dir')}"
    server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
    admin = connect(server.url)
    try:
        _fresh_kudos(admin, sync=False)
    finally:
        admin.close()
    return server.url


@pytest.fixture
def ch(clickhouse_url: str) -> Iterator[ClickHouse]:
    """A connected ClickHouse backend for `clickhouse_url`."""
    backend = connect(clickhouse_url)
    try:
        yield backend
    finally:
        backend.close()


# --- Kafka -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The real Kafka-protocol broker (Tansu) for the session; tests use their own topics."""
    broker = start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield broker
    finally:
        broker.stop()
