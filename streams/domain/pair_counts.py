"""Counted THANKS per (org, actor, recipient, local day) as sorted numpy columns.

The deciding stage holds a count for every pair-day of the last two days or so: at a
million pairs a dict of tuples of names costs ~200 bytes an entry, these columns 44.
An entry is a 40-byte key, the 128-bit BLAKE2b digest of org + actor, that of org +
recipient (`user_digest`) and the day start (int64 ms, little-endian), with an int32
count. Two distinct (org, user) collide with odds of about n^2 / 2^129 (1e-26 for ten
million people), as `rules.seen_key` argues for event ids. A digest per person (not per
pair) keeps `scrub` possible: a forgotten person's pairs are found by their digest.

Single updates (the per-event path, rebuilding from stored decisions) change a held count
in place or wait in a dict until the next vectorised use, as `rules.SeenSet` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from hashlib import blake2b
from typing import Final

import numpy as np

PairDay = tuple[str, str, str, int]  # org, actor, recipient, day start ms
KEY: Final = "S40"
_DIGEST: Final = 16


def user_digest(org: str, user: str) -> bytes:
    return blake2b(f"{org}\x00{user}".encode(), digest_size=_DIGEST).digest()


def pair_key(key: PairDay) -> bytes:
    org, actor, recipient, day = key
    return (
        user_digest(org, actor)
        + user_digest(org, recipient)
        + int(day).to_bytes(8, "little", signed=True)
    )


def pair_keys(actor: np.ndarray, recipient: np.ndarray, day: np.ndarray) -> np.ndarray:
    """The S40 keys of digests (S16 arrays) and day starts (int64), row by row."""
    raw = np.empty((len(day), 40), dtype=np.uint8)
    raw[:, :16] = actor.view(np.uint8).reshape(-1, 16)
    raw[:, 16:32] = recipient.view(np.uint8).reshape(-1, 16)
    raw[:, 32:] = np.ascontiguousarray(day, dtype="<i8").view(np.uint8).reshape(-1, 8)
    out: np.ndarray = raw.view(KEY).ravel()
    return out


def _bytes(keys: np.ndarray) -> np.ndarray:
    out: np.ndarray = keys.view(np.uint8).reshape(-1, 40)
    return out


class PairCounts:
    """Counts by pair-day key; see the module's docstring."""

    __slots__ = ("_counts", "_keys", "_pending")

    def __init__(self, items: Iterable[tuple[PairDay, int]] = ()) -> None:
        self._keys = np.zeros(0, dtype=KEY)
        self._counts = np.zeros(0, dtype=np.int32)
        self._pending: dict[bytes, int] = {pair_key(k): n for k, n in items}

    def __len__(self) -> int:
        self._flush()
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            other = PairCounts(other.items())
        if not isinstance(other, PairCounts):
            return NotImplemented
        self._flush()
        other._flush()
        return bool(
            np.array_equal(self._keys, other._keys) and np.array_equal(self._counts, other._counts)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PairCounts({len(self)} pair-days)"

    def values(self) -> list[int]:
        self._flush()
        out: list[int] = self._counts.tolist()
        return out

    def get(self, key: PairDay, default: int = 0) -> int:
        raw = pair_key(key)
        if raw in self._pending:
            return self._pending[raw]
        at = self._find(np.frombuffer(raw, dtype=KEY))
        return int(self._counts[at[0]]) if at[0] >= 0 else default

    def __setitem__(self, key: PairDay, n: int) -> None:
        raw = pair_key(key)
        at = -1 if raw in self._pending else int(self._find(np.frombuffer(raw, dtype=KEY))[0])
        if at >= 0:
            self._counts[at] = n
        else:
            self._pending[raw] = n

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The count of each key (an S40 array; 0 when absent), as int64."""
        self._flush()
        at = self._find(keys)
        out = np.zeros(len(keys), dtype=np.int64)
        held = at >= 0
        out[held] = self._counts[at[held]]
        return out

    def put(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Set the count of each key (distinct keys, an S40 array)."""
        self._flush()
        at = self._find(keys)
        held = at >= 0
        self._counts[at[held]] = counts[held]
        self._insert(keys[~held], counts[~held])

    def prune(self, horizon: int) -> None:
        """Forget the pair-days that start before `horizon`."""
        self._flush()
        day = _bytes(self._keys)[:, 32:].copy().view("<i8").ravel()
        keep = day >= horizon
        self._keys, self._counts = self._keys[keep], self._counts[keep]

    def involves(self, org: str, user: str) -> bool:
        """Whether any pair-day has this person as actor or recipient."""
        self._flush()
        d = np.frombuffer(user_digest(org, user), dtype=np.uint8)
        raw = _bytes(self._keys)
        return bool(((raw[:, :16] == d).all(1) | (raw[:, 16:32] == d).all(1)).any())

    def scrub(self, org: str, user: str, token: str) -> tuple[list[bytes], list[int], list[int]]:
        """Drop the pair-days to this person and give the ones from them to `token`
        (merging counts). Returns the dropped ones: actor digests, days, counts."""
        self._flush()
        d = np.frombuffer(user_digest(org, user), dtype=np.uint8)
        raw = _bytes(self._keys)
        to_user = (raw[:, 16:32] == d).all(1)
        gone = raw[to_user]
        dropped = (
            [bytes(r[:16]) for r in gone],
            gone[:, 32:].copy().view("<i8").ravel().tolist(),
            self._counts[to_user].tolist(),
        )
        keys, counts = self._keys[~to_user], self._counts[~to_user]
        raw = _bytes(keys).copy()
        from_user = (raw[:, :16] == d).all(1)
        if from_user.any():
            raw[from_user, :16] = np.frombuffer(user_digest(org, token), dtype=np.uint8)
            merged, inverse = np.unique(raw.view(KEY).ravel(), return_inverse=True)
            summed = np.zeros(len(merged), dtype=np.int64)
            np.add.at(summed, inverse, counts)
            keys, counts = merged, summed.astype(np.int32)
        self._keys, self._counts = keys, counts
        return dropped

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Each key's row in the sorted columns, or -1."""
        if not len(self._keys):
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        out: np.ndarray = np.where(self._keys[at] == keys, at, -1)
        return out

    def _insert(self, keys: np.ndarray, counts: np.ndarray) -> None:
        if not len(keys):
            return
        order = np.argsort(keys)
        keys, counts = keys[order], counts[order]
        at = np.searchsorted(self._keys, keys)
        self._keys = np.insert(self._keys, at, keys)
        self._counts = np.insert(self._counts, at, counts.astype(np.int32))

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        keys = np.frombuffer(b"".join(pending), dtype=KEY)
        counts = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
        self._insert(keys, counts)
