import pytest

from streams.stages.breaker import BadInputRatioExceeded, DeadLetterBreaker


def test_trips_only_after_min_messages_and_above_the_ratio() -> None:
    b = DeadLetterBreaker(max_ratio=0.2, window=1000, min_messages=100)
    b.record(50, 50)  # all bad, but too few to judge
    b.record(450, 40)
    assert b.ratio == pytest.approx(90 / 500)
    with pytest.raises(BadInputRatioExceeded, match="could not be decoded"):
        b.record(100, 100)


def test_old_batches_leave_the_window() -> None:
    b = DeadLetterBreaker(max_ratio=0.8, window=1000, min_messages=10)
    b.record(400, 300)
    for _ in range(10):
        b.record(100, 10)
    assert b.ratio == pytest.approx(0.1)


def test_ten_percent_garbage_is_tolerated_by_default() -> None:
    b = DeadLetterBreaker()
    for _ in range(100):
        b.record(1000, 100)
    assert b.ratio == pytest.approx(0.1)
