"""streams/metrics.py: a batch of observations counts as each one observed."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import observe_many

BUCKETS = (0.25, 0.5, 1, 2, 5)


def samples(h: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for m in h.collect() for s in m.samples]


@given(st.lists(st.floats(0, 10, allow_nan=False) | st.sampled_from(BUCKETS), max_size=50))
def test_observe_many_is_observe_each(values: list[float]) -> None:
    one, many = (
        Histogram(name, "h", buckets=BUCKETS, registry=CollectorRegistry())
        for name in ("one", "many")
    )
    for v in values:
        one.observe(v)
    observe_many(many, np.array(values, dtype=np.float64))
    got = [(n.replace("many", "one"), labels, v) for n, labels, v in samples(many)]
    expected = samples(one)
    assert [s[:2] for s in got] == [s[:2] for s in expected]
    assert np.allclose([s[2] for s in got], [s[2] for s in expected])
