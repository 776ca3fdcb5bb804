"""`/api/users/{user}/explain`'s read: the stored decisions about a person, with the people
they name, assembled by the pure `streams/domain/explain.py` (which says what the answer holds)."""

from __future__ import annotations

from typing import Any

from schemas.vocabulary import Metric, WindowName
from sinks.directory import people
from sinks.history import DecisionHistory
from streams.domain.explain import DEFAULT_LIMIT, Page, entry, explain_payload
from streams.domain.rules import RulesLookup
from streams.domain.windows import window_bounds


def explain_user(
    history: DecisionHistory,
    rules_for: RulesLookup,
    org: str,
    user: str,
    window: WindowName,
    at_ms: int,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> dict[str, Any]:
    """Read and assemble one explain response (blocking: run it off the event loop)."""
    rules = rules_for(org)
    bounds = window_bounds(window, at_ms, rules.calendar)
    page = Page(limit, offset)
    person = people(history.ch, org, [user]).get(user)
    if person is not None and person.opted_out:  # the answer of an unknown id
        return explain_payload(org, user, window, bounds, rules, [], [], page)
    start, end = bounds
    listed = history.user_entries(org, user, start, end, limit + 1, offset)
    others = {p for row, _ in listed for p in (row.actor_id, row.recipient_id) if p and p != user}
    found = people(history.ch, org, sorted(others)) if others else {}
    hidden = {p for p, who in found.items() if who.opted_out}
    entries = [entry(row, Metric(metric), rules, hidden) for row, metric in listed]
    groups = history.user_decision_groups(org, user, start, end)
    return explain_payload(org, user, window, bounds, rules, entries, groups, page)
