"""Leaderboard answers from memory: fresh, stale-while-refreshing, expired, shared loads."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from streams.web.readcache import ReadCache


def test_fresh_is_served_stale_is_served_while_refreshing_expired_waits() -> None:
    loads: list[int] = []

    async def scenario() -> None:
        cache: ReadCache[str, int] = ReadCache(fresh_s=0.05, stale_s=0.2)

        async def load() -> int:
            loads.append(len(loads))
            await asyncio.sleep(0.01)
            return len(loads)

        assert await cache.get("k", load) == 1  # nothing cached: waits
        assert await cache.get("k", load) == 1 and len(loads) == 1  # fresh
        await asyncio.sleep(0.06)
        assert await cache.get("k", load) == 1  # stale: served, refresh started
        await asyncio.sleep(0.02)
        assert await cache.get("k", load) == 2 and len(loads) == 2
        await asyncio.sleep(0.25)
        assert await cache.get("k", load) == 3  # expired: waits for the load

    asyncio.run(scenario())


def test_concurrent_misses_share_one_load_and_failures_are_not_cached() -> None:
    calls = 0

    async def scenario() -> None:
        nonlocal calls
        cache: ReadCache[str, int] = ReadCache(fresh_s=1, stale_s=1)

        async def load() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            return 7

        assert await asyncio.gather(*(cache.get("k", load) for _ in range(5))) == [7] * 5
        assert calls == 1

        async def broken() -> int:
            raise RuntimeError("ClickHouse is away")

        with pytest.raises(RuntimeError):
            await cache.get("other", broken)
        assert await cache.get("other", load) == 7

    asyncio.run(scenario())


def test_zero_freshness_always_reads() -> None:
    async def scenario() -> list[int]:
        cache: ReadCache[str, int] = ReadCache(fresh_s=0, stale_s=0)
        n = iter(range(10))

        async def load() -> int:
            return next(n)

        return [await cache.get("k", load) for _ in range(3)]

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_refresh_reloads_answers_being_read_at_once_and_leaves_idle_ones() -> None:
    loads: list[str] = []

    async def scenario() -> None:
        cache: ReadCache[str, int] = ReadCache(fresh_s=0.08, stale_s=0.1)

        def loader(key: str, delay: float = 0.0) -> Callable[[], Awaitable[int]]:
            async def load() -> int:
                loads.append(key)
                await asyncio.sleep(delay)
                return loads.count(key)

            return load

        assert await cache.get("a", loader("a")) == 1
        assert await cache.get("b", loader("b")) == 1
        cache.refresh(lambda key: key == "a")  # only "a" changed
        await asyncio.sleep(0.01)
        # Still fresh, yet the next reader of "a" gets the new answer without waiting.
        assert await cache.get("a", loader("a")) == 2
        assert await cache.get("b", loader("b")) == 1
        await asyncio.sleep(0.15)  # nobody asked for a while: not reloaded for nothing
        cache.refresh(lambda key: True)
        await asyncio.sleep(0.01)
        assert loads == ["a", "b", "a"]

    asyncio.run(scenario())


def test_refresh_during_a_load_loads_again_after_it() -> None:
    async def scenario() -> None:
        cache: ReadCache[str, int] = ReadCache(fresh_s=10, stale_s=10)
        version = 0  # what the store holds
        loads = 0

        async def load() -> int:
            nonlocal loads
            loads += 1
            seen = version
            await asyncio.sleep(0.02)
            return seen

        assert await cache.get("k", load) == 0
        cache.refresh(lambda key: True)  # a load starts, reading version 0
        await asyncio.sleep(0.005)
        version = 1
        cache.refresh(lambda key: True)  # began too early: another load follows it
        await asyncio.sleep(0.06)
        assert loads == 3
        assert await cache.get("k", load) == 1

    asyncio.run(scenario())
