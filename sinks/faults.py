"""Fault injection for the fault-tolerance tests: a ClickHouse that can be switched off.

With `KUDOS_FAULT_FILE` set, every call fails with `ClickHouseUnavailable` while that file
exists. It is how the tests take chdb away (it has no server process to stop); against a
server the tests stop the real process instead. Unset, nothing is wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sinks.clickhouse import ClickHouse, ClickHouseUnavailable


class SwitchableClickHouse:
    def __init__(self, inner: ClickHouse, switch: Path) -> None:
        self.inner = inner
        self.switch = switch

    def _check(self) -> None:
        if self.switch.exists():
            raise ClickHouseUnavailable(f"fault injected: {self.switch} exists")

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._check()
        self.inner.execute(sql, params)

    def execute_mutation(self, sql: str, params: Mapping[str, Any]) -> None:
        self._check()
        self.inner.execute_mutation(sql, params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self._check()
        return self.inner.query(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        self._check()
        return self.inner.insert(table, columns, rows)

    def insert_columns(self, table: str, columns: Sequence[str], data: Sequence[Any]) -> int:
        self._check()
        return self.inner.insert_columns(table, columns, data)

    def close(self) -> None:
        self.inner.close()
