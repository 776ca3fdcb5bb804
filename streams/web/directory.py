"""People and teams (the user directory, sinks/directory.py): team and department boards,
bridging thanks, give/receive balance (privacy rules: sinks/directory.py).

Each route's answer is one method of `DirectoryApi`; `register_directory_views` only maps
routes to them.
"""

from __future__ import annotations

from typing import Any, Final

from faust.web import Request, Response, View

from schemas.times import format_rfc3339
from sinks.directory import DirectoryStore
from streams.web.context import DEFAULT_TOP, MAX_TOP, WebContext, params, window_scope
from streams.web.params import Params, parse_user
from streams.web.payloads import team_board_payload

BRIDGING_LIMIT: Final = 100
MAX_BRIDGING_LIMIT: Final = 1000


class DirectoryApi:
    """One request's answer per route (what the route's view sends)."""

    def __init__(self, kudos: WebContext) -> None:
        self.directory = DirectoryStore(kudos.api_clickhouse, kudos.settings.team_min_size)
        self.reads = kudos.reads
        self.rules_for = kudos.rules_for
        self.k = self.directory.team_min_size

    async def team_board(self, q: Params) -> dict[str, Any]:
        """Groups ranked by their members' score: `top` (10, at most 1,000) from rank
        `offset` + 1."""
        org, window, start, _ = window_scope(q, self.rules_for)
        by = q.choice("by", ("team", "department"), "team")
        page = q.page(DEFAULT_TOP, MAX_TOP, name="top")
        entries = await self.reads.run(
            self.directory.team_board, org, window, start, by, page.limit + 1, page.offset
        )
        more = page.next_offset(len(entries) > page.limit)
        return team_board_payload(
            org, window, start, by, self.k, entries[: page.limit], page.offset, more
        )

    async def bridging(self, q: Params) -> dict[str, Any]:
        """Thanks across teams, per team: `limit` teams (100, at most 1,000) from `offset`."""
        org, window, start, end = window_scope(q, self.rules_for)
        page = q.page(BRIDGING_LIMIT, MAX_BRIDGING_LIMIT)
        teams = await self.reads.run(self.directory.bridging, org, start, end)
        shown = teams[page.offset : page.offset + page.limit]
        return {
            "org": org,
            "window": window,
            "window_start": format_rfc3339(start),
            "min_members": self.k,
            "limit": page.limit,
            "offset": page.offset,
            "next_offset": page.next_offset(len(teams) > page.offset + page.limit),
            "teams": [
                {
                    "team": t.team,
                    "members": t.members,
                    "given_across": t.given_across,
                    "received_across": t.received_across,
                }
                for t in shown
            ],
        }

    async def balance(self, q: Params, user: str) -> dict[str, Any]:
        """Thanks given and received; an opted-out user reads as an unknown id (zeros)."""
        user = parse_user(user)
        org, window, start, _ = window_scope(q, self.rules_for)
        found = await self.reads.run(self.directory.balance, org, window, start, user)
        return {
            "org": org,
            "window": window,
            "window_start": format_rfc3339(start),
            "user_id": found.user_id,
            "display_name": found.display_name,
            "team": found.team,
            "thanks_given": found.thanks_given,
            "thanks_received": found.thanks_received,
            "balance": found.balance,
        }


def register_directory_views(kudos: WebContext) -> None:
    """Team and department boards, bridging thanks, give/receive balance."""
    app, api = kudos.app, DirectoryApi(kudos)

    @app.page("/api/teams/leaderboard")
    class TeamBoardView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await api.team_board(params(request)))

    @app.page("/api/teams/bridging")
    class BridgingView(View):
        async def get(self, request: Request) -> Response:
            return self.json(await api.bridging(params(request)))

    @app.page("/api/users/{user}/balance")
    class BalanceView(View):
        async def get(self, request: Request, user: str) -> Response:
            return self.json(await api.balance(params(request), user))
