"""Cache keys: a function's identity plus its normalized arguments.

A key must be the same in every process, kernel and machine that makes the
same call, so nothing here depends on ``id()``, ``hash()`` (salted by
``PYTHONHASHSEED``), ``repr()`` (numpy abbreviates big arrays) or a file
name (notebook cells get a new one on every run).  Values are fed into one
streaming xxh3-128 hash by a walker that knows the common scientific types:
arrays and buffers are hashed straight from memory at many GB/s, and numpy or
pandas are only looked at if the caller already imported them.
"""

from __future__ import annotations

import struct
import sys
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import xxhash

from .errors import UnhashableArgumentError

if TYPE_CHECKING:
    import inspect

__all__ = ["bind_arguments", "call_key", "function_identity", "hash_value"]

_Hasher = Any  # xxhash.xxh3_128 (no public type name)


def function_identity(func: Callable[..., Any], version: object = None) -> bytes:
    """Digest of what makes a function itself: module, qualname, source, version.

    The notebook cell a function was defined in is not part of it, so the
    same definition run in another cell or kernel gives the same identity.

    Examples:
        >>> def f(x):
        ...     return x + 1
        >>> len(function_identity(f))
        16
    """
    h = xxhash.xxh3_128()
    for part in (func.__module__ or "", func.__qualname__, _source_of(func)):
        _feed_str(h, part)
    _feed(h, version, set())
    return h.digest()


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
    h = xxhash.xxh3_128(identity)
    for name, value in arguments.items():
        _feed_str(h, name)
        try:
            _feed(h, value, set())
        except (UnhashableArgumentError, TypeError, ValueError, RecursionError) as exc:
            raise UnhashableArgumentError(
                f"cannot hash argument {name!r}: {exc}. Pass a hashable value, or "
                f"leave it out of the key with @cached(ignore=({name!r},))"
            ) from None
    return h.hexdigest()


def hash_value(value: object) -> str:
    """Hex digest of one value, as keys see it.

    Examples:
        >>> hash_value({"b": 1, "a": 2}) == hash_value({"a": 2, "b": 1})
        True
    """
    h = xxhash.xxh3_128()
    _feed(h, value, set())
    return h.hexdigest()


# -- function source -------------------------------------------------------


def _source_of(func: Callable[..., Any]) -> str:
    """The function's source without decorator lines, or a code fingerprint."""
    import ast  # only when a function is first keyed: keeps `import labcache` light
    import inspect
    import textwrap

    func = inspect.unwrap(func)
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return _code_fingerprint(getattr(func, "__code__", None))
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a lambda cut out of a longer expression
        return source
    node = tree.body[0] if tree.body else None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        # Decorators (and their options such as ttl=) are not the function.
        return "\n".join(source.splitlines()[node.lineno - 1 :])
    return source


def _code_fingerprint(code: types.CodeType | None) -> str:
    if code is None:
        return ""
    h = xxhash.xxh3_128(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_str(h, _code_fingerprint(const))
        else:
            _feed_str(h, repr(const))
    _feed_str(h, " ".join(code.co_names + code.co_varnames))
    return h.hexdigest()


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
