"""Decoding `directory.users` messages: the shipped examples, Avro and JSON alike, keys and
tombstones, schema evolution through a resolver, and every kind of garbage as data."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from schemas.codec import UnknownSchemaId
from schemas.directory import (
    DIRECTORY_DECODE_REASONS,
    DIRECTORY_SCHEMA_ID,
    DirectoryCodec,
    DirectoryDecodeError,
    DirectoryRecord,
    ShippedDirectorySchemas,
    directory_key,
    parse_key,
)

EXAMPLES = resources.files("schemas").joinpath("examples", "directory")
CODEC = DirectoryCodec()
ANN = DirectoryRecord("acme", "ann", "Ann", "platform", "eng", False, 1_795_426_200_000)


def reason(key: bytes | None, value: bytes | None, codec: DirectoryCodec = CODEC) -> str:
    with pytest.raises(DirectoryDecodeError) as info:
        codec.decode(key, value)
    assert info.value.reason in DIRECTORY_DECODE_REASONS
    return info.value.reason


@pytest.mark.parametrize("name", ["user.json", "opted_out.json", "minimal.json"])
def test_json_examples_decode_to_their_fields(name: str) -> None:
    raw = EXAMPLES.joinpath(name).read_bytes()
    doc = json.loads(raw)
    record = CODEC.decode(directory_key(doc["org_id"], doc["user_id"]), raw)
    assert (record.org_id, record.user_id) == (doc["org_id"], doc["user_id"])
    assert record.display_name == doc.get("display_name")
    assert (record.team, record.department) == (doc.get("team"), doc.get("department"))
    assert record.opted_out is doc.get("opted_out", False)
    assert record.updated_at == 1_795_426_200_000  # both spellings of the same instant
    assert not record.deleted
    # Both encodings round-trip.
    key = directory_key(record.org_id, record.user_id)
    assert CODEC.decode(key, CODEC.encode_avro(record)) == record
    assert CODEC.decode(key, CODEC.encode_json(record)) == record


def test_avro_example_matches_its_json_twin_byte_for_byte() -> None:
    raw = EXAMPLES.joinpath("user.bin").read_bytes()
    assert raw[:5] == b"\x00" + DIRECTORY_SCHEMA_ID.to_bytes(4, "big")
    record = CODEC.decode(b"acme/ann", raw)
    assert record == CODEC.decode(b"acme/ann", EXAMPLES.joinpath("user.json").read_bytes())
    assert CODEC.encode_avro(record) == raw


def test_a_null_or_empty_value_is_a_tombstone_named_by_its_key() -> None:
    for value in (None, b""):
        assert CODEC.decode(b"acme/ann", value) == DirectoryRecord("acme", "ann", deleted=True)
    # The user id may hold '/', the org id may not: the key splits at the first '/'.
    assert parse_key(b"acme/team/ann") == ("acme", "team/ann")
    for key in (None, b"", b"ann", b"/ann", b"acme/", b"\xff/ann"):
        assert reason(key, None) == "bad_key"
    with pytest.raises(ValueError, match="tombstone"):
        CODEC.encode_json(DirectoryRecord("acme", "ann", deleted=True))


def test_a_record_must_carry_its_own_key() -> None:
    value = CODEC.encode_json(ANN)
    assert reason(b"ann", value) == "key_mismatch"  # a bare user id: ambiguous across orgs
    assert reason(b"other/ann", value) == "key_mismatch"
    assert reason(None, value) == "key_mismatch"


def test_json_garbage_gets_a_reason() -> None:
    key = b"acme/ann"
    good: dict[str, Any] = {"org_id": "acme", "user_id": "ann", "updated_at": 1}
    cases: list[tuple[Any, str]] = [
        ({k: v for k, v in good.items() if k != "updated_at"}, "missing_field"),
        ({**good, "opted_out": "yes"}, "wrong_type"),
        ({**good, "team": 7}, "wrong_type"),
        ({**good, "updated_at": "yesterday"}, "bad_timestamp"),
        ({**good, "updated_at": 1.5}, "wrong_type"),
        ({**good, "org_id": "ac/me"}, "invalid_id"),
        ({**good, "user_id": ""}, "invalid_id"),
        ([good], "json_invalid"),
    ]
    for doc, want in cases:
        assert reason(key, json.dumps(doc).encode()) == want, doc
    assert reason(key, b'{"org_id": ') == "json_invalid"
    assert reason(key, b"\x01plain") == "unknown_encoding"
    assert reason(key, b'{"org_id": "acme", "user_id": "\\ud800", "updated_at": 1}') in (
        "json_invalid",
        "key_mismatch",
    )
    assert reason(key, b"{" + b" " * (2 << 20) + b"}") == "too_large"


def test_avro_garbage_gets_a_reason() -> None:
    raw = CODEC.encode_avro(ANN)
    key = b"acme/ann"
    assert reason(key, raw[:3]) == "avro_truncated"
    assert reason(key, raw[:-2]) == "avro_truncated"
    assert reason(key, raw + b"\x00") == "avro_invalid"
    assert reason(key, b"\x00\x00\x00\x00\x01" + raw[5:]) == "unknown_schema_id"  # an event id


class Registry:
    """A resolver with a newer writer schema (an extra optional field) under id 7."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        self.asked.append(schema_id)
        if schema_id != 7:
            raise UnknownSchemaId(schema_id)
        schema = dict(ShippedDirectorySchemas().writer_schema(DIRECTORY_SCHEMA_ID))
        schema["fields"] = [
            *schema["fields"],
            {"name": "location", "type": ["null", "string"], "default": None},
        ]
        return schema


def test_newer_writer_schemas_resolve_into_the_shipped_reader() -> None:
    registry = Registry()
    codec = DirectoryCodec(registry)
    raw = codec.encode_avro(ANN, 7)
    assert codec.unresolved_ids([raw, b'{"x": 1}']) == set()  # prepared while encoding
    fresh = DirectoryCodec(registry)
    assert fresh.unresolved_ids([raw]) == {7}
    fresh.resolve({7, 8})
    assert fresh.unresolved_ids([raw, b"\x00\x00\x00\x00\x08xx"]) == set()  # 8: unknown
    assert fresh.decode(b"acme/ann", raw) == ANN
    assert reason(b"acme/ann", b"\x00\x00\x00\x00\x08xx", fresh) == "unknown_schema_id"
