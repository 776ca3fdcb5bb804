"""`kudos leaderboard`: print a leaderboard, from ClickHouse or a worker's HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

from schemas.vocabulary import BOARD_METRICS, BOARD_WINDOWS
from streams.cli.common import ApiRefused, add_token_argument, call_api, format_table, worker_api
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from sinks.store import LeaderboardEntry, RecognitionStore
    from streams.web.context import BoardScope


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lb = sub.add_parser("leaderboard", help="print a leaderboard")
    lb.add_argument("--org", required=True)
    lb.add_argument(
        "--window",
        choices=BOARD_WINDOWS,
        default="week",
        help="a window of the org's calendar, or last_7d/last_30d/last_90d (default week)",
    )
    lb.add_argument("--at", default=None, help="RFC 3339 time inside the window (default now)")
    lb.add_argument("--top", type=int, default=10)
    lb.add_argument(
        "--offset", type=offset_arg, default=0, help="ranks to skip: --offset 10 shows ranks 11.."
    )
    lb.add_argument(
        "--metric",
        choices=BOARD_METRICS,
        default="score",
        help="rank by this (descending; ties by user id; default score)",
    )
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


def offset_arg(text: str) -> int:
    """`--offset`: the API's rule (0 to MAX_OFFSET), refused by argparse with its message."""
    from streams.web.params import MAX_OFFSET, BadRequest, parse_int

    try:
        return parse_int("offset", text, 0, MAX_OFFSET)
    except BadRequest as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_leaderboard(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        data = leaderboard_data(
            settings,
            args.org,
            args.window,
            args.at,
            args.top,
            args.api,
            args.token,
            offset=args.offset,
            metric=args.metric,
            value=args.value,
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
    *,
    offset: int = 0,
    metric: str = "score",
    value: str | None = None,
) -> dict[str, Any]:
    """The board's body (as /api/leaderboard's): `top` from rank `offset` + 1 by `metric`."""
    from streams.web.params import Params
    from streams.web.views import board_scope, leaderboard_payload

    value = Params([("value", value or "")]).value()
    base = worker_api(settings, api)
    if base is not None:  # chdb belongs to the running worker's process: ask its API.
        query = {
            "org": org,
            "window": window,
            "top": str(top),
            "offset": str(offset),
            "metric": metric,
        }
        if at:
            query["at"] = at
        if value is not None:
            query["value"] = value
        return dict(call_api(f"{base}/api/leaderboard?{urllib.parse.urlencode(query)}", token))
    from sinks.clickhouse import connect
    from sinks.store import RecognitionStore

    q = Params([("org", org), ("window", window), ("at", at or ""), ("metric", metric)])
    scope, metric_ = board_scope(q, settings.rules_lookup()), q.metric()
    ch = connect(settings.clickhouse.get_secret_value())
    try:
        store = RecognitionStore(ch, settings.leader_depth)
        if value is not None:
            return _value_board(settings, store, scope, value, top, offset, metric_)
        entries = store.board(
            scope.org, scope.window, scope.start, top, offset, metric_, scope.days
        )
        return leaderboard_payload(scope.org, scope.window, scope.start, entries)
    finally:
        ch.close()


def _value_board(
    settings: Settings,
    store: RecognitionStore,
    scope: BoardScope,
    value: str,
    top: int,
    offset: int,
    metric: str,
) -> dict[str, Any]:
    """`kudos leaderboard --value`: the board of a company value, read from ClickHouse
    (none for a value the org's rules do not list: it is ignored for boards)."""
    from streams.web.context import value_window
    from streams.web.payloads import value_board_payload

    rules = settings.rules_lookup()(scope.org)
    entries: list[LeaderboardEntry] = []
    if value in rules.value_set:
        weight = rules.weight_thanks_received
        window = value_window(scope)
        entries = store.value_board(
            scope.org, window, scope.start, value, top, weight, offset, metric
        )
    return value_board_payload(scope.org, scope.window, scope.start, value, entries)
