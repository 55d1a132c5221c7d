"""Team scale over the network: local copies, compression, serve-stale, S3 speed.

    python -m benchmarks.network            # this section alone (~2 min)
    python -m benchmarks --only network

Starts its own redis-server and moto S3 server on free loopback ports, as the
tests do.  Loopback is far faster than a real network, so compression shows
its cost here and its gain only in bytes; the local copy's gain is a lower
bound (a real network makes a fetch slower, not the copy).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._common import MB, Report

_VALUES: dict[str, Any] = {}


def value_of(case: str) -> Any:
    """The cached body: hands back the prebuilt value of ``case``."""
    return _VALUES[case]


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


@contextlib.contextmanager
def services(root: Path) -> Iterator[dict[str, Any]]:
    """A redis-server and the moto S3 server: ``{"redis": url, "s3": (url, options)}``."""
    from tests.support.services_redis import RedisServer
    from tests.support.services_s3 import CREDENTIALS, moto_endpoint, raw_client

    server = RedisServer(root)
    server.start()
    raw_client().create_bucket(Bucket="labcache-network")
    try:
        yield {"redis": server.url,
               "s3": ("s3://labcache-network/b", dict(endpoint_url=moto_endpoint(),
                                                      **CREDENTIALS))}
    finally:
        server.stop()


def _storage(kind: str, where: dict[str, Any], **options: Any) -> Any:
    import xxhash

    from labcache import RedisStorage, S3Storage

    name = "bench" + xxhash.xxh3_64_hexdigest(repr(sorted(options.items())).encode())[:8]
    if kind == "redis":  # each configuration its own entries
        return RedisStorage(where["redis"], prefix=name, **options)
    url, client = where["s3"]
    return S3Storage(f"{url}/{name}", **client, **options)


# -- repeat hits with a local copy ---------------------------------------------------


def repeat_hits(report: Report, quick: bool, root: Path, where: dict[str, Any]) -> None:
    from labcache import LocalStorage, cached

    size = (8 if quick else 64) * MB
    report.section(f"Repeat hit of a {size // MB} MB entry: local copy vs none "
                   "(ratio = time without copy / this time)")
    _VALUES["hit"] = np.random.default_rng(3).random(size // 8)
    hits = {"LocalStorage": cached(storage=LocalStorage(root / "local"))(value_of)}
    for kind in ("redis", "s3"):
        hits[f"{kind}, no copy"] = cached(storage=_storage(kind, where))(value_of)
        hits[f"{kind}, local copy"] = cached(storage=_storage(
            kind, where, local_copy=root / f"copy-{kind}"))(value_of)
    for fn in hits.values():
        fn("hit")  # stored (by the first), then fetched once and kept
        fn("hit")
    # Interleaved rounds: the machine's noise falls on every contender alike.
    times: dict[str, list[float]] = {name: [] for name in hits}
    for _ in range(9):
        for name, fn in hits.items():
            began = time.perf_counter()
            fn("hit")
            times[name].append(time.perf_counter() - began)
    median = {name: statistics.median(spent) for name, spent in times.items()}
    local_time = median["LocalStorage"]
    report.add("repeat hit", f"{size // MB} MB ndarray", "LocalStorage", local_time, "s")
    for kind in ("redis", "s3"):
        plain_time, copy_time = median[f"{kind}, no copy"], median[f"{kind}, local copy"]
        report.add("repeat hit", f"{size // MB} MB ndarray", f"{kind}, no copy", plain_time,
                   "s", 1.0)
        report.add("repeat hit", f"{size // MB} MB ndarray", f"{kind}, local copy", copy_time,
                   "s", plain_time / copy_time, f"{copy_time / local_time:.2f}x a local hit")
        report.target(f"repeat hit {kind}: no copy / local copy", plain_time / copy_time,
                      ">= 5", plain_time >= 5 * copy_time)
        report.target(f"repeat hit {kind}: local copy / LocalStorage", copy_time / local_time,
                      "<= 1.5", copy_time <= 1.5 * local_time)
    _VALUES.pop("hit")


# -- compression ----------------------------------------------------------------------


def compressible_frame(rows: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(4)
    return pd.DataFrame({
        "city": rng.choice(["Berlin", "Paris", "Madrid", "Lisbon", "Rome"], rows),
        "kind": pd.Categorical(rng.choice(["train", "test", "holdout"], rows)),
        "count": rng.integers(0, 100, rows),
        "label": [f"item-{i % 1000}" for i in range(rows)],
    })


def _stored_bytes(storage: Any, key: str, context: str) -> int:
    return next(stat.size for stat in storage.describe_entries(context) if stat.name == key)


def compression(report: Report, quick: bool, root: Path, where: dict[str, Any]) -> None:
    from labcache import cached, entry

    report.section("Compression on the wire: bytes stored, store and load time "
                   "(ratio = uncompressed / compressed)")
    rows = 200_000 if quick else 2_000_000
    cases = {"DataFrame, repetitive": compressible_frame(rows),
             "random float64": np.random.default_rng(5).random(rows * 4)}
    for case, value in cases.items():
        _VALUES[case] = value
        size = entry.encode(value, {}).size
        for kind in ("redis", "s3"):
            figures = {}
            for compress in (False, True):
                fn = cached(storage=_storage(kind, where, compress=compress))(value_of)
                fn.invalidate(case)
                store = _median(lambda fn=fn, case=case: (fn.invalidate(case), fn(case)), 3)
                load = _median(lambda fn=fn, case=case: fn(case), 3)
                stored = _stored_bytes(fn.storage, fn.key(case), fn.context)
                figures[compress] = (stored, store, load)
            (raw_bytes, raw_store, raw_load), (packed, store, load) = figures[False], figures[True]
            label = f"{case} ({size / MB:.0f} MB)"
            report.add("compression", label, f"{kind} bytes, compress=False", raw_bytes, "B")
            report.add("compression", label, f"{kind} bytes, compress=True", packed, "B",
                       raw_bytes / packed)
            report.add("compression", label, f"{kind} store, compressed", store, "s",
                       raw_store / store, f"uncompressed {raw_store:.3f} s")
            report.add("compression", label, f"{kind} load, compressed", load, "s",
                       raw_load / load, f"uncompressed {raw_load:.3f} s")
            if case.startswith("DataFrame"):
                report.target(f"compression {kind}: DataFrame bytes shrink", raw_bytes / packed,
                              ">= 4", raw_bytes >= 4 * packed)
            else:
                report.target(f"compression {kind}: floats stored as they are",
                              packed / raw_bytes, "<= 1.001", packed <= raw_bytes * 1.001)
        _VALUES.pop(case)


# -- serve stale ---------------------------------------------------------------------------


def slow_refresh(x: int, log_dir: str, seconds: float) -> int:
    """The body of the serve-stale figure: counts its runs, takes ``seconds``."""
    path = Path(log_dir) / f"{os.getpid()}-{time.time_ns()}"
    path.touch()
    time.sleep(seconds)
    return len(list(Path(log_dir).iterdir()))


def _stale_caller(url: str, log_dir: str, start: str, stale_after: float, seconds: float,
                  queue: Any) -> None:
    from labcache import cached

    fn = cached(storage=url, stale_after=stale_after)(slow_refresh)
    # Warm up what a long-lived kernel already has: imports, the function's
    # identity, a connection; the figure is the call, not the process start.
    import labcache._stale  # noqa: F401

    fn.key(1, log_dir, seconds)
    fn.storage.client.ping()
    queue.put("ready")
    while not os.path.exists(start):
        time.sleep(0.001)
    began = time.perf_counter()
    fn(1, log_dir, seconds)
    queue.put(time.perf_counter() - began)


def serve_stale(report: Report, quick: bool, root: Path, where: dict[str, Any]) -> None:
    from labcache import cached

    report.section("Serve stale: 8 processes call a stale entry while it refreshes")
    url, log_dir, start = where["redis"], root / "stale-log", root / "stale-start"
    log_dir.mkdir()
    stale_after, seconds = 1.0, 3.0
    fn = cached(storage=url, stale_after=stale_after)(slow_refresh)
    fn(1, str(log_dir), seconds)  # the first computation (counted)
    hit = _median(lambda: cached(storage=url)(slow_refresh)(1, str(log_dir), seconds), 5)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_stale_caller, args=(
        url, str(log_dir), str(start), stale_after, seconds, queue)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for _ in workers:
        queue.get(timeout=120)
    time.sleep(stale_after)  # the entry is now stale
    start.touch()
    calls = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(120)
    refreshes = len(list(log_dir.iterdir())) - 1
    report.add("serve stale", "8 callers, 3 s refresh", "slowest call", max(calls), "s",
               note=f"median {statistics.median(calls):.4f} s; a plain hit {hit:.4f} s")
    report.add("serve stale", "8 callers, 3 s refresh", "refresh computations", refreshes, "")
    report.target("serve stale: slowest of 8 calls - a hit (s)", max(calls) - hit, "< 0.1",
                  max(calls) < 0.1 + hit)
    report.target("serve stale: refresh computations", refreshes, "== 1", refreshes == 1)


# -- S3 throughput against boto3 -------------------------------------------------------------


def s3_throughput(report: Report, quick: bool, root: Path, where: dict[str, Any]) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig

    from labcache import cached

    size = (20 if quick else 200) * MB
    report.section(f"S3: store and load of a {size // MB} MB array, labcache vs boto3 "
                   "(ratio = labcache speed / boto3 speed)")
    _VALUES["s3"] = array = np.random.default_rng(6).random(size // 8)
    client_options = where["s3"][1]
    fn = cached(storage=_storage("s3", where, compress=False))(value_of)
    store = _median(lambda: (fn.invalidate("s3"), fn("s3")), 3)
    load = _median(lambda: fn("s3"), 3)
    client = boto3.client("s3", **client_options)
    config = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB,
                            max_concurrency=4)
    data = array.tobytes()

    def upload() -> None:
        client.upload_fileobj(io.BytesIO(data), "labcache-network", "boto3/array",
                              Config=config)

    def download() -> None:
        target = io.BytesIO()
        client.download_fileobj("labcache-network", "boto3/array", target, Config=config)

    boto_store = _median(upload, 3)
    boto_load = _median(download, 3)
    gb = size / 1e9
    for name, ours, theirs in (("store", store, boto_store), ("load", load, boto_load)):
        report.add("s3 throughput", f"{size // MB} MB ndarray", f"labcache {name}", gb / ours,
                   "GB/s", theirs / ours)
        report.add("s3 throughput", f"{size // MB} MB ndarray", f"boto3 {name}_fileobj",
                   gb / theirs, "GB/s")
        report.target(f"s3 {name}: labcache speed / boto3", theirs / ours, ">= 0.8",
                      theirs >= 0.8 * ours)
    _VALUES.pop("s3")


def run(report: Report, quick: bool) -> None:
    import importlib.util
    import shutil

    missing = [name for name in ("redis", "boto3", "moto", "zstandard", "pandas")
               if importlib.util.find_spec(name) is None]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if missing:
        report.section(f"Network: skipped, needs {', '.join(missing)}")
        return
    with tempfile.TemporaryDirectory(prefix="labcache-network-") as folder, \
            services(Path(folder)) as where:
        for part in (repeat_hits, compression, serve_stale, s3_throughput):
            part(report, quick, Path(folder), where)


def main() -> None:
    import sys

    report = Report()
    run(report, "--quick" in sys.argv)
    report.print_targets()


if __name__ == "__main__":
    # Through the module's own name, so spawned callers share the functions' keys.
    from benchmarks import network

    network.main()
