"""The bodies the API and the live page share (streams/web/payloads.py): rank movements
and a board with its changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sinks.pagedata import PreviousRank
from sinks.store import LeaderboardEntry
from streams.web.payloads import changes_payload, movement


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("rank", "previous", "want"),
    [
        (1, None, None),
        (1, PreviousRank(3, True), "up"),
        (3, PreviousRank(1, True), "down"),
        (2, PreviousRank(2, True), "same"),
        (5, PreviousRank(None, False), "new"),
        (5, PreviousRank(None, True), "up"),  # below the previous board's depth
    ],
)
def test_movement(rank: int, previous: PreviousRank | None, want: str | None) -> None:
    assert movement(rank, previous) == want


def entry(rank: int, user: str, score: int) -> LeaderboardEntry:
    return LeaderboardEntry(rank, user, score, 0, 0, score // 3, 1, 0, user.title())


def test_changes_payload() -> None:
    entries = [entry(1, "ann", 9), entry(2, "bob", 6), entry(3, "cy", 3)]
    previous = {
        "ann": PreviousRank(2, True),
        "bob": PreviousRank(None, False),
        "cy": PreviousRank(3, True),
    }
    start = ms("2026-03-09T00:00:00")
    body = changes_payload("acme", "week", start, start - 7 * 86_400_000, entries, previous)
    assert body["window_start"] == "2026-03-09T00:00:00Z"
    assert body["previous_window_start"] == "2026-03-02T00:00:00Z"
    assert [(e["user_id"], e["previous_rank"], e["movement"]) for e in body["entries"]] == [
        ("ann", 2, "up"),
        ("bob", None, "new"),
        ("cy", 3, "same"),
    ]
    assert body["entries"][0]["display_name"] == "Ann"
    every = changes_payload("acme", "all", 0, None, entries, previous)
    assert every["previous_window_start"] is None
    assert {e["movement"] for e in every["entries"]} == {None}


def test_rank_payload_reports_the_metric_value_and_null_off_the_board() -> None:
    from sinks.store import UserRank
    from streams.web.payloads import rank_payload

    start = ms("2026-11-23T00:00:00")
    place = UserRank("bob", 2, 2, 7, [entry(1, "ann", 9), entry(2, "bob", 6)])
    body = rank_payload("acme", "week", start, "thanks_received", place)
    assert {k: v for k, v in body.items() if k != "entries"} == {
        "org": "acme",
        "window": "week",
        "window_start": "2026-11-23T00:00:00Z",
        "metric": "thanks_received",
        "user_id": "bob",
        "rank": 2,
        "score": 2,  # bob's thanks_received, not his score (6)
        "of": 7,
    }
    assert [(e["rank"], e["user_id"], e["score"]) for e in body["entries"]] == [
        (1, "ann", 9),
        (2, "bob", 6),
    ]
    absent = rank_payload("acme", "week", start, "score", UserRank("zed", None, None, 7, []))
    assert (absent["rank"], absent["score"], absent["of"], absent["entries"]) == (None, None, 7, [])
