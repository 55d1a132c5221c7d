"""The caching libraries we measure, each wrapped the same way.

``wrap(name, body, folder)`` returns ``(cached_body, clear)`` for one
library, with its cache in its own folder.  Bodies must be module-level
functions so that every library (and every spawned process) can find them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

LABCACHE = "labcache"
JOBLIB = "joblib.Memory"
DISKCACHE = "diskcache.memoize"
STAMPEDE = "diskcache.memoize_stampede"
CACHIER = "cachier"
ALL = (LABCACHE, JOBLIB, DISKCACHE, STAMPEDE, CACHIER)


def wrap(name: str, body: Callable[..., Any], folder: Path,
         **labcache_options: Any) -> tuple[Callable[..., Any], Callable[[], None]]:
    """(the cached body, a function that empties its cache)."""
    folder = Path(folder) / name.replace(".", "-")
    if name == LABCACHE:
        from labcache import LocalStorage, cached

        fn = cached(storage=LocalStorage(folder), **labcache_options)(body)
        return fn, fn.clear
    if name == JOBLIB:
        import joblib

        memory = joblib.Memory(folder, verbose=0)
        wrapped = memory.cache(body)
        return wrapped, lambda: wrapped.clear(warn=False)
    if name in (DISKCACHE, STAMPEDE):
        import diskcache

        cache = diskcache.Cache(str(folder))
        if name == DISKCACHE:
            return cache.memoize()(body), cache.clear
        return diskcache.memoize_stampede(cache, expire=3600)(body), cache.clear
    if name == CACHIER:
        from cachier import cachier

        wrapped = cachier(cache_dir=str(folder))(body)
        return wrapped, wrapped.clear_cache
    raise ValueError(f"unknown contender {name!r}")
