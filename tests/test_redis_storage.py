"""What is specific to RedisStorage: chunking, pub/sub wake-up, outages.

The protocol itself (one computation, takeover, shared failures...) is in
the conformance suite, which runs on Redis too.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from labcache import CacheWarning, StorageError, cached, open_storage
from tests.support.services_redis import RedisServer
from tests.support.waits import wait_until

redis = pytest.importorskip("redis")
from labcache.storage.redis import RedisStorage  # noqa: E402


def test_entries_larger_than_the_value_limit_are_chunked(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        # Shrink the server's limit on one value to 1 MB (its smallest
        # setting) to stand for the real 512 MB one.
        client = redis.Redis.from_url(server.url)
        client.config_set("proto-max-bulk-len", 1 << 20)
        chunked = RedisStorage(server.url, prefix="small", chunk_size=512 << 10)
        payload = np.random.default_rng(0).bytes(5 << 20)
        chunked.upload_file(payload, "big", "ctx")
        assert chunked.download_file("big", "ctx") == payload
        with chunked.get_file_by_hashcode("big", "ctx") as stream:
            target = bytearray(len(payload))
            assert stream.readinto(target) == len(payload)
        assert bytes(target) == payload
        too_big = RedisStorage(server.url, prefix="whole", chunk_size=8 << 20)
        with pytest.raises(StorageError, match="Redis at"):
            too_big.upload_file(payload, "big", "ctx")
    finally:
        server.stop()


def test_replacing_a_chunked_entry_retires_old_chunks(redis_server):
    storage = RedisStorage(redis_server.url, prefix="r", chunk_size=1 << 20)
    client = redis.Redis.from_url(redis_server.url)
    storage.upload_file(b"a" * (3 << 20), "e", "ctx")
    storage.upload_file(b"b" * (3 << 20), "e", "ctx")
    assert storage.download_file("e", "ctx") == b"b" * (3 << 20)
    lingering = [k for k in client.scan_iter("r:c:*") if client.ttl(k) > 0]
    assert len(lingering) == 3  # the old generation expires, readers can finish
    storage.delete_file("e", "ctx")
    assert set(client.scan_iter("r:c:*")) == {k for k in lingering if client.exists(k)}
    with pytest.raises(FileNotFoundError):
        storage.delete_file("e", "ctx")


def test_listing_uses_scan_and_keeps_contexts_apart(redis_storage):
    for name in ("b", "a", "c"):
        redis_storage.upload_file(b"x", name, "ctx")
    redis_storage.upload_file(b"x", "other", "ctx:sub")
    redis_storage.upload_file(b"x", "glob", "c*x")
    assert redis_storage.list_stored_files("ctx") == ["a", "b", "c"]
    assert redis_storage.list_stored_files("ctx:sub") == ["other"]
    assert redis_storage.list_stored_files("c*x") == ["glob"]
    assert redis_storage.list_stored_files("nothing") == []


def test_a_lock_expires_by_itself_and_pttl_is_its_heartbeat(redis_storage):
    assert redis_storage.try_acquire_lock("hb", ttl=0.3, heartbeat_interval=0.5)
    time.sleep(2.0)  # far past ttl: the heartbeat keeps extending it
    info = redis_storage.lock_info("hb")
    assert info is not None and not info.stale
    assert time.time() - info.heartbeat < 1.5  # beats came (the key would be gone otherwise)
    redis_storage.release_lock("hb")
    assert redis_storage.try_acquire_lock("short", ttl=0.2)
    redis_storage._held.clear()  # forget it, as a killed process would
    wait_until(lambda: redis_storage.lock_info("short") is None,
               "Redis to expire the forgotten lock")


def test_release_is_published_to_waiters(redis_storage):
    assert redis_storage.try_acquire_lock("wake")
    woke = []
    waiter = threading.Thread(
        target=lambda: (redis_storage.wait_for_release("wake", 30), woke.append(True)))
    waiter.start()
    wait_until(lambda: redis_storage.client.pubsub_channels("*:released:wake"),
               "the waiter to subscribe to the lock's channel")
    waiter.join(0.3)  # time for a wrong early wake-up to show
    assert not woke
    redis_storage.release_lock("wake")
    waiter.join(10)
    assert woke == [True]  # woken by the message, long before 30 s


def test_urls_and_secrets(redis_server):
    storage = open_storage(redis_server.url)
    assert isinstance(storage, RedisStorage)
    assert storage is open_storage(redis_server.url)
    with pytest.raises(ValueError, match="no host"):
        open_storage("redis://")
    secret = RedisStorage("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(secret) and "hunter2" not in secret.get_root_path()
    with pytest.raises(StorageError) as caught:
        secret.check_if_exists("k", "ctx")
    assert "hunter2" not in str(caught.value)


def test_unreachable_server_is_a_clear_error(tmp_path):
    from tests.support.services_redis import free_port

    down = RedisStorage(f"redis://127.0.0.1:{free_port()}/0")

    @cached(storage=down)
    def tolerant(x):
        return x * 2

    @cached(storage=down, on_storage_error="raise")
    def strict(x):
        return x * 2

    with pytest.warns(CacheWarning, match="storage failed"):
        assert tolerant(2) == 4
    with pytest.raises(StorageError, match="reachable"):
        strict(2)


def test_server_restart_mid_run(redis_server):
    storage = RedisStorage(redis_server.url, prefix="restart")
    runs = []

    @cached(storage=storage)
    def square(x):
        runs.append(x)
        return x * x

    @cached(storage=storage, on_storage_error="raise")
    def strict(x):
        return x + 1

    assert [square(i) for i in range(3)] == [0, 1, 4]
    redis_server.stop()
    with pytest.warns(CacheWarning):
        assert square(3) == 9  # computed uncached while the server is down
    with pytest.raises(StorageError):
        strict(1)
    redis_server.start()  # same port, empty (no persistence)
    assert [square(i) for i in range(5)] == [0, 1, 4, 9, 16]
    assert square(4) == 16
    assert runs == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert storage.list_locks() == []


def test_built_from_an_existing_client(redis_server):
    import pickle

    client = redis.Redis.from_url(redis_server.url)
    storage = RedisStorage(client, prefix="fromclient")
    storage.upload_file(b"v", "k", "ctx")
    assert storage.download_file("k", "ctx") == b"v"
    copy = pickle.loads(pickle.dumps(storage))  # as a spawned process gets it
    assert copy.download_file("k", "ctx") == b"v"


def test_header_and_size_of_a_chunked_entry(redis_server):
    from labcache import entry

    # compress=False: zeros would shrink to one small inline value
    storage = RedisStorage(redis_server.url, prefix="hdr", chunk_size=1 << 20, compress=False)
    encoded = entry.encode(np.zeros(600_000), {"function": "big"})
    storage.upload_file(encoded, "k", "ctx")
    assert storage.read_entry_header("k", "ctx").meta == {"function": "big"}
    [stat] = storage.describe_entries("ctx")
    assert (stat.name, stat.size) == ("k", encoded.size)
    assert storage.list_contexts() == ["ctx"]


def test_entry_names_holding_a_colon_list_under_their_own_context(redis_storage):
    """Contexts are quoted in keys, names are not: a listing cuts the key at
    the context's end, not at the name's last ':'."""
    redis_storage.upload_file(b"v", "a:b", "ctx")
    redis_storage.upload_file(b"w", "c", "ctx/sub")
    assert redis_storage.list_contexts() == ["ctx", "ctx/sub"]
    assert redis_storage.list_stored_files("ctx") == ["a:b"]
    assert [stat.name for stat in redis_storage.describe_entries("ctx")] == ["a:b"]


# -- key prefixes ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["team:e:ctx", "team:", "te*m", "te?m", "[t]", "a b", "x/y",
                                    "", ".hidden", "é", "t" * 65])
def test_unsafe_prefixes_are_refused_before_any_request(prefix):
    port = 1  # nothing listens there: a request would fail with StorageError instead
    with pytest.raises(ValueError, match="prefix") as caught:
        RedisStorage(f"redis://127.0.0.1:{port}/0", prefix=prefix)
    assert "e.g. prefix='team'" in str(caught.value)
    with pytest.raises(ValueError, match="prefix"):
        open_storage(f"redis://127.0.0.1:{port}/0?prefix={prefix}")


def test_prefix_in_the_url_is_the_same_storage(redis_server):
    url = redis_server.url
    storage = open_storage(f"{url}?prefix=team")
    assert storage is RedisStorage(url, prefix="team") is RedisStorage(f"{url}?prefix=team")
    assert storage.prefix == "team" and storage.url == url
    assert open_storage(url).prefix == "labcache"
    storage.upload_file(b"v", "k", "ctx")
    assert RedisStorage(url, prefix="team").download_file("k", "ctx") == b"v"
    for bad in (f"{url}?prefix=a&prefix=b", f"{url}?prefix="):
        with pytest.raises(ValueError, match="prefix"):
            open_storage(bad)
    with pytest.raises(ValueError, match="'other'"):
        RedisStorage(f"{url}?prefix=team", prefix="other")


#: Prefixes a careless match ("team*", or a ':' inside a prefix) would mix up.
NEIGHBOURS = ("team", "team2", "team-x", "team.e")


def _fill(storage, tag):
    @cached(storage=storage)
    def work(x):
        return x

    work(1), work(2)
    storage.upload_file(tag.encode(), "k", "ctx")
    assert storage.try_acquire_lock("shared-name", ttl=600)
    return work


def test_neighbouring_prefixes_never_see_each_others_keys(redis_server):
    storages = {p: RedisStorage(redis_server.url, prefix=p) for p in NEIGHBOURS}
    works = {p: _fill(s, p) for p, s in storages.items()}
    for prefix, storage in storages.items():
        assert storage.list_stored_files("ctx") == ["k"]
        assert storage.download_file("k", "ctx") == prefix.encode()
        assert set(storage.list_contexts()) == {"ctx", works[prefix].context}
        assert len(storage.describe_entries(works[prefix].context)) == 2
        assert [lock.name for lock in storage.list_locks()] == ["shared-name"]
    assert works["team"].clear() == 2  # clearing one prefix's function...
    assert storages["team"].break_lock("shared-name")  # ... and breaking its lock
    for prefix in NEIGHBOURS[1:]:  # leave every neighbour alone
        assert len(storages[prefix].list_stored_files(works[prefix].context)) == 2
        assert storages[prefix].lock_info("shared-name") is not None
        storages[prefix].release_lock("shared-name")
