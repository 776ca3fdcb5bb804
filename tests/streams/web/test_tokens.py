"""Bearer tokens (streams/web/tokens.py): every kind of bad token is refused with its
reason, good RS256 and ES256 tokens prove who asks, and the key set fails closed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from streams.web.tokens import (
    REFETCH_S,
    Claims,
    KeySet,
    KeysUnavailable,
    Principal,
    TokenRefused,
    jwks_reader,
    unverified_header,
    verify_token,
)
from tests.services.idp import AUDIENCE, ISSUER, IdentityProvider, SigningKey, bad_tokens

CLAIMS = Claims(ISSUER, AUDIENCE)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


def keyset(idp: IdentityProvider, clock: Clock | None = None, max_age_s: float = 300) -> KeySet:
    body = json.dumps(idp.jwks()).encode()
    return KeySet(lambda: body, max_age_s, clock or Clock())


def check(token: str, keys: KeySet, claims: Claims = CLAIMS) -> Principal:
    async def run() -> Principal:
        header = unverified_header(token)
        key = await keys.key_for(header.get("kid"))
        return verify_token(token, key, str(header["alg"]), claims)

    return asyncio.run(run())


def reason(token: str, keys: KeySet, claims: Claims = CLAIMS) -> str:
    with pytest.raises(TokenRefused) as refused:
        check(token, keys, claims)
    return refused.value.reason


def test_good_tokens_of_both_algorithms_say_who_asks(idp: IdentityProvider) -> None:
    keys = keyset(idp)
    assert check(idp.token("ana", "acme"), keys) == Principal("ana", "acme", admin=False)
    es = idp.token("bo", "acme", ["kudos-admin"], key=idp.keys[1])
    assert check(es, keys) == Principal("bo", "acme", admin=True)


def test_every_kind_of_bad_token_is_refused_with_its_reason(idp: IdentityProvider) -> None:
    keys = keyset(idp)
    for name, (token, expected) in bad_tokens(idp, "ana", "acme").items():
        assert reason(token, keys) == expected, name


def test_leeway_of_sixty_seconds(idp: IdentityProvider) -> None:
    keys, now = keyset(idp), int(time.time())
    assert check(idp.token("ana", "acme", exp=now - 30), keys).user == "ana"
    assert check(idp.token("ana", "acme", nbf=now + 30), keys).user == "ana"
    assert reason(idp.token("ana", "acme", exp=now - 90), keys) == "expired"


def test_nested_claims_and_roles_that_are_not_a_list(idp: IdentityProvider) -> None:
    keys = keyset(idp)
    nested = Claims(ISSUER, AUDIENCE, "tenant.id", "realm_access.roles")
    token = idp.token(
        "ana", "ignored", tenant={"id": "acme"}, realm_access={"roles": ["kudos-admin"]}
    )
    assert check(token, keys, nested) == Principal("ana", "acme", admin=True)
    assert not check(idp.token("ana", "acme", roles="kudos-admin"), keys).admin


def test_an_unknown_kid_refetches_once_and_then_not_before_refetch_s(
    idp: IdentityProvider,
) -> None:
    rotated = IdentityProvider(keys=[*idp.keys, SigningKey.ec("ec-2")])
    served = [idp.jwks()]
    fetches: list[float] = []
    clock = Clock()

    def read() -> bytes:
        fetches.append(clock.now)
        return json.dumps(served[-1]).encode()

    keys = KeySet(read, 300, clock)
    new_key_token = rotated.token("ana", "acme", key=rotated.keys[2])
    assert check(idp.token("ana", "acme"), keys).user == "ana"
    clock.now += REFETCH_S + 1
    assert reason(new_key_token, keys) == "unknown_key"  # refetched: still unknown
    served.append(rotated.jwks())  # the provider rotates
    assert reason(new_key_token, keys) == "unknown_key"  # too soon to ask again
    assert len(fetches) == 2
    clock.now += REFETCH_S + 1
    assert check(new_key_token, keys).user == "ana"  # asked again: there it is
    assert len(fetches) == 3


def test_keys_fail_closed_when_they_cannot_be_fetched(idp: IdentityProvider) -> None:
    clock, available = Clock(), [False]
    body = json.dumps(idp.jwks()).encode()

    def read() -> bytes:
        if not available[0]:
            raise OSError("connection refused")
        return body

    keys = KeySet(read, 60, clock)
    token = idp.token("ana", "acme")
    with pytest.raises(KeysUnavailable):
        check(token, keys)  # never loaded
    with pytest.raises(KeysUnavailable):
        check(token, keys)  # and not asked again at once: still closed
    available[0] = True
    clock.now += REFETCH_S + 1
    assert check(token, keys).user == "ana"
    available[0] = False
    clock.now += 61  # older than the largest age: must be fetched, cannot be
    with pytest.raises(KeysUnavailable):
        check(token, keys)


def test_a_jwks_without_usable_keys_is_unavailable_not_open(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}))
    keys = KeySet(jwks_reader(str(path)), 300, Clock())
    with pytest.raises(KeysUnavailable):
        check(IdentityProvider().token("ana", "acme"), keys)


def test_jwks_urls_http_only_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        jwks_reader("http://idp.example.com/jwks.json")
    jwks_reader("http://127.0.0.1:9/jwks.json")
    jwks_reader("https://idp.example.com/jwks.json")
