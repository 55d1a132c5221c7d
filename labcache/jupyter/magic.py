"""``%%cache``: cache the variables a notebook cell computes.

    %load_ext labcache

    %%cache features labels --storage redis://cache:6379/0
    features, labels = build_features(raw, window=30)
    print(features.shape)

The first run executes the cell and stores ``features`` and ``labels`` with
the cell's printed output; later runs, in any kernel sharing the storage,
restore them and replay the output without executing.  The key is the
cell's code plus what it reads from the namespace: values by their data
(``raw``), functions, classes and user modules by their deep identity
(``build_features`` with the helpers and globals it uses), so changing an
input recomputes.  Two kernels running the cell at once compute it once.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any

import xxhash
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .._code import is_code
from ..call import Call
from ..errors import UnhashableArgumentError, UnpicklableResultError
from ..keys import hash_value, object_digest
from ..lock_record import this_host, this_user
from ..options import CacheOptions
from ..protocol import run_sync
from ..report import reporter_for
from .cells import analyze

__all__ = ["CELLS_CONTEXT", "CacheMagics", "load_ipython_extension"]

#: Where cached cells live in a storage.
CELLS_CONTEXT = "labcache.cells"
#: Names IPython puts in every namespace (its output and input history, the
#: shell); they are not inputs of a cell.  Other names starting with ``_`` are.
_SHELL_NAMES = frozenset({"_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh", "In",
                          "Out", "get_ipython", "exit", "quit"})
_NUMBERED_HISTORY = re.compile(r"_i?\d+")


@magics_class
class CacheMagics(Magics):
    """The ``%%cache`` cell magic."""

    @magic_arguments()
    @argument("variables", nargs="*", help="variables the cell assigns, to store and restore")
    @argument("--storage", default=None, help="storage URL (default: LABCACHE_STORAGE or "
                                              "the local cache folder)")
    @argument("--ttl", type=float, default=None, help="seconds before a lock without "
              f"heartbeat counts as dead (default {CacheOptions.ttl:g})")
    @argument("--expires", type=float, default=None, help="recompute entries older than "
                                                          "this many seconds")
    @cell_magic
    def cache(self, line: str, cell: str) -> None:
        """Run the cell once for everyone; later runs restore its variables."""
        options = parse_argstring(self.cache, line)
        plan = CellPlan.prepare(self.shell, cell, options)
        try:
            bundle = run_sync(plan.call, plan.execute, (), {})
        except UnpicklableResultError:
            raise plan.unpicklable_error() from None
        plan.restore(bundle)


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext labcache``."""
    ipython.register_magics(CacheMagics)


@dataclass
class CellPlan:
    """One run of a ``%%cache`` cell: its code, key and protocol call."""

    shell: Any
    code: str
    variables: list[str]
    call: Call

    @classmethod
    def prepare(cls, shell: Any, cell: str, options: Any) -> CellPlan:
        """Check the arguments against the cell and compute its key."""
        variables = list(options.variables)
        bad = [name for name in variables if not name.isidentifier()]
        if bad:
            raise UsageError(f"%%cache: {', '.join(map(repr, bad))} are not variable names")
        code = shell.transform_cell(cell)
        try:
            names = analyze(code)
        except SyntaxError as exc:
            raise UsageError(f"%%cache: the cell does not parse ({exc}); nothing ran") from None
        missing = [name for name in variables if name not in names.assigns]
        if missing:
            raise UsageError(
                f"%%cache: the cell never assigns {', '.join(map(repr, missing))}; name only "
                "variables the cell itself sets (e.g. `%%cache result` for `result = ...`)")
        settings = _options(options)
        key = _cell_key(code, variables, _inputs(shell.user_ns, names.reads),
                        names.attributes)
        call = Call(
            storage=_storage(settings), context=CELLS_CONTEXT, key=key,
            function=f"%%cache {' '.join(variables)}".strip(), options=settings,
            metadata=lambda: _metadata(key, variables, code),
            reporter=reporter_for("%%cache", always_summarize=True),
        )
        return cls(shell, code, variables, call)

    def execute(self) -> dict[str, Any]:
        """Run the cell in the user's namespace, capturing what it prints."""
        from IPython.utils.capture import capture_output

        with capture_output() as captured:
            exec(compile(self.code, "<%%cache cell>", "exec"), self.shell.user_ns)
        unset = [name for name in self.variables if name not in self.shell.user_ns]
        if unset:
            raise UsageError(f"%%cache: the cell ran but did not set {', '.join(unset)}")
        return {
            "variables": {name: self.shell.user_ns[name] for name in self.variables},
            "stdout": captured.stdout, "stderr": captured.stderr,
            "outputs": [(out.data, out.metadata) for out in captured.outputs],
        }

    def restore(self, bundle: dict[str, Any]) -> None:
        """Put the variables back and replay the cell's output."""
        from IPython.display import publish_display_data

        self.shell.user_ns.update(bundle["variables"])
        sys.stdout.write(bundle["stdout"])
        sys.stderr.write(bundle["stderr"])
        for data, metadata in bundle["outputs"]:
            publish_display_data(data, metadata)

    def unpicklable_error(self) -> UnpicklableResultError:
        """Which variable could not be stored, and what to do."""
        import cloudpickle

        for name in self.variables:
            try:
                cloudpickle.dumps(self.shell.user_ns.get(name))
            except Exception as exc:
                kind = type(self.shell.user_ns.get(name)).__qualname__
                return UnpicklableResultError(
                    f"%%cache: variable {name!r} ({kind}) cannot be pickled: {exc}. Leave it "
                    "out of the %%cache line (the cell still ran), or store plain data")
        return UnpicklableResultError("%%cache: the cell's output cannot be pickled")


def _inputs(namespace: dict[str, Any], reads: set[str]) -> dict[str, Any]:
    """The namespace values the cell reads (builtins and IPython's own left out)."""
    return {name: namespace[name] for name in sorted(reads)
            if name in namespace and not is_shell_name(name)}


def is_shell_name(name: str) -> bool:
    """Whether ``name`` is IPython's own (``_``, ``_i3``, ``Out``...), not a cell input.

    Examples:
        >>> [n for n in ["_", "_5", "_i5", "_ih", "_scale", "__x", "Out", "x"]
        ...  if not is_shell_name(n)]
        ['_scale', '__x', 'x']
    """
    return name in _SHELL_NAMES or _NUMBERED_HISTORY.fullmatch(name) is not None


def _cell_key(code: str, variables: list[str], inputs: dict[str, Any],
              attributes: set[str]) -> str:
    h = xxhash.xxh3_128(b"%%cache 2\0" + code.strip().encode() + b"\0")
    h.update(" ".join(variables).encode() + b"\0")
    for name, value in inputs.items():
        try:
            # Code by its deep identity (the helpers and globals it reaches),
            # values by their data, hashed again on every run of the cell.
            digest = (object_digest(value, attributes) if is_code(value)
                      else hash_value(value))
        except (UnhashableArgumentError, TypeError, ValueError, RecursionError) as exc:
            raise UnhashableArgumentError(
                f"%%cache: cannot hash {name!r}, which the cell reads ({exc}); give the "
                "cell a hashable input or compute that value inside the cell") from None
        h.update(f"{name}={digest};".encode())
    return h.hexdigest()


def _options(arguments: Any) -> CacheOptions:
    """The cell's options: those given on the ``%%cache`` line, the
    defaults of ``@cached`` for the rest."""
    given = {"storage": arguments.storage or None, "ttl": arguments.ttl,
             "expires_after": arguments.expires}
    try:
        return CacheOptions(**{name: value for name, value in given.items() if value is not None})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"%%cache: {exc}") from None


def _storage(options: CacheOptions) -> Any:
    try:
        return options.open_storage()
    except ValueError as exc:
        raise UsageError(f"%%cache --storage: {exc}") from None


def _metadata(key: str, variables: list[str], code: str) -> dict[str, Any]:
    from .. import __version__

    first_line = next((line for line in code.splitlines() if line.strip()), "")
    return {"function": "%%cache", "key": key, "arguments": {"variables": " ".join(variables),
            "cell": first_line[:80]}, "user": this_user(), "host": this_host(),
            "pid": os.getpid(), "labcache": __version__}
