"""StateStore on both backends: state round trips at scale, leaderboard sources."""

from __future__ import annotations

from schemas.vocabulary import WindowKey
from sinks.clickhouse import ClickHouse
from streams.domain.rules import RulesLookup
from streams.domain.scorebook import Badge, BadgeAward, ScoreBook, WindowTotals
from streams.stages.state_store import StateStore

WEEK = 1_795_392_000_000  # Monday 2026-11-23 00:00 UTC


def test_many_long_user_ids_load_back_exactly(ch: ClickHouse) -> None:
    """A batch can touch thousands of new users: written into SQL, one IN (...) list of
    them all passed ClickHouse's max_query_size (256 KiB), which a 1M-user benchmark hit;
    bound, they are one set per statement (tests/sinks/test_sql_text.py: 20,000)."""
    store = StateStore(ch)
    users = [f"user-{i:05d}-" + "x" * 120 for i in range(3000)]
    book = ScoreBook()
    keys: list[WindowKey] = []
    for i, user in enumerate(users):
        for window, start in (("week", WEEK), ("all", 0)):
            key: WindowKey = ("acme", window, start, user)
            book.totals[key] = WindowTotals(
                shares=i % 5, thanks_received=i % 7, thankers={f"t{i % 3}"}, hwm={0: i, 2: 7}
            )
            keys.append(key)
    store.write_scores(book, keys, RulesLookup())
    store.write_thankers([(k, t) for k in keys for t in book.totals[k].thankers])
    store.write_badges([BadgeAward("acme", users[-1], Badge.SHARER, WEEK, 1, "ten shares")])

    loaded = ScoreBook()
    store.load_keys(keys, loaded)
    assert loaded.totals == {k: book.totals[k] for k in keys}
    assert loaded.awarded == {("acme", users[-1], Badge.SHARER, WEEK)}
    # Which users have stored keys: the stage asks before loading users it meets first.
    asked = [("acme", u) for u in users[::7]] + [("acme", "nobody"), ("globex", users[0])]
    assert store.users_stored(asked) == {("acme", u) for u in users[::7]}


def test_leaderboards_up_to_the_depth_read_leader_rows_and_deeper_ones_scores(
    ch: ClickHouse,
) -> None:
    store = StateStore(ch, leader_depth=2)
    book = ScoreBook()
    keys: list[WindowKey] = [("acme", "all", 0, u) for u in ("a", "b", "c")]
    for n, key in enumerate(keys):
        book.totals[key] = WindowTotals(thanks_received=n + 1, hwm={0: n})
    rows = store.score_rows(book, keys, RulesLookup())
    store.write_score_rows(rows)
    store.write_leader_rows(rows[1:])  # "a" was below the board's threshold
    assert [e.user_id for e in store.leaderboard("acme", "all", 0, 2)] == ["c", "b"]
    assert [e.user_id for e in store.leaderboard("acme", "all", 0, 3)] == ["c", "b", "a"]
    assert store.load_boards([("acme", "all", 0)], 5) == {("acme", "all", 0): [("c", 9), ("b", 6)]}


def test_deciding_state_rebuilt_from_decisions_equals_the_live_state(ch: ClickHouse) -> None:
    """Caps, giver budgets and dedupe ids survive a restart, in the org's calendar."""
    import random

    from schemas.vocabulary import HOUR_MS
    from streams.domain.rules import PartitionState, RuleConfig, decide_batch
    from tests.streams.factories import event, ms, records

    rules = RulesLookup(
        RuleConfig(),
        {
            "kolkata": RuleConfig(
                version=2,
                pair_daily_cap=2,
                giver_daily_budget=3,
                giver_weekly_budget=8,
                timezone="Asia/Kolkata",
                week_start="sunday",
            )
        },
    )
    rng = random.Random(4)
    start = ms("2026-11-20T00:00:00")
    people = ["ann", "bo", "cy", "di", "ed"]
    events = [
        event(
            "THANKS",
            rng.choice(people),
            tuple(rng.sample(people, rng.randint(1, 2))),
            at=start + i * HOUR_MS // 3,
            org=rng.choice(["kolkata", "utc"]),
        )
        for i in range(400)
    ]
    live = PartitionState()
    now = start + 200 * HOUR_MS
    decisions = decide_batch(records(events, partition=2), live, now, rules)
    store = StateStore(ch)
    store.write_decisions(decisions[:250], [])
    store.write_decisions(decisions[200:], [])  # a replayed insert: rows stored twice
    loaded = store.load_partition_state("collab.events", 2, rules)
    assert loaded.next_offset == live.next_offset
    assert loaded.stream_time_ms == live.stream_time_ms
    assert loaded.pair_counts == live.pair_counts
    assert loaded.giver_counts == live.giver_counts and live.giver_counts
    assert set(loaded.seen) == set(live.seen)


def test_decayed_score_round_trips_and_the_view_decays_it_to_now(ch: ClickHouse) -> None:
    import time

    from streams.domain.rules import RuleConfig

    store = StateStore(ch)
    now = int(time.time() * 1000)
    day = 86_400_000
    book = ScoreBook()
    key: WindowKey = ("acme", "all", 0, "bob")
    book.totals[key] = WindowTotals(
        thanks_received=3, hwm={0: 4}, decay=8.0, decay_at=now - 2 * day
    )
    rules = RulesLookup(RuleConfig(), {"acme": RuleConfig(version=2, decay_half_life_days=1)})
    store.write_score_rows(store.score_rows(book, [key], rules))
    loaded = ScoreBook()
    store.load_keys([key], loaded)
    assert loaded.totals[key] == book.totals[key]
    ((value, half_life),) = ch.query(
        "SELECT decayed_score, decay_half_life_s FROM kudos.decayed_scores "
        "WHERE org_id = 'acme' AND user_id = 'bob'"
    )
    assert half_life == 86_400
    assert abs(float(value) - 2.0) < 0.01  # two half-lives ago: a quarter of 8
