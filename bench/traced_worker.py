"""`python -m bench.traced_worker worker ...`: `kudos worker` with a memory sampler
(bench.memory runs it when KUDOS_BENCH_TRACE names a directory).

Every second a thread appends to `<dir>/samples.csv`: seconds, RSS, the peak (VmHWM),
the bytes pyarrow's pool holds, the Python heap that tracemalloc traces (0 without it),
the objects gc tracks. With KUDOS_BENCH_TRACEMALLOC=N (frames), tracemalloc runs from
the start and, whenever the traced heap beats its last snapshot by 5 %, the snapshot is
written to `<dir>/peak.snap` (read it with `python -m bench.traced_worker show DIR`).
tracemalloc sees Python objects and numpy buffers, not pyarrow's pool (its own column).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _sample(out: Path, snapshots: bool) -> None:
    began, best = time.monotonic(), 0
    with (out / "samples.csv").open("a") as f:
        f.write("s,rss,hwm,arrow,traced,gc_objects\n")
        while True:
            time.sleep(1.0)
            arrow = 0
            if "pyarrow" in sys.modules:
                arrow = sys.modules["pyarrow"].total_allocated_bytes()
            traced = tracemalloc.get_traced_memory()[0] if snapshots else 0
            row = (time.monotonic() - began, _status("VmRSS"), _status("VmHWM"), arrow, traced)
            f.write(",".join(f"{v:.0f}" for v in (*row, len(gc.get_objects()))) + "\n")
            f.flush()
            if snapshots and traced > best * 1.05:
                best = traced
                tracemalloc.take_snapshot().dump(str(out / "peak.tmp"))
                (out / "peak.tmp").replace(out / "peak.snap")


def show(where: Path, top: int = 40) -> None:
    snap = tracemalloc.Snapshot.load(str(where / "peak.snap"))
    stats = snap.statistics("traceback")
    total = sum(s.size for s in stats)
    print(f"traced at the largest snapshot: {total / 2**20:.0f} MB")
    for s in stats[:top]:
        print(f"{s.size / 2**20:8.1f} MB {s.count:9,d} blocks")
        for line in s.traceback.format(limit=4):
            print("        " + line.strip())


def main() -> int:
    if sys.argv[1:2] == ["show"]:
        show(Path(sys.argv[2]))
        return 0
    out = Path(os.environ["KUDOS_BENCH_TRACE"])
    out.mkdir(parents=True, exist_ok=True)
    frames = int(os.environ.get("KUDOS_BENCH_TRACEMALLOC", "0"))
    if frames:
        tracemalloc.start(frames)
    threading.Thread(target=_sample, args=(out, bool(frames)), daemon=True).start()
    from streams.entry import main as kudos

    return kudos(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
