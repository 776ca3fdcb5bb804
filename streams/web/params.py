"""The one strict reader of HTTP request parameters (query strings and path segments).

Every endpoint reads its parameters through `Params`, so a value is either one of the
documented forms within its documented bounds or the request is a 400 with a JSON body
`{"error": "..."}` naming the parameter (streams/web/guard.py turns `BadRequest` into it).
An error message never repeats the value: it may be huge, hostile or personal.

* Integers: ASCII digits only (``²`` and other Unicode digits are refused; `int()` would
  crash on some and accept others), at most 9 of them, within the endpoint's bounds.
* Times (``at``): epoch milliseconds (ASCII digits) or an RFC 3339 date-time
  (``2026-11-25T12:00:00Z``, ``...+01:00``, fractions of a second; without a zone it is
  UTC), from `MIN_AT` (2000-01-01) to before `MAX_AT` (2100-01-01) UTC, so every window
  start and history point derived from it is a valid ClickHouse DateTime.
* Choices (``window``, ``by``, ``view``, ``metric``): one of the listed words.
* ``value`` (a company value): the limits of an id, below.
* ``org``: required, non-empty, at most 256 UTF-8 bytes, no control character, no ``/``
  (`schemas.limits.check_org`: an org the codec would refuse can never have data).
* A user id in a path: non-empty, at most 256 UTF-8 bytes, no control character
  (`schemas.limits.check_text`).
* A parameter given twice (``?top=1&top=2``) is a 400: there is no right one to pick.
* An empty value (``?top=``) means the parameter is absent; unknown parameters are ignored.

Pure code: no I/O, no clock (the caller passes "now").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Final, TypeVar

from schemas.limits import MAX_ID_BYTES, LimitError, check_org, check_text
from schemas.times import parse_time
from schemas.vocabulary import BOARD_METRICS, WINDOWS, BoardMetric, WindowName
from streams.domain.explain import Page

MIN_AT: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_AT: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z, excluded
MAX_OFFSET: Final = 1_000_000
_DIGITS: Final = re.compile(r"[0-9]{1,9}")
_EPOCH_MS: Final = re.compile(r"[0-9]{1,16}")
_DATE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_AT_RULE: Final = (
    "must be an RFC 3339 date-time or epoch milliseconds "
    "from 2000-01-01T00:00:00Z to before 2100-01-01T00:00:00Z"
)

S = TypeVar("S", bound=str)


class BadRequest(ValueError):
    """A parameter breaks its rule: the API answers 400 with this message."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"'{name}' {problem}")
        self.parameter = name


def parse_int(name: str, text: str, minimum: int, maximum: int) -> int:
    if _DIGITS.fullmatch(text) is None or not minimum <= int(text) <= maximum:
        raise BadRequest(name, f"must be an integer from {minimum} to {maximum}")
    return int(text)


def parse_at(text: str, name: str = "at") -> int:
    """Epoch millis of an `at` value (module doc), or BadRequest."""
    if _EPOCH_MS.fullmatch(text) is None and _DATE_TIME.fullmatch(text) is None:
        raise BadRequest(name, _AT_RULE)
    try:
        ms = parse_time(text)
    except (ValueError, OverflowError, OSError):  # Feb 30, hour 24, offset 99:00, ...
        raise BadRequest(name, _AT_RULE) from None
    if not MIN_AT <= ms < MAX_AT:
        raise BadRequest(name, _AT_RULE)
    return ms


def _limit_problem(exc: LimitError, slash: bool) -> str:
    if exc.reason == "too_long":
        return f"is too long (at most {MAX_ID_BYTES} UTF-8 bytes)"
    return "must not contain control characters" + (" or '/'" if slash else "")


def parse_org(text: str, name: str = "org") -> str:
    if not text:
        raise BadRequest(name, "is required")
    try:
        check_org(name, text)
    except LimitError as exc:
        raise BadRequest(name, _limit_problem(exc, slash=True)) from None
    return text


def parse_user(text: str, name: str = "user") -> str:
    """A user id from a path segment (or a query parameter)."""
    if not text:
        raise BadRequest(name, "is required")
    try:
        check_text(name, text)
    except LimitError as exc:
        raise BadRequest(name, _limit_problem(exc, slash=False)) from None
    return text


class Params:
    """The query string of one request, read strictly (module doc)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in pairs:
            self._values.setdefault(key, []).append(value)

    def text(self, name: str) -> str | None:
        """The one value of `name`; None when absent or empty."""
        values = self._values.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(name, "is given more than once")
        return values[0] or None

    def org(self) -> str:
        return parse_org(self.text("org") or "")

    def user(self, name: str = "user") -> str | None:
        """An optional user id filter (``/api/badges?user=``)."""
        value = self.text(name)
        return None if value is None else parse_user(value, name)

    def window(
        self, default: WindowName = "week", allowed: Collection[WindowName] = WINDOWS
    ) -> WindowName:
        value = self.text("window")
        if value is None:
            return default
        for window in allowed:
            if value == window:
                return window
        raise BadRequest("window", "must be one of " + ", ".join(allowed))

    def value(self) -> str | None:
        """An optional company value (``/api/leaderboard?value=``), with the limits of an
        id (`schemas.limits.check_text`)."""
        value = self.text("value")
        return None if value is None else parse_user(value, "value")

    def choice(self, name: str, choices: Collection[S], default: S) -> S:
        value = self.text(name)
        if value is None:
            return default
        for choice in choices:
            if value == choice:
                return choice
        raise BadRequest(name, "must be one of " + ", ".join(choices))

    def metric(self) -> BoardMetric:
        """What a people board ranks by (`metric=`, default `score`)."""
        return self.choice("metric", BOARD_METRICS, "score")

    def offset(self) -> int:
        """Where a page starts (`offset=`, 0 to `MAX_OFFSET`, default 0)."""
        return self.integer("offset", 0, 0, MAX_OFFSET)

    def at(self, now_ms: int) -> int:
        """`at` in epoch millis; `now_ms` when absent."""
        value = self.text("at")
        return now_ms if value is None else parse_at(value)

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.text(name)
        return default if value is None else parse_int(name, value, minimum, maximum)

    def page(self, default_limit: int, max_limit: int, name: str = "limit") -> Page:
        """`limit` (1 to `max_limit`) and `offset` (0 to `MAX_OFFSET`)."""
        return Page(
            self.integer(name, default_limit, 1, max_limit),
            self.offset(),
        )
