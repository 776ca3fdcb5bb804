"""`kudos migrate`: apply the numbered ClickHouse migrations (sinks/migrate.py)."""

from __future__ import annotations

import argparse

from streams.cli.common import log, setup_logging
from streams.settings import get_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mig = sub.add_parser("migrate", help="apply the numbered ClickHouse migrations")
    mig.add_argument(
        "--cluster",
        metavar="NAME",
        default=None,
        help="create replicated and Distributed tables ON CLUSTER NAME "
        "(see deploy/clickhouse/README.md); default: one node",
    )
    mig.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    from sinks.clickhouse import connect
    from sinks.migrate import apply_migrations

    settings = get_settings()
    setup_logging(settings)
    ch = connect(settings.clickhouse_url())
    try:
        applied = apply_migrations(ch, cluster=args.cluster)
    except ValueError as exc:  # a cluster or database this run must not touch
        log.error("%s", exc)
        return 2
    finally:
        ch.close()
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0
