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
from .protocol import CacheWarning
from .report import stats
from .storage import default_storage, open_storage
from .storage.local import LocalStorage

__version__ = "0.1.0"

__all__ = [
    "CacheWarning",
    "CachedFunction",
    "CorruptEntryError",
    "HolderFailedError",
    "InvalidNameError",
    "LabcacheError",
    "LocalStorage",
    "LockTimeout",
    "SignatureError",
    "StorageError",
    "UnhashableArgumentError",
    "UnpicklableResultError",
    "cached",
    "default_storage",
    "open_storage",
    "stats",
]
