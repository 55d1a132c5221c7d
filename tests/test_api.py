"""The public surface: names from DESIGN.md exist, import stays light."""

from __future__ import annotations

import subprocess
import sys

import labcache


def test_all_is_sorted_and_complete():
    assert labcache.__all__ == sorted(labcache.__all__)
    for name in labcache.__all__:
        assert hasattr(labcache, name), name


def test_design_names_exist():
    from labcache import LocalStorage, cached, open_storage  # noqa: F401
    from labcache.base import BaseLockingStorage, BaseSingleton, BaseStorage, LockInfo  # noqa: F401

    assert issubclass(LocalStorage, BaseLockingStorage)
    assert issubclass(BaseStorage, BaseSingleton)
    for method in ("key", "is_cached", "invalidate", "refresh", "clear"):
        assert callable(getattr(cached(lambda x: x), method))


def test_errors_share_a_root_and_builtin_bases():
    assert issubclass(labcache.LockTimeout, (labcache.LabcacheError, TimeoutError))
    assert issubclass(labcache.UnhashableArgumentError, TypeError)
    assert issubclass(labcache.InvalidNameError, ValueError)
    import pickle

    error = pickle.loads(pickle.dumps(labcache.LockTimeout("waited for bob")))
    assert isinstance(error, labcache.LockTimeout) and str(error) == "waited for bob"


def test_import_is_light():
    heavy = ["numpy", "pandas", "ipywidgets", "redis", "boto3", "IPython", "asyncio",
             "cloudpickle"]
    code = (
        "import sys, labcache\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
