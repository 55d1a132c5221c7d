"""Which thread or asyncio task holds which lock, inside this process.

A lock excludes everyone else, this process's other threads included, so a
call that needs a lock its *own* thread already holds would wait for itself
until ``wait_timeout``: a cached function computing ``f(1)`` that calls
``f(1)`` again, directly or through other functions.  The protocol records
each lock it holds here and refuses such a call at once with
``ReentrantCallError``.

The owner of a hold is the running asyncio task if there is one, else the
thread:

* sync code: the same thread re-entering raises; other threads wait;
* async code: the same task re-entering raises (also through a sync cached
  call made inside it); other tasks wait, the holder's own child tasks
  included (a task that awaits a child waiting for its lock is a deadlock
  labcache cannot see; it ends at ``wait_timeout``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

__all__ = ["current_owner", "holder_of", "holding"]

_guard = threading.Lock()
#: (id of the storage, lock name) -> the thread id or task that holds it.
_holders: dict[tuple[int, str], object] = {}


def current_owner() -> object:
    """The running asyncio task, or else this thread's id.

    Examples:
        >>> import threading
        >>> current_owner() == threading.get_ident()
        True
    """
    if "asyncio" in sys.modules:  # never import asyncio for sync-only programs
        import asyncio

        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop running in this thread
            task = None
        if task is not None:
            return task
    return threading.get_ident()


def holder_of(storage: object, lock_name: str) -> object | None:
    """Who in this process holds ``lock_name`` on ``storage`` (None: nobody).

    Examples:
        >>> holder_of(object(), "free") is None
        True
    """
    with _guard:
        return _holders.get((id(storage), lock_name))


@contextlib.contextmanager
def holding(storage: object, lock_name: str) -> Iterator[None]:
    """Record that the current owner holds ``lock_name`` while the block runs.

    Examples:
        >>> store = object()
        >>> with holding(store, "job"):
        ...     holder_of(store, "job") == current_owner()
        True
        >>> holder_of(store, "job") is None
        True
    """
    mark, owner = (id(storage), lock_name), current_owner()
    with _guard:
        _holders[mark] = owner
    try:
        yield
    finally:
        with _guard:
            if _holders.get(mark) is owner:
                del _holders[mark]
