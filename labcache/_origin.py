"""Where code comes from: the user's (walked) or a library's (named), and names.

User-written code is defined in ``__main__`` (a script, a notebook), in
``__mp_main__`` (the same script in a spawned worker), or in a module whose
file is outside the standard library and ``site-packages``.  Anything else
is a library, referred to by module and qualified name.
"""

from __future__ import annotations

import functools
import os
import sys

__all__ = ["display_name", "is_user_module", "module_name", "package_version"]

_MAIN_NAMES = ("__main__", "__mp_main__")


@functools.cache
def _library_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if user_site:
        roots.add(user_site)
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


@functools.lru_cache(maxsize=4096)
def _is_user_module_cached(name: str, file: str | None) -> bool:
    if name == "labcache" or name.startswith("labcache."):
        return False  # labcache itself is a library, even installed editable
    if file is None:
        return False  # built into the interpreter
    real = os.path.realpath(file)
    return not real.startswith(_library_roots())


def is_user_module(name: str | None) -> bool:
    """Whether code of module ``name`` is the user's (walked) or a library's.

    Examples:
        >>> is_user_module("__main__"), is_user_module("json"), is_user_module("sys")
        (True, False, False)
    """
    if not name or name in _MAIN_NAMES:
        return True
    module = sys.modules.get(name)
    if module is None:  # made by exec() under a made-up name: treat as the user's
        return True
    file = getattr(module, "__file__", None)
    return _is_user_module_cached(name, file if isinstance(file, str) else None)


def module_name(obj: object) -> str:
    """The module an object was defined in; ``__mp_main__`` counts as ``__main__``."""
    name = getattr(obj, "__module__", None)
    name = name if isinstance(name, str) else ""
    return "__main__" if name == "__mp_main__" else name


def display_name(obj: object) -> str:
    """``qualname`` for the user's ``__main__``, ``module.qualname`` otherwise."""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    module = module_name(obj)
    return str(qualname) if module in ("", "__main__") else f"{module}.{qualname}"


def package_version(package: str) -> str:
    """The installed version of distribution ``package`` (for ``packages=``)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
