"""Run `kudos worker` as a subprocess, the way a platform engineer runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.kafka.broker import free_port


class WorkerProcess:
    def __init__(self, bootstrap: str, clickhouse_url: str, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "KUDOS_KAFKA": bootstrap,
            "KUDOS_CLICKHOUSE": clickhouse_url,
            "KUDOS_HTTP_PORT": str(self.port),
            "KUDOS_HTTP_HOST": "127.0.0.1",
            "KUDOS_PARTITIONS": "3",
            "KUDOS_SESSION_TIMEOUT_S": "6",
            "KUDOS_DATA_DIR": str(log_path.parent),
            "KUDOS_AUTH": "off",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, migrate: bool = True) -> WorkerProcess:
        args = [sys.executable, "-m", "streams", "worker"] + (["--migrate"] if migrate else [])
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=60) as r:
                body = r.read()
                return r.status, json.loads(body) if body[:1] in b"{[" else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.get("/health")
                if status == 200 and body.get("assigned"):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """Resident memory from /proc (`VmHWM` for the peak so far)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> int:
        """SIGKILL: no flush, no commit, no goodbye."""
        return self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        return code
