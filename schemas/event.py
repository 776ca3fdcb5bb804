"""The typed form of a `CollaborationEvent` (schema `avro/collaboration_event.v3.avsc`).

The codec produces these; the recognition rules consume them. Instances are
immutable so that a batch of events can be re-decided deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np
import pyarrow as pa


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

    `occurred_at` is event time in epoch milliseconds, UTC. `values` (schema v3) are the
    company values the event names, as sent (the rules keep those the org lists).
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
    values: tuple[str, ...] = ()


# --- the columnar form: the events of a batch as columns ---------------------------------

# An event type's code in `EventColumns.event_type` is its index here; likewise visibility.
EVENT_TYPE_CODES: Final[tuple[EventType, ...]] = (
    EventType.SHARE,
    EventType.THANKS,
    EventType.REACTION,
)
VISIBILITY_CODES: Final[tuple[Visibility, ...]] = (Visibility.PUBLIC, Visibility.PRIVATE)
SHARE: Final = 0
THANKS: Final = 1
REACTION: Final = 2
PRIVATE: Final = 1

_STRING_LIST: Final = pa.list_(pa.string())


@dataclass(frozen=True, slots=True)
class EventColumns:
    """The decodable events of a batch of messages, as columns, in message order.

    `index` is each event's position among the messages decoded; strings are Arrow arrays
    (`content_id` and `channel` may hold nulls); `recipient_ids` is a list array (its
    flattened values and per-event offsets: `recipient_values`, `recipient_offsets`), and so
    is `values` (schema v3's company values; empty lists for older events)."""

    index: np.ndarray  # int64
    event_id: pa.Array
    event_type: np.ndarray  # int8: EVENT_TYPE_CODES
    org_id: pa.Array
    actor_id: pa.Array
    recipient_ids: pa.ListArray
    content_id: pa.Array
    channel: pa.Array
    visibility: np.ndarray  # int8: VISIBILITY_CODES
    occurred_at: np.ndarray  # int64 epoch ms
    source: pa.Array
    values: pa.ListArray

    def __len__(self) -> int:
        return len(self.index)

    @property
    def recipient_offsets(self) -> np.ndarray:
        """Per event, where its recipients start in `recipient_values` (length n + 1)."""
        offsets = np.asarray(self.recipient_ids.offsets, dtype=np.int64)
        out: np.ndarray = offsets - offsets[0]
        return out

    @property
    def recipient_values(self) -> pa.Array:
        return self.recipient_ids.flatten()

    @classmethod
    def from_events(
        cls, events: Sequence[CollaborationEvent], index: Sequence[int] | np.ndarray
    ) -> EventColumns:
        codes = {t: i for i, t in enumerate(EVENT_TYPE_CODES)}
        return cls(
            np.asarray(index, dtype=np.int64),
            pa.array([e.event_id for e in events], pa.string()),
            np.array([codes[e.event_type] for e in events], dtype=np.int8),
            pa.array([e.org_id for e in events], pa.string()),
            pa.array([e.actor_id for e in events], pa.string()),
            pa.array([list(e.recipient_ids) for e in events], _STRING_LIST),
            pa.array([e.content_id for e in events], pa.string()),
            pa.array([e.channel for e in events], pa.string()),
            np.array([e.visibility is Visibility.PRIVATE for e in events], dtype=np.int8),
            np.array([e.occurred_at for e in events], dtype=np.int64),
            pa.array([e.source for e in events], pa.string()),
            pa.array([list(e.values) for e in events], _STRING_LIST),
        )

    def take(self, rows: np.ndarray) -> EventColumns:
        """These rows (numpy indices), in this order."""
        at = pa.array(rows, pa.int64())
        return EventColumns(
            self.index[rows],
            self.event_id.take(at),
            self.event_type[rows],
            self.org_id.take(at),
            self.actor_id.take(at),
            self.recipient_ids.take(at),
            self.content_id.take(at),
            self.channel.take(at),
            self.visibility[rows],
            self.occurred_at[rows],
            self.source.take(at),
            self.values.take(at),
        )

    @staticmethod
    def concat(parts: Sequence[EventColumns]) -> EventColumns:
        """The parts' rows together, ordered by `index`."""
        if len(parts) == 1:
            return parts[0]
        joined = EventColumns(
            np.concatenate([p.index for p in parts]),
            *(
                np.concatenate(cols) if isinstance(cols[0], np.ndarray) else _concat_arrow(cols)
                for cols in zip(*(p._data() for p in parts), strict=True)
            ),
        )
        order = np.argsort(joined.index, kind="stable")
        return joined.take(order)

    def _data(self) -> tuple[Any, ...]:
        return (
            self.event_id,
            self.event_type,
            self.org_id,
            self.actor_id,
            self.recipient_ids,
            self.content_id,
            self.channel,
            self.visibility,
            self.occurred_at,
            self.source,
            self.values,
        )

    def events(self) -> list[CollaborationEvent]:
        """The rows as `CollaborationEvent`s (the per-event oracle in the tests)."""
        cols = [c.tolist() if isinstance(c, np.ndarray) else c.to_pylist() for c in self._data()]
        return [
            CollaborationEvent(
                eid,
                EVENT_TYPE_CODES[kind],
                org,
                actor,
                tuple(recipients),
                content,
                channel,
                VISIBILITY_CODES[vis],
                at,
                source,
                tuple(values),
            )
            for eid, kind, org, actor, recipients, content, channel, vis, at, source, values in zip(
                *cols, strict=True
            )
        ]


def _concat_arrow(arrays: Sequence[pa.Array]) -> pa.Array:
    return pa.concat_arrays(list(arrays))


EMPTY_EVENT_COLUMNS: Final = EventColumns.from_events([], [])
