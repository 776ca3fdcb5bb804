"""A large faulty input stream: realistic events, producer retries, 10 % garbage and five
planted poison messages (events of orgs that the workers make fail inside one stage).

Every message is (key, value bytes, kind) in production order; events are also kept as
dicts for the independent reference model. Events are keyed by actor, so one actor's
events keep their order (one partition), which is all the rules' order depends on.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import default_codec
from tests.e2e.scenario import to_event

DAY = 86_400_000
HOUR = 3_600_000


# Orgs whose events the fault suite's workers make fail inside one stage (planted poison,
# KUDOS_FAULT_POISON_DECIDE / _AGGREGATE, streams/stages/faults.py).
POISON_DECIDE = "poison-decide"
POISON_AGGREGATE = "poison-aggregate"


@dataclass
class FaultyStream:
    messages: list[tuple[bytes, bytes, str]] = field(default_factory=list)
    # The events that count, in order (the model's input): not garbage, not poison.
    events: list[dict[str, Any]] = field(default_factory=list)
    garbage: int = 0
    # Planted poison messages, by the stage they fail in ("decide", "aggregate").
    poison: dict[str, int] = field(default_factory=lambda: {"decide": 0, "aggregate": 0})


def build(n_events: int, now_ms: int, seed: int, garbage_ratio: float = 0.10) -> FaultyStream:
    rng = random.Random(seed)
    codec = default_codec()
    orgs = ["alpha", "beta", "gamma"]
    users = {o: [f"{o}-{i:04d}" for i in range(1500)] for o in orgs}
    weights = [1 / (r + 1) ** 1.05 for r in range(1500)]
    out = FaultyStream()
    sent: list[dict[str, Any]] = []

    def person(org: str) -> str:
        return rng.choices(users[org], weights)[0]

    def new_event() -> dict[str, Any]:
        org = rng.choice(orgs)
        actor = person(org)
        roll = rng.random()
        at = now_ms - rng.randint(0, 2 * DAY)
        if roll < 0.28:
            kind, recips = "SHARE", []
        elif roll < 0.45:
            kind, recips = "REACTION", [person(org)]
        elif roll < 0.50 and sent:
            # A burst between one pair on one day: the daily cap has work to do.
            prev = rng.choice(sent[-200:])
            org, actor, kind = prev["org_id"], prev["actor_id"], "THANKS"
            recips = [prev["recipient_ids"][0] if prev["recipient_ids"] else person(org)]
            at = prev["occurred_at"] + rng.randint(0, 60_000)
        else:
            kind = "THANKS"
            recips = [person(org) for _ in range(1 if rng.random() < 0.85 else 3)]
        if kind != "SHARE" and rng.random() < 0.01:
            recips = [actor]
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_type": kind,
            "org_id": org,
            "actor_id": actor,
            "recipient_ids": recips,
            "content_id": None,
            "channel": "#faults",
            "visibility": "PRIVATE" if rng.random() < 0.03 else "PUBLIC",
            "occurred_at": min(at, now_ms),
            "source": "faults",
        }

    def garbage() -> bytes:
        kind = rng.randrange(8)
        valid = codec.encode_avro(to_event(new_event()))
        if kind == 0:
            return rng.randbytes(rng.randint(1, 300))
        if kind == 1:
            return valid[: rng.randint(5, len(valid) - 1)]
        if kind == 2:
            return b"\x00" + struct.pack(">I", 999) + valid[5:]
        if kind == 3:
            d = new_event()
            d["occurred_at"] = "yesterday-ish"
            return json.dumps(d).encode()
        if kind == 4:
            d = new_event()
            del d["actor_id"]
            return json.dumps(d).encode()
        if kind == 5:
            d = new_event()
            d["event_type"] = "HUG"
            return json.dumps(d).encode()
        if kind == 6:
            return json.dumps({"recipient_ids": "bob", "event_id": 7}).encode()
        return b"{not json"

    def plant_poison() -> None:
        stage = "decide" if sum(out.poison.values()) % 2 == 0 else "aggregate"
        d = new_event()
        d["org_id"] = POISON_DECIDE if stage == "decide" else POISON_AGGREGATE
        d["visibility"] = "PUBLIC"  # a private SHARE would give no point to fail on
        if stage == "aggregate":  # one point, so one effects part: one dead letter
            d["event_type"], d["recipient_ids"] = "SHARE", []
        raw = codec.encode_avro(to_event(d)) if rng.random() < 0.5 else json.dumps(d).encode()
        out.messages.append((d["actor_id"].encode(), raw, "poison"))
        out.poison[stage] += 1

    big_done = False
    poison_every = max(n_events // 5, 1)  # five planted poison messages, spread out
    next_poison = poison_every // 2
    while len(out.events) < n_events:
        if len(out.events) >= next_poison:
            plant_poison()
            next_poison += poison_every
        if rng.random() < garbage_ratio:
            if not big_done and len(out.events) > n_events // 3:
                value = b"{" + b" " * (5 << 20) + b"}"  # a 5 MB message
                big_done = True
            else:
                value = garbage()
            out.messages.append((b"garbage", value, "garbage"))
            out.garbage += 1
            continue
        if sent and rng.random() < 0.03:
            d = dict(rng.choice(sent[-500:]))  # a producer retry: same event_id
        elif rng.random() < 0.001:
            d = new_event()
            d["occurred_at"] = now_ms + 365 * DAY  # far in the future
        else:
            d = new_event()
            sent.append(d)
        value = codec.encode_avro(to_event(d)) if rng.random() < 0.7 else json.dumps(d).encode()
        out.messages.append((d["actor_id"].encode(), value, "event"))
        out.events.append(d)
    return out
