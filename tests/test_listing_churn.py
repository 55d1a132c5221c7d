"""Listings under churn: what was there for the whole listing is always listed.

One real process stores and deletes entries and takes and releases locks in
a loop while the test lists many times; a set of permanent entries and one
lock held throughout must appear in every listing (issue 16: one file
vanishing between reading a folder and its details emptied the listing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from labcache._cli_find import find_lock
from labcache.eviction import evict

from .support import churn
from .support.procs import CTX, PATIENCE, collect, reaping

CONTEXT = "team.churned"
KEEP = {f"keep{i}" for i in range(6)}
HELD = "held-lock"
#: Listings per backend: many on Local (one takes microseconds, the gap is
#: narrow), fewer on the network backends (milliseconds each).
ROUNDS = {"LocalStorage": 300, "RedisStorage": 100, "S3Storage": 8}


@contextlib.contextmanager
def churning(storage: Any) -> Iterator[None]:
    """A churn process runs on ``storage`` for the block; it must end cleanly."""
    stop, running, report = CTX.Event(), CTX.Event(), CTX.Queue()
    with reaping() as start:
        worker = start(CTX.Process(target=churn.churn,
                                   args=(storage, CONTEXT, stop, running, report)))
        try:
            assert running.wait(PATIENCE), "the churn process never got going"
            yield
        finally:
            stop.set()
        [(tag, cycles, _)] = collect(report, 1)
        worker.join(PATIENCE)
    assert tag == "done" and cycles > churn.WARM_UP and worker.exitcode == 0


@pytest.fixture
def held(any_storage: Any) -> Iterator[Any]:
    """``any_storage`` with the permanent entries stored and the lock held."""
    for name in KEEP:
        any_storage.upload_file(b"kept" * 16, name, CONTEXT)
    assert any_storage.try_acquire_lock(HELD, ttl=3600)
    yield any_storage
    any_storage.release_lock(HELD)


def test_listings_keep_what_stays_while_others_churn(held: Any) -> None:
    storage = held
    with churning(storage):
        for _ in range(ROUNDS[type(storage).__name__]):
            assert set(storage.list_stored_files(CONTEXT)) >= KEEP
            assert {stat.name for stat in storage.describe_entries(CONTEXT)} >= KEEP
            assert CONTEXT in storage.list_contexts()
            assert HELD in {info.name for info in storage.list_locks()}
        # gc --dry-run and max_size both evict from this listing.
        would = evict(storage, CONTEXT, max_size=0, dry_run=True)
        assert {stat.name for _, stat in would.removed} >= KEEP
    assert set(storage.list_stored_files(CONTEXT)) == KEEP  # the churn cleaned up after itself


def test_cli_finds_a_held_lock_while_others_churn(held: Any) -> None:
    """`labcache unlock NAME` finds the lock by listing them all."""
    with churning(held):
        for _ in range(ROUNDS[type(held).__name__] // 2):
            assert find_lock(held, HELD).name == HELD
