"""The `kudos` parser: every command, in order, and nothing heavy imported to build it."""

from __future__ import annotations

import subprocess
import sys

from streams.cli.main import build_parser


def test_the_parser_lists_every_command_in_order() -> None:
    usage = build_parser().format_usage()
    assert "{up,worker,migrate,produce,forget,leaderboard,replay,dev-token,bi-user}" in usage


def test_building_the_parser_imports_nothing_heavy() -> None:
    # Start-up speed: faust, chdb, kafka, tqdm and ClickHouse are imported by the
    # command that needs them, not by `kudos --help`.
    script = (
        "import sys\n"
        "from streams.cli.main import build_parser\n"
        "build_parser()\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split()
    heavy = ("faust", "mode", "chdb", "kafka", "aiokafka", "tqdm", "sinks")
    assert not [m for m in loaded if m.split(".")[0] in heavy]
    assert "streams.app" not in loaded and "streams.domain.replay" not in loaded
