"""Rolling boards (`last_7d`, `last_30d`, `last_90d`) through a real `kudos worker`, on chdb
and on clickhouse-server 18.16, against the independent reference model (tests/e2e/
reference.py): 40 people over 100 days, a few stars and a long tail, published in time
order, with `KUDOS_LEADER_DEPTH=4` so the day boards are full and the top-N is proven from
them (sinks/rolling.py), and deeper pages, other metrics and ranks are summed in ClickHouse.

A rolling window is the UTC days (this org's calendar) ending with the day of `at`,
inclusive; every metric is summed over them, distinct_thankers distinct over the range."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import reference
from tests.e2e.http_stack import Stack, start_stack, wait_for
from tests.services.clickhouse_server import ClickHouseServer

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

ORG = "roll"
PEOPLE = [f"p{i:02d}" for i in range(40)]
DAY = reference.DAY
LENGTHS = {"last_7d": 7, "last_30d": 30, "last_90d": 90}
METRICS = ("score", "thanks_received", "thanks_given", "shares", "distinct_thankers")


def events(now: int) -> list[dict[str, Any]]:
    """100 days of thanks and shares in time order; the first four people are busier."""
    rng = random.Random(16)
    first = now - now % DAY - 99 * DAY
    out: list[dict[str, Any]] = []
    for n in range(1500):
        at = first + int(n * (now - first - 60_000) / 1500)
        actor = PEOPLE[min(rng.randrange(40), rng.randrange(40))]
        if rng.random() < 0.3:
            out.append(_event(len(out), "SHARE", actor, [], at))
            continue
        star = PEOPLE[rng.randrange(4)] if rng.random() < 0.5 else rng.choice(PEOPLE)
        out.append(_event(len(out), "THANKS", actor, [star], at))
    return out


def _event(n: int, kind: str, actor: str, to: list[str], at: int) -> dict[str, Any]:
    return {
        "event_id": f"roll-{n}",
        "event_type": kind,
        "org_id": ORG,
        "actor_id": actor,
        "recipient_ids": to,
        "occurred_at": at,
        "source": "chat",
    }


def rolling_board(model: reference.Model, window: str, at: int) -> list[dict[str, Any]]:
    """Every person's totals over the window's days, best score first, ties by id."""
    last = at - at % DAY
    days = {last - k * DAY for k in range(LENGTHS[window])}
    people: dict[str, dict[str, Any]] = {}
    for (org, w, start, user), t in model.totals.items():
        if org != ORG or w != "day" or start not in days:
            continue
        p = people.setdefault(
            user,
            {
                "shares": 0,
                "thanks_given": 0,
                "thanks_received": 0,
                "reactions_received": 0,
                "thankers": set(),
            },
        )
        for metric in ("shares", "thanks_given", "thanks_received", "reactions_received"):
            p[metric] += t[metric]
        p["thankers"] |= t["thankers"]
    return [
        {
            "user_id": user,
            "score": reference.score(t),
            "shares": t["shares"],
            "thanks_given": t["thanks_given"],
            "thanks_received": t["thanks_received"],
            "distinct_thankers": len(t["thankers"]),
            "reactions_received": t["reactions_received"],
        }
        for user, t in people.items()
    ]


def ranked(board: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    out = sorted(board, key=lambda e: (-e[metric], e["user_id"]))
    return [{"rank": i + 1, **e} for i, e in enumerate(out)]


FIELDS = (
    "rank",
    "user_id",
    "score",
    "shares",
    "thanks_given",
    "thanks_received",
    "distinct_thankers",
    "reactions_received",
)


def shown(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(e[f] for f in FIELDS) for e in entries]


@pytest.fixture(scope="module", params=["chdb", "server"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    clickhouse_server: ClickHouseServer,
) -> Iterator[tuple[Stack, reference.Model, int]]:
    now = int(time.time() * 1000)
    evs = events(now)
    model = reference.run(evs, now)
    tmp = tmp_path_factory.mktemp(f"rolling-{request.param}")
    total = sum(1 for e in evs if e["event_type"] == "SHARE")
    for s in start_stack(request.param, tmp, clickhouse_server, evs, [], KUDOS_LEADER_DEPTH="4"):
        wait_for(
            s,
            f"/api/leaderboard?org={ORG}&window=all&metric=shares&top=40",
            lambda b: sum(e["shares"] for e in b["entries"]) == total,
        )
        yield s, model, now


def test_rolling_boards_are_the_sums_of_the_reference_days(
    stack: tuple[Stack, reference.Model, int],
) -> None:
    s, model, now = stack
    for window in LENGTHS:
        want = ranked(rolling_board(model, window, now), "score")
        assert len(want) > 10
        for top, offset in ((3, 0), (10, 0), (5, 7), (40, 0), (10, 35)):
            body = s.get(
                f"/api/leaderboard?org={ORG}&window={window}&top={top}&offset={offset}&at={now}"
            ).json
            assert shown(body["entries"]) == shown(want[offset : offset + top]), (window, top)
        first_day = (now - now % DAY) - (LENGTHS[window] - 1) * DAY
        assert body["window"] == window
        assert body["window_start"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(first_day / 1000)
        )


def test_rolling_boards_by_other_metrics_and_ranks(
    stack: tuple[Stack, reference.Model, int],
) -> None:
    s, model, now = stack
    for window in ("last_7d", "last_30d"):
        board = rolling_board(model, window, now)
        for metric in METRICS:
            want = ranked(board, metric)
            body = s.get(
                f"/api/leaderboard?org={ORG}&window={window}&metric={metric}&top=12&at={now}"
            ).json
            assert shown(body["entries"]) == shown(want[:12]), (window, metric)
        want = ranked(board, "score")
        for me in (want[0], want[len(want) // 2], want[-1]):
            body = s.get(
                f"/api/users/{me['user_id']}/rank?org={ORG}&window={window}&around=2&at={now}"
            ).json
            assert (body["rank"], body["of"]) == (me["rank"], len(want))
            lo = max(0, me["rank"] - 3)
            assert shown(body["entries"]) == shown(want[lo : me["rank"] + 2])
