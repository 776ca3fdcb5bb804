"""Limits on the text that events and directory records carry (DESIGN.md, part 2).

Every id ends up in ClickHouse rows, in keys of the stages' memory, in API responses and
on the live page; a 1,000,000-character actor id once stopped the pipeline. So the codecs
refuse, before any rule sees them, messages whose text breaks these limits:

* `event_id`, `org_id`, `actor_id`, each recipient id, `source` and `channel`: at most
  `MAX_ID_BYTES` (256) bytes of UTF-8; `content_id` at most `MAX_CONTENT_ID_BYTES` (1,024).
  Beyond it: reason ``too_long``.
* `values` (schema v3, company values): at most `MAX_VALUES` (16) per event, each at most
  `MAX_ID_BYTES` bytes like an id. More values, or a longer one: reason ``too_long``.
* No control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) in any of
  them, and no ``/`` in an org id (directory keys are ``org/user``): reason ``bad_id``.

Empty ids are not refused here: the rules record them as ``invalid`` decisions.

The same limits apply to what the HTTP API accepts as an org or a user id: an id the
codec would refuse can never have data, so asking for it is a bad request.
"""

from __future__ import annotations

import re
from typing import Final, Literal

MAX_ID_BYTES: Final = 256
MAX_CONTENT_ID_BYTES: Final = 1024
MAX_VALUES: Final = 16

LimitReason = Literal["too_long", "bad_id"]
LIMIT_REASONS: Final[tuple[LimitReason, ...]] = ("too_long", "bad_id")

_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
# A UTF-8 character takes at most 4 bytes: text of at most this many characters is within
# the limit without encoding it.
_SAFE_CHARS: Final = MAX_ID_BYTES // 4
_SAFE_CONTENT_CHARS: Final = MAX_CONTENT_ID_BYTES // 4


class LimitError(ValueError):
    """Text that breaks a limit; ``reason`` is ``too_long`` or ``bad_id``, ``detail`` names
    the field and the limit but never repeats the text (it may be huge or personal)."""

    def __init__(self, reason: LimitReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: LimitReason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[LimitError], tuple[LimitReason, str]]:
        return (LimitError, (self.reason, self.detail))


def utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def check_text(field: str, text: str, max_bytes: int = MAX_ID_BYTES) -> None:
    """Raise `LimitError` when `text` is longer than `max_bytes` UTF-8 bytes or holds a
    control character."""
    if len(text) > max_bytes // 4 and utf8_length(text) > max_bytes:
        raise LimitError("too_long", f"{field}: {utf8_length(text)} bytes (limit {max_bytes})")
    found = _CONTROL.search(text)
    if found is not None:
        raise LimitError(
            "bad_id", f"{field}: control character U+{ord(found.group()):04X} at {found.start()}"
        )


def check_org(field: str, text: str) -> None:
    """`check_text`, and no ``/``: directory keys and URLs split at it."""
    check_text(field, text)
    if "/" in text:
        raise LimitError("bad_id", f"{field}: contains '/'")


def check_event_texts(
    event_id: str,
    org_id: str,
    actor_id: str,
    recipient_ids: tuple[str, ...],
    content_id: str | None,
    channel: str | None,
    source: str,
    values: tuple[str, ...] = (),
) -> None:
    """Every limit on an event's text; the first broken one raises `LimitError`.

    Fast for the common case (a few short ids): one length test per field and one
    `str.isprintable` over all of them together (about a microsecond an event)."""
    short = (
        len(event_id) <= _SAFE_CHARS
        and len(org_id) <= _SAFE_CHARS
        and len(actor_id) <= _SAFE_CHARS
        and len(source) <= _SAFE_CHARS
        and (channel is None or len(channel) <= _SAFE_CHARS)
        and (content_id is None or len(content_id) <= _SAFE_CONTENT_CHARS)
        and all(len(r) <= _SAFE_CHARS for r in recipient_ids)
        and len(values) <= MAX_VALUES
        and all(len(v) <= _SAFE_CHARS for v in values)
    )
    if short and "/" not in org_id:
        texts = (event_id, org_id, actor_id, source, channel or "", content_id or "")
        # isprintable() is false for every control character (and for some harmless
        # ones, such as U+200B, which the exact search then lets through).
        joined = " ".join((*texts, *recipient_ids, *values))
        if joined.isprintable() or _CONTROL.search(joined) is None:
            return
    # Something is long or odd: find which field, in schema order.
    check_text("event_id", event_id)
    check_org("org_id", org_id)
    check_text("actor_id", actor_id)
    for i, recipient in enumerate(recipient_ids):
        check_text(f"recipient_ids[{i}]", recipient)
    if content_id is not None:
        check_text("content_id", content_id, MAX_CONTENT_ID_BYTES)
    if channel is not None:
        check_text("channel", channel)
    check_text("source", source)
    if len(values) > MAX_VALUES:
        raise LimitError("too_long", f"values: {len(values)} values (limit {MAX_VALUES})")
    for i, value in enumerate(values):
        check_text(f"values[{i}]", value)
