"""`kudos up` stops the broker it started on every exit, a crash included.

Each test runs `python -m streams up` (embedded Tansu, embedded chdb) as a subprocess,
finds its Tansu child in /proc, ends `kudos up` one way, and asserts the broker is gone
within a few seconds: SIGKILL (nothing runs in the process: the kernel must do it),
SIGTERM (faust's orderly stop), and a crash through `streams.lifecycle.fatal()` (the circuit
breaker's exit 3, an `os._exit` that skips every `finally`).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.kafka.broker import ensure_topics, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

BROKER_LINE = re.compile(rb"embedded broker \(Tansu, in-memory\) at (127\.0\.0\.1:(\d+))")
STOPPED = "stopped the embedded Tansu broker"  # its orderly stop, in the log
GONE_WITHIN_S = 5.0


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process, None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return comm, state, int(ppid)


def broker_runs(pid: int, port: int) -> bool:
    """The Tansu process `pid` listening on `port` still runs (a zombie does not)."""
    stat = _stat(pid)
    if stat is None or stat[1] in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return f"tcp://127.0.0.1:{port}".encode() in cmdline  # and not a reused pid


def tansu_children(parent: int) -> list[int]:
    """Pids of the tansu processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] == "tansu" and stat[2] == parent:
                found.append(int(entry.name))
    return found


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    bootstrap: str = ""
    broker_port: int = 0
    broker_pid: int = 0

    def log(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def wait_for_broker(self, timeout: float = 60) -> None:
        """Until the log names the embedded broker and its Tansu child is found."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kudos up exited {self.proc.returncode}:\n{self.log()}")
            match = BROKER_LINE.search(self.log_path.read_bytes())
            if match:
                self.bootstrap, port = match.group(1).decode(), int(match.group(2))
                pids = [p for p in tansu_children(self.proc.pid) if broker_runs(p, port)]
                assert len(pids) == 1, (pids, self.log())
                self.broker_port, self.broker_pid = port, pids[0]
                return
            time.sleep(0.1)
        raise AssertionError(f"no embedded broker after {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kudos up exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                url = f"http://127.0.0.1:{self.http_port}/health/ready"
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            time.sleep(0.3)
        raise AssertionError(f"kudos up not ready after {timeout}s:\n{self.log()}")

    def assert_broker_gone(self) -> None:
        deadline = time.monotonic() + GONE_WITHIN_S
        while broker_runs(self.broker_pid, self.broker_port):
            assert time.monotonic() < deadline, (
                f"the Tansu broker (pid {self.broker_pid}) outlived `kudos up` "
                f"(exit {self.proc.returncode}) by {GONE_WITHIN_S}s:\n{self.log()}"
            )
            time.sleep(0.05)


@contextlib.contextmanager
def kudos_up(tmp_path: Path, **env: str) -> Iterator[Up]:
    http_port = free_port()
    log_path = tmp_path / "up.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "up"],
            env={
                **os.environ,
                "KUDOS_KAFKA": "",  # the embedded broker
                "KUDOS_CLICKHOUSE": "",  # embedded chdb
                "KUDOS_DATA_DIR": str(tmp_path / "data"),
                "KUDOS_HTTP_PORT": str(http_port),
                "KUDOS_HTTP_HOST": "127.0.0.1",
                "KUDOS_SESSION_TIMEOUT_S": "6",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    up = Up(proc, log_path, http_port)
    try:
        yield up
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        # A broker left behind by a failing run is ours to end (we started it, via up).
        if up.broker_pid and broker_runs(up.broker_pid, up.broker_port):
            os.kill(up.broker_pid, signal.SIGKILL)


def test_sigkill_of_kudos_up_takes_its_broker_down(tmp_path: Path) -> None:
    with kudos_up(tmp_path) as up:
        up.wait_for_broker()
        up.proc.kill()  # nothing runs in `kudos up` after this
        assert up.proc.wait(30) == -signal.SIGKILL
        up.assert_broker_gone()


def test_sigterm_of_kudos_up_stops_its_broker(tmp_path: Path) -> None:
    with kudos_up(tmp_path) as up:
        up.wait_for_broker()
        up.wait_ready()  # faust's own stop, not the start-up handler's
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(60) == 0, up.log()
        up.assert_broker_gone()
        assert STOPPED in up.log()
        # No KUDOS_AUTH: `kudos up` is open, and says so.
        assert "KUDOS_AUTH=off: the HTTP API on 127.0.0.1" in up.log(10**7)


def test_a_crash_through_fatal_stops_the_broker(tmp_path: Path) -> None:
    # Mostly garbage trips the circuit breaker: fatal(..., 3), an os._exit.
    with kudos_up(tmp_path, KUDOS_DLQ_MIN_MESSAGES="200", KUDOS_DLQ_MAX_RATIO="0.3") as up:
        up.wait_for_broker()
        ensure_topics(up.bootstrap, ["collab.events"], partitions=4)
        producer = KafkaProducer(bootstrap_servers=up.bootstrap)
        rng = random.Random(1)
        for _ in range(600):
            producer.send("collab.events", value=rng.randbytes(40))
        producer.flush()
        producer.close()
        assert up.proc.wait(120) == 3, up.log()
        up.assert_broker_gone()
        # By fatal()'s cleanup, not only by the kernel after the exit.
        log = up.log()
        assert "circuit breaker" in log and STOPPED in log.split("circuit breaker", 1)[1], log
