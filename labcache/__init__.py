"""labcache: cache expensive results once for a whole team.

Decorate a function with :func:`cached`; the first call anywhere computes
and stores its result, later calls in any process, kernel or machine sharing
the storage load it, and concurrent calls compute it only once.

Examples:
    >>> import tempfile
    >>> from labcache import cached, LocalStorage
    >>> @cached(storage=LocalStorage(tempfile.mkdtemp()))
    ... def total(n):
    ...     return sum(range(n))
    >>> total(10)
    45
"""

from __future__ import annotations

from .cached import CachedFunction, cached
from .errors import (
    CacheWarning,
    CorruptEntryError,
    HolderFailedError,
    InvalidNameError,
    LabcacheError,
    LockTimeout,
    SignatureError,
    StorageError,
    UnhashableArgumentError,
    UnpicklableResultError,
)
from .keys import register_hasher
from .report import stats
from .storage import default_storage, open_storage
from .storage.local import LocalStorage

__version__ = "0.1.0"

# Backends with heavy clients are imported on first use, never by
# ``import labcache``: name -> (module, what to pip install for it).
_LAZY = {
    "RedisStorage": ("labcache.storage.redis", "labcache[redis]"),
    "S3Storage": ("labcache.storage.s3", "labcache[s3]"),
    "monitor": ("labcache.jupyter.widget", "labcache[jupyter]"),
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'labcache' has no attribute {name!r}")
    import importlib

    module_name, install = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"labcache.{name} needs {exc.name}; install it with: pip install '{install}'"
        ) from exc
    return getattr(module, name)


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext labcache``: registers the ``%%cache`` cell magic."""
    from .jupyter.magic import load_ipython_extension as load

    load(ipython)


__all__ = [
    "CacheWarning",
    "CachedFunction",
    "CorruptEntryError",
    "HolderFailedError",
    "InvalidNameError",
    "LabcacheError",
    "LocalStorage",
    "LockTimeout",
    "RedisStorage",
    "S3Storage",
    "SignatureError",
    "StorageError",
    "UnhashableArgumentError",
    "UnpicklableResultError",
    "cached",
    "default_storage",
    "load_ipython_extension",
    "monitor",
    "open_storage",
    "register_hasher",
    "stats",
]
