"""`kudos worker`: refuses invalid rules before connecting to anything."""

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
        env={"KUDOS_CONFIG": str(config), "KUDOS_KAFKA": "127.0.0.1:1"},  # nothing listens
    )
    assert out.returncode == 2, out.stderr
    assert "invalid rules configuration" in out.stderr and "Mars/Olympus_Mons" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 20  # did not wait for Kafka
