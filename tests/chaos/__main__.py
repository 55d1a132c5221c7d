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
from collections.abc import Callable, Iterator
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
    totals = {name: Report(f"{name} (all rounds)") for name in backends}
    with tempfile.TemporaryDirectory(prefix="labcache-chaos-") as scratch, \
            contextlib.ExitStack() as services:
        # Each round gets a fresh storage (folder, key prefix) on the same service.
        makers = {name: services.enter_context(_storages(name, Path(scratch)))
                  for name in backends}
        while True:
            for name, make in makers.items():
                settings = Settings(workers=options.workers, calls=options.calls,
                                    keys=options.keys, heartbeat_interval=options.heartbeat,
                                    time_limit=options.time_limit, seed=rounds)
                folder = Path(scratch) / f"{name}-{rounds}"
                report = run_chaos(make(rounds), folder, settings, backend=name)
                _show(report)
                _add(totals[name], report)
                failed = failed or bool(report.problems)
            rounds += 1
            if time.monotonic() >= deadline:
                break
    if rounds > 1:
        for total in totals.values():
            print(total.summary())
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


def _add(total: Report, report: Report) -> None:
    for name in ("calls", "invalidations", "computations", "kills", "kills_mid_compute",
                 "takeovers", "respawns", "seconds"):
        setattr(total, name, getattr(total, name) + getattr(report, name))
    total.max_wait = max(total.max_wait, report.max_wait)
    total.problems += report.problems


def _show(report: Report) -> None:
    print(report.summary(), flush=True)
    for problem in report.problems:
        print(f"  PROBLEM: {problem}", flush=True)


@contextlib.contextmanager
def _storages(name: str, scratch: Path) -> Iterator[Callable[[int], Any]]:
    """``round -> a fresh storage`` of backend ``name``; its service runs meanwhile."""
    if name == "local":
        from labcache import LocalStorage

        yield lambda round_: LocalStorage(scratch / f"local-store-{round_}")
    elif name == "redis":
        from labcache import RedisStorage
        from tests.support.services_redis import RedisServer

        folder = scratch / "redis"
        folder.mkdir()
        server = RedisServer(folder)
        server.start()
        try:
            yield lambda round_: RedisStorage(server.url, prefix=f"chaos{round_}")
        finally:
            server.stop()
    else:
        from labcache.storage.s3 import S3Storage
        from tests.support.services_s3 import CREDENTIALS, moto_endpoint, raw_client

        endpoint = moto_endpoint()
        bucket = f"labcache-chaos-{uuid.uuid4().hex[:12]}"
        raw_client(endpoint).create_bucket(Bucket=bucket)
        yield lambda round_: S3Storage(f"s3://{bucket}/chaos{round_}", endpoint_url=endpoint,
                                       **CREDENTIALS)


if __name__ == "__main__":
    os.environ.pop("LABCACHE_HOSTNAME", None)
    sys.exit(main())
