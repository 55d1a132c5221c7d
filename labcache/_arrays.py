"""Hashing numpy and pandas values from their memory.

Imported by :mod:`labcache.keys` only when an argument's type comes from an
already loaded numpy or pandas, so ``import labcache`` never loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Feed = Callable[..., None]


def feed_numpy(h: Any, obj: object, feed: Feed) -> bool:
    """Feed an ndarray or numpy scalar; False if ``obj`` is neither."""
    if isinstance(obj, np.ndarray):
        _feed_array(h, obj, feed)
        return True
    if isinstance(obj, np.generic):
        h.update(b"npscalar")
        feed(h, obj.dtype.str, set())
        h.update(obj.tobytes())
        return True
    if isinstance(obj, np.dtype):
        h.update(b"npdtype")
        feed(h, str(obj.descr) if obj.fields else obj.str, set())
        return True
    return False


def _feed_array(h: Any, array: np.ndarray, feed: Feed) -> None:
    h.update(b"ndarray")
    dtype = array.dtype
    feed(h, (str(dtype.descr) if dtype.fields else dtype.str, array.shape, array.strides), set())
    if dtype.hasobject:
        # Object arrays hold pointers; hash the objects they point to.
        feed(h, array.tolist(), set())
        return
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    h.update(flat)


def feed_pandas(h: Any, obj: object, feed: Feed, active: set[int]) -> bool:
    """Feed a DataFrame, Series or Index column by column; False otherwise."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        h.update(b"DataFrame%d:" % obj.shape[1])
        feed_pandas(h, obj.columns, feed, active)
        feed_pandas(h, obj.index, feed, active)
        for position in range(obj.shape[1]):
            _feed_values(h, obj.iloc[:, position], feed)
        return True
    if isinstance(obj, pd.Series):
        h.update(b"Series")
        feed(h, obj.name, active)
        feed_pandas(h, obj.index, feed, active)
        _feed_values(h, obj, feed)
        return True
    if isinstance(obj, pd.RangeIndex):
        feed(h, ("RangeIndex", obj.name, obj.start, obj.stop, obj.step), active)
        return True
    if isinstance(obj, pd.Index):
        h.update(b"Index")
        feed(h, (type(obj).__name__, list(obj.names)), active)
        _feed_values(h, obj, feed)
        return True
    return False


def _feed_values(h: Any, values: Any, feed: Feed) -> None:
    import pandas as pd

    feed(h, str(values.dtype), set())
    raw = values.to_numpy() if isinstance(values.dtype, np.dtype) else None
    if raw is not None and not raw.dtype.hasobject:
        _feed_array(h, raw, feed)
        return
    # Objects, strings, categoricals, extension arrays: pandas' own stable
    # (fixed-key) row hashes, then the hash of those.
    rows = pd.util.hash_pandas_object(pd.Series(values, copy=False), index=False)
    _feed_array(h, rows.to_numpy(), feed)
