"""S3Storage against a real HTTP S3 endpoint (a moto server, see services_s3).

Entries, listing and deletion; locks made of conditional writes (create,
conflict, release by token, takeover of a stale lock by exactly one of eight
spawned processes, heartbeat); ``@cached`` across processes; and what an
endpoint that is down, a missing bucket or a store without conditional
deletes does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from labcache import CacheWarning, InvalidNameError, StorageError, cached, entry, open_storage
from labcache.lock_record import LockRecord
from tests.support import workers
from tests.support.procs import CTX, PATIENCE, collect, dead_pid, reaping
from tests.support.services_s3 import CREDENTIALS, moto_endpoint, raw_client, require_s3

require_s3()  # a clear skip (or failure in CI) rather than an import error
from labcache.storage.s3 import S3Storage  # noqa: E402

SECRET = "Sup3rS3cret-never-shown"
FOREIGN_HOST = workers.FOREIGN_HOST


# -- helpers (module level, so spawned processes can import them) --------------------------


def s3_square(x: int, log_dir: str) -> dict[str, Any]:
    """A cached body: logs each run, takes a moment."""
    workers.log_computation(log_dir)
    time.sleep(0.5)
    return {"square": x * x, "pid": os.getpid()}


def call_cached_square(storage: S3Storage, x: int, log_dir: str, barrier: Any,
                       queue: Any) -> None:
    """In a spawned process: the storage arrived pickled; call ``s3_square(x)``."""
    try:
        f = cached(storage=storage, ttl=60, heartbeat_interval=1)(s3_square)
        barrier.wait(PATIENCE)
        queue.put(("result", os.getpid(), f(x, log_dir)["square"]))
    except BaseException as exc:
        queue.put(("crash", os.getpid(), repr(exc)))


def steal_in_rounds(storage: S3Storage, rounds: int, barrier: Any, queue: Any) -> None:
    """In a spawned process: per round, try the stale lock once (see the test)."""
    try:
        storage.lock_info("race")  # make the client now, not during the race
        for rnd in range(rounds):
            barrier.wait(PATIENCE)
            won = storage.try_acquire_lock("race", ttl=3600)
            queue.put(("tried", os.getpid(), (rnd, won, storage.held_token("race"))))
            barrier.wait(PATIENCE)  # everybody tried
            barrier.wait(PATIENCE)  # the test looked at the lock
            if won:
                storage.release_lock("race")
            barrier.wait(PATIENCE)  # released
    except BaseException as exc:
        barrier.abort()
        queue.put(("crash", os.getpid(), repr(exc)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def down_storage(**options: Any) -> S3Storage:
    """A storage whose endpoint is a loopback port nobody listens on."""
    options = {**CREDENTIALS, **options}
    return S3Storage("s3://labcache-down/p", endpoint_url=f"http://127.0.0.1:{free_port()}",
                     **options)


def lock_key(storage: S3Storage, name: str) -> str:
    return f"{storage.prefix}/locks/{name}.lock"


def plant(storage: S3Storage, name: str, data: bytes) -> None:
    """Put a lock record in place as a holder would have (fails if one is there)."""
    assert storage._lock_create(name, data) is not None


def foreign_record(**changes: Any) -> LockRecord:
    return dataclasses.replace(LockRecord.new(3600, None), host=FOREIGN_HOST, **changes)


# -- entries ---------------------------------------------------------------------------------


def test_entry_round_trip(s3_storage: S3Storage) -> None:
    encoded = entry.encode({"answer": 42}, {"function": "demo"})
    assert s3_storage.upload_file(encoded, "enc", "demo") == "enc"
    assert s3_storage.upload_file(b"plain bytes", "raw", "demo") == "raw"
    assert s3_storage.upload_file(io.BytesIO(b"from a file"), "file", "demo") == "file"
    assert s3_storage.download_file("enc", "demo") == bytes(encoded)
    assert s3_storage.download_file("raw", "demo") == b"plain bytes"
    with contextlib.closing(s3_storage.get_file_by_hashcode("enc", "demo")) as source:
        assert entry.decode(source)[0] == {"answer": 42}
    with contextlib.closing(s3_storage.get_file_by_hashcode("file", "demo")) as source:
        target = bytearray(4)
        assert source.readinto(target) == 4 and target == b"from"
        assert source.read() == b" a file"
    s3_storage.upload_file(b"replaced", "raw", "demo")
    assert s3_storage.download_file("raw", "demo") == b"replaced"
    assert s3_storage.check_if_exists("raw", "demo")
    key = f"{s3_storage.prefix}/demo/raw"
    assert raw_client().get_object(Bucket=s3_storage.bucket, Key=key)["Body"].read() == b"replaced"
    with pytest.raises(TypeError, match="bytes or a binary file"):
        s3_storage.upload_file(12345, "bad", "demo")


def test_large_entry_goes_up_in_parts_never_joined(
    s3_storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    np = pytest.importorskip("numpy")
    array = np.random.default_rng(7).integers(0, 255, 20 * 2**20, dtype=np.uint8)
    encoded = entry.encode(array, {"function": "big"})
    assert encoded.size > 20 * 2**20

    def joined(*args: Any) -> bytes:
        raise AssertionError("the entry was joined in memory")

    monkeypatch.setattr(entry.Encoded, "__bytes__", joined)
    monkeypatch.setattr(entry.Encoded, "read", joined)
    s3_storage.upload_file(encoded, "big", "arrays")
    monkeypatch.undo()
    head = raw_client().head_object(Bucket=s3_storage.bucket, Key=f"{s3_storage.prefix}/arrays/big")
    assert head["ETag"].strip('"').endswith("-3")  # three 8 MiB parts
    # random bytes do not compress: sent raw, inside a frame of a few block headers
    assert encoded.size <= head["ContentLength"] < encoded.size + 1024
    with contextlib.closing(s3_storage.get_file_by_hashcode("big", "arrays")) as source:
        value, header = entry.decode(source)
    assert header.meta["function"] == "big"
    assert np.array_equal(value, array)


def test_truncated_header_claim_is_refused_before_allocating(s3_storage: S3Storage) -> None:
    # The stream reports its size, so a damaged header cannot ask for more.
    data = bytes(entry.encode(b"x" * 1000, {"function": "demo"}))
    s3_storage.upload_file(data[:-100], "cut", "demo")
    with contextlib.closing(s3_storage.get_file_by_hashcode("cut", "demo")) as source, \
            pytest.raises(entry.CorruptEntryError, match=r"needs \d+ more bytes, has"):
        entry.decode(source)


def test_missing_entries(s3_storage: S3Storage) -> None:
    assert not s3_storage.check_if_exists("nope", "demo")
    with pytest.raises(FileNotFoundError):
        s3_storage.get_file_by_hashcode("nope", "demo")
    with pytest.raises(FileNotFoundError):
        s3_storage.download_file("nope", "demo")
    with pytest.raises(FileNotFoundError, match="nope"):
        s3_storage.delete_file("nope", "demo")
    assert s3_storage.list_stored_files("demo") == []


def test_listing_is_sorted_without_sub_contexts_or_locks(s3_storage: S3Storage) -> None:
    for name in ("b", "a", "c"):
        s3_storage.upload_file(name.encode(), name, "proj")
    s3_storage.upload_file(b"deeper", "d", "proj/sub")
    assert s3_storage.try_acquire_lock("proj", ttl=60)
    assert s3_storage.list_stored_files("proj") == ["a", "b", "c"]
    assert s3_storage.list_stored_files("proj/sub") == ["d"]
    s3_storage.delete_file("b", "proj")
    assert s3_storage.list_stored_files("proj") == ["a", "c"]
    assert not s3_storage.check_if_exists("b", "proj")
    s3_storage.release_lock("proj")


def test_names_are_checked_before_any_request() -> None:
    storage = down_storage()  # a request would fail with StorageError instead
    for call in (lambda: storage.check_if_exists("../x", "demo"),
                 lambda: storage.upload_file(b"x", "a/b", "demo"),
                 lambda: storage.list_stored_files("/abs"),
                 lambda: storage.list_stored_files("locks"),
                 lambda: storage.download_file("x", "locks/inner"),
                 lambda: storage.try_acquire_lock("a/b"),
                 lambda: storage.lock_info("")):
        with pytest.raises(InvalidNameError):
            call()


def test_contexts_never_collide_with_use_markers(s3_storage: S3Storage) -> None:
    """Use markers live under ``<prefix>/.used/<context>/``: a context (or any
    part of one) starting with '.' is refused, so no entry can land there
    and no marker can be listed, loaded or deleted as an entry."""
    s3_storage.upload_file(b"real", "k", "x")
    s3_storage.open_entry("k", "x").close()  # a hit leaves the marker .used/x/k
    before = sorted(item["Key"] for item in raw_client().list_objects_v2(
        Bucket=s3_storage.bucket)["Contents"])
    assert f"{s3_storage.prefix}/.used/x/k" in before
    for context in (".used/x", ".used", "x/.used", "a/.b"):
        for call in (lambda c=context: s3_storage.upload_file(b"evil", "k", c),
                     lambda c=context: s3_storage.list_stored_files(c),
                     lambda c=context: s3_storage.delete_file("k", c),
                     lambda c=context: s3_storage.download_file("k", c)):
            with pytest.raises(InvalidNameError, match=r"may not start with '\.'"):
                call()
    after = sorted(item["Key"] for item in raw_client().list_objects_v2(
        Bucket=s3_storage.bucket)["Contents"])
    assert after == before
    assert s3_storage.list_contexts() == ["x"]
    assert s3_storage.download_file("k", "x") == b"real"


@pytest.mark.parametrize("url", ["s3://bucket/.used", "s3://bucket/team/.hidden"])
def test_prefixes_with_hidden_parts_are_refused(url: str) -> None:
    """A storage rooted inside another's ``.used/`` would list its markers."""
    with pytest.raises(ValueError, match=r"may not start with '\.'"):
        S3Storage(url)


# -- locks -------------------------------------------------------------------------------------


def test_lock_create_conflict_release(s3_storage: S3Storage) -> None:
    assert s3_storage.try_acquire_lock("job", ttl=60)
    assert not s3_storage.try_acquire_lock("job", ttl=60)
    assert s3_storage._is_locked("job")
    info = s3_storage.lock_info("job")
    assert info is not None and info.pid == os.getpid() and not info.stale
    assert info.token == s3_storage.held_token("job")
    assert [lock.name for lock in s3_storage.list_locks()] == ["job"]
    head = raw_client().head_object(Bucket=s3_storage.bucket, Key=lock_key(s3_storage, "job"))
    assert head["ContentLength"] > 0
    s3_storage.release_lock("job")
    assert s3_storage.lock_info("job") is None and s3_storage.list_locks() == []
    s3_storage.release_lock("job")  # harmless when not held
    assert s3_storage.try_acquire_lock("job", ttl=60)
    s3_storage.release_lock("job")


def test_release_after_takeover_leaves_the_new_holders_lock(s3_storage: S3Storage) -> None:
    assert s3_storage.try_acquire_lock("own", ttl=60)
    theirs = foreign_record()
    # Our lock went stale and someone took it over (an unconditional overwrite).
    raw_client().put_object(Bucket=s3_storage.bucket, Key=lock_key(s3_storage, "own"),
                            Body=theirs.to_bytes())
    s3_storage.release_lock("own")
    info = s3_storage.lock_info("own")
    assert info is not None and (info.host, info.token) == (FOREIGN_HOST, theirs.token)
    assert s3_storage.break_lock("own") and s3_storage.lock_info("own") is None


def test_fresh_foreign_lock_holds_and_expired_one_is_taken_over(s3_storage: S3Storage) -> None:
    plant(s3_storage, "remote", foreign_record(ttl=3600.0).to_bytes())
    assert not s3_storage.try_acquire_lock("remote", ttl=60)
    plant(s3_storage, "expired", foreign_record(acquired=time.time() - 60, ttl=1.0).to_bytes())
    assert s3_storage.lock_info("expired").stale  # type: ignore[union-attr]
    assert s3_storage.try_acquire_lock("expired", ttl=60)
    assert s3_storage.lock_info("expired").host != FOREIGN_HOST  # type: ignore[union-attr]
    s3_storage.release_lock("expired")


def test_unreadable_lock_ages_by_its_last_modified_time(s3_storage: S3Storage) -> None:
    plant(s3_storage, "garbage", b"\x00not json{")
    info = s3_storage.lock_info("garbage")
    assert info is not None and info.user == "?" and not info.stale
    assert abs(info.heartbeat - time.time()) < 120  # the object's LastModified
    assert not s3_storage.try_acquire_lock("garbage", ttl=60)


def test_heartbeat_keeps_lock_alive_past_ttl(s3_storage: S3Storage) -> None:
    # Margins for a loaded machine: a beat may come late, 3 missed ones may not.
    assert s3_storage.try_acquire_lock("hb", ttl=0.3, heartbeat_interval=0.5)  # type: ignore[arg-type]
    first = s3_storage.lock_info("hb")
    assert first is not None
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        info = s3_storage.lock_info("hb")
        assert info is not None and not info.stale
        time.sleep(0.1)
    last = s3_storage.lock_info("hb")
    assert last is not None and last.token == first.token
    assert time.time() - last.acquired > 0.3  # well past its ttl ...
    assert last.heartbeat > first.heartbeat + 0.5  # ... because it kept beating
    assert not s3_storage.try_acquire_lock("hb", ttl=60)
    s3_storage.release_lock("hb")
    assert s3_storage.lock_info("hb") is None


def test_stale_lock_taken_over_by_exactly_one_of_eight_processes(s3_storage: S3Storage) -> None:
    racers, rounds = 8, 5
    barrier, queue = CTX.Barrier(racers + 1), CTX.Queue()
    gone = dead_pid()
    with reaping() as start:
        for _ in range(racers):
            start(CTX.Process(target=steal_in_rounds, args=(s3_storage, rounds, barrier, queue)))
        try:
            for rnd in range(rounds):
                if rnd % 2 == 0:  # a holder on this host whose process is gone
                    record = dataclasses.replace(LockRecord.new(3600, None), pid=gone)
                else:  # a holder elsewhere, past its ttl
                    record = foreign_record(acquired=time.time() - 60, ttl=1.0)
                plant(s3_storage, "race", record.to_bytes())
                assert s3_storage.lock_info("race").stale  # type: ignore[union-attr]
                barrier.wait(PATIENCE)
                tries = collect(queue, racers)
                barrier.wait(PATIENCE)
                winners = [(pid, token) for _, pid, (r, won, token) in tries if won and r == rnd]
                assert len(winners) == 1, f"round {rnd}: winners {winners}"
                info = s3_storage.lock_info("race")
                assert info is not None and (info.pid, info.token) == winners[0]
                barrier.wait(PATIENCE)
                barrier.wait(PATIENCE)
                assert s3_storage.lock_info("race") is None
        except BaseException:
            barrier.abort()  # the racers stop at once instead of timing out
            raise


def test_lock_errors_are_never_read_as_unlocked() -> None:
    storage = S3Storage("s3://labcache-no-such-bucket/p", endpoint_url=moto_endpoint(),
                        **CREDENTIALS)
    for call in (lambda: storage.try_acquire_lock("job", ttl=60),
                 lambda: storage._is_locked("job"), lambda: storage.list_locks(),
                 lambda: storage.get_file_by_hashcode("k", "c")):
        with pytest.raises(StorageError, match="NoSuchBucket"):
            call()


def test_store_without_conditional_delete_falls_back_to_check_then_delete(
    s3_storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    client = s3_storage._s3()
    real_delete = client.delete_object

    def delete_object(**params: Any) -> Any:
        if "IfMatch" in params:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no"},
                               "ResponseMetadata": {"HTTPStatusCode": 501}}, "DeleteObject")
        return real_delete(**params)

    monkeypatch.setattr(client, "delete_object", delete_object)
    assert s3_storage.try_acquire_lock("fallback", ttl=60)
    raw = s3_storage._lock_read("fallback")
    assert raw is not None
    assert not s3_storage._lock_delete("fallback", '"not-its-etag"')
    s3_storage.release_lock("fallback")
    assert s3_storage.lock_info("fallback") is None


# -- @cached, processes, pickling ----------------------------------------------------------------


def test_cached_computes_once_across_spawned_processes(
    s3_storage: S3Storage, tmp_path: Path
) -> None:
    assert pickle.loads(pickle.dumps(s3_storage)) is s3_storage
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    barrier, queue = CTX.Barrier(3), CTX.Queue()
    with reaping() as start:
        for _ in range(3):
            start(CTX.Process(target=call_cached_square,
                              args=(s3_storage, 9, str(log_dir), barrier, queue)))
        results = collect(queue, 3)
    assert [value for _, _, value in results] == [81, 81, 81]
    assert len(workers.computations(log_dir)) == 1  # one computed, two waited and loaded
    f = cached(storage=s3_storage, ttl=60)(s3_square)
    assert f.is_cached(9, str(log_dir))
    assert f(9, str(log_dir))["square"] == 81
    assert f(4, str(log_dir))["square"] == 16
    assert f(4, str(log_dir))["square"] == 16
    assert len(workers.computations(log_dir)) == 2
    assert s3_storage.list_locks() == []


def test_endpoint_down_fails_fast_and_cached_computes_or_raises() -> None:
    storage = down_storage(aws_secret_access_key=SECRET)
    began = time.monotonic()
    with pytest.raises(StorageError) as raised:
        storage.check_if_exists("k", "demo")
    assert time.monotonic() - began < 10
    message = str(raised.value)
    assert "labcache-down" in message and "\n" not in message and SECRET not in message
    with pytest.raises(StorageError):
        storage.try_acquire_lock("job", ttl=60)

    def double(x: int) -> int:
        return 2 * x

    with pytest.warns(CacheWarning, match="storage failed"):
        assert cached(storage=storage, on_storage_error="compute")(double)(21) == 42
    with pytest.raises(StorageError):
        cached(storage=storage, on_storage_error="raise")(double)(21)


def test_secret_never_shown(s3_url: str) -> None:
    storage = S3Storage(s3_url.replace("team/cache", "secret"), endpoint_url=moto_endpoint(),
                        **{**CREDENTIALS, "aws_secret_access_key": SECRET})
    missing = S3Storage("s3://labcache-no-such-bucket/p", endpoint_url=moto_endpoint(),
                        **{**CREDENTIALS, "aws_secret_access_key": SECRET})
    assert storage.get_root_path() == f"{s3_url.replace('team/cache', 'secret')} at " \
        f"{moto_endpoint()}"
    for shown in (repr(storage), storage.get_root_path(), repr(missing)):
        assert SECRET not in shown and "s3://" in shown and moto_endpoint() in shown
    with pytest.raises(StorageError) as raised:
        missing.download_file("k", "c")
    assert SECRET not in str(raised.value) and "labcache-no-such-bucket" in str(raised.value)


def test_one_instance_per_configuration(s3_url: str) -> None:
    endpoint = moto_endpoint()
    first = S3Storage(s3_url, endpoint_url=endpoint, **CREDENTIALS)
    assert S3Storage(s3_url + "/", endpoint_url=endpoint, **CREDENTIALS) is first
    assert S3Storage(s3_url + "/other", endpoint_url=endpoint, **CREDENTIALS) is not first
    assert S3Storage(s3_url, endpoint_url=endpoint, region_name="eu-west-1") is not first
    client = raw_client()
    given = S3Storage(s3_url, client=client)
    assert given is S3Storage(s3_url, client=client) and given is not first
    assert given._s3() is client
    copy = pickle.loads(pickle.dumps(given))  # rebuilt without the client
    assert copy is not given and copy._s3() is not client
    assert copy.endpoint_url == endpoint


def test_open_storage_uses_the_environment(s3_url: str) -> None:
    storage = open_storage(s3_url)  # endpoint and credentials from AWS_* variables
    assert isinstance(storage, S3Storage) and storage.endpoint_url == moto_endpoint()
    storage.upload_file(b"via env", "k", "demo")
    assert storage.download_file("k", "demo") == b"via env"


@pytest.mark.parametrize("url", ["s3://", "s3:///x", "s3://UPPER/x", "s3://ab/x", "s3://b..c/x",
                                 "s3://bucket/../x", "s3://bucket/p?x=1", "file:///tmp/x"])
def test_bad_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError):
        S3Storage(url)
    if url.startswith("s3://"):
        with pytest.raises(ValueError):
            open_storage(url)


def test_unknown_options_are_type_errors() -> None:
    with pytest.raises(TypeError, match="endpont"):
        S3Storage("s3://bucket/p", endpont="http://typo")
