"""Who may read what (DESIGN.md, "Who may read what"): the access rules of the HTTP API and
the middleware that applies them when KUDOS_AUTH=jwt (streams/web/tokens.py verifies).

* Open, token or not: `/health*`, `/metrics`, `/openapi.json`, the page (`/`, `/assets/*`).
* Every `/api/*` path needs a valid bearer token (`Authorization: Bearer …`; on
  `/api/live` only, EventSource cannot send headers, so `access_token=` in the query
  string is accepted too): else 401 with `WWW-Authenticate: Bearer`.
* Members of the token's org read its boards, team boards, badges and live stream; a
  request naming another org (`org=`) is a 403.
* Personal reads, `/api/users/{user}/…`: only `sub == user`, or an admin of the org; else 403.
* Admin paths (`/api/admin/*`, `/api/erasures/*`): role `kudos-admin` only; else 403.
* While the identity provider's keys cannot be fetched, requests with a token answer 503
  with Retry-After (fail closed), never 200.

Query strings are never logged (they may hold `access_token`); nor are tokens or claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from aiohttp import web
from aiohttp.typedefs import Middleware

from streams import metrics
from streams.settings import Settings
from streams.web.guard import Handler, json_error
from streams.web.tokens import (
    Claims,
    KeySet,
    KeysUnavailable,
    Principal,
    TokenRefused,
    jwks_reader,
    unverified_header,
    verify_token,
)

Access = Literal["open", "member", "admin"]
PRINCIPAL: Final = web.RequestKey("kudos.principal", Principal)  # for handlers that need it
ADMIN_PREFIXES: Final = ("/api/admin/", "/api/erasures/")
TOKEN_PARAMETER: Final = "access_token"
TOKEN_IN_QUERY_PATHS: Final = frozenset({"/api/live"})
KEYS_RETRY_AFTER_S: Final = 5
FORBIDDEN: Final = {
    "not_admin": "this needs the kudos-admin role",
    "other_org": "this token is not for that org",
    "other_user": "only this person or an admin may read this",
}


def access_of(path: str) -> Access:
    """What a path needs: nothing, a member of the org, or an admin."""
    if not path.startswith("/api/"):
        return "open"
    return "admin" if path.startswith(ADMIN_PREFIXES) else "member"


def forbidden(
    principal: Principal, access: Access, orgs: Sequence[str], user: str | None
) -> str | None:
    """Why `principal` may not make the request (a FORBIDDEN key), or None."""
    if access == "admin" and not principal.admin:
        return "not_admin"
    if any(org and org != principal.org for org in orgs):  # empty: absent (params.py)
        return "other_org"
    if user is not None and user != principal.user and not principal.admin:
        return "other_user"
    return None


def token_of(authorization: str | None, query_tokens: Sequence[str], path: str) -> str | None:
    """The request's bearer token, if it brings one: from the Authorization header, or
    from `access_token=` on the paths that take it (the header wins)."""
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise TokenRefused("malformed")
        return value.strip()
    if path in TOKEN_IN_QUERY_PATHS and query_tokens:
        if len(query_tokens) > 1:
            raise TokenRefused("malformed")
        return query_tokens[0]
    return None


class Authenticator:
    """Turns a bearer token into a `Principal`, or refuses it."""

    def __init__(self, keys: KeySet, claims: Claims) -> None:
        self.keys = keys
        self.claims = claims

    async def principal(self, token: str) -> Principal:
        header = unverified_header(token)
        key = await self.keys.key_for(header.get("kid"))
        return verify_token(token, key, str(header["alg"]), self.claims)


def authenticator(settings: Settings) -> Authenticator | None:
    """The settings' authenticator; None when KUDOS_AUTH is `off`."""
    if settings.auth != "jwt":
        return None
    reader = jwks_reader(settings.auth_jwks, settings.auth_jwks_ca_file)
    claims = Claims(
        settings.auth_issuer,
        settings.auth_audience,
        settings.auth_org_claim,
        settings.auth_roles_claim,
    )
    return Authenticator(KeySet(reader, settings.auth_jwks_max_age_s), claims)


def unauthorized(reason: str) -> web.Response:
    """401 with the challenge RFC 6750 asks for."""
    metrics.AUTH_REFUSED.labels(reason).inc()
    if reason == "missing":
        challenge, message = 'Bearer realm="kudos"', "a bearer token is required"
    else:
        challenge, message = 'Bearer realm="kudos", error="invalid_token"', "invalid token"
    return json_error(401, message, {"WWW-Authenticate": challenge})


def authentication(auth: Authenticator) -> Middleware:
    """The middleware: the access rules above, before any handler reads anything."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        access = access_of(request.path)
        if access == "open":
            return await handler(request)
        try:
            header = request.headers.get("Authorization")
            token = token_of(header, request.query.getall(TOKEN_PARAMETER, []), request.path)
            if token is None:
                raise TokenRefused("missing")
            principal = await auth.principal(token)
        except TokenRefused as exc:
            return unauthorized(exc.reason)
        except KeysUnavailable:
            metrics.API_REJECTED.labels("auth_unavailable").inc()
            retry = {"Retry-After": str(KEYS_RETRY_AFTER_S)}
            return json_error(503, "authentication is temporarily unavailable", retry)
        user = request.match_info.get("user")
        reason = forbidden(principal, access, request.query.getall("org", []), user)
        if reason is not None:
            metrics.AUTH_REFUSED.labels(reason).inc()
            return json_error(403, FORBIDDEN[reason])
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware


def install(app: web.Application, auth: Authenticator | None) -> None:
    """After `guard.install`: inside the guard, so its headers are on every answer."""
    if auth is not None:
        app.middlewares.append(authentication(auth))


def principal_of(request: web.Request) -> Principal | None:
    """Who the request's token says is asking; None when KUDOS_AUTH is off."""
    return request.get(PRINCIPAL)
