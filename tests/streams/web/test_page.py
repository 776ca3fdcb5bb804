"""The live page without I/O: history windows in an org's calendar, the server-sent-event
feed, and static checks of the shipped page (offline, no HTML built from data, a strict
CSP holds, labelled controls, table headers)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import tomllib
from datetime import UTC, datetime
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

from streams.domain.rules import RuleConfig, RulesLookup
from streams.web.live import LiveFeed, LiveKey, StreamLimits, sse_message
from streams.web.page import STATIC_TYPES, history_starts

ROOT = Path(__file__).resolve().parents[3]
RULES = RulesLookup(per_org={"nz": RuleConfig(timezone="Pacific/Auckland", week_start="sunday")})


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_history_starts_are_consecutive_oldest_first() -> None:
    at = ms("2026-03-09T10:30:00")
    starts = history_starts(RULES, "acme", "day", at, 14)
    assert len(starts) == 14
    assert starts[-1] == ms("2026-03-09T00:00:00")
    assert starts[0] == ms("2026-02-24T00:00:00")
    assert all(b - a == 86_400_000 for a, b in itertools.pairwise(starts))
    assert history_starts(RULES, "acme", "hour", at, 1) == [ms("2026-03-09T10:00:00")]
    nz = history_starts(RULES, "nz", "day", ms("2026-04-06T00:00:00"), 3)
    assert [b - a for a, b in itertools.pairwise(nz)] == [24 * 3_600_000, 25 * 3_600_000]


def test_history_of_months_quarters_and_years_stops_at_1970() -> None:
    at = int(datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp() * 1000)
    years = history_starts(RULES, "acme", "year", at, 90)
    assert len(years) == 2026 - 1970 + 1 and years[0] == 0
    assert [datetime.fromtimestamp(s / 1000, UTC).year for s in years[-3:]] == [2024, 2025, 2026]
    quarters = history_starts(RULES, "acme", "quarter", at, 4)
    months = [datetime.fromtimestamp(s / 1000, UTC).month for s in quarters]
    assert months == [1, 4, 7, 10]


def test_sse_message_is_one_event() -> None:
    data = json.dumps({"name": "a\nb"})
    raw = sse_message("snapshot", data).decode()
    assert raw == f"event: snapshot\ndata: {data}\n\n"
    assert raw.count("\n\n") == 1  # json.dumps escaped the newline in the value


def test_live_feed_sends_changes_only_and_shares_one_reader() -> None:
    async def scenario() -> None:
        loads: list[LiveKey] = []
        value = {"n": 0}

        async def load(key: LiveKey) -> dict[str, Any]:
            loads.append(key)
            return dict(value)

        feed = LiveFeed(load, interval_s=0.01)
        key: LiveKey = ("acme", "week", 10, "people")
        queues = [feed.subscribe(key) for _ in range(3)]
        first = [await asyncio.wait_for(q.get(), 1) for q in queues]
        assert first == ['{"n":0}'] * 3
        await asyncio.sleep(0.1)
        assert all(q.empty() for q in queues)  # unchanged: nothing sent
        polls = len(loads)
        assert 3 <= polls <= 15  # one reader for three subscribers
        value["n"] = 1
        assert await asyncio.wait_for(queues[0].get(), 1) == '{"n":1}'
        late = feed.subscribe(key)  # a new subscriber gets the latest at once
        assert late.get_nowait() == '{"n":1}'
        for q in [*queues, late]:
            feed.unsubscribe(key, q)
        assert feed.watched == 0
        stopped = len(loads)
        await asyncio.sleep(0.05)
        assert len(loads) == stopped  # nobody watches: no reads

        again = feed.subscribe(key)
        await feed.close()
        items = [again.get_nowait()]
        assert items[-1] is None  # the stream ends

    asyncio.run(scenario())


def test_live_feed_reports_a_failed_read_and_recovers() -> None:
    async def scenario() -> None:
        fail = {"on": True}

        async def load(key: LiveKey) -> dict[str, Any]:
            if fail["on"]:
                raise ConnectionError("clickhouse away")
            return {"ok": True}

        feed = LiveFeed(load, interval_s=0.01)
        q = feed.subscribe(("acme", "day", 10, "people"))
        assert json.loads(await asyncio.wait_for(q.get(), 1)) == {
            "error": "data temporarily unavailable"
        }
        fail["on"] = False
        assert json.loads(await asyncio.wait_for(q.get(), 1)) == {"ok": True}
        await feed.close()

    asyncio.run(scenario())


def test_stream_limits_per_client_and_in_total() -> None:
    limits = StreamLimits(total=5, per_client=2)
    assert [limits.open("10.0.0.1") for _ in range(3)] == [None, None, "live_client"]
    assert [limits.open(f"10.0.0.{i}") for i in (2, 3, 4, 5)] == [None, None, None, "live_total"]
    assert limits.open_streams == 5
    limits.close("10.0.0.1")
    assert limits.open("10.0.0.9") is None  # a slot freed up
    assert limits.open("10.0.0.1") == "live_total"
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.9"):
        limits.close(client)
    limits.close("never-opened")  # harmless
    assert limits.open_streams == 0 and not limits._by_client  # nothing kept per client


# --- the shipped page ------------------------------------------------------------------


def static(name: str) -> str:
    return resources.files("streams.web").joinpath(f"static/{name}").read_text()


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.labels_for: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "label" and a.get("for"):
            self.labels_for.add(str(a["for"]))


def parse_page() -> PageParser:
    parser = PageParser()
    parser.feed(static("index.html"))
    return parser


def test_page_assets_are_shipped_and_local() -> None:
    page = parse_page()
    refs = [a.get("src") or a.get("href") for t, a in page.tags if t in ("script", "link")]
    assert sorted(str(r) for r in refs) == sorted(f"/assets/{n}" for n in STATIC_TYPES)
    for name in ["index.html", *STATIC_TYPES]:
        text = static(name)
        # Offline: no CDN, no web font; the SVG namespace is an identifier, not a fetch.
        urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "static/*" in pyproject["tool"]["setuptools"]["package-data"]["streams.web"]


def test_page_never_builds_html_from_data_and_fits_its_csp() -> None:
    js = static("app.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js
    assert "new Function" not in js
    html = static("index.html")
    page = parse_page()
    # script-src 'self' and style-src 'self': no inline code, no inline style.
    assert all(a.get("src") for t, a in page.tags if t == "script")
    assert "<style" not in html
    assert not any(k == "style" or k.startswith("on") for _, a in page.tags for k in a)


def test_page_is_labelled_for_assistive_technology() -> None:
    page = parse_page()
    controls = [a for t, a in page.tags if t in ("input", "select")]
    assert controls and all(a.get("id") in page.labels_for for a in controls)
    tables = [a for t, a in page.tags if t == "table"]
    assert len(tables) == 3  # people, teams, the chosen company value
    assert sum(1 for t, _ in page.tags if t == "caption") == 3
    headers = [a for t, a in page.tags if t == "th"]
    assert headers and all(a.get("scope") == "col" for a in headers)
    live = [a for _, a in page.tags if a.get("aria-live")]
    assert [a.get("aria-live") for a in live] == ["polite"]  # one region, not the table
    assert ("html", {"lang": "en"}) in page.tags
    assert any(t == "meta" and a.get("name") == "viewport" for t, a in page.tags)
