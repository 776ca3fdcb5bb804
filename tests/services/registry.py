"""A small Confluent-compatible Schema Registry for tests.

No registry server is installable here, so this serves the REST calls that Confluent's
own client (``confluent_kafka.schema_registry``: SchemaRegistryClient, AvroSerializer)
and kudos' resolver make, with Confluent's answers and error codes:

* ``POST /subjects/{subject}/versions`` registers (or finds) a schema: ``{"id": N}``;
* ``POST /subjects/{subject}`` looks a schema up under a subject;
* ``GET /schemas/ids/{id}`` (``404``/40403 when unknown);
* ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}`` (``404``/40401, 40402);
* anything else is a plain ``404``, which is what AvroSerializer (2.16) expects of a
  registry without associations (``GET /associations/resources/-/{topic}``).

Ids are global and a schema registered twice (under any subject) keeps its id, as in
Confluent's registry. Tests can require basic auth, make the next N schema lookups fail
with a status, serve https, and read which requests came (with their Authorization
header).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_JSON = "application/vnd.schemaregistry.v1+json"


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class _Version:
    subject: str
    version: int
    schema_id: int


@dataclass
class _State:
    schemas: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> stored body
    by_text: dict[str, int] = field(default_factory=dict)  # canonical text -> id
    subjects: dict[str, list[_Version]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    id_lookups: Counter[int] = field(default_factory=Counter)
    fail_lookups: list[int] = field(default_factory=list)  # statuses for the next lookups
    credentials: tuple[str, str] | None = None


def _canonical(schema: str) -> str:
    try:
        return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return schema


class RegistryServer:
    """Serves on 127.0.0.1 from a background thread; use as a context manager."""

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        first_id: int = 1,
    ) -> None:
        self.state = _State(credentials=credentials)
        self._next_id = first_id
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    # -- test controls --

    def register(
        self,
        subject: str,
        schema: str | dict[str, Any],
        *,
        schema_type: str = "AVRO",
        references: list[dict[str, Any]] | None = None,
    ) -> int:
        """Register directly (as another producer would); returns the id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return self._register(subject, text, schema_type, references or [])

    def fail_next_lookups(self, count: int, status: int = 500) -> None:
        """The next ``count`` ``GET /schemas/ids/..`` answer ``status``."""
        with self._lock:
            self.state.fail_lookups.extend([status] * count)

    def lookups(self, schema_id: int) -> int:
        """How many ``GET /schemas/ids/{schema_id}`` came (failed ones included)."""
        return self.state.id_lookups[schema_id]

    @property
    def seen(self) -> list[Seen]:
        return list(self.state.seen)

    # -- internals --

    def _register(
        self, subject: str, text: str, schema_type: str, references: list[dict[str, Any]]
    ) -> int:
        key = f"{schema_type}:{_canonical(text)}:{json.dumps(references, sort_keys=True)}"
        with self._lock:
            schema_id = self.state.by_text.get(key)
            if schema_id is None:
                schema_id = self._next_id
                self._next_id += 1
                body: dict[str, Any] = {"schema": text}
                if schema_type != "AVRO":
                    body["schemaType"] = schema_type
                if references:
                    body["references"] = references
                self.state.schemas[schema_id] = body
                self.state.by_text[key] = schema_id
            versions = self.state.subjects.setdefault(subject, [])
            if not any(v.schema_id == schema_id for v in versions):
                versions.append(_Version(subject, len(versions) + 1, schema_id))
            return schema_id

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", _JSON)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: int, message: str) -> None:
                self._send(status, {"error_code": code, "message": message})

            def _authorized(self) -> bool:
                expected = registry.state.credentials
                if expected is None:
                    return True
                token = base64.b64encode(":".join(expected).encode()).decode()
                if self.headers.get("Authorization") == f"Basic {token}":
                    return True
                self._error(401, 40101, "Unauthorized")
                return False

            def _route(self, method: str) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                parts = [urllib.parse.unquote(p) for p in parsed.path.strip("/").split("/")]
                registry.state.seen.append(
                    Seen(method, parsed.path, self.headers.get("Authorization"))
                )
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not self._authorized():
                    return
                if method == "GET" and len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
                    return self._schema_by_id(parts[2])
                if parts[:1] == ["subjects"]:
                    return self._subjects(method, parts[1:], raw)
                self._error(404, 404, "HTTP 404 Not Found")

            def _schema_by_id(self, text: str) -> None:
                try:
                    schema_id = int(text)
                except ValueError:
                    return self._error(404, 40403, f"Schema {text} not found")
                with registry._lock:
                    registry.state.id_lookups[schema_id] += 1
                    fail = registry.state.fail_lookups.pop(0) if registry.state.fail_lookups else 0
                if fail:
                    return self._error(fail, 50001, "Error in the backend data store")
                body = registry.state.schemas.get(schema_id)
                if body is None:
                    return self._error(404, 40403, f"Schema {schema_id} not found")
                self._send(200, body)

            def _subjects(self, method: str, rest: list[str], raw: bytes) -> None:
                state = registry.state
                if not rest:
                    return self._send(200, sorted(state.subjects))
                subject = rest[0]
                if method == "POST":
                    try:
                        request = json.loads(raw or b"{}")
                        text = request["schema"]
                    except (ValueError, KeyError, TypeError):
                        return self._error(422, 42201, "Invalid schema")
                    schema_type = request.get("schemaType") or "AVRO"
                    references = request.get("references") or []
                    if rest[1:] == ["versions"]:
                        schema_id = registry._register(subject, text, schema_type, references)
                        return self._send(200, {"id": schema_id})
                    if len(rest) == 1:  # lookup under a subject
                        for version in state.subjects.get(subject, []):
                            body = state.schemas[version.schema_id]
                            if _canonical(body["schema"]) == _canonical(text):
                                return self._send(200, self._version_body(version))
                        if subject not in state.subjects:
                            return self._error(404, 40401, f"Subject '{subject}' not found.")
                        return self._error(404, 40403, "Schema not found")
                    return self._error(404, 404, "HTTP 404 Not Found")
                versions = state.subjects.get(subject)
                if versions is None:
                    return self._error(404, 40401, f"Subject '{subject}' not found.")
                if rest[1:] == ["versions"]:
                    return self._send(200, [v.version for v in versions])
                if len(rest) == 3 and rest[1] == "versions":
                    wanted = rest[2]
                    found = versions[-1] if wanted in ("latest", "-1") else None
                    if found is None:
                        found = next((v for v in versions if str(v.version) == wanted), None)
                    if found is None:
                        return self._error(404, 40402, f"Version {wanted} not found.")
                    return self._send(200, self._version_body(found))
                self._error(404, 404, "HTTP 404 Not Found")

            def _version_body(self, version: _Version) -> dict[str, Any]:
                body = registry.state.schemas[version.schema_id]
                return {
                    "subject": version.subject,
                    "version": version.version,
                    "id": version.schema_id,
                    **body,
                }

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler
