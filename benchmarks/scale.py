"""Import time, and listings of one function with 100,000 entries."""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Report, median_seconds

CONTEXT = "experiments.features.build_features"
_HEAVY = ("numpy", "ipywidgets", "redis", "boto3", "IPython", "pandas", "cloudpickle")
_IMPORT_PROBE = """
import json, sys, time
began = time.perf_counter()
import labcache
took = time.perf_counter() - began
print(json.dumps({"seconds": took, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(_HEAVY))


def import_time(report: Report) -> None:
    report.section("import labcache (fresh interpreter each time)")
    samples, heavy = [], set()
    for _ in range(9):
        out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True,
                             text=True, check=True)
        seen = json.loads(out.stdout)
        samples.append(seen["seconds"])
        heavy.update(seen["heavy"])
    seconds = statistics.median(samples)
    report.add("import", "import labcache", "labcache", seconds, "s",
               note=f"heavy modules imported: {sorted(heavy) or 'none'}")
    report.target("import labcache (s)", seconds, "<= 0.1", seconds <= 0.1)
    report.target("heavy modules imported by import labcache", len(heavy), "== 0", not heavy)


def fill(storage: Any, count: int) -> None:
    """``count`` small entries of one function, with real-looking metadata."""
    from labcache import entry
    from labcache.lock_record import this_host, this_user

    now = time.time()
    for i in range(count):
        key = secrets.token_hex(16)
        meta = {
            "function": CONTEXT, "key": key,
            "arguments": {"seed": str(i), "dataset": "'imagenet-subset'", "scale": "0.5"},
            "user": this_user(), "host": this_host(), "pid": os.getpid(),
            "python": platform.python_version(), "labcache": "0.1.0",
            "created": now - (count - i), "compute_seconds": 12.5 + i % 7,
        }
        storage.upload_file(entry.encode(i, meta), key, CONTEXT)


def _cli_seconds(url: str) -> float | None:
    command = [sys.executable, "-m", "labcache", "ls", "--storage", url, CONTEXT]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    return seconds if done.returncode == 0 else None


def listings(report: Report, storage: Any, url: str, backend: str, count: int) -> None:
    from labcache import listing

    label = f"{count:,} entries"
    figures = {
        "list_stored_files": median_seconds(lambda: storage.list_stored_files(CONTEXT), 3),
        "describe_entries": median_seconds(lambda: storage.describe_entries(CONTEXT), 3),
        "monitor: summarize": median_seconds(lambda: listing.summarize(storage), 3),
        "monitor: first page": median_seconds(
            lambda: listing.entries_page(storage, CONTEXT, 0), 3),
    }
    cli = _cli_seconds(url)
    if cli is not None:
        figures["CLI: labcache ls FUNCTION"] = cli
    for what, seconds in figures.items():
        report.add("scale", f"{backend}, {label}", what, seconds, "s")
    worst = max(figures.values())
    report.target(f"listings of {label} on {backend}, slowest (s)", worst, "< 2", worst < 2)


def scale(report: Report, quick: bool) -> None:
    from labcache import LocalStorage, RedisStorage
    from tests.support.services_redis import RedisServer

    count = 10_000 if quick else 100_000
    report.section(f"Listings of one function with {count:,} entries")
    with tempfile.TemporaryDirectory(prefix="labcache-bench-") as folder:
        root = Path(folder)
        local = LocalStorage(root / "local")
        began = time.perf_counter()
        fill(local, count)
        print(f"  (filled Local in {time.perf_counter() - began:.1f} s)")
        listings(report, local, f"file://{root / 'local'}", "Local", count)
        server = RedisServer(root)
        server.start()
        try:
            redis = RedisStorage(server.url, prefix="bench")
            began = time.perf_counter()
            fill(redis, count)
            print(f"  (filled Redis in {time.perf_counter() - began:.1f} s)")
            listings(report, redis, f"{server.url}?prefix=bench", "Redis", count)
        finally:
            server.stop()


def run(report: Report, quick: bool) -> None:
    import_time(report)
    scale(report, quick)
