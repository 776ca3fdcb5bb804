"""Schema ids resolved through a Confluent-compatible Schema Registry.

Bytes come from Confluent's own client (`AvroSerializer` registering through
`SchemaRegistryClient`): a real foreign producer. They are decoded by kudos' codec through
`SchemaRegistry`, against the in-test registry of tests/services/registry.py.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka import KafkaConsumer

from schemas.codec import AvroSchema, DecodeError, EventCodec, UnknownSchemaId
from schemas.event import CollaborationEvent, EventType, Visibility
from schemas.registry import SchemaRegistry, SchemaRegistryError, codec_for, redact_url
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from streams.settings import Settings
from tests.services.registry import RegistryServer

TOPIC = "collab.events"
AVRO = resources.files("schemas").joinpath("avro")
V1_TEXT = AVRO.joinpath("collaboration_event.v1.avsc").read_text(encoding="utf-8")
V2_TEXT = AVRO.joinpath("collaboration_event.v2.avsc").read_text(encoding="utf-8")
V1: AvroSchema = json.loads(V1_TEXT)
V2: AvroSchema = json.loads(V2_TEXT)
# A producer newer than anything shipped: v2 plus one more optional field with a default.
V3: AvroSchema = copy.deepcopy(V2)
V3["doc"] = "version 3 (test only): adds mood"
V3["fields"].append({"name": "mood", "type": "string", "default": "neutral"})
# Registry ids far from the shipped ones (1, 2): a decode proves the registry answered.
FIRST_ID = 100
USER, PASSWORD = "svc-kudos", "pa55:w@rd/s3cret"


def record(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "event_type": "THANKS",
        "org_id": "acme",
        "actor_id": "u-alice",
        "recipient_ids": ["u-bob", "u-carol"],
        "content_id": "wiki:page/4711",
        "channel": "#platform",
        "visibility": "PRIVATE",
        "occurred_at": 1_715_000_000_000,
        "source": "chat",
        **extra,
    }


EXPECTED = CollaborationEvent(
    event_id="0f8fad5b-d9cb-469f-a165-70867728950e",
    event_type=EventType.THANKS,
    org_id="acme",
    actor_id="u-alice",
    recipient_ids=("u-bob", "u-carol"),
    content_id="wiki:page/4711",
    channel="#platform",
    visibility=Visibility.PRIVATE,
    occurred_at=1_715_000_000_000,
    source="chat",
)


def confluent_serializer(
    url: str, schema: AvroSchema | Schema, conf: dict[str, Any] | None = None
) -> AvroSerializer:
    client = SchemaRegistryClient({"url": url, **(conf or {})})
    text = schema if isinstance(schema, Schema) else json.dumps(schema)
    return AvroSerializer(client, text)


def produce(serializer: AvroSerializer, value: dict[str, Any]) -> bytes:
    raw: bytes = serializer(value, SerializationContext(TOPIC, MessageField.VALUE))
    return raw


def schema_id_of(raw: bytes) -> int:
    magic, schema_id = struct.unpack_from(">BI", raw)
    assert magic == 0
    return int(schema_id)


def no_sleep(delays: list[float]) -> dict[str, Any]:
    return {"sleep": delays.append}


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer(first_id=FIRST_ID) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- versions and evolution ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "extra"),
    [(V1, {}), (V2, {"thread_id": "t-42"}), (V2, {"thread_id": None})],
    ids=["v1", "v2", "v2-null-thread"],
)
def test_v1_and_v2_producers_decode_into_the_v1_reader(
    registry: RegistryServer, writer: AvroSchema, extra: dict[str, Any]
) -> None:
    raw = produce(confluent_serializer(registry.url, writer), record(**extra))
    assert schema_id_of(raw) >= FIRST_ID  # an id only the registry knows
    codec = EventCodec(SchemaRegistry(registry.url))
    assert codec.decode(raw) == EXPECTED
    assert codec.decode_many([raw, raw]) == [EXPECTED, EXPECTED]


def test_v1_and_v2_get_different_ids_and_one_lookup_each(registry: RegistryServer) -> None:
    v1 = produce(confluent_serializer(registry.url, V1), record())
    v2 = produce(confluent_serializer(registry.url, V2), record(thread_id="t"))
    assert schema_id_of(v1) != schema_id_of(v2)
    codec = EventCodec(SchemaRegistry(registry.url))
    assert codec.decode_many([v1, v2, v1, v2]) == [EXPECTED] * 4
    assert registry.lookups(schema_id_of(v1)) == registry.lookups(schema_id_of(v2)) == 1


def test_v1_producer_is_read_by_a_v2_consumer(registry: RegistryServer) -> None:
    """Backward: a consumer already on v2 reads what an old v1 producer wrote."""
    raw = produce(confluent_serializer(registry.url, V1), record())
    codec = EventCodec(SchemaRegistry(registry.url), reader_schema=V2)
    assert codec.decode(raw) == EXPECTED


def test_v2_producer_is_read_by_a_v1_consumer(registry: RegistryServer) -> None:
    """Forward: a consumer still on v1 reads what a v2 producer wrote; thread_id is dropped."""
    raw = produce(confluent_serializer(registry.url, V2), record(thread_id="t-7"))
    codec = EventCodec(SchemaRegistry(registry.url), reader_schema=V1)
    assert codec.decode(raw) == EXPECTED


@pytest.mark.parametrize("reader", [V1, V2], ids=["v1-reader", "v2-reader"])
def test_a_v3_producer_newer_than_anything_shipped_is_read(
    registry: RegistryServer, reader: AvroSchema
) -> None:
    serializer = confluent_serializer(registry.url, V3)
    raws = [
        produce(serializer, record(thread_id="t-1", mood="grateful")),
        produce(serializer, record(thread_id=None, mood="neutral")),
    ]
    codec = EventCodec(SchemaRegistry(registry.url), reader_schema=reader)
    assert codec.decode_many(raws) == [EXPECTED, EXPECTED]


def test_schema_references_are_followed_and_inlined(registry: RegistryServer) -> None:
    """A writer whose enum lives in another subject (a Confluent schema reference)."""
    enum = {**V1["fields"][1]["type"], "namespace": "io.kudos.events"}
    client = SchemaRegistryClient({"url": registry.url})
    client.register_schema("io.kudos.events.EventType", Schema(json.dumps(enum), "AVRO"))
    writer = copy.deepcopy(V1)
    writer["fields"][1]["type"] = "io.kudos.events.EventType"
    schema = Schema(
        json.dumps(writer),
        "AVRO",
        references=[SchemaReference("io.kudos.events.EventType", "io.kudos.events.EventType", 1)],
    )
    raw = produce(AvroSerializer(client, schema), record())
    assert EventCodec(SchemaRegistry(registry.url)).decode(raw) == EXPECTED


# --- ids the registry does not know --------------------------------------------------------


def test_an_unknown_id_is_dead_lettered_as_unknown_schema_id(registry: RegistryServer) -> None:
    raw = produce(confluent_serializer(registry.url, V1), record())
    unknown = raw[:1] + struct.pack(">I", 4242) + raw[5:]
    resolver = SchemaRegistry(registry.url)
    codec = EventCodec(resolver)
    with pytest.raises(DecodeError) as info:
        codec.decode(unknown)
    assert info.value.reason == "unknown_schema_id"
    [dead, ok] = codec.decode_many([unknown, raw])
    assert isinstance(dead, DecodeError) and dead.reason == "unknown_schema_id"
    assert ok == EXPECTED
    with pytest.raises(UnknownSchemaId):
        resolver.writer_schema(4242)


def test_an_id_registered_later_is_found_then(registry: RegistryServer) -> None:
    """Misses are not cached: the registry may learn the id after a first lookup."""
    resolver = SchemaRegistry(registry.url)
    with pytest.raises(UnknownSchemaId):
        resolver.writer_schema(FIRST_ID)
    assert registry.register("late-value", V1) == FIRST_ID
    assert resolver.writer_schema(FIRST_ID)["name"] == "CollaborationEvent"


def test_an_id_of_a_protobuf_schema_is_dead_lettered(registry: RegistryServer) -> None:
    proto = 'syntax = "proto3"; message Event { string event_id = 1; }'
    schema_id = registry.register("proto-value", proto, schema_type="PROTOBUF")
    raw = b"\x00" + struct.pack(">I", schema_id) + b"\x02x"
    with pytest.raises(DecodeError) as info:
        EventCodec(SchemaRegistry(registry.url)).decode(raw)
    assert info.value.reason == "unknown_schema_id"


# --- an unwell registry: retried, then an error that is NOT a DecodeError ---------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_failures_are_retried_then_the_id_is_cached(
    registry: RegistryServer, status: int
) -> None:
    raw = produce(confluent_serializer(registry.url, V1), record())
    schema_id = schema_id_of(raw)
    registry.fail_next_lookups(3, status)
    delays: list[float] = []
    resolver = SchemaRegistry(registry.url, max_retries=3, **no_sleep(delays))
    assert EventCodec(resolver).decode(raw) == EXPECTED
    assert registry.lookups(schema_id) == 4  # 3 failures, 1 success
    assert len(delays) == 3 and all(0 < d <= 2.0 for d in delays)
    # Cached for good: more messages and more codecs on the same resolver ask no more.
    for _ in range(3):
        assert EventCodec(resolver).decode_many([raw] * 50) == [EXPECTED] * 50
    assert registry.lookups(schema_id) == 4


def test_backoff_grows_and_is_capped() -> None:
    resolver = SchemaRegistry("http://127.0.0.1:1", backoff_s=0.1, max_backoff_s=0.5)
    ceilings = [0.1, 0.2, 0.4, 0.5, 0.5]
    for attempt, ceiling in enumerate(ceilings, start=1):
        for _ in range(20):
            assert ceiling / 2 <= resolver._delay(attempt, None) <= ceiling
    assert resolver._delay(1, 0.3) == 0.3  # Retry-After wins, within the cap
    assert resolver._delay(1, 60.0) == 0.5


def test_retries_exhausted_raise_a_registry_error_not_a_decode_error(
    registry: RegistryServer,
) -> None:
    raw = produce(confluent_serializer(registry.url, V1), record())
    registry.fail_next_lookups(8, 503)  # two lookups of four attempts each
    delays: list[float] = []
    codec = EventCodec(SchemaRegistry(registry.url, max_retries=3, **no_sleep(delays)))
    with pytest.raises(SchemaRegistryError) as info:
        codec.decode(raw)
    assert not isinstance(info.value, DecodeError)
    assert info.value.status == 503
    assert "4 attempt(s)" in str(info.value)
    # decode_many does not turn it into a dead letter either.
    with pytest.raises(SchemaRegistryError):
        codec.decode_many([raw])
    # The failure is not cached: once the registry is well, the same message decodes.
    assert codec.decode(raw) == EXPECTED


def test_a_registry_that_is_down_raises_within_the_budget() -> None:
    raw = b"\x00" + struct.pack(">I", FIRST_ID) + b"\x00"
    delays: list[float] = []
    codec = EventCodec(
        SchemaRegistry(f"http://127.0.0.1:{free_port()}", max_retries=2, **no_sleep(delays))
    )
    with pytest.raises(SchemaRegistryError) as info:
        codec.decode(raw)
    assert not isinstance(info.value, DecodeError)
    assert "3 attempt(s)" in str(info.value) and "refused" in str(info.value).lower()
    assert len(delays) == 2


def test_a_registry_that_never_answers_times_out_within_the_budget() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        resolver = SchemaRegistry(
            f"http://127.0.0.1:{port}", timeout_s=0.3, budget_s=1.0, max_retries=10
        )
        started = time.monotonic()
        with pytest.raises(SchemaRegistryError) as info:
            resolver.writer_schema(FIRST_ID)
        assert time.monotonic() - started < 2.0
    assert "timed out" in str(info.value).lower()


def test_the_next_url_is_tried_when_one_is_down(registry: RegistryServer) -> None:
    raw = produce(confluent_serializer(registry.url, V1), record())
    urls = f"http://127.0.0.1:{free_port()}, {registry.url}"
    assert EventCodec(SchemaRegistry(urls, **no_sleep([]))).decode(raw) == EXPECTED


def test_a_404_that_is_not_a_registry_answer_is_not_a_dead_letter(
    registry: RegistryServer,
) -> None:
    """A wrong base path must not dead-letter the whole stream as unknown ids."""
    raw = produce(confluent_serializer(registry.url, V1), record())
    codec = EventCodec(SchemaRegistry(registry.url + "/not-the-registry"))
    with pytest.raises(SchemaRegistryError, match="check the URL"):
        codec.decode(raw)


# --- credentials -----------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def url_with_credentials(url: str) -> str:
    from urllib.parse import quote

    return url.replace("://", f"://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@", 1)


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with RegistryServer(credentials=(USER, PASSWORD), first_id=FIRST_ID) as server:
        secret_url = url_with_credentials(server.url)
        producer = confluent_serializer(
            server.url, V1, {"basic.auth.user.info": f"{USER}:{PASSWORD}"}
        )
        raw = produce(producer, record())
        server.fail_next_lookups(1, 500)  # a retry logs a warning naming the registry
        settings = Settings(schema_registry=secret_url)
        codec = codec_for(settings)
        assert codec.decode(raw) == EXPECTED
        lookups = [s for s in server.seen if s.path.startswith("/schemas/ids/")]
        assert len(lookups) == 2
        assert all(s.authorization == basic(USER, PASSWORD) for s in lookups)

        resolver = SchemaRegistry(secret_url)
        # Wrong credentials: an error (not a dead letter) that names neither secret.
        wrong = SchemaRegistry(server.url.replace("://", "://svc-kudos:nope@"))
        with pytest.raises(SchemaRegistryError, match="credentials") as info:
            wrong.writer_schema(schema_id_of(raw))
        assert info.value.status == 401
    shown = [
        str(resolver),
        repr(resolver),
        resolver.url,
        repr(settings),
        str(settings.model_dump()),
        str(info.value),
        caplog.text,
    ]
    assert "***@127.0.0.1" in resolver.url
    assert "schema ids are resolved through the schema registry" in caplog.text
    assert "retrying" in caplog.text
    for text in shown:
        assert PASSWORD not in text and "pa55" not in text and "nope" not in text
        assert USER not in text


def test_credentials_from_settings_and_a_clash_with_the_url(registry: RegistryServer) -> None:
    with RegistryServer(credentials=(USER, PASSWORD), first_id=FIRST_ID) as server:
        raw = produce(
            confluent_serializer(server.url, V1, {"basic.auth.user.info": f"{USER}:{PASSWORD}"}),
            record(),
        )
        settings = Settings(schema_registry=server.url, schema_registry_auth=f"{USER}:{PASSWORD}")
        assert codec_for(settings).decode(raw) == EXPECTED
        assert PASSWORD not in repr(settings)
        clash = Settings(
            schema_registry=url_with_credentials(server.url),
            schema_registry_auth=f"{USER}:{PASSWORD}",
        )
        with pytest.raises(ValueError, match="both") as info:
            codec_for(clash)
        assert PASSWORD not in str(info.value) and USER not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("https://u:p@reg:8081/x,http://h:1") == "https://***@reg:8081/x,http://h:1"
    assert redact_url("http://reg:8081") == "http://reg:8081"
    with pytest.raises(ValueError) as info:
        SchemaRegistry("ftp://user:hunter2@reg:21")
    assert "hunter2" not in str(info.value)


# --- https -----------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "registry.pem", tmp_path / "registry.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_a_ca_file(tls_files: tuple[Path, Path]) -> None:
    import ssl

    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with RegistryServer(tls=context, first_id=FIRST_ID) as server:
        schema_id = server.register("collab.events-value", V1)
        raw = EventCodec(SchemaRegistry(server.url, ca_file=cert)).encode_avro(EXPECTED, schema_id)
        settings = Settings(schema_registry=server.url, schema_registry_ca_file=cert)
        assert codec_for(settings).decode(raw) == EXPECTED
        # Without the CA the certificate is not trusted: an error at once, no retries.
        delays: list[float] = []
        untrusting = SchemaRegistry(server.url, **no_sleep(delays))
        with pytest.raises(SchemaRegistryError, match="TLS certificate not trusted"):
            untrusting.writer_schema(schema_id)
        assert delays == []


# --- without a registry ----------------------------------------------------------------


def test_without_a_registry_the_shipped_schemas_are_used() -> None:
    codec = codec_for(Settings(schema_registry=""))
    assert codec.max_message_bytes == Settings().max_message_bytes
    for shipped_id in (1, 2):
        assert codec.decode(codec.encode_avro(EXPECTED, shipped_id)) == EXPECTED


# --- through the real broker -------------------------------------------------------------


@pytest.mark.kafka
def test_confluent_producer_through_the_broker_decodes_through_the_registry(
    tansu: EmbeddedBroker, registry: RegistryServer
) -> None:
    topic = f"registry.{uuid.uuid4().hex[:8]}"
    ensure_topics(tansu.bootstrap, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": tansu.bootstrap, "linger.ms": 5})
    ctx = SerializationContext(topic, MessageField.VALUE)

    def confluent(schema_text: str) -> AvroSerializer:
        return AvroSerializer(SchemaRegistryClient({"url": registry.url}), schema_text)

    sent = [
        (confluent(V1_TEXT), record()),
        (confluent(V2_TEXT), record(thread_id="t")),
        (confluent(json.dumps(V3)), record(thread_id=None, mood="proud")),
    ]
    for serializer, value in sent:
        producer.produce(topic, key=value["actor_id"].encode(), value=serializer(value, ctx))
    assert producer.flush(10) == 0

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=tansu.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 8
        while len(values) < len(sent) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                values.extend(m.value for m in batch)
    finally:
        consumer.close()
    assert len(values) == len(sent)
    assert len({schema_id_of(v) for v in values}) == 3
    codec = EventCodec(SchemaRegistry(registry.url))
    assert codec.decode_many(values) == [EXPECTED] * 3
