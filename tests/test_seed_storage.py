"""A storage written only against the seed's documented interface works.

``MemoryLockingStorage`` implements exactly the seed's abstract methods, the
way a LabChain user would write one (no tokens, no lock_info), and @cached
must still compute once, share failures and recover from expired locks.
"""

from __future__ import annotations

import logging
import threading

import pytest

from labcache import cached
from labcache.base import BaseLockingStorage, BaseStorage

from .support.memory import MemoryLockingStorage, MemoryStorage
from .support.waits import wait_until, waiting_threads


def test_seed_style_storage_caches(request):
    store = MemoryLockingStorage(request.node.name)
    runs = []

    @cached(storage=store)
    def square(x):
        runs.append(x)
        return x * x

    assert square(3) == 9 and square(3) == 9 and runs == [3]
    assert square.is_cached(3)
    assert square.invalidate(3) and not square.is_cached(3)
    assert store.locks == {}


def test_seed_style_storage_computes_once_under_contention(request, caplog):
    caplog.set_level(logging.INFO, logger="labcache")
    store = MemoryLockingStorage(request.node.name)
    runs = []
    start = threading.Barrier(6)

    @cached(storage=store)
    def slow(x):
        runs.append(x)
        wait_until(lambda: waiting_threads(caplog) == 5, "the 5 other callers to wait",
                   timeout=15)
        return x + 1

    results = []

    def call():
        start.wait()
        results.append(slow(1))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == [2] * 6
    assert runs == [1]


def test_seed_style_storage_shares_the_holders_failure(request, caplog):
    caplog.set_level(logging.INFO, logger="labcache")
    store = MemoryLockingStorage(request.node.name)
    runs = []
    start = threading.Barrier(4)

    @cached(storage=store)
    def broken(x):
        runs.append(x)
        # Fail only once the others wait on this call: they must share its failure.
        wait_until(lambda: waiting_threads(caplog) == 3, "the 3 other callers to wait",
                   timeout=15)
        raise ArithmeticError("bad input")

    errors = []

    def call():
        start.wait()
        try:
            broken(1)
        except ArithmeticError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(errors) == 4
    assert runs == [1]
    assert not broken.is_cached(1)


def test_seed_style_storage_recovers_from_an_expired_lock(request):
    store = MemoryLockingStorage(request.node.name)

    @cached(storage=store, ttl=0.3)
    def work(x):
        return x

    from labcache.names import lock_name_for

    store.try_acquire_lock(lock_name_for(work.context, work.key(1)), ttl=0.3)  # a dead holder
    assert work(1) == 1


def test_storage_without_locks_still_caches(request):
    store = MemoryStorage(request.node.name)
    runs = []

    @cached(storage=store)
    def cube(x):
        runs.append(x)
        return x**3

    assert cube(2) == 8 and cube(2) == 8 and runs == [2]


def test_seed_names_and_defaults_are_kept():
    import inspect

    sig = inspect.signature(BaseLockingStorage.wait_for_unlock)
    assert [(p.name, p.default) for p in list(sig.parameters.values())[1:]] == [
        ("lock_name", inspect.Parameter.empty), ("timeout", 7200),
        ("initial_poll_interval", 0.5), ("max_poll_interval", 10.0), ("backoff_factor", 1.5),
    ]
    sig = inspect.signature(BaseLockingStorage.try_acquire_lock)
    assert [(p.name, p.default) for p in list(sig.parameters.values())[1:]] == [
        ("lock_name", inspect.Parameter.empty), ("ttl", 3600), ("heartbeat_interval", None),
    ]
    sig = inspect.signature(BaseStorage.upload_file)
    assert list(sig.parameters)[1:] == ["file", "file_name", "context", "direct_stream"]
    assert sig.parameters["direct_stream"].default is False
    assert BaseLockingStorage.__abstractmethods__ >= {
        "try_acquire_lock", "release_lock", "_is_locked", "get_root_path", "upload_file",
        "download_file", "list_stored_files", "get_file_by_hashcode", "check_if_exists",
        "delete_file",
    }
    store = MemoryLockingStorage("paths")
    assert store._get_lock_path("model_abc") == "locks/model_abc.lock"


@pytest.mark.parametrize("method", ["lock_info", "list_locks", "break_lock"])
def test_improvements_have_safe_defaults_for_seed_classes(method, request):
    store = MemoryLockingStorage(request.node.name)
    store.try_acquire_lock("x")
    result = getattr(store, method)(*(["x"] if method != "list_locks" else []))
    assert result in (None, [], True)
