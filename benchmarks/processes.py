"""Many processes on one key: computations, wall time, wake-up and takeover.

All of it with real processes (spawn), on LocalStorage and on a real
redis-server started here on a free port.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _contenders as c
from ._common import Report, percentile

_LOG = "LABCACHE_BENCH_LOG"


def one_second(x: int) -> int:
    """The contended body: logs each computation, then takes one second."""
    with open(os.environ[_LOG], "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    return x * x


def _warm_up() -> None:
    import cachier  # noqa: F401  (imported before the clock starts)
    import diskcache  # noqa: F401
    import joblib  # noqa: F401

    import labcache  # noqa: F401


def _contend(name: str, folder: str, log: str, start_at: float) -> float:
    os.environ[_LOG] = log
    fn, _ = c.wrap(name, one_second, Path(folder))
    time.sleep(max(0.0, start_at - time.time()))
    if fn(12) != 144:
        raise AssertionError(f"{name} returned a wrong result")
    return time.time()


def contention(report: Report, root: Path, processes: int = 8, patience: float = 20.0) -> None:
    report.section(f"{processes} processes call a 1 s function on one empty key "
                   f"(default settings; callers still waiting after {patience:.0f} s are cut off)")
    context = multiprocessing.get_context("spawn")
    for name in c.ALL:
        with context.Pool(processes, initializer=_warm_up) as pool:
            pool.map(abs, range(processes * 2))  # every worker started and warmed up
            log = root / f"{name}.log"
            log.touch()
            start_at = time.time() + 0.5
            jobs = [pool.apply_async(_contend, (name, str(root / "contention"), str(log),
                                                start_at)) for _ in range(processes)]
            ends = []
            for job in jobs:
                with contextlib.suppress(multiprocessing.TimeoutError):
                    ends.append(job.get(max(0.1, start_at + patience - time.time())))
            pool.terminate()  # a library whose waiters hang must not hang the suite
        computations = len(log.read_text().split())
        report.add("contention", "computations", name, computations, "runs")
        if len(ends) == processes:
            wall = max(ends) - start_at
            report.add("contention", "wall until all have it", name, wall, "s")
        else:
            wall = float("inf")
            report.add("contention", "wall until all have it", name, patience, "s",
                       note=f"{processes - len(ends)} of {processes} callers still waiting")
        if name == c.LABCACHE:
            report.target("8 processes, 1 s function: computations", computations, "== 1",
                          computations == 1)
            report.target("8 processes, 1 s function: seconds until all have it", wall,
                          "<= 1.3", wall <= 1.3)


# -- wake-up -----------------------------------------------------------------------------


def _slow_identity(x: int) -> int:
    # A random length, so the waiter's polls fall anywhere relative to the end.
    time.sleep(0.3 + random.random() * 0.2)
    return x


def _call(storage: Any, trial: int, ready: Any, delay: float) -> float:
    from labcache import cached

    fn = cached(storage=storage)(_slow_identity)
    ready.wait()
    time.sleep(delay)  # the waiter starts late so the holder wins the lock
    fn(trial)
    return time.time()  # the holder has released its lock when its call returns


def wake_up(storage: Any, trials: int = 20) -> tuple[float, float]:
    """(median, p95) seconds from the holder's return to the waiter's."""
    context = multiprocessing.get_context("spawn")
    delays = []
    with context.Manager() as manager, context.Pool(2) as pool:
        for trial in range(trials):
            ready = manager.Barrier(2)
            held = pool.apply_async(_call, (storage, trial, ready, 0.0))
            waited = pool.apply_async(_call, (storage, trial, ready, 0.1))
            delays.append(waited.get(60) - held.get(60))
    return statistics.median(delays), percentile(delays, 0.95)


# -- takeover ----------------------------------------------------------------------------


def marked(x: int) -> int:
    """Records when it starts; the first holder then hangs until killed."""
    Path(os.environ[_LOG], str(os.getpid())).write_text(repr(time.time()))
    if os.environ.get("LABCACHE_BENCH_HANG") == "1":
        time.sleep(600)
    return x


def _run_marked(storage: Any, log: str, hang: bool, host: str | None, beat: float,
                x: int) -> None:
    from labcache import cached

    os.environ[_LOG] = log
    os.environ["LABCACHE_BENCH_HANG"] = "1" if hang else "0"
    if host:
        os.environ["LABCACHE_HOSTNAME"] = host  # looks like another machine: no pid check
    cached(storage=storage, heartbeat_interval=beat)(marked)(x)


def takeover(storage: Any, root: Path, other_host: bool, beat: float = 1.0) -> float:
    """Seconds from SIGKILL of the holder to the waiter starting the computation."""
    context = multiprocessing.get_context("spawn")
    log = root / f"takeover-{os.urandom(4).hex()}"
    log.mkdir()
    x = random.randrange(1 << 60)  # a fresh key for every trial
    holder = context.Process(target=_run_marked, args=(
        storage, str(log), True, "elsewhere" if other_host else None, beat, x))
    holder.start()
    _wait_for(lambda: (log / str(holder.pid)).exists(), 30)
    waiter = context.Process(target=_run_marked, args=(storage, str(log), False, None, beat, x))
    waiter.start()
    # The waiter is waiting on the lock by now; a random phase so the kill
    # lands anywhere between two beats, not always just after one.
    time.sleep(1.0 + random.uniform(0.0, beat))
    killed_at = time.time()
    os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
    holder.join()
    waiter.join(60)
    started = float((log / str(waiter.pid)).read_text())
    return started - killed_at


def _wait_for(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the holder never started")
        time.sleep(0.01)


def locking(report: Report, root: Path, quick: bool) -> None:
    from labcache import LocalStorage, RedisStorage
    from tests.support.services_redis import RedisServer

    server = RedisServer(root)
    server.start()
    try:
        backends = {"Local": LocalStorage(root / "local"),
                    "Redis": RedisStorage(server.url, prefix="bench")}
        report.section("Waiter wake-up after the holder returns, and takeover after SIGKILL")
        for name, storage in backends.items():
            median, p95 = wake_up(storage, trials=8 if quick else 20)
            report.add("wake-up", "median", name, median, "s")
            report.add("wake-up", "p95", name, p95, "s")
            report.target(f"wake-up p95 on {name} (s)", p95, "<= 0.1", p95 <= 0.1)
            seconds = takeover(storage, root, other_host=False)
            report.add("takeover", "same host (dead pid)", name, seconds, "s")
            trials = [takeover(storage, root, other_host=True) for _ in range(3 if quick else 6)]
            report.add("takeover", "other host, heartbeat 1 s: median", name,
                       statistics.median(trials), "s")
            report.add("takeover", "other host, heartbeat 1 s: max", name, max(trials), "s",
                       note=f"{len(trials)} kills at random phases between beats")
            report.target(f"takeover after SIGKILL on {name}, median s (3 x heartbeat = 3 s)",
                          statistics.median(trials), "<= 3", statistics.median(trials) <= 3.0)
            report.target(f"takeover after SIGKILL on {name}, worst s (3 x heartbeat = 3 s)",
                          max(trials), "<= 3", max(trials) <= 3.0)
    finally:
        server.stop()


def run(report: Report, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="labcache-bench-") as folder:
        contention(report, Path(folder))
        locking(report, Path(folder), quick)
