"""How long the monitor's listings take on a function with many entries.

    python benchmarks/listing.py [--entries 10000]

Fills a fresh LocalStorage (in a temp folder) with small entries of one
function, written directly with ``upload_file`` and real-looking metadata,
then prints the median time of ``summarize``, of the first ``entries_page``,
and of building the monitor widget and refreshing it (which does both and
renders the HTML).  Nothing is asserted: this is for reading.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable

from labcache import LocalStorage, entry
from labcache.jupyter import listing
from labcache.locks import this_host, this_user

CONTEXT = "experiments.features.build_features"


def fill(storage: LocalStorage, count: int) -> None:
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


def median(fn: Callable[[], object], repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    count = parser.parse_args().entries
    with tempfile.TemporaryDirectory() as root:
        storage = LocalStorage(root)
        began = time.perf_counter()
        fill(storage, count)
        print(f"filled {count} entries in {time.perf_counter() - began:.2f} s")

        def row(what: str, seconds: float) -> None:
            print(f"  {what:44s} {seconds * 1e3:9.1f} ms")

        row("describe_entries (one scandir + stats)",
            median(lambda: storage.describe_entries(CONTEXT)))
        row("summarize", median(lambda: listing.summarize(storage)))
        row("entries_page(page=0), 50 headers read",
            median(lambda: listing.entries_page(storage, CONTEXT, 0)))
        row("lock_rows (no locks)", median(lambda: listing.lock_rows(storage)))
        try:
            from labcache.jupyter.widget import Monitor
        except ImportError:
            print("  (ipywidgets not installed: widget not measured)")
            return
        began = time.perf_counter()
        panel = Monitor(storage, refresh_every=None)
        row("Monitor(...) build + first refresh", time.perf_counter() - began)
        row("Monitor.refresh() again", median(panel.refresh))
        html = panel.html()
        row("Monitor.html()", median(panel.html))
        print(f"  panel HTML: {len(html) / 1024:.0f} KiB")
        panel.close()


if __name__ == "__main__":
    main()
