"""Writer schemas from a Confluent-compatible Schema Registry, and the codec built from settings.

With ``KUDOS_SCHEMA_REGISTRY=http(s)://[user:pass@]host:port[,http(s)://other:port]`` set,
the schema id of each Confluent-framed Avro message is resolved with
``GET /schemas/ids/{id}`` (schema references are followed through
``GET /subjects/{subject}/versions/{version}`` and inlined). Without it the schemas shipped
in ``schemas/avro`` are used (`ShippedSchemas`).

Outcomes of one lookup, as `SchemaResolver` asks:

* found: the schema is cached for the life of the process (a registry never changes what
  an id means), so each id costs one request;
* ``404`` with ``error_code`` 40403: `UnknownSchemaId`, and the codec dead-letters the
  message as ``unknown_schema_id`` (not cached: the id may be registered later). A 404
  without that code (a wrong base path, a proxy page) is a `SchemaRegistryError`: it
  says nothing about the message;
* a non-Avro schema (``schemaType`` PROTOBUF or JSON) under the id: `NotAvroSchema`, an
  `UnknownSchemaId`, so the message is dead-lettered too;
* connection errors, timeouts, ``408``, ``429`` and ``5xx`` are retried with capped
  exponential backoff (``Retry-After`` honoured) within a total time budget, then raise
  `SchemaRegistryError`; so do ``401``/``403`` (at once) and any other answer. The message
  is not at fault: the codec lets that error propagate and the message is NOT dead-lettered.

Why urllib and not ``confluent_kafka.schema_registry.SchemaRegistryClient``: that client
fits (id cache, retries on transport errors and 408/429/5xx with jittered backoff,
timeout, basic auth from URL or ``basic.auth.user.info``, ``ssl.ca.location``), and the
tests use it as the foreign producer. But as a runtime dependency it brings a second
native Kafka client (librdkafka) plus httpx2, authlib, cryptography, cachetools, certifi
and attrs into a worker that only ever issues one GET per schema id; its HTTP stack has
changed twice across 2.x releases; and its errors still need sorting into "this message
is bad" vs "the registry is unwell" (``SchemaRegistryError`` for every HTTP status, raw
httpx exceptions for the rest). Its retry loop also has no overall deadline, and decoding
runs on the worker's event loop, where a long stall costs the consumer its group
membership. The two REST calls are small, so they are written here on the standard
library, with an overall budget (default 8 s, under the 10 s session timeout), and tested
against Confluent's own client.

Credentials come from the URL userinfo or ``KUDOS_SCHEMA_REGISTRY_AUTH`` (``user:password``)
and are sent only as an ``Authorization: Basic`` header. Every URL this module shows (repr,
errors, logs) has its userinfo replaced by ``***``.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import random
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, cast

from pydantic import SecretStr

from schemas.codec import AvroSchema, EventCodec, UnknownSchemaId, default_codec

__all__ = [
    "NotAvroSchema",
    "RegistrySettings",
    "SchemaRegistry",
    "SchemaRegistryError",
    "codec_for",
    "redact_url",
]

log = logging.getLogger(__name__)

_ACCEPT: Final = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
)
_RETRIABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_SCHEMA_NOT_FOUND: Final = 40403
_AVRO_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_NAMED_TYPES: Final = frozenset({"record", "error", "enum", "fixed"})
_MAX_REFERENCE_DEPTH: Final = 32


class SchemaRegistryError(RuntimeError):
    """The registry could not be asked, or gave an unusable answer: not the message's fault.

    ``status`` is the HTTP status of the last answer, None when none came.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotAvroSchema(UnknownSchemaId):
    """The id names a schema of another type (PROTOBUF, JSON): no Avro writer schema."""

    def __init__(self, schema_id: int, schema_type: str) -> None:
        super().__init__(schema_id)
        self.schema_type = schema_type

    def __str__(self) -> str:
        return f"schema id {self.schema_id} is a {self.schema_type} schema, not Avro"


def redact_url(url: str) -> str:
    """``url`` (or a comma-separated list of them) with any userinfo replaced by ``***``."""
    return ",".join(_redact_one(part.strip()) for part in url.split(","))


def _redact_one(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def _split_urls(url: str) -> tuple[list[str], tuple[str, str] | None]:
    """Base URLs without userinfo, and the first credentials found in them."""
    bases: list[str] = []
    auth: tuple[str, str] | None = None
    for raw in url.split(","):
        raw = raw.strip()
        if not raw:
            continue
        shown = _redact_one(raw)
        try:
            parts = urllib.parse.urlsplit(raw)
            parts.port  # noqa: B018  (raises ValueError for a bad port)
        except ValueError:
            raise ValueError(f"schema registry URL {shown!r} is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"schema registry URL {shown!r} must be http(s)://host[:port]")
        if parts.username is not None and auth is None:
            auth = (
                urllib.parse.unquote(parts.username),
                urllib.parse.unquote(parts.password or ""),
            )
        netloc = parts.netloc.rpartition("@")[2]
        bases.append(
            urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        )
    if not bases:
        raise ValueError("schema registry URL is empty")
    return bases, auth


class SchemaRegistry:
    """A `SchemaResolver` asking a Confluent-compatible Schema Registry, cached per id.

    ``url``: one or more comma-separated ``http(s)://[user:pass@]host:port[/path]``; each
    lookup tries them in order. ``auth``: ``(user, password)`` for basic auth, when not in
    the URL (giving both is an error). ``ca_file``: PEM file of CAs trusted for https
    (default: the system's). ``timeout_s`` bounds one request, ``budget_s`` one lookup
    with all its retries; ``max_retries`` more attempts follow a retriable failure, after
    waits starting near ``backoff_s`` and doubling up to ``max_backoff_s``.

    Thread-safe; concurrent misses are fetched once.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        ca_file: str | Path | None = None,
        timeout_s: float = 5.0,
        budget_s: float = 8.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        bases, url_auth = _split_urls(url)
        if url_auth is not None and auth is not None:
            raise ValueError(
                "schema registry credentials are given both in the URL and separately; "
                "give them once"
            )
        if timeout_s <= 0 or budget_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError("schema registry timeouts must be positive, retries not negative")
        self._bases = bases
        self._shown = ",".join(_redact_one(u.strip()) for u in url.split(",") if u.strip())
        credentials = auth or url_auth
        self._authorization: str | None = None
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode("utf-8")).decode("ascii")
            self._authorization = f"Basic {token}"
        handlers: list[urllib.request.BaseHandler] = []
        if any(b.startswith("https:") for b in bases):
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)
        self._timeout_s = timeout_s
        self._budget_s = budget_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._cache: dict[int, AvroSchema] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls, url: str | SecretStr, auth: str | SecretStr = "", **options: Any
    ) -> SchemaRegistry:
        """From a URL and an optional ``user:password`` (plain or `SecretStr`)."""
        plain_url = url.get_secret_value() if isinstance(url, SecretStr) else url
        plain_auth = auth.get_secret_value() if isinstance(auth, SecretStr) else auth
        pair: tuple[str, str] | None = None
        if plain_auth:
            user, sep, password = plain_auth.partition(":")
            if not sep:
                raise ValueError("schema registry auth must be user:password")
            pair = (user, password)
        return cls(plain_url, auth=pair, **options)

    @property
    def url(self) -> str:
        """The configured URL(s), userinfo redacted."""
        return self._shown

    def __repr__(self) -> str:
        auth = ", auth=***" if self._authorization else ""
        return f"SchemaRegistry({self._shown!r}{auth}, cached={len(self._cache)})"

    __str__ = __repr__

    def writer_schema(self, schema_id: int) -> AvroSchema:
        schema = self._cache.get(schema_id)
        if schema is not None:
            return schema
        with self._lock:
            schema = self._cache.get(schema_id)
            if schema is None:
                schema = self._fetch(schema_id)
                self._cache[schema_id] = schema
                log.info("schema id %d fetched from the schema registry %s", schema_id, self.url)
        return schema

    # -- internals --

    def _fetch(self, schema_id: int) -> AvroSchema:
        deadline = time.monotonic() + self._budget_s
        found = self._get(f"/schemas/ids/{schema_id}", deadline, schema_id=schema_id)
        schema_type = str(found.get("schemaType") or "AVRO")
        if schema_type.upper() != "AVRO":
            raise NotAvroSchema(schema_id, schema_type)
        named: dict[str, Any] = {}
        self._collect_references(found, named, deadline, depth=0)
        schema = self._parse(found, f"schema id {schema_id}")
        if named:
            schema = _inline_references(schema, named)
        return cast(AvroSchema, schema)

    def _collect_references(
        self, found: Mapping[str, Any], named: dict[str, Any], deadline: float, depth: int
    ) -> None:
        references = found.get("references") or []
        if not isinstance(references, list):
            raise SchemaRegistryError(f"{self.url}: 'references' is not a list")
        if references and depth >= _MAX_REFERENCE_DEPTH:
            raise SchemaRegistryError(f"{self.url}: schema references nest too deep")
        for ref in references:
            try:
                name, subject, version = str(ref["name"]), str(ref["subject"]), int(ref["version"])
            except (KeyError, TypeError, ValueError):
                raise SchemaRegistryError(f"{self.url}: malformed schema reference") from None
            if name in named:
                continue
            quoted = urllib.parse.quote(subject, safe="")
            sub = self._get(f"/subjects/{quoted}/versions/{version}", deadline)
            named[name] = self._parse(sub, f"reference {name} ({subject} v{version})")
            self._collect_references(sub, named, deadline, depth + 1)

    def _parse(self, found: Mapping[str, Any], what: str) -> Any:
        text = found.get("schema")
        if not isinstance(text, str):
            raise SchemaRegistryError(f"{self.url}: {what}: answer has no 'schema' string")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SchemaRegistryError(f"{self.url}: {what}: schema is not JSON: {exc}") from None

    def _get(self, path: str, deadline: float, *, schema_id: int | None = None) -> dict[str, Any]:
        """GET ``path`` from the first base URL that answers, retrying transient failures."""
        attempt = 0
        while True:
            attempt += 1
            failure = "the time budget ran out"
            status: int | None = None
            retry_after: float | None = None
            for base in self._bases:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                outcome = self._once(base + path, min(self._timeout_s, remaining), schema_id)
                if isinstance(outcome, dict):
                    return outcome
                failure, status, retry_after = outcome
            delay = self._delay(attempt, retry_after)
            if attempt > self._max_retries or time.monotonic() + delay >= deadline:
                raise SchemaRegistryError(
                    f"schema registry {self.url}: GET {path} failed after {attempt} "
                    f"attempt(s) within {self._budget_s:g}s: {failure}",
                    status,
                )
            log.warning(
                "schema registry %s: GET %s failed (%s); retrying in %.2fs",
                self.url,
                path,
                failure,
                delay,
            )
            self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self._max_backoff_s)
        ceiling = min(self._max_backoff_s, self._backoff_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _once(
        self, url: str, timeout: float, schema_id: int | None
    ) -> dict[str, Any] | tuple[str, int | None, float | None]:
        """One request: the JSON object, or (why, status, Retry-After) for a retriable
        failure. Raises for answers that retrying cannot change."""
        request = urllib.request.Request(url, headers={"Accept": _ACCEPT, "User-Agent": "kudos"})
        if self._authorization is not None:
            request.add_unredirected_header("Authorization", self._authorization)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                detail = exc.read()[:2000]
            except (OSError, http.client.HTTPException):
                detail = b""
            finally:
                exc.close()
            error_code, message = _error_body(detail)
            if status == 404 and error_code == _SCHEMA_NOT_FOUND and schema_id is not None:
                raise UnknownSchemaId(schema_id) from None
            said = f"HTTP {status}" + (f" (error_code {error_code}: {message})" if message else "")
            if status in _RETRIABLE_STATUS:
                return said, status, _retry_after(exc.headers.get("Retry-After"))
            if status in (401, 403):
                said += ": check the schema registry credentials"
            elif status == 404:
                said += ": not a Schema Registry answer (check the URL's path)"
            raise SchemaRegistryError(
                f"schema registry {self.url}: GET {_path_of(url)}: {said}", status
            ) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise SchemaRegistryError(
                    f"schema registry {self.url}: TLS certificate not trusted: "
                    f"{reason.verify_message} (set KUDOS_SCHEMA_REGISTRY_CA_FILE?)"
                ) from None
            return f"{type(reason).__name__}: {reason}", None, None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets mid-answer
            return f"{type(exc).__name__}: {exc}", None, None
        try:
            obj = json.loads(body)
        except ValueError:
            raise SchemaRegistryError(
                f"schema registry {self.url}: GET {_path_of(url)}: answer is not JSON"
            ) from None
        if not isinstance(obj, dict):
            raise SchemaRegistryError(
                f"schema registry {self.url}: GET {_path_of(url)}: answer is not a JSON object"
            )
        return obj


def _path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _error_body(body: bytes) -> tuple[int | None, str]:
    """Confluent error bodies: ``{"error_code": 40403, "message": "..."}``."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None, ""
    if not isinstance(obj, dict):
        return None, ""
    code = obj.get("error_code")
    return (code if isinstance(code, int) else None), str(obj.get("message") or "")[:200]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return float(when.timestamp()) - time.time()


def _inline_references(schema: Any, named: Mapping[str, Any]) -> Any:
    """``schema`` with each referenced named type defined where it is first used.

    A registry keeps referenced types as separate schemas; an Avro parser needs them
    defined inline (once, then referred to by name).
    """
    defined: set[str] = set()

    def full(name: str, namespace: str) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            if node in _AVRO_PRIMITIVES:
                return node
            fullname = full(node, namespace)
            if fullname in defined or node in defined:
                return node
            target = named.get(fullname, named.get(node))
            if target is None:
                return node
            if isinstance(target, dict) and "namespace" not in target:
                name = str(target.get("name", ""))
                if "." not in name:
                    target = {**target, "namespace": ""}  # keep it in the null namespace
            return walk(target, namespace)
        if isinstance(node, list):
            return [walk(item, namespace) for item in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in _NAMED_TYPES and isinstance(node.get("name"), str):
            name = node["name"]
            own = name.rpartition(".")[0] if "." in name else node.get("namespace", namespace)
            defined.add(full(name, own))
            if kind in ("record", "error"):
                fields = [{**f, "type": walk(f.get("type"), own)} for f in node.get("fields", [])]
                return {**node, "fields": fields}
            return node
        if kind == "array":
            return {**node, "items": walk(node.get("items"), namespace)}
        if kind == "map":
            return {**node, "values": walk(node.get("values"), namespace)}
        return {**node, "type": walk(kind, namespace)}

    return walk(schema, "")


# --- The codec from settings ---------------------------------------------------------------


class RegistrySettings(Protocol):
    """The settings `codec_for` reads (`streams.settings.Settings` has them)."""

    @property
    def schema_registry(self) -> SecretStr: ...

    @property
    def schema_registry_auth(self) -> SecretStr: ...

    @property
    def schema_registry_ca_file(self) -> Path | None: ...

    @property
    def max_message_bytes(self) -> int: ...


def codec_for(settings: RegistrySettings) -> EventCodec:
    """The worker's codec: schema ids through the registry when one is configured, else
    through the shipped schemas."""
    url = settings.schema_registry.get_secret_value().strip()
    if not url:
        return default_codec(settings.max_message_bytes)
    registry = SchemaRegistry.from_url(
        url, settings.schema_registry_auth, ca_file=settings.schema_registry_ca_file
    )
    log.info("schema ids are resolved through the schema registry %s", registry.url)
    return EventCodec(registry, settings.max_message_bytes)
