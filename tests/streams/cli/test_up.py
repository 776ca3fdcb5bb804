"""`kudos up`: one worker on chdb, and `--demo`'s live leaderboard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from streams.cli.up import up_settings
from streams.kafka.broker import free_port
from streams.settings import Settings
from tests.e2e.worker import WorkerProcess
from tests.streams.cli.runner import KUDOS, run_kudos


def test_up_refuses_several_workers_on_chdb(tmp_path: Path) -> None:
    out = run_kudos(
        "up", "--workers", "2", env={"KUDOS_CLICKHOUSE": "", "KUDOS_DATA_DIR": str(tmp_path)}
    )
    assert out.returncode == 2
    assert "chdb is one process's store" in out.stderr


def test_up_is_open_on_loopback_unless_told_otherwise() -> None:
    plain = up_settings(Settings())
    assert (plain.auth, plain.http_host) == ("off", "127.0.0.1")
    wide = up_settings(Settings(http_host="0.0.0.0"))  # set on purpose: kept
    assert (wide.auth, wide.http_host) == ("off", "0.0.0.0")
    jwt = up_settings(Settings(auth="jwt"))
    assert (jwt.auth, jwt.http_host) == ("jwt", Settings().http_host)


def test_up_with_jwt_but_no_keys_exits_2(tmp_path: Path) -> None:
    out = run_kudos("up", env={"KUDOS_AUTH": "jwt", "KUDOS_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2 and "KUDOS_AUTH_JWKS" in out.stderr


@pytest.mark.kafka
@pytest.mark.clickhouse
@pytest.mark.e2e
def test_up_demo_shows_a_live_leaderboard(tmp_path: Path) -> None:
    """What a new user does: `kudos up --demo`; the board fills and changes within seconds."""
    port = free_port()
    env = {
        **os.environ,
        "KUDOS_DATA_DIR": str(tmp_path),
        "KUDOS_HTTP_PORT": str(port),
        "KUDOS_HTTP_HOST": "127.0.0.1",
        "KUDOS_SESSION_TIMEOUT_S": "6",
        "KUDOS_CLICKHOUSE": "",
        "KUDOS_KAFKA": "",
    }
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [*KUDOS, "up", "--demo", "--rate", "300"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    view = WorkerProcess("", "", tmp_path / "up.log")
    view.port = port
    try:
        started = time.monotonic()
        first: Any = None
        while time.monotonic() - started < 60:
            assert proc.poll() is None, view.log_tail()
            try:
                status, body = view.get("/api/leaderboard?org=acme&window=hour&top=5")
            except OSError:
                status, body = 0, None
            if status == 200 and body["entries"]:
                if first is None:
                    first = body["entries"]
                elif body["entries"] != first:
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"leaderboard did not fill and change:\n{view.log_tail()}")
        assert [e["rank"] for e in body["entries"]] == list(range(1, len(body["entries"]) + 1))
        status, page = view.get("/")
        assert status == 200 and "live leaderboard" in page
        out = run_kudos(
            "leaderboard",
            "--org",
            "acme",
            "--window",
            "hour",
            "--format",
            "json",
            env={"KUDOS_HTTP_PORT": str(port), "KUDOS_CLICKHOUSE": ""},
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["org"] == "acme"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, view.log_tail()
