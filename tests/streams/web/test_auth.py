"""The access rules (streams/web/auth.py): pure rules, then the middleware on a small aiohttp
app behind the real guard, with tokens of a stand-in identity provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams import metrics
from streams.web import auth, guard
from streams.web.admission import ApiReads
from streams.web.tokens import Claims, KeySet, Principal, TokenRefused
from tests.services.idp import AUDIENCE, ISSUER, IdentityProvider

ANA = Principal("ana", "acme", admin=False)
ADMIN = Principal("root", "acme", admin=True)


def test_which_paths_need_what() -> None:
    assert auth.access_of("/health/ready") == "open"
    assert auth.access_of("/metrics") == "open"
    assert auth.access_of("/") == "open"
    assert auth.access_of("/assets/app.js") == "open"
    assert auth.access_of("/openapi.json") == "open"
    assert auth.access_of("/api/leaderboard") == "member"
    assert auth.access_of("/api/users/ana/explain") == "member"
    assert auth.access_of("/api/admin/forget") == "admin"
    assert auth.access_of("/api/erasures/abc") == "admin"


def test_forbidden() -> None:
    assert auth.forbidden(ANA, "member", ["acme"], None) is None
    assert auth.forbidden(ANA, "member", ["globex"], None) == "other_org"
    assert auth.forbidden(ANA, "member", ["acme", "globex"], None) == "other_org"
    assert auth.forbidden(ANA, "member", [""], None) is None  # empty: absent, a 400 later
    assert auth.forbidden(ANA, "member", ["acme"], "ana") is None
    assert auth.forbidden(ANA, "member", ["acme"], "bo") == "other_user"
    assert auth.forbidden(ADMIN, "member", ["acme"], "bo") is None
    assert auth.forbidden(ADMIN, "member", ["globex"], "bo") == "other_org"
    assert auth.forbidden(ANA, "admin", ["acme"], None) == "not_admin"
    assert auth.forbidden(ADMIN, "admin", ["acme"], None) is None


def test_token_of() -> None:
    assert auth.token_of("Bearer abc", [], "/api/leaderboard") == "abc"
    assert auth.token_of("bearer  abc ", [], "/api/leaderboard") == "abc"
    assert auth.token_of(None, ["q"], "/api/live") == "q"
    assert auth.token_of(None, ["q"], "/api/leaderboard") is None  # only on /api/live
    assert auth.token_of("Bearer h", ["q"], "/api/live") == "h"
    for bad in ("Basic abc", "Bearer", "Bearer  ", "abc"):
        with pytest.raises(TokenRefused):
            auth.token_of(bad, [], "/api/leaderboard")
    with pytest.raises(TokenRefused):
        auth.token_of(None, ["a", "b"], "/api/live")


Call = Callable[..., Awaitable[tuple[int, dict[str, str], Any]]]


def run_app(idp: IdentityProvider, test: Callable[[Call], Awaitable[None]]) -> None:
    """`test` against an app with the guard, the access rules and a few routes that echo
    who asked."""
    body = json.dumps(idp.jwks()).encode()
    authenticator = auth.Authenticator(KeySet(lambda: body, 300), Claims(ISSUER, AUDIENCE))

    async def echo(request: web.Request) -> web.Response:
        principal = auth.principal_of(request)
        return web.json_response({"user": principal.user if principal else None})

    async def main() -> None:
        app = web.Application()
        reads = ApiReads(1, 5.0, 4)
        guard.install(app, reads)
        auth.install(app, authenticator)
        for path in (
            "/api/leaderboard",
            "/api/users/{user}/explain",
            "/api/users/{user}/rank",
            "/api/live",
            "/health",
        ):
            app.router.add_get(path, echo)
        app.router.add_post("/api/admin/forget", echo)
        async with TestClient(TestServer(app)) as client:

            async def call(path: str, token: str | None = None, method: str = "GET") -> Any:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = await client.request(method, path, headers=headers)
                return r.status, dict(r.headers), await r.json()

            await test(call)
        reads.shutdown()

    asyncio.run(main())


def test_the_middleware_answers_401_403_and_lets_members_through() -> None:
    idp = IdentityProvider()
    ana, admin = idp.token("ana", "acme"), idp.admin_token("acme")

    async def test(call: Call) -> None:
        status, headers, body = await call("/api/leaderboard?org=acme")
        assert (status, body) == (401, {"error": "a bearer token is required"})
        assert headers["WWW-Authenticate"] == 'Bearer realm="kudos"'
        assert headers["X-Content-Type-Options"] == "nosniff"  # the guard's headers too
        status, headers, body = await call("/api/leaderboard?org=acme", "garbage")
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert (await call("/api/leaderboard?org=acme", ana))[2] == {"user": "ana"}
        assert (await call("/api/leaderboard?org=globex", ana))[0] == 403
        assert (await call("/api/users/ana/explain?org=acme", ana))[0] == 200
        assert (await call("/api/users/bo/explain?org=acme", ana))[0] == 403
        assert (await call("/api/users/bo/explain?org=acme", admin))[0] == 200
        # /rank is personal too: a member reads only their own place, an admin anyone's.
        assert (await call("/api/users/ana/rank?org=acme", ana))[0] == 200
        assert (await call("/api/users/bo/rank?org=acme", ana))[0] == 403
        assert (await call("/api/users/bo/rank?org=acme", admin))[0] == 200
        assert (await call("/api/users/ana/rank?org=globex", ana))[0] == 403
        assert (await call("/api/admin/forget", ana, "POST"))[0] == 403
        assert (await call("/api/admin/forget", admin, "POST"))[0] == 200
        assert (await call(f"/api/live?org=acme&access_token={ana}"))[0] == 200
        assert (await call(f"/api/leaderboard?org=acme&access_token={ana}"))[0] == 401
        assert (await call("/health"))[0] == 200  # open
        assert (await call("/api/no-such-path"))[0] == 401  # every /api/* path

    before = metrics.AUTH_REFUSED.labels("other_user")._value.get()
    run_app(idp, test)
    assert metrics.AUTH_REFUSED.labels("other_user")._value.get() == before + 2
