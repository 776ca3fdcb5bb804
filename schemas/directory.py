"""Decode and encode the user directory as it appears on `directory.users`.

The topic is compacted in production: its key identifies a person and its latest value is
their directory record. Contract of a message:

* key: UTF-8 ``org_id/user_id`` (split at the first ``/``, so an org id never contains
  ``/``; a user id may). Every message of a person carries this same key, so all of them
  land on one partition in order, and compaction keeps exactly the latest;
* value: a `DirectoryUser` record (``schemas/avro/directory_user.v1.avsc``), either
  Confluent-framed Avro (byte 0, 4-byte schema id, Avro body; ids resolved by the same
  `SchemaResolver`s as events: a Schema Registry when configured, else the shipped schema
  under `DIRECTORY_SCHEMA_ID`) or a UTF-8 JSON object with the same field names
  (``updated_at`` as epoch millis or RFC 3339);
* a null (or empty) value is a tombstone: the person is removed from the directory.

`DirectoryCodec.decode` returns a `DirectoryRecord` or raises `DirectoryDecodeError`,
whose ``reason`` is one of `DIRECTORY_DECODE_REASONS` (the event codec's reasons plus
``bad_key``, ``key_mismatch`` and ``invalid_id``); such messages belong in the DLQ. Ids
and names obey the events' limits (`schemas.limits`: ``too_long``, ``bad_id``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from io import BytesIO
from typing import Any, Final, Literal, cast, get_args

from fastavro import schemaless_reader, schemaless_writer

from schemas.codec import (
    CONFLUENT_MAGIC_BYTE,
    DEFAULT_MAX_MESSAGE_BYTES,
    AvroSchema,
    DecodeError,
    DecodeReason,
    SchemaIds,
    SchemaResolver,
    UnknownSchemaId,
    UnusableSchema,
    _decoding_form,
    _rfc3339_millis,
    json_type_name,
)
from schemas.limits import LimitError, check_org, check_text

__all__ = [
    "DIRECTORY_DECODE_REASONS",
    "DIRECTORY_SCHEMA_ID",
    "DirectoryCodec",
    "DirectoryDecodeError",
    "DirectoryRecord",
    "ShippedDirectorySchemas",
    "directory_codec_for",
    "directory_key",
    "parse_key",
]

# Id of the shipped schema when no Schema Registry is configured (the events' shipped ids
# are 1 and 2; directory producers without a registry frame their Avro with this one).
DIRECTORY_SCHEMA_ID: Final = 101
_SHIPPED: Final = {DIRECTORY_SCHEMA_ID: "directory_user.v1.avsc"}

# The event codec's reasons, and what only a directory record's key and ids can break.
DirectoryDecodeReason = Literal[DecodeReason, "bad_key", "key_mismatch", "invalid_id"]
DIRECTORY_DECODE_REASONS: Final[tuple[DirectoryDecodeReason, ...]] = get_args(DirectoryDecodeReason)


class DirectoryDecodeError(Exception):
    """A `directory.users` message that cannot become a `DirectoryRecord`."""

    def __init__(self, reason: DirectoryDecodeReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DirectoryDecodeReason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[DirectoryDecodeError], tuple[str, str]]:
        return (DirectoryDecodeError, (self.reason, self.detail))


@dataclass(frozen=True, slots=True)
class DirectoryRecord:
    """One person's directory state; ``deleted`` for a tombstone (every other field but
    the ids then empty)."""

    org_id: str
    user_id: str
    display_name: str | None = None
    team: str | None = None
    department: str | None = None
    opted_out: bool = False
    updated_at: int = 0
    deleted: bool = False


def directory_key(org_id: str, user_id: str) -> bytes:
    """The message key of a person: ``org_id/user_id``, UTF-8."""
    return f"{org_id}/{user_id}".encode()


def parse_key(key: bytes | None) -> tuple[str, str]:
    """(org_id, user_id) from a message key; raises `DirectoryDecodeError` ``bad_key``."""
    if not key:
        raise DirectoryDecodeError("bad_key", "message has no key (want org_id/user_id)")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise DirectoryDecodeError("bad_key", "key is not UTF-8") from None
    org, sep, user = text.partition("/")
    if not sep or not org or not user:
        raise DirectoryDecodeError("bad_key", f"key {text[:100]!r} is not org_id/user_id")
    _check_limits(org, user)
    return org, user


class ShippedDirectorySchemas:
    """The directory schema shipped in ``schemas/avro``, under `DIRECTORY_SCHEMA_ID`."""

    def __init__(self) -> None:
        self._schemas: dict[int, AvroSchema] = {}

    def writer_schema(self, schema_id: int) -> AvroSchema:
        schema = self._schemas.get(schema_id)
        if schema is None:
            name = _SHIPPED.get(schema_id)
            if name is None:
                raise UnknownSchemaId(schema_id)
            text = resources.files("schemas").joinpath("avro", name).read_text(encoding="utf-8")
            schema = self._schemas[schema_id] = cast(AvroSchema, json.loads(text))
        return schema


_HEADER = struct.Struct(">BI")
_HEADER_SIZE: Final = _HEADER.size
_OPEN_BRACE: Final = 0x7B


def _wrong_type(field: str, expected: str, value: object) -> DirectoryDecodeError:
    got = json_type_name(value)
    return DirectoryDecodeError("wrong_type", f"{field}: expected {expected}, got {got}")


def _optional_text(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is not None and type(value) is not str:
        raise _wrong_type(field, "a string or null", value)
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DirectoryDecodeError("json_invalid", f"{field}: lone UTF-16 surrogate") from None
    return value or None


def _record_from_mapping(obj: dict[str, Any]) -> DirectoryRecord:
    """Check every field of an untrusted mapping (JSON, or a resolved Avro record)."""
    try:
        org_id = obj["org_id"]
        user_id = obj["user_id"]
        updated_at = obj["updated_at"]
    except KeyError as exc:
        raise DirectoryDecodeError(
            "missing_field", f"required field {exc.args[0]} is missing"
        ) from None
    for name, value in (("org_id", org_id), ("user_id", user_id)):
        if type(value) is not str:
            raise _wrong_type(name, "a string", value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DirectoryDecodeError("json_invalid", f"{name}: lone UTF-16 surrogate") from None
    if not org_id or not user_id or "/" in org_id:
        raise DirectoryDecodeError(
            "invalid_id", "org_id and user_id must be non-empty, org_id without '/'"
        )
    _check_limits(org_id, user_id)
    opted_out = obj.get("opted_out", False)
    if type(opted_out) is not bool:
        raise _wrong_type("opted_out", "a boolean", opted_out)
    if type(updated_at) is str:
        try:
            updated_at = _rfc3339_millis(updated_at, "updated_at")
        except DecodeError as exc:
            raise DirectoryDecodeError("bad_timestamp", exc.detail) from None
    elif type(updated_at) is not int:
        raise _wrong_type("updated_at", "epoch millis or an RFC 3339 string", updated_at)
    elif not -(2**63) <= updated_at < 2**63:
        raise DirectoryDecodeError("bad_timestamp", "updated_at: out of 64-bit range")
    record = DirectoryRecord(
        org_id,
        user_id,
        _optional_text(obj, "display_name"),
        _optional_text(obj, "team"),
        _optional_text(obj, "department"),
        opted_out,
        updated_at,
    )
    try:
        for name in ("display_name", "team", "department"):
            text = getattr(record, name)
            if text is not None:
                check_text(name, text)
    except LimitError as exc:
        raise DirectoryDecodeError(exc.reason, exc.detail) from None
    return record


def _check_limits(org_id: str, user_id: str) -> None:
    """The limits on ids of events (schemas/limits.py) hold for the directory's too."""
    try:
        check_org("org_id", org_id)
        check_text("user_id", user_id)
    except LimitError as exc:
        raise DirectoryDecodeError(exc.reason, exc.detail) from None


class DirectoryCodec:
    """`directory.users` messages <-> `DirectoryRecord`s.

    Writer schemas come from ``resolver`` (the shipped schema by default, or a Schema
    Registry); every body is read into the shipped v1 reader schema, so producers may add
    optional fields. Low volume: no fast paths.
    """

    def __init__(
        self,
        resolver: SchemaResolver | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._max = max_message_bytes
        shipped = ShippedDirectorySchemas().writer_schema(DIRECTORY_SCHEMA_ID)
        self._reader = _decoding_form(shipped)[0]
        self._writers: SchemaIds[AvroSchema] = SchemaIds(
            resolver or ShippedDirectorySchemas(), lambda schema: _decoding_form(schema)[0]
        )

    # -- schema ids (looked up off the event loop by the stage) --

    def unresolved_ids(self, values: Iterable[bytes]) -> set[int]:
        return self._writers.unresolved(values)

    def resolve(self, schema_ids: Iterable[int]) -> None:
        """Prepare these writer schemas (blocking: a registry may be asked). Unknown ids are
        remembered for a while; any other resolver failure propagates (not the message's
        fault: the stage waits and retries)."""
        self._writers.resolve(schema_ids)

    def _writer(self, schema_id: int) -> AvroSchema:
        try:
            return self._writers.get(schema_id)
        except UnusableSchema as exc:
            raise DirectoryDecodeError(
                "unknown_schema_id", f"schema id {schema_id} is not usable: {exc.cause}"[:300]
            ) from None
        except UnknownSchemaId:
            raise DirectoryDecodeError(
                "unknown_schema_id", f"no schema under id {schema_id}"
            ) from None

    # -- decoding --

    def decode(self, key: bytes | None, value: bytes | None) -> DirectoryRecord:
        """One message -> one record (``deleted`` for a tombstone); raises
        `DirectoryDecodeError`."""
        if not value:
            org, user = parse_key(key)
            return DirectoryRecord(org, user, deleted=True)
        if len(value) > self._max:
            raise DirectoryDecodeError(
                "too_large", f"{len(value)} bytes exceeds the limit of {self._max}"
            )
        first = value[0]
        if first == CONFLUENT_MAGIC_BYTE:
            record = self._decode_avro(value)
        elif first == _OPEN_BRACE or value.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] in (b"{", b"["):
            record = self._decode_json(value)
        else:
            raise DirectoryDecodeError(
                "unknown_encoding",
                f"first byte 0x{first:02x} starts neither Confluent Avro nor a JSON object",
            )
        if key != directory_key(record.org_id, record.user_id):
            shown = "none" if key is None else repr(key[:100])
            raise DirectoryDecodeError(
                "key_mismatch",
                f"key {shown} is not {record.org_id}/{record.user_id} (org_id/user_id)",
            )
        return record

    def decode_many(
        self, messages: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[DirectoryRecord | DirectoryDecodeError]:
        out: list[DirectoryRecord | DirectoryDecodeError] = []
        for key, value in messages:
            try:
                out.append(self.decode(key, value))
            except DirectoryDecodeError as exc:
                out.append(exc)
        return out

    def _decode_avro(self, raw: bytes) -> DirectoryRecord:
        if len(raw) < _HEADER_SIZE:
            raise DirectoryDecodeError(
                "avro_truncated", f"{len(raw)} bytes: the Confluent header alone needs 5"
            )
        schema_id = _HEADER.unpack_from(raw)[1]
        writer = self._writer(schema_id)
        body = BytesIO(raw)
        body.seek(_HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer, self._reader)
        except Exception as exc:  # fastavro signals bad bodies with many exception types
            truncated = isinstance(exc, EOFError) or (
                isinstance(exc, IndexError) and body.tell() >= len(raw)
            )
            raise DirectoryDecodeError(
                "avro_truncated" if truncated else "avro_invalid",
                f"schema id {schema_id}: {type(exc).__name__}: {exc}"[:300],
            ) from None
        if body.tell() != len(raw):
            raise DirectoryDecodeError(
                "avro_invalid", f"schema id {schema_id}: bytes after the record"
            )
        if not isinstance(record, dict):
            raise DirectoryDecodeError("avro_invalid", f"schema id {schema_id} is no record")
        return _record_from_mapping(record)

    def _decode_json(self, raw: bytes) -> DirectoryRecord:
        try:
            obj = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DirectoryDecodeError("json_invalid", str(exc)[:200]) from None
        if type(obj) is not dict:
            raise DirectoryDecodeError("json_invalid", "expected a JSON object")
        return _record_from_mapping(obj)

    # -- encoding (producers, tests) --

    def encode_avro(self, record: DirectoryRecord, schema_id: int = DIRECTORY_SCHEMA_ID) -> bytes:
        """Confluent wire format with the writer schema registered under ``schema_id``."""
        if record.deleted:
            raise ValueError("a tombstone has no value: send None")
        writer = self._writer(schema_id)
        out = BytesIO()
        out.write(_HEADER.pack(CONFLUENT_MAGIC_BYTE, schema_id))
        schemaless_writer(out, writer, _as_dict(record))
        return out.getvalue()

    def encode_json(self, record: DirectoryRecord) -> bytes:
        if record.deleted:
            raise ValueError("a tombstone has no value: send None")
        return json.dumps(_as_dict(record), ensure_ascii=False, separators=(",", ":")).encode()


def _as_dict(record: DirectoryRecord) -> dict[str, Any]:
    return {
        "org_id": record.org_id,
        "user_id": record.user_id,
        "display_name": record.display_name,
        "team": record.team,
        "department": record.department,
        "opted_out": record.opted_out,
        "updated_at": record.updated_at,
    }


def directory_codec_for(settings: Any) -> DirectoryCodec:
    """The worker's directory codec: the Schema Registry when one is configured (the same
    settings as events, `schemas.registry.RegistrySettings`), else the shipped schema."""
    from schemas.registry import SchemaRegistry

    url = settings.schema_registry.get_secret_value().strip()
    if not url:
        return DirectoryCodec(None, settings.max_message_bytes)
    registry = SchemaRegistry.from_url(
        url, settings.schema_registry_auth, ca_file=settings.schema_registry_ca_file
    )
    return DirectoryCodec(registry, settings.max_message_bytes)
