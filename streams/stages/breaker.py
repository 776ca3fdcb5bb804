"""The dead-letter circuit breaker: stop when too much of the input is undecodable.

A misconfigured producer (wrong serializer, wrong topic) would otherwise silently drain a
topic into the DLQ. Like arroyo's DlqLimit, the worker stops with a clear error once the
undecodable share of the last `window` messages passes `max_ratio` (after at least
`min_messages` have been seen).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


class BadInputRatioExceeded(RuntimeError):
    pass


@dataclass(slots=True)
class DeadLetterBreaker:
    max_ratio: float = 0.5
    window: int = 10_000
    min_messages: int = 1000
    _batches: deque[tuple[int, int]] = field(default_factory=deque)
    _total: int = 0
    _bad: int = 0

    @property
    def ratio(self) -> float:
        return self._bad / self._total if self._total else 0.0

    def record(self, total: int, bad: int) -> None:
        """Count one batch; raise when the recent bad ratio passes the limit."""
        self._batches.append((total, bad))
        self._total += total
        self._bad += bad
        while self._batches and self._total - self._batches[0][0] >= self.window:
            t, b = self._batches.popleft()
            self._total -= t
            self._bad -= b
        if self._total >= self.min_messages and self.ratio > self.max_ratio:
            raise BadInputRatioExceeded(
                f"{self._bad} of the last {self._total} messages could not be decoded "
                f"({self.ratio:.0%} > limit {self.max_ratio:.0%}); stopping so a misconfigured "
                "producer cannot drain the topic into the DLQ. Fix the producer, or raise "
                "KUDOS_DLQ_MAX_RATIO."
            )
