"""A stand-in identity provider for the tests: signing keys (RS256 and ES256), their JWKS
as a file or served over HTTP (which can go down, and rotate keys), and tokens with any
claims, good or bad. Tokens are made with PyJWT, as a real provider's library would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test/"
AUDIENCE = "kudos"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass
class IdentityProvider:
    keys: list[SigningKey] = field(
        default_factory=lambda: [SigningKey.rsa("rsa-1"), SigningKey.ec("ec-1")]
    )
    issuer: str = ISSUER
    audience: str = AUDIENCE

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.keys]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def claims(
        self,
        sub: str,
        org: str,
        roles: list[str] | None = None,
        without: tuple[str, ...] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "org": org,
            "roles": roles or [],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None and k not in without}

    def token(
        self,
        sub: str,
        org: str,
        roles: list[str] | None = None,
        *,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        without: tuple[str, ...] = (),
        **extra: Any,
    ) -> str:
        """A token signed by `key` (the first key by default) with `extra` claims set, and
        those named in `without` left out."""
        key = key or self.keys[0]
        head = {"kid": key.kid, **(headers or {})}
        claims = self.claims(sub, org, roles, without, **extra)
        return jwt.encode(claims, key.private, key.alg, head)

    def admin_token(self, org: str, sub: str = "an-admin") -> str:
        return self.token(sub, org, ["kudos-admin"])


class JwksServer:
    """Serves the provider's JWKS at http://127.0.0.1:PORT/jwks.json; `down()` makes every
    request fail (a 503), `up()` serves again; `fetches` counts requests."""

    def __init__(self, idp: IdentityProvider) -> None:
        self.idp = idp
        self.available = True
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                if not server.available or self.path != "/jwks.json":
                    self.send_error(503 if not server.available else 404)
                    return
                body = json.dumps(server.idp.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def start(self) -> JwksServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def down(self) -> None:
        self.available = False

    def up(self) -> None:
        self.available = True


@contextmanager
def jwks_server(idp: IdentityProvider) -> Iterator[JwksServer]:
    server = JwksServer(idp).start()
    try:
        yield server
    finally:
        server.close()


def auth_env(jwks: str, idp: IdentityProvider) -> dict[str, str]:
    """A worker's settings for tokens of `idp` with keys at `jwks` (a path or a URL)."""
    return {
        "KUDOS_AUTH": "jwt",
        "KUDOS_AUTH_JWKS": jwks,
        "KUDOS_AUTH_ISSUER": idp.issuer,
        "KUDOS_AUTH_AUDIENCE": idp.audience,
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(idp: IdentityProvider, claims: dict[str, Any]) -> str:
    """The classic confusion attack: an HMAC keyed with the RSA public key's PEM."""
    public = idp.keys[0].private.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.keys[0].kid}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def bad_tokens(idp: IdentityProvider, sub: str, org: str) -> dict[str, tuple[str, str]]:
    """Every kind of token that must be refused, by name: (token, the refusal's reason)."""
    now = int(time.time())
    impostor = IdentityProvider(keys=[SigningKey.rsa(idp.keys[0].kid)])  # same kid, other key
    ec_key = next(k for k in idp.keys if k.alg == "ES256")
    rsa_kid = next(k.kid for k in idp.keys if k.alg == "RS256")
    return {
        "not a JWT": ("not a token", "malformed"),
        "three dots": ("a.b.c", "malformed"),
        "expired": (idp.token(sub, org, exp=now - 3600), "expired"),
        "not yet valid": (idp.token(sub, org, nbf=now + 3600), "not_yet_valid"),
        "issued in the future": (idp.token(sub, org, iat=now + 3600), "not_yet_valid"),
        "wrong signature": (impostor.token(sub, org), "signature"),
        "wrong issuer": (idp.token(sub, org, iss="https://evil.test/"), "issuer"),
        "wrong audience": (idp.token(sub, org, aud="someone-else"), "audience"),
        "no exp": (idp.token(sub, org, without=("exp",)), "claims"),
        "no sub": (idp.token(sub, org, without=("sub",)), "claims"),
        "no org": (idp.token(sub, org, without=("org",)), "claims"),
        "empty sub": (idp.token("", org), "claims"),
        "org with a slash": (idp.token(sub, org + "/x"), "claims"),
        "alg none": (jwt.encode(idp.claims(sub, org), None, "none"), "algorithm"),
        "HS256 with the public key": (
            hs256_with_public_key(idp, idp.claims(sub, org)),
            "algorithm",
        ),
        "ES256 naming an RSA key": (
            idp.token(sub, org, key=ec_key, headers={"kid": rsa_kid}),
            "algorithm",
        ),
        "unknown kid": (idp.token(sub, org, headers={"kid": "nobody-has-it"}), "unknown_key"),
    }
