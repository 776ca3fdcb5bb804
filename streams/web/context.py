"""What every area of the HTTP API shares: the running worker it reads (`WebContext`), the
clock, a request's parameters (read by streams/web/params.py only), windows in an org's
calendar (bounds from `streams.domain.windows.window_bounds` only) and the cached people
boards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Hashable
from typing import Final, Protocol, TypeVar

import faust
from faust.web import Request

from schemas.times import now_ms
from schemas.vocabulary import WindowName
from sinks.clickhouse import ClickHouse
from sinks.store import LeaderboardEntry, RecognitionStore
from streams.domain.rules import RulesLookup
from streams.domain.windows import window_bounds
from streams.settings import Settings
from streams.web.admission import ApiReads, HealthProbe
from streams.web.params import Params
from streams.web.readcache import ReadCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
DEFAULT_TOP: Final = 10  # `top` when absent, on every board
MAX_TOP: Final = 1000  # the largest `top` of the API's boards


class Progress(Protocol):
    """What /health/ready reads of the stages' progress (streams/stages/progress.py)."""

    def stalled(self, now: float) -> list[tuple[str, int]]: ...
    def lags(self) -> dict[tuple[str, int], int]: ...


class StoredBoards:
    """Where the aggregating stage of this worker says that it stored leader rows of some
    orgs, and the caches of people boards listen: they reload those boards at once
    (`ReadCache.refresh`) rather than when their answers age out. Rows another worker
    stores are seen when the answers age out (KUDOS_READ_CACHE_MS), as before."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Collection[str]], None]] = []

    def listen(self, listener: Callable[[Collection[str]], None]) -> None:
        self._listeners.append(listener)

    def stored(self, orgs: Collection[str]) -> None:
        for listener in self._listeners:
            listener(orgs)


class WebContext(Protocol):
    """What the views read of a running worker (`streams.app.Kudos` is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def app(self) -> faust.App: ...
    @property
    def api_clickhouse(self) -> ClickHouse: ...
    @property
    def reads(self) -> ApiReads: ...
    @property
    def health(self) -> HealthProbe: ...
    @property
    def progress(self) -> Progress: ...
    @property
    def joined(self) -> asyncio.Event: ...
    @property
    def rules_for(self) -> RulesLookup: ...
    @property
    def stored_boards(self) -> StoredBoards: ...
    async def request_erasure(self, org: str, user: str) -> str: ...


def params(request: Request) -> Params:
    return Params(request.query.items())


def org_window_start(rules_for: RulesLookup, org: str, window: WindowName, at_ms: int) -> int:
    """Start of the org's window containing `at_ms`, in the org's time zone and week."""
    return rules_for(org).calendar.window_start(window, at_ms)


def previous_window_start(
    rules_for: RulesLookup, org: str, window: WindowName, start_ms: int
) -> int | None:
    """Start of the org's window before the one starting at `start_ms`; None for `all`."""
    if window == "all":
        return None
    return org_window_start(rules_for, org, window, start_ms - 1)


def window_scope(q: Params, rules_for: RulesLookup) -> tuple[str, WindowName, int, int | None]:
    """A request's `org` and `window`, and [start, end) of that window holding `at` (now
    when absent) in the org's calendar; `all` has no end."""
    org, window = q.org(), q.window()
    start, end = window_bounds(window, q.at(now_ms()), rules_for(org).calendar)
    return org, window, start, end


def fresh_cache(settings: Settings) -> ReadCache[K, V]:
    """A cache of reads: fresh for KUDOS_READ_CACHE_MS, served stale up to 10 times that."""
    fresh_s = settings.read_cache_ms / 1000
    return ReadCache(fresh_s, 10 * fresh_s)


class Leaderboards:
    """People boards (`sinks.store.RecognitionStore`), read through the API's admission and
    cached (`fresh_cache`)."""

    def __init__(self, kudos: WebContext) -> None:
        self.reads = kudos.reads
        self.rules_for = kudos.rules_for
        self.store = RecognitionStore(kudos.api_clickhouse, kudos.settings.leader_depth)
        self.cache: ReadCache[tuple[str, str, int, int], list[LeaderboardEntry]]
        self.cache = fresh_cache(kudos.settings)
        self.value_cache: ReadCache[tuple[str, str, int, int, str], list[LeaderboardEntry]]
        self.value_cache = fresh_cache(kudos.settings)
        kudos.stored_boards.listen(self.stored)

    def stored(self, orgs: Collection[str]) -> None:
        """Leader rows of `orgs` were stored: reload their boards that people are reading
        (value boards too: a batch's value rows are stored before its leader rows)."""
        self.cache.refresh(lambda key: key[0] in orgs)
        self.value_cache.refresh(lambda key: key[0] in orgs)

    async def value_board(
        self, org: str, window: WindowName, start: int, value: str, top: int
    ) -> list[LeaderboardEntry]:
        """The board of one company value (`payloads.value_entries`)."""
        from streams.web.payloads import value_entries

        rules = self.rules_for(org)
        if value not in rules.value_set:
            return []
        return await self.value_cache.get(
            (org, window, start, top, value),
            lambda: self.reads.run(
                value_entries, self.store, org, window, start, value, top, rules
            ),
        )

    async def get(
        self, org: str, window: WindowName, start: int, top: int
    ) -> list[LeaderboardEntry]:
        return await self.cache.get(
            (org, window, start, top),
            lambda: self.reads.run(self.store.leaderboard, org, window, start, top),
        )
