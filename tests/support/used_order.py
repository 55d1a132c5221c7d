"""Entries stored in a known order of use, as each backend can tell it (for eviction)."""

from __future__ import annotations

import os
import time
from typing import Any

CONTEXT = "tests.eviction"
PAYLOAD = b"x" * 1000


def make_used_order(store: Any, names: tuple[str, ...], reread: str) -> None:
    """Store ``names`` in order, then read ``reread`` later, as each backend can tell it."""
    for name in names:
        store.upload_file(PAYLOAD, name, CONTEXT)
    kind = type(store).__name__
    if kind == "LocalStorage":  # stored an hour ago, oldest first
        for age, name in enumerate(names):
            path = store.entry_path(name, CONTEXT)
            then = time.time() - 3600 + age
            os.utime(path, (then, then))
    elif kind == "RedisStorage":
        time.sleep(2.1)  # OBJECT IDLETIME counts whole seconds
    else:
        time.sleep(1.1)  # S3 times (LastModified of entries and use markers) are whole seconds
    found = store.open_entry(reread, CONTEXT)  # a hit's read path
    if hasattr(found, "close"):
        found.close()
