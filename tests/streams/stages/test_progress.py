"""Lag and stalled partitions, as /health/ready and kudos_partition_stalled report them."""

from __future__ import annotations

from streams.stages.progress import ProgressTracker

EV = ("collab.events", 0)
EF = ("kudos.effects", 1)


def test_lag_is_the_highwater_minus_the_next_offset_to_process() -> None:
    t = ProgressTracker(stall_after_s=10)
    t.assign([EV, EF], now=0)
    assert t.lags() == {}  # nothing known yet
    t.observe(EV, position=40, highwater=100, now=1)
    t.observe(EF, position=None, highwater=7, now=1)
    assert t.lags() == {EV: 60}


def test_a_partition_with_lag_and_no_progress_is_stalled() -> None:
    t = ProgressTracker(stall_after_s=10)
    t.assign([EV], now=0)
    t.observe(EV, position=40, highwater=100, now=1)
    assert t.stalled(now=10) == []
    t.observe(EV, position=40, highwater=120, now=11)  # more arrives, nothing moves
    assert t.stalled(now=11) == [EV]
    t.observe(EV, position=41, highwater=120, now=12)  # it moves: not stalled, just slow
    assert t.stalled(now=12) == []
    assert t.stalled(now=21) == []
    assert t.stalled(now=22) == [EV]


def test_an_idle_partition_is_never_stalled() -> None:
    t = ProgressTracker(stall_after_s=10)
    t.assign([EV], now=0)
    t.observe(EV, position=100, highwater=100, now=1)
    assert t.stalled(now=1000) == []


def test_a_new_assignment_keeps_kept_partitions_and_starts_new_clocks() -> None:
    t = ProgressTracker(stall_after_s=10)
    t.assign([EV], now=0)
    t.observe(EV, position=5, highwater=9, now=0)
    t.assign([EV, EF], now=8)
    t.observe(EF, position=0, highwater=3, now=8)
    assert t.stalled(now=12) == [EV]  # EF has had only 4 s
    t.assign([EF], now=13)
    assert set(t.partitions) == {EF}
    t.observe(EV, position=6, highwater=9, now=13)  # no longer ours: ignored
    assert EV not in t.partitions
    assert t.stalled(now=18) == [EF]
