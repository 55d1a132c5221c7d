"""Faults the protocol must live through: a full disk mid-store, a storage
service that goes down and comes back, and hosts whose clocks disagree.

Real parts only: the disk fills for real (``RLIMIT_FSIZE`` in a child
process), the redis-server and moto processes really stop and start on their
ports, and skewed clocks belong to real holder and waiter processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, cached
from labcache.errors import CacheWarning, StorageError

from .support import workers
from .support.procs import CTX, PATIENCE, collect, dead_pid, reaping
from .support.waits import wait_until

# -- bodies and process targets (module level: spawned processes import them) ------------


def big_result(size: int, log_dir: str) -> bytes:
    """``size`` bytes that depend on ``size``; leaves one file per run in ``log_dir``."""
    workers.log_computation(log_dir)
    return _expected_big(size)


def call_with_small_disk(root: str, log_dir: str, size: int, limit: int, refresh: bool,
                         on_storage_error: str, queue: Any) -> None:
    """Call ``big_result(size)`` with files limited to ``limit`` bytes; report
    (value is right, warnings) or the error raised."""
    try:
        # Past the limit a write fails with EFBIG instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        f = cached(storage=LocalStorage(root), on_storage_error=on_storage_error)(big_result)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                value = (f.refresh if refresh else f)(size, log_dir)
            except StorageError as exc:
                queue.put(("raised", os.getpid(), str(exc)))
                return
        queue.put(("result", os.getpid(), (value == _expected_big(size),
                                           [(w.category.__name__, str(w.message))
                                            for w in caught])))
    except BaseException:
        workers._crash(queue)


def _expected_big(size: int) -> bytes:
    block = hashlib.sha256(str(size).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def until_go(x: int, log_dir: str, go: str) -> int:
    """Logs its run, then waits for the ``go`` file."""
    workers.log_computation(log_dir)
    if not workers.wait_for_file(go):
        raise TimeoutError(f"no go signal at {go}")
    return x * 7


def hold_until_go(storage: Any, log_dir: str, go: str, x: int, queue: Any) -> None:
    """Compute ``until_go(x)`` holding its lock; report the value."""
    try:
        f = cached(storage=storage, heartbeat_interval=0.5)(until_go)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its own outage warnings are not under test
            queue.put(("result", os.getpid(), f(x, log_dir, go)))
    except BaseException:
        workers._crash(queue)


def with_clock_off_by(offset: float, target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` in a process whose clock is ``offset`` seconds off,
    which is how a host with a wrong clock looks to everyone else."""
    real = time.time
    time.time = lambda: real() + offset  # type: ignore[assignment]
    target(*args)


# -- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def waiting_signal(folder: Path) -> Iterator[Path]:
    """Yield a path that appears once a call in *this* process starts waiting."""
    signal_path = folder / f"waiting-{os.getpid()}"

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if ": waiting for" in record.getMessage():
                signal_path.touch()

    logger, handler = logging.getLogger("labcache"), Handler(logging.INFO)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield signal_path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def entry_files(root: Path) -> list[str]:
    """Every file under ``root`` but the lock folder, hidden temp files included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).parts[0] != "locks")


# -- a full disk in the middle of a store ---------------------------------------------------


LIMIT = 256 * 1024  # bytes a file may grow to in the child
SIZE = 4 * 2**20  # the result: written in several chunks, so the write fails midway


@pytest.mark.parametrize("refresh", [False, True], ids=["new", "refresh-over-entry"])
def test_disk_full_mid_store_returns_value_and_stores_nothing(tmp_path: Path,
                                                              refresh: bool) -> None:
    root, log_dir = tmp_path / "store", tmp_path / "log"
    log_dir.mkdir()
    storage = LocalStorage(root)
    f = cached(storage=storage)(big_result)
    before = None
    if refresh:  # an entry stored while the disk had room: it must survive
        assert f(SIZE, str(log_dir)) == _expected_big(SIZE)
        before = entry_files(root)
        key_file = root / f.context / f.key(SIZE, str(log_dir))
        old_bytes = key_file.read_bytes()
    queue = CTX.Queue()
    with reaping() as start:
        start(CTX.Process(target=call_with_small_disk,
                          args=(str(root), str(log_dir), SIZE, LIMIT, refresh, "compute",
                                queue)))
        [(tag, _, (right, caught))] = collect(queue, 1)
    assert tag == "result" and right, "the call did not return its computed value"
    assert [name for name, _ in caught] == ["CacheWarning"], caught
    assert "storage failed" in caught[0][1] and "File too large" in caught[0][1], caught
    assert len(workers.computations(log_dir)) == (2 if refresh else 1)
    assert storage.list_locks() == []
    if refresh:
        assert entry_files(root) == before, "a partial file was left beside the entry"
        assert key_file.read_bytes() == old_bytes
        assert f(SIZE, str(log_dir)) == _expected_big(SIZE)  # a hit on the old entry
        assert len(workers.computations(log_dir)) == 2
    else:
        assert entry_files(root) == [], "a partial entry or temp file was left"
        assert storage.list_stored_files(f.context) == []
        assert not f.is_cached(SIZE, str(log_dir))
        # With room again, the same call stores normally.
        assert f(SIZE, str(log_dir)) == _expected_big(SIZE)
        assert f.is_cached(SIZE, str(log_dir))
    assert storage.list_locks() == []


def test_disk_full_with_raise_says_what_failed(tmp_path: Path) -> None:
    root, log_dir = tmp_path / "store", tmp_path / "log"
    log_dir.mkdir()
    queue = CTX.Queue()
    with reaping() as start:
        start(CTX.Process(target=call_with_small_disk,
                          args=(str(root), str(log_dir), SIZE, LIMIT, False, "raise", queue)))
        [(tag, _, message)] = collect(queue, 1)
    assert tag == "raised"
    assert "storage failed" in message and "File too large" in message, message
    assert f"Local folder {root}: storage failed to store entry" in message, message
    assert "file size limit (ulimit -f)" in message, message  # what to do about it
    assert entry_files(root) == []
    assert LocalStorage(root).list_locks() == []


# -- a storage service that goes down and comes back --------------------------------------------


@dataclass
class Service:
    """A storage and the server behind it, which the test stops and starts."""

    storage: Any
    stop: Callable[[], None]
    start: Callable[[], None]


@pytest.fixture(params=["redis", "s3"])
def service(request: pytest.FixtureRequest) -> Service:
    if request.param == "redis":
        from labcache import RedisStorage

        server = request.getfixturevalue("redis_server")
        return Service(RedisStorage(server.url, prefix="faults"), server.stop, server.start)
    from labcache.storage.s3 import S3Storage
    from tests.support.services_s3 import CREDENTIALS

    s3 = request.getfixturevalue("restartable_s3")
    storage = S3Storage(s3.url, endpoint_url=s3.endpoint, **CREDENTIALS)
    return Service(storage, s3.stop, s3.start)


def square_logged(x: int, log_dir: str) -> int:
    workers.log_computation(log_dir)
    return x * x


def test_outage_between_calls(service: Service, tmp_path: Path) -> None:
    log_dir = str(tmp_path)
    f = cached(storage=service.storage, heartbeat_interval=1)(square_logged)
    strict = cached(storage=service.storage, heartbeat_interval=1,
                    on_storage_error="raise")(square_logged)
    assert f(2, log_dir) == 4 and f.is_cached(2, log_dir)

    service.stop()
    with pytest.warns(CacheWarning, match="storage failed.*returning an uncached result"):
        assert f(3, log_dir) == 9
    with pytest.raises(StorageError, match="failed"):
        strict(3, log_dir)

    service.start()
    assert f(3, log_dir) == 9  # stored this time
    assert f.is_cached(3, log_dir)
    assert f(2, log_dir) == 4  # kept by S3, recomputed after Redis lost it: right either way
    assert service.storage.list_locks() == []


@pytest.mark.parametrize("on_storage_error", ["compute", "raise"])
def test_outage_while_waiting(service: Service, tmp_path: Path,
                              on_storage_error: str) -> None:
    """The server goes down while this process waits for another's computation:
    with "compute" the wait ends in an uncached result, with "raise" in a
    StorageError; the holder finishes and stores once the server is back."""
    x, log_dir, go = 5, tmp_path / "log", tmp_path / "go"
    log_dir.mkdir()
    f = cached(storage=service.storage, heartbeat_interval=0.5,
               on_storage_error=on_storage_error)(until_go)
    mine = f"{os.getpid()}-"
    queue = CTX.Queue()

    def outage_once_waiting(signal_path: Path) -> None:
        wait_until(signal_path.exists, "this process to wait for the holder")
        service.stop()
        if on_storage_error == "compute":  # back up once we compute it ourselves
            wait_until(lambda: any(name.startswith(mine)
                                   for name in workers.computations(log_dir)),
                       "this process to compute uncached")
            service.start()
            workers.touch(go)

    with reaping() as start, waiting_signal(tmp_path) as signal_path:
        holder = start(CTX.Process(target=hold_until_go,
                                   args=(service.storage, str(log_dir), str(go), x, queue)))
        wait_until(lambda: len(workers.computations(log_dir)) == 1, "the holder to compute")
        helper = threading.Thread(target=outage_once_waiting, args=(signal_path,))
        helper.start()
        try:
            if on_storage_error == "compute":
                with pytest.warns(CacheWarning, match="storage failed"):
                    assert f(x, str(log_dir), str(go)) == x * 7
            else:
                with pytest.raises(StorageError, match="failed"):
                    f(x, str(log_dir), str(go))
        finally:
            helper.join(PATIENCE)
        if on_storage_error == "raise":
            service.start()
            workers.touch(go)
        [(tag, pid, value)] = collect(queue, 1)

    assert (tag, pid, value) == ("result", holder.pid, x * 7)
    runs = workers.computations(log_dir)
    assert len(runs) == (2 if on_storage_error == "compute" else 1), runs
    assert service.storage.list_locks() == []
    assert f(x, str(log_dir), str(go)) == x * 7  # the holder's stored entry
    assert len(workers.computations(log_dir)) == len(runs)


# -- hosts whose clocks disagree ----------------------------------------------------------------


SKEW = 60.0
HEARTBEAT = 0.5


@pytest.mark.parametrize("holder_clock", [SKEW, -SKEW], ids=["holder-ahead", "holder-behind"])
def test_skewed_holder_is_fresh_while_it_beats_and_taken_over_when_killed(
        any_storage: Any, tmp_path: Path, holder_clock: float) -> None:
    """A holder on another host whose clock is a minute ahead (behind), and a
    waiter whose clock is a minute behind (ahead): two minutes apart.  While
    the holder beats nobody takes its lock; once it is killed, one does."""
    x = 8
    log_dir, signal_dir = tmp_path / "log", tmp_path / "signals"
    log_dir.mkdir()
    signal_dir.mkdir()
    started = str(tmp_path / "started")
    root, queue = any_storage, CTX.Queue()
    # Longer than the holder would take to look dead, by any clock.
    watch = 3 * HEARTBEAT + getattr(any_storage, "clock_resolution", 0.0) + 1.5
    with reaping() as start:
        holder = start(CTX.Process(target=with_clock_off_by, args=(
            holder_clock, workers.hanging_holder, root, str(log_dir), started, x,
            HEARTBEAT, 3600.0, True)))
        wait_until(lambda: os.path.exists(started), "the holder to start computing")
        start(CTX.Process(target=with_clock_off_by, args=(
            -holder_clock, workers.takeover_waiter, root, str(log_dir), started, x,
            HEARTBEAT, 3600.0, str(signal_dir), queue)))
        wait_until(lambda: workers.waiting_signals(signal_dir)
                   or len(workers.computations(log_dir)) > 1,
                   "the waiter to wait (or take over)")
        assert len(workers.computations(log_dir)) == 1, "the waiter took over at once"

        time.sleep(watch)
        assert len(workers.computations(log_dir)) == 1, "the beating holder was taken over"
        assert queue.empty()
        [info] = any_storage.list_locks()
        assert (info.pid, info.stale) == (holder.pid, False)
        assert abs(info.acquired - holder_clock - time.time()) < PATIENCE  # its own clock

        holder.kill()
        [(tag, _, (value, _))] = collect(queue, 1, timeout=PATIENCE)
    assert (tag, value) == ("result", x * 10)
    assert len(workers.computations(log_dir)) == 2  # the killed run and one takeover
    assert any_storage.list_locks() == []


def try_lock_and_report(root: str, name: str, queue: Any) -> None:
    """Try lock ``name`` once and report whether it was won."""
    try:
        queue.put(("tried", os.getpid(), LocalStorage(root).try_acquire_lock(name, ttl=60)))
    except BaseException:
        workers._crash(queue)


@pytest.mark.parametrize("clock", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_skewed_process_respects_a_live_claim(tmp_path: Path, clock: float) -> None:
    """A takeover on LocalStorage first claims the stale record with a small
    file; a claim younger than CLAIM_STALE_SECONDS belongs to a process in the
    middle of the takeover.  A process whose clock is a minute ahead must not
    see that claim as dead and take over the same record as well."""
    from labcache.storage import local

    root = tmp_path / "store"
    storage = LocalStorage(root)
    workers.plant_stale_lock(storage, "L", "dead_pid", dead_pid())
    raw = storage._lock_read("L")
    assert raw is not None
    claim = root / "locks" / f".L.{raw.version}.claim1"
    claim.touch()  # a live process is replacing this very record right now
    assert local.CLAIM_STALE_SECONDS < SKEW
    queue = CTX.Queue()
    with reaping() as start:
        start(CTX.Process(target=with_clock_off_by,
                          args=(clock, try_lock_and_report, str(root), "L", queue)))
        [(tag, _, won)] = collect(queue, 1)
    assert (tag, won) == ("tried", False), "a live claim was broken: two takeovers at once"
    assert claim.exists()
    assert storage._lock_read("L") == raw

    # The same claim left by a process that died mid-takeover is cleared.
    old = time.time() - 2 * local.CLAIM_STALE_SECONDS
    os.utime(claim, (old, old))
    assert storage.try_acquire_lock("L", ttl=60)
    storage.release_lock("L")
