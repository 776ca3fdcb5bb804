"""Erasing a person (`kudos forget USER --org ORG`, GDPR): what ClickHouse holds of them.

Run by the aggregating stage that owns the person, in order with its own writes (see
`streams.stages.aggregate.AggregateStage`), so nothing it loads afterwards can bring their rows
back. Every step is idempotent: a replayed forget finds nothing left to erase.

What goes, table by table:

* their window totals, leader rows, thanker sets and badges (score_state, leader_rows,
  thankers, badge_award_rows), their directory record and replay rows: deleted;
* decisions where they were the recipient: replaced by placeholders that keep the lineage
  (partition, offset, stream time) but name nobody, reason `erased`. The deciding stage
  resumes from the highest stored offset of each partition; deleting the row that holds it
  would make a restart decide that event again;
* decisions where they acted: the actor becomes an opaque token (random per erasure, not
  derived from the id); their own SHARE points are marked `erased`. Thanks and reactions
  they gave keep counting for the people who received them, whose scores do not change;
* thanker sets of other people that name them: the token instead, so others' distinct
  thanker counts stay what they were;
* value thanks (kudos.value_thanks, counted by kudos.value_scores): the rows of thanks
  they received go; where they thanked, the token instead (others' value boards and
  distinct thankers stay what they were);
* the collusion audit's reversals (kudos.reversals): those of decisions they received go
  with those decisions (recipient_id is in the sorting key, and the placeholders count for
  nobody); where they acted, the actor becomes the token, as in their decisions; every
  mention of them in a group's members becomes the token too. kudos.audits names nobody.

Not here, and documented: the input topics keep their events until retention removes them
(Kafka cannot delete a record), and recognition.badges keeps the badge messages sent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Final

from schemas.times import now_utc
from sinks.clickhouse import ClickHouse
from sinks.tables import (
    DECISIONS,
    ERASURES,
    LEADER_ROWS,
    SCORE_STATE,
    THANKERS,
    VALUE_THANKS,
    Table,
)

DATABASE: Final = "kudos"
ERASED: Final = "erased"
MUTATION_TIMEOUT_S: Final = 300.0


def new_token() -> str:
    """What replaces a person's id where a row must stay: random, unlinkable to the id."""
    return "erased:" + secrets.token_hex(8)


def _cluster_of(ch: ClickHouse, table: str) -> str | None:
    """The cluster name when `kudos.<table>` is a Distributed table (`migrate --cluster`)."""
    rows = ch.query(
        "SELECT engine, engine_full FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": DATABASE, "t": table},
    )
    if not rows or rows[0][0] != "Distributed":
        return None
    full = str(rows[0][1])
    return full[full.index("(") + 1 :].split(",")[0].strip().strip("'")


def mutate(ch: ClickHouse, table: str, action: str, params: dict[str, Any]) -> None:
    """`ALTER TABLE ... DELETE/UPDATE` on the table that holds the data, and wait for it.

    Through `ClickHouse.execute_mutation`: the server stores a mutation as text, so its
    values are written in (the one such path), and the statement must stay small."""
    cluster = _cluster_of(ch, table)
    if cluster is None:
        ch.execute_mutation(f"ALTER TABLE {DATABASE}.{table} {action}", params)
        target = table
    else:
        target = table + "_local"
        ch.execute_mutation(
            f"ALTER TABLE {DATABASE}.{target} ON CLUSTER `{cluster}` {action}", params
        )
    # A mutation runs on every replica of every shard: wait until none is left anywhere.
    sources = ["system.mutations"]
    if cluster is not None:
        sources = [
            f"remote('{host}:{int(port)}', system, mutations)"
            for host, port in ch.query(
                "SELECT host_address, port FROM system.clusters WHERE cluster = %(c)s",
                {"c": cluster},
            )
        ]
    deadline = time.monotonic() + MUTATION_TIMEOUT_S
    while True:
        pending = sum(
            int(row[0])
            for source in sources
            for row in ch.query(
                f"SELECT count() FROM {source} "
                "WHERE database = %(db)s AND table = %(t)s AND is_done = 0",
                {"db": DATABASE, "t": target},
            )
        )
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"mutation on {DATABASE}.{target} did not finish")
        time.sleep(0.05)


# The placeholder of a decision the person received (see the module docstring): these
# columns change, every other column is copied. A column added to kudos.decisions is
# copied too: if it can name or describe the person, replace it here (tests/e2e/
# test_forget.py fails when a String column still holds their id).
_PLACEHOLDER: Final = {
    "actor_id": "if(actor_id = %(user)s, %(token)s, actor_id)",
    "recipient_id": "%(token)s",
    "counted": "0",
    "reason": "%(erased)s",
    "source": "''",
    "channel": "''",
    "error": "''",
}


def _copy(table: Table, replaced: dict[str, str], where: str) -> str:
    """SQL: insert into `table` its own rows that `where` selects, every column copied
    but those of `replaced` (column -> SQL expression; values stay bound parameters)."""
    unknown = set(replaced) - set(table.columns)
    if unknown:
        raise ValueError(f"{table.name} has no column {sorted(unknown)}")
    select = ", ".join(replaced.get(c, f"`{c}`") for c in table.columns)
    return (
        f"INSERT INTO {table.qualified} ({table.column_list()}) "
        f"SELECT {select} FROM {table.qualified} WHERE {where}"
    )


def _has_table(ch: ClickHouse, table: str) -> bool:
    rows = ch.query(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": DATABASE, "t": table},
    )
    return bool(rows and int(rows[0][0]))


def erase_person(ch: ClickHouse, org: str, user: str, token: str) -> dict[str, int]:
    """Erase (org, user) from every kudos table; returns rows touched per table."""
    p = {"org": org, "user": user, "token": token, "erased": ERASED}
    touched: dict[str, int] = {}

    def count(table: str, where: str) -> int:
        rows = ch.query(f"SELECT count() FROM {DATABASE}.{table} WHERE {where}", p)
        return int(rows[0][0]) if rows else 0

    mine = "org_id = %(org)s AND user_id = %(user)s"
    tables = ("score_state", "day_scores", "leader_rows", "badge_award_rows", "directory")
    for table in (*tables, "replay_scores"):
        if not _has_table(ch, table):
            continue
        n = count(table, mine)
        if n:
            mutate(ch, table, f"DELETE WHERE {mine}", p)
        touched[table] = n

    # Thanker sets: their own go; in other people's sets they become the token.
    touched["thankers"] = _erase_from_set(ch, THANKERS, p, count)
    if _has_table(ch, VALUE_THANKS.name):
        touched[VALUE_THANKS.name] = _erase_from_set(ch, VALUE_THANKS, p, count)

    # Decisions: placeholders for what they received, the token for what they gave.
    received = "org_id = %(org)s AND recipient_id = %(user)s"
    acted = "org_id = %(org)s AND actor_id = %(user)s"
    n_received, n_acted = count("decisions", received), count("decisions", acted)
    if n_received:
        ch.execute(_copy(DECISIONS, _PLACEHOLDER, received), p)
        mutate(ch, "decisions", f"DELETE WHERE {received}", p)
    if n_acted:
        mutate(
            ch,
            "decisions",
            "UPDATE actor_id = %(token)s, counted = if(recipient_id = '', 0, counted), "
            "reason = if(recipient_id = '', %(erased)s, reason), source = '', channel = '' "
            f"WHERE {acted}",
            p,
        )
    touched["decisions"] = n_received + n_acted

    # Reversals: what they received goes; the token where they acted or were in a group.
    if _has_table(ch, "reversals"):
        named = "org_id = %(org)s AND (actor_id = %(user)s OR has(group_members, %(user)s))"
        n_received = count("reversals", received)
        if n_received:
            mutate(ch, "reversals", f"DELETE WHERE {received}", p)
        n_named = count("reversals", named)
        if n_named:
            mutate(
                ch,
                "reversals",
                "UPDATE actor_id = if(actor_id = %(user)s, %(token)s, actor_id), "
                "group_members = arrayMap(m -> if(m = %(user)s, %(token)s, m), group_members) "
                f"WHERE {named}",
                p,
            )
        touched["reversals"] = n_received + n_named
    return touched


def _erase_from_set(
    ch: ClickHouse, table: Table, p: dict[str, Any], count: Callable[[str, str], int]
) -> int:
    """A set of (..., user_id, thanker_id) rows: the person's own rows go; where they are
    the thanker, the token instead. Returns the rows touched."""
    mine = "org_id = %(org)s AND user_id = %(user)s"
    theirs = "org_id = %(org)s AND thanker_id = %(user)s"
    n_own, n_named = count(table.name, mine), count(table.name, theirs)
    if n_named:
        ch.execute(_copy(table, {"thanker_id": "%(token)s"}, theirs), p)
    if n_own or n_named:
        mutate(ch, table.name, f"DELETE WHERE {mine} OR ({theirs})", p)
    return n_own + n_named


def rebuild_org_boards(ch: ClickHouse, org: str, depth: int) -> None:
    """Copy every board's exact top `depth` of an org from score_state to leader_rows.

    After a person is erased the k-th score of a board can fall, so people ranked just
    below the old threshold may have no leader row yet (streams/domain/leaders.py): this gives
    them one, as migration 0009 does for all orgs."""
    cols = LEADER_ROWS.column_list()  # score_state has them all (sinks/tables.py)
    ch.execute(
        f"INSERT INTO {LEADER_ROWS.qualified} ({cols}) SELECT {cols} FROM "
        f"(SELECT * FROM {SCORE_STATE.qualified} FINAL WHERE org_id = %(org)s "
        "ORDER BY org_id, `window`, window_start, score DESC, user_id "
        "LIMIT %(depth)s BY org_id, `window`, window_start)",
        {"org": org, "depth": depth},
    )


def record_erasure(ch: ClickHouse, request_id: str, org: str, rows: int) -> None:
    ch.insert(ERASURES.qualified, ERASURES.columns, [(request_id, org, rows, now_utc())])


def erasure_done(ch: ClickHouse, request_id: str, org: str | None = None) -> int | None:
    """Rows touched by a finished erasure request (of `org`, when given), or None while it
    is not done."""
    in_org = " AND org_id = %(o)s" if org is not None else ""
    rows = ch.query(
        f"SELECT max(rows_touched), count() FROM {DATABASE}.erasures "
        f"WHERE request_id = %(r)s{in_org}",
        {"r": request_id, "o": org or ""},
    )
    if not rows or not int(rows[0][1]):
        return None
    return int(rows[0][0])
