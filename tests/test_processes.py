"""The lock protocol across real processes (``multiprocessing`` spawn).

Each test starts its own processes on its own ``tmp_path`` storage and reaps
them in ``finally``.  Worker functions live in ``tests/support/workers.py`` so that
spawned processes import them, and cached functions built from them have
the same key everywhere.  Computations are counted by the files their
bodies leave in a log folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labcache import UnpicklableResultError

from .support import workers
from .support.procs import CTX, PATIENCE, collect, dead_pid, reaping
from .support.waits import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- helpers ---------------------------------------------------------------------------


def folders(tmp_path: Path, *names: str) -> list[str]:
    paths = []
    for name in names:
        (tmp_path / name).mkdir()
        paths.append(str(tmp_path / name))
    return paths


#: Barrier trials per backend: network backends pay a round trip per step.
TRIALS = {"local": 200, "redis": 100, "s3": 40}


def backend_name(storage: Any) -> str:
    return type(storage).__name__.replace("Storage", "").lower()


def only_lock(storage: Any, holder: Any) -> Any:
    """The one lock in ``storage``, which ``holder`` must hold."""
    locks = storage.list_locks()
    assert [info.pid for info in locks] == [holder.pid], (
        f"expected only the lock of pid {holder.pid}: {locks}"
    )
    return locks[0]


def stale_or_gone(storage: Any, name: str) -> bool:
    """A dead hold: stale, or already expired (Redis expires dead locks itself)."""
    info = storage.lock_info(name)
    return info is None or info.stale


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0].decode()


# -- one computation, many callers -------------------------------------------------------


def test_eight_processes_one_computation(any_storage: Any, tmp_path: Path) -> None:
    (log_dir,) = folders(tmp_path, "log")
    barrier, queue = CTX.Barrier(8), CTX.Queue()
    with reaping() as start:
        callers = [
            start(CTX.Process(target=workers.call_after_barrier,
                              args=(any_storage, log_dir, 7, barrier, queue)))
            for _ in range(8)
        ]
        results = collect(queue, 8)
    assert sorted(pid for _, pid, _ in results) == sorted(w.pid for w in callers)
    expected = {"square": 49, "array": list(range(7))}
    assert [value for _, _, value in results] == [expected] * 8
    assert len(workers.computations(log_dir)) == 1, "computed more than once"
    assert any_storage.list_locks() == []
    assert workers.make_cached(workers.slow_square, any_storage).is_cached(7, log_dir)


# -- a holder that dies ----------------------------------------------------------------------


def test_killed_holder_is_taken_over_by_heartbeat(any_storage: Any,
                                                  tmp_path: Path) -> None:
    """A holder on "another host" is only known dead by its missing beats."""
    heartbeat, ttl, x = 0.5, 1.0, 3
    log_dir, signal_dir = folders(tmp_path, "log", "signals")
    started = str(tmp_path / "started")
    root, queue = any_storage, CTX.Queue()
    with reaping() as start:
        holder = start(CTX.Process(target=workers.hanging_holder,
                                   args=(root, log_dir, started, x, heartbeat, ttl, True)))
        wait_until(lambda: os.path.exists(started), "the holder to start computing",
                   alive=holder)
        waiters = [
            start(CTX.Process(target=workers.takeover_waiter,
                              args=(root, log_dir, started, x, heartbeat, ttl, signal_dir,
                                    queue)))
            for _ in range(3)
        ]
        wait_until(lambda: len(workers.waiting_signals(signal_dir)) == 3,
                   "3 waiters waiting on the holder")

        # While it beats, the holder keeps its lock past its ttl and past 3
        # beat intervals: nobody takes it over.
        info = only_lock(any_storage, holder)
        assert info.host == workers.FOREIGN_HOST
        time.sleep(max(info.acquired + max(ttl, 3 * heartbeat) + 1.0 - time.time(), 0))
        info = only_lock(any_storage, holder)
        assert not info.stale, f"a beating holder's lock counts as stale: {info}"
        assert info.heartbeat > info.acquired + heartbeat, "the holder does not beat"
        assert len(workers.computations(log_dir)) == 1
        assert queue.empty()

        holder.kill()
        killed = time.monotonic()
        results = collect(queue, 3, timeout=30)

    first = min(arrived for _, _, (_, arrived) in results)
    assert first - killed <= 3 * heartbeat + 2.0, (
        f"takeover took {first - killed:.2f} s after the kill"
    )
    assert [value for _, _, (value, _) in results] == [x * 10] * 3
    runs = workers.computations(log_dir)
    assert len(runs) == 2, runs  # the killed one and exactly one takeover
    pids = sorted(int(name.split("-")[0]) for name in runs)
    assert holder.pid in pids
    assert set(pids) - {holder.pid} <= {w.pid for w in waiters}
    assert any_storage.list_locks() == []


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_killed_holder_same_host_taken_over_at_once(any_storage: Any, tmp_path: Path,
                                                    reap: bool) -> None:
    """A dead holder on this host is stale at once, however long its heartbeat
    interval and ttl; a zombie (killed but not yet reaped) counts as dead."""
    heartbeat, ttl, x = 30.0, 3600.0, 4
    log_dir, signal_dir = folders(tmp_path, "log", "signals")
    started = str(tmp_path / "started")
    root, queue = any_storage, CTX.Queue()
    with reaping() as start:
        holder = start(CTX.Process(target=workers.hanging_holder,
                                   args=(root, log_dir, started, x, heartbeat, ttl, False)))
        wait_until(lambda: os.path.exists(started), "the holder to start computing",
                   alive=holder)
        for _ in range(3):
            start(CTX.Process(target=workers.takeover_waiter,
                              args=(root, log_dir, started, x, heartbeat, ttl, signal_dir,
                                    queue)))
        wait_until(lambda: len(workers.waiting_signals(signal_dir)) == 3,
                   "3 waiters waiting on the holder")
        assert not only_lock(any_storage, holder).stale

        if reap:
            holder.kill()
            killed = time.monotonic()
            holder.join(PATIENCE)
        else:
            os.kill(holder.pid, signal.SIGKILL)  # no join: it stays a zombie
            killed = time.monotonic()
        results = collect(queue, 3, timeout=30)
        if not reap:
            assert process_state(holder.pid) == "Z", "the holder was reaped after all"

    first = min(arrived for _, _, (_, arrived) in results)
    assert first - killed <= 5.0, f"takeover took {first - killed:.2f} s after the kill"
    assert [value for _, _, (value, _) in results] == [x * 10] * 3
    assert len(workers.computations(log_dir)) == 2
    assert any_storage.list_locks() == []


# -- a holder that fails -------------------------------------------------------------------------


def test_holder_exception_shared_with_waiters(any_storage: Any, tmp_path: Path) -> None:
    x = 5
    log_dir, signal_dir = folders(tmp_path, "log", "signals")
    go, fail_flag = str(tmp_path / "go"), str(tmp_path / "fail")
    workers.touch(fail_flag)
    root, queue = any_storage, CTX.Queue()
    with reaping() as start:
        holder = start(CTX.Process(target=workers.call_fail_while_flagged,
                                   args=(root, log_dir, go, fail_flag, x, None, queue)))
        wait_until(lambda: len(workers.computations(log_dir)) == 1,
                   "the holder to start computing", alive=holder)
        for _ in range(3):
            start(CTX.Process(target=workers.call_fail_while_flagged,
                              args=(root, log_dir, go, fail_flag, x, signal_dir, queue)))
        wait_until(lambda: len(workers.waiting_signals(signal_dir)) == 3,
                   "3 waiters waiting on the holder")
        workers.touch(go)  # now the holder raises
        messages = collect(queue, 4)

    assert len(workers.computations(log_dir)) == 1, "waiters recomputed the failure"
    assert [tag for tag, _, _ in messages] == ["raised"] * 4, messages
    raised = {error for _, _, error in messages}
    # One and the same error: the holder's (its message names the holder's pid).
    assert raised == {("tests.support.workers", "BodyFailed",
                       f"holder pid {holder.pid} failed on x={x}")}
    assert any_storage.list_locks() == []

    f = workers.make_cached(workers.fail_while_flagged, root)
    assert not f.is_cached(x, log_dir, go, fail_flag)
    os.unlink(fail_flag)
    assert f(x, log_dir, go, fail_flag) == x + 1000  # failures are not cached
    assert len(workers.computations(log_dir)) == 2
    assert f.is_cached(x, log_dir, go, fail_flag)
    assert any_storage.list_locks() == []


@pytest.mark.parametrize("kind", ["generator", "lock"])
def test_unpicklable_result_leaves_nothing(any_storage: Any, tmp_path: Path,
                                           kind: str) -> None:
    log_dir, signal_dir = folders(tmp_path, "log", "signals")
    go = str(tmp_path / "go")
    root, queue = any_storage, CTX.Queue()
    f = workers.make_cached(workers.unpicklable_result, root)
    with reaping() as start:
        holder = start(CTX.Process(target=workers.call_unpicklable,
                                   args=(root, log_dir, go, kind, signal_dir, queue)))
        wait_until(lambda: len(workers.computations(log_dir)) == 1,
                   "the holder to start computing", alive=holder)
        waiter = start(CTX.Process(target=workers.call_unpicklable,
                                   args=(root, log_dir, go, kind, signal_dir, queue)))
        wait_until(lambda: len(workers.waiting_signals(signal_dir)) == 1,
                   "a waiter waiting on the holder", alive=waiter)
        workers.touch(go)
        messages = collect(queue, 2)

    # The holder and the waiter both raise it; the waiter did not recompute.
    assert [tag for tag, _, _ in messages] == ["raised"] * 2, messages
    assert {name for _, _, (name, _) in messages} == {"UnpicklableResultError"}
    assert len(workers.computations(log_dir)) == 1

    # In this process too, with a message that says what went wrong.
    type_name = "generator" if kind == "generator" else "lock"
    with pytest.raises(UnpicklableResultError,
                       match=rf"result \({type_name}\) cannot be pickled.*nothing was stored"):
        f(kind, log_dir, go)
    assert len(workers.computations(log_dir)) == 2
    assert any_storage.list_locks() == []
    assert not f.is_cached(kind, log_dir, go)
    assert any_storage.list_stored_files(f.context) == []


# -- lock ownership ---------------------------------------------------------------------------


def test_release_after_takeover_keeps_new_holders_lock(any_storage: Any,
                                                       tmp_path: Path) -> None:
    root, queue = any_storage, CTX.Queue()
    a_release, b_release = CTX.Event(), CTX.Event()
    with reaping() as start:
        a = start(CTX.Process(target=workers.hold_until,
                              args=(root, "L", 1, True, a_release, queue)))
        [(tag, pid, (won, token_a))] = collect(queue, 1)
        assert (tag, pid, won) == ("acquired", a.pid, True)
        info = any_storage.lock_info("L")
        assert info is not None
        assert (info.pid, info.token, info.host) == (a.pid, token_a, workers.FOREIGN_HOST)

        # A is alive but, on "another host" without heartbeat, stale after ttl.
        wait_until(lambda: stale_or_gone(any_storage, "L"), "A's lock to go stale", timeout=10)
        b = start(CTX.Process(target=workers.hold_until,
                              args=(root, "L", 3600, False, b_release, queue)))
        [(tag, pid, (won, token_b))] = collect(queue, 1)
        assert (tag, pid, won) == ("acquired", b.pid, True)
        assert token_b != token_a

        a_release.set()  # A releases what it thinks is its lock
        [(tag, pid, seen_by_a)] = collect(queue, 1)
        assert (tag, pid) == ("released", a.pid)
        assert seen_by_a == (b.pid, token_b)
        info = any_storage.lock_info("L")
        assert info is not None, "A's release removed B's lock"
        assert (info.pid, info.token, info.stale) == (b.pid, token_b, False)

        b_release.set()
        [(tag, pid, seen_by_b)] = collect(queue, 1)
        assert (tag, pid, seen_by_b) == ("released", b.pid, None)
    assert any_storage.lock_info("L") is None
    assert any_storage.list_locks() == []


# -- races for one lock ----------------------------------------------------------------------------


@pytest.mark.parametrize("stale_kind", [None, *workers.STALE_KINDS],
                         ids=["free", *workers.STALE_KINDS])
def test_lock_exclusive_under_barrier(any_storage: Any, tmp_path: Path,
                                      stale_kind: str | None) -> None:
    """8 processes race for one lock, trial after trial: never two holders at
    once, exactly one winner per trial, whether the lock is free or must be
    stolen from a stale holder."""
    racers, trials = 8, TRIALS[backend_name(any_storage)]
    if (backend_name(any_storage), stale_kind) == ("s3", "missed_beats"):
        trials = 8  # S3 ages a planted lock by its server's clock: ~1.5 s per trial
    root, queue = any_storage, CTX.Queue()
    barrier = CTX.Barrier(racers)
    occupancy, max_occupancy = CTX.Value("i", 0), CTX.Value("i", 0)
    winners = CTX.Array("i", trials)
    gone = dead_pid() if stale_kind == "dead_pid" else 0
    if stale_kind is not None:
        workers.plant_stale_lock(root, "race", stale_kind, gone)
        info = any_storage.lock_info("race")
        assert info is not None and info.stale
    with reaping() as start:
        for index in range(racers):
            start(CTX.Process(target=workers.race_for_lock,
                              args=(root, index, trials, stale_kind, gone, barrier, occupancy,
                                    max_occupancy, winners, queue)))
        try:  # one message per racer: "done", or "crash" (which breaks the barrier)
            reports = collect(queue, racers, timeout=100, fail_on_crash=False)
        finally:
            barrier.abort()
    bad = dict([(trial, n) for trial, n in enumerate(winners) if n != 1][:10])  # the first few
    assert max_occupancy.value == 1, f"two processes held the lock at once; winners: {bad}"
    assert bad == {}, f"trials without exactly one winner (trial: winners): {bad}"
    crashes = [report for tag, _, report in reports if tag == "crash"]
    assert crashes == [], "\n".join(crashes)
    assert sorted(index for _, _, index in reports) == list(range(racers))
    assert any_storage.list_locks() == []


def test_sixteen_stealers_one_winner(any_storage: Any, tmp_path: Path) -> None:
    """A stale lock, 16 processes released together to steal it: one wins."""
    stealers, rounds, name = 16, 20, "prize"
    root, queue = any_storage, CTX.Queue()
    barrier = CTX.Barrier(stealers + 1)  # the test is the last party

    # Round 0's stale lock is left by a real holder that exited without releasing.
    crashed = CTX.Process(target=workers.acquire_and_die, args=(root, name))
    crashed.start()
    crashed.join(PATIENCE)
    assert crashed.exitcode == 0
    assert any_storage.lock_info(name).pid == crashed.pid
    gone = crashed.pid

    with reaping() as start:
        for _ in range(stealers):
            start(CTX.Process(target=workers.steal_once_per_round,
                              args=(root, name, rounds, barrier, queue)))
        try:
            for rnd in range(rounds):
                kind = workers.STALE_KINDS[rnd % 3]
                if rnd:
                    workers.plant_stale_lock(root, name, kind, gone)
                before = any_storage.lock_info(name)
                assert before is not None and before.stale, (rnd, kind, before)
                barrier.wait(PATIENCE)  # go
                barrier.wait(PATIENCE)  # everybody tried
                tries = collect(queue, stealers)
                assert {r for _, _, (r, _, _) in tries} == {rnd}
                won = [(pid, token) for _, pid, (_, ok, token) in tries if ok]
                assert len(won) == 1, f"round {rnd} ({kind}): winners {won}"
                info = any_storage.lock_info(name)
                assert info is not None
                assert (info.pid, info.token, info.stale) == (*won[0], False)
                barrier.wait(PATIENCE)  # looked
                barrier.wait(PATIENCE)  # the winner released
                assert any_storage.lock_info(name) is None
        finally:
            barrier.abort()


# -- keys ------------------------------------------------------------------------------------------


def test_keys_equal_across_hashseeds(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    code = f"from tests.support import workers; workers.print_key_demo({root!r})"
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO_ROOT))
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=PATIENCE, check=False)
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    # The seeds really do order the set differently, so naive hashing would differ...
    assert outputs[0]["set_order"] != outputs[1]["set_order"]
    # ...but the keys are the same, and the same as in this process.
    here = workers.make_cached(workers.keyed, root).key(*workers.key_demo_arguments())
    assert outputs[0]["key"] == outputs[1]["key"] == here


# -- a takeover followed by the old holder's failure ---------------------------------------


def test_failure_of_a_taken_over_holder_is_not_blamed_on_its_successor(
        any_storage: Any, tmp_path: Path) -> None:
    """Holder A goes stale (on "another host", past its ttl) while it still
    computes; T takes the computation over; A then fails; T dies; W, who was
    waiting on T, must take over and compute, not raise A's error: W never
    waited on A, and T never failed."""
    x = 6
    log_dir, signal_dir, marker_dir = folders(tmp_path, "log", "signals", "markers")
    root, queue = any_storage, CTX.Queue()
    markers = Path(marker_dir)
    with reaping() as start:
        a = start(CTX.Process(target=workers.call_roles_in_turn,
                              args=(root, log_dir, marker_dir, x, None, 1.0, True, None,
                                    queue)))
        wait_until(lambda: (markers / "first").exists(), "A to start computing", alive=a)
        wait_until(lambda: all(info.stale for info in any_storage.list_locks()),
                   "A's lock to go stale (ttl 1 s)", timeout=10)
        t = start(CTX.Process(target=workers.call_roles_in_turn,
                              args=(root, log_dir, marker_dir, x, 30, 3600, False, None,
                                    queue)))
        wait_until(lambda: (markers / "second").exists(), "T to take over", alive=t)
        assert not only_lock(any_storage, t).stale
        w = start(CTX.Process(target=workers.call_roles_in_turn,
                              args=(root, log_dir, marker_dir, x, 30, 3600, False,
                                    signal_dir, queue)))
        wait_until(lambda: len(workers.waiting_signals(signal_dir)) == 1,
                   "W to wait on T", alive=w)

        workers.touch(markers / "go")  # A fails (its lock is T's by now)
        [(tag, pid, error)] = collect(queue, 1)
        assert (tag, pid) == ("raised", a.pid), error
        assert not only_lock(any_storage, t).stale, "A's failure released T's lock"

        t.kill()  # T dies on this host: its lock is stale at once
        t.join(PATIENCE)
        [(tag, pid, outcome)] = collect(queue, 1, timeout=30)

    assert (tag, pid) == ("result", w.pid), (
        f"W {tag} {outcome!r}: it was given A's failure although it waited on T"
    )
    assert outcome == x * 100
    assert len(workers.computations(log_dir)) == 3  # A, T and W's takeover
    assert any_storage.list_locks() == []
