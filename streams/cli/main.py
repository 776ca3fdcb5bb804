"""`kudos` command line: up, worker, migrate, produce, forget, leaderboard, replay,
dev-token, bi-user."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streams.cli import (
    bi_user,
    devtoken,
    forget,
    leaderboard,
    migrate,
    produce,
    replay,
    up,
    worker,
)

# In the order `kudos --help` lists them. Each module adds its subparser, whose `func`
# is its command; what a command needs beyond that is imported when it runs.
COMMANDS = (up, worker, migrate, produce, forget, leaderboard, replay, devtoken, bi_user)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kudos", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
