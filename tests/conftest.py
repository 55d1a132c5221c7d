"""Fixtures shared by every test: a private storage folder per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labcache import LocalStorage

# Fixtures that start real services, shared by every test module.
pytest_plugins = ["tests.support.services_redis", "tests.support.services_s3"]


@pytest.fixture(autouse=True)
def private_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own default cache folder and no signing secret."""
    root = tmp_path / "default-cache"
    monkeypatch.setenv("LABCACHE_DIR", str(root))
    monkeypatch.delenv("LABCACHE_STORAGE", raising=False)
    monkeypatch.delenv("LABCACHE_SECRET", raising=False)
    monkeypatch.delenv("LABCACHE_HOSTNAME", raising=False)
    yield root


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    """A LocalStorage in this test's own temp folder."""
    return LocalStorage(tmp_path / "store")


#: Every backend the conformance suite runs on. A new backend joins the whole
#: suite by adding its name here and a ``<name>_storage`` fixture.
BACKENDS = ("local", "redis", "s3")


@pytest.fixture(params=BACKENDS)
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """Each backend in turn, fresh for this test (its own folder, server or bucket)."""
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    return request.getfixturevalue(f"{request.param}_storage")

# A user's script that the tests copy and run as __main__; importing it here
# (doctest collection) would run it without its environment.
collect_ignore = ["support/scale_script.py"]
