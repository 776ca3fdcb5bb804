"""A scenario that exercises every rule of v1, as JSON-ready dicts in production order."""

from __future__ import annotations

import random
import uuid
from typing import Any

from schemas.event import CollaborationEvent, EventType, Visibility

DAY = 86_400_000
HOUR = 3_600_000


def build(org: str, now_ms: int, seed: int, n_random: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    users = [f"{org}-u{i:02d}" for i in range(20)]

    def ev(kind: str, actor: str, recips: list[str], at: int, **kw: Any) -> dict[str, Any]:
        e = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_type": kind,
            "org_id": org,
            "actor_id": actor,
            "recipient_ids": recips,
            "content_id": None,
            "channel": "#e2e",
            "visibility": "PUBLIC",
            "occurred_at": at,
            "source": "e2e",
        }
        e.update(kw)
        return e

    out: list[dict[str, Any]] = []
    # Streak: a share on each of the last five days; sharer: 10 shares today.
    for d in range(4, -1, -1):
        out.append(ev("SHARE", f"{org}-streaker", [], now_ms - d * DAY - HOUR))
    out += [ev("SHARE", f"{org}-sharer", [], now_ms - i * 60_000) for i in range(11)]
    # Helper: six distinct thankers of one star.
    out += [ev("THANKS", users[i], [f"{org}-star"], now_ms - i * 60_000) for i in range(6)]
    # Pair daily cap: five thanks from one actor to one recipient within one hour.
    cap_at = now_ms - now_ms % DAY + HOUR if now_ms % DAY > 2 * HOUR else now_ms - HOUR
    out += [ev("THANKS", users[0], [users[1]], cap_at + i * 1000) for i in range(5)]
    # Random traffic over the last three days with a long tail.
    weights = [1 / (r + 1) for r in range(len(users))]
    for _ in range(n_random):
        actor = rng.choices(users, weights)[0]
        roll = rng.random()
        at = now_ms - rng.randint(0, 3 * DAY)
        if roll < 0.3:
            out.append(ev("SHARE", actor, [], at))
        elif roll < 0.5:
            out.append(ev("REACTION", actor, [rng.choices(users, weights)[0]], at))
        else:
            k = 1 if rng.random() < 0.8 else 2
            out.append(ev("THANKS", actor, [rng.choices(users, weights)[0] for _ in range(k)], at))
    # Refusals of every kind.
    out.append(ev("THANKS", users[2], [users[2]], now_ms - HOUR))  # self
    out.append(ev("THANKS", users[3], [users[4]], now_ms - HOUR, visibility="PRIVATE"))
    out.append(ev("THANKS", users[3], [], now_ms - HOUR))  # invalid: no recipients
    out.append(ev("SHARE", "", [], now_ms - HOUR))  # invalid: empty actor
    out.append(ev("THANKS", users[5], [users[6]], now_ms + DAY))  # future
    # Producer retries: the same events again.
    out += [dict(e) for e in rng.sample(out, 25)]
    # Late: ten days old, behind recent events of the same actors.
    out += [ev("THANKS", users[i], [users[i + 1]], now_ms - 10 * DAY) for i in range(3)]
    return out


GARBAGE: list[bytes] = [
    b"\x00\x00\x00\x00\x01\x02",  # Confluent framing, truncated Avro
    b"\x00\x00\x00\x03\xe7hello",  # unknown schema id 999
    b"not json at all",
    b'{"event_id": 5}',
    bytes(range(256)),
]


def to_event(d: dict[str, Any]) -> CollaborationEvent:
    return CollaborationEvent(
        d["event_id"],
        EventType(d["event_type"]),
        d["org_id"],
        d["actor_id"],
        tuple(d["recipient_ids"]),
        d["content_id"],
        d["channel"],
        Visibility(d["visibility"]),
        d["occurred_at"],
        d["source"],
        tuple(d.get("values") or ()),
    )
