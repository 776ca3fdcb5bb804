"""Who may read what, through a real `kudos worker` with KUDOS_AUTH=jwt on both ClickHouse
backends (DESIGN.md, "Who may read what"): every kind of bad token is a 401, another org
or another person a 403, admin actions for admins only, health and metrics open, the live
stream with `access_token`, and a JWKS that cannot be fetched fails closed (503).

Keys come from a stand-in identity provider served over HTTP (tests/services/idp.py); the
tests speak HTTP only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.http_stack import Answer, Stack, start_stack, wait_for
from tests.services.clickhouse_server import ClickHouseServer
from tests.services.idp import (
    IdentityProvider,
    JwksServer,
    SigningKey,
    auth_env,
    bad_tokens,
    jwks_server,
)
from tests.streams.cli.runner import run_kudos

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

ORG, OTHER = "acme", "globex"
PEOPLE = ["ann", "bob", "cat"]


def events(now_ms: int) -> list[dict[str, Any]]:
    out = []
    for org in (ORG, OTHER):
        for i, actor in enumerate(PEOPLE):
            out.append(
                {
                    "event_id": f"{org}-{i}",
                    "event_type": "THANKS",
                    "org_id": org,
                    "actor_id": actor,
                    "recipient_ids": [PEOPLE[(i + 1) % len(PEOPLE)]],
                    "occurred_at": now_ms - 60_000 * (i + 1),
                    "source": "chat",
                }
            )
    return out


class Authed:
    """A stack, its identity provider and its JWKS server."""

    def __init__(self, stack: Stack, idp: IdentityProvider, jwks: JwksServer) -> None:
        self.stack, self.idp, self.jwks = stack, idp, jwks

    def get(self, path: str, token: str | None = None, **kw: Any) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return self.stack.request(path, headers=headers, **kw)

    def post(self, path: str, body: dict[str, Any], token: str | None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.stack.request(path, "POST", json.dumps(body).encode(), headers=headers)

    def member(self, user: str = "ann", org: str = ORG) -> str:
        return self.idp.token(user, org)


@pytest.fixture(scope="module", params=["chdb", "server"])
def authed(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    clickhouse_server: ClickHouseServer,
) -> Iterator[Authed]:
    idp = IdentityProvider()
    tmp = tmp_path_factory.mktemp(f"auth-{request.param}")
    with jwks_server(idp) as jwks:
        env = auth_env(jwks.url, idp)
        for s in start_stack(request.param, tmp, clickhouse_server, events(now()), [], **env):
            token = {"Authorization": f"Bearer {idp.token('ann', ORG)}"}
            wait_for(
                s, f"/api/leaderboard?org={ORG}", lambda b: len(b["entries"]) == 3, headers=token
            )
            yield Authed(s, idp, jwks)


def now() -> int:
    return int(time.time() * 1000)


MEMBER_PATHS = [
    f"/api/leaderboard?org={ORG}",
    f"/api/leaderboard/changes?org={ORG}",
    f"/api/badges?org={ORG}",
    f"/api/badges/recent?org={ORG}",
    f"/api/teams/leaderboard?org={ORG}",
    f"/api/teams/bridging?org={ORG}",
]
PERSONAL = ["explain", "balance", "history", "rank"]


def is_json_error(answer: Answer) -> bool:
    body = answer.json
    return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)


def test_every_kind_of_bad_token_is_a_401_with_a_bearer_challenge(authed: Authed) -> None:
    tokens = {name: token for name, (token, _) in bad_tokens(authed.idp, "ann", ORG).items()}
    tokens["none at all"] = ""
    for name, token in tokens.items():
        for path in (MEMBER_PATHS[0], f"/api/users/ann/explain?org={ORG}"):
            answer = authed.get(path, token or None)
            assert answer.status == 401, (name, path, answer.body)
            assert answer.headers["www-authenticate"].startswith("Bearer"), name
            assert is_json_error(answer) and (not token or token.encode() not in answer.body)
    wrong_scheme = authed.stack.request(MEMBER_PATHS[0], headers={"Authorization": "Basic YTpi"})
    assert wrong_scheme.status == 401
    assert token_not_in_log(authed, [t for t in tokens.values() if len(t) > 20])


def token_not_in_log(authed: Authed, tokens: list[str]) -> bool:
    log = authed.stack.worker.log_tail(10**7)
    return not any(t in log for t in tokens)


def test_members_read_their_org_and_nobody_reads_another(authed: Authed) -> None:
    ann, globex_admin = authed.member(), authed.idp.admin_token(OTHER)
    for path in MEMBER_PATHS:
        assert authed.get(path, ann).status == 200, path
        other = authed.get(path.replace(f"org={ORG}", f"org={OTHER}"), ann)
        assert other.status == 403 and is_json_error(other), path
        assert authed.get(path, globex_admin).status == 403, path  # admins of another org too
    board = authed.get(MEMBER_PATHS[0], ann).json
    assert {e["user_id"] for e in board["entries"]} == set(PEOPLE)
    assert authed.get(f"/api/leaderboard?org={ORG}&org={OTHER}", ann).status == 403


def test_personal_reads_only_by_the_person_or_an_admin(authed: Authed) -> None:
    ann, bob, admin = authed.member("ann"), authed.member("bob"), authed.idp.admin_token(ORG)
    for what in PERSONAL:
        path = f"/api/users/ann/{what}?org={ORG}"
        assert authed.get(path, ann).status == 200, path
        assert authed.get(path, admin).status == 200, path
        refused = authed.get(path, bob)
        assert refused.status == 403 and is_json_error(refused), path
        assert authed.get(path.replace(ORG, OTHER), ann).status == 403  # her id, other org
    explain = authed.get(f"/api/users/ann/explain?org={ORG}&window=all", ann).json
    assert explain["count"] == 2  # thanked bob, thanked by cat
    assert (
        authed.get(f"/api/users/ann/explain?org={ORG}", ann).headers["cache-control"] == "no-store"
    )


def test_health_metrics_page_and_assets_stay_open(authed: Authed) -> None:
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/", "/assets/app.js"):
        assert authed.get(path).status == 200, path


def test_the_live_stream_takes_access_token_and_nothing_else_does(authed: Authed) -> None:
    ann = authed.member()
    live = authed.get(f"/api/live?org={ORG}&access_token={ann}", timeout=10)
    assert live.status == 200 and live.headers["content-type"].startswith("text/event-stream")
    assert authed.get(f"/api/live?org={ORG}", timeout=10).status == 401
    assert authed.get(f"/api/live?org={OTHER}&access_token={ann}", timeout=10).status == 403
    assert authed.get(f"/api/leaderboard?org={ORG}&access_token={ann}").status == 401
    assert token_not_in_log(authed, [ann])


def test_forget_is_for_admins_of_the_org_and_works_from_the_cli(authed: Authed) -> None:
    body = {"org": ORG, "user": "cat"}
    assert authed.post("/api/admin/forget", body, None).status == 401
    assert authed.post("/api/admin/forget", body, authed.member("cat")).status == 403
    assert authed.post("/api/admin/forget", body, authed.idp.admin_token(OTHER)).status == 403
    bad = authed.post("/api/admin/forget", {"org": ORG}, authed.idp.admin_token(ORG))
    assert bad.status == 400 and is_json_error(bad)
    assert authed.get("/api/erasures/abc", authed.member()).status == 403
    env = {"KUDOS_KAFKA": "", "KUDOS_TOKEN": authed.idp.admin_token(ORG)}
    out = run_kudos(
        "forget", "cat", "--org", ORG, "--api", authed.stack.worker.base, "--timeout", "90", env=env
    )
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    assert done["rows"] > 0
    erasure = f"/api/erasures/{done['request_id']}"
    assert authed.get(erasure, authed.idp.admin_token(ORG)).json["done"] is True
    assert authed.get(erasure, authed.idp.admin_token(OTHER)).json["done"] is False  # not theirs
    board = authed.get(f"/api/leaderboard?org={ORG}&window=all", authed.member()).json
    assert "cat" not in {e["user_id"] for e in board["entries"]}
    refused = run_kudos(
        "forget", "ann", "--org", ORG, "--api", authed.stack.worker.base, "--token", authed.member()
    )
    assert refused.returncode == 1 and "403" in refused.stderr and "Traceback" not in refused.stderr


def test_keys_that_cannot_be_fetched_fail_closed(authed: Authed) -> None:
    """Last: it rotates the provider's keys. A token of a new key while the JWKS server is
    down is a 503 (never a 200, never a 401 that says the token is bad), and says so on
    /metrics; once the server is back the new key is fetched and accepted."""
    new_key = SigningKey.ec("ec-rotated")
    authed.idp.keys.append(new_key)
    token = authed.idp.token("ann", ORG, key=new_key)
    authed.jwks.down()
    try:
        time.sleep(6)  # past the worker's refetch interval
        answer = authed.get(MEMBER_PATHS[0], token)
        assert answer.status == 503 and "retry-after" in answer.headers, answer.body
        assert is_json_error(answer)
        assert authed.stack.metric("kudos_auth_keys_up") == 0
        assert authed.get(MEMBER_PATHS[0], token).status == 503  # and stays closed
        assert authed.get(MEMBER_PATHS[0], authed.member()).status == 200  # known keys hold
    finally:
        authed.jwks.up()
    time.sleep(6)
    assert authed.get(MEMBER_PATHS[0], token).status == 200
    assert authed.stack.metric("kudos_auth_keys_up") == 1


def test_no_documented_api_path_answers_without_a_token(authed: Authed) -> None:
    """Every path of /openapi.json under /api/, with valid values, without a token: 401."""
    doc = authed.get("/openapi.json").json
    values = {"user": "ann", "request_id": "r-1", "org": ORG}
    walked = 0
    for path, item in doc["paths"].items():
        for method in item:
            if method not in ("get", "post") or not path.startswith("/api/"):
                continue
            url = path.format(**values) + f"?org={ORG}"
            body = json.dumps({"org": ORG, "user": "ann"}).encode() if method == "post" else None
            answer = authed.stack.request(url, method.upper(), body, timeout=10)
            assert answer.status == 401, (method, path, answer.status)
            assert is_json_error(answer) and b"ann" not in answer.body
            walked += 1
    assert walked >= 12, walked  # every /api path there is today
