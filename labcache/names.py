"""Validation of the names a storage turns into paths or keys.

A name comes from users (``break_lock("…")``), from function names and from
shared storage listings, so every storage method checks it before any I/O:
a name must never reach outside the storage root or collide with the
storage's own bookkeeping.
"""

from __future__ import annotations

import re

from .errors import InvalidNameError

__all__ = ["MAX_NAME_BYTES", "check_context", "check_entry_context", "check_name",
           "context_for"]

#: The first part of a context that storages keep for their locks.
LOCKS_FOLDER = "locks"

# Most file systems cap one path component at 255 bytes; keep room for the
# suffixes a backend appends (".lock", ".<token>.claim", temp names).
MAX_NAME_BYTES = 180
MAX_CONTEXT_BYTES = 1024

_UNSAFE_CONTEXT_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
# C0 controls, DEL and C1 controls (Unicode category Cc).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a safe single path component, else raise.

    Examples:
        >>> check_name("abc123")
        'abc123'
        >>> check_name("../etc")
        Traceback (most recent call last):
        labcache.errors.InvalidNameError: invalid name '../etc': path separators are not ...
    """
    _check_common(name, what, MAX_NAME_BYTES)
    assert isinstance(name, str)
    if "/" in name or "\\" in name:
        _fail(name, what, "path separators are not allowed")
    if name.startswith("."):  # ".", ".." and the storages' own hidden files
        _fail(name, what, "names may not start with '.'")
    return name


def check_context(context: object) -> str:
    """Return ``context`` if it is a safe relative path, else raise.

    A context may have several ``/``-separated parts, none of them empty,
    ``.`` or ``..``.

    Examples:
        >>> check_context("project/model.fit")
        'project/model.fit'
        >>> check_context("/etc")
        Traceback (most recent call last):
        labcache.errors.InvalidNameError: invalid context '/etc': absolute paths are not ...
    """
    _check_common(context, "context", MAX_CONTEXT_BYTES)
    assert isinstance(context, str)
    if context.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", context):
        _fail(context, "context", "absolute paths are not allowed")
    for part in re.split(r"[/\\]", context):
        if part in ("", ".", ".."):
            _fail(context, "context", "empty, '.' and '..' parts are not allowed")
        if len(part.encode()) > MAX_NAME_BYTES:
            _fail(context, "context", f"a part is longer than {MAX_NAME_BYTES} bytes")
    return context


def check_entry_context(context: object) -> str:
    """``check_context``, and not the storages' own ``locks`` folder.

    Examples:
        >>> check_entry_context("locks/x")
        Traceback (most recent call last):
        labcache.errors.InvalidNameError: invalid context 'locks/x': 'locks' is reserved ...
    """
    check_context(context)
    assert isinstance(context, str)
    if re.split(r"[/\\]", context)[0] == LOCKS_FOLDER:
        raise InvalidNameError(f"invalid context {context!r}: '{LOCKS_FOLDER}' is reserved "
                               "for the storage's locks; choose another context")
    return context


def context_for(module: str, qualname: str) -> str:
    """The storage context (folder) that holds a function's entries.

    Characters that some file systems or object stores reject are replaced,
    and the result is a single safe path component.

    Examples:
        >>> context_for("__main__", "outer.<locals>.inner")
        '__main__.outer._locals_.inner'
    """
    raw = f"{module}.{qualname}"
    safe = _UNSAFE_CONTEXT_CHARS.sub("_", raw).strip(".") or "_"
    return safe[:MAX_NAME_BYTES]


def _check_common(name: object, what: str, limit: int) -> None:
    if not isinstance(name, str):
        raise InvalidNameError(f"invalid {what} {name!r}: must be a str, not {type(name).__name__}")
    if not name:
        _fail(name, what, "it is empty")
    if _CONTROL.search(name):  # NUL ends a C path; newlines break S3 keys and listings
        _fail(name, what, "NUL and other control characters are not allowed")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        _fail(name, what, "it is not valid Unicode (a lone surrogate)")
    if len(encoded) > limit:
        _fail(name, what, f"longer than {limit} bytes")


def _fail(name: str, what: str, why: str) -> None:
    shown = name if len(name) <= 80 else name[:77] + "..."
    raise InvalidNameError(
        f"invalid {what} {shown!r}: {why}; use letters, digits, '.', '_' or '-'"
    )
