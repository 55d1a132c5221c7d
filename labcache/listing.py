"""What is in a storage, as plain data: the CLI, eviction and the monitor
widget show or use it.

Listings are built to stay cheap on big storages: one ``describe_entries``
call per function gives counts and sizes, and entry headers (who made an
entry, with which arguments, how long it took) are read only for the entries
actually shown.

Storages written against the seed's interface only (no ``list_contexts``,
``describe_entries`` or ``list_locks``) still work, with less to show.

Examples:
    >>> import tempfile
    >>> from labcache import LocalStorage, cached
    >>> store = LocalStorage(tempfile.mkdtemp())
    >>> @cached(storage=store)
    ... def square(x):
    ...     return x * x
    >>> square(3), square(4)
    (9, 16)
    >>> [(s.context.rsplit(".", 1)[-1], s.entries) for s in summarize(store)]
    [('square', 2)]
    >>> rows, total = entries_page(store, square.context, page=0)
    >>> total, sorted(row.arguments["x"] for row in rows)
    (2, ['3', '4'])
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import entry
from .base import BaseLockingStorage, BaseStorage, EntryStat
from .formatting import ago_text, duration_text, size_text
from .names import lock_name_for
from .options import CacheOptions
from .transfer import FAILURES_CONTEXT

__all__ = ["ENTRY_COLUMNS", "FUNCTION_COLUMNS", "LOCK_COLUMNS", "EntryView",
           "FunctionSummary", "LockView", "arguments_text", "can_list_locks", "describe",
           "entries_page", "entry_cells", "entry_header", "function_cells", "list_contexts",
           "lock_cells", "lock_rows", "read_view", "refused_here", "signer_text", "summarize"]

#: Bookkeeping contexts, not functions: left out of listings.
HIDDEN_CONTEXTS = frozenset({FAILURES_CONTEXT})
#: Entries whose headers are read when a storage cannot tell entry times.
SAMPLE_WITHOUT_TIMES = 5


@dataclass(frozen=True)
class EntryView:
    """One entry as people read it; fields the storage cannot tell are None.

    ``created`` comes from the entry's metadata, or its modification time when
    the header was not read.  ``problem`` says why a header could not be read.

    Examples:
        >>> view = EntryView("mod.f", "ab12", 2048, None, "alice", "gpu-3", 41.0, {"n": "3"})
        >>> view.who, size_text(view.size)
        ('alice@gpu-3', '2.0 kB')
    """

    context: str
    name: str
    size: int | None
    created: float | None
    user: str | None
    host: str | None
    compute_seconds: float | None
    arguments: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    #: When a process last loaded the entry (or wrote it), if the storage tracks it.
    last_used: float | None = None
    #: The name its Ed25519 signature claims (verified only when it is loaded).
    signer: str | None = None
    #: Why this process would refuse to load it (unsigned, signer not trusted), or None.
    refused: str | None = None

    @property
    def who(self) -> str:
        """``user@host``, or ``?`` when unknown."""
        if self.user is None and self.host is None:
            return "?"
        return f"{self.user or '?'}@{self.host or '?'}"


@dataclass(frozen=True)
class FunctionSummary:
    """One context (one cached function): how many entries, how big, the newest.

    ``note`` says when the listing is partial (no entry times, time budget).
    """

    context: str
    entries: int
    total_size: int | None
    newest: EntryView | None
    note: str = ""


@dataclass(frozen=True)
class LockView:
    """One lock: which function and key it guards, who holds it, how fresh.

    ``problem`` says why the lock's record could not be read (its holder is
    then unknown; it goes stale ``UNREADABLE_LOCK_TTL`` after its last change).

    Examples:
        >>> lock = LockView("m.f.ab12", "m.f", "ab12", "bob@cpu-1 pid 7", 130.0, 4.0, False)
        >>> lock.state, duration_text(lock.held_for)
        ('fresh', '2 m 10 s')
    """

    name: str
    context: str
    key: str
    holder: str
    held_for: float
    beat_age: float
    stale: bool
    problem: str | None = None
    refreshing: bool = False  # the key has an entry: its holder replaces it (stale_after)

    @property
    def state(self) -> str:
        """``fresh``, ``stale``, ``unreadable`` (a bad record, not stale yet), or
        ``refreshing`` (a live holder recomputing an entry that is still
        served, ``@cached(stale_after=...)``)."""
        if self.stale:
            return "stale"
        if self.problem:
            return "unreadable"
        return "refreshing" if self.refreshing else "fresh"


# Table cells shared by the widget (HTML) and the CLI (text): one list of
# strings per row, matching the column titles.

FUNCTION_COLUMNS = ("function", "entries", "total size", "newest", "by", "compute time", "note")
ENTRY_COLUMNS = ("key", "created", "last used", "by", "signer", "compute time", "size",
                 "arguments")
LOCK_COLUMNS = ("function", "key", "holder", "held for", "last beat", "state")


def function_cells(summary: FunctionSummary, now: float | None = None) -> list[str]:
    """One row of the function table (see ``FUNCTION_COLUMNS``).

    Examples:
        >>> function_cells(FunctionSummary("m.f", 3, 4096, None))
        ['m.f', '3', '4.1 kB', '?', '?', '?', '']
    """
    new = summary.newest
    return [summary.context, str(summary.entries), size_text(summary.total_size),
            ago_text(new.created, now) if new else "?", new.who if new else "?",
            duration_text(new.compute_seconds) if new else "?", summary.note]


def entry_cells(view: EntryView, now: float | None = None) -> list[str]:
    """One row of the entry table (see ``ENTRY_COLUMNS``).

    Examples:
        >>> view = EntryView("m.f", "ab", 1, None, None, None, None, refused="unsigned")
        >>> entry_cells(view)[4]
        '- (refused here: unsigned)'
    """
    return [view.name, ago_text(view.created, now), ago_text(view.last_used, now), view.who,
            signer_text(view), duration_text(view.compute_seconds), size_text(view.size),
            arguments_text(view)]


def signer_text(view: EntryView) -> str:
    """The signer's name (``-`` if none), and why this process would refuse the entry."""
    refused = f" (refused here: {view.refused})" if view.refused else ""
    return f"{view.signer or '-'}{refused}"


def lock_cells(lock: LockView) -> list[str]:
    """One row of the lock table (see ``LOCK_COLUMNS``)."""
    return [lock.context, lock.key, lock.holder, duration_text(lock.held_for),
            f"{duration_text(lock.beat_age)} ago", lock.state]


def arguments_text(view: EntryView) -> str:
    """The call's arguments as ``name=value, ...`` (or why they are unknown).

    Examples:
        >>> arguments_text(EntryView("m.f", "ab", 1, None, None, None, None, {"n": "3"}))
        'n=3'
    """
    return view.problem or ", ".join(f"{k}={v}" for k, v in view.arguments.items())


def list_contexts(storage: BaseStorage) -> list[str]:
    """The contexts holding entries, bookkeeping left out.

    A storage that cannot list its contexts (``lists_contexts`` is False)
    is not asked: the contexts of the cached functions this process knows
    (module globals) that use it are returned instead.
    """
    found: Iterable[str] = storage.list_contexts() if storage.lists_contexts else \
        _contexts_in_process(storage)
    return sorted(c for c in found if c not in HIDDEN_CONTEXTS)


def summarize(storage: BaseStorage, time_budget: float = 2.0,
              described: Mapping[str, Sequence[EntryStat]] | None = None,
              ) -> list[FunctionSummary]:
    """Per function: entry count, total size and the newest entry.

    Only the newest entry's header is read.  Without entry times (Redis) the
    headers of a few entries are read and the newest of those is shown, with a
    note saying so.  Once ``time_budget`` seconds are spent, remaining
    functions are still counted but no more headers are read.  ``described``:
    listings the caller already made, by context (they are not made again).
    """
    deadline = time.monotonic() + time_budget
    summaries = []
    for context in list_contexts(storage):
        try:
            known = described.get(context) if described is not None else None
            stats = list(known) if known is not None else describe(storage, context)
        except Exception as exc:  # a stray folder with an invalid name, an outage
            summaries.append(FunctionSummary(context, 0, None, None, f"cannot list: {exc}"))
            continue
        if not stats:
            continue
        sizes = [s.size for s in stats]
        total = None if None in sizes else sum(s for s in sizes if s is not None)
        newest, note = None, ""
        if time.monotonic() > deadline:
            note = "newest not read (time budget spent)"
        elif all(s.modified is not None for s in stats):
            newest = read_view(storage, context, max(stats, key=_age_order))
        else:
            sample = stats[:SAMPLE_WITHOUT_TIMES]
            views = [read_view(storage, context, s) for s in sample]
            newest = max(views, key=lambda v: v.created or 0.0)
            if len(stats) > len(sample):
                note = f"no entry times here: newest of {len(sample)} sampled entries"
        summaries.append(FunctionSummary(context, len(stats), total, newest, note))
    return summaries


def entries_page(storage: BaseStorage, context: str, page: int, per_page: int = 50,
                 described: Sequence[EntryStat] | None = None,
                 ) -> tuple[list[EntryView], int]:
    """One page (0-based) of a function's entries and how many there are.

    Newest first when the storage knows entry times, by name otherwise;
    headers are read for this page only.  ``described``: the function's
    listing if the caller already has it (``describe(storage, context)``).
    """
    stats = list(describe(storage, context) if described is None else described)
    if all(s.modified is not None for s in stats):
        stats.sort(key=_age_order, reverse=True)
    else:
        stats.sort(key=lambda s: s.name)
    start = max(page, 0) * per_page
    return [read_view(storage, context, s) for s in stats[start:start + per_page]], len(stats)


def lock_rows(storage: BaseStorage, contexts: Iterable[str] = ()) -> list[LockView]:
    """Every lock present, split into function context and key.

    Lock names are ``lock_name_for(context, key)``, the context cut to 140
    characters: a cut context is restored from ``contexts`` when one matches.
    Storages that cannot list locks give an empty list.
    """
    if not isinstance(storage, BaseLockingStorage):
        return []
    now_wall = time.time()
    now_storage = storage.storage_time()
    full = {lock_name_for(c, "k").rpartition(".")[0]: c for c in contexts}
    rows = []
    for info in storage.list_locks():
        context, _, key = info.name.rpartition(".")
        rows.append(LockView(info.name, full.get(context, context), key, info.holder,
                             now_wall - info.acquired, now_storage - info.heartbeat,
                             info.stale, info.problem,
                             _has_entry(storage, full.get(context, context), key)))
    return rows


def _has_entry(storage: BaseStorage, context: str, key: str) -> bool:
    """Whether a locked key already has an entry (then its holder refreshes it)."""
    try:
        return bool(key) and storage.check_if_exists(key, context)
    except Exception:  # a name that is no entry's, or an outage: plain "fresh"
        return False


def can_list_locks(storage: BaseStorage) -> bool:
    """Whether the storage can name its locks' holders (``names_holders``)."""
    return isinstance(storage, BaseLockingStorage) and storage.names_holders


def describe(storage: BaseStorage, context: str) -> list[EntryStat]:
    """The storage's ``describe_entries`` (names only for a seed-style storage)."""
    return list(storage.describe_entries(context))


def read_view(storage: BaseStorage, context: str, stat: EntryStat) -> EntryView:
    """The entry's header as an :class:`EntryView`; never raises for a bad entry."""
    try:
        header = entry_header(storage, stat.name, context)
        meta = header.meta
    except Exception as exc:  # deleted meanwhile, damaged, another format
        return EntryView(context, stat.name, stat.size, stat.modified, None, None, None,
                         {}, f"{type(exc).__name__}: {exc}", stat.last_used or None)
    arguments = _mapping(meta.get("arguments"))
    # Without a stored size, the payload's: close enough for people.
    size = sum(header.sizes) if stat.size is None else stat.size
    return EntryView(
        context, stat.name, size, _number(meta.get("created")) or stat.modified,
        _text(meta.get("user")), _text(meta.get("host")), _number(meta.get("compute_seconds")),
        {str(k): str(v) for k, v in arguments.items()}, last_used=stat.last_used or None,
        signer=header.signer, refused=refused_here(header),
    )


def entry_header(storage: BaseStorage, name: str, context: str) -> entry.Header:
    """One entry's header, read without loading its payload.

    Examples:
        >>> import tempfile
        >>> from labcache import LocalStorage, cached
        >>> @cached(storage=LocalStorage(tempfile.mkdtemp()))
        ... def half(x):
        ...     return x / 2
        >>> half(3)
        1.5
        >>> header = entry_header(half.storage, half.key(3), half.context)
        >>> header.meta["arguments"], header.signed
        ({'x': '3'}, False)
    """
    return storage.read_entry_header(name, context)


def refused_here(header: entry.Header) -> str | None:
    """Why this process would refuse to load the entry (unsigned, signer not
    trusted), or None; never raises."""
    from ._seal import refusal

    try:
        return refusal(header.signer, header.hmac)
    except Exception as exc:  # an unreadable trusted keys file: every entry would be refused
        return f"{type(exc).__name__}: {exc}"


# -- helpers ------------------------------------------------------------------------


def _age_order(stat: EntryStat) -> tuple[float, str]:
    return (stat.modified or 0.0, stat.name)


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _contexts_in_process(storage: BaseStorage) -> set[str]:
    """Contexts of the cached functions in loaded modules' globals using ``storage``."""
    found: set[str] = set()
    kinds: dict[type, bool] = {}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            kind = type(value)
            if kind not in kinds:  # most globals are modules, classes, functions: few types
                kinds[kind] = inspect.getattr_static(kind, "is_cached", None) is not None
            uses = _cached_function(value) if kinds[kind] else None
            if uses is not None and uses[1] is storage:
                found.add(uses[0])
    return found


def _cached_function(value: object) -> tuple[str, BaseStorage | None] | None:
    """``(context, storage)`` of a ``@cached`` function; None for anything else.

    A cached function is known by what it holds (its class has ``is_cached``,
    checked by the caller once per type; it has a ``context`` and
    ``_options``, a :class:`CacheOptions`), read with ``getattr_static`` so
    that no ``__getattr__`` or property of a stranger object runs.  Listings
    sit below ``@cached`` in the import graph (``@cached`` evicts through
    them), so they do not import it.
    The storage is found without opening anything: a URL-configured function
    that never ran has none yet.
    """
    context = inspect.getattr_static(value, "context", None)
    options = inspect.getattr_static(value, "_options", None)
    if not isinstance(context, str) or not isinstance(options, CacheOptions):
        return None
    spec = options.storage
    if isinstance(spec, BaseStorage):
        return context, spec
    if spec is None:
        with contextlib.suppress(Exception):
            from .storage import default_storage

            return context, default_storage()
        return context, None
    opened = inspect.getattr_static(value, "_opened", None)
    return context, opened if isinstance(opened, BaseStorage) else None
