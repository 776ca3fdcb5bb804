"""The `kudos` command line as a user runs it: produce, leaderboard, up --demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas.codec import ShippedSchemas, default_codec
from streams.cli.main import _format_table
from streams.cli.synthetic import SyntheticTraffic
from streams.kafka.broker import EmbeddedBroker, free_port
from tests.e2e.test_end_to_end import consume_all
from tests.e2e.worker import WorkerProcess

KUDOS = [sys.executable, "-m", "streams"]


def run_kudos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUDOS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.kafka
def test_produce_from_jsonl_and_avro_files(tansu: EmbeddedBroker, tmp_path: Path) -> None:
    codec = default_codec()
    events = list(SyntheticTraffic(seed=3).stream(20))
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join(codec.encode_json(e) for e in events) + b"\n")
    avro = tmp_path / "events.avro"
    schema = fastavro.parse_schema(ShippedSchemas().writer_schema(1))
    with avro.open("wb") as f:
        fastavro.writer(f, schema, [json.loads(codec.encode_json(e)) for e in events])

    for path, encoding, topic in ((jsonl, "json", "cli.jsonl"), (avro, "avro", "cli.avro")):
        out = run_kudos(
            "produce",
            "--file",
            str(path),
            "--encoding",
            encoding,
            "--bootstrap",
            tansu.bootstrap,
            "--topic",
            topic,
        )
        assert out.returncode == 0, out.stderr
        got = consume_all(tansu.bootstrap, topic, len(events))
        assert len(got) == len(events)
        decoded = sorted((codec.decode(m.value) for m in got), key=lambda e: e.event_id)
        assert decoded == sorted(events, key=lambda e: e.event_id)
        assert all(m.key == codec.decode(m.value).actor_id.encode() for m in got)


@pytest.mark.kafka
def test_produce_synthetic_at_a_rate(tansu: EmbeddedBroker) -> None:
    started = time.monotonic()
    out = run_kudos(
        "produce",
        "--synthetic",
        "200",
        "--rate",
        "400",
        "--bootstrap",
        tansu.bootstrap,
        "--topic",
        "cli.synthetic",
        "--seed",
        "1",
    )
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started >= 0.5
    assert len(consume_all(tansu.bootstrap, "cli.synthetic", 200)) == 200


def test_leaderboard_table_is_aligned() -> None:
    entries = [
        {
            "rank": 1,
            "user_id": "ann",
            "score": 120,
            "thanks_received": 30,
            "distinct_thankers": 9,
            "thanks_given": 10,
            "shares": 5,
            "reactions_received": 10,
        },
        {
            "rank": 2,
            "user_id": "bartholomew",
            "score": 7,
            "thanks_received": 1,
            "distinct_thankers": 1,
            "thanks_given": 2,
            "shares": 1,
            "reactions_received": 0,
        },
    ]
    lines = _format_table("acme", "week", entries, "2026-11-23T00:00:00Z").splitlines()
    assert lines[0] == "acme · week from 2026-11-23T00:00:00Z"
    assert len({len(line) for line in lines[1:]}) == 1
    assert lines[2].split()[:3] == ["1", "ann", "120"]
    # With names from the directory, a name column (blank where unknown), still aligned.
    entries[0]["display_name"] = "Ann Archer"
    entries[1]["display_name"] = None
    named = _format_table("acme", "week", entries).splitlines()
    assert named[1].split()[:3] == ["rank", "user_id", "display_name"]
    assert named[2].split()[:5] == ["1", "ann", "Ann", "Archer", "120"]
    assert named[2].index("120") + 3 == named[3].index("  7") + 3  # right-aligned scores


def test_up_refuses_several_workers_on_chdb(tmp_path: Path) -> None:
    out = run_kudos(
        "up", "--workers", "2", env={"KUDOS_CLICKHOUSE": "", "KUDOS_DATA_DIR": str(tmp_path)}
    )
    assert out.returncode == 2
    assert "chdb is one process's store" in out.stderr


@pytest.mark.kafka
@pytest.mark.clickhouse
@pytest.mark.e2e
def test_up_demo_shows_a_live_leaderboard(tmp_path: Path) -> None:
    """What a new user does: `kudos up --demo`; the board fills and changes within seconds."""
    port = free_port()
    env = {
        **os.environ,
        "KUDOS_DATA_DIR": str(tmp_path),
        "KUDOS_HTTP_PORT": str(port),
        "KUDOS_HTTP_HOST": "127.0.0.1",
        "KUDOS_SESSION_TIMEOUT_S": "6",
        "KUDOS_CLICKHOUSE": "",
        "KUDOS_KAFKA": "",
    }
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [*KUDOS, "up", "--demo", "--rate", "300"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    view = WorkerProcess("", "", tmp_path / "up.log")
    view.port = port
    try:
        started = time.monotonic()
        first: Any = None
        while time.monotonic() - started < 60:
            assert proc.poll() is None, view.log_tail()
            try:
                status, body = view.get("/api/leaderboard?org=acme&window=hour&top=5")
            except OSError:
                status, body = 0, None
            if status == 200 and body["entries"]:
                if first is None:
                    first = body["entries"]
                elif body["entries"] != first:
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"leaderboard did not fill and change:\n{view.log_tail()}")
        assert [e["rank"] for e in body["entries"]] == list(range(1, len(body["entries"]) + 1))
        status, page = view.get("/")
        assert status == 200 and "live leaderboard" in page
        out = run_kudos(
            "leaderboard",
            "--org",
            "acme",
            "--window",
            "hour",
            "--format",
            "json",
            env={"KUDOS_HTTP_PORT": str(port), "KUDOS_CLICKHOUSE": ""},
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["org"] == "acme"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, view.log_tail()


@pytest.mark.kafka
def test_produce_shows_progress_on_a_terminal_and_is_quiet_when_piped(
    tansu: EmbeddedBroker,
) -> None:
    import fcntl
    import pty
    import struct
    import termios

    args = [*KUDOS, "produce", "--synthetic", "300", "--bootstrap", tansu.bootstrap]
    args += ["--topic", "cli.progress", "--seed", "2"]
    # On a terminal: a progress bar that reaches the total.
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes `kudos produce` on a 24 x 80 terminal
        # (a new pty reports 0 x 0, where tqdm hides its bar)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.execv(sys.executable, args)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    text = out.decode(errors="replace")
    assert "300/300" in text and "produced 300 events" in text, text
    # Piped: only the summary line.
    piped = run_kudos(*args[3:])
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr.strip().splitlines()[-1].startswith("produced 300 events")
    assert "300/300" not in piped.stderr and "\r" not in piped.stderr
    assert len(consume_all(tansu.bootstrap, "cli.progress", 600)) == 600


def test_worker_refuses_invalid_rules_before_connecting(tmp_path: Path) -> None:
    config = tmp_path / "kudos.toml"
    config.write_text('[org_rules.acme]\nversion = 2\ntimezone = "Mars/Olympus_Mons"\n')
    started = time.monotonic()
    out = run_kudos(
        "worker",
        env={"KUDOS_CONFIG": str(config), "KUDOS_KAFKA": "127.0.0.1:1"},  # nothing listens
    )
    assert out.returncode == 2, out.stderr
    assert "invalid rules configuration" in out.stderr and "Mars/Olympus_Mons" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 20  # did not wait for Kafka
