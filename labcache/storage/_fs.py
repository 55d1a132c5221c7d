"""File operations confined to a storage root: no link inside it is followed.

A shared cache folder is writable by a whole team, so anyone in it could
replace a context folder, the ``locks`` folder or an entry with a symbolic
link pointing elsewhere.  Every operation here walks from the root one
component at a time with ``O_NOFOLLOW | O_DIRECTORY`` and then acts relative
to the folder's descriptor (``openat``, ``renameat``, ``unlinkat``), so a
link planted inside the root is refused even if it appears mid-operation.
The root itself may be a link (a mount point, ``/shared -> /mnt/nfs``).

Permissions: files are created ``0o666`` and folders ``0o777``, masked by
the process umask.  A *shared* tree adds group read/write to files and
group read/write/search plus setgid to the folders it creates, so teammates
in the folder's group can replace entries and take over locks.  Files
written ``read_only`` (cache entries, which are never changed in place) get
no write bit at all, shared or not: replacing or deleting one needs only
the folder's permission, and nobody but its owner can alter its bytes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import CorruptEntryError, StorageError

__all__ = ["PlantedLinkError", "Tree", "file_system_advice", "open_for_hit"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
#: Entries at least this big get their blocks reserved before being written.
_PREALLOCATE_FROM = 4 * 2**20
_SHARED_FILE_BITS = 0o060
_SHARED_READ_ONLY_BITS = 0o040
_SHARED_DIR_BITS = stat.S_ISGID | 0o070
# What opening a link with O_NOFOLLOW (and O_DIRECTORY) reports on Linux and BSDs.
_LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, getattr(errno, "EMLINK", -1),
                getattr(errno, "EFTYPE", -1)}
_NO_ROOM = ("The disk is full or a quota or file size limit (ulimit -f) is reached: free "
            "space (labcache gc removes old entries) or use a folder on another disk")
_NO_ACCESS = ("This user may not read or write there: check the folder's owner and "
              "permissions (ls -ld), or use another folder")
#: What to do about a failed file operation, by errno.
_ADVICE = {
    errno.EACCES: _NO_ACCESS, errno.EPERM: _NO_ACCESS,
    errno.EROFS: "The file system is read-only: use a writable folder (LABCACHE_DIR, or a "
                 "file:// storage URL)",
    errno.ENOSPC: _NO_ROOM, errno.EFBIG: _NO_ROOM, getattr(errno, "EDQUOT", -1): _NO_ROOM,
    errno.ENOTDIR: "A file sits where a folder is expected: move it away or use another folder",
    errno.EISDIR: "A folder sits where a file is expected: move it away",
    errno.ELOOP: "A symbolic link on the way to the folder loops: fix or remove it",
    errno.ENAMETOOLONG: "The path is too long for this file system: use a shorter folder path",
    errno.EMFILE: "This process has too many files open: raise the limit (ulimit -n)",
    errno.ENFILE: "The system has too many files open: try again later",
    errno.EIO: "The disk or network file system reported an I/O error: check it (dmesg)",
}


def file_system_advice(exc: BaseException) -> str:
    """What to do about a failed file operation, in words, from its errno.

    Examples:
        >>> file_system_advice(PermissionError(errno.EACCES, "Permission denied"))[:40]
        'This user may not read or write there: c'
    """
    return _ADVICE.get(getattr(exc, "errno", None) or 0, "Check the folder and the disk it is on")


class PlantedLinkError(StorageError):
    """A symbolic link (or non-folder) sits where the storage expects a folder.

    Examples:
        >>> issubclass(PlantedLinkError, OSError)
        True
    """


class Tree:
    """The folders and files under ``root``, reached without following links.

    ``parts`` name a folder under the root (``("locks",)``, a context split
    on ``/``); ``name`` is one file in it.  Names are validated by the caller.

    Examples:
        >>> import tempfile
        >>> tree = Tree(tempfile.mkdtemp())
        >>> tree.write_atomically(("ctx",), "entry", [b"data"])
        >>> tree.read(("ctx",), "entry")
        b'data'
    """

    def __init__(self, root: str, shared: bool = False) -> None:
        self.root, self.shared = root, shared

    # -- folders -----------------------------------------------------------------

    @contextlib.contextmanager
    def folder(self, parts: Iterable[str], create: bool = False) -> Iterator[int]:
        """A descriptor on ``root/parts`` (closed on exit).

        Raises ``FileNotFoundError`` if a part is missing (unless ``create``)
        and :class:`PlantedLinkError` if a part is a link or not a folder.
        """
        fd = self._open_root(create)
        try:
            for part in parts:
                # fd moves on before the parent is closed: an interrupt in
                # between leaks one descriptor instead of closing one twice
                # (the second close could hit a descriptor reused elsewhere).
                fd, parent = self._step(fd, part, create), fd
                os.close(parent)
            yield fd
        finally:
            os.close(fd)

    def _open_root(self, create: bool) -> int:
        try:
            return os.open(self.root, _DIR)
        except FileNotFoundError:
            if not create:
                raise
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, _DIR)
        if self.shared:  # a root we just made: share it like the folders below
            self._share_folder(fd)
        return fd

    def _step(self, parent: int, part: str, create: bool) -> int:
        """Open ``part`` under ``parent``, never through a link."""
        try:
            try:
                return os.open(part, _DIR | _NOFOLLOW, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
            with contextlib.suppress(FileExistsError):  # another process made it
                os.mkdir(part, 0o777, dir_fd=parent)
                child = os.open(part, _DIR | _NOFOLLOW, dir_fd=parent)
                if self.shared:
                    self._share_folder(child)
                return child
            return os.open(part, _DIR | _NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                raise self._planted(part) from None
            raise

    def _share_folder(self, fd: int) -> None:
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | _SHARED_DIR_BITS)

    def _planted(self, part: str) -> PlantedLinkError:
        return PlantedLinkError(
            f"refusing to use {part!r} under the storage folder {self.root}: it is a "
            "symbolic link or not a folder, and labcache never follows links inside its "
            "root. Remove it (someone may have planted it) and try again")

    # -- files -------------------------------------------------------------------

    def open_read(self, parts: Iterable[str], name: str, flags: int = 0) -> int:
        """A read-only descriptor on a regular file.

        A link in the file's place raises ``CorruptEntryError``; a folder,
        fifo or device there reads as missing (``FileNotFoundError``).
        """
        with self.folder(parts) as folder:
            try:
                # O_NONBLOCK: a planted fifo must not hang the reader (regular
                # files ignore the flag).
                fd = os.open(name, _READ | flags, dir_fd=folder)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # unusable like a damaged entry: a miss
                    raise CorruptEntryError(
                        f"{name!r} under {self.root} is a symbolic link; labcache never "
                        "reads through links inside its root") from None
                raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileNotFoundError(errno.ENOENT, "not a regular file", name)
        return fd

    def read(self, parts: Iterable[str], name: str) -> bytes:
        """The whole content of a regular file (no link followed)."""
        with os.fdopen(self.open_read(parts, name), "rb") as file:
            return file.read()

    def lstat(self, parts: Iterable[str], name: str) -> os.stat_result:
        """``stat`` of ``name`` itself (a link is described, not followed)."""
        with self.folder(parts) as folder:
            return os.stat(name, dir_fd=folder, follow_symlinks=False)

    def is_file(self, parts: Iterable[str], name: str) -> bool:
        """Whether ``name`` is a regular file (a link or a planted folder is not)."""
        try:
            return stat.S_ISREG(self.lstat(parts, name).st_mode)
        except (FileNotFoundError, NotADirectoryError, PlantedLinkError):
            return False

    def unlink(self, parts: Iterable[str], name: str, missing_ok: bool = False) -> None:
        """Remove ``name`` (a link is removed itself, its target never)."""
        try:
            with self.folder(parts) as folder:
                os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def create(self, parts: Iterable[str], name: str, data: bytes | None = b"") -> bool:
        """Create ``name`` holding ``data`` if nothing (not even a link) is there."""
        with self.folder(parts, create=True) as folder:
            try:
                fd = self._new_file(name, folder)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data or b"")
            except BaseException:  # a full disk: leave no empty file behind
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=folder)
                raise
        return True

    def write_atomically(self, parts: Iterable[str], name: str, chunks: Iterable[Any],
                         size: int | None = None, read_only: bool = False) -> None:
        """Write a hidden temp file beside ``name`` and rename it over ``name``.

        ``size``, when known, lets the file system reserve the blocks first;
        ``read_only`` files get no write permission bit (see the module doc).
        """
        with self.folder(parts, create=True) as folder:
            aside = temp_name(name)
            try:
                fd = self._new_file(aside, folder, read_only)
                if size is not None and size >= _PREALLOCATE_FROM:
                    _preallocate(fd, size)
                with os.fdopen(fd, "wb") as file:
                    for chunk in chunks:
                        file.write(chunk)
                os.replace(aside, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(aside, dir_fd=folder)
                raise

    def link_new(self, parts: Iterable[str], name: str, data: bytes) -> bool:
        """Publish ``name`` with ``data`` only if absent, never visible empty.

        The data goes to a temp file first, hard-linked into place; where the
        file system has no hard links, falls back to ``O_EXCL`` (briefly empty).
        """
        with self.folder(parts, create=True) as folder:
            aside = temp_name(name)
            fd = self._new_file(aside, folder)
            try:  # the temp file goes whatever fails, a full disk's write included
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                try:
                    os.link(aside, name, src_dir_fd=folder, dst_dir_fd=folder,
                            follow_symlinks=False)
                    return True
                except FileExistsError:
                    return False
                except OSError:  # no hard links here
                    pass
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(aside, dir_fd=folder)
        return self.create(parts, name, data)

    def touch(self, parts: Iterable[str], name: str) -> None:
        """Set ``name``'s times to now (a link's own times, never its target's)."""
        with self.folder(parts) as folder:
            os.utime(name, dir_fd=folder, follow_symlinks=False)

    def scan(self, parts: Iterable[str]) -> list[tuple[str, os.stat_result]]:
        """``(name, lstat)`` of everything in a folder; empty if it is missing.

        A file removed between reading the folder and reading its details
        (another process deleting an entry, releasing a lock, dropping a temp
        or probe file) is left out; it never empties the whole listing.
        """
        try:
            with self.folder(parts) as folder, os.scandir(folder) as found:
                return [pair for item in found if (pair := _details(item)) is not None]
        except (FileNotFoundError, PlantedLinkError):
            return []

    def clock(self, parts: Iterable[str]) -> float:
        """The file system's idea of now: the mtime of a file created just now."""
        with self.folder(parts) as folder:
            probe = f".now.{secrets.token_hex(8)}"
            fd = os.open(probe, _NEW_FILE, 0o600, dir_fd=folder)
            try:
                return os.fstat(fd).st_mtime
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(probe, dir_fd=folder)

    def _new_file(self, name: str, folder: int, read_only: bool = False) -> int:
        # 0o666 & ~umask, like open(); a link already there fails with EEXIST.
        # A read-only file is still opened for writing: the mode only binds
        # later opens, so the writer fills it and nobody can rewrite it.
        fd = os.open(name, _NEW_FILE, 0o444 if read_only else 0o666, dir_fd=folder)
        if self.shared:
            extra = _SHARED_READ_ONLY_BITS if read_only else _SHARED_FILE_BITS
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | extra)
        return fd


def _details(item: os.DirEntry[str]) -> tuple[str, os.stat_result] | None:
    """``(name, lstat)`` of a folder item, or None if it vanished meanwhile."""
    try:
        return item.name, item.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None


def _preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of blocks before writing them, as ``np.save``
    does: ext4 then writes a 200 MB entry in ~31 ms instead of ~45 ms.

    Linux's ``fallocate`` with ``FALLOC_FL_KEEP_SIZE`` never emulates (unlike
    ``posix_fallocate``, which writes a byte per block where unsupported, as
    on older NFS), and any failure is left for the write itself to report.
    """
    fallocate = _fallocate()
    if fallocate is not None:
        fallocate(fd, 1, 0, size)  # 1: FALLOC_FL_KEEP_SIZE


@functools.cache
def _fallocate() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only when a big entry is first written
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        function = libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return function


def open_for_hit(path: str) -> int:
    """Open an entry for an *unverified* cache hit by its full path: one
    system call.

    Only the last component is refused when it is a link (as a damaged
    entry).  Links in the folders above are followed: without a signature
    check, whoever can plant one can write a harmful entry in the root
    anyway.  Hits that verify a signature, and memory-mapped hits, go
    through :meth:`Tree.open_read` instead, which follows no link: a context
    folder swapped for a link to someone else's folder must not feed a
    trusted load from files that person can still change.
    """
    try:
        return os.open(path, _READ)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptEntryError(
                f"{path!r} is a symbolic link; labcache never reads an entry through a link "
                "inside its root") from None
        raise


#: Entries up to this size are read whole on a hit, bigger ones streamed.
SMALL_ENTRY = 1 << 20


def hit_source(fd: int, size: int) -> Any:
    """What a hit reads from an open entry (the descriptor is taken over): its
    bytes when small (one read, no buffered file object, no separate reads
    for header and payload), else a file object the reader closes."""
    if size > SMALL_ENTRY:
        return os.fdopen(fd, "rb")
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def temp_name(name: str) -> str:
    """A hidden, unpredictable name beside ``name`` for a file being written."""
    return f".{name}.{secrets.token_hex(8)}.tmp"
