"""What the collusion audit (streams/stages/audit.py) reads from and writes to ClickHouse.

Reads go to `kudos.decisions`, which may hold a decision twice until a merge (a retried
insert): every read here keeps one row per decision, the newest. Writes go only to the
audit's own tables, `kudos.reversals` (0017) and `kudos.audits` (0018), whose sorting
keys make a repeated write of the same audit collapse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from schemas.rows import ThanksDecision
from schemas.times import dt_to_ms, ms_to_dt, now_utc
from schemas.vocabulary import Reason
from sinks.clickhouse import ClickHouse
from sinks.history import audited_decisions, deduped_decisions
from sinks.tables import AUDITS, REVERSALS, STREAM_TIMES

DECIDED: Final = "decided"
APPLIED: Final = "applied"
DONE: Final = "done"
# Reasons of THANKS decisions an audit can change (the rest stay what they were).
_AUDITED_REASONS: Final = (
    Reason.COUNTED.value,
    Reason.PAIR_DAILY_CAP.value,
    Reason.GIVER_BUDGET.value,
)


def watermark(ch: ClickHouse, events_topic: str) -> int | None:
    """The event time every events partition with a stored stream time has passed.

    A partition's stream time only grows, and the deciding stage stores it only after the
    decisions that reached it (kudos.stream_times): once it passes an org week's end plus
    grace, every later event of that week there is refused as late, so the week's counted
    thanks are all stored."""
    rows = ch.query(
        "SELECT src_partition, max(stream_time_ms) FROM kudos.stream_times "
        "WHERE src_topic = %(t)s GROUP BY src_partition",
        {"t": events_topic},
    )
    times = [int(r[1]) for r in rows]
    return min(times) if times else None


def write_stream_times(ch: ClickHouse, rows: Sequence[tuple[str, int, int]]) -> int:
    """(topic, partition, stream time ms) of partitions whose decisions are stored."""
    at = now_utc()
    return ch.insert(
        STREAM_TIMES.qualified, STREAM_TIMES.columns, [(t, p, ms, at) for t, p, ms in rows]
    )


def audited_through(ch: ClickHouse) -> dict[str, int]:
    """Per org, the end (epoch ms) of the last week whose audit is decided."""
    return {
        str(org): int(end)
        for org, end in ch.query(
            "SELECT org_id, max(week_end_ms) FROM kudos.audits WHERE step = %(s)s GROUP BY org_id",
            {"s": DECIDED},
        )
    }


def next_thanks(ch: ClickHouse, after: dict[str, int], before_ms: int) -> dict[str, int]:
    """Per org, the earliest counted THANKS at or after the org's `after` (0 for an org not
    listed) and before `before_ms`."""
    orgs = sorted(after)
    floor = "transform(org_id, %(orgs)s, %(ends)s, 0)" if orgs else "0"
    return {
        str(org): int(first)
        for org, first in ch.query(
            "SELECT org_id, min(occurred_at_ms) FROM kudos.decisions "
            "WHERE event_type = 'THANKS' AND reason = %(counted)s "
            "AND occurred_at_ms < %(before)s "
            f"AND occurred_at_ms >= {floor} "
            "GROUP BY org_id",
            {
                "counted": Reason.COUNTED.value,
                "before": before_ms,
                "orgs": orgs,
                "ends": [after[o] for o in orgs],
            },
        )
    }


def week_decisions(ch: ClickHouse, org: str, start_ms: int, end_ms: int) -> list[ThanksDecision]:
    """The org's THANKS decisions of [start, end) an audit can change, one per decision."""
    rows = ch.query(
        "SELECT event_id, d_actor, recipient_id, d_reason, d_at, src_topic, src_partition, "
        "src_offset FROM ("
        + deduped_decisions(
            "org_id = %(org)s AND event_type = 'THANKS' "
            "AND occurred_at_ms >= %(start)s AND occurred_at_ms < %(end)s"
        )
        + ") WHERE d_reason IN %(reasons)s "
        "ORDER BY src_topic, src_partition, src_offset, recipient_id",
        {"org": org, "start": start_ms, "end": end_ms, "reasons": _AUDITED_REASONS},
    )
    return [
        ThanksDecision(
            org_id=org,
            event_id=str(event_id),
            actor_id=str(actor),
            recipient_id=str(recipient),
            reason=Reason(reason),
            occurred_at=int(at),
            topic=str(topic),
            partition=int(partition),
            offset=int(offset),
        )
        for event_id, actor, recipient, reason, at, topic, partition, offset in rows
    ]


def counted_elsewhere(
    ch: ClickHouse,
    org: str,
    start_ms: int,
    end_ms: int,
    pairs: Sequence[tuple[str, str]],
    around: tuple[int, int],
) -> dict[tuple[str, str], set[int]]:
    """For each (actor, recipient) pair with a thanks counted outside [start, end), after
    the audits decided so far (a reversed one does not count; a reinstated one does):
    the times of those within `around` ([since, until): the years that hold the audited
    week), and -1 for any beyond."""
    if not pairs:
        return {}
    since, until = around
    rows = ch.query(
        "SELECT DISTINCT d_actor, recipient_id, "
        "if(d_at >= %(since)s AND d_at < %(until)s, d_at, -1) "
        "FROM ("
        + audited_decisions(
            "org_id = %(org)s AND (occurred_at_ms < %(start)s OR occurred_at_ms >= %(end)s) "
            "AND concat(actor_id, '\\0', recipient_id) IN %(pairs)s"
        )
        + ") WHERE d_type = 'THANKS' AND e_counted = 1",
        {
            "org": org,
            "start": start_ms,
            "end": end_ms,
            "since": since,
            "until": until,
            "pairs": tuple(sorted({f"{a}\x00{r}" for a, r in pairs})),
        },
    )
    out: dict[tuple[str, str], set[int]] = {}
    for actor, recipient, at in rows:
        out.setdefault((str(actor), str(recipient)), set()).add(int(at))
    return out


def write_reversals(ch: ClickHouse, rows: Sequence[tuple[Any, ...]]) -> int:
    """kudos.reversals rows (sinks.tables.REVERSALS), one per changed decision."""
    return ch.insert(REVERSALS.qualified, REVERSALS.columns, rows) if rows else 0


@dataclass(frozen=True, slots=True)
class ReversalRow:
    """A stored change, as the aggregating stage applies it."""

    actor_id: str
    recipient_id: str
    occurred_at: int
    delta: int
    drop_thanker: tuple[str, ...]


def reversal_rows(ch: ClickHouse, org: str, week_start_ms: int) -> list[ReversalRow]:
    """The changes of one org week's audit, one per decision."""
    newest: dict[tuple[str, int, int, str], ReversalRow] = {}
    for t, p, o, r, actor, at, delta, drop in ch.query(
        "SELECT src_topic, src_partition, src_offset, recipient_id, actor_id, occurred_at_ms, "
        "delta, drop_thanker FROM kudos.reversals "
        "WHERE org_id = %(org)s AND week_start = %(week)s",
        {"org": org, "week": ms_to_dt(week_start_ms)},
    ):
        newest[(str(t), int(p), int(o), str(r))] = ReversalRow(
            str(actor), str(r), int(at), int(delta), tuple(str(w) for w in drop)
        )
    return [newest[k] for k in sorted(newest)]


def write_step(
    ch: ClickHouse,
    org: str,
    week_start_ms: int,
    week_end_ms: int,
    step: str,
    part: int = -1,
    counts: tuple[int, int, int] = (0, 0, 0),
) -> None:
    ch.insert(
        AUDITS.qualified,
        AUDITS.columns,
        [(org, ms_to_dt(week_start_ms), week_end_ms, step, part, *counts, now_utc())],
    )


@dataclass(frozen=True, slots=True)
class OpenAudit:
    """An audit whose changes are stored but not yet applied everywhere."""

    org_id: str
    week_start: int
    week_end: int
    decided_at_ms: int
    applied: frozenset[int]


def open_audits(ch: ClickHouse) -> list[OpenAudit]:
    """Decided audits without their 'done' step, with the partitions that applied them."""
    steps: dict[tuple[str, int], dict[str, Any]] = {}
    for org, week, end, step, part, at in ch.query(
        "SELECT org_id, week_start, week_end_ms, step, part, at FROM kudos.audits "
        "WHERE (org_id, week_start) GLOBAL NOT IN "
        "(SELECT org_id, week_start FROM kudos.audits WHERE step = %(done)s) "
        "ORDER BY org_id, week_start",
        {"done": DONE},
    ):
        entry = steps.setdefault(
            (str(org), dt_to_ms(week)),
            {"end": int(end), "steps": set(), "parts": set(), "at": 0},
        )
        entry["steps"].add(str(step))
        if step == APPLIED:
            entry["parts"].add(int(part))
        if step == DECIDED:
            entry["at"] = dt_to_ms(at)
    return [
        OpenAudit(org, week, e["end"], e["at"], frozenset(e["parts"]))
        for (org, week), e in sorted(steps.items())
        if DECIDED in e["steps"] and DONE not in e["steps"]
    ]
