"""Recognition rules on a batch as columns: `rules.decide_batch` + `rules.effects_of`,
vectorised.

Pure code, like `streams/domain/rules.py`, whose per-event functions stay the oracle: for
the same state and batch, `decide_columns` returns the same decisions (as columns, in the
same order, with the same values), the same effects (an `EFFECT_SCHEMA` record batch) and
leaves the same state (tests/streams/domain/test_batch_rules.py). How each check is done:

* invalid / too_many_recipients / future: masks over the events.
* late and stream time: stream time before an event is the running maximum of
  `occurred_at` over earlier events that passed invalid/too_many/future. A late event
  (older than stream time - grace, grace >= 0) is below that maximum, so counting it in
  the running maximum changes nothing: no sequential scan is needed.
* duplicate: the first of each digest in the batch, and not in `state.seen` (a `SeenSet`).
* self, private, SHARE, REACTION: masks over the targets (distinct recipients per event).
* pair_daily_cap: ranks of the THANKS targets within (org, actor, recipient, local day)
  plus the stored count of that key.
* giver budgets couple every thank-you of an actor in order: orgs with a budget take the
  per-event path (`rules.target_reason`) for their THANKS targets, inside this function.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.event import PRIVATE, REACTION, SHARE, THANKS, EventColumns
from schemas.vocabulary import DAY_MS, HOUR_MS, Reason
from streams.domain.effects import (
    EFFECT_SCHEMA,
    GIVEN_CODE,
    REACTIONS_CODE,
    RECEIVED_CODE,
    SHARES_CODE,
    VALUES_TYPE,
    no_values,
)
from streams.domain.pair_counts import pair_keys, user_digest
from streams.domain.rules import (
    Decision,
    PartitionState,
    RuleConfig,
    RulesLookup,
    SourceRecord,
    target_reason,
)

# A decision's reason code is its index here.
REASON_CODES: Final[tuple[Reason, ...]] = tuple(Reason)
_CODE: Final = {r: np.int8(i) for i, r in enumerate(REASON_CODES)}
COUNTED_CODE: Final = int(_CODE[Reason.COUNTED])
FUTURE_CODE: Final = int(_CODE[Reason.FUTURE])
_NONE: Final = np.int8(-1)
_QUARTER_MS: Final = 15 * 60_000
_MIN: Final = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class BatchDecisions:
    """The decisions of a batch of one input partition, one row per (event, target), in
    the order `rules.decide_batch` gives them. `event` is the decided event's row in
    `events` (whose source offsets are `offsets`)."""

    events: EventColumns
    offsets: np.ndarray  # int64, per event row
    topic: str
    partition: int
    event: np.ndarray  # int64, per decision
    recipient: pa.Array  # string, per decision ('' for a SHARE or a whole-event refusal)
    reason: np.ndarray  # int8: REASON_CODES
    stream_time_ms: np.ndarray  # int64
    rule_version: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.event)

    def reasons(self) -> list[Reason]:
        return [REASON_CODES[r] for r in self.reason.tolist()]

    def decisions(self) -> list[Decision]:
        """As `rules.Decision` objects (tests, and callers that want objects)."""
        events = self.events.events()
        offsets = self.offsets.tolist()
        return [
            Decision(
                SourceRecord(events[e], self.topic, self.partition, offsets[e]),
                recipient,
                REASON_CODES[reason],
                stream_time,
                version,
            )
            for e, recipient, reason, stream_time, version in zip(
                self.event.tolist(),
                self.recipient.to_pylist(),
                self.reason.tolist(),
                self.stream_time_ms.tolist(),
                self.rule_version.tolist(),
                strict=True,
            )
        ]


@dataclass(slots=True)
class _Batch:
    """Per-event columns the checks share: org codes and their rules, user codes."""

    cols: EventColumns
    orgs: list[str]
    org: np.ndarray  # per event: index in `orgs`
    rules: list[RuleConfig]  # per org
    users: pa.Array  # every actor and recipient once, and ''
    actor: np.ndarray  # per event: index in `users`
    recipient: np.ndarray  # per recipient value: index in `users`
    empty: int  # the index of '' in `users`


def decide_columns(
    cols: EventColumns,
    offsets: np.ndarray,
    topic: str,
    partition: int,
    state: PartitionState,
    now_ms: int,
    rules_for: RulesLookup,
) -> tuple[BatchDecisions, pa.RecordBatch]:
    """Decide the events of one partition (in offset order, `offsets` their source
    offsets) on `state`: `effects_of(decide_batch(...))`, as columns."""
    fresh = np.flatnonzero(offsets >= state.next_offset)
    if len(fresh) < len(offsets):
        cols, offsets = cols.take(fresh), offsets[fresh]
    b = _prepare(cols, rules_for)
    owner, keep, distinct = _distinct_recipients(b)
    whole, stream_time = _whole_event_reasons(b, state, now_ms, distinct)
    _duplicates(b, whole, state)
    lone = (distinct == 0) | (whole == _CODE[Reason.TOO_MANY_RECIPIENTS])
    targets = _targets(b, owner, keep & ~lone[owner], lone)
    reason = _target_reasons(b, targets, whole, state)
    version = np.asarray([r.version for r in b.rules], dtype=np.int64)[b.org]
    decisions = BatchDecisions(
        cols,
        offsets,
        topic,
        partition,
        targets.event,
        b.users.take(pa.array(targets.user)),
        reason,
        stream_time[targets.event],
        version[targets.event],
    )
    if len(offsets):
        state.next_offset = max(state.next_offset, int(offsets[-1]) + 1)
    return decisions, _effects(b, decisions, targets)


def _prepare(cols: EventColumns, rules_for: RulesLookup) -> _Batch:
    org_codes = cols.org_id.dictionary_encode()
    orgs = org_codes.dictionary.to_pylist()
    n = len(cols)
    people = pa.concat_arrays([cols.actor_id, cols.recipient_values, pa.array([""], pa.string())])
    codes = people.dictionary_encode()
    index = np.asarray(codes.indices, dtype=np.int64)
    return _Batch(
        cols,
        orgs,
        np.asarray(org_codes.indices, dtype=np.int64),
        [rules_for(o) for o in orgs],
        codes.dictionary,
        index[:n],
        index[n:-1],
        int(index[-1]),
    )


@dataclass(frozen=True, slots=True)
class _Targets:
    event: np.ndarray  # per target: event row
    user: np.ndarray  # per target: index in `_Batch.users`


def _distinct_recipients(b: _Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per recipient value: its event and whether it is the event's first of that id;
    per event: its number of distinct recipients (0 for a SHARE: none count)."""
    cols = b.cols
    owner = np.repeat(np.arange(len(cols)), np.diff(cols.recipient_offsets))
    order = np.lexsort((np.arange(len(owner)), b.recipient, owner))
    first = np.ones(len(owner), dtype=bool)
    o, r = owner[order], b.recipient[order]
    first[order[1:][(o[1:] == o[:-1]) & (r[1:] == r[:-1])]] = False
    keep = first & (cols.event_type[owner] != SHARE)
    return owner, keep, np.bincount(owner[keep], minlength=len(cols))


def _targets(b: _Batch, owner: np.ndarray, keep: np.ndarray, lone: np.ndarray) -> _Targets:
    """Each event's targets in `rules.targets` order: its distinct recipients in first-seen
    order (`keep`), or '' alone (`lone`: a SHARE, no recipients, too many recipients)."""
    starts = b.cols.recipient_offsets[:-1]
    event = np.concatenate([owner[keep], np.flatnonzero(lone)])
    user = np.concatenate([b.recipient[keep], np.full(int(lone.sum()), b.empty)])
    position = np.concatenate([np.flatnonzero(keep), starts[lone]])
    arrange = np.lexsort((position, event))
    return _Targets(event[arrange], user[arrange])


def _per_event(b: _Batch, values: list[int]) -> np.ndarray:
    out: np.ndarray = np.asarray(values, dtype=np.int64)[b.org]
    return out


def _whole_event_reasons(
    b: _Batch, state: PartitionState, now_ms: int, distinct: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the reason refusing it whole before the duplicate check (or -1), and the
    stream time its decisions carry; advances `state.stream_time_ms`."""
    cols, rules = b.cols, b.rules
    kind, at = cols.event_type, cols.occurred_at
    counts = np.diff(cols.recipient_offsets)
    empty = np.asarray(pc.binary_length(cols.recipient_values)) == 0
    invalid = np.zeros(len(cols), dtype=bool)
    invalid[np.repeat(np.arange(len(cols)), counts)[empty]] = True
    for text in (cols.event_id, cols.org_id, cols.actor_id):
        invalid |= np.asarray(pc.binary_length(text)) == 0
    invalid |= (kind != SHARE) & (counts == 0)
    limit = _per_event(b, [r.max_recipients_per_event for r in rules])
    too_many = ~invalid & (kind != SHARE) & (counts > limit) & (distinct > limit)
    tolerance = _per_event(b, [r.future_tolerance_ms for r in rules])
    future = ~invalid & ~too_many & (at > now_ms + tolerance)
    passed = ~(invalid | too_many | future)
    late, before, has_before, after = _lateness(b, state, passed)
    whole = np.full(len(cols), _NONE, dtype=np.int8)
    for mask, reason in (
        (late, Reason.LATE),
        (future, Reason.FUTURE),
        (too_many, Reason.TOO_MANY_RECIPIENTS),
        (invalid, Reason.INVALID),
    ):
        whole[mask] = _CODE[reason]
    refused_at = np.where(has_before, before, at)
    return whole, np.where(passed, after, refused_at)


def _lateness(
    b: _Batch, state: PartitionState, passed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(late, stream time before, whether there was one, stream time after) per event,
    for events that `passed` invalid/too_many/future; sets `state.stream_time_ms`."""
    at = b.cols.occurred_at
    grace = _per_event(b, [r.grace_ms for r in b.rules])
    start = state.stream_time_ms
    after = np.maximum.accumulate(np.where(passed, at, _MIN)) if len(at) else at.copy()
    has_after = np.cumsum(passed) > 0
    if start is not None:
        after = np.maximum(after, start)
        has_after[:] = True
    before = np.concatenate([[_MIN if start is None else start], after[:-1]]).astype(np.int64)
    has_before = np.concatenate([[start is not None], has_after[:-1]])
    if (grace < 0).any():
        raise ValueError("grace_ms must not be negative")
    safe = before >= _MIN + grace  # else stream time - grace is below every time
    threshold = np.where(safe, before - np.where(safe, grace, 0), _MIN)
    late = passed & has_before & safe & (at < threshold)
    if len(at) and has_after[-1]:
        state.stream_time_ms = int(after[-1])
    return late, before, has_before, after


def _duplicates(b: _Batch, whole: np.ndarray, state: PartitionState) -> None:
    """Mark duplicates and private events among the accepted ones; remember the rest."""
    accepted = np.flatnonzero(whole == _NONE)
    if not len(accepted):
        return
    orgs = b.orgs
    ids = b.cols.event_id.take(pa.array(accepted)).to_pylist()
    raw = b"".join(
        blake2b(f"{orgs[o]}\x00{e}".encode(), digest_size=16).digest()
        for o, e in zip(b.org[accepted].tolist(), ids, strict=True)
    )
    keys = np.frombuffer(raw, dtype="S16")
    duplicate = state.seen.contains(keys)
    _, first = np.unique(keys, return_index=True)
    later = np.ones(len(keys), dtype=bool)
    later[first] = False
    duplicate |= later
    fresh = ~duplicate
    at = b.cols.occurred_at[accepted[fresh]]
    state.seen.add(keys[fresh], -(-at // HOUR_MS) * HOUR_MS)
    whole[accepted[duplicate]] = _CODE[Reason.DUPLICATE]
    private = accepted[fresh][b.cols.visibility[accepted[fresh]] == PRIVATE]
    whole[private] = _CODE[Reason.PRIVATE]


def _target_reasons(
    b: _Batch, targets: _Targets, whole: np.ndarray, state: PartitionState
) -> np.ndarray:
    """Per target: the whole event's reason, else self / pair cap / giver budget."""
    event = targets.event
    reason: np.ndarray = whole[event]
    open_ = reason == _NONE
    kind = b.cols.event_type[event]
    reason[open_ & (kind == SHARE)] = _CODE[Reason.COUNTED]
    own = open_ & (kind != SHARE) & (targets.user == b.actor[event])
    reason[own] = _CODE[Reason.SELF]
    reason[open_ & ~own & (kind == REACTION)] = _CODE[Reason.COUNTED]
    thanks = open_ & ~own & (kind == THANKS)
    budget = np.array([r.giver_daily_budget > 0 or r.giver_weekly_budget > 0 for r in b.rules])
    coupled = thanks & budget[b.org[event]] if len(budget) else thanks & False
    capped = np.flatnonzero(thanks & ~coupled)
    if len(capped):
        reason[capped] = _pair_caps(b, targets, capped, state)
    coupled_rows = np.flatnonzero(coupled)
    if len(coupled_rows):
        reason[coupled_rows] = _one_by_one(b, targets, coupled_rows, state)
    return reason


def _day_starts(b: _Batch, events: np.ndarray) -> np.ndarray:
    """The start of each event's local day in its org's calendar."""
    at = b.cols.occurred_at[events]
    org = b.org[events]
    out = np.empty(len(events), dtype=np.int64)
    for o in np.unique(org).tolist():
        mask = org == o
        calendar = b.rules[o].calendar
        t = at[mask]
        if calendar.is_utc_monday:
            out[mask] = t - t % DAY_MS
            continue
        quarters, inverse = np.unique(t - t % _QUARTER_MS, return_inverse=True)
        starts = [calendar.day_start(q) for q in quarters.tolist()]
        out[mask] = np.asarray(starts, dtype=np.int64)[inverse]
    return out


def _pair_caps(b: _Batch, targets: _Targets, rows: np.ndarray, state: PartitionState) -> np.ndarray:
    """Counted or pair_daily_cap for THANKS targets of orgs without giver budgets: the
    k-th thank-you of a (org, actor, recipient, day) in the batch counts while the stored
    count + k is below the cap; the counts are updated."""
    event = targets.event[rows]
    day = _day_starts(b, event)
    org, actor, user = b.org[event], b.actor[event], targets.user[rows]
    order = np.lexsort((rows, day, user, actor, org))
    keys = np.stack([org[order], actor[order], user[order], day[order]])
    new_group = np.ones(len(rows), dtype=bool)
    new_group[1:] = (keys[:, 1:] != keys[:, :-1]).any(axis=0)
    heads = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    rank = np.arange(len(rows)) - heads[group]
    names = _pair_keys(b, keys[:, heads])
    stored = state.pair_counts.lookup(names)
    cap = np.asarray([r.pair_daily_cap for r in b.rules], dtype=np.int64)[keys[0, heads]]
    size = np.diff(np.append(heads, len(rows)))
    after = stored + np.clip(cap - stored, 0, size)
    changed = after != stored
    state.pair_counts.put(names[changed], after[changed])
    out = np.empty(len(rows), dtype=np.int8)
    counted = stored[group] + rank < cap[group]
    out[order] = np.where(counted, _CODE[Reason.COUNTED], _CODE[Reason.PAIR_DAILY_CAP])
    return out


def _pair_keys(b: _Batch, keys: np.ndarray) -> np.ndarray:
    """The `pair_counts` keys (S40) of columns of codes (org, actor, recipient, day)."""
    people, inverse = np.unique(
        np.concatenate([keys[:2], keys[[0, 2]]], axis=1), axis=1, return_inverse=True
    )
    users = b.users.to_pylist()
    raw = b"".join(user_digest(b.orgs[o], users[u]) for o, u in zip(*people.tolist(), strict=True))
    digests = np.frombuffer(raw, dtype="S16")[inverse.ravel()]
    n = keys.shape[1]
    return pair_keys(digests[:n], digests[n:], keys[3])


def _one_by_one(
    b: _Batch, targets: _Targets, rows: np.ndarray, state: PartitionState
) -> np.ndarray:
    """THANKS targets of orgs with giver budgets, in order, by the per-event rule."""
    event = targets.event[rows]
    unique, inverse = np.unique(event, return_inverse=True)
    events = b.cols.take(unique).events()
    names = b.users.take(pa.array(targets.user[rows])).to_pylist()
    out = np.empty(len(rows), dtype=np.int8)
    for i, (e, name) in enumerate(zip(inverse.tolist(), names, strict=True)):
        event_ = events[e]
        rules = b.rules[int(b.org[unique[e]])]
        out[i] = _CODE[target_reason(event_, name, state, rules)]
    return out


def _effects(b: _Batch, d: BatchDecisions, targets: _Targets) -> pa.RecordBatch:
    """`rules.effects_of` of the decisions, as an EFFECT_SCHEMA batch."""
    counted = np.flatnonzero(d.reason == COUNTED_CODE)
    kind = b.cols.event_type[d.event[counted]]
    repeats = np.where(kind == THANKS, 2, 1)
    rows = np.repeat(counted, repeats)
    second = np.zeros(len(rows), dtype=bool)
    second[np.cumsum(repeats)[kind == THANKS] - 1] = True
    event = d.event[rows]
    kind = b.cols.event_type[event]
    metric = np.select(
        [kind == SHARE, kind == REACTION, second],
        [SHARES_CODE, REACTIONS_CODE, GIVEN_CODE],
        RECEIVED_CODE,
    ).astype(np.int8)
    by_actor = (kind == SHARE) | second
    user = np.where(by_actor, b.actor[event], targets.user[rows])
    at = pa.array(event)
    arrays = [
        b.cols.org_id.take(at),
        b.users.take(pa.array(user)),
        pa.array(metric, pa.int8()),
        b.cols.actor_id.take(at),
        pa.array(b.cols.occurred_at[event], pa.int64()),
        pa.array(np.full(len(rows), d.partition, dtype=np.int32), pa.int32()),
        pa.array(d.offsets[event], pa.int64()),
        _effect_values(b, event, metric),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=EFFECT_SCHEMA)


def _effect_values(b: _Batch, event: np.ndarray, metric: np.ndarray) -> pa.ListArray:
    """Per effect row, the values that count for boards (`RuleConfig.listed_values`): those
    of its event that the org lists, on thanks_received rows only."""
    counts = np.diff(np.asarray(b.cols.values.offsets, dtype=np.int64))
    rows = np.flatnonzero((counts[event] > 0) & (metric == RECEIVED_CODE))
    if not len(rows):
        return no_values(len(event))
    listed: dict[int, list[str]] = {}
    for e in np.unique(event[rows]).tolist():
        rules = b.rules[int(b.org[e])]
        listed[e] = list(rules.listed_values(tuple(b.cols.values[e].as_py())))
    lists: list[list[str]] = [[] for _ in range(len(event))]
    for r, e in zip(rows.tolist(), event[rows].tolist(), strict=True):
        lists[r] = listed[e]
    return pa.array(lists, VALUES_TYPE)
