"""`kudos produce`: from JSON-lines and Avro files, synthetic at a rate, progress on a
terminal only."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import fastavro
import pytest

from schemas.codec import ShippedSchemas, default_codec
from streams.cli.synthetic import SyntheticTraffic
from streams.kafka.broker import EmbeddedBroker
from tests.e2e.test_end_to_end import consume_all
from tests.streams.cli.runner import KUDOS, run_kudos


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
