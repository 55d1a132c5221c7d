"""What LabChain's ``CachedWithLocking.fit`` does with its storage, step by step.

``import labchain`` needs torch, scikit-learn, scipy and pandas, too heavy
for these tests, so this replays the filter's calls on a storage (in this
module, importable by spawned processes): look, take the lock with a
heartbeat, look again, train, upload ``pickle.dumps(model)``, release; or
wait for the holder and download.
"""

from __future__ import annotations

import os
import pickle
import time
import uuid
from typing import Any

from labcache import LocalStorage
from labcache.labchain import LabChainStorage


class Model:
    """A trained filter: what the filters pickle into the storage."""

    def __init__(self, weights: list[float]) -> None:
        self.weights = weights


def fit_like_labchain(storage: Any, model_path: str, model_hash: str,
                      log_dir: str) -> Model:
    """The storage calls of ``CachedWithLocking.fit`` for one model."""
    context = f"{storage.get_root_path()}{model_path}"
    lock_name = f"model_{model_hash}"
    if storage.check_if_exists(hashcode="model", context=context):
        return storage.download_file("model", context)
    if storage.try_acquire_lock(lock_name, ttl=3600, heartbeat_interval=30):
        try:
            if storage.check_if_exists(hashcode="model", context=context):
                return storage.download_file("model", context)
            with open(os.path.join(log_dir, uuid.uuid4().hex), "x"):
                pass  # one file per training
            time.sleep(0.3)  # training takes a while: the other worker usually finds it locked
            model = Model([0.5, 1.5])
            storage.upload_file(file=pickle.dumps(model), file_name="model", context=context)
            return model
        finally:
            storage.release_lock(lock_name)
    if not storage.wait_for_unlock(lock_name, timeout=60, initial_poll_interval=0.05):
        raise TimeoutError(lock_name)
    return storage.download_file("model", context)


def worker(root: str, log_dir: str, barrier: Any, results: Any) -> None:
    """One process of a LabChain pipeline fitting the same model."""
    storage = LabChainStorage(LocalStorage(root))
    barrier.wait(60)
    model = fit_like_labchain(storage, "Model/3fa2", "3fa2", log_dir)
    results.put(model.weights)
