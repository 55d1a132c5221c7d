"""A script's ``__main__`` cached function on process pools (real processes).

``tests/_scale_script.py`` is copied into a temp folder and run as a script:
its ``@cached`` function cannot be imported by any worker, so it travels by
value.  For each pool: the workers compute each key once for the whole run,
key calls exactly as the caller does, and the caller's own later calls are
hits.  (dask and notebooks: ``tests/test_dask.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent


def run_script(tmp_path: Path, *args: str,
               timeout: float = 90) -> tuple[dict[str, Any], Counter[str]]:
    """Run the script with ``args``; its JSON output and computations per key."""
    script = tmp_path / "job.py"
    shutil.copy(HERE / "_scale_script.py", script)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(os.environ, MARKS=str(marks), STORE=str(tmp_path / "store"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report, Counter(name.split("-")[0] for name in os.listdir(marks))


def check_report(report: dict[str, Any], computed: Counter[str]) -> None:
    """The assertions every pool must pass."""
    assert report["values"] == [x * x for x in (1, 2, 3, 1, 2, 3, 1, 2)]
    assert computed == {"1": 1, "2": 1, "3": 1}  # once per key, caller's calls included
    assert report["hits_after"] == [True, True, True]
    worker_keys = [key for key, _ in report["worker_keys"]]
    assert worker_keys == report["caller_keys"]
    assert all(pid != report["pid"] for _, pid in report["worker_keys"])  # really in a worker


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_main_function_on_joblib_workers(tmp_path, backend):
    pytest.importorskip("joblib")
    check_report(*run_script(tmp_path, backend))


def test_main_function_on_a_spawn_process_pool(tmp_path):
    check_report(*run_script(tmp_path, "spawn"))


# -- in this process: what a pickled cached function carries -----------------------------

from labcache import LocalStorage, cached  # noqa: E402


@cached
def importable_square(x: int) -> int:
    return x * x


def test_an_importable_cached_function_pickles_by_reference():
    import pickle

    assert pickle.loads(pickle.dumps(importable_square)) is importable_square


def test_a_local_cached_function_pickles_by_value_with_its_options(tmp_path):
    import pickle

    import cloudpickle

    storage = LocalStorage(tmp_path / "store")

    @cached(storage=storage, ttl=123, ignore=("verbose",))
    def fact(n: int, verbose: bool = False) -> int:  # refers to itself
        return 1 if n < 2 else n * fact(n - 1)

    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(fact))
        assert copy is not fact
        assert copy.storage is storage and copy._options["ttl"] == 123
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
    import pickle

    bound = pickle.loads(pickle.dumps(Model(3).score))
    assert bound(2) == 6 and bound.key(2) == Model(3).score.key(2)
