"""The live page (streams/web/static/) and what it reads: rank changes, a badge feed, one
user's score history, the live stream of snapshots, and the page's own assets.

`PageReads` reads (and caches) a snapshot's parts; `LiveStreams` serves /api/live;
`register_page_views` only maps routes to them.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any, Final, cast

from aiohttp import web
from faust.web import Request, Response, View

from schemas.times import format_rfc3339, now_ms
from schemas.vocabulary import HISTORY_WINDOWS, WindowName
from sinks.directory import DirectoryStore
from sinks.pagedata import MAX_BADGES, MAX_POINTS, PageData, PreviousRank
from streams import metrics
from streams.domain.explain import Page
from streams.domain.rules import RulesLookup
from streams.web.context import (
    DEFAULT_TOP,
    MAX_TOP,
    BoardScope,
    Leaderboards,
    WebContext,
    fresh_cache,
    org_window_start,
    params,
    previous_window_start,
)
from streams.web.live import LiveFeed, LiveKey, StreamLimits, sse_message
from streams.web.params import Params, parse_user
from streams.web.payloads import badges_payload, changes_payload, team_board_payload
from streams.web.readcache import ReadCache

LIVE_HEARTBEAT_S: Final = 15.0  # an SSE comment keeps proxies from closing an idle stream
LIVE_MAX_STREAM_S: Final = 600.0  # then the stream ends and EventSource reconnects
LIVE_RETRY_MS: Final = 1000  # EventSource reconnects this soon after a stream ends
NO_POINTS_RETRY_MS: Final = 15_000  # ... or this soon, for an org without points yet
LIVE_REFUSED_RETRY_S: Final = 10  # Retry-After of a 429 (too many streams)
PAGE_MAX_TOP: Final = 100
PAGE_BADGES: Final = 10
HISTORY_POINTS: Final = 14
SLOW_FRESH_S: Final = 5.0  # closed windows and the directory's teams change rarely
LIVE_REFUSALS: Final = {
    "live_client": "too many live streams from this address: close one or retry later",
    "live_total": "too many live streams on this worker: retry later",
}
STATIC_TYPES: Final = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# The page loads nothing from anywhere else and runs no inline code: a user id or display
# name that slipped into markup could not run as script.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def history_starts(
    rules_for: RulesLookup, org: str, window: WindowName, at_ms: int, points: int
) -> list[int]:
    """Starts of `points` consecutive windows of the org's calendar ending with the one
    containing `at_ms`, oldest first; fewer where they would begin before 1970 (90 years
    back from 2000: ClickHouse's DateTime, and kudos' data, begin in 1970)."""
    starts = [org_window_start(rules_for, org, window, at_ms)]
    while len(starts) < points:
        before = org_window_start(rules_for, org, window, starts[-1] - 1)
        if before < 0:
            break
        starts.append(before)
    return starts[::-1]


def empty_snapshot(
    rules_for: RulesLookup, key: LiveKey, min_members: int, at_ms: int
) -> dict[str, Any]:
    """The live snapshot of an org without any points: its shape, nothing in it, and
    `no_data` true (the page says so and EventSource asks again after NO_POINTS_RETRY_MS)."""
    org, window, _top, view = key
    start = org_window_start(rules_for, org, window, at_ms)
    before = previous_window_start(rules_for, org, window, start)
    return {
        "org": org,
        "window": window,
        "view": view,
        "has_teams": False,
        "no_data": True,
        "leaderboard": changes_payload(org, window, start, before, [], {})
        if view == "people"
        else None,
        "teams": team_board_payload(org, window, start, "team", min_members, [])
        if view == "teams"
        else None,
        "badges": badges_payload(org, None, [], Page(PAGE_BADGES, 0)),
    }


async def open_stream(raw: web.Request, retry_ms: int) -> web.StreamResponse:
    stream = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await stream.prepare(raw)
    await stream.write(f"retry: {retry_ms}\n\n".encode())
    return stream


async def pump(
    raw: web.Request, stream: web.StreamResponse, queue: asyncio.Queue[str | None]
) -> None:
    """Snapshots from `queue` to the browser until it goes away, the feed closes or
    LIVE_MAX_STREAM_S have passed; a comment every LIVE_HEARTBEAT_S."""
    started = last_write = time.monotonic()
    while time.monotonic() - started < LIVE_MAX_STREAM_S:
        if raw.transport is None or raw.transport.is_closing():
            return  # the browser went away
        try:
            body = await asyncio.wait_for(queue.get(), 1.0)
        except TimeoutError:
            if time.monotonic() - last_write >= LIVE_HEARTBEAT_S:
                await stream.write(b": ping\n\n")
                last_write = time.monotonic()
            continue
        if body is None:
            return
        await stream.write(sse_message("snapshot", body))
        last_write = time.monotonic()


class PageReads:
    """The parts of the page's answers, each read through the API's admission and cached."""

    def __init__(self, kudos: WebContext) -> None:
        settings = kudos.settings
        self.reads = kudos.reads
        self.rules_for = kudos.rules_for
        self.boards = Leaderboards(kudos)
        self.pages = PageData(kudos.api_clickhouse, settings.leader_depth, settings.team_min_size)
        self.directory = DirectoryStore(kudos.api_clickhouse, settings.team_min_size)
        self.previous_boards: ReadCache[
            tuple[str, str, int, tuple[str, ...]], dict[str, PreviousRank]
        ] = ReadCache(SLOW_FRESH_S, 10 * SLOW_FRESH_S)
        self.feeds: ReadCache[tuple[str, int, int], list[dict[str, Any]]] = fresh_cache(settings)
        self.teams: ReadCache[tuple[str, str, int, int], list[Any]] = fresh_cache(settings)
        self.has_teams: ReadCache[str, bool] = ReadCache(SLOW_FRESH_S, 10 * SLOW_FRESH_S)
        # Whether an org has points at all: bounded (4,096 orgs), so made-up orgs cost little;
        # never served stale, so a page waiting for an org's first points sees them soon.
        self.has_points: ReadCache[str, bool] = ReadCache(SLOW_FRESH_S, SLOW_FRESH_S, 4096)

    async def board_with_changes(
        self, org: str, window: WindowName, at_ms: int, top: int
    ) -> dict[str, Any]:
        start = org_window_start(self.rules_for, org, window, at_ms)
        entries = await self.boards.get(BoardScope(org, window, start), top)
        before = previous_window_start(self.rules_for, org, window, start)
        previous: dict[str, PreviousRank] = {}
        if before is not None and entries:
            users = tuple(e.user_id for e in entries)
            previous = await self.previous_boards.get(
                (org, window, before, users),
                lambda: self.reads.run(self.pages.previous_ranks, org, window, before, users),
            )
        return changes_payload(org, window, start, before, entries, previous)

    async def badge_feed(self, org: str, page: Page) -> dict[str, Any]:
        rows = await self.feeds.get(
            (org, page.limit, page.offset),
            lambda: self.reads.run(
                self.pages.recent_badges, org, page.limit + 1, None, page.offset
            ),
        )
        return badges_payload(org, None, rows, page)

    async def team_board(
        self, org: str, window: WindowName, at_ms: int, top: int
    ) -> dict[str, Any]:
        start = org_window_start(self.rules_for, org, window, at_ms)
        entries = await self.teams.get(
            (org, window, start, top),
            lambda: self.reads.run(self.directory.team_board, org, window, start, "team", top),
        )
        return team_board_payload(org, window, start, "team", self.directory.team_min_size, entries)

    async def snapshot(self, key: LiveKey) -> dict[str, Any]:
        """What /api/live sends of a board now."""
        self.reads.start_request()  # each poll has the time limit of one request
        org, window, top, view = key
        at = now_ms()
        teams_shown = await self.has_teams.get(
            org, lambda: self.reads.run(self.pages.has_teams, org)
        )
        return {
            "org": org,
            "window": window,
            "view": view,
            "has_teams": teams_shown,
            "no_data": False,
            "leaderboard": await self.board_with_changes(org, window, at, top)
            if view == "people"
            else None,
            "teams": await self.team_board(org, window, at, top) if view == "teams" else None,
            "badges": await self.badge_feed(org, Page(PAGE_BADGES, 0)),
        }

    async def has_points_of(self, org: str) -> bool:
        return await self.has_points.get(org, lambda: self.reads.run(self.pages.has_points, org))

    async def changes(self, q: Params) -> dict[str, Any]:
        """/api/leaderboard plus `previous_window_start` and, per entry, `previous_rank`
        and `movement` (up, down, same, new; null for `all`)."""
        org, window, at = q.org(), q.window(), q.at(now_ms())
        top = q.integer("top", DEFAULT_TOP, 1, MAX_TOP)
        return await self.board_with_changes(org, window, at, top)

    async def history(self, q: Params, user: str) -> dict[str, Any]:
        """A user's score in `points` (14, at most 90) consecutive windows up to the one
        containing `at`, oldest first, zeros where they had no points; an opted-out user
        reads as an unknown id (zeros, no name)."""
        user = parse_user(user)
        org = q.org()
        window = q.window("day", HISTORY_WINDOWS)
        at = q.at(now_ms())
        points = q.integer("points", HISTORY_POINTS, 1, MAX_POINTS)
        starts = history_starts(self.rules_for, org, window, at, points)
        found = await self.reads.run(self.pages.score_history, org, window, user, starts)
        return {
            "org": org,
            "window": window,
            "user_id": found.user_id,
            "display_name": found.display_name,
            "points": [
                {"window_start": format_rfc3339(p.window_start), "score": p.score}
                for p in found.points
            ],
        }

    async def recent_badges(self, q: Params) -> dict[str, Any]:
        """The newest badge awards, newest first, with display names: `limit` (10, at most
        200) from `offset`."""
        org = q.org()
        return await self.badge_feed(org, q.page(PAGE_BADGES, MAX_BADGES))


class LiveStreams:
    """/api/live: server-sent events, `snapshot` with the page's data now, then whenever it
    changes (checked every LIVE_POLL_S); a comment every LIVE_HEARTBEAT_S. At most
    KUDOS_LIVE_MAX_STREAMS_PER_CLIENT streams per client address and KUDOS_LIVE_MAX_STREAMS
    in all (beyond: 429); an org without points gets one empty snapshot (`no_data`), and
    the stream ends."""

    def __init__(self, kudos: WebContext, page: PageReads) -> None:
        settings = kudos.settings
        self.page = page
        self.feed = LiveFeed(page.snapshot)
        self.limits = StreamLimits(settings.live_max_streams, settings.live_max_streams_per_client)

    @staticmethod
    def key(q: Params) -> LiveKey:
        return (
            q.org(),
            q.window(),
            q.integer("top", DEFAULT_TOP, 1, PAGE_MAX_TOP),
            q.choice("view", ("people", "teams"), "people"),
        )

    async def close(self, _: Any) -> None:
        await self.feed.close()

    async def serve(self, view: View, raw: web.Request, key: LiveKey) -> Response:
        """The stream of `key`, or a 429 when its client may not open another."""
        client = raw.remote or "unknown"
        refused = self.limits.open(client)
        if refused is not None:
            metrics.API_REJECTED.labels(refused).inc()
            retry = {"Retry-After": str(LIVE_REFUSED_RETRY_S)}
            return view.json({"error": LIVE_REFUSALS[refused]}, status=429, headers=retry)
        try:
            return cast(Response, await self.stream_snapshots(raw, key))
        finally:
            self.limits.close(client)

    async def stream_snapshots(self, raw: web.Request, key: LiveKey) -> web.StreamResponse:
        if not await self.page.has_points_of(key[0]):
            # No poller for an org without points (made-up names cost one cached lookup).
            stream = await open_stream(raw, NO_POINTS_RETRY_MS)
            min_members = self.page.directory.team_min_size
            body = empty_snapshot(self.page.rules_for, key, min_members, now_ms())
            await stream.write(sse_message("snapshot", json.dumps(body, separators=(",", ":"))))
            return stream
        stream = await open_stream(raw, LIVE_RETRY_MS)
        queue = self.feed.subscribe(key)
        try:
            await pump(raw, stream, queue)
        except (ConnectionError, RuntimeError):
            pass  # written to a closed connection: the browser went away
        finally:
            self.feed.unsubscribe(key, queue)
        return stream


def register_page_views(kudos: WebContext) -> None:
    """The page, what it reads, and its assets."""
    app, page = kudos.app, PageReads(kudos)
    live = LiveStreams(kudos, page)
    # aiohttp runs these before it waits for open requests: streams end, SIGTERM is quick.
    cast(web.Application, app.web.web_app).on_shutdown.append(live.close)  # type: ignore[attr-defined]

    @app.page("/")
    class LivePage(View):
        async def get(self, request: Request) -> Response:
            html = resources.files("streams.web").joinpath("static/index.html").read_text()
            return self.html(html, headers=dict(PAGE_HEADERS))

    @app.page("/api/leaderboard/changes")
    class ChangesView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await page.changes(params(request)))

    @app.page("/api/users/{user}/history")
    class HistoryView(View):
        async def get(self, request: Request, user: str) -> Response:
            return self.json(await page.history(params(request), user))

    @app.page("/api/badges/recent")
    class RecentBadgesView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await page.recent_badges(params(request)))

    @app.page("/api/live")
    class LiveStreamView(View):
        async def get(self, request: Request) -> Response:
            key = live.key(params(request))
            # faust's aiohttp driver passes aiohttp's request
            return await live.serve(self, cast(web.Request, request), key)

    @app.page("/assets/{name}")
    class AssetView(View):
        """The page's script and style sheet, from the installed package."""

        async def get(self, request: Request, name: str) -> Response:
            kind = STATIC_TYPES.get(name)
            if kind is None:
                raise web.HTTPNotFound()
            body = resources.files("streams.web").joinpath(f"static/{name}").read_bytes()
            return self.bytes(body, content_type=kind, headers={"Cache-Control": "no-cache"})
