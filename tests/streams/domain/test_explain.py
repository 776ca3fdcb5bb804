"""The explain response, pure parts: roles, points, totals, truncation, window bounds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from schemas.rows import Audit, DecisionGroup, DecisionRow
from schemas.times import format_rfc3339
from schemas.vocabulary import DAY_MS, HOUR_MS, Metric
from streams.domain.explain import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    entries_of,
    explain_payload,
    metrics_for,
)
from streams.domain.rules import RuleConfig
from streams.domain.windows import calendar, window_bounds
from streams.web.params import BadRequest, Params
from tests.streams.factories import ms

NOW = ms("2026-11-25T12:34:56")  # a Wednesday
RULES = RuleConfig()


def row(
    kind: str, actor: str, recipient: str, reason: str = "counted", offset: int = 1
) -> DecisionRow:
    return DecisionRow(
        "acme", f"ev-{offset}", kind, actor, recipient, reason == "counted", reason, 1,
        NOW, "PUBLIC", "", "test", "collab.events", 2, offset, NOW,
    )  # fmt: skip


def test_roles_give_the_metrics_of_the_contract() -> None:
    assert metrics_for("THANKS", False, True) == (Metric.THANKS_RECEIVED,)
    assert metrics_for("THANKS", True, False) == (Metric.THANKS_GIVEN,)
    assert metrics_for("THANKS", True, True) == (Metric.THANKS_RECEIVED, Metric.THANKS_GIVEN)
    assert metrics_for("REACTION", False, True) == (Metric.REACTIONS_RECEIVED,)
    assert metrics_for("REACTION", True, False) == ()  # reacting gives the actor nothing
    assert metrics_for("SHARE", True, False) == (Metric.SHARES,)


def test_entries_carry_points_reason_version_and_lineage() -> None:
    (entry,) = entries_of(row("THANKS", "alice", "bob", offset=7), "bob", RULES)
    assert entry == {
        "event_id": "ev-7",
        "event_type": "THANKS",
        "occurred_at": "2026-11-25T12:34:56Z",
        "actor_id": "alice",
        "recipient_id": "bob",
        "private": False,
        "metric": "thanks_received",
        "points": 3,
        "counted": True,
        "reason": "counted",
        "rule_version": 1,
        "audit": None,
        "lineage": {"topic": "collab.events", "partition": 2, "offset": 7},
    }
    (given,) = entries_of(row("THANKS", "alice", "bob", "pair_daily_cap"), "alice", RULES)
    assert (given["metric"], given["points"], given["counted"]) == ("thanks_given", 0, False)
    self_thanks = entries_of(row("THANKS", "bob", "bob", "self"), "bob", RULES)
    assert [e["metric"] for e in self_thanks] == ["thanks_received", "thanks_given"]
    (share,) = entries_of(row("SHARE", "bob", ""), "bob", RULES)
    assert share["recipient_id"] is None and share["points"] == 2
    assert entries_of(row("REACTION", "bob", "carol"), "bob", RULES) == []


def test_an_audited_entry_shows_what_the_audit_made_of_it() -> None:
    reversed_ = replace(
        row("THANKS", "alice", "bob", "collusion", offset=3),
        audit=Audit("counted", "reciprocal", 4, 2, -1),
    )
    received, given = (entries_of(reversed_, u, RULES)[0] for u in ("bob", "alice"))
    for entry in (received, given):
        assert (entry["reason"], entry["counted"], entry["points"]) == ("collusion", False, 0)
        assert entry["rule_version"] == 1  # the deciding stage's
        assert entry["audit"] == {
            "rule": "reciprocal",
            "rule_version": 4,
            "was": "counted",
            "group_size": 2,
        }
    reinstated = replace(
        row("THANKS", "dave", "bob", offset=4), audit=Audit("giver_budget", "recap", 4, 3, 1)
    )
    (entry,) = entries_of(reinstated, "bob", RULES)
    assert (entry["reason"], entry["counted"], entry["points"]) == ("counted", True, 3)
    assert entry["audit"]["was"] == "giver_budget"
    # Totals follow the reasons after the audit; the audit's changes are counted per entry.
    groups = [
        DecisionGroup("THANKS", "counted", True, False, 3, 2, 0, 1),
        DecisionGroup("THANKS", "collusion", True, False, 2, 1, 2, 0),
        DecisionGroup("THANKS", "collusion", False, True, 1, 1, 1, 0),
    ]
    body = explain_payload("acme", "bob", "week", (0, DAY_MS), RULES, [], groups, Page(5, 0))
    assert body["totals"]["thanks_received"] == 3 and body["totals"]["thanks_given"] == 0
    assert body["totals"]["distinct_thankers"] == 2
    assert body["score"] == 3 * 3
    assert body["refused"] == {"collusion": 3}
    assert body["audit"] == {"reversed": 3, "reinstated": 1}


def test_totals_and_score_count_every_decision_and_the_list_is_bounded() -> None:
    groups = [
        DecisionGroup("THANKS", "counted", True, False, 4, 3),
        DecisionGroup("THANKS", "pair_daily_cap", True, False, 2, 1),
        DecisionGroup("THANKS", "counted", False, True, 5, 1),
        DecisionGroup("THANKS", "self", True, True, 1, 1),
        DecisionGroup("SHARE", "counted", False, True, 2, 1),
        DecisionGroup("REACTION", "counted", False, True, 9, 1),  # bob reacted: nothing
    ]
    rows = [row("THANKS", "alice", "bob", offset=i) for i in range(3)]
    entries = [e for r in rows for e in entries_of(r, "bob", RULES)]
    body = explain_payload("acme", "bob", "day", (0, DAY_MS), RULES, entries, groups, Page(2, 0))
    assert body["totals"] == {
        "shares": 2,
        "thanks_given": 5,
        "thanks_received": 4,
        "distinct_thankers": 3,
        "reactions_received": 0,
    }
    assert body["score"] == 3 * 4 + 5 + 2 * 2
    assert body["refused"] == {"pair_daily_cap": 2, "self": 2}
    assert body["count"] == 4 + 2 + 5 + 2 + 2
    assert body["truncated"] is True and len(body["entries"]) == 2
    assert (body["limit"], body["offset"], body["next_offset"]) == (2, 0, 2)
    assert body["window_start"] == "1970-01-01T00:00:00Z"
    last = explain_payload("acme", "bob", "day", (0, DAY_MS), RULES, entries, groups, Page(5, 2))
    assert (last["next_offset"], last["truncated"], len(last["entries"])) == (None, False, 3)
    empty = explain_payload("acme", "nobody", "all", (0, None), RULES, [], [], Page(10, 0))
    assert (empty["score"], empty["entries"], empty["truncated"], empty["window_end"]) == (
        0,
        [],
        False,
        None,
    )


def test_window_bounds_follow_the_org_calendar() -> None:
    utc = calendar()
    assert window_bounds("hour", NOW, utc) == (ms("2026-11-25T12:00:00"), ms("2026-11-25T13:00:00"))
    assert window_bounds("day", NOW, utc) == (ms("2026-11-25T00:00:00"), ms("2026-11-26T00:00:00"))
    assert window_bounds("week", NOW, utc) == (ms("2026-11-23T00:00:00"), ms("2026-11-30T00:00:00"))
    assert window_bounds("all", NOW, utc) == (0, None)
    # A 25-hour local day: Europe/Paris leaves summer time on 2026-10-25.
    start, end = window_bounds("day", ms("2026-10-25T12:00:00"), calendar("Europe/Paris"))
    assert end - start == 25 * HOUR_MS


def test_limit_and_timestamps() -> None:
    def page(**query: str) -> Page:
        return Params(query.items()).page(DEFAULT_LIMIT, MAX_LIMIT)

    assert page() == Page(1000, 0) and page(limit="5", offset="7") == Page(5, 7)
    for bad in ("0", "-1", "x", "10001", "²"):
        with pytest.raises(BadRequest, match="'limit'"):
            page(limit=bad)
    assert format_rfc3339(NOW + 7) == "2026-11-25T12:34:56.007Z"


def test_a_private_decision_names_nobody_and_hides_its_lineage_and_minute() -> None:
    private = replace(row("THANKS", "alice", "bob", offset=9), visibility="PRIVATE")
    private = replace(private, reason="private", counted=False, occurred_at_ms=NOW + 7)
    for user in ("bob", "alice"):
        (entry,) = entries_of(private, user, RULES)
        assert (entry["actor_id"], entry["recipient_id"], entry["private"]) == (None, None, True)
        assert (entry["event_id"], entry["lineage"]) == (None, None)
        assert entry["occurred_at"] == "2026-11-25T12:00:00Z"  # the start of its hour
        assert (entry["reason"], entry["points"], entry["event_type"]) == ("private", 0, "THANKS")


def test_an_opted_out_person_is_null_in_others_entries() -> None:
    (given,) = entries_of(row("THANKS", "alice", "oscar"), "alice", RULES, hidden={"oscar"})
    assert (given["actor_id"], given["recipient_id"], given["private"]) == ("alice", None, False)
    (got,) = entries_of(row("THANKS", "oscar", "bob"), "bob", RULES, hidden={"oscar"})
    assert (got["actor_id"], got["recipient_id"]) == (None, "bob")
    assert got["lineage"] is not None and got["points"] == 3  # the point itself stays
