"""``python -m tests.chaos``: the chaos run at full size, or for minutes (soak).

Examples (from the repository root, in the dev venv)::

    python -m tests.chaos --backend all --calls 200            # one full-size round each
    python -m tests.chaos --backend all --calls 200 --minutes 5  # rounds until 5 minutes pass

Redis needs ``redis-server`` on the PATH and S3 needs ``moto[server]``; both
are started here, on free loopback ports, and stopped at the end.  Exits 1 if
any round found a problem.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .harness import Report, Settings, run_chaos

BACKENDS = ("local", "redis", "s3")


def main(argv: list[str] | None = None) -> int:
    """Run the rounds asked for; print one line per round and the totals."""
    options = _parser().parse_args(argv)
    # The final sweep's "took over stale lock" warnings are expected: keep them quiet.
    logging.getLogger("labcache").addHandler(logging.NullHandler())
    backends = BACKENDS if options.backend == "all" else (options.backend,)
    deadline = time.monotonic() + 60 * options.minutes
    failed, rounds = False, 0
    with tempfile.TemporaryDirectory(prefix="labcache-chaos-") as scratch, \
            contextlib.ExitStack() as services:
        storages = {name: services.enter_context(_storage(name, Path(scratch)))
                    for name in backends}
        while True:
            for name, storage in storages.items():
                settings = Settings(workers=options.workers, calls=options.calls,
                                    keys=options.keys, heartbeat_interval=options.heartbeat,
                                    time_limit=options.time_limit, seed=rounds)
                folder = Path(scratch) / f"{name}-{rounds}"
                report = run_chaos(storage, folder, settings, backend=name)
                _show(report)
                failed = failed or bool(report.problems)
            rounds += 1
            if time.monotonic() >= deadline:
                break
    print(f"{rounds} round(s) on {', '.join(backends)}: "
          f"{'PROBLEMS FOUND' if failed else 'all invariants held'}")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    parser.add_argument("--workers", type=int, default=16, help="worker processes")
    parser.add_argument("--calls", type=int, default=200, help="calls per worker")
    parser.add_argument("--keys", type=int, default=20, help="distinct keys")
    parser.add_argument("--heartbeat", type=float, default=0.3,
                        help="heartbeat_interval in seconds")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="repeat rounds until this many minutes have passed (soak)")
    parser.add_argument("--time-limit", type=float, default=1800.0,
                        help="seconds one round may take before it counts as stuck")
    return parser


def _show(report: Report) -> None:
    print(report.summary(), flush=True)
    for problem in report.problems:
        print(f"  PROBLEM: {problem}", flush=True)


@contextlib.contextmanager
def _storage(name: str, scratch: Path) -> Iterator[Any]:
    """A fresh storage of backend ``name``, with its service running meanwhile."""
    if name == "local":
        from labcache import LocalStorage

        yield LocalStorage(scratch / "local-store")
    elif name == "redis":
        from labcache import RedisStorage
        from tests.services_redis import RedisServer

        folder = scratch / "redis"
        folder.mkdir()
        server = RedisServer(folder)
        server.start()
        try:
            yield RedisStorage(server.url, prefix="chaos")
        finally:
            server.stop()
    else:
        from labcache.storage.s3 import S3Storage
        from tests.services_s3 import CREDENTIALS, moto_endpoint, raw_client

        endpoint = moto_endpoint()
        bucket = f"labcache-chaos-{uuid.uuid4().hex[:12]}"
        raw_client(endpoint).create_bucket(Bucket=bucket)
        yield S3Storage(f"s3://{bucket}/chaos", endpoint_url=endpoint, **CREDENTIALS)


if __name__ == "__main__":
    os.environ.pop("LABCACHE_HOSTNAME", None)
    sys.exit(main())
