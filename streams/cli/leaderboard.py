"""`kudos leaderboard`: print a leaderboard, from ClickHouse or a worker's HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

from schemas.vocabulary import WINDOWS, WindowName
from streams.cli.common import ApiRefused, add_token_argument, call_api, format_table, worker_api
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from sinks.store import RecognitionStore


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lb = sub.add_parser("leaderboard", help="print a leaderboard")
    lb.add_argument("--org", required=True)
    lb.add_argument("--window", choices=WINDOWS, default="week")
    lb.add_argument("--at", default=None, help="RFC 3339 time inside the window (default now)")
    lb.add_argument("--top", type=int, default=10)
    lb.add_argument(
        "--value",
        default=None,
        help="rank by counted thanks received that carried this company value (one the "
        "org's rules list; any other has an empty board)",
    )
    lb.add_argument("--format", choices=("table", "json"), default="table")
    lb.add_argument("--api", default=None, help="read through a worker's HTTP API at this URL")
    add_token_argument(lb)
    lb.set_defaults(func=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        data = leaderboard_data(
            settings, args.org, args.window, args.at, args.top, args.api, args.token, args.value
        )
    except ApiRefused as exc:
        print(f"kudos leaderboard: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # BadRequest: a value beyond the limits of an id
        print(f"kudos leaderboard: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(format_table(data["org"], data["window"], data["entries"], data["window_start"]))
    return 0


def leaderboard_data(
    settings: Settings,
    org: str,
    window: str,
    at: str | None,
    top: int,
    api: str | None,
    token: str | None = None,
    value: str | None = None,
) -> dict[str, Any]:
    from schemas.times import now_ms
    from streams.web.params import Params
    from streams.web.views import leaderboard_payload, org_window_start

    q = Params([("window", window), ("at", at or ""), ("value", value or "")])
    value = q.value()
    base = worker_api(settings, api)
    if base is not None:  # chdb belongs to the running worker's process: ask its API.
        query = {"org": org, "window": window, "top": str(top)}
        if at:
            query["at"] = at
        if value is not None:
            query["value"] = value
        return dict(call_api(f"{base}/api/leaderboard?{urllib.parse.urlencode(query)}", token))
    from sinks.clickhouse import connect
    from sinks.store import RecognitionStore

    w = q.window()
    start = org_window_start(settings.rules_lookup(), org, w, q.at(now_ms()))
    ch = connect(settings.clickhouse.get_secret_value())
    try:
        if value is not None:
            return _value_board(settings, RecognitionStore(ch), org, w, start, value, top)
        return leaderboard_payload(
            org,
            w,
            start,
            RecognitionStore(ch, settings.leader_depth).leaderboard(org, w, start, top),
        )
    finally:
        ch.close()


def _value_board(
    settings: Settings,
    store: RecognitionStore,
    org: str,
    window: WindowName,
    start: int,
    value: str,
    top: int,
) -> dict[str, Any]:
    """`kudos leaderboard --value`: the board of a company value, read from ClickHouse."""
    from streams.web.payloads import value_board_payload, value_entries

    rules = settings.rules_lookup()(org)
    entries = value_entries(store, org, window, start, value, top, rules)
    return value_board_payload(org, window, start, value, entries)
