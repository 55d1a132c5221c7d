"""``@cached``: the decorator people put on expensive functions."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from . import keys
from .base import BaseStorage
from .call import Call
from .explain import Explanation, entry_metadata, explain_call
from .names import context_for
from .options import CacheOptions
from .protocol import run_async, run_sync
from .report import reporter_for
from .transfer import MISS, load_entry

__all__ = ["CachedFunction", "cached"]

R = TypeVar("R")
P = ParamSpec("P")


class CachedFunction(Generic[R]):
    """A function whose results are cached; made by :func:`cached`.

    Calling it returns the cached result or computes it under the
    acquire-or-wait protocol.  Its helper methods take the same arguments as
    the function itself; ``options`` are the validated
    [CacheOptions][labcache.options.CacheOptions] it was made with.

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

    def __init__(self, func: Callable[..., R], options: CacheOptions | None = None) -> None:
        _check_callable(func)
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        self._signature = inspect.signature(func)
        self._options = options = options or CacheOptions()
        options.check_parameters(self._signature, func.__qualname__)
        parameters = self._signature.parameters.values()
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters) and not options.ignore
        self._plain_parameters = tuple(self._signature.parameters) if plain else None
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
            return run_async(call, self.__wrapped__, args, kwargs)  # type: ignore[return-value]
        arguments = self._bind(args, kwargs)
        identity = self._identity
        if identity is None or not identity.watch.unchanged():
            identity = self._function_identity()
        digests = keys.argument_digests(arguments)
        key = keys.key_from_digests(identity.digest, digests)
        options = self._options
        stale_after = options.stale_after
        on_stale = None if stale_after is None else \
            functools.partial(self._refresh_stale, args, kwargs, arguments, key)
        try:  # a hit goes no further: no protocol, no lock, no Call object
            found = load_entry(self.storage, key, self.context, self._name,
                               options.expires_after, None, options.mmap_mode,
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
        computed: R = run_sync(call, self.__wrapped__, args, kwargs)
        return computed

    def refresh(self, *args: Any, **kwargs: Any) -> R:
        """Recompute this call now and overwrite its entry (under the lock)."""
        call = self._prepare(args, kwargs, force=True)
        if self._is_async:
            return run_async(call, self.__wrapped__, args, kwargs)  # type: ignore[return-value]
        result: R = run_sync(call, self.__wrapped__, args, kwargs)
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
        expires_after = self._options.expires_after
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
    def options(self) -> CacheOptions:
        """The validated options this function was decorated with."""
        return self._options

    @property
    def storage(self) -> BaseStorage:
        """The storage this function's entries live in."""
        spec = self._options.storage
        if isinstance(spec, BaseStorage):  # on every hit: the quick case first
            return spec
        if spec is None:
            return self._options.open_storage()  # the default storage of this moment
        if self._opened is None:  # a URL is opened once, at first use
            self._opened = self._options.open_storage()
        return self._opened

    # -- Python plumbing -------------------------------------------------------------

    def __setstate__(self, state: tuple[Callable[..., R], CacheOptions, bytes,
                                        dict[str, str]]) -> None:
        from ._watch import Watch

        func, options, digest, parts = state
        self.__init__(func, options)  # type: ignore[misc]
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
        fresh = keys.code_identity(self.__wrapped__, options.version, options.packages,
                                   keep_across_edits=options.code_changes == "keep")
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
        return keys.bind_arguments(self._signature, args, kwargs, self._options.ignore)

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
        stale_after = options.stale_after
        return Call(
            storage=self.storage, context=self.context, key=key, function=name,
            options=options, reporter=reporter, force=force, looked=looked,
            metadata=functools.partial(entry_metadata, name, key, arguments, parts),
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
        try:
            created = storage.read_entry_header(key, self.context).meta.get("created", 0.0)
        except (OSError, ValueError):  # gone, unreadable, damaged metadata
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


class _Cached(Protocol[P]):
    """What ``cached`` is to a type checker: ``@cached`` over a function, or
    ``@cached(**options)`` with the parameters ``P`` of ``CacheOptions``."""

    # The overlap mypy sees cannot happen: P holds keyword-only parameters,
    # so a function given by position only ever matches the first overload.
    @overload
    def __call__(self, func: Callable[..., R], /) -> CachedFunction[R]:  # type: ignore[overload-overlap]
        ...

    @overload
    def __call__(self, *args: P.args,
                 **options: P.kwargs) -> Callable[[Callable[..., R]], CachedFunction[R]]: ...


def _takes_options(
        options: Callable[P, CacheOptions]) -> Callable[[Callable[..., Any]], _Cached[P]]:
    """Give ``cached`` the keyword parameters of ``CacheOptions``, written once
    there: to type checkers through ``P``, at run time as ``__signature__``
    (``help()``, Jupyter's Shift-Tab).  See ``labcache.options`` for why."""

    def with_options(decorator: Callable[..., Any]) -> _Cached[P]:
        own = inspect.signature(decorator)
        parameters = [own.parameters["func"], *inspect.signature(options).parameters.values()]
        decorator.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        return decorator

    return with_options


@_takes_options(CacheOptions)
def cached(func: Callable[..., R] | None = None, /, **options: Any) -> Any:
    """Cache a function's results; one process computes, the others wait.

    Keyword Args:
        **options: the fields of [CacheOptions][labcache.options.CacheOptions]
            (``storage``, ``ttl``, ``ignore``, ``max_size``, ...), with their
            defaults and meanings there.  A bad value raises ``TypeError`` or
            ``ValueError`` here, not at the first call.

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
    settings = CacheOptions.named(options)
    if func is not None:
        return _decorate(func, settings)
    return functools.partial(_decorate, options=settings)


def _decorate(func: Any, options: CacheOptions) -> Any:
    """``CachedFunction(func)``; under a ``staticmethod`` or ``classmethod``
    (``@cached`` written above it), the cache goes inside and the method kind
    stays outside, so the class still binds it as written."""
    if isinstance(func, (staticmethod, classmethod)):
        return type(func)(CachedFunction(func.__func__, options))
    return CachedFunction(func, options)


def _check_callable(func: object) -> None:
    if isinstance(func, functools.partial):
        raise TypeError(
            "cached() needs a function, not a functools.partial: decorate the function "
            "itself and pass the fixed arguments when you call it (they are part of the key)")
    if not callable(func) or not hasattr(func, "__qualname__"):
        raise TypeError(f"cached() needs a function, not {type(func).__name__}")


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
    options = dataclasses.replace(function._options, storage=function.storage)
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
    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
        inspect.markcoroutinefunction(obj)  # type: ignore[arg-type,unused-ignore]
    else:
        import asyncio.coroutines

        obj._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]

