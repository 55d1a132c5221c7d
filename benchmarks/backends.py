"""Per-backend numbers: waiter wake-up latency and 200 MB store/load speed.

    python -m benchmarks.backends

Starts its own redis-server and moto S3 server on free loopback ports,
like the tests do, and prints one table. S3 numbers measure moto (a Python
server in this process, one request at a time), not a real S3 service.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from labcache import LocalStorage, cached

from .processes import wake_up


def _array_result(seed: int) -> Any:
    return _ARRAY


_ARRAY = np.random.default_rng(1).random(200 * 2**20 // 8)


def throughput(storage: Any, repeat: int = 3) -> tuple[float, float]:
    """(store, load) GB/s of a 200 MB float64 array result."""
    fn = cached(storage=storage)(_array_result)
    stores, loads = [], []
    for _ in range(repeat):
        fn.invalidate(0)
        began = time.perf_counter()
        fn(0)
        stores.append(time.perf_counter() - began)
        began = time.perf_counter()
        loaded = fn(0)
        loads.append(time.perf_counter() - began)
    assert np.array_equal(loaded, _ARRAY)
    size = _ARRAY.nbytes / 1e9
    return size / statistics.median(stores), size / statistics.median(loads)


def main() -> None:
    from tests.support.services_redis import RedisServer

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        backends: dict[str, Any] = {"local": LocalStorage(root / "local")}
        redis_server = RedisServer(root)
        redis_server.start()
        from labcache import RedisStorage

        backends["redis"] = RedisStorage(redis_server.url, prefix="bench")
        try:
            from labcache import S3Storage
            from tests.support.services_s3 import CREDENTIALS, moto_endpoint, raw_client

            raw_client().create_bucket(Bucket="labcache-bench")
            backends["s3"] = S3Storage("s3://labcache-bench/b", endpoint_url=moto_endpoint(),
                                       **CREDENTIALS)
        except ImportError as exc:
            print(f"(no S3 numbers: {exc})")
        try:
            print(f"{'backend':8s} {'wake median':>12s} {'wake p95':>10s} "
                  f"{'store 200MB':>12s} {'load 200MB':>11s}")
            for name, storage in backends.items():
                median, p95 = wake_up(storage)
                stored, loaded = throughput(storage)
                print(f"{name:8s} {median * 1000:9.1f} ms {p95 * 1000:7.1f} ms "
                      f"{stored:7.2f} GB/s {loaded:6.2f} GB/s")
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()
