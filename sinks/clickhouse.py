"""One small interface over the two ClickHouse backends kudos runs on.

* `NativeClickHouse`: a ClickHouse server over the native protocol (clickhouse-driver).
* `ChdbClickHouse`: chdb, ClickHouse as an in-process library, on a local directory.

Contract shared by both backends (tests run every case on both):

* Parameters use clickhouse-driver's client-side pyformat style, `%(name)s`, escaped by
  clickhouse-driver's own `escape_params` (also for chdb). As with clickhouse-driver, a
  literal `%` in a statement that has parameters must be written `%%`. Value types: str,
  int, float, datetime, list (an Array literal) and tuple (a tuple literal, for `IN`).
* Time is UTC everywhere. A naive datetime means UTC, an aware one is converted to UTC.
  DateTime values come back as naive UTC datetimes on both backends. The native backend
  therefore requires a server whose time zone is UTC (the official Docker image is; a
  Debian package needs `<timezone>UTC</timezone>`): ClickHouse 18.x uses the server time
  zone for every DateTime conversion and function, so any other zone would shift windows.
  chdb sessions run with `session_timezone = UTC` whatever the process time zone is.
* Query results are lists of tuples with clickhouse-driver's Python types: int for
  integers, float, str, naive-UTC datetime for DateTime, date for Date, list for Array,
  tuple for Tuple. chdb results are decoded by clickhouse-driver's own Native-format
  column readers, so both backends return identical values.
* `insert` checks types (clickhouse-driver `types_check=True`; pyarrow's typed arrays on
  chdb) and writes one block, i.e. one part per partition, for batches up to a million
  rows. It returns the number of rows written.
* Errors: `ClickHouseUnavailable` when the backend cannot be reached or is temporarily
  unable to serve (retry later), `ClickHouseError` when the statement itself failed
  (retrying will not help). The two are deliberately unrelated types so a handler for
  one never swallows the other. Retrying is the caller's job.
* Statements are not split or rewritten: one statement per call. Never put data inline
  in an `INSERT ... VALUES (...)` statement: clickhouse-driver then waits for a data block
  that never comes on ClickHouse 18.x (the statement hangs until the socket timeout); use
  `insert`.
"""

from __future__ import annotations

import importlib
import io
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import SecretStr

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 9000
DEFAULT_SECURE_PORT: Final = 9440


class ClickHouseError(Exception):
    """The statement failed: bad SQL, unknown table, wrong types. Retrying will not help."""


class ClickHouseUnavailable(Exception):
    """ClickHouse cannot be reached or cannot serve right now. Retry later."""


@runtime_checkable
class ClickHouse(Protocol):
    """What kudos needs from ClickHouse. See the module docstring for the shared contract."""

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Runs one statement (DDL, ALTER, TRUNCATE, ...) and discards any result."""
        ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Runs one SELECT and returns its rows."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Inserts `rows` (one value per column, in `columns` order) in one statement."""
        ...

    def close(self) -> None:
        """Releases the connection. Idempotent."""
        ...


# --- shared helpers -------------------------------------------------------------------

_UTC_ZONES: Final = frozenset(
    {
        "UTC",
        "UCT",
        "Universal",
        "Zulu",
        "GMT",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Greenwich",
        "Etc/UTC",
        "Etc/UCT",
        "Etc/Universal",
        "Etc/Zulu",
        "Etc/GMT",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "Etc/Greenwich",
    }
)


def quote_identifier(name: str) -> str:
    """Backquotes one identifier (`window` is a keyword in current ClickHouse)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_table(table: str) -> str:
    """`db.table` or `table`, each part backquoted."""
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise ClickHouseError(f"not a table name: {table!r}")
    return ".".join(quote_identifier(p) for p in parts)


def insert_statement(table: str, columns: Sequence[str]) -> str:
    if not columns:
        raise ClickHouseError("insert needs at least one column")
    return f"INSERT INTO {quote_table(table)} ({', '.join(quote_identifier(c) for c in columns)})"


def _utc_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Aware datetimes to UTC, so both backends render the same literal."""

    def fix(value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, tuple):
            return tuple(fix(v) for v in value)
        return value

    return {k: fix(v) for k, v in params.items()}


# --- native protocol ------------------------------------------------------------------

# Server error codes that mean "not now" rather than "never": the writer retries them.
_TRANSIENT_SERVER_CODES: Final = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY (a replica in read-only mode)
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        319,  # UNKNOWN_STATUS_OF_INSERT
        999,  # KEEPER_EXCEPTION
    }
)


class NativeClickHouse:
    """A ClickHouse server over the native protocol (clickhouse-driver), thread-safe.

    The session's default database is `default`: kudos qualifies every table with its
    database (`kudos.scores`), which lets `kudos migrate` connect before `kudos` exists.
    Connecting is lazy; the first statement connects (and reconnects after a failure).
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        user: str = "default",
        password: str | SecretStr = "",
        *,
        secure: bool = False,
        verify: bool = True,
        ca_certs: str | None = None,
        connect_timeout: float = 10.0,
        send_receive_timeout: float = 300.0,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        from clickhouse_driver import Client

        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        self.host = host
        self.port = port if port is not None else (DEFAULT_SECURE_PORT if secure else DEFAULT_PORT)
        self.user = user
        self.secure = secure
        self._client = Client(
            host=host,
            port=self.port,
            user=user,
            password=secret,
            database="default",
            secure=secure,
            verify=verify,
            ca_certs=ca_certs,
            connect_timeout=connect_timeout,
            send_receive_timeout=send_receive_timeout,
            settings=dict(settings or {}),
        )
        self._lock = threading.Lock()
        self._timezone_checked = False

    def __repr__(self) -> str:
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"NativeClickHouse({scheme}://{self.user}:***@{self.host}:{self.port})"

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._run(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        statement = insert_statement(table, columns) + " VALUES"
        with self._lock:
            self._connect()
            written = self._call(statement, rows, types_check=True)
        return int(written)

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()

    def __enter__(self) -> NativeClickHouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        with self._lock:
            self._connect()
            args = None if params is None else _utc_params(params)
            result = self._call(sql, args)
        return [tuple(row) for row in result]

    def _connect(self) -> None:
        if self._timezone_checked:
            return
        # Once per instance; clickhouse-driver itself connects (and reconnects) lazily.
        zone = str(self._call("SELECT timezone()", None)[0][0])
        if zone not in _UTC_ZONES:
            raise ClickHouseError(
                f"ClickHouse server at {self.host}:{self.port} runs in time zone {zone!r}; "
                "kudos needs UTC (set <timezone>UTC</timezone> in the server config)"
            )
        self._timezone_checked = True

    def _call(self, sql: str, params: Any, **kwargs: Any) -> Any:
        return self._call_raw(lambda: self._client.execute(sql, params, **kwargs))

    def _call_raw(self, fn: Any) -> Any:
        from clickhouse_driver import errors

        try:
            return fn()
        except (
            errors.NetworkError,
            errors.SocketTimeoutError,
            errors.UnexpectedPacketFromServerError,
            errors.UnknownPacketFromServerError,
            errors.PartiallyConsumedQueryError,
            EOFError,
            OSError,
        ) as exc:
            self._client.disconnect()
            raise ClickHouseUnavailable(f"{self.host}:{self.port}: {exc}") from exc
        except errors.ServerException as exc:
            if exc.code in _TRANSIENT_SERVER_CODES:
                raise ClickHouseUnavailable(str(exc)) from exc
            raise ClickHouseError(str(exc)) from exc
        except errors.Error as exc:
            raise ClickHouseError(str(exc)) from exc
        except (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError) as exc:
            # clickhouse-driver's own value checks (None in a String column is an
            # AttributeError there) and %-substitution mistakes.
            raise ClickHouseError(f"{type(exc).__name__}: {exc}") from exc


# --- chdb -----------------------------------------------------------------------------


def _driver_context() -> Any:
    """A clickhouse-driver context that speaks for a UTC 'server' with revision 0.

    Revision 0 is what ClickHouse's Native *format* is (no block info, no custom
    serialization flags), so clickhouse-driver's column readers decode chdb's Native
    output exactly like a server's result, and `escape_params` renders datetimes in UTC.
    """
    from clickhouse_driver import Client
    from clickhouse_driver.connection import ServerInfo
    from clickhouse_driver.context import Context
    from clickhouse_driver.util.compat import get_localzone_name_compat

    # Named like the local zone when that is UTC: clickhouse-driver then takes its fast
    # path (datetime.fromtimestamp, ~10x faster than converting through pytz).
    local_zone = get_localzone_name_compat()
    zone = local_zone if local_zone in _UTC_ZONES else "UTC"
    context = Context()
    context.settings = {}
    context.client_settings = Client("localhost").client_settings  # never connects
    context.server_info = ServerInfo(
        name="chdb",
        version_major=0,
        version_minor=0,
        version_patch=0,
        revision=0,
        timezone=zone,
        display_name="chdb",
        used_revision=0,
    )
    return context


class _BytesSocket:
    """Feeds a bytes object to clickhouse-driver's buffered reader."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self._data)

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        size = len(buffer) if nbytes <= 0 else min(nbytes, len(buffer))
        size = min(size, len(self._data) - self._pos)
        buffer[:size] = self._data[self._pos : self._pos + size]
        self._pos += size
        return size


def decode_native(data: bytes, context: Any) -> list[tuple[Any, ...]]:
    """Rows of a ClickHouse Native-format stream, decoded by clickhouse-driver."""
    from clickhouse_driver.bufferedreader import BufferedSocketReader
    from clickhouse_driver.streams.native import BlockInputStream

    rows: list[tuple[Any, ...]] = []
    if not data:
        return rows
    sock = _BytesSocket(data)
    reader = BufferedSocketReader(sock, 1 << 16)
    stream = BlockInputStream(reader, context)
    while not sock.exhausted or reader.position < reader.current_buffer_size:
        block = stream.read()
        rows.extend(tuple(row) for row in block.get_rows())
    return rows


def _pyarrow() -> Any:
    # Imported on use: pyarrow ships no type information, and only chdb inserts need it.
    return importlib.import_module("pyarrow")


def _arrow_type(ch_type: str) -> tuple[Any, bool]:
    """(pyarrow type, nullable) for a ClickHouse column type this module can insert."""
    pa = _pyarrow()

    simple: dict[str, Any] = {
        "String": pa.string(),
        "UInt8": pa.uint8(),
        "UInt16": pa.uint16(),
        "UInt32": pa.uint32(),
        "UInt64": pa.uint64(),
        "Int8": pa.int8(),
        "Int16": pa.int16(),
        "Int32": pa.int32(),
        "Int64": pa.int64(),
        "Float32": pa.float32(),
        "Float64": pa.float64(),
        "Bool": pa.bool_(),
        "Date": pa.date32(),
    }
    if ch_type in simple:
        return simple[ch_type], False
    if ch_type == "DateTime" or re.fullmatch(r"DateTime\('[^']*'\)", ch_type):
        # Arrow timestamps are UTC instants: pyarrow takes naive datetimes as UTC and
        # converts aware ones, and ClickHouse stores the instant whatever the zone.
        return pa.timestamp("s", tz="UTC"), False
    for wrapper in ("LowCardinality", "Nullable"):
        if ch_type.startswith(wrapper + "(") and ch_type.endswith(")"):
            inner, nullable = _arrow_type(ch_type[len(wrapper) + 1 : -1])
            return inner, nullable or wrapper == "Nullable"
    if ch_type.startswith("Array(") and ch_type.endswith(")"):
        inner, nullable = _arrow_type(ch_type[6:-1])
        return pa.list_(pa.field("item", inner, nullable=nullable)), False
    raise ClickHouseError(f"chdb insert does not support column type {ch_type}")


def _check_no_nulls(column: str, array: Any, nullable: bool) -> None:
    """ClickHouse would silently store a default for a null in a non-Nullable column."""
    pa = _pyarrow()

    if not nullable and array.null_count:
        raise ClickHouseError(f"column {column}: None in a non-Nullable column")
    if pa.types.is_list(array.type):
        _check_no_nulls(column, array.flatten(), array.type.value_field.nullable)


class ChdbClickHouse:
    """chdb (embedded ClickHouse) on a local directory, thread-safe.

    chdb hosts one engine per process, bound to one directory: every `ChdbClickHouse` of a
    process must use the same path (a second path raises `ClickHouseUnavailable` until
    all connections to the first are closed), and no other process may open that
    directory meanwhile (chdb holds a lock on `<dir>/status`). Closing the last
    connection of a process shuts its engine down. Statements on one instance are serialised
    by a lock: a chdb connection returns empty results to a query issued while another
    statement (such as a streaming insert) is still open on it.

    Inserts go through Apache Arrow: the rows are turned into typed pyarrow arrays (the
    column types come from system.columns, cached per table until the next `execute`),
    written as one Arrow IPC stream and inserted with `FORMAT ArrowStream`.
    """

    def __init__(self, path: str | Path) -> None:
        chdb: Any = importlib.import_module("chdb")

        self.path = Path(path).expanduser().resolve()
        if any(ch in str(self.path) for ch in "?&#"):
            raise ValueError(f"chdb directory must not contain ?, & or #: {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._conn: Any = chdb.connect(f"{self.path}?session_timezone=UTC")
        except Exception as exc:
            # chdb's own message is empty when another process holds the directory.
            raise ClickHouseUnavailable(
                f"chdb at {self.path}: {exc} (chdb allows one directory per process, and "
                "one process per directory: it locks <dir>/status)"
            ) from exc
        self._lock = threading.Lock()
        self._context = _driver_context()
        self._column_types: dict[str, dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"ChdbClickHouse({str(self.path)!r})"

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        statement = self._substitute(sql, params)
        with self._lock:
            self._column_types.clear()
            self._run(statement, "Native")

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        statement = self._substitute(sql, params)
        with self._lock:
            data = self._run(statement, "Native")
        try:
            return decode_native(data, self._context)
        except Exception as exc:  # an unexpected Native feature, not a connection problem
            raise ClickHouseError(f"cannot decode chdb result: {exc}") from exc

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        statement = insert_statement(table, columns)
        with self._lock:
            types = self._types_of(table)
        # Serialising 100k rows takes a few hundred ms: not under the lock, so readers
        # (the HTTP API) are not held up by it.
        payload = self._arrow_payload(table, columns, rows, types)
        with self._lock:
            if self._conn is None:
                raise ClickHouseUnavailable(f"chdb at {self.path} is closed")
            try:
                with self._conn.send_insert(statement, "ArrowStream") as inserter:
                    inserter.append(payload)
                    result = inserter.finish()
            except Exception as exc:
                raise ClickHouseError(f"insert into {table}: {exc}") from exc
        return int(result.rows_written)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self) -> ChdbClickHouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _substitute(self, sql: str, params: Mapping[str, Any] | None) -> str:
        if params is None:
            return sql
        from clickhouse_driver.util.escape import escape_params

        try:
            escaped = escape_params(_utc_params(params), self._context)
            return str(sql % escaped)
        except (TypeError, ValueError, KeyError) as exc:
            raise ClickHouseError(f"parameter substitution: {type(exc).__name__}: {exc}") from exc

    def _run(self, statement: str, fmt: str) -> bytes:
        if self._conn is None:
            raise ClickHouseUnavailable(f"chdb at {self.path} is closed")
        try:
            result = self._conn.query(statement, fmt)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        data: bytes = result.bytes()
        return data

    def _types_of(self, table: str) -> dict[str, str]:
        cached = self._column_types.get(table)
        if cached is not None:
            return cached
        database, _, name = table.rpartition(".")
        sql = (
            "SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s"
            if database
            else "SELECT name, type FROM system.columns "
            "WHERE database = currentDatabase() AND table = %(t)s"
        )
        rows = decode_native(
            self._run(self._substitute(sql, {"db": database, "t": name}), "Native"),
            self._context,
        )
        if not rows:
            raise ClickHouseError(f"unknown table {table}")
        types = {str(n): str(t) for n, t in rows}
        self._column_types[table] = types
        return types

    def _arrow_payload(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: Mapping[str, str],
    ) -> bytes:
        pa = _pyarrow()

        arrays = []
        fields = []
        for column, values in zip(columns, _transpose(rows, len(columns)), strict=True):
            if column not in types:
                raise ClickHouseError(f"table {table} has no column {column}")
            arrow_type, nullable = _arrow_type(types[column])
            try:
                array = pa.array(values, type=arrow_type)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                raise ClickHouseError(f"column {column} ({types[column]}): {exc}") from exc
            _check_no_nulls(column, array, nullable)
            arrays.append(array)
            fields.append(pa.field(column, arrow_type, nullable=nullable))
        batch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue()


def _transpose(rows: Sequence[Sequence[Any]], width: int) -> list[tuple[Any, ...]]:
    try:
        columns = list(zip(*rows, strict=True))
    except ValueError as exc:
        raise ClickHouseError(f"rows of different lengths: {exc}") from exc
    if len(columns) != width:
        raise ClickHouseError(f"rows have {len(columns)} values for {width} columns")
    return columns


# --- URLs -----------------------------------------------------------------------------

_NATIVE_OPTIONS: Final = frozenset(
    {"secure", "verify", "ca_certs", "connect_timeout", "send_receive_timeout"}
)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class ClickHouseUrl:
    """A parsed `KUDOS_CLICKHOUSE` value. Its repr and str never show the password.

    * `chdb:///absolute/dir`, `chdb://relative/dir` (relative to the working directory)
    * `clickhouse://user:password@host:9000/kudos`, `clickhouses://...` for TLS (port 9440
      by default). Options as query string: secure, verify, ca_certs, connect_timeout,
      send_receive_timeout.
    """

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0
    user: str = "default"
    password: SecretStr = field(default_factory=lambda: SecretStr(""))
    database: str = "kudos"
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str | SecretStr) -> ClickHouseUrl:
        text = url.get_secret_value() if isinstance(url, SecretStr) else url
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # the message could echo the URL: keep it out
            raise ValueError("malformed ClickHouse URL") from exc
        scheme = parts.scheme.lower()
        if scheme == "chdb":
            path = unquote(parts.netloc + parts.path)
            if not path or parts.query or parts.fragment:
                raise ValueError(
                    "chdb URL must be chdb:///absolute/dir or chdb://relative/dir, "
                    "without query or fragment"
                )
            return cls(scheme="chdb", path=path)
        if scheme not in ("clickhouse", "clickhouses"):
            raise ValueError(
                f"unsupported ClickHouse URL scheme {scheme!r}: "
                "use chdb://, clickhouse:// or clickhouses://"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError("ClickHouse URL has an invalid port") from exc
        if not parts.hostname:
            raise ValueError("ClickHouse URL needs a host")
        options = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        unknown = sorted({k for k, _ in options} - _NATIVE_OPTIONS)
        if unknown:
            raise ValueError(f"unknown ClickHouse URL options: {', '.join(unknown)}")
        secure = scheme == "clickhouses" or _flag(dict(options).get("secure", "0"), "secure")
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port or (DEFAULT_SECURE_PORT if secure else DEFAULT_PORT),
            user=unquote(parts.username) if parts.username else "default",
            password=SecretStr(unquote(parts.password) if parts.password else ""),
            database=unquote(parts.path.lstrip("/")) or "kudos",
            options=options,
        )

    @property
    def secure(self) -> bool:
        return self.scheme == "clickhouses" or _flag(
            dict(self.options).get("secure", "0"), "secure"
        )

    def redacted(self) -> str:
        if self.scheme == "chdb":
            return f"chdb://{self.path}"
        secret = ":***" if self.password.get_secret_value() else ""
        query = "&".join(f"{k}={v}" for k, v in self.options)
        return (
            f"{self.scheme}://{quote(self.user, safe='')}{secret}@{self.host}:{self.port}"
            f"/{self.database}" + (f"?{query}" if query else "")
        )

    def __repr__(self) -> str:
        return f"ClickHouseUrl({self.redacted()!r})"

    def __str__(self) -> str:
        return self.redacted()


def _flag(value: str, name: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"ClickHouse URL option {name} must be true or false")


def connect(url: str | SecretStr | ClickHouseUrl) -> ClickHouse:
    """A backend for a `KUDOS_CLICKHOUSE` URL (see `ClickHouseUrl`). Does not log secrets."""
    parsed = url if isinstance(url, ClickHouseUrl) else ClickHouseUrl.parse(url)
    log.info("ClickHouse: %s", parsed.redacted())
    if parsed.scheme == "chdb":
        return ChdbClickHouse(parsed.path)
    options = dict(parsed.options)
    return NativeClickHouse(
        host=parsed.host,
        port=parsed.port,
        user=parsed.user,
        password=parsed.password,
        secure=parsed.secure,
        verify=_flag(options.get("verify", "1"), "verify"),
        ca_certs=options.get("ca_certs") or None,
        connect_timeout=float(options.get("connect_timeout", 10)),
        send_receive_timeout=float(options.get("send_receive_timeout", 300)),
    )


# --- a pool of connections, for reads that may run at once (the HTTP API) --------------


class ConnectionFactory(Protocol):
    def __call__(self) -> ClickHouse: ...


class ClickHousePool:
    """`size` connections behind the `ClickHouse` interface, thread-safe.

    Each call borrows one idle connection for its one statement and gives it back, so up
    to `size` statements run at the same time, each on a connection of its own (one
    connection never runs two statements at once: both backends lock per connection). A
    call that finds no idle connection within `wait_s` raises `ClickHouseUnavailable`.
    Connections are made by `factory` when first needed, one at a time, and closed by
    `close`. `reader` makes a factory of connections whose statements ClickHouse stops
    after a time limit.

    The HTTP API reads through a pool of its own and /health through another of size one,
    so neither waits for the writers' connection, nor the writers for them. chdb runs
    statements of several connections to the one directory of its process concurrently.
    """

    def __init__(self, factory: ConnectionFactory, size: int, *, wait_s: float = 30.0) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        self._factory = factory
        self.size = size
        self.wait_s = wait_s
        self._idle: list[ClickHouse] = []
        self._made = 0
        self._closed = False
        self._cond = threading.Condition()

    def __repr__(self) -> str:
        return f"ClickHousePool(size={self.size})"

    @staticmethod
    def reader(url: str | SecretStr | ClickHouseUrl, max_execution_s: int) -> ConnectionFactory:
        """Connections to `url` on which ClickHouse stops any statement after
        `max_execution_s` seconds (setting `max_execution_time`), so a read that its caller
        gave up on does not keep running; the native socket gives up 5 s after that.

        Builds the connections itself (chdb: `SET` once per connection, which lasts for
        the connection; native: clickhouse-driver's per-client settings) until `connect`
        takes per-connection settings."""
        parsed = url if isinstance(url, ClickHouseUrl) else ClickHouseUrl.parse(url)
        limit = int(max_execution_s)
        if parsed.scheme == "chdb":

            def chdb_reader() -> ClickHouse:
                conn = ChdbClickHouse(parsed.path)
                conn.execute(f"SET max_execution_time = {limit}")
                return conn

            return chdb_reader
        options = dict(parsed.options)

        def native_reader() -> ClickHouse:
            return NativeClickHouse(
                host=parsed.host,
                port=parsed.port,
                user=parsed.user,
                password=parsed.password,
                secure=parsed.secure,
                verify=_flag(options.get("verify", "1"), "verify"),
                ca_certs=options.get("ca_certs") or None,
                connect_timeout=min(float(options.get("connect_timeout", 10)), limit + 5),
                send_receive_timeout=min(
                    float(options.get("send_receive_timeout", 300)), limit + 5
                ),
                settings={"max_execution_time": limit},
            )

        return native_reader

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        conn = self._borrow()
        try:
            conn.execute(sql, params)
        finally:
            self._give_back(conn)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        conn = self._borrow()
        try:
            return conn.query(sql, params)
        finally:
            self._give_back(conn)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        conn = self._borrow()
        try:
            return conn.insert(table, columns, rows)
        finally:
            self._give_back(conn)

    def close(self) -> None:
        """Closes the idle connections now and the borrowed ones when given back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    def _borrow(self) -> ClickHouse:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._closed or bool(self._idle) or self._made < self.size, self.wait_s
            ):
                raise ClickHouseUnavailable(f"no idle ClickHouse connection of {self.size}")
            if self._closed:
                raise ClickHouseUnavailable("the ClickHouse connection pool is closed")
            if self._idle:
                return self._idle.pop()
            self._made += 1
            try:
                return self._factory()
            except BaseException:
                self._made -= 1
                raise

    def _give_back(self, conn: ClickHouse) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(conn)
                self._cond.notify()
                return
        conn.close()
