"""labcache from a dask cluster: many tasks, one computation, one result.

A LocalCluster of worker *processes* shares a Redis storage, the way a real
cluster's workers on several machines would.
"""

from __future__ import annotations

import os

import pytest

from tests import _dask_work

distributed = pytest.importorskip("distributed")


def test_many_dask_tasks_compute_once(redis_server, tmp_path):
    log_dir = tmp_path / "computations"
    log_dir.mkdir()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=4, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        futures = [client.submit(_dask_work.cached_simulate, redis_server.url, 7,
                                 str(log_dir), pure=False) for _ in range(16)]
        results = client.gather(futures)
        pids = set(client.run(os.getpid).values())
    assert results == [49] * 16
    assert len(pids) == 2  # really two worker processes
    assert len(os.listdir(log_dir)) == 1
