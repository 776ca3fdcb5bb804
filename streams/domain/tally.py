"""Window totals as columns: the aggregating stage's state, changed a batch at a time.

The same totals, high-water marks, distinct thankers, decayed scores and badges as
`streams/domain/scorebook.py` (kept as the per-event oracle of the tests), held as arrays
instead of an object per key, and changed by a whole batch of effects (an Arrow record
batch of `streams.domain.effects.EFFECT_SCHEMA`) with array operations:

* ids: an (org, user) is a dense user id, an (org, window, start) a dense window id; a key
  is `uid << 24 | wid`, found in a sorted index with `searchsorted`;
* per key (a slot): the four counts, distinct thankers, decayed score, and its high-water
  marks as a row of a (slots x deciding partitions) matrix;
* distinct thankers: a sorted array of `slot << 32 | actor uid`;
* badges: checked on the keys a batch changed; only keys that may earn one are walked
  effect by effect, so awards and their evidence are those of the per-event path;
* company values: not state. Each thanks received applied for the first time gives one
  `kudos.value_thanks` row per (window, listed value it carries), named by its lineage,
  which `kudos.value_scores` counts (migrations 0023, 0024): `ColumnApplied.value_thanks`.

`apply_batch` applies a batch as the per-event path applies its messages one after
another, provided no deciding partition's offsets go back from one message to the next
(`in_order_runs` joins such messages; a resent one starts a run of its own).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.vocabulary import WINDOWS, WindowKey, WindowName
from streams.domain.badges import _CHANGED_BY, BadgeRule, streak_ends
from streams.domain.effects import METRIC_CODES, RECEIVED_CODE, SHARES_CODE
from streams.domain.rules import RuleConfig, RulesLookup
from streams.domain.scorebook import BadgeAward, WindowTotals, award_once, streak_days_around

WID_BITS: Final = 24
KINDS: Final[tuple[WindowName, ...]] = WINDOWS  # hour, day, week, month, quarter, year, all
_DAY: Final = 1
_ALL: Final = KINDS.index("all")
# Columns of `_values`: the four counts by metric code, distinct thankers, score.
_VALUE_AT: Final = {
    **{m.value: i for i, m in enumerate(METRIC_CODES)},
    "distinct_thankers": 4,
    "score": 5,
}
# Per badge metric: by effect metric code, whether an effect of it changes the value.
_CHANGED_MASK: Final = {
    metric: np.isin(np.arange(len(METRIC_CODES)), [_VALUE_AT[m] for m in changed])
    for metric, changed in _CHANGED_BY.items()
}


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values: `np.unique` by sorting (numpy 2's hash-based
    `np.unique` takes several times as long on int64 keys)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def distinct_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`distinct(values)` and, per value, its index in it (`np.unique`'s return_inverse,
    by sorting as `distinct` does)."""
    order = np.argsort(values)
    ordered = values[order]
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


def _merged(ordered: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Sorted `ordered` with the sorted values `new`, which it does not hold, inserted."""
    return np.insert(ordered, np.searchsorted(ordered, new), new)


def _grow(a: np.ndarray, size: int, fill: object) -> np.ndarray:
    if len(a) >= size:
        return a
    shape = (max(size, 2 * len(a), 1024), *a.shape[1:])
    if a.dtype != object and fill == 0:
        # calloc: the spare capacity's pages stay unmapped until a slot uses them.
        out = np.zeros(shape, dtype=a.dtype)
    else:
        out = np.full(shape, fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def _is_empty(t: WindowTotals) -> bool:
    return not (
        t.hwm
        or t.thankers
        or t.decay
        or t.decay_at
        or t.shares
        or t.thanks_given
        or t.thanks_received
        or t.reactions_received
    )


class _Users:
    """Dense ids for (org, user), with both texts by id (numpy object arrays, for rows)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}  # by "org\0user"
        self.org = np.empty(0, dtype=object)
        self.name = np.empty(0, dtype=object)

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, org: str, user: str) -> int:
        return self.get_joined(f"{org}\x00{user}")

    def find(self, org: str, user: str) -> int | None:
        return self.ids.get(f"{org}\x00{user}")

    def get_joined(self, joined: str) -> int:
        found = self.ids.get(joined)
        if found is None:
            found = self.ids[joined] = len(self.ids)
            self.org = _grow(self.org, found + 1, None)
            self.name = _grow(self.name, found + 1, None)
            org, self.name[found] = joined.split("\x00", 1)
            self.org[found] = sys.intern(org)  # a few orgs: one string each, not one a user
        return found


# The per-slot arrays of ColumnBook, in one list for growing and dropping.
_SLOT_COLUMNS = (
    "slot_key",
    "counts",
    "thankers_n",
    "decay",
    "decay_at",
    "badge_bits",
    "used",
    "hwm",
)


class ColumnBook:
    """The aggregating stage's state as columns (module docstring)."""

    def __init__(self) -> None:
        self.users = _Users()
        self.windows: dict[tuple[str, str, int], int] = {}
        self.window_keys: list[tuple[str, WindowName, int]] = []
        self.index = np.empty(0, dtype=np.int64)  # sorted packed keys
        self.index_slot = np.empty(0, dtype=np.int64)
        self.size = 0
        self.slot_key = np.empty(0, dtype=np.int64)
        self.counts = np.zeros((0, 4), dtype=np.int64)
        self.thankers_n = np.zeros(0, dtype=np.int64)
        self.decay = np.zeros(0, dtype=np.float64)
        self.decay_at = np.zeros(0, dtype=np.int64)
        # Bit i: the org's badge rule i is known awarded for this key's period (streaks aside).
        self.badge_bits = np.zeros(0, dtype=np.uint64)
        # Per slot: the batch (`clock`) that last read the key; eviction keeps the latest.
        self.used = np.zeros(0, dtype=np.int64)
        self.clock = 0
        self.hwm = np.full((0, 0), -1, dtype=np.int64)
        self.partitions: list[int] = []  # hwm column -> deciding partition
        self.pairs = np.empty(0, dtype=np.int64)  # sorted slot << 32 | actor uid
        self.awarded: set[tuple[str, str, str, int]] = set()
        self.users_loaded: set[tuple[str, str]] = set()
        # Per user id: every key of the user that storage holds is held here too (the
        # user's `all` key, which every point touches, loaded as not stored, and none of
        # the user's keys dropped since). A key of such a user that is not held is not
        # stored either, and needs no query.
        self.complete = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.index)

    def mark_complete(self, uids: np.ndarray) -> None:
        self.complete = _grow(self.complete, len(self.users), False)
        self.complete[uids] = True

    def hold_complete(self, packed: np.ndarray) -> np.ndarray:
        """Hold the keys of complete users as zero keys; returns the other keys."""
        self.complete = _grow(self.complete, len(self.users), False)
        known = self.complete[packed >> WID_BITS]
        self.slots(packed[known])
        return np.asarray(packed[~known])

    # --- ids and keys ------------------------------------------------------------------

    def wid(self, org: str, window: WindowName, start: int) -> int:
        key = (org, window, start)
        found = self.windows.get(key)
        if found is None:
            found = self.windows[key] = len(self.window_keys)
            if found >= 1 << WID_BITS:
                raise OverflowError("too many windows held: restart the stage's book")
            self.window_keys.append(key)
        return found

    def packed(self, key: WindowKey) -> int:
        org, window, start, user = key
        return (self.users.get(org, user) << WID_BITS) | self.wid(org, window, start)

    def key_of(self, slot: int) -> WindowKey:
        return self.key_of_packed(int(self.slot_key[slot]))

    def key_of_packed(self, packed: int) -> WindowKey:
        org, window, start = self.window_keys[packed & ((1 << WID_BITS) - 1)]
        return (org, window, start, str(self.users.name[packed >> WID_BITS]))

    def find(self, packed: np.ndarray) -> np.ndarray:
        """Slots of packed keys, -1 where not held."""
        if len(packed) > 256 and not bool(np.all(packed[1:] >= packed[:-1])):
            # Binary searches in key order walk the index once: a batch's keys in their
            # own order cost five times as much (cache misses in a 500k-key index).
            order = np.argsort(packed)
            out = np.empty(len(packed), dtype=np.int64)
            out[order] = self.find(packed[order])
            return out
        pos = np.searchsorted(self.index, packed)
        pos[pos >= len(self.index)] = 0
        hit = (self.index[pos] == packed) if len(self.index) else np.zeros(len(packed), bool)
        return np.where(hit, self.index_slot[pos] if len(self.index) else -1, -1)

    def slots(self, packed: np.ndarray) -> np.ndarray:
        """Slots of packed keys, new zero slots for keys not held."""
        found = self.find(packed)
        missing = found < 0
        if missing.any():
            new_keys, inverse = np.unique(packed[missing], return_inverse=True)
            first = self._add(new_keys)
            found[missing] = first + inverse
        return found

    def _add(self, new_keys: np.ndarray) -> int:
        """Zero slots for sorted keys that are not held; returns the first new slot."""
        first, n = self.size, len(new_keys)
        self.size += n
        self.slot_key = _grow(self.slot_key, self.size, 0)
        self.counts = _grow(self.counts, self.size, 0)
        self.thankers_n = _grow(self.thankers_n, self.size, 0)
        self.decay = _grow(self.decay, self.size, 0.0)
        self.decay_at = _grow(self.decay_at, self.size, 0)
        self.badge_bits = _grow(self.badge_bits, self.size, 0)
        self.used = _grow(self.used, self.size, self.clock)
        self.hwm = _grow(self.hwm, self.size, -1)
        self.slot_key[first : self.size] = new_keys
        slots = np.arange(first, self.size, dtype=np.int64)
        at = np.searchsorted(self.index, new_keys)
        self.index = np.insert(self.index, at, new_keys)
        self.index_slot = np.insert(self.index_slot, at, slots)
        return first

    def column_of(self, partition: int) -> int:
        if partition not in self.partitions:
            self.partitions.append(partition)
            grown = np.full((len(self.hwm), len(self.partitions)), -1, dtype=np.int64)
            grown[:, :-1] = self.hwm
            self.hwm = grown
        return self.partitions.index(partition)

    # --- objects in and out (loading, audits, the oracle) -------------------------------

    def hold(self, keys: Iterable[WindowKey]) -> None:
        """Hold these keys, as zero keys where not held yet."""
        packed = np.array([self.packed(k) for k in keys], dtype=np.int64)
        if len(packed):
            self.slots(packed)

    def is_all_key(self, packed: np.ndarray) -> np.ndarray:
        alls = np.array([i for i, k in enumerate(self.window_keys) if k[1] == "all"], np.int64)
        return np.isin(packed & ((1 << WID_BITS) - 1), alls)

    def holds(self, key: WindowKey) -> bool:
        return bool(self.find(np.array([self.packed(key)], dtype=np.int64))[0] >= 0)

    def put(self, loaded: dict[WindowKey, WindowTotals]) -> None:
        """Keys loaded from storage (or changed by an audit) as objects; replaces held ones."""
        if not loaded:
            return
        empty = [k for k, t in loaded.items() if _is_empty(t)]
        if empty:  # keys that are not stored: zero slots, made in bulk
            self._zero(self.slots(np.array([self.packed(k) for k in empty], dtype=np.int64)))
        keys = [k for k, t in loaded.items() if not _is_empty(t)]
        if not keys:
            return
        slots = self.slots(np.array([self.packed(k) for k in keys], dtype=np.int64))
        self._zero(slots)
        pairs: list[int] = []
        for key, slot in zip(keys, slots.tolist(), strict=True):
            t = loaded[key]
            self.counts[slot] = (t.shares, t.thanks_given, t.thanks_received, t.reactions_received)
            self.thankers_n[slot] = len(t.thankers)
            self.decay[slot], self.decay_at[slot] = t.decay, t.decay_at
            for p, o in t.hwm.items():
                col = self.column_of(p)  # may widen self.hwm
                self.hwm[slot, col] = o
            org = key[0]
            pairs.extend((slot << 32) | self.users.get(org, a) for a in t.thankers)
        if pairs:
            self.pairs = _merged(self.pairs, distinct(np.array(pairs, dtype=np.int64)))

    def _zero(self, slots: np.ndarray) -> None:
        self.counts[slots] = 0
        self.thankers_n[slots] = 0
        self.decay[slots], self.decay_at[slots], self.hwm[slots] = 0.0, 0, -1
        self.badge_bits[slots] = 0
        if len(self.pairs):
            self.pairs = self.pairs[~np.isin(self.pairs >> 32, slots)]

    def totals(self, key: WindowKey) -> WindowTotals | None:
        """A held key as a `WindowTotals` (None when not held)."""
        slot = int(self.find(np.array([self.packed(key)], dtype=np.int64))[0])
        if slot < 0:
            return None
        s, g, r, x = (int(v) for v in self.counts[slot])
        lo, hi = np.searchsorted(self.pairs, [slot << 32, (slot + 1) << 32])
        thankers = {str(self.users.name[int(p) & 0xFFFFFFFF]) for p in self.pairs[lo:hi]}
        hwm = {
            p: int(o)
            for p, o in zip(self.partitions, self.hwm[slot].tolist(), strict=True)
            if o >= 0
        }
        return WindowTotals(
            s, g, r, x, thankers, hwm, float(self.decay[slot]), int(self.decay_at[slot])
        )

    def held_keys(self, org: str | None = None, user: str | None = None) -> list[WindowKey]:
        out = []
        for slot in self.index_slot.tolist():
            key = self.key_of(slot)
            if (org is None or key[0] == org) and (user is None or key[3] == user):
                out.append(key)
        return out

    def drop(self, keep: np.ndarray) -> None:
        """Keep the slots where `keep` is True (renumbered in order); drop the others."""
        keep = keep[: self.size]
        self.complete = _grow(self.complete, len(self.users), False)
        self.complete[self.slot_key[: self.size][~keep] >> WID_BITS] = False
        new_slot = np.cumsum(keep) - 1
        pair_slot = self.pairs >> 32
        kept_pairs = keep[pair_slot] if len(self.pairs) else np.zeros(0, bool)
        self.pairs = (new_slot[pair_slot[kept_pairs]] << 32) | (self.pairs[kept_pairs] & 0xFFFFFFFF)
        held = keep[self.index_slot]
        self.index = self.index[held]
        self.index_slot = new_slot[self.index_slot[held]]
        for name in _SLOT_COLUMNS:
            setattr(self, name, getattr(self, name)[: self.size][keep].copy())
        self.size = int(keep.sum())
        self._drop_users()

    def _drop_users(self) -> None:
        """Forget the ids of users no held key or thanker refers to, once they are most of
        the ids: new ids in the same order, so the index and the pairs stay sorted."""
        used = distinct(
            np.concatenate((self.slot_key[: self.size] >> WID_BITS, self.pairs & 0xFFFFFFFF))
        )
        if len(self.users) < 1024 or len(used) * 2 > len(self.users):
            return
        old = self.users
        self.users = _Users()
        for org, name in zip(old.org[used].tolist(), old.name[used].tolist(), strict=True):
            self.users.get(org, name)
        self.complete = _grow(self.complete, len(old), False)[used]

        def renumber(uid: np.ndarray) -> np.ndarray:
            return np.searchsorted(used, uid).astype(np.int64)

        wid = self.slot_key[: self.size] & _WID_MASK
        self.slot_key = (renumber(self.slot_key[: self.size] >> WID_BITS) << WID_BITS) | wid
        self.index = (renumber(self.index >> WID_BITS) << WID_BITS) | (self.index & _WID_MASK)
        self.pairs = (self.pairs >> 32 << 32) | renumber(self.pairs & 0xFFFFFFFF)

    def touch(self, packed: np.ndarray) -> np.ndarray:
        """A new batch reads these keys: the held ones are the last to be evicted.
        Returns their slots (-1 where not held)."""
        self.clock += 1
        slots = self.find(packed)
        self.used[slots[slots >= 0]] = self.clock
        return slots

    def evict_coldest(self, keep: int) -> None:
        """Drop the keys that no batch has read for longest, down to `keep` (ties: the
        ones loaded first). A key read by every batch, a popular person's, stays."""
        if self.size > keep:
            mask = np.zeros(self.size, dtype=bool)
            mask[np.argsort(self.used[: self.size], kind="stable")[self.size - keep :]] = True
            self.drop(mask)
        if len(self.users_loaded) > keep:
            self.awarded.clear()
            self.users_loaded.clear()

    def org_slots(self, org: str) -> np.ndarray:
        """Slots of the keys held of one org."""
        wid = self.slot_key[: self.size] & ((1 << WID_BITS) - 1)
        of_org = np.array([k[0] == org for k in self.window_keys] or [False], dtype=bool)
        return np.flatnonzero(of_org[wid])

    def forget_user(self, org: str, user: str) -> None:
        uid = self.users.find(org, user)
        if uid is not None:
            self.drop((self.slot_key[: self.size] >> WID_BITS) != uid)
        self.awarded = {a for a in self.awarded if not (a[0] == org and a[1] == user)}
        self.users_loaded.discard((org, user))
        if uid is not None:
            self.complete = _grow(self.complete, len(self.users), False)
            self.complete[uid] = False


@dataclass(slots=True)
class BatchKeys:
    """The keys one batch of effects touches: per effect row, a key in every window."""

    packed: np.ndarray  # (len(KINDS), rows): a key per window
    user: np.ndarray  # uid per row
    actor: np.ndarray  # uid of the actor per row
    org: list[str]  # org per row
    rules: list[RuleConfig]  # per distinct org code
    org_code: np.ndarray  # per row, index into `rules`


def batch_keys(batch: pa.RecordBatch, book: ColumnBook, rules_for: RulesLookup) -> BatchKeys:
    """Ids and window keys of every effect of `batch` (ids new to the book are added)."""
    orgs = pc.dictionary_encode(batch["org_id"])
    org_names: list[str] = orgs.dictionary.to_pylist()
    org_code = orgs.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rules = [rules_for(o) for o in org_names]
    user = _uids(book, batch["org_id"], batch["user_id"])
    actor = _uids(book, batch["org_id"], batch["actor_id"])
    at = batch["occurred_at"].to_numpy()
    wids = np.empty((len(KINDS), len(at)), dtype=np.int64)
    for code, name in enumerate(org_names):
        rows = np.flatnonzero(org_code == code)
        starts = rules[code].calendar.starts_array(at[rows])
        for kind, kind_starts in enumerate(starts):  # every window but all
            wids[kind, rows] = _wids(book, name, KINDS[kind], kind_starts)
        wids[_ALL, rows] = book.wid(name, "all", 0)
    packed = (user[np.newaxis, :] << WID_BITS) | wids
    return BatchKeys(packed, user, actor, org_names, rules, org_code)


def _uids(book: ColumnBook, org: pa.Array, user: pa.Array) -> np.ndarray:
    joined = pc.dictionary_encode(pc.binary_join_element_wise(org, user, "\x00"))
    ids = np.array(
        [book.users.get_joined(k) for k in joined.dictionary.to_pylist()],
        dtype=np.int64,
    )
    return np.asarray(ids[joined.indices.to_numpy(zero_copy_only=False)])


def _wids(book: ColumnBook, org: str, window: WindowName, starts: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(starts, return_inverse=True)
    ids = np.array([book.wid(org, window, int(s)) for s in unique.tolist()], dtype=np.int64)
    return ids[inverse]


def streak_keys(batch: pa.RecordBatch, keys: BatchKeys, book: ColumnBook) -> np.ndarray:
    """The packed day keys around each share's day that streak badges read."""
    shares = np.flatnonzero(batch["metric"].to_numpy() == SHARES_CODE)
    if not len(shares):
        return np.empty(0, dtype=np.int64)
    days = distinct(keys.packed[_DAY, shares])
    out = [np.empty(0, dtype=np.int64)]
    for code, rules in enumerate(keys.rules):
        mine = days[np.isin(days & _WID_MASK, _org_wids(book, keys.org[code]))]
        for rule in rules.badge_rules:
            if rule.kind == "streak" and len(mine):
                out.append(_around(book, mine, rules, rule).ravel())
    return distinct(np.concatenate(out))


_WID_MASK: Final = (1 << WID_BITS) - 1


def _org_wids(book: ColumnBook, org: str) -> np.ndarray:
    return np.array([i for i, k in enumerate(book.window_keys) if k[0] == org], dtype=np.int64)


def _around(book: ColumnBook, packed: np.ndarray, rules: RuleConfig, rule: BadgeRule) -> np.ndarray:
    """Per packed day key, the packed keys of the days a streak through it reads."""
    days, inverse = np.unique(packed & _WID_MASK, return_inverse=True)
    around = []
    for wid in days.tolist():
        org, _, day = book.window_keys[wid]
        around.append(
            [book.wid(org, "day", d) for d in streak_days_around(day, rule, rules.calendar)]
        )
    user = (packed >> WID_BITS)[:, np.newaxis] << WID_BITS
    return np.asarray(user | np.array(around, np.int64)[inverse])


def _offset_spans(batch: pa.RecordBatch) -> dict[int, tuple[int, int]]:
    """(lowest, highest) source offset per deciding partition of a batch's rows."""
    p = batch["partition"].to_numpy()
    o = batch["offset"].to_numpy()
    return {
        part: (int(o[p == part].min()), int(o[p == part].max())) for part in distinct(p).tolist()
    }


@dataclass(slots=True)
class ColumnApplied:
    """What applying batches changed: slots to write, new thanker pairs, badges, counts."""

    dirty: list[np.ndarray] = field(default_factory=list)
    new_pairs: list[np.ndarray] = field(default_factory=list)  # slot << 32 | actor uid
    badges: list[BadgeAward] = field(default_factory=list)
    replayed: int = 0
    applied: int = 0
    event_times: list[np.ndarray] = field(default_factory=list)
    value_thanks: list[list[np.ndarray]] = field(default_factory=list)  # VALUE_THANKS columns

    def dirty_slots(self) -> np.ndarray:
        return distinct(np.concatenate(self.dirty)) if self.dirty else np.empty(0, np.int64)

    def thanker_pairs(self) -> np.ndarray:
        return np.concatenate(self.new_pairs) if self.new_pairs else np.empty(0, np.int64)

    def value_thanks_columns(self) -> list[np.ndarray]:
        """`kudos.value_thanks` columns (org, window, start s, value, user, thanker,
        partition, offset) of every batch applied."""
        if not self.value_thanks:
            return [np.empty(0, dtype=object)] * 6 + [np.empty(0, dtype=np.int64)] * 2
        return [np.concatenate(c) for c in zip(*self.value_thanks, strict=True)]


@dataclass(slots=True)
class _Entries:
    """One entry per (effect row, window) of a batch, kind-major: entry = kind * rows + row."""

    row: np.ndarray
    kind: np.ndarray
    slot: np.ndarray
    ok: np.ndarray  # applied for the first time (above the key's high-water mark)
    metric: np.ndarray
    weight: np.ndarray
    new_thanker: np.ndarray


def apply_batch(
    batch: pa.RecordBatch, keys: BatchKeys, book: ColumnBook, out: ColumnApplied
) -> None:
    """Apply one in-order batch of effects (module docstring) to `book`."""
    n = batch.num_rows
    if not n:
        return
    part = batch["partition"].to_numpy()
    offset = batch["offset"].to_numpy()
    metric = batch["metric"].to_numpy().astype(np.int64)
    at = batch["occurred_at"].to_numpy()
    parts, inverse = np.unique(part, return_inverse=True)
    col = np.array([book.column_of(int(p)) for p in parts.tolist()], dtype=np.int64)[inverse]
    slot = book.slots(keys.packed.ravel())
    row = np.tile(np.arange(n, dtype=np.int64), len(KINDS))
    kind = np.repeat(np.arange(len(KINDS), dtype=np.int64), n)
    ok = offset[row] > book.hwm[slot, col[row]]
    weights = np.array([[r.weight(m) for m in METRIC_CODES] for r in keys.rules], np.float64)
    e = _Entries(
        row,
        kind,
        slot,
        ok,
        metric[row],
        weights[keys.org_code[row], metric[row]],
        np.zeros(len(row), dtype=bool),
    )
    idx = np.flatnonzero(ok)
    np.add.at(book.counts, (slot[idx], e.metric[idx]), 1)
    np.maximum.at(book.hwm, (slot[idx], col[row[idx]]), offset[row[idx]])
    _add_thankers(book, e, idx, keys.actor, out)
    _value_thanks(batch, book, e, idx, out)
    dirty, inverse = distinct_inverse(slot[idx])
    _add_decay(book, e, idx, at, keys, dirty, inverse)
    out.dirty.append(dirty)
    on_all = kind == _ALL
    out.replayed += int(np.count_nonzero(on_all & ~ok))
    out.applied += int(np.count_nonzero(on_all & ok))
    out.event_times.append(at[row[on_all & ok]])
    _badges(batch, book, e, keys, out)


def _add_thankers(
    book: ColumnBook, e: _Entries, idx: np.ndarray, actor: np.ndarray, out: ColumnApplied
) -> None:
    received = idx[e.metric[idx] == RECEIVED_CODE]
    if not len(received):
        return
    pair = (e.slot[received] << 32) | actor[e.row[received]]
    unique, first = np.unique(pair, return_index=True)
    pos = np.searchsorted(book.pairs, unique)
    known = pos < len(book.pairs)
    known[known] = book.pairs[pos[known]] == unique[known]
    new = unique[~known]
    if not len(new):
        return
    e.new_thanker[received[first[~known]]] = True
    np.add.at(book.thankers_n, new >> 32, 1)
    book.pairs = _merged(book.pairs, new)
    out.new_pairs.append(new)


def _value_thanks(
    batch: pa.RecordBatch, book: ColumnBook, e: _Entries, idx: np.ndarray, out: ColumnApplied
) -> None:
    """The `kudos.value_thanks` rows of the entries `idx` (applied for the first time):
    per thanks received that carries values, one per (window, value)."""
    values = batch["values"]
    offsets = np.asarray(values.offsets, dtype=np.int64)
    counts = np.diff(offsets)
    sel = idx[e.metric[idx] == RECEIVED_CODE]
    sel = sel[counts[e.row[sel]] > 0]
    if not len(sel):
        return
    n = counts[e.row[sel]]
    entry = np.repeat(sel, n)
    row = e.row[entry]
    # The j-th value of a row is item offsets[row] + j of the (unsliced) child array.
    ends = np.cumsum(n)
    item = offsets[row] + np.arange(int(ends[-1])) - np.repeat(ends - n, n)
    org, window, start, _, _ = _window_columns(book, book.slot_key[e.slot[entry]] & _WID_MASK)
    at = pa.array(row)
    out.value_thanks.append(
        [
            org,
            window,
            start,
            values.values.take(pa.array(item)).to_numpy(zero_copy_only=False),
            batch["user_id"].take(at).to_numpy(zero_copy_only=False),
            batch["actor_id"].take(at).to_numpy(zero_copy_only=False),
            batch["partition"].to_numpy()[row].astype(np.int64),
            batch["offset"].to_numpy()[row],
        ]
    )


def _add_decay(
    book: ColumnBook,
    e: _Entries,
    idx: np.ndarray,
    at: np.ndarray,
    keys: BatchKeys,
    slots: np.ndarray,
    inv: np.ndarray,
) -> None:
    """Closed form of `WindowTotals.add_decayed` over every point of the batch (`slots`:
    the distinct slots of `e.slot[idx]`, `inv` their index per point)."""
    if not len(idx):
        return
    halves = np.array([r.decay_half_life_ms for r in keys.rules], dtype=np.float64)
    half = halves[keys.org_code[e.row[idx]]]
    t = at[e.row[idx]]
    fresh = (book.decay[slots] == 0.0) & (book.decay_at[slots] == 0)
    latest = np.where(fresh, np.iinfo(np.int64).min, book.decay_at[slots])
    np.maximum.at(latest, inv, t)
    points = np.bincount(
        inv, weights=e.weight[idx] * np.exp2(-(latest[inv] - t) / half), minlength=len(slots)
    )
    slot_half = np.empty(len(slots))
    slot_half[inv] = half
    kept = book.decay[slots] * np.exp2(-(latest - book.decay_at[slots]) / slot_half)
    book.decay[slots] = np.where(fresh, 0.0, kept) + points
    book.decay_at[slots] = latest


# --- badges --------------------------------------------------------------------------------


def _values(book: ColumnBook, slots: np.ndarray, rules: RuleConfig, column: int) -> np.ndarray:
    if column < 4:
        return np.asarray(book.counts[slots, column])
    if column == 4:
        return np.asarray(book.thankers_n[slots])
    w = np.array([rules.weight(m) for m in METRIC_CODES], dtype=np.int64)
    return np.asarray(book.counts[slots] @ w)


def _increments(e: _Entries, sel: np.ndarray, column: int) -> np.ndarray:
    if column < 4:
        inc = e.metric[sel] == column
    elif column == 4:
        inc = e.new_thanker[sel]
    else:
        inc = e.weight[sel]
    return np.asarray(inc, dtype=np.int64)


def _badges(
    batch: pa.RecordBatch, book: ColumnBook, e: _Entries, keys: BatchKeys, out: ColumnApplied
) -> None:
    org_code = keys.org_code[e.row]
    for code, rules in enumerate(keys.rules):
        for rule in rules.badge_rules:
            window = {"first": "all", "streak": "day"}.get(rule.kind, rule.window)
            changed = _CHANGED_MASK["shares" if rule.kind == "streak" else rule.metric][e.metric]
            sel = np.flatnonzero(
                e.ok & (org_code == code) & (e.kind == KINDS.index(window)) & changed
            )
            if len(sel):
                _rule_badges(batch, book, e, sel, rules, rule, out)


def _rule_badges(
    batch: pa.RecordBatch,
    book: ColumnBook,
    e: _Entries,
    sel: np.ndarray,
    rules: RuleConfig,
    rule: BadgeRule,
    out: ColumnApplied,
) -> None:
    order = sel[np.argsort(e.slot[sel], kind="stable")]
    slots, starts = np.unique(e.slot[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    column = _VALUE_AT[rule.metric]
    if rule.kind == "threshold":
        after = _values(book, slots, rules, column)
        candidates = np.flatnonzero(after >= rule.threshold)
    elif rule.kind == "first":
        candidates = np.arange(len(slots))
    else:
        shares_in = np.diff(np.append(starts, len(order)))
        candidates = np.flatnonzero(book.counts[slots, SHARES_CODE] == shares_in)
    bit = np.uint64(1 << rules.badge_rules.index(rule))
    if rule.kind == "streak":
        candidates = candidates[_may_streak(book, slots[candidates], rules, rule)]
    else:
        candidates = candidates[(book.badge_bits[slots[candidates]] & bit) == 0]
        book.badge_bits[slots[candidates]] |= bit  # awarded by now, if not before
    for i in candidates.tolist():
        org, _, start, user = book.key_of(int(slots[i]))
        if (org, user, rule.name, 0 if rule.kind == "first" else start) in book.awarded:
            continue
        mine = order[starts[i] : ends[i]]
        if rule.kind == "streak":
            _streaks(book, org, user, start, rules, rule, out)
        elif rule.kind == "first":
            r = int(e.row[mine[0]])
            p, o = batch["partition"][r].as_py(), batch["offset"][r].as_py()
            evidence = f"first counted {rule.metric} from event at {p}:{o}"
            award_once(book.awarded, out.badges, org, user, rule, 0, rules, evidence)
        else:
            inc = _increments(e, mine, column)
            running = int(after[i]) - int(inc.sum()) + np.cumsum(inc)
            value = int(running[np.argmax(running >= rule.threshold)])
            award_once(
                book.awarded, out.badges, org, user, rule, start, rules, f"{value} {rule.metric}"
            )


def _may_streak(
    book: ColumnBook, slots: np.ndarray, rules: RuleConfig, rule: BadgeRule
) -> np.ndarray:
    """Which day keys have at least `rule.days` share days within a streak's span around
    them: the others cannot end or hold a streak, and need no walk."""
    if not len(slots):
        return np.zeros(0, dtype=bool)
    keys = _around(book, book.slot_key[slots], rules, rule)
    found = book.find(keys.ravel()).reshape(keys.shape)
    active = (found >= 0) & (book.counts[np.maximum(found, 0), SHARES_CODE] > 0)
    return np.asarray(active.sum(axis=1) >= rule.days)


def _streaks(
    book: ColumnBook,
    org: str,
    user: str,
    day: int,
    rules: RuleConfig,
    rule: BadgeRule,
    out: ColumnApplied,
) -> None:
    """Every streak end through `day` (scorebook._streaks_through, on the columns)."""
    cal = rules.calendar
    days = streak_days_around(day, rule, cal)
    slots = book.find(np.array([book.packed((org, "day", d, user)) for d in days], np.int64))
    active = [s >= 0 and bool(book.counts[s, SHARES_CODE] > 0) for s in slots.tolist()]
    weeks = [cal.window_start("week", d) for d in days]
    for end in streak_ends(active, weeks, rule.span_days - 1, rule):
        freezes = "" if rule.freezes_per_week == 0 else " (with freeze days)"
        evidence = f"counted shares on {rule.days} days{freezes}"
        award_once(book.awarded, out.badges, org, user, rule, days[end], rules, evidence)


def apply_effects_batch(
    batch: pa.RecordBatch, book: ColumnBook, rules_for: RulesLookup, out: ColumnApplied
) -> None:
    """`batch_keys` + `apply_batch` for a book that needs no loading (tests, replays)."""
    apply_batch(batch, batch_keys(batch, book, rules_for), book, out)


def held_totals(book: ColumnBook, keys: Iterable[WindowKey]) -> dict[WindowKey, WindowTotals]:
    out = {}
    for key in keys:
        t = book.totals(key)
        if t is not None:
            out[key] = t
    return out


def in_order_runs(batches: Sequence[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Consecutive messages of one effects partition joined into as few batches as
    `apply_batch` can apply at once, in their order: a message joins the run before it
    when none of its deciding partitions' offsets goes back to or below the run's."""
    runs: list[list[pa.RecordBatch]] = []
    highest: dict[int, int] = {}  # of the last run, per deciding partition
    for b in batches:
        spans = _offset_spans(b)
        if runs and all(lo > highest.get(p, -1) for p, (lo, _) in spans.items()):
            runs[-1].append(b)
        else:
            runs.append([b])
            highest = {}
        for p, (_, hi) in spans.items():
            highest[p] = max(highest.get(p, -1), hi)
    return [
        run[0] if len(run) == 1 else pa.Table.from_batches(run).combine_chunks().to_batches()[0]
        for run in runs
        if sum(b.num_rows for b in run)
    ]


@dataclass(frozen=True, slots=True)
class ScoreColumns:
    """`kudos.score_state` values of some keys as they are now (a snapshot), by column;
    `wid` and `score` for the boards. Window starts are epoch seconds."""

    org: np.ndarray
    window: np.ndarray
    start_s: np.ndarray
    user: np.ndarray
    counts: np.ndarray  # (rows, 4) by metric code
    distinct: np.ndarray
    score: np.ndarray
    hwm_partitions: pa.Array
    hwm_offsets: pa.Array
    version: np.ndarray
    decay: np.ndarray
    decay_at: np.ndarray
    half_life_s: np.ndarray
    wid: np.ndarray

    def __len__(self) -> int:
        return len(self.wid)

    def take(self, rows: np.ndarray) -> ScoreColumns:
        picked = pa.array(rows, type=pa.int64())
        return ScoreColumns(
            *(
                getattr(self, f).take(picked) if f.startswith("hwm") else getattr(self, f)[rows]
                for f in self.__dataclass_fields__
            )
        )


def score_columns(book: ColumnBook, slots: np.ndarray, rules_for: RulesLookup) -> ScoreColumns:
    """The rows of these slots, as `stages.state_store.score_row` would give them."""
    packed = book.slot_key[slots]
    uid = packed >> WID_BITS
    wid = packed & ((1 << WID_BITS) - 1)
    org, window, start, keys, inv = _window_columns(book, wid)
    rules = [rules_for(k[0]) for k in keys]
    weights = np.array([[r.weight(m) for m in METRIC_CODES] for r in rules] or [[0] * 4])[inv]
    half = np.array([r.decay_half_life_ms / 1000 for r in rules] or [0.0], np.float64)[inv]
    counts = book.counts[slots]
    order = np.argsort(np.array(book.partitions, dtype=np.int64), kind="stable")
    marks = book.hwm[slots][:, order]
    held = marks >= 0
    lengths = np.concatenate(([0], np.cumsum(held.sum(axis=1)))).astype(np.int32)
    parts = np.broadcast_to(np.array(book.partitions, np.int64)[order], marks.shape)[held]
    return ScoreColumns(
        org,
        window,
        start,
        book.users.name[uid],
        counts,
        book.thankers_n[slots],
        (counts * weights).sum(axis=1).astype(np.int64) if len(slots) else np.zeros(0, np.int64),
        pa.ListArray.from_arrays(pa.array(lengths), pa.array(parts, pa.uint32())),
        pa.ListArray.from_arrays(pa.array(lengths), pa.array(marks[held], pa.int64())),
        np.where(held, marks + 1, 0).sum(axis=1).astype(np.uint64),
        book.decay[slots],
        book.decay_at[slots],
        half,
        wid,
    )


def _window_columns(
    book: ColumnBook, wid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, WindowName, int]], np.ndarray]:
    """(org, window, start s) per row of window ids; the distinct windows and the inverse."""
    held, inv = np.unique(wid, return_inverse=True)
    keys = [book.window_keys[w] for w in held.tolist()]
    org = np.array([k[0] for k in keys] or [""], dtype=object)[inv]
    window = np.array([k[1] for k in keys] or [""], dtype=object)[inv]
    start = np.array([k[2] for k in keys] or [0], dtype=np.int64)[inv] // 1000
    return org, window, start, keys, inv


def thanker_columns(book: ColumnBook, pairs: np.ndarray) -> list[np.ndarray]:
    """`kudos.thankers` columns (org, window, start s, user, thanker) of thanker pairs."""
    packed = book.slot_key[pairs >> 32]
    org, window, start, _, _ = _window_columns(book, packed & ((1 << WID_BITS) - 1))
    user = book.users.name[packed >> WID_BITS]
    return [org, window, start, user, book.users.name[pairs & 0xFFFFFFFF]]


def value_badge_keys(
    valued: Sequence[np.ndarray], rules_for: RulesLookup
) -> dict[tuple[str, WindowName, str], set[tuple[str, int]]]:
    """Of `ColumnApplied.value_thanks_columns`, the keys that badge rules naming a value
    read: (org, window, value) -> {(user, start ms)}."""
    org, window, start, value, user = valued[:5]
    out: dict[tuple[str, WindowName, str], set[tuple[str, int]]] = {}
    wanted: dict[str, set[tuple[str, str]]] = {}
    for o in distinct(np.asarray(org, dtype=str)).tolist() if len(org) else []:
        rules = rules_for(o).value_badge_rules
        if rules:
            wanted[o] = {(r.window, str(r.value)) for r in rules}
    if not wanted:
        return out
    for o, w, s, v, u in zip(org, window, start.tolist(), value, user, strict=True):
        if (w, v) in wanted.get(o, ()):
            out.setdefault((o, w, v), set()).add((u, s * 1000))
    return out
