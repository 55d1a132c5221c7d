"""Storage backends and the URL registry that opens them.

Backends are named by dotted path and imported only when a URL asks for
them, so ``import labcache`` stays light.  Third-party backends register a
callable ``opener(url) -> storage`` under the entry-point group
``labcache.storages``, named after their URL scheme::

    [project.entry-points."labcache.storages"]
    gcs = "mypackage.storage:open_gcs"
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .._redact import install_log_filter, redact_url
from ..base import BaseStorage

__all__ = ["default_storage", "known_schemes", "open_storage"]

Opener = Callable[[str], BaseStorage]

# scheme -> (dotted path of an opener taking the URL, what to install for it)
_BUILTIN: dict[str, tuple[str, str]] = {
    "file": ("labcache.storage:_open_file", "labcache"),
    "redis": ("labcache.storage.redis:RedisStorage", "labcache[redis]"),
    "rediss": ("labcache.storage.redis:RedisStorage", "labcache[redis]"),
    "s3": ("labcache.storage.s3:S3Storage", "labcache[s3]"),
}

_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

# Whatever reaches the labcache logger is scrubbed of credentials.
install_log_filter()

_defaults: dict[tuple[str | None, str | None], BaseStorage] = {}
_defaults_guard = threading.Lock()


def known_schemes() -> list[str]:
    """URL schemes ``open_storage`` understands (built in and registered).

    Examples:
        >>> "file" in known_schemes()
        True
    """
    return sorted(set(_BUILTIN) | set(_entry_points()))


def open_storage(url: str) -> BaseStorage:
    """Open the storage a URL names, e.g. ``file:///shared/team``.

    Raises ``ValueError`` for a malformed URL or an unknown scheme before
    touching any network.

    Examples:
        >>> open_storage("file:///tmp/labcache-doc")
        LocalStorage('/tmp/labcache-doc')
        >>> open_storage("/tmp/x")
        Traceback (most recent call last):
        ValueError: storage URL '/tmp/x' has no scheme; write it as scheme://..., ...
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(
            f"storage URL {redact_url(url)!r} has no scheme; write it as scheme://..., "
            f"with a scheme among: {', '.join(known_schemes())}{_folder_hint(url)}"
        )
    scheme = url.split("://", 1)[0].lower()
    return _opener(scheme, url)(url)


def _folder_hint(url: object) -> str:
    # A bare path is the commonest slip: show the URL that names that folder,
    # unless the text looks like it carries a credential or is no path at all.
    if not isinstance(url, str) or not url or ":" in url or "\0" in url or redact_url(url) != url:
        return ""
    try:
        return f" (for a folder: {Path(url).expanduser().absolute().as_uri()})"
    except (UnicodeError, RuntimeError, OSError):  # a lone surrogate, ~nosuchuser, no cwd
        return ""


def default_storage() -> BaseStorage:
    """``LABCACHE_STORAGE`` if set, else ``LocalStorage`` in the default folder.

    Examples:
        >>> type(default_storage()).__name__
        'LocalStorage'
    """
    config = (os.environ.get("LABCACHE_STORAGE") or None, os.environ.get("LABCACHE_DIR"))
    storage = _defaults.get(config)
    if storage is not None:
        return storage
    with _defaults_guard:
        if config[0]:
            storage = open_storage(config[0])
        else:
            from .local import LocalStorage

            storage = LocalStorage()
        _defaults[config] = storage
    return storage


def _opener(scheme: str, url: str) -> Opener:
    if scheme in _BUILTIN:
        target, install = _BUILTIN[scheme]
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(
                f"storage URL {redact_url(url)!r} needs an optional dependency ({exc.name}); "
                f"install it with: pip install '{install}'"
            ) from exc
        opener: Opener = getattr(module, attribute)
        return opener
    found = _entry_points().get(scheme)
    if found is None:
        raise ValueError(
            f"unknown storage scheme {redact_url(scheme)!r} in {redact_url(url)!r}; known schemes: "
            f"{', '.join(known_schemes())}"
        )
    loaded: Opener = found.load()
    return loaded


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="labcache.storages")}


def _open_file(url: str) -> BaseStorage:
    """``file:///path`` or ``file:///path?shared=1`` (group-writable, see LocalStorage)."""
    from .local import LocalStorage

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' in the host
        raise ValueError(f"file URL {redact_url(url)!r} is malformed ({exc}); use "
                         "file:///absolute/path") from None
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URL {redact_url(url)!r} names a host; use file:///absolute/path "
            "(mount a shared folder to reach another machine's files)"
        )
    path = unquote(parts.path)
    if not path or not path.startswith("/") or "\x00" in path or parts.fragment:
        raise ValueError(f"file URL {redact_url(url)!r} has no absolute path (or has a NUL "
                         "or a #fragment); use file:///absolute/path")
    return LocalStorage(path, shared=_shared_option(url, parts.query))


def _shared_option(url: str, query: str) -> bool:
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"shared"})
    values = options.get("shared", ["0"])
    if unknown or len(values) != 1 or values[0].lower() not in _FLAGS:
        raise ValueError(f"file URL {redact_url(url)!r}: the only option is shared=1 or "
                         "shared=0, e.g. file:///shared/team?shared=1")
    return _FLAGS[values[0].lower()]
