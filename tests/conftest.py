"""Fixtures shared by every test: a private storage folder per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labcache import LocalStorage

# Fixtures that start real services, shared by every test module.
pytest_plugins = ["tests.services_redis"]


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
