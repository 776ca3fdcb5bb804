"""Explain and replay against real ClickHouse (chdb 26.x and clickhouse-server 18.16).

The scenario that reaches every rule of v1 (tests/e2e/scenario.py) goes through the real
stages -- decode, rules, kudos.decisions, effects, aggregation, kudos.score_state and
kudos.leader_rows -- in this process, with an in-memory stand-in for Kafka between them
(the broker path is covered by test_end_to_end.py). Then:

* explain: for several users and every window, the explained totals and score equal the
  user's row of the leaderboard the API serves, the listed points add up to the score, and
  refused decisions are listed with the rule that refused them;
* replay: `kudos replay` with `pair_daily_cap = 1` reports, per user and window, exactly
  the changes an independent model of the rules (tests/e2e/reference.py) predicts.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import default_codec
from schemas.vocabulary import DAY_MS, WINDOWS
from sinks.clickhouse import ClickHouse
from sinks.history import DecisionHistory
from streams.cli import main as cli
from streams.domain.rules import RulesLookup
from streams.settings import get_settings
from streams.stages.aggregate import AggregateStage
from streams.stages.decide import DecideStage
from streams.stages.flush import Blocking, RawMessage
from streams.stages.state_store import StateStore
from streams.web.explain import explain_user
from tests.e2e import reference, scenario

pytestmark = [pytest.mark.clickhouse, pytest.mark.e2e]
PARTITIONS = 3


class MemoryPublisher:
    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[Any, ...]]] = {}

    async def publish(self, topic: str, messages: Sequence[tuple[Any, ...]]) -> None:
        self.sent.setdefault(topic, []).extend(messages)


def run_pipeline(ch: ClickHouse, events: list[dict[str, Any]]) -> None:
    """Events keyed by actor onto 3 partitions, decided and aggregated by the real stages."""
    codec = default_codec()
    offsets = [0] * PARTITIONS
    batch: list[RawMessage] = []
    for d in events:
        p = zlib.crc32(d["actor_id"].encode()) % PARTITIONS
        value = codec.encode_avro(scenario.to_event(d))
        batch.append(RawMessage("collab.events", p, offsets[p], None, value))
        offsets[p] += 1
    store = StateStore(ch)
    rules = RulesLookup()
    publisher = MemoryPublisher()
    blocking = Blocking()
    decide = DecideStage(
        store,
        codec,
        rules,
        publisher,
        blocking,
        effects_topic="kudos.effects",
        effects_partitions=PARTITIONS,
        dlq_topic="collab.events.dlq",
    )
    aggregate = AggregateStage(store, rules, publisher, blocking, badges_topic="recognition.badges")

    async def go() -> None:
        # Two batches, as a worker would take them.
        half = len(batch) // 2
        await decide.process(batch[:half])
        await decide.process(batch[half:])
        effects = [
            RawMessage("kudos.effects", p, i, None, v)
            for i, (_key, v, p, _headers) in enumerate(publisher.sent["kudos.effects"])
        ]
        await aggregate.process(effects)

    try:
        asyncio.run(go())
    finally:
        blocking.shutdown()


def board(store: StateStore, org: str, window: str, start: int) -> dict[str, Any]:
    return {e.user_id: e for e in store.leaderboard(org, window, start, 1000)}  # type: ignore[arg-type]


def test_explain_and_replay(
    ch: ClickHouse, clickhouse_url: str, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    now = int(time.time() * 1000)
    events = scenario.build("kp", now, seed=3)
    run_pipeline(ch, events)
    model = reference.run(events, now)
    store = StateStore(ch)
    history = DecisionHistory(ch)
    rules = RulesLookup()

    # --- explain ------------------------------------------------------------------------
    users = ["kp-u00", "kp-u01", "kp-u02", "kp-u03", "kp-star", "kp-sharer", "kp-streaker"]
    checked = 0
    for window in WINDOWS:
        start = reference.starts(now)[window]
        entries = board(store, "kp", window, start)
        for user in users:
            body = explain_user(history, rules, "kp", user, window, now)
            assert body["window_start"] == time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000)
            )
            e = entries.get(user)
            want = (
                (e.score, e.shares, e.thanks_given, e.thanks_received, e.distinct_thankers,
                 e.reactions_received)
                if e is not None
                else (0, 0, 0, 0, 0, 0)
            )  # fmt: skip
            t = body["totals"]
            got = (
                body["score"], t["shares"], t["thanks_given"], t["thanks_received"],
                t["distinct_thankers"], t["reactions_received"],
            )  # fmt: skip
            assert got == want, (user, window)
            assert not body["truncated"]
            assert sum(x["points"] for x in body["entries"]) == body["score"]
            assert len(body["entries"]) == body["count"]
            checked += e is not None
    assert checked >= 15

    # Refused decisions are listed with their reason: the pair cap (u00 -> u01, 5 thanks
    # in an hour), a self-thank-you, a private one, duplicates and late ones.
    week = explain_user(history, rules, "kp", "kp-u01", "all", now)
    capped = [
        x for x in week["entries"] if x["reason"] == "pair_daily_cap" and x["actor_id"] == "kp-u00"
    ]
    assert len(capped) >= 2 and all(x["points"] == 0 and not x["counted"] for x in capped)
    assert capped[0]["lineage"]["topic"] == "collab.events" and capped[0]["rule_version"] == 1
    assert explain_user(history, rules, "kp", "kp-u02", "all", now)["refused"]["self"] >= 2
    assert explain_user(history, rules, "kp", "kp-u03", "all", now)["refused"]["private"] >= 1
    all_refusals: dict[str, int] = {}
    for u in (f"kp-u{i:02d}" for i in range(20)):
        for reason, n in explain_user(history, rules, "kp", u, "all", now)["refused"].items():
            all_refusals[reason] = all_refusals.get(reason, 0) + n
    assert {"duplicate", "late", "self", "private", "pair_daily_cap"} <= set(all_refusals)
    # Unknown users explain to nothing; a small limit truncates.
    nobody = explain_user(history, rules, "kp", "nobody", "all", now)
    assert (nobody["score"], nobody["entries"], nobody["count"]) == (0, [], 0)
    small = explain_user(history, rules, "kp", "kp-u01", "all", now, limit=2)
    assert small["truncated"] and len(small["entries"]) == 2
    assert small["score"] == week["score"]

    # --- replay -------------------------------------------------------------------------
    strict = reference.run(events, now, pair_cap=1)
    expected: dict[tuple[str, str, int], tuple[int, int]] = {}
    for key in set(model.totals) | set(strict.totals):
        _org, window, start, user = key
        old = reference.score(model.totals[key]) if key in model.totals else 0
        new = reference.score(strict.totals[key]) if key in strict.totals else 0
        if old != new:
            expected[(user, window, start)] = (old, new)
    assert expected  # the stricter cap changes something

    rules_file = tmp_path / "strict.toml"
    rules_file.write_text("[rules]\npair_daily_cap = 1\n")
    monkeypatch.setenv("KUDOS_CLICKHOUSE", clickhouse_url)
    monkeypatch.setenv("KUDOS_CONFIG", str(tmp_path / "absent.toml"))
    get_settings.cache_clear()
    # Every event of the scenario lies in the range (the late ones are 10 days old).
    frm = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now - 12 * DAY_MS) / 1000))
    to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now + 2 * DAY_MS) / 1000))
    args = ["replay", "--rules", str(rules_file), "--from", frm, "--to", to, "--org", "kp"]
    try:
        assert cli.main([*args, "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        got = {
            (u["user_id"], w["window"], _ms(w["window_start"])): (w["old_score"], w["new_score"])
            for u in report["users"]
            for w in u["windows"]
        }
        assert got == expected
        changed = sum(
            n for u in report["users"] for k, n in u["decisions"].items()
            if k == "counted -> pair_daily_cap"
        )  # fmt: skip
        refused = strict.refused["pair_daily_cap"] - model.refused["pair_daily_cap"]
        assert changed == 2 * refused  # each refused thank-you touches two users
        assert report["reasons"]["pair_daily_cap"] == {
            "old": model.refused["pair_daily_cap"],
            "new": strict.refused["pair_daily_cap"],
        }
        assert report["stale_windows"] == 0 and report["applied"] is None
        # Nothing was written.
        assert ch.query("SELECT count() FROM kudos.replay_scores") == [(0,)]

        # The table form; --apply writes to kudos.replay_scores (migration 0015) only.
        assert cli.main([*args, "--no-progress"]) == 0
        assert "counted -> pair_daily_cap" in capsys.readouterr().out
        assert cli.main([*args, "--apply", "--format", "json"]) == 0
        applied = json.loads(capsys.readouterr().out)["applied"]
        assert cli.main([*args, "--apply", "--format", "json"]) == 0  # replaces its rows
        capsys.readouterr()
        rows = ch.query(
            "SELECT user_id, window, toUInt64(toUnixTimestamp(window_start)) * 1000, "
            "old_score, score FROM kudos.replay_scores FINAL WHERE replay_id = %(id)s",
            {"id": applied["replay_id"]},
        )
        assert len(rows) == applied["rows"] == report["windows"]
        written = {(r[0], r[1], int(r[2])): (int(r[3]), int(r[4])) for r in rows}
        assert {k: v for k, v in written.items() if v[0] != v[1]} == expected
    finally:
        get_settings.cache_clear()


def _ms(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) * 1000
