"""Explain's paging and privacy rules on both backends (chdb 26.x, clickhouse-server 18.16),
from decision rows inserted here: pages are exact slices of the whole list (a
self-thank-you's two entries too), an opted-out person is null in others' entries and an
opted-out user reads as an unknown id, and a PRIVATE decision names nobody, shows no event
id, lineage or minute, and sits in the list where its hour puts it, whatever its minute."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.vocabulary import HOUR_MS
from sinks.clickhouse import ClickHouse
from sinks.directory import DirectoryStore
from sinks.history import DecisionHistory
from sinks.tables import DECISIONS
from streams.domain.rules import RulesLookup
from streams.web.explain import explain_user
from tests.sinks.test_directory import Directory

pytestmark = pytest.mark.clickhouse

ORG = "acme"
DAY = 1_795_478_400_000  # Tuesday 2026-11-24 00:00 UTC
RULES = RulesLookup()


def decision(
    offset: int, kind: str, actor: str, recipient: str, at: int, visibility: str = "PUBLIC"
) -> tuple[Any, ...]:
    reason = "private" if visibility == "PRIVATE" else "self" if actor == recipient else "counted"
    occurred = datetime.fromtimestamp(at // 1000, tz=UTC).replace(tzinfo=None)
    return (ORG, f"e{offset}", kind, actor, recipient, int(reason == "counted"), reason, 1,
            occurred, at, at, "chat", "", visibility, "collab.events", 0, offset,
            datetime(2026, 11, 25), "")  # fmt: skip


def store_rows(ch: ClickHouse) -> None:
    h = DAY + 10 * HOUR_MS
    rows = [decision(i, "THANKS", f"giver{i % 5}", "bob", h + i * 60_000) for i in range(12)]
    rows += [
        decision(20, "THANKS", "bob", "bob", h + 3 * 60_000 + 1),  # self: two entries
        decision(21, "SHARE", "bob", "", h + 5 * 60_000 + 1),
        decision(22, "REACTION", "bob", "carol", h + 6 * 60_000),  # bob reacted: no entry
        decision(23, "THANKS", "oscar", "bob", h + 7 * 60_000 + 1),  # oscar opts out
        decision(24, "THANKS", "bob", "oscar", h + 8 * 60_000 + 1),
        # Private, in the same hour as the public ones, at minutes 58 and 1: listed after
        # every public entry of 10:00-11:00, by hash, not by minute.
        decision(30, "THANKS", "pat", "bob", h + 58 * 60_000, "PRIVATE"),
        decision(31, "THANKS", "bob", "quinn", h + 1 * 60_000, "PRIVATE"),
        decision(32, "THANKS", "pat", "bob", h + HOUR_MS + 30 * 60_000, "PRIVATE"),  # 11:30
    ]
    ch.insert(DECISIONS.qualified, DECISIONS.columns, rows)
    directory = Directory(DirectoryStore(ch))
    directory.put("oscar", display_name="Oscar", opted_out=True)
    directory.put("bob", display_name="Bob")


def explain(ch: ClickHouse, user: str, limit: int = 1000, offset: int = 0) -> dict[str, Any]:
    history = DecisionHistory(ch)
    return explain_user(history, RULES, ORG, user, "day", DAY + HOUR_MS, limit, offset)


def test_pages_are_exact_slices_of_the_whole_list(ch: ClickHouse) -> None:
    store_rows(ch)
    whole = explain(ch, "bob")
    entries = whole["entries"]
    assert len(entries) == whole["count"] == 12 + 2 + 1 + 1 + 1 + 3
    assert whole["next_offset"] is None and not whole["truncated"]
    assert sum(e["points"] for e in entries) == whole["score"]
    for limit in (1, 2, 5, 7):
        pages, offset = [], 0
        while offset is not None:
            page = explain(ch, "bob", limit, offset)
            assert len(page["entries"]) <= limit and page["offset"] == offset
            assert page["score"] == whole["score"] and page["count"] == whole["count"]
            pages += page["entries"]
            offset = page["next_offset"]
        assert pages == entries, limit
    beyond = explain(ch, "bob", 10, 1000)
    assert (beyond["entries"], beyond["next_offset"]) == ([], None)
    selfish = [e for e in entries if e["lineage"] and e["lineage"]["offset"] == 20]
    assert [e["metric"] for e in selfish] == ["thanks_received", "thanks_given"]


def test_private_entries_name_nobody_and_keep_to_their_hour(ch: ClickHouse) -> None:
    store_rows(ch)
    body = explain(ch, "bob")
    private = [e for e in body["entries"] if e["private"]]
    assert len(private) == 3 and body["refused"]["private"] == 3
    for e in private:
        assert (e["actor_id"], e["recipient_id"], e["event_id"], e["lineage"]) == (None,) * 4
        assert e["occurred_at"].endswith(":00:00Z")
    assert all(e["private"] is False for e in body["entries"] if e not in private)
    text = json.dumps(body)
    for secret in ('"pat"', '"quinn"', '"e30"', '"e31"', '"e32"', ":58:", ":30:"):
        assert secret not in text, secret
    # Newest first: 11:30's private entry, the public ones of 10:xx, then 10:01 and 10:58
    # (both shown as 10:00) after them.
    order = ["private" if e["private"] else "public" for e in body["entries"]]
    assert order == ["private"] + ["public"] * 17 + ["private"] * 2
    assert body["entries"][0]["occurred_at"] == "2026-11-24T11:00:00Z"


def test_opted_out_people_are_null_for_others_and_unknown_themselves(ch: ClickHouse) -> None:
    store_rows(ch)
    body = explain(ch, "bob")
    with_oscar = [e for e in body["entries"] if e["lineage"] and e["lineage"]["offset"] in (23, 24)]
    assert {(e["actor_id"], e["recipient_id"]) for e in with_oscar} == {
        (None, "bob"),
        ("bob", None),
    }
    assert "oscar" not in json.dumps(body).lower()
    hidden, unknown = explain(ch, "oscar"), explain(ch, "nobody")
    assert hidden["count"] == 0 and hidden["entries"] == []
    assert {**hidden, "user_id": "nobody"} == unknown
