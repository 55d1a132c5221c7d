"""Functions dask workers import by name (they live in their own processes)."""

from __future__ import annotations

import os
import time
import uuid

from labcache import cached


def simulate(x: int, log_dir: str) -> int:
    """One second of 'work' that leaves a file per computation."""
    with open(os.path.join(log_dir, f"{os.getpid()}-{uuid.uuid4().hex}"), "x"):
        pass
    time.sleep(1.0)
    return x * x


def cached_simulate(storage_url: str, x: int, log_dir: str) -> int:
    """What a task does: call the team's cached function."""
    return cached(storage=storage_url, ignore=("log_dir",))(simulate)(x, log_dir)
