"""What the `kudos` commands share: logging set-up, where to reach a worker, progress bars
and the leaderboard table.

Light on purpose: `streams/cli/main.py` imports every command module to build its parser,
so heavy modules (faust, chdb, kafka, tqdm) are imported inside the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streams.settings import Settings

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger("kudos")


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def worker_api(settings: Settings, api: str | None) -> str | None:
    """The base URL of the worker's HTTP API to ask, or None to read ClickHouse directly:
    with `--api`, or when the store is chdb (it belongs to the running worker's process)."""
    if api or not settings.clickhouse.get_secret_value().startswith("clickhouse"):
        return api or f"http://127.0.0.1:{settings.http_port}"
    return None


def add_token_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token for a worker's API with KUDOS_AUTH=jwt (default: $KUDOS_TOKEN)",
    )


class ApiRefused(Exception):
    """The worker's API answered an error (its JSON `error`, never a traceback)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the worker's API answered {status}: {message}")
        self.status = status


def call_api(
    url: str, token: str | None, body: dict[str, Any] | None = None, timeout: float = 10
) -> Any:
    """GET `url` (POST `body` as JSON when given) with the bearer token, if any; its JSON.
    Raises `ApiRefused` for an error answer, OSError when the worker cannot be reached."""
    token = token or os.environ.get("KUDOS_TOKEN") or None
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:
        try:
            message = str(json.loads(exc.read()).get("error", exc.reason))
        except ValueError:
            message = str(exc.reason)
        raise ApiRefused(exc.code, message) from None


def progress_bar(desc: str, enabled: bool | None, total: int | None = None) -> tqdm[Any]:
    """A progress bar on stderr; with `enabled` None (no --progress / --no-progress), shown
    only on a terminal, nothing while piped or redirected."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="ev",
        unit_scale=True,
        desc=desc,
        file=sys.stderr,
        disable=None if enabled is None else not enabled,
        mininterval=0.25,
    )


COLUMNS = (
    "rank",
    "user_id",
    "score",
    "thanks_received",
    "distinct_thankers",
    "thanks_given",
    "shares",
    "reactions_received",
)


def format_table(org: str, window: str, entries: Sequence[Any], start: str = "") -> str:
    def value(e: Any, column: str) -> Any:
        return e.get(column) if isinstance(e, dict) else getattr(e, column, None)

    columns = list(COLUMNS)
    if any(value(e, "display_name") for e in entries):  # names from the user directory
        columns.insert(2, "display_name")
    text = {"user_id", "display_name"}  # left-aligned; numbers right-aligned
    rows = [["" if value(e, c) is None else str(value(e, c)) for c in columns] for e in entries]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if c in text else v.rjust(w)
            for v, w, c in zip(cells, widths, columns, strict=True)
        ).rstrip()

    head = f"{org} · {window}" + (f" from {start}" if start else "")
    return "\n".join([head, line(columns), *(line(r) for r in rows)])
