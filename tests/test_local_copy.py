"""Local copies of Redis and S3 entries (``local_copy=``), on real servers.

Each test runs on a real redis-server and on the moto S3 server, with the
storage opened from a URL carrying ``?local_copy=``, as a spawned process
opens it too.
"""

from __future__ import annotations

import mmap
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labcache import open_storage
from labcache.errors import CacheWarning
from labcache.storage._local_copy import LocalCopies

from .support import net_workers
from .support.procs import CTX, collect, reaping
from .support.workers import computations


@pytest.fixture(params=["redis", "s3"])
def copy_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URL with a local copy folder in this test's tmp dir."""
    if request.param == "redis":
        base = request.getfixturevalue("redis_server").url
    else:
        from .support.services_s3 import require_s3

        require_s3()
        base = request.getfixturevalue("s3_url")
    return f"{base}?local_copy={tmp_path / 'copies'}"


@pytest.fixture
def log_dir(tmp_path: Path) -> str:
    folder = tmp_path / "log"
    folder.mkdir()
    return str(folder)


def copy_files(storage: Any) -> list[Path]:
    return sorted(p for p in Path(storage.local_copy.root).rglob("*")
                  if p.is_file() and not p.name.startswith("."))


class RemoteReads:
    """Counts the entry bytes a storage fetched from its server."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.s3_bodies = 0
        if hasattr(storage, "bucket"):
            storage._s3().meta.events.register("after-call.s3.GetObject", self._on_get)

    def _on_get(self, http_response: Any, **_: Any) -> None:
        if http_response.status_code == 200:
            self.s3_bodies += 1

    def count(self) -> int:
        if hasattr(self.storage, "bucket"):
            return self.s3_bodies
        stats = self.storage.client.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_repeat_hits_are_served_from_the_copy(copy_url: str, log_dir: str) -> None:
    fn = net_workers.numbered_function(copy_url)
    storage = fn.storage
    first = fn(1, log_dir)  # computed and stored: nothing fetched yet
    reads = RemoteReads(storage)
    assert np.array_equal(fn(1, log_dir), first)  # fetched once, kept
    [copy] = copy_files(storage)
    fetched = reads.count()
    for _ in range(5):
        assert np.array_equal(fn(1, log_dir), first)
    assert reads.count() == fetched  # only the version check went to the server
    assert copy_files(storage) == [copy]
    assert len(computations(log_dir)) == 1


def test_redis_copy_is_used_behind_the_version_check(redis_server: Any, tmp_path: Path,
                                                     log_dir: str) -> None:
    """The chunks (the payload) are gone from Redis; the manifest, which the
    version check reads, is not: the hit can only come from the copy."""
    fn = net_workers.numbered_function(f"{redis_server.url}?local_copy={tmp_path / 'c'}")
    first = fn(1, log_dir)
    fn(1, log_dir)
    client = fn.storage.client
    chunks = list(client.scan_iter("labcache:c:*"))
    assert chunks
    client.delete(*chunks)
    assert np.array_equal(fn(1, log_dir), first)
    assert len(computations(log_dir)) == 1


def test_refresh_in_another_process_is_seen_at_the_next_call(copy_url: str,
                                                             log_dir: str) -> None:
    fn = net_workers.numbered_function(copy_url)
    fn(1, log_dir)
    assert fn(1, log_dir)[0] == 1  # from the copy now
    queue = CTX.Queue()
    with reaping() as start:
        start(CTX.Process(target=net_workers.refresh_elsewhere,
                          args=(copy_url, 1, log_dir, queue)))
        [(_, _, value)] = collect(queue, 1)
    assert value == 2
    assert fn(1, log_dir)[0] == 2  # the new version, not the copy of the old one
    assert fn(1, log_dir)[0] == 2
    assert len(copy_files(fn.storage)) == 1  # the old version's copy is gone


def test_invalidation_in_another_process_is_a_miss_at_the_next_call(copy_url: str,
                                                                    log_dir: str) -> None:
    fn = net_workers.numbered_function(copy_url)
    fn(1, log_dir)
    fn(1, log_dir)
    queue = CTX.Queue()
    with reaping() as start:
        start(CTX.Process(target=net_workers.invalidate_elsewhere,
                          args=(copy_url, 1, log_dir, queue)))
        assert collect(queue, 1)[0][2] is True
    assert fn(1, log_dir)[0] == 2  # recomputed
    assert len(computations(log_dir)) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_copy_is_discarded_and_fetched_again(copy_url: str, log_dir: str,
                                                       damage: str) -> None:
    fn = net_workers.numbered_function(copy_url)
    first = fn(1, log_dir)
    fn(1, log_dir)
    [copy] = copy_files(fn.storage)
    os.chmod(copy, 0o600)
    data = bytearray(copy.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    copy.write_bytes(bytes(data))
    assert np.array_equal(fn(1, log_dir), first)  # no warning: the remote entry is fine
    assert fn.is_cached(1, log_dir)  # and it was not removed
    [again] = copy_files(fn.storage)
    assert again.read_bytes() != bytes(data)
    assert len(computations(log_dir)) == 1


def test_a_temp_file_left_by_a_dead_writer_is_ignored(copy_url: str, log_dir: str) -> None:
    fn = net_workers.numbered_function(copy_url)
    first = fn(1, log_dir)
    folder = fn.storage.local_copy.folder(fn.context, fn.key(1, log_dir))
    folder.mkdir(parents=True)
    (folder / ".tmp-999999-dead").write_bytes(b"half an entry")
    assert np.array_equal(fn(1, log_dir), first)
    assert np.array_equal(fn(1, log_dir), first)


@pytest.mark.parametrize("mode", ["r", "c"])
def test_mmap_mode_maps_the_local_copy(copy_url: str, log_dir: str, mode: str) -> None:
    from labcache import cached

    fn = cached(storage=open_storage(copy_url), mmap_mode=mode)(net_workers.numbered_array)
    first = fn(1, log_dir)
    fn(1, log_dir)
    mapped = fn(1, log_dir)
    assert np.array_equal(mapped, first)
    assert mapped.flags.writeable == (mode == "c")
    base: Any = mapped
    while not isinstance(base, mmap.mmap) and base is not None:
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    assert isinstance(base, mmap.mmap), "the array is not backed by a memory map"
    if mode == "c":
        mapped[1] = -1.0  # copy on write: the copy on disk is unchanged
        assert fn(1, log_dir)[1] == first[1]


def test_an_unreachable_redis_serves_no_copy(redis_server: Any, tmp_path: Path,
                                             log_dir: str) -> None:
    """Offline, a copy may be out of date (refreshed or invalidated elsewhere):
    the call computes uncached with a warning, as without a copy."""
    fn = net_workers.numbered_function(f"{redis_server.url}?local_copy={tmp_path / 'c'}")
    fn(1, log_dir)
    assert fn(1, log_dir)[0] == 1
    redis_server.stop()
    with pytest.warns(CacheWarning, match="storage failed"):
        assert fn(1, log_dir)[0] == 2


def test_an_unreachable_s3_serves_no_copy(restartable_s3: Any, tmp_path: Path,
                                          log_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from labcache import S3Storage, cached

    from .support.services_s3 import CREDENTIALS

    storage = S3Storage(restartable_s3.url, endpoint_url=restartable_s3.endpoint,
                        local_copy=tmp_path / "c", **CREDENTIALS)
    fn = cached(storage=storage)(net_workers.numbered_array)
    fn(1, log_dir)
    assert fn(1, log_dir)[0] == 1
    restartable_s3.stop()
    with pytest.warns(CacheWarning, match="storage failed"):
        assert fn(1, log_dir)[0] == 2


def test_local_copy_options_from_urls_and_keywords(redis_server: Any, tmp_path: Path) -> None:
    from labcache import RedisStorage

    url = f"{redis_server.url}?local_copy={tmp_path / 'c'}&local_copy_limit=2GB&compress=0"
    storage = open_storage(url)
    assert isinstance(storage, RedisStorage)
    assert storage.local_copy is not None
    assert (storage.local_copy.root, storage.local_copy.limit) == (tmp_path / "c", 2 * 10**9)
    assert storage.compress is False
    again = pickle.loads(pickle.dumps(storage))  # as a spawned process rebuilds it
    assert again.local_copy.root == storage.local_copy.root
    assert (again.local_copy.limit, again.compress) == (storage.local_copy.limit, False)
    plain = RedisStorage(redis_server.url)
    assert plain.local_copy is None and plain.compress == "auto"
    assert plain is not RedisStorage(redis_server.url, local_copy=tmp_path / "c")
    default = RedisStorage(redis_server.url, local_copy=True)
    assert default.local_copy.root.name == "copies"
    with pytest.raises(ValueError, match="compress must be"):
        open_storage(f"{redis_server.url}?compress=maybe")
    with pytest.raises(ValueError, match="size"):
        open_storage(f"{redis_server.url}?local_copy=/tmp/x&local_copy_limit=lots")


def test_s3_local_copy_options(s3_url: str, tmp_path: Path) -> None:
    from labcache import S3Storage

    storage = open_storage(f"{s3_url}?local_copy={tmp_path / 'c'}&compress=1")
    assert isinstance(storage, S3Storage)
    assert storage.url == s3_url and storage.compress is True
    assert storage.local_copy.root == tmp_path / "c"
    assert storage is open_storage(f"{s3_url}?local_copy={tmp_path / 'c'}&compress=1")
    assert storage is not open_storage(s3_url)
    again = pickle.loads(pickle.dumps(storage))
    assert again is storage  # the same configuration: the same instance
    with pytest.raises(ValueError, match="unknown options"):
        open_storage(f"{s3_url}?region=eu")


def test_copies_stay_under_the_size_limit_least_recently_used_first(tmp_path: Path) -> None:
    copies = LocalCopies(tmp_path, "remote", limit=2500)
    for index in range(3):
        os.close(copies.keep("ctx", f"k{index}", "v", lambda f: f.write(b"x" * 1000)))
        folder = copies.folder("ctx", f"k{index}")
        for path in folder.iterdir():  # older use first
            os.utime(path, (1000 + index, 1000 + index))
    os.close(copies.keep("ctx", "k3", "v", lambda f: f.write(b"y" * 1000)))
    assert [copies.versions("ctx", f"k{i}") for i in range(4)] == [[], [], ["v"], ["v"]]


def test_a_copy_folder_that_cannot_be_written_only_costs_the_copy(
        copy_url: str, log_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fn = net_workers.numbered_function(copy_url)
    first = fn(1, log_dir)
    (tmp_path / "copies").write_bytes(b"a file where the folder should be")
    with caplog.at_level("WARNING", logger="labcache"):
        assert np.array_equal(fn(1, log_dir), first)
        assert np.array_equal(fn(1, log_dir), first)
    assert "could not keep a local copy" in caplog.text
    assert len(computations(log_dir)) == 1


def test_several_processes_fill_and_share_one_copy(copy_url: str, log_dir: str,
                                                   tmp_path: Path) -> None:
    fn = net_workers.numbered_function(copy_url)
    first = fn(1, log_dir)  # stored; no copy yet
    assert copy_files(fn.storage) == []
    queue, start = CTX.Queue(), tmp_path / "start"
    with reaping() as begin:
        for _ in range(4):
            begin(CTX.Process(target=net_workers.load_after_start,
                              args=(copy_url, log_dir, str(start), queue)))
        collect(queue, 4)
        start.touch()
        loaded = collect(queue, 4)
    assert [values for _, _, values in loaded] == [[first[0]] * 3] * 4
    assert len(copy_files(fn.storage)) == 1  # one copy, whoever wrote it last
    assert not [p for p in Path(fn.storage.local_copy.root).rglob(".tmp-*")]
    assert np.array_equal(fn(1, log_dir), first)
    assert len(computations(log_dir)) == 1
