"""One small interface over the two ClickHouse backends kudos runs on.

* `NativeClickHouse`: a ClickHouse server over the native protocol (clickhouse-driver).
* `ChdbClickHouse`: chdb, ClickHouse as an in-process library, on a local directory.

Contract shared by both backends (tests run every case on both):

* No id, org or other input value is ever written into SQL text. Statements name their
  values with pyformat placeholders, `%(name)s`, and each backend binds them: chdb as
  server-side query parameters (`{name:String}`, each value in the text form ClickHouse
  parses it from, escaped here), the native protocol as external tables sent with the
  query, which every server version accepts (18.16 has no query parameters): scalars and
  arrays as columns of one one-row table `_kudos_params`, read as aliased scalar
  subqueries, a tuple as a table `_kudos_set_<name>`, read as `IN (SELECT v FROM ...)`.
  Servers forward a query's external tables to the shards of the Distributed tables it
  reads, so a plain `IN %(set)s` works there (GLOBAL is for subqueries that read
  Distributed tables themselves). A value of any size goes through: max_query_size
  (256 KiB) limits the SQL text, not bound values.
* Value types, checked strictly by the Python type (anything else is a
  `ClickHouseError`): str -> String (valid UTF-8: a lone surrogate is refused); datetime
  -> DateTime (naive = UTC, aware converted; whole seconds, 1970 to 2106 or refused);
  list -> an Array of str, datetime, int, float or bool elements, one type per list (an
  empty list is `[]`); tuple -> a set for `IN`/`NOT IN` of str or datetime elements (an
  empty tuple is refused: it has no element type and 18.16 refuses `IN ()`). int, float
  and bool, alone or as a tuple's elements, are written as numeric literals: they cannot
  inject anything, 18.16 needs literal LIMITs, and it compares an IN set's type exactly
  with the left side's (an Int64 set does not match a UInt32 column). Only placeholders
  the statement names are looked at. As with %-formatting, a literal `%` in a statement
  that has parameters is written `%%` (a lone `%` is refused); without parameters the
  text is sent as written.
* Mutations (`ALTER TABLE ... DELETE/UPDATE`) go through `execute_mutation`, the one named
  path that writes values into SQL text: ClickHouse stores a mutation's command as text
  and runs it later (`ON CLUSTER`, through ZooKeeper), where no external table of the
  query exists. The native backend writes the values in as escaped literals
  (`quote_string`); chdb binds them like any statement (its server writes them into the
  stored command). Either way the statement with its values written in must stay within
  `MUTATION_MAX_BYTES` (64 KiB, far below max_query_size): split a large key set with
  `mutation_chunks`. `execute` and `query` refuse a mutation with parameters.
* Per-connection settings: `connect(url, settings={...})` (e.g. `max_execution_time`); the
  native client sends them with every query, chdb runs `SET` once on its connection.
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
  one never swallows the other. Retrying is the caller's job. The same server codes are
  transient on both backends (`_TRANSIENT_SERVER_CODES`; chdb's message carries the
  code): a query stopped by `max_execution_time` (TIMEOUT_EXCEEDED) is unavailable.
* Statements are not split: one statement per call; the only rewriting is each
  placeholder's replacement by its bound form. Never put data inline
  in an `INSERT ... VALUES (...)` statement: clickhouse-driver then waits for a data block
  that never comes on ClickHouse 18.x (the statement hangs until the socket timeout); use
  `insert`.
"""

from __future__ import annotations

import importlib
import io
import logging
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable
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

    def execute_mutation(self, sql: str, params: Mapping[str, Any]) -> None:
        """Runs one `ALTER TABLE ... DELETE/UPDATE`: the one statement whose values may be
        written into its text (see the module docstring), at most `MUTATION_MAX_BYTES`."""
        ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Runs one SELECT and returns its rows."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Inserts `rows` (one value per column, in `columns` order) in one statement."""
        ...

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        """Inserts columns (lists, numpy arrays or pyarrow arrays of one length each, in
        `columns` order; a DateTime column may hold epoch seconds) in one statement."""
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


# --- parameters -----------------------------------------------------------------------
#
# Statements keep clickhouse-driver's pyformat placeholders, `%(name)s`, but no value is
# ever formatted into the SQL text (except in the one named mutation path below). Each
# backend binds the values its own way (`_native_statement`, `_chdb_statement`); both
# read the same template (`_template`) and the same typed values (`_bind`).

# `%(name)s`, a literal `%%`, or a lone `%` (refused, as %-formatting would refuse it).
_PLACEHOLDER: Final = re.compile(r"%\((?P<name>[^()]*)\)s|%%|%")
_PARAM_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
# What a ClickHouse DateTime (UInt32 seconds) holds.
_DATETIME_MIN: Final = datetime(1970, 1, 1)
_DATETIME_MAX: Final = datetime(2106, 2, 7, 6, 28, 15)
# The names external tables get on the native protocol (one row of scalars; one table
# per set). Leading underscore and prefix: they cannot meet a kudos table or column.
SCALARS_TABLE: Final = "_kudos_params"
SET_TABLE_PREFIX: Final = "_kudos_set_"
# ALTER TABLE ... DELETE/UPDATE: a mutation (see `ClickHouse.execute_mutation`).
_MUTATION: Final = re.compile(r"\s*ALTER\s+TABLE\b.*?\b(?:DELETE|UPDATE)\b", re.I | re.S)
# A mutation statement with its values written in stays below this (UTF-8 bytes), far
# below max_query_size (256 KiB); `mutation_chunks` splits a key set to fit.
MUTATION_MAX_BYTES: Final = 64 * 1024
MUTATION_SET_BYTES: Final = 32 * 1024

# One escaping for string values in ClickHouse's text formats: the quoted format
# (`'...'` in Array values and in mutation literals) and the escaped (TabSeparated) format
# that chdb parses a scalar String parameter in, where a raw tab or newline would end the
# value and a backslash starts an escape. Every C0 control character and DEL is escaped;
# everything else, multi-byte UTF-8 included, goes through as it is.
_CONTROL_ESCAPES: Final[dict[str, str]] = {
    **{chr(c): f"\\x{c:02X}" for c in (*range(0x20), 0x7F)},
    "\0": "\\0",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE: Final = re.compile(r"[\x00-\x1f\x7f\\']")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _escape(value: str) -> str:
    """`value` escaped for both text formats (without the quotes). str.replace and one
    regex scan: ids arrive by the tens of thousands, mostly with nothing to escape."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    value = value.replace("\\", "\\\\").replace("'", "\\'")
    if _CONTROL.search(value) is not None:
        value = _CONTROL.sub(lambda m: _CONTROL_ESCAPES[m.group()], value)
    return value


_CONTROL_BUT_NUL: Final = re.compile(r"[\x01-\x1f\x7f]")
_NEEDS_ESCAPE_BUT_NUL: Final = re.compile(r"[\x01-\x1f\x7f\\']")


def _quoted_strings(values: Sequence[str]) -> str:
    """`'a','b',...`, each as `quote_string` quotes it. In one pass over the joined text
    when no value holds a NUL (the joint), which is every id: ten thousand ids of 256
    bytes are escaped in milliseconds instead of a quarter of a second."""
    joined = "\0".join(values)
    if joined.count("\0") != len(values) - 1:
        return ",".join(quote_string(v) for v in values)
    if _NEEDS_ESCAPE_BUT_NUL.search(joined) is not None:
        joined = joined.replace("\\", "\\\\").replace("'", "\\'")
        if _CONTROL_BUT_NUL.search(joined) is not None:
            joined = _CONTROL_BUT_NUL.sub(lambda m: _CONTROL_ESCAPES[m.group()], joined)
    return "'" + joined.replace("\0", "','") + "'"


ParamKind = Literal["scalar", "array", "set"]


@dataclass(frozen=True, slots=True)
class _Bound:
    """A value bound to a statement rather than written into it.

    `kind` is scalar (a str or datetime), array (a list: an Array value) or set (a tuple:
    the right side of IN); `type` is the value's ClickHouse type for a scalar or array and
    the elements' type for a set; `value` the normalised value (naive-UTC datetimes)."""

    kind: ParamKind
    type: str
    value: Any


@lru_cache(maxsize=1024)
def _template(sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`sql` cut at its placeholders: (texts, names), len(texts) == len(names) + 1, with
    `%%` already turned into `%` in the texts."""
    texts: list[str] = []
    names: list[str] = []
    current: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(sql):
        current.append(sql[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token == "%%":
            current.append("%")
        elif token == "%":
            raise ClickHouseError(
                "a literal % in a statement with parameters must be written %% "
                "(and a parameter %(name)s)"
            )
        else:
            name = match["name"]
            if not _PARAM_NAME.fullmatch(name):
                raise ClickHouseError(f"not a parameter name: {name!r}")
            texts.append("".join(current))
            names.append(name)
            current = []
    current.append(sql[position:])
    texts.append("".join(current))
    return tuple(texts), tuple(names)


def _number(name: str, value: bool | int | float) -> str:
    """A number as ClickHouse's text formats write it (range-checked)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        if not _INT_MIN <= value <= _UINT64_MAX:
            raise ClickHouseError(f"parameter {name}: {value} is outside Int64/UInt64")
        return str(int(value))
    number = float(value)
    if math.isfinite(number):
        return repr(number)
    return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")


def _number_literal(name: str, value: bool | int | float) -> str:
    """A number written into SQL text: it cannot inject anything, and 18.16 needs literal
    LIMITs. A negative one is parenthesised: `x-%(n)s` must not become the comment `x--5`."""
    text = _number(name, value)
    return f"({text})" if text.startswith("-") else text


def _texts(name: str, values: Sequence[str]) -> list[str]:
    """Plain str values (a str subclass, an enum, by its value, not its str()), refused
    when one holds a lone surrogate: it has no UTF-8 form, so no ClickHouse value (ids
    are checked upstream; this keeps both backends failing alike, not deep in a driver)."""
    texts = [v if type(v) is str else str.__str__(v) for v in values]
    try:
        "".join(texts).encode("utf-8")  # one pass in C, for ten thousand ids too
    except UnicodeEncodeError as exc:
        raise ClickHouseError(f"parameter {name}: not valid text ({exc.reason})") from exc
    return texts


def _text(name: str, value: str) -> str:
    return _texts(name, (value,))[0]


def _utc(name: str, value: datetime) -> datetime:
    """Naive UTC, whole seconds, within DateTime's range (naive means UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if not _DATETIME_MIN <= value <= _DATETIME_MAX:
        raise ClickHouseError(f"parameter {name}: {value} is outside ClickHouse's DateTime")
    return value.replace(microsecond=0)


def _element_type(value: Any) -> str | None:
    """The ClickHouse type of one bindable element; None when it is not one."""
    if isinstance(value, str):
        return "String"
    if isinstance(value, datetime):
        return "DateTime"
    if isinstance(value, bool):
        return "UInt8"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, float):
        return "Float64"
    return None


def _elements(name: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """(element type, normalised elements) of a non-empty list or tuple of one type."""
    element = _element_type(values[0])
    if element is None or any(_element_type(v) != element for v in values):
        found = sorted({type(v).__name__ for v in values})
        raise ClickHouseError(
            f"parameter {name}: elements must be all str, all datetime, all int, all float "
            f"or all bool, not {', '.join(found)}"
        )
    if element == "String":
        return element, _texts(name, values)
    if element == "DateTime":
        return element, [_utc(name, v) for v in values]
    for v in values:
        _number(name, v)  # range check
    if element == "Int64" and max(values) > _INT64_MAX:
        if min(values) < 0:
            raise ClickHouseError(f"parameter {name}: mixes negative and > Int64 integers")
        element = "UInt64"
    return element, [v if isinstance(v, float) else int(v) for v in values]


def _bind(name: str, value: Any) -> _Bound | str:
    """A value as bound (`_Bound`), or as the literal text of a number or of an empty
    list, the only things ever written into SQL text (they hold no input text)."""
    if isinstance(value, (bool, int, float)):
        return _number_literal(name, value)
    if isinstance(value, str):
        return _Bound("scalar", "String", _text(name, value))
    if isinstance(value, datetime):
        return _Bound("scalar", "DateTime", _utc(name, value))
    if isinstance(value, list):
        if not value:
            return "[]"
        element, values = _elements(name, value)
        return _Bound("array", f"Array({element})", values)
    if isinstance(value, tuple):
        if not value:
            raise ClickHouseError(
                f"parameter {name}: an empty tuple is no set for IN (it has no element "
                "type, and ClickHouse 18.16 refuses `IN ()`): skip the statement instead"
            )
        element, values = _elements(name, value)
        if element not in ("String", "DateTime"):
            # 18.16 compares an IN set's type exactly with the left side's (UInt32 vs
            # Int64 fails): numbers are written as literals, which adapt to the left side.
            return "(" + ", ".join(_number_literal(name, v) for v in values) + ")"
        return _Bound("set", element, values)
    raise ClickHouseError(
        f"parameter {name}: unsupported type {type(value).__name__} "
        "(str, datetime, int, float, bool, list or tuple)"
    )


def _bound(sql: str, params: Mapping[str, Any]) -> Iterator[tuple[str, str, _Bound | str]]:
    """(text before, name, value) for each placeholder of `sql`, then ("", "", "") with
    the text after the last one. Only parameters the statement names are checked: an
    unused key is ignored, as with %-formatting."""
    texts, names = _template(sql)
    cache: dict[str, _Bound | str] = {}
    for text, name in zip(texts, names, strict=False):
        if name not in cache:
            if name not in params:
                raise ClickHouseError(f"parameter {name} is not given")
            cache[name] = _bind(name, params[name])
        yield text, name, cache[name]
    yield texts[-1], "", ""


def _datetime_text(value: datetime) -> str:
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )


def quote_string(value: str) -> str:
    """A string literal in ClickHouse's quoted format, on 18.16 and 26.x alike."""
    return "'" + _escape(value) + "'"


def _element_text(element: str, value: Any, *, sql: bool = False) -> str:
    """One element in the quoted text format: of an Array value (chdb's parameters), or
    of a literal in SQL text (`sql`, mutations only)."""
    if element == "String":
        return quote_string(value)
    if element == "DateTime":
        return "'" + _datetime_text(value) + "'"
    return (_number_literal if sql else _number)("element", value)


def _chdb_statement(sql: str, params: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """chdb: server-side query parameters, `{name:Type}`, with each value in the text
    form ClickHouse parses it from: the escaped format for a scalar, `[...]` of quoted
    elements for an Array. A set is an Array read as a subquery,
    `x IN (SELECT arrayJoin({s:Array(String)}))`."""
    parts: list[str] = []
    values: dict[str, str] = {}
    for text, name, bound in _bound(sql, params):
        parts.append(text)
        if isinstance(bound, str):
            parts.append(bound)
            continue
        if bound.kind == "scalar":
            parts.append(f"{{{name}:{bound.type}}}")
            values[name] = (
                _escape(bound.value) if bound.type == "String" else _datetime_text(bound.value)
            )
            continue
        element = bound.type[6:-1] if bound.kind == "array" else bound.type
        placeholder = f"{{{name}:Array({element})}}"
        # A set as a subquery: chdb 4.4 compares `x IN <constant array>` of more than
        # 1 MiB element by element (0.1 s became 138 s for 100,000 ids); a subquery's set
        # is a hash set at any size, for under a millisecond more on a small one.
        parts.append(placeholder if bound.kind == "array" else f"(SELECT arrayJoin({placeholder}))")
        values[name] = (
            "["
            + (
                _quoted_strings(bound.value)
                if element == "String"
                else ",".join(_element_text(element, v) for v in bound.value)
            )
            + "]"
        )
    return "".join(parts), values


def _native_statement(sql: str, params: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The native protocol: external tables, which every server version accepts with a
    query (ClickHouse 18.16 has no query parameters). Scalars and arrays are columns of
    one one-row table, read as scalar subqueries, each with an alias: a scalar subquery in
    the SELECT list of a query on a Distributed table needs one on 18.16 ("Not found
    column _subqueryN"), and it does no harm elsewhere. A set is a one-column table of
    its own, read as `IN (SELECT v FROM ...)`: servers send a query's external tables to
    the shards of the Distributed tables it reads (verified on 18.16), so no GLOBAL is
    needed for them."""
    parts: list[str] = []
    columns: list[tuple[str, str]] = []
    row: list[Any] = []
    tables: list[dict[str, Any]] = []
    seen: set[str] = set()
    for text, name, bound in _bound(sql, params):
        parts.append(text)
        if isinstance(bound, str):
            parts.append(bound)
            continue
        if bound.kind == "set":
            table = SET_TABLE_PREFIX + name
            parts.append(f"(SELECT v FROM {table})")
            if name not in seen:
                tables.append(
                    {
                        "name": table,
                        "structure": [("v", bound.type)],
                        "data": [(v,) for v in bound.value],
                    }
                )
        else:
            parts.append(f"((SELECT `{name}` FROM {SCALARS_TABLE}) AS {SCALARS_TABLE}_{name})")
            if name not in seen:
                columns.append((name, bound.type))
                row.append(bound.value)
        seen.add(name)
    if columns:
        tables.append({"name": SCALARS_TABLE, "structure": columns, "data": [tuple(row)]})
    return "".join(parts), tables


def _literal_statement(sql: str, params: Mapping[str, Any]) -> str:
    """The statement with every value written in as a literal: for mutations only (see
    `ClickHouse.execute_mutation`), never for anything else."""
    parts: list[str] = []
    for text, _name, bound in _bound(sql, params):
        parts.append(text)
        if isinstance(bound, str):
            parts.append(bound)
            continue
        element = bound.type[6:-1] if bound.kind == "array" else bound.type
        literals = [
            _element_text(element, v, sql=True)
            for v in ([bound.value] if bound.kind == "scalar" else bound.value)
        ]
        if bound.kind == "scalar":
            parts.append(literals[0])
        elif bound.kind == "array":
            parts.append("[" + ", ".join(literals) + "]")
        else:
            parts.append("(" + ", ".join(literals) + ")")
    return "".join(parts)


def _refuse_mutation(sql: str) -> None:
    """A mutation with parameters must take the named path: on the native protocol the
    server would only say that the external table does not exist."""
    if _MUTATION.match(sql):
        raise ClickHouseError(
            "ALTER TABLE ... DELETE/UPDATE with parameters goes through execute_mutation"
        )


def mutation_statement(sql: str, params: Mapping[str, Any]) -> str:
    """What a mutation's text is with its values written in (`execute_mutation`), checked:
    an ALTER TABLE ... DELETE/UPDATE of at most `MUTATION_MAX_BYTES` bytes."""
    if not _MUTATION.match(sql):
        raise ClickHouseError("execute_mutation runs ALTER TABLE ... DELETE/UPDATE only")
    statement = _literal_statement(sql, params)
    size = len(statement.encode("utf-8"))
    if size > MUTATION_MAX_BYTES:
        raise ClickHouseError(
            f"mutation of {size} bytes: at most {MUTATION_MAX_BYTES} (split its key set "
            "with mutation_chunks)"
        )
    return statement


def mutation_chunks(values: Sequence[str], budget: int = MUTATION_SET_BYTES) -> Iterator[list[str]]:
    """Consecutive runs of `values` whose literals (`quote_string`, plus ", ") add up to
    at most `budget` bytes: key sets of mutations, whose values are written in."""
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(quote_string(value).encode("utf-8")) + 2
        if chunk and size + cost > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk


def _setting_literals(settings: Mapping[str, Any]) -> dict[str, str]:
    """Each setting's value as a literal, names and types checked (both backends refuse
    the same settings, before connecting). Settings are the program's configuration, not
    input: chdb applies them as `SET name = literal`, once per connection."""
    literals = {}
    for name, value in settings.items():
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
            raise ClickHouseError(f"not a setting name: {name!r}")
        if isinstance(value, (bool, int, float)):
            literals[name] = _number(name, value)
        elif isinstance(value, str):
            literals[name] = quote_string(_text(name, value))
        else:
            raise ClickHouseError(f"setting {name}: unsupported type {type(value).__name__}")
    return literals


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

        _setting_literals(settings or {})  # refused here as chdb refuses them
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

    def execute_mutation(self, sql: str, params: Mapping[str, Any]) -> None:
        # The server keeps a mutation's text and runs it later, without the query's
        # external tables: its values are written in (module docstring).
        statement = mutation_statement(sql, params)
        with self._lock:
            self._connect()
            self._call(statement, None)

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

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        size = _column_length(columns, data)
        if not size:
            return 0
        statement = insert_statement(table, columns) + " VALUES"
        values = [_as_list(c) for c in data]
        with self._lock:
            self._connect()
            self._call(statement, values, types_check=True, columnar=True)
        return size

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()

    def __enter__(self) -> NativeClickHouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        tables: list[dict[str, Any]] | None = None
        if params is not None:
            _refuse_mutation(sql)
            sql, tables = _native_statement(sql, params)
        with self._lock:
            self._connect()
            result = self._call(sql, None, external_tables=tables or None)
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


# chdb raises one exception type for everything; its message carries the server's code.
_CHDB_CODE: Final = re.compile(r"\bCode: (\d+)\.")


def _chdb_error(message: str) -> ClickHouseError | ClickHouseUnavailable:
    """A chdb failure as the native backend would classify the same server code."""
    code = _CHDB_CODE.search(message)
    if code is not None and int(code[1]) in _TRANSIENT_SERVER_CODES:
        return ClickHouseUnavailable(message)
    return ClickHouseError(message)


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

    def __init__(self, path: str | Path, settings: Mapping[str, Any] | None = None) -> None:
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
        try:
            # A chdb connection keeps its SETs (and only its own: verified on chdb 4.4).
            for name, literal in _setting_literals(settings or {}).items():
                self._run(f"SET {name} = {literal}", "Native")
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"ChdbClickHouse({str(self.path)!r})"

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        if params is not None:
            _refuse_mutation(sql)
        self._execute(sql, params)

    def execute_mutation(self, sql: str, params: Mapping[str, Any]) -> None:
        # The same checks as on the native protocol; chdb then binds the values (its
        # server writes them into the stored mutation itself, as literals of its AST).
        mutation_statement(sql, params)
        self._execute(sql, params)

    def _execute(self, sql: str, params: Mapping[str, Any] | None) -> None:
        statement, values = self._bind(sql, params)
        with self._lock:
            self._column_types.clear()
            self._run(statement, "Native", values)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if params is not None:
            _refuse_mutation(sql)
        statement, values = self._bind(sql, params)
        with self._lock:
            data = self._run(statement, "Native", values)
        try:
            return decode_native(data, self._context)
        except Exception as exc:  # an unexpected Native feature, not a connection problem
            raise ClickHouseError(f"cannot decode chdb result: {exc}") from exc

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        return self.insert_columns(table, columns, _transpose(rows, len(columns)))

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        if not _column_length(columns, data):
            return 0
        statement = insert_statement(table, columns)
        with self._lock:
            types = self._types_of(table)
        # Serialising 100k rows takes a few hundred ms: not under the lock, so readers
        # (the HTTP API) are not held up by it.
        payload = self._arrow_payload(table, columns, data, types)
        with self._lock:
            if self._conn is None:
                raise ClickHouseUnavailable(f"chdb at {self.path} is closed")
            try:
                with self._conn.send_insert(statement, "ArrowStream") as inserter:
                    inserter.append(payload)
                    result = inserter.finish()
            except Exception as exc:
                raise _chdb_error(f"insert into {table}: {exc}") from exc
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

    @staticmethod
    def _bind(sql: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, str]]:
        return (sql, {}) if params is None else _chdb_statement(sql, params)

    def _run(self, statement: str, fmt: str, values: Mapping[str, str] | None = None) -> bytes:
        if self._conn is None:
            raise ClickHouseUnavailable(f"chdb at {self.path} is closed")
        try:
            if values:
                result = self._conn.query(statement, fmt, params=dict(values))
            else:
                result = self._conn.query(statement, fmt)
        except Exception as exc:
            raise _chdb_error(str(exc)) from exc
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
        statement, values = self._bind(sql, {"db": database, "t": name})
        rows = decode_native(self._run(statement, "Native", values), self._context)
        if not rows:
            raise ClickHouseError(f"unknown table {table}")
        types = {str(n): str(t) for n, t in rows}
        self._column_types[table] = types
        return types

    def _arrow_payload(
        self,
        table: str,
        columns: Sequence[str],
        data: Sequence[Any],
        types: Mapping[str, str],
    ) -> bytes:
        pa = _pyarrow()

        arrays = []
        fields = []
        for column, values in zip(columns, data, strict=True):
            if column not in types:
                raise ClickHouseError(f"table {table} has no column {column}")
            arrow_type, nullable = _arrow_type(types[column])
            try:
                array = _arrow_array(pa, values, arrow_type)
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


def _arrow_array(pa: Any, values: Any, arrow_type: Any) -> Any:
    """`values` (a list, numpy array or pyarrow array) as an array of `arrow_type`; epoch
    seconds for a timestamp column."""
    if isinstance(values, pa.Array):
        return values if values.type == arrow_type else values.cast(arrow_type)
    if pa.types.is_timestamp(arrow_type) and _is_int_array(values):
        return pa.array(values, type=pa.int64()).cast(arrow_type)
    return pa.array(values, type=arrow_type)


def _is_int_array(values: Any) -> bool:
    kind = getattr(getattr(values, "dtype", None), "kind", None)
    return kind in ("i", "u")


def _column_length(columns: Sequence[str], data: Sequence[Any]) -> int:
    """The common length of insert columns; ClickHouseError if they differ."""
    if len(data) != len(columns):
        raise ClickHouseError(f"{len(data)} columns of values for {len(columns)} columns")
    sizes = {len(c) for c in data}
    if len(sizes) > 1:
        raise ClickHouseError(f"columns of different lengths: {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def _as_list(values: Any) -> list[Any]:
    """A column for clickhouse-driver's columnar insert: a list of Python values."""
    tolist = getattr(values, "to_pylist", None) or getattr(values, "tolist", None)
    return list(tolist()) if tolist is not None else list(values)


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


def connect(
    url: str | SecretStr | ClickHouseUrl,
    settings: Mapping[str, Any] | None = None,
    *,
    max_socket_s: float | None = None,
) -> ClickHouse:
    """A backend for a `KUDOS_CLICKHOUSE` URL (see `ClickHouseUrl`). Does not log secrets.

    `settings` (e.g. `{"max_execution_time": 5}`) apply to every statement of this
    connection: the native client sends them with each query, chdb runs `SET` once.
    `max_socket_s` caps the native client's connect and send/receive timeouts (the URL's
    or the defaults), so a caller with a time limit is not held by a dead socket."""
    parsed = url if isinstance(url, ClickHouseUrl) else ClickHouseUrl.parse(url)
    log.info("ClickHouse: %s", parsed.redacted())
    if parsed.scheme == "chdb":
        return ChdbClickHouse(parsed.path, settings=settings)
    options = dict(parsed.options)
    cap = math.inf if max_socket_s is None else max_socket_s
    return NativeClickHouse(
        host=parsed.host,
        port=parsed.port,
        user=parsed.user,
        password=parsed.password,
        secure=parsed.secure,
        verify=_flag(options.get("verify", "1"), "verify"),
        ca_certs=options.get("ca_certs") or None,
        connect_timeout=min(float(options.get("connect_timeout", 10)), cap),
        send_receive_timeout=min(float(options.get("send_receive_timeout", 300)), cap),
        settings=settings,
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
        gave up on does not keep running; the native socket gives up 5 s after that."""
        limit = int(max_execution_s)

        def make() -> ClickHouse:
            return connect(url, {"max_execution_time": limit}, max_socket_s=limit + 5)

        return make

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        conn = self._borrow()
        try:
            conn.execute(sql, params)
        finally:
            self._give_back(conn)

    def execute_mutation(self, sql: str, params: Mapping[str, Any]) -> None:
        conn = self._borrow()
        try:
            conn.execute_mutation(sql, params)
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

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        conn = self._borrow()
        try:
            return conn.insert_columns(table, columns, data)
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
