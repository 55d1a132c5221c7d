"""A worker that keeps a storage busy: entries and a lock appear and vanish.

Module level so spawned processes import it by name (see tests/support/procs.py).
"""

from __future__ import annotations

import traceback
from typing import Any

#: Cycles the churn finishes before it tells the test it is running.
WARM_UP = 20
#: How many entries and locks of the churn exist at once.
WINDOW = 16


def churn(storage: Any, context: str, stop: Any, running: Any, report: Any) -> None:
    """Store entries in ``context`` and take locks, each removed again
    ``WINDOW`` cycles later, until ``stop`` is set (then remove the rest);
    ``running`` is set once it churns.  Many short-lived files at once give
    a listing many chances to meet one vanishing under it."""
    cycle = 0
    try:
        while not stop.is_set():
            storage.upload_file(b"x" * 64, f"churn{cycle}", context)
            storage.try_acquire_lock(f"churn-lock{cycle}", ttl=60)
            if cycle >= WINDOW:
                storage.delete_file(f"churn{cycle - WINDOW}", context)
                storage.release_lock(f"churn-lock{cycle - WINDOW}")
            cycle += 1
            if cycle == WARM_UP:
                running.set()
        for old in range(max(cycle - WINDOW, 0), cycle):
            storage.delete_file(f"churn{old}", context)
            storage.release_lock(f"churn-lock{old}")
        report.put(("done", cycle, None))
    except BaseException:
        report.put(("crash", cycle, traceback.format_exc()))
        raise
