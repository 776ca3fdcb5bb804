"""A real Apache ZooKeeper (Debian package `zookeeper`, 3.8) started by the test session.

One standalone server (`ZooKeeperServerMain`) on 127.0.0.1 and a free port, with its data
directory under a temporary directory, no admin server and a short tick. It starts in
about half a second and uses about 60 MB. ClickHouse needs it for ReplicatedMergeTree
tables and for distributed DDL (`ON CLUSTER`).

`ZooKeeper.start()` raises `ZooKeeperError` with the log tail when the server does not
report a mode to the `srvr` four-letter command in time: a test that needs it fails, never skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.services.clickhouse_server import _die_with_parent, free_port
from tests.services.process import end_process, log_tail

JAVA = os.environ.get("KUDOS_TEST_JAVA", "/usr/bin/java")
ZOOKEEPER_JAR = Path(os.environ.get("KUDOS_TEST_ZOOKEEPER_JAR", "/usr/share/java/zookeeper.jar"))
# slf4j binding that prints ZooKeeper's log to stderr (the log file); without it, nothing.
SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class ZooKeeperError(RuntimeError):
    """ZooKeeper did not start; the message carries its log tail."""


class ZooKeeper:
    """One standalone ZooKeeper server on 127.0.0.1 with its own data directory."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self._owns_base = base_dir is None
        self.base = (
            Path(tempfile.mkdtemp(prefix="kudos-zookeeper-")) if base_dir is None else base_dir
        )
        self.port = free_port()
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        self.config_path = self.base / "zoo.cfg"
        self.config_path.write_text(
            "\n".join(
                (
                    "tickTime=500",
                    "initLimit=10",
                    "syncLimit=5",
                    f"dataDir={self.base / 'data'}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "maxClientCnxns=0",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr",
                    "",
                )
            )
        )
        self._log_path = self.base / "zookeeper.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        if not ZOOKEEPER_JAR.exists():
            raise ZooKeeperError(f"{ZOOKEEPER_JAR} is missing (Debian package zookeeper)")
        log = self._log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    JAVA,
                    "-Xmx128m",
                    "-XX:+UseSerialGC",
                    f"-Dzookeeper.log.dir={self.base}",
                    "-cp",
                    f"{ZOOKEEPER_JAR}:{SLF4J_SIMPLE_JAR}",  # the manifest Class-Path names the rest
                    "org.apache.zookeeper.server.ZooKeeperServerMain",
                    str(self.config_path),
                ],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise ZooKeeperError(f"cannot run {JAVA}: {exc}") from exc
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ZooKeeperError(f"zookeeper exited with code {code}\n{self.log_tail()}")
            # `ruok` says imok while the server is still loading; `srvr` reports a mode
            # only once it serves requests (a client connecting earlier is dropped, and
            # clickhouse-server 18.16's DDL worker does not recover from that).
            if "Mode: " in self.four_letter("srvr"):
                return
            time.sleep(0.1)
        self.stop()
        raise ZooKeeperError(
            f"zookeeper did not serve on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT_S:.0f}s\n{self.log_tail()}"
        )

    def four_letter(self, command: str) -> str:
        """Sends a four-letter command; '' when the server does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(command.encode())
                sock.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := sock.recv(4096):
                    chunks.append(chunk)
        except OSError:
            return ""
        return b"".join(chunks).decode(errors="replace").strip()

    def stop(self) -> None:
        end_process(self._process, signal.SIGTERM, STOP_TIMEOUT_S)
        self._process = None

    def close(self) -> None:
        self.stop()
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self._log_path, lines) or f"(no log at {self._log_path})"

    def __enter__(self) -> ZooKeeper:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
