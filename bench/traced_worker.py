"""`python -m bench.traced_worker worker ...`: `kudos worker` with a memory sampler
(bench.memory runs it when KUDOS_BENCH_TRACE names a directory).

Every second a thread appends to `<dir>/samples.csv`: seconds, RSS, the peak (VmHWM),
the bytes pyarrow's pool holds, the Python heap that tracemalloc traces (0 without it),
the objects gc tracks. With KUDOS_BENCH_TRACEMALLOC=N (frames), tracemalloc runs from
the start and, whenever the traced heap beats its last snapshot by 5 %, the snapshot is
written to `<dir>/peak.snap` (read it with `python -m bench.traced_worker show DIR`).
tracemalloc sees Python objects and numpy buffers, not pyarrow's pool (its own column).
With KUDOS_BENCH_ARRAYS=1, every 10 s `<dir>/arrays.txt` lists the numpy buffers held,
by the class and attribute that hold them, and the largest containers they hold, at the
sample with the highest RSS so far. With KUDOS_BENCH_TRIM=1 the sampler calls glibc's
malloc_trim(0) after each sample (is the RSS free heap that glibc keeps?).
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
    trim = None
    if os.environ.get("KUDOS_BENCH_TRIM"):
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
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
            if trim is not None:
                trim(0)
            if snapshots and traced > best * 1.05:
                best = traced
                tracemalloc.take_snapshot().dump(str(out / "peak.tmp"))
                (out / "peak.tmp").replace(out / "peak.snap")


_OURS = ("streams", "sinks", "schemas")


def _holders() -> str:
    """Numpy buffers by the (class, slot or attribute) holding them; largest containers."""
    import numpy as np

    by: dict[str, int] = {}
    seen: set[int] = set()
    big: list[tuple[int, str]] = []
    for obj in gc.get_objects():
        # Only the project's objects: a library's proxy may compute, even block, when read.
        module = type(obj).__dict__.get("__module__")
        if not isinstance(module, str) or module.split(".")[0] not in _OURS:
            continue
        slots = getattr(type(obj), "__slots__", ())
        attrs = getattr(obj, "__dict__", None)
        values = [(n, getattr(obj, n, None)) for n in slots if isinstance(n, str)]
        if isinstance(attrs, dict):
            values += list(attrs.items())
        for name, value in values:
            if isinstance(value, dict | set | list) and len(value) > 10_000:
                big.append((len(value), f"{type(obj).__name__}.{name}: {len(value):,} entries"))
            if not isinstance(value, np.ndarray):
                continue
            base = value if value.base is None else value.base
            if id(base) in seen or not isinstance(base, np.ndarray):
                continue
            seen.add(id(base))
            key = f"{type(obj).__name__}.{name}"
            by[key] = by.get(key, 0) + base.nbytes
    lines = [f"{n / 2**20:9.1f} MB  {k}" for k, n in sorted(by.items(), key=lambda x: -x[1])]
    lines.append(f"{sum(by.values()) / 2**20:9.1f} MB  numpy buffers in all")
    lines += [text for _, text in sorted(big, reverse=True)[:15]]
    return "\n".join(lines[:60]) + "\n"


def _arrays(out: Path) -> None:
    best = 0
    while True:
        time.sleep(10.0)
        rss = _status("VmRSS")
        if rss > best:
            best = rss
            (out / "arrays.txt").write_text(f"RSS {rss / 2**20:.0f} MB\n" + _holders())


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
    if os.environ.get("KUDOS_BENCH_ARRAYS"):
        threading.Thread(target=_arrays, args=(out,), daemon=True).start()
    from streams.entry import main as kudos

    return kudos(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
