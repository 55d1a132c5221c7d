"""A third-party storage plugin, as a package would ship it (see test_registry)."""

from __future__ import annotations

from labcache import LocalStorage


def open_memo(url: str) -> LocalStorage:
    """memo://<absolute path>: a LocalStorage under another scheme."""
    return LocalStorage("/" + url.split("://", 1)[1].lstrip("/"))
