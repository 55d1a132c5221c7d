"""Checking, on every call, that what an identity depended on is unchanged.

An identity records the bindings it read (a namespace and a name, a closure
cell, a function's code and defaults).  While they all still hold the very
same objects, the identity is still right and nothing is hashed again: this
check is the only cost code identity adds to a cache hit.
"""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["ABSENT", "Watch", "cell_value"]

#: Stands for "no such name" / "an empty cell" in what is watched.
ABSENT = object()


class Watch:
    """The bindings an identity depended on, checked on every call (cheaply).

    Objects are held, not their ids: a freed object's id can be reused by
    its replacement, which would hide a redefinition.  The check runs on
    every hit, so it is one Python call doing a few ``map`` passes in C over
    flat tuples (about 30 ns per watched binding), never a Python loop.

    What it catches: a name rebound in a namespace or class (a cell re-run,
    a module reloaded: IPython's autoreload also swaps the new code into the
    old function objects, and the reload rebinds the function's own module
    global, which is watched) and a closure cell reassigned.  Code or
    defaults assigned to a function by hand are seen when the identity is
    next computed (another process, or another binding changing).
    """

    __slots__ = ("_absent_maps", "_absent_names", "_cells", "_contents", "_maps", "_names",
                 "_objs", "_ready", "bindings", "cells")

    def __init__(self) -> None:
        self.bindings: list[tuple[Any, str, object]] = []
        self.cells: list[tuple[Any, object]] = []
        self._ready = False

    def unchanged(self) -> bool:
        """True while every watched name, cell and function is as it was."""
        if not self._ready:
            self._compile()
        try:
            return (all(map(operator.is_, map(operator.getitem, self._maps, self._names),
                            self._objs))
                    and not any(map(operator.contains, self._absent_maps, self._absent_names))
                    and all(map(operator.is_, map(cell_value, self._cells), self._contents)))
        except KeyError:  # a watched name was deleted
            return False

    def _compile(self) -> None:
        unique = {(id(m), n): (m, n, o) for m, n, o in self.bindings}  # helpers share globals
        present = [(m, n, o) for m, n, o in unique.values() if o is not ABSENT]
        absent = [(m, n) for m, n, o in unique.values() if o is ABSENT]
        self._maps, self._names, self._objs = _columns(present, 3)
        self._absent_maps, self._absent_names = _columns(absent, 2)
        self._cells, self._contents = _columns(self.cells, 2)
        self._ready = True


def _columns(rows: list[Any], width: int) -> list[tuple[Any, ...]]:
    return [tuple(row[i] for row in rows) for i in range(width)]


def cell_value(cell: Any) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # not yet assigned
        return ABSENT
