"""Hashing numpy values from their memory.

Imported by :mod:`labcache.keys` only when an argument's type comes from an
already loaded numpy, so ``import labcache`` never loads it.  The helpers
here (``feed_raw``, ``feed_objects``) are shared with :mod:`labcache._frames`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Feed = Callable[[Any, object, "set[int]"], None]


def feed_numpy(h: Any, obj: object, feed: Feed, active: set[int]) -> bool:
    """Feed an ndarray, numpy scalar or dtype; False if ``obj`` is none of them."""
    if isinstance(obj, np.ndarray):
        if type(obj) is not np.ndarray:  # np.matrix, masked arrays, user subclasses
            feed(h, type(obj), active)
        if isinstance(obj, np.ma.MaskedArray):
            _feed_array(h, np.ma.getmaskarray(obj), feed, active)
            obj = obj.data
        _feed_array(h, obj, feed, active)
        return True
    if isinstance(obj, np.generic):
        h.update(b"npscalar")
        feed(h, obj.dtype.str, active)
        if obj.dtype.kind in "fc" and np.isnan(obj):
            h.update(b"nan;")  # one NaN, whichever bits made it (as for float)
        else:
            h.update(obj.tobytes())
        return True
    if isinstance(obj, np.dtype):
        h.update(b"npdtype")
        feed(h, str(obj.descr) if obj.fields else obj.str, active)
        return True
    return False


def _feed_array(h: Any, array: np.ndarray, feed: Feed, active: set[int]) -> None:
    h.update(b"ndarray")
    dtype = array.dtype
    feed(h, (str(dtype.descr) if dtype.fields else dtype.str, array.shape, array.strides),
         active)
    if dtype.hasobject:
        # Object arrays hold pointers; hash the objects they point to.
        feed_objects(h, array, feed, active)
        return
    h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def feed_raw(h: Any, array: np.ndarray) -> None:
    """A plain (not object) array's dtype, length and bytes, in C order."""
    h.update(b"raw%s%d:" % (array.dtype.str.encode(), array.size))
    h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def feed_objects(h: Any, array: np.ndarray, feed: Feed, active: set[int]) -> None:
    """The objects of an object array, each hashed with its type, in C order."""
    items = array.ravel().tolist()
    if items and set(map(type, items)) == {str}:
        # Only exact str (a common column of labels): lengths + text, in two
        # buffers, instead of one walker call per element.
        h.update(b"strs%d:" % len(items))
        h.update(np.fromiter(map(len, items), np.int64, len(items)))
        h.update("".join(items).encode("utf-8", "surrogatepass"))
        return
    feed(h, items, active)
