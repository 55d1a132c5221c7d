"""Local copies of a network storage's entries, shared by the processes of a machine.

``RedisStorage(..., local_copy=PATH)`` and ``S3Storage(..., local_copy=PATH)``
keep every entry they load in ``PATH``; a later hit anywhere on the machine
asks the remote one cheap question (is the entry still the version I hold?)
and reads the copy.  Layout::

    PATH/<remote>/<xx>/<entry>/<version>      one file per entry and version

``<remote>`` names the server and prefix (a digest: no password), ``<entry>``
the context and key (a digest), ``<version>`` is the remote's version of the
entry (an S3 ETag, a digest of a Redis value's first bytes), hex-encoded.

* A copy is written to a temp file beside its place, made read-only and
  renamed in: a reader sees a whole file or none.  Several processes that
  fetch the same entry at once each write their own temp file; the last
  rename wins and both files hold the same bytes.
* Nothing is trusted because it is local: a hit loads the copy through the
  normal entry reader, which checks the entry's checksum (and signature);
  a copy that fails is removed and the entry fetched again (see
  ``transfer.load_entry``).
* The folder is kept under a size limit (10 GB by default), least recently
  used copies first; a hit marks its copy's access time at most once a
  minute.  A copy removed while another process reads or maps it stays
  readable by that process (POSIX unlink semantics).
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
import os
import secrets
import stat as stat_module
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import xxhash

from ..errors import CorruptEntryError, StorageError
from ..formatting import parse_size
from ._fs import hit_source

__all__ = ["DEFAULT_LIMIT", "URL_OPTIONS", "CheckedCopy", "KeepsLocalCopies", "LocalCopies",
           "copy_stream", "default_copy_root", "network_options", "remote_digest",
           "split_url_options"]

logger = logging.getLogger("labcache")

#: Size limit of a local copy folder unless ``local_copy_limit`` says otherwise.
DEFAULT_LIMIT = 10 * 10**9
#: A hit re-marks its copy's access time only when the mark is older than this.
_MARK_USED_EVERY = 60.0
#: Temp files older than this were left by a process that died while writing.
_ABANDONED = 3600.0
_READ_ONLY = stat_module.S_IRUSR | stat_module.S_IRGRP
_COPY_BUFFER = 4 * 2**20


#: Options a redis:// or s3:// URL may carry for labcache (the rest go to the client).
URL_OPTIONS = ("local_copy", "local_copy_limit", "compress")
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def split_url_options(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without labcache's own query options, and those options.

    Examples:
        >>> split_url_options("redis://h:6379/0?local_copy=/tmp/c&db=1&compress=0")
        ('redis://h:6379/0?db=1', {'local_copy': '/tmp/c', 'compress': '0'})
    """
    from urllib.parse import parse_qsl, urlencode

    base, mark, query = url.partition("?")
    if not mark:
        return url, {}
    ours: dict[str, str] = {}
    rest = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in URL_OPTIONS:
            if name in ours:
                raise ValueError(f"storage URL option {name} is given twice")
            ours[name] = value
        else:
            rest.append((name, value))
    try:
        return (f"{base}?{urlencode(rest)}" if rest else base), ours
    except UnicodeEncodeError:  # a lone surrogate cannot be put back into a URL
        raise ValueError("the storage URL's options hold a character that is not valid "
                         "text; write the URL with plain characters") from None


def network_options(url_options: dict[str, str], local_copy: object, local_copy_limit: object,
                    compress: object) -> tuple[str | None, int, bool | str]:
    """(copy folder or None, size limit in bytes, compress) from keywords, or
    from the URL's options where the keywords were left at their defaults.

    Examples:
        >>> network_options({"local_copy": "/tmp/c", "compress": "0"}, None, None, "auto")
        ('/tmp/c', 10000000000, False)
    """
    from .._compress import available, check_compress
    if local_copy is None and "local_copy" in url_options:
        text = url_options["local_copy"]
        local_copy = _FLAGS.get(text.lower(), text) if text else None
    if local_copy_limit is None:
        local_copy_limit = url_options.get("local_copy_limit") or DEFAULT_LIMIT
    if compress == "auto" and "compress" in url_options:
        compress = url_options["compress"]
    if local_copy is True:
        folder: str | None = str(default_copy_root())
    elif local_copy is None or local_copy is False:
        folder = None
    elif isinstance(local_copy, (str, os.PathLike)) and str(local_copy).strip():
        folder = str(Path(local_copy).expanduser().absolute())
    else:
        raise ValueError(f"local_copy must be a folder path, True or None, not {local_copy!r}")
    limit = parse_size(local_copy_limit)  # type: ignore[arg-type]
    packing = check_compress(compress)
    if packing is True and not available():
        raise ValueError("compress=True needs the zstandard package: pip install zstandard "
                         "(it comes with labcache[redis] and labcache[s3])")
    return folder, limit, packing


def default_copy_root() -> Path:
    """``local_copy=True``: a ``copies`` folder in the user cache dir.

    Examples:
        >>> default_copy_root().name
        'copies'
    """
    import platformdirs

    return Path(platformdirs.user_cache_dir("labcache", appauthor=False)) / "copies"


def remote_digest(*parts: str) -> str:
    """A short name for one remote (server and prefix) inside the copy folder.

    Examples:
        >>> len(remote_digest("redis://h:6379/0", "team"))
        16
    """
    return xxhash.xxh3_64_hexdigest("\0".join(parts).encode())


class KeepsLocalCopies:
    """What a network storage with an optional local copy shares."""

    local_copy: LocalCopies | None

    def forget_local_copy(self, hashcode: str, context: str) -> bool:
        """Drop this machine's copy of an entry that failed to load; True
        when this storage keeps copies: the failure may be the copy's alone
        (damaged, or older than the stored entry), so the entry is fetched
        again before anything remote is judged bad."""
        if self.local_copy is None:
            return False
        self.local_copy.forget(context, hashcode)
        return True


class LocalCopies:
    """The copies one storage keeps under ``root`` (see the module docstring).

    Examples:
        >>> import io, tempfile
        >>> copies = LocalCopies(tempfile.mkdtemp(), "remote", limit=10**6)
        >>> fd = copies.keep("ctx", "k1", "v1", lambda f: f.write(b"entry bytes"))
        >>> copies.as_source(fd), copies.versions("ctx", "k1")
        (b'entry bytes', ['v1'])
        >>> copies.as_source(copies.open("ctx", "k1", "v1")), copies.open("ctx", "k1", "v2")
        (b'entry bytes', None)
    """

    def __init__(self, root: str | os.PathLike[str], remote: str, limit: int) -> None:
        self.root = Path(root).expanduser().absolute()
        self.base = self.root / remote
        self.limit = int(limit)

    def __repr__(self) -> str:
        return f"LocalCopies({str(self.root)!r}, limit={self.limit})"

    def folder(self, context: str, key: str) -> Path:
        """Where the copies of one entry live."""
        name = xxhash.xxh3_128_hexdigest(f"{context}\0{key}".encode())
        return self.base / name[:2] / name

    def versions(self, context: str, key: str) -> list[str]:
        """Versions held of this entry, the newest first."""
        folder = self.folder(context, key)
        try:
            found = [(entry.stat().st_mtime, entry.name) for entry in os.scandir(folder)
                     if not entry.name.startswith(".")]
        except OSError:  # none yet, or an unreadable folder: no copy
            return []
        return [_decode(name) for _, name in sorted(found, reverse=True)]

    def open(self, context: str, key: str, version: str) -> int | None:
        """A read descriptor on the copy of this version, or None (no such copy)."""
        try:
            fd = os.open(self.folder(context, key) / _encode(version), os.O_RDONLY)
        except OSError:
            return None
        _mark_used(fd)
        return fd

    def keep_or_none(self, context: str, key: str, version: str,
                     fill: Callable[[BinaryIO], object]) -> int | None:
        """:meth:`keep`, or None (logged) when the folder cannot take the copy
        (full disk, no permission): the caller then reads the remote entry."""
        try:
            return self.keep(context, key, version, fill)
        except StorageError:  # the server failed, not the folder
            raise
        except OSError as exc:
            logger.warning("could not keep a local copy in %s (%s); reading the entry "
                           "from the server instead", self.root, exc)
            return None

    def keep(self, context: str, key: str, version: str,
             fill: Callable[[BinaryIO], object]) -> int:
        """Write a copy with ``fill(file)`` and put it in place atomically;
        returns a read descriptor on it.  Older versions of the entry go."""
        folder = self.folder(context, key)
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(os.dup(fd), "wb") as file:
                fill(file)
            os.fchmod(fd, _READ_ONLY)  # copies are never changed in place
            os.replace(temp, folder / _encode(version))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.lseek(fd, 0, os.SEEK_SET)
        self._drop_others(folder, _encode(version))
        self.evict()
        return fd

    def forget(self, context: str, key: str) -> bool:
        """Remove every copy of this entry; True if there was one."""
        folder = self.folder(context, key)
        removed = self._drop_others(folder, None)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return removed

    def evict(self) -> int:
        """Remove least recently used copies until the folder is under the
        limit (and temp files abandoned an hour ago); returns bytes removed."""
        files, total, now = [], 0, time.time()
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                if name.startswith(".tmp-"):
                    if now - st.st_mtime > _ABANDONED:
                        _unlink(path)
                    continue
                files.append((max(st.st_atime, st.st_mtime), st.st_size, path))
                total += st.st_size
        removed = 0
        for _, size, path in sorted(files):
            if total - removed <= self.limit:
                break
            if _unlink(path):
                removed += size
        return removed

    @staticmethod
    def as_source(fd: int) -> Any:
        """What a hit reads (and closes): bytes for small copies, a file for big ones."""
        return hit_source(fd, os.fstat(fd).st_size)

    @staticmethod
    def as_mapping(fd: int, mode: str) -> Any:
        """The copy memory-mapped (``"r"`` read-only, ``"c"`` copy on write)."""
        access = mmap.ACCESS_READ if mode == "r" else mmap.ACCESS_COPY
        try:
            return mmap.mmap(fd, 0, access=access)
        except ValueError:  # an empty file cannot be mapped
            return b""
        finally:
            os.close(fd)

    def _drop_others(self, folder: Path, keep: str | None) -> bool:
        removed = False
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(folder):
                if entry.name != keep and not entry.name.startswith("."):
                    removed = _unlink(entry.path) or removed
        return removed


class CheckedCopy(io.RawIOBase):
    """A local copy read while the remote's version check is still on the way.

    The entry reader reads the copy to its end and then asks for one more
    byte (``has_more``); at that end, before anything is unpickled, this
    waits for ``check`` (a future: is the copy still the stored version?)
    and raises ``CorruptEntryError`` if not, so the caller drops the copy and
    fetches the entry.  The network's latency hides behind the disk read.
    """

    def __init__(self, file: Any, check: Any) -> None:
        super().__init__()
        self._file, self._check = file, check

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return int(self._file.fileno())

    def tell(self) -> int:
        return int(self._file.tell())

    def readinto(self, buffer: Any) -> int:
        got = int(self._file.readinto(buffer) or 0)
        if got < len(memoryview(buffer)):
            self._confirm()
        return got

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._file.read(size)
        if size is None or size < 0 or len(data) < size:
            self._confirm()
        return data

    def _confirm(self) -> None:
        if not self._check.result():
            raise CorruptEntryError("the local copy is older than the stored entry")

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def copy_stream(source: Any, target: BinaryIO) -> None:
    """Copy a binary stream into a file through one reused buffer."""
    buffer = bytearray(_COPY_BUFFER)
    view = memoryview(buffer)
    while True:
        got = source.readinto(view) if hasattr(source, "readinto") else None
        if got is None:
            data = source.read(len(buffer))
            got = len(data)
            view[:got] = data
        if not got:
            return
        target.write(view[:got])


def _encode(version: str) -> str:
    return version.encode().hex()[:200]


def _decode(name: str) -> str:
    try:
        return bytes.fromhex(name).decode()
    except ValueError:
        return ""


def _mark_used(fd: int) -> None:
    st = os.fstat(fd)
    if time.time() - st.st_atime > _MARK_USED_EVERY:
        with contextlib.suppress(OSError):
            os.utime(fd, ns=(time.time_ns(), st.st_mtime_ns))


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
