"""Messages between the stages (streams/stages/transport.py)."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.vocabulary import Metric
from streams.domain.effects import (
    EFFECT_SCHEMA,
    EFFECT_SCHEMA_V1,
    batch_to_effects,
    effects_to_batch,
)
from streams.domain.rules import Effect
from streams.stages.transport import (
    ARROW_EFFECTS,
    EFFECTS_MESSAGE_BYTES,
    batch_messages,
    decode_effect_batch,
    effects_partition,
    encode_effect_batch,
    encode_effects,
    route_batch,
)


def effects_messages(effects: list[Effect], max_bytes: int = EFFECTS_MESSAGE_BYTES) -> list[bytes]:
    return batch_messages(effects_to_batch(effects), max_bytes)


def decode_effects(raw: bytes) -> list[Effect]:
    return batch_to_effects(decode_effect_batch(raw))


def encode(effects: list[Effect]) -> bytes:
    return encode_effect_batch(effects_to_batch(effects))


def effect(offset: int, user: str = "u-bob", partition: int = 0) -> Effect:
    return Effect(
        "acme", user, Metric.THANKS_RECEIVED, "u-alice", 1_715_000_000_000, partition, offset
    )


def test_a_small_batch_is_one_message() -> None:
    effects = [effect(i) for i in range(100)]
    assert effects_messages(effects) == [encode(effects)]
    assert effects_messages([]) == [encode([])]
    assert effects_messages([])[0][:1] == ARROW_EFFECTS
    assert decode_effects(encode([])) == []


def test_a_huge_batch_is_split_between_events_below_the_bound() -> None:
    # 2,000 events of 100 effects with 256-byte non-ASCII ids: ~500 MB as one message.
    wide = "😀" * 64
    effects = [effect(o, user=f"{wide}{r}") for o in range(200) for r in range(100)]
    messages = effects_messages(effects)
    assert len(messages) > 1
    assert all(len(m) <= EFFECTS_MESSAGE_BYTES for m in messages)
    decoded = [decode_effects(m) for m in messages]
    assert [e for d in decoded for e in d] == effects
    for d in decoded:  # no event is split over two messages
        offsets = {e.offset for e in d}
        assert all(
            all(e.offset not in offsets for e in other) for other in decoded if other is not d
        )


def test_one_events_effects_stay_together_whatever_the_bound() -> None:
    effects = [effect(7, user=f"u-{i}") for i in range(100)]
    assert effects_messages(effects, max_bytes=100) == [encode(effects)]


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), max_size=40),
    st.integers(1500, 6000),  # an Arrow message is ~1 KB before its first row
)
def test_split_keeps_order_and_events_whole(events: list[tuple[int, int]], bound: int) -> None:
    effects = [
        effect(offset, user=f"u-{i}", partition=partition)
        for offset, (partition, n) in enumerate(events)
        for i in range(n)
    ]
    messages = effects_messages(effects, max_bytes=bound)
    decoded = [decode_effects(m) for m in messages]
    assert [e for d in decoded for e in d] == effects
    boundaries = [d[-1] for d in decoded[:-1] if d]
    starts = [d[0] for d in decoded[1:] if d]
    for last, first in zip(boundaries, starts, strict=True):
        assert (last.partition, last.offset) != (first.partition, first.offset)
    for m, d in zip(messages, decoded, strict=True):
        assert len(m) <= bound or len({(e.partition, e.offset) for e in d}) == 1


def test_effects_of_the_first_format_still_decode() -> None:
    """JSON effects messages written before the Arrow format, met again by a replay."""
    effects = [effect(i, user=f"u-{i % 3}") for i in range(5)]
    assert decode_effects(encode_effects(effects)) == effects
    assert decode_effects(b"[]") == []


def test_arrow_effects_without_values_still_decode() -> None:
    """Arrow effects written before the `values` column: their rows carry no values."""
    batch = effects_to_batch([effect(i, user=f"u-{i % 3}") for i in range(4)])
    old = pa.RecordBatch.from_arrays(batch.columns[:-1], schema=EFFECT_SCHEMA_V1)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, EFFECT_SCHEMA_V1) as writer:
        writer.write_batch(old)
    got = decode_effect_batch(ARROW_EFFECTS + sink.getvalue().to_pybytes())
    assert got.schema.equals(EFFECT_SCHEMA)
    assert got.equals(batch)
    valued = [replace(effect(1), values=("care", "ownership")), effect(2)]
    assert decode_effects(encode_effect_batch(effects_to_batch(valued))) == valued


@pytest.mark.parametrize(
    "raw", [b"", b"\x01", b"\x01garbage", b"\x02" + b"x" * 20, encode([effect(1)])[:-9]]
)
def test_garbage_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_effect_batch(raw)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30)), max_size=60))
def test_routing_a_batch_is_routing_its_effects(users: list[tuple[str, int]]) -> None:
    effects = [effect(i, user=f"u-{u}{n}") for i, (u, n) in enumerate(users)]
    by_batch = {
        p: batch_to_effects(b) for p, b in route_batch(effects_to_batch(effects), 5).items()
    }
    expected: dict[int, list[Effect]] = {}
    for e in effects:
        expected.setdefault(effects_partition(e.org_id, e.user_id, 5), []).append(e)
    assert by_batch == expected
