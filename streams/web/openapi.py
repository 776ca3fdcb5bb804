"""The HTTP API's OpenAPI 3.1 document, served at ``GET /openapi.json`` (DESIGN.md, part 2).

Built here from the limits the handlers enforce (streams/web/params.py and the endpoints'
own constants), so a bound changed in the code changes the document. What the code cannot
say by itself, the tests check: tests/streams/web/test_openapi.py compares the document
with the worker's aiohttp routes and with the query parameters each handler reads, and
tests/e2e/test_openapi_fuzz.py lets schemathesis check every answer of a real worker
against it (no 5xx, every status, content type and body as documented).

Security: a bearer scheme (a JWT, DESIGN.md "Who may read what") applies to every
``/api/*`` operation; the others (``/health*``, ``/metrics``, ``/``, ``/assets/*`` and this
document) say ``security: []``. With ``KUDOS_AUTH=off`` no token is asked for.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Final

import faust
from faust.web import Request, Response, View

from schemas.limits import MAX_ID_BYTES
from schemas.vocabulary import BOARD_METRICS, BOARD_WINDOWS, HISTORY_WINDOWS, WINDOWS
from sinks.pagedata import MAX_BADGES, MAX_POINTS
from streams.domain.explain import DEFAULT_LIMIT, MAX_LIMIT, METRICS
from streams.web.api import BADGES_LIMIT, MAX_BADGES_LIMIT
from streams.web.context import DEFAULT_AROUND, DEFAULT_TOP, MAX_AROUND, MAX_TOP
from streams.web.directory import BRIDGING_LIMIT, MAX_BRIDGING_LIMIT
from streams.web.page import (
    HISTORY_POINTS,
    LIVE_HEARTBEAT_S,
    LIVE_MAX_STREAM_S,
    PAGE_BADGES,
    PAGE_MAX_TOP,
    STATIC_TYPES,
)
from streams.web.params import MAX_AT, MAX_OFFSET, MIN_AT

Json = dict[str, Any]
PATH: Final = "/openapi.json"
JSON: Final = "application/json"
# No Unicode control character (category Cc), as schemas.limits.check_text; an org has no '/'.
_ID_PATTERN: Final = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
_ORG_PATTERN: Final = "^[^\\u0000-\\u001f\\u007f-\\u009f/]+$"
_COUNT: Final = {"type": "integer", "minimum": 0}
_INT: Final = {"type": "integer"}
_TEXT: Final = {"type": "string"}
_BOOL: Final = {"type": "boolean"}
_TIME: Final = {"type": "string", "format": "date-time"}
_NAME: Final = {"type": ["string", "null"]}
_NEXT: Final = {
    "type": ["integer", "null"],
    "minimum": 0,
    "description": "The offset of the next page; null on the last.",
}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: Json, optional: tuple[str, ...] = ()) -> Json:
    """A JSON object with exactly these properties (all required but `optional`)."""
    return {
        "type": "object",
        "properties": properties,
        "required": [p for p in properties if p not in optional],
        "additionalProperties": False,
    }


def window_schema(windows: tuple[str, ...] = WINDOWS) -> Json:
    return {"type": "string", "enum": list(windows)}


# /api/leaderboard?value=: the company value the board ranks by (absent without value=).
_VALUE: Final = {**_TEXT, "description": "With `value=`: the company value the board ranks by."}


def value_schemas() -> dict[str, Json]:
    """/api/values (streams/web/api.py `Api.values`)."""
    return {"Values": obj({"org": _TEXT, "values": {"type": "array", "items": _TEXT}})}


def rank_schema(people: Json) -> Json:
    """/api/users/{user}/rank's body: a person's place on a people board (`people`: the
    board's org, window and window start)."""
    return obj(
        {
            **people,
            "metric": {"type": "string", "enum": list(BOARD_METRICS)},
            "user_id": _TEXT,
            "rank": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "1 + the people ranked above (a higher value of the "
                "metric, or an equal one and a smaller user id); null when the person "
                "is not on the board: no points in the window, opted out, or unknown.",
            },
            "score": {
                "type": ["integer", "null"],
                "description": "The person's value of `metric` (their score for "
                "metric=score); null when `rank` is null.",
            },
            "of": {**_COUNT, "description": "How many people the board ranks."},
            "entries": {
                "type": "array",
                "items": ref("LeaderboardEntry"),
                "description": "Ranks rank - around to rank + around (fewer at either "
                "end of the board), the person among them; empty when `rank` is null.",
            },
        }
    )


def board_schemas() -> dict[str, Json]:
    """People and team boards (streams/web/payloads.py, streams/web/directory.py)."""
    counts = {
        "score": _INT,
        "shares": _COUNT,
        "thanks_given": _COUNT,
        "thanks_received": _COUNT,
    }
    person = {"rank": {"type": "integer", "minimum": 1}, "user_id": _TEXT, "display_name": _NAME}
    entry = {**person, **counts, "distinct_thankers": _COUNT, "reactions_received": _COUNT}
    movement = {"enum": ["up", "down", "same", "new", None]}
    scope = {"org": _TEXT, "window": window_schema(), "window_start": _TIME}
    people = {**scope, "window": window_schema(BOARD_WINDOWS)}  # rolling windows too
    return {
        "LeaderboardEntry": obj(entry),
        "Leaderboard": obj(
            {
                **people,
                "value": _VALUE,
                "entries": {"type": "array", "items": ref("LeaderboardEntry")},
            },
            optional=("value",),
        ),
        "Rank": rank_schema(people),
        "ChangesEntry": obj(
            {**entry, "previous_rank": {"type": ["integer", "null"]}, "movement": movement}
        ),
        "Changes": obj(
            {
                **scope,
                "previous_window_start": {"type": ["string", "null"], "format": "date-time"},
                "entries": {"type": "array", "items": ref("ChangesEntry")},
            }
        ),
        "TeamEntry": obj(
            {
                "rank": {"type": "integer", "minimum": 1},
                "group": _TEXT,
                "members": _COUNT,
                **counts,
                "reactions_received": _COUNT,
            }
        ),
        "TeamBoard": obj(
            {
                **scope,
                "by": {"type": "string", "enum": ["team", "department"]},
                "min_members": _COUNT,
                "offset": _COUNT,
                "next_offset": _NEXT,
                "entries": {"type": "array", "items": ref("TeamEntry")},
            }
        ),
        "BridgingTeam": obj(
            {"team": _TEXT, "members": _COUNT, "given_across": _COUNT, "received_across": _COUNT}
        ),
        "Bridging": obj(
            {
                **scope,
                "min_members": _COUNT,
                "limit": _COUNT,
                "offset": _COUNT,
                "next_offset": _NEXT,
                "teams": {"type": "array", "items": ref("BridgingTeam")},
            }
        ),
    }


def personal_schemas() -> dict[str, Json]:
    """One person's answers: balance, history, badges (sinks/store.py, sinks/pagedata.py)."""
    scope = {"org": _TEXT, "window": window_schema(), "window_start": _TIME}
    badge = {
        "org": _TEXT,
        "user_id": _TEXT,
        "display_name": _NAME,
        "badge": _TEXT,
        "period_start": _TIME,
        "awarded_at": _TIME,
    }
    return {
        "Balance": obj(
            {
                **scope,
                "user_id": _TEXT,
                "display_name": _NAME,
                "team": _NAME,
                "thanks_given": _COUNT,
                "thanks_received": _COUNT,
                "balance": _INT,
            }
        ),
        "HistoryPoint": obj({"window_start": _TIME, "score": _INT}),
        "History": obj(
            {
                "org": _TEXT,
                "window": window_schema(HISTORY_WINDOWS),
                "user_id": _TEXT,
                "display_name": _NAME,
                "points": {"type": "array", "items": ref("HistoryPoint")},
            }
        ),
        # display_name: on /api/badges/recent only.
        "Badge": obj(badge, optional=("display_name",)),
        "Badges": obj(
            {
                "org": _TEXT,
                "user": _NAME,
                "badges": {"type": "array", "items": ref("Badge")},
                "limit": _COUNT,
                "offset": _COUNT,
                "next_offset": _NEXT,
            }
        ),
    }


def explain_schemas() -> dict[str, Json]:
    """`/api/users/{user}/explain` (streams/domain/explain.py says what each field means)."""
    metrics = [m.value for m in METRICS]
    audit = obj({"rule": _TEXT, "rule_version": _INT, "was": _TEXT, "group_size": _COUNT})
    lineage = obj({"topic": _TEXT, "partition": _COUNT, "offset": _COUNT})
    entry = {
        "event_id": _NAME,
        "event_type": _TEXT,
        "occurred_at": _TIME,
        "actor_id": _NAME,
        "recipient_id": _NAME,
        "private": _BOOL,
        "metric": {"type": "string", "enum": metrics},
        "points": _INT,
        "counted": _BOOL,
        "reason": _TEXT,
        "rule_version": _INT,
        "audit": {"oneOf": [{"type": "null"}, ref("ExplainAudit")]},
        "lineage": {"oneOf": [{"type": "null"}, ref("Lineage")]},
    }
    totals = {
        "shares": _COUNT,
        "thanks_given": _COUNT,
        "thanks_received": _COUNT,
        "distinct_thankers": _COUNT,
        "reactions_received": _COUNT,
    }
    return {
        "ExplainAudit": audit,
        "Lineage": lineage,
        "ExplainEntry": obj(entry),
        "Explain": obj(
            {
                "org": _TEXT,
                "user_id": _TEXT,
                "window": window_schema(),
                "window_start": _TIME,
                "window_end": {"type": ["string", "null"], "format": "date-time"},
                "score": _INT,
                "totals": obj(totals),
                "weights": obj({m: _INT for m in metrics}),
                "refused": {"type": "object", "additionalProperties": _COUNT},
                "audit": obj({"reversed": _COUNT, "reinstated": _COUNT}),
                "count": _COUNT,
                "limit": _COUNT,
                "offset": _COUNT,
                "next_offset": _NEXT,
                "truncated": _BOOL,
                "entries": {"type": "array", "items": ref("ExplainEntry")},
            }
        ),
    }


def service_schemas() -> dict[str, Json]:
    """Errors, health, erasures and the admin's forget request."""
    user = {"type": "string", "minLength": 1, "pattern": _ID_PATTERN}
    return {
        "Error": {
            **obj({"error": _TEXT}),
            "description": "Every error: a message, never a stack trace, SQL or token.",
        },
        "Health": obj(
            {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "live": _BOOL,
                "ready": _BOOL,
                "clickhouse": {"type": "string", "description": "'ok' or 'error: <type>'"},
                "joined": _BOOL,
                "assigned": {"type": "array", "items": _TEXT},
                "stalled": {"type": "array", "items": _TEXT},
                "lag": {"type": "object", "additionalProperties": _COUNT},
            }
        ),
        "Liveness": obj({"live": {"const": True}}),
        "Erasure": obj({"request_id": _TEXT, "done": _BOOL, "rows": {"type": ["integer", "null"]}}),
        "ForgetRequest": obj(
            {"org": {**user, "pattern": _ORG_PATTERN, "maxLength": MAX_ID_BYTES}, "user": user}
        ),
        "ForgetAccepted": obj({"request_id": _TEXT, "org": _TEXT}),
        **live_schemas(),
    }


def live_schemas() -> dict[str, Json]:
    """/api/live's events (streams/web/page.py: `PageReads.snapshot`, `empty_snapshot`)."""
    return {
        "LiveSnapshot": obj(
            {
                "org": _TEXT,
                "window": window_schema(),
                "view": {"type": "string", "enum": ["people", "teams"]},
                "has_teams": _BOOL,
                "no_data": {**_BOOL, "description": "The org has no points (yet)."},
                "leaderboard": {"oneOf": [{"type": "null"}, ref("Changes")]},
                "teams": {"oneOf": [{"type": "null"}, ref("TeamBoard")]},
                "badges": ref("Badges"),
            }
        ),
        "LiveEvent": {
            **obj(
                {
                    "event": {"const": "snapshot"},
                    "data": {
                        "type": "string",
                        "contentMediaType": JSON,
                        "contentSchema": {"oneOf": [ref("LiveSnapshot"), ref("Error")]},
                    },
                    "id": _TEXT,
                    "retry": _COUNT,
                },
                optional=("id", "retry"),
            ),
            "description": "One server-sent event: a snapshot of the board, or (ClickHouse "
            "away) an error; the last snapshot stays shown.",
        },
    }


# --- parameters ---------------------------------------------------------------------------


def query(name: str, schema: Json, description: str, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def integer(name: str, default: int, minimum: int, maximum: int, description: str) -> Json:
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum, "default": default}
    return query(name, schema, f"{description} ASCII digits only.")


def window(default: str = "week", windows: tuple[str, ...] = WINDOWS) -> Json:
    schema = {**window_schema(windows), "default": default}
    return query("window", schema, "The window, in the org's calendar (time zone, week start).")


BOARD_WINDOW: Final = query(
    "window",
    {**window_schema(BOARD_WINDOWS), "default": "week"},
    "The window, in the org's calendar (time zone, week start, fiscal year), or a rolling "
    "one: last_7d, last_30d or last_90d are the org-local days ending with the day of `at` "
    "(inclusive), every metric summed over them but distinct_thankers, distinct over them; "
    "window_start is the first day's start.",
)


def path_id(name: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"{description} At most {MAX_ID_BYTES} UTF-8 bytes, no control "
        "character; no '/' (a path segment cannot hold one).",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_BYTES,
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f/]+$",
        },
    }


ORG: Final = query(
    "org",
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES, "pattern": _ORG_PATTERN},
    f"The org: at most {MAX_ID_BYTES} UTF-8 bytes, no control character, no '/'.",
    required=True,
)
AT: Final = query(
    "at",
    {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "integer", "minimum": MIN_AT, "maximum": MAX_AT - 1},
        ]
    },
    "A moment in the window (now when absent): an RFC 3339 date-time (UTC without a zone) "
    "or epoch milliseconds, from 2000-01-01T00:00:00Z to before 2100-01-01T00:00:00Z.",
)
OFFSET: Final = integer("offset", 0, 0, MAX_OFFSET, "Where the page starts (0: the first).")
TOP: Final = integer("top", DEFAULT_TOP, 1, MAX_TOP, "How many ranks.")
METRIC: Final = query(
    "metric",
    {"type": "string", "enum": list(BOARD_METRICS), "default": "score"},
    "What the board ranks by (descending; ties by user id ascending).",
)
USER: Final = path_id("user", "The person's user id.")
VALUE: Final = query(
    "value",
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES, "pattern": _ID_PATTERN},
    "A company value: rank people by counted thanks received that carried it (`score` = "
    "those thanks x the org's thanks weight; the other metrics 0). A value the org's "
    "rules do not list has an empty board; a listed one with a rolling window is a 400 "
    "(value boards have the calendar windows).",
)
COMMON_NOTE: Final = (
    "A parameter given twice is a 400; an empty value means absent; unknown parameters are ignored."
)


# --- responses ----------------------------------------------------------------------------

_RETRY: Final = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
_ERRORS: Final[dict[int, tuple[str, Json]]] = {
    400: ("A parameter value breaks its rule; the message names the parameter.", {}),
    401: (
        "No valid bearer token (KUDOS_AUTH=jwt): missing, malformed, expired, wrongly "
        "signed, wrong issuer or audience.",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: (
        "The token may not read this: another org, another person's personal read, or an "
        "admin path without the admin role.",
        {},
    ),
    404: ("Nothing at this path (a path segment that names nothing).", {}),
    429: ("Too many live streams from this address or on this worker.", _RETRY),
    503: (
        "Too many reads at once, ClickHouse away, or (KUDOS_AUTH=jwt) the key set cannot "
        "be fetched: retry after Retry-After.",
        _RETRY,
    ),
}
API_ERRORS: Final = (400, 401, 403, 503)


def content(media_type: str, schema: Json, description: str) -> Json:
    return {"description": description, "content": {media_type: {"schema": schema}}}


def errors(*codes: int) -> Json:
    out: Json = {}
    for code in codes:
        description, headers = _ERRORS[code]
        out[str(code)] = content(JSON, ref("Error"), description)
        if headers:
            out[str(code)]["headers"] = headers
    return out


def api_get(
    op_id: str, summary: str, parameters: list[Json], body: str, extra: tuple[int, ...] = ()
) -> Json:
    """A GET of /api/* (bearer token) answering JSON `body` (a component schema)."""
    in_path = any(p["in"] == "path" for p in parameters)
    codes = sorted({*API_ERRORS, *extra, *((404,) if in_path else ())})
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "description": COMMON_NOTE,
            "tags": ["api"],
            "parameters": parameters,
            "responses": {"200": content(JSON, ref(body), summary), **errors(*codes)},
        }
    }


def open_get(op_id: str, summary: str, responses: Json, parameters: tuple[Json, ...] = ()) -> Json:
    """A GET that needs no token."""
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "tags": ["service"],
            "security": [],
            "parameters": list(parameters),
            "responses": responses,
        }
    }


# --- paths --------------------------------------------------------------------------------


def board_paths() -> Json:
    """Boards of people and teams (streams/web/api.py, page.py, directory.py)."""
    return {
        "/api/leaderboard": api_get(
            "leaderboard",
            "The people board of a window by `metric`, `top` from rank `offset` + 1 (ranks "
            "count from 1 over the whole board; opted-out people are left out and ranks "
            "close up over the rest; past the end, no entries); with `value`, the board of "
            "that company value (calendar windows only).",
            [
                ORG,
                BOARD_WINDOW,
                AT,
                TOP,
                integer("offset", 0, 0, MAX_OFFSET, "Ranks to skip (0: from rank 1)."),
                METRIC,
                VALUE,
            ],
            "Leaderboard",
        ),
        "/api/values": api_get(
            "values",
            "The company values the org's rules list: the boards of `/api/leaderboard?value=`.",
            [ORG],
            "Values",
        ),
        "/api/leaderboard/changes": api_get(
            "leaderboardChanges",
            "The people board with each entry's rank in the previous window.",
            [ORG, window(), AT, TOP],
            "Changes",
        ),
        "/api/teams/leaderboard": api_get(
            "teamLeaderboard",
            "Teams or departments ranked by their members' score (groups of at least "
            "min_members people), `top` from rank `offset` + 1.",
            [
                ORG,
                window(),
                AT,
                query(
                    "by",
                    {"type": "string", "enum": ["team", "department"], "default": "team"},
                    "Group by.",
                ),
                TOP,
                OFFSET,
            ],
            "TeamBoard",
        ),
        "/api/teams/bridging": api_get(
            "bridging",
            "Thanks across teams, per team.",
            [
                ORG,
                window(),
                AT,
                integer("limit", BRIDGING_LIMIT, 1, MAX_BRIDGING_LIMIT, "Teams per page."),
                OFFSET,
            ],
            "Bridging",
        ),
    }


def people_paths() -> Json:
    """One person's reads and the badge feeds."""
    return {
        "/api/users/{user}/explain": api_get(
            "explain",
            "Every point of a person's score in a window, with its event, rule and rule version.",
            [
                USER,
                ORG,
                window(),
                AT,
                integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT, "Entries per page."),
                OFFSET,
            ],
            "Explain",
        ),
        "/api/users/{user}/rank": api_get(
            "rank",
            "A person's rank on the window's people board by `metric`, of how many, with "
            "the `around` people above and below (a personal read).",
            [
                USER,
                ORG,
                BOARD_WINDOW,
                AT,
                METRIC,
                integer("around", DEFAULT_AROUND, 0, MAX_AROUND, "Neighbours on each side."),
            ],
            "Rank",
        ),
        "/api/users/{user}/balance": api_get(
            "balance", "Thanks a person gave and received.", [USER, ORG, window(), AT], "Balance"
        ),
        "/api/users/{user}/history": api_get(
            "history",
            "A person's score in consecutive windows up to the one holding `at`, oldest first.",
            [
                USER,
                ORG,
                window("day", HISTORY_WINDOWS),
                AT,
                integer("points", HISTORY_POINTS, 1, MAX_POINTS, "How many windows."),
            ],
            "History",
        ),
        "/api/badges": api_get(
            "badges",
            "Badge awards of an org (or of one person), newest first.",
            [
                ORG,
                {**path_id("user", "Only this person's awards."), "in": "query", "required": False},
                integer("limit", BADGES_LIMIT, 1, MAX_BADGES_LIMIT, "Awards per page."),
                OFFSET,
            ],
            "Badges",
        ),
        "/api/badges/recent": api_get(
            "recentBadges",
            "The newest badge awards, with display names.",
            [ORG, integer("limit", PAGE_BADGES, 1, MAX_BADGES, "Awards per page."), OFFSET],
            "Badges",
        ),
        "/api/erasures/{request_id}": api_get(
            "erasure",
            "Whether a forget request has been carried out.",
            [path_id("request_id", "The id `kudos forget` or /api/admin/forget gave.")],
            "Erasure",
        ),
    }


def live_path() -> Json:
    """/api/live: server-sent events (streams/web/page.py, LiveStreams)."""
    token = query(
        "access_token",
        {"type": "string"},
        "The bearer token, for EventSource (which cannot send headers); on this path only.",
    )
    view = query(
        "view", {"type": "string", "enum": ["people", "teams"], "default": "people"}, "Board."
    )
    stream = content(
        "text/event-stream",
        ref("LiveEvent"),
        "`event: snapshot` messages, each `data` one JSON object (the page's board, badges "
        f"and `no_data`), sent when it changes; a comment every {LIVE_HEARTBEAT_S:g} s; the "
        f"stream ends after {LIVE_MAX_STREAM_S:g} s, or after one snapshot for an org "
        "without points.",
    )
    top = integer("top", DEFAULT_TOP, 1, PAGE_MAX_TOP, "How many ranks.")
    op = api_get(
        "live",
        "The live page's board as a stream.",
        [ORG, window(), top, view, token],
        "Error",
        (429,),
    )
    op["get"]["responses"]["200"] = stream
    return {"/api/live": op}


def admin_paths() -> Json:
    forget = {
        "operationId": "forget",
        "summary": "Erase a person's data in an org (admins of that org only).",
        "tags": ["admin"],
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": ref("ForgetRequest")}},
        },
        "responses": {
            "202": content(
                JSON, ref("ForgetAccepted"), "Accepted: poll /api/erasures/{request_id}."
            ),
            **errors(*API_ERRORS),
        },
    }
    return {"/api/admin/forget": {"post": forget}}


def service_paths() -> Json:
    """What needs no token: health, metrics, the page, its assets, this document."""
    health = {
        "200": content(JSON, ref("Health"), "Ready: ClickHouse answers, joined, nothing stalled."),
        "503": content(JSON, ref("Health"), "Not ready (the body says why)."),
    }
    asset_types = sorted(set(STATIC_TYPES.values()))
    asset = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": sorted(STATIC_TYPES)},
    }
    return {
        "/health": open_get("health", "Readiness, with its details.", health),
        "/health/ready": open_get("ready", "Readiness (as /health).", health),
        "/health/live": open_get(
            "liveness",
            "Liveness: the process answers.",
            {"200": content(JSON, ref("Liveness"), "Alive.")},
        ),
        "/metrics": open_get(
            "metrics",
            "Prometheus metrics.",
            {"200": content("text/plain", _TEXT, "Text exposition format.")},
        ),
        "/": open_get("page", "The live page.", {"200": content("text/html", _TEXT, "The page.")}),
        "/assets/{name}": open_get(
            "asset",
            "The page's script, style sheet and icon.",
            {
                "200": {
                    "description": "The file.",
                    "content": {t: {"schema": _TEXT} for t in asset_types},
                },
                **errors(404),
            },
            (asset,),
        ),
        PATH: open_get(
            "openapi", "This document.", {"200": content(JSON, {"type": "object"}, "OpenAPI 3.1.")}
        ),
    }


def document() -> Json:
    """The OpenAPI 3.1 document of the worker's HTTP API."""
    try:
        version = metadata.version("kudos")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kudos",
            "version": version,
            "description": "Recognition boards, explain, badges and the live page of a kudos "
            'worker. Every error is JSON {"error": "..."}. Lists are bounded and paged '
            "(limit/offset in, next_offset out). Personal responses are Cache-Control: no-store.",
        },
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "api", "description": "Reads: a bearer token when KUDOS_AUTH=jwt."},
            {"name": "admin", "description": "Admin actions: role kudos-admin of the org."},
            {"name": "service", "description": "Open: health, metrics, the page."},
        ],
        "paths": {
            **board_paths(),
            **people_paths(),
            **live_path(),
            **admin_paths(),
            **service_paths(),
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {
                **board_schemas(),
                **value_schemas(),
                **personal_schemas(),
                **explain_schemas(),
                **service_schemas(),
            },
        },
    }


def register_openapi_view(app: faust.App) -> None:
    """``GET /openapi.json`` on the worker's web server (the document is built once)."""
    body = document()

    @app.page(PATH)
    class OpenApiView(View):
        async def get(self, request: Request) -> Response:
            return self.json(body)
