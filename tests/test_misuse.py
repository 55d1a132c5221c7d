"""Mistakes a new user makes: each gets a clear error or the right behaviour."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import pytest

from labcache import CacheWarning, LocalStorage, cached

from .support.cli import one_error_line, run


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value", "example"),
                         [("--older-than", "30", "30d"), ("--max-size", "100", "500MB"),
                          ("--older-than", "1.5", "12h")])
def test_gc_refuses_a_bare_number(store: LocalStorage, option: str, value: str,
                                  example: str) -> None:
    store.upload_file(b"x", "k", "ctx")
    done = run("gc", option, value, url=store.root.as_uri(), check=2)
    line = one_error_line(done)
    assert "no unit" in line and example in line
    assert store.check_if_exists("k", "ctx")  # nothing was removed


def test_gc_with_units_still_works(store: LocalStorage) -> None:
    store.upload_file(b"x", "k", "ctx")
    run("gc", "--older-than", "30d", "--max-size", "1GB", url=store.root.as_uri())
    assert store.check_if_exists("k", "ctx")


@pytest.mark.parametrize("command", [["ls"], ["locks"], ["stats"], ["gc", "--max-size", "1GB"]])
def test_a_missing_folder_is_an_error_not_an_empty_cache(tmp_path: Path,
                                                         command: list[str]) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    line = one_error_line(run(*command, url=missing.as_uri(), check=2))
    assert str(missing) in line and "no cache folder" in line
    assert not missing.exists()


def test_storage_may_come_before_the_command(store: LocalStorage) -> None:
    store.upload_file(b"x", "k", "ctx")
    done = run("--storage", store.root.as_uri(), "ls", "--json")
    assert '"ctx"' in done.stdout
    before = run("--storage", store.root.as_uri(), "--json", "stats").stdout
    after = run("stats", "--json", url=store.root.as_uri()).stdout
    assert '"entries": 1' in before and '"entries": 1' in after


def test_ls_refuses_a_negative_limit(store: LocalStorage) -> None:
    store.upload_file(b"x", "k", "ctx")
    line = one_error_line(run("ls", "ctx", "--limit", "-1", url=store.root.as_uri(), check=2))
    assert "negative" in line


# -- the Python API -------------------------------------------------------------------------------


def test_an_empty_folder_name_is_refused() -> None:
    with pytest.raises(ValueError, match="names no folder"):
        LocalStorage("")


def test_ignore_takes_one_name_as_a_name(store: LocalStorage) -> None:
    runs = []

    @cached(storage=store, ignore="verbose")
    def f(x: int, verbose: bool = False) -> int:
        runs.append(x)
        return x

    assert f(1) == f(1, verbose=True) == 1
    assert runs == [1]
    with pytest.raises(ValueError, match="xy"):

        @cached(storage=store, ignore="xy")
        def g(x: int, y: int) -> int:
            return x + y


@pytest.mark.parametrize(("option", "value"), [("ttl", "10"), ("wait_timeout", "1h"),
                                               ("heartbeat_interval", True),
                                               ("expires_after", [1])])
def test_seconds_must_be_numbers(option: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"{option} must be a number of seconds"):
        cached(**{option: value})(lambda x: x)


def test_a_misspelt_option_is_refused_with_the_list_of_options() -> None:
    with pytest.raises(TypeError, match=r"no option 'tll'; its options are storage, ttl,"):
        cached(tll=10)


def test_staticmethod_and_classmethod_under_cached(store: LocalStorage) -> None:
    runs: list[Any] = []

    class Model:
        @cached(storage=store)
        @staticmethod
        def scale(x: int) -> int:
            runs.append(("static", x))
            return 2 * x

        @cached(storage=store)
        @classmethod
        def build(cls, x: int) -> str:
            runs.append(("class", x))
            return f"{cls.__name__}:{x}"

    assert Model.scale(3) == Model().scale(3) == 6
    assert Model.build(3) == Model().build(3) == "Model:3"
    assert runs == [("static", 3), ("class", 3)]


def test_a_partial_is_refused_with_advice() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match="decorate the function itself"):
        cached(functools.partial(add, 1))


def _unusable_entry_warning(store: LocalStorage) -> warnings.WarningMessage:
    @cached(storage=store)
    def f(x: int) -> int:
        return x

    f(1)
    path = store.entry_path(f.key(1), f.context)
    path.chmod(0o644)
    path.write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f(1)  # the line the warning must point at
    (warning,) = caught
    return warning


def test_cache_warnings_point_at_the_users_line(store: LocalStorage) -> None:
    warning = _unusable_entry_warning(store)
    assert issubclass(warning.category, CacheWarning)
    assert warning.filename == __file__
    source = Path(__file__).read_text().splitlines()[warning.lineno - 1]
    assert "the line the warning must point at" in source
