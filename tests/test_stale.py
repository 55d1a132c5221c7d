"""``@cached(stale_after=...)``: a stale entry is returned at once while one
caller refreshes it in the background.

The refreshing body waits on a gate file the test opens only after every
call returned, so "returned at once" needs no timing: a call that waited for
the refresh could not have returned before the gate opened.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, cached
from labcache._stale import running_refreshes, wait_for_refreshes
from labcache.errors import CacheWarning
from labcache.listing import lock_rows
from labcache.lock_record import this_host, this_user

from .support import net_workers
from .support.procs import CTX, PATIENCE, collect, reaping
from .support.workers import computations

STALE_AFTER = 0.2


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    log = tmp_path / "log"
    log.mkdir()
    return {"log": log, "gate": tmp_path / "gate", "fail": tmp_path / "fail",
            "start": tmp_path / "start"}


@pytest.fixture(autouse=True)
def no_refresh_left_behind(dirs: dict[str, Path]) -> Any:
    """A refresh a test started runs out before the next test (gate open)."""
    yield
    dirs["gate"].touch()
    assert wait_for_refreshes(timeout=PATIENCE)


def wait_until_stale(fn: Any, *args: Any) -> None:
    """Wait (on the entry's own header) until it is older than STALE_AFTER."""
    storage, key = fn.storage, fn.key(*args)
    created = storage.read_entry_header(key, fn.context).meta["created"]
    deadline = time.monotonic() + PATIENCE
    while time.time() - created <= STALE_AFTER:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_stale_entry_is_returned_at_once_while_one_refresh_runs(
        storage: LocalStorage, dirs: dict[str, Path]) -> None:
    fn = cached(storage=storage, stale_after=STALE_AFTER)(net_workers.gated_numbered)
    args = (1, str(dirs["log"]), str(dirs["gate"]))
    dirs["gate"].touch()
    assert fn(*args) == 1
    wait_until_stale(fn, *args)
    dirs["gate"].unlink()  # the refresh now blocks until the test opens the gate
    assert [fn(*args) for _ in range(5)] == [1] * 5  # nobody waited, the winner neither
    assert len(running_refreshes()) == 1
    [lock] = lock_rows(storage, [fn.context])  # what the monitor and `labcache locks` show
    assert (lock.key, lock.state) == (fn.key(*args), "refreshing")
    assert lock.holder.startswith(f"{this_user()}@{this_host()} pid ")
    dirs["gate"].touch()
    assert wait_for_refreshes(timeout=PATIENCE)
    assert fn(*args) == 2
    assert len(computations(dirs["log"])) == 2  # the first computation and one refresh


def test_a_failed_refresh_keeps_the_old_entry_and_warns(
        storage: LocalStorage, dirs: dict[str, Path]) -> None:
    fn = cached(storage=storage, stale_after=STALE_AFTER)(net_workers.gated_numbered)
    args = (1, str(dirs["log"]), str(dirs["gate"]), str(dirs["fail"]))
    dirs["gate"].touch()
    assert fn(*args) == 1
    wait_until_stale(fn, *args)
    dirs["fail"].touch()
    with pytest.warns(CacheWarning, match="refreshing a stale entry failed"):
        assert fn(*args) == 1
        assert wait_for_refreshes(timeout=PATIENCE)
    assert fn.is_cached(*args)
    dirs["fail"].unlink()
    assert fn(*args) == 1  # still stale: this call starts the next refresh
    assert wait_for_refreshes(timeout=PATIENCE)
    assert fn(*args) == 3


def test_expires_after_stays_a_hard_miss(storage: LocalStorage, dirs: dict[str, Path]) -> None:
    fn = cached(storage=storage, stale_after=STALE_AFTER, expires_after=STALE_AFTER)(
        net_workers.gated_numbered)
    args = (1, str(dirs["log"]), str(dirs["gate"]))
    dirs["gate"].touch()
    assert fn(*args) == 1
    wait_until_stale(fn, *args)
    assert fn(*args) == 2  # recomputed in the call, not in the background
    assert not running_refreshes()


def test_a_fresh_entry_is_not_refreshed(storage: LocalStorage, dirs: dict[str, Path]) -> None:
    fn = cached(storage=storage, stale_after=3600)(net_workers.gated_numbered)
    args = (1, str(dirs["log"]), str(dirs["gate"]))
    dirs["gate"].touch()
    assert [fn(*args) for _ in range(3)] == [1, 1, 1]
    assert not running_refreshes()


async def gated_async(x: int, log_dir: str, gate: str) -> int:
    return net_workers.gated_numbered(x, log_dir, gate)


def test_async_functions_refresh_in_the_background_too(
        storage: LocalStorage, dirs: dict[str, Path]) -> None:
    fn = cached(storage=storage, stale_after=STALE_AFTER)(gated_async)
    args = (1, str(dirs["log"]), str(dirs["gate"]))
    dirs["gate"].touch()
    assert asyncio.run(fn(*args)) == 1
    wait_until_stale(fn, *args)
    dirs["gate"].unlink()
    assert asyncio.run(fn(*args)) == 1  # the event loop is gone; the refresh is not
    dirs["gate"].touch()
    assert wait_for_refreshes(timeout=PATIENCE)
    assert asyncio.run(fn(*args)) == 2


def test_one_refresh_among_several_processes(redis_server: Any, dirs: dict[str, Path]) -> None:
    """Four processes call a stale entry at once: all get it at once, exactly
    one refreshes, and it finishes its refresh before it exits."""
    url = redis_server.url
    fn = cached(storage=url, stale_after=STALE_AFTER)(net_workers.gated_numbered)
    args = (1, str(dirs["log"]), str(dirs["gate"]))
    dirs["gate"].touch()
    assert fn(*args) == 1
    dirs["gate"].unlink()
    queue = CTX.Queue()
    with reaping(grace=PATIENCE) as start:
        workers = [start(CTX.Process(target=net_workers.stale_caller, args=(
            url, str(dirs["log"]), str(dirs["gate"]), str(dirs["start"]), STALE_AFTER,
            queue))) for _ in range(4)]
        collect(queue, 4)  # all ready
        wait_until_stale(fn, *args)
        dirs["start"].touch()
        called = collect(queue, 4)
        assert [value for _, _, value in called] == [1] * 4
        dirs["gate"].touch()  # only now can the refresh finish
        for worker in workers:
            worker.join(PATIENCE)
            assert worker.exitcode == 0
    assert len(computations(dirs["log"])) == 2
    assert fn(*args) == 2  # the refresh was stored before its process exited
