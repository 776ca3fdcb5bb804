"""The HTTP API under bad input, through a real `kudos worker` (Tansu, chdb and
clickhouse-server 18.16; one worker per backend for the whole module), as issue 12 found it:

* every bad parameter value is a 400 with a JSON error naming the parameter, on every
  endpoint (``top=²`` and ``at`` in year 0, 10000 or beyond int64 were 500s);
* unknown paths, wrong methods and oversized bodies are JSON errors;
* every response carries nosniff, frame-ancestors 'none' and a Server header without
  versions, and /api/* responses Cache-Control: no-store;
* a property-based fuzz (hypothesis) of every parameter and path segment finds no 5xx, no
  non-JSON error and no SQL or traceback in any body (400 requests per backend;
  ``KUDOS_FUZZ_EXAMPLES=5000`` for a longer run);
* an opted-out person and an unknown id get the same answers; an opted-out person is named
  in nobody's explain; a PRIVATE thank-you names nobody and shows no lineage or minute;
* every list is bounded and its pages add up to the whole list.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.directory import DirectoryRecord
from tests.e2e import reference
from tests.e2e.http_stack import Answer, Stack, start_stack, wait_for
from tests.services.clickhouse_server import ClickHouseServer
from tests.streams.cli.runner import run_kudos

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

ORG = "hx"
CORE = ["ann", "bob", "cat", "dan", "eve"]
EDGE = ["fay", "gus", "hal", "ivy", "joe"]
OPTED_OUT = "oscar"
UNKNOWN = "nobody-at-all"
EVERYONE = [*CORE, *EDGE]


def directory() -> list[DirectoryRecord]:
    people = [DirectoryRecord(ORG, u, u.title(), "core", "eng", False, 1) for u in CORE]
    people += [DirectoryRecord(ORG, u, u.title(), "edge", "ops", False, 1) for u in EDGE]
    people.append(DirectoryRecord(ORG, OPTED_OUT, "Oscar", "core", "eng", True, 1))
    return people


def events(now: int) -> list[dict[str, Any]]:
    """Each person thanks the next two (across teams too); Oscar (opted out) thanks and is
    thanked; two PRIVATE thank-yous touch Ann; a few shares and reactions."""
    out: list[dict[str, Any]] = []

    def add(kind: str, actor: str, to: list[str], **extra: Any) -> None:
        out.append(
            {
                "event_id": f"hx-{len(out)}",
                "event_type": kind,
                "org_id": ORG,
                "actor_id": actor,
                "recipient_ids": to,
                "occurred_at": now - 60_000 * (len(out) + 1),
                "source": "chat",
                **extra,
            }
        )

    for i, actor in enumerate(EVERYONE):
        for step in (1, 2):
            add("THANKS", actor, [EVERYONE[(i + step) % len(EVERYONE)]])
    add("THANKS", OPTED_OUT, ["ann"])
    add("THANKS", "bob", [OPTED_OUT])
    add("THANKS", "pat", ["ann"], visibility="PRIVATE")
    add("THANKS", "ann", ["quinn"], visibility="PRIVATE")
    for actor in ("ann", "fay", "gus"):
        add("SHARE", actor, [])
    for actor, owner in (("cat", "dan"), ("eve", "dan"), ("ivy", "joe"), ("gus", "hal")):
        add("REACTION", actor, [owner], content_id=f"doc-{owner}")
    return out


def ann_entries(evs: list[dict[str, Any]]) -> int:
    """Explain's entry count for Ann: a decision per role she has in it."""
    return sum(
        (e["actor_id"] == "ann" and e["event_type"] in ("THANKS", "SHARE"))
        + ("ann" in e["recipient_ids"])
        for e in evs
    )


@pytest.fixture(scope="module", params=["chdb", "server"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    clickhouse_server: ClickHouseServer,
) -> Iterator[Stack]:
    evs = events(int(time.time() * 1000))
    tmp = tmp_path_factory.mktemp(f"http-{request.param}")
    for s in start_stack(request.param, tmp, clickhouse_server, evs, directory()):
        # Every decision stored, and every badge (a first thanks for each recipient).
        wait_for(
            s,
            f"/api/users/ann/explain?org={ORG}&window=all",
            lambda b: b["count"] == ann_entries(evs),
        )
        wait_for(s, f"/api/badges?org={ORG}", lambda b: len(b["badges"]) == len(EVERYONE))
        yield s


def is_json_error(answer: Answer) -> bool:
    try:
        body = answer.json
    except ValueError:
        return False
    return (
        answer.headers.get("content-type", "").startswith("application/json")
        and isinstance(body, dict)
        and isinstance(body.get("error"), str)
    )


# --- bad values --------------------------------------------------------------------------

USER = "/api/users/ann"
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/api/leaderboard": ("org", "window", "at", "top", "offset", "metric"),
    f"{USER}/rank": ("org", "window", "at", "metric", "around"),
    "/api/leaderboard/changes": ("org", "window", "at", "top"),
    f"{USER}/explain": ("org", "window", "at", "limit", "offset"),
    f"{USER}/balance": ("org", "window", "at"),
    f"{USER}/history": ("org", "window", "at", "points"),
    "/api/badges": ("org", "user", "limit", "offset"),
    "/api/badges/recent": ("org", "limit", "offset"),
    "/api/teams/leaderboard": ("org", "window", "at", "by", "top", "offset"),
    "/api/teams/bridging": ("org", "window", "at", "limit", "offset"),
    "/api/live": ("org", "window", "top", "view"),
}
GOOD = {"org": ORG, "window": "day", "by": "team", "view": "people", "user": "ann"}
BAD: dict[str, tuple[str, ...]] = {
    "top": ("²", "\u0663", "0", "-1", "1" * 40, "1e3", "1001"),
    "limit": ("²", "0", "1" * 40, "100001"),
    "offset": ("-1", "²", "1" * 40),
    "points": ("²", "0", "91"),
    "at": (
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "9" * 25,  # beyond int64: a 500 on 7 endpoints once
        "253402300800000",  # year 10000 in epoch millis
        "-" + "9" * 25,
        "1999-12-31T23:59:59Z",
        "2026-02-30T00:00:00Z",
        "\u0661" * 13,
        "soon",
    ),
    "window": ("decade", "HOUR", ""),
    "org": ("a/b", "x" * 300, "a\x00b", ""),
    "user": ("x" * 300, "a\x01"),
    "by": ("floor",),
    "view": ("cards",),
    "metric": ("SCORE", "version", "score DESC", "points"),
    "around": ("-1", "51", "²"),
}


def query(path: str, **values: str) -> str:
    return f"{path}?{urllib.parse.urlencode(values)}"


def test_bad_values_are_400_json_naming_the_parameter_on_every_endpoint(stack: Stack) -> None:
    checked = 0
    for path, names in ENDPOINTS.items():
        for name in names:
            for bad in BAD.get(name, ()):
                if bad == "" and name not in ("org",):
                    continue  # empty means absent: the default
                values = {n: GOOD[n] for n in names if n in GOOD} | {name: bad}
                answer = stack.get(query(path, **values))
                assert answer.status == 400, (path, name, bad, answer.status, answer.body[:300])
                assert is_json_error(answer), (path, name, bad)
                assert answer.json["error"].startswith(f"'{name}' "), (path, name, bad)
                assert len(answer.body) < 200  # never the (huge) value itself
                checked += 1
        repeated = f"{path}?org={ORG}&org={ORG}"
        answer = stack.get(repeated)
        assert answer.status == 400 and answer.json["error"] == "'org' is given more than once"
    for bad in ("x" * 300, "a%00b"):  # user path segments
        for what in ("explain", "balance", "history", "rank"):
            answer = stack.get(f"/api/users/{bad}/{what}?org={ORG}")
            assert answer.status == 400 and answer.json["error"].startswith("'user' ")
    assert checked > 150


def test_unknown_paths_methods_and_bodies_are_json_errors(stack: Stack) -> None:
    missing = stack.get("/api/nothing-here")
    assert (missing.status, missing.json) == (404, {"error": "not found"})
    assert stack.get("/assets/secret.py").status == 404 and is_json_error(
        stack.get("/assets/secret.py")
    )
    wrong = stack.request(f"/api/leaderboard?org={ORG}", method="POST", body=b"{}")
    assert (wrong.status, wrong.json) == (405, {"error": "method not allowed"})
    assert "GET" in wrong.headers["allow"]
    big = stack.request(f"/api/leaderboard?org={ORG}", method="GET", body=b"x" * 100_000)
    assert (big.status, big.json) == (413, {"error": "request body too large"})


RAW_REQUESTS = (
    b"GET /api/leaderboard?org=acme&top=\xc2\xb2 HTTP/1.1\r\nHost: x\r\n\r\n",  # not encoded
    b"GET /api/users/secret-\xff/explain HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/leaderboard?org=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # > 8 KiB
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS to a plain port\r\n\r\n",
    b"NOT HTTP AT ALL secret-token\r\n\r\n",
)


def raw(stack: Stack, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", stack.worker.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes", RAW_REQUESTS)
def test_requests_aiohttp_cannot_parse_get_json_that_repeats_nothing(
    stack: Stack, request_bytes: bytes
) -> None:
    head, _, body = raw(stack, request_bytes).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split(" ")[1] == "400", lines[0]
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    assert headers["content-type"].startswith("application/json")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["server"] == "kudos"
    assert json.loads(body) == {"error": "bad request: not a valid HTTP request"}
    assert b"secret" not in body and b"aaaa" not in body


def test_every_response_carries_the_security_headers(stack: Stack) -> None:
    answers = {
        "json": stack.get(f"/api/leaderboard?org={ORG}"),
        "personal": stack.get(f"/api/users/ann/explain?org={ORG}"),
        "stream": stack.get(f"/api/live?org={ORG}"),
        "error": stack.get(f"/api/leaderboard?org={ORG}&top=%C2%B2"),
        "missing": stack.get("/nowhere"),
        "page": stack.get("/"),
        "asset": stack.get("/assets/app.js"),
        "health": stack.get("/health/live"),
        "metrics": stack.get("/metrics"),
    }
    assert answers["stream"].headers["content-type"].startswith("text/event-stream")
    for kind, answer in answers.items():
        h = answer.headers
        assert h.get("x-content-type-options") == "nosniff", kind
        assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), kind
        assert h.get("server") == "kudos", (kind, h.get("server"))  # no aiohttp/Python versions
        assert h.get("referrer-policy") == "no-referrer", kind
        assert h.get("cross-origin-resource-policy") == "same-origin", kind
        assert h.get("cross-origin-opener-policy") == "same-origin", kind
        assert "camera=()" in h.get("permissions-policy", ""), kind
    for kind in ("json", "personal", "stream", "error"):
        assert answers[kind].headers.get("cache-control") == "no-store", kind
    page_policy = answers["page"].headers["content-security-policy"]
    assert "script-src 'self'" in page_policy and "default-src 'none'" in page_policy
    # Not HTTP at all: aiohttp's parser answers before any route, still without versions.
    with socket.create_connection(("127.0.0.1", stack.worker.port), 10) as sock:
        sock.sendall(b"GARBAGE / HTTP/9\r\n\r\n")
        raw = sock.recv(65536).decode("latin-1")
    assert raw.split()[1] == "400" and "\r\nServer: kudos\r\n" in raw, raw
    assert "aiohttp" not in raw and "Python" not in raw


# --- the fuzz ----------------------------------------------------------------------------

INTERESTING = [
    *{v for values in BAD.values() for v in values},
    ORG,
    "ann",
    OPTED_OUT,
    "hour",
    "all",
    "team",
    "department",
    "teams",
    "1",
    "10",
    "1000",
    "2026-11-25T12:00:00Z",
    "'; DROP TABLE kudos.scores; --",
    "%00",
    "../../etc/passwd",
    "\r\nX-Injected: 1",
    "{user}",
    "\ufffd\ud7ff\U0001f600",
]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
VALUE = st.one_of(st.sampled_from(INTERESTING), TEXT, st.integers().map(str))
LEAKS = ("Traceback", "DB::Exception", "SELECT ", "Code: ", 'File "', "clickhouse_driver")


@st.composite
def requests(draw: st.DrawFn) -> str:
    """A path of an endpoint (its user or id segment random) and a random query."""
    endpoint = draw(st.sampled_from([*ENDPOINTS, "/api/erasures/{}", "/assets/{}", "/health"]))
    names = ENDPOINTS.get(endpoint, ("org", "window", "at", "top", "limit", "offset"))
    path = endpoint.replace(f"{USER}/", "/api/users/{}/")
    if "{}" in path:
        segment = draw(
            st.one_of(
                st.just("ann"),
                VALUE.map(lambda v: urllib.parse.quote(v, safe="")),
                st.binary(min_size=1, max_size=40).map(
                    lambda b: urllib.parse.quote_from_bytes(b, safe="")
                ),
            )
        )
        path = path.replace("{}", segment or "x")
    pairs = draw(st.lists(st.tuples(st.one_of(st.sampled_from(names), TEXT), VALUE), max_size=6))
    text = urllib.parse.urlencode(pairs)
    if draw(st.booleans()):  # junk bytes that are not UTF-8 at all
        text += "&" + urllib.parse.quote_from_bytes(draw(st.binary(max_size=30))) + "=x"
    return f"{path}?{text}"


def check(answer: Answer, target: str) -> None:
    assert answer.status < 500, (target, answer.status, answer.body[:300])
    if answer.status >= 400:
        assert is_json_error(answer), (target, answer.status, answer.body[:300])
    head = answer.body[:100_000].decode("utf-8", "replace")
    for leak in LEAKS:
        assert leak not in head, (target, leak)
    assert answer.headers.get("x-content-type-options") == "nosniff", target
    assert answer.headers.get("server") == "kudos", target


def test_fuzz_every_parameter_and_path_segment(stack: Stack) -> None:
    @settings(
        max_examples=int(os.environ.get("KUDOS_FUZZ_EXAMPLES", "400")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests())
    def fuzz(target: str) -> None:
        check(stack.get(target, timeout=30), target)

    fuzz()


# --- privacy -----------------------------------------------------------------------------


def test_an_opted_out_person_reads_as_an_unknown_id_everywhere(stack: Stack) -> None:
    for what in ("explain", "balance", "history", "rank"):
        for window in ("day", "all") if what != "history" else ("day",):
            hidden = stack.get(f"/api/users/{OPTED_OUT}/{what}?org={ORG}&window={window}")
            unknown = stack.get(f"/api/users/{UNKNOWN}/{what}?org={ORG}&window={window}")
            assert hidden.status == unknown.status == 200, what
            assert {**hidden.json, "user_id": UNKNOWN} == unknown.json, what
    badges = stack.get(f"/api/badges?org={ORG}&user={OPTED_OUT}").json
    assert (
        badges["badges"] == [] == stack.get(f"/api/badges?org={ORG}&user={UNKNOWN}").json["badges"]
    )


def test_nobody_else_is_shown_the_opted_out_person(stack: Stack) -> None:
    for user in EVERYONE:
        body = stack.get(f"/api/users/{user}/explain?org={ORG}&window=all").json
        assert body["count"] > 0
        assert OPTED_OUT not in json.dumps(body), user
    ann = stack.get(f"/api/users/ann/explain?org={ORG}&window=all").json
    from_oscar = [e for e in ann["entries"] if e["actor_id"] is None and not e["private"]]
    assert len(from_oscar) == 1 and from_oscar[0]["points"] == 3  # still counted for Ann


def test_a_private_thank_you_names_nobody(stack: Stack) -> None:
    body = stack.get(f"/api/users/ann/explain?org={ORG}&window=all").json
    private = [e for e in body["entries"] if e["private"]]
    assert len(private) == 2 and body["refused"]["private"] == 2
    assert {e["metric"] for e in private} == {"thanks_received", "thanks_given"}
    for e in private:
        assert (e["actor_id"], e["recipient_id"], e["event_id"], e["lineage"]) == (None,) * 4
        assert e["occurred_at"].endswith(":00:00Z") and e["points"] == 0
    assert all(e["private"] is False for e in body["entries"] if not e["private"])
    text = json.dumps(body)
    assert '"pat"' not in text and '"quinn"' not in text
    assert all(e["lineage"] for e in body["entries"] if not e["private"])
    assert sum(e["points"] for e in body["entries"]) == body["score"]


# --- limits and paging -------------------------------------------------------------------


def pages(stack: Stack, path: str, key: str, limit: int, name: str = "limit") -> list[Any]:
    got: list[Any] = []
    offset: int | None = 0
    while offset is not None:
        body = stack.get(f"{path}&{name}={limit}&offset={offset}").json
        assert len(body[key]) <= limit
        got += body[key]
        offset = body["next_offset"]
        assert offset is None or offset == len(got)
    return got


def test_every_list_is_bounded_and_pages_add_up(stack: Stack) -> None:
    badges = stack.get(f"/api/badges?org={ORG}").json
    assert (badges["limit"], badges["offset"], badges["next_offset"]) == (100, 0, None)
    assert len(badges["badges"]) == len(EVERYONE)
    assert pages(stack, f"/api/badges?org={ORG}", "badges", 3) == badges["badges"]
    assert stack.get(f"/api/badges?org={ORG}&limit=1001").status == 400
    recent = stack.get(f"/api/badges/recent?org={ORG}&limit=200").json["badges"]
    assert pages(stack, f"/api/badges/recent?org={ORG}", "badges", 4) == recent
    explain = f"/api/users/ann/explain?org={ORG}&window=all"
    whole = stack.get(f"{explain}&limit=10000").json
    assert pages(stack, explain, "entries", 2) == whole["entries"]
    assert stack.get(f"{explain}&limit=10001").status == 400
    teams = stack.get(f"/api/teams/leaderboard?org={ORG}&window=all").json["entries"]
    assert len(teams) == 2 and teams[0]["score"] >= teams[1]["score"]
    paged = pages(stack, f"/api/teams/leaderboard?org={ORG}&window=all", "entries", 1, "top")
    assert paged == teams and [t["rank"] for t in paged] == [1, 2]
    bridging = stack.get(f"/api/teams/bridging?org={ORG}&window=all").json["teams"]
    assert len(bridging) == 2
    assert pages(stack, f"/api/teams/bridging?org={ORG}&window=all", "teams", 1) == bridging
    history = stack.get(f"/api/users/ann/history?org={ORG}&points=90").json["points"]
    assert len(history) == 90 and stack.get(f"{USER}/history?org={ORG}&points=91").status == 400


# --- boards by metric, pages and ranks ---------------------------------------------------

# The board metrics of DESIGN.md, part 2 (written out: these tests import no kudos code).
METRICS = (
    "score",
    "thanks_received",
    "thanks_given",
    "shares",
    "reactions_received",
    "distinct_thankers",
)


def expected_board(metric: str) -> list[dict[str, Any]]:
    """The `all` board by `metric` from the reference model (tests/e2e/reference.py),
    without the opted-out person, ranks closed up, names from the directory. `all` totals
    do not depend on when the events were stamped, so a fresh copy of them does."""
    now = int(time.time() * 1000)
    rows = reference.leaderboard(reference.run(events(now), now), ORG, "all", 0, 1000)
    shown = sorted(
        (r for r in rows if r["user_id"] != OPTED_OUT), key=lambda r: (-r[metric], r["user_id"])
    )
    return [{**r, "rank": n + 1, "display_name": r["user_id"].title()} for n, r in enumerate(shown)]


def test_boards_by_every_metric_page_from_any_offset_as_the_reference_ranks(
    stack: Stack,
) -> None:
    board = f"/api/leaderboard?org={ORG}&window=all"
    wait_for(stack, f"{board}&top=1000", lambda b: b["entries"] == expected_board("score"))
    for metric in METRICS:
        want = expected_board(metric)
        assert len(want) == len(EVERYONE)
        assert len({r[metric] for r in want}) < len(want), metric  # ties, by user id
        for offset in (0, 3, 9, 10, 50):
            body = stack.get(f"{board}&metric={metric}&offset={offset}&top=4").json
            assert body["entries"] == want[offset : offset + 4], (metric, offset)
    assert stack.get(f"{board}&metric=score").json == stack.get(board).json


def expected_rank(want: list[dict[str, Any]], user: str, metric: str, around: int) -> Any:
    """/rank's body for `user` on the board `want` (by `metric`)."""
    mine = [r for r in want if r["user_id"] == user]
    rank = mine[0]["rank"] if mine else None
    return {
        "org": ORG,
        "window": "all",
        "window_start": "1970-01-01T00:00:00Z",
        "metric": metric,
        "user_id": user,
        "rank": rank,
        "score": mine[0][metric] if mine else None,
        "of": len(want),
        "entries": [] if rank is None else want[max(0, rank - 1 - around) : rank + around],
    }


def test_every_persons_rank_and_neighbours_match_the_reference(stack: Stack) -> None:
    wait_for(
        stack,
        f"/api/leaderboard?org={ORG}&window=all&top=1000",
        lambda b: b["entries"] == expected_board("score"),
    )
    boards = {metric: expected_board(metric) for metric in METRICS}
    people = [*EVERYONE, OPTED_OUT, UNKNOWN, "pat"]  # pat: only a PRIVATE thank-you
    for n, user in enumerate(people):
        for metric, want in boards.items():
            around = (n + len(metric)) % 4
            path = f"/api/users/{user}/rank?org={ORG}&window=all&metric={metric}"
            body = stack.get(f"{path}&around={around}").json
            assert body == expected_rank(want, user, metric, around), (user, metric, around)
    default = stack.get(f"/api/users/ann/rank?org={ORG}&window=all").json
    assert default == expected_rank(boards["score"], "ann", "score", 2)  # the defaults
    hidden = stack.get(f"/api/users/{OPTED_OUT}/rank?org={ORG}&window=all").json
    assert (hidden["rank"], hidden["score"], hidden["entries"]) == (None, None, [])


def test_the_cli_pages_boards_by_metric_as_the_api_does(
    stack: Stack, clickhouse_server: ClickHouseServer
) -> None:
    args = ["leaderboard", "--org", ORG, "--window", "all", "--format", "json"]
    page = ["--metric", "thanks_given", "--offset", "3", "--top", "4"]
    want = stack.get(
        f"/api/leaderboard?org={ORG}&window=all&metric=thanks_given&offset=3&top=4"
    ).json
    assert want["entries"] == expected_board("thanks_given")[3:7]
    via_api = run_kudos(*args, *page, "--api", stack.worker.base)
    assert via_api.returncode == 0, via_api.stderr
    assert json.loads(via_api.stdout) == want
    if stack.backend == "server":  # ClickHouse read directly (chdb belongs to the worker)
        direct = run_kudos(*args, *page, env={"KUDOS_CLICKHOUSE": clickhouse_server.url})
        assert direct.returncode == 0, direct.stderr
        assert json.loads(direct.stdout) == want
    refused = run_kudos(*args, "--offset", "-1", "--api", stack.worker.base)
    assert refused.returncode == 2 and "'offset' must be an integer" in refused.stderr
