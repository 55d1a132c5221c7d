"""Cache keys: a function's identity plus its normalized arguments.

The identity (the function's code and everything user-written it reaches)
is built in ``_code``; this module hands it the value hasher below and
combines the identity with one digest per argument (``explain`` compares
those digests with a stored entry's).

A key must be the same in every process, kernel and machine that makes the
same call, so nothing here depends on ``id()``, ``hash()`` (salted by
``PYTHONHASHSEED``), ``repr()`` (numpy abbreviates big arrays) or a file
name (notebook cells get a new one on every run).  Values are fed into one
streaming xxh3-128 hash by a walker that knows the common scientific types:
arrays and buffers are hashed straight from memory at many GB/s, and numpy or
pandas are only looked at if the caller already imported them.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import types
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import xxhash

from . import _code
from ._code import Identity
from .errors import UnhashableArgumentError

if TYPE_CHECKING:
    import inspect

__all__ = ["Identity", "argument_digests", "bind_arguments", "call_key", "code_identity",
           "function_identity", "hash_value", "key_from_digests", "object_digest"]

_Hasher = Any  # xxhash.xxh3_128 (no public type name)


def function_identity(func: Callable[..., Any], version: object = None) -> bytes:
    """Digest of what a function runs: its code and everything user-written it
    reaches (helpers, classes, globals, closures, defaults), plus ``version``.

    Taken from the live code objects, so the notebook cell or file a function
    came from is not part of it, and neither are comments or blank lines.

    Examples:
        >>> def f(x):
        ...     return x + 1
        >>> len(function_identity(f))
        16
    """
    if version is not None:
        return code_identity(func, version).digest
    try:
        known = _IDENTITIES.get(func)
    except TypeError:  # unhashable or not weak-referenceable: never remembered
        known = None
    if known is None or not known.watch.unchanged():
        known = code_identity(func)
        with contextlib.suppress(TypeError):
            _IDENTITIES[func] = known
    return known.digest


#: Identities of functions passed as arguments, reused while their bindings hold.
_IDENTITIES: weakref.WeakKeyDictionary[Any, Identity] = weakref.WeakKeyDictionary()


def code_identity(func: Callable[..., Any], version: object = None,
                  packages: Iterable[str] = (), keep_across_edits: bool = False,
                  ) -> Identity:
    """The deep identity of ``func`` with its named parts (for ``explain``).

    Examples:
        >>> def f(x):
        ...     return x + 1
        >>> list(code_identity(f).parts)
        ['code']
    """
    return _code.identify(func, _value_digest, version, packages, keep_across_edits)


def object_digest(obj: object, attributes: Iterable[str] = ()) -> str:
    """Hex digest of a value as code reading it sees it: functions, classes and
    user modules by their deep identity (``attributes``: the module attributes
    read), other values by value.

    Examples:
        >>> object_digest(len) == object_digest(len) != object_digest(abs)
        True
    """
    return _code.reference_digest(obj, _value_digest, attributes).hex()


def bind_arguments(
    signature: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """Arguments by parameter name, defaults applied, ``ignore`` left out.

    Examples:
        >>> def f(x, y=2, verbose=False): ...
        >>> import inspect
        >>> bind_arguments(inspect.signature(f), (1,), {}, ignore=("verbose",))
        {'x': 1, 'y': 2}
    """
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    skip = set(ignore)
    return {name: value for name, value in bound.arguments.items() if name not in skip}


def call_key(identity: bytes, arguments: dict[str, Any]) -> str:
    """Hex key of one call; raises ``UnhashableArgumentError`` naming the argument.

    Examples:
        >>> call_key(b"id", {"x": 1}) == call_key(b"id", {"x": 1})
        True
        >>> call_key(b"id", {"x": 1}) == call_key(b"id", {"x": 2})
        False
    """
    return key_from_digests(identity, argument_digests(arguments))


def key_from_digests(identity: bytes, digests: dict[str, str]) -> str:
    """Hex key from an identity and the arguments' digests (``argument_digests``)."""
    # Names cannot hold NUL and digests are fixed-size hex: the join is unambiguous.
    text = "".join([f"{name}\0{digest};" for name, digest in digests.items()])
    return xxhash.xxh3_128_hexdigest(identity + text.encode())


def argument_digests(arguments: dict[str, Any]) -> dict[str, str]:
    """Hex digest of each argument, by name (entries record them for ``explain``).

    Examples:
        >>> argument_digests({"x": 1}) == argument_digests({"x": 1})
        True
        >>> argument_digests({"x": 1})["x"] != argument_digests({"x": 1.0})["x"]
        True
    """
    digests = {}
    for name, value in arguments.items():
        h = xxhash.xxh3_128()
        try:
            _feed(h, value, set())
        except (UnhashableArgumentError, TypeError, ValueError, RecursionError) as exc:
            raise UnhashableArgumentError(
                f"cannot hash argument {name!r}: {exc}. Pass a hashable value, or "
                f"leave it out of the key with @cached(ignore=({name!r},))"
            ) from None
        digests[name] = h.hexdigest()
    return digests


def hash_value(value: object) -> str:
    """Hex digest of one value, as keys see it.

    Examples:
        >>> hash_value({"b": 1, "a": 2}) == hash_value({"a": 2, "b": 1})
        True
    """
    h = xxhash.xxh3_128()
    _feed(h, value, set())
    return h.hexdigest()


def _value_digest(value: object) -> bytes:
    """The value hasher handed to ``_code`` (which must not import this module)."""
    h = xxhash.xxh3_128()
    _feed(h, value, set())
    return h.digest()


# -- the value walker --------------------------------------------------------


def _feed_str(h: _Hasher, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(b"s%d:" % len(data))
    h.update(data)


def _feed(h: _Hasher, obj: object, active: set[int]) -> None:
    handler = _EXACT.get(type(obj))
    if handler is not None:
        handler(h, obj, active)
        return
    if _feed_scientific(h, obj, active):
        return
    if id(obj) in active:  # a cycle: refer back instead of recursing forever
        h.update(b"@cycle;")
        return
    active.add(id(obj))
    try:
        _feed_other(h, obj, active)
    finally:
        active.discard(id(obj))


def _feed_none(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"N;")


def _feed_bool(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"T;" if obj else b"F;")


def _feed_int(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, int)
    h.update(b"i%d;" % obj)


def _feed_float(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"f" + struct.pack("<d", obj))


def _feed_complex(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, complex)
    h.update(b"c" + struct.pack("<dd", obj.real, obj.imag))


def _feed_text(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, str)
    _feed_str(h, obj)


def _feed_bytes(h: _Hasher, obj: object, active: set[int]) -> None:
    view = memoryview(obj)  # type: ignore[arg-type]
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    h.update(b"b%d:" % view.nbytes)
    h.update(view.cast("B") if view.ndim else view.tobytes())


def _feed_sequence(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, (list, tuple))
    h.update(b"%s%d:" % (type(obj).__name__.encode(), len(obj)))
    with _visiting(obj, active):
        for item in obj:
            _feed(h, item, active)


def _feed_dict(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, dict)
    h.update(b"d%d:" % len(obj))
    with _visiting(obj, active):
        # Insertion order is not part of a dict's value; sort by key digest
        # so that keys of mixed, unorderable types still sort.
        pairs = sorted(((_digest(k, active), v) for k, v in obj.items()), key=_first)
        for key_digest, value in pairs:
            h.update(key_digest)
            _feed(h, value, active)


def _feed_set(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, (set, frozenset))
    h.update(b"%s%d:" % (type(obj).__name__.encode(), len(obj)))
    with _visiting(obj, active):
        for item_digest in sorted(_digest(item, active) for item in obj):
            h.update(item_digest)


def _feed_function(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"fn")
    h.update(function_identity(obj))  # type: ignore[arg-type]


def _feed_named(h: _Hasher, obj: object, active: set[int]) -> None:
    # Classes, builtins and modules are referred to by name, as pickle does.
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "")
    h.update(b"g")
    _feed_str(h, f"{module}:{name}")


_EXACT: dict[type, Callable[[_Hasher, Any, set[int]], None]] = {
    type(None): _feed_none,
    bool: _feed_bool,
    int: _feed_int,
    float: _feed_float,
    complex: _feed_complex,
    str: _feed_text,
    bytes: _feed_bytes,
    bytearray: _feed_bytes,
    memoryview: _feed_bytes,
    list: _feed_sequence,
    tuple: _feed_sequence,
    dict: _feed_dict,
    set: _feed_set,
    frozenset: _feed_set,
    types.FunctionType: _feed_function,
    types.BuiltinFunctionType: _feed_named,
    types.ModuleType: _feed_named,
    type: _feed_named,
}


class _visiting:
    """Marks a container as being walked, so a cycle back to it is noticed."""

    def __init__(self, obj: object, active: set[int]) -> None:
        self.key, self.active = id(obj), active

    def __enter__(self) -> None:
        if self.key in self.active:
            raise UnhashableArgumentError("it contains itself (a reference cycle)")
        self.active.add(self.key)

    def __exit__(self, *exc: object) -> None:
        self.active.discard(self.key)


def _first(pair: tuple[bytes, object]) -> bytes:
    return pair[0]


def _digest(obj: object, active: set[int]) -> bytes:
    h = xxhash.xxh3_128()
    _feed(h, obj, active)
    return h.digest()


def _feed_scientific(h: _Hasher, obj: object, active: set[int]) -> bool:
    """numpy and pandas values, looked up only if their module is loaded."""
    module = type(obj).__module__
    if module.startswith("numpy") and "numpy" in sys.modules:
        from . import _arrays

        return _arrays.feed_numpy(h, obj, _feed)
    if module.startswith("pandas") and "pandas" in sys.modules:
        from . import _arrays

        return _arrays.feed_pandas(h, obj, _feed, active)
    return False


def _feed_other(h: _Hasher, obj: object, active: set[int]) -> None:
    """Any other object: its class and what pickle would save of it."""
    try:
        reduced = obj.__reduce_ex__(4)
    except Exception as exc:
        raise UnhashableArgumentError(
            f"{type(obj).__qualname__} objects cannot be hashed ({exc})"
        ) from None
    _feed_named(h, type(obj), active)
    if isinstance(reduced, str):  # a global singleton referred to by name
        _feed_str(h, reduced)
        return
    parts = tuple(reduced) + (None,) * (5 - len(reduced))
    constructor, args, state, list_items, dict_items = parts[:5]
    if getattr(constructor, "__name__", "") not in ("__newobj__", "__reconstructor__"):
        _feed_named(h, constructor, active)
    _feed(h, args, active)
    _feed(h, state, active)
    _feed(h, list(list_items) if list_items is not None else None, active)
    _feed(h, dict(dict_items) if dict_items is not None else None, active)
