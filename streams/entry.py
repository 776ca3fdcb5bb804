"""Entry point of the `kudos` command and of `python -m streams`.

A stop request (SIGTERM) must end the process cleanly at any moment, including while
Python is still importing faust, chdb and the rest: a supervisor that restarts a worker
and stops it a second later expects exit 0, not death by signal. So the handler is
installed here for `worker` and `up`, before anything heavy is imported; faust replaces
it with its own handlers once the worker runs. Other commands keep the default (a
`kudos produce` stopped half-way must not report success).

The other end, how a process leaves (`fatal()`, `run_on_fatal_exit`), is
`streams/lifecycle.py`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from streams.lifecycle import exit_during_startup, fixed_mmap_threshold


class _NoPandas:
    """A meta path finder that refuses pandas (arrow_without_pandas)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is not imported by the worker")


def arrow_without_pandas() -> None:
    """Let pyarrow conclude, once, that pandas is absent: its first `pa.array` of a list
    (the shim, and C++'s type inference) imports pandas otherwise, ~50 MB that a worker
    never uses. Afterwards pandas imports as usual (pyarrow's `to_pandas` still imports
    it when called); only pyarrow's checks for pandas objects in lists stay off."""
    if "pandas" in sys.modules:
        return
    block = _NoPandas()
    sys.meta_path.insert(0, block)
    try:
        import pyarrow as pa

        pa.array([], pa.string())
        pa.array(["", None])
    finally:
        sys.meta_path.remove(block)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["worker"], ["up"]):
        signal.signal(signal.SIGTERM, exit_during_startup)
        fixed_mmap_threshold()
        arrow_without_pandas()
    from streams.cli.main import main as cli_main

    return cli_main(argv)
