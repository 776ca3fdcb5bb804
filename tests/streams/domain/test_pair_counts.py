"""PairCounts against a dict of pair-days (streams/domain/pair_counts.py)."""

from __future__ import annotations

import random

import numpy as np

from streams.domain.pair_counts import PairCounts, PairDay, pair_key


def test_pair_counts_behave_as_a_dict() -> None:
    rng = random.Random(7)
    model: dict[PairDay, int] = {}
    counts = PairCounts()
    people = [f"u{i}" for i in range(12)]
    for step in range(2000):
        key = (
            "o" + str(rng.randrange(2)),
            rng.choice(people),
            rng.choice(people),
            rng.randrange(4),
        )
        if step % 3:  # the per-event path: get then set
            assert counts.get(key) == model.get(key, 0)
            model[key] = counts[key] = model.get(key, 0) + 1  # type: ignore[index]
        else:  # the vectorised path
            raw = np.frombuffer(pair_key(key), dtype="S40")
            assert counts.lookup(raw).tolist() == [model.get(key, 0)]
            model[key] = model.get(key, 0) + 2
            counts.put(raw, np.array([model[key]]))
    assert counts == model and len(counts) == len(model)
    assert sorted(counts.values()) == sorted(model.values())
    counts.prune(2)
    assert counts == {k: n for k, n in model.items() if k[3] >= 2}


def test_scrub_drops_pairs_to_a_person_and_renames_theirs() -> None:
    counts = PairCounts([(("o", "a", "b", 0), 2), (("o", "b", "c", 0), 1), (("o", "t", "c", 0), 3)])
    counts[("p", "x", "b", 0)] = 4  # another org's b
    actors, days, dropped = counts.scrub("o", "b", "t")
    assert (len(actors), days, dropped) == (1, [0], [2])
    assert counts == {("o", "t", "c", 0): 4, ("p", "x", "b", 0): 4}
    assert not counts.involves("o", "b") and counts.involves("p", "b")
