"""Code identity: what a function runs, read from its live objects.

A function's identity is its own code object plus everything user-written it
reaches, transitively: the globals its code reads, its closure cells and
default values, attributes of user modules it reads (``features.scale``),
classes with their methods and class attributes, and nested code.  Each of
these dependencies becomes one named *part* (``"code"``, ``"helper
features.scale"``, ``"global SCALE"``, ``"class Model"``) with its own
digest, so a miss can say which part changed.

Code is read from code objects (bytecode, constants, names, flags), never
from source files: a process that imported a module and then had its file
edited keeps its old identity, because it still runs the old code.  Line
numbers are left out, so comments and blank lines do not change a key;
docstrings are constants of the code and do.

Library code (the standard library and installed distributions) is referred
to by module and name.  Plain-data values (numbers, strings, containers,
arrays) are hashed by value the first time a binding is seen in the process
and again whenever the name is rebound to another object; mutating a value
in place is not noticed (a function that appends to a global log list keeps
its key).

Nothing here imports ``labcache.keys``: the value hasher is passed in.
"""

from __future__ import annotations

import builtins
import dis
import functools
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

import xxhash

from ._origin import display_name, is_user_module, module_name, package_version
from ._watch import ABSENT, Watch, cell_value

__all__ = ["Identity", "Watch", "identify", "is_code", "is_user_module", "reference_digest"]

#: Bumped when what goes into an identity changes: old entries then miss.
_FORMAT = b"labcache-code-2"
#: Bytecode is stable within a minor version; another minor version misses.
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"

ValueDigest = Callable[[object], bytes]
logger = logging.getLogger("labcache")


class Identity:
    """A function's identity: one digest, its named parts, and what to watch."""

    __slots__ = ("digest", "parts", "watch")

    def __init__(self, digest: bytes, parts: dict[str, str], watch: Watch) -> None:
        self.digest, self.parts, self.watch = digest, parts, watch

    def __repr__(self) -> str:
        return f"Identity({self.digest.hex()}, parts={sorted(self.parts)})"


def identify(func: Callable[..., Any], digest_value: ValueDigest, version: object = None,
             packages: Iterable[str] = (), keep_across_edits: bool = False) -> Identity:
    """The deep identity of ``func``.

    ``digest_value`` hashes a plain value to bytes (the key's value hasher).
    ``packages``: distributions whose installed versions join the identity.
    ``keep_across_edits``: only the name and ``version`` count, not the code.

    Examples:
        >>> import xxhash
        >>> def digest(value):
        ...     return xxhash.xxh3_128(repr(value).encode()).digest()
        >>> def f(x):
        ...     return round(x)
        >>> identity = identify(f, digest, version=2)
        >>> sorted(identity.parts), identity.watch.unchanged()
        (['code', 'version'], True)
    """
    func = _unwrap(func)
    walk = _Walk(digest_value)
    with _guard(func) as again:
        if not keep_across_edits and not again:
            if isinstance(func, types.FunctionType):
                walk.function(func, "code")
                _walk_owner(walk, func)
            else:  # a callable object or a builtin given to @cached
                walk.parts["code"] = _text_digest(walk.reference(func).hex())
        elif again:  # hashing a value that holds the function being identified
            walk.parts["code"] = _name_token("recursive", func)
    if version is not None:
        walk.parts["version"] = digest_value(version)
    for package in sorted(set(packages)):
        walk.parts[f"package {package}"] = _text_digest(package_version(package))
    h = xxhash.xxh3_128(_FORMAT)
    _feed_text(h, PYTHON)
    _feed_text(h, display_name(func))
    for name in sorted(walk.parts):
        _feed_text(h, name)
        h.update(walk.parts[name])
    parts = {name: digest.hex() for name, digest in sorted(walk.parts.items())}
    return Identity(h.digest(), parts, walk.watch)


def is_code(obj: object) -> bool:
    """Whether ``obj`` is code (function, class, module, method, decorated
    function) rather than a value.

    Examples:
        >>> is_code(len), is_code(is_code), is_code([1]), is_code(int)
        (True, True, False, True)
    """
    return isinstance(obj, _CODE_TYPES) or callable(_instance_dict(obj).get("__wrapped__"))


def reference_digest(obj: object, digest_value: ValueDigest,
                     attributes: Iterable[str] = ()) -> bytes:
    """Digest of any object as code reaching it would see it: functions,
    classes and user modules deeply (``attributes``: the module attributes
    read), anything else by value.

    Examples:
        >>> import xxhash
        >>> digest = lambda v: xxhash.xxh3_128(repr(v).encode()).digest()
        >>> reference_digest(len, digest) == reference_digest(len, digest)
        True
    """
    walk = _Walk(digest_value)
    h = xxhash.xxh3_128(_FORMAT)
    h.update(walk.reference(obj, frozenset(attributes)))
    for name in sorted(walk.parts):
        _feed_text(h, name)
        h.update(walk.parts[name])
    return h.digest()


def _walk_owner(walk: _Walk, func: types.FunctionType) -> None:
    """A method's class (found by its qualified name): the other methods it
    calls through ``self`` are part of its code too."""
    path = func.__qualname__.split(".")[:-1]
    if not path or "<locals>" in path:
        return
    owner: object = func.__globals__.get(path[0])
    for name in path[1:]:
        owner = vars(owner).get(name) if isinstance(owner, type) else None
    if isinstance(owner, type):
        walk.binding(func.__globals__, path[0], frozenset(path[1:]))


# -- the walk -----------------------------------------------------------------------------

#: Per process, per binding: the object last seen there and its value digest.
#: A mutable global keeps the digest of the value it had when first seen.
_SEEN: dict[tuple[int, str], tuple[object, bytes]] = {}
_SEEN_LOCK = threading.Lock()
_ACTIVE = threading.local()


class _guard:
    """Notices a function whose identity is needed while it is being walked
    (a global list holding the function itself): the inner use gets a name."""

    def __init__(self, func: object) -> None:
        self.func = func
        self.active: set[int] = _ACTIVE.__dict__.setdefault("ids", set())

    def __enter__(self) -> bool:
        again = id(self.func) in self.active
        self.added = not again
        if self.added:
            self.active.add(id(self.func))
        return again

    def __exit__(self, *exc: object) -> None:
        if self.added:
            self.active.discard(id(self.func))


class _Walk:
    """One identity computation: parts found so far, and what to watch."""

    def __init__(self, digest_value: ValueDigest) -> None:
        self.digest_value = digest_value
        self.parts: dict[str, bytes] = {}
        self.named: dict[int, bytes] = {}  # id(obj) -> token, for cycles and reuse
        self.alive: list[object] = []  # keeps walked objects (and their ids) alive
        self.watch = Watch()

    # -- parts ------------------------------------------------------------------------

    def _claim(self, obj: object, kind: str) -> tuple[str, bytes] | bytes:
        """A fresh part name for ``obj``, or the token if it was walked already."""
        known = self.named.get(id(obj))
        if known is not None:
            return known
        base = f"{kind} {display_name(obj)}"
        name, n = base, 1
        while name in self.parts:
            n += 1
            name = f"{base} #{n}"
        token = b"part:" + name.encode()
        self.named[id(obj)] = token
        self.alive.append(obj)
        self.parts[name] = b""  # reserved: a cycle back here refers to the name
        return name, token

    def function(self, func: types.FunctionType, part: str | None = None,
                 member: bool = False) -> bytes:
        """Walk a function; its digest becomes a part (``member``: a method,
        whose digest is returned to count in its class's part instead)."""
        if member:
            known = self.named.get(id(func))
            if known is not None:
                return known
            self.named[id(func)] = b"member:" + display_name(func).encode()
            self.alive.append(func)
            name, token = "", b""
        elif part is not None:
            token = b"part:" + part.encode()
            self.named[id(func)], self.parts[part] = token, b""
            self.alive.append(func)
            name = part
        else:
            claimed = self._claim(func, "helper")
            if isinstance(claimed, bytes):
                return claimed
            name, token = claimed
        if func.__qualname__ == func.__name__:
            # Its own module global: a reload rebinds it (autoreload then swaps
            # the new code into this very object, which other names still hold).
            home = func.__globals__
            self.watch.bindings.append((home, func.__name__, home.get(func.__name__, ABSENT)))
        h = xxhash.xxh3_128(b"function")
        self._code(h, func.__code__, func.__globals__)
        for i, default in enumerate(func.__defaults__ or ()):
            h.update(self.reference(default, container=func, label=f"default {i}"))
        for key, default in sorted((func.__kwdefaults__ or {}).items()):
            _feed_text(h, key)
            h.update(self.reference(default, container=func, label=f"default {key}"))
        for var, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
            contents = cell_value(cell)
            self.watch.cells.append((cell, contents))
            _feed_text(h, var)
            h.update(b"empty" if contents is ABSENT else self.reference(
                contents, _names_used(func.__code__)[1], container=cell, label="cell"))
        if member:
            return h.digest()
        self.parts[name] = h.digest()
        return token

    def _code(self, h: Any, code: types.CodeType, namespace: dict[str, Any]) -> None:
        """The code's own digest, then what each global name it reads refers to."""
        h.update(_code_digest(code, self.digest_value))
        reads, attributes = _names_used(code)
        for name in sorted(reads):
            _feed_text(h, name)
            h.update(self.binding(namespace, name, attributes))

    def binding(self, namespace: Any, name: str, attributes: frozenset[str]) -> bytes:
        """What ``name`` in ``namespace`` refers to, watched for rebinding."""
        obj = namespace.get(name, ABSENT)
        self.watch.bindings.append((namespace, name, obj))
        if obj is ABSENT:
            # A builtin (or a NameError at run time): by name, and watched in
            # case a global of that name appears later.
            return b"builtin:" + name.encode() if hasattr(builtins, name) else b"unbound"
        token = self._code_token(obj, attributes)
        if token is not None:
            return token
        owner = _module_name_of_namespace(namespace)
        part = f"global {name}" if owner in ("", "__main__") else f"global {owner}.{name}"
        self.parts[part] = xxhash.xxh3_128(self._data(namespace, name, obj)).digest()
        return b"part:" + part.encode()

    def _data(self, container: object, label: str, obj: object) -> bytes:
        """A value's digest (with its class, walked if the user's), taken when
        the binding is first seen and again only once it holds another object."""
        key = (id(container), label)
        with _SEEN_LOCK:
            seen = _SEEN.get(key)
        if seen is not None and seen[0] is obj:
            digest = seen[1]
        else:
            digest = self._value(obj)
            with _SEEN_LOCK:
                _SEEN[key] = (obj, digest)
        kind = type(obj)
        return (b"value:" + (b"" if kind in _DATA_TYPES else self.klass(kind)) + digest)

    def _value(self, obj: object) -> bytes:
        try:
            return self.digest_value(obj)
        except Exception:  # unhashable state (a lock, a socket): the type stands in
            return b"unhashable:" + display_name(type(obj)).encode()

    # -- references -------------------------------------------------------------------

    def reference(self, obj: object, attributes: frozenset[str] = frozenset(),
                  container: object = None, label: str = "") -> bytes:
        """A token for ``obj`` as code sees it; user-written things are walked.

        ``container`` and ``label`` say where a value was found (a cell, a
        default) for the once-per-binding rule; without them it is hashed now.
        """
        token = self._code_token(obj, attributes)
        if token is not None:
            return token
        if container is None:
            kind = type(obj)
            return (b"value:" + (b"" if kind in _DATA_TYPES else self.klass(kind))
                    + self._value(obj))
        return self._data(container, label, obj)

    def _code_token(self, obj: object, attributes: frozenset[str]) -> bytes | None:
        """``_code_reference`` that never fails the call: an object whose
        attributes raise (a lazy proxy) is identified by its type alone."""
        try:
            return self._code_reference(obj, attributes)
        except Exception as exc:
            kind = type(obj).__qualname__
            logger.debug("cannot identify a %s: %s", kind, exc)
            return b"unidentifiable:" + kind.encode()

    def _code_reference(self, obj: object, attributes: frozenset[str]) -> bytes | None:
        """The token of code-like objects (functions, classes, modules...); None
        for values."""
        if isinstance(obj, types.FunctionType):
            if not is_user_module(module_name(obj)):
                return _name_token("function", obj)
            return self.function(obj)
        if isinstance(obj, type):
            return self.klass(obj)
        if isinstance(obj, types.ModuleType):
            return self.module(obj, attributes)
        if isinstance(obj, types.MethodType):
            owner = obj.__self__
            if not is_user_module(module_name(type(owner))) and not isinstance(owner, type):
                # A library object's method (get_ipython, a client's get): by
                # name; hashing the object itself could walk a whole shell.
                return b"method:" + self.klass(type(owner)) + obj.__func__.__name__.encode()
            return b"method:" + self.reference(obj.__func__) + self.reference(owner)
        if isinstance(obj, (staticmethod, classmethod)):
            return b"wrapped:" + self.reference(obj.__func__)
        if isinstance(obj, property):
            return b"property:" + b"".join(self.reference(f) for f in
                                           (obj.fget, obj.fset, obj.fdel))
        if isinstance(obj, functools.partial):
            return (b"partial:" + self.reference(obj.func) + self._value(obj.args)
                    + self._value(obj.keywords))
        if isinstance(obj, _BUILTIN_CALLABLES):
            return _name_token("builtin", obj)
        wrapped = _instance_dict(obj).get("__wrapped__")
        if callable(wrapped):  # a decorated function (@cached, functools.wraps)
            return b"wrapper:" + self.klass(type(obj)) + self.reference(wrapped)
        return None

    def klass(self, cls: type) -> bytes:
        if not is_user_module(module_name(cls)):
            return _name_token("class", cls)
        claimed = self._claim(cls, "class")
        if isinstance(claimed, bytes):
            return claimed
        name, token = claimed
        h = xxhash.xxh3_128(b"class")
        for base in cls.__bases__:
            h.update(self.reference(base))
        namespace = cls.__dict__
        for attr in sorted(namespace):
            value = namespace[attr]
            if attr in _CLASS_NOISE or (_is_dunder(attr) and not _is_routine(value)):
                continue  # generated bookkeeping (__dict__, __annotations__, slots...)
            self.watch.bindings.append((namespace, attr, value))
            _feed_text(h, attr)
            h.update(self._member(value, cls, attr))
        self.parts[name] = h.digest()
        return token

    def _member(self, value: object, cls: type, attr: str) -> bytes:
        """A class attribute: its methods count in the class's own part."""
        if isinstance(value, property):
            return b"property:" + b"".join(b"-" if f is None else self._member(f, cls, attr)
                                           for f in (value.fget, value.fset, value.fdel))
        inner = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if isinstance(inner, types.FunctionType) and module_name(inner) == module_name(cls):
            return self.function(inner, member=True) + (b"" if inner is value
                                                        else type(value).__name__.encode())
        return self.reference(value, container=cls, label=attr)

    def module(self, module: types.ModuleType, attributes: frozenset[str]) -> bytes:
        """A user module by the attributes the code reads of it; a library by name."""
        if not is_user_module(module.__name__):
            return b"module:" + module.__name__.encode()
        key = id(module)
        if key in self.named:  # a cycle of modules reaching each other
            return self.named[key]
        self.named[key] = b"module:" + module.__name__.encode()
        self.alive.append(module)
        h = xxhash.xxh3_128(b"module")
        _feed_text(h, module.__name__)
        namespace = vars(module)
        for attr in sorted(attributes):
            if attr in namespace:
                _feed_text(h, attr)
                h.update(self.binding(namespace, attr, attributes))
        del self.named[key]
        return h.digest()


# -- small helpers ---------------------------------------------------------------------

_CLASS_NOISE = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__",
                          "__firstlineno__", "__static_attributes__"})
_DATA_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, tuple, list,
               dict, set, frozenset, range, slice)
_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.MethodDescriptorType,
                      types.WrapperDescriptorType, types.ClassMethodDescriptorType)
_CODE_TYPES = (types.FunctionType, type, types.ModuleType, types.MethodType, staticmethod,
               classmethod, property, functools.partial, *_BUILTIN_CALLABLES)
#: Global names code reads.  Names it only assigns (``global n; n = ...``) are
#: state it writes, not inputs: watching them would change the key each call.
_GLOBAL_READS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_ATTRIBUTE_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR",
                            "IMPORT_FROM", "LOAD_SUPER_ATTR"})


@functools.lru_cache(maxsize=4096)
def _names_used(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    """(global names read, attribute names read) by ``code`` and its nested code."""
    reads: set[str] = set()
    writes: set[str] = set()
    attributes: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in _GLOBAL_READS:
            reads.add(instruction.argval)
        elif instruction.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
            writes.add(instruction.argval)
        elif instruction.opname in _ATTRIBUTE_OPS:
            attributes.add(instruction.argval)
        elif instruction.opname == "IMPORT_NAME":
            attributes.update(instruction.argval.split("."))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner_reads, inner_attributes = _names_used(const)
            reads |= inner_reads
            attributes |= inner_attributes
    return frozenset(reads - writes), frozenset(attributes)


def _code_digest(code: types.CodeType, digest_value: ValueDigest) -> bytes:
    """Bytecode, constants and names; not the file name or line numbers."""
    h = xxhash.xxh3_128(b"code")
    h.update(b"%d,%d,%d,%d;" % (code.co_argcount, code.co_posonlyargcount,
                                code.co_kwonlyargcount, code.co_flags))
    _feed_text(h, code.co_name)
    h.update(b"b%d:" % len(code.co_code))
    h.update(code.co_code)
    table = getattr(code, "co_exceptiontable", b"")
    h.update(b"e%d:" % len(table))
    h.update(table)
    for names in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        h.update(b"n%d:" % len(names))
        for name in names:
            _feed_text(h, name)
    h.update(b"c%d:" % len(code.co_consts))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(_code_digest(const, digest_value))
        else:
            h.update(digest_value(const))
    return h.digest()


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_routine(value: object) -> bool:
    return isinstance(value, (types.FunctionType, staticmethod, classmethod, property))


def _unwrap(func: Callable[..., Any]) -> Any:
    while not isinstance(func, types.FunctionType):
        inner = getattr(func, "__wrapped__", None) or getattr(func, "__func__", None)
        if inner is None:
            break
        func = inner
    return func


def _instance_dict(obj: object) -> dict[str, Any]:
    try:
        found = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return {}
    return found if isinstance(found, dict) else {}


def _module_name_of_namespace(namespace: Any) -> str:
    name = namespace.get("__name__", "") if isinstance(namespace, dict) else ""
    return "__main__" if name == "__mp_main__" else str(name)


def _name_token(kind: str, obj: object) -> bytes:
    return f"{kind}:{module_name(obj)}:{getattr(obj, '__qualname__', '?')}".encode()


def _text_digest(text: str) -> bytes:
    return xxhash.xxh3_128(text.encode()).digest()


def _feed_text(h: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(b"s%d:" % len(data))
    h.update(data)
