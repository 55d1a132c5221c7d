"""What every backend must do, in one process (the multi-process half of the
suite is tests/test_processes.py, parametrized the same way).

Each test takes ``any_storage``, which runs it on every backend listed in
``tests/conftest.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pytest

from labcache import CacheWarning, InvalidNameError, LockTimeout, cached, entry
from labcache.names import lock_name_for

from .support.waits import wait_until, waiting_threads


def test_entries_round_trip(any_storage: Any) -> None:
    assert any_storage.list_stored_files("ctx") == []
    assert any_storage.upload_file(b"first", "a", "ctx") == "a"
    any_storage.upload_file(entry.encode([1, 2], {}), "b", "ctx")
    assert any_storage.download_file("a", "ctx") == b"first"
    assert entry.decode(any_storage.download_file("b", "ctx"))[0] == [1, 2]
    assert any_storage.list_stored_files("ctx") == ["a", "b"]
    assert any_storage.check_if_exists("a", "ctx")
    any_storage.upload_file(b"second", "a", "ctx")  # overwrite
    assert any_storage.download_file("a", "ctx") == b"second"
    any_storage.delete_file("a", "ctx")
    assert not any_storage.check_if_exists("a", "ctx")
    with pytest.raises(FileNotFoundError):
        any_storage.delete_file("a", "ctx")
    with pytest.raises(FileNotFoundError):
        any_storage.download_file("a", "ctx")


@pytest.mark.parametrize("bad", ["", "..", "../up", "a/b", "a\x00b", "x" * 300, ".hidden"])
def test_bad_names_are_refused_everywhere(any_storage: Any, bad: str) -> None:
    calls = [
        lambda: any_storage.upload_file(b"x", bad, "ctx"),
        lambda: any_storage.download_file(bad, "ctx"),
        lambda: any_storage.check_if_exists(bad, "ctx"),
        lambda: any_storage.delete_file(bad, "ctx"),
        lambda: any_storage.try_acquire_lock(bad),
        lambda: any_storage.release_lock(bad),
        lambda: any_storage.lock_info(bad),
        lambda: any_storage.break_lock(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidNameError):
            call()
    for context in ("", "..", "a/../b", "/abs", "locks"):
        with pytest.raises(InvalidNameError):
            any_storage.upload_file(b"x", "fine", context)
        with pytest.raises(InvalidNameError):
            any_storage.list_stored_files(context)
    assert any_storage.list_locks() == []


def test_lock_ownership(any_storage: Any) -> None:
    assert any_storage.try_acquire_lock("own", ttl=60)
    assert not any_storage.try_acquire_lock("own", ttl=60)
    info = any_storage.lock_info("own")
    assert info is not None and not info.stale and info.token
    assert [i.name for i in any_storage.list_locks()] == ["own"]
    any_storage.release_lock("own")
    any_storage.release_lock("own")  # harmless twice
    any_storage.release_lock("never-taken")
    assert any_storage.lock_info("own") is None
    assert any_storage.try_acquire_lock("own", ttl=60)
    assert any_storage.break_lock("own") is True
    assert any_storage.break_lock("own") is False
    assert any_storage.list_locks() == []


def test_heartbeat_outlives_ttl(any_storage: Any) -> None:
    # ttl is far shorter than the wait; 3 missed beats (1.5 s) would be stale.
    assert any_storage.try_acquire_lock("beat", ttl=0.3, heartbeat_interval=0.5)
    time.sleep(2.0)
    info = any_storage.lock_info("beat")
    assert info is not None and not info.stale
    assert not any_storage.try_acquire_lock("beat")
    any_storage.release_lock("beat")
    assert any_storage.lock_info("beat") is None


def test_cached_computes_once_and_keeps_none(any_storage: Any) -> None:
    runs = []

    @cached(storage=any_storage)
    def nothing(x):
        runs.append(x)

    @cached(storage=any_storage)
    def array(n):
        runs.append(n)
        return np.arange(n)

    assert nothing(1) is None and nothing(1) is None
    assert (array(5) == np.arange(5)).all() and (array(5) == np.arange(5)).all()
    assert runs == [1, 5]
    assert array.invalidate(5) and not array.is_cached(5)
    assert nothing.clear() == 1
    assert any_storage.list_locks() == []


def test_threads_of_one_process_compute_once(any_storage: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="labcache")
    runs = []
    start = threading.Barrier(4)

    @cached(storage=any_storage)
    def slow(x):
        runs.append(x)
        wait_until(lambda: waiting_threads(caplog) == 3, "the 3 other threads to wait",
                   timeout=20)
        return x + 1

    results = []

    def call() -> None:
        start.wait()
        results.append(slow(1))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [2] * 4 and runs == [1]


def test_corrupt_entry_is_recomputed(any_storage: Any) -> None:
    runs = []

    @cached(storage=any_storage)
    def data(x):
        runs.append(x)
        return {"x": x}

    data(1)
    good = any_storage.download_file(data.key(1), data.context)
    for broken in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 1]), b"garbage"):
        any_storage.upload_file(broken, data.key(1), data.context)
        with pytest.warns(CacheWarning, match="unusable"):
            assert data(1) == {"x": 1}
    assert len(runs) == 4
    assert data(1) == {"x": 1} and len(runs) == 4


def test_exception_releases_the_lock(any_storage: Any) -> None:
    @cached(storage=any_storage)
    def fails(x):
        raise ZeroDivisionError(x)

    with pytest.raises(ZeroDivisionError):
        fails(1)
    assert any_storage.list_locks() == []
    assert not fails.is_cached(1)


def test_lock_timeout_names_the_holder(any_storage: Any) -> None:
    @cached(storage=any_storage, wait_timeout=0.4)
    def blocked(x):
        return x

    name = lock_name_for(blocked.context, blocked.key(1))
    assert any_storage.try_acquire_lock(name, heartbeat_interval=1)
    try:
        with pytest.raises(LockTimeout, match=r"@.* pid \d+"):
            blocked(1)
    finally:
        any_storage.release_lock(name)
    assert blocked(1) == 1


def test_listings_for_people(any_storage: Any) -> None:
    @cached(storage=any_storage)
    def square(x):
        return x * x

    for i in range(3):
        square(i)
    any_storage.upload_file(b"raw", "other", "second.context")
    assert {square.context, "second.context"} <= set(any_storage.list_contexts())
    stats = any_storage.describe_entries(square.context)
    assert [s.name for s in stats] == sorted(square.key(i) for i in range(3))
    for stat in stats:
        assert stat.size is None or stat.size > 100
    header = any_storage.read_entry_header(square.key(2), square.context)
    meta = header.meta
    assert meta["function"].endswith("square") and meta["arguments"] == {"x": "2"}
    assert "user" in meta and "host" in meta and meta["compute_seconds"] >= 0
    with pytest.raises(FileNotFoundError):
        any_storage.read_entry_header("missing", square.context)
