"""The codec against the shipped schemas, the example messages, and garbage."""

from __future__ import annotations

import copy
import io
import json
import pickle
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.codec import (
    CONFLUENT_MAGIC_BYTE,
    DECODE_REASONS,
    DEFAULT_MAX_MESSAGE_BYTES,
    AvroSchema,
    DecodeError,
    EventCodec,
    ShippedSchemas,
    UnknownSchemaId,
    default_codec,
)
from schemas.event import CollaborationEvent, EventType, Visibility

EXAMPLES = resources.files("schemas").joinpath("examples")
CODEC = default_codec()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Generation time varies with machine load; what the properties check does not.
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def example_files(directory: str, suffix: str) -> list[Traversable]:
    folder = EXAMPLES.joinpath(directory)
    return sorted(
        (f for f in folder.iterdir() if f.name.endswith(suffix) and f.name != "expected.json"),
        key=lambda f: f.name,
    )


VERSIONS = ("v1", "v2", "v3")
VALID_JSON = [f for d in VERSIONS for f in example_files(d, ".json")]
VALID_BIN = [f for d in VERSIONS for f in example_files(d, ".bin")]
INVALID = example_files("invalid", ".json") + example_files("invalid", ".bin")
EXPECTED_REASONS: dict[str, str] = json.loads(
    EXAMPLES.joinpath("invalid", "expected.json").read_text(encoding="utf-8")
)


def ids(files: list[Traversable]) -> list[str]:
    return [f"{f.name}" for f in files]


def reason_of(raw: bytes, codec: EventCodec = CODEC) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(raw)
    return info.value.reason


def sample_event(**changes: Any) -> CollaborationEvent:
    event = CollaborationEvent(
        event_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        event_type=EventType.THANKS,
        org_id="acme",
        actor_id="u-alice",
        recipient_ids=("u-bob", "u-carol"),
        content_id="wiki:page/4711",
        channel="#platform",
        visibility=Visibility.PUBLIC,
        occurred_at=1_715_000_000_000,
        source="chat",
    )
    return replace(event, **changes)


def shipped_json_schema(schema_id: int) -> AvroSchema:
    return copy.deepcopy(ShippedSchemas().writer_schema(schema_id))


def avro_body(schema: AvroSchema, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(copy.deepcopy(schema)), record)
    return out.getvalue()


def framed(schema_id: int, body: bytes) -> bytes:
    return bytes([0]) + schema_id.to_bytes(4, "big") + body


class DictResolver:
    """A stand-in for a Schema Registry: ids map to whatever schemas a test registers."""

    def __init__(self, schemas: dict[int, AvroSchema]) -> None:
        self.schemas = schemas

    def writer_schema(self, schema_id: int) -> AvroSchema:
        try:
            return self.schemas[schema_id]
        except KeyError:
            raise UnknownSchemaId(schema_id) from None


# --- The shipped schemas -------------------------------------------------------------------


def test_v1_schema_has_exactly_the_contract_fields() -> None:
    schema = shipped_json_schema(1)
    assert schema["name"] == "CollaborationEvent"
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert list(types) == [f.name for f in fields(CollaborationEvent)][:-1]  # v3: values
    assert types["event_type"]["symbols"] == [m.value for m in EventType]
    assert types["visibility"]["symbols"] == [m.value for m in Visibility]
    assert types["recipient_ids"] == {"type": "array", "items": "string"}
    assert types["occurred_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    for name in ("event_id", "org_id", "actor_id", "source"):
        assert types[name] == "string"
    defaults = {f["name"]: f["default"] for f in schema["fields"] if "default" in f}
    assert defaults == {"content_id": None, "channel": None, "visibility": "PUBLIC"}


def test_v2_only_adds_an_optional_field() -> None:
    v1, v2 = shipped_json_schema(1), shipped_json_schema(2)
    assert (v2["namespace"], v2["name"]) == (v1["namespace"], v1["name"])

    def strip_docs(fields_: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "doc"} for f in fields_]

    assert strip_docs(v2["fields"][:-1]) == strip_docs(v1["fields"])
    added = v2["fields"][-1]
    assert (added["name"], added["type"], added["default"]) == (
        "thread_id",
        ["null", "string"],
        None,
    )


def test_v3_only_adds_values_with_an_empty_default() -> None:
    v2, v3 = shipped_json_schema(2), shipped_json_schema(3)
    assert (v3["namespace"], v3["name"]) == (v2["namespace"], v2["name"])

    def strip_docs(fields_: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "doc"} for f in fields_]

    assert strip_docs(v3["fields"][:-1]) == strip_docs(v2["fields"])
    added = v3["fields"][-1]
    assert (added["name"], added["type"], added["default"]) == (
        "values",
        {"type": "array", "items": "string"},
        [],
    )
    names = [f["name"] for f in v3["fields"]]
    assert [f.name for f in fields(CollaborationEvent)] == [n for n in names if n != "thread_id"]


def test_shipped_ids() -> None:
    shipped = ShippedSchemas()
    assert dict(shipped.ids()) == {
        1: "collaboration_event.v1.avsc",
        2: "collaboration_event.v2.avsc",
        3: "collaboration_event.v3.avsc",
    }
    assert shipped.latest_id == 3
    assert shipped.writer_schema(1) is shipped.writer_schema(1)  # read once
    with pytest.raises(UnknownSchemaId) as info:
        shipped.writer_schema(4)
    assert isinstance(info.value, KeyError)


# --- Example messages -----------------------------------------------------------------------


def test_there_are_examples() -> None:
    names = {f.name for f in VALID_JSON}
    assert {"thanks.json", "share.json", "reaction.json", "thanks_with_thread.json"} <= names
    assert {"thanks_with_values.json", "share_without_values.json"} <= names
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", VALID_JSON, ids=ids(VALID_JSON))
def test_json_example_decodes_to_its_fields(path: Traversable) -> None:
    raw = path.read_bytes()
    doc = json.loads(raw)
    event = CODEC.decode(raw)
    assert event.event_id == doc["event_id"]
    assert event.event_type is EventType(doc["event_type"])
    assert (event.org_id, event.actor_id, event.source) == (
        doc["org_id"],
        doc["actor_id"],
        doc["source"],
    )
    assert event.recipient_ids == tuple(doc["recipient_ids"])
    assert event.content_id == doc.get("content_id")
    assert event.channel == doc.get("channel")
    assert event.visibility is Visibility(doc.get("visibility", "PUBLIC"))
    assert event.values == tuple(doc.get("values", []))
    when = doc["occurred_at"]
    if isinstance(when, str):
        expected = (datetime.fromisoformat(when) - EPOCH) // timedelta(milliseconds=1)
        assert event.occurred_at == expected
    else:
        assert event.occurred_at == when


@pytest.mark.parametrize("path", VALID_JSON, ids=ids(VALID_JSON))
@pytest.mark.parametrize("schema_id", [1, 2, 3])
def test_json_example_round_trips(path: Traversable, schema_id: int) -> None:
    event = CODEC.decode(path.read_bytes())
    assert CODEC.decode(CODEC.encode_avro(event, schema_id)) == as_written(event, schema_id)
    assert CODEC.decode(CODEC.encode_json(event)) == event


def as_written(event: CollaborationEvent, schema_id: int) -> CollaborationEvent:
    """What a body written with `schema_id` keeps of the event: v1 and v2 have no values."""
    return event if schema_id >= 3 else replace(event, values=())


@pytest.mark.parametrize("path", VALID_BIN, ids=ids(VALID_BIN))
def test_avro_example_matches_its_json_twin(path: Traversable) -> None:
    twin = path.name.removesuffix(".bin") + ".json"
    folder = next(v for v in VERSIONS if EXAMPLES.joinpath(v, twin).is_file())
    raw = path.read_bytes()
    event = CODEC.decode(raw)
    assert event == CODEC.decode(EXAMPLES.joinpath(folder, twin).read_bytes())
    if folder in ("v1", "v3"):
        # The bytes are stable: what we write today is what the example holds.
        assert CODEC.encode_avro(event, int(folder[1])) == raw


def test_rfc3339_examples_are_the_same_instant() -> None:
    utc = CODEC.decode(EXAMPLES.joinpath("v1", "rfc3339_time.json").read_bytes())
    offset = CODEC.decode(EXAMPLES.joinpath("v1", "rfc3339_offset_time.json").read_bytes())
    assert utc.occurred_at == offset.occurred_at == 1_714_986_930_250


def test_every_invalid_example_is_listed_with_a_known_reason() -> None:
    assert sorted(EXPECTED_REASONS) == sorted(f.name for f in INVALID)
    assert set(EXPECTED_REASONS.values()) <= set(DECODE_REASONS)


@pytest.mark.parametrize("path", INVALID, ids=ids(INVALID))
def test_invalid_example_fails_with_its_reason(path: Traversable) -> None:
    raw = path.read_bytes()
    assert reason_of(raw) == EXPECTED_REASONS[path.name]
    [result] = CODEC.decode_many([raw])
    assert isinstance(result, DecodeError)
    assert result.reason == EXPECTED_REASONS[path.name]


@pytest.mark.parametrize(
    "path", example_files("rule_invalid", ".json"), ids=ids(example_files("rule_invalid", ".json"))
)
def test_rule_level_problems_are_not_decode_errors(path: Traversable) -> None:
    event = CODEC.decode(path.read_bytes())
    assert event.event_id == "" or (
        event.event_type is EventType.THANKS and not event.recipient_ids
    )


# --- Wire format ---------------------------------------------------------------------------


def test_avro_framing_is_the_confluent_wire_format() -> None:
    event = sample_event()
    raw = CODEC.encode_avro(event, 1)
    assert raw[0] == CONFLUENT_MAGIC_BYTE == 0
    assert raw[1:5] == b"\x00\x00\x00\x01"
    # The body is plain Avro binary of the shipped v1 schema, logical type and all.
    record = json.loads(CODEC.encode_json(event))
    assert raw[5:] == avro_body(shipped_json_schema(1), record)


def test_schema_id_is_big_endian() -> None:
    schema_id = 0x01020304
    codec = EventCodec(DictResolver({schema_id: shipped_json_schema(1)}))
    raw = codec.encode_avro(sample_event(), schema_id)
    assert raw[:5] == b"\x00\x01\x02\x03\x04"
    assert codec.decode(raw) == sample_event()


def test_encode_json_is_plain_json_with_avro_field_names() -> None:
    doc = json.loads(CODEC.encode_json(sample_event(visibility=Visibility.PRIVATE)))
    assert list(doc) == [f.name for f in fields(CollaborationEvent)][:-1]  # no values: none
    valued = json.loads(CODEC.encode_json(sample_event(values=("ownership",))))
    assert list(valued) == [f.name for f in fields(CollaborationEvent)]
    assert valued["values"] == ["ownership"]
    assert doc["event_type"] == "THANKS"
    assert doc["visibility"] == "PRIVATE"
    assert doc["recipient_ids"] == ["u-bob", "u-carol"]
    assert doc["occurred_at"] == 1_715_000_000_000


def test_encode_unknown_schema_id_raises() -> None:
    with pytest.raises(UnknownSchemaId):
        CODEC.encode_avro(sample_event(), 42)


# --- Schema evolution ----------------------------------------------------------------------


def test_v2_written_avro_reads_as_v1_fields() -> None:
    record = json.loads(CODEC.encode_json(sample_event()))
    raw = framed(2, avro_body(shipped_json_schema(2), {**record, "thread_id": "t-1"}))
    assert CODEC.decode(raw) == sample_event()


def test_v1_written_avro_reads_with_a_v2_reader() -> None:
    codec = EventCodec(ShippedSchemas(), reader_schema=shipped_json_schema(2))
    for schema_id in (1, 2):
        assert codec.decode(CODEC.encode_avro(sample_event(), schema_id)) == sample_event()


def test_writer_missing_optional_fields_gets_reader_defaults() -> None:
    older = shipped_json_schema(1)
    older["fields"] = [
        f for f in older["fields"] if f["name"] not in {"content_id", "channel", "visibility"}
    ]
    codec = EventCodec(DictResolver({7: older}))
    record = json.loads(CODEC.encode_json(sample_event()))
    event = codec.decode(framed(7, avro_body(older, record)))
    assert event == sample_event(content_id=None, channel=None, visibility=Visibility.PUBLIC)


def test_writer_with_a_new_enum_symbol() -> None:
    newer = shipped_json_schema(2)
    newer["fields"][1]["type"]["symbols"].append("HUG")
    codec = EventCodec(DictResolver({3: newer}))
    record = {**json.loads(CODEC.encode_json(sample_event())), "thread_id": None}
    assert codec.decode(framed(3, avro_body(newer, record))) == sample_event()
    hug = framed(3, avro_body(newer, {**record, "event_type": "HUG"}))
    assert reason_of(hug, codec) == "unknown_enum"


def test_writer_with_another_time_unit_is_not_misread_as_millis() -> None:
    micros = shipped_json_schema(1)
    micros["fields"][8]["type"]["logicalType"] = "timestamp-micros"
    codec = EventCodec(DictResolver({5: micros}))
    record = json.loads(CODEC.encode_json(sample_event(occurred_at=1_715_000_000_000_000)))
    assert reason_of(framed(5, avro_body(micros, record)), codec) == "wrong_type"


def test_writer_of_another_record_type() -> None:
    other: AvroSchema = {
        "type": "record",
        "name": "PageView",
        "fields": [{"name": "url", "type": "string"}],
    }
    codec = EventCodec(DictResolver({9: other}))
    assert reason_of(framed(9, avro_body(other, {"url": "x"})), codec) == "avro_invalid"


def test_writer_of_a_primitive_schema() -> None:
    codec = EventCodec(DictResolver({8: "string"}))  # type: ignore[dict-item]
    assert reason_of(framed(8, b"\x02x"), codec) == "avro_invalid"


def test_unusable_registered_schema_is_unknown_schema_id() -> None:
    codec = EventCodec(DictResolver({4: {"type": "record", "name": "X", "fields": "nope"}}))
    assert reason_of(framed(4, b"\x00"), codec) == "unknown_schema_id"


def test_resolver_outage_is_not_a_decode_error() -> None:
    class DownRegistry:
        def writer_schema(self, schema_id: int) -> AvroSchema:
            raise ConnectionError("registry unreachable")

    codec = EventCodec(DownRegistry())
    with pytest.raises(ConnectionError):
        codec.decode(CODEC.encode_avro(sample_event()))


# --- Limits and garbage -----------------------------------------------------------------------


def test_unknown_schema_id() -> None:
    raw = CODEC.encode_avro(sample_event())
    assert reason_of(b"\x00\x00\x00\x00\x63" + raw[5:]) == "unknown_schema_id"
    assert reason_of(b"\x00\xff\xff\xff\xff" + raw[5:]) == "unknown_schema_id"


def test_empty() -> None:
    assert reason_of(b"") == "empty"


def test_five_megabytes_is_too_large() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 1024 * 1024
    big = CODEC.encode_json(sample_event(content_id="x" * (5 * 1024 * 1024)))
    assert reason_of(big) == "too_large"
    assert reason_of(b"\x00" + big) == "too_large"


def test_max_message_bytes_is_configurable() -> None:
    raw = CODEC.encode_json(sample_event())
    assert default_codec(max_message_bytes=len(raw)).decode(raw) == sample_event()
    assert reason_of(raw, default_codec(max_message_bytes=len(raw) - 1)) == "too_large"
    with pytest.raises(ValueError):
        default_codec(max_message_bytes=0)


@pytest.mark.parametrize("schema_id", [1, 2])
def test_avro_truncated_at_every_length(schema_id: int) -> None:
    raw = CODEC.encode_avro(sample_event(recipient_ids=("u-" + "b" * 200,)), schema_id)
    assert reason_of(raw[:0]) == "empty"
    for length in range(1, len(raw)):
        assert reason_of(raw[:length]) == "avro_truncated", length


def test_json_truncated_at_every_length() -> None:
    raw = CODEC.encode_json(sample_event())
    for length in range(1, len(raw)):
        assert reason_of(raw[:length]) == "json_invalid", length


def test_non_utf8_json() -> None:
    raw = CODEC.encode_json(sample_event(actor_id="u-zoë"))
    assert reason_of(raw.replace("ë".encode(), b"\xeb")) == "json_invalid"
    assert reason_of(raw.replace(b"acme", b"ac\xc3\x28e")) == "json_invalid"


def test_deeply_nested_json_is_json_invalid() -> None:
    assert reason_of(b"[" * 200_000) == "json_invalid"
    assert reason_of(b'{"event_id":' + b"[" * 200_000) == "json_invalid"


def test_json_leading_whitespace_and_bom_are_fine() -> None:
    raw = CODEC.encode_json(sample_event())
    assert CODEC.decode(b"\n  " + raw) == sample_event()
    assert CODEC.decode(b"\xef\xbb\xbf" + raw) == sample_event()


# --- JSON field rules ----------------------------------------------------------------------


def json_with(**changes: Any) -> bytes:
    doc = json.loads(CODEC.encode_json(sample_event()))
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": ...}, "missing_field"),
        ({"event_type": ...}, "missing_field"),
        ({"org_id": ...}, "missing_field"),
        ({"actor_id": ...}, "missing_field"),
        ({"recipient_ids": ...}, "missing_field"),
        ({"occurred_at": ...}, "missing_field"),
        ({"source": ...}, "missing_field"),
        ({"event_id": 1}, "wrong_type"),
        ({"org_id": None}, "wrong_type"),
        ({"actor_id": ["u-alice"]}, "wrong_type"),
        ({"source": True}, "wrong_type"),
        ({"recipient_ids": None}, "wrong_type"),
        ({"recipient_ids": {"u-bob": 1}}, "wrong_type"),
        ({"recipient_ids": ["u-bob", None]}, "wrong_type"),
        ({"content_id": 5}, "wrong_type"),
        ({"channel": False}, "wrong_type"),
        ({"event_type": 1}, "wrong_type"),
        ({"visibility": None}, "wrong_type"),
        ({"occurred_at": True}, "wrong_type"),
        ({"occurred_at": False}, "wrong_type"),
        ({"occurred_at": 1.5e12}, "wrong_type"),
        ({"occurred_at": None}, "wrong_type"),
        ({"event_type": "HUG"}, "unknown_enum"),
        ({"event_type": ""}, "unknown_enum"),
        ({"visibility": "public"}, "unknown_enum"),
        ({"occurred_at": 2**63}, "bad_timestamp"),
        ({"occurred_at": -(2**63) - 1}, "bad_timestamp"),
        ({"occurred_at": "2024-13-01T00:00:00Z"}, "bad_timestamp"),
        ({"occurred_at": "2024-05-06T24:00:00Z"}, "bad_timestamp"),
        ({"occurred_at": "2024-05-06T09:15:30+24:00"}, "bad_timestamp"),
        ({"occurred_at": "2024-05-06T09:15:30.Z"}, "bad_timestamp"),
        ({"occurred_at": "2024-05-06T09:15:30Z "}, "bad_timestamp"),
        ({"occurred_at": "२०२४-05-06T09:15:30Z"}, "bad_timestamp"),
        ({"values": None}, "wrong_type"),
        ({"values": "ownership"}, "wrong_type"),
        ({"values": ["ownership", 7]}, "wrong_type"),
        ({"values": [f"v{i}" for i in range(17)]}, "too_long"),
        ({"values": ["v" * 257]}, "too_long"),
        ({"values": ["own\nership"]}, "bad_id"),
    ],
)
def test_json_field_errors(changes: dict[str, Any], reason: str) -> None:
    assert reason_of(json_with(**changes)) == reason


def test_json_optional_fields_default() -> None:
    raw = json_with(content_id=..., channel=..., visibility=...)
    assert CODEC.decode(raw) == sample_event(content_id=None, channel=None)
    assert CODEC.decode(json_with(content_id=None, channel=None)) == sample_event(
        content_id=None, channel=None
    )


def test_values_default_to_empty_and_keep_their_order() -> None:
    assert CODEC.decode(json_with(values=...)).values == ()
    assert CODEC.decode(json_with(values=[])).values == ()
    got = CODEC.decode(json_with(values=["teamwork", "ownership", "teamwork"]))
    assert got.values == ("teamwork", "ownership", "teamwork")  # the rules dedupe
    assert CODEC.decode(json_with(values=[f"v{i}" for i in range(16)])).values[-1] == "v15"
    event = sample_event(values=("ownership", "é" * 64))
    for schema_id in (1, 2, 3):
        assert CODEC.decode(CODEC.encode_avro(event, schema_id)) == as_written(event, schema_id)
    assert CODEC.decode(CODEC.encode_avro(event)) == event  # v3 by default


def test_avro_values_beyond_the_limits_go_to_the_dlq() -> None:
    many = CODEC.encode_avro(sample_event(values=tuple(f"v{i}" for i in range(17))), 3)
    assert reason_of(many) == "too_long"
    assert reason_of(CODEC.encode_avro(sample_event(values=("x" * 257,)), 3)) == "too_long"
    assert reason_of(CODEC.encode_avro(sample_event(values=("a\x85",)), 3)) == "bad_id"
    assert_columns_agree([many, CODEC.encode_avro(sample_event(values=("ok",)))])


def test_json_extra_fields_are_ignored() -> None:
    assert CODEC.decode(json_with(thread_id="t-1", emoji="tada")) == sample_event()


def test_json_first_missing_field_is_named() -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(json_with(org_id=..., source=...))
    assert "org_id" in info.value.detail


def test_empty_strings_and_thanks_without_recipients_decode() -> None:
    event = sample_event(event_id="", org_id="", actor_id="", recipient_ids=(), source="")
    assert CODEC.decode(CODEC.encode_json(event)) == event
    assert CODEC.decode(CODEC.encode_avro(event)) == event


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2024-05-06T09:15:30Z", 1_714_986_930_000),
        ("2024-05-06t09:15:30z", 1_714_986_930_000),
        ("2024-05-06 09:15:30Z", 1_714_986_930_000),
        ("2024-05-06T09:15:30-00:00", 1_714_986_930_000),
        ("2024-05-06T15:00:30+05:45", 1_714_986_930_000),
        ("2024-05-06T09:15:30.2Z", 1_714_986_930_200),
        ("2024-05-06T09:15:30.123456789Z", 1_714_986_930_123),
        ("1969-12-31T23:59:59.999Z", -1),
        ("2016-12-31T23:59:60Z", 1_483_228_800_000),
    ],
)
def test_rfc3339(text: str, millis: int) -> None:
    assert CODEC.decode(json_with(occurred_at=text)).occurred_at == millis


@FUZZ
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.builds(
            timezone, st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m))
        ),
    )
)
def test_rfc3339_any_instant(when: datetime) -> None:
    expected = (when - EPOCH) // timedelta(milliseconds=1)
    text = when.isoformat(timespec="microseconds")
    assert CODEC.decode(json_with(occurred_at=text)).occurred_at == expected


def test_lone_surrogate_in_json_is_rejected() -> None:
    assert reason_of(json_with(actor_id="u-\ud800")) == "json_invalid"
    # An escaped but valid pair is fine.
    assert CODEC.decode(json_with(actor_id="u-\U0001f600")).actor_id == "u-\U0001f600"


# --- Batches, errors -----------------------------------------------------------------------


def test_decode_many_keeps_order_and_isolates_errors() -> None:
    good_avro = CODEC.encode_avro(sample_event())
    good_json = CODEC.encode_json(sample_event(event_id="e2"))
    batch = [good_avro, b"", good_json, b"\x00\x00\x00\x00\x09zz", b"nope", b"x" * (2 << 20)]
    results = CODEC.decode_many(batch)
    assert results[0] == sample_event()
    assert results[2] == sample_event(event_id="e2")
    reasons = [r.reason for r in results if isinstance(r, DecodeError)]
    assert reasons == ["empty", "unknown_schema_id", "unknown_encoding", "too_large"]
    assert CODEC.decode_many([]) == []


def test_decode_error_is_data() -> None:
    error = DecodeError("wrong_type", "org_id: expected a string, got integer")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.reason, clone.detail) == (error.reason, error.detail)
    assert "wrong_type" in str(error)


# --- Properties ------------------------------------------------------------------------------

# Any text the limits allow (schemas/limits.py): no surrogates, no control characters.
texts = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=40)
events = st.builds(
    CollaborationEvent,
    event_id=texts,
    event_type=st.sampled_from(EventType),
    org_id=texts.map(lambda t: t.replace("/", "")),
    actor_id=texts,
    recipient_ids=st.lists(texts, max_size=5).map(tuple),
    content_id=st.none() | texts,
    channel=st.none() | texts,
    visibility=st.sampled_from(Visibility),
    occurred_at=st.integers(-(2**63), 2**63 - 1),
    source=texts,
    values=st.lists(texts, max_size=3).map(tuple),
)


@FUZZ
@given(events, st.sampled_from([1, 2, 3]))
def test_any_event_round_trips(event: CollaborationEvent, schema_id: int) -> None:
    assert CODEC.decode(CODEC.encode_avro(event, schema_id)) == as_written(event, schema_id)
    assert CODEC.decode(CODEC.encode_json(event)) == event
    assert CODEC.decode_many([CODEC.encode_json(event)]) == [event]


def reshuffled_writer(swap_unions: bool) -> AvroSchema:
    """v3 with its fields in reverse order, and optionally its unions as [string, null]."""
    schema = shipped_json_schema(3)
    schema["fields"].reverse()
    if swap_unions:
        for field in schema["fields"]:
            if field["type"] == ["null", "string"]:
                field["type"] = ["string", "null"]
                del field["default"]
    return schema


@FUZZ
@given(events)
def test_projection_and_resolution_agree(event: CollaborationEvent) -> None:
    # Reordered fields are read by projection; swapped unions need fastavro's resolution.
    schemas = {10: reshuffled_writer(False), 11: reshuffled_writer(True)}
    codec = EventCodec(DictResolver(schemas))
    record = {**json.loads(CODEC.encode_json(event)), "thread_id": "t"}
    for schema_id, schema in schemas.items():
        assert codec.decode(framed(schema_id, avro_body(schema, record))) == event


def decodes_or_decode_error(raw: bytes) -> None:
    try:
        event = CODEC.decode(raw)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS
    else:
        assert isinstance(event, CollaborationEvent)


@settings(FUZZ, max_examples=500)
@given(st.binary(max_size=600))
@example(b"\x00")
@example(b"{")
@example(b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
@example(b"\x00\x00\x00\x00\x01\x7f")
def test_random_bytes(raw: bytes) -> None:
    decodes_or_decode_error(raw)


@settings(FUZZ, max_examples=500)
@given(st.sampled_from([1, 2, 3]), st.binary(max_size=300))
def test_random_avro_bodies(schema_id: int, body: bytes) -> None:
    decodes_or_decode_error(framed(schema_id, body))


@settings(FUZZ, max_examples=300)
@given(events, st.sampled_from([1, 2, 3]), st.data())
def test_corrupted_avro(event: CollaborationEvent, schema_id: int, data: st.DataObject) -> None:
    raw = bytearray(CODEC.encode_avro(event, schema_id))
    position = data.draw(st.integers(5, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    decodes_or_decode_error(bytes(raw))
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert reason_of(bytes(raw[:cut])) in {"empty", "avro_truncated", "avro_invalid"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children)
    ),
    max_leaves=8,
)
field_values = st.fixed_dictionaries(
    {},
    optional={
        name: json_values | st.sampled_from(["THANKS", "PRIVATE", "2024-05-06T09:15:30Z"])
        for name in [f.name for f in fields(CollaborationEvent)]
    },
)


@settings(FUZZ, max_examples=500)
@given(field_values)
def test_random_json_objects(doc: dict[str, Any]) -> None:
    decodes_or_decode_error(json.dumps(doc).encode())


@settings(FUZZ, max_examples=300)
@given(events, st.data())
def test_corrupted_json(event: CollaborationEvent, data: st.DataObject) -> None:
    raw = bytearray(CODEC.encode_json(event))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    decodes_or_decode_error(bytes(raw))


# --- decode_columns agrees with decode_many, row by row ----------------------------------------

# Text near the limits: long, multi-byte, control characters, '/', lone surrogates (JSON).
edgy_texts = (
    texts
    | st.text(st.characters(), max_size=8)
    | st.sampled_from(["", "a/b", "é" * 129, "x" * 257, "\x85", "\u200b", "\x7f", "ok\x00"])
    | st.integers(60, 300).map(lambda n: "y" * n)
)
edgy_events = st.builds(
    CollaborationEvent,
    event_id=edgy_texts,
    event_type=st.sampled_from(EventType),
    org_id=edgy_texts,
    actor_id=edgy_texts,
    recipient_ids=st.lists(edgy_texts, max_size=4).map(tuple)
    | st.integers(60, 70).map(lambda n: tuple(f"r{i}" for i in range(n))),
    content_id=st.none() | edgy_texts | st.just("c" * 1025),
    channel=st.none() | edgy_texts,
    visibility=st.sampled_from(Visibility),
    occurred_at=st.integers(-(2**63), 2**63 - 1),
    source=edgy_texts,
    values=st.lists(edgy_texts, max_size=3).map(tuple)
    | st.integers(15, 18).map(lambda n: tuple(f"v{i}" for i in range(n))),
)


def encoded(event: CollaborationEvent, how: str) -> bytes:
    if how == "json":
        return json.dumps(_json_record(event)).encode()  # ASCII, \\u escapes
    if how == "json_utf8":
        return json.dumps(_json_record(event), ensure_ascii=False).encode("utf-8", "replace")
    schema_id = int(how.removeprefix("avro"))
    try:
        return CODEC.encode_avro(event, schema_id)
    except (UnicodeEncodeError, ValueError):
        return framed(schema_id, b"\x02x")


def _json_record(event: CollaborationEvent) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for f in fields(CollaborationEvent):
        record[f.name] = getattr(event, f.name)
    record["recipient_ids"] = list(event.recipient_ids)
    record["values"] = list(event.values)
    record["event_type"] = event.event_type.value
    record["visibility"] = event.visibility.value
    return record


messages = st.one_of(
    st.tuples(edgy_events, st.sampled_from(["avro1", "avro2", "avro3", "json", "json_utf8"])).map(
        lambda x: encoded(*x)
    ),
    st.binary(max_size=200),
    st.builds(framed, st.sampled_from([1, 2, 3, 4]), st.binary(max_size=120)),
    field_values.map(lambda d: json.dumps(d).encode()),
    st.tuples(events, st.sampled_from([1, 2, 3]), st.integers(5, 200), st.integers(0, 255)).map(
        lambda x: _corrupt(CODEC.encode_avro(x[0], x[1]), x[2], x[3])
    ),
    st.tuples(events, st.integers(0, 400), st.integers(0, 255)).map(
        lambda x: _corrupt(CODEC.encode_json(x[0]), x[1], x[2])
    ),
)


def _corrupt(raw: bytes, position: int, value: int) -> bytes:
    if position >= len(raw):
        return raw[: position % (len(raw) + 1)]  # cut short instead
    return raw[:position] + bytes([value]) + raw[position + 1 :]


def assert_columns_agree(raws: list[bytes], codec: EventCodec = CODEC) -> None:
    columns, errors = codec.decode_columns(raws)
    expected = codec.decode_many(raws)
    got: list[Any] = [None] * len(raws)
    for i, event in zip(columns.index.tolist(), columns.events(), strict=True):
        got[i] = event
    for i, error in errors:
        assert got[i] is None
        got[i] = (error.reason, error.detail)
    want = [(x.reason, x.detail) if isinstance(x, DecodeError) else x for x in expected]
    assert got == want
    assert columns.index.tolist() == sorted(columns.index.tolist())
    assert [i for i, _ in errors] == sorted(i for i, _ in errors)


@settings(FUZZ, max_examples=400)
@given(st.lists(messages, max_size=12))
def test_decode_columns_agrees_with_decode_many(raws: list[bytes]) -> None:
    assert_columns_agree(raws)


def test_decode_columns_on_examples_and_writers_needing_resolution() -> None:
    raws = [f.read_bytes() for f in VALID_JSON + VALID_BIN + INVALID]
    event = sample_event()
    record = {**json.loads(CODEC.encode_json(event)), "thread_id": "t"}
    schemas = {10: reshuffled_writer(False), 11: reshuffled_writer(True)}
    codec = EventCodec(DictResolver({**schemas, 1: shipped_json_schema(1)}))
    raws += [framed(i, avro_body(s, record)) for i, s in schemas.items()]
    raws += [CODEC.encode_avro(sample_event(recipient_ids=("é", "b"))), b"{}", b" {}"]
    assert_columns_agree(raws, codec)
    assert_columns_agree(raws)
    columns, errors = codec.decode_columns([])
    assert len(columns) == 0 and errors == []


# --- The JSON fast path's tight loop agrees with its per-message `add` ----------------------

INVALID_JSON = [f.read_bytes() for f in example_files("invalid", ".json")]
ascii_events = st.builds(
    replace,
    events,
    event_id=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    occurred_at=st.integers(-(2**63), 2**63 - 1) | st.just(2**63),
)
json_messages = st.one_of(
    ascii_events.map(CODEC.encode_json),  # plain: ASCII, no backslash
    st.tuples(ascii_events, st.sampled_from([", ", ": "])).map(
        lambda x: CODEC.encode_json(x[0]).replace(x[1].strip().encode(), x[1].encode())
    ),
    st.tuples(edgy_events, st.sampled_from(["json", "json_utf8"])).map(lambda x: encoded(*x)),
    st.sampled_from(INVALID_JSON),
    st.tuples(ascii_events, st.integers(0, 400), st.integers(0, 255)).map(
        lambda x: _corrupt(CODEC.encode_json(x[0]), x[1], x[2])
    ),
    field_values.map(lambda d: json.dumps(d, separators=(",", ":")).encode()),
)


@settings(FUZZ, max_examples=300)
@given(st.lists(json_messages, max_size=12))
def test_json_batch_loop_agrees_with_add_and_decode_many(raws: list[bytes]) -> None:
    from schemas.codec import _JsonColumns

    rows = [i for i, raw in enumerate(raws) if raw[:1] == b"{"]
    batched, single = _JsonColumns(), _JsonColumns()
    left = batched.add_all(rows, raws)
    left_single = [i for i in rows if not single.add(i, raws[i])]
    got, unsure = batched.columns()
    want, unsure_single = single.columns()
    assert sorted(left + unsure) == sorted(left_single + unsure_single)
    assert got.index.tolist() == want.index.tolist()
    assert list(got.events()) == list(want.events())
    assert_columns_agree(raws)


def test_v3_bodies_are_read_as_columns_with_their_values() -> None:
    codec = default_codec()
    events = [
        sample_event(event_id=f"e{i}", values=tuple(f"v{j}" for j in range(i % 4)))
        for i in range(12)
    ]
    raws = [codec.encode_avro(e, 1 + i % 3) for i, e in enumerate(events)]
    raws += [codec.encode_json(e) for e in events]
    codec.resolve({1, 2, 3})
    assert all(codec._plans[i].columns is not None for i in (1, 2, 3))  # no fallback
    columns, errors = codec.decode_columns(raws)
    assert errors == []
    want = [as_written(e, 1 + i % 3) for i, e in enumerate(events)] + events
    assert columns.events() == want
    assert_columns_agree(raws, codec)
