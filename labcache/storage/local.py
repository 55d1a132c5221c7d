"""LocalStorage: entries and locks as files in a folder, shared or not.

The folder may sit on a network file system shared by several users and
hosts, so correctness rests only on operations that are atomic there:
``link``/``O_EXCL`` to create a file only if it is absent, and ``rename`` to
replace one.  No process-local lock is ever relied on.

* An entry is written to a hidden temp file beside its final name and
  renamed into place: readers see the old entry or the new one, never half.
* A lock record is written aside and hard-linked to ``locks/<name>.lock``,
  so it is never visible empty; its file mtime is the heartbeat.
* Replacing or deleting a lock record (a takeover, a release) first takes a
  *claim* on that exact record version: a file created with ``O_EXCL`` whose
  name carries the version, so only one process may change a given version.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat as stat_module
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import xxhash

from ..base import ORPHAN_AGE, EntryStat, Orphan
from ..entry import Encoded, Header, read_header, upload_chunks
from ..entry import verifying as entry_verifying
from ..errors import CorruptEntryError, LabcacheError
from ..locks import RawLock, RecordLockingStorage
from ..names import check_entry_context, check_name
from . import _local_orphans
from ._errors import Boundary
from ._fs import Tree, file_system_advice, hit_source, open_for_hit

__all__ = ["LocalStorage", "default_root"]

#: A claim older than this belongs to a process that died mid-operation.
CLAIM_STALE_SECONDS = 30.0
#: How many levels of "claim on a stale claim" to try before giving up.
MAX_CLAIM_LEVEL = 3
_LOCK_DIR = "locks"
_LOCKS = (_LOCK_DIR,)
#: How many validated entry paths an instance remembers (then it starts over).
_REMEMBERED_PATHS = 4096
#: A hit re-marks an entry's access time only when the mark is older than this,
#: so most hits cost one float comparison (relatime/noatime mounts make the
#: kernel's own atime unreliable, hence the explicit mark).
_MARK_USED_EVERY = 60.0
#: Write permission for the group or others: such a file is never mapped.
_OTHERS_WRITE = stat_module.S_IWGRP | stat_module.S_IWOTH


def default_root() -> Path:
    """``LABCACHE_DIR`` if set, else the user cache dir (e.g. ``~/.cache/labcache``).

    Examples:
        >>> import os
        >>> os.environ["LABCACHE_DIR"] = "/tmp/lc-doc"
        >>> str(default_root())
        '/tmp/lc-doc'
        >>> del os.environ["LABCACHE_DIR"]
    """
    configured = os.environ.get("LABCACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("labcache", appauthor=False))


class LocalStorage(RecordLockingStorage):
    """Entries under ``root/<context>/``, locks under ``root/locks/``.

    Files and folders are created with the umask's permissions; with
    ``shared=True`` (URL ``file:///path?shared=1``) new folders are also
    group-writable and setgid and new files group-writable, so a team in the
    folder's group can share it.  No link planted inside the root is followed.

    Examples:
        >>> import tempfile
        >>> store = LocalStorage(tempfile.mkdtemp())
        >>> store.upload_file(b"42", "answer", "demo")
        'answer'
        >>> store.list_stored_files("demo"), store.check_if_exists("answer", "demo")
        (['answer'], True)
    """

    @classmethod
    def _instance_key(cls, path: str | os.PathLike[str] | None = None,
                      shared: bool = False) -> Any:
        # One instance per *resolved* folder and sharing mode: LocalStorage(),
        # LocalStorage(p), LocalStorage(str(p)) and a pickled copy share state.
        return str(_resolve(path)), bool(shared)

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 shared: bool = False) -> None:
        self.root = _resolve(path)
        self.shared = bool(shared)
        self._tree = Tree(str(self.root), self.shared)
        self._parts: dict[str, tuple[str, ...]] = {}  # context -> validated folder parts
        self._paths: dict[tuple[str, str], str] = {}  # (context, name) -> entry path
        self._tidied: set[tuple[str, ...]] = set()  # folders swept by this process
        # The file system's errors become StorageError here (see _errors.py).
        # FileExistsError stays: only a file planted at a fresh temp name raises it.
        self._errors = Boundary(f"Local folder {self.root}", (OSError,), file_system_advice,
                                keep=(LabcacheError, FileNotFoundError, FileExistsError))
        # Built once for the hit path (~0.25 us less per hit than one per call);
        # the file system's error names the entry's path.
        self._hit_errors = self._errors("read an entry for a cache hit")

    def __repr__(self) -> str:
        shared = ", shared=True" if self.shared else ""
        return f"LocalStorage({str(self.root)!r}{shared})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self.root), self.shared))

    # -- entries (the seed's BaseStorage) ---------------------------------------

    def get_root_path(self) -> str:
        """The folder this storage lives in."""
        return str(self.root)

    def upload_file(
        self, file: object, file_name: str, context: str, direct_stream: bool = False
    ) -> str | None:
        """Atomically store ``file`` (bytes, an encoded entry or a binary file)."""
        size = file.size if isinstance(file, Encoded) else None  # reserve its blocks first
        parts, name = self._where(file_name, context)
        self._tidy(parts)
        with self._errors("store entry {!r} of {!r}", file_name, context):
            # Entries are never changed in place: written without any write bit.
            self._tree.write_atomically(parts, name, upload_chunks(file), size, read_only=True)
        return file_name

    def download_file(self, hashcode: str, context: str) -> bytes:
        """The stored bytes; ``FileNotFoundError`` if there is no such entry."""
        where = self._where(hashcode, context)
        with self._errors("read entry {!r} of {!r}", hashcode, context):
            return self._tree.read(*where)

    def get_file_by_hashcode(self, hashcode: str, context: str) -> Any:
        """The entry opened for binary reading (the caller closes it)."""
        where = self._where(hashcode, context)
        with self._errors("open entry {!r} of {!r}", hashcode, context):
            return os.fdopen(self._tree.open_read(*where), "rb")

    def open_entry(self, hashcode: str, context: str) -> Any:
        """The entry for a hit: its bytes if small, else the open file; None
        if there is none."""
        with self._hit_errors:
            try:
                fd = self._open_hit(hashcode, context, entry_verifying())
            except FileNotFoundError:
                return None
            return hit_source(fd, _note_use(fd).st_size)

    def open_mapped(self, hashcode: str, context: str, mode: str = "r") -> Any:
        """The entry memory-mapped (``"r"`` read-only, ``"c"`` copy on write),
        or None if there is none.  Entries are replaced by rename, never
        rewritten in place, so a mapping stays valid after a replace or delete.

        A file that others may write (a group or other write bit, as entries
        of older versions had in shared folders) is read, not mapped.
        """
        access = mmap.ACCESS_READ if mode == "r" else mmap.ACCESS_COPY
        with self._errors("map entry {!r} of {!r}", hashcode, context):
            try:
                fd = self._open_hit(hashcode, context, verified=True)
            except FileNotFoundError:
                return None
            with os.fdopen(fd, "rb") as f:
                st = _note_use(fd)
                if st.st_mode & _OTHERS_WRITE:
                    return f.read()
                try:
                    return mmap.mmap(fd, 0, access=access)
                except ValueError:  # an empty file cannot be mapped
                    return b""

    def _open_hit(self, hashcode: str, context: str, verified: bool) -> int:
        """A descriptor on an entry for a hit.  A hit that will be trusted
        because it is verified (a signature) or used in place (a mapping)
        walks from the root following no link; a plain hit opens the path in
        one call (see :func:`open_for_hit`)."""
        if verified:
            return self._tree.open_read(*self._where(hashcode, context))
        return open_for_hit(self._entry_path(hashcode, context))

    def check_if_exists(self, hashcode: str, context: str) -> bool:
        """Whether the entry exists."""
        where = self._where(hashcode, context)
        with self._errors("look for entry {!r} of {!r}", hashcode, context):
            return self._tree.is_file(*where)

    def delete_file(self, hashcode: str, context: str) -> None:
        """Remove the entry; ``FileNotFoundError`` if it is not there."""
        where = self._where(hashcode, context)
        with self._errors("delete entry {!r} of {!r}", hashcode, context):
            self._tree.unlink(*where)

    def list_stored_files(self, context: str) -> list[str]:
        """Names of the entries in ``context``, sorted; temp files left out."""
        found = self._scan(self._context_parts(context), f"the entries of {context!r}")
        return sorted(name for name, st in found
                      if not name.startswith(".") and stat_module.S_ISREG(st.st_mode))

    lists_contexts = True

    def list_contexts(self) -> list[str]:
        """Folders under the root that hold entries (``locks`` left out)."""
        found = self._scan((), "the functions (context folders)")
        return sorted(name for name, st in found if name != _LOCK_DIR
                      and not name.startswith(".") and stat_module.S_ISDIR(st.st_mode))

    def describe_entries(self, context: str) -> list[EntryStat]:
        """Names, sizes and mtimes from one directory scan (no file is opened)."""
        found = self._scan(self._context_parts(context), f"the entries of {context!r}")
        stats = [(name, st) for name, st in found
                 if not name.startswith(".") and stat_module.S_ISREG(st.st_mode)]
        stats.sort(key=_first)  # by name: cheaper than comparing whole EntryStats
        return [EntryStat(name, st.st_size, st.st_mtime, st.st_atime) for name, st in stats]

    def read_entry_header(self, hashcode: str, context: str) -> Header:
        """The entry's header, read without counting as a use of the entry."""
        where = self._where(hashcode, context)
        with self._errors("read the header of entry {!r} of {!r}", hashcode, context):
            try:  # O_NOATIME: listing entries must not reorder least-recently-used eviction
                fd = self._tree.open_read(*where, getattr(os, "O_NOATIME", 0))
            except PermissionError:  # O_NOATIME needs the file's owner
                fd = self._tree.open_read(*where)
            with os.fdopen(fd, "rb") as source:
                return read_header(source)

    def entry_path(self, hashcode: str, context: str) -> Path:
        """Where an entry lives on disk (for memory-mapped loads and tools)."""
        return Path(self._entry_path(hashcode, context))

    # -- leftovers of killed processes ------------------------------------------------

    def find_orphans(self) -> list[Orphan]:
        """Temp files of interrupted stores under every context folder and
        ``locks/``, clock probes, and claims on lock records long gone; the
        age is the time since the file was last written."""
        with self._errors("look for leftovers of interrupted stores"):
            return _local_orphans.find(self._tree, _fs_now(self._tree), self._lock_version)

    def _remove_orphan(self, orphan: Orphan, older_than: float) -> bool:
        with self._errors("remove the leftover {}", orphan.where):
            return _local_orphans.remove(self._tree, orphan, _fs_now(self._tree), older_than,
                                         self._lock_version)

    def _lock_version(self, name: str) -> str | None:
        raw = self._lock_read(name)
        return None if raw is None else raw.version

    def _tidy(self, parts: tuple[str, ...]) -> None:
        """The first time this process writes into a folder, remove the temp
        files killed writers left there over an hour ago: one folder read."""
        if parts in self._tidied:
            return
        self._tidied.add(parts)
        with contextlib.suppress(OSError):  # housekeeping never fails a store
            _local_orphans.tidy_folder(self._tree, parts, _fs_now(self._tree), ORPHAN_AGE)

    def _scan(self, parts: tuple[str, ...], what: str) -> list[tuple[str, os.stat_result]]:
        """The items of one folder (see :meth:`Tree.scan`): ``what`` it holds."""
        with self._errors("list {}", what):
            return self._tree.scan(parts)

    def _where(self, hashcode: str, context: str) -> tuple[tuple[str, ...], str]:
        """(folder parts, file name) of an entry, both validated."""
        return self._context_parts(context), check_name(hashcode, "file name")

    def _context_parts(self, context: str) -> tuple[str, ...]:
        parts = self._parts.get(context)
        if parts is None:
            check_entry_context(context)
            parts = self._parts[context] = tuple(context.split("/"))
        return parts

    def _entry_path(self, hashcode: str, context: str) -> str:
        # Plain strings, not pathlib, and remembered: this runs on every cache
        # hit, and validating the name costs more than the lookup.
        path = self._paths.get((context, hashcode))
        if path is None:
            if len(self._paths) >= _REMEMBERED_PATHS:
                self._paths.clear()
            parts, name = self._where(hashcode, context)
            path = self._paths[(context, hashcode)] = os.path.join(self.root, *parts, name)
        return path

    # -- lock primitives -----------------------------------------------------------

    def _lock_leaf(self, name: str) -> str:
        # The file name inside locks/, as the seed's _get_lock_path places it.
        return os.path.basename(self._get_lock_path(check_name(name, "lock name")))

    def _lock_create(self, name: str, data: bytes) -> str | None:
        self._tidy(_LOCKS)
        leaf = self._lock_leaf(name)
        with self._errors("take lock {!r}", name):
            # Linked into place from a written file: never visible empty.
            if not self._tree.link_new(_LOCKS, leaf, data):
                return None
        return _version(data)

    def _lock_read(self, name: str) -> RawLock | None:
        leaf = self._lock_leaf(name)
        with self._errors("read lock {!r}", name):
            try:
                fd = self._tree.open_read(_LOCKS, leaf)
            except FileNotFoundError:
                return None
            except CorruptEntryError:  # a link planted as the record: stale, so replaced
                try:
                    st = self._tree.lstat(_LOCKS, leaf)
                except FileNotFoundError:  # removed since: no lock
                    return None
                return RawLock(b"", 0.0, f"link-{st.st_ino}-{st.st_mtime_ns}")
            with os.fdopen(fd, "rb") as f:
                beat = os.fstat(f.fileno()).st_mtime
                data = f.read()
        return RawLock(data, beat, _version(data))

    def _lock_replace(self, name: str, version: str, data: bytes) -> str | None:
        leaf = self._lock_leaf(name)
        with self._errors("take over lock {!r}", name), self._claim(name, version) as claimed:
            if not claimed or not self._still(name, version):
                return None
            self._tree.write_atomically(_LOCKS, leaf, [data])
        return _version(data)

    def _lock_delete(self, name: str, version: str) -> bool:
        leaf = self._lock_leaf(name)
        with self._errors("release lock {!r}", name), self._claim(name, version) as claimed:
            if not claimed or not self._still(name, version):
                return False
            self._tree.unlink(_LOCKS, leaf, missing_ok=True)
        return True

    def _lock_touch(self, name: str, version: str) -> str | None:
        leaf = self._lock_leaf(name)
        with self._errors("refresh lock {!r}", name):
            try:
                self._tree.touch(_LOCKS, leaf)
            except FileNotFoundError:
                return None
        # If the record was replaced we touched the new holder's file, which
        # only refreshes a lock that is alive anyway.
        return version if self._still(name, version) else None

    def _lock_names(self) -> list[str]:
        return [found[: -len(".lock")] for found, _ in self._scan(_LOCKS, "the locks")
                if found.endswith(".lock") and not found.startswith(".")]

    def storage_time(self) -> float:
        """The file system's clock: the mtime of a file created here just now.

        Beats are lock-file mtimes, which the file system stamps (on NFS its
        server does, whatever the clock of the host that beats).  Comparing
        them with this instead of ``time.time()`` keeps a beating holder
        fresh when this host's clock is ahead or behind.
        """
        return _fs_now(self._tree)

    def _still(self, name: str, version: str) -> bool:
        raw = self._lock_read(name)
        return raw is not None and raw.version == version

    @contextlib.contextmanager
    def _claim(self, name: str, version: str) -> Iterator[bool]:
        base = f".{name}.{version}"
        claim = _take_claim(self._tree, base, 1)
        try:
            yield claim is not None
        finally:
            if claim is not None:
                self._tree.unlink(_LOCKS, claim, missing_ok=True)


def _note_use(fd: int) -> os.stat_result:
    """fstat an entry being loaded; mark its atime now (mtime kept) when the
    mark is over a minute old: the last-use time LRU eviction sorts by."""
    stat = os.fstat(fd)
    if time.time() - stat.st_atime > _MARK_USED_EVERY:
        with contextlib.suppress(OSError):  # not the owner (shared folder): kernel atime only
            os.utime(fd, ns=(time.time_ns(), stat.st_mtime_ns))
    return stat


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _resolve(path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        return default_root().absolute()
    if not os.fspath(path):
        raise ValueError("LocalStorage('') names no folder: pass a folder path, or nothing "
                         "(or None) for the default cache folder")
    return Path(path).expanduser().absolute()


def _version(data: bytes) -> str:
    # Records hold a random token, so their content digest names them uniquely.
    return xxhash.xxh3_64_hexdigest(data)


def _fs_now(tree: Tree) -> float:
    """The file system's clock (a file created now), else ours if read-only."""
    try:  # through the tree: a locks folder planted as a link is never written
        return tree.clock(_LOCKS)
    except OSError:
        return time.time()


def _take_claim(tree: Tree, base: str, level: int) -> str | None:
    """Create ``locks/<base>.claim<level>``; clear a dead claim under a higher level."""
    claim = f"{base}.claim{level}"
    if tree.create(_LOCKS, claim):
        return claim
    try:
        seen = tree.lstat(_LOCKS, claim)
    except FileNotFoundError:
        return claim if tree.create(_LOCKS, claim) else None
    # The claim's age by the file system's clock, like lock beats: a process
    # whose clock is ahead must not see a live claim as dead.
    if level >= MAX_CLAIM_LEVEL or _fs_now(tree) - seen.st_mtime < CLAIM_STALE_SECONDS:
        return None
    upper = _take_claim(tree, base, level + 1)
    if upper is None:
        return None
    try:
        with contextlib.suppress(FileNotFoundError):
            now = tree.lstat(_LOCKS, claim)
            if (now.st_ino, now.st_mtime_ns) == (seen.st_ino, seen.st_mtime_ns):
                tree.unlink(_LOCKS, claim)
        return claim if tree.create(_LOCKS, claim) else None
    finally:
        tree.unlink(_LOCKS, upper, missing_ok=True)
