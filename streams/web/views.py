"""HTTP API on the worker's faust web server: leaderboard, badges, explain, health, metrics,
the directory's boards, and what the live page reads.

Three modules keep every endpoint honest, whatever it is asked: streams/web/params.py reads
every parameter strictly (anything else is a 400 naming the parameter), streams/web/admission.py
runs every read with bounded concurrency and a time limit on ClickHouse connections of its
own (503 with Retry-After beyond; /health has its own connection and never waits for
them), and streams/web/guard.py makes every error JSON and sets the security headers.
Lists are bounded and paged (`limit`/`offset` in, `next_offset` out, null on the last
page). The limits are in README.md, "HTTP API limits".

The routes live by area: streams/web/api.py (leaderboard, explain, badges, erasures, health,
metrics), streams/web/directory.py (team boards, bridging, balance), streams/web/page.py (the
live page and what it reads); what they share is in streams/web/context.py (the worker they
read, parameters, windows) and streams/web/payloads.py (bodies); streams/web/openapi.py
describes them all (served at /openapi.json). This module registers them and keeps the
names the worker and the CLI import.
"""

from __future__ import annotations

from typing import cast

from aiohttp import web

from streams.web import auth, guard
from streams.web.api import register_api_views
from streams.web.context import WebContext, board_scope, org_window_start
from streams.web.directory import register_directory_views
from streams.web.openapi import register_openapi_view
from streams.web.page import register_page_views
from streams.web.payloads import leaderboard_payload

__all__ = [
    "WebContext",
    "board_scope",
    "leaderboard_payload",
    "org_window_start",
    "register_directory_views",
    "register_views",
]


def register_views(kudos: WebContext) -> None:
    """Every route but the directory's (`register_directory_views`), behind the guard and
    the access rules (streams/web/auth.py)."""
    app = cast(web.Application, kudos.app.web.web_app)  # type: ignore[attr-defined]
    guard.install(app, kudos.reads)
    authenticator = auth.authenticator(kudos.settings)
    auth.install(app, authenticator)
    if authenticator is not None:
        kudos.app.task(authenticator.keys.warm)
    register_api_views(kudos)
    register_page_views(kudos)
    register_openapi_view(kudos.app)
