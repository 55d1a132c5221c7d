"""labcache on a dask cluster of worker processes: many tasks, one computation.

One ``LocalCluster(processes=True)`` serves the whole module (starting one
takes seconds).  Its workers run: a cached function imported by name sharing
a Redis storage; a script's ``__main__`` cached function (by value); and a
notebook's cached function from a real Jupyter kernel, also on joblib's loky
workers.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import dask_work
from tests.support.jupyter import Kernel, isolate_jupyter
from tests.support.scripts import check_report, run_script
from tests.support.services_redis import require

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes, one thread each, for every test of this module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", host="127.0.0.1") as running:
        yield running


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as connected:
        yield connected


def test_many_dask_tasks_compute_once(client, redis_server, tmp_path):
    log_dir = tmp_path / "computations"
    log_dir.mkdir()
    futures = [client.submit(dask_work.cached_simulate, redis_server.url, 7,
                             str(log_dir), pure=False) for _ in range(16)]
    results = client.gather(futures)
    pids = set(client.run(os.getpid).values())
    assert results == [49] * 16
    assert len(pids) == 2  # really two worker processes
    assert len(os.listdir(log_dir)) == 1


def test_main_function_on_dask_workers(cluster, tmp_path):
    check_report(*run_script(tmp_path, "dask", cluster.scheduler_address))


NOTEBOOK_CELLS = [
    """
import os, time, uuid
from labcache import LocalStorage, cached

MARKS = {marks!r}

@cached(storage=LocalStorage({store!r}))
def square(x):
    open(os.path.join(MARKS, f"{{x}}-{{os.getpid()}}-{{uuid.uuid4().hex}}"), "x").close()
    time.sleep(0.2)
    return x * x

def key_in_worker(function, x):
    return function.key(x), os.getpid()
""",
    """
from joblib import Parallel, delayed
loky = Parallel(n_jobs=2, backend="loky")(delayed(square)(x) for x in [1, 2, 1, 2])
loky_keys = Parallel(n_jobs=2, backend="loky")(delayed(key_in_worker)(square, x) for x in [1])
""",
    """
from distributed import Client
with Client({scheduler!r}) as client:
    on_dask = client.gather(client.map(square, [3, 4, 3, 4], pure=False)
                            + [client.submit(square, 1, pure=False)])
    dask_keys = client.gather([client.submit(key_in_worker, square, 3, pure=False)])
""",
    """
import json
print(json.dumps({{"loky": loky, "dask": on_dask, "pid": os.getpid(),
                  "caller_keys": [square.key(1), square.key(3)],
                  "worker_keys": loky_keys + dask_keys,
                  "hits": [square(x) for x in (1, 2, 3, 4)]}}))
""",
]


def test_notebook_function_on_loky_and_dask_workers(cluster, tmp_path, monkeypatch):
    require("ipykernel", "jupyter_client", "joblib")
    env = isolate_jupyter(tmp_path, monkeypatch)
    marks = tmp_path / "marks"
    marks.mkdir()
    fill = dict(marks=str(marks), store=str(tmp_path / "store"),
                scheduler=cluster.scheduler_address)
    kernel = Kernel(env, cwd=tmp_path)
    try:
        for cell in NOTEBOOK_CELLS[:-1]:
            kernel.run(cell.format(**fill), timeout=90)
        printed = kernel.printed(NOTEBOOK_CELLS[-1].format(**fill))
    finally:
        kernel.close()
    report = json.loads(printed.strip().splitlines()[-1])
    assert report["loky"] == [1, 4, 1, 4] and report["dask"] == [9, 16, 9, 16, 1]
    assert report["hits"] == [1, 4, 9, 16]
    assert [key for key, _ in report["worker_keys"]] == report["caller_keys"]
    assert all(pid != report["pid"] for _, pid in report["worker_keys"])
    computed = Counter(name.split("-")[0] for name in os.listdir(marks))
    assert computed == {"1": 1, "2": 1, "3": 1, "4": 1}  # the kernel's own calls were hits


