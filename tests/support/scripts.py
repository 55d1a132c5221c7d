"""Running ``tests/support/scale_script.py`` as a user's script, and what it must show."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


def run_script(tmp_path: Path, *args: str,
               timeout: float = 90) -> tuple[dict[str, Any], Counter[str]]:
    """Run the script with ``args``; its JSON output and computations per key."""
    script = tmp_path / "job.py"
    shutil.copy(HERE / "scale_script.py", script)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(os.environ, MARKS=str(marks), STORE=str(tmp_path / "store"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report, Counter(name.split("-")[0] for name in os.listdir(marks))


def check_report(report: dict[str, Any], computed: Counter[str]) -> None:
    """The assertions every pool must pass."""
    assert report["values"] == [x * x for x in (1, 2, 3, 1, 2, 3, 1, 2)]
    assert computed == {"1": 1, "2": 1, "3": 1}  # once per key, caller's calls included
    assert report["hits_after"] == [True, True, True]
    worker_keys = [key for key, _ in report["worker_keys"]]
    assert worker_keys == report["caller_keys"]
    assert all(pid != report["pid"] for _, pid in report["worker_keys"])  # really in a worker
