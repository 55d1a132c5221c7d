"""``@cached``: the decorator people put on expensive functions."""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from . import entry, keys
from .base import BaseStorage
from .errors import warn
from .explain import Explanation, entry_metadata, explain_call
from .locks import check_lock_times
from .names import context_for
from .protocol import Call, run_async, run_sync
from .report import reporter_for
from .transfer import MISS, load_entry, open_entry

if TYPE_CHECKING:
    import inspect

__all__ = ["CachedFunction", "cached"]

R = TypeVar("R")
_ON_STORAGE_ERROR = ("compute", "raise")
_CODE_CHANGES = ("recompute", "keep")
_OPTIONAL_SECONDS = ("heartbeat_interval", "expires_after", "stale_after")


class CachedFunction(Generic[R]):
    """A function whose results are cached; made by :func:`cached`.

    Calling it returns the cached result or computes it under the
    acquire-or-wait protocol.  Its helper methods take the same arguments as
    the function itself.

    Examples:
        >>> import tempfile
        >>> from labcache import LocalStorage
        >>> @cached(storage=LocalStorage(tempfile.mkdtemp()))
        ... def square(x):
        ...     return x * x
        >>> square(4), square.is_cached(4), square.is_cached(5)
        (16, True, False)
        >>> square.invalidate(4), square.is_cached(4)
        (True, False)
    """

    def __init__(
        self,
        func: Callable[..., R],
        *,
        storage: BaseStorage | str | None = None,
        ttl: float = 3600,
        heartbeat_interval: float | None = 30,
        wait_timeout: float = 7200,
        ignore: Iterable[str] = (),
        version: object = None,
        on_storage_error: str = "compute",
        expires_after: float | None = None,
        mmap_mode: str | None = None,
        max_size: str | int | None = None,
        packages: Iterable[str] = (),
        code_changes: str = "recompute",
        stale_after: float | None = None,
    ) -> None:
        _check_callable(func)
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        import inspect  # at decoration, not at `import labcache`

        self._signature = inspect.signature(func)
        # One parameter name alone is a name, not a sequence of letters.
        self._ignore = (ignore,) if isinstance(ignore, str) else tuple(ignore)
        parameters = self._signature.parameters.values()
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters) and not self._ignore
        self._plain_parameters = tuple(self._signature.parameters) if plain else None
        self._options: dict[str, Any] = dict(
            storage=storage, ttl=ttl, heartbeat_interval=heartbeat_interval,
            wait_timeout=wait_timeout, ignore=self._ignore, version=version,
            on_storage_error=on_storage_error, expires_after=expires_after,
            mmap_mode=mmap_mode, max_size=max_size, packages=packages,
            code_changes=code_changes, stale_after=stale_after,
        )
        _check_options(func, self._signature, self._options)
        # Spawned workers import a script as __mp_main__: the same module.
        module = "__main__" if func.__module__ == "__mp_main__" else func.__module__ or ""
        self.context = context_for(module, func.__qualname__)
        self._name = f"{module}.{func.__qualname__}"
        self._identity: keys.Identity | None = None
        self._changed: list[str] = []  # parts that changed at the last re-identification
        self._opened: BaseStorage | None = None
        self._is_async = inspect.iscoroutinefunction(func)
        if self._is_async:
            _mark_coroutine_function(self)

    # -- calling -------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        if self._is_async:
            call = self._prepare(args, kwargs)
            if self._options["max_size"] is not None:
                return _limited_async(self, call, args, kwargs)  # type: ignore[return-value]
            return run_async(call, self.__wrapped__, args, kwargs)  # type: ignore[return-value]
        arguments = self._bind(args, kwargs)
        identity = self._identity
        if identity is None or not identity.watch.unchanged():
            identity = self._function_identity()
        digests = keys.argument_digests(arguments)
        key = keys.key_from_digests(identity.digest, digests)
        options = self._options
        stale_after = options["stale_after"]
        on_stale = None if stale_after is None else \
            functools.partial(self._refresh_stale, args, kwargs, arguments, key)
        try:  # a hit goes no further: no protocol, no lock, no Call object
            found = load_entry(self.storage, key, self.context, self._name,
                               options["expires_after"], None, options["mmap_mode"],
                               stale_after, on_stale)
        except Exception:  # a storage problem: the protocol reports or works around it
            found, looked = MISS, False
        else:
            looked = True
        if found is not MISS:
            result: R = found
            return result
        call = self._prepare(args, kwargs, arguments=arguments, key=key, looked=looked,
                             digests=digests)
        result = run_sync(call, self.__wrapped__, args, kwargs)
        if call.computed and options["max_size"] is not None:
            _limit_size(self, call.key)
        return result

    def refresh(self, *args: Any, **kwargs: Any) -> R:
        """Recompute this call now and overwrite its entry (under the lock)."""
        call = self._prepare(args, kwargs, force=True)
        if self._is_async:
            return run_async(call, self.__wrapped__, args, kwargs)  # type: ignore[return-value]
        result: R = run_sync(call, self.__wrapped__, args, kwargs)
        if call.computed and self._options["max_size"] is not None:
            _limit_size(self, call.key)
        return result

    # -- helpers -------------------------------------------------------------------

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The hex key of this call: the same in every process and machine."""
        return keys.call_key(self._function_identity().digest, self._bind(args, kwargs))

    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        """Why this call hits or misses: ``.hit``, ``.changed`` and a readable ``str()``.

        A miss is compared with the nearest stored entry of this function and
        the parts of the key that differ are named (``"helper clean"``,
        ``"global SCALE"``, ``"argument df"``).  Nothing is computed.

        Examples:
            >>> import tempfile
            >>> from labcache import LocalStorage
            >>> @cached(storage=LocalStorage(tempfile.mkdtemp()))
            ... def double(x):
            ...     return 2 * x
            >>> double(3)
            6
            >>> double.explain(3).hit, double.explain(4).changed
            (True, ['argument x'])
        """
        return explain_call(self, args, kwargs)

    def is_cached(self, *args: Any, **kwargs: Any) -> bool:
        """Whether this call has a stored entry that has not expired."""
        key = self.key(*args, **kwargs)
        storage = self.storage
        if not storage.check_if_exists(key, self.context):
            return False
        expires_after = self._options["expires_after"]
        if expires_after is None:
            return True
        return not self._expired(storage, key, expires_after)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Remove this call's entry; True if there was one."""
        try:
            self.storage.delete_file(self.key(*args, **kwargs), self.context)
        except FileNotFoundError:
            return False
        return True

    def clear(self) -> int:
        """Remove every entry of this function (all versions of its source).

        Returns how many entries were removed.
        """
        storage, removed = self.storage, 0
        for name in storage.list_stored_files(self.context):
            with contextlib.suppress(FileNotFoundError):
                storage.delete_file(name, self.context)
                removed += 1
        return removed

    @property
    def storage(self) -> BaseStorage:
        """The storage this function's entries live in."""
        spec = self._options["storage"]
        if isinstance(spec, BaseStorage):
            return spec
        from .storage import default_storage, open_storage

        if spec is None:
            return default_storage()
        if self._opened is None:
            self._opened = open_storage(spec)
        return self._opened

    # -- Python plumbing -------------------------------------------------------------

    def __setstate__(self, state: tuple[Callable[..., R], dict[str, Any], bytes,
                                        dict[str, str]]) -> None:
        from ._watch import Watch

        func, options, digest, parts = state
        self.__init__(func, **options)  # type: ignore[misc]
        # The caller's identity, watching nothing: a worker keys every call
        # exactly as the caller did, whatever it can or cannot see of the code.
        self._identity = keys.Identity(digest, parts, Watch())

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _BoundCached(self, instance)

    def __repr__(self) -> str:
        return f"<cached {self._name}>"

    def __reduce__(self) -> Any:
        # Like the function it wraps: by reference when a worker can import
        # it, else by value (see _by_value).
        if _importable(self):
            return self.__wrapped__.__qualname__
        return _by_value(self)

    # -- internals ---------------------------------------------------------------------

    def _function_identity(self) -> keys.Identity:
        """The deep identity, recomputed only when a binding it read has changed."""
        known = self._identity
        if known is not None and known.watch.unchanged():
            return known
        options = self._options
        fresh = keys.code_identity(self.__wrapped__, options["version"], options["packages"],
                                   keep_across_edits=options["code_changes"] == "keep")
        if known is not None and fresh.digest != known.digest:
            self._changed = sorted(name for name in {*known.parts, *fresh.parts}
                                   if known.parts.get(name) != fresh.parts.get(name))
        self._identity = fresh
        return fresh

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        plain = self._plain_parameters
        if plain is not None and not kwargs and len(args) == len(plain):
            # Every parameter given by position: what Signature.bind would
            # return, at a tenth of its cost (this runs on every hit).
            return dict(zip(plain, args, strict=True))
        return keys.bind_arguments(self._signature, args, kwargs, self._ignore)

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any], force: bool = False,
                 arguments: dict[str, Any] | None = None, key: str | None = None,
                 looked: bool = False, digests: dict[str, str] | None = None) -> Call:
        identity = self._function_identity()
        if arguments is None or key is None or digests is None:
            arguments = self._bind(args, kwargs)
            digests = keys.argument_digests(arguments)
            key = keys.key_from_digests(identity.digest, digests)
        name, options = self._name, self._options
        parts = {**identity.parts, **{f"argument {n}": d for n, d in digests.items()}}
        reporter = reporter_for(name)
        if self._changed:  # cheap to know: this process saw the code change
            reporter.reason = f"{', '.join(self._changed)} changed"
            self._changed = []
        stale_after = options["stale_after"]
        return Call(
            storage=self.storage, context=self.context, key=key, function=name,
            ttl=options["ttl"], heartbeat_interval=options["heartbeat_interval"],
            wait_timeout=options["wait_timeout"], expires_after=options["expires_after"],
            on_storage_error=options["on_storage_error"],
            metadata=functools.partial(entry_metadata, name, key, arguments, parts),
            reporter=reporter, force=force, looked=looked,
            mmap_mode=options["mmap_mode"], stale_after=stale_after,
            on_stale=None if stale_after is None else
            functools.partial(self._refresh_stale, args, kwargs, arguments, key),
        )

    def _refresh_stale(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                       arguments: dict[str, Any], key: str) -> None:
        """A hit found an entry older than ``stale_after``: refresh it in the
        background if this caller wins the lock (see ``labcache._stale``)."""
        from ._stale import refresh_if_won

        call = self._prepare(args, kwargs, arguments=arguments, key=key)
        refresh_if_won(call, self.__wrapped__, args, kwargs, self._is_async)

    def _expired(self, storage: BaseStorage, key: str, expires_after: float) -> bool:
        import time

        try:
            with open_entry(storage, key, self.context) as source:
                if source is None:
                    return True
                created = entry.read_header(source).meta.get("created", 0.0)
        except (OSError, ValueError):
            return True
        return bool(time.time() - created > expires_after)


class _BoundCached:
    """A cached method bound to its instance (``obj.method``)."""

    def __init__(self, cached: CachedFunction[Any], instance: object) -> None:
        self._cached, self._instance = cached, instance
        self.__wrapped__ = cached.__wrapped__.__get__(instance)
        self.__doc__ = cached.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._cached(self._instance, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return self._cached.key(self._instance, *args, **kwargs)

    def is_cached(self, *args: Any, **kwargs: Any) -> bool:
        return self._cached.is_cached(self._instance, *args, **kwargs)

    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        return self._cached.explain(self._instance, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return self._cached.invalidate(self._instance, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self._cached.refresh(self._instance, *args, **kwargs)

    def clear(self) -> int:
        return self._cached.clear()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_BoundCached, (self._cached, self._instance))


@overload
def cached(func: Callable[..., R], /) -> CachedFunction[R]: ...


@overload
def cached(
    func: None = None, /, *, storage: BaseStorage | str | None = None, ttl: float = 3600,
    heartbeat_interval: float | None = 30, wait_timeout: float = 7200,
    ignore: Iterable[str] = (), version: object = None, on_storage_error: str = "compute",
    expires_after: float | None = None, mmap_mode: str | None = None,
    max_size: str | int | None = None, packages: Iterable[str] = (),
    code_changes: str = "recompute", stale_after: float | None = None,
) -> Callable[[Callable[..., R]], CachedFunction[R]]: ...


def cached(func: Callable[..., R] | None = None, /, **options: Any) -> Any:
    """Cache a function's results; one process computes, the others wait.

    Keyword Args:
        storage (BaseStorage | str | None): a storage instance or URL
            (``file:///…``); default ``LABCACHE_STORAGE`` or a folder in the
            user cache dir.
        ttl (float): seconds after which a lock without heartbeat counts as
            dead (default 3600).
        heartbeat_interval (float | None): seconds between heartbeats of a
            held lock (default 30; None turns them off); a holder that misses
            3 beats is taken over.
        wait_timeout (float): seconds to wait for another holder before
            ``LockTimeout`` (default 7200).
        ignore (tuple[str, ...]): parameter names left out of the key
            (``verbose``, ``n_jobs``).
        version (object): bump it to get new keys without editing the source.
        on_storage_error (str): ``"compute"`` (default: warn and compute
            uncached) or ``"raise"``.
        expires_after (float | None): entries older than this many seconds
            count as misses.
        stale_after (float | None): entries older than this many seconds are
            still returned at once, while the one caller that wins the lock
            recomputes and replaces them in a background thread (the others
            never wait); a failed refresh keeps the old entry and warns.  A
            process finishes its refreshes before it exits.
        mmap_mode (str | None): ``"r"`` (read-only) or ``"c"`` (copy on
            write) to memory-map array data of hits from a ``LocalStorage``
            instead of reading it, like ``joblib.Memory(mmap_mode=)``; other
            storages load normally.
        max_size (str | int | None): keep this function's entries under this
            size (``"5GB"``, ``"500 MB"``, ``"1.5GiB"`` or bytes): after a new
            entry is stored, the least recently used ones are evicted.
        packages (tuple[str, ...]): distributions whose installed versions
            are part of the key (``("pandas",)``): upgrading one recomputes.
        code_changes (str): ``"recompute"`` (default): editing the function or
            anything user-written it uses gives new keys.  ``"keep"``: keys
            are the function's name, ``version`` and arguments only, so
            entries survive edits; results of old code come back until you
            bump ``version`` or ``clear()`` (see docs/keys.md).

    Examples:
        >>> import tempfile
        >>> from labcache import LocalStorage
        >>> calls = []
        >>> @cached(storage=LocalStorage(tempfile.mkdtemp()), ignore=("verbose",))
        ... def slow_add(a, b=1, verbose=False):
        ...     calls.append(a)
        ...     return a + b
        >>> slow_add(1), slow_add(a=1, verbose=True), slow_add(1, b=1), len(calls)
        (2, 2, 2, 1)
    """
    if func is not None:
        return _decorate(func, options)
    return functools.partial(_decorate, options=options)


def _decorate(func: Any, options: dict[str, Any]) -> Any:
    """``CachedFunction(func)``; under a ``staticmethod`` or ``classmethod``
    (``@cached`` written above it), the cache goes inside and the method kind
    stays outside, so the class still binds it as written."""
    if isinstance(func, (staticmethod, classmethod)):
        return type(func)(CachedFunction(func.__func__, **options))
    return CachedFunction(func, **options)


def _check_callable(func: object) -> None:
    if isinstance(func, functools.partial):
        raise TypeError(
            "cached() needs a function, not a functools.partial: decorate the function "
            "itself and pass the fixed arguments when you call it (they are part of the key)")
    if not callable(func) or not hasattr(func, "__qualname__"):
        raise TypeError(f"cached() needs a function, not {type(func).__name__}")


def _check_options(func: Callable[..., Any], signature: inspect.Signature,
                   options: dict[str, Any]) -> None:
    unknown = [name for name in options["ignore"] if name not in signature.parameters]
    if unknown:
        raise ValueError(
            f"ignore={options['ignore']!r} names {unknown!r}, which "
            f"{func.__qualname__} has no parameter of; pass parameter names"
        )
    if options["code_changes"] not in _CODE_CHANGES:
        raise ValueError(f"code_changes must be one of {_CODE_CHANGES}, "
                         f"not {options['code_changes']!r}")
    if isinstance(options["packages"], str) or not all(
            isinstance(p, str) for p in options["packages"]):
        raise TypeError("packages must be a tuple of distribution names, e.g. ('pandas',)")
    options["packages"] = tuple(options["packages"])
    if options["on_storage_error"] not in _ON_STORAGE_ERROR:
        raise ValueError(f"on_storage_error must be one of {_ON_STORAGE_ERROR}, "
                         f"not {options['on_storage_error']!r}")
    for name in ("ttl", "wait_timeout", "heartbeat_interval", "expires_after", "stale_after"):
        _check_seconds(name, options[name], optional=name in _OPTIONAL_SECONDS)
    check_lock_times(options["ttl"], options["heartbeat_interval"])  # what a lock may carry
    if options["max_size"] is not None:  # bytes from now on: "5GB" is parsed once
        from .eviction import parse_size

        options["max_size"] = parse_size(options["max_size"])
    if options["mmap_mode"] not in (None, "r", "c"):
        raise ValueError(f"mmap_mode must be None, 'r' or 'c', not {options['mmap_mode']!r}")
    storage = options["storage"]
    if storage is not None and not isinstance(storage, (BaseStorage, str)):
        raise TypeError(f"storage must be a storage or a URL string, not {type(storage).__name__}")


def _check_seconds(name: str, value: object, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds{' or None' if optional else ''}, "
                        f"not {type(value).__name__} {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")


def _limit_size(function: CachedFunction[Any], key: str) -> None:
    """After a store: evict the function's least recently used entries past
    ``max_size`` (never the one just stored); a failure here only warns."""
    from .eviction import evict

    try:
        evict(function.storage, function.context, max_size=function._options["max_size"],
              keep=(key,))
    except Exception as exc:
        warn(f"{function._name}: could not keep the cache under max_size: {exc}")


async def _limited_async(function: CachedFunction[Any], call: Call, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
    import asyncio

    result = await run_async(call, function.__wrapped__, args, kwargs)
    if call.computed:
        await asyncio.to_thread(_limit_size, function, call.key)
    return result


def _lookup(module: object, qualname: str) -> object:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


#: Modules whose functions another process cannot import by name: a script
#: run as ``__main__``, a notebook, and ``__mp_main__`` in spawned workers.
_MAIN_MODULES = ("__main__", "__mp_main__")
_pickling = threading.local()


def _importable(function: CachedFunction[Any]) -> bool:
    """Whether ``module.qualname`` finds this very object in another process."""
    func = function.__wrapped__
    if func.__module__ in _MAIN_MODULES:
        return False
    module = sys.modules.get(func.__module__)
    return module is not None and _lookup(module, func.__qualname__) is function


def _by_value(function: CachedFunction[Any]) -> tuple[Any, ...]:
    """Pickle a cached function from ``__main__`` or a notebook by value.

    The wrapped function goes through cloudpickle (by value, as dask and
    joblib send plain functions), with the options and the storage the
    caller uses and the caller's function identity, so a worker computes the
    very keys the caller would, even where it cannot read the source (a
    notebook cell).  The cloudpickle bytes make this work under the standard
    pickle too (``ProcessPoolExecutor``, multiprocessing).  Inside those
    bytes, cached functions refer to each other directly, so recursion and
    mutual references pickle once.
    """
    options = dict(function._options, storage=function.storage)
    identity = function._function_identity()
    state = (function.__wrapped__, options, identity.digest, dict(identity.parts))
    if getattr(_pickling, "active", False):  # already inside the cloudpickle stream
        # Built from ``state`` only once the wrapped function is complete:
        # a function that refers to its own cached self is unpickled as a
        # bare function first and gets its defaults and names afterwards.
        return (_empty, (), state)
    import cloudpickle

    _pickling.active = True
    try:
        payload = cloudpickle.dumps(function, protocol=5)
    finally:
        _pickling.active = False
    return (_unpickle, (payload,))


def _unpickle(payload: bytes) -> Any:
    import pickle

    return pickle.loads(payload)


def _empty() -> CachedFunction[Any]:
    return CachedFunction.__new__(CachedFunction)


def _mark_coroutine_function(obj: object) -> None:
    """Make ``inspect``/``asyncio.iscoroutinefunction`` recognise ``obj``."""
    import inspect

    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
        inspect.markcoroutinefunction(obj)  # type: ignore[arg-type,unused-ignore]
    else:
        import asyncio.coroutines

        obj._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]

