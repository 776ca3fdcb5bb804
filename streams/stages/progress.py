"""Per-partition progress: consumer lag and stalled partitions, as /health and ops see them.

A partition is *stalled* when it has lag (the broker has messages this worker has not
processed) and the worker's processed offset has not moved for `stall_after_s` seconds,
the check arroyo's health probes make. An idle partition (no lag) is never stalled, and a
partition that moves at all is not stalled, however slowly it moves: slowness shows as
growing lag, which has its own alert.

Pure bookkeeping: the caller feeds it high watermarks and processed offsets with a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Partition = tuple[str, int]


@dataclass
class PartitionProgress:
    """What is known of one assigned partition."""

    position: int | None = None  # next offset to process (everything before is stored)
    highwater: int | None = None  # the broker's end offset at the last fetch
    moved_at: float = 0.0  # monotonic time the position last moved (or was assigned)

    @property
    def lag(self) -> int | None:
        if self.position is None or self.highwater is None:
            return None
        return max(self.highwater - self.position, 0)


class ProgressTracker:
    """Lag and stall state of the partitions assigned to this worker."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self.partitions: dict[Partition, PartitionProgress] = {}

    def assign(self, partitions: Iterable[Partition], now: float) -> None:
        """A new assignment: partitions kept keep their state, new ones start their clock."""
        wanted = set(partitions)
        for tp in list(self.partitions):
            if tp not in wanted:
                del self.partitions[tp]
        for tp in wanted:
            if tp not in self.partitions:
                self.partitions[tp] = PartitionProgress(moved_at=now)

    def observe(
        self, tp: Partition, position: int | None, highwater: int | None, now: float
    ) -> None:
        p = self.partitions.get(tp)
        if p is None:
            return  # not assigned (any more)
        if position is not None and position != p.position:
            p.position = position
            p.moved_at = now
        if highwater is not None:
            p.highwater = highwater

    def stalled(self, now: float) -> list[Partition]:
        """Partitions with lag whose position has not moved for `stall_after_s`."""
        return sorted(
            tp
            for tp, p in self.partitions.items()
            if (p.lag or 0) > 0 and now - p.moved_at >= self.stall_after_s
        )

    def lags(self) -> dict[Partition, int]:
        return {tp: lag for tp, p in self.partitions.items() if (lag := p.lag) is not None}
