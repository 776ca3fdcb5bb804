"""Messages between the stages and to the output topics, and how they are routed.

The deciding stage sends the effects of one source batch as one message per partition of
`kudos.effects`; the partition of an (org, user) is fixed, so one aggregating worker owns
all of a user's totals.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from schemas.vocabulary import Metric, WindowName
from streams.domain.rules import Effect
from streams.domain.scorebook import BadgeAward

_METRICS = {m.value: m for m in Metric}


def effects_partition(org_id: str, user_id: str, partitions: int) -> int:
    """Stable across processes and Python versions (unlike hash())."""
    return zlib.crc32(f"{org_id}\x00{user_id}".encode()) % partitions


def route_effects(effects: Sequence[Effect], partitions: int) -> dict[int, list[Effect]]:
    out: dict[int, list[Effect]] = {}
    for e in effects:
        out.setdefault(effects_partition(e.org_id, e.user_id, partitions), []).append(e)
    return out


# Largest kudos.effects message the deciding stage sends: well below what a producer or a
# broker takes (KUDOS_MAX_TRANSPORT_BYTES, Kafka's message.max.bytes), and the aggregating
# stage's batch byte bound (KUDOS_BATCH_MAX_BYTES) holds for each message.
EFFECTS_MESSAGE_BYTES: Final = 1 << 20


def effects_messages(
    effects: Sequence[Effect], max_bytes: int = EFFECTS_MESSAGE_BYTES
) -> list[bytes]:
    """`encode_effects` in messages of at most `max_bytes` each, split between source
    events only (the effects of one event, at most 100, stay together: `apply_effects`
    needs them so). The common case is one message, encoded once."""
    encoded = encode_effects(effects)
    if len(encoded) <= max_bytes:
        return [encoded]
    cut = _event_boundary(effects, len(effects) // 2)
    if cut is None:
        return [encoded]  # one event's effects: small, whatever the bound
    return effects_messages(effects[:cut], max_bytes) + effects_messages(effects[cut:], max_bytes)


def _event_boundary(effects: Sequence[Effect], near: int) -> int | None:
    """An index i, as close after (else before) `near` as there is, where effects[i]
    belongs to another source event than effects[i - 1]."""

    def starts_event(i: int) -> bool:
        a, b = effects[i - 1], effects[i]
        return (a.partition, a.offset) != (b.partition, b.offset)

    after = next((i for i in range(max(near, 1), len(effects)) if starts_event(i)), None)
    if after is not None:
        return after
    return next((i for i in range(near - 1, 0, -1) if starts_event(i)), None)


def encode_effects(effects: Sequence[Effect]) -> bytes:
    return json.dumps(
        [
            [e.org_id, e.user_id, e.metric.value, e.actor_id, e.occurred_at, e.partition, e.offset]
            for e in effects
        ],
        separators=(",", ":"),
    ).encode()


def decode_effects(raw: bytes) -> list[Effect]:
    return [
        Effect(org, user, _METRICS[metric], actor, int(at), int(p), int(o))
        for org, user, metric, actor, at, p, o in json.loads(raw)
    ]


def badge_id(award: BadgeAward) -> str:
    """Deterministic id: consumers of recognition.badges deduplicate on it."""
    return f"{award.org_id}/{award.user_id}/{award.badge}/{award.period_start}"


def period_window(award: BadgeAward) -> WindowName:
    if award.period is not None:
        return award.period
    return {"first_thanks": "all", "helper": "week", "sharer": "week"}.get(  # type: ignore[return-value]
        award.badge, "day"
    )


def encode_badge(award: BadgeAward, awarded_at_ms: int) -> bytes:
    return json.dumps(
        {
            "badge_id": badge_id(award),
            "org_id": award.org_id,
            "user_id": award.user_id,
            "badge": award.badge,
            "period": period_window(award),
            "period_start": award.period_start,
            "awarded_at": awarded_at_ms,
            "rule_version": award.rule_version,
            "evidence": award.evidence,
        },
        separators=(",", ":"),
    ).encode()


# --- control messages on kudos.effects ---------------------------------------------------
#
# Effects messages are JSON arrays; a control message is a JSON object. It travels in the
# same partition as the effects it must be ordered with, so the aggregating stage that owns
# a user applies everything before it first, and everything after it later.


@dataclass(frozen=True, slots=True)
class Control:
    """`forget`: erase (org, user) from memory and ClickHouse (owner's partition).
    `reset_boards`: forget what is known of an org's boards (every partition).
    `audit`: apply the stored changes of the collusion audit of the org week starting at
    `at_ms` to the users of this partition (every partition; streams/stages/audit.py).
    `scrub`: after a forget, take (org, user) out of the deciding stages' caps and budgets
    in memory, as `token` where they acted (every partition: each worker scrubs its own)."""

    action: Literal["forget", "reset_boards", "audit", "scrub"]
    org_id: str
    user_id: str = ""
    request_id: str = ""
    at_ms: int = 0
    token: str = ""


def is_control(raw: bytes) -> bool:
    return raw[:1] == b"{"


def encode_control(control: Control) -> bytes:
    return json.dumps(
        {
            "kudos_control": control.action,
            "org_id": control.org_id,
            "user_id": control.user_id,
            "request_id": control.request_id,
            "at_ms": control.at_ms,
            "token": control.token,
        },
        separators=(",", ":"),
    ).encode()


def decode_control(raw: bytes) -> Control:
    obj = json.loads(raw)
    action = obj["kudos_control"]
    if action not in ("forget", "reset_boards", "audit", "scrub"):
        raise ValueError(f"unknown control message {action!r}")
    return Control(
        action,
        obj["org_id"],
        obj.get("user_id", ""),
        obj.get("request_id", ""),
        int(obj.get("at_ms", 0)),
        obj.get("token", ""),
    )
