"""schemathesis (a property-based API fuzzer nobody here wrote) against a real `kudos
worker` on both backends, driven by the worker's own /openapi.json: every documented
operation, with valid and invalid values of every parameter (positive and negative
generation), checked for

* no 5xx (`not_a_server_error`);
* a status, a content type and a body the document lists for that operation
  (`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`);
* every 4xx a JSON ``{"error": "..."}`` without internals (no traceback, SQL or exception
  text): `no_internals` below.

Four workers: each backend with KUDOS_AUTH=off (requests carry no token) and with
KUDOS_AUTH=jwt (each request carries an admin's token of the org with data; other orgs
answer 403, as documented). tests/e2e/test_auth.py walks every documented path without a
token (401) and tries every kind of bad token.

Each documented operation is one test (per backend): schemathesis's strategy for it, in
both generation modes, under hypothesis's `@given` (schemathesis's own pytest plugin,
`schemathesis.pytest.from_fixture`, does not run on pytest 9.2: it sets `Function._nodeid`,
which pytest 9 no longer has).

Half of the generated queries ask for the org that has data (`ORG`), and half of the
path's user ids for a person in it, so the answers hold entries, not only empty boards;
but /api/live is fuzzed with orgs without points only (an org with points holds its
stream open for ten minutes; test_http_api.py and test_live_page.py test those): each
such stream is one empty snapshot (its event's JSON checked against the document too),
and ends. Not fuzzed: what is documented ahead of its route (PENDING in
tests/streams/web/test_openapi.py), and HEAD. 100 examples per operation and worker
(about 25 s a worker); `KUDOS_SCHEMATHESIS_EXAMPLES=1000` for a longer run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from streams.web.openapi import document
from tests.e2e.http_stack import Stack, start_stack, wait_for
from tests.e2e.test_http_api import EVERYONE, ORG, ann_entries, directory, events
from tests.services.clickhouse_server import ClickHouseServer
from tests.services.idp import IdentityProvider, auth_env
from tests.streams.web.test_openapi import PENDING, operations

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

EXAMPLES = int(os.environ.get("KUDOS_SCHEMATHESIS_EXAMPLES", "100"))
LEAKS = ("Traceback", "SELECT", "Exception", 'File "', "clickhouse_driver", "DB::")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(
    scope="module",
    params=[("chdb", "off"), ("server", "off"), ("chdb", "jwt"), ("server", "jwt")],
    ids=["chdb", "server", "chdb-jwt", "server-jwt"],
)
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    clickhouse_server: ClickHouseServer,
) -> Iterator[tuple[Stack, dict[str, str]]]:
    """A worker with data, and the headers each request carries: none with KUDOS_AUTH=off;
    with jwt, an admin's token of the org with data (personal reads answer, other orgs
    are 403s, which the document lists too)."""
    backend, auth = request.param
    evs = events(int(time.time() * 1000))
    tmp = tmp_path_factory.mktemp(f"openapi-{backend}-{auth}")
    env, headers = {"KUDOS_AUTH": "off"}, {}
    if auth == "jwt":
        idp = IdentityProvider()
        env = auth_env(str(idp.write_jwks(tmp / "jwks.json")), idp)
        headers = {"Authorization": f"Bearer {idp.admin_token(ORG)}"}
    for s in start_stack(backend, tmp, clickhouse_server, evs, directory(), **env):
        wait_for(
            s,
            f"/api/users/ann/explain?org={ORG}&window=all",
            lambda b: b["count"] == ann_entries(evs),
            headers=headers,
        )
        wait_for(
            s,
            f"/api/badges?org={ORG}",
            lambda b: len(b["badges"]) == len(EVERYONE),
            headers=headers,
        )
        yield s, headers


@pytest.fixture(scope="module")
def stack(served: tuple[Stack, dict[str, str]]) -> Stack:
    return served[0]


def toward_data(values: dict[str, Any] | None, name: str, known: list[str]) -> Any:
    """`values` as generated, or with `name` set to one of `known` (the data's)."""
    if not values or name not in values:
        return st.just(values)
    return st.one_of(st.just(values), st.sampled_from(known).map(lambda v: {**values, name: v}))


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> schemathesis.BaseSchema:
    """The worker's own document, from the worker."""
    schema = schemathesis.openapi.from_url(f"{stack.worker.base}/openapi.json")

    @schema.hook("flatmap_query")  # type: ignore[misc]
    def query_org(context: Any, query: dict[str, Any] | None) -> Any:
        if context.operation is not None and context.operation.path == "/api/live":
            return st.just(query)  # an org with points streams for minutes: `bounded`
        return toward_data(query, "org", [ORG])

    @schema.hook("flatmap_path_parameters")  # type: ignore[misc]
    def path_user(context: Any, path: dict[str, Any] | None) -> Any:
        return toward_data(path, "user", EVERYONE)

    return schema


@pytest.fixture
def auth_headers(served: tuple[Stack, dict[str, str]]) -> dict[str, str]:
    """What each request carries to authenticate (`served`)."""
    return served[1]


def no_internals(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A 4xx is `{"error": str}` and nothing else; no body names internals."""
    text = response.text[:100_000]
    for leak in LEAKS:
        assert leak not in text, f"{case.path}: {leak!r} in the body"
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert isinstance(body["error"], str)


def bounded(case: schemathesis.Case) -> bool:
    """Not a live stream of the org with points (it would stream for ten minutes): the
    others send one snapshot and end."""
    return case.path != "/api/live" or (case.query or {}).get("org") != ORG


def fuzzed() -> list[Any]:
    """(method, path) of every documented operation the fuzz sends."""
    return [
        pytest.param(method, path, id=f"{method} {path}")
        for method, path, _ in operations(document())
        if (method, path) not in PENDING
    ]


@pytest.mark.parametrize(("method", "path"), fuzzed())
def test_schemathesis(
    api_schema: schemathesis.BaseSchema, auth_headers: dict[str, str], method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(mode) for mode in GenerationMode).filter(bounded)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(cases)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(headers=auth_headers, timeout=30)
        case.validate_response(
            response, checks=CHECKS, additional_checks=[no_internals], headers=auth_headers
        )

    fuzz()
