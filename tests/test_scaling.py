"""A script's ``__main__`` cached function on process pools (real processes).

``tests/support/scale_script.py`` is copied into a temp folder and run as a script:
its ``@cached`` function cannot be imported by any worker, so it travels by
value.  For each pool: the workers compute each key once for the whole run,
key calls exactly as the caller does, and the caller's own later calls are
hits.  (dask and notebooks: ``tests/test_dask.py``.)
"""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from labcache import LocalStorage, cached
from tests.support.scripts import check_report, run_script


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_main_function_on_joblib_workers(tmp_path, backend):
    pytest.importorskip("joblib")
    check_report(*run_script(tmp_path, backend))


def test_main_function_on_a_spawn_process_pool(tmp_path):
    check_report(*run_script(tmp_path, "spawn"))


# -- in this process: what a pickled cached function carries -----------------------------


@cached
def importable_square(x: int) -> int:
    return x * x


def test_an_importable_cached_function_pickles_by_reference():
    assert pickle.loads(pickle.dumps(importable_square)) is importable_square


def test_a_local_cached_function_pickles_by_value_with_its_options(tmp_path):
    storage = LocalStorage(tmp_path / "store")

    @cached(storage=storage, ttl=123, ignore=("verbose",))
    def fact(n: int, verbose: bool = False) -> int:  # refers to itself
        return 1 if n < 2 else n * fact(n - 1)

    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(fact))
        assert copy is not fact
        assert copy.storage is storage and copy.options.ttl == 123
        assert copy.key(5, verbose=True) == fact.key(5)
        assert copy(5) == 120
    assert fact.is_cached(5) and fact.is_cached(4)  # the copies stored for the caller


class Model:
    def __init__(self, size: int) -> None:
        self.size = size

    def __dask_tokenize__(self) -> int:
        return self.size

    @cached
    def score(self, x: int) -> int:
        return self.size * x


def test_a_bound_cached_method_pickles():
    bound = pickle.loads(pickle.dumps(Model(3).score))
    assert bound(2) == 6 and bound.key(2) == Model(3).score.key(2)
