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

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.vocabulary import Metric, WindowName
from streams.domain.effects import EFFECT_SCHEMA, EFFECT_SCHEMA_V1, effects_to_batch, with_values
from streams.domain.rules import Effect
from streams.domain.scorebook import BadgeAward
from streams.domain.tally import distinct

_METRICS = {m.value: m for m in Metric}


def effects_partition(org_id: str, user_id: str, partitions: int) -> int:
    """Stable across processes and Python versions (unlike hash())."""
    return zlib.crc32(f"{org_id}\x00{user_id}".encode()) % partitions


# Largest kudos.effects message the deciding stage sends: well below what a producer or a
# broker takes (KUDOS_MAX_TRANSPORT_BYTES, Kafka's message.max.bytes), and the aggregating
# stage's batch byte bound (KUDOS_BATCH_MAX_BYTES) holds for each message.
EFFECTS_MESSAGE_BYTES: Final = 1 << 20


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


# --- effects as Arrow record batches --------------------------------------------------
#
# An effects message is the format byte ARROW_EFFECTS and one Arrow IPC stream of
# `EFFECT_SCHEMA` (streams/domain/effects.py). Messages of the first format (a JSON array
# of arrays, `encode_effects`) still decode, while a replay can meet them, and so do Arrow
# streams of `EFFECT_SCHEMA_V1` (before the `values` column): their rows carry no values.

ARROW_EFFECTS: Final = b"\x01"


def encode_effect_batch(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, EFFECT_SCHEMA) as writer:
        writer.write_batch(batch)
    encoded: bytes = sink.getvalue().to_pybytes()
    return ARROW_EFFECTS + encoded


def decode_effect_batch(raw: bytes) -> pa.RecordBatch:
    """An effects message of either format as a batch; ValueError if it is neither."""
    if raw[:1] == b"[":
        return effects_to_batch(decode_effects(raw))
    if raw[:1] != ARROW_EFFECTS:
        raise ValueError("not an effects message")
    try:
        table = pa.ipc.open_stream(memoryview(raw)[1:]).read_all()
        old = table.schema.equals(EFFECT_SCHEMA_V1)
        if not old and not table.schema.equals(EFFECT_SCHEMA):
            raise ValueError(f"effects of another schema: {table.schema}")
        table.validate(full=True)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"undecodable effects: {exc}") from exc
    if not table.num_rows:
        return _EMPTY
    batch = table.combine_chunks().to_batches()[0]
    return with_values(batch) if old else batch


_EMPTY: Final = pa.RecordBatch.from_pylist([], schema=EFFECT_SCHEMA)


def route_batch(batch: pa.RecordBatch, partitions: int) -> dict[int, pa.RecordBatch]:
    """Each row to the partition of its (org, user) (`effects_partition`); rows keep their
    order within each partition's part."""
    if batch.num_rows == 0:
        return {}
    keys = pc.binary_join_element_wise(batch["org_id"], batch["user_id"], "\x00")
    encoded = pc.dictionary_encode(keys)
    unique = encoded.dictionary.to_pylist()
    owner = np.array([zlib.crc32(k.encode()) % partitions for k in unique], dtype=np.int64)
    target = owner[encoded.indices.to_numpy(zero_copy_only=False)]
    out: dict[int, pa.RecordBatch] = {}
    for p in distinct(target).tolist():
        out[int(p)] = batch.filter(pa.array(target == p))
    return out


def batch_messages(batch: pa.RecordBatch, max_bytes: int = EFFECTS_MESSAGE_BYTES) -> list[bytes]:
    """`encode_effect_batch` in messages of at most `max_bytes` each, split between source
    events only (the effects of one event, at most 100, stay together: `apply_batch` needs
    them so). The common case is one message, encoded once."""
    encoded = encode_effect_batch(batch)
    if len(encoded) <= max_bytes or batch.num_rows < 2:
        return [encoded]
    cut = _batch_boundary(batch, batch.num_rows // 2)
    if cut is None:
        return [encoded]  # one event's effects: small, whatever the bound
    return batch_messages(batch.slice(0, cut), max_bytes) + batch_messages(
        batch.slice(cut), max_bytes
    )


def event_starts(batch: pa.RecordBatch) -> np.ndarray:
    """Indices of the rows that begin a source event's effects (0 included if any)."""
    p = batch["partition"].to_numpy()
    o = batch["offset"].to_numpy()
    change = np.ones(len(p), dtype=bool)
    change[1:] = (p[1:] != p[:-1]) | (o[1:] != o[:-1])
    return np.flatnonzero(change)


def _batch_boundary(batch: pa.RecordBatch, near: int) -> int | None:
    starts = event_starts(batch)
    starts = starts[starts > 0]
    if not len(starts):
        return None
    after = starts[starts >= near]
    return int(after[0]) if len(after) else int(starts[-1])


def badge_id(award: BadgeAward) -> str:
    """Deterministic id: consumers of recognition.badges deduplicate on it."""
    return f"{award.org_id}/{award.user_id}/{award.badge}/{award.period_start}"


def period_window(award: BadgeAward) -> WindowName:
    if award.period is not None:
        return award.period
    return {"first_thanks": "all", "helper": "week", "sharer": "week"}.get(  # type: ignore[return-value]
        award.badge, "day"
    )


_JSON: Final = msgspec.json.Encoder()  # compact, UTF-8, keys in the order given


def encode_badge(award: BadgeAward, awarded_at_ms: int) -> bytes:
    return _JSON.encode(
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
        }
    )


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
