"""Worker functions for the network tests (local copies, serve-stale).

Module level, so spawned processes import them by name and a cached function
built here has the same identity in every process.  Computations are counted
with one file per run in ``log_dir``.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import numpy as np

from labcache import cached, open_storage

from .workers import computations, log_computation, wait_for_file


def numbered_array(x: int, log_dir: str) -> Any:
    """A 2 MB array whose first element is how many computations ran so far."""
    log_computation(log_dir)
    values = np.random.default_rng(x).random(256 * 1024)
    values[0] = len(computations(log_dir))
    return values


def gated_numbered(x: int, log_dir: str, gate: str, fail_flag: str = "") -> int:
    """How many computations ran so far (this one included), returned once
    the file ``gate`` exists; raises while ``fail_flag`` exists."""
    log_computation(log_dir)
    if not wait_for_file(gate):
        raise TimeoutError(f"gate {gate} never opened")
    if fail_flag and os.path.exists(fail_flag):
        raise RuntimeError("the refresh failed on purpose")
    return len(computations(log_dir))


def numbered_function(url: str) -> Any:
    return cached(storage=open_storage(url))(numbered_array)


def refresh_elsewhere(url: str, x: int, log_dir: str, queue: Any) -> None:
    """Another process (same machine, same local copy folder) refreshes an entry."""
    try:
        value = numbered_function(url).refresh(x, log_dir)
        queue.put(("refreshed", os.getpid(), float(value[0])))
    except BaseException:
        queue.put(("crash", os.getpid(), traceback.format_exc()))


def invalidate_elsewhere(url: str, x: int, log_dir: str, queue: Any) -> None:
    try:
        queue.put(("invalidated", os.getpid(), numbered_function(url).invalidate(x, log_dir)))
    except BaseException:
        queue.put(("crash", os.getpid(), traceback.format_exc()))


def stale_caller(url: str, log_dir: str, gate: str, start: str, stale_after: float,
                 queue: Any) -> None:
    """Call a stale entry once, after ``start`` appears, and report the value;
    then exit (an atexit hook finishes a refresh this process started)."""
    try:
        fn = cached(storage=open_storage(url), stale_after=stale_after)(gated_numbered)
        queue.put(("ready", os.getpid(), None))
        if not wait_for_file(start):
            raise TimeoutError("no start signal")
        queue.put(("called", os.getpid(), fn(1, log_dir, gate)))
    except BaseException:
        queue.put(("crash", os.getpid(), traceback.format_exc()))


def load_after_start(url: str, log_dir: str, start: str, queue: Any) -> None:
    """Load the numbered array (through the local copy) once ``start`` appears."""
    try:
        fn = numbered_function(url)
        fn.key(1, log_dir)  # warm: the calls below start together
        queue.put(("ready", os.getpid(), None))
        if not wait_for_file(start):
            raise TimeoutError("no start signal")
        values = [float(fn(1, log_dir)[0]) for _ in range(3)]
        queue.put(("loaded", os.getpid(), values))
    except BaseException:
        queue.put(("crash", os.getpid(), traceback.format_exc()))
