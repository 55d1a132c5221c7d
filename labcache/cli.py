"""The ``labcache`` command: look at and tidy a cache from a terminal.

``labcache ls [FUNCTION] [--by NAME] [--since AGE]``, ``info KEY``, ``rm
KEY...``, ``clear FUNCTION``, ``locks``, ``unlock LOCK [--force]``, ``gc
[--max-size 10GB] [--older-than 30d] [--orphan-age 1h]``, ``stats``, ``demo``
and ``keygen NAME --out DIR``; each takes ``--storage URL`` (default
``LABCACHE_STORAGE``, then the local default folder) and ``--json``.

Exit codes: 0 done, 1 nothing matched (no such function, key or lock),
2 a usage or storage error, told in one line ``labcache: error: ...``.

Examples:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> main(["ls", "--storage", f"file://{folder}"])  # doctest: +ELLIPSIS
    storage: file:///...
    no entries
    0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

from . import listing
from ._cli_find import CliError, contexts, find_function, find_key, find_lock
from ._cli_format import ProgressBar, table
from ._redact import redact_url, scrub
from .base import BaseLockingStorage, BaseStorage, Orphan
from .errors import LabcacheError
from .formatting import duration_text, parse_age, parse_size, size_text
from .locks import UNREADABLE_LOCK_TTL
from .names import lock_name_for

__all__ = ["main"]

#: Rows ``ls FUNCTION`` shows unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 50
#: Characters of a key shown in tables (``info`` and ``--json`` show it whole).
SHORT_KEY = 12


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        raise CliError(f"{message} (see {self.prog} --help)")


# -- commands -------------------------------------------------------------------------


def cmd_ls(storage: BaseStorage, args: argparse.Namespace) -> Any:
    now = time.time()
    if args.by is not None or args.since is not None:
        return _ls_filtered(storage, args, now)
    if args.function is not None:  # "" is refused, never read as "every function"
        return _ls_function(storage, find_function(storage, args.function), args.limit, now)
    described = {c: listing.describe(storage, c) for c in contexts(storage)}
    summaries = listing.summarize(storage, described=described)
    rows: list[dict[str, Any]] = [
            {"function": s.context, "entries": s.entries, "size": s.total_size,
             "last_used": max((e.last_used for e in described[s.context]), default=None) or None,
             "newest": s.newest.created if s.newest else None,
             "by": s.newest.who if s.newest else None} for s in summaries]
    if not rows:
        return {"functions": []}, "no entries"
    text = table(["function", "entries", "size", "last used", "newest", "by"],
                 [[r["function"], str(r["entries"]), size_text(r["size"]),
                   _ago(r["last_used"], now), _ago(r["newest"], now), r["by"] or "?"]
                  for r in rows])
    return {"functions": rows}, text


def _ls_function(storage: BaseStorage, context: str, limit: int, now: float) -> Any:
    """``ls FUNCTION``: its entries, most recently used first."""
    stats = sorted(listing.describe(storage, context), key=lambda s: -s.last_used)
    views = [(s, listing.read_view(storage, context, s)) for s in stats[:limit]]
    rows: list[dict[str, Any]] = [
        {"key": s.name, "size": v.size, "created": v.created, "last_used": s.last_used or None,
         "by": v.who, "signer": v.signer, "refused": v.refused,
         "compute_seconds": v.compute_seconds, "arguments": listing.arguments_text(v)}
        for s, v in views]
    text = table(["key", "size", "created", "last used", "by", "signer", "compute", "arguments"],
                 [[r["key"][:SHORT_KEY], size_text(r["size"]), _ago(r["created"], now),
                   _ago(r["last_used"], now), r["by"], listing.signer_text(v),
                   _secs(r["compute_seconds"]), r["arguments"]]
                  for r, (_, v) in zip(rows, views, strict=True)])
    more = len(stats) - len(rows)
    text += f"\n... and {more} more (--limit {len(stats)} shows all)" if more > 0 else ""
    return {"function": context, "entries": rows, "total": len(stats)}, text


def cmd_info(storage: BaseStorage, args: argparse.Namespace) -> Any:
    context, stat = find_key(storage, args.key)
    header = listing.entry_header(storage, stat.name, context)
    meta = header.meta
    lock = _lock_of(storage, context, stat.name)
    data: dict[str, Any] = {"function": context, "key": stat.name, "size": stat.size,
            "created": meta.get("created"), "modified": stat.modified,
            "last_used": stat.last_used or None,
            "by": f"{meta.get('user') or '?'}@{meta.get('host') or '?'}",
            "compute_seconds": meta.get("compute_seconds"), "arguments": meta.get("arguments"),
            "python": meta.get("python"), "labcache": meta.get("labcache"),
            "signed": header.signed, "signer": header.signer,
            "hmac": header.hmac, "refused_here": listing.refused_here(header),
            "lock": lock}
    extra = {k: v for k, v in meta.items() if k not in _INFO_META and k not in data}
    data.update(extra)  # the code identity's parts and whatever else the writer recorded
    now = time.time()
    shown = dict(data, size=size_text(stat.size), created=_ago(data["created"], now),
                 modified=_ago(stat.modified, now), last_used=_ago(data["last_used"], now),
                 compute_seconds=_secs(data["compute_seconds"]),
                 arguments=", ".join(f"{k}={v}" for k, v in (data["arguments"] or {}).items()),
                 signer=data["signer"] or "-", refused_here=data["refused_here"] or "no",
                 lock=lock or "free",
                 **{k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
                    for k, v in extra.items()})
    width = max(map(len, shown))
    return data, "\n".join(f"{name.replace('_', ' '):<{width}}  {value}"
                           for name, value in shown.items())


def cmd_rm(storage: BaseStorage, args: argparse.Namespace) -> Any:
    removed: list[dict[str, Any]] = []
    found = [find_key(storage, key) for key in args.keys]  # all named well before any goes
    for context, stat in found:
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile: the goal holds
            storage.delete_file(stat.name, context)
        removed.append({"function": context, "key": stat.name, "size": stat.size})
    return {"removed": removed}, "\n".join(
        f"removed {r['key']} ({r['function']}, {size_text(r['size'])})" for r in removed)


def cmd_clear(storage: BaseStorage, args: argparse.Namespace) -> Any:
    context = find_function(storage, args.function)
    stats = listing.describe(storage, context)
    bar, removed, freed = ProgressBar("clear"), 0, 0
    try:
        for done, stat in enumerate(stats, start=1):
            with contextlib.suppress(FileNotFoundError):
                storage.delete_file(stat.name, context)
                removed, freed = removed + 1, freed + (stat.size or 0)
            bar(done, len(stats))
    finally:
        bar.close()
    return ({"function": context, "removed": removed, "freed": freed},
            f"removed {_count(removed, 'entry')} of {context} ({size_text(freed)})")


def cmd_locks(storage: BaseStorage, args: argparse.Namespace) -> Any:
    rows = [_lock_data(r) for r in listing.lock_rows(storage, contexts(storage))]
    if not rows:
        return {"locks": []}, "no locks"
    return {"locks": rows}, table(
        ["function", "key", "holder", "held for", "last beat", "state"],
        [[r["function"], r["key"][:SHORT_KEY], r["holder"], duration_text(r["held_for"]),
          duration_text(r["last_beat_age"]) + " ago", r["state"]] for r in rows])


def cmd_unlock(storage: BaseStorage, args: argparse.Namespace) -> Any:
    if not isinstance(storage, BaseLockingStorage):
        raise CliError("this storage has no locks")
    lock = find_lock(storage, args.lock)
    if not lock.stale and not args.force and lock.problem:
        raise CliError(
            f"lock {lock.name} has an unreadable record ({lock.problem}); it counts as held "
            f"until it is {duration_text(UNREADABLE_LOCK_TTL)} old (changed "
            f"{duration_text(lock.beat_age)} ago); pass --force to remove it now")
    if not lock.stale and not args.force:
        raise CliError(
            f"lock {lock.name} is held by {lock.holder} for {duration_text(lock.held_for)} "
            f"(last beat {duration_text(lock.beat_age)} ago): it is alive, probably computing; "
            "pass --force to break it anyway")
    broken = storage.break_lock(lock.name)
    if not broken:
        raise CliError(f"lock {lock.name} was released or taken over meanwhile", 1)
    state = "stale" if lock.stale else "fresh, --force"
    return ({"unlocked": lock.name, "holder": lock.holder, "stale": lock.stale},
            f"broke lock {lock.name} held by {lock.holder} ({state})")


def cmd_gc(storage: BaseStorage, args: argparse.Namespace) -> Any:
    from .eviction import Eviction, evict

    evicting = args.max_size is not None or args.older_than is not None
    if args.function is not None and not evicting:
        raise CliError("gc FUNCTION needs --max-size SIZE, --older-than AGE or both "
                       "(e.g. labcache gc train --max-size 10GB)")
    context = None if args.function is None else find_function(storage, args.function)
    done = Eviction()
    if evicting:
        bar = ProgressBar("gc")
        try:
            done = evict(storage, context, max_size=args.max_size, older_than=args.older_than,
                         dry_run=args.dry_run, progress=bar)
        finally:
            bar.close()
    # Leftovers of killed stores belong to no function: swept only storage-wide.
    orphans, problem = ([], None) if context else _orphans(
        lambda: storage.remove_orphans(args.orphan_age, dry_run=args.dry_run))
    verb = "would remove" if args.dry_run else "removed"
    text = (f"{verb} {_count(len(done.removed), 'entry')} ({size_text(done.freed)}); "
            f"{size_text(done.total_after)} left") if evicting else ""
    if done.skipped:
        text += f"; kept {_count(len(done.skipped), 'locked entry')} (being computed)"
    if context is None:
        text += ("\n" if text else "") + (problem or _orphans_text(verb, orphans,
                                                                   args.orphan_age))
    data = {"dry_run": args.dry_run, "freed": done.freed, "total_before": done.total_before,
            "total_after": done.total_after,
            "removed": [{"function": c, "key": s.name, "size": s.size} for c, s in done.removed],
            "skipped": [{"function": c, "key": s.name, "size": s.size} for c, s in done.skipped],
            "orphans": [_orphan_data(o) for o in orphans],
            "orphans_freed": sum(o.size for o in orphans), "orphans_error": problem}
    return data, text


def _orphans(look: Callable[[], list[Orphan]]) -> tuple[list[Orphan], str | None]:
    """The orphans ``look`` returns, or none and why: a storage that refuses
    to list them (S3 credentials without the multipart permissions) must not
    stop the rest of ``gc`` or ``stats``."""
    try:
        return look(), None
    except LabcacheError as exc:  # StorageError: one line that names the request
        return [], f"could not look for orphans: {exc}"


def _orphans_text(verb: str, orphans: list[Orphan], age: float) -> str:
    kinds = sorted({o.kind for o in orphans})
    return (f"{verb} {_count(len(orphans), 'orphan')} left by interrupted stores "
            f"({size_text(sum(o.size for o in orphans))}"
            f"{': ' + ', '.join(kinds) if kinds else ''}), idle for over {duration_text(age)}")


def _orphan_data(orphan: Orphan) -> dict[str, Any]:
    return {"kind": orphan.kind, "where": orphan.where, "size": orphan.size, "age": orphan.age}


def cmd_stats(storage: BaseStorage, args: argparse.Namespace) -> Any:
    described = {c: listing.describe(storage, c) for c in contexts(storage)}
    stats = [s for found in described.values() for s in found]
    locks = listing.lock_rows(storage, described)
    used = [s.last_used for s in stats if s.last_used]
    sizes = [s.size for s in stats]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    data: dict[str, Any] = {"storage": _where(storage, args), "functions": len(described),
            "entries": len(stats), "size": total,
            "least_recently_used": min(used, default=None),
            "most_recently_used": max(used, default=None),
            "locks": len(locks), "stale_locks": sum(lock.stale for lock in locks),
            "unreadable_locks": sum(lock.problem is not None for lock in locks)}
    orphans, orphan_lines = _orphan_stats(storage, args.orphan_age)
    settings, warnings = _lock_safety(storage)
    now = time.time()
    shown = dict(data, size=size_text(data["size"]),
                 least_recently_used=_ago(data["least_recently_used"], now),
                 most_recently_used=_ago(data["most_recently_used"], now), **orphan_lines,
                 **{name: value or "unknown" for name, value in settings.items()})
    width = max(map(len, shown))
    text = "\n".join(f"{name.replace('_', ' '):<{width}}  {value}"
                     for name, value in shown.items())
    text += "".join(f"\nwarning: {warning}" for warning in warnings)
    return {**data, **orphans, "server": settings, "warnings": warnings}, text


def _orphan_stats(storage: BaseStorage, age: float) -> tuple[dict[str, Any], dict[str, str]]:
    """``stats``' orphan counts (None when unknown) and their lines of text."""
    found, problem = _orphans(storage.find_orphans)
    if problem:
        return ({"orphans": None, "orphan_size": None, "writes_in_progress": None,
                 "writes_in_progress_size": None, "orphans_error": problem},
                {"orphans": "?", "writes_in_progress": "?", "orphans_error": problem})
    old = [o for o in found if o.age is not None and o.age >= age]
    young = [o for o in found if o.age is None or o.age < age]
    data = {"orphans": len(old), "orphan_size": sum(o.size for o in old),
            "writes_in_progress": len(young), "writes_in_progress_size": sum(o.size for o in young),
            "orphans_error": None}
    return data, {
        "orphans": f"{len(old)} ({size_text(data['orphan_size'])}; idle over "
                   f"{duration_text(age)}, labcache gc removes them)",
        "writes_in_progress": f"{len(young)} ({size_text(data['writes_in_progress_size'])}; "
                              f"or interrupted less than {duration_text(age)} ago)"}


def cmd_keygen(storage: BaseStorage | None, args: argparse.Namespace) -> Any:
    from .signing import keygen

    try:
        private, public = keygen(args.name, args.out)
    except FileExistsError as exc:
        raise CliError(str(exc)) from None
    line = public.read_text().strip()
    return ({"name": args.name, "private_key": str(private), "public_key": str(public),
             "public_line": line},
            f"wrote {private} (private: mode 0600, keep it secret; point "
            f"LABCACHE_SIGNING_KEY at it)\nwrote {public} (public: add this line to your "
            f"team's trusted keys file)\n{line}")


def cmd_demo(storage: BaseStorage, args: argparse.Namespace) -> Any:
    if args.storage:  # the demo opens the default storage: point it at ours
        os.environ["LABCACHE_STORAGE"] = args.storage
    from . import demo

    if not args.json:
        demo.main()
    else:  # the demo's story (its worker processes' too) goes to stderr, the JSON to stdout
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
            demo.main()
            sys.stdout.flush()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    return {"storage": _where(storage, args), "done": True}, None


# -- plumbing -------------------------------------------------------------------------

#: Metadata ``info`` shows under its own names (the rest is shown as recorded).
_INFO_META = frozenset({"function", "key", "created", "compute_seconds", "arguments", "user",
                        "host", "python", "labcache"})


def _ls_filtered(storage: BaseStorage, args: argparse.Namespace, now: float) -> Any:
    """``ls [FUNCTION] --by NAME --since AGE``: matching entries, newest first
    (the headers of every entry young enough are read)."""
    try:
        cutoff = None if args.since is None else now - parse_age(args.since)
    except ValueError as exc:
        raise CliError(f"--since: {exc}") from None
    chosen = ([find_function(storage, args.function)] if args.function is not None
              else contexts(storage))
    views = []
    for context in chosen:
        for stat in listing.describe(storage, context):
            if cutoff is not None and stat.modified is not None and stat.modified < cutoff:
                continue  # written before the cutoff: created before it too
            view = listing.read_view(storage, context, stat)
            if _matches(view, args.by, cutoff):
                views.append(view)
    views.sort(key=lambda v: -(v.created or 0.0))
    rows: list[dict[str, Any]] = [
            {"function": v.context, "key": v.name, "size": v.size, "created": v.created,
             "by": v.who, "signer": v.signer, "refused": v.refused,
             "compute_seconds": v.compute_seconds, "arguments": listing.arguments_text(v)}
            for v in views[: args.limit]]
    text = table(["function", "key", "size", "created", "by", "signer", "arguments"],
                 [[r["function"], r["key"][:SHORT_KEY], size_text(r["size"]),
                   _ago(r["created"], now), r["by"], listing.signer_text(v), r["arguments"]]
                  for r, v in zip(rows, views, strict=False)]) if rows else "no matching entries"
    more = len(views) - len(rows)
    text += f"\n... and {more} more (--limit {len(views)} shows all)" if more > 0 else ""
    return {"entries": rows, "total": len(views),
            "filters": {"by": args.by, "since": args.since, "function": args.function}}, text


def _matches(view: listing.EntryView, by: str | None, cutoff: float | None) -> bool:
    """Whether an entry was made by ``by`` (its signer, user or user@host) after ``cutoff``."""
    if cutoff is not None and (view.created is None or view.created < cutoff):
        return False
    return by is None or by in (view.signer, view.user, view.who)


def _ago(when: float | None, now: float) -> str:
    return "-" if not when else duration_text(now - when)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun[:-1]}ies" \
        if noun.endswith("y") else f"{number} {noun}s"


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else duration_text(seconds)


def _lock_data(row: listing.LockView) -> dict[str, Any]:
    return {"name": row.name, "function": row.context, "key": row.key, "holder": row.holder,
            "held_for": row.held_for, "last_beat_age": row.beat_age, "state": row.state,
            "problem": row.problem}


def _lock_safety(storage: BaseStorage) -> tuple[dict[str, str | None], list[str]]:
    """The server settings that bear on locks, and warnings about them."""
    if not isinstance(storage, BaseLockingStorage):
        return {}, []
    return storage.server_settings(), storage.lock_warnings()


def _lock_of(storage: BaseStorage, context: str, key: str) -> dict[str, Any] | None:
    if not isinstance(storage, BaseLockingStorage):
        return None
    info = storage.lock_info(lock_name_for(context, key))
    return None if info is None else {"holder": info.holder, "stale": info.stale}


def _where(storage: BaseStorage, args: argparse.Namespace) -> str:
    return redact_url(args.storage) if args.storage else storage.get_root_path()


def _open(url: str | None, must_exist: bool = True) -> BaseStorage:
    """The storage to work on.  A folder named by a URL (``--storage`` or
    ``LABCACHE_STORAGE``) must exist: a typo must not read as an empty cache."""
    from .storage import default_storage, open_storage
    from .storage.local import LocalStorage

    storage = open_storage(url) if url else default_storage()
    named = url or os.environ.get("LABCACHE_STORAGE")
    if must_exist and named and isinstance(storage, LocalStorage) and not storage.root.is_dir():
        raise CliError(f"no cache folder at {storage.root}: check the storage URL "
                       f"({redact_url(named)}); labcache creates the folder on the first "
                       "store, so a new cache has nothing to show yet")
    return storage


Command = Callable[[BaseStorage, argparse.Namespace], Any]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``labcache --help``).

    Examples:
        >>> build_parser().parse_args(["gc", "--max-size", "10GB"]).max_size
        10000000000
    """
    parser = _Parser(prog="labcache", description="Look at and tidy a labcache cache.")
    _add_common(parser, default=None)
    # The same options after the command; SUPPRESS keeps a value given
    # before the command (`labcache --storage URL ls`) when it is not repeated.
    common = _Parser(add_help=False)
    _add_common(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, command: Command, text: str) -> argparse.ArgumentParser:
        found = sub.add_parser(name, parents=[common], help=text, description=text)
        found.set_defaults(handler=command)
        return found

    ls = add("ls", cmd_ls, "list cached functions, or the entries of one")
    ls.add_argument("function", nargs="?", metavar="FUNCTION")
    ls.add_argument("--limit", type=_count_arg, default=DEFAULT_LIMIT, help="entries shown (50)")
    ls.add_argument("--by", metavar="NAME",
                    help="only entries signed by NAME or made by user NAME (or user@host)")
    ls.add_argument("--since", metavar="AGE", help="only entries created within AGE: 2d, 12h")
    add("info", cmd_info, "show one entry").add_argument("key", metavar="KEY")
    add("rm", cmd_rm, "remove entries").add_argument("keys", nargs="+", metavar="KEY")
    add("clear", cmd_clear, "remove every entry of a function").add_argument(
        "function", metavar="FUNCTION")
    add("locks", cmd_locks, "list the locks, fresh and stale")
    unlock = add("unlock", cmd_unlock, "break a stale lock (a fresh one with --force)")
    unlock.add_argument("lock", metavar="LOCK")
    unlock.add_argument("--force", action="store_true", help="break it even if fresh")
    gc = add("gc", cmd_gc, "remove leftovers of interrupted stores; evict least recently "
              "used entries past a size or age")
    gc.add_argument("function", nargs="?", metavar="FUNCTION")
    gc.add_argument("--max-size", metavar="SIZE", type=_size_arg,
                    help="e.g. 10GB, 500MB, 1.5GiB (a unit is required)")
    gc.add_argument("--older-than", metavar="AGE", type=_age_arg,
                    help="unused for longer: 30d, 12h, 90m (a unit is required)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would go")
    stats = add("stats", cmd_stats, "totals for the whole storage")
    for command in (gc, stats):
        command.add_argument("--orphan-age", metavar="AGE", type=_age_arg, default="1h",
                             help="leftovers of interrupted stores idle this long are "
                                  "orphans (default 1h)")
    add("demo", cmd_demo, "run the two-minute demo against this storage")
    keygen = add("keygen", cmd_keygen, "make a signing key pair: NAME.key (private, mode 0600) "
                 "and NAME.pub (one line for the trusted keys file)")
    keygen.add_argument("name", metavar="NAME", help="the signer's name, e.g. alice")
    keygen.add_argument("--out", metavar="DIR", required=True,
                        help="folder for the two files (created if missing)")
    keygen.set_defaults(needs_storage=False)
    return parser


def _add_common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--storage", metavar="URL", default=default, help="storage URL "
                        "(default: LABCACHE_STORAGE, then the local cache folder)")
    parser.add_argument("--json", action="store_true", default=default or False,
                        help="print JSON instead of text")


def _count_arg(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative; give 0 or more")
    return number


def _size_arg(text: str) -> int:
    try:
        return parse_size(text, require_unit=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _age_arg(text: str) -> float:
    try:
        return parse_age(text, require_unit=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 done, 1 nothing matched, 2 error).

    Examples:
        >>> main(["gc", "train", "--storage", "file:///tmp/labcache-cli-doctest-empty"])
        2
    """
    url = None
    try:
        args = build_parser().parse_args(argv)
        url = args.storage
        storage = (_open(url, must_exist=args.command != "demo")
                   if getattr(args, "needs_storage", True) else None)
        data, text = args.handler(storage, args)
        if args.json:
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        elif text is not None:
            if args.command in ("ls", "locks", "gc") and storage is not None:
                print(f"storage: {_where(storage, args)}")
            print(text)
        return 0
    except CliError as exc:
        return _fail(scrub(str(exc), _password_of(url)), exc.code)
    except (LabcacheError, ValueError, OSError, ImportError) as exc:
        if isinstance(exc, BrokenPipeError):  # `labcache ls | head`: not an error
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        # A ValueError is a message written for the user (a bad URL, option or
        # name); other errors keep their type, which says what kind of failure.
        said = str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"
        return _fail(scrub(" ".join(said.split()), _password_of(url)), 2)
    except KeyboardInterrupt:
        return 130


def _password_of(url: str | None) -> list[str]:
    """The password in ``url`` (if any), to scrub from error text."""
    try:
        password = urlsplit(url).password if url else None
    except ValueError:
        return []
    return [password] if password else []


def _fail(message: str, code: int) -> int:
    print(f"labcache: error: {message}", file=sys.stderr)
    return code

