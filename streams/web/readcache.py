"""Leaderboard answers from memory: fresh for a moment, refreshed in the background.

A board read from `kudos.leader_rows` costs a few milliseconds of ClickHouse and of the
worker's single thread for reads; the live page, dashboards and many people ask for the
same few boards again and again. An answer younger than `fresh_s` is served as is. An
older one, up to `stale_s`, is served while one background load replaces it, so a steady
reader never waits for ClickHouse and sees data at most `fresh_s` plus one load behind.
Past `stale_s` (nobody asked for a while) the request waits for a fresh load. Concurrent
loads of one key are shared.

`refresh` is told when what some answers were read from has changed (this worker stored
new leader rows): those someone asked for within `stale_s` are reloaded at once, in the
background, so the next reader gets the new answer without waiting, instead of one that
is up to `fresh_s` plus one load old. Nobody's boards are reloaded for nothing: an answer
nobody asked for lately is left to age out.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    loaded_at: float  # when the load that made `value` was asked for
    value: V
    load: Callable[[], Awaitable[V]]  # how it was loaded, for `refresh`
    asked_at: float  # the last `get` of it


class ReadCache(Generic[K, V]):
    def __init__(self, fresh_s: float, stale_s: float, max_entries: int = 1024) -> None:
        self.fresh_s = fresh_s
        self.stale_s = max(stale_s, fresh_s)
        self.max_entries = max_entries
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}
        # Keys whose running load began before a `refresh`: loaded again once it ends.
        self._again: set[K] = set()

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._entries.get(key)
        if hit is not None:
            now = time.monotonic()
            hit.asked_at = now
            age = now - hit.loaded_at
            if age <= self.fresh_s:
                return hit.value
            if age <= self.stale_s:
                self._start(key, load).add_done_callback(_consume)
                return hit.value
        return await asyncio.shield(self._start(key, load))

    def refresh(self, match: Callable[[K], bool]) -> None:
        """The data of the answers whose key `match`es changed: reload, in the background,
        those asked for within `stale_s` (a load running now began too early: another one
        follows it)."""
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if now - entry.asked_at > self.stale_s or not match(key):
                continue
            if key in self._loading:
                self._again.add(key)
            else:
                self._start(key, entry.load).add_done_callback(_consume)

    def _start(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(self._load(key, load))
        return task

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        started = time.monotonic()  # the answer is as old as the moment it was asked for
        try:
            value = await load()
        finally:
            self._loading.pop(key, None)
        old = self._entries.get(key)
        self._entries[key] = _Entry(started, value, load, old.asked_at if old else started)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if key in self._again:
            self._again.discard(key)
            self._start(key, load).add_done_callback(_consume)
        return value


def _consume(task: asyncio.Future[Any]) -> None:
    """A failed background refresh leaves the old answer; the next stale read retries."""
    if not task.cancelled():
        task.exception()
