"""Worker processes for the CLI and eviction tests (module level: spawn imports them)."""

from __future__ import annotations

import os
import traceback
from typing import Any


def hold_lock(storage: Any, lock_name: str, queue: Any, release: Any) -> None:
    """Take ``lock_name`` with a heartbeat, report it, hold it until ``release`` is set."""
    try:
        held = storage.try_acquire_lock(lock_name, ttl=600, heartbeat_interval=1)
        queue.put(("held" if held else "lost", os.getpid(), lock_name))
        if held:
            release.wait(120)
            storage.release_lock(lock_name)
    except BaseException:
        queue.put(("crash", os.getpid(), traceback.format_exc()))
