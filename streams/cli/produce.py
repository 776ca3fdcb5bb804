"""`kudos produce`: publish events, from a file or synthetic, as a platform team would."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from schemas.codec import default_codec
from schemas.event import CollaborationEvent
from streams.cli.common import log, progress_bar, setup_logging
from streams.settings import get_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prod = sub.add_parser("produce", help="publish events as a platform team would")
    src = prod.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="JSON-lines (.jsonl) or Avro container (.avro) file")
    src.add_argument("--synthetic", type=int, metavar="N", help="N synthetic events")
    prod.add_argument("--encoding", choices=("avro", "json"), default="avro")
    prod.add_argument("--rate", type=float, default=0.0, help="events per second (0 = max)")
    prod.add_argument("--seed", type=int, default=None)
    prod.add_argument("--topic", default=None)
    prod.add_argument("--bootstrap", default=None)
    prod.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    prod.set_defaults(func=cmd_produce)


def cmd_produce(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    settings = get_settings()
    setup_logging(settings)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines bury the output
    bootstrap = args.bootstrap or settings.kafka
    if not bootstrap:
        log.error("set KUDOS_KAFKA or --bootstrap")
        return 2
    codec = default_codec()
    if args.file:
        events: Iterator[CollaborationEvent] = _events_from_file(Path(args.file))
    else:
        from streams.cli.synthetic import SyntheticTraffic

        events = SyntheticTraffic(seed=args.seed).stream(args.synthetic)
    encode = codec.encode_avro if args.encoding == "avro" else codec.encode_json
    # A progress bar on a terminal; nothing while piped or redirected (disable=None).
    progress = progress_bar("produce", args.progress, total=args.synthetic or None)
    from streams.kafka.security import kafka_python_kwargs

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        client_id="kudos-produce",
        **kafka_python_kwargs(settings),  # TLS and SASL from KUDOS_KAFKA_*
    )
    sent = 0
    started = time.monotonic()
    try:
        for ev in events:
            producer.send(
                args.topic or settings.events_topic, key=ev.actor_id.encode(), value=encode(ev)
            )
            sent += 1
            progress.update()
            if args.rate:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
        progress.close()
    print(f"produced {sent} events in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def _events_from_file(path: Path) -> Iterator[CollaborationEvent]:
    codec = default_codec()
    if path.suffix in (".avro",):
        import fastavro

        with path.open("rb") as f:
            for record in fastavro.reader(f):
                yield codec.decode(json.dumps(record, default=str).encode())
        return
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield codec.decode(line)
                except Exception as exc:
                    raise SystemExit(f"{path}:{n}: {exc}") from exc
