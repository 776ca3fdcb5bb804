"""Service processes the tests start: ending one (a signal, a wait, then SIGKILL), and the
tail of a log for a failure message."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any


def end_process(
    process: subprocess.Popen[Any] | None,
    signum: int = signal.SIGTERM,
    timeout: float = 30.0,
) -> None:
    """Send `signum` if the process still runs and wait `timeout` s; kill it if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def log_tail(path: Path, lines: int = 40) -> str | None:
    """The last `lines` lines of a log, headed by its path; None when there is no log."""
    if not path.exists():
        return None
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail)
