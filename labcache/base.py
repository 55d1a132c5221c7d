"""The storage interface labcache shares with LabChain, kept name for name.

``BaseStorage`` stores opaque entries by ``(hashcode, context)``;
``BaseLockingStorage`` adds the named locks that let exactly one process
compute a result.  A class written against LabChain's documentation (it
implements only the abstract methods here) works with ``@cached`` as is.

What differs from LabChain, on purpose:

* ``BaseSingleton`` keeps one instance per class *and configuration*, so
  ``LocalStorage("/a")`` and ``LocalStorage("/b")`` are two objects.
* ``lock_info``, ``list_locks`` and ``break_lock`` exist with safe defaults,
  so the widget, the CLI and waiting messages can say who holds a lock.
* ``wait_for_unlock`` logs to the ``labcache`` logger instead of printing.

labcache's own backends derive from :class:`labcache.locks.RecordLockingStorage`,
which implements the lock methods once (tokens, heartbeat, stale rules) on
top of a few primitives per backend.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import entry
from .names import check_name

__all__ = ["ORPHAN_AGE", "BaseLockingStorage", "BaseSingleton", "BaseStorage", "EntryStat",
           "LockInfo", "Orphan", "ReusedInstances"]

logger = logging.getLogger("labcache")

#: Leftovers of an interrupted store idle for less than this (seconds) are
#: never removed by default: the store may still be running.
ORPHAN_AGE = 3600.0


class ReusedInstances(ABCMeta):
    """Metaclass that decides instance reuse once for every storage class.

    Calling a class looks up ``(class, cls._instance_key(*args, **kwargs))``
    first: the same configuration gives back the instance already built, and
    its ``__init__`` does not run again.  A class whose configuration can be
    spelled several ways (a relative and an absolute path, a URL option or a
    keyword) overrides ``_instance_key`` to normalize it.  A configuration
    that cannot be hashed (an existing client object) always builds anew.

    Examples:
        >>> class Folder(BaseSingleton):
        ...     @classmethod
        ...     def _instance_key(cls, path: str) -> str:
        ...         return path.rstrip("/")
        ...     def __init__(self, path: str) -> None:
        ...         self.path = path
        >>> Folder("/data/") is Folder("/data")
        True
    """

    _instances: ClassVar[dict[Any, Any]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            config: Any = (cls, cls._instance_key(*args, **kwargs))  # type: ignore[attr-defined]
            hash(config)
        except TypeError:
            # Unhashable (a client object: nothing to share it by) or arguments
            # the class does not take: __init__ builds anew, or says what is wrong.
            return super().__call__(*args, **kwargs)
        found = ReusedInstances._instances.get(config)
        if found is not None:
            return found
        # Built outside the guard (building may be slow); of two threads that
        # build the same configuration at once, the first one stored wins.
        built = super().__call__(*args, **kwargs)
        with ReusedInstances._guard:
            return ReusedInstances._instances.setdefault(config, built)


class BaseSingleton(metaclass=ReusedInstances):
    """One shared instance per class and configuration.

    Building a storage twice with the same configuration returns the same
    object (so its held locks and connections are shared); a different
    configuration gives a different object.  Arguments that cannot be
    hashed (an existing client object, say) always give a new instance.

    Examples:
        >>> class Shelf(BaseSingleton):
        ...     def __init__(self, where: str) -> None:
        ...         self.where = where
        >>> Shelf("/a") is Shelf("/a"), Shelf("/a") is Shelf("/b")
        (True, False)
    """

    _verbose: bool = True

    @classmethod
    def _instance_key(cls, *args: Any, **kwargs: Any) -> Any:
        """What identifies a configuration: by default the arguments as given."""
        return args, tuple(sorted(kwargs.items()))


@dataclass(frozen=True, order=True)
class EntryStat:
    """One entry as a listing sees it: name, size in bytes, modification time
    and last access time (Unix seconds), None where the backend cannot tell
    cheaply.  ``accessed`` drives least-recently-used eviction.

    Examples:
        >>> EntryStat("k", 10, modified=100.0, accessed=250.0).last_used
        250.0
    """

    name: str
    size: int | None
    modified: float | None
    accessed: float | None = None

    @property
    def last_used(self) -> float:
        """The later of last access and modification (0 if neither is known):
        what least-recently-used eviction sorts by."""
        return max(self.accessed or 0.0, self.modified or 0.0)


class BaseStorage(BaseSingleton, ABC):
    """Where entries live: bytes stored under ``(hashcode, context)``.

    ``context`` groups entries (labcache uses one context per function) and
    ``hashcode`` names one entry in it.

    Examples:
        >>> from labcache import LocalStorage
        >>> import tempfile
        >>> store = LocalStorage(tempfile.mkdtemp())
        >>> store.upload_file(b"hello", "greeting", "demo")
        'greeting'
        >>> store.download_file("greeting", "demo")
        b'hello'
    """

    @abstractmethod
    def get_root_path(self) -> str:
        """The root this storage keeps its entries under (a path or URL)."""

    @abstractmethod
    def upload_file(
        self, file: object, file_name: str, context: str, direct_stream: bool = False
    ) -> str | None:
        """Store ``file`` (bytes or a readable binary object) as ``file_name``.

        Returns the stored name, or ``None`` if nothing was stored.
        """

    @abstractmethod
    def download_file(self, hashcode: str, context: str) -> Any:
        """Return the stored bytes of ``hashcode`` in ``context``."""

    @abstractmethod
    def list_stored_files(self, context: str) -> list[Any]:
        """Names of the entries stored in ``context`` (empty if none)."""

    @abstractmethod
    def get_file_by_hashcode(self, hashcode: str, context: str) -> Any:
        """The stored entry as a readable object (or its bytes)."""

    @abstractmethod
    def check_if_exists(self, hashcode: str, context: str) -> bool:
        """Whether ``hashcode`` is stored in ``context``."""

    @abstractmethod
    def delete_file(self, hashcode: str, context: str) -> None:
        """Remove ``hashcode`` from ``context``."""

    # -- the rest of the contract, with defaults a seed-style class inherits ------
    # Everything @cached, eviction, the CLI and the widget use is here: they
    # never probe a storage for methods, and labcache's backends do better.

    def open_entry(self, hashcode: str, context: str) -> Any:
        """The entry for a cache hit: bytes or an open binary file (the
        caller closes it), or None if there is no such entry.

        Examples:
            >>> from labcache import LocalStorage
            >>> import tempfile
            >>> LocalStorage(tempfile.mkdtemp()).open_entry("nothing", "demo") is None
            True
        """
        # A seed-style storage may raise anything for a missing entry: ask first.
        if not self.check_if_exists(hashcode, context):
            return None
        try:
            found = self.get_file_by_hashcode(hashcode, context)
        except (FileNotFoundError, KeyError):
            return None
        if found is None or isinstance(found, (bytes, bytearray, memoryview)) or \
                hasattr(found, "read"):
            return found
        return self.download_file(hashcode, context)  # an object of its own kind

    def open_mapped(self, hashcode: str, context: str, mode: str = "r") -> Any:
        """The entry for a hit with ``mmap_mode``: memory-mapped where the
        backend keeps a file (``"r"`` read-only, ``"c"`` copy on write), else
        read into memory; None if there is no such entry."""
        found = self.open_entry(hashcode, context)
        if found is None or not hasattr(found, "read"):
            return found
        try:
            return bytearray(found.read())
        finally:
            if hasattr(found, "close"):
                found.close()

    def evict_entry(self, hashcode: str, context: str) -> None:
        """Remove an entry to make room (``max_size``, ``labcache gc``).

        Unlike ``delete_file`` a backend may let a reader that is streaming
        the entry right now finish it.
        """
        self.delete_file(hashcode, context)

    def forget_local_copy(self, hashcode: str, context: str) -> bool:
        """Drop this machine's copy of an entry that failed to load; True if
        there was one (the entry is then fetched again, not removed)."""
        return False

    #: Whether ``list_contexts`` can list this storage's contexts; if not,
    #: listings fall back to the cached functions this process knows.
    lists_contexts: bool = False

    def list_contexts(self) -> list[str]:
        """Contexts (one per cached function) that hold entries, sorted; the
        default cannot list them (``lists_contexts`` is False) and returns none."""
        return []

    def describe_entries(self, context: str) -> list[EntryStat]:
        """Every entry of ``context`` with its size and times where cheaply known."""
        return [EntryStat(name, None, None) for name in self.list_stored_files(context)]

    def read_entry_header(self, hashcode: str, context: str) -> entry.Header:
        """An entry's header (metadata, sizes, signer) without its payload;
        ``FileNotFoundError`` if there is no such entry."""
        found = self.open_entry(hashcode, context)
        if found is None:
            raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")
        try:
            return entry.read_header(found)
        finally:
            if hasattr(found, "close"):
                found.close()

    # -- leftovers of interrupted stores: the defaults know of none

    def find_orphans(self) -> list[Orphan]:
        """What interrupted stores left behind (temp files, incomplete
        uploads, unpublished chunks), young ones included: a young one may be
        a store still running.  The default knows of none.

        Examples:
            >>> from labcache import LocalStorage
            >>> import tempfile
            >>> LocalStorage(tempfile.mkdtemp()).find_orphans()
            []
        """
        return []

    def remove_orphans(self, older_than: float = ORPHAN_AGE,
                       dry_run: bool = False) -> list[Orphan]:
        """Remove the orphans idle for at least ``older_than`` seconds (with
        ``dry_run``, only list them); returns what was (or would be) removed.

        Each one is checked again just before it goes, so a store that wrote
        since it was found is left alone.

        Examples:
            >>> from labcache import LocalStorage
            >>> import tempfile
            >>> LocalStorage(tempfile.mkdtemp()).remove_orphans(older_than=0)
            []
        """
        if older_than < 0:
            raise ValueError(f"older_than cannot be negative ({older_than})")
        found = [o for o in self.find_orphans() if o.age is not None and o.age >= older_than]
        return found if dry_run else [o for o in found if self._remove_orphan(o, older_than)]

    def _remove_orphan(self, orphan: Orphan, older_than: float) -> bool:
        """Remove one orphan if it is still there and still idle for
        ``older_than`` seconds; True if it was removed."""
        return False


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock and whether the hold is still alive.

    Times are Unix seconds.  ``heartbeat`` is the time of the last beat
    (the acquisition time if the holder does not beat).  ``problem`` says
    why the lock's record could not be read (not JSON, a field of the wrong
    type); such a lock names no holder, and ``ttl`` is how long it is kept.

    Examples:
        >>> info = LockInfo("k", "alice", "gpu-3", 4242, "t0k", 100.0, 130.0,
        ...                 3600, 30, False)
        >>> info.holder
        'alice@gpu-3 pid 4242'
        >>> LockInfo("k", "?", "?", 0, "", 100.0, 100.0, 3600, None, False,
        ...          problem="ttl '3600' is not a number").holder
        "unreadable record: ttl '3600' is not a number"
    """

    name: str
    user: str
    host: str
    pid: int
    token: str
    acquired: float
    heartbeat: float
    ttl: float
    heartbeat_interval: float | None
    stale: bool
    problem: str | None = None

    @property
    def holder(self) -> str:
        """The holder as people read it: ``user@host pid N`` (or why the
        record names none)."""
        if self.problem is not None:
            return f"unreadable record: {self.problem}"
        return f"{self.user}@{self.host} pid {self.pid}"


@dataclass(frozen=True)
class Orphan:
    """Something an interrupted store left behind: its ``kind`` (``"temp
    file"``, ``"multipart upload"``, ``"chunks"``...), where it is, the bytes
    it takes and how long it has been idle (seconds; None if unknown, and
    then it is never removed).  ``handle`` is the backend's own.

    Examples:
        >>> Orphan("temp file", "ctx/.entry.0123456789abcdef.tmp", 4096, 7200.0).size
        4096
    """

    kind: str
    where: str
    size: int
    age: float | None
    handle: Any = field(default=None, compare=False, repr=False)


class BaseLockingStorage(BaseStorage):
    """A storage that also offers named, atomic, expiring locks.

    Exactly one process (on any machine sharing the storage) can hold a lock
    name at a time; a lock whose holder stopped beating, or outlived ``ttl``
    without a heartbeat, is stale and may be taken over.

    Examples:
        >>> from labcache import LocalStorage
        >>> import tempfile
        >>> store = LocalStorage(tempfile.mkdtemp())
        >>> if store.try_acquire_lock("train-abc", ttl=60):
        ...     try:
        ...         pass  # compute and store the result here
        ...     finally:
        ...         store.release_lock("train-abc")
        >>> store._is_locked("train-abc")
        False
    """

    #: How often ``@cached`` waiters look at a held lock, in seconds.
    wake_poll_interval: float = 0.05
    #: Whether ``lock_info`` names holders; without it waiters only ask
    #: ``_is_locked`` (the seed's locks know no holders).
    names_holders: bool = False
    #: Whether ``wait_for_release`` returns as soon as a lock is released
    #: (Redis pub/sub); if not, an async waiter sleeps on its event loop instead.
    wakes_waiters: bool = False
    #: Seconds of uncertainty in the storage's clock (S3 times are whole seconds).
    clock_resolution: float = 0.0

    @abstractmethod
    def try_acquire_lock(
        self, lock_name: str, ttl: int = 3600, heartbeat_interval: int | None = None
    ) -> bool:
        """Take ``lock_name`` if it is free or stale; never wait.

        Returns True if this process now holds the lock.
        """

    @abstractmethod
    def release_lock(self, lock_name: str) -> None:
        """Give up ``lock_name``; harmless if it is not held."""

    def wait_for_unlock(
        self,
        lock_name: str,
        timeout: int = 7200,
        initial_poll_interval: float = 0.5,
        max_poll_interval: float = 10.0,
        backoff_factor: float = 1.5,
    ) -> bool:
        """Poll until ``lock_name`` is free or stale, backing off between looks.

        The pause starts at ``initial_poll_interval`` and grows by
        ``backoff_factor`` up to ``max_poll_interval``.  Returns False if the
        lock is still held after ``timeout`` seconds.

        Examples:
            >>> from labcache import LocalStorage
            >>> import tempfile
            >>> LocalStorage(tempfile.mkdtemp()).wait_for_unlock("free", timeout=1)
            True
        """
        check_name(lock_name, "lock name")
        started = time.monotonic()
        pause = initial_poll_interval
        checks = 0
        while time.monotonic() - started < timeout:
            if not self._is_locked(lock_name):
                logger.debug(
                    "lock %s free after %d checks (%.1f s)",
                    lock_name, checks, time.monotonic() - started,
                )
                return True
            time.sleep(pause)
            checks += 1
            pause = min(pause * backoff_factor, max_poll_interval)
        logger.info("still locked: %s after %d checks (%s s)", lock_name, checks, timeout)
        return False

    @abstractmethod
    def _is_locked(self, lock_name: str) -> bool:
        """True if ``lock_name`` is held and not stale."""

    def _get_lock_path(self, lock_name: str) -> str:
        """Where ``lock_name`` lives inside the storage: ``locks/<name>.lock``."""
        return f"locks/{lock_name}.lock"

    # -- improvements over the seed, with defaults a seed-style class inherits

    def lock_info(self, lock_name: str) -> LockInfo | None:
        """Who holds ``lock_name``, or None if it is free or unknown."""
        return None

    def list_locks(self) -> list[LockInfo]:
        """Every lock currently present (fresh or stale)."""
        return []

    def break_lock(self, lock_name: str) -> bool:
        """Remove ``lock_name`` whoever holds it (a tool for people).

        Returns True if a lock was removed.  The default can only ask the
        seed's ``release_lock``.
        """
        held = self._is_locked(lock_name)
        self.release_lock(lock_name)
        return held

    def server_settings(self) -> dict[str, str | None]:
        """Settings of the server behind the storage that bear on its locks,
        for ``labcache stats`` (Redis: ``maxmemory_policy``); None: unknown."""
        return {}

    def lock_warnings(self) -> list[str]:
        """Ways this storage may lose a held lock, in words (none known: ``[]``)."""
        return []

    def wait_for_release(self, lock_name: str, seconds: float) -> None:
        """Pause a waiter for up to ``seconds``; a backend that is told of
        releases (``wakes_waiters``) returns as soon as ``lock_name`` is released."""
        time.sleep(seconds)

    def storage_time(self) -> float:
        """The clock lock beats are compared with: this machine's by default,
        the server's or the file system's where a backend has one, so hosts
        with skewed clocks still agree on when a lock went stale."""
        return time.time()

    def held_token(self, lock_name: str) -> str | None:
        """The token of this process's hold on ``lock_name`` (None if it holds
        none, or the backend keeps no tokens)."""
        return None
