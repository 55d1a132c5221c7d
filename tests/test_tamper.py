"""Verify what you use: nobody who can write an entry file runs code in a
reader's process, even by changing the file while it is being loaded.

The attack these tests replay: a reader checks an entry's checksum and
signature over a memory map, then unpickles from the same map; a writer of
the file swaps the pickle bytes in between and restores them afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import mmap
import os
import pickle
import secrets
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labcache import CacheWarning, LocalStorage, cached
from labcache import entry as entry_format
from labcache.errors import CorruptEntryError

SECRET = "tamper-test-secret-0123456789abcdef"
_PREFIX = struct.Struct("<4sHHII16s32s")


class Evil:
    """Unpickling this makes a folder: proof that attacker bytes were run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def value(n: int) -> dict[str, Any]:
    # A long string keeps the real pickle stream longer than the attacker's.
    return {"n": n, "note": "x" * 300, "array": np.arange(n, dtype=np.float64)}


def pickle_span(data: bytes) -> tuple[int, int]:
    """(offset, size) of an entry's pickle stream."""
    length = _PREFIX.unpack_from(data)[4]
    size = entry_format.read_header(data).sizes[0]
    return _PREFIX.size + length, size


def evil_bytes(marker: Path, size: int) -> bytes:
    stream = pickle.dumps(Evil(str(marker)), protocol=5)
    assert len(stream) <= size
    return stream + b"." * (size - len(stream))  # unpickling stops at the first STOP


FLIPPER = """
import os, sys, time
path, offset, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[5])
good, bad = bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
end = time.monotonic() + seconds
flips = 0
while time.monotonic() < end:
    for data in (bad, good):
        try:  # by path each time: the reader may replace the entry by rename
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            continue
        os.pwrite(fd, data, offset)
        os.close(fd)
        flips += 1
print(flips)
"""


@contextlib.contextmanager
def flipping(path: Path, offset: int, good: bytes, bad: bytes, seconds: float) -> Iterator[None]:
    """Another process swaps ``good`` and ``bad`` at ``offset`` of ``path``."""
    flipper = subprocess.Popen(
        [sys.executable, "-c", FLIPPER, str(path), str(offset), good.hex(), bad.hex(),
         str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        out, _ = flipper.communicate(timeout=seconds + 30)
        assert flipper.returncode == 0 and int(out) > 100, out  # it really flipped


def loads_while_flipping(load: Callable[[], Any], marker: Path, seconds: float) -> int:
    """Call ``load`` until ``seconds`` pass; count the loads that were refused."""
    refused, end = 0, time.monotonic() + seconds
    while time.monotonic() < end and not marker.exists():
        try:
            load()
        except CorruptEntryError:
            refused += 1
    return refused


@pytest.mark.parametrize("signed", [False, True], ids=["checksum", "signed"])
def test_bytes_swapped_during_mapped_loads_never_run(tmp_path: Path, monkeypatch: Any,
                                                     signed: bool) -> None:
    if signed:
        monkeypatch.setenv("LABCACHE_SECRET", SECRET)
    path, marker = tmp_path / "entry", tmp_path / "ran-attacker-code"
    data = bytes(entry_format.encode(value(1000), {"key": "k"}))
    path.write_bytes(data)
    offset, size = pickle_span(data)
    good = data[offset : offset + size]
    with path.open("rb") as f:
        mapped = np.memmap(f, mode="r")  # a live view of the file, as mmap_mode="r" uses

    def load() -> None:
        loaded, _ = entry_format.load(memoryview(mapped), copy_buffers=False)
        assert loaded["n"] == 1000 and loaded["note"] == "x" * 300

    with flipping(path, offset, good, evil_bytes(marker, size), seconds=3.0):
        refused = loads_while_flipping(load, marker, seconds=3.0)
    assert not marker.exists(), "attacker bytes were unpickled"
    assert refused > 0  # the swaps were seen, and refused


def test_cached_mmap_hits_never_run_swapped_bytes(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("LABCACHE_SECRET", SECRET)
    storage, marker = LocalStorage(tmp_path / "store"), tmp_path / "ran-attacker-code"

    @cached(storage=storage, mmap_mode="r")
    def build(n: int) -> dict[str, Any]:
        return value(n)

    build(1000)
    path = storage.entry_path(build.key(1000), build.context)
    data = path.read_bytes()
    offset, size = pickle_span(data)
    with warnings.catch_warnings():
        # A swap caught by the checks is a miss that recomputes, with a warning.
        warnings.simplefilter("ignore", CacheWarning)
        with flipping(path, offset, data[offset : offset + size],
                      evil_bytes(marker, size), seconds=3.0):
            end = time.monotonic() + 3.0
            while time.monotonic() < end and not marker.exists():
                got = build(1000)
                assert got["n"] == 1000
                np.testing.assert_array_equal(got["array"], np.arange(1000, dtype=np.float64))
    assert not marker.exists(), "attacker bytes were unpickled"


def test_group_writable_entries_are_read_not_mapped(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")

    @cached(storage=storage, mmap_mode="r")
    def ramp(n: int) -> Any:
        return np.arange(n, dtype=np.float64)

    ramp(100_000)
    key, context = ramp.key(100_000), ramp.context
    assert isinstance(storage.open_mapped(key, context), mmap.mmap)
    os.chmod(storage.entry_path(key, context), 0o664)  # as older versions wrote shared entries
    assert isinstance(storage.open_mapped(key, context), bytes)
    hit = ramp(100_000)
    assert hit.flags.owndata or hit.base is not None
    np.testing.assert_array_equal(hit, np.arange(100_000, dtype=np.float64))


def test_signed_hits_never_read_through_a_linked_context(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    """A context folder swapped for a link to a folder someone else controls
    (holding a genuine signed copy they can still alter) is never read."""
    monkeypatch.setenv("LABCACHE_SECRET", SECRET)
    storage, runs = LocalStorage(tmp_path / "store"), []

    @cached(storage=storage)
    def build(n: int) -> int:
        runs.append(n)
        return n * 2

    assert build(3) == 6
    context = storage.root / build.context
    theirs = tmp_path / "theirs"
    shutil.copytree(context, theirs)
    context.rename(tmp_path / "moved-away")
    context.symlink_to(theirs, target_is_directory=True)
    with pytest.warns(CacheWarning, match="link"):
        assert build(3) == 6
    assert runs == [3, 3]  # recomputed: the linked copy was not loaded


# -- two real Unix users sharing a folder -----------------------------------------------------


def _run_as(user: str, group: int, body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child as ``user``; its exit status (0: passed)."""
    import pwd

    entry = pwd.getpwnam(user)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 1
        try:
            os.setgroups([group])
            os.setgid(group)
            os.setuid(entry.pw_uid)
            os.umask(0o002)
            body()
            code = 0
        except BaseException as exc:  # reported through the exit status and stderr
            os.write(2, f"{user}: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def two_users() -> Iterator[tuple[str, str, int]]:
    """Two fresh Unix users in one fresh group (created as root, removed after)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create two real users (CI runs it as root)")
    tag = secrets.token_hex(3)
    group, alice, bob = f"lcteam{tag}", f"lcalice{tag}", f"lcbob{tag}"
    subprocess.run(["groupadd", group], check=True)
    try:
        for user in (alice, bob):
            subprocess.run(["useradd", "-M", "-N", "-g", group, "-s", "/usr/sbin/nologin", user],
                           check=True)
        yield alice, bob, grp.getgrnam(group).gr_gid
    finally:
        for user in (alice, bob):
            subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)


def team_result(n: int) -> dict[str, Any]:
    """Computed by alice in the two-user test; each run leaves a file."""
    Path(os.environ["LABCACHE_RUNS"], f"run-{secrets.token_hex(4)}").touch()
    return value(n)


def test_a_teammate_without_the_secret_cannot_run_code_in_anothers_kernel(
        two_users: tuple[str, str, int], monkeypatch: Any) -> None:
    alice, bob, group = two_users
    shared = Path(tempfile.mkdtemp(prefix="labcache-team-"))
    try:
        _two_user_attack(shared, alice, bob, group, monkeypatch)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _two_user_attack(shared: Path, alice: str, bob: str, group: int, monkeypatch: Any) -> None:
    os.chown(shared, 0, group)
    os.chmod(shared, 0o2775)  # what an admin does once for the team folder
    root, runs, marker = shared / "cache", shared / "runs", shared / "ran-attacker-code"
    runs.mkdir()
    os.chown(runs, 0, group)
    os.chmod(runs, 0o2777)
    monkeypatch.setenv("LABCACHE_RUNS", str(runs))
    storage = LocalStorage(root, shared=True)
    function = cached(storage=storage, mmap_mode="r")(team_result)
    _warm_imports(function)

    def alice_stores() -> None:
        os.environ["LABCACHE_SECRET"] = SECRET
        assert function(1000)["n"] == 1000

    assert _run_as(alice, group, alice_stores) == 0
    path = storage.entry_path(function.key(1000), function.context)
    assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0  # immutable: no write bit

    def bob_writes_in_place() -> None:
        with pytest.raises(PermissionError):
            os.open(path, os.O_WRONLY)

    assert _run_as(bob, group, bob_writes_in_place) == 0

    context = root / function.context

    def bob_swaps_the_folder() -> None:
        theirs = shared / "bobs-folder"
        shutil.copytree(context, theirs)
        copy = theirs / path.name
        os.chmod(copy, 0o644)  # bob owns his copy and can alter it at will
        context.rename(shared / "moved-away")
        context.symlink_to(theirs, target_is_directory=True)

    assert _run_as(bob, group, bob_swaps_the_folder) == 0

    def alice_loads() -> None:
        os.environ["LABCACHE_SECRET"] = SECRET
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert function(1000)["n"] == 1000
        assert any("link" in str(w.message) for w in caught), [str(w.message) for w in caught]

    assert _run_as(alice, group, alice_loads) == 0
    assert len(list(runs.iterdir())) == 2  # alice recomputed instead of reading bob's folder
    assert not marker.exists()


def _warm_imports(function: Any) -> None:
    """Import in this process what a forked child would import lazily (the
    new users cannot read the interpreter's files under /root)."""
    import getpass  # noqa: F401
    import hashlib  # noqa: F401
    import hmac  # noqa: F401
    import pwd  # noqa: F401

    import cloudpickle  # noqa: F401

    function.key(1000)
    with contextlib.suppress(Exception):
        entry_format.encode(value(1), {})
    signal.getsignal(signal.SIGINT)
