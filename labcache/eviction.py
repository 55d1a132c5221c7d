"""Keeping a cache under a size (and age) limit: least recently used first.

``evict`` lists the entries of one context or of all of them, orders them
by last use (``EntryStat.last_used``: the access time each backend tracks on
its load path, else the modification time) and deletes the oldest until the
total is under the limit.  It never touches:

* an entry whose key lock is held and fresh: it is being computed or
  rewritten right now;
* an entry named in ``keep`` (``@cached(max_size=...)`` keeps the entry it
  has just stored).

A reader that already opened an entry still gets its value: on Local an
unlinked open file stays readable; a Redis entry is one value (read whole)
or a manifest whose chunks are left to expire a minute later; an S3 GET
already under way streams the object it started on.

Sizes and ages (``"5GB"``, ``"30d"``) are read by
:func:`labcache.formatting.parse_size` and :func:`~labcache.formatting.parse_age`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .base import BaseLockingStorage, BaseStorage, EntryStat
from .formatting import parse_age, parse_size
from .listing import describe, list_contexts
from .names import lock_name_for

__all__ = ["Eviction", "evict"]

logger = logging.getLogger("labcache")

#: Called as ``progress(done, total)`` while entries are examined.
Progress = Callable[[int, int], None]


@dataclass
class Eviction:
    """What one ``evict`` run did (or, with ``dry_run``, would do).

    ``removed`` and ``skipped`` hold ``(context, EntryStat)`` pairs; ``skipped``
    are entries that should have gone but were locked (being computed).
    ``total_before``/``total_after`` are bytes in the contexts examined.

    Examples:
        >>> Eviction(total_before=3000, total_after=1000).freed  # nothing listed as removed
        0
    """

    removed: list[tuple[str, EntryStat]] = field(default_factory=list)
    skipped: list[tuple[str, EntryStat]] = field(default_factory=list)
    total_before: int = 0
    total_after: int = 0

    @property
    def freed(self) -> int:
        """Bytes removed."""
        return sum(stat.size or 0 for _, stat in self.removed)


def evict(storage: BaseStorage, context: str | None = None, *, max_size: str | int | None = None,
          older_than: str | float | None = None, keep: Collection[str] = (),
          dry_run: bool = False, progress: Progress | None = None,
          now: float | None = None) -> Eviction:
    """Delete least recently used entries until ``context`` (or, with None, the
    whole storage) holds at most ``max_size`` bytes, and every entry unused for
    longer than ``older_than``.  Locked entries and ``keep`` are never deleted.

    Examples:
        >>> import tempfile
        >>> from labcache import LocalStorage
        >>> store = LocalStorage(tempfile.mkdtemp())
        >>> for name in ("a", "b", "c"):
        ...     _ = store.upload_file(b"x" * 1000, name, "demo")
        >>> done = evict(store, "demo", max_size="2kB")
        >>> len(done.removed), done.total_after, len(store.list_stored_files("demo"))
        (1, 2000, 2)
    """
    if max_size is None and older_than is None:
        raise ValueError("evict needs max_size, older_than or both")
    limit = None if max_size is None else parse_size(max_size)
    cutoff = None if older_than is None else (now or time.time()) - parse_age(older_than)
    entries = _listing(storage, context)
    result = Eviction(total_before=sum(stat.size or 0 for _, stat in entries))
    total = result.total_before
    entries.sort(key=lambda pair: (pair[1].last_used, pair[0], pair[1].name))  # oldest first
    for done, (ctx, stat) in enumerate(entries, start=1):
        if progress is not None:
            progress(done, len(entries))
        too_old = cutoff is not None and stat.last_used < cutoff
        if not too_old and (limit is None or total <= limit):
            if cutoff is None:
                break  # sorted oldest first: nothing further goes either
            continue
        if stat.name in keep or _locked(storage, ctx, stat.name):
            result.skipped.append((ctx, stat))
            continue
        if dry_run or _delete(storage, ctx, stat.name):
            result.removed.append((ctx, stat))
            total -= stat.size or 0
    if progress is not None and entries:
        progress(len(entries), len(entries))
    result.total_after = total
    if limit is not None and total > limit:
        logger.warning("cache still holds %d bytes over its %d byte limit: %d locked or kept "
                       "entries could not be removed", total - limit, limit, len(result.skipped))
    return result


def _listing(storage: BaseStorage, context: str | None) -> list[tuple[str, EntryStat]]:
    contexts = list_contexts(storage) if context is None else [context]
    return [(ctx, stat) for ctx in contexts for stat in describe(storage, ctx)]


def _locked(storage: BaseStorage, context: str, name: str) -> bool:
    """Whether the key's lock is held and fresh (its entry is being written)."""
    if not isinstance(storage, BaseLockingStorage):
        return False
    return storage._is_locked(lock_name_for(context, name))


def _delete(storage: BaseStorage, context: str, name: str) -> bool:
    """Remove one entry; False if someone else removed it first."""
    with contextlib.suppress(FileNotFoundError):
        storage.evict_entry(name, context)
        return True
    return False
