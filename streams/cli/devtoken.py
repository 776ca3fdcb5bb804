"""`kudos dev-token`: a signing key of your own, its JWKS, and tokens signed with it, for
trying KUDOS_AUTH=jwt on a laptop or in the docker-compose stack without an identity
provider. Never for production: there, tokens come from your provider (Okta, Entra ID,
Keycloak, Auth0, Google, ...) and KUDOS_AUTH_JWKS is its JWKS URL.

    kudos dev-token --sub ann --org acme [--admin] [--ttl 3600] [--dir var/dev-auth]

creates `DIR/key.pem` (an ES256 key, 0600) and `DIR/jwks.json` on first use, and prints a
token for `sub` in `org` (issuer and audience: KUDOS_AUTH_ISSUER / KUDOS_AUTH_AUDIENCE,
default `kudos-dev` and `kudos`). Point the worker at the JWKS:
KUDOS_AUTH=jwt KUDOS_AUTH_JWKS=DIR/jwks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from streams.settings import get_settings

DEV_ISSUER = "kudos-dev"
DEV_AUDIENCE = "kudos"
KID = "kudos-dev-1"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dt = sub.add_parser(
        "dev-token", help="a development signing key and tokens (not for production)"
    )
    dt.add_argument("--sub", required=True, help="the user id the token is for")
    dt.add_argument("--org", required=True)
    dt.add_argument("--admin", action="store_true", help="with the kudos-admin role")
    dt.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    dt.add_argument("--dir", type=Path, default=Path("var/dev-auth"))
    dt.set_defaults(func=cmd_dev_token)


def cmd_dev_token(args: argparse.Namespace) -> int:
    import jwt

    settings = get_settings()
    key = dev_key(args.dir)
    now = int(time.time())
    claims = {
        "iss": settings.auth_issuer or DEV_ISSUER,
        "aud": settings.auth_audience or DEV_AUDIENCE,
        "sub": args.sub,
        settings.auth_org_claim: args.org,
        settings.auth_roles_claim: ["kudos-admin"] if args.admin else [],
        "iat": now,
        "exp": now + args.ttl,
    }
    print(jwt.encode(claims, key, "ES256", headers={"kid": KID}))
    return 0


def dev_key(directory: Path) -> bytes:
    """The development key in `directory`, PEM (made, with its JWKS, when missing)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    path = directory / "key.pem"
    if path.exists():
        return path.read_bytes()
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwks = {"keys": [{**jwk, "kid": KID, "alg": "ES256", "use": "sig"}]}
    (directory / "jwks.json").write_text(json.dumps(jwks, indent=2) + "\n")
    return pem
