"""`kudos worker`: refuses invalid rules, and a missing choice of authentication, before
connecting to anything."""

from __future__ import annotations

import time
from pathlib import Path

from tests.streams.cli.runner import run_kudos


def test_worker_refuses_invalid_rules_before_connecting(tmp_path: Path) -> None:
    config = tmp_path / "kudos.toml"
    config.write_text('[org_rules.acme]\nversion = 2\ntimezone = "Mars/Olympus_Mons"\n')
    started = time.monotonic()
    out = run_kudos(
        "worker",
        env={"KUDOS_CONFIG": str(config), "KUDOS_KAFKA": "127.0.0.1:1", "KUDOS_AUTH": "off"},
    )
    assert out.returncode == 2, out.stderr
    assert "invalid rules configuration" in out.stderr and "Mars/Olympus_Mons" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 20  # did not wait for Kafka


NOTHING_LISTENS = {"KUDOS_KAFKA": "127.0.0.1:1", "KUDOS_CLICKHOUSE": "clickhouse://127.0.0.1:1/"}


def test_worker_without_an_auth_choice_exits_2_naming_both() -> None:
    started = time.monotonic()
    out = run_kudos("worker", env={**NOTHING_LISTENS, "KUDOS_AUTH": ""})
    assert out.returncode == 2, out.stderr
    assert "KUDOS_AUTH=jwt" in out.stderr and "KUDOS_AUTH=off" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 20  # did not wait for Kafka


def test_worker_with_jwt_but_no_keys_issuer_or_audience_exits_2() -> None:
    out = run_kudos("worker", env={**NOTHING_LISTENS, "KUDOS_AUTH": "jwt"})
    assert out.returncode == 2, out.stderr
    for name in ("KUDOS_AUTH_JWKS", "KUDOS_AUTH_ISSUER", "KUDOS_AUTH_AUDIENCE"):
        assert name in out.stderr


def test_worker_refuses_a_jwks_over_plain_http_to_another_host() -> None:
    env = {
        **NOTHING_LISTENS,
        "KUDOS_AUTH": "jwt",
        "KUDOS_AUTH_JWKS": "http://idp.example.com/jwks.json",
        "KUDOS_AUTH_ISSUER": "https://idp.example.com/",
        "KUDOS_AUTH_AUDIENCE": "kudos",
    }
    out = run_kudos("worker", env=env)
    assert out.returncode == 2, out.stderr
    assert "https" in out.stderr and "Traceback" not in out.stderr
