"""The typed form of a `CollaborationEvent` (schema `avro/collaboration_event.v1.avsc`).

The codec produces these; the recognition rules consume them. Instances are
immutable so that a batch of events can be re-decided deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    SHARE = "SHARE"
    THANKS = "THANKS"
    REACTION = "REACTION"


class Visibility(StrEnum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


@dataclass(frozen=True, slots=True)
class CollaborationEvent:
    """One collaboration event as published to `collab.events`.

    `occurred_at` is event time in epoch milliseconds, UTC.
    """

    event_id: str
    event_type: EventType
    org_id: str
    actor_id: str
    recipient_ids: tuple[str, ...]
    content_id: str | None
    channel: str | None
    visibility: Visibility
    occurred_at: int
    source: str
