"""What the commands share: the leaderboard table."""

from __future__ import annotations

from streams.cli.common import format_table


def test_leaderboard_table_is_aligned() -> None:
    entries = [
        {
            "rank": 1,
            "user_id": "ann",
            "score": 120,
            "thanks_received": 30,
            "distinct_thankers": 9,
            "thanks_given": 10,
            "shares": 5,
            "reactions_received": 10,
        },
        {
            "rank": 2,
            "user_id": "bartholomew",
            "score": 7,
            "thanks_received": 1,
            "distinct_thankers": 1,
            "thanks_given": 2,
            "shares": 1,
            "reactions_received": 0,
        },
    ]
    lines = format_table("acme", "week", entries, "2026-11-23T00:00:00Z").splitlines()
    assert lines[0] == "acme · week from 2026-11-23T00:00:00Z"
    assert len({len(line) for line in lines[1:]}) == 1
    assert lines[2].split()[:3] == ["1", "ann", "120"]
    # With names from the directory, a name column (blank where unknown), still aligned.
    entries[0]["display_name"] = "Ann Archer"
    entries[1]["display_name"] = None
    named = format_table("acme", "week", entries).splitlines()
    assert named[1].split()[:3] == ["rank", "user_id", "display_name"]
    assert named[2].split()[:5] == ["1", "ann", "Ann", "Archer", "120"]
    assert named[2].index("120") + 3 == named[3].index("  7") + 3  # right-aligned scores
