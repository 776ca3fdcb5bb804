"""Small builders for events in tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from schemas.event import CollaborationEvent, EventType, Visibility
from streams.domain.rules import SourceRecord

_ids = itertools.count()


def ms(text: str) -> int:
    """'2026-11-23T10:00:00' (UTC) -> epoch millis."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def event(
    kind: EventType | str = EventType.THANKS,
    actor: str = "alice",
    recipients: tuple[str, ...] = ("bob",),
    *,
    at: int | str = "2026-11-23T10:00:00",
    org: str = "acme",
    event_id: str | None = None,
    private: bool = False,
    values: tuple[str, ...] = (),
) -> CollaborationEvent:
    kind = EventType(kind)
    return CollaborationEvent(
        event_id=f"ev-{next(_ids)}" if event_id is None else event_id,
        event_type=kind,
        org_id=org,
        actor_id=actor,
        recipient_ids=() if kind is EventType.SHARE else recipients,
        content_id=None,
        channel=None,
        visibility=Visibility.PRIVATE if private else Visibility.PUBLIC,
        occurred_at=ms(at) if isinstance(at, str) else at,
        source="test",
        values=values,
    )


def records(
    events: list[CollaborationEvent], partition: int = 0, first: int = 0
) -> list[SourceRecord]:
    return [SourceRecord(e, "collab.events", partition, first + i) for i, e in enumerate(events)]
