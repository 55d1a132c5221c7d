"""Lock records that are not valid (wrong types, missing fields, absurd
numbers, not an object) behave exactly like unreadable ones, on every backend:
they are held until they are ``UNREADABLE_LOCK_TTL`` old, then stale; they
are listed with what is wrong; ``break_lock`` and ``labcache unlock --force``
remove them; nothing crashes.

Records are written by hand, as a stray tool or a person would: a file under
``root/locks/`` on Local, a plain ``SET`` (no expiry) on Redis, an object put
with a plain client on S3.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labcache import LocalStorage, LockTimeout, cached
from labcache.listing import lock_rows
from labcache.lock_record import LockRecord, this_user
from labcache.locks import UNREADABLE_LOCK_TTL
from labcache.names import lock_name_for

from .support.cli import one_error_line, run, run_json, target

#: A valid record of a holder on another host; the cases below spoil one thing.
GOOD = {"user": this_user(), "host": "elsewhere", "boot": "", "pid": 4242, "token": "t0k",
        "acquired": time.time(), "ttl": 3600.0, "heartbeat_interval": 30.0}
FIELDS = sorted(GOOD)
_DROP = object()


def changed(**fields: Any) -> bytes:
    """GOOD with some fields replaced (``_DROP``: removed), as JSON bytes."""
    record = {k: v for k, v in {**GOOD, **fields}.items() if v is not _DROP}
    return json.dumps(record).encode()


MALFORMED = {
    "ttl-text": changed(ttl="3600"),
    "beat-text": changed(heartbeat_interval="30"),
    "pid-text": changed(pid="4242"),
    "user-list": changed(user=[1]),
    "host-none": changed(host=None),
    "no-token": changed(token=_DROP),
    "no-acquired": changed(acquired=_DROP),
    "pid-bool": changed(pid=True),
    "ttl-bool": changed(ttl=False),
    "ttl-huge": changed(ttl=1e300),
    "pid-huge": changed(pid=10**30),
    "pid-zero": changed(pid=0),
    "acquired-nan": changed(acquired=float("nan")),
    "ttl-inf": changed(ttl=float("inf")),
    "beat-negative": changed(heartbeat_interval=-30),
    "acquired-negative": changed(acquired=-5.0),
    "a-list": b"[1, 2]",
    "a-number": b"3600",
    "not-json": b"\x00{not json",
    "not-utf8": b'{"user": "\xff"}',
    "empty": b"",
}


def plant(storage: Any, name: str, data: bytes) -> None:
    """Write a lock record by hand, bypassing labcache."""
    kind = type(storage).__name__
    if kind == "LocalStorage":
        path = Path(storage.root) / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif kind == "RedisStorage":
        storage.client.set(f"{storage.prefix}:locks/{name}.lock", data)  # no expiry at all
    else:
        from .support.services_s3 import raw_client

        raw_client().put_object(Bucket=storage.bucket, Key=f"{storage._base}locks/{name}.lock",
                                Body=data)


def later(storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Move the storage's clock past the unreadable bound (and a margin for S3's
    whole seconds): what an hour of waiting would do."""
    monkeypatch.setattr(storage, "storage_time", lambda: time.time() + UNREADABLE_LOCK_TTL + 60)


def _double(x: int) -> int:
    return 2 * x


def test_every_case_is_malformed_and_a_good_record_is_not() -> None:
    assert LockRecord.parse(changed()) == LockRecord(**GOOD)  # type: ignore[arg-type]
    for label, data in MALFORMED.items():
        assert LockRecord.parse(data) is None, label
        assert isinstance(LockRecord.read(data), str), label
    assert LockRecord.read(changed(ttl="3600")) == \
        "ttl '3600' is not a number of seconds in (0, 1e+10]"


def test_malformed_records_are_held_listed_then_stale_and_breakable(
        any_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for label, data in MALFORMED.items():
        plant(any_storage, label, data)
    listed = {info.name: info for info in any_storage.list_locks()}
    assert set(listed) == set(MALFORMED)
    for label in MALFORMED:
        info = any_storage.lock_info(label)
        assert info is not None and info.problem == listed[label].problem, label
        assert info.holder.startswith("unreadable record: "), label
        assert not info.stale and info.ttl == UNREADABLE_LOCK_TTL, label
        assert any_storage._is_locked(label), label
    assert not any_storage.try_acquire_lock("ttl-text", ttl=60)
    later(any_storage, monkeypatch)
    assert all(info.stale for info in any_storage.list_locks())
    assert not any_storage._is_locked("pid-text")
    assert any_storage.try_acquire_lock("ttl-text", ttl=60)  # taken over like any stale lock
    assert any_storage.lock_info("ttl-text").problem is None
    any_storage.release_lock("ttl-text")
    for label in set(MALFORMED) - {"ttl-text"}:
        assert any_storage.break_lock(label), label
    assert any_storage.list_locks() == []


def test_a_call_waits_on_a_malformed_record_until_its_bound_then_computes(
        any_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    double = cached(storage=any_storage, wait_timeout=0.5)(_double)
    name = lock_name_for(double.context, double.key(1))
    plant(any_storage, name, changed(ttl="3600", heartbeat_interval="30", pid="1"))
    with pytest.raises(LockTimeout, match="unreadable record"):
        double(1)  # a fresh unreadable record is held, like a live holder
    later(any_storage, monkeypatch)
    assert double(1) == 2
    assert double.is_cached(1) and any_storage.lock_info(name) is None


def test_redis_gives_a_malformed_record_without_expiry_the_bound(redis_storage: Any) -> None:
    plant(redis_storage, "forever", changed(pid="1"))
    key = "t:locks/forever.lock"
    assert redis_storage.client.pttl(key) == -1  # as written by hand: never expires
    assert redis_storage.lock_info("forever").problem == "pid '1' is not a process id"
    assert 0 < redis_storage.client.pttl(key) <= UNREADABLE_LOCK_TTL * 1000


def test_cli_lists_a_malformed_record_and_unlock_force_removes_it(any_storage: Any) -> None:
    store, url = target(any_storage)
    name = lock_name_for("tests.malformed.f", "ab12cd34ef56")
    plant(store, name, changed(ttl="3600", heartbeat_interval="30"))
    [lock] = run_json("locks", url=url)["locks"]
    assert (lock["name"], lock["state"]) == (name, "unreadable")
    assert lock["problem"] == "ttl '3600' is not a number of seconds in (0, 1e+10]"
    assert lock["holder"] == f"unreadable record: {lock['problem']}"
    assert "unreadable record" in run("locks", url=url).stdout
    assert run_json("stats", url=url)["unreadable_locks"] == 1
    refused = one_error_line(run("unlock", "ab12cd", url=url, check=2))
    assert "unreadable record" in refused and "--force" in refused
    assert store.lock_info(name) is not None
    assert run_json("unlock", name, "--force", url=url)["unlocked"] == name
    assert store.lock_info(name) is None


def test_cli_unlocks_an_old_malformed_record_without_force(storage: LocalStorage) -> None:
    name = lock_name_for("tests.malformed.f", "0123456789ab")
    plant(storage, name, b'{"pid": "twelve"}')
    old = time.time() - UNREADABLE_LOCK_TTL - 60
    os.utime(storage.root / "locks" / f"{name}.lock", (old, old))
    url = f"file://{storage.root}"
    assert run_json("locks", url=url)["locks"][0]["state"] == "stale"
    assert "(stale)" in run("unlock", name, url=url).stdout
    assert storage.lock_info(name) is None


@pytest.mark.parametrize("ttl, beat", [(0, None), (-1, None), (float("inf"), None),
                                       (float("nan"), None), (1e11, None), ("60", None),
                                       (60, 0), (60, float("inf"))])
def test_no_process_writes_a_record_others_could_not_read(storage: LocalStorage, ttl: Any,
                                                          beat: Any) -> None:
    with pytest.raises(ValueError, match="seconds"):
        storage.try_acquire_lock("x", ttl=ttl, heartbeat_interval=beat)
    with pytest.raises((ValueError, TypeError), match="seconds"):  # TypeError: not a number
        cached(ttl=ttl, heartbeat_interval=beat)(_double)
    assert storage.list_locks() == []


# -- any record at all: reading never raises -----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8)
#: Mostly near-valid records (GOOD with a few fields spoiled or dropped), plus any JSON.
records = st.one_of(
    st.builds(lambda spoiled, dropped: {k: v for k, v in {**GOOD, **spoiled}.items()
                                        if k not in dropped},
              st.dictionaries(st.sampled_from([*FIELDS, "beat"]), json_values, max_size=3),
              st.sets(st.sampled_from(FIELDS), max_size=2)),
    json_values)


@settings(max_examples=300, deadline=None)
@given(st.one_of(records.map(lambda r: json.dumps(r).encode()), st.binary(max_size=64)))
def test_parse_returns_a_valid_record_or_none(data: bytes) -> None:
    record = LockRecord.parse(data)
    if record is not None:
        assert LockRecord.parse(record.to_bytes()) == record
        assert isinstance(record.pid, int) and record.pid > 0
        assert all(isinstance(getattr(record, f), float) for f in ("acquired", "ttl"))
        assert record.heartbeat_interval is None or record.heartbeat_interval > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=4))
def test_listing_never_crashes_on_any_record(found: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = LocalStorage(root)
        for i, record in enumerate(found):
            plant(store, f"lock{i}", json.dumps(record).encode())
        infos = store.list_locks()
        assert [info.name for info in infos] == [f"lock{i}" for i in range(len(found))]
        for info, record in zip(infos, found, strict=True):
            valid = LockRecord.parse(json.dumps(record).encode()) is not None
            assert (info.problem is None) == valid
            assert isinstance(info.holder, str) and store.lock_info(info.name) is not None
        assert len(lock_rows(store)) == len(found)
        for info in infos:
            assert store.break_lock(info.name)
