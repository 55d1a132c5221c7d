"""What a store killed midway leaves behind, and how it is found and removed.

Real processes: a writer stores a big value through a file that stalls
halfway (so the test can see the temp file, the multipart upload or the
chunk keys appear), then is SIGKILLed, or let go to finish.  ``labcache
stats`` and ``labcache gc`` run as real commands against Local, a real
redis-server and a moto S3 server.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, cached
from labcache.base import BaseStorage

from .support import workers
from .support.procs import CTX, PATIENCE, collect, reaping
from .support.waits import wait_until

CONTEXT = "team.big"
#: Bytes the stalling writer sends before it waits, and after.
FIRST, REST = 10 * 2**20, 2**20
#: Bytes that show the store under way: a Redis chunk, an S3 part (8 MB).
UNDER_WAY = 4 * 2**20


# -- process targets (module level: spawned processes import them) -------------------------


class StallingFile:
    """A binary file of ``first`` bytes ``a`` and ``rest`` bytes ``b`` that
    waits for the ``go`` file (forever, if the test kills us) before the ``b``s."""

    def __init__(self, first: int, rest: int, go: str) -> None:
        self.left, self.rest, self.go, self.byte = first, rest, go, b"a"

    def read(self, size: int = -1) -> bytes:
        if not self.left and self.rest:
            if not workers.wait_for_file(self.go, timeout=PATIENCE):
                raise TimeoutError("no go signal")
            self.left, self.rest, self.byte = self.rest, 0, b"b"
        taken = self.left if size < 0 else min(size, self.left)
        self.left -= taken
        return self.byte * taken


def expected_value(first: int, rest: int) -> bytes:
    """What a whole StallingFile holds."""
    return b"a" * first + b"b" * rest


def open_spec(spec: tuple[str, ...]) -> BaseStorage:
    """The test's storage, built the same way in every process."""
    kind, where = spec
    if kind == "local":
        return LocalStorage(where)
    if kind == "redis":
        from labcache import RedisStorage

        return RedisStorage(where, chunk_size=UNDER_WAY)
    from labcache.storage.s3 import S3Storage

    return S3Storage(where)


def store_stalling(spec: tuple[str, ...], go: str, queue: Any) -> None:
    try:
        open_spec(spec).upload_file(StallingFile(FIRST, REST, go), "big", CONTEXT)
        queue.put(("stored", os.getpid(), None))
    except BaseException:
        workers._crash(queue)


def tiny(x: int) -> int:
    return x + 1


def call_with_full_disk(root: str, limit: int, queue: Any) -> None:
    """``tiny(1)`` cached while no file may grow past ``limit`` bytes."""
    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        f = cached(storage=LocalStorage(root))(tiny)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = f(1)
        queue.put(("result", os.getpid(), (value, [str(w.message) for w in caught])))
    except BaseException:
        workers._crash(queue)


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(params=["local", "redis", "s3"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ...]:
    """Where the writer stores, reachable by URL alone from the CLI."""
    if request.param == "local":
        return ("local", str(tmp_path / "store"))
    if request.param == "redis":
        return ("redis", request.getfixturevalue("redis_server").url)
    return ("s3", request.getfixturevalue("s3_url"))


def url_of(spec: tuple[str, ...]) -> str:
    return f"file://{spec[1]}" if spec[0] == "local" else spec[1]


def cli(spec: tuple[str, ...], *args: str) -> Any:
    """``labcache ARGS --json`` against the test's storage, as a real command."""
    done = subprocess.run([sys.executable, "-m", "labcache", *args, "--json", "--storage",
                           url_of(spec)], capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def leftovers(spec: tuple[str, ...]) -> int:
    """Bytes the interrupted store has put where the backend keeps them, seen raw."""
    kind, where = spec
    if kind == "local":
        folder = Path(where, CONTEXT)
        return sum(p.stat().st_size for p in folder.glob(".big.*.tmp")) if folder.exists() else 0
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(where)
        return sum(client.strlen(key) for key in client.scan_iter(match="labcache:c:*"))
    from .support.services_s3 import raw_client

    client, bucket = raw_client(), where[len("s3://"):].split("/")[0]
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sum(part["Size"] for upload in uploads for part in client.list_parts(
        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", []))


def started_writer(start: Any, spec: tuple[str, ...], go: Path, queue: Any) -> Any:
    """A writer process stalled halfway through its store, its bytes visible."""
    writer = start(CTX.Process(target=store_stalling, args=(spec, str(go), queue)))
    wait_until(lambda: leftovers(spec) >= UNDER_WAY or not writer.is_alive(),
               "the writer's first bytes to reach the storage")
    assert writer.is_alive(), collect(queue, 1, fail_on_crash=False)
    return writer


# -- a store killed halfway --------------------------------------------------------------


def test_killed_store_is_reported_then_removed_by_gc(spec: tuple[str, ...],
                                                     tmp_path: Path) -> None:
    queue = CTX.Queue()
    with reaping() as start:
        writer = started_writer(start, spec, tmp_path / "never", queue)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(PATIENCE)
    left = leftovers(spec)
    assert left >= UNDER_WAY

    stats = cli(spec, "stats", "--orphan-age", "0s")
    assert stats["orphans"] >= 1 and stats["orphan_size"] >= left, stats
    young = cli(spec, "stats")  # the default age: too young to be called an orphan yet
    assert (young["orphans"], young["writes_in_progress"]) == (0, stats["orphans"]), young

    assert open_spec(spec).remove_orphans() == []  # idle for seconds, not an hour: kept
    dry = cli(spec, "gc", "--orphan-age", "0s", "--dry-run")
    assert dry["orphans_freed"] >= left and leftovers(spec) == left
    done = cli(spec, "gc", "--orphan-age", "0s")
    assert done["orphans_freed"] >= left, done
    assert leftovers(spec) == 0
    assert open_spec(spec).find_orphans() == []


def test_a_store_in_progress_is_never_removed(spec: tuple[str, ...], tmp_path: Path) -> None:
    go, queue = tmp_path / "go", CTX.Queue()
    storage = open_spec(spec)
    with reaping() as start:
        started_writer(start, spec, go, queue)
        found = storage.find_orphans()
        assert found and all(o.age is not None and o.age < 600 for o in found), found
        assert storage.remove_orphans() == []  # the default age: an hour idle
        assert cli(spec, "gc", "--orphan-age", "10m")["orphans"] == []
        go.touch()
        [(tag, _, _)] = collect(queue, 1)
    assert tag == "stored"
    assert storage.download_file("big", CONTEXT) == expected_value(FIRST, REST)
    assert storage.find_orphans() == []


# -- LocalStorage's own housekeeping and lock folder ------------------------------------


def _plant(path: Path, size: int, age: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_first_write_into_a_folder_removes_its_old_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "store"
    old = _plant(root / CONTEXT / ".k1.0123456789abcdef.tmp", 1000, 2 * 3600)
    young = _plant(root / CONTEXT / ".k2.0123456789abcdef.tmp", 1000, 60)
    old_lock = _plant(root / "locks" / ".x.lock.0123456789abcdef.tmp", 0, 2 * 3600)
    old_probe = _plant(root / "locks" / ".now.0123456789abcdef", 0, 2 * 3600)
    other = _plant(root / "elsewhere" / ".k3.0123456789abcdef.tmp", 1000, 2 * 3600)
    storage = LocalStorage(root)
    storage.upload_file(b"value", "k", CONTEXT)
    assert not old.exists() and young.exists()
    assert old_lock.exists() and old_probe.exists()  # no lock taken yet
    assert storage.try_acquire_lock("some-key")
    storage.release_lock("some-key")
    assert not old_lock.exists() and not old_probe.exists()
    assert other.exists()  # a folder this process never wrote: left for gc
    assert [o.where for o in storage.remove_orphans()] == [f"elsewhere/{other.name}"]


def test_claims_are_orphans_only_once_their_record_is_gone(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    assert storage.try_acquire_lock("held")
    raw = storage._lock_read("held")
    assert raw is not None
    locks = tmp_path / "store" / "locks"
    current = _plant(locks / f".held.{raw.version}.claim1", 0, 2 * 3600)
    gone = _plant(locks / ".held.00000000deadbeef.claim1", 0, 2 * 3600)
    nobody = _plant(locks / ".free.00000000deadbeef.claim2", 0, 2 * 3600)
    found = {o.where: o.kind for o in storage.find_orphans()}
    assert found == {f"locks/{gone.name}": "claim", f"locks/{nobody.name}": "claim"}
    assert len(storage.remove_orphans()) == 2
    assert current.exists() and not gone.exists() and not nobody.exists()
    storage.release_lock("held")


def test_orphan_age_is_time_since_the_last_write(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    temp = _plant(tmp_path / "store" / CONTEXT / ".k.0123456789abcdef.tmp", 10, 2 * 3600)
    [orphan] = storage.find_orphans()
    with temp.open("ab") as file:  # the writer wrote again after we looked
        file.write(b"more")
    assert storage._remove_orphan(orphan, 3600) is False and temp.exists()
    with pytest.raises(ValueError, match="negative"):
        storage.remove_orphans(-1)


def test_full_disk_leaves_nothing_in_the_lock_folder(tmp_path: Path) -> None:
    root, queue = tmp_path / "store", CTX.Queue()
    with reaping() as start:
        for _ in range(3):  # each call used to leave one empty temp file
            start(CTX.Process(target=call_with_full_disk, args=(str(root), 64, queue)))
            [(tag, _, (value, messages))] = collect(queue, 1)
            assert tag == "result" and value == 2
            assert any("File too large" in m for m in messages), messages
    assert sorted(os.listdir(root / "locks")) == []
    assert LocalStorage(root).find_orphans() == []


# -- Redis: provisional chunks, published all at once ------------------------------------


@pytest.fixture
def redis_parts(redis_server: Any) -> tuple[Any, Any]:
    """A RedisStorage with 1 MB chunks and a plain client on the same server."""
    redis = pytest.importorskip("redis")
    from labcache import RedisStorage

    return (RedisStorage(redis_server.url, prefix="o", chunk_size=2**20),
            redis.Redis.from_url(redis_server.url))


class DeletingFile:
    """A file whose third read deletes every chunk written so far, as an
    eviction under memory pressure would."""

    def __init__(self, client: Any, size: int) -> None:
        self.client, self.left, self.reads = client, size, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 3:
            self.client.delete(*self.client.scan_iter(match="o:c:*"))
        taken = self.left if size < 0 else min(size, self.left)
        self.left -= taken
        return b"z" * taken


def test_published_chunks_never_expire_and_unpublished_ones_do(redis_parts: Any) -> None:
    storage, client = redis_parts
    pieces = iter([b"p" * 2**20] * 3)
    from labcache.storage import _redis_chunks

    pending: list[str] = []
    _redis_chunks.write(client, storage._chunk_key, pieces, 2**20, pending)
    assert all(0 < client.ttl(key) <= _redis_chunks.PENDING_SECONDS for key in pending)
    storage.upload_file(b"q" * (3 * 2**20), "e", "ctx")
    published = [k for k in client.scan_iter(match="o:c:*") if k.decode() not in pending]
    assert len(published) == 3 and all(client.ttl(k) == -1 for k in published)
    [orphan] = storage.find_orphans()  # the unpublished generation, just written
    assert set(orphan.handle) == set(pending) and orphan.age is not None and orphan.age < 60
    assert storage.remove_orphans() == []
    assert len(storage.remove_orphans(0)) == 1
    assert storage.download_file("e", "ctx") == b"q" * (3 * 2**20)
    assert {k.decode() for k in client.scan_iter(match="o:c:*")} == \
        {k.decode() for k in published}


def test_a_store_whose_chunks_vanish_publishes_nothing(redis_parts: Any) -> None:
    from labcache import StorageError

    storage, client = redis_parts
    with pytest.raises(StorageError, match="vanished before the entry was published"):
        storage.upload_file(DeletingFile(client, 5 * 2**20), "e", "ctx")
    assert not storage.check_if_exists("e", "ctx")
    assert list(client.scan_iter(match="o:c:*")) == []


def test_chunks_of_entries_stored_before_the_generation_hash(redis_parts: Any) -> None:
    """Older labcache wrote chunks without expiry and no generation hash: its
    live entries stay whole, chunks no entry names are orphans by idle time."""
    storage, client = redis_parts
    for gen, name in (("0000000000000001", "live"), ("0000000000000002", None)):
        for index in range(2):
            client.set(f"o:c:{gen}:{index}", b"old" * 1000)
        if name:
            manifest = json.dumps({"gen": gen, "sizes": [3000, 3000]}).encode()
            client.set(f"o:e:ctx:{name}", b"M" + manifest)
    [orphan] = storage.find_orphans()
    assert orphan.where.startswith("o:c:0000000000000002:") and orphan.size >= 6000
    assert storage.remove_orphans() == []  # idle for seconds only
    assert [o.where for o in storage.remove_orphans(0)] == [orphan.where]
    assert storage.download_file("live", "ctx") == b"old" * 2000
    assert client.hget("o:g:ctx", "live") == b"0000000000000001"  # written down once
    client.delete("o:e:ctx:live")  # evicted, or deleted by hand: its chunks are orphans now
    assert len(storage.remove_orphans(0)) == 1
    assert list(client.scan_iter(match="o:c:*")) == []


def test_a_storage_that_refuses_to_list_orphans_keeps_gc_and_stats_working(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """S3 credentials without the multipart permissions: the rest still works."""
    from labcache import StorageError
    from labcache.cli import main

    def refuse(self: Any) -> list[Any]:
        raise StorageError("S3 list_multipart_uploads failed: AccessDenied (HTTP 403)")

    storage = LocalStorage(tmp_path / "store")
    for name in ("a", "b"):
        storage.upload_file(b"x" * 1000, name, CONTEXT)
    monkeypatch.setattr(LocalStorage, "find_orphans", refuse)
    url = f"file://{storage.root}"
    assert main(["stats", "--json", "--storage", url]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 2 and stats["orphans"] is None
    assert "AccessDenied" in stats["orphans_error"]
    assert main(["gc", "--max-size", "1kB", "--storage", url]) == 0
    text = capsys.readouterr().out
    assert "removed 1 entry" in text and "could not look for orphans" in text
