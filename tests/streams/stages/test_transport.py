"""Messages between the stages (streams/stages/transport.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.vocabulary import Metric
from streams.domain.rules import Effect
from streams.stages.transport import (
    EFFECTS_MESSAGE_BYTES,
    decode_effects,
    effects_messages,
    encode_effects,
)


def effect(offset: int, user: str = "u-bob", partition: int = 0) -> Effect:
    return Effect(
        "acme", user, Metric.THANKS_RECEIVED, "u-alice", 1_715_000_000_000, partition, offset
    )


def test_a_small_batch_is_one_message() -> None:
    effects = [effect(i) for i in range(100)]
    assert effects_messages(effects) == [encode_effects(effects)]
    assert effects_messages([]) == [b"[]"]


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
    assert effects_messages(effects, max_bytes=100) == [encode_effects(effects)]


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), max_size=40),
    st.integers(200, 5000),
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
