"""Every error labcache raises, under one root.

Each error also subclasses the builtin a caller would naturally catch, so
``except TimeoutError`` keeps working around a cached call::

    LabcacheError(Exception)
    ├── LockTimeout(TimeoutError)           waited ``wait_timeout`` for a holder
    ├── UnhashableArgumentError(TypeError)  an argument has no stable hash
    ├── UnpicklableResultError(TypeError)   the result cannot be serialized
    ├── InvalidNameError(ValueError)        a context, file or lock name is unsafe
    ├── KeyFileError(ValueError)            a signing key or trusted keys file is unusable
    ├── CorruptEntryError(ValueError)       an entry failed its checksum or parse
    │   └── SignatureError                  an entry is unsigned or badly signed
    ├── StorageError(OSError)               the storage could not be reached or written
    └── HolderFailedError(RuntimeError)     the holder failed with an exception
                                            that could not be shipped as itself

    CacheWarning(UserWarning)               a cache problem worked around; the
                                            call still returned a right result

All of them pickle, so they cross process boundaries (multiprocessing, dask).
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = [
    "CacheWarning",
    "CorruptEntryError",
    "HolderFailedError",
    "InvalidNameError",
    "KeyFileError",
    "LabcacheError",
    "LockTimeout",
    "SignatureError",
    "StorageError",
    "UnhashableArgumentError",
    "UnpicklableResultError",
    "warn",
]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class CacheWarning(UserWarning):
    """A cache problem that labcache worked around (a bad entry, a storage
    outage); the call still returned a correct result.

    Examples:
        >>> issubclass(CacheWarning, UserWarning)
        True
    """


def warn(message: str, category: type[Warning] = CacheWarning) -> None:
    """Warn at the user's line: the first caller outside labcache, so the
    warning names the notebook cell or script line that made the call.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn("entry unusable")
        >>> caught[0].category.__name__
        'CacheWarning'
    """
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


class LabcacheError(Exception):
    """Root of every labcache error.

    Examples:
        >>> issubclass(LockTimeout, LabcacheError)
        True
    """

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # Subclasses take the message as their only argument, so rebuilding
        # from ``args`` is enough to cross a process boundary.
        return (type(self), self.args)


class LockTimeout(LabcacheError, TimeoutError):
    """A call waited longer than ``wait_timeout`` for another holder.

    Examples:
        >>> raise LockTimeout("gave up after 5 s waiting for bob@gpu-1 pid 42")
        Traceback (most recent call last):
        labcache.errors.LockTimeout: gave up after 5 s waiting for bob@gpu-1 pid 42
    """


class UnhashableArgumentError(LabcacheError, TypeError):
    """An argument of a cached call cannot be turned into a stable key.

    Examples:
        >>> issubclass(UnhashableArgumentError, TypeError)
        True
    """


class UnpicklableResultError(LabcacheError, TypeError):
    """The value a cached function returned cannot be serialized.

    Examples:
        >>> issubclass(UnpicklableResultError, TypeError)
        True
    """


class InvalidNameError(LabcacheError, ValueError):
    """A context, file or lock name would be unsafe on a storage.

    Examples:
        >>> issubclass(InvalidNameError, ValueError)
        True
    """


class CorruptEntryError(LabcacheError, ValueError):
    """A stored entry is truncated, altered or cannot be read back.

    Examples:
        >>> issubclass(CorruptEntryError, ValueError)
        True
    """


class SignatureError(CorruptEntryError):
    """An entry is unsigned, badly signed or signed by someone not trusted,
    and ``LABCACHE_SECRET`` or ``LABCACHE_TRUSTED_KEYS`` asks for signatures.

    Examples:
        >>> issubclass(SignatureError, CorruptEntryError)
        True
    """


class KeyFileError(LabcacheError, ValueError):
    """A signing key or trusted keys file is missing, malformed or too open.

    The message names the file and never quotes its content.

    Examples:
        >>> issubclass(KeyFileError, ValueError)
        True
    """


class StorageError(LabcacheError, OSError):
    """The storage could not be reached, read or written.

    Examples:
        >>> issubclass(StorageError, OSError)
        True
    """


class HolderFailedError(LabcacheError, RuntimeError):
    """The holder of a lock failed with an exception that could not be shared.

    Raised in waiting callers when the holder's own exception would not
    pickle; the message carries its type and text.

    Examples:
        >>> issubclass(HolderFailedError, RuntimeError)
        True
    """
