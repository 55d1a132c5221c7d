"""A two-minute tour: ``python -m labcache.demo``.

1. An expensive function is computed once, then loaded from the cache.
2. Several processes ask for a new result at the same moment: one computes,
   the others wait for it and load it.

It uses the default storage (``LABCACHE_STORAGE``, ``LABCACHE_DIR`` or the
user cache dir), so a second run finds the results of the first; the demo
removes its own old entries first so each run shows the whole story.
"""

from __future__ import annotations

import multiprocessing
import os
import time

from labcache import cached

WORK_SECONDS = 2.0


@cached(heartbeat_interval=1)
def simulate(seed: int, steps: int = 200_000) -> dict[str, float]:
    """A stand-in for an expensive notebook step (training, a big query)."""
    print(f"    pid {os.getpid()}: computing simulate({seed}) ...", flush=True)
    time.sleep(WORK_SECONDS)
    state = seed
    for _ in range(steps):
        state = (state * 1103515245 + 12345) % 2**31
    return {"seed": seed, "final_state": state}


def _timed(seed: int) -> tuple[object, float]:
    began = time.perf_counter()
    value = simulate(seed)
    return value, time.perf_counter() - began


def _in_a_process(seed: int, start: object) -> tuple[int, float, object]:
    start.wait()  # type: ignore[attr-defined]
    value, seconds = _timed(seed)
    return os.getpid(), seconds, value


def main() -> None:
    """Run the tour and print what happens."""
    storage = simulate.storage
    print(f"labcache demo, storage: {storage.get_root_path()}\n")
    for seed in (1, 2):
        simulate.invalidate(seed)

    print("1. One process, the same call twice")
    for attempt in ("first call ", "second call"):
        value, seconds = _timed(1)
        print(f"   {attempt}: {seconds * 1000:8.1f} ms -> {value}")

    workers = 4
    print(f"\n2. {workers} processes call simulate(2) at the same moment")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(workers)
        with context.Pool(workers) as pool:
            results = pool.starmap(_in_a_process, [(2, start)] * workers)
    for pid, seconds, value in results:
        print(f"   pid {pid}: {seconds * 1000:8.1f} ms -> {value}")
    same = all(value == results[0][2] for _, _, value in results)
    print(f"\n   all {workers} got the same result: {same}; the body ran once "
          "(one 'computing' line above), the others waited and loaded it.")
    print("\nTry it again: results now load in milliseconds from "
          f"{storage.get_root_path()}")


if __name__ == "__main__":
    main()
