"""What a storage raises when its server, endpoint or folder fails: one
StorageError that names the place (never a credential) and says what to do,
with the backend's own exception kept as ``__cause__`` (a scrubbed copy when
its text carries a credential); a missing entry stays a FileNotFoundError.

Real parts: a redis-server, the moto server, real folders.  The permission
tests run the CLI and the widget in a process whose root (CI runs as root)
has given up the capabilities that let it ignore file modes, so a folder
without permission fails there as it does for anyone else.
"""

from __future__ import annotations

import errno
import html
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, StorageError

from .support.procs import PATIENCE
from .support.services_redis import RedisServer, free_port

PASSWORD = "Pa55-wOrd-for-errors"


def raised(call: Callable[[], object]) -> StorageError:
    with pytest.raises(StorageError) as caught:
        call()
    return caught.value


def shown(error: BaseException) -> str:
    """Everything a traceback of ``error`` prints, its causes included."""
    return "".join(traceback.format_exception(error))


# -- every backend: the answers of the contract are not errors ------------------------------


def test_a_missing_entry_is_file_not_found_not_a_storage_error(any_storage: Any) -> None:
    for call in (lambda: any_storage.download_file("absent", "ctx"),
                 lambda: any_storage.delete_file("absent", "ctx"),
                 lambda: any_storage.read_entry_header("absent", "ctx")):
        with pytest.raises(FileNotFoundError) as caught:
            call()
        assert not isinstance(caught.value, StorageError)
    assert any_storage.open_entry("absent", "ctx") is None
    assert not any_storage.check_if_exists("absent", "ctx")


# -- Local ---------------------------------------------------------------------------------


def test_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder's parent should be")
    storage = LocalStorage(blocker / "store")
    for call in (storage.list_contexts, lambda: storage.list_stored_files("ctx"),
                 lambda: storage.upload_file(b"x", "k", "ctx"),
                 lambda: storage.download_file("k", "ctx"),
                 lambda: storage.try_acquire_lock("job", ttl=60), storage.list_locks):
        error = raised(call)
        assert isinstance(error, OSError)  # `except OSError` callers still catch it
        assert f"Local folder {storage.root}: storage failed to " in str(error)
        assert "A file sits where a folder is expected" in str(error)
        assert isinstance(error.__cause__, NotADirectoryError)
        assert error.__cause__.errno == errno.ENOTDIR


def test_a_folder_planted_as_an_entry_cannot_be_deleted(storage: LocalStorage) -> None:
    storage.upload_file(b"x", "key", "ctx")
    entry = storage.entry_path("key", "ctx")
    entry.unlink()
    entry.mkdir()  # unlink() of a folder fails for root too
    error = raised(lambda: storage.delete_file("key", "ctx"))
    assert "storage failed to delete entry 'key' of 'ctx'" in str(error)
    assert "A folder sits where a file is expected" in str(error)
    assert isinstance(error.__cause__, IsADirectoryError)
    assert entry.is_dir()


# A folder's mode binds root only without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
# Dropped from the bounding set, they are gone for good once the process execs.
_MODES_BIND = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH; 24: PR_CAPBSET_DROP
    if libc.prctl(24, capability, 0, 0, 0) != 0:
        sys.exit(f"cannot drop capability {capability}: errno {ctypes.get_errno()}")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def run_bound_by_modes(*args: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a process that file modes bind, even as root."""
    boot = [] if os.geteuid() != 0 else ["-c", _MODES_BIND]
    return subprocess.run([sys.executable, *boot, *args], capture_output=True, text=True,
                          timeout=PATIENCE, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def guarded_folder(storage: LocalStorage) -> Iterator[tuple[LocalStorage, Path]]:
    """A storage with one entry in context ``ctx``; the test sets the folder's
    mode, and it is given back its permissions afterwards."""
    storage.upload_file(b"x", "abc123", "ctx")
    folder = storage.root / "ctx"
    try:
        yield storage, folder
    finally:
        folder.chmod(0o755)


def cli_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("labcache: error: StorageError: "), \
        done.stderr
    return lines[0]


def test_cli_ls_on_a_folder_without_permission(guarded_folder: Any) -> None:
    storage, folder = guarded_folder
    folder.chmod(0o000)
    message = cli_error(run_bound_by_modes("-m", "labcache", "ls", "--storage",
                                           f"file://{storage.root}"))
    assert f"Local folder {storage.root}: storage failed to list the entries of 'ctx'" in message
    assert "Permission denied" in message and "check the folder's owner and permissions" in message


def test_cli_rm_in_a_folder_without_write_permission(guarded_folder: Any) -> None:
    storage, folder = guarded_folder
    folder.chmod(0o555)  # entries can be listed, not removed
    message = cli_error(run_bound_by_modes("-m", "labcache", "rm", "abc123", "--storage",
                                           f"file://{storage.root}"))
    assert "storage failed to delete entry 'abc123' of 'ctx'" in message
    assert "Permission denied" in message and str(storage.root) in message
    folder.chmod(0o755)
    assert storage.check_if_exists("abc123", "ctx")


def test_cli_ls_with_a_file_where_the_default_folder_should_be(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    done = subprocess.run([sys.executable, "-m", "labcache", "ls"], capture_output=True,
                          text=True, timeout=PATIENCE,
                          env={**os.environ, "LABCACHE_DIR": str(blocker / "cache")})
    message = cli_error(done)
    assert f"Local folder {blocker / 'cache'}: storage failed to list the functions" in message
    assert "A file sits where a folder is expected" in message


_PANEL = """
import sys
from labcache import LocalStorage
from labcache.jupyter.widget import monitor
print(monitor(LocalStorage(sys.argv[1]), refresh_every=None).html())
"""


def test_monitor_lists_a_folder_without_permission_as_a_message(guarded_folder: Any) -> None:
    pytest.importorskip("ipywidgets")
    storage, folder = guarded_folder
    folder.chmod(0o000)
    done = run_bound_by_modes("-c", _PANEL, str(storage.root))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    page = html.unescape(done.stdout)
    assert "storage failed to list the entries of 'ctx'" in page, page
    assert "Permission denied" in page and str(storage.root) in page


# -- Redis -------------------------------------------------------------------------------------


def test_redis_unreachable_names_the_server_not_the_password() -> None:
    import redis

    from labcache import RedisStorage

    port = free_port()  # nothing listens there
    storage = RedisStorage(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", prefix="down")
    error = raised(storage.list_contexts)
    assert f"Redis at redis://:***@127.0.0.1:{port}/0 prefix down: storage failed to list " \
           "the functions" in str(error)
    assert "Check that the server is running and reachable" in str(error)
    assert isinstance(error.__cause__, redis.ConnectionError)
    assert PASSWORD not in shown(error)


def test_redis_refusing_commands_says_why(redis_server: RedisServer) -> None:
    import redis

    from labcache import RedisStorage

    storage = RedisStorage(redis_server.url, prefix="full")
    redis.Redis.from_url(redis_server.url).config_set("maxmemory", 1)  # full: writes refused
    error = raised(lambda: storage.upload_file(b"x", "k", "ctx"))
    assert "storage failed to store entry 'k' of 'ctx': OutOfMemoryError: " in str(error)
    assert "The server is out of memory" in str(error)
    assert isinstance(error.__cause__, redis.ResponseError)
    assert not storage.check_if_exists("k", "ctx")  # reads still work


def test_redis_wrong_password_says_to_check_it(redis_server: RedisServer) -> None:
    import redis

    from labcache import RedisStorage

    redis.Redis.from_url(redis_server.url).config_set("requirepass", PASSWORD)
    wrong = "not-the-password-42"
    storage = RedisStorage(f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0", prefix="w")
    error = raised(lambda: storage.try_acquire_lock("job", ttl=60))
    assert "storage failed to take lock 'job'" in str(error)
    assert "Check the user name and password in the storage URL" in str(error)
    assert isinstance(error.__cause__, redis.AuthenticationError)
    assert wrong not in shown(error) and PASSWORD not in shown(error)


def test_redis_error_text_with_the_password_is_chained_scrubbed() -> None:
    """A library may repeat the URL, password included, in its own message:
    the cause is then a copy with that text masked, never the raw object."""
    import redis

    from labcache import RedisStorage

    storage = RedisStorage(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", prefix="s")
    leaky = redis.ConnectionError(f"no answer from redis://:{PASSWORD}@db:6379 ({PASSWORD})")
    with pytest.raises(StorageError) as caught, storage._errors("probe the server"):
        raise leaky
    cause = caught.value.__cause__
    assert isinstance(cause, redis.ConnectionError) and cause is not leaky
    assert str(cause) == "no answer from redis://:***@db:6379 (***)"
    assert cause.__traceback__ is leaky.__traceback__  # where it happened is kept
    assert PASSWORD not in shown(caught.value)


# -- S3 ----------------------------------------------------------------------------------------


def test_s3_unreachable_endpoint_names_it_without_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    from labcache import S3Storage

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    port = free_port()
    storage = S3Storage("s3://labcache-down/p", endpoint_url=f"http://u:{PASSWORD}@127.0.0.1:{port}",
                        aws_access_key_id="AKIAERRORTESTS0001", aws_secret_access_key=PASSWORD,
                        region_name="us-east-1")
    error = raised(lambda: storage.list_stored_files("ctx"))
    assert f"S3 at http://u:***@127.0.0.1:{port}, bucket labcache-down: storage failed to " \
           "list_objects_v2 s3://labcache-down/p/ctx/" in str(error)
    assert "Check that the endpoint is running and reachable" in str(error)
    # botocore's message repeats the endpoint URL, password included: the cause
    # is a StorageError naming botocore's type, with the URL masked.
    assert isinstance(error.__cause__, StorageError)
    assert str(error.__cause__).startswith("botocore.exceptions.EndpointConnectionError: ")
    assert PASSWORD not in shown(error)


def test_s3_refusing_requests_says_why(s3_url: str) -> None:
    from botocore.exceptions import ClientError

    from labcache import S3Storage

    from .support.services_s3 import CREDENTIALS, moto_endpoint

    storage = S3Storage("s3://labcache-no-such-bucket-here/p", endpoint_url=moto_endpoint(),
                        **CREDENTIALS)
    error = raised(storage.list_contexts)
    assert "bucket labcache-no-such-bucket-here: storage failed to list_objects_v2" in str(error)
    assert "NoSuchBucket (HTTP 404)" in str(error)
    assert "Check the bucket name in the storage URL" in str(error)
    assert isinstance(error.__cause__, ClientError)
    assert error.__cause__.response["Error"]["Code"] == "NoSuchBucket"
    # boto3's upload wraps S3's answer in its own error: the answer is still read.
    error = raised(lambda: storage.upload_file(b"x", "k", "ctx"))
    assert "storage failed to upload s3://labcache-no-such-bucket-here/p/ctx/k: " \
           "NoSuchBucket (HTTP 404)" in str(error)
    assert "Check the bucket name in the storage URL" in str(error)
