"""The options of ``@cached``, declared, defaulted and checked in one place.

``CacheOptions`` is the only place an option of ``@cached`` (and of
``%%cache``) is written down: its name, its type, its default, its
documentation and its checks.  Everything else takes them from here:

* ``cached``'s keyword parameters, for type checkers and IDEs, are derived
  from ``CacheOptions`` (``cached.py`` types ``cached`` with the parameters of
  ``CacheOptions`` through a ``ParamSpec``), and for ``help()``, Jupyter's
  Shift-Tab and ``inspect.signature`` from ``inspect.signature(CacheOptions)``.
  Writing the parameters out in ``cached``'s signature would still need an
  ``@overload`` that repeats every one of them (type checkers read only the
  overloads), and that repeated copy is what drifted before; deriving them
  keeps one list whatever option is added later.
* ``CachedFunction`` keeps the validated, frozen options it was made with;
  the protocol reads them from the ``Call`` that carries them.
* ``%%cache`` builds its options through ``CacheOptions`` too, so a cell
  gets the same defaults and the same checks as a function.

Values are normalized once, when the options are made: one parameter name
given as a string becomes a one-name tuple, ``packages`` a tuple, and
``max_size`` a number of bytes.

Examples:
    >>> options = CacheOptions(ttl=60, ignore="verbose", max_size="5GB")
    >>> options.ttl, options.ignore, options.max_size, options.wait_timeout
    (60, ('verbose',), 5000000000, 7200)
    >>> CacheOptions(ttl=0)
    Traceback (most recent call last):
    ValueError: ttl must be a positive number of seconds, not 0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .base import BaseStorage
from .formatting import parse_size
from .lock_record import check_lock_times

if TYPE_CHECKING:
    import inspect

__all__ = ["CacheOptions"]

_ON_STORAGE_ERROR = ("compute", "raise")
_CODE_CHANGES = ("recompute", "keep")
_MMAP_MODES = (None, "r", "c")
#: Options in seconds, and whether None is allowed (turns the feature off).
_SECONDS = {"ttl": False, "wait_timeout": False, "heartbeat_interval": True,
            "expires_after": True, "stale_after": True}


@dataclass(frozen=True, kw_only=True)
class CacheOptions:
    """How ``@cached`` stores, locks and keys one function's results.

    Every field is a keyword argument of ``@cached`` with the same name and
    default.  Made once per decorated function and checked when made: a bad
    value raises ``TypeError`` or ``ValueError`` at decoration, not at the
    first call.

    Attributes:
        storage: a storage instance or URL (``file:///…``, ``redis://…``,
            ``s3://…``); None: ``LABCACHE_STORAGE`` or a folder in the user
            cache dir.  A URL is opened at the first call that needs it.
        ttl: seconds after which a lock without heartbeat counts as dead.
        heartbeat_interval: seconds between heartbeats of a held lock (None
            turns them off); a holder that misses 3 beats is taken over.
        wait_timeout: seconds to wait for another holder before
            ``LockTimeout``.
        ignore: parameter names left out of the key (``"verbose"`` or
            ``("verbose", "n_jobs")``).
        version: bump it to get new keys without editing the source.
        on_storage_error: ``"compute"`` (warn and compute uncached) or
            ``"raise"``.
        expires_after: entries older than this many seconds count as misses.
        stale_after: entries older than this many seconds are still returned
            at once, while the one caller that wins the lock recomputes and
            replaces them in a background thread (the others never wait); a
            failed refresh keeps the old entry and warns.  A process finishes
            its refreshes before it exits.
        mmap_mode: ``"r"`` (read-only) or ``"c"`` (copy on write) to
            memory-map array data of hits from a ``LocalStorage`` instead of
            reading it, like ``joblib.Memory(mmap_mode=)``; other storages
            load normally.
        max_size: keep this function's entries under this size (``"5GB"``,
            ``"500 MB"``, ``"1.5GiB"`` or bytes; bytes once made): after a
            new entry is stored, the least recently used ones are evicted.
        packages: distributions whose installed versions are part of the key
            (``("pandas",)``): upgrading one recomputes.
        code_changes: ``"recompute"``: editing the function or anything
            user-written it uses gives new keys.  ``"keep"``: keys are the
            function's name, ``version`` and arguments only, so entries
            survive edits; results of old code come back until you bump
            ``version`` or ``clear()`` (see docs/keys.md).

    Examples:
        >>> CacheOptions(packages=["pandas"], code_changes="keep").packages
        ('pandas',)
        >>> CacheOptions(mmap_mode="w")
        Traceback (most recent call last):
        ValueError: mmap_mode must be None, 'r' or 'c', not 'w'
    """

    storage: BaseStorage | str | None = None
    ttl: float = 3600
    heartbeat_interval: float | None = 30
    wait_timeout: float = 7200
    ignore: str | Iterable[str] = ()
    version: object = None
    on_storage_error: str = "compute"
    expires_after: float | None = None
    stale_after: float | None = None
    mmap_mode: str | None = None
    max_size: str | int | None = None
    packages: Iterable[str] = ()
    code_changes: str = "recompute"

    def __post_init__(self) -> None:
        # One parameter name alone is a name, not a sequence of letters.
        ignore = (self.ignore,) if isinstance(self.ignore, str) else tuple(self.ignore)
        object.__setattr__(self, "ignore", ignore)
        if self.code_changes not in _CODE_CHANGES:
            raise ValueError(f"code_changes must be one of {_CODE_CHANGES}, "
                             f"not {self.code_changes!r}")
        if isinstance(self.packages, str) or not all(isinstance(p, str) for p in self.packages):
            raise TypeError("packages must be a tuple of distribution names, e.g. ('pandas',)")
        object.__setattr__(self, "packages", tuple(self.packages))
        if self.on_storage_error not in _ON_STORAGE_ERROR:
            raise ValueError(f"on_storage_error must be one of {_ON_STORAGE_ERROR}, "
                             f"not {self.on_storage_error!r}")
        for name, optional in _SECONDS.items():
            _check_seconds(name, getattr(self, name), optional)
        check_lock_times(self.ttl, self.heartbeat_interval)  # what a lock record may carry
        if self.max_size is not None:  # bytes from now on: "5GB" is parsed once
            object.__setattr__(self, "max_size", parse_size(self.max_size))
        if self.mmap_mode not in _MMAP_MODES:
            raise ValueError(f"mmap_mode must be None, 'r' or 'c', not {self.mmap_mode!r}")
        if self.storage is not None and not isinstance(self.storage, (BaseStorage, str)):
            raise TypeError("storage must be a storage or a URL string, "
                            f"not {type(self.storage).__name__}")

    @classmethod
    def named(cls, keywords: Mapping[str, Any], caller: str = "cached()") -> CacheOptions:
        """Options from keyword arguments, an unknown name refused with the
        list of the known ones.

        Examples:
            >>> CacheOptions.named({"ttl": 5}).ttl
            5
            >>> CacheOptions.named({"tll": 5})
            Traceback (most recent call last):
            TypeError: cached() has no option 'tll'; its options are storage, ttl, ...
        """
        known = [f.name for f in fields(cls)]
        unknown = [name for name in keywords if name not in known]
        if unknown:
            raise TypeError(f"{caller} has no option {', '.join(map(repr, unknown))}; "
                            f"its options are {', '.join(known)}")
        return cls(**keywords)

    def check_parameters(self, signature: inspect.Signature, function: str) -> None:
        """Refuse ``ignore`` names that are not parameters of the function.

        Examples:
            >>> import inspect
            >>> CacheOptions(ignore="xy").check_parameters(
            ...     inspect.signature(lambda x, y: x), "g")
            Traceback (most recent call last):
            ValueError: ignore=('xy',) names ['xy'], which g has no parameter of; pass ...
        """
        unknown = [name for name in self.ignore if name not in signature.parameters]
        if unknown:
            raise ValueError(f"ignore={self.ignore!r} names {unknown!r}, which {function} "
                             "has no parameter of; pass parameter names")

    def open_storage(self) -> BaseStorage:
        """The storage these options name: the instance given, the URL
        opened, or ``default_storage()``.

        Examples:
            >>> CacheOptions(storage="file:///tmp/labcache-doc").open_storage()
            LocalStorage('/tmp/labcache-doc')
        """
        if isinstance(self.storage, BaseStorage):
            return self.storage
        from .storage import default_storage, open_storage

        return default_storage() if self.storage is None else open_storage(self.storage)


def _check_seconds(name: str, value: object, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds{' or None' if optional else ''}, "
                        f"not {type(value).__name__} {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
