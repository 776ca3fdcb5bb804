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

from streams.lifecycle import exit_during_startup


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["worker"], ["up"]):
        signal.signal(signal.SIGTERM, exit_during_startup)
    from streams.cli.main import main as cli_main

    return cli_main(argv)
