"""labcache storages as the storage of LabChain's caching filters.

LabChain (``framework3``) installs light, but ``import labchain`` needs
torch, scikit-learn, scipy and pandas, so these tests check the adapter
against what LabChain's filters do with a storage (tests/support/labchain_flow.py
replays ``CachedWithLocking.fit``), in real processes.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle

import pytest

from labcache import InvalidNameError, LocalStorage, SignatureError, entry
from labcache.labchain import LabChainStorage
from tests.support import labchain_flow
from tests.support.procs import reaping


@pytest.fixture
def chain(tmp_path):
    return LabChainStorage(LocalStorage(tmp_path / "store"))


def test_objects_in_objects_out(chain):
    context = chain.get_root_path() + "Scaler/3fa2"
    model = labchain_flow.Model([1.0])
    assert chain.upload_file(model, "model", context) == "model"
    assert chain.download_file("model", context).weights == [1.0]
    chain.upload_file(pickle.dumps([1, 2]), "data", context)  # what the filters store
    assert chain.download_file("data", context) == [1, 2]
    assert chain.check_if_exists("model", context)
    assert sorted(chain.list_stored_files(context)) == ["data", "model"]
    chain.delete_file("data", context)
    assert not chain.check_if_exists("data", context)


def test_entries_are_labcache_entries_in_the_wrapped_storage(tmp_path, monkeypatch):
    inner = LocalStorage(tmp_path / "store")
    chain = LabChainStorage(inner)
    chain.upload_file({"a": 1}, "model", "labchain/M/1")
    raw = inner.download_file("model", "labchain/M/1")
    assert isinstance(raw, bytes) and raw[:4] == entry.MAGIC  # bytes in the storage
    monkeypatch.setenv("LABCACHE_SECRET", "team")
    with pytest.raises(SignatureError):  # signed teams refuse unsigned objects
        chain.download_file("model", "labchain/M/1")


@pytest.mark.parametrize("context, expected", [
    ("labchain/Model/3fa2", "labchain/Model/3fa2"),
    ("labchain//tmp", "labchain/tmp"),  # XYData's default path "/tmp"
    ("labchain/", "labchain/_root_"),
])
def test_contexts_are_translated(chain, context, expected):
    assert chain.context_of(context) == expected


@pytest.mark.parametrize("context", ["Model/3fa2", "/etc/labchain/x", "labchain/../x",
                                     "labchain/a/./b", "cache/Model"])
def test_contexts_outside_the_root_are_refused(chain, context):
    with pytest.raises(InvalidNameError):
        chain.upload_file(1, "model", context)


def test_locks_are_the_wrapped_storages(chain):
    assert chain.try_acquire_lock("model_3fa2", ttl=60, heartbeat_interval=5)
    assert chain.storage.lock_info("model_3fa2") is not None
    assert chain._is_locked("model_3fa2") and chain.update_heartbeat("model_3fa2")
    chain.release_lock("model_3fa2")
    assert chain.list_locks() == [] and not chain.update_heartbeat("model_3fa2")


def test_the_adapter_pickles_as_its_configuration(chain):
    copy = pickle.loads(pickle.dumps(chain))
    assert copy is chain  # one instance per configuration, as every storage
    assert LabChainStorage(chain.storage, "other") is not chain


def test_a_storage_without_locks_is_refused(tmp_path):
    with pytest.raises(TypeError, match="with locks"):
        LabChainStorage(object())  # type: ignore[arg-type]


def test_two_labchain_processes_train_once(tmp_path):
    log_dir = tmp_path / "trainings"
    log_dir.mkdir()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    with reaping() as started:
        for _ in range(2):
            started(context.Process(target=labchain_flow.worker,
                                    args=(str(tmp_path / "store"), str(log_dir), barrier,
                                          results)))
        weights = [results.get(timeout=60) for _ in range(2)]
    assert weights == [[0.5, 1.5]] * 2
    assert len(os.listdir(log_dir)) == 1
    assert LocalStorage(tmp_path / "store").list_locks() == []
