"""Worker functions for tests/test_processes.py.

Everything here is module level so that spawned processes can import it by
name, and so that a cached function built from one of these bodies has the
same identity (module, qualified name, source) in every process.

Computations are counted with files: a body creates one uniquely named file
in ``log_dir`` per run, and the tests count them.  Workers report back
through a ``multiprocessing`` queue as ``(tag, pid, payload)`` tuples; a
worker that fails for an unexpected reason reports ``("crash", pid,
traceback)`` so the test can show what went wrong.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from labcache import LocalStorage, cached
from labcache.base import BaseStorage
from labcache.lock_record import LockRecord

#: How long a body or worker waits for a signal file before giving up.
SIGNAL_TIMEOUT = 60.0
#: Barrier waits in the lock races fail instead of hanging after this long.
BARRIER_TIMEOUT = 60.0
#: The host name a "remote" holder pretends to run on (no pid check applies).
FOREIGN_HOST = "labcache-test-elsewhere"


class BodyFailed(Exception):
    """The error a holder's body raises in the shared-failure test."""


# -- helpers ---------------------------------------------------------------------------


def log_computation(log_dir: str) -> Path:
    """Leave one new file in ``log_dir`` per run of a body; returns its path."""
    path = Path(log_dir) / f"{os.getpid()}-{uuid.uuid4().hex}"
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    return path


def computations(log_dir: str | os.PathLike[str]) -> list[str]:
    """The computation log files in ``log_dir``."""
    return sorted(p.name for p in Path(log_dir).iterdir())


def touch(path: str | os.PathLike[str]) -> None:
    Path(path).touch()


def wait_for_file(path: str | os.PathLike[str], timeout: float = SIGNAL_TIMEOUT) -> bool:
    """Poll until ``path`` exists; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def create_once(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` if absent; True for the one caller that created it."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def as_storage(root: Any) -> Any:
    """The storage a test handed over: a (pickled) storage, or a LocalStorage path."""
    return root if isinstance(root, BaseStorage) else LocalStorage(root)


def make_cached(body: Any, root: Any, heartbeat_interval: float | None = 30,
                ttl: float = 3600) -> Any:
    """``body`` cached in the test's storage, as every process builds it."""
    return cached(storage=as_storage(root), ttl=ttl,
                  heartbeat_interval=heartbeat_interval)(body)


class _SignalWaiting(logging.Handler):
    """Creates ``<signal_dir>/waiting-<pid>`` when this process starts waiting.

    ``Reporter.waiting`` logs "…: waiting for …" on the first poll of a held
    lock, so the file appears once the call is really waiting on a holder.
    """

    def __init__(self, signal_dir: str) -> None:
        super().__init__(logging.INFO)
        self.path = Path(signal_dir) / f"waiting-{os.getpid()}"

    def emit(self, record: logging.LogRecord) -> None:
        if ": waiting for" in record.getMessage():
            self.path.touch()


def signal_when_waiting(signal_dir: str) -> None:
    logger = logging.getLogger("labcache")
    logger.setLevel(logging.INFO)
    logger.addHandler(_SignalWaiting(signal_dir))


def waiting_signals(signal_dir: str | os.PathLike[str]) -> list[str]:
    return sorted(p.name for p in Path(signal_dir).glob("waiting-*"))


def _crash(queue: Any) -> None:
    queue.put(("crash", os.getpid(), traceback.format_exc()))


# -- bodies of cached functions -----------------------------------------------------------


def slow_square(x: int, log_dir: str) -> dict[str, Any]:
    """One second of "work"; the result is a fresh object, not a constant."""
    log_computation(log_dir)
    time.sleep(1.0)
    return {"square": x * x, "array": list(range(x))}


def hang_first_time(x: int, log_dir: str, started: str) -> int:
    """The first run ever (it creates ``started``) hangs until it is killed;
    any later run (a takeover) returns at once."""
    log_computation(log_dir)
    if create_once(started):
        time.sleep(600)
    return x * 10


def fail_while_flagged(x: int, log_dir: str, go: str, fail_flag: str) -> int:
    """Waits for the ``go`` file, then raises ``BodyFailed`` while ``fail_flag`` exists."""
    log_computation(log_dir)
    if not wait_for_file(go):
        raise TimeoutError(f"no go signal at {go}")
    if os.path.exists(fail_flag):
        raise BodyFailed(f"holder pid {os.getpid()} failed on x={x}")
    return x + 1000


def unpicklable_result(kind: str, log_dir: str, go: str) -> Any:
    """Waits for the ``go`` file, then returns something pickle refuses."""
    log_computation(log_dir)
    if not wait_for_file(go):
        raise TimeoutError(f"no go signal at {go}")
    if kind == "generator":
        return (i for i in range(3))
    return threading.Lock()


def roles_in_turn(x: int, log_dir: str, marker_dir: str) -> int:
    """Its first run fails once ``<marker_dir>/go`` exists, its second run
    hangs until it is killed, any later run returns ``x * 100``."""
    log_computation(log_dir)
    markers = Path(marker_dir)
    if create_once(markers / "first"):
        if not wait_for_file(markers / "go"):
            raise TimeoutError("no go signal")
        raise BodyFailed(f"first holder pid {os.getpid()} failed on x={x}")
    if create_once(markers / "second"):
        time.sleep(600)
    return x * 100


def keyed(config: dict[str, Any], tags: set[str], nested: tuple[Any, ...], array: Any,
          scale: float) -> None:
    """Only its keys matter (see test_keys_equal_across_hashseeds)."""


# -- process targets -------------------------------------------------------------------------


def call_after_barrier(root: Any, log_dir: str, x: int, barrier: Any, queue: Any) -> None:
    """Wait for everybody, then call the cached ``slow_square(x)``."""
    try:
        f = make_cached(slow_square, root)
        barrier.wait(BARRIER_TIMEOUT)
        queue.put(("result", os.getpid(), f(x, log_dir)))
    except BaseException:
        _crash(queue)


def hanging_holder(root: Any, log_dir: str, started: str, x: int,
                   heartbeat_interval: float, ttl: float, foreign: bool) -> None:
    """Start ``hang_first_time(x)`` and hang in it (the test kills us)."""
    if foreign:  # a holder on "another host": only its heartbeat tells it is alive
        os.environ["LABCACHE_HOSTNAME"] = FOREIGN_HOST
    f = make_cached(hang_first_time, root, heartbeat_interval, ttl)
    f(x, log_dir, started)


def takeover_waiter(root: Any, log_dir: str, started: str, x: int,
                    heartbeat_interval: float, ttl: float, signal_dir: str,
                    queue: Any) -> None:
    """Call ``hang_first_time(x)`` while the hanging holder has it; report the
    result with the (system-wide monotonic) time it arrived."""
    try:
        signal_when_waiting(signal_dir)
        f = make_cached(hang_first_time, root, heartbeat_interval, ttl)
        value = f(x, log_dir, started)
        queue.put(("result", os.getpid(), (value, time.monotonic())))
    except BaseException:
        _crash(queue)


def call_fail_while_flagged(root: Any, log_dir: str, go: str, fail_flag: str, x: int,
                            signal_dir: str | None, queue: Any) -> None:
    """Call ``fail_while_flagged(x)``; report the result or the error raised."""
    try:
        if signal_dir is not None:
            signal_when_waiting(signal_dir)
        f = make_cached(fail_while_flagged, root)
        try:
            value = f(x, log_dir, go, fail_flag)
        except BodyFailed as exc:
            queue.put(("raised", os.getpid(),
                       (type(exc).__module__, type(exc).__qualname__, str(exc))))
        else:
            queue.put(("result", os.getpid(), value))
    except BaseException:
        _crash(queue)


def call_unpicklable(root: Any, log_dir: str, go: str, kind: str, signal_dir: str,
                     queue: Any) -> None:
    """Call ``unpicklable_result(kind)`` while another process holds it."""
    try:
        signal_when_waiting(signal_dir)
        f = make_cached(unpicklable_result, root)
        try:
            value = f(kind, log_dir, go)
        except Exception as exc:
            queue.put(("raised", os.getpid(), (type(exc).__qualname__, str(exc))))
        else:
            queue.put(("result", os.getpid(), repr(value)))
    except BaseException:
        _crash(queue)


def call_roles_in_turn(root: Any, log_dir: str, marker_dir: str, x: int,
                       heartbeat_interval: float | None, ttl: float, foreign: bool,
                       signal_dir: str | None, queue: Any) -> None:
    """Call ``roles_in_turn(x)``; report the result or the error raised."""
    try:
        if foreign:
            os.environ["LABCACHE_HOSTNAME"] = FOREIGN_HOST
        if signal_dir is not None:
            signal_when_waiting(signal_dir)
        f = make_cached(roles_in_turn, root, heartbeat_interval, ttl)
        try:
            value = f(x, log_dir, marker_dir)
        except BodyFailed as exc:
            queue.put(("raised", os.getpid(), str(exc)))
        else:
            queue.put(("result", os.getpid(), value))
    except BaseException:
        _crash(queue)


def hold_until(root: Any, name: str, ttl: float, foreign: bool, release: Any,
               queue: Any) -> None:
    """Take lock ``name`` (no heartbeat), report (won, token), then on the
    ``release`` event call ``release_lock`` and report the lock seen after it."""
    try:
        if foreign:
            os.environ["LABCACHE_HOSTNAME"] = FOREIGN_HOST
        storage = as_storage(root)
        won = storage.try_acquire_lock(name, ttl=ttl)
        held = storage._held.get(name)
        queue.put(("acquired", os.getpid(), (won, held.token if held else None)))
        if not release.wait(SIGNAL_TIMEOUT):
            raise TimeoutError("no release signal")
        storage.release_lock(name)
        info = storage.lock_info(name)
        queue.put(("released", os.getpid(),
                   None if info is None else (info.pid, info.token)))
    except BaseException:
        _crash(queue)


def acquire_and_die(root: Any, name: str) -> None:
    """Take lock ``name`` and exit without releasing it (a crashed holder)."""
    storage = as_storage(root)
    if not storage.try_acquire_lock(name, ttl=3600):
        os._exit(3)
    os._exit(0)


def exit_at_once() -> None:
    """Nothing: its pid is a dead pid once it has been reaped."""


# -- lock races -----------------------------------------------------------------------------


STALE_KINDS = ("dead_pid", "expired_ttl", "missed_beats")


def plant_stale_lock(root: Any, name: str, kind: str, dead_pid: int) -> None:
    """Put a stale but well-formed lock record at ``name``, created the way
    the backend creates a real one (fails if a lock is there already).

    ``dead_pid``: a holder on this very host whose process is gone.
    ``expired_ttl``: a holder on another host, without heartbeat, past its ttl.
    ``missed_beats``: a holder on another host that stopped beating long ago.
    """
    storage = as_storage(root)
    now = time.time()
    record = LockRecord.new(ttl=3600, heartbeat_interval=None)
    mtime = now
    if kind == "dead_pid":
        record = dataclasses.replace(record, pid=dead_pid)
    elif kind == "expired_ttl":
        record = dataclasses.replace(record, host=FOREIGN_HOST, acquired=now - 60, ttl=1.0)
    elif kind == "missed_beats":
        record = dataclasses.replace(record, host=FOREIGN_HOST, acquired=now - 60,
                                     heartbeat_interval=0.2)
        mtime = now - 10
    else:
        raise ValueError(kind)
    _link_record(storage, name, record.to_bytes(), mtime)
    info = storage.lock_info(name)
    if kind == "missed_beats" and type(storage).__name__ == "S3Storage":
        # S3 judges beats by the server's Last-Modified, which cannot be set
        # in the past: the planted lock goes stale once its beats are missed.
        deadline = time.monotonic() + SIGNAL_TIMEOUT
        while info is not None and not info.stale and time.monotonic() < deadline:
            time.sleep(0.05)
            info = storage.lock_info(name)
    if info is None or not info.stale:  # e.g. the dead pid was reused meanwhile
        raise AssertionError(f"planted {kind} lock is not stale: {info}")


def _link_record(storage: Any, name: str, data: bytes, beat: float) -> None:
    if isinstance(storage, LocalStorage):  # the file's mtime is its last beat
        path = storage.root / storage._get_lock_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".planted-{uuid.uuid4().hex}.tmp")
        aside.write_bytes(data)
        os.utime(aside, (beat, beat))
        try:
            os.link(aside, path)
        finally:
            aside.unlink()
    elif type(storage).__name__ == "RedisStorage":
        # Without PX: Redis would expire a dead beat by itself, while the
        # test wants one that is present and stale.
        assert storage.client.set(storage._lock_key(name), data, nx=True)
    else:
        assert storage._lock_create(name, data) is not None


def race_for_lock(root: Any, index: int, trials: int, stale_kind: str | None,
                  dead_pid: int, barrier: Any, occupancy: Any, max_occupancy: Any,
                  winners: Any, queue: Any) -> None:
    """One of the racers of test_lock_exclusive_under_barrier.

    Per trial: all racers pass the barrier and try the lock once.  A winner
    counts itself in ``occupancy`` (and ``max_occupancy``) and in
    ``winners[trial]``, and keeps the lock until every racer has tried (the
    second barrier), then leaves, releases it and, in the stealing variant,
    plants the next trial's stale lock.
    """
    try:
        storage = as_storage(root)
        for trial in range(trials):
            barrier.wait(BARRIER_TIMEOUT)
            won = storage.try_acquire_lock("race", ttl=3600)
            if won:
                with occupancy.get_lock():
                    occupancy.value += 1
                    max_occupancy.value = max(max_occupancy.value, occupancy.value)
                with winners.get_lock():
                    winners[trial] += 1
            barrier.wait(BARRIER_TIMEOUT)
            if won:
                with occupancy.get_lock():
                    occupancy.value -= 1
                storage.release_lock("race")
                if stale_kind is not None and trial + 1 < trials:
                    plant_stale_lock(root, "race", stale_kind, dead_pid)
        queue.put(("done", os.getpid(), index))
    except BaseException:
        barrier.abort()
        _crash(queue)


def steal_once_per_round(root: Any, name: str, rounds: int, barrier: Any,
                         queue: Any) -> None:
    """One of the stealers of test_sixteen_stealers_one_winner.

    Per round, with the test process as the last party of ``barrier``:
    start → try the lock once and report (won, own token) → the test
    inspects the lock → the winner releases it → the test plants the next.
    """
    try:
        storage = as_storage(root)
        for rnd in range(rounds):
            barrier.wait(BARRIER_TIMEOUT)
            won = storage.try_acquire_lock(name, ttl=3600)
            held = storage._held.get(name)
            queue.put(("tried", os.getpid(), (rnd, won, held.token if won and held else None)))
            barrier.wait(BARRIER_TIMEOUT)  # everybody tried
            barrier.wait(BARRIER_TIMEOUT)  # the test looked at the lock
            if won:
                storage.release_lock(name)
            barrier.wait(BARRIER_TIMEOUT)  # released
    except BaseException:
        barrier.abort()
        _crash(queue)


# -- keys ---------------------------------------------------------------------------------


def key_demo_arguments() -> tuple[Any, ...]:
    """Arguments whose naive hashing would depend on PYTHONHASHSEED."""
    import numpy as np

    config = {f"option_{i}": [i, str(i), i / 3] for i in range(12)}
    tags = {f"tag-{i}" for i in range(20)}
    nested = (1, ("two", (3.0, (None, b"four"))), frozenset({"x", "y", "z"}))
    array = np.arange(24, dtype=np.float64).reshape(4, 6) / 7
    return config, tags, nested, array, 0.1 + 0.2


def print_key_demo(root: str) -> None:
    """Print the key of ``keyed(*key_demo_arguments())`` and the tags' set order."""
    import json

    f = make_cached(keyed, root)
    arguments = key_demo_arguments()
    print(json.dumps({"key": f.key(*arguments), "set_order": list(arguments[1])}))
