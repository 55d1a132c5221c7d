"""Security of shared storage: signed entries across processes, permissions,
planted symbolic links, and credentials that never show."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import stat
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labcache import CacheWarning, LocalStorage, StorageError, cached, open_storage
from labcache.entry import encode
from labcache.errors import CorruptEntryError
from labcache.storage._fs import PlantedLinkError

from .support.services_redis import RedisServer, free_port

TEAM = "team-secret-for-tests-0123456789"
OTHER = "not-the-team-secret-9876543210"


# -- signed entries across processes ---------------------------------------------------------

SCRIPT = '''
import json, os, sys, warnings
from pathlib import Path
from labcache import LocalStorage, cached

root, log_dir, marker, mode = sys.argv[1:5]


def touch(path):
    Path(path).touch()


class Marker:
    """Unpickling this value creates the marker file: proof the entry was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (touch, (self.path,))


@cached(storage=LocalStorage(root))
def build(n):
    Path(log_dir, f"computed-{os.getpid()}").touch()
    return {"n": n, "marker": Marker(marker)}


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    value = build.refresh(3) if mode == "refresh" else build(3)
print(json.dumps({"n": value["n"], "warnings": [str(w.message) for w in caught],
                  "path": str(LocalStorage(root).entry_path(build.key(3), build.context))}))
'''


class Team:
    """Runs the script above in fresh interpreters with a chosen secret."""

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "team_job.py"
        self.script.write_text(SCRIPT)
        self.root, self.logs, self.marker = tmp_path / "store", tmp_path / "logs", tmp_path / "ran"
        self.logs.mkdir()

    def run(self, secret: str | None, mode: str = "call") -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k != "LABCACHE_SECRET"}
        if secret:
            env["LABCACHE_SECRET"] = secret
        done = subprocess.run(
            [sys.executable, str(self.script), str(self.root), str(self.logs), str(self.marker),
             mode], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def computations(self) -> int:
        return len(list(self.logs.iterdir()))


def test_entry_from_a_process_without_the_secret_is_refused(tmp_path: Path) -> None:
    team = Team(tmp_path)
    written = team.run(secret=None)  # a colleague (or intruder) without the secret
    assert team.computations() == 1 and written["warnings"] == []

    refused = team.run(secret=TEAM)  # refused before unpickling, recomputed, stored signed
    assert team.computations() == 2
    assert any("not signed" in message for message in refused["warnings"]), refused
    assert not team.marker.exists()

    trusted = team.run(secret=TEAM)  # the signed entry loads (and its payload runs)
    assert team.computations() == 2 and trusted["warnings"] == []
    assert team.marker.exists()


def test_entries_altered_or_forged_after_signing_are_refused(tmp_path: Path) -> None:
    team = Team(tmp_path)
    team.run(secret=TEAM)
    entry = Path(team.run(secret=TEAM)["path"])
    team.marker.unlink()
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0x10  # altered after signing
    entry.write_bytes(bytes(data))
    altered = team.run(secret=TEAM)
    assert any("unusable" in message for message in altered["warnings"]), altered
    assert not team.marker.exists() and team.computations() == 2

    team.run(secret=OTHER, mode="refresh")  # rewritten by someone with another secret
    forged = team.run(secret=TEAM)
    assert any("signature" in message for message in forged["warnings"]), forged
    assert not team.marker.exists() and team.computations() == 4


def test_a_signed_entry_copied_over_another_call_is_refused(
        storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCACHE_SECRET", TEAM)
    calls: list[int] = []

    @cached(storage=storage)
    def price(x: int) -> int:
        calls.append(x)
        return x * 100

    assert price(1) == 100 and price(2) == 200
    one = storage.entry_path(price.key(1), price.context)
    two = storage.entry_path(price.key(2), price.context)
    two.write_bytes(one.read_bytes())  # genuine and signed, but another call's result
    result, messages = _warned_call(price, 2)
    assert result == 200 and calls == [1, 2, 2]
    assert any("holds the result of key" in m for m in messages), messages


# -- permissions ------------------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def fill(storage: LocalStorage) -> None:
    """Everything LocalStorage creates: folders, an entry (temp + rename), a lock."""
    storage.upload_file(b"entry", "key", "proj/model")
    assert storage.try_acquire_lock("job", ttl=60)

    @cached(storage=storage)
    def value(x: int) -> int:
        return x

    value(1)


def created(storage: LocalStorage) -> tuple[list[Path], list[Path], list[Path]]:
    """(folders, lock files, entries) that :func:`fill` made."""
    root = storage.root
    folders = [root, root / "proj", root / "proj" / "model", root / "locks"]
    entries = [p for p in root.rglob("*") if p.is_file() and p.parent.name != "locks"]
    assert root / "proj" / "model" / "key" in entries
    return folders, [root / "locks" / "job.lock"], entries


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_new_files_and_folders_follow_the_umask(tmp_path: Path, mask: int) -> None:
    storage = LocalStorage(tmp_path / "store")
    with umask(mask):
        fill(storage)
    folders, locks, entries = created(storage)
    assert {path.name: mode(path) for path in folders} == \
        {path.name: 0o777 & ~mask for path in folders}
    assert {str(path): mode(path) for path in locks} == \
        {str(path): 0o666 & ~mask for path in locks}
    # Entries are immutable: nobody, their writer included, has a write bit.
    assert {str(path): mode(path) for path in entries} == \
        {str(path): 0o444 & ~mask for path in entries}
    storage.release_lock("job")


@pytest.mark.parametrize(("mask", "folder_mode", "lock_mode", "entry_mode"),
                         [(0o022, 0o2775, 0o664, 0o444), (0o077, 0o2770, 0o660, 0o440),
                          (0o002, 0o2775, 0o664, 0o444)])
def test_shared_storage_is_group_writable_and_setgid(tmp_path: Path, mask: int,
                                                     folder_mode: int, lock_mode: int,
                                                     entry_mode: int) -> None:
    storage = LocalStorage(tmp_path / "store", shared=True)
    with umask(mask):
        fill(storage)
    folders, locks, entries = created(storage)
    assert {path.name: mode(path) for path in folders} == {path.name: folder_mode
                                                          for path in folders}
    assert {str(path): mode(path) for path in locks} == {str(path): lock_mode for path in locks}
    # Readable by the group, writable by nobody: a teammate replaces an entry
    # (rename, the folder's permission) but can never alter its bytes.
    assert {str(path): mode(path) for path in entries} == \
        {str(path): entry_mode for path in entries}
    storage.release_lock("job")


def test_shared_storage_leaves_an_existing_root_alone(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o750)
    os.chmod(root, 0o750)
    with umask(0o022):
        LocalStorage(root, shared=True).upload_file(b"x", "key", "ctx")
    assert mode(root) == 0o750
    assert mode(root / "ctx") == 0o2775


def _another_group() -> int | None:
    if os.geteuid() == 0:
        return os.getgid() + 4242
    others = [gid for gid in os.getgroups() if gid != os.getegid()]
    return others[0] if others else None


def test_files_inherit_the_shared_folders_group(tmp_path: Path) -> None:
    group = _another_group()
    if group is None:
        pytest.skip("needs root or membership in a second group")
    root = tmp_path / "store"
    root.mkdir()
    os.chown(root, -1, group)
    os.chmod(root, 0o2775)  # what an admin does once for the team folder
    storage = LocalStorage(root, shared=True)
    storage.upload_file(b"x", "key", "proj/model")
    assert storage.try_acquire_lock("job", ttl=60)
    for path in (root / "proj", root / "proj" / "model" / "key", root / "locks" / "job.lock"):
        assert os.stat(path).st_gid == group, path
    storage.release_lock("job")


def test_sharing_is_part_of_the_configuration(tmp_path: Path) -> None:
    root = tmp_path / "store"
    shared = open_storage(f"{root.as_uri()}?shared=1")
    assert shared is LocalStorage(root, shared=True) is LocalStorage(str(root), True)
    assert shared is not LocalStorage(root)
    assert open_storage(root.as_uri()) is LocalStorage(root)
    assert open_storage(f"{root.as_uri()}?shared=0") is LocalStorage(root)
    assert repr(shared) == f"LocalStorage({str(root)!r}, shared=True)"
    assert pickle.loads(pickle.dumps(shared)) is shared
    assert pickle.loads(pickle.dumps(LocalStorage(root))) is LocalStorage(root)


@pytest.mark.parametrize("query", ["?shared=maybe", "?mode=777", "?shared=1&shared=0",
                                   "?group=team", "#frag"])
def test_unknown_file_url_options_are_value_errors(tmp_path: Path, query: str) -> None:
    with pytest.raises(ValueError, match="file:///"):
        open_storage(f"{(tmp_path / 'store').as_uri()}{query}")
    assert not (tmp_path / "store").exists()


# -- planted symbolic links -------------------------------------------------------------------


class Outside:
    """A folder outside the storage root with a precious file in it."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "outside"
        self.folder.mkdir()
        self.victim = self.folder / "victim"
        self.victim.write_bytes(bytes(encode("from outside", {"function": "x"})))
        self.before = self.listing()

    def listing(self) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in self.folder.rglob("*") if p.is_file()}

    def untouched(self) -> bool:
        return self.listing() == self.before


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside(tmp_path)


def _warned_call(func: Any, *args: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func(*args)
    assert all(issubclass(w.category, CacheWarning) for w in caught)
    return result, [str(w.message) for w in caught]


@pytest.mark.parametrize("context", ["ctx", "a/b", "a/b/c"])
def test_context_folder_link_is_never_followed(storage: LocalStorage, outside: Outside,
                                               context: str) -> None:
    storage.root.mkdir()
    link_at = storage.root / context.split("/")[0]
    target = outside.folder
    if "/" in context:  # the link is the first part; the rest exists behind it
        (outside.folder / "b" / "c").mkdir(parents=True)
        (outside.folder / "b" / "victim").write_bytes(b"precious")
        (outside.folder / "b" / "c" / "victim").write_bytes(b"precious")
        outside.before = outside.listing()
    link_at.symlink_to(target)
    with pytest.raises(PlantedLinkError, match="symbolic link"):
        storage.upload_file(b"evil", "victim", context)
    with pytest.raises(PlantedLinkError):
        storage.delete_file("victim", context)
    with pytest.raises(PlantedLinkError):
        storage.download_file("victim", context)
    assert not storage.check_if_exists("victim", context)
    assert storage.list_stored_files(context) == []
    assert storage.describe_entries(context) == []
    assert link_at.name not in storage.list_contexts()
    assert outside.untouched()
    assert sorted(p.name for p in (outside.folder / "b").rglob("*")) == \
        (["c", "victim", "victim"] if "/" in context else [])


def test_cached_call_through_a_linked_context_warns_and_computes(storage: LocalStorage,
                                                                 outside: Outside) -> None:
    @cached(storage=storage)
    def double(x: int) -> int:
        return 2 * x

    storage.root.mkdir()
    (storage.root / double.context).symlink_to(outside.folder)
    result, messages = _warned_call(double, 21)
    assert result == 42
    assert any("symbolic link" in m for m in messages), messages
    assert outside.untouched()


def test_locks_folder_link_is_never_followed(storage: LocalStorage, outside: Outside) -> None:
    storage.root.mkdir()
    (storage.root / "locks").symlink_to(outside.folder)
    with pytest.raises(PlantedLinkError):
        storage.try_acquire_lock("job", ttl=60)
    with pytest.raises(PlantedLinkError):
        storage.break_lock("job")
    assert storage.list_locks() == []

    @cached(storage=storage)
    def triple(x: int) -> int:
        return 3 * x

    result, messages = _warned_call(triple, 5)
    assert result == 15 and any("symbolic link" in m for m in messages), messages
    assert outside.untouched()


def test_entry_link_is_a_miss_and_its_target_is_kept(storage: LocalStorage,
                                                     outside: Outside) -> None:
    calls: list[int] = []

    @cached(storage=storage)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    path = storage.entry_path(square.key(4), square.context)
    path.parent.mkdir(parents=True)
    path.symlink_to(outside.victim)  # a valid entry, but not ours to read
    assert not storage.check_if_exists(path.name, square.context)
    assert storage.list_stored_files(square.context) == []
    with pytest.raises(CorruptEntryError, match="symbolic link"):
        storage.download_file(path.name, square.context)
    with pytest.raises(CorruptEntryError):
        storage.get_file_by_hashcode(path.name, square.context)

    result, messages = _warned_call(square, 4)
    assert result == 16 and calls == [4]
    assert any("symbolic link" in m for m in messages), messages
    assert outside.untouched()
    assert not path.is_symlink() and path.is_file()  # replaced by a real entry
    assert square(4) == 16 and calls == [4]


def test_temp_file_link_is_never_written_through(storage: LocalStorage, outside: Outside,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import labcache.storage._fs as fs

    monkeypatch.setattr(fs.secrets, "token_hex", lambda n=8: "feedfacefeedface")
    (storage.root / "ctx").mkdir(parents=True)
    (storage.root / "ctx" / ".entry.feedfacefeedface.tmp").symlink_to(outside.victim)
    with pytest.raises(FileExistsError):
        storage.upload_file(b"evil", "entry", "ctx")
    (storage.root / "locks").mkdir()
    (storage.root / "locks" / ".job.lock.feedfacefeedface.tmp").symlink_to(outside.victim)
    with pytest.raises(FileExistsError):
        storage.try_acquire_lock("job", ttl=60)
    assert outside.untouched()
    assert not (storage.root / "ctx" / "entry").exists()


def test_lock_record_link_is_stale_and_replaced(storage: LocalStorage, outside: Outside) -> None:
    (storage.root / "locks").mkdir(parents=True)
    record = storage.root / "locks" / "job.lock"
    record.symlink_to(outside.victim)
    info = storage.lock_info("job")
    assert info is not None and info.stale and info.user == "?"
    assert storage.try_acquire_lock("job", ttl=60)
    assert not record.is_symlink()
    assert storage.lock_info("job").pid == os.getpid()  # type: ignore[union-attr]
    storage.release_lock("job")
    assert not record.exists()
    assert outside.untouched()


def test_a_linked_root_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "mounted").symlink_to(real)
    storage = LocalStorage(tmp_path / "mounted")
    storage.upload_file(b"x", "key", "ctx")
    assert (real / "ctx" / "key").read_bytes() == b"x"
    assert storage.try_acquire_lock("job", ttl=60)
    storage.release_lock("job")


def test_a_fifo_planted_as_an_entry_does_not_hang(storage: LocalStorage) -> None:
    (storage.root / "ctx").mkdir(parents=True)
    os.mkfifo(storage.root / "ctx" / "key")
    assert not storage.check_if_exists("key", "ctx")
    with pytest.raises(FileNotFoundError):
        storage.download_file("key", "ctx")


# -- credentials never shown -----------------------------------------------------------------

PASSWORD = "Pa55-wOrd-xyz"
KEY_ID = "AKIATESTKEYID12345"
SECRET_KEY = "sEcReT/kEy+1234567890abcdef"


def _shows(storage: Any, *secrets: str) -> list[str]:
    texts = [repr(storage), str(storage), storage.get_root_path()]
    return [text for text in texts for secret in secrets if secret in text]


def _storage_error(call: Any, *secrets: str) -> str:
    """The message of the StorageError ``call`` raises.  Its cause is kept
    (the library's exception, or a scrubbed copy of it), and nothing its
    traceback shows, causes included, holds any of ``secrets``."""
    with pytest.raises(StorageError) as caught:
        call()
    assert caught.value.__cause__ is not None
    shown = "".join(traceback.format_exception(caught.value))
    assert not [secret for secret in secrets if secret in shown], shown
    return str(caught.value)


@pytest.mark.parametrize("form", ["password", "user", "query"])
def test_redis_password_never_shows_on_an_unreachable_server(
        form: str, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    url = {"password": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
           "user": f"redis://alice:{PASSWORD}@127.0.0.1:{port}/0",
           "query": f"redis://127.0.0.1:{port}/0?password={PASSWORD}"}[form]
    from labcache import RedisStorage

    storage = RedisStorage(url, prefix=f"p{form}")
    assert _shows(storage, PASSWORD) == []
    message = _storage_error(lambda: storage.check_if_exists("key", "ctx"), PASSWORD)
    assert "Redis" in message and PASSWORD not in message
    caplog.set_level(logging.DEBUG, logger="labcache")

    @cached(storage=storage)
    def f(x: int) -> int:
        return x

    result, messages = _warned_call(f, 2)
    assert result == 2 and messages and not any(PASSWORD in m for m in messages)
    assert PASSWORD not in caplog.text


def test_redis_password_never_shows_with_a_real_server(redis_server: RedisServer) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).config_set("requirepass", PASSWORD)
    from labcache import RedisStorage

    good = RedisStorage(f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0", prefix="ok")
    good.upload_file(b"x", "key", "ctx")
    assert good.download_file("key", "ctx") == b"x"
    assert _shows(good, PASSWORD) == []
    wrong = "Wr0ng-pass-abc"
    bad = RedisStorage(f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0", prefix="bad")
    message = _storage_error(lambda: bad.check_if_exists("key", "ctx"), wrong, PASSWORD)
    assert "Redis" in message and wrong not in message and PASSWORD not in message
    assert _shows(bad, wrong) == []


def test_labcache_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="labcache")
    logging.getLogger("labcache").warning("cannot reach %s", f"redis://:{PASSWORD}@db:6379/0")
    assert PASSWORD not in caplog.text
    assert "redis://:***@db:6379/0" in caplog.text


def _s3(endpoint: str, **extra: Any) -> Any:
    from labcache import S3Storage

    return S3Storage("s3://labcache-missing-bucket/p", endpoint_url=endpoint,
                     aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY,
                     region_name="us-east-1", **extra)


def test_s3_keys_never_show_on_an_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    endpoint = f"http://user:{PASSWORD}@127.0.0.1:{free_port()}"
    storage = _s3(endpoint)
    assert _shows(storage, KEY_ID, SECRET_KEY, PASSWORD) == []
    message = _storage_error(lambda: storage.check_if_exists("key", "ctx"),
                             KEY_ID, SECRET_KEY, PASSWORD)
    assert "S3" in message
    assert not [s for s in (KEY_ID, SECRET_KEY, PASSWORD) if s in message], message


def test_s3_keys_never_show_in_server_errors(s3_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from .support.services_s3 import moto_endpoint

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)  # from the environment too
    storage = _s3(moto_endpoint())
    message = _storage_error(lambda: storage.upload_file(b"x", "key", "ctx"), KEY_ID, SECRET_KEY)
    assert "NoSuchBucket" in message
    assert not [s for s in (KEY_ID, SECRET_KEY) if s in message], message


def test_monitor_never_shows_a_password() -> None:
    pytest.importorskip("ipywidgets")
    from labcache import RedisStorage
    from labcache.jupyter.widget import monitor

    storage = RedisStorage(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", prefix="w")
    panel = monitor(storage, refresh_every=None)
    try:
        text = panel.html()
        assert "refresh failed" in text and "127.0.0.1" in text
        assert PASSWORD not in text
    finally:
        close = getattr(panel, "close", None)
        if close is not None:
            close()
