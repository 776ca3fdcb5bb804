"""A real Prometheus server (Debian's `prometheus` package) scraping targets for a test.

`PrometheusServer(targets).start()` writes a scrape config with a 1 s interval, starts
`/usr/bin/prometheus` on a free loopback port with its data in a temporary directory, and
raises with the server's log tail when it does not become ready: a test that needs it
fails, it never skips. `query(promql)` asks the HTTP API (`/api/v1/query`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.kafka.broker import free_port
from tests.services.process import end_process

BINARY = os.environ.get("KUDOS_TEST_PROMETHEUS", "/usr/bin/prometheus")


class PrometheusServer:
    def __init__(self, targets: list[str], job: str = "kudos", interval_s: float = 1.0) -> None:
        self.targets = targets
        self.job = job
        self.interval_s = interval_s
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kudos-prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> PrometheusServer:
        config = self.dir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {
                        "scrape_interval": f"{int(self.interval_s * 1000)}ms",
                        "evaluation_interval": f"{int(self.interval_s * 1000)}ms",
                    },
                    "scrape_configs": [
                        {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
                    ],
                }
            )
        )
        log = (self.dir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        path = self.dir / "prometheus.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) a PromQL query gives now."""
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        """The single value of a query that gives one sample; None when it gives none."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def targets_health(self) -> list[str]:
        with urllib.request.urlopen(self.base + "/api/v1/targets", timeout=10) as r:
            body = json.loads(r.read())
        return [t["health"] for t in body["data"]["activeTargets"]]

    def stop(self) -> None:
        end_process(self.proc, timeout=20)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
