"""Finding what a ``labcache`` command names: a function, a key prefix, a lock."""

from __future__ import annotations

from . import listing
from .base import BaseStorage, EntryStat

__all__ = ["CliError", "contexts", "find_function", "find_key", "find_lock"]


class CliError(Exception):
    """Stops a command with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


Entry = tuple[str, EntryStat]  # (context, stat)


# -- finding things -------------------------------------------------------------------


def contexts(storage: BaseStorage) -> list[str]:
    """The functions' contexts in ``storage`` (bookkeeping left out)."""
    return listing.list_contexts(storage)


def find_function(storage: BaseStorage, name: str) -> str:
    """The context of FUNCTION: a context name, a qualified name or its tail."""
    from .names import context_for

    _not_empty(name, "FUNCTION", "train or __main__.train")
    known = contexts(storage)
    if name in known:
        return name
    safe = context_for("", name)  # the tail of a context, escaped as contexts are
    found = [c for c in known
             if c == safe or c.endswith("." + name) or c.endswith("." + safe)]
    if len(found) == 1:
        return found[0]
    if found:
        raise CliError(f"function {name!r} is ambiguous: {', '.join(found)}; give the full name")
    raise CliError(f"no cached function {name!r} in this storage (see labcache ls)", 1)


def find_key(storage: BaseStorage, prefix: str) -> Entry:
    """The one entry whose key is ``prefix`` or starts with it."""
    _not_empty(prefix, "KEY", "3f9a2c (a key or the start of one)")
    found = [(c, s) for c in contexts(storage) for s in listing.describe(storage, c)
             if s.name.startswith(prefix)]
    exact = [pair for pair in found if pair[1].name == prefix]
    if len(exact) == 1 or len(found) == 1:
        return (exact or found)[0]
    if not found:
        raise CliError(f"no entry with key {prefix!r} (see labcache ls FUNCTION)", 1)
    raise CliError(f"key prefix {prefix!r} matches {len(found)} entries; give more characters")


def find_lock(storage: BaseStorage, name: str) -> listing.LockView:
    """The lock named ``name``, or whose key (or name) starts with it."""
    _not_empty(name, "LOCK", "a lock name or the start of its key (see labcache locks)")
    rows = listing.lock_rows(storage, contexts(storage))
    found = [r for r in rows if r.name == name] or \
        [r for r in rows if r.key.startswith(name) or r.name.startswith(name)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CliError(f"no lock {name!r} (see labcache locks)", 1)
    raise CliError(f"{name!r} matches {len(found)} locks; give the full lock name")


def _not_empty(name: str, what: str, example: str) -> None:
    """Refuse an empty (or blank) name: as a prefix it would match everything."""
    if not name.strip():
        raise CliError(f"{what} is empty; give one, e.g. {example}")
