"""Storing (miss) and loading (hit) a big result, and the memory each takes.

The cached body returns a prebuilt value, so a miss measures the store and
a hit the load.  The ceilings are ``np.save``/``np.load`` of the same array
and plain pickle (protocol 5) of the same DataFrame, to the same disk.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _contenders as c
from ._common import MB, Report, median_seconds

_VALUES: dict[str, Any] = {}


def big_result(case: str) -> Any:
    """The cached body: hands back the prebuilt value of ``case``."""
    return _VALUES[case]


def _values(quick: bool) -> dict[str, Any]:
    import pandas as pd

    size = (20 if quick else 200) * MB
    rng = np.random.default_rng(1)
    label = "20 MB" if quick else "200 MB"
    rows = size // 8 // 5
    frame = pd.DataFrame({"a": rng.random(rows), "b": rng.random(rows),
                          "c": rng.integers(0, 1 << 40, rows), "d": rng.random(rows),
                          "e": rng.random(rows).astype(np.float32)})
    return {f"{label} ndarray": rng.random(size // 8), f"{label} DataFrame": frame}


def _nbytes(value: Any) -> int:
    return int(value.memory_usage(index=True).sum()) if hasattr(value, "memory_usage") \
        else int(value.nbytes)


def _same(a: Any, b: Any) -> bool:
    if hasattr(a, "equals"):
        return bool(a.equals(b))
    return bool(np.array_equal(a, b))


def _store_and_load(fn: Any, clear: Any, case: str, repeat: int = 3) -> tuple[float, float]:
    stores, loads = [], []
    for _ in range(repeat):
        clear()
        began = time.perf_counter()
        fn(case)
        stores.append(time.perf_counter() - began)
        began = time.perf_counter()
        got = fn(case)
        loads.append(time.perf_counter() - began)
        if not _same(got, _VALUES[case]):
            raise AssertionError(f"{fn} loaded a wrong value for {case}")
        del got
    return sorted(stores)[repeat // 2], sorted(loads)[repeat // 2]


def _ceiling(value: Any, folder: Path) -> tuple[str, float, float]:
    if isinstance(value, np.ndarray):
        path = folder / "ceiling.npy"
        store = median_seconds(lambda: np.save(path, value), 3)
        load = median_seconds(lambda: np.load(path), 3)
        return "np.save / np.load", store, load
    path = folder / "ceiling.pkl"

    def dump() -> None:
        with open(path, "wb") as f:
            pickle.dump(value, f, protocol=5)

    def read() -> None:
        with open(path, "rb") as f:
            pickle.load(f)

    return "pickle protocol 5 file", median_seconds(dump, 3), median_seconds(read, 3)


def _back_memory(nbytes: int) -> None:
    """Touch ``nbytes`` of fresh memory once and free it.

    On a virtual machine, memory the guest has never used is backed by the
    host on its first touch, which made whichever contender first allocated
    a big buffer up to 8x slower (measured: a first 200 MB load at 0.36 GB/s,
    the next ones at 2.8, the same for ``np.load``).  Touching it beforehand
    measures every contender against memory that is already there.
    """
    np.ones(nbytes, dtype=np.uint8)


def speeds(report: Report, quick: bool, root: Path) -> None:
    report.section("Big results: store (miss) and load (hit), GB/s "
                   "(ratio = labcache speed / this speed)")
    _back_memory(4 * max(_nbytes(value) for value in _VALUES.values()))
    for case, value in _VALUES.items():
        size = _nbytes(value) / 1e9
        rows: dict[str, tuple[float, float]] = {}
        for name in (c.LABCACHE, c.JOBLIB, c.DISKCACHE, c.CACHIER):
            fn, clear = c.wrap(name, big_result, root / name)
            rows[name] = _store_and_load(fn, clear, case)
            clear()
        mapped, clear = c.wrap(c.LABCACHE, big_result, root / "mmap", mmap_mode="r")
        rows["labcache mmap_mode='r'"] = _store_and_load(mapped, clear, case)
        clear()
        ceiling, store, load = _ceiling(value, root)
        rows[ceiling] = (store, load)
        ours_store, ours_load = rows[c.LABCACHE]
        for name, (store, _) in rows.items():
            report.add("store", case, name, size / store, "GB/s", store / ours_store)
        for name, (_, load) in rows.items():
            report.add("load", case, name, size / load, "GB/s", load / ours_load)
        if case.endswith("ndarray"):
            store_c, load_c = rows[ceiling]
            report.target(f"store {case}: labcache speed / np.save", store_c / ours_store,
                          ">= 0.8", store_c >= 0.8 * ours_store)
            report.target(f"load {case}: labcache speed / np.load", load_c / ours_load,
                          ">= 0.8", load_c >= 0.8 * ours_load)


_MEMORY_PROBE = r"""
import json, sys
import numpy as np
from labcache import LocalStorage, cached
import benchmarks.results as r

def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

def reset_peak():
    # Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")

folder, size, step = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# The load step runs without _VALUES filled: key on the name only, not the globals.
fn = cached(storage=LocalStorage(folder), code_changes="keep")(r.big_result)
if step == "store":
    r._VALUES["x"] = np.random.default_rng(2).random(size // 8)
    before = reset_peak()
    fn("x")
else:
    before = reset_peak()
    value = fn("x")
    assert value.nbytes == size
print(json.dumps({"before": before, "after": status_mb("VmHWM")}))
"""


def memory(report: Report, quick: bool, root: Path) -> None:
    """Peak memory beyond the value itself, each step in a fresh process."""
    report.section("Memory peak beyond the value itself (fresh process per step)")
    size = (20 if quick else 200) * MB
    folder = str(root / "memory")
    extra = {}
    for step in ("store", "load"):
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, folder, str(size), step],
                             capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        grown = seen["after"] - seen["before"]
        # A load's growth includes the loaded value itself: count only what is beyond it.
        extra[step] = grown - (size / MB if step == "load" else 0)
        report.add("memory", f"{size // MB} MB ndarray", f"labcache {step}", extra[step], "MB",
                   note=f"extra copies: {extra[step] / (size / MB):.2f}")
        doing = {"store": "storing", "load": "loading"}[step]
        report.target(f"memory: extra copies of the value while {doing}",
                      extra[step] / (size / MB), "<= 1", extra[step] <= size / MB)


def run(report: Report, quick: bool) -> None:
    _VALUES.clear()
    _VALUES.update(_values(quick))
    with tempfile.TemporaryDirectory(prefix="labcache-bench-") as folder:
        speeds(report, quick, Path(folder))
        memory(report, quick, Path(folder))
    _VALUES.clear()
