"""Kafka over TLS + SASL and ClickHouse over TLS with a password, end to end.

Kafka: Tansu 0.6.0 cannot serve TLS or usable SASL itself (see tests/services/kafka_proxy.py
for the evidence), so a TLS-terminating, SASL-authenticating proxy stands in front of a
plaintext Tansu that advertises the proxy. Every client connection therefore makes a real
TLS handshake (mutual: the proxy requires a client certificate signed by the test CA) and
a real SASL exchange (PLAIN or SCRAM per RFC 5802) before any Kafka request reaches Tansu.

ClickHouse: Debian's clickhouse-server 18.16 with a TLS native port and a password user.

Secrets are planted (SASL password, ClickHouse password, client key password), supplied as
files in KUDOS_SECRETS_DIR, and looked for in every output the worker makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient

from streams.kafka import security
from streams.kafka.broker import BrokerError, ensure_topics
from streams.settings import Settings
from tests.e2e.worker import WorkerProcess
from tests.services.clickhouse_tls import SecureClickHouseServer
from tests.services.kafka_proxy import TansuBehindProxy
from tests.services.tls import Pki, make_pki

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

KAFKA_SECRET = "kafka-Pl4nted-s3cret"
CLICKHOUSE_SECRET = "ch-Pl4nted;s3cret/pw"
KEY_SECRET = "key-Pl4nted-s3cret"
SECRETS = (KAFKA_SECRET, CLICKHOUSE_SECRET, quote(CLICKHOUSE_SECRET, safe=""), KEY_SECRET)
TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), client_key_password=KEY_SECRET)


@pytest.fixture(scope="module")
def kafka(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBehindProxy]:
    broker = TansuBehindProxy(
        tmp_path_factory.mktemp("tansu") / "tansu.log",
        tls=pki.server_context(require_client_cert=True),
        users={"kudos": KAFKA_SECRET},
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


def client_settings(pki: Pki, mechanism: str = "SCRAM-SHA-512", **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": "kudos",
        "kafka_sasl_password": KAFKA_SECRET,
        "kafka_ssl_ca_file": pki.ca,
        "kafka_ssl_cert_file": pki.client_cert,
        "kafka_ssl_key_file": pki.client_key,
        "kafka_ssl_key_password": KEY_SECRET,
        **kw,
    }
    return Settings(_secrets_dir=None, **values)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_clients_connect_over_mutual_tls_and_sasl(
    kafka: TansuBehindProxy, pki: Pki, mechanism: str
) -> None:
    s = client_settings(pki, mechanism)
    before = kafka.proxy.stats.authenticated.get(mechanism, 0)
    topic = f"sec.{mechanism.lower()}"
    assert ensure_topics(
        kafka.bootstrap, [topic], 2, client_kwargs=security.kafka_python_kwargs(s), timeout=20
    ) == {topic: 2}
    confluent = AdminClient({"bootstrap.servers": kafka.bootstrap, **security.confluent_config(s)})
    assert topic in confluent.list_topics(timeout=20).topics
    assert kafka.proxy.stats.authenticated[mechanism] >= before + 2
    assert kafka.proxy.stats.tls_handshakes >= kafka.proxy.stats.connections - 1


def refused(s: Settings, kafka: TansuBehindProxy) -> str:
    with pytest.raises(BrokerError) as err:
        ensure_topics(
            kafka.bootstrap,
            ["sec.refused"],
            1,
            client_kwargs=security.kafka_python_kwargs(s),
            timeout=4,
        )
    return str(err.value)


def test_wrong_password_untrusted_ca_and_missing_client_cert_are_refused(
    kafka: TansuBehindProxy, pki: Pki
) -> None:
    failures = kafka.proxy.stats.failures
    message = refused(client_settings(pki, kafka_sasl_password="not-the-password"), kafka)
    assert "not-the-password" not in message and KAFKA_SECRET not in message
    assert kafka.proxy.stats.failures > failures

    handshakes = kafka.proxy.stats.tls_handshakes
    refused(client_settings(pki, kafka_ssl_ca_file=pki.other_ca), kafka)
    refused(
        client_settings(
            pki, kafka_ssl_cert_file=None, kafka_ssl_key_file=None, kafka_ssl_key_password=""
        ),
        kafka,
    )
    assert kafka.proxy.stats.tls_handshakes == handshakes  # no handshake completed

    # A plaintext client gets nowhere either.
    with pytest.raises(Exception):  # noqa: B017  kafka-python's own timeout error
        KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=2000).close()


def events(org: str, now: int) -> list[dict[str, Any]]:
    def ev(n: int, kind: str, actor: str, recipients: list[str]) -> dict[str, Any]:
        return {
            "event_id": f"sec-{n}",
            "event_type": kind,
            "org_id": org,
            "actor_id": actor,
            "recipient_ids": recipients,
            "content_id": None,
            "channel": "chat",
            "visibility": "PUBLIC",
            "occurred_at": now - 60_000 + n,
            "source": "chat",
        }

    return [
        ev(1, "THANKS", "ann", ["bob"]),
        ev(2, "THANKS", "ann", ["bob"]),
        ev(3, "SHARE", "carl", []),
    ]


def test_worker_over_sasl_ssl_with_clickhouse_tls_and_no_secret_in_output(
    kafka: TansuBehindProxy, pki: Pki, tmp_path: Path
) -> None:
    clickhouse = SecureClickHouseServer(pki, "kudos_sec", CLICKHOUSE_SECRET)
    clickhouse.start()
    try:
        # Secrets only as files, as a mounted Kubernetes Secret supplies them.
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "KUDOS_KAFKA_SASL_PASSWORD").write_text(KAFKA_SECRET + "\n")
        (secrets / "KUDOS_KAFKA_SSL_KEY_PASSWORD").write_text(KEY_SECRET + "\n")
        (secrets / "KUDOS_CLICKHOUSE").write_text(clickhouse.secure_url(str(pki.ca)) + "\n")
        env = {
            "KUDOS_SECRETS_DIR": str(secrets),
            "KUDOS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KUDOS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KUDOS_KAFKA_SASL_USERNAME": "kudos",
            "KUDOS_KAFKA_SSL_CA_FILE": str(pki.ca),
            "KUDOS_KAFKA_SSL_CERT_FILE": str(pki.client_cert),
            "KUDOS_KAFKA_SSL_KEY_FILE": str(pki.client_key),
            "KUDOS_LOG_LEVEL": "debug",  # the most the worker ever prints
        }
        for name in os.environ:
            assert not name.startswith("KUDOS_KAFKA_SASL") and name != "KUDOS_CLICKHOUSE"

        now = int(time.time() * 1000)
        jsonl = tmp_path / "events.jsonl"
        jsonl.write_text("".join(json.dumps(e) + "\n" for e in events("sec", now)))
        produced = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams",
                "produce",
                "--file",
                str(jsonl),
                "--encoding",
                "json",
            ],
            env={**os.environ, "KUDOS_KAFKA": kafka.bootstrap, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert produced.returncode == 0, produced.stderr
        assert "produced 3 events" in produced.stderr

        scram_logins = kafka.proxy.stats.authenticated.get("SCRAM-SHA-512", 0)
        worker = WorkerProcess(kafka.bootstrap, "", tmp_path / "worker.log", **env)
        del worker.env["KUDOS_CLICKHOUSE"]  # from the secrets file only
        worker.start()
        try:
            worker.wait_ready(timeout=120)
            deadline = time.monotonic() + 60
            entries: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                status, body = worker.get("/api/leaderboard?org=sec&window=all&top=10")
                assert status == 200, body
                entries = body["entries"]
                if len(entries) == 3:
                    break
                time.sleep(0.5)
            assert [(e["user_id"], e["score"]) for e in entries] == [
                ("bob", 6),
                ("ann", 2),
                ("carl", 2),
            ], worker.log_tail()
            outputs = {"/metrics": worker.get("/metrics")[1], "/health": worker.get("/health")[1]}
            outputs["/health/ready"] = worker.get("/health/ready")[1]
        finally:
            assert worker.stop() == 0, worker.log_tail()
        # The worker's admin client, consumer and producer all logged in with SCRAM.
        assert kafka.proxy.stats.authenticated["SCRAM-SHA-512"] >= scram_logins + 3

        # The points are in ClickHouse, read over TLS with the password user.
        from sinks.clickhouse import connect

        ch = connect(clickhouse.secure_url(str(pki.ca)))
        try:
            rows = ch.query(
                "SELECT user_id, score FROM kudos.scores WHERE org_id = 'sec' "
                "AND window = 'all' ORDER BY user_id"
            )
        finally:
            ch.close()
        assert [(r[0], int(r[1])) for r in rows] == [("ann", 2), ("bob", 6), ("carl", 2)]
        # Verification is real: another CA, or a wrong password, gets nothing.
        from sinks.clickhouse import ClickHouseError, ClickHouseUnavailable

        untrusting = connect(clickhouse.secure_url(str(pki.other_ca)))
        with pytest.raises(ClickHouseUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.query("SELECT 1")
        untrusting.close()
        wrong = connect(clickhouse.secure_url(str(pki.ca), password="wrong-" + KEY_SECRET))
        with pytest.raises(ClickHouseError) as err:
            wrong.query("SELECT 1")
        wrong.close()
        assert "Wrong password" in str(err.value) and KEY_SECRET not in str(err.value)
        server_log = clickhouse.log_tail(400)
    finally:
        clickhouse.close()

    log = worker.log_path.read_text(errors="replace")
    texts = {
        "worker log": log,
        "produce stdout": produced.stdout,
        "produce stderr": produced.stderr,
        **{
            path: json.dumps(body) if not isinstance(body, str) else body
            for path, body in outputs.items()
        },
    }
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {where}"
    assert CLICKHOUSE_SECRET not in server_log
