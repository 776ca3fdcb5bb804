"""Leaderboard answers from memory: fresh for a moment, refreshed in the background.

A board read from `kudos.leader_rows` costs a few milliseconds of ClickHouse and of the
worker's single thread for reads; the live page, dashboards and many people ask for the
same few boards again and again. An answer younger than `fresh_s` is served as is. An
older one, up to `stale_s`, is served while one background load replaces it, so a steady
reader never waits for ClickHouse and sees data at most `fresh_s` plus one load behind.
Past `stale_s` (nobody asked for a while) the request waits for a fresh load. Concurrent
loads of one key are shared.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    def __init__(self, fresh_s: float, stale_s: float, max_entries: int = 1024) -> None:
        self.fresh_s = fresh_s
        self.stale_s = max(stale_s, fresh_s)
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._entries.get(key)
        if hit is not None:
            loaded_at, value = hit
            age = time.monotonic() - loaded_at
            if age <= self.fresh_s:
                return value
            if age <= self.stale_s:
                self._start(key, load).add_done_callback(_consume)
                return value
        return await asyncio.shield(self._start(key, load))

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
        self._entries[key] = (started, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value


def _consume(task: asyncio.Future[Any]) -> None:
    """A failed background refresh leaves the old answer; the next stale read retries."""
    if not task.cancelled():
        task.exception()
