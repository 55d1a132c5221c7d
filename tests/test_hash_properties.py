"""Properties of argument keys, on generated values (hypothesis).

- Equal values built independently, here and in a spawned process (its own
  ``PYTHONHASHSEED``, its own ``id()``s), give equal keys.
- A value edited once, in its type (``1`` -> ``1.0``, list -> tuple, bytes
  -> bytearray, int64 -> int32 column), its order (of an ordered container)
  or its content, gives another key; reordering a dict or a set does not.

Values are described as recipes (tests/support/hash_values.py) so the spawned
process can rebuild them; ``normalize`` says when two recipes are equal.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from labcache.keys import hash_value

from .support import hash_values as hv
from .support.procs import CTX, PATIENCE

# LABCACHE_FUZZ_EXAMPLES raises the example counts for a long run.
MANY = int(os.environ.get("LABCACHE_FUZZ_EXAMPLES", "150"))
EDITS = settings(max_examples=MANY, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])
PROPS = settings(EDITS, max_examples=max(MANY // 3, 1))  # each example crosses to a process

# -- recipes ------------------------------------------------------------------------------------

INTS = st.integers(-(2**53), 2**53)
TEXT = st.text(max_size=6)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
LEAVES = st.one_of(
    st.just(["none"]),
    st.builds(lambda b: ["bool", b], st.booleans()),
    st.builds(lambda i: ["int", i], INTS),
    st.builds(lambda f: ["float", f], FLOATS),
    st.builds(lambda s: ["str", s], TEXT),
    st.builds(lambda tag, b: [tag, b.hex()], st.sampled_from(["bytes", "bytearray",
                                                               "memoryview"]),
              st.binary(max_size=6)),
)
# Set members and dict keys of one type per container: {1, True} would merge.
KEYS = st.one_of(st.lists(st.builds(lambda i: ["int", i], INTS), max_size=4),
                 st.lists(st.builds(lambda s: ["str", s], TEXT), max_size=4))

ARRAY_VALUES = {
    "int64": INTS, "int32": st.integers(-(2**31), 2**31 - 1), "uint8": st.integers(0, 255),
    "float64": FLOATS, "float32": st.floats(width=32), "bool": st.booleans(),
    "complex128": st.complex_numbers(max_magnitude=1e6),
}


@st.composite
def arrays(draw: st.DrawFn) -> hv.Recipe:
    dtype = draw(st.sampled_from(sorted(ARRAY_VALUES)))
    rows, cols = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    values = draw(st.lists(ARRAY_VALUES[dtype], min_size=rows * cols, max_size=rows * cols))
    if dtype == "complex128":
        values = [[v.real, v.imag] for v in values]
        return ["array", "float64", [rows, cols, 2], values]
    return ["array", dtype, [rows, cols], values]


COLUMN_KINDS = {"int64": INTS, "int32": st.integers(-(2**31), 2**31 - 1), "float64": FLOATS,
                "object": st.one_of(LEAVES, st.builds(lambda xs: ["list", xs],
                                                      st.lists(LEAVES, max_size=2)))}


@st.composite
def frames(draw: st.DrawFn) -> hv.Recipe:
    rows = draw(st.integers(0, 3))
    names = draw(st.lists(st.text(max_size=3), min_size=1, max_size=3, unique=True))
    columns = []
    for name in names:
        kind = draw(st.sampled_from(sorted(COLUMN_KINDS)))
        columns.append([name, kind, draw(st.lists(COLUMN_KINDS[kind], min_size=rows,
                                                  max_size=rows))])
    index = None
    if draw(st.booleans()):
        index = [draw(st.lists(st.integers(0, 2), min_size=rows, max_size=rows)),
                 draw(st.lists(st.sampled_from("ab"), min_size=rows, max_size=rows))]
    return ["frame", columns, index]


def _containers(children: st.SearchStrategy[hv.Recipe]) -> st.SearchStrategy[hv.Recipe]:
    return st.one_of(
        st.builds(lambda tag, xs: [tag, xs], st.sampled_from(["list", "tuple"]),
                  st.lists(children, max_size=4)),
        st.builds(lambda tag, xs: [tag, xs], st.sampled_from(["set", "frozenset"]), KEYS),
        st.builds(lambda tag, ks, vs: [tag, [list(p) for p in zip(ks, vs, strict=False)]],
                  st.sampled_from(["dict", "odict"]), KEYS, st.lists(children, min_size=4,
                                                                     max_size=4)),
    )


RECIPES = st.one_of(st.recursive(LEAVES, _containers, max_leaves=12), arrays(), frames(),
                    _containers(st.one_of(LEAVES, arrays())))
# Values with a dict or a set at the top, and possibly more inside.
UNORDERED = st.one_of(
    st.builds(lambda ks, vs: ["dict", [list(p) for p in zip(ks, vs, strict=False)]], KEYS,
              st.lists(RECIPES, min_size=4, max_size=4)),
    st.builds(lambda tag, xs: [tag, xs], st.sampled_from(["set", "frozenset"]), KEYS),
)

# -- single edits -------------------------------------------------------------------------------


def _nodes(recipe: Any, path: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    """Paths to every recipe node (a list whose first item is a tag)."""
    yield path
    tag = recipe[0]
    if tag in ("list", "tuple", "set", "frozenset"):
        for position, item in enumerate(recipe[1]):
            yield from _nodes(item, (*path, 1, position))
    elif tag in ("dict", "odict"):
        for position, (key, value) in enumerate(recipe[1]):
            yield from _nodes(key, (*path, 1, position, 0))
            yield from _nodes(value, (*path, 1, position, 1))
    elif tag == "frame":
        for column, (_, kind, values) in enumerate(recipe[1]):
            for row, value in enumerate(values if kind == "object" else ()):
                yield from _nodes(value, (*path, 1, column, 2, row))


def _inside_a_key(recipe: Any, path: tuple[int, ...]) -> bool:
    """Whether ``path`` leads into a set member or a dict key, where an edit may
    merge two members (1 and 1.0 are one set member) and recipes cannot tell."""
    steps = {"list": 2, "tuple": 2, "set": 2, "frozenset": 2, "dict": 3, "odict": 3, "frame": 4}
    depth = 0
    while depth < len(path):
        tag = _at(recipe, path[:depth])[0]
        if tag in ("set", "frozenset") or (tag in ("dict", "odict") and path[depth + 2] == 0):
            return True
        depth += steps[tag]
    return False


def _at(recipe: Any, path: tuple[int, ...]) -> Any:
    for step in path:
        recipe = recipe[step]
    return recipe


RETAG = {"int": "float", "list": "tuple", "tuple": "list", "bytes": "bytearray",
         "bytearray": "memoryview", "memoryview": "bytes", "set": "frozenset",
         "frozenset": "set", "odict": "dict", "dict": "odict", "bool": "int"}


def _edits(node: list[Any]) -> list[str]:
    """The edits ``_edit`` knows for this node."""
    tag = node[0]
    kinds = []
    if tag in RETAG or tag == "array" or (tag == "frame" and node[1]):
        kinds.append("type")
    if tag in ("list", "tuple", "odict", "frame"):
        kinds.append("order")
    if tag in ("int", "str", "float", "list", "tuple"):
        kinds.append("content")
    return kinds


def _edit(node: list[Any], how: str) -> None:
    """Change ``node`` in place: its type, the order of its items, or its content."""
    tag = node[0]
    if how == "type" and tag == "array":
        node[1] = {"int64": "int32", "int32": "int64", "uint8": "int32", "bool": "uint8",
                   "float64": "float32", "float32": "float64"}[node[1]]
    elif how == "type" and tag == "frame" and node[1]:
        column = node[1][0]
        column[1] = {"int64": "float64", "int32": "int64", "float64": "object",
                     "object": "object"}[column[1]]
        if column[1] == "object" and column[2] and not isinstance(column[2][0], list):
            column[2] = [["float", v] for v in column[2]]
    elif how == "type" and tag in RETAG:
        node[0] = RETAG[tag]
        if tag == "int":
            node[1] = float(node[1])
    elif how == "order" and tag in ("list", "tuple", "odict", "frame"):
        node[1].reverse()  # a frame's columns
    elif how == "content" and tag in ("int", "str", "float"):
        node[1] = {"int": lambda v: v + 1, "str": lambda v: v + "x",
                   "float": lambda v: 0.5 if v != 0.5 else 0.25}[tag](node[1])
    elif how == "content" and tag in ("list", "tuple"):
        node[1].append(["none"])


@pytest.fixture(scope="module")
def other_process() -> Iterator[Any]:
    """A spawned process that hashes the values it rebuilds from recipes."""
    here, there = CTX.Pipe()
    process = CTX.Process(target=hv.serve, args=(there,), daemon=True)
    seed = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "4242"  # str hashes salted unlike ours (random or set)
    try:
        process.start()
    finally:
        if seed is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = seed
    try:
        yield here
    finally:
        with contextlib.suppress(OSError):
            here.send(None)
        process.join(PATIENCE)
        if process.exitcode is None:
            process.kill()
            process.join(5)


@PROPS
@given(recipe=RECIPES)
def test_equal_values_built_apart_give_equal_keys(recipe: hv.Recipe, other_process: Any) -> None:
    key = hash_value(hv.build(recipe))
    assert hash_value(hv.build(copy.deepcopy(recipe))) == key
    other_process.send(recipe)
    assert other_process.poll(PATIENCE), "the spawned hasher did not answer"
    assert other_process.recv() == key


@EDITS
@given(recipe=RECIPES, data=st.data())
def test_one_edit_changes_the_key_unless_it_changes_nothing(recipe: hv.Recipe,
                                                            data: st.DataObject) -> None:
    paths = [p for p in _nodes(recipe) if not _inside_a_key(recipe, p) and _edits(_at(recipe, p))]
    assume(paths)
    path = data.draw(st.sampled_from(paths))
    how = data.draw(st.sampled_from(_edits(_at(recipe, path))))
    edited = copy.deepcopy(recipe)
    _edit(_at(edited, path), how)
    try:
        value = hv.build(edited)
    except (TypeError, ValueError, OverflowError, RuntimeWarning):  # out of range
        assume(False)
    same = hv.normalize(edited) == hv.normalize(recipe)
    assert (hash_value(value) == hash_value(hv.build(recipe))) == same, (recipe, edited)


@EDITS
@given(recipe=UNORDERED, data=st.data())
def test_reordering_a_dict_or_a_set_keeps_the_key(recipe: hv.Recipe, data: st.DataObject) -> None:
    unordered = [p for p in _nodes(recipe) if _at(recipe, p)[0] in ("dict", "set", "frozenset")]
    edited = copy.deepcopy(recipe)
    _at(edited, data.draw(st.sampled_from(unordered)))[1].reverse()
    assume(hv.normalize(edited) == hv.normalize(recipe))  # duplicate keys: last one wins
    assert hash_value(hv.build(edited)) == hash_value(hv.build(recipe))
