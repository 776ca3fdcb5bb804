"""The API's own routes: the leaderboard, explain, badges, erasures, health and metrics.

Each route's answer is one method of `Api`; `register_api_views` only maps routes to them.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final, cast

from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.times import now_ms
from sinks.history import DecisionHistory
from streams.domain.explain import DEFAULT_LIMIT, MAX_LIMIT
from streams.web.auth import FORBIDDEN, principal_of
from streams.web.context import (
    DEFAULT_AROUND,
    DEFAULT_TOP,
    MAX_AROUND,
    MAX_TOP,
    Leaderboards,
    WebContext,
    board_scope,
    params,
)
from streams.web.explain import explain_user
from streams.web.guard import json_error
from streams.web.params import BadRequest, Params, parse_org, parse_user
from streams.web.payloads import (
    badges_payload,
    leaderboard_payload,
    rank_payload,
    value_board_payload,
)

BADGES_LIMIT: Final = 100  # /api/badges: the default page
MAX_BADGES_LIMIT: Final = 1000  # and the largest


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


class Api:
    """One request's answer per route (what the route's view sends)."""

    def __init__(self, kudos: WebContext) -> None:
        self.kudos = kudos
        self.reads = kudos.reads
        self.rules_for = kudos.rules_for
        self.boards = Leaderboards(kudos)
        self.history = DecisionHistory(kudos.api_clickhouse)

    async def leaderboard(self, q: Params) -> dict[str, Any]:
        """`top` people from rank `offset` + 1, ranked by `metric` (ties by user id); with
        `value`, the board of that company value (`Leaderboards.value_board`): people by
        counted thanks received that carried it, `score` = those thanks x the org's thanks
        weight. A value the org's rules do not list is ignored for boards: its board is
        empty (and costs no read)."""
        scope = board_scope(q, self.rules_for)
        top = q.integer("top", DEFAULT_TOP, 1, MAX_TOP)
        offset, metric, value = q.offset(), q.metric(), q.value()
        if value is not None:
            entries = await self.boards.value_board(scope, value, top, offset, metric)
            return value_board_payload(scope.org, scope.window, scope.start, value, entries)
        entries = await self.boards.get(scope, top, offset, metric)
        return leaderboard_payload(scope.org, scope.window, scope.start, entries)

    async def rank(self, q: Params, user: str) -> dict[str, Any]:
        """A person's rank by `metric` on the window's board, of how many, and the
        `around` people above and below (sinks/store.py `RecognitionStore.rank`)."""
        user = parse_user(user)
        scope = board_scope(q, self.rules_for)
        metric = q.metric()
        around = q.integer("around", DEFAULT_AROUND, 0, MAX_AROUND)
        place = await self.boards.rank(scope, user, metric, around)
        return rank_payload(scope.org, scope.window, scope.start, metric, place)

    def values(self, q: Params) -> dict[str, Any]:
        """The company values the org's rules list (`RuleConfig.values`): the boards
        `/api/leaderboard?value=` has (the live page offers them). Reads no data."""
        org = q.org()
        return {"org": org, "values": list(self.rules_for(org).values)}

    async def explain(self, q: Params, user: str) -> bytes:
        """Every point of a user's score in a window, with its event, rule and rule version
        (streams/domain/explain.py: paging and the privacy rules)."""
        user = parse_user(user)
        org, window, at = q.org(), q.window(), q.at(now_ms())
        page = q.page(DEFAULT_LIMIT, MAX_LIMIT)
        return await self.reads.run_heavy(
            explained, self.history, self.rules_for, org, user, window, at, page.limit, page.offset
        )

    async def badges(self, q: Params) -> dict[str, Any]:
        """Badge awards of an org (or one user), newest first, `limit` (100, at most
        1,000) from `offset`."""
        org, user = q.org(), q.user()
        page = q.page(BADGES_LIMIT, MAX_BADGES_LIMIT)
        rows = await self.reads.run(
            self.boards.store.badges, org, user, page.limit + 1, page.offset
        )
        return badges_payload(org, user, rows, page)

    async def health(self) -> tuple[dict[str, Any], int]:
        """Readiness (`readiness`) and its status: 200 when ready, else 503."""
        ready, body = await readiness(self.kudos)
        return body, 200 if ready else 503

    async def erasure(self, request_id: str, org: str | None) -> dict[str, Any]:
        """Whether a `kudos forget` request (of `org`, the admin's, when auth is on) has
        been carried out (for the CLI)."""
        from sinks.erase import erasure_done

        request_id = parse_user(request_id, "request_id")
        ch = self.kudos.api_clickhouse
        rows = await self.reads.run(erasure_done, ch, request_id, org)
        return {"request_id": request_id, "done": rows is not None, "rows": rows}


async def json_object(request: web.Request) -> dict[str, Any]:
    """A request's JSON object body, or BadRequest."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(name, "is required (a string)")
    return value


async def forget_request(kudos: WebContext, request: web.Request) -> web.Response:
    """POST /api/admin/forget {"org", "user"}: erase a person (admins of that org, when
    KUDOS_AUTH=jwt). 202 with the request id to poll at /api/erasures/{request_id}."""
    body = await json_object(request)
    org = parse_org(text_field(body, "org"))
    user = parse_user(text_field(body, "user"))
    principal = principal_of(request)
    if principal is not None and principal.org != org:
        return json_error(403, FORBIDDEN["other_org"])
    request_id = await kudos.request_erasure(org, user)
    return web.json_response({"request_id": request_id, "org": org}, status=202)


def register_api_views(kudos: WebContext) -> None:
    app, api = kudos.app, Api(kudos)

    @app.page("/api/leaderboard")
    class LeaderboardView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await api.leaderboard(params(request)))

    @app.page("/api/users/{user}/rank")
    class RankView(View):
        async def get(self, request: Request, user: str) -> Response:
            return self.json(await api.rank(params(request), user))

    @app.page("/api/values")
    class ValuesView(View):
        async def get(self, request: Request) -> Response:
            return self.json(api.values(params(request)))

    @app.page("/api/users/{user}/explain")
    class ExplainView(View):
        async def get(self, request: Request, user: str) -> Response:
            body = await api.explain(params(request), user)
            return self.bytes(body, content_type="application/json")

    @app.page("/api/badges")
    class BadgesView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await api.badges(params(request)))

    @app.page("/health")
    class HealthView(View):
        """Everything at once; 200 when ready (as /health/ready), else 503."""

        async def get(self, request: Request) -> Response:
            body, status = await api.health()
            return self.json(body, status=status)

    @app.page("/health/live")
    class LiveView(View):
        """Liveness: the process and its event loop answer. A ClickHouse outage or a stalled
        partition is not a reason to restart the worker, so they do not fail this."""

        async def get(self, request: Request) -> Response:
            return self.json({"live": True})

    @app.page("/health/ready")
    class ReadyView(HealthView):
        """Readiness: ClickHouse answers, the worker has joined its consumer group, and no
        assigned partition is stalled (lag, and no progress for KUDOS_STALL_SECONDS)."""

    @app.page("/api/erasures/{request_id}")
    class ErasureView(View):
        async def get(self, request: Request, request_id: str) -> Response:
            principal = principal_of(cast(web.Request, request))
            org = principal.org if principal is not None else None
            return self.json(await api.erasure(request_id, org))

    @app.page("/api/admin/forget")
    class ForgetView(View):
        async def post(self, request: Request) -> Response:
            return await forget_request(kudos, cast(web.Request, request))  # type: ignore[return-value]

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
