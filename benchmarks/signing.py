"""What signing and verifying cost: per small hit and per big entry.

Four ways to run the same cached function, each on its own storage:
unsigned, ``LABCACHE_SECRET`` (HMAC), ``LABCACHE_SIGNING_KEY`` +
``LABCACHE_TRUSTED_KEYS`` (Ed25519) and both.  Ratios are "this mode's time /
the unsigned time" measured in the same run, in turns, so a busy spell of
the machine hits every mode alike (above 1: what signing costs).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._common import MB, Report

_SECRET = "benchmark-team-secret-0123456789"
_VARIABLES = ("LABCACHE_SECRET", "LABCACHE_SIGNING_KEY", "LABCACHE_TRUSTED_KEYS")
_VALUES: dict[str, Any] = {}


def produce(case: str) -> Any:
    """The cached body: hands back the prebuilt value of ``case``."""
    return _VALUES[case]


def _modes(keys: Path) -> dict[str, dict[str, str]]:
    ed = {"LABCACHE_SIGNING_KEY": str(keys / "bench.key"),
          "LABCACHE_TRUSTED_KEYS": str(keys / "bench.pub")}
    return {"unsigned": {}, "HMAC (LABCACHE_SECRET)": {"LABCACHE_SECRET": _SECRET},
            "Ed25519 (signing key + trust file)": ed,
            "HMAC + Ed25519": {**ed, "LABCACHE_SECRET": _SECRET}}


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.pop(name, None) for name in _VARIABLES}
    os.environ.update(values)
    try:
        yield
    finally:
        for name in _VARIABLES:
            os.environ.pop(name, None)
            if saved[name] is not None:
                os.environ[name] = saved[name]  # type: ignore[assignment]


def _in_turns(modes: dict[str, dict[str, str]], calls: dict[str, Callable[[], object]],
              repeat: int, number: int) -> dict[str, float]:
    """Median seconds per call of each mode, sampled in turns; the
    environment is switched outside the timed span."""
    samples: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeat):
        for name, values in modes.items():
            with _environment(values):
                began = time.perf_counter()
                for _ in range(number):
                    calls[name]()
                samples[name].append((time.perf_counter() - began) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


def _setup(modes: dict[str, dict[str, str]], root: Path, case: str) -> dict[str, Any]:
    from labcache import LocalStorage, cached

    functions = {}
    for index, (name, values) in enumerate(modes.items()):
        fn = cached(storage=LocalStorage(root / f"{case.replace(' ', '-')}-{index}"))(produce)
        with _environment(values):
            fn.refresh(case)
            fn(case)  # a checked hit: the entry is there and trusted
        functions[name] = fn
    return functions


def _report(report: Report, what: str, case: str, times: dict[str, float]) -> float:
    base = times["unsigned"]
    for name, seconds in times.items():
        report.add("signing", f"{what}, {case}", name, seconds, "s", seconds / base)
    return max(times.values()) / base


def _loads(report: Report, modes: dict[str, dict[str, str]], root: Path, case: str,
           repeat: int, number: int) -> float:
    functions = _setup(modes, root, case)
    loads = _in_turns(modes, {n: (lambda f=f: f(case)) for n, f in functions.items()},
                      repeat, number)
    return _report(report, "hit", case, loads)


def _stores(report: Report, modes: dict[str, dict[str, str]], root: Path, case: str,
            repeat: int) -> None:
    functions = _setup(modes, root / "stores", case)
    stores = _in_turns(modes, {n: (lambda f=f: f.refresh(case)) for n, f in functions.items()},
                       repeat, 1)
    _report(report, "store", case, stores)


def _first_check(report: Report, keys: Path) -> None:
    """A hit remembers the signatures it verified; the first hit of each
    entry pays one Ed25519 verification, measured here on its own."""
    from labcache import signing

    signer = signing.load_signer(keys / "bench.key")
    trust = signing.load_trust(keys / "bench.pub")
    message = bytes(150)
    signature = signer.sign(message)
    public = trust._keys["bench"][0]
    seconds = statistics.median(
        _timed(lambda: public.verify(signature, message), 300) for _ in range(9))
    report.add("signing", "first hit of an entry", "Ed25519 verify, added once", seconds, "s",
               note="later hits of the same entry skip it")


def _timed(fn: Callable[[], object], number: int) -> float:
    began = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - began) / number


def run(report: Report, quick: bool) -> None:
    from labcache import signing

    size = (20 if quick else 200) * MB
    big = f"{size // MB} MB ndarray"
    _VALUES.update({"small int": 7, big: np.random.default_rng(2).random(size // 8)})
    report.section("Signing and verifying (ratio = this mode's time / unsigned time)")
    with tempfile.TemporaryDirectory(prefix="labcache-bench-sign-") as folder:
        root = Path(folder)
        signing.keygen("bench", root / "keys")
        modes = _modes(root / "keys")
        small = _loads(report, modes, root, "small int", 9, 300)
        _first_check(report, root / "keys")
        _stores(report, modes, root, "small int", 9)
        large = _loads(report, modes, root, big, 5, 1)
        _stores(report, modes, root, big, 3)
    report.target("small hit, signed and verified / unsigned (worst mode)", small, "<= 6",
                  small <= 6)
    report.target(f"{big} load, verified / unsigned (worst mode)", large, "<= 2", large <= 2)
    _VALUES.clear()
