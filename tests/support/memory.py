"""In-memory storages written the way a third-party backend author would.

``MemoryStorage`` and ``MemoryLockingStorage`` implement only the seed's
abstract methods (no tokens, no lock_info), as a LabChain user would;
``MemoryFiles`` holds their entries in a dict so that other test backends
(one built on ``RecordLockingStorage``, say) store entries the same way.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from labcache.base import BaseLockingStorage, BaseStorage


class MemoryFiles:
    """The entry half of the seed interface over ``self.files``; a subclass sets
    ``self.name`` and ``self.files`` (a dict keyed by ``(context, name)``)."""

    name: str
    files: dict[tuple[str, str], bytes]

    def get_root_path(self) -> str:
        return f"memory://{self.name}"

    def upload_file(self, file: object, file_name: str, context: str,
                    direct_stream: bool = False) -> str | None:
        self.files[(context, file_name)] = file.read()  # type: ignore[attr-defined]
        return file_name

    def download_file(self, hashcode: str, context: str) -> Any:
        return self.files[(context, hashcode)]

    def list_stored_files(self, context: str) -> list[Any]:
        return [name for ctx, name in self.files if ctx == context]

    def get_file_by_hashcode(self, hashcode: str, context: str) -> Any:
        return self.download_file(hashcode, context)

    def check_if_exists(self, hashcode: str, context: str) -> bool:
        return (context, hashcode) in self.files

    def delete_file(self, hashcode: str, context: str) -> None:
        if (context, hashcode) not in self.files:
            raise FileNotFoundError(f"File {hashcode} not found in {context}")
        del self.files[(context, hashcode)]


class MemoryStorage(MemoryFiles, BaseStorage):
    """Entries only, no locks: @cached must still cache (without exclusion)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.files = {}


class MemoryLockingStorage(MemoryStorage, BaseLockingStorage):
    """The seed's lock methods, TTL-only, as a LabChain user would write them."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.locks: dict[str, float] = {}
        self.ttls: dict[str, float] = {}
        self.guard = threading.Lock()

    def try_acquire_lock(self, lock_name: str, ttl: int = 3600,
                         heartbeat_interval: int | None = None) -> bool:
        with self.guard:
            if self._is_locked(lock_name):
                return False
            self.locks[lock_name] = time.time()
            self.ttls[lock_name] = ttl
            return True

    def release_lock(self, lock_name: str) -> None:
        with self.guard:
            self.locks.pop(lock_name, None)

    def _is_locked(self, lock_name: str) -> bool:
        taken = self.locks.get(lock_name)
        return taken is not None and time.time() - taken < self.ttls[lock_name]
