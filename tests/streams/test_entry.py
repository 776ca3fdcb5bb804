"""The `kudos` entry point: a stop request during start-up is a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.kafka.broker import free_port


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_sigterm_while_starting_exits_cleanly(tmp_path: Path, delay: float) -> None:
    # Nothing answers on these ports, so the worker is somewhere in its imports or its
    # wait for Kafka when the signal comes: the moment a supervisor restarts a killed
    # worker and then stops it. Death by signal (-15) would read as a crash.
    env = {
        **os.environ,
        "KUDOS_KAFKA": f"127.0.0.1:{free_port()}",
        "KUDOS_CLICKHOUSE": f"clickhouse://127.0.0.1:{free_port()}/",
        "KUDOS_DATA_DIR": str(tmp_path),
        "KUDOS_AUTH": "off",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]


def test_other_commands_keep_the_default_handler(tmp_path: Path) -> None:
    # `kudos produce` stopped half-way has not produced everything: it must not exit 0.
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "produce", "--synthetic", "100000", "--rate", "10"],
        env={**os.environ, "KUDOS_KAFKA": f"127.0.0.1:{free_port()}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert proc.returncode == -signal.SIGTERM


def test_fatal_runs_the_registered_cleanups_and_still_exits_with_its_code(tmp_path: Path) -> None:
    # fatal() skips every `finally` (crash-only), so what must not outlive the process is
    # registered with run_on_fatal_exit: run newest first, a failing one does not stop the
    # others, and the exit code is fatal()'s.
    ran = tmp_path / "ran"
    script = f"""
import pathlib
from streams.lifecycle import fatal, run_on_fatal_exit

def boom() -> None:
    raise RuntimeError("boom")

with run_on_fatal_exit(lambda: pathlib.Path({str(ran)!r}).write_text("ran")):
    with run_on_fatal_exit(boom):
        try:
            fatal("test crash", 70)
        finally:
            pathlib.Path({str(tmp_path / "finally")!r}).write_text("ran")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 70, err[-2000:]
    assert ran.read_text() == "ran", err[-2000:]
    assert "failed during a crash" in err and "RuntimeError: boom" in err
    assert not (tmp_path / "finally").exists()  # still os._exit: no finally, no commit
