"""Starting, reaping and hearing from real worker processes in tests."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queue_module
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from labcache.locks import _pid_alive

from . import workers

CTX = multiprocessing.get_context("spawn")
#: Generous bound for things that must *eventually* happen (spawn, imports).
PATIENCE = 60.0


@contextlib.contextmanager
def reaping(grace: float = 10.0) -> Iterator[Callable[[Any], Any]]:
    """Yield ``start(process)``; every process started through it is joined
    (up to ``grace`` seconds in all) and then killed when the block ends."""
    started: list[Any] = []

    def start(process: Any) -> Any:
        started.append(process)
        process.start()
        return process

    try:
        yield start
    finally:
        deadline = time.monotonic() + grace
        for process in started:
            process.join(max(deadline - time.monotonic(), 0.01))
        for process in started:
            if process.exitcode is None:
                process.kill()
                process.join(5)


def collect(queue: Any, count: int, timeout: float = PATIENCE,
            fail_on_crash: bool = True) -> list[tuple[str, int, Any]]:
    """``count`` messages from workers; a worker's crash report fails the test
    (unless ``fail_on_crash`` is false: then it is one of the messages)."""
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        remaining = deadline - time.monotonic()
        try:
            message = queue.get(timeout=max(remaining, 0.01))
        except queue_module.Empty:
            pytest.fail(f"got {len(messages)} of {count} worker messages in {timeout} s: "
                        f"{messages}")
        if message[0] == "crash" and fail_on_crash:
            pytest.fail(f"worker pid {message[1]} crashed:\n{message[2]}")
        messages.append(message)
    return messages


def dead_pid() -> int:
    """The pid of a process of ours that has exited and been reaped."""
    process = CTX.Process(target=workers.exit_at_once)
    process.start()
    process.join(PATIENCE)
    assert process.exitcode == 0
    assert not _pid_alive(process.pid)
    return process.pid
