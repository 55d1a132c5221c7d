"""Running the labcache command in a subprocess, as a user would, and reading what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from .procs import PATIENCE


def run(*args: str, url: str | None = None,
        check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """``labcache ARGS [--storage URL]``; asserts the exit code unless ``check`` is None."""
    command = [sys.executable, "-m", "labcache", *args]
    if url is not None:
        command += ["--storage", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE,
                          env={**os.environ, "COLUMNS": "200"})
    if check is not None:
        assert done.returncode == check, (done.stdout, done.stderr)
    return done


def run_json(*args: str, url: str | None = None) -> Any:
    return json.loads(run(*args, "--json", url=url).stdout)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labcache: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def target(any_storage: Any) -> tuple[Any, str]:
    """The storage the CLI will open, and its URL."""
    kind = type(any_storage).__name__
    if kind == "LocalStorage":
        return any_storage, f"file://{any_storage.root}"
    if kind == "RedisStorage":  # the key prefix travels in the URL
        return any_storage, f"{any_storage.url}?prefix={any_storage.prefix}"
    return any_storage, any_storage.url  # S3: endpoint and credentials are in the environment
