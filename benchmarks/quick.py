"""Quick comparison with joblib.Memory (and diskcache when installed).

    python benchmarks/quick.py

Prints medians and ratios measured in this one run: hit overhead for a
small int argument, hashing a 100 MB array, storing / loading a 200 MB
array result, and how fast a waiting process notices the holder finished.
The full suite (issue 5) will live beside this file.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xxhash

from labcache import LocalStorage, cached
from labcache.keys import hash_value


def median_seconds(fn: Callable[[], object], repeat: int, number: int = 1) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - began) / number)
    return statistics.median(samples)


def row(name: str, seconds: float, base: float | None = None, unit: str = "") -> None:
    ratio = f"{base / seconds:8.2f}x" if base else ""
    print(f"  {name:34s} {seconds * 1e6:12.1f} µs {unit:>12s} {ratio}")


def hit_overhead(root: Path) -> None:
    import joblib

    print("hit overhead, small int argument (µs per call; ratio = joblib / this)")

    def body(x):
        return x + 1

    ours = cached(storage=LocalStorage(root / "labcache"))(body)
    theirs = joblib.Memory(root / "joblib", verbose=0).cache(body)
    ours(1), theirs(1)
    joblib_time = median_seconds(lambda: theirs(1), repeat=7, number=300)
    row("joblib.Memory", joblib_time, joblib_time)
    try:
        import diskcache

        dc = diskcache.Cache(str(root / "diskcache")).memoize()(body)
        dc(1)
        row("diskcache.memoize", median_seconds(lambda: dc(1), 7, 300), joblib_time)
    except ImportError:
        pass
    row("labcache", median_seconds(lambda: ours(1), repeat=7, number=300), joblib_time)
    assert ours(1) == 2


def hashing() -> None:
    import joblib

    array = np.random.default_rng(0).random(100 * 2**20 // 8)
    size = array.nbytes
    print("\nhashing a 100 MB float64 array (GB/s; ratio = this / joblib.hash)")
    raw = median_seconds(lambda: xxhash.xxh3_128(array).digest(), 5)
    theirs = median_seconds(lambda: joblib.hash(array), 3)
    ours = median_seconds(lambda: hash_value(array), 5)
    for name, seconds in (("xxh3_128 over the buffer", raw), ("joblib.hash", theirs),
                          ("labcache keys.hash_value", ours)):
        print(f"  {name:34s} {size / seconds / 1e9:8.2f} GB/s {theirs / seconds:8.2f}x")


def big_result(root: Path) -> None:
    import joblib

    array = np.random.default_rng(1).random(200 * 2**20 // 8)
    size = array.nbytes
    print("\nstore / load a 200 MB array result (GB/s; ratio = this / np.save|np.load)")

    def make(seed):
        return array

    npy = root / "raw.npy"
    save = median_seconds(lambda: np.save(npy, array), 3)
    load = median_seconds(lambda: np.load(npy), 5)
    ours = cached(storage=LocalStorage(root / "labcache-big"))(make)
    theirs = joblib.Memory(root / "joblib-big", verbose=0).cache(make)

    def store_ours():
        ours.invalidate(0)
        ours(0)

    def store_theirs():
        theirs.clear(warn=False)
        theirs(0)

    results = [
        ("np.save / np.load", save, load),
        ("joblib.Memory", median_seconds(store_theirs, 3), median_seconds(lambda: theirs(0), 5)),
        ("labcache", median_seconds(store_ours, 3), median_seconds(lambda: ours(0), 5)),
    ]
    for name, stored, loaded in results:
        print(f"  {name:20s} store {size / stored / 1e9:6.2f} GB/s ({save / stored:4.2f}x)"
              f"   load {size / loaded / 1e9:6.2f} GB/s ({load / loaded:4.2f}x)")
    assert np.array_equal(ours(0), array)


def _hold(root: str, trial: int, ready: object) -> float:
    fn = cached(storage=LocalStorage(root))(_slow_identity)
    ready.wait()  # type: ignore[attr-defined]
    fn(trial)
    return time.time()  # the lock is released when the call returns


def _wait(root: str, trial: int, ready: object) -> float:
    fn = cached(storage=LocalStorage(root))(_slow_identity)
    ready.wait()  # type: ignore[attr-defined]
    time.sleep(0.1)  # let the holder win the lock
    fn(trial)
    return time.time()


def _slow_identity(x: int) -> int:
    # A random length, so the waiter's polls fall anywhere relative to the end.
    time.sleep(0.3 + random.random() * 0.2)
    return x


def wake_up(root: Path, trials: int = 20) -> None:
    """Holder finishes -> waiter returns, two real processes per trial."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    delays = []
    with context.Manager() as manager, context.Pool(2) as pool:
        for trial in range(trials):
            ready = manager.Barrier(2)
            held = pool.apply_async(_hold, (str(root / "wake"), trial, ready))
            waited = pool.apply_async(_wait, (str(root / "wake"), trial, ready))
            delays.append(waited.get(30) - held.get(30))
    delays.sort()
    p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
    print(f"\nwaiter wake-up after the holder returns, LocalStorage ({trials} trials)")
    print(f"  median {statistics.median(delays) * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        hit_overhead(root)
        hashing()
        big_result(root)
        wake_up(root)


if __name__ == "__main__":
    main()
