"""HTTP API on the worker's faust web server: leaderboard, badges, explain, health, metrics,
the directory's boards, and what the live page reads.

Three modules keep every endpoint honest, whatever it is asked: streams/web/params.py reads
every parameter strictly (anything else is a 400 naming the parameter), streams/web/admission.py
runs every read with bounded concurrency and a time limit on ClickHouse connections of its
own (503 with Retry-After beyond; /health has its own connection and never waits for
them), and streams/web/guard.py makes every error JSON and sets the security headers.
Lists are bounded and paged (`limit`/`offset` in, `next_offset` out, null on the last
page). The limits are in README.md, "HTTP API limits".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final, Protocol, cast

import faust
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.times import format_rfc3339
from schemas.vocabulary import WindowName
from sinks.clickhouse import ClickHouse
from sinks.history import DecisionHistory
from sinks.pagedata import PreviousRank
from sinks.store import LeaderboardEntry, RecognitionStore
from streams import metrics
from streams.domain.explain import DEFAULT_LIMIT, MAX_LIMIT, Page
from streams.domain.rules import RulesLookup
from streams.domain.windows import window_bounds
from streams.settings import Settings
from streams.stages.progress import ProgressTracker
from streams.web import guard
from streams.web.admission import ApiReads, HealthProbe
from streams.web.explain import explain_user
from streams.web.live import LiveFeed, LiveKey, StreamLimits, sse_message
from streams.web.params import Params, parse_user
from streams.web.readcache import ReadCache


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
    def progress(self) -> ProgressTracker: ...
    @property
    def joined(self) -> asyncio.Event: ...
    @property
    def rules_for(self) -> RulesLookup: ...


log = logging.getLogger(__name__)

MAX_TOP: Final = 1000
BADGES_LIMIT: Final = 100  # /api/badges: default page, and the largest
MAX_BADGES_LIMIT: Final = 1000
BRIDGING_LIMIT: Final = 100
MAX_BRIDGING_LIMIT: Final = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def params(request: Request) -> Params:
    return Params(request.query.items())


def team_board_payload(
    org: str,
    window: WindowName,
    start_ms: int,
    by: str,
    min_members: int,
    entries: Sequence[Any],
    offset: int = 0,
    next_offset: int | None = None,
) -> dict[str, Any]:
    """The body of /api/teams/leaderboard (also the live page's team board)."""
    return {
        "org": org,
        "window": window,
        "window_start": format_rfc3339(start_ms),
        "by": by,
        "min_members": min_members,
        "offset": offset,
        "next_offset": next_offset,
        "entries": [
            {
                "rank": e.rank,
                "group": e.group,
                "members": e.members,
                "score": e.score,
                "shares": e.shares,
                "thanks_given": e.thanks_given,
                "thanks_received": e.thanks_received,
                "reactions_received": e.reactions_received,
            }
            for e in entries
        ],
    }


def badges_payload(
    org: str, user: str | None, rows: Sequence[dict[str, Any]], page: Page
) -> dict[str, Any]:
    """/api/badges and /api/badges/recent: one page of awards (`rows` holds up to
    `page.limit` + 1 of them: the extra one says that more follow)."""
    return {
        "org": org,
        "user": user,
        "badges": list(rows[: page.limit]),
        "limit": page.limit,
        "offset": page.offset,
        "next_offset": page.next_offset(len(rows) > page.limit),
    }


def org_window_start(rules_for: RulesLookup, org: str, window: WindowName, at_ms: int) -> int:
    """Start of the org's window containing `at_ms`, in the org's time zone and week."""
    return rules_for(org).calendar.window_start(window, at_ms)


def leaderboard_payload(
    org: str, window: WindowName, start_ms: int, entries: list[LeaderboardEntry]
) -> dict[str, Any]:
    return {
        "org": org,
        "window": window,
        "window_start": format_rfc3339(start_ms),
        "entries": [
            {
                "rank": e.rank,
                "user_id": e.user_id,
                "display_name": e.display_name,
                "score": e.score,
                "shares": e.shares,
                "thanks_given": e.thanks_given,
                "thanks_received": e.thanks_received,
                "distinct_thankers": e.distinct_thankers,
                "reactions_received": e.reactions_received,
            }
            for e in entries
        ],
    }


def explained(*args: Any) -> bytes:
    """`explain_user`'s body as JSON, made on the read thread: 10,000 entries are a few
    megabytes, which the event loop (and /health) need not wait for."""
    return json.dumps(explain_user(*args), separators=(",", ":")).encode()


async def readiness(kudos: WebContext) -> tuple[bool, dict[str, Any]]:
    """/health's answer: ClickHouse (its own probe, streams/web/admission.py), the group, stalls."""
    clickhouse = await kudos.health.clickhouse()
    stalled = [f"{t}[{p}]" for t, p in kudos.progress.stalled(time.monotonic())]
    joined = kudos.joined.is_set()
    ready = clickhouse == "ok" and joined and not stalled
    return ready, {
        "status": "ok" if ready else "degraded",
        "live": True,
        "ready": ready,
        "clickhouse": clickhouse,
        "joined": joined,
        "assigned": sorted(f"{tp.topic}[{tp.partition}]" for tp in kudos.app.consumer.assignment()),
        "stalled": stalled,
        "lag": {f"{t}[{p}]": lag for (t, p), lag in sorted(kudos.progress.lags().items())},
    }


def register_views(kudos: WebContext) -> None:
    app = kudos.app
    reads = kudos.reads
    store = RecognitionStore(kudos.api_clickhouse, kudos.settings.leader_depth)
    history = DecisionHistory(kudos.api_clickhouse)
    fresh_s = kudos.settings.read_cache_ms / 1000
    rules_for = kudos.rules_for
    boards: ReadCache[tuple[str, str, int, int], list[LeaderboardEntry]] = ReadCache(
        fresh_s, 10 * fresh_s
    )
    guard.install(cast(web.Application, app.web.web_app), reads)  # type: ignore[attr-defined]

    @app.page("/api/leaderboard")
    class LeaderboardView(View):
        async def get(self, request: Request) -> Response:
            q = params(request)
            org, window = q.org(), q.window()
            start = org_window_start(rules_for, org, window, q.at(now_ms()))
            top = q.integer("top", 10, 1, MAX_TOP)
            entries = await boards.get(
                (org, window, start, top),
                lambda: reads.run(store.leaderboard, org, window, start, top),
            )
            return self.json(leaderboard_payload(org, window, start, entries))

    @app.page("/api/users/{user}/explain")
    class ExplainView(View):
        """Every point of a user's score in a window, with its event, rule and rule version
        (streams/domain/explain.py: paging and the privacy rules)."""

        async def get(self, request: Request, user: str) -> Response:
            user = parse_user(user)
            q = params(request)
            org, window, at = q.org(), q.window(), q.at(now_ms())
            page = q.page(DEFAULT_LIMIT, MAX_LIMIT)
            body = await reads.run_heavy(
                explained, history, rules_for, org, user, window, at, page.limit, page.offset
            )
            return self.bytes(body, content_type="application/json")

    @app.page("/api/badges")
    class BadgesView(View):
        """Badge awards of an org (or one user), newest first, `limit` (100, at most
        1,000) from `offset`."""

        async def get(self, request: Request) -> Response:
            q = params(request)
            org, user = q.org(), q.user()
            page = q.page(BADGES_LIMIT, MAX_BADGES_LIMIT)
            rows = await reads.run(store.badges, org, user, page.limit + 1, page.offset)
            return self.json(badges_payload(org, user, rows, page))

    @app.page("/health")
    class HealthView(View):
        """Everything at once; 200 when ready (as /health/ready), else 503."""

        async def get(self, request: Request) -> Response:
            ready, body = await readiness(kudos)
            return self.json(body, status=200 if ready else 503)

    @app.page("/health/live")
    class LiveView(View):
        """Liveness: the process and its event loop answer. A ClickHouse outage or a stalled
        partition is not a reason to restart the worker, so they do not fail this."""

        async def get(self, request: Request) -> Response:
            return self.json({"live": True})

    @app.page("/health/ready")
    class ReadyView(View):
        """Readiness: ClickHouse answers, the worker has joined its consumer group, and no
        assigned partition is stalled (lag, and no progress for KUDOS_STALL_SECONDS)."""

        async def get(self, request: Request) -> Response:
            ready, body = await readiness(kudos)
            return self.json(body, status=200 if ready else 503)

    @app.page("/api/erasures/{request_id}")
    class ErasureView(View):
        """Whether a `kudos forget` request has been carried out (for the CLI on chdb)."""

        async def get(self, request: Request, request_id: str) -> Response:
            from sinks.erase import erasure_done

            request_id = parse_user(request_id, "request_id")
            rows = await reads.run(erasure_done, kudos.api_clickhouse, request_id)
            return self.json({"request_id": request_id, "done": rows is not None, "rows": rows})

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/")
    class LivePage(View):
        async def get(self, request: Request) -> Response:
            html = resources.files("streams.web").joinpath("static/index.html").read_text()
            return self.html(html, headers=dict(PAGE_HEADERS))

    register_page_views(kudos)


# --- people and teams (the user directory, sinks/directory.py) ----------------------------


def register_directory_views(kudos: WebContext) -> None:
    """Team and department boards, bridging thanks, give/receive balance (privacy rules:
    sinks/directory.py)."""
    from sinks.directory import DirectoryStore

    app = kudos.app
    directory = DirectoryStore(kudos.api_clickhouse, kudos.settings.team_min_size)
    reads = kudos.reads
    rules_for = kudos.rules_for
    k = directory.team_min_size

    def common(q: Params) -> tuple[str, WindowName, int, int | None]:
        org, window = q.org(), q.window()
        start, end = window_bounds(window, q.at(now_ms()), rules_for(org).calendar)
        return org, window, start, end

    @app.page("/api/teams/leaderboard")
    class TeamBoardView(View):
        """Groups ranked by their members' score: `top` (10, at most 1,000) from rank
        `offset` + 1."""

        async def get(self, request: Request) -> Response:
            q = params(request)
            org, window, start, _ = common(q)
            by = q.choice("by", ("team", "department"), "team")
            page = q.page(10, MAX_TOP, name="top")
            entries = await reads.run(
                directory.team_board, org, window, start, by, page.limit + 1, page.offset
            )
            more = page.next_offset(len(entries) > page.limit)
            body = team_board_payload(
                org, window, start, by, k, entries[: page.limit], page.offset, more
            )
            return self.json(body)

    @app.page("/api/teams/bridging")
    class BridgingView(View):
        """Thanks across teams, per team: `limit` teams (100, at most 1,000) from `offset`."""

        async def get(self, request: Request) -> Response:
            q = params(request)
            org, window, start, end = common(q)
            page = q.page(BRIDGING_LIMIT, MAX_BRIDGING_LIMIT)
            teams = await reads.run(directory.bridging, org, start, end)
            shown = teams[page.offset : page.offset + page.limit]
            return self.json(
                {
                    "org": org,
                    "window": window,
                    "window_start": format_rfc3339(start),
                    "min_members": k,
                    "limit": page.limit,
                    "offset": page.offset,
                    "next_offset": page.next_offset(len(teams) > page.offset + page.limit),
                    "teams": [
                        {
                            "team": t.team,
                            "members": t.members,
                            "given_across": t.given_across,
                            "received_across": t.received_across,
                        }
                        for t in shown
                    ],
                }
            )

    @app.page("/api/users/{user}/balance")
    class BalanceView(View):
        """Thanks given and received; an opted-out user reads as an unknown id (zeros)."""

        async def get(self, request: Request, user: str) -> Response:
            user = parse_user(user)
            org, window, start, _ = common(params(request))
            found = await reads.run(directory.balance, org, window, start, user)
            return self.json(
                {
                    "org": org,
                    "window": window,
                    "window_start": format_rfc3339(start),
                    "user_id": found.user_id,
                    "display_name": found.display_name,
                    "team": found.team,
                    "thanks_given": found.thanks_given,
                    "thanks_received": found.thanks_received,
                    "balance": found.balance,
                }
            )


# --- the live page (streams/web/static/): rank changes, badge feed, score history, live stream ---

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
Movement = str  # "up" | "down" | "same" | "new"
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


def previous_window_start(
    rules_for: RulesLookup, org: str, window: WindowName, start_ms: int
) -> int | None:
    """Start of the org's window before the one starting at `start_ms`; None for `all`."""
    if window == "all":
        return None
    return org_window_start(rules_for, org, window, start_ms - 1)


def history_starts(
    rules_for: RulesLookup, org: str, window: WindowName, at_ms: int, points: int
) -> list[int]:
    """Starts of `points` consecutive windows of the org's calendar ending with the one
    containing `at_ms`, oldest first."""
    starts = [org_window_start(rules_for, org, window, at_ms)]
    while len(starts) < points:
        starts.append(org_window_start(rules_for, org, window, starts[-1] - 1))
    return starts[::-1]


def movement(rank: int, previous: PreviousRank | None) -> Movement | None:
    """How a rank moved since the previous window: None when there is no previous window."""
    if previous is None:
        return None
    if previous.rank is None:
        # Below the previous board's depth (>= this rank): up; no points then: new.
        return "up" if previous.scored else "new"
    return "up" if previous.rank > rank else "down" if previous.rank < rank else "same"


def changes_payload(
    org: str,
    window: WindowName,
    start_ms: int,
    previous_start: int | None,
    entries: list[LeaderboardEntry],
    previous: dict[str, PreviousRank],
) -> dict[str, Any]:
    """/api/leaderboard's body, plus where each entry stood in the previous window."""
    body = leaderboard_payload(org, window, start_ms, entries)
    body["previous_window_start"] = (
        None if previous_start is None else format_rfc3339(previous_start)
    )
    for entry in body["entries"]:
        before = previous.get(entry["user_id"]) if previous_start is not None else None
        entry["previous_rank"] = before.rank if before else None
        entry["movement"] = movement(entry["rank"], before)
    return body


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


def register_page_views(kudos: WebContext) -> None:
    """What the live page reads: rank changes, a badge feed, one user's score history, the
    live stream, and the page's own assets."""
    from sinks.directory import DirectoryStore
    from sinks.pagedata import MAX_BADGES, MAX_POINTS, PageData

    app = kudos.app
    settings = kudos.settings
    store = RecognitionStore(kudos.api_clickhouse, settings.leader_depth)
    reads = kudos.reads
    rules_for = kudos.rules_for
    fresh_s = settings.read_cache_ms / 1000
    pages = PageData(kudos.api_clickhouse, settings.leader_depth, settings.team_min_size)
    directory = DirectoryStore(kudos.api_clickhouse, settings.team_min_size)
    boards: ReadCache[tuple[str, str, int, int], list[LeaderboardEntry]] = ReadCache(
        fresh_s, 10 * fresh_s
    )
    previous_boards: ReadCache[tuple[str, str, int, tuple[str, ...]], dict[str, PreviousRank]]
    previous_boards = ReadCache(SLOW_FRESH_S, 10 * SLOW_FRESH_S)
    feeds: ReadCache[tuple[str, int, int], list[dict[str, Any]]] = ReadCache(fresh_s, 10 * fresh_s)
    teams: ReadCache[tuple[str, str, int, int], list[Any]] = ReadCache(fresh_s, 10 * fresh_s)
    has_teams: ReadCache[str, bool] = ReadCache(SLOW_FRESH_S, 10 * SLOW_FRESH_S)
    # Whether an org has points at all: bounded (4,096 orgs), so made-up orgs cost little;
    # never served stale, so a page waiting for an org's first points sees them soon.
    has_points: ReadCache[str, bool] = ReadCache(SLOW_FRESH_S, SLOW_FRESH_S, 4096)
    limits = StreamLimits(settings.live_max_streams, settings.live_max_streams_per_client)

    async def board_with_changes(
        org: str, window: WindowName, at_ms: int, top: int
    ) -> dict[str, Any]:
        start = org_window_start(rules_for, org, window, at_ms)
        entries = await boards.get(
            (org, window, start, top),
            lambda: reads.run(store.leaderboard, org, window, start, top),
        )
        before = previous_window_start(rules_for, org, window, start)
        previous: dict[str, PreviousRank] = {}
        if before is not None and entries:
            users = tuple(e.user_id for e in entries)
            previous = await previous_boards.get(
                (org, window, before, users),
                lambda: reads.run(pages.previous_ranks, org, window, before, users),
            )
        return changes_payload(org, window, start, before, entries, previous)

    async def badge_feed(org: str, page: Page) -> dict[str, Any]:
        rows = await feeds.get(
            (org, page.limit, page.offset),
            lambda: reads.run(pages.recent_badges, org, page.limit + 1, None, page.offset),
        )
        return badges_payload(org, None, rows, page)

    async def team_board(org: str, window: WindowName, at_ms: int, top: int) -> dict[str, Any]:
        start = org_window_start(rules_for, org, window, at_ms)
        entries = await teams.get(
            (org, window, start, top),
            lambda: reads.run(directory.team_board, org, window, start, "team", top),
        )
        return team_board_payload(org, window, start, "team", directory.team_min_size, entries)

    async def snapshot(key: LiveKey) -> dict[str, Any]:
        reads.start_request()  # each poll has the time limit of one request
        org, window, top, view = key
        at = now_ms()
        teams_shown = await has_teams.get(org, lambda: reads.run(pages.has_teams, org))
        return {
            "org": org,
            "window": window,
            "view": view,
            "has_teams": teams_shown,
            "no_data": False,
            "leaderboard": await board_with_changes(org, window, at, top)
            if view == "people"
            else None,
            "teams": await team_board(org, window, at, top) if view == "teams" else None,
            "badges": await badge_feed(org, Page(PAGE_BADGES, 0)),
        }

    feed = LiveFeed(snapshot)

    async def close_feed(_: Any) -> None:
        await feed.close()

    # aiohttp runs these before it waits for open requests: streams end, SIGTERM is quick.
    cast(web.Application, app.web.web_app).on_shutdown.append(close_feed)  # type: ignore[attr-defined]

    async def stream_snapshots(raw: web.Request, key: LiveKey) -> web.StreamResponse:
        org = key[0]
        if not await has_points.get(org, lambda: reads.run(pages.has_points, org)):
            # No poller for an org without points (made-up names cost one cached lookup).
            stream = await open_stream(raw, NO_POINTS_RETRY_MS)
            body = empty_snapshot(rules_for, key, directory.team_min_size, now_ms())
            await stream.write(sse_message("snapshot", json.dumps(body, separators=(",", ":"))))
            return stream
        stream = await open_stream(raw, LIVE_RETRY_MS)
        queue = feed.subscribe(key)
        try:
            await pump(raw, stream, queue)
        except (ConnectionError, RuntimeError):
            pass  # written to a closed connection: the browser went away
        finally:
            feed.unsubscribe(key, queue)
        return stream

    @app.page("/api/leaderboard/changes")
    class ChangesView(View):
        """/api/leaderboard plus `previous_window_start` and, per entry, `previous_rank`
        and `movement` (up, down, same, new; null for `all`)."""

        async def get(self, request: Request) -> Response:
            q = params(request)
            org, window, at = q.org(), q.window(), q.at(now_ms())
            top = q.integer("top", 10, 1, MAX_TOP)
            return self.json(await board_with_changes(org, window, at, top))

    @app.page("/api/users/{user}/history")
    class HistoryView(View):
        """A user's score in `points` (14, at most 90) consecutive windows up to the one
        containing `at`, oldest first, zeros where they had no points; an opted-out user
        reads as an unknown id (zeros, no name)."""

        async def get(self, request: Request, user: str) -> Response:
            user = parse_user(user)
            q = params(request)
            org = q.org()
            window = q.window("day", ("hour", "day", "week"))
            at = q.at(now_ms())
            points = q.integer("points", HISTORY_POINTS, 1, MAX_POINTS)
            starts = history_starts(rules_for, org, window, at, points)
            found = await reads.run(pages.score_history, org, window, user, starts)
            return self.json(
                {
                    "org": org,
                    "window": window,
                    "user_id": found.user_id,
                    "display_name": found.display_name,
                    "points": [
                        {"window_start": format_rfc3339(p.window_start), "score": p.score}
                        for p in found.points
                    ],
                }
            )

    @app.page("/api/badges/recent")
    class RecentBadgesView(View):
        """The newest badge awards, newest first, with display names: `limit` (10, at most
        200) from `offset`."""

        async def get(self, request: Request) -> Response:
            q = params(request)
            org = q.org()
            return self.json(await badge_feed(org, q.page(PAGE_BADGES, MAX_BADGES)))

    @app.page("/api/live")
    class LiveStreamView(View):
        """Server-sent events: `snapshot` with the page's data now, then whenever it
        changes (checked every LIVE_POLL_S); a comment every LIVE_HEARTBEAT_S. At most
        KUDOS_LIVE_MAX_STREAMS_PER_CLIENT streams per client address and
        KUDOS_LIVE_MAX_STREAMS in all (beyond: 429); an org without points gets one
        empty snapshot (`no_data`), and the stream ends."""

        async def get(self, request: Request) -> Response:
            q = params(request)
            key: LiveKey = (
                q.org(),
                q.window(),
                q.integer("top", 10, 1, PAGE_MAX_TOP),
                q.choice("view", ("people", "teams"), "people"),
            )
            raw = cast(web.Request, request)  # faust's aiohttp driver passes aiohttp's
            client = raw.remote or "unknown"
            refused = limits.open(client)
            if refused is not None:
                metrics.API_REJECTED.labels(refused).inc()
                retry = {"Retry-After": str(LIVE_REFUSED_RETRY_S)}
                return self.json({"error": LIVE_REFUSALS[refused]}, status=429, headers=retry)
            try:
                return cast(Response, await stream_snapshots(raw, key))
            finally:
                limits.close(client)

    @app.page("/assets/{name}")
    class AssetView(View):
        """The page's script and style sheet, from the installed package."""

        async def get(self, request: Request, name: str) -> Response:
            kind = STATIC_TYPES.get(name)
            if kind is None:
                raise web.HTTPNotFound()
            body = resources.files("streams.web").joinpath(f"static/{name}").read_bytes()
            return self.bytes(body, content_type=kind, headers={"Cache-Control": "no-cache"})
