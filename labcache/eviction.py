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

Examples:
    >>> parse_size("5GB"), parse_size("1.5 GiB"), parse_size(1024)
    (5000000000, 1610612736, 1024)
    >>> parse_age("30d"), parse_age("90 m"), parse_age(45)
    (2592000.0, 5400.0, 45.0)
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from .base import BaseLockingStorage, BaseStorage
from .listing import describe, list_contexts
from .locks import EntryStat

__all__ = ["Eviction", "evict", "parse_age", "parse_size"]

logger = logging.getLogger("labcache")

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")

#: Called as ``progress(done, total)`` while entries are examined.
Progress = Callable[[int, int], None]


def parse_size(size: str | int, require_unit: bool = False) -> int:
    """Bytes from ``5GB``, ``500 MB``, ``1.5GiB``, ``123`` (kB/MB/GB are powers
    of 1000, KiB/MiB/GiB powers of 1024); ``ValueError`` on anything else.

    Examples:
        >>> parse_size("500 MB")
        500000000
        >>> parse_size("lots")
        Traceback (most recent call last):
        ValueError: cannot read 'lots' as a size; write a number and a unit such as ...
    """
    if isinstance(size, float):
        raise ValueError(f"cannot read {size!r} as a size; write whole bytes or a number "
                         "and a unit such as 500MB, 5GB or 1.5GiB")
    return int(_quantity(size, _UNITS, "size", "500MB, 5GB or 1.5GiB", require_unit))


def parse_age(age: str | float, require_unit: bool = False) -> float:
    """Seconds from ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of
    seconds; ``ValueError`` on anything else.  ``require_unit`` refuses a
    bare number (the command line: ``30`` must not quietly mean seconds).

    Examples:
        >>> parse_age("2w")
        1209600.0
        >>> parse_age("soon")
        Traceback (most recent call last):
        ValueError: cannot read 'soon' as an age; write a number and a unit such as ...
    """
    return _quantity(age, _AGE_UNITS, "age", "45s, 90m, 12h, 30d or 2w", require_unit)


def _quantity(value: object, units: Mapping[str, float], what: str, examples: str,
              require_unit: bool = False) -> float:
    """A number, or a number and one of ``units``, as a float (never negative)."""
    article = "an" if what == "age" else "a"
    # A bare number needs a unit, except 0, which is 0 in every unit.
    bare = isinstance(value, str) and value.strip().replace(".", "").isdigit()
    if require_unit and (not isinstance(value, str) or (bare and float(value) != 0)):
        raise ValueError(f"{value!r} has no unit; write {article} {what} with its unit, "
                         f"such as {examples}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{'an' if what == 'age' else 'a'} {what} cannot be negative "
                             f"({value})")
        return float(value)
    match = _NUMBER.fullmatch(value) if isinstance(value, str) else None
    unit = match[2].lower() if match else ""
    if match is None or unit not in units:
        raise ValueError(f"cannot read {value!r} as {'an' if what == 'age' else 'a'} {what}; "
                         f"write a number and a unit such as {examples}")
    return float(match[1]) * units[unit]


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
    from .protocol import lock_name_for

    return storage._is_locked(lock_name_for(context, name))


def _delete(storage: BaseStorage, context: str, name: str) -> bool:
    """Remove one entry; False if someone else removed it first."""
    remover = getattr(storage, "_evict_entry", None) or storage.delete_file
    with contextlib.suppress(FileNotFoundError):
        remover(name, context)
        return True
    return False
