"""LocalStorage: the seed's entry interface, the singleton rules, URLs and locks."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import labcache
from labcache import LocalStorage, open_storage
from labcache.base import BaseSingleton
from labcache.entry import decode, encode
from labcache.lock_record import LockRecord, this_host, this_user
from labcache.locks import UNREADABLE_LOCK_TTL
from labcache.storage import default_storage, known_schemes
from labcache.storage.local import CLAIM_STALE_SECONDS

# -- helpers ---------------------------------------------------------------------------------


def hidden_files(folder: Path) -> list[str]:
    """Temp and claim files (names starting with '.') directly in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    """The pid of a process that existed on this host and has been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lock_file(storage: LocalStorage, name: str) -> Path:
    return storage.root / storage._get_lock_path(name)


def plant(storage: LocalStorage, name: str, data: bytes) -> Path:
    """Put a lock record in place the way another process would (write aside, link)."""
    path = lock_file(storage, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{name}.planted.tmp")
    aside.write_bytes(data)
    os.link(aside, path)
    aside.unlink()
    return path


def record(**changes: object) -> LockRecord:
    """A lock record as this process would write it, with some fields changed."""
    ttl = changes.pop("ttl", 3600.0)
    interval = changes.pop("heartbeat_interval", None)
    return dataclasses.replace(LockRecord.new(ttl, interval), **changes)  # type: ignore[arg-type]


class FailingReader:
    """A binary "file" that hands out one chunk and then fails, like a broken pipe."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls == 1:
            return b"partial data that must never become the entry"
        raise OSError("the source went away mid-upload")


# -- entries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"hello", bytearray(b"hello"), memoryview(b"hello")],
    ids=["bytes", "bytearray", "memoryview"],
)
def test_upload_bytes_round_trip(storage: LocalStorage, payload: object) -> None:
    assert storage.upload_file(payload, "greeting", "demo") == "greeting"
    assert storage.download_file("greeting", "demo") == b"hello"
    assert storage.check_if_exists("greeting", "demo")
    assert (storage.root / "demo" / "greeting").read_bytes() == b"hello"


def test_upload_binary_file_objects(storage: LocalStorage, tmp_path: Path) -> None:
    storage.upload_file(io.BytesIO(b"from memory"), "a", "ctx")
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 100)
    with open(source, "rb") as f:
        storage.upload_file(f, "b", "ctx")
    assert storage.download_file("a", "ctx") == b"from memory"
    assert storage.download_file("b", "ctx") == source.read_bytes()


def test_upload_encoded_entry_round_trip(storage: LocalStorage) -> None:
    value = {"weights": [1.5, 2.5], "name": "model"}
    encoded = encode(value, {"function": "train"})
    storage.upload_file(encoded, "k1", "train")
    stored = storage.download_file("k1", "train")
    assert stored == bytes(encoded)
    decoded, header = decode(stored)
    assert decoded == value
    assert header.meta == {"function": "train"}


def test_upload_overwrites_and_nested_contexts(storage: LocalStorage) -> None:
    storage.upload_file(b"old", "k", "project/model.fit")
    storage.upload_file(b"new", "k", "project/model.fit")
    assert storage.download_file("k", "project/model.fit") == b"new"
    assert storage.list_stored_files("project/model.fit") == ["k"]


def test_get_file_by_hashcode_returns_open_binary_file(storage: LocalStorage) -> None:
    storage.upload_file(b"\x00\x01payload", "k", "ctx")
    f = storage.get_file_by_hashcode("k", "ctx")
    try:
        assert not f.closed
        assert f.read() == b"\x00\x01payload"  # bytes, so the file is binary
    finally:
        f.close()


def test_missing_entries(storage: LocalStorage) -> None:
    assert not storage.check_if_exists("nothing", "ctx")
    with pytest.raises(FileNotFoundError):
        storage.download_file("nothing", "ctx")
    with pytest.raises(FileNotFoundError):
        storage.get_file_by_hashcode("nothing", "ctx")
    with pytest.raises(FileNotFoundError):
        storage.delete_file("nothing", "ctx")


def test_delete_file(storage: LocalStorage) -> None:
    storage.upload_file(b"x", "k", "ctx")
    storage.upload_file(b"y", "other", "ctx")
    storage.delete_file("k", "ctx")
    assert not storage.check_if_exists("k", "ctx")
    assert storage.list_stored_files("ctx") == ["other"]
    with pytest.raises(FileNotFoundError):
        storage.delete_file("k", "ctx")


def test_list_stored_files_sorted_without_temp_files_or_folders(storage: LocalStorage) -> None:
    for name in ("b2", "a1", "c3", "B0"):
        storage.upload_file(name.encode(), name, "ctx")
    storage.upload_file(b"nested", "inner", "ctx/sub")  # makes the folder ctx/sub
    (storage.root / "ctx" / ".x.tmp").write_bytes(b"half written")
    assert storage.list_stored_files("ctx") == ["B0", "a1", "b2", "c3"]
    assert storage.list_stored_files("ctx/sub") == ["inner"]
    assert storage.list_stored_files("unknown") == []
    assert not (storage.root / "unknown").exists()


def test_upload_leaves_no_temp_files(storage: LocalStorage) -> None:
    storage.upload_file(b"a", "k", "ctx")
    storage.upload_file(io.BytesIO(b"b"), "k", "ctx")
    storage.upload_file(encode([1, 2], {}), "k2", "ctx")
    assert hidden_files(storage.root / "ctx") == []
    assert sorted(p.name for p in (storage.root / "ctx").iterdir()) == ["k", "k2"]


def test_failing_upload_keeps_old_entry_and_leaves_no_temp_file(storage: LocalStorage) -> None:
    storage.upload_file(b"the good old entry", "k", "ctx")
    source = FailingReader()
    with pytest.raises(OSError, match="went away"):
        storage.upload_file(source, "k", "ctx")
    assert source.calls >= 2  # it really failed half-way, after writing something
    assert storage.download_file("k", "ctx") == b"the good old entry"
    assert hidden_files(storage.root / "ctx") == []
    assert storage.list_stored_files("ctx") == ["k"]


def test_failing_first_upload_creates_no_entry(storage: LocalStorage) -> None:
    with pytest.raises(OSError):
        storage.upload_file(FailingReader(), "k", "ctx")
    assert not storage.check_if_exists("k", "ctx")
    assert list((storage.root / "ctx").iterdir()) == []


def test_upload_of_unsupported_object_is_a_type_error(storage: LocalStorage) -> None:
    with pytest.raises(TypeError, match="str"):
        storage.upload_file("text is not bytes", "k", "ctx")
    assert not storage.check_if_exists("k", "ctx")
    assert hidden_files(storage.root / "ctx") == []


def test_hidden_entry_names_are_rejected_or_listed(storage: LocalStorage) -> None:
    """An entry that exists must show up in the listing (``clear`` relies on it).

    A name starting with '.' is the storage's own temp-file namespace, so
    the library may refuse it; what it must not do is store it invisibly.
    """
    try:
        storage.upload_file(b"x", ".hidden", "ctx")
    except labcache.InvalidNameError:
        return
    assert storage.check_if_exists(".hidden", "ctx")
    assert ".hidden" in storage.list_stored_files("ctx")


# -- instances, roots and URLs ---------------------------------------------------------------


def test_one_instance_per_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert LocalStorage(a) is LocalStorage(a)
    assert LocalStorage(a) is not LocalStorage(b)
    assert LocalStorage(b).root == b
    assert LocalStorage(a).root == a
    assert LocalStorage(b).get_root_path() == str(b)
    assert isinstance(LocalStorage(a), BaseSingleton)


def test_same_folder_spelled_differently_is_one_instance(tmp_path: Path) -> None:
    """One instance per class *and configuration*: the configuration is the folder."""
    folder = tmp_path / "shared"
    storage = LocalStorage(folder)
    assert LocalStorage(str(folder)) is storage
    assert open_storage(f"file://{folder}") is storage
    assert pickle.loads(pickle.dumps(storage)) is storage


def test_default_root_follows_labcache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LocalStorage().root == Path(os.environ["LABCACHE_DIR"]).absolute()
    for sub in ("one", "two"):
        monkeypatch.setenv("LABCACHE_DIR", str(tmp_path / sub))
        assert LocalStorage().root == tmp_path / sub
        assert LocalStorage().get_root_path() == str(tmp_path / sub)


def test_default_storage_follows_labcache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sub in ("one", "two"):
        monkeypatch.setenv("LABCACHE_DIR", str(tmp_path / sub))
        assert default_storage().get_root_path() == str(tmp_path / sub)


def test_open_storage_file_url(tmp_path: Path) -> None:
    folder = tmp_path / "via url"
    storage = open_storage(f"file://{folder}")
    assert isinstance(storage, LocalStorage)
    assert storage.root == folder
    quoted = open_storage(f"file://localhost{folder}".replace(" ", "%20"))
    assert isinstance(quoted, LocalStorage)
    assert quoted.root == folder


@pytest.mark.parametrize("url", ["", "/tmp/x", "nope://x"])
def test_open_storage_rejects_urls_listing_known_schemes(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert known_schemes()
    for scheme in known_schemes():
        assert scheme in message
    if url:
        assert url in message


def test_a_bare_folder_path_is_refused_with_the_url_that_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "team cache"
    with pytest.raises(ValueError) as caught:
        open_storage(str(folder))
    assert folder.as_uri() in str(caught.value)
    assert open_storage(folder.as_uri()).get_root_path() == str(folder)
    assert not folder.exists()


@pytest.mark.parametrize("url", ["file://host/x", "file://"])
def test_open_storage_rejects_bad_file_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file:///"):
        open_storage(url)
    assert list(tmp_path.iterdir()) == []


# -- locks: holding, releasing, describing -----------------------------------------------------


def test_seed_signatures_and_defaults() -> None:
    wait = inspect.signature(LocalStorage.wait_for_unlock).parameters
    assert list(wait) == [
        "self", "lock_name", "timeout", "initial_poll_interval", "max_poll_interval",
        "backoff_factor",
    ]
    assert wait["timeout"].default == 7200
    assert wait["initial_poll_interval"].default == 0.5
    assert wait["max_poll_interval"].default == 10.0
    assert wait["backoff_factor"].default == 1.5
    acquire = inspect.signature(LocalStorage.try_acquire_lock).parameters
    assert list(acquire) == ["self", "lock_name", "ttl", "heartbeat_interval"]
    assert acquire["ttl"].default == 3600
    assert acquire["heartbeat_interval"].default is None


def test_lock_is_exclusive_until_released(storage: LocalStorage) -> None:
    assert storage.try_acquire_lock("job", ttl=60)
    assert storage._is_locked("job")
    assert not storage.try_acquire_lock("job", ttl=60)
    storage.release_lock("job")
    assert not storage._is_locked("job")
    assert storage.lock_info("job") is None
    assert storage.try_acquire_lock("job", ttl=60)
    storage.release_lock("job")


def test_release_of_unheld_lock_is_harmless(storage: LocalStorage) -> None:
    storage.release_lock("never-acquired")
    assert storage.try_acquire_lock("once", ttl=60)
    storage.release_lock("once")
    storage.release_lock("once")
    assert storage.lock_info("once") is None
    assert not lock_file(storage, "once").exists()


def test_lock_path_and_file(storage: LocalStorage) -> None:
    assert storage._get_lock_path("x") == "locks/x.lock"
    path = storage.root / "locks" / "x.lock"
    assert storage.try_acquire_lock("x", ttl=60)
    data = path.read_bytes()  # right after acquiring: never empty, always whole
    assert data
    fields = json.loads(data)
    info = storage.lock_info("x")
    assert info is not None
    assert fields["pid"] == os.getpid()
    assert fields["token"] == info.token
    storage.release_lock("x")
    assert not path.exists()
    assert hidden_files(storage.root / "locks") == []


def test_lock_info_fields(storage: LocalStorage) -> None:
    before = time.time()
    assert storage.try_acquire_lock("info", ttl=60)
    info = storage.lock_info("info")
    assert info is not None
    assert info.name == "info"
    assert info.user == this_user()
    assert info.host == this_host()
    assert info.pid == os.getpid()
    assert isinstance(info.token, str) and info.token
    assert before - 5 <= info.acquired <= time.time() + 5
    assert abs(info.heartbeat - info.acquired) < 5
    assert info.ttl == 60
    assert info.heartbeat_interval is None
    assert info.stale is False
    assert info.holder == f"{this_user()}@{this_host()} pid {os.getpid()}"
    storage.release_lock("info")


def test_each_acquisition_gets_a_new_token(storage: LocalStorage) -> None:
    tokens = set()
    for _ in range(3):
        assert storage.try_acquire_lock("t", ttl=60)
        info = storage.lock_info("t")
        assert info is not None
        tokens.add(info.token)
        storage.release_lock("t")
    assert len(tokens) == 3


def test_hostname_override(storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCACHE_HOSTNAME", "gpu-7")
    assert storage.try_acquire_lock("h", ttl=60)
    info = storage.lock_info("h")
    assert info is not None and info.host == "gpu-7" and not info.stale
    storage.release_lock("h")


def test_list_locks(storage: LocalStorage) -> None:
    assert storage.list_locks() == []
    assert storage.try_acquire_lock("b", ttl=60)
    assert storage.try_acquire_lock("a", ttl=60)
    plant(storage, "dead", record(pid=dead_pid()).to_bytes())
    listed = storage.list_locks()
    assert [info.name for info in listed] == ["a", "b", "dead"]
    assert [info.stale for info in listed] == [False, False, True]
    storage.release_lock("a")
    storage.release_lock("b")
    assert [info.name for info in storage.list_locks()] == ["dead"]


def test_hidden_lock_names_are_rejected_or_listed(storage: LocalStorage) -> None:
    """A held lock must show in ``list_locks`` (the CLI and widget use it)."""
    try:
        acquired = storage.try_acquire_lock(".hidden", ttl=60)
    except labcache.InvalidNameError:
        return
    try:
        assert acquired
        assert ".hidden" in [info.name for info in storage.list_locks()]
    finally:
        storage.release_lock(".hidden")


def test_break_lock(storage: LocalStorage) -> None:
    assert storage.break_lock("absent") is False
    assert storage.try_acquire_lock("mine", ttl=60, heartbeat_interval=5)
    assert storage.break_lock("mine") is True
    assert storage.lock_info("mine") is None
    assert not lock_file(storage, "mine").exists()
    storage.release_lock("mine")  # harmless after a break
    # someone else's fresh lock
    plant(storage, "theirs", record(host="elsewhere").to_bytes())
    assert storage._is_locked("theirs")
    assert storage.break_lock("theirs") is True
    assert storage.lock_info("theirs") is None
    assert storage.break_lock("theirs") is False
    assert hidden_files(storage.root / "locks") == []


def test_release_never_removes_a_lock_taken_over_by_another(storage: LocalStorage) -> None:
    assert storage.try_acquire_lock("own", ttl=60)
    path = lock_file(storage, "own")
    theirs = record(host="elsewhere").to_bytes()
    aside = path.with_name(".own.theirs.tmp")
    aside.write_bytes(theirs)
    os.replace(aside, path)  # our lock went stale and was taken over
    storage.release_lock("own")
    assert path.read_bytes() == theirs
    info = storage.lock_info("own")
    assert info is not None and info.host == "elsewhere"


def test_non_positive_heartbeat_interval_is_refused(storage: LocalStorage) -> None:
    with pytest.raises(ValueError, match="heartbeat_interval"):
        storage.try_acquire_lock("hb0", ttl=60, heartbeat_interval=0)
    assert storage.lock_info("hb0") is None


# -- staleness and takeover ------------------------------------------------------------------


def test_dead_holder_on_this_host_is_stale_at_once(storage: LocalStorage) -> None:
    pid = dead_pid()
    plant(storage, "job", record(pid=pid, ttl=3600.0).to_bytes())
    info = storage.lock_info("job")
    assert info is not None and info.pid == pid
    assert info.stale is True
    assert not storage._is_locked("job")
    assert storage.try_acquire_lock("job", ttl=60)
    info = storage.lock_info("job")
    assert info is not None
    assert info.pid == os.getpid()
    assert info.stale is False
    assert not storage.try_acquire_lock("job", ttl=60)
    storage.release_lock("job")
    assert storage.lock_info("job") is None
    assert hidden_files(storage.root / "locks") == []


def test_live_holder_on_another_host_is_not_stale_before_ttl(storage: LocalStorage) -> None:
    # The pid means nothing on another host: no pid check, only the ttl.
    plant(storage, "remote", record(host="elsewhere", pid=dead_pid(), ttl=3600.0).to_bytes())
    info = storage.lock_info("remote")
    assert info is not None and info.stale is False
    assert storage._is_locked("remote")
    assert not storage.try_acquire_lock("remote", ttl=60)
    assert storage.lock_info("remote").host == "elsewhere"  # type: ignore[union-attr]


def test_foreign_lock_without_heartbeat_goes_stale_after_ttl(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABCACHE_HOSTNAME", "elsewhere")
    foreign = LockRecord.new(0.3, None)
    monkeypatch.delenv("LABCACHE_HOSTNAME")
    assert foreign.host == "elsewhere" != this_host()
    plant(storage, "short", foreign.to_bytes())
    info = storage.lock_info("short")
    if time.time() - foreign.acquired < 0.3:  # only meaningful if we were quick enough
        assert info is not None and info.stale is False
    time.sleep(0.5)  # time must pass: the record's 0.3 s ttl runs out (no beats come)
    info = storage.lock_info("short")
    assert info is not None and info.stale is True
    assert not storage._is_locked("short")
    assert storage.try_acquire_lock("short", ttl=60)
    info = storage.lock_info("short")
    assert info is not None and info.pid == os.getpid() and info.host == this_host()
    storage.release_lock("short")


def test_heartbeat_keeps_lock_alive_past_ttl(storage: LocalStorage) -> None:
    # Margins for a loaded machine: a beat may come late, 3 missed ones may not.
    assert storage.try_acquire_lock("hb", ttl=0.3, heartbeat_interval=0.5)  # type: ignore[arg-type]
    first = storage.lock_info("hb")
    assert first is not None and first.heartbeat_interval == 0.5
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        info = storage.lock_info("hb")
        assert info is not None and info.stale is False
        assert storage._is_locked("hb")
        time.sleep(0.05)
    last = storage.lock_info("hb")
    assert last is not None
    assert time.time() - last.acquired > 0.3  # well past its ttl ...
    assert last.heartbeat > first.heartbeat + 0.3  # ... because it kept beating
    assert not storage.try_acquire_lock("hb", ttl=60)
    storage.release_lock("hb")
    assert storage.lock_info("hb") is None
    assert not any(t.name == "labcache-heartbeat-hb" and t.is_alive()
                   for t in threading.enumerate())
    time.sleep(0.3)  # a stray beat must not bring the file back
    assert not lock_file(storage, "hb").exists()


def test_unreadable_lock_is_held_until_very_old(storage: LocalStorage) -> None:
    path = plant(storage, "garbage", b"\x00not json at all{")
    info = storage.lock_info("garbage")
    assert info is not None
    assert info.user == "?"
    assert info.stale is False
    assert storage._is_locked("garbage")
    assert not storage.try_acquire_lock("garbage", ttl=60)
    assert path.read_bytes() == b"\x00not json at all{"
    old = time.time() - UNREADABLE_LOCK_TTL - 60
    os.utime(path, (old, old))
    info = storage.lock_info("garbage")
    assert info is not None and info.stale is True
    assert not storage._is_locked("garbage")
    assert storage.try_acquire_lock("garbage", ttl=60)
    info = storage.lock_info("garbage")
    assert info is not None and info.pid == os.getpid()
    storage.release_lock("garbage")


def test_empty_lock_file_is_held(storage: LocalStorage) -> None:
    # The O_EXCL fallback makes a record briefly empty: that must not read as free.
    plant(storage, "empty", b"")
    assert storage._is_locked("empty")
    assert not storage.try_acquire_lock("empty", ttl=60)


def _claim_path(storage: LocalStorage, name: str) -> Path:
    raw = storage._lock_read(name)
    assert raw is not None
    return storage.root / "locks" / f".{name}.{raw.version}.claim1"


def test_fresh_claim_blocks_takeover(storage: LocalStorage) -> None:
    data = record(pid=dead_pid()).to_bytes()
    path = plant(storage, "claimed", data)
    claim = _claim_path(storage, "claimed")
    claim.touch()  # another process is taking this very record over right now
    assert not storage.try_acquire_lock("claimed", ttl=60)
    assert path.read_bytes() == data
    assert claim.exists()


def test_claim_left_by_dead_process_does_not_block_forever(storage: LocalStorage) -> None:
    path = plant(storage, "claimed", record(pid=dead_pid()).to_bytes())
    claim = _claim_path(storage, "claimed")
    claim.touch()
    old = time.time() - CLAIM_STALE_SECONDS - 10
    os.utime(claim, (old, old))
    assert storage.try_acquire_lock("claimed", ttl=60)
    info = storage.lock_info("claimed")
    assert info is not None and info.pid == os.getpid()
    assert sorted(p.name for p in path.parent.iterdir()) == ["claimed.lock"]
    storage.release_lock("claimed")
    assert list(path.parent.iterdir()) == []


# -- waiting ---------------------------------------------------------------------------------


def test_wait_for_unlock_free_lock(storage: LocalStorage) -> None:
    assert storage.wait_for_unlock("free", timeout=60, initial_poll_interval=0.1) is True


def test_wait_for_unlock_times_out_on_fresh_lock(storage: LocalStorage) -> None:
    assert storage.try_acquire_lock("held", ttl=3600)
    started = time.monotonic()
    assert storage.wait_for_unlock("held", timeout=1, initial_poll_interval=0.1) is False
    assert time.monotonic() - started >= 1
    assert storage._is_locked("held")  # waiting does not disturb the holder
    storage.release_lock("held")


def test_wait_for_unlock_sees_release(storage: LocalStorage) -> None:
    assert storage.try_acquire_lock("soon", ttl=3600)
    timer = threading.Timer(0.3, storage.release_lock, args=("soon",))
    timer.start()
    try:
        assert storage.wait_for_unlock("soon", timeout=30, initial_poll_interval=0.1) is True
    finally:
        timer.join()
    assert storage.lock_info("soon") is None


def test_wait_for_unlock_sees_stale_lock(storage: LocalStorage) -> None:
    plant(storage, "dying", record(host="elsewhere", ttl=0.3).to_bytes())
    assert storage.wait_for_unlock("dying", timeout=30, initial_poll_interval=0.1) is True
