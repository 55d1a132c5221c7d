"""Validation of the names a storage turns into paths or keys.

A name comes from users (``break_lock("…")``), from function names and from
shared storage listings, so every storage method checks it before any I/O:
a name must never reach outside the storage root or collide with the
storage's own bookkeeping.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .errors import InvalidNameError

__all__ = ["MAX_NAME_BYTES", "check_context", "check_entry_context", "check_name",
           "context_for", "lock_name_for"]

#: The first part of a context that storages keep for their locks.
LOCKS_FOLDER = "locks"

# Most file systems cap one path component at 255 bytes; keep room for the
# suffixes a backend appends (".lock", ".<token>.claim", temp names).
MAX_NAME_BYTES = 180
MAX_CONTEXT_BYTES = 1024

#: A dotted part of a qualified name that ``context_for`` keeps as it is.
_PLAIN_PART = re.compile(r"[A-Za-z0-9_]+")
_UNSAFE_PART_CHARS = re.compile(r"[^A-Za-z0-9_]")
#: Parts Python puts in qualified names, and how contexts have always spelled them.
_PYTHON_PARTS = {f"<{word}>": f"_{word}_" for word in
                 ("locals", "lambda", "genexpr", "listcomp", "dictcomp", "setcomp", "module")}
#: A name part spelled like one of those must not take its context.
_ESCAPED_PARTS = frozenset(_PYTHON_PARTS.values())
#: Hex digits of the digest that makes an escaped part unique.
_DIGEST = 8
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

    A context may have several ``/``-separated parts, none of them empty or
    starting with ``.`` (``.`` and ``..``, and names the storages keep for
    their own files, such as S3's ``.used/`` use markers).

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
        if part.startswith("."):  # the storages' own files: temp files, S3's .used/ markers
            _fail(context, "context", "a part may not start with '.'")
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
    """The storage context (folder) that holds a function's entries: one
    safe path component, different for every qualified name.

    Each dotted part made only of ASCII letters, digits and ``_`` is kept as
    it is, and so are the parts Python writes itself (``<locals>`` becomes
    ``_locals_``, ``<lambda>`` ``_lambda_``): the contexts of plain names
    never change.  Any other part is made readable (accents dropped, other
    characters replaced by ``_``) and gets ``-`` and a digest of the part:
    ``計算`` and ``処理`` would otherwise both be ``__``.  Only such parts
    contain ``-``, so a plain name never meets an escaped one.  A context
    too long for a file name is cut and ends with a digest of the whole name.

    Examples:
        >>> context_for("__main__", "outer.<locals>.inner")
        '__main__.outer._locals_.inner'
        >>> context_for("team_mod", "café")
        'team_mod.cafe-850f7dc4'
    """
    raw = f"{module}.{qualname}" if module else qualname
    safe = ".".join(map(_context_part, raw.split(".")))
    if len(safe) > MAX_NAME_BYTES:  # all ASCII: characters are bytes
        safe = safe[: MAX_NAME_BYTES - _DIGEST - 1].rstrip(".") + "-" + _digest(raw)
    return safe


def _context_part(part: str) -> str:
    """One dotted part of a qualified name, as ``context_for`` writes it."""
    marker = _PYTHON_PARTS.get(part)
    if marker is not None:
        return marker
    if _PLAIN_PART.fullmatch(part) and part not in _ESCAPED_PARTS:
        return part
    folded = "".join(c for c in unicodedata.normalize("NFKD", part)
                     if not unicodedata.combining(c))
    return f"{_UNSAFE_PART_CHARS.sub('_', folded) or '_'}-{_digest(part)}"


def _digest(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate still digests
    return hashlib.sha256(data).hexdigest()[:_DIGEST]


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


def lock_name_for(context: str, key: str) -> str:
    """The lock that guards one key: readable in listings, short enough for
    any file system (the context is cut, the key never).

    Examples:
        >>> lock_name_for("team.train", "3fa2c1")
        'team.train.3fa2c1'
    """
    return f"{context[:140]}.{key}"
