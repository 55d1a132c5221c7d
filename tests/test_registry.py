"""Storage URLs: built-in schemes, LABCACHE_STORAGE, third-party entry points."""

from __future__ import annotations

import sys

import pytest

from labcache import LocalStorage, cached, default_storage, open_storage
from labcache.storage import known_schemes


@pytest.mark.parametrize("url", ["", "/tmp/x", "tmp/x", "file:/x", "nope://x", "file://",
                                 "file://host/x", "redis://", "rediss://:pw@/0", "s3://",
                                 "s3:///key"])
def test_bad_urls_are_value_errors_before_any_io(url):
    with pytest.raises(ValueError) as caught:
        open_storage(url)
    message = str(caught.value)
    assert ":pw@" not in message  # credentials never echoed
    if "://" not in url or url.startswith("nope"):
        assert "file" in message and "redis" in message and "s3" in message


def test_known_schemes():
    assert {"file", "redis", "rediss", "s3"} <= set(known_schemes())


def test_labcache_storage_sets_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCACHE_STORAGE", (tmp_path / "team").as_uri())
    assert default_storage() is LocalStorage(tmp_path / "team")

    @cached
    def double(x):
        return 2 * x

    assert double(2) == 4
    assert double.storage.get_root_path() == str(tmp_path / "team")
    assert (tmp_path / "team" / double.context).is_dir()


def test_third_party_scheme_from_an_entry_point(tmp_path, monkeypatch):
    # An installed distribution is a *.dist-info folder on sys.path.
    dist = tmp_path / "site" / "labcache_memo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: labcache-memo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[labcache.storages]\nmemo = tests.support.plugin:open_memo\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert "memo" in known_schemes()
    storage = open_storage(f"memo://{tmp_path}/via-plugin")
    assert storage is LocalStorage(tmp_path / "via-plugin")
    assert "tests.support.plugin" in sys.modules


def test_import_does_not_load_backends():
    import subprocess

    code = "import sys, labcache; print([m for m in ('redis', 'boto3') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
