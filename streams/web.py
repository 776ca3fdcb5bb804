"""HTTP API on the worker's faust web server: leaderboard, badges, health, metrics, live page."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sinks.history import DecisionHistory
from sinks.pagedata import PreviousRank
from sinks.store import LeaderboardEntry, iso
from streams.explain import explain_user, parse_limit
from streams.readcache import ReadCache
from streams.rules import RulesLookup
from streams.windows import WINDOWS, WindowName, rfc3339_ms

if TYPE_CHECKING:
    from streams.app import Kudos

log = logging.getLogger(__name__)

MAX_TOP = 1000
HEALTH_TIMEOUT_S = 2.0


class BadRequest(ValueError):
    pass


def parse_at(value: str | None) -> int:
    """RFC 3339 timestamp (or epoch millis) to epoch millis; default now."""
    if not value:
        return int(time.time() * 1000)
    try:
        return rfc3339_ms(value)
    except ValueError as exc:
        raise BadRequest(f"'at' is not an RFC 3339 timestamp: {value!r}") from exc


def parse_window(value: str | None) -> WindowName:
    if value not in WINDOWS:
        raise BadRequest(f"'window' must be one of {', '.join(WINDOWS)}")
    return value


def parse_top(value: str | None, default: int = 10) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_TOP:
        raise BadRequest(f"'top' must be an integer from 1 to {MAX_TOP}")
    return int(value)


def team_board_payload(
    org: str, window: WindowName, start_ms: int, by: str, min_members: int, entries: Sequence[Any]
) -> dict[str, Any]:
    """The body of /api/teams/leaderboard (also the live page's team board)."""
    return {
        "org": org,
        "window": window,
        "window_start": iso(start_ms),
        "by": by,
        "min_members": min_members,
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


def org_window_start(rules_for: RulesLookup, org: str, window: WindowName, at_ms: int) -> int:
    """Start of the org's window containing `at_ms`, in the org's time zone and week."""
    return rules_for(org).calendar.window_start(window, at_ms)


def leaderboard_payload(
    org: str, window: WindowName, start_ms: int, entries: list[LeaderboardEntry]
) -> dict[str, Any]:
    return {
        "org": org,
        "window": window,
        "window_start": iso(start_ms),
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


def register_views(kudos: Kudos) -> None:
    app = kudos.app
    store = kudos.store
    blocking = kudos.reads
    fresh_s = kudos.settings.read_cache_ms / 1000
    rules_for = kudos.decide.rules_for
    boards: ReadCache[tuple[str, str, int, int], list[LeaderboardEntry]] = ReadCache(
        fresh_s, 10 * fresh_s
    )

    @app.page("/api/leaderboard")
    class LeaderboardView(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            try:
                org = q.get("org") or ""
                if not org:
                    raise BadRequest("'org' is required")
                window = parse_window(q.get("window", "week"))
                start = org_window_start(rules_for, org, window, parse_at(q.get("at")))
                top = parse_top(q.get("top"))
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            entries = await boards.get(
                (org, window, start, top),
                lambda: blocking.run(store.leaderboard, org, window, start, top),
            )
            return self.json(leaderboard_payload(org, window, start, entries))

    history = DecisionHistory(store.ch)

    @app.page("/api/users/{user}/explain")
    class ExplainView(View):
        """Every point of a user's score in a window, with its event, rule and rule version
        (streams/explain.py)."""

        async def get(self, request: Request, user: str) -> Response:
            q = request.query
            try:
                org = q.get("org") or ""
                if not org:
                    raise BadRequest("'org' is required")
                window = parse_window(q.get("window", "week"))
                at = parse_at(q.get("at"))
                limit = parse_limit(q.get("limit"))
            except ValueError as exc:  # BadRequest, or parse_limit's
                return self.json({"error": str(exc)}, status=400)
            if not user:
                return self.json({"error": "a user is required"}, status=400)
            from sinks.directory import people

            found = await blocking.run(people, store.ch, org, [user])
            if user in found and found[user].opted_out:  # as if unknown to the public API
                return self.json({"error": "no such user"}, status=404)
            body = await blocking.run(
                explain_user, history, kudos.decide.rules_for, org, user, window, at, limit
            )
            return self.json(body)

    @app.page("/api/badges")
    class BadgesView(View):
        async def get(self, request: Request) -> Response:
            org = request.query.get("org") or ""
            if not org:
                return self.json({"error": "'org' is required"}, status=400)
            user = request.query.get("user") or None
            rows = await blocking.run(store.badges, org, user)
            return self.json({"org": org, "user": user, "badges": rows})

    async def readiness() -> tuple[bool, dict[str, Any]]:
        try:
            await asyncio.wait_for(blocking.run(store.ch.query, "SELECT 1"), HEALTH_TIMEOUT_S)
            clickhouse = "ok"
        except Exception as exc:  # health reports, never raises
            clickhouse = f"error: {type(exc).__name__}"
        stalled = [f"{t}[{p}]" for t, p in kudos.progress.stalled(time.monotonic())]
        joined = kudos.joined.is_set()
        ready = clickhouse == "ok" and joined and not stalled
        return ready, {
            "status": "ok" if ready else "degraded",
            "live": True,
            "ready": ready,
            "clickhouse": clickhouse,
            "joined": joined,
            "assigned": sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment()),
            "stalled": stalled,
            "lag": {f"{t}[{p}]": lag for (t, p), lag in sorted(kudos.progress.lags().items())},
        }

    @app.page("/health")
    class HealthView(View):
        """Everything at once; 200 when ready (as /health/ready), else 503."""

        async def get(self, request: Request) -> Response:
            ready, body = await readiness()
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
            ready, body = await readiness()
            return self.json(body, status=200 if ready else 503)

    @app.page("/api/erasures/{request_id}")
    class ErasureView(View):
        """Whether a `kudos forget` request has been carried out (for the CLI on chdb)."""

        async def get(self, request: Request, request_id: str) -> Response:
            from sinks.erase import erasure_done

            rows = await blocking.run(erasure_done, store.ch, request_id)
            return self.json({"request_id": request_id, "done": rows is not None, "rows": rows})

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/")
    class LivePage(View):
        async def get(self, request: Request) -> Response:
            html = resources.files("streams").joinpath("static/index.html").read_text()
            return self.html(html, headers=dict(PAGE_HEADERS))

    register_page_views(kudos)


# --- people and teams (the user directory, sinks/directory.py) ----------------------------

_SPAN_MS = {"hour": 3_600_000, "day": 86_400_000, "week": 604_800_000}


def window_bounds(
    rules_for: RulesLookup, org: str, window: WindowName, at_ms: int
) -> tuple[int, int | None]:
    """[start, end) of the org's window containing `at_ms`; end None for `all`. The end is
    the next window's start, found half a window past the nominal length, so local days
    of 23 or 25 hours end where the org's calendar says."""
    start = org_window_start(rules_for, org, window, at_ms)
    if window == "all":
        return start, None
    span = _SPAN_MS[window]
    return start, org_window_start(rules_for, org, window, start + span + span // 2)


def register_directory_views(kudos: Kudos) -> None:
    """Team and department boards, bridging thanks, give/receive balance (privacy rules:
    sinks/directory.py)."""
    from sinks.directory import DirectoryStore

    app = kudos.app
    directory = DirectoryStore(kudos.store.ch, kudos.settings.team_min_size)
    blocking = kudos.reads
    rules_for = kudos.decide.rules_for
    k = directory.team_min_size

    def common(request: Request) -> tuple[str, WindowName, int, int | None]:
        q = request.query
        org = q.get("org") or ""
        if not org:
            raise BadRequest("'org' is required")
        window = parse_window(q.get("window", "week"))
        start, end = window_bounds(rules_for, org, window, parse_at(q.get("at")))
        return org, window, start, end

    @app.page("/api/teams/leaderboard")
    class TeamBoardView(View):
        async def get(self, request: Request) -> Response:
            try:
                org, window, start, _ = common(request)
                by = request.query.get("by", "team")
                if by not in ("team", "department"):
                    raise BadRequest("'by' must be team or department")
                top = parse_top(request.query.get("top"))
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            entries = await blocking.run(directory.team_board, org, window, start, by, top)
            return self.json(team_board_payload(org, window, start, by, k, entries))

    @app.page("/api/teams/bridging")
    class BridgingView(View):
        async def get(self, request: Request) -> Response:
            try:
                org, window, start, end = common(request)
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            teams = await blocking.run(directory.bridging, org, start, end)
            return self.json(
                {
                    "org": org,
                    "window": window,
                    "window_start": iso(start),
                    "min_members": k,
                    "teams": [
                        {
                            "team": t.team,
                            "members": t.members,
                            "given_across": t.given_across,
                            "received_across": t.received_across,
                        }
                        for t in teams
                    ],
                }
            )

    @app.page("/api/users/{user}/balance")
    class BalanceView(View):
        async def get(self, request: Request, user: str) -> Response:
            try:
                org, window, start, _ = common(request)
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            found = await blocking.run(directory.balance, org, window, start, user)
            if found is None:  # opted out: as if unknown to the public API
                return self.json({"error": "no such user"}, status=404)
            return self.json(
                {
                    "org": org,
                    "window": window,
                    "window_start": iso(start),
                    "user_id": found.user_id,
                    "display_name": found.display_name,
                    "team": found.team,
                    "thanks_given": found.thanks_given,
                    "thanks_received": found.thanks_received,
                    "balance": found.balance,
                }
            )


# --- the live page (streams/static/): rank changes, badge feed, score history, live stream ---

LIVE_POLL_S = 0.25  # how often a live board is re-read while someone watches it
LIVE_HEARTBEAT_S = 15.0  # an SSE comment keeps proxies from closing an idle stream
LIVE_MAX_STREAM_S = 600.0  # then the stream ends and EventSource reconnects (spreads load)
PAGE_MAX_TOP = 100
PAGE_BADGES = 10
HISTORY_POINTS = 14
SLOW_FRESH_S = 5.0  # closed windows and the directory's teams change rarely
Movement = str  # "up" | "down" | "same" | "new"
STATIC_TYPES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# The page loads nothing from anywhere else and runs no inline code: a user id or display
# name that slipped into markup could not run as script.
PAGE_HEADERS = {
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
    body["previous_window_start"] = None if previous_start is None else iso(previous_start)
    for entry in body["entries"]:
        before = previous.get(entry["user_id"]) if previous_start is not None else None
        entry["previous_rank"] = before.rank if before else None
        entry["movement"] = movement(entry["rank"], before)
    return body


def sse_message(event: str, data: str) -> bytes:
    """One server-sent event; `data` is one line of JSON (json.dumps escapes newlines)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


LiveKey = tuple[str, WindowName, int, str]  # org, window, top, view (people | teams)


class _Channel:
    __slots__ = ("last", "subscribers", "task")

    def __init__(self) -> None:
        self.last: str | None = None
        self.subscribers: set[asyncio.Queue[str | None]] = set()
        self.task: asyncio.Task[None] | None = None


def _offer(queue: asyncio.Queue[str | None], item: str | None) -> None:
    """Latest wins: a slow reader skips snapshots it has not read yet, never falls behind."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


class LiveFeed:
    """Live snapshots of boards people are watching, one reader per board.

    While a key has subscribers, one task loads its snapshot every `interval_s` and hands
    it, as JSON, to every subscriber when it differs from the last one. ClickHouse sees one
    read per watched board and interval however many browsers watch it, and a browser gets
    a message only when something it shows changed. Reading ClickHouse (rather than hooking
    this worker's writes) also sees what other workers of the group wrote.
    """

    def __init__(
        self,
        load: Callable[[LiveKey], Awaitable[dict[str, Any]]],
        interval_s: float = LIVE_POLL_S,
    ) -> None:
        self._load = load
        self.interval_s = interval_s
        self._channels: dict[LiveKey, _Channel] = {}

    def subscribe(self, key: LiveKey) -> asyncio.Queue[str | None]:
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel()
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        if channel.last is not None:
            queue.put_nowait(channel.last)
        channel.subscribers.add(queue)
        if channel.task is None:
            channel.task = asyncio.ensure_future(self._poll(key, channel))
        return queue

    def unsubscribe(self, key: LiveKey, queue: asyncio.Queue[str | None]) -> None:
        channel = self._channels.get(key)
        if channel is None:
            return
        channel.subscribers.discard(queue)
        if not channel.subscribers:
            del self._channels[key]
            if channel.task is not None:
                channel.task.cancel()

    @property
    def watched(self) -> int:
        return len(self._channels)

    async def close(self) -> None:
        """Ends every stream (the worker is stopping; browsers reconnect elsewhere)."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            if channel.task is not None:
                channel.task.cancel()
            for queue in channel.subscribers:
                _offer(queue, None)

    async def _poll(self, key: LiveKey, channel: _Channel) -> None:
        while True:
            try:
                body = json.dumps(await self._load(key), separators=(",", ":"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ClickHouse away: say so, keep the last board shown
                log.warning("live page read failed: %s", type(exc).__name__)
                body = json.dumps({"error": "data temporarily unavailable"})
            if body != channel.last:
                channel.last = body
                for queue in channel.subscribers:
                    _offer(queue, body)
            await asyncio.sleep(self.interval_s)


def parse_positive(value: str | None, name: str, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise BadRequest(f"'{name}' must be an integer from 1 to {maximum}")
    return int(value)


def register_page_views(kudos: Kudos) -> None:
    """What the live page reads: rank changes, a badge feed, one user's score history, the
    live stream, and the page's own assets."""
    from sinks.directory import DirectoryStore
    from sinks.pagedata import MAX_BADGES, MAX_POINTS, PageData

    app = kudos.app
    store = kudos.store
    blocking = kudos.reads
    rules_for = kudos.decide.rules_for
    fresh_s = kudos.settings.read_cache_ms / 1000
    pages = PageData(store.ch, store.leader_depth, kudos.settings.team_min_size)
    directory = DirectoryStore(store.ch, kudos.settings.team_min_size)
    boards: ReadCache[tuple[str, str, int, int], list[LeaderboardEntry]] = ReadCache(
        fresh_s, 10 * fresh_s
    )
    previous_boards: ReadCache[tuple[str, str, int, tuple[str, ...]], dict[str, PreviousRank]]
    previous_boards = ReadCache(SLOW_FRESH_S, 10 * SLOW_FRESH_S)
    feeds: ReadCache[tuple[str, int], list[dict[str, Any]]] = ReadCache(fresh_s, 10 * fresh_s)
    teams: ReadCache[tuple[str, str, int, int], list[Any]] = ReadCache(fresh_s, 10 * fresh_s)
    has_teams: ReadCache[str, bool] = ReadCache(SLOW_FRESH_S, 10 * SLOW_FRESH_S)

    async def board_with_changes(
        org: str, window: WindowName, at_ms: int, top: int
    ) -> dict[str, Any]:
        start = org_window_start(rules_for, org, window, at_ms)
        entries = await boards.get(
            (org, window, start, top),
            lambda: blocking.run(store.leaderboard, org, window, start, top),
        )
        before = previous_window_start(rules_for, org, window, start)
        previous: dict[str, PreviousRank] = {}
        if before is not None and entries:
            users = tuple(e.user_id for e in entries)
            previous = await previous_boards.get(
                (org, window, before, users),
                lambda: blocking.run(pages.previous_ranks, org, window, before, users),
            )
        return changes_payload(org, window, start, before, entries, previous)

    async def badge_feed(org: str, limit: int) -> dict[str, Any]:
        rows = await feeds.get(
            (org, limit), lambda: blocking.run(pages.recent_badges, org, limit, None)
        )
        return {"org": org, "user": None, "badges": rows}

    async def team_board(org: str, window: WindowName, at_ms: int, top: int) -> dict[str, Any]:
        start = org_window_start(rules_for, org, window, at_ms)
        entries = await teams.get(
            (org, window, start, top),
            lambda: blocking.run(directory.team_board, org, window, start, "team", top),
        )
        return team_board_payload(org, window, start, "team", directory.team_min_size, entries)

    async def snapshot(key: LiveKey) -> dict[str, Any]:
        org, window, top, view = key
        at = int(time.time() * 1000)
        teams_shown = await has_teams.get(org, lambda: blocking.run(pages.has_teams, org))
        return {
            "org": org,
            "window": window,
            "view": view,
            "has_teams": teams_shown,
            "leaderboard": await board_with_changes(org, window, at, top)
            if view == "people"
            else None,
            "teams": await team_board(org, window, at, top) if view == "teams" else None,
            "badges": await badge_feed(org, PAGE_BADGES),
        }

    feed = LiveFeed(snapshot)

    async def close_feed(_: Any) -> None:
        await feed.close()

    # aiohttp runs these before it waits for open requests: streams end, SIGTERM is quick.
    cast(web.Application, app.web.web_app).on_shutdown.append(close_feed)  # type: ignore[attr-defined]

    def org_of(request: Request) -> str:
        org = request.query.get("org") or ""
        if not org:
            raise BadRequest("'org' is required")
        return str(org)

    @app.page("/api/leaderboard/changes")
    class ChangesView(View):
        """/api/leaderboard plus `previous_window_start` and, per entry, `previous_rank`
        and `movement` (up, down, same, new; null for `all`)."""

        async def get(self, request: Request) -> Response:
            q = request.query
            try:
                org = org_of(request)
                window = parse_window(q.get("window", "week"))
                at = parse_at(q.get("at"))
                top = parse_top(q.get("top"))
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json(await board_with_changes(org, window, at, top))

    @app.page("/api/users/{user}/history")
    class HistoryView(View):
        """A user's score in `points` consecutive windows up to the one containing `at`,
        oldest first, zeros where they had no points; 404 for an opted-out user."""

        async def get(self, request: Request, user: str) -> Response:
            q = request.query
            try:
                org = org_of(request)
                window = parse_window(q.get("window", "day"))
                if window == "all":
                    raise BadRequest("'window' must be hour, day or week for a history")
                at = parse_at(q.get("at"))
                points = parse_positive(q.get("points"), "points", HISTORY_POINTS, MAX_POINTS)
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            starts = history_starts(rules_for, org, window, at, points)
            found = await blocking.run(pages.score_history, org, window, user, starts)
            if found is None:  # opted out: as if unknown to the public API
                return self.json({"error": "no such user"}, status=404)
            return self.json(
                {
                    "org": org,
                    "window": window,
                    "user_id": found.user_id,
                    "display_name": found.display_name,
                    "points": [
                        {"window_start": iso(p.window_start), "score": p.score}
                        for p in found.points
                    ],
                }
            )

    @app.page("/api/badges/recent")
    class RecentBadgesView(View):
        """The newest `limit` (10) badge awards, newest first, with display names."""

        async def get(self, request: Request) -> Response:
            try:
                org = org_of(request)
                limit = parse_positive(request.query.get("limit"), "limit", PAGE_BADGES, MAX_BADGES)
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json(await badge_feed(org, limit))

    @app.page("/api/live")
    class LiveStreamView(View):
        """Server-sent events: `snapshot` with the page's data now, then whenever it
        changes (checked every LIVE_POLL_S); a comment every LIVE_HEARTBEAT_S."""

        async def get(self, request: Request) -> Response:
            q = request.query
            try:
                org = org_of(request)
                window = parse_window(q.get("window", "week"))
                top = parse_positive(q.get("top"), "top", 10, PAGE_MAX_TOP)
                view = q.get("view", "people")
                if view not in ("people", "teams"):
                    raise BadRequest("'view' must be people or teams")
            except BadRequest as exc:
                return self.json({"error": str(exc)}, status=400)
            raw = cast(web.Request, request)  # faust's aiohttp driver passes aiohttp's
            stream = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
                }
            )
            await stream.prepare(raw)
            key: LiveKey = (org, window, top, view)
            queue = feed.subscribe(key)
            try:
                await stream.write(b"retry: 1000\n\n")
                started = last_write = time.monotonic()
                while time.monotonic() - started < LIVE_MAX_STREAM_S:
                    if raw.transport is None or raw.transport.is_closing():
                        break  # the browser went away
                    try:
                        body = await asyncio.wait_for(queue.get(), 1.0)
                    except TimeoutError:
                        if time.monotonic() - last_write >= LIVE_HEARTBEAT_S:
                            await stream.write(b": ping\n\n")
                            last_write = time.monotonic()
                        continue
                    if body is None:
                        break
                    await stream.write(sse_message("snapshot", body))
                    last_write = time.monotonic()
            except (ConnectionError, RuntimeError):
                pass  # written to a closed connection: the browser went away
            finally:
                feed.unsubscribe(key, queue)
            return cast(Response, stream)

    @app.page("/assets/{name}")
    class AssetView(View):
        """The page's script and style sheet, from the installed package."""

        async def get(self, request: Request, name: str) -> Response:
            kind = STATIC_TYPES.get(name)
            if kind is None:
                return self.text("not found", status=404)
            body = resources.files("streams").joinpath(f"static/{name}").read_bytes()
            return self.bytes(body, content_type=kind, headers={"Cache-Control": "no-cache"})
