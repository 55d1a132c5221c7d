"""Hashing pandas values exactly, and at memory speed where they are numbers.

Imported by :mod:`labcache.keys` only when an argument's type comes from an
already loaded pandas.  What goes into the key:

- a DataFrame: its shape, its columns and its index (as below), then its
  numeric columns grouped by dtype, each group as the positions of its
  columns and their values column after column (one buffer per group, so a
  10,000-column frame costs about what one array of its data costs), then
  every other column on its own;
- an Index: its kind (``Index``, ``RangeIndex``, ``MultiIndex``...), its
  names and its values; a MultiIndex level by level (the values of each);
- values: the dtype's name (``int32``, ``Int64``, ``datetime64[ns, UTC]``,
  ``str``...), then: numbers as bytes; categoricals as ``ordered``, the
  categories and the codes; extension arrays as their missing-value mask and
  the values that are present; object values one by one with labcache's own
  walker, so ``1`` and ``"1"``, ``True`` and ``"True"`` differ and lists or
  arrays inside cells are hashed by content.

``pandas.util.hash_pandas_object`` is not used: it turns objects into
strings (so ``1`` and ``"1"`` collide) and cannot hash a MultiIndex.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._arrays import Feed, feed_objects, feed_raw


def feed_pandas(h: Any, obj: object, feed: Feed, active: set[int]) -> bool:
    """Feed a DataFrame, Series, Index or extension array; False otherwise.

    An Index's kind and an extension array's dtype say what they are, so only
    subclasses of DataFrame and Series add their class.
    """
    for kind, feeder in _KINDS:
        if isinstance(obj, kind):
            h.update(kind.__name__.encode())
            if type(obj) is not kind and kind in (pd.DataFrame, pd.Series):
                feed(h, type(obj), active)  # a subclass (GeoDataFrame...)
            feeder(h, obj, feed, active)
            return True
    return False


def _feed_frame(h: Any, frame: pd.DataFrame, feed: Feed, active: set[int]) -> None:
    h.update(b"%d,%d:" % frame.shape)
    feed_index(h, frame.columns, feed, active)
    feed_index(h, frame.index, feed, active)
    kinds = frame.dtypes.tolist()
    plain = {kind: isinstance(kind, np.dtype) and not kind.hasobject
             for kind in dict.fromkeys(kinds)}
    groups: dict[Any, Any] = {}
    if len(plain) == 1:  # one dtype (a wide numeric frame): no loop over columns
        groups[kinds[0]] = np.arange(len(kinds))
    else:
        for position, kind in enumerate(kinds):
            groups.setdefault(kind, []).append(position)
    for kind, positions in groups.items():
        if plain[kind]:
            positions = np.asarray(positions, dtype=np.int64)
            whole = len(positions) == frame.shape[1]
            block = (frame if whole else frame.iloc[:, positions]).to_numpy()
            _feed_block(h, kind, positions, block)
    for position in sorted(p for kind, ps in groups.items() if not plain[kind] for p in ps):
        h.update(b"col%d:" % position)
        feed_values(h, frame.iloc[:, position], feed, active)


def _feed_block(
    h: Any, dtype: np.dtype[Any], positions: np.ndarray, values: np.ndarray
) -> None:
    """Columns of one dtype: their positions, then each column's values in turn."""
    h.update(b"block%s:" % dtype.str.encode())
    feed_raw(h, positions)
    # to_numpy() of one block is its transposed memory: .T is a view, no copy.
    feed_raw(h, values.T)


def _feed_series(h: Any, series: pd.Series, feed: Feed, active: set[int]) -> None:
    feed(h, series.name, active)
    feed_index(h, series.index, feed, active)
    feed_values(h, series, feed, active)


def feed_index(h: Any, index: pd.Index, feed: Feed, active: set[int]) -> None:
    """An Index's kind, names and values (a MultiIndex's level by level)."""
    h.update(b"%s%d:" % (type(index).__name__.encode(), len(index)))
    feed(h, list(index.names), active)
    if isinstance(index, pd.RangeIndex):
        feed(h, (index.start, index.stop, index.step), active)
    elif isinstance(index, pd.MultiIndex):
        for level in range(index.nlevels):
            feed_values(h, index.get_level_values(level), feed, active)
    else:
        feed_values(h, index, feed, active)


def feed_values(h: Any, values: pd.Series | pd.Index, feed: Feed, active: set[int]) -> None:
    """The values of a Series or an Index: dtype, then content."""
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        array = values.to_numpy()
        if dtype.hasobject:
            h.update(b"objects")
            feed_objects(h, array, feed, active)
        else:
            feed_raw(h, array)
        return
    feed_extension(h, values.array, feed, active)


def feed_extension(h: Any, array: Any, feed: Feed, active: set[int]) -> None:
    """An extension array (categorical, nullable, string, tz-aware...)."""
    dtype = array.dtype
    feed(h, str(dtype), active)
    if isinstance(dtype, pd.CategoricalDtype):
        feed(h, bool(dtype.ordered), active)
        feed_index(h, dtype.categories, feed, active)
        feed_raw(h, np.asarray(array.codes))
        return
    if isinstance(dtype, pd.DatetimeTZDtype):  # the str(dtype) above holds unit and zone
        feed_raw(h, array.tz_convert("UTC").tz_localize(None).to_numpy())
        return
    if isinstance(dtype, pd.StringDtype):
        # Text and its missing values (NA, NaN, None) as objects: one pass,
        # and each missing value keeps its type.
        feed_objects(h, np.asarray(array.to_numpy(), dtype=object), feed, active)
        return
    missing = np.asarray(array.isna(), dtype=bool)
    feed_raw(h, missing)
    present = np.asarray((array[~missing] if missing.any() else array).to_numpy())
    if present.dtype.hasobject:
        feed_objects(h, present, feed, active)
    else:
        feed_raw(h, present)


_KINDS: tuple[tuple[type, Any], ...] = (
    (pd.DataFrame, _feed_frame),
    (pd.Series, _feed_series),
    (pd.Index, feed_index),
    (pd.api.extensions.ExtensionArray, feed_extension),
)
