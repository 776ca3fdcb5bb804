"""Realistic synthetic collaboration traffic: a few orgs, many users, a long tail.

Who acts and who is thanked follows a Zipf-like popularity (a few people get most thanks),
with occasional private events, self-thanks, bursts between one pair and producer retries
(the same event_id twice), so every rule has something to do.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from schemas.event import CollaborationEvent, EventType, Visibility

SOURCES = ("chat", "wiki", "code-review", "qa")
CHANNELS = ("#general", "#eng", "#design", "#support", "#data", None)


@dataclass(frozen=True)
class TrafficShape:
    orgs: tuple[str, ...] = ("acme", "globex", "initech")
    users_per_org: int = 500
    share_ratio: float = 0.3
    reaction_ratio: float = 0.2
    private_ratio: float = 0.04
    self_ratio: float = 0.01
    retry_ratio: float = 0.02
    zipf_s: float = 1.1


class SyntheticTraffic:
    def __init__(self, shape: TrafficShape | None = None, seed: int | None = None) -> None:
        self.shape = shape or TrafficShape()
        self.rng = random.Random(seed)
        n = self.shape.users_per_org
        weights = [1.0 / (rank**self.shape.zipf_s) for rank in range(1, n + 1)]
        self.cum_weights = list(itertools.accumulate(weights))
        self.users = {org: [f"{org}-user-{i:05d}" for i in range(n)] for org in self.shape.orgs}
        self._recent: list[CollaborationEvent] = []

    def _person(self, org: str) -> str:
        return self.rng.choices(self.users[org], cum_weights=self.cum_weights)[0]

    def event(self, at_ms: int | None = None) -> CollaborationEvent:
        rng, shape = self.rng, self.shape
        if self._recent and rng.random() < shape.retry_ratio:
            return rng.choice(self._recent)  # a producer retry: same event_id
        org = rng.choice(shape.orgs)
        actor = self._person(org)
        occurred = at_ms if at_ms is not None else int(time.time() * 1000)
        occurred -= rng.randint(0, 3000)
        roll = rng.random()
        recipients: tuple[str, ...]
        if roll < shape.share_ratio:
            kind, recipients = EventType.SHARE, ()
        elif roll < shape.share_ratio + shape.reaction_ratio:
            kind, recipients = EventType.REACTION, (self._person(org),)
        else:
            kind = EventType.THANKS
            count = 1 if rng.random() < 0.85 else rng.randint(2, 4)
            recipients = tuple(dict.fromkeys(self._person(org) for _ in range(count)))
        if kind is not EventType.SHARE and rng.random() < shape.self_ratio:
            recipients = (actor,)
        ev = CollaborationEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128))),
            event_type=kind,
            org_id=org,
            actor_id=actor,
            recipient_ids=recipients,
            content_id=f"doc-{rng.randint(1, 50_000)}" if kind is not EventType.THANKS else None,
            channel=rng.choice(CHANNELS),
            visibility=Visibility.PRIVATE
            if rng.random() < shape.private_ratio
            else Visibility.PUBLIC,
            occurred_at=occurred,
            source=rng.choice(SOURCES),
        )
        self._recent.append(ev)
        if len(self._recent) > 1000:
            del self._recent[:500]
        return ev

    def stream(
        self, count: int | None = None, at_ms: int | None = None
    ) -> Iterator[CollaborationEvent]:
        it = itertools.count() if count is None else range(count)
        for _ in it:
            yield self.event(at_ms)
