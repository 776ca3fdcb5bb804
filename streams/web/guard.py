"""What every HTTP response of a worker is, whatever went wrong: JSON errors without
internals, and security headers (DESIGN.md, part 2). Installed on faust's aiohttp app.

* Errors are JSON ``{"error": "..."}``: a bad parameter (`BadRequest`, 400), an unknown
  path (404), a method the path does not serve (405, with ``Allow``), a declared request
  body over `MAX_BODY_BYTES` (413: no endpoint reads a body), a read refused by admission
  (`ReadRejected`, 503 with ``Retry-After``), ClickHouse away (503 with ``Retry-After``),
  and anything unexpected (500 ``internal error``). An unexpected exception is logged with
  its type and the route's pattern only: its message may hold SQL or ids, and the path
  or query string may hold a user id or a token.
* Headers on every routed response (JSON, the event stream, the page, its assets, the
  errors above): ``X-Content-Type-Options: nosniff``; `SCANNER_HEADERS`; a
  Content-Security-Policy with ``frame-ancestors 'none'`` (``default-src 'none'`` unless
  the response brings its own policy, as the page does); ``Cache-Control: no-store`` on
  ``/api/*`` (explain, balance, history and erasures are personal; the rest is not worth
  a cache's risk); ``Server: kudos``, without versions (also on aiohttp's own answer to a
  request it cannot parse).
* The time limit of the request's reads starts when the request does
  (`ApiReads.start_request`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Final

from aiohttp import web, web_protocol, web_response
from aiohttp.typedefs import Middleware

from sinks.clickhouse import ClickHouseUnavailable
from streams import metrics
from streams.web.admission import ApiReads, ReadRejected
from streams.web.params import BadRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
SERVER: Final = "kudos"
CSP_DEFAULT: Final = "default-src 'none'; frame-ancestors 'none'"
# What a scanner (OWASP ZAP, Mozilla Observatory) expects besides the CSP: no referrer
# leaves the page (a URL may hold a user id), other origins may neither embed our
# responses nor share our window, and the page asks for no device. No HSTS: the worker
# serves plain HTTP; the TLS proxy in front of it sets HSTS (README "Security review").
SCANNER_HEADERS: Final = {
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
_MESSAGES: Final = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int, message: str, headers: MutableMapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def security_headers(path: str, headers: MutableMapping[str, str]) -> None:
    """Sets the headers every response carries (module doc) on `headers`."""
    headers["X-Content-Type-Options"] = "nosniff"
    for name, value in SCANNER_HEADERS.items():
        headers.setdefault(name, value)
    policy = headers.get("Content-Security-Policy")
    if policy is None:
        headers["Content-Security-Policy"] = CSP_DEFAULT
    elif "frame-ancestors" not in policy:
        headers["Content-Security-Policy"] = policy + "; frame-ancestors 'none'"
    if path.startswith("/api/"):
        headers["Cache-Control"] = "no-store"
    headers["Server"] = SERVER


def route_of(request: web.Request) -> str:
    """The route's pattern (``/api/users/{user}/explain``), never the path itself."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx (no route, wrong method, body too large, ...) as JSON."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    message = _MESSAGES.get(exc.status) or (exc.reason or "error").lower()
    return json_error(exc.status, message, headers)


def guard(reads: ApiReads) -> Middleware:
    """The middleware: the request's read deadline, and every error as JSON."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        reads.start_request()
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return json_error(413, _MESSAGES[413])
        try:
            return await handler(request)
        except BadRequest as exc:
            return json_error(400, str(exc))
        except ReadRejected as exc:
            retry = {"Retry-After": str(exc.retry_after_s)}
            return json_error(503, "too many requests at once: try again shortly", retry)
        except ClickHouseUnavailable:
            metrics.API_REJECTED.labels("unavailable").inc()
            retry = {"Retry-After": str(reads.retry_after_s)}
            return json_error(503, "data temporarily unavailable", retry)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return http_error(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: say nothing of it to the client
            log.error("%s %s failed: %s", request.method, route_of(request), type(exc).__name__)
            return json_error(500, "internal error")

    return middleware


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    security_headers(request.path, response.headers)


_PROTOCOL_ERRORS: Final = {
    400: "bad request: not a valid HTTP request",
    500: "internal error",
    504: "timeout",
}


def protocol_error(
    self: web_protocol.RequestHandler,
    request: web.BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """aiohttp's answer to a request it could not parse (a raw non-ASCII byte in the
    target, a request line or header over 8 KiB, bytes that are not HTTP), as JSON with
    the headers every response carries. aiohttp's own repeats the request line back and
    logs it with a traceback: a query string may hold a user id, later a token."""
    log.info("unparseable HTTP request (%s): %d", type(exc).__name__, status)
    if request.writer.output_size > 0:  # as aiohttp: the connection is broken
        raise ConnectionError("a response was sent already, cannot send the error")
    response = json_error(status, _PROTOCOL_ERRORS.get(status, "bad request"))
    security_headers("", response.headers)
    response.force_close()
    return response


def install(app: web.Application, reads: ApiReads) -> None:
    """Before the app starts (aiohttp freezes both lists then)."""
    app.middlewares.append(guard(reads))
    app.on_response_prepare.append(_on_prepare)
    # A request aiohttp cannot parse is answered before any route, middleware or hook
    # runs, by its protocol handler, and with the Server header of this module constant
    # (aiohttp/web_response.py), the one place that names the versions. aiohttp offers no
    # hook for either; the worker's process serves nothing else, so both are replaced.
    if hasattr(web_response, "SERVER_SOFTWARE"):
        web_response.SERVER_SOFTWARE = SERVER
    web_protocol.RequestHandler.handle_error = protocol_error  # type: ignore[method-assign]
