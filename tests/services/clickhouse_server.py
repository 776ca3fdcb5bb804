"""A real Debian clickhouse-server (18.16) started by the test session, without systemd.

The packaged config.xml and users.xml are copied into a temporary directory with every
path and port pointed into that directory, the server time zone forced to UTC (18.16
converts DateTime values with the server time zone) and listening on 127.0.0.1 only.
Everything that needs other directories or services (ZooKeeper, remote servers, TLS,
graphite) is removed.

`ClickHouseServer.start()` raises `ClickHouseServerError` with the tail of the server's
logs when the server does not answer a native-protocol `SELECT 1` in time: a test that
needs ClickHouse fails, it never skips. `stop()`/`kill()` followed by `start()` reuse the
same data directory and ports, so a fault test can simulate an outage.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import TracebackType

from clickhouse_driver import Client

from tests.services.process import end_process, log_tail

SERVER_BINARY = os.environ.get("KUDOS_TEST_CLICKHOUSE_SERVER", "/usr/sbin/clickhouse-server")
PACKAGED_CONFIG_DIR = Path("/etc/clickhouse-server")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# Top-level elements of the packaged config.xml that point at other machines, other
# directories or optional subsystems the tests do not use.
_REMOVED_ELEMENTS = (
    "openSSL",
    "https_port",
    "tcp_port_secure",
    "interserver_http_host",
    "listen_host",
    "remote_servers",
    "zookeeper",
    "macros",
    "compression",
    "distributed_ddl",
    "graphite",
    "graphite_rollup_example",
    "dictionaries_config",
    "include_from",
    "timezone",
    "umask",
)


class ClickHouseServerError(RuntimeError):
    """The server did not start or stop as asked; the message carries its log tail."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL the server if the test process dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _set(root: ET.Element, tag: str, text: str) -> None:
    element = root.find(tag)
    if element is None:
        element = ET.SubElement(root, tag)
    element.text = text


def write_config(base: Path, tcp_port: int, http_port: int, interserver_port: int) -> Path:
    """Writes config.xml/users.xml for a server living entirely under `base`."""
    config = ET.parse(PACKAGED_CONFIG_DIR / "config.xml")
    root = config.getroot()
    for tag in _REMOVED_ELEMENTS:
        for element in root.findall(tag):
            root.remove(element)

    logger = root.find("logger")
    if logger is None:
        logger = ET.SubElement(root, "logger")
    _set(logger, "level", "information")
    _set(logger, "log", str(base / "log" / "clickhouse-server.log"))
    _set(logger, "errorlog", str(base / "log" / "clickhouse-server.err.log"))
    _set(logger, "size", "50M")
    _set(logger, "count", "2")

    data = base / "data"
    _set(root, "path", f"{data}/")
    _set(root, "tmp_path", f"{data}/tmp/")
    _set(root, "user_files_path", f"{data}/user_files/")
    _set(root, "format_schema_path", f"{data}/format_schemas/")
    _set(root, "users_config", str(base / "users.xml"))
    _set(root, "tcp_port", str(tcp_port))
    _set(root, "http_port", str(http_port))
    _set(root, "interserver_http_port", str(interserver_port))
    _set(root, "listen_host", "127.0.0.1")
    _set(root, "timezone", "UTC")
    # The packaged defaults (8 GiB / 5 GiB) are fine on a server, not in a test run.
    _set(root, "uncompressed_cache_size", str(64 << 20))
    _set(root, "mark_cache_size", str(64 << 20))
    _set(root, "mlock_executable", "false")

    config_path = base / "config.xml"
    config.write(config_path, encoding="utf-8", xml_declaration=True)
    shutil.copyfile(PACKAGED_CONFIG_DIR / "users.xml", base / "users.xml")
    return config_path


class ClickHouseServer:
    """One clickhouse-server process on 127.0.0.1 with its own data directory.

    Use as a context manager or call start()/close(). `url` points at database `kudos`
    as user `default` with the packaged empty password.
    """

    def __init__(self, base_dir: Path | None = None) -> None:
        self._owns_base = base_dir is None
        self.base = (
            Path(tempfile.mkdtemp(prefix="kudos-clickhouse-")) if base_dir is None else base_dir
        )
        self.port = free_port()
        self.http_port = free_port()
        self.interserver_port = free_port()
        for sub in ("data", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.config_path = write_config(self.base, self.port, self.http_port, self.interserver_port)
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_path = self.base / "log" / "stderr.log"

    def add_file(self, relative: str, text: str) -> Path:
        """Writes a file into the server's directory, e.g. `users.d/bi.xml` or
        `config.d/cluster.xml`: the server merges the files of users.d/ and config.d/ into
        users.xml and config.xml (users files are reread while it runs, config.d at start)."""
        path = self.base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    @property
    def url(self) -> str:
        return f"clickhouse://default:@127.0.0.1:{self.port}/kudos"

    @property
    def pid(self) -> int:
        """The server's process id (while running)."""
        if self._process is None:
            raise ClickHouseServerError("clickhouse-server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Starts the server (again, on the same data dir) and waits until it answers."""
        if self.running:
            return
        stderr = self._stderr_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [SERVER_BINARY, f"--config-file={self.config_path}"],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise ClickHouseServerError(
                f"cannot run {SERVER_BINARY}: {exc} (Debian package clickhouse-server)"
            ) from exc
        finally:
            stderr.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ClickHouseServerError(
                    f"clickhouse-server exited with code {code} during start\n{self.log_tail()}"
                )
            if not self._port_open():
                time.sleep(0.1)
                continue
            client = Client(
                host="127.0.0.1", port=self.port, connect_timeout=1, send_receive_timeout=5
            )
            try:
                if client.execute("SELECT 1") == [(1,)]:
                    return
            except Exception as exc:  # any failure means "not ready yet"
                last_error = exc
            finally:
                client.disconnect()
            time.sleep(0.2)
        self.kill()
        raise ClickHouseServerError(
            f"clickhouse-server did not answer SELECT 1 on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT_S:.0f}s (last error: {last_error!r})\n{self.log_tail()}"
        )

    def client(self) -> Client:
        """A plain clickhouse-driver client (database `default`) for test set-up."""
        return Client(host="127.0.0.1", port=self.port, connect_timeout=5)

    def reset_database(self, name: str = "kudos") -> None:
        """Drops `name` so the next `kudos migrate` (or worker start) creates it afresh."""
        client = self.client()
        try:
            client.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            client.disconnect()

    def _port_open(self) -> bool:
        # Probing with a plain socket first keeps clickhouse-driver from logging a
        # traceback for every refused connection while the server boots.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM), waiting for the process to exit."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash or an outage would."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: signal.Signals) -> None:
        end_process(self._process, signum, STOP_TIMEOUT_S)
        self._process = None

    def close(self) -> None:
        """Stops the server and removes its directory (if this object created it)."""
        self.stop()
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        names = ("stderr.log", "clickhouse-server.err.log", "clickhouse-server.log")
        parts = [log_tail(self.base / "log" / name, lines) for name in names]
        return "\n".join(p for p in parts if p) or f"(no server logs in {self.base / 'log'})"

    def __enter__(self) -> ClickHouseServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
