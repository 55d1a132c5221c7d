"""Waiting on observable state instead of sleeping and hoping.

A test that needs another process or thread to reach a state (a file
appears, a lock is held, a log line is written) polls for that state with
``wait_until`` and fails with what it was waiting for, rather than sleeping
a fixed time that a loaded machine can overrun.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from .procs import PATIENCE

T = TypeVar("T")

#: How often a condition is polled (short: most waits end within milliseconds).
POLL = 0.01


def wait_until(condition: Callable[[], T], what: str, timeout: float = PATIENCE,
               alive: Any = None) -> T:
    """Poll ``condition`` until it is true and return its value.

    Fails the test, naming ``what``, after ``timeout`` seconds, or at once if
    the process ``alive`` (when given) has ended, since it can no longer
    bring the state about.

    >>> wait_until(lambda: 2 + 2, "arithmetic")
    4
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if alive is not None and alive.exitcode is not None:
            pytest.fail(f"process {alive.pid} ended (exit code {alive.exitcode}) "
                        f"before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)
    return value


def waiting_threads(caplog: pytest.LogCaptureFixture) -> int:
    """How many threads have logged that their call waits on another's lock.

    ``Reporter.waiting`` logs "<function>: waiting for ..." on the first poll
    of a held lock; the test must capture ``labcache`` at INFO
    (``caplog.set_level(logging.INFO, logger="labcache")``).
    """
    return len({record.thread for record in list(caplog.records)
                if record.name == "labcache" and record.levelno == logging.INFO
                and ": waiting for" in record.getMessage()})
