"""Finding and removing what killed processes left in a LocalStorage folder.

A store writes a hidden temp file (``.<name>.<16 hex>.tmp``, see
:func:`~labcache.storage._fs.temp_name`) and renames it into place; a
process killed in between leaves it, with every block it reserved.  Under
``locks/`` a killed process may also leave a lock record's temp file, a
clock probe (``.now.<16 hex>``) or a claim (``.<lock>.<version>.claim<N>``).

A file's age is the time since its last write (its mtime, by the file
system's clock), so a store still writing is always young whatever its size.
Claims are the lock code's business (a claim older than 30 s is cleared by
the next process that needs it); one is an orphan here only when the lock
record it was taken on is gone or replaced, so nobody will ever ask for it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterator

from ..base import Orphan
from ._fs import PlantedLinkError, Tree

__all__ = ["find", "remove", "tidy_folder"]

_TEMP = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")
_PROBE = re.compile(r"\.now\.[0-9a-f]{16}")
_CLAIM = re.compile(r"\.(?P<lock>.+)\.(?P<version>[^.]+)\.claim\d+")
logger = logging.getLogger("labcache")
#: Context folders nest; deeper than this is not labcache's.
_MAX_DEPTH = 32

#: The current version of a lock record (None: no record), for claims.
LockVersion = Callable[[str], str | None]


def find(tree: Tree, now: float, lock_version: LockVersion | None,
         start: tuple[str, ...] = (), recurse: bool = True) -> list[Orphan]:
    """Every orphan under ``start`` (with ``recurse``, in its sub-folders too).

    ``lock_version`` reads the lock records claims refer to; None leaves claims out.

    Examples:
        >>> import tempfile
        >>> find(Tree(tempfile.mkdtemp()), 0.0, None)
        []
    """
    found = []
    for parts, name, st in _hidden_files(tree, start, recurse):
        kind = _kind(parts, name, lock_version)
        if kind is not None:
            found.append(Orphan(kind, "/".join((*parts, name)),
                                max(st.st_size, st.st_blocks * 512), max(now - st.st_mtime, 0.0),
                                (parts, name, st.st_ino, st.st_mtime_ns)))
    return found


def remove(tree: Tree, orphan: Orphan, now: float, older_than: float,
           lock_version: LockVersion | None) -> bool:
    """Unlink ``orphan`` if it is the same file, unwritten since it was found,
    still old enough and (a claim) still orphaned."""
    parts, name, inode, mtime_ns = orphan.handle
    try:
        st = tree.lstat(parts, name)
    except (FileNotFoundError, NotADirectoryError, PlantedLinkError):
        return False
    if (st.st_ino, st.st_mtime_ns) != (inode, mtime_ns) or now - st.st_mtime < older_than:
        return False
    if _kind(parts, name, lock_version) is None:  # a claim whose record came back
        return False
    try:
        tree.unlink(parts, name)
    except (FileNotFoundError, PlantedLinkError):
        return False
    except PermissionError:  # a sticky shared folder: only its owner may remove it
        logger.info("cannot remove %s under %s: it belongs to another user", orphan.where,
                    tree.root)
        return False
    return True


def tidy_folder(tree: Tree, parts: tuple[str, ...], now: float, older_than: float) -> int:
    """Remove this one folder's temp files and probes idle for ``older_than``
    (the storage's own housekeeping: no claims, no sub-folders); how many went."""
    return sum(remove(tree, orphan, now, older_than, None)
               for orphan in find(tree, now, None, parts, recurse=False)
               if orphan.age is not None and orphan.age >= older_than)


def _kind(parts: tuple[str, ...], name: str, lock_version: LockVersion | None) -> str | None:
    if _TEMP.fullmatch(name):
        return "temp file"
    if parts != ("locks",):
        return None
    if _PROBE.fullmatch(name):
        return "clock probe"
    claim = _CLAIM.fullmatch(name)
    if claim is None or lock_version is None:
        return None
    try:
        current = lock_version(claim["lock"])
    except (ValueError, OSError):  # not a lock name of ours, or unreadable now
        return None
    return None if current == claim["version"] else "claim"


def _hidden_files(tree: Tree, parts: tuple[str, ...],
                  recurse: bool) -> Iterator[tuple[tuple[str, ...], str, os.stat_result]]:
    """``(folder parts, name, lstat)`` of the hidden regular files under a folder."""
    try:
        with tree.folder(parts) as fd, os.scandir(fd) as items:
            listing = [(item.name, item.is_dir(follow_symlinks=False)) for item in items]
    except (FileNotFoundError, NotADirectoryError, PlantedLinkError):
        return
    for name, is_dir in listing:
        if is_dir:
            if recurse and len(parts) < _MAX_DEPTH:
                yield from _hidden_files(tree, (*parts, name), recurse)
            continue
        if not name.startswith("."):
            continue
        try:  # gone since the folder was read: skip it, never the folder
            st = tree.lstat(parts, name)
        except (FileNotFoundError, NotADirectoryError, PlantedLinkError):
            continue
        if stat.S_ISREG(st.st_mode):
            yield parts, name, st
