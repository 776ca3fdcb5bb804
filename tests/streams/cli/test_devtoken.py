"""`kudos dev-token`: its key's JWKS verifies its tokens, as a worker would."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from streams.web.tokens import (
    Claims,
    KeySet,
    Principal,
    jwks_reader,
    unverified_header,
    verify_token,
)
from tests.streams.cli.runner import run_kudos


def test_dev_tokens_verify_against_the_dev_jwks(tmp_path: Path) -> None:
    env = {"KUDOS_AUTH_ISSUER": "", "KUDOS_AUTH_AUDIENCE": ""}
    admin = run_kudos(
        "dev-token", "--sub", "root", "--org", "acme", "--admin", "--dir", str(tmp_path), env=env
    )
    member = run_kudos(
        "dev-token", "--sub", "ann", "--org", "acme", "--dir", str(tmp_path), env=env
    )
    assert admin.returncode == 0 and member.returncode == 0, admin.stderr + member.stderr
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    keys = KeySet(jwks_reader(str(tmp_path / "jwks.json")), 300)

    async def check(token: str) -> Principal:
        header = unverified_header(token)
        key = await keys.key_for(header.get("kid"))
        return verify_token(token, key, str(header["alg"]), Claims("kudos-dev", "kudos"))

    assert asyncio.run(check(admin.stdout.strip())) == Principal("root", "acme", admin=True)
    assert asyncio.run(check(member.stdout.strip())) == Principal("ann", "acme", admin=False)
