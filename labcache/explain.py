"""Why a call hits or misses (``f.explain(*args, **kwargs)``), and what
entries record so that it can tell.

Every entry records the parts of its key in its metadata (``"code"``,
``"helper features.scale"``, ``"global SCALE"``, ``"class Model"``,
``"argument df"``, each with its digest).  Explaining a call compares its
parts with those of the nearest stored entry of the same function (the one
with the fewest differing parts, among the newest entries) and names what
differs.
"""

from __future__ import annotations

import os
import platform
import reprlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import keys
from .base import BaseStorage
from .lock_record import this_host, this_user
from .options import CacheOptions

__all__ = ["MAX_RECORDED_PARTS", "Explained", "Explanation", "call_parts", "entry_metadata",
           "explain_call", "recorded_parts"]

#: How many of a function's newest entries are read to find the nearest.
ENTRIES_READ = 50
_TRUNCATED = "\0truncated"
_summary = reprlib.Repr()
_summary.maxstring = _summary.maxother = 60
_KIND_ORDER = ("code", "version", "helper", "class", "global", "package", "argument")


class Explained(Protocol):
    """What explaining reads of a ``@cached`` function (a ``CachedFunction``).

    A protocol, not the class: ``@cached`` imports this module, and this
    module does not import it back.
    """

    context: str
    _name: str

    @property
    def options(self) -> CacheOptions:
        """The function's ``@cached`` options."""

    @property
    def storage(self) -> BaseStorage:
        """The storage its entries live in."""

    def _function_identity(self) -> keys.Identity: ...

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]: ...

    def _expired(self, storage: BaseStorage, key: str, expires_after: float) -> bool: ...


@dataclass(frozen=True)
class Explanation:
    """What ``explain`` found: a hit, or which parts of the key changed.

    ``changed`` names the parts that differ from the nearest stored entry
    (empty on a hit, or when nothing is stored); ``nearest`` is that
    entry's key.

    Examples:
        >>> e = Explanation("m.f", "ab12", hit=False, changed=["global SCALE"],
        ...                 nearest="cd34", compared=3)
        >>> print(e)
        m.f: miss. The nearest of 3 stored entries (cd34) differs in: global SCALE
    """

    function: str
    key: str
    hit: bool
    changed: list[str] = field(default_factory=list)
    nearest: str | None = None
    compared: int = 0
    note: str = ""

    def __str__(self) -> str:
        if self.hit:
            return f"{self.function}: hit (entry {self.key})"
        if self.note:
            return f"{self.function}: miss. {self.note}"
        if self.nearest is None:
            return f"{self.function}: miss. Nothing is stored for this function yet"
        what = ", ".join(self.changed) or "nothing recorded (an entry of another key format)"
        entries = "entry" if self.compared == 1 else f"of {self.compared} stored entries"
        return f"{self.function}: miss. The nearest {entries} ({self.nearest}) differs in: {what}"


def call_parts(function: Explained, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(key, parts) of one call: the identity's parts and each argument's digest."""
    identity = function._function_identity()
    digests = keys.argument_digests(function._bind(args, kwargs))
    key = keys.key_from_digests(identity.digest, digests)
    return key, {**identity.parts, **{f"argument {n}": d for n, d in digests.items()}}


def explain_call(function: Explained, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Explanation:
    """Compare this call with the stored entries of ``function``."""
    key, parts = call_parts(function, args, kwargs)
    storage, context, name = function.storage, function.context, function._name
    if storage.check_if_exists(key, context):
        expires_after = function.options.expires_after
        if expires_after is None or not function._expired(storage, key, expires_after):
            return Explanation(name, key, hit=True)
        return Explanation(name, key, hit=False, note=(
            f"Its entry ({key}) is older than expires_after={expires_after:g} s"))
    stored = _stored_parts(storage, context)
    if not stored:
        return Explanation(name, key, hit=False)
    recorded = {k: p for k, p in stored.items() if p is not None}
    if not recorded:
        return Explanation(name, key, hit=False, compared=len(stored), note=(
            f"{len(stored)} stored entries were made by an older labcache that did not "
            "record the parts of their keys"))
    nearest, changed = min(((k, _differences(parts, p)) for k, p in recorded.items()),
                           key=lambda pair: (len(pair[1]), pair[0]))
    return Explanation(name, key, hit=False, changed=changed, nearest=nearest,
                       compared=len(recorded))


#: Parts recorded per entry at most: headers are read through a 64 KiB window.
MAX_RECORDED_PARTS = 300


def recorded_parts(parts: dict[str, str]) -> dict[str, Any]:
    """The key's parts for the entry's metadata (what ``explain`` compares).

    Examples:
        >>> recorded_parts({"code": "ab", "argument x": "cd"})
        {'parts': {'code': 'ab', 'argument x': 'cd'}}
    """
    if len(parts) <= MAX_RECORDED_PARTS:
        return {"parts": parts}
    first = [n for n in parts if n == "code" or n.startswith("argument ")]
    rest = [n for n in parts if n not in first][:MAX_RECORDED_PARTS - len(first)]
    return {"parts": {n: parts[n] for n in first + rest}, "parts_truncated": True}


def entry_metadata(function: str, key: str, arguments: dict[str, Any],
                   parts: dict[str, str]) -> dict[str, Any]:
    """What an entry of ``@cached`` records: who made it, from which call, and
    the parts of its key (what ``explain`` compares)."""
    from . import __version__

    return {
        "function": function,
        "key": key,
        "arguments": {name: _describe(value) for name, value in arguments.items()},
        **recorded_parts(parts),
        "user": this_user(),
        "host": this_host(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "labcache": __version__,
    }


def _describe(value: object) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:  # arrays: never print the data
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={dtype})"
    try:
        return _summary.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _stored_parts(storage: BaseStorage, context: str) -> dict[str, dict[str, str] | None]:
    """key -> recorded parts (None if not recorded) of the newest entries."""
    from .listing import describe, entry_header  # loaded when asked: not by `import labcache`

    stats = describe(storage, context)
    stats.sort(key=lambda s: (s.modified or 0.0, s.name), reverse=True)
    found: dict[str, dict[str, str] | None] = {}
    for stat in stats[:ENTRIES_READ]:
        try:
            meta = entry_header(storage, stat.name, context).meta
        except Exception:  # removed meanwhile, damaged: not a candidate
            continue
        parts = meta.get("parts")
        if isinstance(parts, dict):
            recorded = {str(k): str(v) for k, v in parts.items()}
            if meta.get("parts_truncated"):  # only what was recorded can be compared
                recorded[_TRUNCATED] = ""
            found[stat.name] = recorded
        else:
            found[stat.name] = None
    return found


def _differences(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    compared = set(theirs) - {_TRUNCATED} if _TRUNCATED in theirs else {*ours, *theirs}
    names = {n for n in compared if ours.get(n) != theirs.get(n)}
    return sorted(names, key=_order)


def _order(name: str) -> tuple[int, str]:
    kind = name.split(" ", 1)[0]
    return (_KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER), name)
