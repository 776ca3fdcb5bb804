"""How a kudos process ends: crash-only exits and what must happen before them.

`fatal()` leaves with `os._exit`, skipping every `finally` on purpose (crash-only): the next
start replays from the last commit. What must not outlive the process (the broker `kudos up`
started) registers with `run_on_fatal_exit`, and `fatal()` runs it first. A stop request
during start-up (`exit_during_startup`, installed by `streams/entry.py`) exits 0.

And how a worker keeps glibc's malloc from holding freed memory: a fixed mmap threshold
(`fixed_mmap_threshold`, at start) and `release_free_heap` on a timer (streams/app.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

log = logging.getLogger("kudos")

EXIT_CRASH = 70
EXIT_BAD_INPUT = 3


def fatal(message: str, code: int) -> NoReturn:
    """Crash-only: exit at once, without acking or committing the batch in hand.

    Raising would let faust's commit loop go on committing what other batches acked, and a
    stage's later batches are already decided on the state of the failed one. Exiting here
    instead makes the next start replay from the last commit, which the stages are built to
    do without double counting.

    Before that, the cleanups registered with `run_on_fatal_exit` run: the
    broker `kudos up` started must not outlive it, and `os._exit` skips the `finally`
    that stops it otherwise. They touch no offset; whatever they raise, the exit happens.
    """
    (log.warning if code == 0 else log.critical)("%s (exit %d)", message, code)
    try:
        run_fatal_cleanups()
        logging.shutdown()
    finally:
        os._exit(code)


_fatal_cleanups: list[Callable[[], None]] = []


def exit_during_startup(signum: int, frame: object) -> None:
    log.warning("stop requested during start-up (signal %d)", signum)
    raise SystemExit(0)


@contextlib.contextmanager
def run_on_fatal_exit(cleanup: Callable[[], None]) -> Iterator[None]:
    """While the block runs, `fatal()` calls `cleanup` before its `os._exit`.

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
            log.exception("cleanup %r failed during a crash", cleanup)


# mallopt parameters (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


@functools.cache
def _glibc() -> Any | None:
    """glibc's malloc functions, or None elsewhere (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both or neither
    except (OSError, AttributeError):
        return None
    return libc


def fixed_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at 1 MiB. By default it grows to the largest block
    freed (up to 32 MiB), after which the numpy columns of each batch come from the heap
    and their holes keep it large: measured on bench/floor_memory.py, 300 MB after the
    drain instead of 226. Blocks of 1 MiB or more are then mapped and unmapped whole."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_free_heap() -> None:
    """Give the free pages inside glibc's heaps back (malloc_trim): the objects of each
    batch are freed between batches, but the heap only shrinks from its top by itself.
    bench.memory at 200k users: peak 697 -> 629 MB, after the drain 573 -> 490 MB (the
    bench's sampler trimming each second). Takes well under a millisecond."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
