"""The collusion audit: once per closed org week, in the stream (rule: streams/domain/collusion.py).

Run on a timer by the one worker that holds partition 0 of `kudos.effects`. Every step is
stored before the next begins and is idempotent, so a worker that dies anywhere, or two
that briefly both hold partition 0 during a rebalance, leave the same result:

1. **Close.** The watermark is the least stream time over the events partitions (from the
   stored decisions). An org week is closed once the watermark has passed its end plus the
   org's grace: from then on every event of that week is refused as late, so all its
   counted thanks are stored in `kudos.decisions`.
2. **Decide.** Read the week's THANKS decisions, apply the rule, and store one
   `kudos.reversals` row per changed decision (reversed, or re-decided by a cap), then the
   audit's `decided` step with its counts (`kudos.audits`). The metrics count them here.
3. **Apply.** Send an `audit` control message to every partition of `kudos.effects`,
   after the week's effects there. Each aggregating stage applies the changes of its own
   users once (`streams.domain.scorebook.apply_adjustments`) and stores an `applied` step.
4. **Boards.** Reversals lower scores, which the incremental leader rows cannot follow:
   once every partition has applied the audit, the org's boards are rebuilt from
   `kudos.score_state` and every worker reloads them (as `kudos forget` does); `done`.

Weeks are audited in order per org. An events partition that has never had an event does
not hold the watermark back (it has no stream time); an event it later accepts for an
audited week counts and is not audited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from schemas.times import ms_to_dt, now_utc
from sinks import audit as sql
from sinks.clickhouse import ClickHouse
from sinks.erase import rebuild_org_boards
from streams import metrics
from streams.domain.collusion import Change, audit_week, collusive_groups, thanker_drops
from streams.domain.rules import RuleConfig, RulesLookup
from streams.domain.windows import window_bounds
from streams.stages.flush import TRANSIENT, Blocking, Publisher, publish
from streams.stages.transport import Control, encode_control

log = logging.getLogger(__name__)
# Org weeks decided per tick at most: a backlog is worked off over several ticks.
MAX_WEEKS_PER_TICK = 20
# Finding the next org week scans the counted thanks of kudos.decisions. When none is due,
# the auditor knows the watermark the earliest candidate needs and does not look again
# before it is reached, or this long (a new org, or one with a shorter grace, may close a
# week earlier: it is audited at most this much later).
QUIET_S = 600.0


def week_bounds(rules_for: RulesLookup, org: str, at_ms: int) -> tuple[int, int]:
    """[start, end) of the org's calendar week that contains `at_ms`."""
    cal = rules_for(org).calendar
    start = cal.window_start("week", at_ms)
    return start, cal.shift_days(start, 7)


def count_changes(changes: Sequence[Change]) -> tuple[int, int]:
    """(reversed, reinstated): decisions that stop counting, and that count now."""
    reversed_ = sum(1 for c in changes if c.delta < 0)
    return reversed_, len(changes) - reversed_


class Auditor:
    def __init__(
        self,
        ch: ClickHouse,
        rules_for: RulesLookup,
        publisher: Publisher,
        *,
        events_topic: str,
        effects_topic: str,
        effects_partitions: int,
        leader_depth: int,
        interval_s: float,
        leads: Callable[[], bool],
        blocking: Blocking | None = None,
    ) -> None:
        self.ch = ch
        self.rules_for = rules_for
        self.publisher = publisher
        self.events_topic = events_topic
        self.effects_topic = effects_topic
        self.effects_partitions = effects_partitions
        self.leader_depth = leader_depth
        self.interval_s = interval_s
        self.leads = leads
        self.blocking = blocking or Blocking("kudos-audit")
        # (watermark, monotonic deadline): nothing is due before either is reached.
        self.quiet: tuple[float, float] | None = None

    async def tick(self) -> None:
        """One round; ClickHouse or Kafka being away only postpones it to the next."""
        if not self.rules_for.any_collusion_audit() or not self.leads():
            return
        try:
            await self.run_once()
        except TRANSIENT as exc:
            log.warning("collusion audit postponed: %s: %s", type(exc).__name__, exc)
        except Exception:
            # Every step is stored and idempotent: the next tick starts over. The pipeline
            # itself carries on; the failure is logged and counted for an alert.
            metrics.AUDIT_FAILURES.inc()
            log.exception("collusion audit failed; retrying at the next tick")

    async def run_once(self) -> None:
        run = self.blocking.run
        busy: set[str] = set()
        for audit in await run(sql.open_audits, self.ch):
            if not await self._finish(audit):
                busy.add(audit.org_id)
        mark = await run(sql.watermark, self.ch, self.events_topic)
        if mark is None:
            return
        metrics.AUDIT_WATERMARK.set(mark / 1000)
        if self.quiet is not None and mark < self.quiet[0] and time.monotonic() < self.quiet[1]:
            return
        self.quiet = None
        for _ in range(MAX_WEEKS_PER_TICK):
            due = await self.next_due(mark, busy)
            if not due:
                return
            org, start, end = due
            if await self.decide_week(org, start, end):
                busy.add(org)

    async def next_due(self, mark: int, busy: Collection[str] = ()) -> tuple[str, int, int] | None:
        """The earliest closed, unaudited org week with counted thanks, if any, of an org
        not in `busy`. An org whose last audit is not applied everywhere yet waits: the
        aggregating stages apply an org's audits once each, in week order."""
        done = await self.blocking.run(sql.audited_through, self.ch)
        first = await self.blocking.run(sql.next_thanks, self.ch, done, mark)
        closed = []
        closes = float("inf")
        for org, at in first.items():
            rules = self.rules_for(org)
            if rules.collusion_min_each <= 0 or org in busy:
                continue
            start, end = week_bounds(self.rules_for, org, at)
            closes = min(closes, end + rules.grace_ms)
            if end + rules.grace_ms <= mark:
                closed.append((start, org, end))
        if not closed:
            if not busy:  # a busy org's next week may be due as soon as it is not
                self.quiet = (closes, time.monotonic() + QUIET_S)
            return None
        start, org, end = min(closed)
        return org, start, end

    async def decide_week(self, org: str, start: int, end: int) -> bool:
        """Decide one org week's audit; True while its changes are still to be applied."""
        run = self.blocking.run
        rules = self.rules_for(org)
        decisions = await run(sql.week_decisions, self.ch, org, start, end)
        changes = audit_week(decisions, rules)
        groups = collusive_groups(decisions, rules)
        lost = sorted(
            {(c.decision.actor_id, c.decision.recipient_id) for c in changes if c.delta < 0}
        )
        around = years_around(rules, start, end)
        elsewhere = await run(sql.counted_elsewhere, self.ch, org, start, end, lost, around)
        drops = thanker_drops(decisions, changes, rules, elsewhere)
        rows = change_rows(org, start, changes, drops, rules, now_utc())
        await run(sql.write_reversals, self.ch, rows)
        reversed_, reinstated = count_changes(changes)
        await run(
            sql.write_step,
            self.ch,
            org,
            start,
            end,
            sql.DECIDED,
            -1,
            (reversed_, reinstated, len(groups)),
        )
        metrics.AUDITS.inc()
        metrics.COLLUSIVE_GROUPS.inc(len(groups))
        for c in changes:
            if c.delta < 0:
                metrics.REVERSALS.labels(c.rule).inc()
            else:
                metrics.REINSTATEMENTS.inc()
        log.info(
            "audited org %s week %d: %d collusive groups, %d reversed, %d reinstated",
            org,
            start,
            len(groups),
            reversed_,
            reinstated,
        )
        if changes:
            await self._send(org, start, range(self.effects_partitions))
            return True
        await run(sql.write_step, self.ch, org, start, end, sql.DONE)
        return False

    async def _send(self, org: str, start: int, partitions: Sequence[int] | range) -> None:
        control = encode_control(Control("audit", org, at_ms=start))
        await publish(
            self.publisher, self.effects_topic, [(None, control, p, []) for p in partitions]
        )

    async def _finish(self, audit: sql.OpenAudit) -> bool:
        """Rebuild the boards once every partition applied the audit; resend it to the
        partitions that have not, if it is taking long (its message may have been lost with
        a worker that died between storing and sending it)."""
        missing = [p for p in range(self.effects_partitions) if p not in audit.applied]
        if missing:
            if time.time() * 1000 - audit.decided_at_ms > 2 * self.interval_s * 1000:
                await self._send(audit.org_id, audit.week_start, missing)
            return False
        await self.blocking.run(rebuild_org_boards, self.ch, audit.org_id, self.leader_depth)
        reset = encode_control(Control("reset_boards", audit.org_id))
        await publish(
            self.publisher,
            self.effects_topic,
            [(None, reset, p, []) for p in range(self.effects_partitions)],
        )
        await self.blocking.run(
            sql.write_step, self.ch, audit.org_id, audit.week_start, audit.week_end, sql.DONE
        )
        return True


def change_rows(
    org: str,
    week_start_ms: int,
    changes: Sequence[Change],
    drops: dict[tuple[str, str], list[tuple[str, int]]],
    rules: RuleConfig,
    at: datetime,
) -> list[tuple[Any, ...]]:
    """One kudos.reversals row per changed decision. A pair's thanker drops go on each of
    its changed rows in those windows (applying one twice is harmless)."""
    rows = []
    for c in changes:
        d = c.decision
        dropped = set(drops.get((d.actor_id, d.recipient_id), ()))
        windows = [
            window
            for window, start in rules.calendar.starts(d.occurred_at)
            if c.delta < 0 and (window, start) in dropped
        ]
        rows.append(
            (
                org,
                ms_to_dt(week_start_ms),
                d.event_id,
                d.actor_id,
                d.recipient_id,
                d.topic,
                d.partition,
                d.offset,
                d.occurred_at,
                d.reason.value,
                c.reason.value,
                c.delta,
                c.rule,
                list(c.group),
                rules.version,
                windows,
                at,
            )
        )
    return rows


def years_around(rules: RuleConfig, start: int, end: int) -> tuple[int, int]:
    """[first, end) of the org's year windows that hold the week [start, end)."""
    first = rules.calendar.window_start("year", start)
    last = window_bounds("year", end - 1, rules.calendar)[1]
    assert last is not None
    return first, last
