"""Runs the `kudos` command as a user does: a subprocess of `python -m streams`."""

from __future__ import annotations

import os
import subprocess
import sys

KUDOS = [sys.executable, "-m", "streams"]


def run_kudos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUDOS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
