"""The live page in a real browser: Debian's chromium, headless, driven by Playwright,
against a real `kudos worker` (chdb) fed through Tansu by this test.

What is asserted is what a person sees: the rows, ranks, names, scores and rank changes of
today's board equal an independent computation (tests/e2e/reference.py, with opted-out
people removed and ranks closed up); an opted-out person is nowhere, not in the badge feed
either, and a display name that is HTML stays text; events that earn a badge make it
appear in the feed and reorder the board without a reload, within seconds; a phone
viewport does not scroll sideways; the page passes an accessibility smoke check (headers,
caption, one polite live region, labelled controls, contrast, keyboard). Screenshots are
kept under the test's tmp dir (`KUDOS_UPDATE_SCREENSHOT=1` also refreshes
docs/live-page.png for the README).

Chromium missing is a failure, never a skip: `scripts/bootstrap --test` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from playwright.sync_api import Browser, Page, expect, sync_playwright

from schemas.directory import DirectoryCodec, DirectoryRecord, directory_key
from streams.kafka.broker import EmbeddedBroker, ensure_topics
from tests.e2e import reference
from tests.e2e.worker import WorkerProcess
from tests.services.idp import IdentityProvider, auth_env
from tests.services.tansu import start_tansu

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ORG = "live"
TOPICS = ["collab.events", "collab.events.dlq", "recognition.badges", "kudos.effects"]
DAY = reference.DAY
HOSTILE = '<img src=x onerror="document.title=1">Mal'
NAMES = {
    "ann": "Ann Archer",
    "bob": "Bob Baker",
    "cat": "Cat Chen",
    "dan": "Dan Diaz",
    "eve": "Eve Evans",
    "uma": "Uma Umbra",
    "mal": HOSTILE,
    "oscar": "Oscar Optout",
}
OPTED_OUT = "oscar"
TEAM = {"ann", "bob", "cat", "dan", "eve", "uma", OPTED_OUT}  # 6 visible: shown (k = 5)
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = start_tansu(tmp_path)
    try:
        ensure_topics(b.bootstrap, [*TOPICS, "directory.users"], partitions=3)
        yield b
    finally:
        b.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap --test)"
    )
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=LAUNCH_ARGS,  # Playwright gives it a fresh temporary profile
        )
        try:
            yield b
        finally:
            b.close()


class Feed:
    """Events as dicts, in publishing order; ids unique across the test."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(
        self, kind: str, actor: str, at: int, to: list[str] | None = None, **extra: Any
    ) -> None:
        self.events.append(
            {
                "event_id": f"e{len(self.events)}",
                "event_type": kind,
                "org_id": ORG,
                "actor_id": actor,
                "recipient_ids": to or [],
                "occurred_at": at,
                "source": "chat",
                **extra,
            }
        )

    def thanks(self, actor: str, to: str, at: int, **extra: Any) -> None:
        self.add("THANKS", actor, at, [to], **extra)


def first_batch(today: int) -> Feed:
    """Yesterday and today. Oscar (opted out) would lead both days and earns badges;
    Eve's many thanks are private; Uma has 3 distinct thankers this week."""
    f = Feed()
    y = today - 2 * reference.HOUR
    for i, (actor, to) in enumerate(
        [("cat", "bob"), ("dan", "bob"), ("eve", "bob"), ("ann", "zed"), ("bob", "ann")]
    ):
        f.thanks(actor, to, y + i * 100)
    f.add("SHARE", "dan", y + 900)
    for i, actor in enumerate(["ann", "bob", "cat", "dan", "t1", "t2"]):
        f.thanks(actor, OPTED_OUT, y + 1000 + i * 100)
    t = today + 1000
    plan = [
        ("bob", "ann"),
        ("cat", "ann"),
        ("dan", "ann"),
        ("ann", "bob"),
        ("ann", "bob"),
        ("t1", "uma"),
        ("t2", "uma"),
        ("t3", "uma"),
        ("zed", "mal"),
        ("ann", OPTED_OUT),
        ("bob", OPTED_OUT),
        ("cat", OPTED_OUT),
    ]
    for i, (actor, to) in enumerate(plan):
        f.thanks(actor, to, t + i * 100)
    for i in range(6):
        f.thanks(f"t{i + 1}", "eve", t + 2000 + i * 100, visibility="PRIVATE")
    f.add("REACTION", "dan", t + 2700, ["eve"])
    f.thanks("cat", "cat", t + 2800)  # self: refused
    for i in range(2):
        f.add("SHARE", "ann", t + 3000 + i * 100)
    for i in range(3):
        f.add("SHARE", "zed", t + 3300 + i * 100)
    f.add("SHARE", "mal", t + 3700)
    return f


def second_batch(f: Feed, today: int) -> None:
    """Two more distinct thankers: Uma reaches 5 this week (helper) and leads today."""
    t = today + 20_000
    for i, actor in enumerate(["t4", "t5", "t4", "t5", "t6", "t6"]):
        f.thanks(actor, "uma", t + i * 100)


def expected_board(events: list[dict[str, Any]], now: int, today: int) -> list[dict[str, Any]]:
    """Today's board as shown: no opted-out people, ranks closed up, names from the
    directory (else the user id), and the change since yesterday's board."""
    model = reference.run(events, now)

    def shown(start: int) -> list[dict[str, Any]]:
        rows = reference.leaderboard(model, ORG, "day", start, 1000)
        rows = [r for r in rows if r["user_id"] != OPTED_OUT]
        for i, r in enumerate(rows):
            r["rank"] = i + 1
        return rows

    before = {r["user_id"]: r["rank"] for r in shown(today - DAY)}
    board = shown(today)
    for r in board:
        r["name"] = NAMES.get(r["user_id"], r["user_id"])
        was = before.get(r["user_id"])
        r["change"] = (
            "new"
            if was is None
            else "\u2013"  # en dash: no change
            if was == r["rank"]
            else f"▲{was - r['rank']}"
            if was > r["rank"]
            else f"▼{r['rank'] - was}"
        )
    return board


def publish(bootstrap: str, events: list[dict[str, Any]], directory: bool = False) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    if directory:
        codec = DirectoryCodec()
        for user, name in NAMES.items():
            team = "core" if user in TEAM else ""
            rec = DirectoryRecord(ORG, user, name, team, "", user == OPTED_OUT, 1)
            producer.send(
                "directory.users", key=directory_key(ORG, user), value=codec.encode_json(rec)
            )
    for e in events:
        producer.send("collab.events", key=e["actor_id"].encode(), value=json.dumps(e).encode())
    producer.flush()
    producer.close()


def wait_for_api(worker: WorkerProcess, want: list[dict[str, Any]], timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, body = worker.get(f"/api/leaderboard?org={ORG}&window=day&top=100")
        got = [(e["user_id"], e["score"]) for e in body.get("entries", [])] if status == 200 else []
        if got == [(r["user_id"], r["score"]) for r in want]:
            return
        time.sleep(0.5)
    raise AssertionError(f"API board {got} != {want}\n{worker.log_tail()}")


def shown_rows(page: Page) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        "#people-rows tr",
        """rows => rows.map(tr => ({
            rank: tr.querySelector('td.rank').textContent,
            change: tr.querySelector('td.chg [aria-hidden]').textContent,
            name: tr.querySelector('td.name button').textContent,
            score: tr.querySelector('td.score .total').textContent,
            parts: [...tr.querySelectorAll('td.part')].map(td => td.textContent).join(','),
        }))""",
    )
    return rows


def as_shown(board: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "rank": str(r["rank"]),
            "change": r["change"],
            "name": r["name"],
            "score": str(r["score"]),
            "parts": ",".join(
                str(r[k])
                for k in (
                    "thanks_received",
                    "distinct_thankers",
                    "thanks_given",
                    "shares",
                    "reactions_received",
                )
            ),
        }
        for r in board
    ]


def wait_rows(page: Page, want: list[dict[str, str]], timeout: float) -> float:
    started = time.monotonic()
    got: list[dict[str, str]] = []
    while time.monotonic() - started < timeout:
        got = shown_rows(page)
        if got == want:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"page shows {got}, expected {want}")


CONTRAST_JS = """sel => {
  const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = c => { const [r, g, b] = c.map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const bg = e => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
    if (!/rgba\\(0, 0, 0, 0\\)|transparent/.test(c)) return rgb(c); } return [255, 255, 255]; };
  return [...document.querySelectorAll(sel)].filter(e => e.offsetParent).map(e => {
    const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); });
}"""


def test_live_page_in_a_real_browser(
    broker: EmbeddedBroker, browser: Browser, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    if now % DAY > DAY - 90_000:  # today must last the whole test
        time.sleep((DAY - now % DAY) / 1000 + 1)
        now = int(time.time() * 1000)
    today = now - now % DAY
    feed = first_batch(today)
    want = expected_board(feed.events, now, today)
    assert [r["user_id"] for r in want][:2] == ["ann", "uma"]
    assert {"new", "▲1"} <= {r["change"] for r in want}  # the test shows real movement
    publish(broker.bootstrap, feed.events, directory=True)

    worker = WorkerProcess(broker.bootstrap, f"chdb://{tmp_path / 'chdb'}", tmp_path / "w.log")
    worker.start()
    try:
        worker.wait_ready()
        wait_for_api(worker, want)

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{worker.base}/?org={ORG}&window=day&top=25")
        wait_rows(page, as_shown(want), timeout=10)

        # Privacy: the opted-out person is on no part of the page; private thanks gave
        # Eve nothing (her only point is a public reaction); HTML in a name stays text.
        body = page.locator("body").inner_text()
        assert OPTED_OUT not in body and NAMES[OPTED_OUT] not in body
        assert page.locator("#people-rows img").count() == 0
        assert page.title() == "kudos — live leaderboard"
        eve = next(r for r in want if r["user_id"] == "eve")
        assert eve["score"] == 1
        expect(page.locator("#badges li").first).to_be_visible()
        assert "earned" in page.locator("#badges").inner_text()
        hidden = worker.get(f"/api/users/{OPTED_OUT}/history?org={ORG}&window=day")
        unknown = worker.get(f"/api/users/nobody/history?org={ORG}&window=day")
        assert hidden[0] == unknown[0] == 200 and hidden[1]["display_name"] is None
        assert {p["score"] for p in hidden[1]["points"]} == {0}  # as an unknown id
        assert hidden[1]["points"] == unknown[1]["points"]
        feed_api = worker.get(f"/api/badges/recent?org={ORG}&limit=50")[1]["badges"]
        assert feed_api and OPTED_OUT not in {b["user_id"] for b in feed_api}
        assert "helper" not in {b["badge"] for b in feed_api}  # only Oscar has 5 so far

        # The chart, by keyboard: focus Ann's name, press Enter.
        page.locator("button.who", has_text="Ann Archer").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#chart circle")).to_have_count(14)
        ann = next(r for r in want if r["user_id"] == "ann")
        expect(page.locator("#chart-caption")).to_contain_text(f"Now {ann['score']};")

        # Accessibility smoke check.
        a11y = page.evaluate(
            """() => ({
              headers: [...document.querySelectorAll('#people thead th')].map(
                th => [th.getAttribute('scope'), th.textContent.trim()]),
              caption: document.querySelector('#people caption').textContent,
              live: [...document.querySelectorAll('[aria-live]')].map(
                e => e.getAttribute('aria-live')),
              unlabelled: [...document.querySelectorAll('input, select, button')].filter(
                e => !(e.labels && e.labels.length) && !e.textContent.trim()
                     && !e.getAttribute('aria-label')).length,
              chart: document.querySelector('#chart').getAttribute('role'),
            })"""
        )
        assert [h[1] for h in a11y["headers"]][:4] == ["Rank", "Change", "Name", "Score"]
        assert {h[0] for h in a11y["headers"]} == {"col"}
        assert "people in live" in a11y["caption"]
        assert a11y["live"] == ["polite"]
        assert a11y["unlabelled"] == 0
        assert a11y["chart"] == "img"
        ratios = page.evaluate(CONTRAST_JS, "td, th, caption, .note, .status, button.who, label")
        assert ratios and min(ratios) >= 4.5, ratios
        page.keyboard.press("Tab")  # focus moves on from the name button, visibly
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
        page.screenshot(path=str(tmp_path / "live-page-before.png"), full_page=True)

        # Live: a badge is earned and the board reorders, with no reload.
        page.evaluate("window.__sameDocument = true")
        second_batch(feed, today)
        want_after = expected_board(feed.events, int(time.time() * 1000), today)
        assert want_after[0]["user_id"] == "uma"
        publish(broker.bootstrap, feed.events[-6:])
        took = wait_rows(page, as_shown(want_after), timeout=20)
        helper = page.locator("#badges li", has_text="Uma Umbra earned Helper")
        expect(helper).to_be_visible(timeout=5000)
        assert page.evaluate("window.__sameDocument") is True
        expect(page.locator("#announce")).to_contain_text("Uma Umbra", timeout=8000)
        assert OPTED_OUT not in page.locator("body").inner_text()
        shot = tmp_path / "live-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert not errors, errors
        print(f"board updated in the browser {took:.1f}s after the events were published")

        # A phone: nothing scrolls sideways, the parts fold into the score cell.
        phone = browser.new_page(
            viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True
        )
        phone.goto(f"{worker.base}/?org={ORG}&window=day&top=25")
        wait_rows(phone, as_shown(want_after), timeout=10)
        widths = phone.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth, document.body.scrollWidth]"
        )
        assert widths[0] <= widths[1] and widths[2] <= widths[1], widths
        expect(phone.locator("#people-rows tr").first.locator(".parts-inline")).to_be_visible()
        expect(phone.locator("#people thead th.part").first).to_be_hidden()
        phone.screenshot(path=str(tmp_path / "live-page-phone.png"), full_page=True)

        # The team view: today's members' points summed, the opted-out member left out.
        page.select_option("#view", "teams")
        members = [r for r in want_after if r["user_id"] in TEAM]
        team_row = page.locator("#teams-rows tr").first
        expect(team_row).to_contain_text("core")
        cells = team_row.locator("td").all_inner_texts()
        assert cells[2:4] == [str(len(TEAM) - 1), str(sum(r["score"] for r in members))], cells
        assert page.locator("#teams-rows tr").count() == 1
        assert "view=teams" in page.url

        if os.environ.get("KUDOS_UPDATE_SCREENSHOT") == "1":
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copy(shot, ROOT / "docs" / "live-page.png")
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_the_page_signs_in_with_a_token(
    broker: EmbeddedBroker, browser: Browser, tmp_path: Path
) -> None:
    """KUDOS_AUTH=jwt: the page loads without a token, asks for one, and then shows the
    board; a token handed over in the fragment signs in at once (and leaves the address);
    another person's history is refused in words, one's own is drawn."""
    now = int(time.time() * 1000)
    if now % DAY > DAY - 60_000:
        time.sleep((DAY - now % DAY) / 1000 + 1)
        now = int(time.time() * 1000)
    today = now - now % DAY
    feed = first_batch(today)
    want = expected_board(feed.events, now, today)
    publish(broker.bootstrap, feed.events, directory=True)
    idp = IdentityProvider()
    env = auth_env(str(idp.write_jwks(tmp_path / "jwks.json")), idp)
    worker = WorkerProcess(
        broker.bootstrap, f"chdb://{tmp_path / 'chdb'}", tmp_path / "w.log", **env
    )
    worker.start()
    try:
        worker.wait_ready()
        assert worker.get(f"/api/leaderboard?org={ORG}")[0] == 401
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{worker.base}/?org={ORG}&window=day&top=25")
        expect(page.locator("#signin")).to_be_visible(timeout=10_000)
        expect(page.locator("#status")).to_contain_text("Sign in")
        page.screenshot(path=str(tmp_path / "live-page-sign-in.png"), full_page=True)
        page.fill("#token", idp.token("ann", ORG))
        page.locator("#signin button").click()
        expect(page.locator("#signin")).to_be_hidden()
        wait_rows(page, as_shown(want), timeout=45)
        page.locator("button.who", has_text="Bob Baker").click()
        expect(page.locator("#chart-hint")).to_contain_text("Only this person or an admin")
        page.locator("button.who", has_text="Ann Archer").click()
        expect(page.locator("#chart circle")).to_have_count(14)

        handed = browser.new_page(viewport={"width": 1280, "height": 900})
        handed.goto(f"{worker.base}/?org={ORG}&window=day#access_token={idp.admin_token(ORG)}")
        wait_rows(handed, as_shown(want)[:10], timeout=20)
        assert "access_token" not in handed.url
        expect(handed.locator("#signout")).to_be_visible()
        handed.locator("#signout").click()
        expect(handed.locator("#signin")).to_be_visible(timeout=10_000)
        assert not errors, errors
        assert "access_token" not in worker.log_tail(10**7)
    finally:
        assert worker.stop() == 0, worker.log_tail()
