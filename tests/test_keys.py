"""Keys: stable, normalized, sensitive to every part of the value."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from labcache import UnhashableArgumentError, cached
from labcache.keys import hash_value


@cached
def add(x, y=10, verbose=False):
    return x + y


def test_spellings_of_one_call_share_a_key():
    assert add.key(1) == add.key(x=1) == add.key(1, y=10) == add.key(1, 10) == add.key(y=10, x=1)
    assert add.key(1) != add.key(2)
    assert add.key(1) != add.key(1, y=11)


def test_ignored_arguments_are_left_out():
    plain = cached(add.__wrapped__)
    quiet = cached(ignore=("verbose",))(add.__wrapped__)
    assert quiet.key(1, verbose=True) == quiet.key(1, verbose=False)
    assert plain.key(1, verbose=True) != plain.key(1, verbose=False)


def test_ignore_must_name_a_parameter():
    with pytest.raises(ValueError, match="verbos"):
        cached(ignore=("verbos",))(add.__wrapped__)


def test_version_and_decorator_options():
    base = cached(add.__wrapped__)
    assert cached(version=2)(add.__wrapped__).key(1) != base.key(1)
    # Options such as ttl are not part of what the function computes.
    assert cached(ttl=5, heartbeat_interval=1)(add.__wrapped__).key(1) == base.key(1)


def _write_module(folder: Path, body: str) -> None:
    (folder / "edited_mod.py").write_text(textwrap.dedent(f"""
        from labcache import cached

        @cached
        def work(x):
            {body}
    """))


def test_editing_the_body_changes_the_key(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _write_module(tmp_path, "return x + 1")
    module = importlib.import_module("edited_mod")
    try:
        before = module.work.key(3)
        _write_module(tmp_path, "return x + 2")
        module = importlib.reload(module)
        after = module.work.key(3)
    finally:
        sys.modules.pop("edited_mod", None)
    assert before != after


def test_types_are_part_of_the_value():
    values = [1, 1.0, True, "1", b"1", (1,), [1], {1}, frozenset({1}), {1: 1}, None, 1 + 0j]
    digests = {hash_value(v) for v in values}
    assert len(digests) == len(values)


def test_containers_hash_by_value_not_order():
    assert hash_value({"a": 1, "b": 2}) == hash_value({"b": 2, "a": 1})
    assert hash_value({3, 1, 2}) == hash_value({1, 2, 3})
    assert hash_value({1: "a", "1": "b"}) == hash_value({"1": "b", 1: "a"})  # unorderable keys
    assert hash_value([1, 2]) != hash_value([2, 1])


def test_arrays_hash_their_whole_content():
    a = np.zeros(1_000_000)
    b = a.copy()
    b[500_000] = 1e-300  # invisible in repr(), which numpy abbreviates
    assert hash_value(a) != hash_value(b)
    assert hash_value(a) == hash_value(a.copy())


def test_arrays_hash_dtype_shape_and_strides():
    a = np.arange(12, dtype=np.int64)
    assert hash_value(a) != hash_value(a.astype(np.int32))
    assert hash_value(a.reshape(3, 4)) != hash_value(a.reshape(4, 3))
    m = a.reshape(3, 4)
    assert hash_value(m) != hash_value(np.asfortranarray(m))
    view = a[::2]  # non-contiguous
    assert hash_value(view) != hash_value(a[:6])
    assert hash_value(view) == hash_value(a.copy()[::2])


def test_object_arrays_hash_their_objects():
    a = np.array([{"k": 1}, "s"], dtype=object)
    b = np.array([{"k": 2}, "s"], dtype=object)
    assert hash_value(a) != hash_value(b)


def test_numpy_scalars_and_buffers():
    assert hash_value(np.float64(1.5)) == hash_value(np.float64(1.5))
    assert hash_value(np.float64(1.5)) != hash_value(np.float32(1.5))
    # bytes, bytearray and memoryview are three types: three keys.
    assert len({hash_value(t(b"abc")) for t in (bytes, bytearray, memoryview)}) == 3


def test_dataframes_hash_values_index_and_columns():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": np.arange(5.0), "b": list("vwxyz")})
    same = pd.DataFrame({"a": np.arange(5.0), "b": list("vwxyz")})
    assert hash_value(df) == hash_value(same)
    changed = df.copy()
    changed.loc[2, "b"] = "Q"
    assert hash_value(df) != hash_value(changed)
    assert hash_value(df) != hash_value(df.rename(columns={"a": "A"}))
    assert hash_value(df) != hash_value(df.set_index(df.index + 1))
    assert hash_value(df["a"]) != hash_value(df["a"].rename("z"))


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def test_plain_objects_hash_their_state():
    assert hash_value(Point(1, 2)) == hash_value(Point(1, 2))
    assert hash_value(Point(1, 2)) != hash_value(Point(1, 3))


def test_unhashable_argument_names_the_argument():
    def gen():
        yield 1

    with pytest.raises(UnhashableArgumentError, match=r"'x'.*ignore=\('x',\)"):
        add.key(gen())
    loop = []
    loop.append(loop)
    with pytest.raises(UnhashableArgumentError, match="'y'"):
        add.key(1, y=loop)


def test_functions_as_arguments_hash_by_source():
    def double(v):
        return 2 * v

    def triple(v):
        return 3 * v

    assert hash_value(double) == hash_value(double)
    assert hash_value(double) != hash_value(triple)


def test_numpy_is_not_imported_for_plain_arguments():
    code = textwrap.dedent("""
        import sys
        from labcache import cached
        @cached
        def f(x):
            return x
        f.key(1); f.key({"a": [1.0, "s"]})
        print("numpy" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fast_and_full_binding_agree():
    def kwonly(*, a=1):
        return a

    def mixed(x, *rest, scale=2):
        return x

    k, m = cached(kwonly), cached(mixed)
    assert k.key() == k.key(a=1) != k.key(a=2)
    assert m.key(1) == m.key(x=1) == m.key(1, scale=2) != m.key(1, 5)
    assert add.key(1, 10, False) == add.key(1) == add.key(x=1, verbose=False)
