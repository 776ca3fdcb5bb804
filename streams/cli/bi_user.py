"""`kudos bi-user`: print what gives one org's analysts a read-only ClickHouse user that
sees only that org's rows (sinks/tenancy.py; deploy/clickhouse/README.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from streams.cli.common import log, setup_logging
from streams.settings import get_settings

if TYPE_CHECKING:
    from sinks.tenancy import Relation

FORMATS = ("sql", "xml", "legacy-sql", "legacy-xml")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bi = sub.add_parser("bi-user", help="print a per-org read-only ClickHouse user (BI)")
    bi.add_argument("--org", required=True)
    bi.add_argument("--user", required=True, help="the ClickHouse user name, e.g. kudos_bi_acme")
    bi.add_argument(
        "--password-sha256",
        default=None,
        help="the password's SHA-256 in hex (echo -n PASSWORD | sha256sum); all but legacy-sql",
    )
    bi.add_argument(
        "--format",
        choices=FORMATS,
        default="sql",
        help="sql: statements for current ClickHouse (row policies); xml: the same as a "
        "users.d file; legacy-sql, legacy-xml: ClickHouse 18.16 (default: sql)",
    )
    bi.set_defaults(func=cmd_bi_user)


def cmd_bi_user(args: argparse.Namespace) -> int:
    """Reads the kudos tables and views from KUDOS_CLICKHOUSE, prints the statements or
    the file on stdout; changes nothing."""
    from sinks import tenancy
    from sinks.clickhouse import connect

    settings = get_settings()
    setup_logging(settings)
    try:
        tenancy.check_org(args.org)
        tenancy.check_user(args.user)
        if args.format != "legacy-sql":
            tenancy.check_sha256(args.password_sha256 or "")
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    relations: list[tenancy.Relation] = []
    if args.format != "legacy-xml":  # the only output that names no table
        ch = connect(settings.clickhouse_url())
        try:
            relations = tenancy.kudos_relations(ch)
        finally:
            ch.close()
    print(render(args.format, args.org, args.user, args.password_sha256, relations), end="")
    return 0


def render(
    fmt: str, org: str, user: str, password_sha256: str | None, relations: list[Relation]
) -> str:
    """The output of `kudos bi-user --format FMT` for these relations of `kudos`."""
    from sinks import tenancy

    hashed = password_sha256 or ""
    if fmt == "xml":
        return tenancy.users_xml(org, user, hashed, relations)
    if fmt == "legacy-xml":
        return tenancy.legacy_users_xml(user, hashed)
    if fmt == "legacy-sql":
        statements = tenancy.legacy_sql(org, user, relations)
    else:
        statements = tenancy.row_policy_sql(org, user, hashed, relations)
    return "".join(s + ";\n" for s in statements)
