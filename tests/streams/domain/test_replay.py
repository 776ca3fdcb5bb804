"""kudos replay, the pure parts: events rebuilt from decision rows, the replay, the diff."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from schemas.event import CollaborationEvent
from schemas.rows import DecisionRow, StoredTotals
from schemas.vocabulary import DAY_MS, HOUR_MS
from streams.cli.replay import load_rules, parse_time
from streams.domain.replay import (
    ReplayError,
    StoredEvent,
    diff_windows,
    format_table,
    rebuild_events,
    replay,
    report,
)
from streams.domain.rules import Decision, PartitionState, RuleConfig, RulesLookup, decide_batch
from streams.domain.windows import day_start
from streams.settings import Settings
from tests.streams.factories import event, ms, records

NOW = ms("2026-11-23T12:00:00")


def rows_of(decisions: list[Decision], decided_at_ms: int = NOW) -> list[DecisionRow]:
    """What kudos.decisions holds for these decisions (as sinks/history reads it)."""
    return [
        DecisionRow(
            d.record.event.org_id,
            d.record.event.event_id,
            d.record.event.event_type.value,
            d.record.event.actor_id,
            d.recipient_id,
            d.counted,
            d.reason.value,
            d.rule_version,
            d.record.event.occurred_at,
            d.record.event.visibility.value,
            d.record.event.channel or "",
            d.record.event.source,
            d.record.topic,
            d.record.partition,
            d.record.offset,
            decided_at_ms,
        )
        for d in decisions
    ]


def stored(
    events: list[CollaborationEvent], rules: RulesLookup, partition: int = 0
) -> list[DecisionRow]:
    decided = decide_batch(records(events, partition), PartitionState(), NOW, rules)
    return rows_of(decided)


def test_events_are_rebuilt_from_their_decision_rows_in_source_order() -> None:
    evs = [
        event("THANKS", "alice", ("bob", "carol"), at=NOW - HOUR_MS),
        event("SHARE", "bob", at=NOW - HOUR_MS),
        event("THANKS", "carol", (), at=NOW - HOUR_MS),  # invalid: no recipients
        event("REACTION", "dave", ("alice",), at=NOW - HOUR_MS, private=True),
    ]
    rows = stored(evs, RulesLookup())
    undecodable = replace(rows[0], event_type="", visibility="", reason="undecodable", src_offset=9)
    rebuilt = rebuild_events([*list(reversed(rows)), undecodable])
    assert [e.record.offset for e in rebuilt] == [0, 1, 2, 3]
    for original, got in zip(evs, rebuilt, strict=True):
        # The rows keep neither content_id (no rule reads it) nor the recipients' order.
        assert got.record.event == replace(
            original, content_id=None, recipient_ids=tuple(sorted(original.recipient_ids))
        )
    assert rebuilt[0].old == {"bob": "counted", "carol": "counted"}
    assert rebuilt[2].old == {"": "invalid"}
    assert rebuilt[3].old == {"alice": "private"}


def _thanks(n: int, at: int, actor: str = "alice", to: str = "bob") -> list[CollaborationEvent]:
    return [event("THANKS", actor, (to,), at=at + i * 1000) for i in range(n)]


def test_the_same_rules_change_nothing() -> None:
    rules = RulesLookup()
    evs = [*_thanks(5, NOW - 2 * HOUR_MS), event("SHARE", "bob", at=NOW - HOUR_MS)]
    done = replay(rebuild_events(stored(evs, rules)), rules, rules, NOW - DAY_MS, NOW)
    assert done.changed == 0 and done.changes == {}
    assert done.old_book.totals == done.new_book.totals
    assert done.old_reasons == done.new_reasons == {"counted": 4, "pair_daily_cap": 2}


def test_a_stricter_cap_refuses_points_and_names_the_rule_for_both_users() -> None:
    old, new = RulesLookup(), RulesLookup(RuleConfig(pair_daily_cap=1))
    evs = _thanks(3, NOW - 2 * HOUR_MS)
    start, end = day_start(NOW), day_start(NOW) + DAY_MS
    done = replay(rebuild_events(stored(evs, old)), old, new, start, end)
    assert done.changes == {
        ("acme", "alice"): {"counted -> pair_daily_cap": 2},
        ("acme", "bob"): {"counted -> pair_daily_cap": 2},
    }
    no_stored: dict[tuple[str, str, int, str], StoredTotals] = {}
    diffs = {(w.user_id, w.window): w for w in diff_windows(done, no_stored, new, start, end)}
    # Nothing stored: old 0, new = 0 - 3 stored points + 1 replayed point, per metric.
    assert diffs[("bob", "day")].new == (0, 0, -2, 0) and diffs[("bob", "day")].whole
    assert not diffs[("bob", "all")].whole and not diffs[("bob", "week")].whole


def test_new_totals_are_the_stored_ones_with_the_range_replaced() -> None:
    old, new = RulesLookup(), RulesLookup(RuleConfig(pair_daily_cap=1, weight_thanks_given=2))
    evs = _thanks(3, NOW - 2 * HOUR_MS)
    start, end = day_start(NOW), day_start(NOW) + DAY_MS
    done = replay(rebuild_events(stored(evs, old)), old, new, start, end)
    # `all` also holds 10 older thanks received and 4 given, outside the range.
    keep = {
        ("acme", "all", 0, "bob"): StoredTotals(0, 0, 13, 0, 39),
        ("acme", "all", 0, "alice"): StoredTotals(0, 7, 0, 0, 7),
    }
    diffs = {(w.user_id, w.window): w for w in diff_windows(done, keep, new, start, end)}
    assert (diffs[("bob", "all")].old_score, diffs[("bob", "all")].new_score) == (39, 33)
    assert diffs[("alice", "all")].new == (0, 5, 0, 0)
    assert diffs[("alice", "all")].new_score == 10  # new weight 2 for thanks given
    assert diffs[("alice", "day")].old_score == 0  # nothing stored for that key
    assert not diffs[("alice", "day")].matches_decisions  # stored lags the decisions


def test_events_before_the_range_seed_the_cap_and_the_duplicates() -> None:
    old, new = RulesLookup(), RulesLookup(RuleConfig(pair_daily_cap=2))
    first = _thanks(2, NOW - 3 * HOUR_MS)
    # The same event id again, inside the range (a retry that restamped its time).
    retry = replace(first[0], occurred_at=NOW - HOUR_MS + 5)
    evs = [*first, event("THANKS", "alice", ("bob",), at=NOW - HOUR_MS), retry]
    start = NOW - 2 * HOUR_MS  # the first two are before the range, the same day
    done = replay(rebuild_events(stored(evs, old)), old, new, start, NOW)
    assert done.events == 2
    assert done.old_reasons == {"counted": 1, "duplicate": 1}
    assert done.new_reasons == {"pair_daily_cap": 1, "duplicate": 1}


def test_other_orgs_are_replayed_but_not_reported() -> None:
    rules = RulesLookup(RuleConfig(pair_daily_cap=1))
    evs = _thanks(2, NOW - HOUR_MS) + [
        event("THANKS", "x", ("y",), at=NOW - HOUR_MS + i, org="other") for i in range(2)
    ]
    done = replay(rebuild_events(stored(evs, RulesLookup())), RulesLookup(), rules, 0, NOW, "acme")
    assert done.replayed == 4 and done.events == 2
    assert {org for org, _user in done.changes} == {"acme"}


def test_report_and_table_show_changed_users_only() -> None:
    old, new = RulesLookup(), RulesLookup(RuleConfig(pair_daily_cap=1))
    evs = [*_thanks(2, NOW - HOUR_MS), event("SHARE", "carol", at=NOW - HOUR_MS)]
    start, end = day_start(NOW), day_start(NOW) + DAY_MS
    done = replay(rebuild_events(stored(evs, old)), old, new, start, end)
    stored_now = {
        ("acme", w, s, u): StoredTotals(0, 2, 0, 0, 2)
        if u == "alice"
        else StoredTotals(0, 0, 2, 0, 6)
        for (_, w, s, u) in done.old_book.totals
        if u != "carol"
    }
    windows = diff_windows(done, stored_now, new, start, end)
    data = report(done, windows, start_ms=start, end_ms=end, since_ms=0, org=None)
    assert [u["user_id"] for u in data["users"]] == ["alice", "bob"]
    bob = data["users"][1]
    day = next(w for w in bob["windows"] if w["window"] == "day")
    assert (day["old_score"], day["new_score"], day["delta"], day["whole"]) == (6, 3, -3, True)
    assert bob["decisions"] == {"counted -> pair_daily_cap": 1}
    assert data["reasons"]["pair_daily_cap"] == {"old": 0, "new": 1}
    text = format_table(data)
    assert "counted -> pair_daily_cap: 1" in text and "carol" not in text


def test_rules_files_reuse_the_settings_overrides(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    path.write_text("[rules]\npair_daily_cap = 1\n\n[org_rules.acme]\nweight_shares = 5\n")
    lookup = load_rules(path, Settings())
    assert lookup("other").pair_daily_cap == 1 and lookup("other").weight_shares == 2
    assert lookup("acme").pair_daily_cap == 1 and lookup("acme").weight_shares == 5
    path.write_text("[rules]\npair_daily_kap = 1\n")
    with pytest.raises(ReplayError, match="pair_daily_kap"):
        load_rules(path, Settings())
    assert parse_time("2026-11-23T12:00:00Z") == NOW == parse_time("2026-11-23T12:00:00")
    with pytest.raises(ReplayError):
        parse_time("yesterday")


def test_calendar_changes_are_refused() -> None:
    from streams.domain.replay import check_calendars

    events: list[StoredEvent] = rebuild_events(stored(_thanks(1, NOW), RulesLookup()))
    check_calendars(events, RulesLookup(), RulesLookup(RuleConfig(pair_daily_cap=1)))
    with pytest.raises(ReplayError, match="time zone"):
        check_calendars(events, RulesLookup(), RulesLookup(RuleConfig(timezone="Europe/Paris")))
