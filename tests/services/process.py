"""Ending a service process the tests started: a signal, a wait, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
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
