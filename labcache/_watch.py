"""Checking, on every call, that what an identity depended on is unchanged.

An identity records the bindings it read (a namespace and a name, a closure
cell, a function's code and defaults).  While they all still hold the very
same objects, the identity is still right and nothing is hashed again: this
check is the only cost code identity adds to a cache hit.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

__all__ = ["ABSENT", "Watch", "cell_value"]

#: Stands for "no such name" / "an empty cell" in what is watched.
ABSENT = object()


class Watch:
    """The bindings an identity depended on, checked on every call (cheaply).

    Objects are held, not their ids: a freed object's id can be reused by
    its replacement, which would hide a redefinition.  The check runs on
    every hit, so it is compiled into a few C-level comparisons per
    namespace (``itemgetter`` + ``map(is_)``) instead of a Python loop.
    """

    __slots__ = ("_checks", "bindings", "cells", "functions")

    def __init__(self) -> None:
        self.bindings: list[tuple[Any, str, object]] = []
        self.cells: list[tuple[Any, object]] = []
        self.functions: list[tuple[Any, object, object, object]] = []
        self._checks: tuple[Callable[[], bool], ...] | None = None

    def unchanged(self) -> bool:
        """True while every watched name, cell and function is as it was."""
        checks = self._checks
        if checks is None:
            checks = self._checks = self._compile()
        for check in checks:  # noqa: SIM110  (a loop beats all(<generator>) on the hit path)
            if not check():
                return False
        return True

    def _compile(self) -> tuple[Callable[[], bool], ...]:
        groups: dict[int, tuple[Any, dict[str, object]]] = {}
        for mapping, name, obj in self.bindings:
            groups.setdefault(id(mapping), (mapping, {}))[1][name] = obj
        checks = []
        for mapping, names in groups.values():
            present = {n: o for n, o in names.items() if o is not ABSENT}
            absent = tuple(n for n, o in names.items() if o is ABSENT)
            if present:
                checks.append(_same_items(mapping, tuple(present), tuple(present.values())))
            if absent:
                checks.append(_still_absent(mapping, absent))
        if self.cells:
            checks.append(_same_cells(tuple(self.cells)))
        if self.functions:
            checks.append(_same_functions(tuple(self.functions)))
        return tuple(checks)


def _same_items(mapping: Any, names: tuple[str, ...], saved: tuple[object, ...],
                ) -> Callable[[], bool]:
    getter = operator.itemgetter(*names)
    if len(names) == 1:  # itemgetter of one name returns the bare value
        only = saved[0]

        def check_one() -> bool:
            return mapping.get(names[0], ABSENT) is only

        return check_one

    def check() -> bool:
        try:
            current = getter(mapping)
        except KeyError:  # deleted
            return False
        return all(map(operator.is_, current, saved))

    return check


def _still_absent(mapping: Any, names: tuple[str, ...]) -> Callable[[], bool]:
    contains = mapping.__contains__
    return lambda: not any(map(contains, names))


def _same_cells(cells: tuple[tuple[Any, object], ...]) -> Callable[[], bool]:
    return lambda: all(cell_value(cell) is obj for cell, obj in cells)


_CODE_OF = operator.attrgetter("__code__")


def _same_functions(functions: tuple[tuple[Any, object, object, object], ...],
                    ) -> Callable[[], bool]:
    """Code assigned in place (IPython's autoreload does that, with new defaults).

    Only ``__code__`` is compared on each call: it is the cheapest check
    that catches a reload, and defaults assigned alone are rare enough to
    be noticed when the identity is next computed (another process, or
    another binding changing).
    """
    funcs = tuple(f[0] for f in functions)
    codes = tuple(f[1] for f in functions)
    return lambda: all(map(operator.is_, map(_CODE_OF, funcs), codes))


def cell_value(cell: Any) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # not yet assigned
        return ABSENT
