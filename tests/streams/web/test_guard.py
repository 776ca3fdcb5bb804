"""JSON errors without internals and the security headers (streams/web/guard.py), on a
plain aiohttp app served on a real socket: every error kind is JSON with "error", an
unexpected exception is a 500 that neither the body nor the log line explains, and every
response carries nosniff, frame-ancestors 'none' and a Server header without versions."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sinks.clickhouse import ClickHouseUnavailable
from streams.web import guard
from streams.web.admission import ApiReads, ReadRejected
from streams.web.params import BadRequest

SECRET = "SELECT secret FROM kudos.decisions WHERE org_id = 'acme'"


def app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def bad(request: web.Request) -> web.Response:
        raise BadRequest("top", "must be an integer from 1 to 1000")

    async def boom(request: web.Request) -> web.Response:
        raise ValueError(SECRET)

    async def busy(request: web.Request) -> web.Response:
        raise ReadRejected("busy", 5)

    async def away(request: web.Request) -> web.Response:
        raise ClickHouseUnavailable(SECRET)

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<html></html>",
            content_type="text/html",
            headers={"Content-Security-Policy": "default-src 'none'; script-src 'self'"},
        )

    application = web.Application()
    for path, handler in [
        ("/api/ok", ok),
        ("/api/bad", bad),
        ("/api/users/{user}/boom", boom),
        ("/api/busy", busy),
        ("/api/away", away),
        ("/", page),
    ]:
        application.router.add_get(path, handler)
    guard.install(application, ApiReads(1, 5.0, 1))
    return application


async def fetch(client: TestClient[Any, Any], method: str, path: str, **kw: Any) -> Any:
    async with client.request(method, path, **kw) as r:
        return r.status, dict(r.headers), await r.text()


def run_all(calls: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    async def scenario() -> list[Any]:
        async with TestClient(TestServer(app())) as client:
            return [await fetch(client, m, p, **kw) for m, p, kw in calls]

    return asyncio.run(scenario())


def test_every_error_is_json_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="streams.web.guard")
    results = run_all(
        [
            ("GET", "/api/bad", {}),
            ("GET", "/api/users/ann/boom?token=abc", {}),
            ("GET", "/api/busy", {}),
            ("GET", "/api/away", {}),
            ("GET", "/no/such/path", {}),
            ("POST", "/api/ok", {}),
            ("POST", "/api/ok", {"data": b"x" * (guard.MAX_BODY_BYTES + 1)}),
        ]
    )
    got = [(status, json.loads(body)) for status, _, body in results]
    assert got == [
        (400, {"error": "'top' must be an integer from 1 to 1000"}),
        (500, {"error": "internal error"}),
        (503, {"error": "too many requests at once: try again shortly"}),
        (503, {"error": "data temporarily unavailable"}),
        (404, {"error": "not found"}),
        (405, {"error": "method not allowed"}),
        (413, {"error": "request body too large"}),
    ]
    assert results[2][1]["Retry-After"] == "5" and results[3][1]["Retry-After"] == "5"
    assert "GET" in results[5][1]["Allow"]
    assert all(r[1]["Content-Type"].startswith("application/json") for r in results)
    logged = caplog.text
    assert "/api/users/{user}/boom" in logged and "ValueError" in logged
    for private in ("SELECT", "secret", "ann", "token"):
        assert private not in logged and all(private not in r[2] for r in results)


def test_every_response_carries_the_security_headers() -> None:
    results = run_all([("GET", "/api/ok", {}), ("GET", "/", {}), ("GET", "/nothing", {})])
    for _status, headers, _ in results:
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["Server"] == "kudos"
    api, page, missing = (r[1] for r in results)
    assert api["Cache-Control"] == "no-store"
    assert api["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert page["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'")
    assert "Cache-Control" not in page and missing["Content-Security-Policy"]
