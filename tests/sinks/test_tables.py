"""sinks/tables.py against the migrated database, on both backends (chdb 26.x,
clickhouse-server 18.16): every table's columns are the table's writable columns in order,
and every MergeTree-family table the migrations create is defined there or named below.

Writable columns: what `system.columns` lists without MATERIALIZED or ALIAS columns (an
insert cannot write those; no kudos table has one today, and one added must not appear in
sinks/tables.py). DEFAULT columns (decisions.error, score_state.decay_*) are writable and
the writers write them, so they belong to the column lists, in their table position.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sinks import tables
from sinks.clickhouse import ClickHouse
from sinks.tables import LEADER_ROWS, SCORE_STATE, Table

# kudos tables of the MergeTree family that sinks/tables.py does not define, with why.
NOT_WRITTEN_BY_THE_PIPELINE = {
    "schema_migrations": "the migration runner's bookkeeping: sinks/migrate.py creates it "
    "(it is no migration) and is its only writer",
}
_NOT_INSERTABLE = ("MATERIALIZED", "ALIAS")


def _columns(ch: ClickHouse, table: str) -> list[tuple[str, str]]:
    """(name, default kind) of `kudos.<table>` in table order."""
    # 18.16's system.columns has no `position`; both list a table's columns in order.
    rows = ch.query(
        "SELECT name, default_kind FROM system.columns WHERE database = %(db)s AND table = %(t)s",
        {"db": tables.DATABASE, "t": table},
    )
    return [(str(name), str(kind)) for name, kind in rows]


@pytest.mark.clickhouse
def test_every_table_has_the_columns_the_migrations_give_it(ch: ClickHouse) -> None:
    for table in tables.ALL:
        stored = _columns(ch, table.name)
        assert stored, table.name
        writable = tuple(name for name, kind in stored if kind not in _NOT_INSERTABLE)
        assert table.columns == writable, table.name


@pytest.mark.clickhouse
def test_every_merge_tree_table_is_defined_or_named(ch: ClickHouse) -> None:
    rows = ch.query(
        "SELECT name, engine FROM system.tables WHERE database = %(db)s",
        {"db": tables.DATABASE},
    )
    merge_trees = {str(name) for name, engine in rows if str(engine).endswith("MergeTree")}
    defined = {t.name for t in tables.ALL}
    assert merge_trees == defined | set(NOT_WRITTEN_BY_THE_PIPELINE)
    assert not defined & set(NOT_WRITTEN_BY_THE_PIPELINE)
    assert len(defined) == len(tables.ALL)


def test_leader_rows_are_the_first_columns_of_score_state() -> None:
    # write_leader_rows cuts score_state rows to leader_rows; 0009 and rebuild_org_boards
    # copy these columns by name from score_state.
    assert SCORE_STATE.columns[: len(LEADER_ROWS.columns)] == LEADER_ROWS.columns


def test_column_list_backquotes_every_column() -> None:
    assert Table("t", ("org_id", "window")).column_list() == "`org_id`, `window`"
    assert SCORE_STATE.qualified == "kudos.score_state"
    for bad in (("org id",), ("a`b",), ("a", "a"), ()):
        with pytest.raises(ValueError):
            Table("t", bad)
    with pytest.raises(ValueError):
        Table("kudos.t", ("a",))


def test_tables_imports_nothing_of_kudos_but_schemas() -> None:
    tree = ast.parse(Path(tables.__file__).read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert not imported & {"sinks", "streams", "bench", "tests", ""}, imported
