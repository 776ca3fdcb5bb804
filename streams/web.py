"""HTTP API on the worker's faust web server: leaderboard, badges, health, metrics, live page."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sinks.history import DecisionHistory
from sinks.store import LeaderboardEntry, iso
from streams.explain import explain_user, parse_limit
from streams.readcache import ReadCache
from streams.rules import RulesLookup
from streams.windows import WINDOWS, WindowName

if TYPE_CHECKING:
    from streams.app import Kudos

MAX_TOP = 1000
HEALTH_TIMEOUT_S = 2.0


class BadRequest(ValueError):
    pass


def parse_at(value: str | None) -> int:
    """RFC 3339 timestamp (or epoch millis) to epoch millis; default now."""
    if not value:
        return int(time.time() * 1000)
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"'at' is not an RFC 3339 timestamp: {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


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

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/")
    class LivePage(View):
        async def get(self, request: Request) -> Response:
            html = resources.files("streams").joinpath("static/index.html").read_text()
            return self.html(html)


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
            return self.json(
                {
                    "org": org,
                    "window": window,
                    "window_start": iso(start),
                    "by": by,
                    "min_members": k,
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
            )

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
