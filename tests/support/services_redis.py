"""A real redis-server per test, on its own free loopback port.

Locally a missing ``redis-server`` skips the Redis tests with the reason;
with ``LABCACHE_REQUIRE_SERVICES=1`` (CI) it fails them instead, so a
backend is never silently left untested.  ``missing_service`` and ``require``
do the same for any service or package a test needs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def missing_service(reason: str) -> None:
    """Skip locally, fail in CI, when a service the tests need is absent."""
    if os.environ.get("LABCACHE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (LABCACHE_REQUIRE_SERVICES=1: CI must provide it)")
    pytest.skip(reason)


def require(*modules: str, extra: str = "test") -> None:
    """Skip (fail with LABCACHE_REQUIRE_SERVICES=1) unless ``modules`` import;
    the message names the extra of pyproject.toml that installs them."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing_service(f"{name} is not installed (pip install -e '.[{extra}]')")


class RedisServer:
    """One redis-server process without persistence; can be stopped and restarted."""

    def __init__(self, folder: Path, extra: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_service("redis-server is not installed (apt-get install redis-server)")
        self.binary, self.folder, self.port = str(binary), folder, free_port()
        self.extra = list(extra)  # more configuration, e.g. ["--maxmemory", "2mb"]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for this test alone."""
    pytest.importorskip("redis") if os.environ.get("LABCACHE_REQUIRE_SERVICES") != "1" else None
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_storage(redis_server: RedisServer, request: pytest.FixtureRequest) -> object:
    """A RedisStorage on this test's own server."""
    from labcache import RedisStorage

    return RedisStorage(redis_server.url, prefix="t")
