"""Arguments are hashed exactly: by value and by type (issue 11, "Arguments").

Each test pairs values that must share a key with values that must not; the
pandas ones are the cases that collided or raised before (MultiIndex frames,
object columns, categoricals).
"""

from __future__ import annotations

import struct
import threading
from collections import Counter, OrderedDict, defaultdict, namedtuple
from typing import Any

import numpy as np
import pytest

import labcache
from labcache import UnhashableArgumentError, cached, register_hasher
from labcache.keys import hash_value

pd = pytest.importorskip("pandas")


def distinct(*values: Any) -> bool:
    """Whether every value gets its own key."""
    return len({hash_value(v) for v in values}) == len(values)


# -- plain Python values -------------------------------------------------------------------------


def test_numbers_of_different_types_differ():
    assert distinct(1, 1.0, True, 1 + 0j, np.int64(1), np.float64(1.0), "1")
    assert distinct(0, 0.0, False, None, "", b"", ())


def test_negative_zero_and_nan():
    # -0.0 == 0.0, but 1/x and copysign tell them apart: two keys.
    assert hash_value(-0.0) != hash_value(0.0)
    # Every NaN is one value, whatever bits made it, in every process.
    other_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0]
    assert other_nan != other_nan
    assert hash_value(float("nan")) == hash_value(other_nan) == hash_value(-float("nan"))
    assert hash_value([float("nan")]) == hash_value([float("inf") - float("inf")])
    assert hash_value(np.float64("nan")) == hash_value(-np.float64("nan"))
    assert hash_value(complex(float("nan"), 1)) == hash_value(complex(-float("nan"), 1))


def test_bytes_bytearray_and_memoryview_differ():
    assert distinct(b"abc", bytearray(b"abc"), memoryview(b"abc"))
    assert hash_value(memoryview(b"abc")) == hash_value(memoryview(bytearray(b"abc")))
    # The same bytes seen as int32 are another value than as unsigned bytes.
    raw = bytes(range(8))
    assert hash_value(memoryview(raw)) != hash_value(memoryview(raw).cast("i"))
    assert hash_value(memoryview(raw)[::2]) == hash_value(memoryview(raw[::2]))
    # Views that cannot be cast to bytes (struct formats, byte order) still hash.
    records = np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")])
    assert hash_value(memoryview(records)) != hash_value(memoryview(records.tobytes()))
    assert distinct(memoryview(np.arange(3, dtype=">i4")), memoryview(np.arange(3, dtype="<i4")))


def test_ordered_containers_keep_order_unordered_do_not():
    assert hash_value(OrderedDict(a=1, b=2)) != hash_value(OrderedDict(b=2, a=1))
    assert hash_value(OrderedDict(a=1, b=2)) == hash_value(OrderedDict([("a", 1), ("b", 2)]))
    assert hash_value({"a": 1, "b": 2}) == hash_value({"b": 2, "a": 1})
    assert hash_value({"a": 1, "b": 2}) != hash_value(OrderedDict(a=1, b=2))
    assert distinct([1, 2], (1, 2), {1, 2}, frozenset({1, 2}), [2, 1])


Pair = namedtuple("Pair", "x y")
Other = namedtuple("Other", "x y")


class Tagged(dict):
    pass


def test_container_subclasses_keep_their_class():
    assert distinct((1, 2), Pair(1, 2), Other(1, 2))
    assert hash_value(Pair(1, 2)) == hash_value(Pair(x=1, y=2))
    assert distinct({"a": 1}, Tagged(a=1), Counter(a=1), defaultdict(int, a=1))
    assert hash_value(Counter("abca")) == hash_value(Counter("aacb"))  # unordered, like dict
    # defaultdict's factory changes what a lookup of a missing key returns.
    assert hash_value(defaultdict(int, a=1)) != hash_value(defaultdict(list, a=1))
    tagged = Tagged(a=1)
    tagged.note = "x"  # attributes of a subclass instance are state too
    assert hash_value(tagged) != hash_value(Tagged(a=1))


def test_classes_in_spawned_script_main_are_the_same_class():
    class InMain:
        pass

    class InMpMain:
        pass

    InMain.__module__, InMpMain.__module__ = "__main__", "__mp_main__"
    InMpMain.__qualname__ = InMain.__qualname__
    assert hash_value(InMain) == hash_value(InMpMain)


# -- numpy ---------------------------------------------------------------------------------------


def test_masked_arrays_hash_their_mask():
    data = np.arange(4.0)
    assert hash_value(np.ma.masked_array(data, [0, 1, 0, 0])) != hash_value(
        np.ma.masked_array(data, [0, 0, 1, 0]))
    assert distinct(data, np.ma.masked_array(data), data.view(Labelled))


class Labelled(np.ndarray):
    """An ndarray subclass: its class is part of the key."""


def test_object_arrays_keep_element_types():
    assert distinct(np.array([1, 2], dtype=object), np.array(["1", "2"], dtype=object),
                    np.array([True, 2], dtype=object), np.array([1.0, 2], dtype=object))


# -- pandas --------------------------------------------------------------------------------------


def _sales() -> Any:
    return pd.DataFrame({"region": ["n", "n", "s", "s"], "year": [1, 2, 1, 2],
                         "item": ["a", "b", "a", "b"], "value": [1.0, 2.0, 3.0, 4.0]})


def test_multiindex_frames_hash():
    grouped = _sales().groupby(["region", "year"]).sum()
    assert isinstance(grouped.index, pd.MultiIndex)
    assert hash_value(grouped) == hash_value(_sales().groupby(["region", "year"]).sum())
    changed = grouped.copy()
    changed.iloc[0, 1] = 9.0
    assert distinct(grouped, changed, grouped.swaplevel().sort_index())
    wide = _sales().pivot_table(index="region", columns=["year", "item"], values="value")
    assert isinstance(wide.columns, pd.MultiIndex)
    assert hash_value(wide) == hash_value(
        _sales().pivot_table(index="region", columns=["year", "item"], values="value"))
    renamed = wide.rename_axis(columns=["yr", "item"])
    assert distinct(wide, renamed)


def test_object_columns_keep_element_types():
    def frame(values: list[Any]) -> Any:
        return pd.DataFrame({"c": pd.Series(values, dtype=object)})

    assert distinct(frame([1, 2]), frame(["1", "2"]), frame([1.0, 2.0]))
    assert distinct(frame([True]), frame(["True"]), frame([1]))
    assert distinct(pd.Series([None], dtype=object), pd.Series([float("nan")], dtype=object),
                    pd.Series(["None"], dtype=object))


def test_object_columns_of_lists_and_arrays_hash_by_content():
    lists = pd.Series([[1, 2], [3]], dtype=object)
    arrays = pd.Series([np.arange(2), np.arange(3)], dtype=object)
    assert hash_value(lists) == hash_value(pd.Series([[1, 2], [3]], dtype=object))
    assert hash_value(arrays) == hash_value(pd.Series([np.arange(2), np.arange(3)], dtype=object))
    assert distinct(lists, pd.Series([[1, 2], [4]], dtype=object),
                    pd.Series([(1, 2), (3,)], dtype=object), arrays,
                    pd.Series([np.arange(2), np.arange(3.0)], dtype=object))


def test_categoricals_hash_categories_order_and_codes():
    base = pd.Categorical(["a", "b", "a"], categories=["a", "b"])
    same_codes = pd.Categorical(["b", "a", "b"], categories=["b", "a"])
    np.testing.assert_array_equal(base.codes, same_codes.codes)
    more = pd.Categorical(["a", "b", "a"], categories=["a", "b", "c"])
    assert distinct(base, same_codes, base.as_ordered(), more)
    assert distinct(pd.Series(base), pd.Series(same_codes), pd.Series(base.as_ordered()),
                    pd.Series(["a", "b", "a"]))
    assert distinct(pd.CategoricalIndex(["a", "b"]), pd.Index(["a", "b"]),
                    pd.CategoricalIndex(["a", "b"], categories=["b", "a"]),
                    pd.CategoricalIndex(["a", "b"], ordered=True))
    assert hash_value(pd.Series(base)) == hash_value(pd.Series(base.copy()))


def test_frames_hash_names_dtypes_and_missing_values():
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    assert distinct(df, df.astype({"a": "int32"}), df.astype({"a": "Int64"}),
                    df.rename_axis("rows"), df.rename_axis(columns="cols"), df[["b", "a"]],
                    df.rename(columns={"a": "A"}), df.set_axis([5, 6]))
    nullable = pd.Series(pd.array([1, None, 3], dtype="Int64"))
    assert hash_value(nullable) == hash_value(pd.Series(pd.array([1, None, 3], dtype="Int64")))
    assert distinct(nullable, pd.Series(pd.array([1, 2, 3], dtype="Int64")),
                    pd.Series([1.0, np.nan, 3.0]), pd.Series(pd.array([1, None, 4], dtype="Int64")))
    texts = pd.Series(["x", None, "z"], dtype="string")
    assert distinct(texts, pd.Series(["x", "y", "z"], dtype="string"),
                    pd.Series(["x", None, "z"], dtype=object), pd.Series(["x", "None", "z"]))


def _every_kind(last: Any) -> Any:
    return pd.DataFrame({
        "i": [1, 2], "f": [0.5, 1.5], "b": [True, False], "o": [[1], (2,)],
        "c": pd.Categorical(["a", "b"]), "n": pd.array([1, None], dtype="Int64"),
        "t": pd.date_range("2020-01-01", periods=2, tz="UTC"),
        "s": pd.Series(["x", None], dtype="string"),
        "p": pd.period_range("2020-01-01", periods=2, freq="D"),
        "sp": pd.arrays.SparseArray([0, last]),
    })


def test_a_frame_of_every_column_kind():
    frame = _every_kind(1)
    assert hash_value(frame) == hash_value(_every_kind(1)) == hash_value(frame.copy())
    for column in ["i", "f", "b", "o", "c", "n", "t", "s", "p"]:
        changed = frame.copy()
        changed[column] = changed[column].iloc[::-1].reset_index(drop=True)
        assert changed.dtypes.equals(frame.dtypes)  # same kinds, values swapped
        assert hash_value(changed) != hash_value(frame), column
    assert hash_value(_every_kind(2)) != hash_value(frame)


def test_time_zones_are_part_of_the_key():
    paris = pd.Series(pd.date_range("2024-01-01", periods=3, freq="h", tz="Europe/Paris"))
    same_instants = paris.dt.tz_convert("UTC")
    assert hash_value(paris) == hash_value(
        pd.Series(pd.date_range("2024-01-01", periods=3, freq="h", tz="Europe/Paris")))
    assert distinct(paris, same_instants, paris.dt.tz_localize(None))


def test_frame_keys_do_not_depend_on_memory_layout():
    values = np.arange(12.0).reshape(3, 4)
    from_array = pd.DataFrame(values, columns=list("abcd"))
    from_dict = pd.DataFrame({name: values[:, i] for i, name in enumerate("abcd")})
    assert hash_value(from_array) == hash_value(from_dict)
    # A frame built column by column (several blocks) equals its consolidated copy.
    mixed = pd.DataFrame({"a": [1, 2, 3]})
    for name, column in (("b", [0.5, 1.5, 2.5]), ("c", [4, 5, 6]), ("d", ["x", "y", "z"])):
        mixed[name] = column
    consolidated = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": [4, 5, 6],
                                 "d": ["x", "y", "z"]})
    assert hash_value(mixed) == hash_value(consolidated)
    assert hash_value(from_dict["b"]) == hash_value(from_array["b"])


def test_wide_frames_hash_every_cell():
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.random((20, 3000)), columns=[f"c{i}" for i in range(3000)])
    wide["tag"] = "x"  # one object column: the float columns go by dtype group
    changed = wide.copy()
    changed.iat[7, 2500] += 1e-12
    assert hash_value(wide) == hash_value(wide.copy())
    assert distinct(wide, changed)


# -- __dask_tokenize__ and registered hashers ---------------------------------------------------


class Model:
    """Holds a lock: pickle (and so the default hashing) cannot take it."""

    def __init__(self, weights: tuple[float, ...]) -> None:
        self.weights = weights
        self.lock = threading.Lock()


class Tokenized(Model):
    def __dask_tokenize__(self) -> object:
        return self.weights


class OtherTokenized(Tokenized):
    pass


def test_dask_tokenize_is_the_value_of_the_object():
    assert hash_value(Tokenized((1.0, 2.0))) == hash_value(Tokenized((1.0, 2.0)))
    assert distinct(Tokenized((1.0, 2.0)), Tokenized((1.0, 3.0)), OtherTokenized((1.0, 2.0)),
                    (1.0, 2.0))


def test_broken_dask_tokenize_is_an_unhashable_argument():
    class Broken:
        def __dask_tokenize__(self) -> object:
            raise KeyError("weights")

    class Itself:
        def __dask_tokenize__(self) -> object:
            return self

    with pytest.raises(UnhashableArgumentError, match=r"__dask_tokenize__\(\) of .*Broken raised"):
        hash_value(Broken())
    with pytest.raises(UnhashableArgumentError, match="returned the object itself"):
        hash_value(Itself())


@pytest.fixture
def registry() -> Any:
    """Registrations made by a test are removed after it."""
    made: list[type] = []

    def register(cls: type, func: Any) -> None:
        made.append(cls)
        register_hasher(cls, func)

    yield register
    for cls in made:
        register_hasher(cls, None)


class Base:
    def __init__(self, value: int) -> None:
        self.value, self.lock = value, threading.Lock()


class Child(Base):
    pass


class Grandchild(Child):
    pass


def test_registered_hasher_hashes_the_class_and_its_subclasses(registry: Any):
    with pytest.raises(UnhashableArgumentError):
        hash_value(Base(1))
    registry(Base, lambda obj: obj.value)
    assert hash_value(Base(1)) == hash_value(Base(1))
    assert distinct(Base(1), Base(2), Child(1), Grandchild(1), 1)
    # The nearest registration in the MRO wins, also for a class seen before.
    registry(Child, lambda obj: obj.value % 10)
    assert hash_value(Grandchild(3)) == hash_value(Grandchild(13))
    assert hash_value(Base(3)) != hash_value(Base(13))
    register_hasher(Child, None)
    assert hash_value(Grandchild(3)) != hash_value(Grandchild(13))


def test_registration_beats_dask_tokenize_and_pandas(registry: Any):
    registry(Tokenized, lambda obj: len(obj.weights))
    assert hash_value(Tokenized((1.0,))) == hash_value(Tokenized((2.0,)))
    registry(pd.Series, lambda s: s.sum())
    assert hash_value(pd.Series([1, 2])) == hash_value(pd.Series([3]))


def test_register_hasher_refuses_bad_input():
    with pytest.raises(ValueError, match="hashes int values itself"):
        register_hasher(int, str)
    with pytest.raises(TypeError, match="needs a class"):
        register_hasher("Model", str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a function"):
        register_hasher(Model, "weights")  # type: ignore[arg-type]


def test_failing_hasher_names_itself(registry: Any):
    registry(Base, lambda obj: obj.missing)
    with pytest.raises(UnhashableArgumentError, match="hasher registered for Base raised "
                                                      "AttributeError"):
        hash_value(Base(1))


def test_register_hasher_is_public():
    assert labcache.register_hasher is register_hasher
    assert "register_hasher" in labcache.__all__


# -- the advice for an unhashable self ----------------------------------------------------------


class Trainer:
    def __init__(self, rate: float) -> None:
        self.rate, self.lock = rate, threading.Lock()

    @cached
    def fit(self, data: list[int]) -> float:
        return self.rate * sum(data)


def test_unhashable_self_gets_safe_advice():
    with pytest.raises(UnhashableArgumentError) as caught:
        Trainer.fit.key(Trainer(0.1), [1, 2])
    message = str(caught.value)
    assert "'self'" in message and "ignore" not in message
    assert "__dask_tokenize__" in message and "register_hasher" in message


def test_unhashable_other_argument_keeps_a_guarded_ignore_hint():
    @cached
    def run(model: Model, verbose: bool = False) -> int:
        return 1

    with pytest.raises(UnhashableArgumentError) as caught:
        run.key(Model((1.0,)))
    message = str(caught.value)
    assert "register_hasher" in message
    assert "ignore=('model',)" in message and "only if it cannot change the result" in message


def test_tokenized_self_gives_each_instance_its_own_key():
    class Scaled(Trainer):
        def __dask_tokenize__(self) -> object:
            return self.rate

    key = Trainer.fit.key
    assert key(Scaled(0.1), [1]) == key(Scaled(0.1), [1]) != key(Scaled(0.2), [1])
