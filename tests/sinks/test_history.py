"""Explain reads with the collusion audit's reversals applied, on both backends (chdb 26.x,
clickhouse-server 18.16): decisions and kudos.reversals rows are inserted directly, stored
twice as retries and re-runs store them, and every expectation is computed here in plain
Python from the same rows."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.vocabulary import DAY_MS
from sinks.clickhouse import ClickHouse
from sinks.history import DecisionHistory
from sinks.tables import DECISIONS, REVERSALS
from streams.domain.rules import RuleConfig, RulesLookup
from streams.web.explain import explain_user

pytestmark = pytest.mark.clickhouse

WEEK = 1_795_392_000_000  # Monday 2026-11-23 00:00 UTC
ORG = "acme"
TOPIC = "collab.events"
SECRET = "secret-sam"  # in a group's members only: must never be shown


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class D:
    """A decision as the test knows it."""

    offset: int
    kind: str
    actor: str
    recipient: str
    reason: str
    at: int
    org: str = ORG
    partition: int = 0

    @property
    def key(self) -> tuple[str, str, int, int, str]:
        return (self.org, TOPIC, self.partition, self.offset, self.recipient)

    def row(self, decided_at: datetime) -> tuple[Any, ...]:
        at = self.at
        return (self.org, f"e{self.offset}", self.kind, self.actor, self.recipient,
                int(self.reason == "counted"), self.reason, 1, _dt(at), at, at, "chat", "",
                "PUBLIC", TOPIC, self.partition, self.offset, decided_at, "")  # fmt: skip


@dataclass(frozen=True)
class R:
    """A reversal of decision `d`."""

    d: D
    now: str
    delta: int
    rule: str
    members: tuple[str, ...]
    version: int = 2

    def row(self, audited_at: datetime) -> tuple[Any, ...]:
        return (self.d.org, _dt(WEEK), f"e{self.d.offset}", self.d.actor, self.d.recipient,
                TOPIC, self.d.partition, self.d.offset, self.d.at, self.d.reason, self.now,
                self.delta, self.rule, list(self.members), self.version, ["week", "all"],
                audited_at)  # fmt: skip


def scenario() -> tuple[list[D], list[R]]:
    at = WEEK + DAY_MS
    ds = [
        D(1, "THANKS", "alice", "bob", "counted", at + 1),  # reciprocal: reversed
        D(2, "THANKS", "alice", "bob", "counted", at + 2),  # reversed
        D(3, "THANKS", "bob", "alice", "counted", at + 3),  # reversed (bob gave)
        D(4, "THANKS", "carol", "bob", "counted", at + 4),  # untouched
        D(5, "THANKS", "dave", "bob", "giver_budget", at + 5),  # reinstated
        D(6, "THANKS", "erin", "bob", "counted", at + 6),  # re-decided: pair cap
        D(7, "SHARE", "bob", "", "counted", at + 7),
        D(8, "THANKS", "bob", "bob", "self", at + 8),
        D(9, "THANKS", "alice", "bob", "counted", at + 9),  # same event as 10, not reversed
        D(9, "THANKS", "alice", "carol", "counted", at + 9),  # its other recipient: reversed
        D(11, "REACTION", "carol", "bob", "counted", at + 11),
        D(12, "THANKS", "frank", "bob", "counted", WEEK - 1),  # week before: reversed
        D(13, "THANKS", "bob", "carol", "giver_budget", at + 13),  # reinstated (bob gave)
        D(1, "THANKS", "alice", "bob", "counted", at + 1, org="other"),  # same lineage
    ]
    rs = [
        R(ds[0], "collusion", -1, "reciprocal", ("alice", "bob")),
        R(ds[1], "collusion", -1, "reciprocal", ("alice", "bob")),
        R(ds[2], "collusion", -1, "reciprocal", ("alice", "bob")),
        R(ds[4], "counted", 1, "recap", ("alice", "bob", SECRET)),
        R(ds[5], "pair_daily_cap", -1, "recap", ("alice", "bob", SECRET)),
        R(ds[9], "collusion", -1, "clique", ("alice", "carol", SECRET)),
        R(ds[11], "collusion", -1, "reciprocal", ("frank", "bob")),
        R(ds[12], "counted", 1, "recap", ("carol", SECRET)),
    ]
    return ds, rs


def store(ch: ClickHouse, ds: list[D], rs: list[R]) -> None:
    first, retry = datetime(2026, 11, 25), datetime(2026, 12, 1)  # two monthly partitions
    ch.insert(DECISIONS.qualified, DECISIONS.columns, [d.row(first) for d in ds])
    ch.insert(DECISIONS.qualified, DECISIONS.columns, [d.row(retry) for d in ds[:6]])
    audited = datetime(2026, 12, 1, 1)
    ch.insert(REVERSALS.qualified, REVERSALS.columns, [r.row(audited) for r in rs])
    ch.insert(REVERSALS.qualified, REVERSALS.columns, [r.row(audited) for r in rs[:4]])  # re-run


def expected(
    ds: list[D],
    rs: list[R],
    user: str,
    start: int,
    end: int | None,
    rules: RuleConfig,
    org: str = ORG,
) -> dict[str, Any]:
    """Totals, score, refusals and per-decision state of `user`, from the test's rows."""
    by_key = {r.d.key: r for r in rs}
    totals: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    thankers: set[str] = set()
    states: dict[tuple[int, str, str], tuple[str, bool, str | None]] = {}
    reversed_, reinstated = 0, 0
    for d in ds:
        if d.org != org or d.at < start or (end is not None and d.at >= end):
            continue
        r = by_key.get(d.key)
        reason = r.now if r else d.reason
        counted = reason == "counted"
        metrics = []
        if d.recipient == user and d.kind == "THANKS":
            metrics.append("thanks_received")
        if d.recipient == user and d.kind == "REACTION":
            metrics.append("reactions_received")
        if d.actor == user and d.kind == "THANKS":
            metrics.append("thanks_given")
        if d.actor == user and d.kind == "SHARE":
            metrics.append("shares")
        for m in metrics:
            states[(d.offset, d.recipient, m)] = (reason, counted, r.rule if r else None)
            reversed_ += bool(r and r.delta < 0)
            reinstated += bool(r and r.delta > 0)
            if counted:
                totals[m] += 1
                if m == "thanks_received":
                    thankers.add(d.actor)
            else:
                refused[reason] += 1
    score = rules.score(
        totals["shares"],
        totals["thanks_given"],
        totals["thanks_received"],
        totals["reactions_received"],
    )
    return {
        "totals": {
            "shares": totals["shares"],
            "thanks_given": totals["thanks_given"],
            "thanks_received": totals["thanks_received"],
            "distinct_thankers": len(thankers),
            "reactions_received": totals["reactions_received"],
        },
        "score": score,
        "refused": dict(sorted(refused.items())),
        "audit": {"reversed": reversed_, "reinstated": reinstated},
        "states": states,
    }


@pytest.mark.parametrize(
    ("user", "window"),
    [("bob", "week"), ("bob", "all"), ("alice", "week"), ("carol", "week"), ("dave", "all")],
)
def test_explain_shows_decisions_as_the_audit_left_them(
    ch: ClickHouse, user: str, window: str
) -> None:
    ds, rs = scenario()
    store(ch, ds, rs)
    rules = RulesLookup()
    at = WEEK + 2 * DAY_MS
    body = explain_user(DecisionHistory(ch), rules, ORG, user, window, at)  # type: ignore[arg-type]
    start, end = (WEEK, WEEK + 7 * DAY_MS) if window == "week" else (0, None)
    want = expected(ds, rs, user, start, end, rules(ORG))
    assert body["totals"] == want["totals"]
    assert body["score"] == want["score"]
    assert body["refused"] == want["refused"]
    assert body["audit"] == want["audit"]
    assert body["count"] == len(want["states"]) == len(body["entries"])
    # Every point is listed: the entries sum to the score the audited totals give.
    assert sum(e["points"] for e in body["entries"]) == body["score"]
    got = {
        (e["lineage"]["offset"], e["recipient_id"] or "", e["metric"]): (
            e["reason"],
            e["counted"],
            e["audit"]["rule"] if e["audit"] else None,
        )
        for e in body["entries"]
    }
    assert got == want["states"]
    # Who else was in a group is never shown; its size is.
    assert SECRET not in json.dumps(body)


def test_an_audited_entry_names_the_rule_version_and_old_reason(ch: ClickHouse) -> None:
    ds, rs = scenario()
    store(ch, ds, rs)
    body = explain_user(DecisionHistory(ch), RulesLookup(), ORG, "bob", "week", WEEK + DAY_MS)
    by_offset = {(e["lineage"]["offset"], e["metric"]): e for e in body["entries"]}
    reversed_ = by_offset[(1, "thanks_received")]
    assert (reversed_["reason"], reversed_["counted"], reversed_["points"]) == (
        "collusion",
        False,
        0,
    )
    assert reversed_["rule_version"] == 1  # the deciding stage's
    assert reversed_["audit"] == {
        "rule": "reciprocal",
        "rule_version": 2,
        "was": "counted",
        "group_size": 2,
    }
    reinstated = by_offset[(5, "thanks_received")]
    assert (reinstated["reason"], reinstated["counted"], reinstated["points"]) == (
        "counted",
        True,
        3,
    )
    assert reinstated["audit"] == {
        "rule": "recap",
        "rule_version": 2,
        "was": "giver_budget",
        "group_size": 3,
    }
    assert by_offset[(4, "thanks_received")]["audit"] is None
    assert by_offset[(9, "thanks_received")]["audit"] is None  # only carol's was reversed


def test_without_reversals_explain_is_what_was_decided(ch: ClickHouse) -> None:
    ds, _ = scenario()
    store(ch, ds, [])
    rules = RulesLookup()
    body = explain_user(DecisionHistory(ch), rules, ORG, "bob", "all", WEEK + DAY_MS)
    want = expected(ds, [], "bob", 0, None, rules(ORG))
    assert (body["totals"], body["score"], body["refused"]) == (
        want["totals"],
        want["score"],
        want["refused"],
    )
    assert body["audit"] == {"reversed": 0, "reinstated": 0}
    assert all(e["audit"] is None for e in body["entries"])


def test_replay_reads_the_decisions_as_decided(ch: ClickHouse) -> None:
    """`kudos replay` re-decides events from what the deciding stage stored."""
    ds, rs = scenario()
    store(ch, ds, rs)
    history = DecisionHistory(ch)
    rows = history.replay_rows(0, history.last_offsets(0, WEEK + 7 * DAY_MS))
    got = {(r.org_id, r.src_offset, r.recipient_id): (r.reason, r.audit) for r in rows}
    assert got == {(d.org, d.offset, d.recipient): (d.reason, None) for d in ds}
