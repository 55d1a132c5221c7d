"""An S3 endpoint for tests: a moto server on a free loopback port.

One server per pytest process (started on first use, stopped at exit), a
fresh bucket per test.  Everything goes over real HTTP, so spawned processes
reach the same server.  Without moto the fixtures skip, unless
``LABCACHE_REQUIRE_SERVICES=1`` (CI), where they fail.

Use them with ``from tests.support.services_s3 import s3_url, s3_storage  # noqa: F401``.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CREDENTIALS", "RestartableS3", "moto_endpoint", "raw_client", "require_s3",
           "restartable_s3", "s3_storage", "s3_url"]

#: Keyword arguments that reach the moto server (it accepts any credentials).
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
               "region_name": "us-east-1"}

_server_guard = threading.Lock()
_endpoint: str | None = None


def moto_endpoint() -> str:
    """The URL of this process's moto server, started on first use."""
    global _endpoint
    with _server_guard:
        if _endpoint is None:
            _endpoint = _start_server()
        return _endpoint


def require_s3() -> None:
    """Skip (fail, with ``LABCACHE_REQUIRE_SERVICES=1``) without boto3 and moto[server];
    usable at module level, before importing ``labcache.storage.s3``."""
    missing = [name for name in ("boto3", "moto", "flask", "werkzeug")
               if importlib.util.find_spec(name) is None]
    if missing:
        _unavailable(f"S3 tests need {', '.join(missing)}; pip install 'moto[server]'")


def _unavailable(reason: str) -> None:
    if os.environ.get("LABCACHE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (LABCACHE_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def _start_server() -> str:
    server = serialized_server()
    server.start()
    atexit.register(server.stop)
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def serialized_server(port: int = 0) -> Any:
    """A moto server (not started) on ``127.0.0.1:port``, 0 for a free port.

    All moto servers of one process share its in-memory buckets.
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        _unavailable(f"S3 tests need moto[server] ({exc}); pip install 'moto[server]'")

    class SerializedMotoServer(ThreadedMotoServer):  # type: ignore[misc]
        """Handles one request at a time.  Real S3 applies a conditional write
        atomically; moto checks the condition and then stores, in Python, so
        two of its request threads could in principle both pass the check.
        Serializing requests gives the tests S3's semantics, not moto's race."""

        def _server_entry(self) -> None:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                create_backend_app,
            )
            from werkzeug.serving import make_server

            app = DomainDispatcherApplication(create_backend_app)
            one_at_a_time = threading.Lock()

            def serialized(environ: Any, start_response: Any) -> list[bytes]:
                with one_at_a_time:
                    return list(app(environ, start_response))

            self._server = make_server(self._ip_address, self._port, serialized, True)
            self._server_ready_event.set()
            self._server.serve_forever()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    return SerializedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


class RestartableS3:
    """A moto server of one test's own, for outages: ``stop()`` closes its
    port (requests are refused, not left hanging), ``start()`` opens the
    same port again; buckets and objects survive (they live in this process)."""

    def __init__(self) -> None:
        self.server = serialized_server()
        self.server.start()
        host, self.port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{self.port}"
        self.url = ""  # s3://bucket/prefix, set by the fixture

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server._server.server_close()
            self.server = None

    def start(self) -> None:
        if self.server is None:
            self.server = serialized_server(self.port)
            self.server.start()


def raw_client(endpoint: str | None = None) -> Any:
    """A plain boto3 client on the moto server, for planting and inspecting."""
    require_s3()
    import boto3

    return boto3.client("s3", endpoint_url=endpoint or moto_endpoint(), **CREDENTIALS)


@pytest.fixture
def s3_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """``s3://<fresh bucket>/team/cache`` on the moto server.

    ``AWS_ENDPOINT_URL`` and test credentials are set in the environment, so
    a storage opened from the URL alone, or rebuilt in a spawned process,
    reaches the same server.
    """
    endpoint = moto_endpoint()
    for name, value in [("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1"),
                        # no profile or config file of the person running the tests
                        ("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config")),
                        ("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))]:
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"labcache-test-{uuid.uuid4().hex[:16]}"
    client = raw_client(endpoint)
    client.create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/team/cache"
    # Free the server's memory (it lives in this process); best effort.
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def restartable_s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RestartableS3]:
    """A private moto server this test may stop and start, with a fresh bucket
    at ``.url``; no AWS profile or config of the person running the tests."""
    require_s3()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    service = RestartableS3()
    bucket = f"labcache-outage-{uuid.uuid4().hex[:16]}"
    raw_client(service.endpoint).create_bucket(Bucket=bucket)
    service.url = f"s3://{bucket}/cache"
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def s3_storage(s3_url: str) -> Any:
    """An ``S3Storage`` on this test's fresh bucket, configured by keywords."""
    require_s3()
    from labcache.storage.s3 import S3Storage

    return S3Storage(s3_url, endpoint_url=moto_endpoint(), **CREDENTIALS)
