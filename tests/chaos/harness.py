"""One chaos run: many workers, random SIGKILLs of holders, then the checks.

``run_chaos(storage, folder, Settings(...))`` starts ``workers`` processes
(half of them pretending to run on other hosts, so only their missed beats
tell that they died), kills a process that is in the middle of a computation
every so often, respawns it to finish its share of calls, and afterwards
checks the invariants of the acquire-or-wait protocol.  The returned
:class:`Report` holds the counts and a list of problems (empty when all held).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import uuid
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labcache import entry

from ..support.procs import CTX, reaping
from . import _worker


@dataclass
class Settings:
    """The size of one run; the defaults are the CI size."""

    workers: int = 16
    calls: int = 30
    keys: int = 20
    heartbeat_interval: float = 0.3
    invalidate_share: float = 0.1
    #: Seconds between two kills, drawn uniformly from this range.
    kill_every: tuple[float, float] = (0.5, 1.5)
    #: A run that is not done after this many seconds is a problem.
    time_limit: float = 240.0
    seed: int = 0


@dataclass
class Report:
    """What one run did, and what went wrong (``problems``)."""

    backend: str
    calls: int = 0
    invalidations: int = 0
    computations: int = 0
    kills: int = 0
    kills_mid_compute: int = 0
    takeovers: int = 0
    respawns: int = 0
    max_wait: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.backend}: {self.calls} calls, {self.invalidations} invalidations, "
                f"{self.computations} computations, {self.kills} kills "
                f"({self.kills_mid_compute} mid-compute) survived, {self.takeovers} takeovers, "
                f"max wait {self.max_wait:.2f} s, {self.seconds:.1f} s wall, "
                f"{len(self.problems)} problems")


@dataclass
class _Computation:
    x: int
    pid: int
    start: float
    end: float | None = None


@dataclass
class _Log:
    """``compute.log`` read as it grows."""

    path: Path
    offset: int = 0
    runs: dict[tuple[int, int], _Computation] = field(default_factory=dict)

    def read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            what, x, pid, seq, when = line.split()
            ident = (int(pid), int(seq))
            if what == "start":
                self.runs[ident] = _Computation(int(x), int(pid), float(when))
            else:
                self.runs[ident].end = float(when)

    def open_pids(self, among: set[int]) -> list[int]:
        return sorted({run.pid for run in self.runs.values()
                       if run.end is None and run.pid in among})


def run_chaos(storage: Any, folder: Path, settings: Settings, backend: str = "") -> Report:
    """Run the workers and the killer against ``storage``; check everything."""
    (folder / "results").mkdir(parents=True, exist_ok=True)
    report = Report(backend or type(storage).__name__)
    salt, rng = uuid.uuid4().hex, random.Random(settings.seed)
    log = _Log(folder / "compute.log")
    killed: dict[int, float] = {}  # pid -> monotonic time just after its SIGKILL
    began = time.monotonic()
    with reaping(grace=30) as start:

        def spawn(slot: int, calls: int) -> Any:
            host = f"chaos-elsewhere-{slot}" if slot % 2 else None
            args = (storage, str(folder), slot, calls, rng.randrange(2**32), settings.keys,
                    salt, settings.heartbeat_interval, host, settings.invalidate_share)
            return start(CTX.Process(target=_worker.run_worker, args=args))

        running = {slot: spawn(slot, settings.calls) for slot in range(settings.workers)}
        next_kill = time.monotonic() + rng.uniform(*settings.kill_every)
        while running:
            if time.monotonic() - began > settings.time_limit:
                report.problems.append(f"not done after {settings.time_limit:.0f} s")
                break
            for slot, process in list(running.items()):
                if process.exitcode is None:
                    continue
                del running[slot]
                left = settings.calls - _done(folder, slot)
                if process.pid in killed and left > 0:
                    running[slot] = spawn(slot, left)
                    report.respawns += 1
                elif process.exitcode != 0 and process.pid not in killed:
                    report.problems.append(f"worker {slot} (pid {process.pid}) exited with "
                                           f"{process.exitcode}")
            if time.monotonic() >= next_kill:
                log.read()
                live = {p.pid for p in running.values() if p.exitcode is None}
                targets = log.open_pids(live)
                if targets:
                    victim = rng.choice(targets)
                    os.kill(victim, signal.SIGKILL)
                    killed[victim] = time.monotonic()
                next_kill = time.monotonic() + rng.uniform(*settings.kill_every)
            time.sleep(0.02)
    report.kills = len(killed)
    _check_results(folder, report)
    f = _worker.chaos_function(storage, settings.heartbeat_interval)
    _check_entries(storage, f, salt, folder, settings, report)
    _check_locks_after(storage, set(killed), report)
    _sweep(f, salt, folder, settings, report)
    log.read()
    _check_overlaps(log, killed, report)
    report.computations = len(log.runs)
    report.seconds = time.monotonic() - began
    return report


def _done(folder: Path, slot: int) -> int:
    """Calls (and invalidations) slot ``slot`` has finished, over all its processes."""
    path = folder / "results" / f"{slot}.jsonl"
    with contextlib.suppress(FileNotFoundError):
        return sum(1 for line in path.read_text().splitlines()
                   if '"op": "call"' in line or '"op": "invalidate"' in line)
    return 0


def _check_results(folder: Path, report: Report) -> None:
    for line in _worker.read_results(folder):
        op = line["op"]
        if op == "call":
            report.calls += 1
            if not line["ok"]:
                report.problems.append(f"wrong result for x={line['x']}")
            if line["warnings"]:
                report.problems.append(f"warnings for x={line['x']}: {line['warnings']}")
            if not line["computed"]:
                report.max_wait = max(report.max_wait, line["seconds"])
        elif op == "invalidate":
            report.invalidations += 1
        elif op == "takeover":
            report.takeovers += 1
        elif op == "crash":
            report.problems.append(f"a worker crashed:\n{line['trace']}")


def _check_entries(storage: Any, f: Any, salt: str, folder: Path, settings: Settings,
                   report: Report) -> None:
    """Every entry present is a whole, loadable entry of the right call."""
    log = str(folder / "compute.log")
    keys = {f.key(x, salt, log, 0.0): x for x in range(settings.keys)}
    for name in storage.list_stored_files(f.context):
        if name not in keys:
            report.problems.append(f"an entry with an unknown name: {name}")
            continue
        try:
            value, _ = entry.decode(storage.download_file(name, f.context))
        except Exception as exc:
            report.problems.append(f"entry of x={keys[name]} does not load: {exc!r}")
            continue
        if value != _worker.expected(keys[name], salt):
            report.problems.append(f"entry of x={keys[name]} holds a wrong value")


def _check_locks_after(storage: Any, killed: set[int], report: Report) -> None:
    """Only killed holders may have left locks, and those must go stale."""
    deadline = time.monotonic() + 30
    while True:
        locks = storage.list_locks()
        alive = [info for info in locks if info.pid not in killed]
        if alive:
            report.problems.append(f"locks left by processes that were not killed: {alive}")
            return
        if all(info.stale for info in locks):
            return
        if time.monotonic() > deadline:
            report.problems.append(f"killed holders' locks never went stale: {locks}")
            return
        time.sleep(0.1)


def _sweep(f: Any, salt: str, folder: Path, settings: Settings, report: Report) -> None:
    """Call every key once more here: all correct, and nothing stays locked."""
    log = str(folder / "compute.log")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x in range(settings.keys):
            if f(x, salt, log, 0.0) != _worker.expected(x, salt):
                report.problems.append(f"wrong result for x={x} after the run")
    if caught:
        report.problems.append(f"warnings after the run: {[str(w.message) for w in caught]}")
    left = f.storage.list_locks()
    if left:
        report.problems.append(f"locks left after every key was called again: {left}")


def _check_overlaps(log: _Log, killed: dict[int, float], report: Report) -> None:
    """No two computations of one key overlap in time.

    A killed process's unfinished computation ends when it was killed.
    """
    by_key: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for run in log.runs.values():
        end = run.end
        if end is None:
            if run.pid not in killed:
                report.problems.append(f"pid {run.pid} started x={run.x} and never ended "
                                       "without being killed")
                continue
            end = killed[run.pid]
            report.kills_mid_compute += 1
        by_key[run.x].append((run.start, end, run.pid))
    for x, spans in sorted(by_key.items()):
        spans.sort()
        latest_end, latest_pid = float("-inf"), 0
        for begin, end, pid in spans:
            if begin < latest_end:
                report.problems.append(
                    f"x={x}: pid {pid} started computing at {begin:.3f} while pid "
                    f"{latest_pid} computed it until {latest_end:.3f}")
            if end > latest_end:
                latest_end, latest_pid = end, pid
