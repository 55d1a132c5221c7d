"""A held lock that disappears (deleted by hand, evicted by Redis's memory
policy) is reported as such, never as "taken over after it went stale"; and
``labcache stats`` tells whether a Redis server may evict lock keys."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from labcache.lock_record import LockRecord, this_user

from .support.cli import run, run_json
from .support.procs import PATIENCE
from .support.services_redis import RedisServer

FOREIGN = LockRecord(this_user(), "elsewhere", "", 4242, "t0k3n", time.time(), 3600.0, None)


def remove_by_hand(storage: Any, name: str) -> None:
    """Delete a lock record behind labcache's back."""
    kind = type(storage).__name__
    if kind == "LocalStorage":
        (Path(storage.root) / "locks" / f"{name}.lock").unlink()
    elif kind == "RedisStorage":
        assert storage.client.delete(f"{storage.prefix}:locks/{name}.lock") == 1
    else:
        from .support.services_s3 import raw_client

        raw_client().delete_object(Bucket=storage.bucket,
                                   Key=f"{storage._base}locks/{name}.lock")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "labcache" and r.levelno == logging.WARNING]


def wait_for_warning(caplog: pytest.LogCaptureFixture, text: str) -> str:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        found = [m for m in warnings_of(caplog) if text in m]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no warning with {text!r}: {warnings_of(caplog)}")


def test_a_lock_deleted_while_beating_is_reported_as_disappeared(
        any_storage: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="labcache")
    assert any_storage.try_acquire_lock("held", ttl=60, heartbeat_interval=1.0)  # type: ignore[arg-type]
    remove_by_hand(any_storage, "held")
    said = wait_for_warning(caplog, "disappeared")
    assert said.startswith("lock held disappeared while this process held it (deleted by hand")
    assert "evicted" in said and said.endswith("stopping its heartbeat")
    any_storage.release_lock("held")
    assert [m for m in warnings_of(caplog) if "held" in m] == [said]  # said once, truthfully


def test_release_tells_gone_from_retaken_from_taken_over(
        any_storage: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="labcache")
    assert any_storage.try_acquire_lock("gone", ttl=60)
    remove_by_hand(any_storage, "gone")
    any_storage.release_lock("gone")
    assert warnings_of(caplog)[-1].startswith("lock gone disappeared while this process held it")

    # Evicted, then another process found it free and took it: not a takeover.
    assert any_storage.try_acquire_lock("retaken", ttl=60)
    remove_by_hand(any_storage, "retaken")
    assert any_storage._lock_create("retaken", FOREIGN.to_bytes()) is not None
    any_storage.release_lock("retaken")
    said = warnings_of(caplog)[-1]
    assert said.startswith("lock retaken disappeared while this process held it")
    assert f", and {FOREIGN.user}@elsewhere pid 4242 took it although it had not gone " \
        "stale;" in said
    assert any_storage.lock_info("retaken").token == FOREIGN.token  # theirs, left alone

    # A real takeover after the lock went stale is still called one.
    assert any_storage.try_acquire_lock("stale", ttl=0.3)  # type: ignore[arg-type]
    deadline = time.monotonic() + PATIENCE
    while (info := any_storage.lock_info("stale")) is not None and not info.stale:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    raw = any_storage._lock_read("stale")
    if type(any_storage).__name__ == "RedisStorage":
        assert raw is None  # Redis expires a stale lock by itself
    else:
        assert any_storage._lock_replace("stale", raw.version, FOREIGN.to_bytes())
    any_storage.release_lock("stale")
    said = warnings_of(caplog)[-1]
    if raw is None:
        assert said == "lock stale expired or was removed after it went stale; nothing to release"
    else:
        assert said == (f"lock stale was taken over by {FOREIGN.user}@elsewhere pid 4242 after "
                        "it went stale; nothing to release")
    assert not any("disappeared" in m for m in warnings_of(caplog) if "lock stale" in m)


# -- Redis as an LRU cache ---------------------------------------------------------------


def test_redis_lru_eviction_of_a_held_lock_is_reported_truthfully(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    redis = pytest.importorskip("redis")
    from labcache import RedisStorage

    server = RedisServer(tmp_path, ["--maxmemory-policy", "allkeys-lru"])
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory", client.info("memory")["used_memory"] + (1 << 20))
        storage = RedisStorage(server.url)
        caplog.set_level(logging.WARNING, logger="labcache")
        assert storage.try_acquire_lock("job", ttl=600)
        assert any("maxmemory-policy allkeys-lru may evict a held lock" in m
                   for m in warnings_of(caplog))  # told once, at the first lock
        key, filler = "labcache:locks/job.lock", b"x" * 4096
        for i in range(20000):  # fill the server until it evicts the lock
            client.set(f"junk:{i}", filler)
            if i % 20 == 0 and not client.exists(key):  # EXISTS leaves the LRU clock alone
                break
        assert not client.exists(key)
        storage.release_lock("job")
        said = warnings_of(caplog)[-1]
        assert said.startswith("lock job disappeared while this process held it")
        assert "maxmemory-policy" in said
        assert not any("taken over" in m for m in warnings_of(caplog))
    finally:
        server.stop()


def test_stats_shows_the_redis_eviction_policy_and_warns_when_unsafe(redis_server: Any) -> None:
    redis = pytest.importorskip("redis")
    from labcache import RedisStorage

    url, client = redis_server.url, redis.Redis.from_url(redis_server.url)
    safe = run_json("stats", url=url)
    assert (safe["server"], safe["warnings"]) == ({"maxmemory_policy": "noeviction"}, [])
    # Lock keys carry an expiry, which is why volatile-* policies can evict them too.
    storage = RedisStorage(url)
    assert storage.try_acquire_lock("job", ttl=600)
    assert client.pttl("labcache:locks/job.lock") > 0
    for policy in ("allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-lfu"):
        client.config_set("maxmemory-policy", policy)
        data = run_json("stats", url=url)
        assert data["server"] == {"maxmemory_policy": policy}
        [warning] = data["warnings"]
        assert warning.startswith(f"Redis maxmemory-policy {policy} may evict a held lock")
        assert "noeviction" in warning
        assert storage.lock_warnings() == [warning]
    text = run("stats", url=url).stdout
    assert "maxmemory policy" in text and "allkeys-lfu" in text
    assert "\nwarning: Redis maxmemory-policy allkeys-lfu may evict" in text
    storage.release_lock("job")


def test_stats_says_unknown_when_the_server_refuses_config(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from labcache import RedisStorage

    server = RedisServer(tmp_path, ["--rename-command", "CONFIG", ""])  # as managed servers do
    server.start()
    try:
        data = run_json("stats", url=server.url)
        assert (data["server"], data["warnings"]) == ({"maxmemory_policy": None}, [])
        assert "unknown" in run("stats", url=server.url).stdout
        caplog.set_level(logging.WARNING, logger="labcache")
        storage = RedisStorage(server.url)
        assert storage.try_acquire_lock("job", ttl=60)
        storage.release_lock("job")
        assert warnings_of(caplog) == []
    finally:
        server.stop()
