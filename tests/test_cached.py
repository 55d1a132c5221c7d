"""@cached in one process: options, helpers, failures and async callers."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time

import numpy as np
import pytest

from labcache import (
    CacheWarning,
    LocalStorage,
    StorageError,
    UnpicklableResultError,
    cached,
    open_storage,
    stats,
)
from labcache.names import lock_name_for

from .support.waits import wait_until, waiting_threads


class Counter:
    """Counts how often a body ran."""

    def __init__(self):
        self.calls = 0

    def __call__(self, value=None):
        self.calls += 1
        return value


def test_hit_after_miss_and_none_is_cached(storage):
    runs = Counter()

    @cached(storage=storage)
    def nothing(x):
        return runs(None)

    assert nothing(1) is None
    assert nothing(1) is None
    assert runs.calls == 1
    assert nothing.is_cached(1)


def test_bare_decorator_uses_the_default_folder(private_default_dir):
    @cached
    def double(x):
        return 2 * x

    assert double(21) == 42
    assert double.storage.get_root_path() == str(private_default_dir)
    assert double.__wrapped__(1) == 2


def test_storage_given_as_url(tmp_path):
    @cached(storage=f"file://{tmp_path}/by-url")
    def double(x):
        return 2 * x

    assert double(2) == 4
    assert double.storage is open_storage(f"file://{tmp_path}/by-url")
    assert double.is_cached(2)


def test_invalidate_refresh_and_clear(storage):
    runs = Counter()

    @cached(storage=storage)
    def square(x):
        runs()
        return x * x

    assert [square(i) for i in range(3)] == [0, 1, 4]
    assert square.invalidate(1) is True
    assert square.invalidate(1) is False
    assert not square.is_cached(1)
    assert square(1) == 1 and runs.calls == 4
    assert square.refresh(2) == 4 and runs.calls == 5
    assert square(2) == 4 and runs.calls == 5
    assert square.clear() == 3
    assert not any(square.is_cached(i) for i in range(3))


def test_new_source_version_keeps_old_entries(storage):
    def body(x):
        return x

    old = cached(storage=storage, version=1)(body)
    new = cached(storage=storage, version=2)(body)
    old(5)
    new(5)
    assert old.context == new.context
    assert old.is_cached(5) and new.is_cached(5)
    assert len(storage.list_stored_files(old.context)) == 2


def test_expires_after_makes_old_entries_a_miss(storage):
    runs = Counter()

    def stamp(x):
        runs()
        return x

    # Two views of one entry (expires_after is not part of the key): the
    # lenient one proves a hit without racing a short expiry on a slow
    # machine, the strict one that age alone makes the same entry a miss.
    lenient = cached(storage=storage, expires_after=3600)(stamp)
    strict = cached(storage=storage, expires_after=0.05)(stamp)
    assert lenient.key(1) == strict.key(1)
    lenient(1)
    lenient(1)
    assert runs.calls == 1
    wait_until(lambda: not strict.is_cached(1), "the entry to be older than 0.05 s")
    assert lenient.is_cached(1)  # still stored: only its age makes it a miss
    strict(1)
    assert runs.calls == 2


def test_exception_releases_the_lock_and_is_not_cached(storage):
    runs = Counter()

    @cached(storage=storage)
    def fragile(x):
        runs()
        if runs.calls == 1:
            raise KeyError("first time")
        return x

    with pytest.raises(KeyError):
        fragile(1)
    assert storage.list_locks() == []
    assert not fragile.is_cached(1)
    assert fragile(1) == 1
    assert runs.calls == 2


def test_unpicklable_result_is_a_clear_error_leaving_nothing(storage):
    @cached(storage=storage)
    def make_lock():
        return threading.Lock()

    with pytest.raises(UnpicklableResultError, match="cannot be pickled"):
        make_lock()
    assert storage.list_locks() == []
    assert not make_lock.is_cached()


def test_waiter_loads_what_the_holder_stored(storage, caplog):
    caplog.set_level(logging.INFO, logger="labcache")
    runs = Counter()

    @cached(storage=storage)
    def value(x):
        runs()
        return x * 3

    name = lock_name_for(value.context, value.key(2))
    assert storage.try_acquire_lock(name)

    results = []
    waiter = threading.Thread(target=lambda: results.append(value(2)))
    waiter.start()
    wait_until(lambda: waiting_threads(caplog) == 1, "the caller to wait on the held lock")
    # Play the holder: store the entry, then release.
    from labcache.call import Call
    from labcache.options import CacheOptions
    from labcache.report import Reporter
    from labcache.transfer import store

    call = Call(storage=storage, context=value.context, key=value.key(2), function="value",
                options=CacheOptions(heartbeat_interval=None, wait_timeout=60),
                metadata=dict, reporter=Reporter("value"))
    store(call, "from-holder", 0.1)
    storage.release_lock(name)
    waiter.join(10)
    assert results == ["from-holder"]
    assert runs.calls == 0


def test_storage_failure_computes_with_a_warning_or_raises(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage root should be")
    broken = LocalStorage(blocker / "store")

    @cached(storage=broken)
    def tolerant(x):
        return x + 1

    @cached(storage=broken, on_storage_error="raise")
    def strict(x):
        return x + 1

    with pytest.warns(CacheWarning, match="storage failed"):
        assert tolerant(1) == 2
    with pytest.raises(StorageError, match="storage failed"):
        strict(1)


def test_corrupt_entry_is_recomputed_with_a_warning(storage):
    runs = Counter()

    @cached(storage=storage)
    def data(x):
        runs()
        return np.arange(x)

    data(10)
    path = storage.entry_path(data.key(10), data.context)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40
    path.write_bytes(raw)
    with pytest.warns(CacheWarning, match="unusable"):
        assert (data(10) == np.arange(10)).all()
    assert runs.calls == 2
    assert (data(10) == np.arange(10)).all()
    assert runs.calls == 2


def test_unsigned_entries_are_refused_under_a_secret(storage, monkeypatch):
    runs = Counter()

    @cached(storage=storage)
    def secret_work(x):
        runs()
        return x

    secret_work(1)
    monkeypatch.setenv("LABCACHE_SECRET", "team-secret")
    with pytest.warns(CacheWarning, match="not signed"):
        secret_work(1)
    assert runs.calls == 2
    secret_work(1)
    assert runs.calls == 2
    monkeypatch.setenv("LABCACHE_SECRET", "another-secret")
    with pytest.warns(CacheWarning, match="signature does not match"):
        secret_work(1)
    assert runs.calls == 3


class Model:
    def __init__(self, scale):
        self.scale = scale
        self.runs = 0

    @cached
    def predict(self, x):
        return self.scale * x


def test_methods_key_on_the_instance_state():
    small, large = Model(2), Model(3)
    assert small.predict(5) == 10
    assert large.predict(5) == 15
    assert small.predict.key(5) != large.predict.key(5)
    assert small.predict.is_cached(5)
    assert Model(2).predict.is_cached(5)
    assert small.predict.invalidate(5)
    assert not small.predict.is_cached(5)


def test_async_functions_wait_without_blocking_the_loop(storage):
    runs = Counter()

    @cached(storage=storage)
    async def fetch(x):
        runs()
        await asyncio.sleep(0.01)
        return x + 1

    assert inspect.iscoroutinefunction(fetch) or asyncio.iscoroutinefunction(fetch)
    name = lock_name_for(fetch.context, fetch.key(1))
    assert storage.try_acquire_lock(name)
    ticks = []

    async def ticker():
        for _ in range(20):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)
        storage.release_lock(name)

    async def main():
        return await asyncio.gather(fetch(1), ticker())

    result, _ = asyncio.run(main())
    assert result == 2
    assert len(ticks) == 20  # the loop kept running while fetch waited
    assert runs.calls == 1
    assert asyncio.run(fetch(1)) == 2
    assert runs.calls == 1


def test_stats_count_hits_and_misses(storage):
    @cached(storage=storage)
    def ident(x):
        return x

    before = (stats.hits, stats.misses)
    ident(1)
    ident(1)
    assert (stats.hits - before[0], stats.misses - before[1]) == (1, 1)


def test_bad_options_are_refused():
    def f(x):
        return x

    with pytest.raises(ValueError, match="on_storage_error"):
        cached(on_storage_error="ignore")(f)
    with pytest.raises(ValueError, match="ttl"):
        cached(ttl=0)(f)
    with pytest.raises(TypeError, match="storage"):
        cached(storage=42)(f)


def test_entry_copied_over_another_key_is_refused(storage):
    runs = Counter()

    @cached(storage=storage)
    def ident(x):
        runs()
        return x

    ident(1)
    ident(2)
    one = storage.entry_path(ident.key(1), ident.context)
    two = storage.entry_path(ident.key(2), ident.context)
    two.write_bytes(one.read_bytes())  # a genuine entry, under the wrong key
    with pytest.warns(CacheWarning, match="result of key"):
        assert ident(2) == 2
    assert runs.calls == 3


@pytest.mark.parametrize("mode", ["r", "c"])
def test_mmap_mode_maps_array_results_from_the_entry_file(storage, mode):
    runs = Counter()

    @cached(storage=storage, mmap_mode=mode)
    def ramp(n):
        runs()
        return {"ramp": np.arange(n, dtype=np.float64), "n": n}

    first = ramp(200_000)  # the miss returns the computed value itself
    assert first["ramp"].flags.writeable
    hit = ramp(200_000)
    assert runs.calls == 1
    assert hit["n"] == 200_000
    np.testing.assert_array_equal(hit["ramp"], np.arange(200_000, dtype=np.float64))
    # The array is backed by the entry file's mapping, not by a private copy.
    assert not hit["ramp"].flags.owndata
    assert hit["ramp"].flags.writeable is (mode == "c")
    if mode == "c":  # copy on write: changing it never reaches the stored entry
        hit["ramp"][0] = -1.0
        assert ramp(200_000)["ramp"][0] == 0.0
    else:
        with pytest.raises(ValueError, match="read-only"):
            hit["ramp"][0] = -1.0
    # Deleting the entry under a live mapping keeps the mapped data intact.
    assert ramp.invalidate(200_000)
    assert hit["ramp"][-1] == 199_999.0


def test_mmap_mode_of_a_corrupt_entry_is_a_recomputed_miss(storage):
    runs = Counter()

    @cached(storage=storage, mmap_mode="r")
    def ramp(n):
        runs()
        return np.arange(n)

    ramp(1000)
    path = storage.entry_path(ramp.key(1000), ramp.context)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="checksum"):
        np.testing.assert_array_equal(ramp(1000), np.arange(1000))
    path.write_bytes(b"")
    with pytest.warns(CacheWarning):
        np.testing.assert_array_equal(ramp(1000), np.arange(1000))
    assert runs.calls == 3


def test_bad_mmap_mode_is_refused():
    with pytest.raises(ValueError, match="mmap_mode"):
        cached(mmap_mode="w+")(lambda x: x)
