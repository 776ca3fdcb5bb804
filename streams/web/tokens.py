"""Bearer tokens: the identity provider's keys (`KeySet`) and what a token proves
(`verify_token` -> `Principal`), with PyJWT. DESIGN.md, "Who may read what".

* Keys come from KUDOS_AUTH_JWKS, a JWKS file or an https URL (http only on loopback, for
  a test or a local provider), and are fetched again when a token names a key id (`kid`)
  the set does not hold (at most every `REFETCH_S`: random ids cannot make kudos hammer
  the provider) and when they are older than KUDOS_AUTH_JWKS_MAX_AGE_S.
* Fail closed: while keys cannot be fetched (none yet, too old, or an unknown `kid`), a
  request with a token is not decided on guesses: `KeysUnavailable` (503).
* RS256 and ES256 only, and only the algorithm of the key that the token names: never
  `none`, never an HMAC keyed with a public key. `exp`, `iss`, `aud` and `sub` are
  required; `exp`, `nbf` and `iat` are checked with `LEEWAY_S`.
* Claims: `sub` is the user id, the org is in the org claim, roles in the roles claim (a
  list; a dotted name such as `realm_access.roles` reads a nested claim); role
  `ADMIN_ROLE` is an admin of that org.

No token, key or claim value is ever logged or put into an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jwt

from schemas.limits import LimitError, check_org, check_text
from streams import metrics

log = logging.getLogger(__name__)

ALGORITHMS: Final = frozenset({"RS256", "ES256"})
LEEWAY_S: Final = 60
ADMIN_ROLE: Final = "kudos-admin"
REFETCH_S: Final = 5.0  # a fetch at most this often (unknown key ids, failures)
FETCH_TIMEOUT_S: Final = 5.0
MAX_JWKS_BYTES: Final = 1 << 20
MAX_TOKEN_BYTES: Final = 16 * 1024
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class TokenRefused(Exception):
    """The token proves nothing (401); `reason` is a metric label, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """The identity provider's keys cannot be fetched now: requests fail closed (503)."""


@dataclass(frozen=True)
class Principal:
    """Who a valid token says is asking."""

    user: str
    org: str
    admin: bool


@dataclass(frozen=True)
class Claims:
    """Where the claims are and what they must say (from the settings)."""

    issuer: str
    audience: str
    org_claim: str = "org"
    roles_claim: str = "roles"


def jwks_reader(source: str, ca_file: Path | None = None) -> Callable[[], bytes]:
    """A function that reads the JWKS at `source` (a file path or an http(s) URL)."""
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https"):
        path = Path(source)
        return path.read_bytes
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError("KUDOS_AUTH_JWKS: an http URL only on loopback; use https")
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def fetch() -> bytes:
        request = urllib.request.Request(source, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S, context=context) as r:
            body: bytes = r.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("JWKS larger than 1 MiB")
        return body

    return fetch


class KeySet:
    """The provider's signing keys by `kid`, fetched when needed (module doc)."""

    def __init__(
        self,
        read: Callable[[], bytes],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age_s = max_age_s
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._last_attempt = -REFETCH_S
        self._failed = False  # the last fetch failed
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key a token names; `TokenRefused("unknown_key")` when the provider, asked
        again, does not have it; `KeysUnavailable` when it cannot be asked."""
        if self._loaded_at is None or self._clock() - self._loaded_at > self._max_age_s:
            await self._refresh(must=True)
        key = self._find(kid)
        if key is None:
            await self._refresh(must=False)
            key = self._find(kid)
        if key is None:
            raise TokenRefused("unknown_key")
        return key

    async def warm(self) -> None:
        """Fetch the keys once at start, so the first request does not wait for them and
        `kudos_auth_keys_up` says at once whether they can be fetched (logged if not)."""
        with contextlib.suppress(KeysUnavailable):
            await self._refresh(must=True)

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))  # one key: tokens need not name it
        return self._keys.get(kid) if kid is not None else None

    async def _refresh(self, *, must: bool) -> None:
        """Fetch the set, at most every REFETCH_S. Too soon after the last fetch, nothing
        is fetched: that fetch's answer stands (the set as it is, or, if it failed, or the
        set is too old where `must`, `KeysUnavailable`). A failed fetch raises it too."""
        async with self._lock:
            started = self._clock()
            if started - self._last_attempt < REFETCH_S:
                if self._failed or (must and not self._fresh(started)):
                    raise KeysUnavailable()
                return
            self._last_attempt = started
            try:
                body = await asyncio.to_thread(self._read)
                self._keys = parse_jwks(body)
            except Exception as exc:  # OSError, bad JSON, no usable key: all the same
                self._failed = True
                metrics.AUTH_KEYS_UP.set(0)
                metrics.AUTH_KEY_FETCH_FAILURES.inc()
                log.warning("cannot fetch the JWKS (KUDOS_AUTH_JWKS): %s", type(exc).__name__)
                raise KeysUnavailable() from None
            self._failed = False
            self._loaded_at = started
            metrics.AUTH_KEYS_UP.set(1)

    def _fresh(self, now: float) -> bool:
        return self._loaded_at is not None and now - self._loaded_at <= self._max_age_s


def parse_jwks(body: bytes) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWKS by `kid` (RS256/ES256 ones only)."""
    keys = jwt.PyJWKSet.from_json(body.decode()).keys
    usable = {k.key_id: k for k in keys if k.algorithm_name in ALGORITHMS}
    if not usable:
        raise ValueError("the JWKS holds no RS256 or ES256 key")
    return usable


def unverified_header(token: str) -> Mapping[str, Any]:
    """The token's header, before anything is trusted: its `alg` must be one we accept."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRefused("malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRefused("malformed") from None
    if header.get("alg") not in ALGORITHMS:
        raise TokenRefused("algorithm")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRefused("malformed")
    return header


_REASONS: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "audience"),
    (jwt.InvalidIssuerError, "issuer"),
    (jwt.InvalidSignatureError, "signature"),
    (jwt.MissingRequiredClaimError, "claims"),
    (jwt.InvalidAlgorithmError, "algorithm"),
    (jwt.DecodeError, "malformed"),
)


def verify_token(token: str, key: jwt.PyJWK, alg: str, claims: Claims) -> Principal:
    """What the token proves, signed by `key` with the key's own algorithm."""
    if alg != key.algorithm_name:
        raise TokenRefused("algorithm")
    try:
        payload = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=claims.audience,
            issuer=claims.issuer,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        reason = next((r for kind, r in _REASONS if isinstance(exc, kind)), "invalid")
        raise TokenRefused(reason) from None
    return principal_of(payload, claims)


def claim(payload: Mapping[str, Any], name: str) -> Any:
    """A claim by name; `a.b` reads claim `b` inside claim `a`."""
    value: Any = payload
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def principal_of(payload: Mapping[str, Any], claims: Claims) -> Principal:
    """The user, org and admin role a verified payload states."""
    user, org = payload.get("sub"), claim(payload, claims.org_claim)
    roles = claim(payload, claims.roles_claim)
    if not isinstance(user, str) or not isinstance(org, str) or not user or not org:
        raise TokenRefused("claims")
    try:
        check_text("sub", user)
        check_org("org", org)
    except LimitError:
        raise TokenRefused("claims") from None
    admin = isinstance(roles, list) and ADMIN_ROLE in roles
    return Principal(user, org, admin)
