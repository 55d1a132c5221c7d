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
import types
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import xxhash

from . import _code
from ._code import Identity
from .errors import UnhashableArgumentError

if TYPE_CHECKING:
    import inspect

__all__ = [
    "Identity",
    "argument_digests",
    "bind_arguments",
    "call_key",
    "code_identity",
    "function_identity",
    "hash_value",
    "key_from_digests",
    "object_digest",
    "register_hasher",
    "unhashable_advice",
]

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
            raise UnhashableArgumentError(unhashable_advice(name, exc)) from None
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
#
# Every value is fed as a type tag followed by its content, so that values of
# different types never share a byte stream: 1, 1.0, True, "1", b"1" differ,
# and so do a list and a tuple, bytes and bytearray, a dict and an OrderedDict.

_Handler = Callable[[_Hasher, Any, "set[int]"], None]


def register_hasher(cls: type, func: Callable[[Any], object] | None) -> None:
    """Hash instances of ``cls`` (and its subclasses) as ``func(obj)``.

    ``func`` returns what determines the result, as values labcache hashes
    itself (bytes, str, numbers, tuples, dicts, arrays...).  The object's own
    class name is added to the key too.  The nearest registered class in the
    MRO wins; ``func=None`` removes a registration.  Registration comes
    before ``__dask_tokenize__`` and labcache's own rules for that class.

    Examples:
        >>> class Model:
        ...     def __init__(self, weights, session):
        ...         self.weights, self.session = weights, session
        >>> register_hasher(Model, lambda m: m.weights)
        >>> hash_value(Model((1, 2), object())) == hash_value(Model((1, 2), object()))
        True
        >>> register_hasher(Model, None)
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_hasher needs a class, not {cls!r}")
    if cls in _EXACT:
        raise ValueError(
            f"labcache hashes {cls.__qualname__} values itself and that cannot be changed; "
            "register a hasher for your own class (a subclass works) instead"
        )
    if func is None:
        _REGISTERED.pop(cls, None)
    elif not callable(func):
        raise TypeError(f"register_hasher needs a function obj -> value, not {func!r}")
    else:
        _REGISTERED[cls] = func
    _RESOLVED.clear()


def unhashable_advice(name: str, exc: BaseException) -> str:
    """The message for an argument that cannot be hashed: what failed, what to do.

    Ignoring ``self`` would make every instance share one result, so that is
    never suggested; ``ignore=`` is offered only for arguments that cannot
    change the result.

    Examples:
        >>> "ignore" in unhashable_advice("self", TypeError("a lock"))
        False
    """
    advice = (
        f"cannot hash argument {name!r}: {exc}. Tell labcache what determines the result: "
        "give the class a __dask_tokenize__(self) method returning it as plain data "
        "(numbers, strings, tuples, arrays), or call labcache.register_hasher(cls, func)"
    )
    if name in ("self", "cls"):
        return advice + "."
    return advice + (
        f". Leave it out of the key with @cached(ignore=({name!r},)) only if it cannot "
        "change the result (like verbose=)."
    )


def _feed_str(h: _Hasher, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(b"s%d:" % len(data))
    h.update(data)


def _feed(h: _Hasher, obj: object, active: set[int]) -> None:
    handler = _EXACT.get(type(obj))
    if handler is None:
        handler = _RESOLVED.get(type(obj))
        if handler is None:
            handler = _RESOLVED[type(obj)] = _resolve(type(obj))
    handler(h, obj, active)


def _resolve(cls: type) -> _Handler:
    """How to hash instances of ``cls`` (not one of ``_EXACT``); cached per class."""
    for base in cls.__mro__:
        if base in _REGISTERED:
            return _registered_handler(_REGISTERED[base])
    if callable(getattr(cls, "__dask_tokenize__", None)):
        return _feed_dask_token
    if issubclass(cls, type):  # a class whose metaclass is not `type` (ABCs, enums)
        return _feed_named
    for base in cls.__mro__:
        package = (base.__module__ or "").partition(".")[0]
        if package == "numpy":
            return _feed_numpy
        if package == "pandas":
            return _feed_pandas
    for container, handler in _SUBCLASSES:
        if issubclass(cls, container):
            return handler
    return _feed_object


def _feed_none(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"N;")


def _feed_bool(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"T;" if obj else b"F;")


def _feed_int(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, int)
    h.update(b"i%d;" % obj)


def _float_bytes(value: float) -> bytes:
    # Every NaN is one value here (their bit patterns vary with how they were
    # made); -0.0 and 0.0 stay apart, since 1/x or copysign tell them apart.
    return struct.pack("<d", value) if value == value else b"nan;"


def _feed_float(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, float)
    h.update(b"f" + _float_bytes(obj))


def _feed_complex(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, complex)
    h.update(b"c" + _float_bytes(obj.real) + _float_bytes(obj.imag))


def _feed_text(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, str)
    _feed_str(h, obj)


def _feed_bytes(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, (bytes, bytearray))
    h.update(b"%s%d:" % (b"b" if isinstance(obj, bytes) else b"ba", len(obj)))
    h.update(obj)


def _feed_memoryview(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, memoryview)
    # The format and shape are part of what the view means: the same bytes
    # viewed as int32 are another value than viewed as unsigned bytes.
    h.update(b"mv")
    _feed_str(h, obj.format)
    _feed(h, obj.shape, active)
    h.update(b"%d:" % obj.nbytes)
    try:  # no copy when the view is one C-ordered run of a simple format
        h.update(obj.cast("B") if obj.c_contiguous and obj.ndim else obj.tobytes())
    except (TypeError, ValueError):  # struct formats ("T{...}", "<i") refuse cast()
        h.update(obj.tobytes())


def _feed_sequence(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, (list, tuple))
    h.update(b"%s%d:" % (b"t" if isinstance(obj, tuple) else b"l", len(obj)))
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


def _feed_ordered_items(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, dict)
    h.update(b"od%d:" % len(obj))
    with _visiting(obj, active):
        for key, value in obj.items():
            _feed(h, key, active)
            _feed(h, value, active)


def _feed_set(h: _Hasher, obj: object, active: set[int]) -> None:
    assert isinstance(obj, (set, frozenset))
    h.update(b"%s%d:" % (b"fs" if isinstance(obj, frozenset) else b"S", len(obj)))
    with _visiting(obj, active):
        for item_digest in sorted(_digest(item, active) for item in obj):
            h.update(item_digest)


def _feed_function(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"fn")
    h.update(function_identity(obj))  # type: ignore[arg-type]


def _feed_named(h: _Hasher, obj: object, active: set[int]) -> None:
    # Classes, builtins and modules are referred to by name, as pickle does.
    # A script's __main__ is __mp_main__ in spawned workers: one module.
    module = getattr(obj, "__module__", None) or ""
    if module == "__mp_main__":
        module = "__main__"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "")
    h.update(b"g")
    _feed_str(h, f"{module}:{name}")


def _feed_subclass(h: _Hasher, obj: object, active: set[int]) -> None:
    """A subclass of a builtin container: its class, its items, its attributes."""
    h.update(b"sub")
    _feed_named(h, type(obj), active)
    if isinstance(obj, defaultdict):
        _feed(h, obj.default_factory, active)
    base = next(b for b in type(obj).__mro__ if b in _EXACT or b is OrderedDict)
    (_feed_ordered_items if base is OrderedDict else _EXACT[base])(h, obj, active)
    state = getattr(obj, "__dict__", None)
    if state:
        with _visiting(obj, active):
            _feed(h, state, active)


def _registered_handler(func: Callable[[Any], object]) -> _Handler:
    def feed(h: _Hasher, obj: object, active: set[int]) -> None:
        h.update(b"reg")
        _feed_named(h, type(obj), active)
        _feed_stand_in(h, obj, active, func, "the hasher registered for")

    return feed


def _feed_dask_token(h: _Hasher, obj: object, active: set[int]) -> None:
    h.update(b"dask")
    _feed_named(h, type(obj), active)
    _feed_stand_in(h, obj, active, lambda o: o.__dask_tokenize__(), "__dask_tokenize__() of")


def _feed_stand_in(
    h: _Hasher, obj: object, active: set[int], func: Callable[[Any], object], what: str
) -> None:
    """Hash what ``func(obj)`` returns in place of ``obj``."""
    where = f"{what} {type(obj).__qualname__}"
    try:
        value = func(obj)
    except UnhashableArgumentError:
        raise
    except Exception as exc:
        raise UnhashableArgumentError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    if value is obj:
        raise UnhashableArgumentError(
            f"{where} returned the object itself; return plain data such as a tuple of "
            "numbers, strings or arrays"
        )
    with _visiting(obj, active):
        _feed(h, value, active)


def _feed_numpy(h: _Hasher, obj: object, active: set[int]) -> None:
    from . import _arrays  # numpy is loaded: an argument comes from it

    if not _arrays.feed_numpy(h, obj, _feed, active):
        _feed_object(h, obj, active)


def _feed_pandas(h: _Hasher, obj: object, active: set[int]) -> None:
    from . import _frames  # pandas is loaded: an argument comes from it

    if not _frames.feed_pandas(h, obj, _feed, active):
        _feed_object(h, obj, active)


def _feed_object(h: _Hasher, obj: object, active: set[int]) -> None:
    if id(obj) in active:  # a cycle: refer back instead of recursing forever
        h.update(b"@cycle;")
        return
    active.add(id(obj))
    try:
        _feed_other(h, obj, active)
    finally:
        active.discard(id(obj))


_EXACT: dict[type, _Handler] = {
    type(None): _feed_none,
    bool: _feed_bool,
    int: _feed_int,
    float: _feed_float,
    complex: _feed_complex,
    str: _feed_text,
    bytes: _feed_bytes,
    bytearray: _feed_bytes,
    memoryview: _feed_memoryview,
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

# Subclasses of builtin containers keep their class name in the key
# (a namedtuple is not a tuple); OrderedDict's order counts, a dict's not.
_SUBCLASSES: tuple[tuple[type, _Handler], ...] = tuple(
    (base, _feed_subclass) for base in (dict, list, tuple, set, frozenset)
)

_REGISTERED: dict[type, Callable[[Any], object]] = {}

# class -> handler, filled on first sight (the MRO walk is done once per class);
# weak so that classes redefined in a notebook can go away.
_RESOLVED: weakref.WeakKeyDictionary[type, _Handler] = weakref.WeakKeyDictionary()


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
