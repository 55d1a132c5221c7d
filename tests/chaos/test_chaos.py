"""The chaos run on every backend, at the CI size (see ``harness.Settings``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .harness import Settings, run_chaos

#: Short beats make takeovers quick; not shorter, or a CI machine that stalls
#: a holder's heartbeat thread for 3 beats would see a live holder taken over.
#: A little slower on S3: each beat and each waiter's poll is a request to one
#: moto server, and S3 times are whole seconds anyway.
HEARTBEAT = {"LocalStorage": 0.4, "RedisStorage": 0.4, "S3Storage": 0.5}


@pytest.mark.timeout(240)
def test_chaos(any_storage: Any, tmp_path: Path) -> None:
    """16 workers, random kills of holders and invalidations: every result
    right, no overlapping computations, no lock left, every entry loadable."""
    name = type(any_storage).__name__
    settings = Settings(calls=30, heartbeat_interval=HEARTBEAT[name], seed=6)
    report = run_chaos(any_storage, tmp_path / "chaos", settings, backend=name)
    print(report.summary())
    assert report.problems == [], report.summary() + "\n" + "\n".join(report.problems)
    # The run must really have been chaotic, or it proved nothing.
    assert report.kills_mid_compute >= 1, report.summary()
    assert report.invalidations >= 1 and report.calls == 16 * 30 - report.invalidations
