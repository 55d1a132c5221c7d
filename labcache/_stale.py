"""Serve a stale entry at once while one caller refreshes it in the background.

``@cached(stale_after=SECONDS)``: a hit on an entry older than
``stale_after`` returns that entry to every caller at once.  Each such
caller tries the key's lock *without waiting*; the one that wins (the
"refresher") recomputes in a background thread and replaces the entry,
then releases the lock.  The others see the lock held and return at once.

* After winning, the refresher looks at the entry's age again: a refresh
  that finished just before (its lock already released) is not repeated.
* A refresh that fails keeps the old entry and warns (``CacheWarning``).
* The thread is a daemon; an ``atexit`` hook waits for refreshes still
  running, so a short script finishes its refresh before it exits.  A
  process killed while refreshing leaves its lock to go stale (missed
  heartbeats, or a dead pid on the same host); the next caller of the
  stale entry then refreshes it.
* ``async def`` functions are refreshed in the same kind of thread, on an
  event loop of its own (``asyncio.run``), so the refresh outlives the
  caller's loop and is awaited at exit like the others.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from .base import BaseLockingStorage
from .call import Call
from .errors import CacheWarning
from .lock_record import this_host, this_user
from .protocol import refresh_holding
from .report import Reporter

__all__ = ["refresh_if_won", "running_refreshes", "wait_for_refreshes"]

logger = logging.getLogger("labcache")

_guard = threading.Lock()
_running: dict[tuple[int, str], threading.Thread] = {}


def refresh_if_won(call: Call, func: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], is_async: bool = False) -> bool:
    """Start refreshing ``call``'s stale entry in the background if this
    caller wins its lock; never waits.  Returns True if this caller refreshes."""
    storage, name = call.storage, call.lock_name
    slot = (id(storage), name)
    with _guard:
        if slot in _running:  # this process refreshes it already
            return False
    if isinstance(storage, BaseLockingStorage) and not storage.try_acquire_lock(
            name, call.options.ttl, call.options.heartbeat_interval):  # type: ignore[arg-type]
        _report_elsewhere(call, storage)
        return False
    target = _as_sync(func) if is_async else func
    thread = threading.Thread(target=_refresh, args=(call, target, args, kwargs, slot),
                              name=f"labcache-refresh-{call.key[:12]}", daemon=True)
    with _guard:
        _running[slot] = thread
    call.reporter.refreshing(f"{this_user()}@{this_host()}")
    call.reporter = Reporter(call.function)  # the thread draws in no notebook cell
    thread.start()
    return True


def running_refreshes() -> list[threading.Thread]:
    """The background refreshes of this process still running."""
    with _guard:
        return list(_running.values())


def wait_for_refreshes(timeout: float | None = None) -> bool:
    """Wait for this process's background refreshes; True if none is left.

    Examples:
        >>> wait_for_refreshes(timeout=1)
        True
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in running_refreshes():
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        thread.join(left)
    return not running_refreshes()


def _refresh(call: Call, func: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any], slot: tuple[int, str]) -> None:
    storage = call.storage
    try:
        if not _still_stale(call):  # refreshed by someone just before we won
            if isinstance(storage, BaseLockingStorage):
                storage.release_lock(call.lock_name)
            return
        call.on_stale = None
        refresh_holding(call, func, args, kwargs)
        logger.info("%s: refreshed a stale entry", call.function)
    except Exception as exc:
        warnings.warn(f"{call.function}: refreshing a stale entry failed "
                      f"({type(exc).__name__}: {exc}); the old entry is kept",
                      CacheWarning, stacklevel=1)
    finally:
        if isinstance(storage, BaseLockingStorage):  # refresh_holding released it
            with contextlib.suppress(Exception):
                storage.release_lock(call.lock_name)
        with _guard:
            _running.pop(slot, None)


def _still_stale(call: Call) -> bool:
    """Whether the entry is still older than ``stale_after`` (or gone)."""
    created = _created(call)
    return created is None or time.time() - created > (call.options.stale_after or 0.0)


def _created(call: Call) -> float | None:
    try:
        header = call.storage.read_entry_header(call.key, call.context)
        created = header.meta.get("created")
    except (OSError, ValueError):  # gone, unreadable, damaged metadata
        return None
    return float(created) if isinstance(created, (int, float)) else None


def _report_elsewhere(call: Call, storage: BaseLockingStorage) -> None:
    """Tell the person whose call returned a stale entry who refreshes it."""
    with contextlib.suppress(Exception):
        info = storage.lock_info(call.lock_name)
        who = f"{info.user}@{info.host}" if info is not None else "another process"
        call.reporter.refreshing(who)


def _as_sync(func: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        import asyncio

        return asyncio.run(func(*args, **kwargs))

    return run


@atexit.register
def _finish_before_exit() -> None:
    running = running_refreshes()
    if running:
        logger.info("finishing %d background refresh(es) before exit", len(running))
        wait_for_refreshes()
