"""Decode and encode `CollaborationEvent` messages as they appear on `collab.events`.

Two encodings share the topic and are told apart per message by the first byte:

* ``0x00``: Confluent wire format, i.e. the magic byte, a 4-byte big-endian schema id
  and the Avro binary body written with that schema;
* ``{``: a UTF-8 JSON object with the Avro field names (``occurred_at`` as epoch
  millis or an RFC 3339 string).

Contract of `EventCodec.decode`: for any ``bytes`` it returns a `CollaborationEvent` or
raises `DecodeError`, whose ``reason`` is one of `DECODE_REASONS`. The one exception
is a resolver that fails for reasons other than an unknown id (a Schema Registry that
is down): that error propagates, because the message is not at fault and must be
retried, not dead-lettered.

Decoding checks the schema and the limits on text (`schemas.limits`: ids of at most 256
UTF-8 bytes without control characters, an org id without ``/``; reasons ``too_long`` and
``bad_id``). Rule-level validity (empty ids, THANKS without recipients, too many
recipients) is left to the recognition rules, which record such events as refused.
"""

from __future__ import annotations

import gc
import json
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from importlib import resources
from io import BytesIO
from typing import Any, Final, Generic, Literal, Protocol, TypeVar, cast, get_args

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from schemas.event import (
    EVENT_TYPE_CODES,
    VISIBILITY_CODES,
    CollaborationEvent,
    EventColumns,
    EventType,
    Visibility,
)
from schemas.limits import (
    MAX_CONTENT_ID_BYTES,
    MAX_ID_BYTES,
    MAX_VALUES,
    LimitError,
    check_event_texts,
)
from schemas.times import parse_rfc3339

__all__ = [
    "CONFLUENT_MAGIC_BYTE",
    "DECODE_REASONS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "READER_SCHEMA_ID",
    "AvroSchema",
    "DecodeError",
    "DecodeReason",
    "EventCodec",
    "SchemaIds",
    "SchemaResolver",
    "ShippedSchemas",
    "UnknownSchemaId",
    "UnusableSchema",
    "default_codec",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 1024 * 1024
CONFLUENT_MAGIC_BYTE: Final = 0
# The shipped schema the codec reads every writer schema into (Avro schema resolution), and
# the one `encode_avro` writes by default: v3, the first with every field an event carries.
READER_SCHEMA_ID: Final = 3

DecodeReason = Literal[
    "empty",
    "too_large",
    "unknown_encoding",
    "unknown_schema_id",
    "avro_truncated",
    "avro_invalid",
    "json_invalid",
    "missing_field",
    "wrong_type",
    "unknown_enum",
    "bad_timestamp",
    # The limits on ids and other text (schemas/limits.py).
    "too_long",
    "bad_id",
]
# Every reason `DecodeError` can carry; stable tokens, fit for DLQ headers and metric labels.
DECODE_REASONS: Final[tuple[DecodeReason, ...]] = get_args(DecodeReason)

# An Avro schema as JSON-decoded (fastavro-parsed or not).
AvroSchema = dict[str, Any]


class DecodeError(Exception):
    """A message that cannot become a `CollaborationEvent`; it belongs in the DLQ.

    ``reason`` is a short stable token (see `DECODE_REASONS`); ``detail`` is for humans.
    """

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DecodeReason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[DecodeError], tuple[DecodeReason, str]]:
        return (DecodeError, (self.reason, self.detail))


class UnknownSchemaId(KeyError):
    """No schema is registered under this id."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(schema_id)
        self.schema_id = schema_id

    def __str__(self) -> str:
        return f"no schema registered under id {self.schema_id}"


class SchemaResolver(Protocol):
    """Where writer schemas come from: the shipped files, or a Schema Registry."""

    def writer_schema(self, schema_id: int) -> AvroSchema:
        """The Avro schema registered under ``schema_id``.

        Raises `UnknownSchemaId` when there is none. Any other exception means the
        lookup itself failed (e.g. the registry is unreachable) and is propagated.
        The result must not be mutated; the codec caches what it derives from it.
        """
        ...


class ShippedSchemas:
    """The schemas in ``schemas/avro``, by the ids in ``schemas/avro/ids.json``.

    Used when no Schema Registry is configured. Files are read lazily, once.
    """

    def __init__(self) -> None:
        self._ids: dict[int, str] | None = None
        self._schemas: dict[int, AvroSchema] = {}

    def ids(self) -> Mapping[int, str]:
        """Schema id -> file name, as shipped."""
        if self._ids is None:
            text = _avro_dir().joinpath("ids.json").read_text(encoding="utf-8")
            self._ids = {int(key): name for key, name in json.loads(text).items()}
        return self._ids

    @property
    def latest_id(self) -> int:
        """The id of the newest shipped schema version."""
        return max(self.ids())

    def writer_schema(self, schema_id: int) -> AvroSchema:
        schema = self._schemas.get(schema_id)
        if schema is None:
            name = self.ids().get(schema_id)
            if name is None:
                raise UnknownSchemaId(schema_id)
            text = _avro_dir().joinpath(name).read_text(encoding="utf-8")
            schema = cast(AvroSchema, json.loads(text))
            self._schemas[schema_id] = schema
        return schema


def _avro_dir() -> resources.abc.Traversable:
    return resources.files("schemas").joinpath("avro")


# --- Schema ids --------------------------------------------------------------------------

_SCHEMA_ID = struct.Struct(">I")
# How long an id the resolver did not know is taken as unknown without asking again.
UNKNOWN_ID_TTL_S = 60.0
_HEADER = struct.Struct(">BI")
_HEADER_SIZE: Final = _HEADER.size

_Prepared = TypeVar("_Prepared")


class UnusableSchema(UnknownSchemaId):
    """A schema is registered under this id but cannot be prepared (fastavro refuses it):
    for decoding, as good as unknown. ``cause`` is what preparing it raised."""

    def __init__(self, schema_id: int, cause: Exception) -> None:
        super().__init__(schema_id)
        self.cause = cause

    def __str__(self) -> str:
        return f"schema id {self.schema_id} is not usable: {self.cause}"


class SchemaIds(Generic[_Prepared]):
    """What a codec prepared from each writer schema id, and the ids found unknown.

    ``prepared`` maps a schema id to what ``prepare`` made of the resolver's writer schema
    (never None); it is a plain dict so that a hot path may look ids up in it directly.
    ``unknown`` maps ids the resolver did not know (or whose schema was unusable) to
    until when (``clock`` time) to believe it: garbage with random ids must not cost a
    registry round trip per message, yet an id registered a little later must be found.
    """

    __slots__ = ("_clock", "_prepare", "_resolver", "prepared", "unknown")

    def __init__(
        self,
        resolver: SchemaResolver,
        prepare: Callable[[AvroSchema], _Prepared],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._prepare = prepare
        self._clock = clock
        self.prepared: dict[int, _Prepared] = {}
        self.unknown: dict[int, float] = {}

    def unresolved(self, raws: Iterable[bytes]) -> set[int]:
        """Schema ids of Confluent-framed messages neither prepared nor known to be unknown
        (unknown ids whose time is up are forgotten first): what `resolve` must look up."""
        prepared, unknown = self.prepared, self.unknown
        if unknown:
            now = self._clock()
            for schema_id, until in list(unknown.items()):
                if until <= now:
                    del unknown[schema_id]
        out: set[int] = set()
        for raw in raws:
            if len(raw) >= _HEADER_SIZE and raw[0] == CONFLUENT_MAGIC_BYTE:
                schema_id = _SCHEMA_ID.unpack_from(raw, 1)[0]
                if schema_id not in prepared and schema_id not in unknown:
                    out.add(schema_id)
        return out

    def resolve(self, schema_ids: Iterable[int]) -> None:
        """Prepare these ids (blocking: the resolver may ask a registry). An id found
        unknown or unusable is remembered as unknown for `UNKNOWN_ID_TTL_S`; any other
        failure of the resolver propagates (the message is not at fault)."""
        for schema_id in schema_ids:
            try:
                self.get(schema_id)
            except UnknownSchemaId:
                self.unknown[schema_id] = self._clock() + UNKNOWN_ID_TTL_S

    def get(self, schema_id: int) -> _Prepared:
        """The prepared id, preparing it now if need be (see `prepare`); raises
        `UnknownSchemaId` at once for an id remembered as unknown."""
        prepared = self.prepared.get(schema_id)
        if prepared is not None:
            return prepared
        if schema_id in self.unknown:
            raise UnknownSchemaId(schema_id)
        return self.prepare(schema_id)

    def prepare(self, schema_id: int) -> _Prepared:
        """Ask the resolver for the id's writer schema and prepare it, even if the id is
        remembered as unknown. Raises the resolver's `UnknownSchemaId`, or `UnusableSchema`
        when preparing fails; any other failure of the resolver propagates."""
        schema = self._resolver.writer_schema(schema_id)
        try:
            prepared = self._prepare(schema)
        except Exception as exc:  # any fastavro parse failure: the id is unusable
            raise UnusableSchema(schema_id, exc) from None
        self.prepared[schema_id] = prepared
        return prepared


# --- Avro plans --------------------------------------------------------------------------

# Logical types whose Python form is the base type's form for this codec: timestamps
# stay epoch-millis ints (no datetime round trip on the hot path), uuids stay strings.
_TRANSPARENT_LOGICAL_TYPES: Final = {("long", "timestamp-millis"), ("string", "uuid")}
# Keys that do not change how data is laid out or read.
_IRRELEVANT_KEYS: Final = frozenset({"doc", "aliases", "default", "order"})
# Bookkeeping fastavro adds to schemas it has parsed.
_FASTAVRO_KEYS: Final = frozenset({"__fastavro_parsed", "__named_schemas"})


class _AvroPlan:
    """How to read (and write) bodies written with one schema id.

    ``reader`` is None when the writer's event fields are laid out exactly as the
    reader's: the body is read with the writer schema alone and the event built from
    the record directly, which is 3x faster than fastavro's schema resolution.
    ``missing`` then holds reader defaults for event fields the writer lacks.
    Otherwise fastavro resolves writer -> reader and the result is re-validated.
    """

    __slots__ = ("columns", "missing", "reader", "writer")

    def __init__(
        self,
        writer: AvroSchema,
        reader: AvroSchema | None,
        missing: tuple[tuple[str, Any], ...],
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.missing = missing
        # How `decode_columns` reads these bodies as columns; None: message by message.
        self.columns: _ColumnPlan | None = None


def _decoding_form(schema: AvroSchema) -> tuple[AvroSchema, AvroSchema]:
    """``schema`` without the transparent logical types: (fastavro-parsed, fully expanded)."""

    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: strip(v) for k, v in node.items() if k not in _FASTAVRO_KEYS}
        base, logical = out.get("type"), out.get("logicalType")
        if isinstance(base, str) and (base, logical) in _TRANSPARENT_LOGICAL_TYPES:
            del out["logicalType"]
        return out

    stripped = strip(schema)
    parsed = cast(AvroSchema, parse_schema(stripped))
    expanded = cast(AvroSchema, parse_schema(stripped, expand=True))
    return parsed, expanded


def _layout(node: Any) -> Any:
    """The parts of an (expanded) schema that decide how data is read."""
    if isinstance(node, list):
        return [_layout(item) for item in node]
    if isinstance(node, dict):
        kept = {k: _layout(v) for k, v in node.items() if k not in _IRRELEVANT_KEYS}
        # {"type": "long"} and "long" are the same schema.
        return kept["type"] if kept.keys() == {"type"} else kept
    return node


def _plan(
    writer: tuple[AvroSchema, AvroSchema], reader: tuple[AvroSchema, AvroSchema]
) -> _AvroPlan:
    """Read with the writer alone when every reader field is laid out identically in it
    (or missing there with a default); else let fastavro resolve writer -> reader."""
    (writer_parsed, expanded_writer), (reader_parsed, expanded_reader) = writer, reader
    if (
        isinstance(expanded_writer, dict)
        and expanded_writer.get("type") == "record"
        and expanded_writer.get("name") == expanded_reader.get("name")
    ):
        writer_fields = {f["name"]: f for f in expanded_writer["fields"]}
        missing: list[tuple[str, Any]] = []
        for field in expanded_reader["fields"]:
            name = field["name"]
            written = writer_fields.get(name)
            if written is None:
                if "default" not in field:
                    break
                missing.append((name, field["default"]))
            elif _layout(written["type"]) != _layout(field["type"]):
                break
        else:
            event_missing = tuple((n, d) for n, d in missing if n in _EVENT_FIELD_NAMES)
            plan = _AvroPlan(writer_parsed, None, event_missing)
            plan.columns = _column_plan(plan, expanded_writer)
            return plan
    return _AvroPlan(writer_parsed, reader_parsed, ())


# --- Building events ---------------------------------------------------------------------

_EVENT_FIELD_NAMES: Final = (
    "event_id",
    "event_type",
    "org_id",
    "actor_id",
    "recipient_ids",
    "content_id",
    "channel",
    "visibility",
    "occurred_at",
    "source",
    "values",
)
_EVENT_TYPES: Final[dict[str, EventType]] = {member.value: member for member in EventType}
_VISIBILITIES: Final[dict[str, Visibility]] = {member.value: member for member in Visibility}
_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1


if tuple(f.name for f in fields(CollaborationEvent)) != _EVENT_FIELD_NAMES:
    # The builders below pass fields by position (it is measurably faster).
    raise RuntimeError("CollaborationEvent fields no longer match the codec's field order")


def _event_from_record(record: dict[str, Any]) -> CollaborationEvent:
    """Build from a record fastavro read with the reader's own field layout (trusted)."""
    return CollaborationEvent(
        record["event_id"],
        _EVENT_TYPES[record["event_type"]],
        record["org_id"],
        record["actor_id"],
        tuple(record["recipient_ids"]),
        record["content_id"],
        record["channel"],
        _VISIBILITIES[record["visibility"]],
        record["occurred_at"],
        record["source"],
        tuple(record.get("values", ())),
    )


_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def json_type_name(value: object) -> str:
    """How JSON calls the type of a decoded value, for error details."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _wrong_type(field: str, expected: str, value: object) -> DecodeError:
    got = json_type_name(value)
    return DecodeError("wrong_type", f"{field}: expected {expected}, got {got}")


def _enum(field: str, value: object, members: Mapping[str, Any]) -> Any:
    if type(value) is not str:
        raise _wrong_type(field, "an enum symbol string", value)
    member = members.get(value)
    if member is None:
        symbols = ", ".join(members)
        raise DecodeError("unknown_enum", f"{field}: {value[:64]!r} is not one of {symbols}")
    return member


def _event_from_mapping(obj: dict[str, Any]) -> CollaborationEvent:
    """Build from an untrusted mapping (a JSON object), checking every field."""
    try:
        event_id = obj["event_id"]
        event_type = obj["event_type"]
        org_id = obj["org_id"]
        actor_id = obj["actor_id"]
        recipient_ids = obj["recipient_ids"]
        occurred_at = obj["occurred_at"]
        source = obj["source"]
    except KeyError as exc:
        raise DecodeError("missing_field", f"required field {exc.args[0]} is missing") from None
    content_id = obj.get("content_id")
    channel = obj.get("channel")
    visibility = obj.get("visibility", "PUBLIC")

    if type(event_id) is not str:
        raise _wrong_type("event_id", "a string", event_id)
    kind = _enum("event_type", event_type, _EVENT_TYPES)
    if type(org_id) is not str:
        raise _wrong_type("org_id", "a string", org_id)
    if type(actor_id) is not str:
        raise _wrong_type("actor_id", "a string", actor_id)
    if type(recipient_ids) is not list:
        raise _wrong_type("recipient_ids", "an array of strings", recipient_ids)
    for recipient in recipient_ids:
        if type(recipient) is not str:
            raise _wrong_type("recipient_ids[]", "a string", recipient)
    if content_id is not None and type(content_id) is not str:
        raise _wrong_type("content_id", "a string or null", content_id)
    if channel is not None and type(channel) is not str:
        raise _wrong_type("channel", "a string or null", channel)
    shown = _enum("visibility", visibility, _VISIBILITIES)
    if type(occurred_at) is int:
        if not _LONG_MIN <= occurred_at <= _LONG_MAX:
            raise DecodeError("bad_timestamp", "occurred_at: epoch millis out of 64-bit range")
    elif type(occurred_at) is str:
        occurred_at = _rfc3339_millis(occurred_at)
    else:
        raise _wrong_type("occurred_at", "epoch millis or an RFC 3339 string", occurred_at)
    if type(source) is not str:
        raise _wrong_type("source", "a string", source)
    values = obj.get("values", _NO_VALUES)
    if type(values) is not list:
        raise _wrong_type("values", "an array of strings", values)
    for value in values:
        if type(value) is not str:
            raise _wrong_type("values[]", "a string", value)

    return CollaborationEvent(
        event_id,
        kind,
        org_id,
        actor_id,
        tuple(recipient_ids),
        content_id,
        channel,
        shown,
        occurred_at,
        source,
        tuple(values),
    )


_NO_VALUES: Final[list[str]] = []


def _rfc3339_millis(text: str, field: str = "occurred_at") -> int:
    """`schemas.times.parse_rfc3339`, its ValueError as a `bad_timestamp` DecodeError."""
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise DecodeError("bad_timestamp", f"{field}: {exc}") from None


# --- Decoding a batch into columns -------------------------------------------------------
#
# `EventCodec.decode_columns` decodes what it can as whole columns and leaves every message
# it is not sure of to the per-message path above, which then gives the event or the exact
# DecodeError that `decode_many` gives. Avro bodies written with a plan that needs no schema
# resolution are read by a vectorised reader (numpy, one pass per field over the whole
# batch); JSON objects by msgspec into a Struct. Only what both readers fully understand
# stays on the fast path: Avro varints of at most 9 bytes, arrays in one block of at most
# `_MAX_FAST_ITEMS` items, ASCII strings; JSON that is ASCII or valid UTF-8, with every
# field of the right type and in range. The limits on text are checked per column.

_MAX_FAST_ITEMS: Final = 64
_STRING, _LONG, _ENUM, _STRINGS, _OPTIONAL = range(5)
_STRING_FIELDS: Final = ("event_id", "org_id", "actor_id", "source")
_OPTIONAL_FIELDS: Final = ("content_id", "channel")
_ENUM_CODES: Final[dict[str, dict[str, int]]] = {
    "event_type": {t.value: i for i, t in enumerate(EVENT_TYPE_CODES)},
    "visibility": {v.value: i for i, v in enumerate(VISIBILITY_CODES)},
}
_READER_KINDS: Final = {
    **{name: _STRING for name in _STRING_FIELDS},
    **{name: _OPTIONAL for name in _OPTIONAL_FIELDS},
    "event_type": _ENUM,
    "visibility": _ENUM,
    "recipient_ids": _STRINGS,
    "values": _STRINGS,
    "occurred_at": _LONG,
}


class _ColumnPlan:
    """How the vectorised reader walks a body: per writer field (kind, event field or None
    when the event has no such field, extra: enum symbols or the union's null branch)."""

    __slots__ = ("defaults", "steps")

    def __init__(self, steps: list[tuple[int, str | None, Any]], defaults: dict[str, Any]):
        self.steps = steps
        self.defaults = defaults


def _column_plan(plan: _AvroPlan, expanded_writer: AvroSchema) -> _ColumnPlan | None:
    """The vectorised reader's walk for a plan read without resolution, or None when the
    writer has a field it cannot read (then the batch's messages take the per-message path)."""
    if plan.reader is not None:
        return None
    steps: list[tuple[int, str | None, Any]] = []
    for field in expanded_writer["fields"]:
        name = field["name"]
        step = _field_step(_layout(field["type"]))
        if step is None:
            return None
        kind, extra = step
        event_field = name if name in _EVENT_FIELD_NAMES else None
        if event_field is not None and _READER_KINDS[name] != kind:
            return None
        if kind == _ENUM and event_field is not None:
            codes = _ENUM_CODES[name]
            if not all(s in codes for s in extra):
                return None
            extra = np.array([codes[s] for s in extra], dtype=np.int8)
        steps.append((kind, event_field, extra))
    return _ColumnPlan(steps, dict(plan.missing))


def _field_step(layout: Any) -> tuple[int, Any] | None:
    if layout == "string":
        return _STRING, None
    if layout in ("long", "int"):
        return _LONG, None
    if isinstance(layout, list) and len(layout) == 2 and "null" in layout and "string" in layout:
        return _OPTIONAL, layout.index("null")
    if isinstance(layout, dict):
        if layout.get("type") == "enum":
            return _ENUM, tuple(layout["symbols"])
        if layout.get("type") == "array" and layout.get("items") == "string":
            return _STRINGS, None
    return None


class _Walk:
    """The vectorised reader's cursor over one buffer holding every body of a batch."""

    __slots__ = ("bad", "buf", "end", "limit", "pos")

    def __init__(self, bodies: Sequence[bytes]) -> None:
        sizes = np.fromiter((len(b) for b in bodies), dtype=np.int64, count=len(bodies))
        ends = np.cumsum(sizes)
        self.buf = np.frombuffer(b"".join(bodies) + bytes(16), dtype=np.uint8)
        self.limit = len(self.buf) - 11
        self.pos = ends - sizes + _HEADER_SIZE
        self.end = ends
        self.bad = np.zeros(len(bodies), dtype=bool)

    def varint(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Read a zigzag varint at each row's position (all rows, or `rows`) and advance."""
        pos = self.pos if rows is None else self.pos[rows]
        at = np.minimum(pos, self.limit)
        first = self.buf[at]
        if not (first & 0x80).any():
            value = (first >> 1).astype(np.int64) ^ -(first & 1).astype(np.int64)
            size = np.ones(len(at), dtype=np.int64)
        else:
            value, size, ok = _long_varints(self.buf, at)
            self._flag(~ok, rows)
        if rows is None:
            self.pos += size
        else:
            self.pos[rows] += size
        out: np.ndarray = value
        return out

    def _flag(self, mask: np.ndarray, rows: np.ndarray | None) -> None:
        if rows is None:
            self.bad |= mask
        else:
            self.bad[rows[mask]] = True

    def string(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of a string at each row's position; advances past it."""
        length = self.varint(rows)
        self._flag(length < 0, rows)
        length = np.clip(length, 0, self.limit)
        start = self.pos if rows is None else self.pos[rows]
        start = start.copy()
        if rows is None:
            self.pos += length
        else:
            self.pos[rows] += length
        self.pos = np.minimum(self.pos, self.limit)
        return start, length


def _long_varints(buf: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zigzag varints of up to 9 bytes (63 bits) at `at`: (value, size, ok)."""
    k = np.arange(10)
    raw = buf[at[:, None] + k]
    more = (raw & 0x80) != 0
    last = np.argmin(more, axis=1)  # the first byte without a continuation bit
    ok = (last < 9) & ~more[np.arange(len(at)), last]
    shift = (7 * k).astype(np.uint64)
    parts = (raw & 0x7F).astype(np.uint64) << shift
    u = np.where(k[None, :] <= last[:, None], parts, np.uint64(0)).sum(axis=1, dtype=np.uint64)
    value = (u >> np.uint64(1)).astype(np.int64) ^ -(u & np.uint64(1)).astype(np.int64)
    return value, last.astype(np.int64) + 1, ok


class _Fields:
    """What the vectorised reader found, per event field: (start, length) of strings,
    values of ints and enums, string arrays (recipients, values) as (row, item, start, length)
    by field name."""

    __slots__ = ("bad_rows", "lists", "nulls", "strings", "values")

    def __init__(self, rows: int) -> None:
        self.bad_rows = np.zeros(rows, dtype=bool)
        self.strings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.nulls: dict[str, np.ndarray] = {}
        self.values: dict[str, np.ndarray] = {}
        self.lists: dict[str, tuple[np.ndarray, ...]] = {}


def _walk_bodies(walk: _Walk, plan: _ColumnPlan) -> _Fields:
    """Read every field of every body; rows the reader is unsure of end up in `walk.bad`."""
    out = _Fields(len(walk.pos))
    for kind, name, extra in plan.steps:
        if kind == _STRING:
            got = walk.string()
            if name is not None:
                out.strings[name] = got
        elif kind == _LONG:
            value = walk.varint()
            if name is not None:
                out.values[name] = value
        elif kind == _ENUM:
            value = walk.varint()
            walk.bad |= (value < 0) | (value >= len(extra))
            if name is not None:
                out.values[name] = extra[np.clip(value, 0, len(extra) - 1)]
        elif kind == _OPTIONAL:
            _walk_optional(walk, name, extra, out)
        else:
            _walk_strings(walk, name, out)
    walk.bad |= walk.pos != walk.end
    out.bad_rows = walk.bad
    return out


def _walk_optional(walk: _Walk, name: str | None, null_branch: int, out: _Fields) -> None:
    branch = walk.varint()
    walk.bad |= (branch != 0) & (branch != 1)
    present = np.flatnonzero(branch == 1 - null_branch)
    start = np.zeros(len(branch), dtype=np.int64)
    length = np.zeros(len(branch), dtype=np.int64)
    start[present], length[present] = walk.string(present)
    if name is not None:
        out.strings[name] = (start, length)
        out.nulls[name] = branch != 1 - null_branch


def _walk_strings(walk: _Walk, name: str | None, out: _Fields) -> None:
    """An array of strings in one block (count, items, then the 0 that ends the array)."""
    count = walk.varint()
    walk.bad |= (count < 0) | (count > _MAX_FAST_ITEMS)
    count = np.where(walk.bad, 0, count)
    rows, items, starts, lengths = [], [], [], []
    for j in range(int(count.max(initial=0))):
        active = np.flatnonzero(count > j)
        start, length = walk.string(active)
        rows.append(active)
        items.append(np.full(len(active), j, dtype=np.int64))
        starts.append(start)
        lengths.append(length)
    filled = np.flatnonzero(count > 0)
    walk.bad[filled[walk.varint(filled) != 0]] = True  # a second block: per message
    if name is not None:
        empty = np.zeros(0, dtype=np.int64)
        found = tuple(np.concatenate(x) if x else empty for x in (rows, items, starts, lengths))
        out.lists[name] = found
        out.values[f"{name}_count"] = count


def _gather(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Strings at (start, length) of `buf` as an Arrow binary array; and the rows that hold a
    byte outside ASCII (the per-message path decodes those)."""
    offsets = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    idx = np.repeat(start - offsets[:-1], length) + np.arange(total, dtype=np.int64)
    data = buf[idx]
    high = data >= 0x80
    rows = np.zeros(0, dtype=np.int64)
    if high.any():
        rows = np.unique(np.repeat(np.arange(len(start)), length)[high])
    kind = pa.binary() if total < 2**31 else pa.large_binary()
    width = np.int32 if total < 2**31 else np.int64
    array = pa.Array.from_buffers(
        kind, len(start), [None, pa.py_buffer(offsets.astype(width)), pa.py_buffer(data)]
    )
    return array, rows


def _string_bytes(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the first value, data bytes) of a string or binary array."""
    buffers = array.buffers()
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[array.offset : array.offset + len(array) + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0)
    data = data[offsets[0] : offsets[-1]]
    return offsets - offsets[0], data


def _text_flags(array: pa.Array, max_bytes: int, slash: bool = False) -> np.ndarray:
    """Rows that break a limit of `schemas.limits`: longer than `max_bytes` UTF-8 bytes, a
    control character (C0, DEL, or C1 as UTF-8 0xC2 0x80-0x9F), a '/' when `slash`."""
    offsets, data = _string_bytes(array)
    flags = np.diff(offsets) > max_bytes
    hit = (data < 0x20) | (data == 0x7F)
    if slash:
        hit |= data == 0x2F
    c1 = (data[:-1] == 0xC2) & (data[1:] >= 0x80) & (data[1:] <= 0x9F)
    if c1.any():
        hit[:-1] |= c1
    if hit.any():
        flags[np.searchsorted(offsets, np.flatnonzero(hit), side="right") - 1] = True
    return flags


def _limit_flags(cols: EventColumns) -> np.ndarray:
    """Events that break a limit on text (their exact error: `check_event_texts`)."""
    flags = _text_flags(cols.event_id, MAX_ID_BYTES)
    flags |= _text_flags(cols.org_id, MAX_ID_BYTES, slash=True)
    flags |= _text_flags(cols.actor_id, MAX_ID_BYTES)
    flags |= _text_flags(cols.source, MAX_ID_BYTES)
    flags |= _text_flags(cols.channel, MAX_ID_BYTES)
    flags |= _text_flags(cols.content_id, MAX_CONTENT_ID_BYTES)
    for array in (cols.recipient_ids, cols.values):
        items = _text_flags(array.flatten(), MAX_ID_BYTES)
        if items.any():
            offsets = _list_offsets(array)
            flags[np.searchsorted(offsets, np.flatnonzero(items), side="right") - 1] = True
    flags |= np.diff(_list_offsets(cols.values)) > MAX_VALUES
    return flags


def _list_offsets(array: pa.ListArray) -> np.ndarray:
    """Per row, where its items start in `array.flatten()` (length n + 1)."""
    offsets = np.asarray(array.offsets, dtype=np.int64)
    out: np.ndarray = offsets - offsets[0]
    return out


class _JsonEvent(msgspec.Struct, gc=False):
    """The JSON fast path's form of an event; anything it refuses takes the exact path."""

    event_id: str
    event_type: str
    org_id: str
    actor_id: str
    recipient_ids: list[str]
    occurred_at: int | str
    source: str
    content_id: str | None = None
    channel: str | None = None
    visibility: str = "PUBLIC"
    values: list[str] = msgspec.field(default_factory=list)


_JSON_EVENT = msgspec.json.Decoder(_JsonEvent)


class _JsonColumns:
    """Events the JSON fast path decoded, in message order."""

    __slots__ = ("events", "index", "times")

    def __init__(self) -> None:
        self.index: list[int] = []
        self.events: list[_JsonEvent] = []
        self.times: dict[int, int] = {}  # position in `events` -> an RFC 3339 time, parsed

    def add_all(self, rows: list[int], raws: Sequence[bytes]) -> list[int]:
        """`add` each of the messages `rows` of `raws`; returns those that must take the
        exact path. ASCII messages without a backslash (no escapes, so no lone surrogate,
        and valid UTF-8) need no check but msgspec's: they are decoded in a tight loop."""
        plain, other = rows, list[int]()
        joined = b"".join([raws[i] for i in rows])
        if not joined.isascii() or b"\\" in joined:
            plain = []
            for i in rows:
                (plain if raws[i].isascii() and b"\\" not in raws[i] else other).append(i)
        left = [i for i in other if not self.add(i, raws[i])]
        decode = _JSON_EVENT.decode
        index, events = self.index, self.events
        base = len(events)
        for i in plain:
            try:
                events.append(decode(raws[i]))
            except Exception:  # msgspec's DecodeError, ValidationError, RecursionError
                left.append(i)
                continue
            index.append(i)
        for k in range(base, len(events)):
            at = events[k].occurred_at
            if type(at) is str:
                try:
                    self.times[k] = parse_rfc3339(at)
                except ValueError:
                    self.times[k] = _LONG_MAX + 1  # not a time: `columns` leaves it aside
        return left

    def add(self, i: int, raw: bytes) -> bool:
        """Decode `raw`; False when it must take the exact path. (Enum symbols and the
        range of `occurred_at` are checked per column, in `columns`.)"""
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return False
        try:
            e = _JSON_EVENT.decode(raw)
        except Exception:  # msgspec's DecodeError, ValidationError, RecursionError
            return False
        at = e.occurred_at
        if isinstance(at, str):
            try:
                self.times[len(self.events)] = parse_rfc3339(at)
            except ValueError:
                return False
        if b"\\" in raw and (b"\\u" in raw or b"\\U" in raw) and not _encodable(e):
            self.times.pop(len(self.events), None)
            return False
        self.index.append(i)
        self.events.append(e)
        return True

    def columns(self) -> tuple[EventColumns, list[int]]:
        """The events as columns, and the messages to decode by the exact path after all
        (an unknown enum symbol, a time out of the 64-bit range)."""
        es = self.events
        times: list[Any] = [e.occurred_at for e in es]  # ints, once the strings are parsed
        for at, parsed in self.times.items():
            times[at] = parsed
        kind, show = _TYPE_CODE.get, _SHOWN_CODE.get
        kinds = np.array([kind(e.event_type, -1) for e in es], dtype=np.int8)
        shown = np.array([show(e.visibility, -1) for e in es], dtype=np.int8)
        try:
            at_ms = np.array(times, dtype=np.int64)
            odd = np.zeros(len(es), dtype=bool)
        except OverflowError:
            odd = np.array([not _LONG_MIN <= t <= _LONG_MAX for t in times], dtype=bool)
            at_ms = np.array([0 if o else t for t, o in zip(times, odd, strict=True)], np.int64)
        odd |= (kinds < 0) | (shown < 0)
        columns = EventColumns(
            np.array(self.index, dtype=np.int64),
            pa.array([e.event_id for e in es], pa.string()),
            np.maximum(kinds, 0),
            pa.array([e.org_id for e in es], pa.string()),
            pa.array([e.actor_id for e in es], pa.string()),
            pa.array([e.recipient_ids for e in es], pa.list_(pa.string())),
            pa.array([e.content_id for e in es], pa.string()),
            pa.array([e.channel for e in es], pa.string()),
            np.maximum(shown, 0),
            at_ms,
            pa.array([e.source for e in es], pa.string()),
            pa.array([e.values for e in es], pa.list_(pa.string())),
        )
        keep = np.flatnonzero(~odd) if odd.any() else None
        if len(columns) > 1 and (np.diff(columns.index) < 0).any():  # `add`ed ones first
            keep = np.argsort(columns.index, kind="stable") if keep is None else keep
            keep = keep[np.argsort(columns.index[keep], kind="stable")]
        if keep is None:
            return columns, []
        return columns.take(keep), np.sort(columns.index[odd]).tolist()


_TYPE_CODE: Final = {t.value: i for i, t in enumerate(EVENT_TYPE_CODES)}
_SHOWN_CODE: Final = {v.value: i for i, v in enumerate(VISIBILITY_CODES)}


def _encodable(e: _JsonEvent) -> bool:
    """No lone surrogate (from a JSON escape) in any of the event's strings."""
    texts = [e.event_id, e.org_id, e.actor_id, e.source, *e.recipient_ids, *e.values]
    texts.extend(t for t in (e.content_id, e.channel) if t is not None)
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _avro_columns(
    buf: np.ndarray, fields: _Fields, plan: _ColumnPlan, good: np.ndarray, index: np.ndarray
) -> tuple[EventColumns, np.ndarray]:
    """The events of the `good` rows (of a schema id's group) as columns, but for rows
    holding non-ASCII text: returned apart (group rows), for the per-message path."""
    n = len(good)
    binary: dict[str, pa.Array] = {}
    unsure: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    for name, (start, length) in fields.strings.items():
        binary[name], high = _gather(buf, start[good], length[good])
        unsure.append(high)
        if name in fields.nulls:
            binary[name] = _with_nulls(binary[name], fields.nulls[name][good])
    recipients, high = _string_lists(buf, fields, good, "recipient_ids")
    unsure.append(high)
    values, high = _string_lists(buf, fields, good, "values")
    unsure.append(high)
    codes = {
        name: fields.values[name][good]
        if name in fields.values
        else np.full(n, _ENUM_CODES[name][plan.defaults[name]], dtype=np.int8)
        for name in ("event_type", "visibility")
    }
    columns = EventColumns(
        index[good],
        _text(binary, plan, "event_id", n),
        codes["event_type"],
        _text(binary, plan, "org_id", n),
        _text(binary, plan, "actor_id", n),
        recipients,
        _text(binary, plan, "content_id", n),
        _text(binary, plan, "channel", n),
        codes["visibility"],
        fields.values["occurred_at"][good],
        _text(binary, plan, "source", n),
        values,
    )
    odd = np.unique(np.concatenate(unsure))
    if len(odd):
        columns = columns.take(np.setdiff1d(np.arange(n), odd))
    return _as_strings(columns), good[odd]


def _with_nulls(array: pa.Array, nulls: np.ndarray) -> pa.Array:
    if not nulls.any():
        return array
    return pc.if_else(pa.array(nulls), pa.scalar(None, array.type), array)


def _text(binary: dict[str, pa.Array], plan: _ColumnPlan, name: str, n: int) -> pa.Array:
    if name in binary:
        return binary[name]
    return pa.array([plan.defaults[name]] * n, pa.binary())


def _string_lists(
    buf: np.ndarray, fields: _Fields, good: np.ndarray, name: str
) -> tuple[pa.ListArray, np.ndarray]:
    """A string-array field (`recipient_ids`, `values`) of the good rows as a list array,
    and the rows (positions in `good`) with non-ASCII items. A field the writer lacks (v1
    and v2 have no `values`) is an empty list per row: its default."""
    if name not in fields.lists:
        empty = pa.array([], pa.binary())
        offsets = pa.array(np.zeros(len(good) + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, empty), np.zeros(0, dtype=np.int64)
    rows, items, start, length = fields.lists[name]
    position = np.full(len(fields.bad_rows), -1, dtype=np.int64)
    position[good] = np.arange(len(good))
    at = position[rows]
    keep = np.flatnonzero(at >= 0)
    order = keep[np.lexsort((items[keep], at[keep]))]
    values, high = _gather(buf, start[order], length[order])
    count = fields.values[f"{name}_count"][good]
    offsets = np.zeros(len(good) + 1, dtype=np.int32)
    np.cumsum(count, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values), np.unique(at[order][high])


def _as_strings(c: EventColumns) -> EventColumns:
    """Binary columns (known to hold ASCII) as string columns."""
    return EventColumns(
        c.index,
        c.event_id.cast(pa.string()),
        c.event_type,
        c.org_id.cast(pa.string()),
        c.actor_id.cast(pa.string()),
        c.recipient_ids.cast(pa.list_(pa.string())),
        c.content_id.cast(pa.string()),
        c.channel.cast(pa.string()),
        c.visibility,
        c.occurred_at,
        c.source.cast(pa.string()),
        c.values.cast(pa.list_(pa.string())),
    )


class _Sorted:
    """Where decode_columns sends each message of a batch."""

    __slots__ = ("avro", "errors", "json", "slow")

    def __init__(self) -> None:
        self.avro: dict[int, list[int]] = {}
        self.json = _JsonColumns()
        self.slow: list[int] = []
        self.errors: list[tuple[int, DecodeError]] = []


# --- The codec ---------------------------------------------------------------------------

_JSON_DECODE = json.JSONDecoder().decode
_JSON_WHITESPACE: Final = b" \t\r\n"
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_OPEN_BRACE: Final = 0x7B


class EventCodec:
    """Decodes `collab.events` messages into `CollaborationEvent`s, and encodes them.

    Writer schemas come from ``resolver`` and are prepared once per schema id; Avro
    bodies are resolved into ``reader_schema`` (default: the shipped v1), so bodies
    written by newer or older compatible versions decode alike.
    """

    __slots__ = ("_max_message_bytes", "_plans", "_reader", "_schema_ids")

    def __init__(
        self,
        resolver: SchemaResolver,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        reader_schema: AvroSchema | None = None,
    ) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        if reader_schema is None:
            reader_schema = ShippedSchemas().writer_schema(READER_SCHEMA_ID)
        self._max_message_bytes = max_message_bytes
        self._reader = reader = _decoding_form(reader_schema)
        self._schema_ids: SchemaIds[_AvroPlan] = SchemaIds(
            resolver, lambda schema: _plan(_decoding_form(schema), reader)
        )
        # The very dict of ``self._schema_ids.prepared``: decoding looks plans up in it directly.
        self._plans = self._schema_ids.prepared

    @property
    def max_message_bytes(self) -> int:
        return self._max_message_bytes

    def decode(self, raw: bytes) -> CollaborationEvent:
        """One message -> one event; raises `DecodeError` for anything undecodable."""
        size = len(raw)
        if size == 0 or size > self._max_message_bytes:
            raise self._size_error(size)
        first = raw[0]
        if first == CONFLUENT_MAGIC_BYTE:
            return self._decode_avro(raw)
        if first == _OPEN_BRACE:
            return self._decode_json(raw, "utf-8")
        return self._decode_other(raw)

    def decode_many(self, raws: Sequence[bytes]) -> list[CollaborationEvent | DecodeError]:
        """Decode a batch; each slot holds the event or the `DecodeError` for that message."""
        limit = self._max_message_bytes
        decode_avro = self._decode_avro
        decode_json = self._decode_json
        out: list[CollaborationEvent | DecodeError] = []
        append = out.append
        for raw in raws:  # `_decode_one`, inlined: this loop is hot
            try:
                size = len(raw)
                if size == 0 or size > limit:
                    append(self._size_error(size))
                    continue
                first = raw[0]
                if first == CONFLUENT_MAGIC_BYTE:
                    append(decode_avro(raw))
                elif first == _OPEN_BRACE:
                    append(decode_json(raw, "utf-8"))
                else:
                    append(self._decode_other(raw))
            except DecodeError as exc:
                append(exc)
        return out

    def _decode_one(self, raw: bytes) -> CollaborationEvent | DecodeError:
        """`decode_many` for one message."""
        try:
            return self.decode(raw)
        except DecodeError as exc:
            return exc

    def decode_columns(
        self, raws: Sequence[bytes]
    ) -> tuple[EventColumns, list[tuple[int, DecodeError]]]:
        """Decode a batch into columns: its events in message order (`EventColumns.index`
        is each one's position in `raws`), and per undecodable message its position and
        the `DecodeError` that `decode_many` gives for it, in message order."""
        sorted_ = self._sort(raws)
        json_part, unsure = sorted_.json.columns()
        parts = [json_part]
        sorted_.slow.extend(unsure)
        for schema_id, rows in sorted_.avro.items():
            plan = self._plans.get(schema_id)
            if plan is None or plan.columns is None:
                sorted_.slow.extend(rows)
                continue
            part, odd = _read_avro_columns(raws, np.array(rows, dtype=np.int64), plan.columns)
            parts.append(part)
            sorted_.slow.extend(odd.tolist())
        events: list[CollaborationEvent] = []
        index: list[int] = []
        for i in sorted(sorted_.slow):
            got = self._decode_one(raws[i])
            if isinstance(got, DecodeError):
                sorted_.errors.append((i, got))
            else:
                events.append(got)
                index.append(i)
        parts.append(EventColumns.from_events(events, index))
        columns = _checked(EventColumns.concat([p for p in parts if len(p)] or parts[:1]), sorted_)
        sorted_.errors.sort(key=lambda x: x[0])
        return columns, sorted_.errors

    def _sort(self, raws: Sequence[bytes]) -> _Sorted:
        """Size errors now; Avro by schema id, JSON through its fast path, the rest aside."""
        with _gc_paused():
            return self._sort_all(raws)

    def _sort_all(self, raws: Sequence[bytes]) -> _Sorted:
        out = _Sorted()
        json_rows: list[int] = []
        limit = self._max_message_bytes
        for i, raw in enumerate(raws):
            size = len(raw)
            if size == 0 or size > limit:
                out.errors.append((i, self._size_error(size)))
            elif raw[0] == CONFLUENT_MAGIC_BYTE and size >= _HEADER_SIZE:
                out.avro.setdefault(_SCHEMA_ID.unpack_from(raw, 1)[0], []).append(i)
            elif raw[0] == _OPEN_BRACE:
                json_rows.append(i)
            else:
                out.slow.append(i)
        out.slow.extend(out.json.add_all(json_rows, raws))
        return out

    def encode_avro(self, event: CollaborationEvent, schema_id: int = READER_SCHEMA_ID) -> bytes:
        """Confluent wire format: magic byte 0, big-endian schema id, Avro binary body.

        Fields the event does not carry (e.g. v2's ``thread_id``) get their defaults.
        Raises `UnknownSchemaId` for an id the resolver does not know.
        """
        plan = self._plans.get(schema_id)
        if plan is None:
            try:
                plan = self._schema_ids.prepare(schema_id)
            except UnusableSchema as exc:
                raise _unknown_id_error(schema_id, exc) from None
        out = BytesIO()
        out.write(_HEADER.pack(CONFLUENT_MAGIC_BYTE, schema_id))
        schemaless_writer(out, plan.writer, _record(event))
        return out.getvalue()

    def encode_json(self, event: CollaborationEvent) -> bytes:
        """Compact UTF-8 JSON object with the Avro field names, ``occurred_at`` in millis;
        ``values`` only when the event carries some (what older producers wrote)."""
        record = _record(event)
        if not event.values:
            del record["values"]
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()

    # -- internals --

    def _size_error(self, size: int) -> DecodeError:
        if size == 0:
            return DecodeError("empty", "message has no bytes")
        return DecodeError(
            "too_large", f"{size} bytes exceeds the limit of {self._max_message_bytes}"
        )

    def unresolved_ids(self, raws: Iterable[bytes]) -> set[int]:
        """Schema ids of Confluent-framed messages whose writer schema is not prepared yet
        (nor known to be unknown): what `resolve` must look up before decoding."""
        return self._schema_ids.unresolved(raws)

    def resolve(self, schema_ids: Iterable[int]) -> None:
        """Look up and prepare these writer schemas, so that decoding needs no lookup.

        Blocking (a registry is asked over the network): call it off the event loop. An id
        the resolver does not know is remembered as unknown for `UNKNOWN_ID_TTL_S`; any
        other failure of the resolver propagates (the message is not at fault)."""
        self._schema_ids.resolve(schema_ids)

    def _plan_for(self, schema_id: int) -> _AvroPlan:
        try:
            return self._schema_ids.get(schema_id)
        except UnknownSchemaId as exc:
            raise _unknown_id_error(schema_id, exc) from None

    def _decode_avro(self, raw: bytes) -> CollaborationEvent:
        if len(raw) < _HEADER_SIZE:
            raise DecodeError(
                "avro_truncated", f"{len(raw)} bytes: the Confluent header alone needs 5"
            )
        schema_id = _SCHEMA_ID.unpack_from(raw, 1)[0]
        plan = self._plans.get(schema_id) or self._plan_for(schema_id)
        body = BytesIO(raw)
        body.seek(_HEADER_SIZE)
        try:
            record = schemaless_reader(body, plan.writer, plan.reader)
        except SchemaResolutionError as exc:
            reason: DecodeReason = (
                "unknown_enum" if "not found in reader symbol list" in str(exc) else "avro_invalid"
            )
            raise DecodeError(reason, f"schema id {schema_id}: {exc}"[:300]) from None
        except Exception as exc:  # fastavro signals bad bodies with many exception types
            # A read that ran off the end (EOFError, or IndexError mid-varint) is truncation;
            # fastavro also says EOFError for a negative length ("Expected -5 bytes").
            truncated = (isinstance(exc, EOFError) and "Expected -" not in str(exc)) or (
                isinstance(exc, IndexError) and body.tell() >= len(raw)
            )
            raise DecodeError(
                "avro_truncated" if truncated else "avro_invalid",
                f"schema id {schema_id}: {type(exc).__name__}: {exc}"[:300],
            ) from None
        trailing = len(raw) - body.tell()
        if trailing:
            # Extra bytes mean the body was not written with this schema id.
            raise DecodeError(
                "avro_invalid", f"schema id {schema_id}: {trailing} bytes after the record"
            )
        if not isinstance(record, dict):
            raise DecodeError("avro_invalid", f"schema id {schema_id} is not a record schema")
        if plan.reader is not None:
            return _within_limits(_event_from_mapping(record))
        for name, default in plan.missing:
            record[name] = default
        return _within_limits(_event_from_record(record))

    def _decode_json(self, raw: bytes, encoding: str) -> CollaborationEvent:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DecodeError("json_invalid", f"not UTF-8: {exc}") from None
        try:
            obj = _JSON_DECODE(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError("json_invalid", str(exc)[:200]) from None
        if type(obj) is not dict:
            got = _JSON_TYPE_NAMES.get(type(obj), "value")
            raise DecodeError("json_invalid", f"expected a JSON object, got {got}")
        event = _event_from_mapping(obj)
        if b"\\u" in raw or b"\\U" in raw:
            _reject_lone_surrogates(event)
        return _within_limits(event)

    def _decode_other(self, raw: bytes) -> CollaborationEvent:
        start = raw[3:] if raw.startswith(_UTF8_BOM) else raw
        start = start.lstrip(_JSON_WHITESPACE)
        if start[:1] in (b"{", b"["):
            return self._decode_json(raw, "utf-8-sig")
        raise DecodeError(
            "unknown_encoding",
            f"first byte 0x{raw[0]:02x} starts neither Confluent Avro (0x00) nor a JSON object",
        )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile. Decoding JSON allocates a list (of
    recipients) per message, and these allocations would start collections that walk
    every young object, again and again, while no cycle can form: pausing them for a
    batch halves the cost of the msgspec decode. A collection may run once after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _read_avro_columns(
    raws: Sequence[bytes], rows: np.ndarray, plan: _ColumnPlan
) -> tuple[EventColumns, np.ndarray]:
    """Read the Avro messages `rows` of `raws` (one schema id) as columns; returns them
    and the rows left to the per-message path."""
    walk = _Walk([raws[i] for i in rows])
    fields = _walk_bodies(walk, plan)
    good = np.flatnonzero(~walk.bad)
    columns, odd = _avro_columns(walk.buf, fields, plan, good, rows)
    return columns, np.concatenate([rows[walk.bad], rows[odd]])


def _checked(columns: EventColumns, sorted_: _Sorted) -> EventColumns:
    """`columns` without the events that break a limit on text, whose errors (those of
    `check_event_texts`, as `decode_many` gives them) go to `sorted_.errors`."""
    flags = _limit_flags(columns)
    if not flags.any():
        return columns
    flagged = np.flatnonzero(flags)
    refused = []
    for row, event in zip(flagged, columns.take(flagged).events(), strict=True):
        try:
            _within_limits(event)
        except DecodeError as exc:
            sorted_.errors.append((int(columns.index[row]), exc))
            refused.append(row)
    return columns.take(np.setdiff1d(np.arange(len(columns)), refused))


def _unknown_id_error(schema_id: int, exc: UnknownSchemaId) -> DecodeError:
    if isinstance(exc, UnusableSchema):
        detail = f"schema id {schema_id} is not a usable Avro schema: {exc.cause}"[:300]
        return DecodeError("unknown_schema_id", detail)
    return DecodeError("unknown_schema_id", f"no schema registered under id {schema_id}")


def _within_limits(event: CollaborationEvent) -> CollaborationEvent:
    """The event, or `DecodeError` ``too_long`` / ``bad_id`` (schemas/limits.py)."""
    try:
        check_event_texts(
            event.event_id,
            event.org_id,
            event.actor_id,
            event.recipient_ids,
            event.content_id,
            event.channel,
            event.source,
            event.values,
        )
    except LimitError as exc:
        raise DecodeError(exc.reason, exc.detail) from None
    return event


def _reject_lone_surrogates(event: CollaborationEvent) -> None:
    """JSON ``\\ud800`` escapes decode to strings that cannot be UTF-8 encoded again."""
    texts = [event.event_id, event.org_id, event.actor_id, event.source, *event.recipient_ids]
    texts.extend(event.values)
    texts.extend(t for t in (event.content_id, event.channel) if t is not None)
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("json_invalid", "string contains a lone UTF-16 surrogate") from None


def _record(event: CollaborationEvent) -> dict[str, Any]:
    """The event as an Avro record (schema v3; older writers ignore `values`)."""
    return {
        "event_id": event.event_id,
        "event_type": event.event_type.value,
        "org_id": event.org_id,
        "actor_id": event.actor_id,
        "recipient_ids": list(event.recipient_ids),
        "content_id": event.content_id,
        "channel": event.channel,
        "visibility": event.visibility.value,
        "occurred_at": event.occurred_at,
        "source": event.source,
        "values": list(event.values),
    }


def default_codec(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> EventCodec:
    """A codec resolving schema ids through the schemas shipped in ``schemas/avro``."""
    return EventCodec(ShippedSchemas(), max_message_bytes)
