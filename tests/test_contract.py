"""The storage contract: defaults a seed-style class inherits, and instance reuse.

Every member that @cached, eviction, the CLI and the widget use is declared on
``BaseStorage`` / ``BaseLockingStorage``; a class that implements only the
seed's abstract methods gets working defaults, and labcache's backends are
built once per configuration by one metaclass.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest

from labcache import LocalStorage, cached, entry
from labcache.base import BaseLockingStorage, BaseSingleton, EntryStat
from labcache.locks import RawLock, RecordLockingStorage
from tests.support.memory import MemoryFiles, MemoryLockingStorage, MemoryStorage


def test_seed_style_storage_gets_every_contract_default() -> None:
    store = MemoryStorage("contract-defaults")
    store.upload_file(entry.encode(41, {"function": "f", "created": 5.0}), "k", "ctx")

    assert store.open_entry("missing", "ctx") is None
    assert entry.load(store.open_entry("k", "ctx"))[0] == 41
    assert entry.load(store.open_mapped("k", "ctx"))[0] == 41
    assert store.open_mapped("missing", "ctx") is None
    assert store.describe_entries("ctx") == [EntryStat("k", None, None)]
    assert store.lists_contexts is False and store.list_contexts() == []
    assert store.forget_local_copy("k", "ctx") is False
    assert store.find_orphans() == []
    with pytest.raises(FileNotFoundError, match="no entry 'missing'"):
        store.read_entry_header("missing", "ctx")
    store.evict_entry("k", "ctx")  # falls back to delete_file
    assert not store.check_if_exists("k", "ctx")


def test_seed_style_locking_storage_declares_what_it_cannot_do() -> None:
    store = MemoryLockingStorage("contract-locks")
    assert (store.names_holders, store.wakes_waiters) == (False, False)
    assert store.held_token("any") is None
    assert store.lock_info("any") is None and store.list_locks() == []
    assert store.storage_time() > 0
    store.wait_for_release("any", 0.0)  # a plain pause


def test_labcache_backends_declare_their_capabilities(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    assert store.names_holders and store.lists_contexts
    assert not store.wakes_waiters  # no pub/sub on a file system
    assert store.try_acquire_lock("cap", ttl=60)
    try:
        token = store.held_token("cap")
        info = store.lock_info("cap")
        assert info is not None and info.token == token
    finally:
        store.release_lock("cap")


class _Counted(BaseSingleton):
    built = 0

    def __init__(self, where: str, shared: bool = False) -> None:
        type(self).built += 1
        self.where, self.shared = where, shared


def test_same_configuration_is_one_instance_built_once() -> None:
    before = _Counted.built
    first = _Counted("/reuse-a")
    assert _Counted("/reuse-a") is first
    assert _Counted("/reuse-a", shared=True) is not first
    assert _Counted.built == before + 2  # __init__ never ran again on a reused instance


def test_unhashable_configuration_builds_a_new_instance() -> None:
    assert _Counted(["/x"]) is not _Counted(["/x"])  # type: ignore[arg-type]


def test_wrong_arguments_are_the_class_own_type_error() -> None:
    with pytest.raises(TypeError, match="__init__"):
        LocalStorage(nowhere="/x")  # type: ignore[call-arg]


def test_spellings_of_one_configuration_share_an_instance(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    assert LocalStorage("cache") is LocalStorage(str(tmp_path / "cache"))
    assert LocalStorage(path=tmp_path / "cache") is LocalStorage("cache", False)


def test_instances_built_at_once_in_threads_are_one(tmp_path: Path) -> None:
    found: list[Any] = []
    barrier = threading.Barrier(8)

    def build() -> None:
        barrier.wait()
        found.append(LocalStorage(tmp_path / "racy"))

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(store) for store in found}) == 1


class _ForgetfulRecords(MemoryFiles, RecordLockingStorage):
    """A third-party backend whose __init__ calls no base __init__ at all."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.files: dict[tuple[str, str], bytes] = {}
        self.records: dict[str, RawLock] = {}
        self.versions = itertools.count()

    def _lock_create(self, name: str, data: bytes) -> str | None:
        if name in self.records:
            return None
        return self._put(name, data)

    def _put(self, name: str, data: bytes) -> str:
        import time

        version = str(next(self.versions))
        self.records[name] = RawLock(data, time.time(), version)
        return version

    def _lock_read(self, name: str) -> RawLock | None:
        return self.records.get(name)

    def _lock_replace(self, name: str, version: str, data: bytes) -> str | None:
        held = self.records.get(name)
        return self._put(name, data) if held and held.version == version else None

    def _lock_delete(self, name: str, version: str) -> bool:
        held = self.records.get(name)
        if held is None or held.version != version:
            return False
        del self.records[name]
        return True

    def _lock_touch(self, name: str, version: str) -> str | None:
        held = self.records.get(name)
        return self._put(name, held.data) if held and held.version == version else None

    def _lock_names(self) -> list[str]:
        return list(self.records)


def test_backend_that_skips_base_init_still_locks_and_caches() -> None:
    store = _ForgetfulRecords("forgetful")
    assert store.try_acquire_lock("job", ttl=60)
    assert not store.try_acquire_lock("job", ttl=60)
    assert store.held_token("job") is not None
    store.release_lock("job")
    assert store.lock_info("job") is None

    runs: list[int] = []

    @cached(storage=store)
    def double(x: int) -> int:
        runs.append(x)
        return 2 * x

    assert (double(4), double(4), runs) == (8, 8, [4])


def test_storage_is_still_a_base_singleton(tmp_path: Path) -> None:
    assert isinstance(LocalStorage(tmp_path), BaseSingleton)
    assert issubclass(BaseLockingStorage, BaseSingleton)
