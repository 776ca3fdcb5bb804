"""/api/values and /api/leaderboard?value= on the worker's real app (no ClickHouse data):
the org's listed values, an unlisted value's empty board without a read, a bad value a
400 naming the parameter."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from streams.app import Kudos, create_app
from streams.settings import RuleOverrides, Settings
from tests.streams.web.test_openapi import NoClickHouse


class CountingClickHouse(NoClickHouse):
    def __init__(self) -> None:
        self.queries: list[str] = []

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.queries.append(sql)
        return []


def test_values_and_value_boards() -> None:
    import asyncio

    ch = CountingClickHouse()
    settings = Settings(org_rules={"acme": RuleOverrides(values=["ownership", "care"])})

    async def main() -> dict[str, Any]:
        kudos: Kudos = create_app(
            settings, bootstrap="127.0.0.1:1", clickhouse=ch, effects_partitions=3
        )
        out: dict[str, Any] = {}
        try:
            async with TestClient(TestServer(kudos.app.web.web_app)) as client:
                for name, path in {
                    "acme": "/api/values?org=acme",
                    "other": "/api/values?org=globex",
                    "listed": "/api/leaderboard?org=acme&window=all&value=care",
                    "unlisted": "/api/leaderboard?org=acme&window=all&value=speed",
                    "bad": "/api/leaderboard?org=acme&value=c%07are",
                }.items():
                    before = len(ch.queries)
                    async with client.get(path) as answer:
                        out[name] = (answer.status, await answer.json())
                    out[name + "_reads"] = [q for q in ch.queries[before:] if "value_thanks" in q]
        finally:
            kudos.reads.shutdown()
            kudos.health.shutdown()
        return out

    got = asyncio.run(main())
    assert got["acme"] == (200, {"org": "acme", "values": ["ownership", "care"]})
    assert got["other"] == (200, {"org": "globex", "values": []})
    status, body = got["listed"]
    assert status == 200 and body["value"] == "care" and body["entries"] == []
    assert list(body) == ["org", "window", "window_start", "value", "entries"]
    assert got["listed_reads"]  # a listed value reads kudos.value_thanks
    assert got["unlisted"][0] == 200 and got["unlisted"][1]["entries"] == []
    assert got["unlisted_reads"] == []  # ignored for boards: no read
    assert got["bad"][0] == 400 and "value" in got["bad"][1]["error"]
