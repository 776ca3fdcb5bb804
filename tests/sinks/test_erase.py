"""`kudos forget` on kudos.reversals, on both backends (chdb 26.x, clickhouse-server 18.16):
the reversals of what the person received go, the token replaces them as actor and in every
group's members, other orgs and other people's rows stay as they were, and a second run
finds nothing. Expectations are computed here from the inserted rows."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.vocabulary import DAY_MS
from sinks.clickhouse import ClickHouse
from sinks.erase import erase_person
from sinks.history import DecisionHistory
from streams.domain.rules import RulesLookup
from streams.web.explain import explain_user
from tests.sinks.test_history import ORG, WEEK, D, R, store

pytestmark = pytest.mark.clickhouse

VICTIM = "vic"
TOKEN = "erased:0123456789abcdef"


def scenario() -> tuple[list[D], list[R]]:
    at = WEEK + DAY_MS
    ds = [
        D(1, "THANKS", "carol", VICTIM, "counted", at + 1),  # they received: reversal goes
        D(2, "THANKS", VICTIM, "carol", "counted", at + 2),  # they gave: actor -> token
        D(3, "THANKS", "dave", "erin", "counted", at + 3),  # they were in the group only
        D(4, "THANKS", "dave", "erin", "giver_budget", at + 4),  # does not name them
        D(5, "THANKS", VICTIM, VICTIM, "counted", at + 5),  # both roles: goes
        D(6, "THANKS", VICTIM, "carol", "giver_budget", at + 6),  # reinstated, they gave
        D(2, "THANKS", VICTIM, "carol", "counted", at + 2, org="other"),  # another org
    ]
    rs = [
        R(ds[0], "collusion", -1, "reciprocal", ("carol", VICTIM)),
        R(ds[1], "collusion", -1, "reciprocal", (VICTIM, "carol")),
        R(ds[2], "collusion", -1, "clique", ("dave", VICTIM, "erin", VICTIM)),
        R(ds[3], "counted", 1, "recap", ("dave", "erin")),
        R(ds[4], "collusion", -1, "reciprocal", (VICTIM,)),
        R(ds[5], "counted", 1, "recap", (VICTIM, "carol")),
        R(ds[6], "collusion", -1, "reciprocal", (VICTIM, "carol")),
    ]
    return ds, rs


def reversals(ch: ClickHouse) -> list[tuple[Any, ...]]:
    return sorted(
        ch.query(
            "SELECT org_id, src_offset, actor_id, recipient_id, group_members, `now` "
            "FROM kudos.reversals FINAL"
        )
    )


def named(ch: ClickHouse, user: str, org: str = ORG) -> int:
    return int(
        ch.query(
            "SELECT count() FROM kudos.reversals WHERE org_id = %(org)s AND (actor_id = %(u)s "
            "OR recipient_id = %(u)s OR has(group_members, %(u)s))",
            {"org": org, "u": user},
        )[0][0]
    )


def test_forget_erases_the_person_from_reversals(ch: ClickHouse) -> None:
    ds, rs = scenario()
    store(ch, ds, rs)
    history, rules = DecisionHistory(ch), RulesLookup()
    at = WEEK + 2 * DAY_MS
    carol_before = explain_user(history, rules, ORG, "carol", "week", at)
    before = reversals(ch)

    def swap(r: R) -> tuple[Any, ...]:
        if r.d.org != ORG:
            return (r.d.org, r.d.offset, r.d.actor, r.d.recipient, list(r.members), r.now)
        return (r.d.org, r.d.offset, TOKEN if r.d.actor == VICTIM else r.d.actor,
                r.d.recipient, [TOKEN if m == VICTIM else m for m in r.members], r.now)  # fmt: skip

    want = sorted(swap(r) for r in rs if not (r.d.org == ORG and r.d.recipient == VICTIM))
    assert len(before) == len(rs)

    stored = named(ch, VICTIM)  # rows as stored, copies of a re-run audit included
    assert stored > sum(
        1
        for r in rs
        if r.d.org == ORG and (VICTIM in (r.d.actor, r.d.recipient) or VICTIM in r.members)
    )
    assert erase_person(ch, ORG, VICTIM, TOKEN)["reversals"] == stored
    assert reversals(ch) == want
    assert named(ch, VICTIM) == 0
    assert named(ch, VICTIM, org="other") == 1  # the same id in another org: not them
    # The people they thanked see the same audit as before: the token is the actor in the
    # decision and in its reversal alike. Carol's reversed thank-you to them is now an
    # erased placeholder, which does not count either: her totals do not change.
    carol_after = explain_user(history, rules, ORG, "carol", "week", at)
    assert carol_after["totals"] == carol_before["totals"]
    assert carol_before["audit"] == {"reversed": 2, "reinstated": 1}
    assert carol_after["audit"] == {"reversed": 1, "reinstated": 1}
    assert carol_after["refused"] == {"collusion": 1, "erased": 1}
    assert {e["actor_id"] for e in carol_after["entries"] if e["metric"] == "thanks_received"} == {
        TOKEN
    }

    # A replayed forget finds nothing left.
    assert erase_person(ch, ORG, VICTIM, TOKEN)["reversals"] == 0
    assert reversals(ch) == want


def test_forget_without_a_reversals_table(ch: ClickHouse) -> None:
    """Before migration 0017 has run there is nothing to erase there."""
    ch.execute("DROP TABLE kudos.reversals")
    assert "reversals" not in erase_person(ch, ORG, VICTIM, TOKEN)
