"""The benchmark suite runs, checks every hit's value, and writes its JSON.

No timing is asserted here (machines are noisy): the figures and their
targets are for reading, in `python -m benchmarks`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .support.services_redis import require

ROOT = Path(__file__).resolve().parent.parent


def test_quick_suite_runs_and_writes_json(tmp_path: Path) -> None:
    require("joblib", "diskcache", "cachier", "blake3", "cryptography", extra="bench")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "hits,results,signing",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    contenders = {row["contender"] for row in results["rows"]}
    assert {"labcache", "joblib.Memory", "diskcache.memoize", "diskcache.memoize_stampede",
            "cachier"} <= contenders
    sections = {row["section"] for row in results["rows"]}
    assert {"hit", "hit with dependencies", "hashing", "store", "load", "memory",
            "signing"} <= sections
    signing = {row["contender"] for row in results["rows"] if row["section"] == "signing"}
    assert {"unsigned", "HMAC (LABCACHE_SECRET)", "HMAC + Ed25519"} <= signing
    assert all(row["value"] > 0 for row in results["rows"] if row["section"] != "memory")
    assert {t["target"].split(":")[0] for t in results["targets"]} >= {"hit, small int"}
    assert "Targets (issue 5)" in done.stdout


def test_unknown_section_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown sections ['nope']" in done.stderr
