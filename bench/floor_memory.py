"""A floor for bench.memory: the least memory a worker can hold for its workload.

One process imports what a worker must (faust and aiokafka, numpy, pyarrow with its
compute module, clickhouse-driver; not pandas) and pushes the workload of bench.memory
(USERS active users in 3 orgs: a THANKS each and a SHARE for every third, 20,000-event
batches) through the state a worker cannot do without, all as numpy columns:

* dedup: each event's 128-bit digest and the end of its hour (int32 hours), sorted:
  20 bytes an event, all 1.33M of them (they must stay until past grace);
* pair-day counts as the deciding stage now holds them (streams/domain/pair_counts.py):
  128-bit digests of org+actor and org+recipient, the day, an int32 count: 44 bytes a
  pair-day (a digest per person keeps scrubbing a forgotten person possible without
  holding names);
* window totals: the contract lets evicted keys reload from ClickHouse
  (KUDOS_MAX_STATE_KEYS), so only a cache of that many keys is held, with what a key
  needs (packed key, 4 counts, distinct thankers, decay and its time, badge bits, last
  use, 4 high-water marks: 92 bytes) and a 16-byte digest and an int32 id per user held;
  names are not held, a batch's rows take them from the batch.

Like `kudos worker` it fixes glibc's mmap threshold and trims the heap (here after each
batch; streams/lifecycle.py). It prints RSS
after the imports, and after the drain the RSS and the peak (VmHWM).

    .venv/bin/python -m bench.floor_memory [USERS=1000000] [MAX_KEYS=500000]
"""

from __future__ import annotations

import gc
import sys
from hashlib import blake2b
from pathlib import Path

import aiokafka  # noqa: F401
import clickhouse_driver  # noqa: F401
import faust  # noqa: F401
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams.domain.pair_counts import pair_keys
from streams.entry import arrow_without_pandas
from streams.lifecycle import fixed_mmap_threshold, release_free_heap

fixed_mmap_threshold()  # as `kudos worker` does
arrow_without_pandas()

ORGS = ("acme", "globex", "initech")
HOUR_MS, DAY_MS, BATCH = 3_600_000, 86_400_000, 20_000
WINDOWS = (HOUR_MS, DAY_MS, 7 * DAY_MS, 0)  # hour, day, week, all-time


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def h16(texts: list[str]) -> np.ndarray:
    raw = b"".join(blake2b(t.encode(), digest_size=16).digest() for t in texts)
    return np.frombuffer(raw, dtype="S16")


class Sorted:
    """Sorted unique keys with value columns (numpy), merged a batch at a time."""

    def __init__(self, key_dtype: str, **columns: str) -> None:
        self.keys = np.zeros(0, dtype=key_dtype)
        self.cols = {n: np.zeros(0, dtype=d) for n, d in columns.items()}

    def upsert(self, keys: np.ndarray) -> np.ndarray:
        """Each key's row, adding missing keys with zeros."""
        new = np.unique(keys)
        new = new[~self.has(new)]
        if len(new):
            at = np.searchsorted(self.keys, new)
            self.keys = np.insert(self.keys, at, new)
            for n, c in self.cols.items():
                self.cols[n] = np.insert(c, at, np.zeros((len(new), *c.shape[1:]), c.dtype), axis=0)
        out: np.ndarray = np.searchsorted(self.keys, keys)
        return out

    def has(self, keys: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        out: np.ndarray = self.keys[at] == keys
        return out

    def keep(self, mask: np.ndarray) -> None:
        self.keys = self.keys[mask]
        self.cols = {n: c[mask] for n, c in self.cols.items()}

    def nbytes(self) -> int:
        return self.keys.nbytes + sum(c.nbytes for c in self.cols.values())


def batch_events(users: int, lo: int, hi: int, now_ms: int) -> dict[str, object]:
    """Events of users lo..hi as bench.memory makes them, as Arrow columns."""
    per_org = users // len(ORGS)
    ids, orgs, actors, recipients, at = [], [], [], [], []
    for i in range(lo, hi):
        org, n = ORGS[i % len(ORGS)], i // len(ORGS)
        user, t = f"{org}-{n:07d}", now_ms - 3_000_000 + (i * 3_000_000) // users
        actor = f"{org}-{(n * 7919 + 1) % per_org:07d}"
        ids.append(f"{org}\x00mem-{i:08d}-thanks-0000-000000000000")
        orgs.append(org), actors.append(actor), recipients.append(user), at.append(t)
        if i % 3 == 0:
            ids.append(f"{org}\x00mem-{i:08d}-share-00000-000000000000")
            orgs.append(org), actors.append(user), recipients.append(""), at.append(t)
    return {
        "id": pa.array(ids, pa.string()),
        "org": pa.array(orgs, pa.string()),
        "actor": pa.array(actors, pa.string()),
        "recipient": pa.array(recipients, pa.string()),
        "at": np.asarray(at, dtype=np.int64),
    }


def decide(b: dict[str, object], seen: Sorted, pairs: Sorted) -> None:
    """Dedup and pair-day caps (cap 5: every THANKS here counts)."""
    ids = b["id"].to_pylist()  # type: ignore[attr-defined]
    keys = h16(ids)
    fresh = ~seen.has(keys)
    rows = seen.upsert(keys[fresh])
    seen.cols["until"][rows] = -(-b["at"][fresh] // HOUR_MS)  # type: ignore[index]
    thanks = np.asarray(pc.not_equal(b["recipient"], ""))
    org = np.asarray(b["org"].to_pylist(), dtype=object)  # type: ignore[attr-defined]
    actor = b["actor"].to_pylist()  # type: ignore[attr-defined]
    rec = b["recipient"].to_pylist()  # type: ignore[attr-defined]
    a = h16([f"{o}\x00{x}" for o, x in zip(org[thanks], np.asarray(actor)[thanks], strict=True)])
    r = h16([f"{o}\x00{x}" for o, x in zip(org[thanks], np.asarray(rec)[thanks], strict=True)])
    day = b["at"][thanks] // DAY_MS * DAY_MS  # type: ignore[index]
    packed = pair_keys(a, r, day)
    rows = pairs.upsert(packed)
    np.add.at(pairs.cols["count"], rows, 1)


def aggregate(b: dict[str, object], users: Sorted, book: Sorted, tick: int, max_keys: int) -> None:
    """The four windows of each point's user: counts, last use; evict past max_keys."""
    orgs = b["org"].to_pylist()  # type: ignore[attr-defined]
    actor, rec = b["actor"].to_pylist(), b["recipient"].to_pylist()  # type: ignore[attr-defined]
    who = [f"{o}\x00{x}" for o, x in zip(orgs, actor, strict=True)]
    who += [f"{o}\x00{x}" for o, x in zip(orgs, rec, strict=True) if x]
    digests = h16(who)
    urow = users.upsert(digests)
    fresh = users.cols["uid"][urow] == 0
    if fresh.any():
        new_rows = np.unique(urow[fresh])
        users.cols["uid"][new_rows] = np.arange(len(new_rows)) + 1 + users.cols["uid"].max()
    uid = users.cols["uid"][urow].astype(np.int64)
    at = np.concatenate([b["at"], b["at"][np.asarray(pc.not_equal(b["recipient"], ""))]])  # type: ignore[index]
    for w, size in enumerate(WINDOWS):
        start = at - at % size if size else np.zeros_like(at)
        wid = (start // HOUR_MS) % (1 << 20) * 4 + w
        rows = book.upsert(uid << 24 | wid)
        np.add.at(book.cols["counts"][:, w % 4], rows, 1)
        book.cols["used"][rows] = tick
    if len(book.keys) > max_keys:
        cut = np.sort(book.cols["used"])[len(book.keys) // 4]
        book.keep(book.cols["used"] > cut)


def main(n_users: int, max_keys: int) -> None:
    gc.collect()
    imported = status("VmRSS")
    seen = Sorted("S16", until=np.int32)
    pairs = Sorted("S40", count=np.int32)
    users = Sorted("S16", uid=np.int32)
    book = Sorted(
        "int64",
        counts="(4,)int32",
        thankers_n=np.int32,
        decay=np.float64,
        decay_at=np.int64,
        badge_bits=np.int64,
        used=np.int64,
        hwm="(4,)int64",
    )
    now = 1_790_000_000_000
    for tick, lo in enumerate(range(0, n_users, BATCH * 3 // 4)):
        b = batch_events(n_users, lo, min(lo + BATCH * 3 // 4, n_users), now)
        decide(b, seen, pairs)
        aggregate(b, users, book, tick, max_keys)
        release_free_heap()
    gc.collect()
    held = {"seen": seen, "pairs": pairs, "users": users, "keys": book}
    print(f"users: {n_users:,}, events: {len(seen.keys):,}, pair-days: {len(pairs.keys):,}")
    print(f"RSS after the imports  {imported / 2**20:6.0f} MB  (numpy, pyarrow, faust, ...)")
    for name, s in held.items():
        print(f"  {name:6s} {len(s.keys):10,d} rows  {s.nbytes() / 2**20:6.1f} MB")
    print(f"RSS after the drain  {status('VmRSS') / 2**20:6.0f} MB")
    print(f"peak RSS (VmHWM)     {status('VmHWM') / 2**20:6.0f} MB")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 500_000,
    )
