"""A user's script: a cached function defined in ``__main__``, run on workers.

The tests copy this file into a temp folder and run it as a script, so
``work`` lives in ``__main__`` and no worker can import it by name: it must
travel by value.  ``python job.py BACKEND [SCHEDULER]`` prints one JSON line:

* ``values``: results of ``work(x)`` for ``XS``, computed on the workers;
* ``caller_keys`` / ``worker_keys``: ``work.key(x)`` in this process and in a
  worker (with the worker's pid);
* ``hits_after``: whether this process then finds every key cached.

Every computation leaves a file ``<x>-<pid>-<random>`` in ``$MARKS``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

from labcache import LocalStorage, cached

MARKS = os.environ["MARKS"]
XS = [1, 2, 3, 1, 2, 3, 1, 2]


@cached(storage=LocalStorage(os.environ["STORE"]))
def work(x):
    with open(os.path.join(MARKS, f"{x}-{os.getpid()}-{uuid.uuid4().hex}"), "x"):
        pass
    time.sleep(0.2)  # long enough that two workers ask for one key at once
    return x * x


def key_in_worker(function, x):
    return function.key(x), os.getpid()


def run_joblib(backend):
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=2, backend=backend)
    values = parallel(delayed(work)(x) for x in XS)
    keys = parallel(delayed(key_in_worker)(work, x) for x in (1, 2))
    return values, keys


def run_spawn_pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        values = list(pool.map(work, XS))
        keys = list(pool.map(key_in_worker, [work, work], [1, 2]))
    return values, keys


def run_dask(scheduler):
    from distributed import Client

    with Client(scheduler) as client:
        # map: one task per element (pure=False: repeats are real tasks);
        # submit: the same call sent on its own.
        futures = client.map(work, XS, pure=False)
        futures.append(client.submit(work, 3, pure=False))
        values = client.gather(futures)[: len(XS)]
        keys = client.gather([client.submit(key_in_worker, work, x, pure=False)
                              for x in (1, 2)])
    return values, keys


def main():
    backend = sys.argv[1]
    if backend == "spawn":
        values, keys = run_spawn_pool()
    elif backend == "dask":
        values, keys = run_dask(sys.argv[2])
    else:
        values, keys = run_joblib(backend)
    print(json.dumps({
        "pid": os.getpid(),
        "values": values,
        "caller_keys": [work.key(x) for x in (1, 2)],
        "worker_keys": [list(k) for k in keys],
        "hits_after": [work(x) == x * x for x in sorted(set(XS))],
    }))


if __name__ == "__main__":
    main()
