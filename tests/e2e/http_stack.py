"""A broker, a real `kudos worker` and its data, for the HTTP API's end-to-end tests
(test_http_api.py, test_http_load.py): one stack per backend and test module.

The tests talk to the worker over HTTP only and import nothing of the HTTP API's code
(only the broker helpers and the directory codec), so they run against any build of kudos:
they were run against main, where they fail, before the fixes."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from schemas.directory import DirectoryCodec, DirectoryRecord, directory_key
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e.worker import WorkerProcess
from tests.services.clickhouse_server import ClickHouseServer
from tests.services.tansu import start_tansu

TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Stack:
    broker: EmbeddedBroker
    worker: WorkerProcess
    backend: str

    def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes | None = None,
        timeout: float = 60,
        source: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request on a connection of its own (from `source`, any 127.0.0.0/8
        address: the worker counts live streams per client address)."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.worker.port, timeout=timeout, source_address=(source, 0)
        )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            stream = r.getheader("Content-Type", "").startswith("text/event-stream")
            data = r.read1(65536) if stream else r.read()  # a stream: its first bytes
            return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request(path, **kw)

    def metric(self, name: str) -> float:
        """The value of an unlabelled series on /metrics (KeyError when it is missing)."""
        for line in self.get("/metrics").body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


def publish(
    bootstrap: str,
    events: Iterable[dict[str, Any]],
    directory: Iterable[DirectoryRecord] = (),
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    codec = DirectoryCodec()
    for rec in directory:
        producer.send(
            "directory.users",
            key=directory_key(rec.org_id, rec.user_id),
            value=codec.encode_json(rec),
        )
    for e in events:
        producer.send("collab.events", key=e["actor_id"].encode(), value=json.dumps(e).encode())
    producer.flush()
    producer.close()


def start_stack(
    backend: str,
    tmp: Path,
    server: ClickHouseServer | None,
    events: list[dict[str, Any]],
    directory: list[DirectoryRecord],
    **env: str,
) -> Iterator[Stack]:
    """Tansu, the data published, a worker on `backend` with `env`; stopped afterwards."""
    broker = start_tansu(tmp)
    try:
        ensure_topics(broker.bootstrap, [*TOPICS, "directory.users"], partitions=3)
        publish(broker.bootstrap, events, directory)
        if backend == "chdb":
            url = f"chdb://{tmp / 'chdb'}"
        else:
            assert server is not None
            server.reset_database("kudos")
            url = server.url
        worker = WorkerProcess(broker.bootstrap, url, tmp / "worker.log", **env).start()
        try:
            worker.wait_ready()
            yield Stack(broker, worker, backend)
        finally:
            assert worker.stop() == 0, worker.log_tail()
    finally:
        broker.stop()


def wait_for(
    stack: Stack,
    path: str,
    done: Any,
    timeout: float = 90,
    headers: dict[str, str] | None = None,
) -> Any:
    """Polls `path` until `done(body)`; returns the body."""
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        answer = stack.get(path, headers=headers)
        if answer.status == 200:
            body = answer.json
            if done(body):
                return body
        time.sleep(0.5)
    raise AssertionError(f"{path}: {body}\n{stack.worker.log_tail()}")
