"""Time in kudos: epoch milliseconds, UTC, everywhere; and its two other forms, defined once.

* Text: RFC 3339. `parse_rfc3339` is the one parser (events' `occurred_at`, directory
  records' `updated_at`, the API's `at`, the CLI's times); `format_rfc3339` the one writer.
* ClickHouse DateTime columns (whole seconds, UTC): `ms_to_dt` / `dt_to_ms` convert to and
  from the naive-UTC datetimes both ClickHouse backends take and return.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Final

_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"([Zz]|([+-])([0-9]{2}):([0-9]{2}))?"
)
_EPOCH_MS: Final = re.compile(r"[0-9]{1,16}")
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


def parse_rfc3339(text: str, *, zone_required: bool = True) -> int:
    """An RFC 3339 date-time as epoch millis, UTC; digits below the millisecond are cut.

    A leap second (``:60``) counts as the next minute's first second, as POSIX time does.
    Without `zone_required`, a time without an offset is UTC. Raises ValueError with a
    short reason (the text, cut to 64 characters, for the caller's message)."""
    match = _RFC3339.fullmatch(text)
    if match is None or (zone_required and match[8] is None):
        raise ValueError(f"{text[:64]!r} is not an RFC 3339 date-time")
    year, month, day, hour, minute, second, fraction, _, sign, off_h, off_m = match.groups()
    try:
        ordinal = date(int(year), int(month), int(day)).toordinal()
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    h, m, s = int(hour), int(minute), int(second)
    offset = 0
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            raise ValueError(f"{text!r}: bad UTC offset")
        offset = (oh * 3600 + om * 60) * (1 if sign == "+" else -1)
    if h > 23 or m > 59 or s > 60:
        raise ValueError(f"{text!r}: time out of range")
    seconds = (ordinal - _EPOCH_ORDINAL) * 86400 + h * 3600 + m * 60 + s - offset
    return seconds * 1000 + int((fraction or "0")[:3].ljust(3, "0"))


def parse_time(text: str) -> int:
    """A time as people type it (the API's `at`, `kudos replay --from`): epoch millis in
    ASCII digits, or RFC 3339 with an optional offset (none: UTC). Raises ValueError."""
    if _EPOCH_MS.fullmatch(text):
        return int(text)
    return parse_rfc3339(text, zone_required=False)


def format_rfc3339(ms: int) -> str:
    """Epoch millis as RFC 3339 UTC (`...Z`), with milliseconds when there are any."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def ms_to_dt(ms: int) -> datetime:
    """Epoch millis as a naive-UTC datetime (a ClickHouse DateTime value)."""
    if ms % 1000 == 0:  # window starts, whole seconds: a few distinct values, cached
        return second_to_dt(ms // 1000)
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


@lru_cache(maxsize=65536)
def second_to_dt(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC).replace(tzinfo=None)


def dt_to_ms(value: datetime) -> int:
    """A datetime from ClickHouse (naive means UTC) as epoch millis."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def now_ms() -> int:
    """Now, in epoch millis: the pipeline's wall clock (rules and reads take it injected)."""
    return int(time.time() * 1000)


def now_utc() -> datetime:
    """Now, as a naive-UTC datetime of whole seconds (a DateTime value)."""
    return datetime.now(tz=UTC).replace(tzinfo=None, microsecond=0)
