"""Recognition rules, version 1: who gets a point for an event, and why not.

Pure code: no I/O, no clock. Each rule is a small function; `decide_batch` applies them
in a fixed order to a batch of events from one input partition, reading and updating the
explicit `PartitionState`. Given the same state and the same batch it always returns the
same decisions, which is what lets the worker replay a batch after a crash.

Order of the checks for one event (the first that applies is the reason):
invalid -> too_many_recipients -> future -> late -> duplicate -> private -> (per recipient)
self -> pair_daily_cap -> giver_budget (rules v2; off in v1).
Only events that pass invalid/too_many_recipients/future/late enter the seen set and advance
stream time, so a bogus future timestamp cannot make the rest of the stream late. An event
refused whole before the per-recipient checks (invalid, too_many_recipients) gets a single
decision, so a THANKS to 10,000 people costs one row, not 10,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from hashlib import blake2b
from typing import Final

import numpy as np

from schemas.event import CollaborationEvent, EventType, Visibility
from schemas.limits import LimitError, check_text
from schemas.vocabulary import DAY_MS, HOUR_MS, Metric, Reason
from streams.domain.badges import BadgeRule, badges_by_change, v1_badges
from streams.domain.pair_counts import PairCounts, PairDay, user_digest
from streams.domain.windows import Calendar, calendar

RULE_VERSION: Final = 1


@dataclass(frozen=True)
class RuleConfig:
    """Per-org rule parameters. Defaults are DESIGN.md's rules v1.

    Derived values the hot loops read per effect (calendar, badge rules and their index)
    are computed once per config (`cached_property`, hence no `slots`)."""

    version: int = RULE_VERSION
    grace_ms: int = 7 * DAY_MS
    future_tolerance_ms: int = 5 * 60_000
    pair_daily_cap: int = 3
    # A THANKS or REACTION with more distinct recipients is refused whole.
    max_recipients_per_event: int = 50
    # Giver budgets: at most this many counted thanks given per actor per local day / week
    # (each recipient of a THANKS is one); 0 = no budget (rules v1).
    giver_daily_budget: int = 0
    giver_weekly_budget: int = 0
    weight_thanks_received: int = 3
    weight_thanks_given: int = 1
    weight_shares: int = 2
    weight_reactions_received: int = 1
    helper_distinct_thankers: int = 5
    sharer_weekly_shares: int = 10
    streak_days: int = 5
    # The org's calendar: IANA time zone, first day of the week and first month of the
    # (fiscal) year for its windows, the pair cap's day and streak days.
    timezone: str = "UTC"
    week_start: str = "monday"
    year_start_month: int = 1
    # Time-decayed score beside the window totals: each point weighs half as much after
    # every half-life (kudos.decayed_scores).
    decay_half_life_days: float = 7.0
    # Badge rules (streams/domain/badges.py); None: rules v1's four, from the parameters above.
    badges: tuple[BadgeRule, ...] | None = None
    # Collusion audit (streams/domain/collusion.py), once per closed org week; 0 = off (rules v1).
    # A group of 2..collusion_max_group people in which everyone gave everyone else at
    # least collusion_min_each counted thanks that week, and where each member received
    # more than collusion_ratio times as many counted thanks from inside the group as from
    # everyone else, has those thanks reversed.
    collusion_min_each: int = 0
    collusion_ratio: float = 3.0
    collusion_max_group: int = 4
    # Company values the org's boards count (schema v3 events carry `values`): a value an
    # event names that is not listed here is ignored for boards; () = no value boards.
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        calendar(self.timezone, self.week_start, self.year_start_month)  # bad ones fail at start
        if not self.decay_half_life_days > 0:
            raise ValueError("decay_half_life_days must be positive")
        if self.collusion_min_each < 0 or self.collusion_ratio < 0:
            raise ValueError("collusion_min_each and collusion_ratio must not be negative")
        if self.collusion_max_group < 2:
            raise ValueError("collusion_max_group must be at least 2")
        if self.max_recipients_per_event < 1:
            raise ValueError("max_recipients_per_event must be at least 1")
        if self.grace_ms < 0 or self.future_tolerance_ms < 0:
            raise ValueError("grace_ms and future_tolerance_ms must not be negative")
        _check_values(self.values)
        for badge in self.badges or ():
            if badge.value is not None and badge.value not in self.values:
                raise ValueError(f"badge {badge.name}: value {badge.value!r} is not in values")

    @cached_property
    def badge_rules(self) -> tuple[BadgeRule, ...]:
        """The badge rules on the window totals (all but those naming a value)."""
        if self.badges is not None:
            return tuple(b for b in self.badges if b.value is None)
        return v1_badges(self.helper_distinct_thankers, self.sharer_weekly_shares, self.streak_days)

    @cached_property
    def value_badge_rules(self) -> tuple[BadgeRule, ...]:
        """The badge rules naming a company value (`scorebook.value_badges`)."""
        return tuple(b for b in self.badges or () if b.value is not None)

    @cached_property
    def badge_index(self) -> dict[tuple[str, str], tuple[BadgeRule, ...]]:
        """(window, effect metric) -> badge rules an effect there can newly satisfy."""
        return badges_by_change(self.badge_rules)

    @cached_property
    def value_set(self) -> frozenset[str]:
        return frozenset(self.values)

    def listed_values(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """The values of an event that count for boards: those the org lists, each once,
        in the event's order."""
        if not values or not self.values:
            return ()
        listed = self.value_set
        return tuple(dict.fromkeys(v for v in values if v in listed))

    @cached_property
    def decay_half_life_ms(self) -> float:
        return self.decay_half_life_days * DAY_MS

    def weight(self, metric: Metric) -> int:
        """Points one unit of `metric` adds to the score."""
        if metric is Metric.THANKS_RECEIVED:
            return self.weight_thanks_received
        if metric is Metric.THANKS_GIVEN:
            return self.weight_thanks_given
        if metric is Metric.SHARES:
            return self.weight_shares
        return self.weight_reactions_received

    @cached_property
    def calendar(self) -> Calendar:
        return calendar(self.timezone, self.week_start, self.year_start_month)

    def score(self, shares: int, thanks_given: int, thanks_received: int, reactions: int) -> int:
        return (
            self.weight_thanks_received * thanks_received
            + self.weight_thanks_given * thanks_given
            + self.weight_shares * shares
            + self.weight_reactions_received * reactions
        )


def _check_values(values: tuple[str, ...]) -> None:
    """An org's values are ids (schemas/limits.py), listed once each."""
    if len(set(values)) != len(values):
        raise ValueError(f"values must be listed once each: {list(values)}")
    for i, value in enumerate(values):
        if not value:
            raise ValueError("values must not be empty strings")
        try:
            check_text(f"values[{i}]", value)
        except LimitError as exc:
            raise ValueError(str(exc)) from None


DEFAULT_RULES: Final = RuleConfig()


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """An event with its position in the input topic."""

    event: CollaborationEvent
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one event for one target (recipient; '' for a SHARE)."""

    record: SourceRecord
    recipient_id: str
    reason: Reason
    stream_time_ms: int
    rule_version: int

    @property
    def counted(self) -> bool:
        return self.reason is Reason.COUNTED


@dataclass(frozen=True, slots=True)
class Effect:
    """One point for one user, produced by a counted decision.

    `actor_id` is who caused it (the thanker for thanks_received). Position fields make
    the effect idempotent downstream: a user's totals apply each (partition, offset) once.
    `values`: for thanks_received, the event's values that the org lists (each once).
    """

    org_id: str
    user_id: str
    metric: Metric
    actor_id: str
    occurred_at: int
    partition: int
    offset: int
    values: tuple[str, ...] = ()


class SeenSet:
    """The event ids accepted on a partition: 128-bit digests (`seen_key`) with the end of
    each event's hour, as sorted numpy arrays (24 bytes an entry, not a dict's ~150).

    Two sorted tiers, `main` and a smaller `recent` one that batches merge into (so a batch
    costs a sort of about its own size, and `main` is rebuilt only when `recent` has grown
    to a quarter of it); single adds (`remember`, rebuilding from stored decisions) wait in
    a dict until the next vectorised use. Re-adding a digest keeps the latest hour."""

    __slots__ = ("_keys", "_pending", "_recent", "_recent_until", "_until")

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype="S16")
        self._until = np.zeros(0, dtype=np.int64)
        self._recent = np.zeros(0, dtype="S16")
        self._recent_until = np.zeros(0, dtype=np.int64)
        self._pending: dict[bytes, int] = {}

    def __len__(self) -> int:
        self._flush()
        return len(self._keys) + len(self._recent)

    def __contains__(self, key: object) -> bool:
        if key in self._pending:
            return True
        if not isinstance(key, bytes) or len(key) != 16:
            return False
        return bool(self._in_tiers(np.frombuffer(key, dtype="S16"))[0])

    def __iter__(self) -> Iterator[bytes]:
        self._flush()
        for keys in (self._keys, self._recent):
            raw = keys.tobytes()
            yield from (raw[i : i + 16] for i in range(0, len(raw), 16))

    def __setitem__(self, key: bytes, until: int) -> None:
        self._pending[key] = until

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Per digest (an S16 array), whether it is in the set."""
        self._flush()
        return self._in_tiers(keys)

    def _in_tiers(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for tier in (self._keys, self._recent):
            if len(tier):
                at = np.minimum(np.searchsorted(tier, keys), len(tier) - 1)
                found |= tier[at] == keys
        return found

    def add(self, keys: np.ndarray, until: np.ndarray) -> None:
        """Add digests known to be absent and distinct (S16 array), with their hours."""
        self._flush()
        self._insert(keys, until)

    def prune(self, horizon: int) -> None:
        """Forget entries whose hour ends before `horizon`."""
        self._flush()
        keep = self._until >= horizon
        self._keys, self._until = self._keys[keep], self._until[keep]
        keep = self._recent_until >= horizon
        self._recent, self._recent_until = self._recent[keep], self._recent_until[keep]

    def _insert(self, keys: np.ndarray, until: np.ndarray) -> None:
        recent = np.concatenate([self._recent, keys])
        recent_until = np.concatenate([self._recent_until, until])
        if len(recent) * 4 > len(self._keys) + 4096:
            recent = np.concatenate([self._keys, recent])
            recent_until = np.concatenate([self._until, recent_until])
            order = np.argsort(recent, kind="stable")
            self._keys, self._until = recent[order], recent_until[order]
            self._recent = self._recent[:0]
            self._recent_until = self._recent_until[:0]
            return
        order = np.argsort(recent, kind="stable")
        self._recent, self._recent_until = recent[order], recent_until[order]

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        keys = np.frombuffer(b"".join(pending), dtype="S16")
        until = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
        for tier, hours in ((self._keys, self._until), (self._recent, self._recent_until)):
            if len(tier):
                at = np.minimum(np.searchsorted(tier, keys), len(tier) - 1)
                hit = tier[at] == keys
                hours[at[hit]] = until[hit]
                keys, until = keys[~hit], until[~hit]
        self._insert(keys, until)


GiverPeriod = tuple[str, str, str, int]  # org, actor, "day" | "week", period start ms
# State about a day is kept while any event of that day can still arrive within grace: a
# local day may have begun up to 25 hours before its last instant.
STATE_MARGIN_MS: Final = 2 * DAY_MS


@dataclass(slots=True)
class PartitionState:
    """What the rules read for one input partition. Rebuilt from stored decisions on recovery.

    `seen` holds `seen_key(org, event_id)` with the end of the event's hour, for events accepted
    within grace (pruning drops it once that is older than stream time - grace - 2 days).
    `pair_counts` counts counted THANKS per (org, actor, recipient, local day) (a
    `PairCounts`: numpy columns keyed by digests, not names).
    `giver_counts` counts counted THANKS given per (org, actor, "day" | "week", start), kept
    only for orgs with a giver budget.
    `next_offset` is the first offset not yet decided; earlier offsets are skipped on replay.
    """

    stream_time_ms: int | None = None
    next_offset: int = 0
    seen: SeenSet = field(default_factory=SeenSet)
    pair_counts: PairCounts = field(default_factory=PairCounts)
    giver_counts: dict[GiverPeriod, int] = field(default_factory=dict)
    pruned_at: int | None = None

    def prune(self, grace_ms: int) -> None:
        """Forget what can no longer matter: anything older than stream time - grace - 2 days.

        Runs at most once per hour of stream time; what it keeps meanwhile is harmless.
        """
        if self.stream_time_ms is None:
            return
        if self.pruned_at is not None and self.stream_time_ms - self.pruned_at < HOUR_MS:
            return
        self.pruned_at = self.stream_time_ms
        horizon = self.stream_time_ms - grace_ms - STATE_MARGIN_MS
        self.seen.prune(horizon)
        self.pair_counts.prune(horizon)
        if self.giver_counts:
            week_horizon = horizon - 7 * DAY_MS
            self.giver_counts = {k: n for k, n in self.giver_counts.items() if k[3] >= week_horizon}


def scrub_person(state: PartitionState, org: str, user: str, token: str, rules: RuleConfig) -> None:
    """Take a forgotten person out of the caps and budgets (`kudos forget`), leaving what a
    restart rebuilds from the erased decisions: the thanks they gave still count against
    the caps and their budget, under the erasure's `token`; the thanks they received are
    erased placeholders that count for nobody, so they leave the pair counts and give the
    givers' budgets back (as far as the pair counts still hold those days)."""
    actors, days, counts = state.pair_counts.scrub(org, user, token)
    returned: dict[GiverPeriod, int] = {}
    if state.giver_counts and actors:
        # Pairs hold digests: the givers' names are those of their budget periods.
        named = {user_digest(o, a): a for o, a, _, _ in state.giver_counts if o == org}
        for digest, day, n in zip(actors, days, counts, strict=True):
            actor = named.get(digest)
            if actor is None:
                continue  # no budget period of theirs is held: nothing to give back
            for period in giver_periods_at(org, actor, day, rules):
                returned[period] = returned.get(period, 0) + n
    given: dict[GiverPeriod, int] = {}
    for key, n in state.giver_counts.items():
        n -= returned.get(key, 0)
        o, actor, kind, start = key
        if o == org and actor == user:
            key = (o, token, kind, start)
        if n > 0:
            given[key] = given.get(key, 0) + n
    state.giver_counts = given


# --- the rules, one small function each -------------------------------------------------


def is_invalid(event: CollaborationEvent) -> bool:
    """Decoded, but breaks a rule of the schema: empty ids, THANKS/REACTION without recipients."""
    if not event.event_id or not event.org_id or not event.actor_id:
        return True
    if any(not r for r in event.recipient_ids):
        return True
    return event.event_type in (EventType.THANKS, EventType.REACTION) and not event.recipient_ids


def is_future(event: CollaborationEvent, now_ms: int, rules: RuleConfig) -> bool:
    return event.occurred_at > now_ms + rules.future_tolerance_ms


def is_late(event: CollaborationEvent, stream_time_ms: int | None, rules: RuleConfig) -> bool:
    return stream_time_ms is not None and event.occurred_at < stream_time_ms - rules.grace_ms


def is_duplicate(event: CollaborationEvent, seen: SeenSet) -> bool:
    return seen_key(event.org_id, event.event_id) in seen


def is_private(event: CollaborationEvent) -> bool:
    return event.visibility is Visibility.PRIVATE


def is_self(event: CollaborationEvent, recipient_id: str) -> bool:
    return recipient_id == event.actor_id


# Deciding state holds an entry per event of the last day or so (ids to deduplicate) and
# per pair-day: at a million events a day that is most of a worker's memory. Entries share
# their org, user and time values instead of each holding copies.
_SHARED_INTS: dict[int, int] = {}


def _shared(value: int) -> int:
    if len(_SHARED_INTS) > 100_000:
        _SHARED_INTS.clear()
    return _SHARED_INTS.setdefault(value, value)


def remember(state: PartitionState, org: str, event_id: str, occurred_at: int) -> None:
    """Mark an event id as seen until its hour has passed out of the pruning horizon.

    Stored rounded up to the hour: pruning then keeps it at most an hour longer, and the
    value is shared by every event of that hour."""
    until = -(-occurred_at // HOUR_MS) * HOUR_MS
    state.seen[seen_key(org, event_id)] = _shared(until)


def seen_key(org: str, event_id: str) -> bytes:
    """A 128-bit BLAKE2b digest of (org, event_id): 49 bytes a key instead of ~140 for the
    tuple and its strings. Two distinct ids collide with odds of about n^2 / 2^129 (1e-26 for
    ten million ids a week), far below any hardware error rate."""
    return blake2b(f"{org}\x00{event_id}".encode(), digest_size=16).digest()


def pair_day(event: CollaborationEvent, recipient_id: str, rules: RuleConfig) -> PairDay:
    day = rules.calendar.day_start(event.occurred_at)
    return (event.org_id, event.actor_id, recipient_id, day)


def targets(event: CollaborationEvent) -> tuple[str, ...]:
    """Who an event is about: each distinct recipient, or '' for a SHARE."""
    if event.event_type is EventType.SHARE:
        return ("",)
    return tuple(dict.fromkeys(event.recipient_ids)) or ("",)


# --- applying them -----------------------------------------------------------------------


def has_too_many_recipients(event: CollaborationEvent, rules: RuleConfig) -> bool:
    """More distinct recipients than the org allows (a SHARE has none that count)."""
    if event.event_type is EventType.SHARE:
        return False
    recipients = event.recipient_ids
    limit = rules.max_recipients_per_event
    return len(recipients) > limit and len(set(recipients)) > limit


# Reasons of events that never entered the seen set nor moved stream time (see the module
# docstring); a restart rebuilding the state from stored decisions skips them too.
NOT_SEEN: Final = frozenset(
    {Reason.INVALID, Reason.TOO_MANY_RECIPIENTS, Reason.FUTURE, Reason.LATE}
)


def _whole_event_reason(
    event: CollaborationEvent, state: PartitionState, now_ms: int, rules: RuleConfig
) -> Reason | None:
    if is_invalid(event):
        return Reason.INVALID
    if has_too_many_recipients(event, rules):
        return Reason.TOO_MANY_RECIPIENTS
    if is_future(event, now_ms, rules):
        return Reason.FUTURE
    if is_late(event, state.stream_time_ms, rules):
        return Reason.LATE
    return None


def decide_event(
    record: SourceRecord, state: PartitionState, now_ms: int, rules: RuleConfig
) -> list[Decision]:
    """Decide one event and update `state`. Returns one decision per target."""
    event = record.event
    reason = _whole_event_reason(event, state, now_ms, rules)
    if reason is None:
        if state.stream_time_ms is None or event.occurred_at > state.stream_time_ms:
            state.stream_time_ms = event.occurred_at
        if is_duplicate(event, state.seen):
            reason = Reason.DUPLICATE
        else:
            remember(state, event.org_id, event.event_id, event.occurred_at)
            if is_private(event):
                reason = Reason.PRIVATE
    stream_time = state.stream_time_ms if state.stream_time_ms is not None else event.occurred_at
    out: list[Decision] = []
    whole = reason is Reason.TOO_MANY_RECIPIENTS  # one decision, not one per recipient
    for target in ("",) if whole else targets(event):
        why = reason
        if why is None:
            why = target_reason(event, target, state, rules)
        out.append(Decision(record, target, why, stream_time, rules.version))
    state.next_offset = max(state.next_offset, record.offset + 1)
    return out


def target_reason(
    event: CollaborationEvent, target: str, state: PartitionState, rules: RuleConfig
) -> Reason:
    """The per-recipient checks of an accepted event (self, pair cap, giver budget); a
    counted THANKS updates the pair and budget counts. Also used by the collusion audit to
    re-decide caps (streams/domain/collusion.py)."""
    if event.event_type is EventType.SHARE:
        return Reason.COUNTED
    if is_self(event, target):
        return Reason.SELF
    if event.event_type is EventType.THANKS:
        key = pair_day(event, target, rules)
        counted = state.pair_counts.get(key, 0)
        if counted >= rules.pair_daily_cap:
            return Reason.PAIR_DAILY_CAP
        periods = giver_periods(event, rules)
        if over_giver_budget(periods, state.giver_counts, rules):
            return Reason.GIVER_BUDGET
        state.pair_counts[key] = counted + 1
        for period in periods:
            state.giver_counts[period] = state.giver_counts.get(period, 0) + 1
    return Reason.COUNTED


def giver_periods(event: CollaborationEvent, rules: RuleConfig) -> list[GiverPeriod]:
    """The budget periods a thank-you given at this time counts against."""
    return giver_periods_at(event.org_id, event.actor_id, event.occurred_at, rules)


def giver_periods_at(org: str, actor: str, at_ms: int, rules: RuleConfig) -> list[GiverPeriod]:
    out: list[GiverPeriod] = []
    if rules.giver_daily_budget > 0:
        out.append((org, actor, "day", rules.calendar.day_start(at_ms)))
    if rules.giver_weekly_budget > 0:
        out.append((org, actor, "week", rules.calendar.window_start("week", at_ms)))
    return out


def over_giver_budget(
    periods: Sequence[GiverPeriod], counts: dict[GiverPeriod, int], rules: RuleConfig
) -> bool:
    """Has the actor already given a full budget of counted thanks in one of the periods?"""
    for period in periods:
        budget = rules.giver_daily_budget if period[2] == "day" else rules.giver_weekly_budget
        if counts.get(period, 0) >= budget:
            return True
    return False


def decide_batch(
    records: Iterable[SourceRecord],
    state: PartitionState,
    now_ms: int,
    rules_for: RulesLookup,
) -> list[Decision]:
    """Decide every record of one partition in offset order.

    Records below `state.next_offset` were decided before a restart: they are skipped, so a
    replay from an older committed offset neither re-decides nor re-emits them.
    """
    out: list[Decision] = []
    for record in records:
        if record.offset < state.next_offset:
            continue
        out.extend(decide_event(record, state, now_ms, rules_for(record.event.org_id)))
    return out


def effects_of(decisions: Sequence[Decision], rules_for: RulesLookup | None = None) -> list[Effect]:
    """The points that counted decisions give; with `rules_for`, thanks received carry the
    event's values that its org lists (`RuleConfig.listed_values`)."""
    out: list[Effect] = []
    for d in decisions:
        if not d.counted:
            continue
        e = d.record.event
        pos = (e.occurred_at, d.record.partition, d.record.offset)
        if e.event_type is EventType.SHARE:
            out.append(Effect(e.org_id, e.actor_id, Metric.SHARES, e.actor_id, *pos))
        elif e.event_type is EventType.THANKS:
            values = rules_for(e.org_id).listed_values(e.values) if rules_for else ()
            out.append(
                Effect(e.org_id, d.recipient_id, Metric.THANKS_RECEIVED, e.actor_id, *pos, values)
            )
            out.append(Effect(e.org_id, e.actor_id, Metric.THANKS_GIVEN, e.actor_id, *pos))
        else:
            out.append(
                Effect(e.org_id, d.recipient_id, Metric.REACTIONS_RECEIVED, e.actor_id, *pos)
            )
    return out


class RulesLookup:
    """Rule configuration per org, with a default for every org not listed."""

    def __init__(
        self, default: RuleConfig = DEFAULT_RULES, per_org: dict[str, RuleConfig] | None = None
    ):
        self.default = default
        self.per_org = dict(per_org or {})

    def __call__(self, org_id: str) -> RuleConfig:
        return self.per_org.get(org_id, self.default)

    def all(self) -> list[RuleConfig]:
        return [self.default, *self.per_org.values()]

    def max_grace_ms(self) -> int:
        return max(r.grace_ms for r in self.all())

    def any_collusion_audit(self) -> bool:
        return any(r.collusion_min_each > 0 for r in self.all())

    def any_weekly_budget(self) -> bool:
        return any(r.giver_weekly_budget > 0 for r in self.all())
