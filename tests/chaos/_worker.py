"""What runs inside each chaos worker process.

Everything is module level so spawned processes import it by name, and the
cached function has the same identity (module, name, source) everywhere.

Two append-only logs (``O_APPEND``, one ``write`` per line, so lines from
many processes never interleave and a SIGKILL never leaves half a line):

* ``compute.log``: ``start|end <x> <pid> <seq> <monotonic time>`` around
  every run of the body, to check afterwards that no two processes computed
  one key at the same time (``CLOCK_MONOTONIC`` is one clock for the host);
* ``results/<slot>.jsonl``: one JSON line per finished call of that worker
  slot (a respawned worker goes on appending), plus takeovers and warnings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from labcache import cached

#: Set by the body when it ran in this process, read by the caller.
_ran_here = False
_sequence = 0


def expected(x: int, salt: str) -> dict[str, Any]:
    """The one correct result of ``chaos_body(x, salt, ...)``.

    Sizes differ per key, and the payload depends on both arguments, so a
    result handed to the wrong call, or a truncated one, never passes as right.
    """
    seed = hashlib.sha256(f"{salt}:{x}".encode()).digest()
    return {"x": x, "salt": salt, "payload": seed * (20 + 7 * x)}


def _append(path: str | os.PathLike[str], line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def chaos_body(x: int, salt: str, log: str, seconds: float) -> dict[str, Any]:
    """The cached computation: logs its start and end around ``seconds`` of work."""
    global _ran_here, _sequence
    _ran_here, _sequence = True, _sequence + 1
    pid = os.getpid()
    _append(log, f"start {x} {pid} {_sequence} {time.monotonic():.6f}\n")
    time.sleep(seconds)
    value = expected(x, salt)
    _append(log, f"end {x} {pid} {_sequence} {time.monotonic():.6f}\n")
    return value


def chaos_function(storage: Any, heartbeat_interval: float) -> Any:
    """``chaos_body`` cached as every process builds it."""
    # The log path and the work time ride along; the key is (x, salt) alone.
    return cached(storage=storage, ttl=3600, heartbeat_interval=heartbeat_interval,
                  wait_timeout=120, ignore=("log", "seconds"))(chaos_body)


class _Takeovers(logging.Handler):
    """Writes a result line for each "took over stale lock" the protocol logs."""

    def __init__(self, results: str) -> None:
        super().__init__(logging.WARNING)
        self.results = results

    def emit(self, record: logging.LogRecord) -> None:
        if "took over stale lock" in record.getMessage():
            _append(self.results, json.dumps({"op": "takeover", "pid": os.getpid()}) + "\n")


def run_worker(storage: Any, folder: str, slot: int, calls: int, seed: int, keys: int,
               salt: str, heartbeat_interval: float, host: str | None,
               invalidate_share: float) -> None:
    """Make ``calls`` random calls (or invalidations) and log each outcome."""
    global _ran_here
    results = os.path.join(folder, "results", f"{slot}.jsonl")
    try:
        if host is not None:  # another "host": only missed beats show it died
            os.environ["LABCACHE_HOSTNAME"] = host
        logging.getLogger("labcache").addHandler(_Takeovers(results))
        f = chaos_function(storage, heartbeat_interval)
        log, rng = os.path.join(folder, "compute.log"), random.Random(seed)
        for _ in range(calls):
            x = rng.randrange(keys)
            if rng.random() < invalidate_share:
                f.invalidate(x, salt, log, 0.0)
                _append(results, json.dumps({"op": "invalidate", "x": x}) + "\n")
                continue
            work = rng.uniform(0.1, 0.5)
            _ran_here, began = False, time.monotonic()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = f(x, salt, log, work)
            line = {"op": "call", "x": x, "ok": value == expected(x, salt),
                    "computed": _ran_here, "seconds": time.monotonic() - began,
                    "warnings": [str(w.message) for w in caught]}
            _append(results, json.dumps(line) + "\n")
            time.sleep(rng.uniform(0, 0.02))
    except BaseException:
        _append(results, json.dumps({"op": "crash", "trace": traceback.format_exc()}) + "\n")
        raise


def read_results(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every result line of every slot."""
    lines = []
    for path in sorted(Path(folder, "results").glob("*.jsonl")):
        for text in path.read_text().splitlines():
            lines.append(json.loads(text))
    return lines
