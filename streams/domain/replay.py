"""`kudos replay`: what the scores of a time range would be under other rules.

Input: the stored decisions. Each `kudos.decisions` row carries its event (id, type, org,
actor, occurred_at, visibility, channel, source) and its source position, so the rows of
one (topic, partition, offset) rebuild that event with all its recipients
(`rebuild_events`; `content_id` is not stored and is not read by the rules). Events are
replayed per source partition in offset order through the real rules
(`streams.domain.rules.decide_batch`, a fresh `PartitionState` per partition, pruned after each
original batch as the worker does), and the points of both the stored and the new
decisions go through the real aggregation (`streams.domain.scorebook.apply_effects`) in memory.

Which events, and why (`[from, to)` is the range asked for):

* Decisions of an event depend on what its partition saw before it: stream time (late),
  the ids seen within grace (duplicate), counted thanks of the same local day (pair cap)
  and of the same week (giver budgets). So every event that occurred since
  `from - largest grace - 9 days` is replayed (the largest grace of the old and the new
  rules; 9 days: a local week plus the state margin the worker keeps), and only events
  that occurred in `[from, to)` are counted. Older events cannot change a decision of
  an event in range: they can only hold stream time below that horizon, and the worker
  itself forgets their ids and counts by then.
* Per partition, events up to the last offset holding an event in range are replayed,
  including events that occurred after `to`: they advance stream time and can make a
  later event in range late, as they did live.
* Every org is replayed (stream time is per partition, across orgs); `--org` only limits
  what is reported.
* The wall clock of a decision (for `future`) is its batch's stored `decided_at` (whole
  seconds, rounded up): a decision within a second of the future tolerance may differ.

Scores: events outside the range keep their stored decisions. For every window an event
in range touches, new totals = stored totals (kudos.score_state, as kudos.scores shows
them) - the points of the stored decisions in range + the points of the new decisions in
range, scored with the new weights. For a window inside the range (`whole`) that is
exactly the new rules' total; a window reaching outside it (`all`, and weeks or days cut
by the range) keeps the stored decisions of its events outside. Windows without an event
in range are not reported, even when only weights change.

Nothing is written unless `--apply` is given, and then only to `kudos.replay_scores`
(one row per window touched, keyed by a replay id derived from the rules file and range):
never to the tables the workers own. Making a replay live in place would need the
workers stopped and their tables rewritten together -- decisions (workers rebuild their
pair counts from them), score_state and thankers (absolute rows whose version is the
sum of high-water marks, which a rewrite cannot raise past the workers' next write), and
leader_rows (whose admission thresholds assume scores never decrease, streams/domain/leaders.py)
-- so it is not offered. Deploying new rules changes decisions from then on; the replay
table shows what they would have given, for BI tools to compare.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Final

from schemas.event import CollaborationEvent, EventType, Visibility
from schemas.rows import DecisionRow, StoredTotals
from schemas.times import format_rfc3339
from schemas.vocabulary import DAY_MS, Reason, WindowKey, WindowName
from streams.domain.explain import metrics_for
from streams.domain.rules import (
    Decision,
    Effect,
    PartitionState,
    RulesLookup,
    SourceRecord,
    decide_batch,
    effects_of,
)
from streams.domain.scorebook import Applied, ScoreBook, WindowTotals, apply_effects
from streams.domain.windows import window_bounds

# Beyond the largest grace: a local week (giver budgets) plus the worker's state margin.
SEED_MARGIN_MS: Final = 9 * DAY_MS
METRIC_NAMES: Final = ("shares", "thanks_given", "thanks_received", "reactions_received")
Metrics = tuple[int, int, int, int]  # in METRIC_NAMES order
ZERO: Final[Metrics] = (0, 0, 0, 0)


class ReplayError(ValueError):
    """The replay cannot be done as asked (bad rules file, range, calendar change)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event rebuilt from its decision rows, with what was decided for it."""

    record: SourceRecord
    old: dict[str, str]  # target (recipient, '' for a SHARE) -> stored reason
    decided_at_ms: int


def rebuild_events(rows: Iterable[DecisionRow]) -> list[StoredEvent]:
    """Group decision rows by source position into events, in source order.

    Rows that hold no event (undecodable messages) or whose type or visibility this
    version does not know are skipped, and so are events refused as too_many_recipients:
    their one decision does not name the recipients, so no rules can decide them anew
    (under any rules they change no state: they never enter the seen set).
    """
    groups: dict[tuple[str, int, int], list[DecisionRow]] = defaultdict(list)
    for row in rows:
        groups[(row.src_topic, row.src_partition, row.src_offset)].append(row)
    out: list[StoredEvent] = []
    for (topic, partition, offset), group in sorted(groups.items()):
        first = group[0]
        if first.reason == Reason.TOO_MANY_RECIPIENTS.value:
            continue
        try:
            kind = EventType(first.event_type)
            visibility = Visibility(first.visibility)
        except ValueError:
            continue
        recipients: tuple[str, ...] = ()
        if kind is not EventType.SHARE:
            # Sorted: the stored rows do not keep the order, which no rule reads.
            recipients = tuple(sorted({r.recipient_id for r in group}))
            if recipients == ("",):  # the one target of an event without recipients
                recipients = ()
        event = CollaborationEvent(
            event_id=first.event_id,
            event_type=kind,
            org_id=first.org_id,
            actor_id=first.actor_id,
            recipient_ids=recipients,
            content_id=None,
            channel=first.channel or None,
            visibility=visibility,
            occurred_at=first.occurred_at_ms,
            source=first.source,
        )
        out.append(
            StoredEvent(
                SourceRecord(event, topic, partition, offset),
                {r.recipient_id: r.reason for r in group},
                max(r.decided_at_ms for r in group),
            )
        )
    return out


# --- the replay (pure) ---------------------------------------------------------------------


@dataclass(slots=True)
class Replayed:
    """Old and new decisions of the events in range, and their points in two books."""

    old_book: ScoreBook = field(default_factory=ScoreBook)
    new_book: ScoreBook = field(default_factory=ScoreBook)
    old_reasons: Counter[str] = field(default_factory=Counter)
    new_reasons: Counter[str] = field(default_factory=Counter)
    # (org, user) -> "old -> new" -> decisions touching the user that changed that way
    changes: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    events: int = 0  # events in range (and org)
    decisions: int = 0  # their decisions
    changed: int = 0  # of which the new rules decide differently
    replayed: int = 0  # every event decided, the seeding ones included


def in_scope(event: CollaborationEvent, start_ms: int, end_ms: int, org: str | None) -> bool:
    return start_ms <= event.occurred_at < end_ms and (org is None or event.org_id == org)


def replay(
    events: Sequence[StoredEvent],
    old_rules: RulesLookup,
    new_rules: RulesLookup,
    start_ms: int,
    end_ms: int,
    org: str | None = None,
    progress: Callable[[int], object] = lambda n: None,
) -> Replayed:
    """Decide `events` (source order, as `rebuild_events` gives) under `new_rules` and
    aggregate the old and the new points of the events in [start, end) (and `org`)."""
    out = Replayed()
    by_partition: dict[tuple[str, int], list[StoredEvent]] = defaultdict(list)
    for e in events:
        by_partition[(e.record.topic, e.record.partition)].append(e)
    grace = new_rules.max_grace_ms()
    for stored in by_partition.values():
        state = PartitionState()
        old_effects: list[Effect] = []
        new_effects: list[Effect] = []
        # One decide_batch per original batch (one decided_at), with its clock.
        i = 0
        while i < len(stored):
            j = i
            while j < len(stored) and stored[j].decided_at_ms == stored[i].decided_at_ms:
                j += 1
            batch = stored[i:j]
            now = batch[0].decided_at_ms + 999  # decided_at is whole seconds
            decided = decide_batch([e.record for e in batch], state, now, new_rules)
            state.prune(grace)
            new_by_pos: dict[tuple[int, str], Decision] = {
                (d.record.offset, d.recipient_id): d for d in decided
            }
            for e in batch:
                if not in_scope(e.record.event, start_ms, end_ms, org):
                    continue
                mine = [
                    new_by_pos[(e.record.offset, t)]
                    for t in e.old
                    if (e.record.offset, t) in new_by_pos
                ]
                new_effects.extend(effects_of(mine))
                old_effects.extend(_old_effects(e))
                _count(out, e, new_by_pos)
            out.replayed += len(batch)
            progress(len(batch))
            i = j
        apply_effects(old_effects, out.old_book, old_rules, Applied())
        apply_effects(new_effects, out.new_book, new_rules, Applied())
    return out


def _old_effects(e: StoredEvent) -> list[Effect]:
    counted = [
        Decision(e.record, target, Reason.COUNTED, e.record.event.occurred_at, 0)
        for target, reason in e.old.items()
        if reason == Reason.COUNTED.value
    ]
    return effects_of(counted)


def _count(out: Replayed, e: StoredEvent, new_by_pos: dict[tuple[int, str], Decision]) -> None:
    event = e.record.event
    out.events += 1
    for target, old in e.old.items():
        d = new_by_pos.get((e.record.offset, target))
        new = d.reason.value if d is not None else "missing"
        out.decisions += 1
        out.old_reasons[old] += 1
        out.new_reasons[new] += 1
        if old == new:
            continue
        out.changed += 1
        users = {
            user
            for user in (event.actor_id, target)
            if user and metrics_for(event.event_type.value, user == event.actor_id, user == target)
        }
        for user in users:
            out.changes.setdefault((event.org_id, user), Counter())[f"{old} -> {new}"] += 1


# --- the diff (pure) -----------------------------------------------------------------------


def _metrics(t: WindowTotals | StoredTotals | None) -> Metrics:
    if t is None:
        return ZERO
    return (t.shares, t.thanks_given, t.thanks_received, t.reactions_received)


def _plus(stored: Metrics, minus: Metrics, plus: Metrics) -> Metrics:
    a, b, c, d = (s - m + p for s, m, p in zip(stored, minus, plus, strict=True))
    return (a, b, c, d)


@dataclass(frozen=True, slots=True)
class WindowDiff:
    org_id: str
    user_id: str
    window: WindowName
    window_start: int
    whole: bool  # the window lies inside the range: its new totals are the new rules' own
    old_score: int
    new_score: int
    old: Metrics
    new: Metrics
    matches_decisions: bool  # stored totals agree with the stored decisions (whole only)

    @property
    def changed(self) -> bool:
        return self.old_score != self.new_score or self.old != self.new


def diff_windows(
    replayed: Replayed,
    stored: dict[WindowKey, StoredTotals],
    new_rules: RulesLookup,
    start_ms: int,
    end_ms: int,
) -> list[WindowDiff]:
    """Old and new totals of every window an event in range touches (module doc)."""
    keys = set(replayed.old_book.totals) | set(replayed.new_book.totals)
    out: list[WindowDiff] = []
    for key in sorted(keys):
        org, window, start, user = key
        rules = new_rules(org)
        s = stored.get(key)
        before = _metrics(replayed.old_book.totals.get(key))
        after = _metrics(replayed.new_book.totals.get(key))
        old = _metrics(s)
        new = _plus(old, before, after)
        w_start, w_end = window_bounds(window, start, rules.calendar)
        whole = w_end is not None and w_start >= start_ms and w_end <= end_ms
        out.append(
            WindowDiff(
                org,
                user,
                window,
                start,
                whole,
                s.score if s is not None else 0,
                rules.score(*new),
                old,
                new,
                not whole or old == before,
            )
        )
    return out


def check_calendars(events: Iterable[StoredEvent], old: RulesLookup, new: RulesLookup) -> None:
    """Refuse rules that move an org's windows: old and new totals would not line up."""
    for org in {e.record.event.org_id for e in events}:
        if old(org).calendar != new(org).calendar:
            raise ReplayError(
                f"the new rules change org {org!r}'s time zone or week start: its windows "
                "move, so stored and replayed totals cannot be compared"
            )


# --- reports -------------------------------------------------------------------------------


def replay_id(rules_text: bytes, start_ms: int, end_ms: int, org: str | None) -> str:
    """Same rules file, range and org, same id: --apply twice replaces its own rows."""
    h = blake2b(digest_size=8)
    h.update(rules_text)
    h.update(f"\x00{start_ms}\x00{end_ms}\x00{org or ''}".encode())
    return h.hexdigest()


def report(
    replayed: Replayed,
    windows: Sequence[WindowDiff],
    *,
    start_ms: int,
    end_ms: int,
    since_ms: int,
    org: str | None,
) -> dict[str, Any]:
    """The diff as JSON-ready data: users whose scores or decisions changed."""
    users: dict[tuple[str, str], dict[str, Any]] = {}

    def user(org_id: str, user_id: str) -> dict[str, Any]:
        return users.setdefault(
            (org_id, user_id),
            {"org": org_id, "user_id": user_id, "decisions": {}, "windows": []},
        )

    for (org_id, user_id), changes in replayed.changes.items():
        user(org_id, user_id)["decisions"] = dict(sorted(changes.items()))
    for w in windows:
        if not w.changed:
            continue
        user(w.org_id, w.user_id)["windows"].append(
            {
                "window": w.window,
                "window_start": format_rfc3339(w.window_start),
                "whole": w.whole,
                "old_score": w.old_score,
                "new_score": w.new_score,
                "delta": w.new_score - w.old_score,
                "old": dict(zip(METRIC_NAMES, w.old, strict=True)),
                "new": dict(zip(METRIC_NAMES, w.new, strict=True)),
            }
        )
    reasons = sorted(set(replayed.old_reasons) | set(replayed.new_reasons))
    return {
        "from": format_rfc3339(start_ms),
        "to": format_rfc3339(end_ms),
        "org": org,
        "replayed_from": format_rfc3339(since_ms),
        "events": replayed.events,
        "decisions": replayed.decisions,
        "replayed_events": replayed.replayed,
        "changed_decisions": replayed.changed,
        "reasons": {
            r: {"old": replayed.old_reasons[r], "new": replayed.new_reasons[r]} for r in reasons
        },
        "windows": len(windows),
        "stale_windows": sum(1 for w in windows if not w.matches_decisions),
        "users": [users[k] for k in sorted(users)],
        "applied": None,
    }


def format_table(data: dict[str, Any]) -> str:
    """The report as aligned text: reason counts, then one line per changed window."""
    lines = [
        f"replay {data['from']} .. {data['to']}"
        + (f" · org {data['org']}" if data["org"] else " · every org")
        + f" · state from {data['replayed_from']}",
        f"events {data['events']}, decisions {data['decisions']}, "
        f"changed decisions {data['changed_decisions']}, windows {data['windows']}",
    ]
    if data["stale_windows"]:
        lines.append(
            f"warning: {data['stale_windows']} stored windows disagree with the stored "
            "decisions (is the aggregating stage behind?)"
        )
    reasons = data["reasons"]
    if reasons:
        width = max(len(r) for r in reasons)
        lines.append(f"{'reason'.ljust(width)}  {'old':>7}  {'new':>7}")
        for r, n in reasons.items():
            lines.append(f"{r.ljust(width)}  {n['old']:>7}  {n['new']:>7}")
    rows = [("org", "user", "window", "window_start", "old", "new", "delta", "decisions changed")]
    for u in data["users"]:
        changes = ", ".join(f"{k}: {v}" for k, v in u["decisions"].items())
        windows = u["windows"] or [None]
        for w in windows:
            if w is None:
                rows.append((u["org"], u["user_id"], "", "", "", "", "", changes))
                continue
            rows.append(
                (
                    u["org"],
                    u["user_id"],
                    w["window"] + ("" if w["whole"] else "*"),
                    w["window_start"],
                    str(w["old_score"]),
                    str(w["new_score"]),
                    f"{w['delta']:+d}",
                    changes,
                )
            )
            changes = ""
    if len(rows) == 1:
        lines.append("no score or decision changes")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        numeric = {4, 5, 6}
        for r in rows:
            lines.append(
                "  ".join(
                    v.rjust(w) if i in numeric else v.ljust(w)
                    for i, (v, w) in enumerate(zip(r, widths, strict=True))
                ).rstrip()
            )
        lines.append(
            "* the window reaches outside the range: its events outside keep their decisions"
        )
    if data["applied"]:
        a = data["applied"]
        lines.append(f"wrote {a['rows']} rows to {a['table']} (replay_id {a['replay_id']})")
    return "\n".join(lines)


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)
