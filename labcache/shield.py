"""Storage work that an interruption cannot cut in half.

A lock taken must be given back whatever happens to the call that took it:
an asyncio cancel or ``wait_for`` timeout while the lock is being taken in a
worker thread, or a KeyboardInterrupt (Ctrl-C, the notebook's stop button,
any exception a signal handler raises) at any moment.  Two tools:

* :func:`shielded` runs a storage call from the main thread (the only one
  where signal handlers run) in a helper thread: an interrupt stops the
  *wait*, never the call half-way (a lock file created but not recorded,
  a release that removed its claim but not the lock).
* :class:`Attempt` ties a call (taking a lock) to the undoing of its result
  (releasing it): whoever finishes last, the call's thread or the caller
  that gave up on it, undoes it, exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Attempt", "shielded"]

T = TypeVar("T")


def shielded(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, run where a signal handler's exception cannot land.

    From the main thread the call runs in a helper thread and this one
    waits: an interrupt raises here at once while the call still completes.
    From any other thread it simply runs.

    Examples:
        >>> shielded(sum, [1, 2, 3])
        6
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    outcome: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            done.set()

    helper = threading.Thread(target=run, name="labcache-storage-call", daemon=True)
    helper.start()
    # Not join(): on Python 3.11 an interrupted join() can mark a thread
    # that is still running as stopped.
    done.wait()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


class Attempt:
    """A call whose result ``undo`` must take back exactly once.

    A false result (the lock was not taken) needs no undoing.

    The protocol creates one before taking a lock and calls :meth:`settle`
    in its ``finally``; :meth:`run` makes the call (in whatever thread the
    driver chooses).  If ``settle`` comes first (the caller was cancelled
    while the call ran), the call's own thread undoes its result when it
    finishes.

    Examples:
        >>> undone = []
        >>> attempt = Attempt(undone.append)
        >>> attempt.run(lambda: "lock")
        'lock'
        >>> attempt.settle(); attempt.settle(); undone
        ['lock']
    """

    def __init__(self, undo: Callable[[Any], None]) -> None:
        self.undo = undo
        self._guard = threading.Lock()
        self._finished = self._settled = False
        self._result: Any = None

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Make the call; if the caller already settled, undo it at once."""
        result = fn(*args)  # if it raises, it did nothing to undo
        with self._guard:
            self._finished, self._result = True, result
            undo_now = self._settled and bool(result)
        if undo_now:
            self.undo(result)
        return result

    def settle(self) -> None:
        """The caller is done: undo the result now, or when the call ends."""
        with self._guard:
            if self._settled:
                return
            self._settled = True
            undo_now = self._finished and bool(self._result)
        if undo_now:
            shielded(self.undo, self._result)
