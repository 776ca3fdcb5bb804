"""`kudos forget`: erase a person (GDPR) from ClickHouse and worker state.

With a token (`--token` or KUDOS_TOKEN: an admin of the org, when the worker has
KUDOS_AUTH=jwt) it asks a worker's API (`POST /api/admin/forget`); without, it writes the
request to Kafka itself, which needs the cluster's credentials."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from streams.cli.common import (
    ApiRefused,
    add_token_argument,
    call_api,
    log,
    setup_logging,
    worker_api,
)
from streams.settings import Settings, get_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fg = sub.add_parser("forget", help="erase a person from ClickHouse and worker state (GDPR)")
    fg.add_argument("user")
    fg.add_argument("--org", required=True)
    fg.add_argument("--bootstrap", default=None)
    fg.add_argument("--timeout", type=float, default=300.0)
    fg.add_argument("--api", default=None, help="a worker's HTTP API (with chdb, or a token)")
    add_token_argument(fg)
    fg.set_defaults(func=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    """Erase a person (GDPR): ask the worker that owns them, wait until it is done."""
    settings = get_settings()
    setup_logging(settings)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    bootstrap = args.bootstrap or settings.kafka
    token = args.token or os.environ.get("KUDOS_TOKEN")
    if not bootstrap and not token:
        log.error("set KUDOS_KAFKA or --bootstrap, or give an admin's --token")
        return 2
    if "/" in args.org:
        log.error("org ids cannot contain '/'")
        return 2
    deadline = time.monotonic() + args.timeout
    try:
        if token:
            body = {"org": args.org, "user": args.user}
            url = f"{_api_base(settings, args.api)}/api/admin/forget"
            request_id = str(call_api(url, token, body)["request_id"])
        else:
            request_id = _request_over_kafka(settings, bootstrap, args, deadline)
        print(f"erasure requested ({request_id}); waiting for the worker", file=sys.stderr)
        return _wait_for(settings, request_id, args, deadline, token)
    except ApiRefused as exc:
        log.error("%s", exc)
        return 1


def _request_over_kafka(
    settings: Settings, bootstrap: str, args: argparse.Namespace, deadline: float
) -> str:
    import uuid

    from kafka import KafkaProducer

    from streams.kafka.broker import partition_count
    from streams.kafka.security import kafka_python_kwargs
    from streams.stages.transport import Control, effects_partition, encode_control

    request_id = uuid.uuid4().hex
    client = kafka_python_kwargs(settings)
    partitions = partition_count(bootstrap, settings.effects_topic, deadline, client)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **client)
    try:
        # To the partition of the person's effects: the worker that owns them applies
        # everything sent before first, and erases before anything sent after.
        producer.send(
            settings.effects_topic,
            value=encode_control(Control("forget", args.org, args.user, request_id)),
            partition=effects_partition(args.org, args.user, partitions),
        ).get(timeout=30)
    finally:
        producer.close()
    return request_id


def _wait_for(
    settings: Settings,
    request_id: str,
    args: argparse.Namespace,
    deadline: float,
    token: str | None,
) -> int:
    while time.monotonic() < deadline:
        rows = _erasure_status(settings, request_id, args.api, token)
        if rows is not None:
            print(json.dumps({"request_id": request_id, "org": args.org, "rows": rows}))
            return 0
        time.sleep(0.5)
    log.error("no worker finished erasure %s within %ss: is one running?", request_id, args.timeout)
    return 1


def _api_base(settings: Settings, api: str | None) -> str:
    return api or f"http://127.0.0.1:{settings.http_port}"


def _erasure_status(
    settings: Settings, request_id: str, api: str | None, token: str | None
) -> int | None:
    base = _api_base(settings, api) if token else worker_api(settings, api)
    if base is not None:
        try:
            body = call_api(f"{base}/api/erasures/{request_id}", token)
        except OSError:
            return None  # the worker is (re)starting
        return int(body["rows"]) if body.get("done") else None
    from sinks.clickhouse import connect
    from sinks.erase import erasure_done

    ch = connect(settings.clickhouse.get_secret_value())
    try:
        return erasure_done(ch, request_id)
    finally:
        ch.close()
