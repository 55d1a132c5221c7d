"""Values described as plain data ("recipes"), for the argument-hashing properties.

A recipe is a small JSON-like tree (``["int", 3]``, ``["list", [...]]``,
``["frame", ...]``): any process can rebuild the same value from it, so a
spawned worker (``serve``) can hash values the test process never sent it.
``normalize`` maps a recipe to the form under which two recipes build
*equal* values (dict and set order dropped, duplicates merged), so a test can
say when two keys must match and when they must not.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

Recipe = list[Any]


def build(recipe: Recipe) -> Any:
    """The value a recipe describes, built from scratch."""
    tag, *rest = recipe
    if tag in _SCALARS:
        return _SCALARS[tag](*rest)
    if tag in ("list", "tuple"):
        items = [build(item) for item in rest[0]]
        return items if tag == "list" else tuple(items)
    if tag in ("set", "frozenset"):
        items = {build(item) for item in rest[0]}
        return items if tag == "set" else frozenset(items)
    if tag in ("dict", "odict"):
        pairs = [(build(k), build(v)) for k, v in rest[0]]
        return dict(pairs) if tag == "dict" else OrderedDict(pairs)
    if tag == "array":
        return _array(*rest)
    if tag == "frame":
        return _frame(*rest)
    raise ValueError(f"unknown recipe tag {tag!r}")


_SCALARS: dict[str, Any] = {
    "none": lambda: None,
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "bytes": bytes.fromhex,
    "bytearray": bytearray.fromhex,
    "memoryview": lambda text: memoryview(bytes.fromhex(text)),
}


def _array(dtype: str, shape: list[int], values: list[Any]) -> Any:
    import numpy as np

    return np.array(values, dtype=dtype).reshape(shape)


def _frame(columns: list[list[Any]], index: list[Any] | None) -> Any:
    """``columns``: [name, kind, values]; ``index``: None (a RangeIndex) or
    two lists of equal length (a two-level MultiIndex)."""
    import pandas as pd

    data = {}
    for name, kind, values in columns:
        if kind == "object":
            data[name] = pd.Series([build(v) for v in values], dtype=object)
        else:
            data[name] = pd.Series(values, dtype=kind)
    frame = pd.DataFrame(data)
    if index is not None:
        frame.index = pd.MultiIndex.from_arrays(index, names=["k1", "k2"])
    return frame


def normalize(recipe: Recipe) -> str:
    """Equal for two recipes exactly when they build equal values (as keys see them)."""
    return json.dumps(_normal(recipe))


def _normal(recipe: Recipe) -> Any:
    tag, *rest = recipe
    if tag == "float" and math.isnan(rest[0]):
        return ["float", "nan"]  # every NaN is one value
    if tag in ("list", "tuple"):
        return [tag, [_normal(item) for item in rest[0]]]
    if tag in ("set", "frozenset"):
        return [tag, sorted({json.dumps(_normal(item)) for item in rest[0]})]
    if tag in ("dict", "odict"):
        merged: dict[str, Any] = {}
        for key, value in rest[0]:  # later duplicates win, first position kept
            merged[json.dumps(_normal(key))] = _normal(value)
        pairs = list(merged.items())
        return [tag, sorted(pairs) if tag == "dict" else pairs]
    if tag == "frame":
        columns, index = rest
        return ["frame", [[name, kind, [_normal(v) for v in values] if kind == "object"
                           else values] for name, kind, values in columns], index]
    return recipe


def serve(connection: Any) -> None:
    """In a spawned worker: answer each recipe with ``hash_value`` of its value."""
    from labcache.keys import hash_value

    while True:
        recipe = connection.recv()
        if recipe is None:
            return
        connection.send(hash_value(build(recipe)))
