"""What every area of the HTTP API shares: the running worker it reads (`WebContext`), the
clock, a request's parameters (read by streams/web/params.py only), windows in an org's
calendar (bounds from `streams.domain.windows.window_bounds` only) and the cached people
boards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, cast

import faust
from faust.web import Request

from schemas.times import now_ms
from schemas.vocabulary import (
    BOARD_WINDOWS,
    ROLLING_DAYS,
    BoardMetric,
    BoardWindow,
    WindowName,
)
from sinks.clickhouse import ClickHouse
from sinks.store import LeaderboardEntry, RecognitionStore, UserRank
from streams.domain.rules import RulesLookup
from streams.domain.windows import rolling_days, window_bounds
from streams.settings import Settings
from streams.web.admission import ApiReads, HealthProbe
from streams.web.params import BadRequest, Params
from streams.web.readcache import ReadCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
DEFAULT_TOP: Final = 10  # `top` when absent, on every board
MAX_TOP: Final = 1000  # the largest `top` of the API's boards
DEFAULT_AROUND: Final = 2  # /api/users/{user}/rank: neighbours on each side when absent
MAX_AROUND: Final = 50  # and the most


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


@dataclass(frozen=True, slots=True)
class BoardScope:
    """Which people board a request reads: a window of the org's calendar, or a rolling
    one, whose `days` are the starts of its local days (`start` the first)."""

    org: str
    window: BoardWindow
    start: int
    days: tuple[int, ...] | None = None


def board_scope(q: Params, rules_for: RulesLookup) -> BoardScope:
    """A people board's `org` and `window` (any of BOARD_WINDOWS), holding `at` (now when
    absent) in the org's calendar."""
    org, window = q.org(), q.choice("window", BOARD_WINDOWS, "week")
    at, cal = q.at(now_ms()), rules_for(org).calendar
    if window in ROLLING_DAYS:
        days = tuple(rolling_days(window, at, cal))
        return BoardScope(org, window, days[0], days)
    return BoardScope(org, window, window_bounds(cast(WindowName, window), at, cal)[0])


def value_window(scope: BoardScope) -> WindowName:
    """The window of a value board: value boards have the calendar windows (hour to all);
    a rolling one is a bad request."""
    if scope.days is not None:
        raise BadRequest("value", "boards have calendar windows (hour to all), not rolling")
    return cast(WindowName, scope.window)


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
        self.cache: ReadCache[tuple[str, str, int, int, int, str], list[LeaderboardEntry]]
        self.cache = fresh_cache(kudos.settings)
        self.value_cache: ReadCache[
            tuple[str, str, int, int, int, str, str], list[LeaderboardEntry]
        ]
        self.value_cache = fresh_cache(kudos.settings)
        kudos.stored_boards.listen(self.stored)

    def stored(self, orgs: Collection[str]) -> None:
        """Leader rows of `orgs` were stored: reload their boards that people are reading
        (value boards too: a batch's value rows are stored before its leader rows)."""
        self.cache.refresh(lambda key: key[0] in orgs)
        self.value_cache.refresh(lambda key: key[0] in orgs)

    async def value_board(
        self, scope: BoardScope, value: str, top: int, offset: int, metric: BoardMetric
    ) -> list[LeaderboardEntry]:
        """The board of one company value (`RecognitionStore.value_board`): none, without a
        read, for a value the org's rules do not list (it is ignored for boards). Value
        boards have the calendar windows: a listed value with a rolling window is a 400."""
        rules = self.rules_for(scope.org)
        if value not in rules.value_set:
            return []
        org, window, start = scope.org, value_window(scope), scope.start
        weight = rules.weight_thanks_received
        return await self.value_cache.get(
            (org, window, start, top, offset, metric, value),
            lambda: self.reads.run(
                self.store.value_board, org, window, start, value, top, weight, offset, metric
            ),
        )

    async def get(
        self, scope: BoardScope, top: int, offset: int = 0, metric: BoardMetric = "score"
    ) -> list[LeaderboardEntry]:
        """Ranks `offset` + 1 to `offset` + `top` by `metric` (`RecognitionStore.board`)."""
        org, window, start, days = scope.org, scope.window, scope.start, scope.days
        return await self.cache.get(
            (org, window, start, top, offset, metric),
            lambda: self.reads.run(self.store.board, org, window, start, top, offset, metric, days),
        )

    async def rank(
        self, scope: BoardScope, user: str, metric: BoardMetric, around: int
    ) -> UserRank:
        """One person's rank and neighbours (`RecognitionStore.rank`): a personal read,
        not cached."""
        org, window, start, days = scope.org, scope.window, scope.start, scope.days
        return await self.reads.run(self.store.rank, org, window, start, user, metric, around, days)
