"""Hit overhead per call and hashing throughput, for four kinds of argument.

Every hit is checked: a twin argument that differs in one element must get
its own result (a library that keys on ``str(arg)`` would collide).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import _contenders as c
from ._common import MB, Report, interleaved_medians, median_seconds


def fingerprint(x: Any) -> float:
    """The cached body: cheap to check, different for the twin argument."""
    if isinstance(x, int):
        return float(2 * x + 1)
    if hasattr(x, "to_numpy"):
        return float(x.sum().sum())
    return float(x.sum())


def arguments(quick: bool) -> dict[str, tuple[Any, Any]]:
    """case -> (argument, a twin differing in one element)."""
    import pandas as pd

    big = (10 if quick else 100) * MB
    rng = np.random.default_rng(0)
    small_array = rng.random(MB // 8)
    big_array = rng.random(big // 8)
    frame = pd.DataFrame({f"c{i}": rng.random(big // 32) for i in range(4)})
    cases: dict[str, tuple[Any, Any]] = {"small int": (7, 8)}
    label = "10 MB" if quick else "100 MB"
    for case, value in (("1 MB ndarray", small_array), (f"{label} ndarray", big_array),
                        (f"{label} DataFrame", frame)):
        twin = value.copy()
        if hasattr(twin, "iat"):
            twin.iat[len(twin) // 2, 2] += 1.0
        else:
            twin[len(twin) // 2] += 1.0
        cases[case] = (value, twin)
    return cases


def _repeats(case: str) -> tuple[int, int]:
    if case == "small int":
        return 9, 400
    return (7, 30) if case.startswith("1 MB") else (5, 1)


def hit_overhead(report: Report, cases: dict[str, tuple[Any, Any]], root: Path) -> None:
    report.section("Hit overhead per call (ratio = contender time / labcache time)")
    for case, (value, twin) in cases.items():
        repeat, number = _repeats(case)
        calls, clears = {}, []
        for name in c.ALL:
            fn, clear = c.wrap(name, fingerprint, root / case.replace(" ", "-"))
            for argument in (value, twin, value, twin):  # misses, then checked hits
                got = fn(argument)
                if got != fingerprint(argument):
                    raise AssertionError(f"{name} returned a wrong result for {case}")
            calls[name] = lambda fn=fn, value=value: fn(value)
            clears.append(clear)
        times = interleaved_medians(calls, repeat, number)
        for clear in clears:
            clear()
        base = times[c.LABCACHE]
        for name, seconds in times.items():
            report.add("hit", case, name, seconds, "s", seconds / base)
        if case == "small int":
            report.target("hit, small int: diskcache.memoize time / labcache time",
                          times[c.DISKCACHE] / base, ">= 1.0", times[c.DISKCACHE] >= base)
            report.target("hit, small int: joblib.Memory time / labcache time",
                          times[c.JOBLIB] / base, ">= 5", times[c.JOBLIB] >= 5 * base)


# A function with dependencies, as notebook code has them: five helpers and
# two module globals, all part of its key and checked for rebinding on each hit.
OFFSET = 1.0
WEIGHTS = (1.0, 2.0, 3.0)


def _h1(x: Any) -> float:
    return float(x) + OFFSET


def _h2(x: Any) -> float:
    return _h1(x) * WEIGHTS[0]


def _h3(x: Any) -> float:
    return _h2(x) + WEIGHTS[1]


def _h4(x: Any) -> float:
    return _h3(x) - WEIGHTS[2]


def _h5(x: Any) -> float:
    return _h4(x) / 2


def with_helpers(x: Any) -> float:
    """Calls 5 user helpers and reads 2 globals."""
    return _h1(x) + _h2(x) + _h3(x) + _h4(x) + _h5(x) + OFFSET + WEIGHTS[0]


def no_dependencies(x: Any) -> float:
    return float(2 * x + 1)


def dependency_hits(report: Report, root: Path) -> None:
    """A hit on a function with helpers and globals vs diskcache and a plain hit."""
    report.section("Hit with dependencies (5 helpers, 2 globals; ratio = time / labcache's)")
    helpers, clear_helpers = c.wrap(c.LABCACHE, with_helpers, root / "deps")
    plain, clear_plain = c.wrap(c.LABCACHE, no_dependencies, root / "plain")
    disk, clear_disk = c.wrap(c.DISKCACHE, with_helpers, root / "deps-diskcache")
    for fn, body in ((helpers, with_helpers), (plain, no_dependencies), (disk, with_helpers)):
        for argument in (7, 8, 7, 8):
            if fn(argument) != body(argument):
                raise AssertionError(f"{fn} returned a wrong result")
    calls = {"labcache, 5 helpers + 2 globals": lambda: helpers(7),
             "labcache, no dependencies": lambda: plain(7),
             "diskcache.memoize, 5 helpers + 2 globals": lambda: disk(7)}
    # Many short turns: the three differ by a microsecond, less than a busy spell.
    times = interleaved_medians(calls, 31, 200)
    for clear in (clear_helpers, clear_plain, clear_disk):
        clear()
    ours = times["labcache, 5 helpers + 2 globals"]
    for name, seconds in times.items():
        report.add("hit with dependencies", "small int", name, seconds, "s", seconds / ours)
    disk_time, plain_time = times["diskcache.memoize, 5 helpers + 2 globals"], \
        times["labcache, no dependencies"]
    report.target("hit with 5 helpers + 2 globals: labcache time / diskcache.memoize time",
                  ours / disk_time, "<= 0.8", ours <= 0.8 * disk_time)
    report.target("hit with 5 helpers + 2 globals: time / labcache hit with no dependencies",
                  ours / plain_time, "<= 1.3", ours <= 1.3 * plain_time)


def hashing(report: Report, cases: dict[str, tuple[Any, Any]]) -> None:
    import blake3
    import joblib

    from labcache.keys import hash_value

    report.section("Hashing throughput (ratio = labcache speed / this speed)")
    for case, (value, _) in cases.items():
        if case == "small int":
            continue
        buffers = ([value[col].to_numpy() for col in value.columns] if hasattr(value, "columns")
                   else [value])
        size = sum(b.nbytes for b in buffers)

        def raw_xxh3(buffers: list[Any] = buffers) -> None:
            for b in buffers:
                xxhash.xxh3_128(b).digest()

        def raw_blake3(buffers: list[Any] = buffers) -> None:
            for b in buffers:
                blake3.blake3(memoryview(b).cast("B")).digest()

        speeds = {
            "labcache keys.hash_value": size / median_seconds(lambda v=value: hash_value(v), 5),
            "joblib.hash (md5)": size / median_seconds(lambda v=value: joblib.hash(v), 3),
            "raw xxh3_128 over buffers": size / median_seconds(raw_xxh3, 5),
            "raw blake3 over buffers": size / median_seconds(raw_blake3, 3),
        }
        ours = speeds["labcache keys.hash_value"]
        for name, speed in speeds.items():
            report.add("hashing", case, name, speed / 1e9, "GB/s", ours / speed)
        if case.endswith("MB ndarray") and not case.startswith("1 MB"):
            joblib_speed, raw = speeds["joblib.hash (md5)"], speeds["raw xxh3_128 over buffers"]
            report.target(f"hash {case}: labcache / joblib.hash", ours / joblib_speed, ">= 10",
                          ours >= 10 * joblib_speed)
            report.target(f"hash {case}: labcache / raw xxh3", ours / raw, ">= 0.5",
                          ours >= 0.5 * raw)


def wide_frame(report: Report) -> None:
    """A 1,000 x 10,000 float frame against the same data as one ndarray.

    The same size in both modes: the per-column cost is what is measured.
    """
    import pandas as pd

    from labcache.keys import hash_value

    report.section("Wide frame: 1,000 rows x 10,000 float columns "
                   "(ratio = ndarray time / frame time)")
    data = np.random.default_rng(3).random((1000, 10_000))
    frame = pd.DataFrame(data, columns=[f"c{i}" for i in range(data.shape[1])])
    times = interleaved_medians({"frame": lambda: hash_value(frame),
                                 "ndarray": lambda: hash_value(data)}, 7, 1)
    case = "1,000 x 10,000 frame"
    report.add("hashing", case, "labcache keys.hash_value", data.nbytes / times["frame"] / 1e9,
               "GB/s", times["ndarray"] / times["frame"])
    report.add("hashing", case, "same data as one ndarray", data.nbytes / times["ndarray"] / 1e9,
               "GB/s", 1.0)
    ratio = times["frame"] / times["ndarray"]
    report.target("hash 10,000-column frame / same data as ndarray", ratio, "<= 2", ratio <= 2)


def run(report: Report, quick: bool) -> None:
    cases = arguments(quick)
    with tempfile.TemporaryDirectory(prefix="labcache-bench-") as folder:
        hit_overhead(report, cases, Path(folder))
        dependency_hits(report, Path(folder))
    hashing(report, cases)
    wide_frame(report)
