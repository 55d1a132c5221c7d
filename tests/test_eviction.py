"""Least-recently-used eviction: size strings, LRU order on every backend,
locked keys kept, concurrent readers unharmed, and ``@cached(max_size=...)``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, cached, entry
from labcache.eviction import evict
from labcache.formatting import parse_age, parse_size
from labcache.names import lock_name_for

from .support.used_order import CONTEXT, PAYLOAD, make_used_order


@pytest.mark.parametrize(("text", "expected"), [
    ("5GB", 5 * 10**9), ("500 MB", 500 * 10**6), ("1.5GiB", int(1.5 * 2**30)), ("10kb", 10**4),
    ("123", 123), (" 2 TiB ", 2 * 2**40), (0, 0), (4096, 4096),
])
def test_sizes_parse(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "5 XB", "five GB", "-5GB", "5GB5", "1e3", -1, True])
def test_nonsense_sizes_are_refused_with_a_hint(text: Any) -> None:
    with pytest.raises(ValueError, match=r"size"):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", 30 * 86400.0), ("12h", 43200.0), ("90 m", 5400.0), ("45s", 45.0), ("2w", 1209600.0),
    (7, 7.0),
])
def test_ages_parse(text: Any, expected: float) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "3 years", "-1d"])
def test_nonsense_ages_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"as an age; write a number and a unit"):
        parse_age(text)


def test_evict_needs_a_limit(storage: LocalStorage) -> None:
    with pytest.raises(ValueError, match="max_size, older_than"):
        evict(storage, CONTEXT)


# -- LRU order on each backend ----------------------------------------------------------


def test_least_recently_used_goes_first(any_storage: Any) -> None:
    make_used_order(any_storage, ("a", "b", "c"), reread="a")
    done = evict(any_storage, CONTEXT, max_size=2 * len(PAYLOAD))
    assert [s.name for _, s in done.removed] == ["b"]
    assert any_storage.list_stored_files(CONTEXT) == ["a", "c"]
    assert done.total_before == 3 * len(PAYLOAD) and done.total_after == 2 * len(PAYLOAD)


def test_a_locked_key_is_skipped(any_storage: Any) -> None:
    make_used_order(any_storage, ("a", "b", "c"), reread="c")
    oldest = "a"  # stored first; every backend agrees it was used least recently
    assert any_storage.try_acquire_lock(lock_name_for(CONTEXT, oldest), ttl=600)
    try:
        done = evict(any_storage, CONTEXT, max_size=2 * len(PAYLOAD))
    finally:
        any_storage.release_lock(lock_name_for(CONTEXT, oldest))
    assert [s.name for _, s in done.skipped] == [oldest]
    assert oldest in any_storage.list_stored_files(CONTEXT)
    assert len(any_storage.list_stored_files(CONTEXT)) == 2


def test_listing_does_not_count_as_use(any_storage: Any) -> None:
    """Reading headers for ``ls``/``info`` must not reorder the LRU queue."""
    for name in ("a", "b"):
        any_storage.upload_file(entry.encode(name, {"function": "f"}), name, CONTEXT)
    redis = type(any_storage).__name__ == "RedisStorage"
    if redis:
        time.sleep(2.1)  # idle for 2 s: a listing that touched them would reset that
    before = {s.name: s.last_used for s in any_storage.describe_entries(CONTEXT)}
    any_storage.read_entry_header("a", CONTEXT)
    after = {s.name: s.last_used for s in any_storage.describe_entries(CONTEXT)}
    if redis:
        # Idle times are whole seconds.  Reading a header leaves them alone on
        # Redis 7.2+ (CLIENT NO-TOUCH) only, so "a" is not checked here.
        assert abs(after["b"] - before["b"]) < 1.0
    else:
        assert after == before


def test_older_than_removes_entries_unused_for_that_long(storage: LocalStorage) -> None:
    make_used_order(storage, ("a", "b", "c"), reread="b")
    done = evict(storage, CONTEXT, older_than="30m")
    assert sorted(s.name for _, s in done.removed) == ["a", "c"]
    assert storage.list_stored_files(CONTEXT) == ["b"]


def test_dry_run_removes_nothing(storage: LocalStorage) -> None:
    make_used_order(storage, ("a", "b", "c"), reread="a")
    done = evict(storage, None, max_size="1kB", dry_run=True)
    assert [s.name for _, s in done.removed] == ["b", "c"]
    assert storage.list_stored_files(CONTEXT) == ["a", "b", "c"]


def test_whole_storage_limit_spans_functions(storage: LocalStorage) -> None:
    for context in ("m.f", "m.g"):
        for name in ("k1", "k2"):
            storage.upload_file(PAYLOAD, name, context)
    done = evict(storage, max_size=3 * len(PAYLOAD))
    assert len(done.removed) == 1 and done.total_after == 3 * len(PAYLOAD)


# -- readers that already opened an entry --------------------------------------------------


def test_local_reader_with_the_file_open_still_gets_its_value(storage: LocalStorage) -> None:
    big = os.urandom(3 << 20)  # past the one-read size: a hit keeps the file open
    storage.upload_file(entry.encode(big, {"function": "f"}), "big", CONTEXT)
    reading = storage.open_entry("big", CONTEXT)
    assert hasattr(reading, "read")
    evict(storage, CONTEXT, max_size=0)
    assert storage.list_stored_files(CONTEXT) == []
    with reading:
        value, _ = entry.decode(reading)
    assert value == big


def test_redis_reader_streaming_chunks_still_gets_its_value(redis_storage: Any) -> None:
    big = os.urandom(3 << 20)  # past the inline limit: a manifest and chunks
    redis_storage.upload_file(big, "big", CONTEXT)
    reading = redis_storage.get_file_by_hashcode("big", CONTEXT)  # manifest read, chunks not
    evict(redis_storage, CONTEXT, max_size=0)
    assert redis_storage.list_stored_files(CONTEXT) == []
    assert reading.read() == big


# -- @cached(max_size=...) ------------------------------------------------------------------


def _blob(i: int) -> bytes:
    return bytes([i % 256]) * 4000


def test_max_size_keeps_a_function_under_its_limit(storage: LocalStorage) -> None:
    limit = 13_000
    blob = cached(storage=storage, max_size=limit)(_blob)
    for i in range(8):
        assert blob(i) == _blob(i)
        sizes = [s.size or 0 for s in storage.describe_entries(blob.context)]
        assert sum(sizes) <= limit
        assert blob.is_cached(i)  # the entry just stored always stays
    assert 1 < len(storage.list_stored_files(blob.context)) < 8


def _entry_size(tmp_path: Path) -> int:
    probe = cached(storage=LocalStorage(tmp_path / "probe"))(_blob)
    probe(0)
    return sum(s.size or 0 for s in probe.storage.describe_entries(probe.context))


def test_max_size_evicts_the_least_recently_used(storage: LocalStorage, tmp_path: Path) -> None:
    blob = cached(storage=storage, max_size=3 * _entry_size(tmp_path) + 100)(_blob)
    for i in range(3):
        blob(i)
    for name in storage.list_stored_files(blob.context):  # all stored an hour ago
        then = time.time() - 3600
        os.utime(storage.entry_path(name, blob.context), (then, then))
    blob(0)  # a hit: 0 is now the most recently used
    blob(3)  # a miss stores a fourth entry: one must go, and it is not 0
    assert blob.is_cached(0) and blob.is_cached(3)
    assert len(storage.list_stored_files(blob.context)) == 3


def test_max_size_on_an_async_function(storage: LocalStorage) -> None:
    async def ablob(i: int) -> bytes:
        return _blob(i)

    limited = cached(storage=storage, max_size="9kB")(ablob)
    for i in range(4):
        asyncio.run(limited(i))
    assert sum(s.size or 0 for s in storage.describe_entries(limited.context)) <= 9000
    assert limited.is_cached(3)


def _over_the_limit(storage: LocalStorage, func: Any) -> None:
    """Store four entries of ``func`` without a limit (about 16 kB)."""
    unlimited = cached(storage=storage)(func)
    for i in range(4):
        result = unlimited(i)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert _total(storage, unlimited.context) > 9000


def _total(storage: LocalStorage, context: str) -> int:
    return sum(s.size or 0 for s in storage.describe_entries(context))


async def _ablob(i: int) -> bytes:
    return _blob(i)


@pytest.mark.parametrize("func", [_blob, _ablob], ids=["sync", "async"])
def test_refresh_keeps_a_function_under_max_size(storage: LocalStorage, func: Any) -> None:
    _over_the_limit(storage, func)
    limited = cached(storage=storage, max_size="9kB")(func)
    result = limited.refresh(3)
    assert (asyncio.run(result) if asyncio.iscoroutine(result) else result) == _blob(3)
    assert _total(storage, limited.context) <= 9000
    assert limited.is_cached(3)  # the entry just stored stays


def test_a_stale_refresh_keeps_a_function_under_max_size(storage: LocalStorage) -> None:
    from labcache._stale import wait_for_refreshes

    _over_the_limit(storage, _blob)
    stored_by = time.time()  # every entry was created before this
    limited = cached(storage=storage, max_size="9kB", stale_after=0.001)(_blob)
    while time.time() - stored_by <= 0.001:  # every entry is stale from now on
        time.sleep(0.001)
    assert limited(3) == _blob(3)  # the stale entry, refreshed in the background
    assert wait_for_refreshes(timeout=30)
    assert _total(storage, limited.context) <= 9000
    assert limited.is_cached(3)


def test_max_size_refuses_nonsense_at_decoration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read 'big' as a size"):
        cached(storage=LocalStorage(tmp_path), max_size="big")(_blob)


def test_s3_use_markers_are_hidden_throttled_and_removed_with_their_entry(s3_storage: Any) -> None:
    s3_storage.upload_file(PAYLOAD, "a", CONTEXT)
    s3_storage.open_entry("a", CONTEXT).close()
    marker = s3_storage._marker_key("a", CONTEXT)
    s3_storage._s3().head_object(Bucket=s3_storage.bucket, Key=marker)  # left by the hit
    assert s3_storage.list_contexts() == [CONTEXT]
    assert s3_storage.list_stored_files(CONTEXT) == ["a"]
    (stat,) = s3_storage.describe_entries(CONTEXT)
    assert stat.accessed is not None and stat.accessed >= stat.modified
    s3_storage._s3().delete_object(Bucket=s3_storage.bucket, Key=marker)
    s3_storage.open_entry("a", CONTEXT).close()  # a second hit soon after: no new PUT
    assert s3_storage.describe_entries(CONTEXT)[0].accessed is None
    s3_storage.open_entry("a", CONTEXT).close()
    s3_storage.__dict__["_marked"].clear()  # as if 10 minutes had passed
    s3_storage.open_entry("a", CONTEXT).close()
    s3_storage.delete_file("a", CONTEXT)
    listed = s3_storage._s3().list_objects_v2(Bucket=s3_storage.bucket).get("Contents", ())
    assert [item["Key"] for item in listed] == []


def test_redis_entries_stored_without_a_recorded_size_are_measured_once(
        redis_storage: Any) -> None:
    redis_storage.upload_file(PAYLOAD, "new", CONTEXT)
    # As an older labcache stored it: the value alone, no size beside it.
    redis_storage.client.set(redis_storage._entry_key("old", CONTEXT), b"I" + PAYLOAD * 2)
    sizes = {s.name: s.size for s in redis_storage.describe_entries(CONTEXT)}
    assert sizes == {"new": len(PAYLOAD), "old": 2 * len(PAYLOAD)}
    recorded = redis_storage.client.hgetall(redis_storage._sizes_key(CONTEXT))
    assert recorded == {b"new": b"1000", b"old": b"2000"}
    redis_storage.delete_file("old", CONTEXT)
    assert redis_storage.client.hkeys(redis_storage._sizes_key(CONTEXT)) == [b"new"]
