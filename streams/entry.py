"""Entry point of the `kudos` command and of `python -m streams`.

A stop request (SIGTERM) must end the process cleanly at any moment, including while
Python is still importing faust, chdb and the rest: a supervisor that restarts a worker
and stops it a second later expects exit 0, not death by signal. So the handler is
installed here for `worker` and `up`, before anything heavy is imported; faust replaces
it with its own handlers once the worker runs. Other commands keep the default (a
`kudos produce` stopped half-way must not report success).

The other end: `streams.app.fatal()` leaves with `os._exit`, skipping every `finally` on
purpose (crash-only). What must not outlive the process (the broker `kudos up` started)
registers here with `run_on_fatal_exit`, and `fatal()` runs it first.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

_fatal_cleanups: list[Callable[[], None]] = []


def exit_during_startup(signum: int, frame: object) -> None:
    logging.getLogger("kudos").warning("stop requested during start-up (signal %d)", signum)
    raise SystemExit(0)


@contextlib.contextmanager
def run_on_fatal_exit(cleanup: Callable[[], None]) -> Iterator[None]:
    """While the block runs, `streams.app.fatal()` calls `cleanup` before its `os._exit`.

    Only for what lives outside this process, such as a child to stop: a cleanup must not
    flush, ack or commit anything of the pipeline (that is what the crash skips), and must
    be quick. The block's own `finally` covers every other exit.
    """
    _fatal_cleanups.append(cleanup)
    try:
        yield
    finally:
        _fatal_cleanups.remove(cleanup)


def run_fatal_cleanups() -> None:
    """The registered cleanups, newest first; one that fails does not stop the others."""
    for cleanup in reversed(list(_fatal_cleanups)):
        try:
            cleanup()
        except BaseException:  # the process is going down anyway: log and go on
            logging.getLogger("kudos").exception("cleanup %r failed during a crash", cleanup)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["worker"], ["up"]):
        signal.signal(signal.SIGTERM, exit_during_startup)
    from streams.cli import main as cli_main

    return cli_main(argv)
