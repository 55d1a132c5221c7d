"""Any labcache storage as the storage of LabChain's caching filters.

LabChain (PyPI ``framework3``, package ``labchain``) caches pipeline filters
with ``Cached`` and ``CachedWithLocking``.  Its storages take *objects*:
``upload_file`` pickles what it is given (the filters give it
``pickle.dumps(value)``), ``download_file`` returns the object (unpickling
twice when what was stored is itself a pickle), and every context is
``get_root_path()`` followed by a relative path such as ``"Model/3fa2…"``.

labcache's storages store *bytes*.  :class:`LabChainStorage` sits between
the two without changing either: objects go in as labcache entries (a
checksum, and a signature with ``LABCACHE_SECRET``), come out as objects,
and locks go straight to the wrapped storage, with its tokens, heartbeats
and takeover of dead holders::

    from labchain import CachedWithLocking
    from labcache import RedisStorage
    from labcache.labchain import LabChainStorage

    storage = LabChainStorage(RedisStorage("redis://cache:6379/0"))
    step = CachedWithLocking(filter=MyFilter(), storage=storage)

This module is not imported by ``import labcache``.  When ``labchain`` is
installed, importing it registers :class:`LabChainStorage` as a virtual
subclass of LabChain's ``BaseLockingStorage``, the check
``CachedWithLocking`` makes.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from typing import Any

from . import entry
from .base import BaseLockingStorage, BaseStorage, LockInfo
from .errors import InvalidNameError
from .names import check_entry_context, check_name

__all__ = ["LabChainStorage"]

logger = logging.getLogger("labcache")

#: The context of entries LabChain stores right at the root (an empty path).
ROOT_CONTEXT = "_root_"


class LabChainStorage(BaseLockingStorage):
    """A labcache storage that speaks LabChain's object-in, object-out dialect.

    Args:
        storage: the labcache storage (or storage URL) that holds the entries
            and the locks.
        namespace: the first part of every context this adapter uses in
            ``storage``, keeping LabChain's entries apart from ``@cached``
            functions; it is also what ``get_root_path()`` returns, with a
            trailing ``/``.

    Examples:
        >>> import tempfile
        >>> from labcache import LocalStorage
        >>> chain = LabChainStorage(LocalStorage(tempfile.mkdtemp()))
        >>> context = chain.get_root_path() + "Scaler/3fa2"
        >>> chain.upload_file({"mean": 0.5}, "model", context)
        'model'
        >>> chain.download_file("model", context)
        {'mean': 0.5}
        >>> chain.upload_file(pickle.dumps([1, 2]), "data", context)  # as the filters do
        'data'
        >>> chain.download_file("data", context)
        [1, 2]
    """

    @classmethod
    def _instance_key(cls, storage: BaseStorage | str, namespace: str = "labchain") -> Any:
        # One instance per (storage, namespace) however they are passed.
        return storage, namespace

    def __init__(self, storage: BaseStorage | str, namespace: str = "labchain") -> None:
        if isinstance(storage, str):
            from .storage import open_storage

            storage = open_storage(storage)
        if not isinstance(storage, BaseLockingStorage):
            raise TypeError(f"LabChainStorage needs a labcache storage with locks, not "
                            f"{type(storage).__name__}")
        self.storage, self.namespace = storage, check_name(namespace, "namespace")

    def __repr__(self) -> str:
        return f"LabChainStorage({self.storage!r}, namespace={self.namespace!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.storage, self.namespace))

    # -- contexts ---------------------------------------------------------------------

    def get_root_path(self) -> str:
        """What LabChain's filters put in front of every context."""
        return f"{self.namespace}/"

    def context_of(self, context: str) -> str:
        """The labcache context for a LabChain context (root + relative path).

        Empty parts (``"labchain//tmp"``) are dropped as a file system would;
        ``.``/``..`` parts and contexts without this storage's root raise
        ``InvalidNameError`` before any I/O.

        Examples:
            >>> from labcache import LocalStorage
            >>> import tempfile
            >>> chain = LabChainStorage(LocalStorage(tempfile.mkdtemp()))
            >>> chain.context_of("labchain/Scaler/3fa2"), chain.context_of("labchain//tmp")
            ('labchain/Scaler/3fa2', 'labchain/tmp')
        """
        root = self.get_root_path()
        if not isinstance(context, str) or not context.startswith(root):
            raise InvalidNameError(
                f"invalid context {context!r}: LabChain contexts start with this storage's "
                f"root {root!r} (get_root_path() + a relative path)")
        parts = [part for part in context[len(root):].split("/") if part]
        return check_entry_context("/".join([self.namespace, *(parts or [ROOT_CONTEXT])]))

    # -- objects in, objects out -------------------------------------------------------

    def upload_file(self, file: object, file_name: str, context: str,
                    direct_stream: bool = False) -> str | None:
        """Store the object ``file`` (pickled into a labcache entry)."""
        encoded = entry.encode(file, {"function": "labchain", "key": file_name})
        self.storage.upload_file(encoded, file_name, self.context_of(context))
        return file_name

    def download_file(self, hashcode: str, context: str) -> Any:
        """The stored object; a stored pickle (``bytes``) is unpickled too, as
        LabChain's own storages do."""
        raw = self.storage.download_file(hashcode, self.context_of(context))
        value, _ = entry.load(raw.read() if hasattr(raw, "read") else bytes(raw))
        return pickle.loads(value) if isinstance(value, bytes) else value

    def get_file_by_hashcode(self, hashcode: str, context: str) -> Any:
        """The stored object (LabChain's filters only use ``download_file``)."""
        return self.download_file(hashcode, context)

    def list_stored_files(self, context: str) -> list[Any]:
        return self.storage.list_stored_files(self.context_of(context))

    def check_if_exists(self, hashcode: str, context: str) -> bool:
        return self.storage.check_if_exists(hashcode, self.context_of(context))

    def delete_file(self, hashcode: str, context: str) -> None:
        self.storage.delete_file(hashcode, self.context_of(context))

    # -- locks: the wrapped storage's -----------------------------------------------------

    def try_acquire_lock(self, lock_name: str, ttl: int = 3600,
                         heartbeat_interval: int | None = None) -> bool:
        return self.storage.try_acquire_lock(lock_name, ttl, heartbeat_interval)

    def release_lock(self, lock_name: str) -> None:
        self.storage.release_lock(lock_name)

    def _is_locked(self, lock_name: str) -> bool:
        return self.storage._is_locked(lock_name)

    def lock_info(self, lock_name: str) -> LockInfo | None:
        return self.storage.lock_info(lock_name)

    def list_locks(self) -> list[LockInfo]:
        return self.storage.list_locks()

    def break_lock(self, lock_name: str) -> bool:
        return self.storage.break_lock(lock_name)

    def wait_for_release(self, lock_name: str, seconds: float) -> None:
        self.storage.wait_for_release(lock_name, seconds)

    def held_token(self, lock_name: str) -> str | None:
        return self.storage.held_token(lock_name)

    def storage_time(self) -> float:
        return self.storage.storage_time()

    # The wrapped storage's capabilities are this adapter's.

    @property
    def wake_poll_interval(self) -> float:  # type: ignore[override]
        return self.storage.wake_poll_interval

    @property
    def names_holders(self) -> bool:  # type: ignore[override]
        return self.storage.names_holders

    @property
    def wakes_waiters(self) -> bool:  # type: ignore[override]
        return self.storage.wakes_waiters

    @property
    def clock_resolution(self) -> float:  # type: ignore[override]
        return self.storage.clock_resolution

    def update_heartbeat(self, lock_name: str) -> bool:
        """LabChain's filters call this while they train; labcache's locks
        already beat by themselves (``try_acquire_lock(heartbeat_interval=)``),
        so this only tells whether the lock is still held and fresh."""
        return self.storage._is_locked(lock_name)


def _register_with_labchain() -> None:
    """Make ``isinstance(adapter, labchain's BaseLockingStorage)`` true."""
    if importlib.util.find_spec("labchain") is None:
        return
    try:
        from labchain.base.base_storage import BaseLockingStorage as LabChainLocking
    except Exception as exc:  # labchain's own imports (torch, sklearn) are missing
        logger.debug("labchain is installed but cannot be imported: %s", exc)
        return
    LabChainLocking.register(LabChainStorage)


_register_with_labchain()
