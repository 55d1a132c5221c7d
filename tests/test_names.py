"""Name validation: every storage method refuses unsafe names before any I/O."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import labcache
from labcache import InvalidNameError, LocalStorage
from labcache.names import MAX_NAME_BYTES, check_context, check_name, context_for

from .support.unicode_names import cafè, café, 処理, 計算

BAD_NAMES = ["", ".", "..", "../x", "a/b", "a\\b", "a\x00b", "x" * 300, "/abs"]
BAD_CONTEXTS = ["", "..", "a/../b", "/etc", "a\x00b", "locks", "locks/sub", "./x", "a//b",
                ".used/x", "a/.hidden", ".x"]

Call = Callable[[LocalStorage, str, str], Any]

#: Methods that take a file name (and a context), called with (storage, name, context).
FILE_METHODS: dict[str, Call] = {
    "upload_file": lambda s, n, c: s.upload_file(b"data", n, c),
    "download_file": lambda s, n, c: s.download_file(n, c),
    "get_file_by_hashcode": lambda s, n, c: s.get_file_by_hashcode(n, c),
    "check_if_exists": lambda s, n, c: s.check_if_exists(n, c),
    "delete_file": lambda s, n, c: s.delete_file(n, c),
    "entry_path": lambda s, n, c: s.entry_path(n, c),
}
#: Methods that take a context.
CONTEXT_METHODS: dict[str, Call] = {
    **FILE_METHODS,
    "list_stored_files": lambda s, n, c: s.list_stored_files(c),
}
#: Methods that take a lock name, called with (storage, name).
LOCK_METHODS: dict[str, Callable[[LocalStorage, str], Any]] = {
    "try_acquire_lock": lambda s, n: s.try_acquire_lock(n, ttl=60),
    "release_lock": lambda s, n: s.release_lock(n),
    "lock_info": lambda s, n: s.lock_info(n),
    "break_lock": lambda s, n: s.break_lock(n),
    "_is_locked": lambda s, n: s._is_locked(n),
    "wait_for_unlock": lambda s, n: s.wait_for_unlock(n, timeout=1),
}

ADVICE = ("use ", "choose", "rename", "pick ")


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_refused(call: Callable[[], Any], name: str, storage: LocalStorage,
                   tmp_path: Path) -> None:
    before = tree(tmp_path)
    with pytest.raises(InvalidNameError) as caught:
        result = call()
        if hasattr(result, "close"):  # an opened file slipped through: do not leak it
            result.close()
    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, labcache.LabcacheError)
    message = str(error)
    assert repr(name)[:40] in message, message  # shows the name (long ones cut)
    assert any(word in message for word in ADVICE), f"no advice in: {message}"
    assert tree(tmp_path) == before
    assert not storage.root.exists()


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("method", sorted(FILE_METHODS))
def test_bad_file_names(storage: LocalStorage, tmp_path: Path, method: str, name: str) -> None:
    assert_refused(lambda: FILE_METHODS[method](storage, name, "ctx"), name, storage, tmp_path)


@pytest.mark.parametrize("context", BAD_CONTEXTS)
@pytest.mark.parametrize("method", sorted(CONTEXT_METHODS))
def test_bad_contexts(storage: LocalStorage, tmp_path: Path, method: str, context: str) -> None:
    assert_refused(lambda: CONTEXT_METHODS[method](storage, "abc", context), context, storage,
                   tmp_path)


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("method", sorted(LOCK_METHODS))
def test_bad_lock_names(storage: LocalStorage, tmp_path: Path, method: str, name: str) -> None:
    assert_refused(lambda: LOCK_METHODS[method](storage, name), name, storage, tmp_path)


@pytest.mark.parametrize("value", [None, 5, b"abc", ["a"]])
def test_non_string_names(value: object) -> None:
    for check in (check_name, check_context):
        with pytest.raises(InvalidNameError, match=type(value).__name__):
            check(value)


def test_name_that_cannot_be_a_file_name_is_refused(storage: LocalStorage,
                                                    tmp_path: Path) -> None:
    """A lone surrogate cannot be encoded as a file name (nor as UTF-8 for
    Redis or S3), so it must be refused by validation, not fail inside I/O."""
    name = "a\ud800b"
    with pytest.raises(InvalidNameError):
        check_name(name)
    assert_refused(lambda: storage.upload_file(b"x", name, "ctx"), name, storage, tmp_path)
    assert_refused(lambda: storage.try_acquire_lock(name, ttl=60), name, storage, tmp_path)


@pytest.mark.parametrize(
    "name", ["abc.DEF_1-2", "0123456789abcdef", "a", "x" * MAX_NAME_BYTES,
             "é" * (MAX_NAME_BYTES // 2)]
)
def test_valid_names_work_everywhere(storage: LocalStorage, name: str) -> None:
    assert check_name(name) == name
    context = "proj/sub.v1"
    assert storage.upload_file(b"payload", name, context) == name
    assert storage.download_file(name, context) == b"payload"
    assert storage.list_stored_files(context) == [name]
    # locks: the suffixes the backend adds (".lock", temp and claim names) still fit
    assert storage.try_acquire_lock(name, ttl=60)
    assert storage.lock_info(name).name == name  # type: ignore[union-attr]
    assert [info.name for info in storage.list_locks()] == [name]
    assert storage.break_lock(name)  # goes through a claim file
    assert storage.try_acquire_lock(name, ttl=60, heartbeat_interval=5)
    storage.release_lock(name)
    assert storage.lock_info(name) is None
    storage.delete_file(name, context)
    assert storage.list_stored_files(context) == []


def test_name_length_limit() -> None:
    assert check_name("x" * MAX_NAME_BYTES)
    with pytest.raises(InvalidNameError, match="longer"):
        check_name("x" * (MAX_NAME_BYTES + 1))
    with pytest.raises(InvalidNameError):  # bytes count, not characters
        check_name("é" * (MAX_NAME_BYTES // 2 + 1))


def test_valid_contexts() -> None:
    for context in ("abc", "proj/model.fit", "a.b-c_d", "x/y/z"):
        assert check_context(context) == context


@pytest.mark.parametrize(
    ("module", "qualname", "expected"),
    [
        ("__main__", "outer.<locals>.inner", "__main__.outer._locals_.inner"),
        ("pkg.mod", "Model.fit", "pkg.mod.Model.fit"),
        ("pkg.mod", "f.<locals>.<lambda>", "pkg.mod.f._locals_._lambda_"),
        ("", "f", "f"),  # a function without a module
        # Parts that had to change carry a digest of what they were.
        ("a/b", "c", "a_b-c14cddc0.c"),
        ("modé", "f", "mode-c362d673.f"),
        ("team_mod", "計算", "team_mod.__-a21fb59b"),
        ("m", "_locals_", "m._locals_-c39600f6"),  # not the context of "<locals>"
    ],
)
def test_context_for_examples(module: str, qualname: str, expected: str) -> None:
    assert context_for(module, qualname) == expected


def test_context_for_long_names_are_cut() -> None:
    context = context_for("m" * 300, "f")
    assert len(context.encode()) <= MAX_NAME_BYTES
    assert check_name(context) == context
    assert context_for("m" * 300, "g") != context  # the cut part is in the digest


@pytest.mark.parametrize(("one", "two"), [("計算", "処理"), ("café", "cafè"), ("a-b", "a_b"),
                                          ("a/b", "a_b"), ("<lambda>", "_lambda_")])
def test_names_that_sanitize_alike_get_different_contexts(one: str, two: str) -> None:
    assert context_for("team_mod", one) != context_for("team_mod", two)


@settings(max_examples=300, deadline=None)
@given(one=st.text(), two=st.text())
def test_context_for_gives_each_name_its_own_context(one: str, two: str) -> None:
    if one != two:
        assert context_for("mod", one) != context_for("mod", two)


@pytest.mark.parametrize("pair", [(計算, 処理), (café, cafè)])
def test_clear_of_one_non_ascii_function_keeps_the_others_entries(
        storage: LocalStorage, pair: tuple[Callable[[int], int], Callable[[int], int]]) -> None:
    one, two = (labcache.cached(storage=storage)(f) for f in pair)
    assert one.context != two.context
    one(1), two(1), two(2)
    assert one.clear() == 1
    assert two.is_cached(1) and two.is_cached(2)
    assert len(storage.list_stored_files(two.context)) == 2


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(module=st.text(), qualname=st.text())
def test_context_for_is_always_a_safe_single_component(module: str, qualname: str) -> None:
    context = context_for(module, qualname)
    assert check_name(context) == context
    assert check_context(context) == context
    assert not context.startswith(".")


ROOT = os.path.join(os.sep, "srv", "store")


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("./\\\x00a")),
    st.text(alphabet=st.one_of(st.characters(), st.characters(categories=["Cs"]))),
))
def test_check_name_keeps_paths_inside_the_root(name: str) -> None:
    try:
        result = check_name(name)
    except InvalidNameError:
        return
    assert result == name
    path = os.path.normpath(os.path.join(ROOT, name))
    assert os.path.dirname(path) == ROOT
    assert os.path.basename(path) == name
