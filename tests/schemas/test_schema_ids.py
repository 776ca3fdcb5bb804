"""`SchemaIds`: the schema id -> prepared writer bookkeeping both codecs share."""

from __future__ import annotations

import pytest

from schemas.codec import (
    UNKNOWN_ID_TTL_S,
    AvroSchema,
    DecodeError,
    EventCodec,
    SchemaIds,
    ShippedSchemas,
    UnknownSchemaId,
    UnusableSchema,
)
from schemas.directory import DirectoryCodec, DirectoryDecodeError
from schemas.event import CollaborationEvent, EventType, Visibility


def framed(schema_id: int, body: bytes = b"x") -> bytes:
    return bytes([0]) + schema_id.to_bytes(4, "big") + body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Resolver:
    """Ids map to schemas; the lookups asked are recorded; ``down`` fails every lookup."""

    def __init__(self, schemas: dict[int, AvroSchema]) -> None:
        self.schemas = schemas
        self.asked: list[int] = []
        self.down = False

    def writer_schema(self, schema_id: int) -> AvroSchema:
        self.asked.append(schema_id)
        if self.down:
            raise ConnectionError("registry unreachable")
        try:
            return self.schemas[schema_id]
        except KeyError:
            raise UnknownSchemaId(schema_id) from None


def name_of(schema: AvroSchema) -> str:
    if "fields" not in schema:
        raise ValueError("not a record")
    return str(schema["name"])


RECORD: AvroSchema = {"type": "record", "name": "R", "fields": []}


def test_prepares_once_and_lists_only_unprepared_framed_ids() -> None:
    resolver = Resolver({1: RECORD})
    ids = SchemaIds(resolver, name_of)
    raws = [framed(1), framed(1), b'{"json": 1}', b"\x00\x00\x00", b"", b"\x01\x00\x00\x00\x02x"]
    assert ids.unresolved(raws) == {1}
    ids.resolve({1})
    assert ids.prepared == {1: "R"}
    assert ids.unresolved(raws) == set()
    assert ids.get(1) == "R"
    ids.resolve({1})
    assert resolver.asked == [1]  # prepared ids are not looked up again


def test_an_unknown_id_is_remembered_until_its_time_is_up() -> None:
    resolver, clock = Resolver({1: RECORD}), Clock()
    ids = SchemaIds(resolver, name_of, clock)
    with pytest.raises(UnknownSchemaId):
        ids.get(9)  # decoding an id never resolved: asked, not remembered
    assert ids.unknown == {}
    ids.resolve({1, 9})
    assert ids.unknown == {9: clock.now + UNKNOWN_ID_TTL_S}
    assert sorted(resolver.asked) == [1, 9, 9]
    asked = len(resolver.asked)
    assert ids.unresolved([framed(9)]) == set()
    with pytest.raises(UnknownSchemaId) as info:
        ids.get(9)
    assert not isinstance(info.value, UnusableSchema)
    assert len(resolver.asked) == asked  # remembered: the resolver is not asked

    resolver.schemas[9] = RECORD  # registered a little later
    clock.now += UNKNOWN_ID_TTL_S - 1
    assert ids.unresolved([framed(9)]) == set()
    clock.now += 1
    assert ids.unresolved([framed(9)]) == {9}  # expired: looked up again
    assert ids.unknown == {}
    ids.resolve({9})
    assert ids.get(9) == "R"


def test_an_unusable_schema_is_remembered_as_unknown() -> None:
    resolver, clock = Resolver({4: {"type": "record", "name": "X"}}), Clock()
    ids = SchemaIds(resolver, name_of, clock)
    with pytest.raises(UnusableSchema) as info:
        ids.get(4)
    assert info.value.schema_id == 4 and isinstance(info.value.cause, ValueError)
    assert "not a record" in str(info.value)
    ids.resolve([4])
    assert 4 in ids.unknown and 4 not in ids.prepared


def test_a_resolver_failure_propagates_and_is_not_remembered() -> None:
    resolver, clock = Resolver({1: RECORD}), Clock()
    ids = SchemaIds(resolver, name_of, clock)
    resolver.down = True
    with pytest.raises(ConnectionError):
        ids.resolve({1})
    with pytest.raises(ConnectionError):
        ids.get(1)
    assert ids.unknown == {} and ids.prepared == {}
    assert ids.unresolved([framed(1)]) == {1}  # still to be looked up
    resolver.down = False
    ids.resolve({1})
    assert ids.prepared == {1: "R"}


def test_prepare_asks_even_for_an_id_remembered_as_unknown() -> None:
    resolver = Resolver({})
    ids = SchemaIds(resolver, name_of, Clock())
    ids.resolve({5})
    resolver.schemas[5] = RECORD
    assert ids.prepare(5) == "R"
    assert ids.get(5) == "R"


def test_each_codec_keeps_its_own_errors_for_unknown_and_unusable_ids() -> None:
    shipped = ShippedSchemas()
    bad: AvroSchema = {"type": "record", "name": "X", "fields": "nope"}
    resolver = Resolver({1: shipped.writer_schema(1), 4: bad})
    events, directory = EventCodec(resolver), DirectoryCodec(resolver)
    event = CollaborationEvent(
        "e1", EventType.THANKS, "acme", "ann", ("bob",), None, None, Visibility.PUBLIC, 0, "test"
    )

    with pytest.raises(DecodeError) as unusable:
        events.decode(framed(4))
    assert unusable.value.reason == "unknown_schema_id"
    assert unusable.value.detail.startswith("schema id 4 is not a usable Avro schema: ")
    with pytest.raises(DirectoryDecodeError) as unusable_dir:
        directory.decode(b"a/b", framed(4))
    assert unusable_dir.value.reason == "unknown_schema_id"
    assert unusable_dir.value.detail.startswith("schema id 4 is not usable: ")

    for codec in (events, directory):
        codec.resolve({4, 9})
        assert codec.unresolved_ids([framed(4), framed(9), framed(1)]) == {1}
    with pytest.raises(DecodeError) as unknown:
        events.decode(framed(9))
    assert (unknown.value.reason, unknown.value.detail) == (
        "unknown_schema_id",
        "no schema registered under id 9",
    )
    with pytest.raises(DirectoryDecodeError) as unknown_dir:
        directory.decode(b"a/b", framed(9))
    assert (unknown_dir.value.reason, unknown_dir.value.detail) == (
        "unknown_schema_id",
        "no schema under id 9",
    )

    # Encoding asks the resolver whatever was remembered, and lets its answer through.
    with pytest.raises(UnknownSchemaId):
        events.encode_avro(event, 9)
    with pytest.raises(DecodeError, match="unknown_schema_id"):
        events.encode_avro(event, 4)
    assert events.decode(events.encode_avro(event, 1)) == event
    # Decoding looks plans up in the shared dict directly.
    assert events._plans is events._schema_ids.prepared
